-- A user's environments (GET /v1/users/{user}, an erasure) read by the user alone: the primary
-- key leads with the environment, so without this index that read scanned every user.
CREATE INDEX IF NOT EXISTS rm_users_user ON rm_users (user_id);
