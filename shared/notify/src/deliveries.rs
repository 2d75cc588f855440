//! The `webhook_deliveries` table: one row per (endpoint, event), `PENDING` until a 2xx answer
//! (`DELIVERED`), or until the retries end (`FAILED`). Deliveries of one stream to one endpoint
//! go in stream order: only the oldest `PENDING` one of a (endpoint, stream) is ever due
//! ([`due`]), so a later event of an application never overtakes an earlier one.
//!
//! Times are Unix milliseconds, passed in by the caller (no clock here).

use appreg_eventstore::Database;

/// The longest response body kept, in bytes.
pub const MAX_RESPONSE_BODY: usize = 1024;

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    Failed,
}

impl Status {
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Pending => "PENDING",
            Status::Delivered => "DELIVERED",
            Status::Failed => "FAILED",
        }
    }
}

/// A delivery to record.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The `webhook-id` ([`crate::signature::webhook_id`]).
    pub id: String,
    pub webhook_id: String,
    pub environment: String,
    pub event_id: String,
    pub event_type: String,
    pub stream_id: String,
    pub version: i64,
    /// The body to POST (the event's envelope).
    pub payload: String,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub environment: String,
    pub event_id: String,
    pub event_type: String,
    pub stream_id: String,
    pub version: i64,
    pub payload: String,
    pub status: String,
    pub attempt: i32,
    pub created_at: i64,
    pub next_attempt_at: i64,
    pub updated_at: i64,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
}

const COLUMNS: &str =
    "id, webhook_id, environment, event_id, event_type, stream_id, version, payload, \
     status, attempt, created_at, next_attempt_at, updated_at, response_status, response_body";

/// Records deliveries (due at `now`); one already recorded is left as it is. Returns how many
/// were new.
pub async fn insert(db: &Database, rows: &[NewDelivery], now: i64) -> Result<u64, sqlx::Error> {
    let mut added = 0;
    for d in rows {
        let sql = "INSERT INTO webhook_deliveries (id, webhook_id, environment, event_id, event_type, \
             stream_id, version, payload, status, attempt, created_at, next_attempt_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING', 0, $9, $9, $9) ON CONFLICT (id) DO NOTHING";
        added += with_pool!(db, p => sqlx::query(sql)
            .bind(&d.id)
            .bind(&d.webhook_id)
            .bind(&d.environment)
            .bind(&d.event_id)
            .bind(&d.event_type)
            .bind(&d.stream_id)
            .bind(d.version)
            .bind(&d.payload)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected());
    }
    Ok(added)
}

/// The endpoints with a delivery due at `now`, at most `limit`.
pub async fn due_endpoints(
    db: &Database,
    now: i64,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = "SELECT DISTINCT webhook_id FROM webhook_deliveries \
         WHERE status = 'PENDING' AND next_attempt_at <= $1 LIMIT $2";
    with_pool!(db, p => sqlx::query_scalar(sql).bind(now).bind(limit).fetch_all(p).await)
}

/// The deliveries of endpoint `webhook_id` due at `now`: of each of its streams, the oldest
/// `PENDING` one if it is due (a later one waits for it), at most `limit`, oldest first.
pub async fn due(
    db: &Database,
    webhook_id: &str,
    now: i64,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries d \
         WHERE d.webhook_id = $1 AND d.status = 'PENDING' AND d.next_attempt_at <= $2 \
         AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e WHERE e.webhook_id = d.webhook_id \
             AND e.stream_id = d.stream_id AND e.status = 'PENDING' AND e.version < d.version) \
         ORDER BY d.created_at, d.version LIMIT $3"
    );
    with_pool!(db, p => sqlx::query_as(&sql).bind(webhook_id).bind(now).bind(limit).fetch_all(p).await)
}

/// What one attempt came to.
#[derive(Debug, Clone)]
pub struct Attempted {
    /// `Pending` with the time of the next attempt, `Delivered` or `Failed`.
    pub status: Status,
    pub next_attempt_at: i64,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
}

/// Records an attempt of delivery `id` made at `now` (only while it is still `PENDING`: a
/// retry scheduled meanwhile by an operator is not overwritten by a late answer).
pub async fn record(db: &Database, id: &str, a: &Attempted, now: i64) -> Result<(), sqlx::Error> {
    let body = a.response_body.as_deref().map(truncate);
    let sql = "UPDATE webhook_deliveries SET status = $2, attempt = attempt + 1, next_attempt_at = $3, \
         updated_at = $4, response_status = $5, response_body = $6 WHERE id = $1 AND status = 'PENDING'";
    with_pool!(db, p => sqlx::query(sql)
        .bind(id)
        .bind(a.status.as_str())
        .bind(a.next_attempt_at)
        .bind(now)
        .bind(a.response_status)
        .bind(body)
        .execute(p)
        .await
        .map(|_| ()))
}

/// A response body cut to [`MAX_RESPONSE_BODY`] bytes, on a character boundary.
pub fn truncate(body: &str) -> String {
    let mut end = body.len().min(MAX_RESPONSE_BODY);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    body[..end].to_string()
}

/// Ends every `PENDING` delivery of an endpoint as `FAILED` (the endpoint is gone: 410, or
/// deleted). Returns how many.
pub async fn fail_endpoint(db: &Database, webhook_id: &str, now: i64) -> Result<u64, sqlx::Error> {
    let sql = "UPDATE webhook_deliveries SET status = 'FAILED', updated_at = $2 \
         WHERE webhook_id = $1 AND status = 'PENDING'";
    with_pool!(db, p => sqlx::query(sql).bind(webhook_id).bind(now).execute(p).await.map(|r| r.rows_affected()))
}

/// A page of an endpoint's deliveries, oldest first, after delivery `after` (its id).
pub async fn list(
    db: &Database,
    webhook_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR \
         (created_at, id) > (SELECT created_at, id FROM webhook_deliveries WHERE id = $2 AND webhook_id = $1)) \
         ORDER BY created_at, id LIMIT $3"
    );
    with_pool!(db, p => sqlx::query_as(&sql).bind(webhook_id).bind(after).bind(limit).fetch_all(p).await)
}

/// Schedules delivery `id` of endpoint `webhook_id` again, at `now` (an operator's retry).
/// `false`: there is no such delivery of that endpoint.
pub async fn retry(
    db: &Database,
    webhook_id: &str,
    id: &str,
    now: i64,
) -> Result<bool, sqlx::Error> {
    let sql =
        "UPDATE webhook_deliveries SET status = 'PENDING', next_attempt_at = $3, updated_at = $3 \
         WHERE id = $1 AND webhook_id = $2";
    with_pool!(db, p => sqlx::query(sql).bind(id).bind(webhook_id).bind(now).execute(p).await.map(|r| r.rows_affected() == 1))
}

/// One delivery of an endpoint.
pub async fn get(
    db: &Database,
    webhook_id: &str,
    id: &str,
) -> Result<Option<Delivery>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1 AND webhook_id = $2");
    with_pool!(db, p => sqlx::query_as(&sql).bind(id).bind(webhook_id).fetch_optional(p).await)
}

/// The backlog: how many deliveries are `PENDING`, and when the oldest of them was recorded.
pub async fn backlog(db: &Database) -> Result<(i64, Option<i64>), sqlx::Error> {
    let sql = "SELECT COUNT(*), MIN(created_at) FROM webhook_deliveries WHERE status = 'PENDING'";
    with_pool!(db, p => sqlx::query_as(sql).fetch_one(p).await)
}
