-- Suspected orphans: DCR registration attempts whose outcome is unknown (DcrAttemptOutcomeUnknown),
-- OPEN until a DcrAttemptSuspicionsCleared names them (then CLEARED, with the proven client_id).
-- The key leads with (environment, provider_id): the administrators' list reads a prefix of it.
CREATE TABLE IF NOT EXISTS rm_suspected_orphans (
    environment       TEXT   NOT NULL,
    provider_id       TEXT   NOT NULL,
    application_id    TEXT   NOT NULL,
    request_version   BIGINT NOT NULL,
    attempt           BIGINT NOT NULL,
    idempotency_key   TEXT   NOT NULL,
    client_name       TEXT   NOT NULL,
    started_at        TEXT   NOT NULL,
    ended_at          TEXT   NOT NULL,
    error             TEXT   NOT NULL,
    status            TEXT   NOT NULL,
    cleared_client_id TEXT,
    PRIMARY KEY (environment, provider_id, application_id, request_version, attempt)
);
