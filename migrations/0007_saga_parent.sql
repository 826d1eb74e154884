-- Child sagas (a `saga` step) link to their parent in `state->'parent'`; this finds
-- a parent's children for the API, the CLI and the dashboard without a scan. Only
-- child sagas have the key, so the index holds only them.
CREATE INDEX sagas_parent ON sagas ((state->'parent'->>'saga_id')) WHERE state ? 'parent';
