-- The event log and the uniqueness claims (SQLite, embedded mode).
--
-- SQLite serialises writers (appends run in BEGIN IMMEDIATE transactions), so the autoincrement
-- position alone is the commit order of the log; there is no tx_id (LogPosition.tx is always 0).
-- recorded_at is RFC 3339 UTC text with exactly 6 fractional digits so that text order is time
-- order. data and metadata are JSON text. Never rewrite or delete rows here.

CREATE TABLE events (
    position       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id       TEXT    NOT NULL,
    stream_id      TEXT    NOT NULL,
    stream_type    TEXT    NOT NULL,
    version        INTEGER NOT NULL CHECK (version > 0),
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           TEXT    NOT NULL CHECK (json_valid(data)),
    metadata       TEXT    NOT NULL CHECK (json_valid(metadata)),
    recorded_at    TEXT    NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE TABLE claims (
    scope      TEXT NOT NULL,
    value      TEXT NOT NULL,
    stream_id  TEXT NOT NULL,
    claimed_at TEXT NOT NULL,
    CONSTRAINT claims_pkey PRIMARY KEY (scope, value)
) WITHOUT ROWID;
