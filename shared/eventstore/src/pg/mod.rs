//! PostgreSQL adapter of the [`EventStore`] port (production).
//!
//! # Appends
//! One short READ COMMITTED transaction per append, with no lock shared by all writers (no
//! `LOCK TABLE`, no global advisory lock, no "global sequence row"): appenders to different
//! streams never wait for each other, except on a claim they both want. The steps are
//!
//! 1. insert all events in one `INSERT … SELECT FROM UNNEST(…)`, guarded by "the stream's
//!    `max(version)` is the expected version" (0 rows inserted → `VersionConflict`). Two racing
//!    appenders of the same stream both pass the guard, and the second one then blocks on the
//!    `events_stream_version_key` index entry until the first commits, and fails with a unique
//!    violation, reported as a `VersionConflict`. Doing this first means that, from here on, the
//!    transaction is the only appender of its stream;
//! 2. delete the released claims held by this stream;
//! 3. insert the claims (sorted, so that concurrent appenders lock them in the same order) with
//!    `ON CONFLICT … DO UPDATE … WHERE claims.stream_id = EXCLUDED.stream_id RETURNING`: a claim
//!    the stream already holds comes back (idempotent), one held by another stream does not
//!    (`ClaimTaken`);
//! 4. commit.
//!
//! An append without claims is the insert of step 1 alone, sent without an explicit
//! transaction (one statement is atomic by itself): one round trip instead of three.
//!
//! [`EventStore::append_batch`] runs the same steps once for all its requests, always in an
//! explicit transaction: one `INSERT` of the events of every stream (each row guarded by its own
//! stream's expected version), one `DELETE` of all releases, one `INSERT` of all claims (sorted
//! across the batch; two streams of the batch claiming one value fail before anything is sent).
//!
//! Any failure rolls the whole transaction back: an append is all or nothing.
//!
//! # The log order and the visibility horizon
//! Every row records its transaction id (`tx_id`, the epoch-extended xid) and a `bigserial`
//! position; the log order is `(tx_id, position)`. Positions are taken in insertion order, not
//! commit order, so a reader that simply followed `position` could pass a gap whose transaction
//! commits later and never see it. Instead, `read_log` and `head` only return rows whose `tx_id`
//! is below the `xmin` of the reading statement's snapshot: every transaction with a smaller id has
//! finished, and every transaction that has not started yet will get a larger id, so nothing can
//! ever appear before a position that has been returned. Gaps (rolled-back rows, unused sequence
//! numbers) are therefore harmless and are never "skipped on a timer".
//!
//! The price: the horizon is cluster-wide, so any transaction that holds an xid (in any database
//! of the server) delays the visibility of later events until it ends. A session left "idle in
//! transaction" with an xid stalls every tailer; keep `idle_in_transaction_session_timeout` set in
//! production.
//!
//! # Wake-ups
//! [`EventStore::wakeups`] is a `watch` channel bumped after each successful local append and by a
//! background task that `LISTEN`s on [`NOTIFY_CHANNEL`] (on a dedicated connection, so it never
//! takes a slot of the caller's pool). Appends do **not** call `pg_notify` inside their
//! transaction: a transaction that has queued a notification takes PostgreSQL's global
//! notify-queue lock at commit, which would serialise all appenders on one lock. Instead a
//! committed append signals a coalescing notifier task that issues `SELECT pg_notify(…)` on the
//! pool in its own transaction; any number of appends made while one NOTIFY is in flight collapse
//! into a single following NOTIFY. Wake-ups are hints: a wake-up can arrive before the event is
//! below the horizon, so readers ([`crate::LogTailer`]) also poll.
//!
//! # Snapshots
//! [`EventStore::write_snapshot`] is one `INSERT … ON CONFLICT (stream_id) DO UPDATE … WHERE …`
//! on the `snapshots` table, in autocommit on the pool, never inside an append's transaction and
//! never touching `events`: it locks only the stream's snapshot row, which no appender takes, so
//! it never waits for an appender nor makes one wait. [`EventStore::read_snapshot`] is a
//! primary-key lookup.
//!
//! This module must never serialise appenders globally, never return an event above the
//! horizon, and never hold a notification or a sleep inside an append transaction (the test-only
//! commit delay excepted).

