-- Webhook deliveries (portable SQL: PostgreSQL and SQLite). One row per (endpoint, event): its id
-- is the `webhook-id` receivers de-duplicate by, derived from both, so a replay inserts nothing.
-- Times are Unix milliseconds.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL,
    environment     TEXT NOT NULL,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    -- Deliveries of one stream (an application) to one endpoint go in stream order.
    stream_id       TEXT NOT NULL,
    version         BIGINT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempt         INTEGER NOT NULL,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    response_status INTEGER,
    response_body   TEXT
);
CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON webhook_deliveries (status, next_attempt_at);
CREATE INDEX IF NOT EXISTS webhook_deliveries_order ON webhook_deliveries (webhook_id, stream_id, version);
CREATE INDEX IF NOT EXISTS webhook_deliveries_log ON webhook_deliveries (webhook_id, created_at, id);

-- Where the notifier is in the event log: every event before (tx, pos) has its deliveries.
CREATE TABLE IF NOT EXISTS notifier_checkpoints (
    name TEXT PRIMARY KEY,
    tx   BIGINT NOT NULL,
    pos  BIGINT NOT NULL
);
