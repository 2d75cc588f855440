-- The notifier's e-mails (portable SQL: PostgreSQL and SQLite): one row per (event, member), so
-- a replay of the log, or a restart, never sends a member the same notification twice. Times are
-- Unix milliseconds.
CREATE TABLE IF NOT EXISTS notifier_mails (
    event_id   TEXT NOT NULL,
    member     TEXT NOT NULL,
    hook       TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    subject    TEXT NOT NULL,
    body       TEXT NOT NULL,
    status     TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    send_after BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (event_id, member)
);
CREATE INDEX IF NOT EXISTS notifier_mails_due ON notifier_mails (status, send_after);
