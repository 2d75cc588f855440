-- The PENDING deliveries of one endpoint in order (the notifier's refill of an endpoint's queue),
-- without scanning the endpoint's delivered ones.
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending
    ON webhook_deliveries (webhook_id, created_at, version) WHERE status = 'PENDING';
-- The delivery log's order (the deliveries of a page of the log share a millisecond: an
-- application's go in stream order).
CREATE INDEX IF NOT EXISTS webhook_deliveries_log_order
    ON webhook_deliveries (webhook_id, created_at, version, id);
