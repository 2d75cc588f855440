-- A registration attempt in flight (portable SQL): written before the provider is called (one row
-- per request, the latest attempt), removed with the request's obtained client (same transaction)
-- or its failure. A row left behind by a saga that died is, when the request is handled again,
-- recorded as an attempt whose outcome is unknown (a suspected orphan).
CREATE TABLE IF NOT EXISTS dcr_attempts (
    request_key TEXT PRIMARY KEY,
    attempt     BIGINT NOT NULL,
    started_at  TEXT NOT NULL
);
