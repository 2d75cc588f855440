-- Read models of the api (portable SQL: PostgreSQL and SQLite run the same file).
-- Rebuilt from the event store; never the source of truth.
CREATE TABLE IF NOT EXISTS rm_applications (
    id          TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    doc         TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rm_applications_env_status ON rm_applications (environment, status, created_at, id);

CREATE TABLE IF NOT EXISTS rm_application_members (
    application_id TEXT NOT NULL,
    user_id        TEXT NOT NULL,
    environment    TEXT NOT NULL,
    role           TEXT NOT NULL,
    PRIMARY KEY (application_id, user_id)
);
CREATE INDEX IF NOT EXISTS rm_application_members_user ON rm_application_members (environment, user_id);

-- One row per read model: the log position it includes, written in the same transaction as
-- its rows, so a redelivered event changes nothing.
CREATE TABLE IF NOT EXISTS rm_checkpoints (
    name TEXT PRIMARY KEY,
    tx   BIGINT NOT NULL,
    pos  BIGINT NOT NULL
);
INSERT INTO rm_checkpoints (name, tx, pos) VALUES ('applications', 0, 0) ON CONFLICT (name) DO NOTHING;
