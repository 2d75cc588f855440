//! Applying a batch of events to a table set in one transaction with its checkpoint (and a
//! JetStream consumer's mark).

use super::*;

/// The statements that open a write transaction and lock a checkpoint row: several api
/// instances (and a rebuild) may write the same tables, so the stored checkpoint is locked
/// (PostgreSQL) or the write lock taken (SQLite, one writer), and only events past it are
/// applied, so a model never goes back and nothing is applied twice.
pub(crate) fn write_begin(db: &Database) -> (&'static str, &'static str) {
    if db.is_postgres() {
        (
            "BEGIN",
            "SELECT tx, pos FROM rm_checkpoints WHERE name = $1 FOR UPDATE",
        )
    } else {
        (
            "BEGIN IMMEDIATE",
            "SELECT tx, pos FROM rm_checkpoints WHERE name = $1",
        )
    }
}

pub(crate) const UPSERT_CHECKPOINT: &str =
    "INSERT INTO rm_checkpoints (name, tx, pos) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, pos = excluded.pos";

/// Applies a batch of events to the table set `t` in one transaction, with its checkpoint;
/// returns the position the set then includes. Events named in `park` (poison events, with
/// the reason), and every later event of a stream that has a parked event, are written to
/// `rm_parked` instead of being folded; the checkpoint moves past them all.
pub(crate) async fn apply_batch(
    db: &Database,
    t: &Tables,
    events: &[StoredEvent],
    park: &HashMap<uuid::Uuid, (String, u32)>,
    mark: Option<&Mark>,
) -> Result<LogPosition, ReadModelError> {
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(LogPosition::START);
    };
    let (begin, lock) = write_begin(db);
    let now = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        let stored: Option<(i64, i64)> = sqlx::query_as(lock)
            .bind(t.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let stored = stored.map(|(tx, pos)| LogPosition { tx, pos }).unwrap_or(LogPosition::START);
        let fresh: Vec<&StoredEvent> = events.iter().filter(|e| e.position > stored).collect();
        if fresh.is_empty() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(last.max(stored));
        }
        // Streams with a parked event: their later events wait behind it.
        let mut blocked: HashMap<String, uuid::Uuid> = HashMap::new();
        let mut streams: Vec<&str> = fresh.iter().map(|e| e.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        for chunk in streams.chunks(CHUNK) {
            let mut q = sqlx::QueryBuilder::new("SELECT stream_id, MIN(event_id) FROM rm_parked WHERE projection = ");
            q.push_bind(t.checkpoint).push(" AND stream_id IN (");
            let mut ids = q.separated(", ");
            for id in chunk {
                ids.push_bind(id.to_string());
            }
            ids.push_unseparated(") GROUP BY stream_id");
            let rows: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *tx).await.map_err(db_err)?;
            for (stream, event) in rows {
                blocked.insert(stream, event.parse().unwrap_or_default());
            }
        }
        let mut foldable: Vec<&StoredEvent> = Vec::with_capacity(fresh.len());
        let mut parked: Vec<(&StoredEvent, String, u32)> = Vec::new();
        for e in fresh {
            if let Some(behind) = blocked.get(&e.stream_id) {
                parked.push((e, format!("waits behind parked event {behind}"), 0));
            } else if let Some((reason, attempts)) = park.get(&e.event_id) {
                parked.push((e, reason.clone(), *attempts));
                blocked.insert(e.stream_id.clone(), e.event_id);
            } else {
                foldable.push(e);
            }
        }
        write_fresh!(tx, t, foldable);
        for (e, reason, attempts) in &parked {
            sqlx::query(
                "INSERT INTO rm_parked (projection, event_id, stream_id, version, event_type, tx, pos, reason, attempts, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (projection, event_id) DO NOTHING",
            )
            .bind(t.checkpoint)
            .bind(e.event_id.to_string())
            .bind(&e.stream_id)
            .bind(e.version)
            .bind(&e.event_type)
            .bind(e.position.tx)
            .bind(e.position.pos)
            .bind(reason)
            .bind(i64::from(*attempts))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(t.checkpoint)
            .bind(last.tx)
            .bind(last.pos)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(mark) = mark {
            sqlx::query(
                "INSERT INTO rm_consumers (name, sequence) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET sequence = excluded.sequence",
            )
            .bind(&mark.consumer)
            .bind(mark.sequence)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        if db.is_postgres() {
            // Wakes whoever waits for the model to move (api instances, benchmarks): delivered
            // at commit.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(format!("{} {}", t.checkpoint, last))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        if !parked.is_empty() {
            tracing::warn!(projection = t.checkpoint, parked = parked.len(), "events parked");
            metrics::counter!("appreg_projection_parked_total", "projection" => t.checkpoint)
                .increment(parked.len() as u64);
        }
    });
    Ok(last)
}

/// Where a JetStream consumer is in its stream, stored with the rows it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub consumer: String,
    /// The stream sequence of the last message of the batch.
    pub sequence: i64,
}

/// The stored stream sequence of a consumer, if it ever applied a batch.
pub async fn consumer_mark(db: &Database, consumer: &str) -> Result<Option<i64>, ReadModelError> {
    with_pool!(db, pool => sqlx::query_scalar("SELECT sequence FROM rm_consumers WHERE name = $1")
        .bind(consumer)
        .fetch_optional(pool)
        .await)
    .map_err(db_err)
}

/// The PostgreSQL channel a projection notifies (payload `NAME TX.POS`) when it commits.
pub const NOTIFY_CHANNEL: &str = "appreg_read_models";
