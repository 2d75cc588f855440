-- The lifecycle process manager's own state (portable SQL: PostgreSQL and SQLite).
-- Where it is in the event log: every archive or restore before (tx, pos) is fully handled.
-- Nothing else is kept here: what is left to do is read from the applications' state.
CREATE TABLE IF NOT EXISTS lifecycle_checkpoints (
    name TEXT PRIMARY KEY,
    tx   BIGINT NOT NULL,
    pos  BIGINT NOT NULL
);
