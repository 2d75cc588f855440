-- The DCR saga's own state (portable SQL: PostgreSQL and SQLite).
-- One row per registration request it obtained a client for (request_key = "<application>:<version>"):
-- written before the command that records the client, so a retry after a crash reuses the client
-- instead of registering a second one. Secrets are in vault_secrets, never here.
CREATE TABLE IF NOT EXISTS dcr_requests (
    request_key             TEXT PRIMARY KEY,
    application_id          TEXT NOT NULL,
    provider_id             TEXT NOT NULL,
    client_id               TEXT NOT NULL,
    registration_client_uri TEXT,
    secret_fingerprint      TEXT,
    secret_expires_at       TEXT,
    state                   TEXT NOT NULL,
    updated_at              TEXT NOT NULL
);

-- Where the saga is in the event log.
CREATE TABLE IF NOT EXISTS saga_checkpoints (
    name TEXT PRIMARY KEY,
    tx   BIGINT NOT NULL,
    pos  BIGINT NOT NULL
);
