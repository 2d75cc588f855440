//! SQLite adapter of the [`EventStore`] port (embedded mode: one process, one file).
//!
//! SQLite allows one writer at a time, so appends are serial: each runs in a `BEGIN IMMEDIATE`
//! transaction (the write lock is taken at BEGIN, so two appenders never both read and then
//! deadlock on upgrading to write), behind an in-process mutex so that this process's appenders
//! queue fairly instead of spinning in SQLite's busy handler. Because writers are serial, the
//! autoincrement `position` is the commit order, and `read_log` may follow it directly
//! (`LogPosition.tx` is always 0). Inside the write transaction the version check, the event
//! inserts and the claim checks cannot race with anyone. A batch (`append_batch`) is one such
//! transaction for all its requests: their events, then all releases, then all claims.
//!
//! Text encodings: `event_id` is the hyphenated UUID, `data`/`metadata` JSON text, `recorded_at`
//! RFC 3339 UTC with exactly 6 fractional digits (microseconds, like PostgreSQL's `timestamptz`;
//! finer precision is truncated).
//!
//! Snapshots (`write_snapshot`) are one upsert in a `BEGIN IMMEDIATE` transaction of their own,
//! behind the same in-process mutex as appends (never inside an append's transaction).
//!
//! Wake-ups are local only: the watch channel is bumped after each append of this store instance.
//! Another process writing the same file is seen by polling.
//!
//! This module must never write outside a `BEGIN IMMEDIATE` transaction, nor leave a connection
//! inside a transaction when a future is dropped (sqlx's `Transaction` rolls back on drop).

use crate::pg::{batch_claims, batch_releases, bump, check_batch};
use crate::{
    AppendError, AppendRequest, Appended, Claim, EventStore, LogFilter, LogPosition, Snapshot,
    StoreError, StoredEvent,
};
use chrono::{DateTime, Utc};
use sqlx::error::ErrorKind;
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::{Row, SqliteConnection};
use std::sync::Arc;
use tokio::sync::{watch, Mutex};
use uuid::Uuid;

/// `SELECT <all event columns> FROM events <tail>`, as a `&'static str` (statement cache key).
macro_rules! select_events {
    ($tail:literal) => {
        concat!(
            "SELECT position, event_id, stream_id, stream_type, version, event_type, ",
            "schema_version, data, metadata, recorded_at FROM events ",
            $tail
        )
    };
}

const READ_SNAPSHOT: &str =
    "SELECT stream_id, schema_version, version, data FROM snapshots WHERE stream_id = ?";

/// One statement: a new stream's row is inserted; an existing row is replaced unless it has the
/// same shape and a version at least as high (the same rule as on PostgreSQL).
const WRITE_SNAPSHOT: &str = "\
INSERT INTO snapshots (stream_id, schema_version, version, data, written_at)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (stream_id) DO UPDATE
    SET schema_version = excluded.schema_version, version = excluded.version,
        data = excluded.data, written_at = excluded.written_at
    WHERE snapshots.schema_version <> excluded.schema_version
       OR snapshots.version < excluded.version";

/// The SQLite event store.
#[derive(Debug)]
pub struct SqliteEventStore {
    pool: SqlitePool,
    wakeups: Arc<watch::Sender<u64>>,
    /// Serialises this process's appenders (SQLite would anyway, by busy-waiting).
    write_lock: Mutex<()>,
}

impl SqliteEventStore {
    /// Builds the adapter over `pool` (migrated beforehand).
    pub fn new(pool: SqlitePool) -> Self {
        let (sender, _) = watch::channel(0u64);
        SqliteEventStore {
            pool,
            wakeups: Arc::new(sender),
            write_lock: Mutex::new(()),
        }
    }

