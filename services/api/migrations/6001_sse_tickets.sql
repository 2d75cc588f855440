-- The api's own tables (portable SQL: PostgreSQL and SQLite run the same file).
--
-- Event-stream tickets (`POST /events/_ticket`): a browser's EventSource cannot send an
-- Authorization header, so it opens `GET /events?ticket=…` with a short-lived, single-use ticket
-- instead. Only the SHA-256 of a ticket is kept (hex); the row says whose it is (subject,
-- administrator of the environment or not, the token's expiry) and for which environment. Times
-- are Unix milliseconds. Shared by every replica of the api: a ticket issued by one opens a
-- stream on another, once.
CREATE TABLE IF NOT EXISTS api_sse_tickets (
    hash        TEXT   PRIMARY KEY,
    environment TEXT   NOT NULL,
    subject     TEXT   NOT NULL,
    name        TEXT,
    admin       BIGINT NOT NULL,
    token_exp   BIGINT,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT
);
CREATE INDEX IF NOT EXISTS api_sse_tickets_expires ON api_sse_tickets (expires_at);
