-- Users first seen in an environment (their token's profile), and the environments.
CREATE TABLE IF NOT EXISTS rm_users (
    environment TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    name        TEXT,
    email       TEXT,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (environment, user_id)
);

CREATE TABLE IF NOT EXISTS rm_environments (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL
);