use crate::{
    AppendError, AppendRequest, Appended, Claim, EventStore, LogPosition, Snapshot, StoreError,
    StoredEvent,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The LISTEN/NOTIFY channel on which appends are announced to other processes.
const NOTIFY_CHANNEL: &str = "appreg_events";

/// Pause before retrying after the LISTEN connection or a NOTIFY failed.
const RETRY_DELAY: Duration = Duration::from_millis(250);

/// Attempts of one append when PostgreSQL aborts it as a deadlock victim or on a serialisation
/// failure (possible only when a stream moves a claim that another stream is claiming at once).
const MAX_ATTEMPTS: u32 = 3;

/// `SELECT <all event columns> FROM events <tail>`, as a `&'static str` (statement cache key).
macro_rules! select_events {
    ($($tail:expr),+) => {
        concat!(
            "SELECT tx_id, position, event_id, stream_id, stream_type, version, event_type, ",
            "schema_version, data, metadata, recorded_at FROM events ",
            $($tail),+
        )
    };
}

/// `tx_id` below this is finished for the current statement's snapshot (see the module doc).
macro_rules! horizon {
    () => {
        "pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
    };
}

/// The horizon, for statements built at run time (`pg_copy`).
pub(crate) const HORIZON: &str = horizon!();

const INSERT_EVENTS: &str = "\
INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, \
                    data, metadata, recorded_at)
SELECT e.event_id, $1, $2, $3 + e.ord, e.event_type, e.schema_version, e.data, e.metadata, \
       e.recorded_at
FROM UNNEST($4::uuid[], $5::text[], $6::int4[], $7::jsonb[], $8::jsonb[], $9::timestamptz[])
     WITH ORDINALITY AS e(event_id, event_type, schema_version, data, metadata, recorded_at, ord)
WHERE (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = $1) = $3
ORDER BY e.ord
RETURNING version, tx_id, position";

const CURRENT_VERSION: &str =
    "SELECT coalesce(max(version), 0)::bigint FROM events WHERE stream_id = $1";

const RELEASE_CLAIMS: &str = "\
DELETE FROM claims
WHERE stream_id = $3
  AND (scope, value) IN (SELECT s, v FROM UNNEST($1::text[], $2::text[]) AS c(s, v))";

const TAKE_CLAIMS: &str = "\
INSERT INTO claims (scope, value, stream_id)
SELECT c.scope, c.value, $3 FROM UNNEST($1::text[], $2::text[]) AS c(scope, value)
ON CONFLICT (scope, value) DO UPDATE SET stream_id = EXCLUDED.stream_id
    WHERE claims.stream_id = EXCLUDED.stream_id
RETURNING scope, value";

/// The events of all requests of a batch; each row is guarded by its own stream's version.
const INSERT_BATCH_EVENTS: &str = "\
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
const CURRENT_VERSIONS: &str = "\
SELECT s.stream_id, \
       (SELECT coalesce(max(version), 0) FROM events WHERE stream_id = s.stream_id)::bigint
FROM UNNEST($1::text[]) WITH ORDINALITY AS s(stream_id, ord)
ORDER BY s.ord";

const RELEASE_BATCH_CLAIMS: &str = "\
DELETE FROM claims c
USING UNNEST($1::text[], $2::text[], $3::text[]) AS r(scope, value, stream_id)
WHERE c.scope = r.scope AND c.value = r.value AND c.stream_id = r.stream_id";

const TAKE_BATCH_CLAIMS: &str = "\
INSERT INTO claims (scope, value, stream_id)
SELECT c.scope, c.value, c.stream_id
FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS c(scope, value, stream_id, ord)
ORDER BY c.ord
ON CONFLICT (scope, value) DO UPDATE SET stream_id = EXCLUDED.stream_id
    WHERE claims.stream_id = EXCLUDED.stream_id
RETURNING scope, value";

const READ_SNAPSHOT: &str =
    "SELECT stream_id, schema_version, version, data FROM snapshots WHERE stream_id = $1";

/// One statement, in autocommit: a new stream's row is inserted; an existing row is replaced
/// unless it has the same shape and a version at least as high. A concurrent writer of the same
/// stream waits for the other's row lock only, and the `WHERE` is then checked against the row it
/// committed, so the newest snapshot wins whatever the order of commits.
const WRITE_SNAPSHOT: &str = "\
INSERT INTO snapshots AS s (stream_id, schema_version, version, data, written_at)
VALUES ($1, $2, $3, $4, now())
ON CONFLICT (stream_id) DO UPDATE
    SET schema_version = EXCLUDED.schema_version, version = EXCLUDED.version,
        data = EXCLUDED.data, written_at = EXCLUDED.written_at
    WHERE s.schema_version <> EXCLUDED.schema_version OR s.version < EXCLUDED.version";

/// The PostgreSQL event store. Dropping it stops its background tasks.
pub struct PgEventStore {
    pool: PgPool,
    wakeups: Arc<watch::Sender<u64>>,
    notifier: Arc<Notify>,
    /// Test hook: a random delay up to this long before each COMMIT/ROLLBACK of an append.
    commit_delay: Option<Duration>,
    _tasks: AbortOnDrop,
}

impl fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgEventStore")
            .field("pool", &self.pool)
            .field("commit_delay", &self.commit_delay)
            .finish_non_exhaustive()
    }
}

