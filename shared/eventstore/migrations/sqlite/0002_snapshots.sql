-- Snapshots of aggregates (SQLite, embedded mode): at most one per stream, the newest.
--
-- A cache, not a source of truth: a row may be deleted at any time, and readers then fold the
-- stream instead. `data` is opaque to the store; `schema_version` is the aggregate's shape and
-- `version` the last stream version folded into it. `written_at` is RFC 3339 UTC text like the
-- events' `recorded_at`. Rows are only written by one `INSERT … ON CONFLICT (stream_id) DO
-- UPDATE … WHERE …`, in a write transaction of its own (never an append's). Not WITHOUT ROWID:
-- snapshots can be large, and SQLite keeps large rows better in a rowid table.

CREATE TABLE snapshots (
    stream_id      TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    written_at     TEXT    NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id)
);