    /// The pool this store uses.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Formats a timestamp so that text order is time order (see the module doc).
fn format_time(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The statements of a batch (an append is a batch of one), inside a `BEGIN IMMEDIATE`
/// transaction: the version check and the events of each request, then every release, then every
/// claim, so that a stream may take a value another stream of the batch releases, whatever their
/// order.
async fn append_batch_in(
    tx: &mut SqliteConnection,
    requests: &[AppendRequest],
    claims: &[(&Claim, &str)],
    releases: &[(&Claim, &str)],
) -> Result<Vec<Appended>, AppendError> {
    let mut appended = Vec::with_capacity(requests.len());
    for request in requests {
        appended.push(insert_events(tx, request).await?);
    }
    for (claim, stream_id) in releases {
        release_claim(tx, claim, stream_id).await?;
    }
    let now = format_time(&Utc::now());
    for (claim, stream_id) in claims {
        take_claim(tx, claim, stream_id, &now).await?;
    }
    Ok(appended)
}

/// Checks the stream's version and inserts the events of `request`.
async fn insert_events(
    tx: &mut SqliteConnection,
    request: &AppendRequest,
) -> Result<Appended, AppendError> {
    let actual: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM events WHERE stream_id = ?")
            .bind(&request.stream_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(StoreError::from)?;
    if actual != request.expected_version {
        return Err(AppendError::VersionConflict {
            stream_id: request.stream_id.clone(),
            expected: request.expected_version,
            actual,
        });
    }

    let mut appended = Appended {
        version: request.expected_version,
        position: LogPosition::START,
    };
    for event in &request.events {
        let version = appended.version + 1;
        let data = serde_json::to_string(&event.data)
            .map_err(|e| StoreError::Corrupt(format!("data: {e}")))?;
        let metadata = serde_json::to_string(&event.metadata)
            .map_err(|e| StoreError::Corrupt(format!("metadata: {e}")))?;
        let position: i64 = sqlx::query_scalar(
            "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, \
             schema_version, data, metadata, recorded_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING position",
        )
        .bind(event.event_id.hyphenated().to_string())
        .bind(&request.stream_id)
        .bind(&request.stream_type)
        .bind(version)
        .bind(&event.event_type)
        .bind(event.schema_version)
        .bind(data)
        .bind(metadata)
        .bind(format_time(&event.recorded_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(|error| {
            // The version was checked under the write lock, so the only unique key this insert
            // can violate is the event id (SQLite reports no constraint name to match on).
            match error.as_database_error().map(|e| e.kind()) {
                Some(ErrorKind::UniqueViolation) => StoreError::DuplicateEventId,
                _ => StoreError::from(error),
            }
        })?;
        appended = Appended {
            version,
            position: LogPosition {
                tx: 0,
                pos: position,
            },
        };
    }

    Ok(appended)
}

/// Releases `claim` if `stream_id` holds it (a no-op otherwise).
async fn release_claim(
    tx: &mut SqliteConnection,
    claim: &Claim,
    stream_id: &str,
) -> Result<(), AppendError> {
    sqlx::query("DELETE FROM claims WHERE scope = ? AND value = ? AND stream_id = ?")
        .bind(&claim.scope)
        .bind(&claim.value)
        .bind(stream_id)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from)?;
    Ok(())
}

/// Takes `claim` for `stream_id` (idempotent); `ClaimTaken` if another stream holds it.
async fn take_claim(
    tx: &mut SqliteConnection,
    claim: &Claim,
    stream_id: &str,
    now: &str,
) -> Result<(), AppendError> {
    let holder: Option<String> =
        sqlx::query_scalar("SELECT stream_id FROM claims WHERE scope = ? AND value = ?")
            .bind(&claim.scope)
            .bind(&claim.value)
            .fetch_optional(&mut *tx)
            .await
            .map_err(StoreError::from)?;
    match holder {
        Some(holder) if holder == stream_id => Ok(()),
        Some(_) => Err(AppendError::ClaimTaken {
            scope: claim.scope.clone(),
            value: claim.value.clone(),
        }),
        None => {
            sqlx::query(
                "INSERT INTO claims (scope, value, stream_id, claimed_at) VALUES (?, ?, ?, ?)",
            )
            .bind(&claim.scope)
            .bind(&claim.value)
            .bind(stream_id)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(StoreError::from)?;
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl EventStore for SqliteEventStore {
    #[tracing::instrument(skip_all, fields(
        stream_id = %request.stream_id,
        expected_version = request.expected_version,
        events = request.events.len(),
    ))]
    async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        // Writers are serial here: an append is a batch of one.
        let mut appended = self.append_batch(vec![request]).await?;
        Ok(appended.remove(0))
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

        let _writer = self.write_lock.lock().await;
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from)?;
        match append_batch_in(&mut tx, &requests, &claims, &releases).await {
            Ok(appended) => {
                tx.commit().await.map_err(StoreError::from)?;
                bump(&self.wakeups);
                Ok(appended)
            }
            Err(error) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rollback of a failed batch failed");
                }
                Err(error)
            }
        }
    }

    async fn read_streams(&self, stream_ids: &[String]) -> Result<Vec<StoredEvent>, StoreError> {
        if stream_ids.len() > crate::MAX_STREAMS_PER_READ {
            return Err(StoreError::TooManyStreams);
        }
        let mut ids: Vec<&String> = stream_ids.iter().collect();
        ids.sort();
        ids.dedup();
        let mut events = Vec::new();
        for id in ids {
            events.extend(self.read_stream(id, 0, i64::MAX).await?);
        }
        Ok(events)
    }

    async fn read_stream(
        &self,
        stream_id: &str,
        after_version: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        fetch_events!(
            &self.pool,
            select_events!("WHERE stream_id = ? AND version > ? ORDER BY version LIMIT ?"),
            stream_id,
            after_version,
            limit.max(0)
        )
    }

    async fn read_log(
        &self,
        after: LogPosition,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        // Every SQLite event is at tx 0: none is after a position with a larger tx.
        if after.tx > 0 {
            return Ok(Vec::new());
        }
        fetch_events!(
            &self.pool,
            select_events!("WHERE position > ? ORDER BY position LIMIT ?"),
            after.pos,
            limit.max(0)
        )
    }

