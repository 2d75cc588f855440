//! The event store: the only source of truth of appreg.
//!
//! Every change is an immutable event appended to a stream with an expected version
//! (optimistic concurrency) together with *uniqueness claims* (e.g. a `client_id` among the
//! ACTIVE applications of an environment), all in one transaction. The whole log can be read in
//! a commit-safe total order from a checkpoint: a reader never skips an event that commits late.
//!
//! Beside the log, the store keeps at most one [`Snapshot`] per stream: an opaque, derived copy
//! of an aggregate's state, so that loading it need not fold the whole stream. Snapshots are a
//! cache, never a source of truth: they are written outside any append, and losing them costs
//! only a fold.
//!
//! Two adapters implement [`EventStore`]: PostgreSQL (production) and SQLite (embedded mode).
//! This crate must never know about the domain: events are opaque JSON here.

/// Runs a query of events on `pool` with its bind values and reads the rows with the calling
/// backend's `event_from_row` (the SQLite adapter reads events this way; the PostgreSQL one
/// runs them on a kept connection, `PgEventStore::events`).
macro_rules! fetch_events {
    ($pool:expr, $sql:expr $(, $bind:expr)* $(,)?) => {
        sqlx::query($sql)
            $(.bind($bind))*
            .fetch_all($pool)
            .await?
            .iter()
            .map(event_from_row)
            .collect()
    };
}

mod database;
mod pg;
mod pg_copy;
mod sqlite;
mod tailer;

pub use database::Database;
pub use pg::{Kept, PgEventStore};
pub use pg_copy::{read_log_page, LogPage, RawEvent};
pub use sqlite::SqliteEventStore;
pub use tailer::LogTailer;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// A point in the log's total order. On PostgreSQL the order is `(tx, pos)`: the appending
/// transaction's id, then the row's sequence number inside it. On SQLite writers are serial, so
/// `tx` is always 0 and `pos` alone orders the log. `LogPosition::START` is before every event.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct LogPosition {
    pub tx: i64,
    pub pos: i64,
}

impl LogPosition {
    pub const START: LogPosition = LogPosition { tx: 0, pos: 0 };
}

impl fmt::Display for LogPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.tx, self.pos)
    }
}

impl std::str::FromStr for LogPosition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (tx, pos) = s
            .split_once('.')
            .ok_or_else(|| "expected TX.POS".to_string())?;
        Ok(LogPosition {
            tx: tx.parse().map_err(|_| "bad tx".to_string())?,
            pos: pos.parse().map_err(|_| "bad pos".to_string())?,
        })
    }
}

/// An event to append. Its version is assigned by the store (expected version + index + 1).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub position: LogPosition,
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_type: String,
    /// 1-based version of the event inside its stream.
    pub version: i64,
    pub event_type: String,
    pub schema_version: i32,
    pub data: serde_json::Value,
    pub metadata: serde_json::Value,
    pub recorded_at: DateTime<Utc>,
}

/// A uniqueness claim: at most one stream may hold `(scope, value)` at a time.
/// Claiming a value the same stream already holds succeeds (idempotent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    pub scope: String,
    pub value: String,
}

/// One atomic append: all events and claim changes commit together, or nothing does.
#[derive(Debug, Clone)]
pub struct AppendRequest {
    pub stream_id: String,
    pub stream_type: String,
    /// The version the caller decided on: 0 for a new stream.
    pub expected_version: i64,
    pub events: Vec<NewEvent>,
    /// Claims to take (released claims are processed first, so a stream may move a claim).
    pub claims: Vec<Claim>,
    /// Claims held by this stream to give up; releasing a claim not held is a no-op.
    pub releases: Vec<Claim>,
}

/// What an append produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Version of the stream after the append.
    pub version: i64,
    /// Log position of the last appended event (a consistency token for read models).
    pub position: LogPosition,
}

/// A snapshot of an aggregate's state at a stream version. The store treats `data` as opaque
/// bytes; `schema_version` is the aggregate's shape (the reader ignores a snapshot of another shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub stream_id: String,
    pub schema_version: i32,
    /// The stream version the state includes (its last folded event).
    pub version: i64,
    pub data: Vec<u8>,
}

/// A `snapshots` row as both backends read it: stream id, schema version, version, data.
pub(crate) type SnapshotRow = (String, i32, i64, Vec<u8>);

