-- Erased users (crypto-shredding, DESIGN.md "Personal data"): their data key (vault row
-- `personal/<user>`, `data_key`) is deleted in the transaction that records the erasure here.
CREATE TABLE IF NOT EXISTS personal_erasures (
    subject   TEXT PRIMARY KEY,
    erased_at TEXT NOT NULL
);
