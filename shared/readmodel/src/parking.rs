//! Poison events: the retry policy, parking an event (and the later events of its stream), and
//! listing, counting and retrying the parked events.

use super::*;

/// How a projection treats an event it cannot fold: retried `attempts` times in all, waiting
/// `first_delay` then twice as long each time (at most `max_delay`), then parked.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retry, no wait: a rebuild replays a log whose poison events fail the same way every
    /// time.
    pub const REPLAY: RetryPolicy = RetryPolicy {
        attempts: 1,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };
}

/// Applies a batch to the table set `t`: a poison event is retried per `policy`, then parked
/// (with the later events of its stream) while the rest of the batch is folded. Other errors
/// (the database) are returned: the caller retries the whole batch, which never skips it.
pub(crate) async fn apply_parking(
    db: &Database,
    t: &Tables,
    events: &[StoredEvent],
    policy: RetryPolicy,
    mark: Option<&Mark>,
) -> Result<LogPosition, ReadModelError> {
    let mut park: HashMap<uuid::Uuid, (String, u32)> = HashMap::new();
    let mut failures: HashMap<uuid::Uuid, u32> = HashMap::new();
    loop {
        match apply_batch(db, t, events, &park, mark).await {
            Err(ReadModelError::Event {
                event_id,
                event_type,
                reason,
            }) if !park.contains_key(&event_id) => {
                let n = failures.entry(event_id).or_default();
                *n += 1;
                if *n >= policy.attempts.max(1) {
                    tracing::error!(projection = t.checkpoint, %event_id, event_type, reason, attempts = *n, "poison event parked");
                    park.insert(event_id, (reason, *n));
                } else {
                    tracing::warn!(projection = t.checkpoint, %event_id, event_type, reason, attempt = *n, "cannot fold an event; retrying");
                    let delay = policy
                        .first_delay
                        .saturating_mul(1 << (*n - 1).min(16))
                        .min(policy.max_delay);
                    tokio::time::sleep(delay).await;
                }
            }
            other => return other,
        }
    }
}

/// An event a projection parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub projection: String,
    pub event_id: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub position: LogPosition,
    pub reason: String,
    pub attempts: i64,
    pub parked_at: String,
}

/// The events parked by the live projection, oldest first (at most `limit`).
pub async fn parked(db: &Database, limit: i64) -> Result<Vec<ParkedEvent>, ReadModelError> {
    type Row = (
        String,
        String,
        String,
        i64,
        String,
        i64,
        i64,
        String,
        i64,
        String,
    );
    let rows: Vec<Row> = with_pool!(db, pool => sqlx::query_as(
        "SELECT projection, event_id, stream_id, version, event_type, tx, pos, reason, CAST(attempts AS BIGINT), parked_at \
         FROM rm_parked WHERE projection = $1 ORDER BY tx, pos LIMIT $2",
    )
    .bind(LIVE.checkpoint)
    .bind(limit)
    .fetch_all(pool)
    .await)
    .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                projection,
                event_id,
                stream_id,
                version,
                event_type,
                tx,
                pos,
                reason,
                attempts,
                parked_at,
            )| ParkedEvent {
                projection,
                event_id,
                stream_id,
                version,
                event_type,
                position: LogPosition { tx, pos },
                reason,
                attempts,
                parked_at,
            },
        )
        .collect())
}

/// The number of events the live projection has parked.
pub async fn parked_count(db: &Database) -> Result<i64, ReadModelError> {
    with_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM rm_parked WHERE projection = $1")
        .bind(LIVE.checkpoint)
        .fetch_one(pool)
        .await)
    .map_err(db_err)
}

/// What a retry of the parked events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySummary {
    /// Events folded into the model and removed from the parked set.
    pub applied: u64,
    /// Events still parked (the first of each stream failed again, or waits behind one that did).
    pub still_parked: u64,
}

/// Replays the parked events of the live projection, oldest first, each read again from the
/// event store (the truth: a repaired event or a newer decoder is what makes a retry succeed).
/// Each event is folded and unparked in one transaction under the checkpoint's lock, so a
/// running projector never interleaves; a stream stops at its first event that fails again
/// (its reason and attempts are updated).
pub async fn retry_parked(db: &Database) -> Result<RetrySummary, ReadModelError> {
    let store = db.event_store().await?;
    let mut summary = RetrySummary::default();
    let mut failed_streams: std::collections::HashSet<String> = Default::default();
    let mut after = LogPosition::START;
    loop {
        let page: Vec<ParkedEvent> = parked(db, 1000)
            .await?
            .into_iter()
            .filter(|p| p.position > after)
            .collect();
        let Some(last) = page.last().map(|p| p.position) else {
            break;
        };
        for p in page {
            if failed_streams.contains(&p.stream_id) {
                summary.still_parked += 1;
                continue;
            }
            let event = store
                .read_stream(&p.stream_id, p.version - 1, 1)
                .await?
                .into_iter()
                .next()
                .filter(|e| e.event_id.to_string() == p.event_id)
                .ok_or_else(|| {
                    ReadModelError::internal(format!(
                        "parked event {} is not in the event store",
                        p.event_id
                    ))
                })?;
            match unpark(db, &event).await {
                Ok(()) => summary.applied += 1,
                Err(ReadModelError::Event { reason, .. }) => {
                    with_pool!(db, pool => sqlx::query(
                        "UPDATE rm_parked SET reason = $1, attempts = attempts + 1 WHERE projection = $2 AND event_id = $3",
                    )
                    .bind(&reason)
                    .bind(LIVE.checkpoint)
                    .bind(&p.event_id)
                    .execute(pool)
                    .await
                    .map(|_| ()))
                    .map_err(db_err)?;
                    failed_streams.insert(p.stream_id.clone());
                    summary.still_parked += 1;
                }
                Err(other) => return Err(other),
            }
        }
        after = last;
    }
    Ok(summary)
}

/// Folds one parked event into the live model and removes it from the parked set.
async fn unpark(db: &Database, event: &StoredEvent) -> Result<(), ReadModelError> {
    let (begin, lock) = write_begin(db);
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        sqlx::query(lock).bind(LIVE.checkpoint).fetch_optional(&mut *tx).await.map_err(db_err)?;
        let fresh = [event];
        write_fresh!(tx, LIVE, fresh);
        sqlx::query("DELETE FROM rm_parked WHERE projection = $1 AND event_id = $2")
            .bind(LIVE.checkpoint)
            .bind(event.event_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    });
    Ok(())
}
