-- The log of one environment in log order (`read_environment_log`: the audit of an environment,
-- `GET /audit`): the environment every event's metadata names, then the log order. Queries must
-- spell the expression exactly as here for SQLite to use the index.
CREATE INDEX IF NOT EXISTS events_environment_log_idx
    ON events (json_extract(metadata, '$.environment'), position);