/// Aborts the background tasks when the store goes away (they hold no reference to it).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Why one append attempt failed.
#[derive(Debug)]
enum Failure {
    /// Reported as is.
    Append(AppendError),
    /// A concurrent appender took one of our versions; the actual version is read afterwards.
    VersionRace,
}

impl From<sqlx::Error> for Failure {
    fn from(error: sqlx::Error) -> Self {
        Failure::Append(AppendError::Backend(StoreError::Database(error)))
    }
}

impl PgEventStore {
    /// Builds the adapter over `pool` (migrated beforehand) and starts its background tasks:
    /// the LISTEN task is listening when this returns, on a connection of its own (one more than
    /// the pool's maximum).
    pub async fn new(pool: PgPool) -> Result<Self, StoreError> {
        let (sender, _) = watch::channel(0u64);
        let wakeups = Arc::new(sender);
        let notifier = Arc::new(Notify::new());

        // PgListener keeps its connection checked out forever: give it a pool of its own so it
        // never takes a slot of the caller's pool.
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .max_lifetime(None)
            .idle_timeout(None)
            .test_before_acquire(false)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&listen_pool).await?;
        listener.listen(NOTIFY_CHANNEL).await?;

        let tasks = vec![
            tokio::spawn(listen_loop(listener, wakeups.clone())),
            tokio::spawn(notify_loop(pool.clone(), notifier.clone())),
        ];
        Ok(PgEventStore {
            pool,
            wakeups,
            notifier,
            commit_delay: None,
            _tasks: AbortOnDrop(tasks),
        })
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Test hook: hold every append transaction open for a random 0..=`max` before its COMMIT
    /// (or ROLLBACK), so that tests see transactions commit out of their id order.
    #[doc(hidden)]
    pub fn with_commit_delay_for_tests(mut self, max: Duration) -> Self {
        self.commit_delay = Some(max);
        self
    }

    async fn test_delay(&self) {
        if let Some(max) = self.commit_delay {
            tokio::time::sleep(random_up_to(max)).await;
        }
    }

    async fn try_append(
        &self,
        request: &AppendRequest,
        claims: &[&Claim],
        releases: &[&Claim],
    ) -> Result<Appended, AppendError> {
        if claims.is_empty() && releases.is_empty() && self.commit_delay.is_none() {
            // Without claims an append is one INSERT statement, atomic on its own: run it
            // outside an explicit transaction, one round trip instead of three.
            let mut conn = self.pool.acquire().await.map_err(StoreError::from)?;
            return match append_in(&mut conn, request, claims, releases).await {
                Ok(appended) => Ok(appended),
                Err(failure) => self.failed(request, failure).await,
            };
        }
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let failure = match append_in(&mut tx, request, claims, releases).await {
            Ok(appended) => {
                self.test_delay().await;
                tx.commit().await.map_err(StoreError::from)?;
                return Ok(appended);
            }
            Err(failure) => failure,
        };
        self.test_delay().await;
        // Best effort: a failed ROLLBACK leaves the connection to sqlx, which closes it.
        if let Err(error) = tx.rollback().await {
            tracing::debug!(%error, "rollback of a failed append failed");
        }
        self.failed(request, failure).await
    }

    /// The error of a failed append (after its rollback).
    async fn failed(
        &self,
        request: &AppendRequest,
        failure: Failure,
    ) -> Result<Appended, AppendError> {
        match failure {
            Failure::Append(error) => Err(error),
            Failure::VersionRace => {
                let actual = sqlx::query_scalar::<_, i64>(CURRENT_VERSION)
                    .bind(&request.stream_id)
                    .fetch_one(&self.pool)
                    .await
                    .map_err(StoreError::from)?;
                Err(AppendError::VersionConflict {
                    stream_id: request.stream_id.clone(),
                    expected: request.expected_version,
                    actual,
                })
            }
        }
    }
}

