-- Requests the DCR saga could not handle (a SagaError on every try) after `dcr.park_after` tries:
-- the saga's checkpoint moves past them. `appreg saga parked` lists them, `appreg saga retry`
-- hands them to the saga again (after the cause is fixed). Portable SQL (PostgreSQL and SQLite).
CREATE TABLE IF NOT EXISTS saga_parked (
    name       TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    tx         BIGINT NOT NULL,
    pos        BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    attempts   BIGINT NOT NULL,
    parked_at  TEXT NOT NULL,
    PRIMARY KEY (name, event_id)
);
