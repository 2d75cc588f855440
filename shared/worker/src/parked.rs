//! Events a follower parked: an event whose handling failed [`Parking::after`] times in a row
//! (a poison event: a `SagaError` every time) is written to the follower's parked table and the
//! checkpoint moves past it, so one bad request never holds the others back. Operators list
//! them ([`list`]) and, once the cause is fixed, hand them to the handler again ([`retry`]); what
//! fails again stays parked, with its new reason.
//!
//! The table (`saga_parked`) has the columns `name, event_id, stream_id, version, event_type, tx,
//! pos, reason, attempts, parked_at`, primary key `(name, event_id)`; its migration belongs to
//! the process that parks (the DCR saga's). A reason is an error's display text: handlers'
//! errors never carry a secret.

use crate::follower::{Handler, Outcome};
use appreg_eventstore::{Database, EventStore, LogPosition, StoredEvent};
use tokio_util::sync::CancellationToken;

/// Where and when a follower parks an event that keeps failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parking {
    /// The table; a constant of the code, never input, since it is written into the SQL.
    pub table: &'static str,
    /// Failed tries of an event before it is parked (at least 1).
    pub after: u32,
}

/// One parked event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub event_id: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub position: LogPosition,
    pub reason: String,
    pub attempts: i64,
    pub parked_at: String,
}

/// What a retry of the parked events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySummary {
    /// Handled, and no longer parked.
    pub handled: u64,
    /// Failed again (or interrupted): still parked.
    pub still_parked: u64,
}

/// Why the parked table could not be read or written, or a parked event not found.
#[derive(Debug, thiserror::Error)]
pub enum ParkedError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event store: {0}")]
    Store(#[from] appreg_eventstore::StoreError),
    #[error("parked event {0} is not in the event store")]
    Missing(String),
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// Parks `e` for the follower `name` (again: its reason and attempts are replaced).
pub async fn park(
    db: &Database,
    table: &'static str,
    name: &str,
    e: &StoredEvent,
    reason: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let sql = format!(
        "INSERT INTO {table} (name, event_id, stream_id, version, event_type, tx, pos, reason, attempts, parked_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (name, event_id) DO UPDATE SET reason = excluded.reason, attempts = excluded.attempts"
    );
    let now = chrono::Utc::now().to_rfc3339();
    with_pool!(db, pool => sqlx::query(&sql)
        .bind(name)
        .bind(e.event_id.to_string())
        .bind(&e.stream_id)
        .bind(e.version)
        .bind(&e.event_type)
        .bind(e.position.tx)
        .bind(e.position.pos)
        .bind(reason)
        .bind(i64::from(attempts))
        .bind(&now)
        .execute(pool)
        .await
        .map(|_| ()))
}

/// The events the follower `name` parked, oldest first (at most `limit`).
pub async fn list(
    db: &Database,
    table: &'static str,
    name: &str,
    limit: i64,
) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    list_after(db, table, name, LogPosition::START, limit).await
}

/// The parked events after `after` in log order (at most `limit`).
async fn list_after(
    db: &Database,
    table: &'static str,
    name: &str,
    after: LogPosition,
    limit: i64,
) -> Result<Vec<ParkedEvent>, sqlx::Error> {
    type Row = (String, String, i64, String, i64, i64, String, i64, String);
    let sql = format!(
        "SELECT event_id, stream_id, version, event_type, tx, pos, reason, CAST(attempts AS BIGINT), parked_at \
         FROM {table} WHERE name = $1 AND (tx > $2 OR (tx = $2 AND pos > $3)) ORDER BY tx, pos LIMIT $4"
    );
    let rows: Vec<Row> = with_pool!(db, pool => sqlx::query_as(&sql)
        .bind(name)
        .bind(after.tx)
        .bind(after.pos)
        .bind(limit)
        .fetch_all(pool)
        .await)?;
    Ok(rows
        .into_iter()
        .map(
            |(event_id, stream_id, version, event_type, tx, pos, reason, attempts, parked_at)| {
                ParkedEvent {
                    event_id,
                    stream_id,
                    version,
                    event_type,
                    position: LogPosition { tx, pos },
                    reason,
                    attempts,
                    parked_at,
                }
            },
        )
        .collect())
}

/// How many events the follower `name` has parked.
pub async fn count(db: &Database, table: &'static str, name: &str) -> Result<i64, sqlx::Error> {
    let sql = format!("SELECT COUNT(*) FROM {table} WHERE name = $1");
    with_pool!(db, pool => sqlx::query_scalar(&sql).bind(name).fetch_one(pool).await)
}

/// Hands every parked event of the follower `name` to `handler` once, oldest first, each read
/// again from the event store: a handled one leaves the table, one that fails again stays
/// with its new reason and one more attempt.
pub async fn retry<H: Handler>(
    handler: &H,
    db: &Database,
    store: &dyn EventStore,
    table: &'static str,
    name: &str,
) -> Result<RetrySummary, ParkedError> {
    let stop = CancellationToken::new();
    let mut summary = RetrySummary::default();
    let mut after = LogPosition::START;
    loop {
        let page = list_after(db, table, name, after, 500).await?;
        let Some(last) = page.last().map(|p| p.position) else {
            return Ok(summary);
        };
        for p in page {
            let event = store
                .read_stream(&p.stream_id, p.version - 1, 1)
                .await?
                .into_iter()
                .next()
                .filter(|e| e.event_id.to_string() == p.event_id)
                .ok_or_else(|| ParkedError::Missing(p.event_id.clone()))?;
            match handler.handle(&event, &stop).await {
                Ok(Outcome::Done) => {
                    let sql = format!("DELETE FROM {table} WHERE name = $1 AND event_id = $2");
                    with_pool!(db, pool => sqlx::query(&sql).bind(name).bind(&p.event_id).execute(pool).await.map(|_| ()))?;
                    summary.handled += 1;
                }
                Ok(Outcome::Interrupted) => summary.still_parked += 1,
                Err(error) => {
                    let reason = error.to_string();
                    tracing::warn!(event_id = %p.event_id, %reason, "{name}: a parked event failed again");
                    let sql = format!(
                        "UPDATE {table} SET reason = $1, attempts = attempts + 1 WHERE name = $2 AND event_id = $3"
                    );
                    with_pool!(db, pool => sqlx::query(&sql).bind(&reason).bind(name).bind(&p.event_id).execute(pool).await.map(|_| ()))?;
                    summary.still_parked += 1;
                }
            }
        }
        after = last;
    }
}