impl PgEventStore {
    /// Independent appends without claims or releases in one autocommit `INSERT` (see
    /// [`EventStore::append_each`]): a stream whose guard failed wrote nothing and gets its
    /// `VersionConflict`. `None` when the statement failed as a whole (a unique violation, a
    /// duplicate event id, a lost connection): it wrote nothing, and the caller appends one by one.
    async fn insert_each(
        &self,
        requests: &[AppendRequest],
    ) -> Option<Vec<Result<Appended, AppendError>>> {
        let inserted = {
            let mut conn = match self.pool.acquire().await {
                Ok(conn) => conn,
                Err(error) => {
                    tracing::debug!(%error, "no connection for a grouped insert");
                    return None;
                }
            };
            match insert_batch_events(&mut conn, requests).await {
                Ok(inserted) => inserted,
                Err(failure) => {
                    tracing::debug!(?failure, "grouped insert refused; appending one by one");
                    return None;
                }
            }
        };
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(match inserted.get(&request.stream_id) {
                Some((count, last)) if *count == request.events.len() => Ok(*last),
                Some(_) => Err(StoreError::Corrupt(format!(
                    "a grouped insert wrote part of the events of {}",
                    request.stream_id
                ))
                .into()),
                // The guard held for none of this stream's rows: nothing of it was written.
                None => self.failed(request, Failure::VersionRace).await,
            });
        }
        Some(answers)
    }

    /// One attempt of a batch, in an explicit transaction (committed or rolled back here).
    async fn try_append_batch(
        &self,
        requests: &[AppendRequest],
        claims: &[(&Claim, &str)],
        releases: &[(&Claim, &str)],
    ) -> Result<Vec<Appended>, Failure> {
        let mut tx = self.pool.begin().await?;
        let result = append_batch_in(&mut tx, requests, claims, releases).await;
        self.test_delay().await;
        match result {
            Ok(appended) => {
                tx.commit().await?;
                Ok(appended)
            }
            Err(failure) => {
                // Best effort: a failed ROLLBACK leaves the connection to sqlx, which closes it.
                if let Err(error) = tx.rollback().await {
                    tracing::debug!(%error, "rollback of a failed batch failed");
                }
                Err(failure)
            }
        }
    }

    /// The conflict behind a unique violation of a batch (after its rollback): the first
    /// request whose stream is no longer at its expected version.
    async fn batch_conflict(&self, requests: &[AppendRequest]) -> AppendError {
        let streams: Vec<&str> = requests.iter().map(|r| r.stream_id.as_str()).collect();
        let actual = match sqlx::query_as::<_, (String, i64)>(CURRENT_VERSIONS)
            .bind(&streams)
            .fetch_all(&self.pool)
            .await
        {
            Ok(rows) => rows,
            Err(error) => return StoreError::from(error).into(),
        };
        requests
            .iter()
            .zip(actual)
            .find(|(request, (_, actual))| *actual != request.expected_version)
            .map_or_else(
                || {
                    // Versions only grow and a stream appears once per batch, so a violation of
                    // events_stream_version_key leaves one stream past its expected version.
                    StoreError::Corrupt(
                        "a batch hit a version race, yet every stream is at its expected version"
                            .to_string(),
                    )
                    .into()
                },
                |(request, (_, actual))| AppendError::VersionConflict {
                    stream_id: request.stream_id.clone(),
                    expected: request.expected_version,
                    actual,
                },
            )
    }
}

/// Per stream: the rows a batch's `INSERT` wrote, and the version and position of its last event.
type Inserted = HashMap<String, (usize, Appended)>;

