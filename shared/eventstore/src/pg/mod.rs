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
//!
//! Layout: this file holds the store, its start-up and the [`EventStore`] implementation (with
//! the reads and snapshots); `sql` the statements, `append` one append and the helpers shared
//! with batches, `batch` the batches, `notify` the wake-ups, `conns` the connections kept
//! between uses.

use crate::{
    AppendError, AppendRequest, Appended, Claim, EventStore, LogFilter, LogPosition, Snapshot,
    StoreError, StoredEvent,
};
use sqlx::error::ErrorKind;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, PgConnection, Row};
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

mod append;
mod batch;
mod conns;
mod notify;
mod sql;

use append::*;
pub(crate) use append::{batch_claims, batch_releases, check_batch};
use conns::Conns;
pub use conns::Kept;
pub(crate) use notify::bump;
use notify::*;
use sql::*;
/// The PostgreSQL event store. Dropping it stops its background tasks.
pub struct PgEventStore {
    pool: PgPool,
    /// Connections kept between uses (see `conns`).
    conns: Arc<Conns>,
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

        let conns = Conns::new(pool.clone());
        let closing = pool.close_event();
        let tasks = vec![
            tokio::spawn(listen_loop(listener, wakeups.clone())),
            tokio::spawn(notify_loop(conns.clone(), notifier.clone())),
            // The kept connections go back as soon as the pool is being closed: `close` waits
            // for every connection checked out.
            tokio::spawn({
                let conns = conns.clone();
                async move {
                    closing.await;
                    conns.release_all();
                }
            }),
        ];
        Ok(PgEventStore {
            pool,
            conns,
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

    /// Runs a query of events on a kept connection (see `conns`) and reads its rows.
    async fn events(
        &self,
        query: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let mut conn = self.conns.get().await?;
        let rows = query.fetch_all(&mut *conn).await?;
        conn.keep();
        rows.iter().map(event_from_row).collect()
    }

    async fn test_delay(&self) {
        if let Some(max) = self.commit_delay {
            tokio::time::sleep(random_up_to(max)).await;
        }
    }
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
        self.events(sqlx::query(READ_STREAMS).bind(stream_ids))
            .await
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events(
            sqlx::query(select_events!(
                "WHERE stream_id = $1 AND version > $2 ORDER BY version LIMIT $3"
            ))
            .bind(stream_id)
            .bind(after_version)
            .bind(limit.max(0)),
        )
        .await
    }

    async fn read_log(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        self.events(
            sqlx::query(select_events!(
                "WHERE (tx_id, position) > ($1, $2) AND tx_id < ",
                horizon!(),
                " ORDER BY tx_id, position LIMIT $3"
            ))
            .bind(after.tx)
            .bind(after.pos)
            .bind(limit.max(0)),
        )
        .await
    }

    async fn read_log_of_types(
        &self,
        after: LogPosition,
        limit: i64,
        types: &[String],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // The other events' payloads are neither converted to text nor sent.
        self.events(
            sqlx::query(concat!(
                "SELECT tx_id, position, event_id, stream_id, stream_type, version, event_type, ",
                "schema_version, recorded_at, ",
                "CASE WHEN event_type = ANY($4) THEN data ELSE 'null'::jsonb END AS data, ",
                "CASE WHEN event_type = ANY($4) THEN metadata ELSE 'null'::jsonb END AS metadata ",
                "FROM events WHERE (tx_id, position) > ($1, $2) AND tx_id < ",
                horizon!(),
                " ORDER BY tx_id, position LIMIT $3"
            ))
            .bind(after.tx)
            .bind(after.pos)
            .bind(limit.max(0))
            .bind(types),
        )
        .await
    }

    async fn read_environment_log(
        &self,
        after: LogPosition,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // The leading equality and the row comparison are the index's
        // (events_environment_log_idx); the other conditions only drop rows.
        self.events(
            sqlx::query(select_events!(
                "WHERE metadata->>'environment' = $1 AND (tx_id, position) > ($2, $3) AND tx_id < ",
                horizon!(),
                " AND ($4::text IS NULL OR metadata->>'actor' = $4)",
                " AND ($5::text IS NULL OR event_type = $5)",
                " AND ($6::text IS NULL OR stream_type = $6)",
                " AND ($7::timestamptz IS NULL OR recorded_at >= $7)",
                " AND ($8::timestamptz IS NULL OR recorded_at < $8)",
                " ORDER BY tx_id, position LIMIT $9"
            ))
            .bind(&filter.environment)
            .bind(after.tx)
            .bind(after.pos)
            .bind(filter.actor.as_deref())
            .bind(filter.event_type.as_deref())
            .bind(filter.stream_type.as_deref())
            .bind(filter.from)
            .bind(filter.to)
            .bind(limit.max(0)),
        )
        .await
    }

    async fn read_at(&self, positions: &[LogPosition]) -> Result<Vec<StoredEvent>, StoreError> {
        if positions.len() > crate::MAX_POSITIONS_PER_READ {
            return Err(StoreError::TooManyPositions);
        }
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let (txs, pos): (Vec<i64>, Vec<i64>) = positions.iter().map(|p| (p.tx, p.pos)).unzip();
        self.events(
            sqlx::query(select_events!(
                "WHERE (tx_id, position) IN ",
                "(SELECT t, p FROM UNNEST($1::bigint[], $2::bigint[]) AS q(t, p)) AND tx_id < ",
                horizon!(),
                " ORDER BY tx_id, position"
            ))
            .bind(txs)
            .bind(pos),
        )
        .await
    }

    async fn head(&self) -> Result<LogPosition, StoreError> {
        let mut conn = self.conns.get().await?;
        let row = sqlx::query(concat!(
            "SELECT tx_id, position FROM events WHERE tx_id < ",
            horizon!(),
            " ORDER BY tx_id DESC, position DESC LIMIT 1"
        ))
        .fetch_optional(&mut *conn)
        .await?;
        conn.keep();
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
        let mut conn = self.conns.get().await?;
        let row: Option<crate::SnapshotRow> = sqlx::query_as(READ_SNAPSHOT)
            .bind(stream_id)
            .fetch_optional(&mut *conn)
            .await?;
        conn.keep();
        Ok(row.map(Snapshot::from))
    }

    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let mut conn = self.conns.get().await?;
        sqlx::query(WRITE_SNAPSHOT)
            .bind(&snapshot.stream_id)
            .bind(snapshot.schema_version)
            .bind(snapshot.version)
            .bind(&snapshot.data)
            .execute(&mut *conn)
            .await?;
        conn.keep();
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
