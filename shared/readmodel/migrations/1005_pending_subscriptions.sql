-- The number of an application's PENDING subscriptions, so the environment's queue of
-- subscriptions awaiting a decision (GET /subscriptions?status=PENDING) reads only the
-- applications that have one. Rows written before this column are marked by a portable
-- over-approximation (any document holding a "PENDING" status); the queue reads their documents
-- and keeps only the pending subscriptions, and the next write of a row sets its exact count.
ALTER TABLE rm_applications ADD COLUMN pending_subscriptions INTEGER NOT NULL DEFAULT 0;
UPDATE rm_applications SET pending_subscriptions = 1 WHERE doc LIKE '%"status":"PENDING"%';
