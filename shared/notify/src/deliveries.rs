//! The `webhook_deliveries` table: one row per (endpoint, event), `PENDING` until a 2xx answer
//! (`DELIVERED`), or until the retries end (`FAILED`). Deliveries of one stream to one endpoint
//! go in stream order: the notifier attempts only the oldest `PENDING` one of a (endpoint,
//! stream) ([`pending_of`] reads them in that order), so a later event of an application never
//! overtakes an earlier one.
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

/// Most rows per statement (SQLite binds at most 32,766 parameters).
const ROWS_PER_STATEMENT: usize = 1000;

/// Records deliveries (due at `now`) in one statement per [`ROWS_PER_STATEMENT`] rows; one
/// already recorded is left as it is. Returns those that were new, as stored.
pub async fn insert(
    db: &Database,
    rows: &[NewDelivery],
    now: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut added = Vec::new();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let ids: Vec<String> = with_pool!(db, p => {
            let mut q = sqlx::QueryBuilder::new(
                "INSERT INTO webhook_deliveries (id, webhook_id, environment, event_id, event_type, \
                 stream_id, version, payload, status, attempt, created_at, next_attempt_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, d| {
                b.push_bind(&d.id)
                    .push_bind(&d.webhook_id)
                    .push_bind(&d.environment)
                    .push_bind(&d.event_id)
                    .push_bind(&d.event_type)
                    .push_bind(&d.stream_id)
                    .push_bind(d.version)
                    .push_bind(&d.payload)
                    .push_bind("PENDING")
                    .push_bind(0i32)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now);
            });
            q.push(" ON CONFLICT (id) DO NOTHING RETURNING id");
            q.build_query_scalar().fetch_all(p).await?
        });
        let ids: std::collections::HashSet<String> = ids.into_iter().collect();
        added.extend(
            chunk
                .iter()
                .filter(|d| ids.contains(&d.id))
                .map(|d| Delivery {
                    id: d.id.clone(),
                    webhook_id: d.webhook_id.clone(),
                    environment: d.environment.clone(),
                    event_id: d.event_id.clone(),
                    event_type: d.event_type.clone(),
                    stream_id: d.stream_id.clone(),
                    version: d.version,
                    payload: d.payload.clone(),
                    status: Status::Pending.as_str().to_string(),
                    attempt: 0,
                    created_at: now,
                    next_attempt_at: now,
                    updated_at: now,
                    response_status: None,
                    response_body: None,
                }),
        );
    }
    Ok(added)
}

/// A due delivery, as [`due_ids`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Due {
    pub webhook_id: String,
    pub id: String,
    pub stream_id: String,
    pub next_attempt_at: i64,
}

/// The `PENDING` deliveries due at `now`, earliest first, at most `limit`, leaving out the
/// endpoints `except`.
pub async fn due_ids(
    db: &Database,
    now: i64,
    except: &[String],
    limit: i64,
) -> Result<Vec<Due>, sqlx::Error> {
    with_pool!(db, p => {
        let mut q = sqlx::QueryBuilder::new(
            "SELECT webhook_id, id, stream_id, next_attempt_at FROM webhook_deliveries \
             WHERE status = 'PENDING' AND next_attempt_at <= ",
        );
        q.push_bind(now);
        if !except.is_empty() {
            q.push(" AND webhook_id NOT IN (");
            let mut list = q.separated(", ");
            for wid in except {
                list.push_bind(wid);
            }
            list.push_unseparated(")");
        }
        q.push(" ORDER BY next_attempt_at, version LIMIT ");
        q.push_bind(limit);
        q.build_query_as().fetch_all(p).await
    })
}

/// The deliveries among `ids` that are still `PENDING`.
pub async fn pending_among(db: &Database, ids: &[String]) -> Result<Vec<Delivery>, sqlx::Error> {
    let mut out = Vec::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<Delivery> = with_pool!(db, p => {
            let mut q = sqlx::QueryBuilder::new(format!(
                "SELECT {COLUMNS} FROM webhook_deliveries WHERE status = 'PENDING' AND id IN ("
            ));
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            list.push_unseparated(")");
            q.build_query_as().fetch_all(p).await?
        });
        out.extend(rows);
    }
    Ok(out)
}

