-- Snapshots of aggregates (PostgreSQL): at most one per stream, the newest.
--
-- A cache, not a source of truth: a row may be deleted or the whole table truncated at any
-- time, and readers then fold the stream instead. `data` is opaque to the store;
-- `schema_version` is the aggregate's shape and `version` the last stream version folded into
-- it. Rows are only written by one `INSERT … ON CONFLICT (stream_id) DO UPDATE … WHERE …`
-- outside any append transaction, so writing a snapshot never locks a row of `events` nor waits
-- for an appender.

CREATE TABLE snapshots (
    stream_id      text        NOT NULL,
    schema_version int         NOT NULL,
    version        bigint      NOT NULL,
    data           bytea       NOT NULL,
    written_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT snapshots_pkey PRIMARY KEY (stream_id)
);
