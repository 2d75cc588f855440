-- The log of one environment in log order (`read_environment_log`: the audit of an environment,
-- `GET /audit`): the environment every event's metadata names, then the log order. A page reads
-- a range of this index, however long the log of the other environments.
--
-- Building it blocks appends to `events` while it runs. On a large existing log, build it first
-- with `CREATE INDEX CONCURRENTLY events_environment_log_idx ON events ((metadata->>'environment'),
-- tx_id, position)`; this migration then finds it and does nothing.
CREATE INDEX IF NOT EXISTS events_environment_log_idx
    ON events ((metadata->>'environment'), tx_id, position);