/// The one `INSERT` of the events of all `requests`, each row guarded by its own stream's
/// expected version (a stream's rows share one snapshot: all of them pass or none does).
async fn insert_batch_events(
    conn: &mut PgConnection,
    requests: &[AppendRequest],
) -> Result<Inserted, Failure> {
    let total: usize = requests.iter().map(|r| r.events.len()).sum();
    let mut event_ids = Vec::with_capacity(total);
    let mut stream_ids = Vec::with_capacity(total);
    let mut stream_types = Vec::with_capacity(total);
    let mut expected = Vec::with_capacity(total);
    let mut indexes = Vec::with_capacity(total);
    let mut event_types = Vec::with_capacity(total);
    let mut schema_versions = Vec::with_capacity(total);
    let mut data = Vec::with_capacity(total);
    let mut metadata = Vec::with_capacity(total);
    let mut recorded_at = Vec::with_capacity(total);
    for request in requests {
        for (index, event) in (1i64..).zip(&request.events) {
            event_ids.push(event.event_id);
            stream_ids.push(request.stream_id.as_str());
            stream_types.push(request.stream_type.as_str());
            expected.push(request.expected_version);
            indexes.push(index);
            event_types.push(event.event_type.as_str());
            schema_versions.push(event.schema_version);
            data.push(event.data.clone());
            metadata.push(event.metadata.clone());
            recorded_at.push(event.recorded_at);
        }
    }
    let rows = sqlx::query(INSERT_BATCH_EVENTS)
        .bind(event_ids)
        .bind(stream_ids)
        .bind(stream_types)
        .bind(expected)
        .bind(indexes)
        .bind(event_types)
        .bind(schema_versions)
        .bind(data)
        .bind(metadata)
        .bind(recorded_at)
        .fetch_all(&mut *conn)
        .await
        .map_err(|error| match unique_violation(&error) {
            Some("events_stream_version_key") => Failure::VersionRace,
            Some("events_pkey") => Failure::Append(StoreError::DuplicateEventId.into()),
            _ => Failure::from(error),
        })?;

    let mut inserted: Inserted = HashMap::with_capacity(requests.len());
    for row in &rows {
        let version: i64 = row.try_get("version")?;
        let (count, last) = inserted.entry(row.try_get("stream_id")?).or_insert((
            0,
            Appended {
                version: 0,
                position: LogPosition::START,
            },
        ));
        *count += 1;
        if version > last.version {
            *last = Appended {
                version,
                position: LogPosition {
                    tx: row.try_get("tx_id")?,
                    pos: row.try_get("position")?,
                },
            };
        }
    }
    Ok(inserted)
}

/// The statements of a batch, inside `tx`: the same steps as an append (see the module doc),
/// each sent once for all requests.
async fn append_batch_in(
    tx: &mut PgConnection,
    requests: &[AppendRequest],
    claims: &[(&Claim, &str)],
    releases: &[(&Claim, &str)],
) -> Result<Vec<Appended>, Failure> {
    let inserted = insert_batch_events(tx, requests).await?;
    let mut appended = Vec::with_capacity(requests.len());
    for request in requests {
        match inserted.get(&request.stream_id) {
            Some((count, last)) if *count == request.events.len() => appended.push(*last),
            // The guard held for none of this stream's rows (they share one snapshot).
            _ => return Err(version_conflict(tx, request).await),
        }
    }

    if !releases.is_empty() {
        let (scopes, values, streams) = claim_columns(releases);
        sqlx::query(RELEASE_BATCH_CLAIMS)
            .bind(scopes)
            .bind(values)
            .bind(streams)
            .execute(&mut *tx)
            .await?;
    }

    if !claims.is_empty() {
        let (scopes, values, streams) = claim_columns(claims);
        let taken = sqlx::query(TAKE_BATCH_CLAIMS)
            .bind(scopes)
            .bind(values)
            .bind(streams)
            .fetch_all(&mut *tx)
            .await?;
        if taken.len() != claims.len() {
            let taken = taken
                .iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
                .collect::<Result<HashSet<_>, sqlx::Error>>()?;
            if let Some((claim, _)) = claims
                .iter()
                .find(|(c, _)| !taken.contains(&(c.scope.clone(), c.value.clone())))
            {
                return Err(Failure::Append(AppendError::ClaimTaken {
                    scope: claim.scope.clone(),
                    value: claim.value.clone(),
                }));
            }
        }
    }

    Ok(appended)
}

/// The scope, value and stream columns of a batch's (claim, stream) pairs, for `UNNEST`.
fn claim_columns<'a>(pairs: &[(&'a Claim, &'a str)]) -> (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>) {
    (
        pairs.iter().map(|(c, _)| c.scope.as_str()).collect(),
        pairs.iter().map(|(c, _)| c.value.as_str()).collect(),
        pairs.iter().map(|(_, s)| *s).collect(),
    )
}

/// The conflict of a request whose version guard failed, with the stream's actual version.
async fn version_conflict(tx: &mut PgConnection, request: &AppendRequest) -> Failure {
    match sqlx::query_scalar::<_, i64>(CURRENT_VERSION)
        .bind(&request.stream_id)
        .fetch_one(&mut *tx)
        .await
    {
        Ok(actual) => Failure::Append(AppendError::VersionConflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected_version,
            actual,
        }),
        Err(error) => error.into(),
    }
}

