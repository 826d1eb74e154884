-- Tracing (issue 13): an outbox row carries the W3C trace context of the saga that
-- wrote it, published as the message's `traceparent` header. Rows written before this
-- migration have none and are published without the header, as before.
ALTER TABLE outbox ADD COLUMN traceparent text;
