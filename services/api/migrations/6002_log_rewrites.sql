-- The rewrites the event log has had (portable SQL). The log is immutable but for one
-- recorded rewrite: `personal-data-sealed`, by `appreg migrate`, which sealed the names and
-- e-mail addresses of the events recorded before personal data was sealed (README "Personal
-- data"). A row here means that rewrite is done and never runs again.
CREATE TABLE IF NOT EXISTS log_rewrites (
    name    TEXT PRIMARY KEY,
    done_at TEXT NOT NULL,
    events  BIGINT NOT NULL
);
