-- Events a projection could not fold (poison events) after its bounded retries, and the later
-- events of the same stream, which wait behind them. `appreg projections parked` lists them,
-- `appreg projections retry` replays them from the event store.
CREATE TABLE IF NOT EXISTS rm_parked (
    projection TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    event_type TEXT NOT NULL,
    tx         BIGINT NOT NULL,
    pos        BIGINT NOT NULL,
    reason     TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    parked_at  TEXT NOT NULL,
    PRIMARY KEY (projection, event_id)
);
CREATE INDEX IF NOT EXISTS rm_parked_stream ON rm_parked (projection, stream_id);

-- The last JetStream stream sequence a projector consumer applied, written in the same
-- transaction as the rows: after a crash it tells a gap (messages delivered to the dead
-- process and not yet redelivered) from the next message.
CREATE TABLE IF NOT EXISTS rm_consumers (
    name     TEXT PRIMARY KEY,
    sequence BIGINT NOT NULL
);
