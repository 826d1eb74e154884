-- The dashboard's overview (store::overview, GET /api/overview).
--
-- Sagas started per minute over the last hour: a range on created_at. No index led
-- with created_at (sagas_name_status has it third, behind every name and status), so
-- the count was a scan of the whole table. With (created_at, id) the range is read
-- from the index; the same index serves the unfiltered saga listing, which pages
-- ORDER BY created_at DESC, id DESC.
CREATE INDEX sagas_created ON sagas (created_at, id);

-- The oldest running and compensating sagas: few rows (open sagas only), in
-- created_at order, so the first ten are read off the front of this small partial
-- index instead of walking every ended saga older than them.
CREATE INDEX sagas_open_created ON sagas (created_at)
    WHERE status IN ('running', 'compensating');

-- Sagas ended per minute need no new index: status IN (the ended ones) AND
-- updated_at >= ... is a range per status on sagas_status_updated (status, updated_at).
