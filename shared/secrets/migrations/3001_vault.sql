-- The secrets vault (portable SQL: PostgreSQL and SQLite). One sealed value per (owner, kind):
-- `sealed` is `v1.<key_id>.<nonce>.<ciphertext>` (AES-256-GCM, bound to "<owner>/<kind>");
-- `fingerprint` is what events may carry. Purging an owner's secrets deletes its rows.
CREATE TABLE IF NOT EXISTS vault_secrets (
    owner       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    sealed      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (owner, kind)
);
