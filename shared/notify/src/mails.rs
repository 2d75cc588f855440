//! The `notifier_mails` table: one row per (event, member), `PENDING` until the SMTP server took
//! it (`SENT`) or the retries ended (`FAILED`). Its key is what keeps a member from getting the
//! same notification twice when the log is replayed or the notifier restarts.

use appreg_eventstore::Database;

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// A mail to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMail {
    pub event_id: String,
    pub member: String,
    /// The hook it is sent under (`SUBSCRIPTION_ACCEPTED`…).
    pub hook: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    /// Not before this time (Unix ms): `API_KEY_EXPIRING` waits until some days before the end.
    pub send_after: i64,
}

/// A mail as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Mail {
    pub event_id: String,
    pub member: String,
    pub hook: String,
    pub recipient: String,
    pub subject: String,
    pub body: String,
    pub status: String,
    pub attempt: i32,
    pub send_after: i64,
    pub created_at: i64,
}

/// Records mails; one already recorded for its (event, member) is left as it is. Returns how
/// many were new.
pub async fn insert(db: &Database, mails: &[NewMail], now: i64) -> Result<u64, sqlx::Error> {
    let sql = "INSERT INTO notifier_mails (event_id, member, hook, recipient, subject, body, status, \
         attempt, send_after, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', 0, $7, $8, $8) \
         ON CONFLICT (event_id, member) DO NOTHING";
    let mut added = 0;
    for m in mails {
        added += with_pool!(db, p => sqlx::query(sql)
            .bind(&m.event_id)
            .bind(&m.member)
            .bind(&m.hook)
            .bind(&m.recipient)
            .bind(&m.subject)
            .bind(&m.body)
            .bind(m.send_after)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected());
    }
    Ok(added)
}

/// Mails due at `now`, oldest first, at most `limit`.
pub async fn due(db: &Database, now: i64, limit: i64) -> Result<Vec<Mail>, sqlx::Error> {
    let sql = "SELECT event_id, member, hook, recipient, subject, body, status, attempt, send_after, created_at \
         FROM notifier_mails WHERE status = 'PENDING' AND send_after <= $1 ORDER BY send_after, created_at LIMIT $2";
    with_pool!(db, p => sqlx::query_as(sql).bind(now).bind(limit).fetch_all(p).await)
}

/// Records an attempt: `status` (`SENT`, `FAILED`, or `PENDING` again from `send_after`).
pub async fn record(
    db: &Database,
    mail: &Mail,
    status: &str,
    send_after: i64,
    now: i64,
) -> Result<(), sqlx::Error> {
    let sql = "UPDATE notifier_mails SET status = $3, attempt = attempt + 1, send_after = $4, updated_at = $5 \
         WHERE event_id = $1 AND member = $2 AND status = 'PENDING'";
    with_pool!(db, p => sqlx::query(sql)
        .bind(&mail.event_id)
        .bind(&mail.member)
        .bind(status)
        .bind(send_after)
        .bind(now)
        .execute(p)
        .await
        .map(|_| ()))
}
