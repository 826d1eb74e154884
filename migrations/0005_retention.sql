-- Retention (store::purge): ended sagas are deleted with their history and ledger
-- rows once their definition's retention has passed. Sagas are found through
-- sagas_status_updated (status, updated_at), history through saga_history_saga;
-- ledger rows need the saga they belong to.
ALTER TABLE idempotency_ledger ADD COLUMN saga_id text;

-- Rows written before this migration: the saga id is the key without its
-- `:<step>:<kind>` and optional `:g<n>` suffix (step names cannot contain `:`).
UPDATE idempotency_ledger
   SET saga_id = regexp_replace(key, ':[A-Za-z0-9_-]+:[a-z]+(:g[0-9]+)?$', '')
 WHERE saga_id IS NULL;

CREATE INDEX idempotency_ledger_saga ON idempotency_ledger (saga_id);