impl From<SnapshotRow> for Snapshot {
    fn from((stream_id, schema_version, version, data): SnapshotRow) -> Self {
        Snapshot {
            stream_id,
            schema_version,
            version,
            data,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {stream_id} is at version {actual}, not {expected}")]
    VersionConflict {
        stream_id: String,
        expected: i64,
        actual: i64,
    },
    #[error("{scope} {value:?} is already claimed")]
    ClaimTaken { scope: String, value: String },
    #[error("an append needs at least one event")]
    Empty,
    #[error("stream {stream_id} appears twice in one batch")]
    DuplicateStream { stream_id: String },
    #[error(transparent)]
    Backend(#[from] StoreError),
}

/// Which events of one environment [`EventStore::read_environment_log`] returns: every
/// condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    /// `metadata.environment`.
    pub environment: String,
    /// `metadata.actor` (the user who caused the event).
    pub actor: Option<String>,
    pub event_type: Option<String>,
    pub stream_type: Option<String>,
    /// Recorded at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before this time.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration error: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// An append carried an `event_id` that is already stored (or twice in the same append).
    /// Nothing of that append was written. A retried append whose first attempt did commit ends
    /// here, so callers may treat it as "already done" after checking the stream.
    #[error("an event with the same event_id already exists")]
    DuplicateEventId,
    #[error("a read of more than {MAX_STREAMS_PER_READ} streams")]
    TooManyStreams,
    #[error("a read of more than {MAX_POSITIONS_PER_READ} positions")]
    TooManyPositions,
    #[error("unsupported database url (expected postgres:// or sqlite:)")]
    UnsupportedUrl,
}

/// Most streams one [`EventStore::read_streams`] reads; more is refused as
/// [`StoreError::TooManyStreams`].
pub const MAX_STREAMS_PER_READ: usize = 1000;

/// Most positions one [`EventStore::read_at`] reads; more is refused as
/// [`StoreError::TooManyPositions`].
pub const MAX_POSITIONS_PER_READ: usize = 1000;

/// The port every adapter implements. All methods are cancel-safe: dropping a future before it
/// completes rolls its transaction back.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends atomically: fails with [`AppendError::VersionConflict`] unless the stream is at
    /// `expected_version`, with [`AppendError::ClaimTaken`] if another stream holds a claim.
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError>;

    /// Appends to several streams in one transaction: all requests commit together or nothing
    /// does (the first failure is returned: a `VersionConflict` of one stream, a `ClaimTaken`, ...).
    /// Each request obeys the rules of [`EventStore::append`]; a stream may appear only once
    /// (`AppendError::DuplicateStream`). Returns each request's `Appended`, in request order.
    /// The releases of all requests are processed before the claims of any, so a stream may take
    /// a value that another stream of the batch gives up; two streams of one batch claiming the
    /// same value is a `ClaimTaken`.
    /// For callers that decide many commands at once (fewer transactions and statements); on an
    /// error they typically fall back to one `append` per request.
    async fn append_batch(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Result<Vec<Appended>, AppendError>;

    /// Appends several independent requests: each is all or nothing on its own and gets its own
    /// answer (in request order), exactly as if each were an [`EventStore::append`]; unlike
    /// [`EventStore::append_batch`], one refused request does not refuse the others. An adapter
    /// may write them together (PostgreSQL: one statement when none of them claims or releases);
    /// this default appends them one after the other.
    async fn append_each(
        &self,
        requests: Vec<AppendRequest>,
    ) -> Vec<Result<Appended, AppendError>> {
        let mut answers = Vec::with_capacity(requests.len());
        for request in requests {
            answers.push(self.append(request).await);
        }
        answers
    }

    /// Every event of each of `stream_ids` (at most [`MAX_STREAMS_PER_READ`]), ordered by stream
    /// id, then version: one read for callers that load many aggregates at once.
    async fn read_streams(&self, stream_ids: &[String]) -> Result<Vec<StoredEvent>, StoreError>;

    /// Events of one stream with `version > after_version`, in version order, at most `limit`.
    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// Events of the whole log strictly after `after`, in the commit-safe total order, at most
    /// `limit`. Never returns an event while an earlier position could still commit.
    async fn read_log(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// [`EventStore::read_log`] for a reader that acts on a few event types and passes the others
    /// over (a follower): the events whose type is not in `types` come without their payloads —
    /// `data` and `metadata` are JSON null — but with everything else (position, stream, type,
    /// version, time). Same events, same order, same visibility rule. An adapter that cannot
    /// leave payloads out returns them all (the default).
    async fn read_log_of_types(
        &self,
        after: LogPosition,
        limit: i64,
        types: &[String],
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let _ = types;
        self.read_log(after, limit).await
    }

    /// Events of one environment (`metadata.environment`) strictly after `after`, in the same
    /// order and under the same visibility rule as `read_log`, narrowed by `filter`, at most
    /// `limit`. Read through the index on (environment, log order).
    async fn read_environment_log(
        &self,
        after: LogPosition,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError>;

    /// The events at `positions` (at most [`MAX_POSITIONS_PER_READ`]) that `read_log` could
    /// return now, in log order, each once: a position that holds no event, or one not yet below
    /// the visibility horizon (beyond [`EventStore::head`]), is left out. For checking a position
    /// that someone else claims (a NATS message's `Appreg-Position`) against the log, in one read.
    async fn read_at(&self, positions: &[LogPosition]) -> Result<Vec<StoredEvent>, StoreError>;

    /// The position of the last event that `read_log` could return now (START if none).
    async fn head(&self) -> Result<LogPosition, StoreError>;

    /// The position of the last committed event, whether or not `read_log` may return it yet
    /// (START if none). A reader that waits until its checkpoint reaches this position has seen
    /// every event committed before the call.
    async fn last_committed(&self) -> Result<LogPosition, StoreError>;

    /// Which stream (if any) holds a claim.
    async fn claim_holder(&self, claim: &Claim) -> Result<Option<String>, StoreError>;

    /// The stream's snapshot, if one was written (at most one per stream: the newest).
    async fn read_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError>;

    /// Stores a snapshot unless the stored one is of the same schema_version and a version at
    /// least as high (so concurrent writers keep the newest; a snapshot of another shape is replaced).
    /// Never part of an append's transaction; a failure here never affects the log.
    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError>;

    /// A receiver whose value changes whenever new events may have been committed (appends of
    /// this process at once; other processes' appends through LISTEN/NOTIFY on PostgreSQL).
    /// Wake-ups are hints: readers must still poll `read_log`.
    fn wakeups(&self) -> tokio::sync::watch::Receiver<u64>;
}