/// The statements of one append, inside `tx` (see the module doc for their order).
async fn append_in(
    tx: &mut PgConnection,
    request: &AppendRequest,
    claims: &[&Claim],
    releases: &[&Claim],
) -> Result<Appended, Failure> {
    let events = &request.events;
    let rows = sqlx::query(INSERT_EVENTS)
        .bind(&request.stream_id)
        .bind(&request.stream_type)
        .bind(request.expected_version)
        .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.event_type.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.schema_version).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.data.clone()).collect::<Vec<_>>())
        .bind(
            events
                .iter()
                .map(|e| e.metadata.clone())
                .collect::<Vec<_>>(),
        )
        .bind(events.iter().map(|e| e.recorded_at).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await
        .map_err(|error| match unique_violation(&error) {
            Some("events_stream_version_key") => Failure::VersionRace,
            Some("events_pkey") => Failure::Append(StoreError::DuplicateEventId.into()),
            _ => Failure::from(error),
        })?;

    if rows.is_empty() {
        return Err(version_conflict(tx, request).await);
    }
    let mut last = (0i64, LogPosition::START);
    for row in &rows {
        let version: i64 = row.try_get("version")?;
        if version > last.0 {
            let position = LogPosition {
                tx: row.try_get("tx_id")?,
                pos: row.try_get("position")?,
            };
            last = (version, position);
        }
    }

    if !releases.is_empty() {
        sqlx::query(RELEASE_CLAIMS)
            .bind(releases.iter().map(|c| c.scope.clone()).collect::<Vec<_>>())
            .bind(releases.iter().map(|c| c.value.clone()).collect::<Vec<_>>())
            .bind(&request.stream_id)
            .execute(&mut *tx)
            .await?;
    }

    if !claims.is_empty() {
        let taken = sqlx::query(TAKE_CLAIMS)
            .bind(claims.iter().map(|c| c.scope.clone()).collect::<Vec<_>>())
            .bind(claims.iter().map(|c| c.value.clone()).collect::<Vec<_>>())
            .bind(&request.stream_id)
            .fetch_all(&mut *tx)
            .await?;
        if taken.len() != claims.len() {
            let taken = taken
                .iter()
                .map(|row| Ok((row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?)))
                .collect::<Result<HashSet<_>, sqlx::Error>>()?;
            if let Some(claim) = claims
                .iter()
                .find(|c| !taken.contains(&(c.scope.clone(), c.value.clone())))
            {
                return Err(Failure::Append(AppendError::ClaimTaken {
                    scope: claim.scope.clone(),
                    value: claim.value.clone(),
                }));
            }
        }
    }

    Ok(Appended {
        version: last.0,
        position: last.1,
    })
}

