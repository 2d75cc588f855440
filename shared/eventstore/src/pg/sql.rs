//! The statements of the PostgreSQL adapter: appends, batches, claims and snapshots (the
//! reads are built with `select_events!` where they run).

pub(super) const INSERT_EVENTS: &str = "\
INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                    data, metadata, recorded_at)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.schema_version, e.data, e.metadata, \
       e.recorded_at
FROM UNNEST($4::uuid[], $5::text[], $6::int4[], $7::jsonb[], $8::jsonb[], $9::timestamptz[])
     WITH ORDINALITY AS e(event_id, event_type, schema_version, data, metadata, recorded_at, ord)
WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $3
ORDER BY e.ord
RETURNING version, tx_id, position";

pub(super) const CURRENT_VERSION: &str =
    "SELECT coalesce(max(version), 0)::bigint FROM events WHERE stream_id = $1";

pub(super) const RELEASE_CLAIMS: &str = "\
DELETE FROM claims
WHERE stream_id = $3
  AND (scope, value) IN (SELECT s, v FROM UNNEST($1::text[], $2::text[]) AS c(s, v))";

pub(super) const TAKE_CLAIMS: &str = "\
INSERT INTO claims (scope, value, stream_id)
SELECT c.scope, c.value, $3 FROM UNNEST($1::text[], $2::text[]) AS c(scope, value)
ON CONFLICT (scope, value) DO UPDATE SET stream_id = EXCLUDED.stream_id
    WHERE claims.stream_id = EXCLUDED.stream_id
RETURNING scope, value";

/// The events of all requests of a batch; each row is guarded by its own stream's version.
pub(super) const INSERT_BATCH_EVENTS: &str = "\
INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                    data, metadata, recorded_at)
SELECT e.event_id, e.stream_id, e.stream_type, e.expected + e.idx, e.event_type, \
       e.schema_version, e.data, e.metadata, e.recorded_at
FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::text[], $7::int4[], \
            $8::jsonb[], $9::jsonb[], $10::timestamptz[])
     WITH ORDINALITY AS e(event_id, stream_id, stream_type, expected, idx, event_type, \
                          schema_version, data, metadata, recorded_at, ord)
WHERE (SELECT coalesce(max(version), 0) FROM events x WHERE x.stream_id = e.stream_id) = e.expected
ORDER BY e.ord
RETURNING stream_id, version, tx_id, position";

/// The current version of each of `$1` (0 for a stream without events), in `$1`'s order.
pub(super) const CURRENT_VERSIONS: &str = "\
SELECT s.stream_id, \
       (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = s.stream_id)::bigint
FROM UNNEST($1::text[]) WITH ORDINALITY AS s(stream_id, ord)
ORDER BY s.ord";

pub(super) const RELEASE_BATCH_CLAIMS: &str = "\
DELETE FROM claims c
USING UNNEST($1::text[], $2::text[], $3::text[]) AS r(scope, value, stream_id)
WHERE c.scope = r.scope AND c.value = r.value AND c.stream_id = r.stream_id";

pub(super) const TAKE_BATCH_CLAIMS: &str = "\
INSERT INTO claims (scope, value, stream_id)
SELECT c.scope, c.value, c.stream_id
FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(scope, value, stream_id, ord)
ORDER BY c.ord
ON CONFLICT (scope, value) DO UPDATE SET stream_id = EXCLUDED.stream_id
    WHERE claims.stream_id = EXCLUDED.stream_id
RETURNING scope, value";

pub(super) const READ_SNAPSHOT: &str =
    "SELECT stream_id, schema_version, version, data FROM snapshots WHERE stream_id = $1";

/// One statement, in autocommit: a new stream's row is inserted; an existing row is replaced
/// unless it has the same shape and a version at least as high. A concurrent writer of the same
/// stream waits for the other's row lock only, and the `WHERE` is then checked against the row it
/// committed, so the newest snapshot wins whatever the order of commits.
pub(super) const WRITE_SNAPSHOT: &str = "\
INSERT INTO snapshots AS s (stream_id, schema_version, version, data, written_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (stream_id) DO UPDATE
    SET schema_version = EXCLUDED.schema_version, version = EXCLUDED.version,
        data = EXCLUDED.data, written_at = EXCLUDED.written_at
    WHERE s.schema_version <> EXCLUDED.schema_version OR s.version < EXCLUDED.version";