    async fn read_environment_log(
        &self,
        after: LogPosition,
        filter: &LogFilter,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        if after.tx > 0 {
            return Ok(Vec::new());
        }
        // The leading equality and the position are the index's
        // (events_environment_log_idx); the other conditions only drop rows.
        fetch_events!(
            &self.pool,
            select_events!(
                "WHERE json_extract(metadata, '$.environment') = $1 AND position > $2 \
                 AND ($3 IS NULL OR json_extract(metadata, '$.actor') = $3) \
                 AND ($4 IS NULL OR event_type = $4) \
                 AND ($5 IS NULL OR stream_type = $5) \
                 AND ($6 IS NULL OR recorded_at >= $6) \
                 AND ($7 IS NULL OR recorded_at < $7) \
                 ORDER BY position LIMIT $8"
            ),
            &filter.environment,
            after.pos,
            filter.actor.as_deref(),
            filter.event_type.as_deref(),
            filter.stream_type.as_deref(),
            filter.from.as_ref().map(format_time),
            filter.to.as_ref().map(format_time),
            limit.max(0)
        )
    }

    async fn read_at(&self, positions: &[LogPosition]) -> Result<Vec<StoredEvent>, StoreError> {
        if positions.len() > crate::MAX_POSITIONS_PER_READ {
            return Err(StoreError::TooManyPositions);
        }
        // Every SQLite event is at tx 0; writers are serial, so every stored event is readable.
        let wanted: Vec<i64> = positions
            .iter()
            .filter(|p| p.tx == 0 && p.pos > 0)
            .map(|p| p.pos)
            .collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = serde_json::to_string(&wanted)
            .map_err(|e| StoreError::Corrupt(format!("positions: {e}")))?;
        fetch_events!(
            &self.pool,
            select_events!("WHERE position IN (SELECT value FROM json_each(?)) ORDER BY position"),
            wanted
        )
    }

    async fn head(&self) -> Result<LogPosition, StoreError> {
        let last: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM events")
            .fetch_one(&self.pool)
            .await?;
        Ok(last.map_or(LogPosition::START, |pos| LogPosition { tx: 0, pos }))
    }

    /// Writers are serial, so the last committed event is the head.
    async fn last_committed(&self) -> Result<LogPosition, StoreError> {
        self.head().await
    }

    async fn claim_holder(&self, claim: &Claim) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT stream_id FROM claims WHERE scope = ? AND value = ?")
                .bind(&claim.scope)
                .bind(&claim.value)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn read_snapshot(&self, stream_id: &str) -> Result<Option<Snapshot>, StoreError> {
        let row: Option<crate::SnapshotRow> = sqlx::query_as(READ_SNAPSHOT)
            .bind(stream_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(Snapshot::from))
    }

    /// In a write transaction of its own, queued behind this process's appenders like one of
    /// them (SQLite has one writer at a time, so it holds appends back for one statement).
    async fn write_snapshot(&self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let _writer = self.write_lock.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(WRITE_SNAPSHOT)
            .bind(&snapshot.stream_id)
            .bind(snapshot.schema_version)
            .bind(snapshot.version)
            .bind(&snapshot.data)
            .bind(format_time(&Utc::now()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    fn wakeups(&self) -> watch::Receiver<u64> {
        self.wakeups.subscribe()
    }
}

fn event_from_row(row: &SqliteRow) -> Result<StoredEvent, StoreError> {
    let position: i64 = row.try_get("position")?;
    let corrupt = |what: &str, error: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("event at position {position}: {what}: {error}"))
    };
    let event_id: String = row.try_get("event_id")?;
    let data: String = row.try_get("data")?;
    let metadata: String = row.try_get("metadata")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    Ok(StoredEvent {
        position: LogPosition {
            tx: 0,
            pos: position,
        },
        event_id: Uuid::parse_str(&event_id).map_err(|e| corrupt("event_id", &e))?,
        stream_id: row.try_get("stream_id")?,
        stream_type: row.try_get("stream_type")?,
        version: row.try_get("version")?,
        event_type: row.try_get("event_type")?,
        schema_version: row.try_get("schema_version")?,
        data: serde_json::from_str(&data).map_err(|e| corrupt("data", &e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?,
        recorded_at: DateTime::parse_from_rfc3339(&recorded_at)
            .map_err(|e| corrupt("recorded_at", &e))?
            .with_timezone(&Utc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn time_text_has_fixed_precision_and_sorts() {
        let a = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::Duration::nanoseconds(1_500);
        assert_eq!(format_time(&a), "2024-01-02T03:04:05.000000Z");
        assert_eq!(format_time(&b), "2024-01-02T03:04:05.000001Z");
        assert!(format_time(&a) < format_time(&b));
    }
}