/// The `PENDING` deliveries of endpoint `webhook_id` (due or not), oldest first (an
/// application's in stream order), at most `limit`.
pub async fn pending_of(
    db: &Database,
    webhook_id: &str,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND status = 'PENDING' \
         ORDER BY created_at, version LIMIT $2"
    );
    with_pool!(db, p => sqlx::query_as(&sql).bind(webhook_id).bind(limit).fetch_all(p).await)
}

/// The endpoints with `PENDING` deliveries (due or not).
pub async fn pending_endpoints(db: &Database) -> Result<Vec<String>, sqlx::Error> {
    let sql = "SELECT DISTINCT webhook_id FROM webhook_deliveries WHERE status = 'PENDING'";
    with_pool!(db, p => sqlx::query_scalar(sql).fetch_all(p).await)
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

/// One attempt to record: of delivery `id`, made at `at`.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub id: String,
    pub at: i64,
    pub outcome: Attempted,
}

/// Records attempts, in one statement on PostgreSQL (one transaction on SQLite); each only
/// while its delivery is still `PENDING` (a retry scheduled meanwhile by an operator is not
/// overwritten by a late answer). Several attempts of one delivery count each; the last one's
/// outcome stays.
pub async fn record(db: &Database, attempts: &[Attempt]) -> Result<(), sqlx::Error> {
    // The last attempt of each delivery, and how many there were.
    let mut last: Vec<(&Attempt, i32)> = Vec::with_capacity(attempts.len());
    let mut index = std::collections::HashMap::new();
    for a in attempts {
        match index.get(a.id.as_str()) {
            Some(&i) => {
                let (_, n): &(&Attempt, i32) = &last[i];
                last[i] = (a, n + 1);
            }
            None => {
                index.insert(a.id.as_str(), last.len());
                last.push((a, 1));
            }
        }
    }
    match db {
        Database::Postgres(p) => {
            let n = last.len();
            let (mut ids, mut statuses) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let (mut counts, mut nexts, mut ats) = (Vec::new(), Vec::new(), Vec::new());
            let (mut codes, mut bodies) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (a, count) in &last {
                ids.push(a.id.as_str());
                statuses.push(a.outcome.status.as_str());
                counts.push(*count);
                nexts.push(a.outcome.next_attempt_at);
                ats.push(a.at);
                codes.push(a.outcome.response_status);
                bodies.push(a.outcome.response_body.as_deref().map(truncate));
            }
            sqlx::query(
                "UPDATE webhook_deliveries d SET status = v.status, attempt = d.attempt + v.n, \
                 next_attempt_at = v.next, updated_at = v.at, response_status = v.rs, response_body = v.rb \
                 FROM UNNEST($1::text[], $2::text[], $3::int[], $4::bigint[], $5::bigint[], $6::int[], $7::text[]) \
                 AS v(id, status, n, next, at, rs, rb) WHERE d.id = v.id AND d.status = 'PENDING'",
            )
            .bind(ids)
            .bind(statuses)
            .bind(counts)
            .bind(nexts)
            .bind(ats)
            .bind(codes)
            .bind(bodies)
            .execute(p)
            .await?;
        }
        Database::Sqlite(p) => {
            let mut tx = p.begin().await?;
            for (a, n) in &last {
                sqlx::query(
                    "UPDATE webhook_deliveries SET status = $2, attempt = attempt + $3, next_attempt_at = $4, \
                     updated_at = $5, response_status = $6, response_body = $7 WHERE id = $1 AND status = 'PENDING'",
                )
                .bind(&a.id)
                .bind(a.outcome.status.as_str())
                .bind(*n)
                .bind(a.outcome.next_attempt_at)
                .bind(a.at)
                .bind(a.outcome.response_status)
                .bind(a.outcome.response_body.as_deref().map(truncate))
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
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

/// A page of an endpoint's deliveries, oldest first, after delivery `after` (its id). The
/// deliveries of a page of the log are recorded in the same millisecond: an application's go in
/// stream order (`version`), then by id.
pub async fn list(
    db: &Database,
    webhook_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Delivery>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR \
         (created_at, version, id) > (SELECT created_at, version, id FROM webhook_deliveries WHERE id = $2 AND webhook_id = $1)) \
         ORDER BY created_at, version, id LIMIT $3"
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
