-- Core tables of sagaflow: sagas, their history, the transactional outbox and the
-- workers' idempotency ledger.

-- One row per saga: the unit of serialisation (SELECT ... FOR UPDATE).
-- A saga's timer (delayed start, sleep, wait timeout, long retry delay) is `wake_at`:
-- steps run one at a time, so one column per saga is enough and fires once because
-- the wake-up and its effects commit in the same transaction as the row lock.
CREATE TABLE sagas (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    version     integer NOT NULL,
    status      text NOT NULL,
    state       jsonb NOT NULL,
    row_version bigint NOT NULL DEFAULT 1,
    wake_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sagas_wake_at ON sagas (wake_at) WHERE wake_at IS NOT NULL;
CREATE INDEX sagas_name_status ON sagas (name, status, created_at);
CREATE INDEX sagas_status_updated ON sagas (status, updated_at);

-- Append-only audit trail; `id` orders the entries of one saga.
CREATE TABLE saga_history (
    id      bigserial PRIMARY KEY,
    saga_id text NOT NULL,
    at      timestamptz NOT NULL,
    event   text NOT NULL,
    step    text,
    attempt integer,
    detail  jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX saga_history_saga ON saga_history (saga_id, id);

-- Messages written in the same transaction as the state change that caused them.
-- The writer publishes them right after commit; a row whose lease ran out (its
-- writer crashed) is claimed and republished by any coordinator's sweeper.
CREATE TABLE outbox (
    id            bigserial PRIMARY KEY,
    exchange      text NOT NULL,
    routing_key   text NOT NULL,
    body          bytea NOT NULL,
    mandatory     boolean NOT NULL,
    claimed_until timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_claimed_until ON outbox (claimed_until);

-- Completed activity results, keyed by idempotency key (`<saga>:<step>:<kind>`):
-- a task delivered again gets the recorded result instead of a second run.
CREATE TABLE idempotency_ledger (
    key          text PRIMARY KEY,
    task_id      text NOT NULL,
    output       jsonb NOT NULL,
    completed_at timestamptz NOT NULL DEFAULT now()
);