#[async_trait::async_trait]
impl EventStore for PgEventStore {
    #[tracing::instrument(skip_all, fields(
        stream_id = %request.stream_id,
        expected_version = request.expected_version,
        events = request.events.len(),
    ))]
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        if request.events.is_empty() {
            return Err(AppendError::Empty);
        }
        let claims = sorted_unique(&request.claims);
        let releases = sorted_unique(&request.releases);
        let mut attempt = 1;
        loop {
            match self.try_append(&request, &claims, &releases).await {
                Ok(appended) => {
                    bump(&self.wakeups);
                    self.notifier.notify_one();
                    return Ok(appended);
                }
                Err(AppendError::Backend(StoreError::Database(error)))
                    if attempt < MAX_ATTEMPTS && is_transient(&error) =>
                {
                    tracing::debug!(%error, attempt, "append aborted by PostgreSQL; retrying");
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    #[tracing::instrument(skip_all, fields(
        requests = requests.len(),
        events = requests.iter().map(|r| r.events.len()).sum::<usize>(),
    ))]
    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<Appended>, AppendError> {
        check_batch(&requests)?;
        let claims = batch_claims(&requests)?;
        let releases = batch_releases(&requests);
        let mut attempt = 1;
        loop {
            match self.try_append_batch(&requests, &claims, &releases).await {
                Ok(appended) => {
                    bump(&self.wakeups);
                    self.notifier.notify_one();
                    return Ok(appended);
                }
                Err(Failure::VersionRace) => return Err(self.batch_conflict(&requests).await),
                Err(Failure::Append(AppendError::Backend(StoreError::Database(error))))
                    if attempt < MAX_ATTEMPTS && is_transient(&error) =>
                {
                    tracing::debug!(%error, attempt, "batch aborted by PostgreSQL; retrying");
                    attempt += 1;
                }
                Err(Failure::Append(error)) => return Err(error),
            }
        }
    }

    #[tracing::instrument(skip_all, fields(requests = requests.len()))]
    async fn append_each(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, AppendError>> {
        let together = requests.len() > 1
            && self.commit_delay.is_none()
            && requests
                .iter()
                .all(|r| !r.events.is_empty() && r.claims.is_empty() && r.releases.is_empty())
            && check_batch(&requests).is_ok();
        if together {
            if let Some(answers) = self.insert_each(&requests).await {
                if answers.iter().any(Result::is_ok) {
                    bump(&self.wakeups);
                    self.notifier.notify_one();
                }
                return answers;
            }
        }
        futures::future::join_all(requests.into_iter().map(|r| self.append(r))).await
    }

    async fn read_streams(&self, stream_ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        if stream_ids.len() > crate::MAX_STREAMS_PER_READ {
            return Err(StoreError::TooManyStreams);
        }
        sqlx::query(select_events!(
            "WHERE stream_id = ANY($1) ORDER BY stream_id, version"
        ))
        .bind(stream_ids)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(select_events!(
            "WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
        ))
        .bind(stream_id)
        .bind(after_version)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn read_log(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        sqlx::query(select_events!(
            "WHERE (tx_id, position) > ($1, $2) AND tx_id < ",
            horizon!(),
            " ORDER BY tx_id, position LIMIT $3"
        ))
        .bind(after.tx)
        .bind(after.pos)
        .bind(limit.max(0))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn read_at(&self, positions: &[LogPosition]) -> Result<Vec<StoredEvent>, StoreError> {
        if positions.len() > crate::MAX_POSITIONS_PER_READ {
            return Err(StoreError::TooManyPositions);
        }
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let (txs, pos): (Vec<i64>, Vec<i64>) = positions.iter().map(|p| (p.tx, p.pos)).unzip();
        sqlx::query(select_events!(
            "WHERE (tx_id, position) IN ",
            "(SELECT t, p FROM UNNEST($1::bigint[], $2::bigint[]) AS q(t, p)) AND tx_id < ",
            horizon!(),
            " ORDER BY tx_id, position"
        ))
        .bind(txs)
        .bind(pos)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn head(&self) -> Result<LogPosition, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT tx_id, position FROM events WHERE tx_id < ",
            horizon!(),
            " ORDER BY tx_id DESC, position DESC LIMIT 1"
        ))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => LogPosition {
                tx: row.try_get("tx_id")?,
                pos: row.try_get("position")?,
            },
            None => LogPosition::START,
        })
    }

    async fn last_committed(&self) -> Result<LogPosition, StoreError> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT tx_id, position FROM events ORDER BY tx_id DESC, position DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|(tx, pos)| LogPosition { tx, pos })
            .unwrap_or(LogPosition::START))
    }

    async fn claim_holder(&self, claim: &Claim) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT stream_id FROM claims WHERE scope = $1 AND value = $2")
                .bind(&claim.scope)
                .bind(&claim.value)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn read_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<(String, i32, i64, Vec<u8>)> = sqlx::query_as(READ_SNAPSHOT)
            .bind(stream_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(
            row.map(|(stream_id, schema_version, version, data)| Snapshot {
                stream_id,
                schema_version,
                version,
                data,
            }),
        )
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        sqlx::query(WRITE_SNAPSHOT)
            .bind(&snapshot.stream_id)
            .bind(snapshot.schema_version)
            .bind(snapshot.version)
            .bind(&snapshot.data)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }
}

fn event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    Ok(StoredEvent {
        position: LogPosition {
            tx: row.try_get("tx_id")?,
            pos: row.try_get("position")?,
        },
        event_id: row.try_get("event_id")?,
        stream_id: row.try_get("stream_id")?,
        stream_type: row.try_get("stream_type")?,
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: row.try_get("data")?,
        metadata: row.try_get("metadata")?,
        recorded_at: row.try_get("recorded_at")?,
    })
}

/// Claims sorted and deduplicated: a consistent lock order across appenders, and no row
/// affected twice by one `INSERT … ON CONFLICT`.
pub(crate) fn sorted_unique(claims: &[Claim]) -> Vec<&Claim> {
    let mut sorted: Vec<&Claim> = claims.iter().collect();
    sorted.sort_by(|a, b| (&a.scope, &a.value).cmp(&(&b.scope, &b.value)));
    sorted.dedup();
    sorted
}

