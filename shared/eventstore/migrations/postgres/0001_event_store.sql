-- The event log and the uniqueness claims (PostgreSQL).
--
-- Log order is (tx_id, position): the appending transaction's id (epoch-extended xid8 as a
-- bigint), then a sequence number. Readers only return rows whose tx_id is below the xmin of
-- their snapshot (the visibility horizon), so an event is never returned while a transaction
-- that could still commit before it in that order is running. Never rewrite or delete rows here.

CREATE TABLE events (
    position       bigserial   NOT NULL,
    tx_id          bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    event_id       uuid        NOT NULL,
    stream_id      text        NOT NULL,
    stream_type    text        NOT NULL,
    version        bigint      NOT NULL CHECK (version > 0),
    event_type     text        NOT NULL,
    schema_version int         NOT NULL,
    data           jsonb       NOT NULL,
    metadata       jsonb       NOT NULL,
    recorded_at    timestamptz NOT NULL,
    CONSTRAINT events_pkey PRIMARY KEY (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

-- read_log / head scan the log in (tx_id, position) order.
CREATE INDEX events_log_order_idx ON events (tx_id, position);

-- At most one stream holds a (scope, value) pair at a time.
CREATE TABLE claims (
    scope      text        NOT NULL,
    value      text        NOT NULL,
    stream_id  text        NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT claims_pkey PRIMARY KEY (scope, value)
);