/// The checks of a batch before anything is sent: at least one request, each with events
/// (`Empty`), no stream twice (`DuplicateStream`).
pub(crate) fn check_batch(requests: &[AppendRequest]) -> Result<(), AppendError> {
    if requests.is_empty() {
        return Err(AppendError::Empty);
    }
    let mut streams = HashSet::with_capacity(requests.len());
    for request in requests {
        if request.events.is_empty() {
            return Err(AppendError::Empty);
        }
        if !streams.insert(request.stream_id.as_str()) {
            return Err(AppendError::DuplicateStream {
                stream_id: request.stream_id.clone(),
            });
        }
    }
    Ok(())
}

/// The claims of a batch with their streams, sorted by `(scope, value)` across the batch (one
/// lock order for all appenders) and deduplicated. Two streams of the batch claiming the same
/// value is a `ClaimTaken` (one `INSERT … ON CONFLICT` cannot affect a row twice).
pub(crate) fn batch_claims(requests: &[AppendRequest]) -> Result<Vec<(&Claim, &str)>, AppendError> {
    let mut claims: Vec<(&Claim, &str)> = requests
        .iter()
        .flat_map(|r| r.claims.iter().map(move |c| (c, r.stream_id.as_str())))
        .collect();
    claims.sort_by(|a, b| (&a.0.scope, &a.0.value, a.1).cmp(&(&b.0.scope, &b.0.value, b.1)));
    claims.dedup();
    if let Some(pair) = claims.windows(2).find(|pair| pair[0].0 == pair[1].0) {
        return Err(AppendError::ClaimTaken {
            scope: pair[0].0.scope.clone(),
            value: pair[0].0.value.clone(),
        });
    }
    Ok(claims)
}

/// The releases of a batch with their streams, sorted and deduplicated.
pub(crate) fn batch_releases(requests: &[AppendRequest]) -> Vec<(&Claim, &str)> {
    let mut releases: Vec<(&Claim, &str)> = requests
        .iter()
        .flat_map(|r| r.releases.iter().map(move |c| (c, r.stream_id.as_str())))
        .collect();
    releases.sort_by(|a, b| (&a.0.scope, &a.0.value, a.1).cmp(&(&b.0.scope, &b.0.value, b.1)));
    releases.dedup();
    releases
}

/// The constraint a unique violation is about (None for any other error).
fn unique_violation(error: &sqlx::Error) -> Option<&str> {
    error
        .as_database_error()
        .filter(|e| e.kind() == ErrorKind::UniqueViolation)
        .and_then(|e| e.constraint())
}

/// Deadlock victim or serialisation failure: the transaction was rolled back and may be retried.
fn is_transient(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

pub(crate) fn bump(wakeups: &watch::Sender<u64>) {
    wakeups.send_modify(|n| *n = n.wrapping_add(1));
}

/// Forwards notifications (from any process) to the watch channel until aborted.
async fn listen_loop(mut listener: PgListener, wakeups: Arc<watch::Sender<u64>>) {
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => bump(&wakeups),
            Ok(None) => {
                // The connection was lost and re-established: notifications may have been lost.
                tracing::warn!("LISTEN connection lost and re-established");
                bump(&wakeups);
            }
            Err(error) => {
                tracing::warn!(%error, "LISTEN connection failed; retrying");
                bump(&wakeups);
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// Shortest interval between two NOTIFYs of one store.
const NOTIFY_PACE: Duration = Duration::from_millis(2);

/// Issues one NOTIFY per burst of local appends, outside their transactions, until aborted.
async fn notify_loop(pool: PgPool, notifier: Arc<Notify>) {
    loop {
        notifier.notified().await;
        match sqlx::query("SELECT pg_notify($1, '')")
            .bind(NOTIFY_CHANNEL)
            .execute(&pool)
            .await
        {
            // Pace the NOTIFYs (at most one per NOTIFY_PACE): appends made meanwhile share the
            // next one, so a busy writer sends hundreds a second, not thousands.
            Ok(_) => tokio::time::sleep(NOTIFY_PACE).await,
            Err(sqlx::Error::PoolClosed) => return,
            Err(error) => {
                tracing::warn!(%error, "NOTIFY failed; other processes will see the append on their next poll");
                tokio::time::sleep(RETRY_DELAY).await;
            }
        }
    }
}

/// A pseudo-random duration in `0..=max` (test hook only; no rand dependency in the library).
fn random_up_to(max: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_nanos(random % nanos.saturating_add(1))
}
