//! Rebuilding the read model: replaying the whole log into the shadow tables, then swapping
//! them in (the PostgreSQL replay itself is in `replay`).

use super::*;

/// Events per replayed batch (one short write transaction each) during a rebuild.
pub const REBUILD_BATCH: i64 = 1000;

/// How far a rebuild is: events replayed out of the events counted at its start (events
/// appended meanwhile raise `total`; on PostgreSQL the count runs beside the replay, and until
/// it is known `total` is the planner's estimate of the log's size).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

impl Progress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    /// The time left at the current rate, once there is one.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate))
    }
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildSummary {
    /// Events replayed in batches while the live tables kept serving.
    pub replayed: u64,
    /// Events applied in the swap transaction (appended during the replay).
    pub caught_up: u64,
    /// The log position the swapped-in tables include (the live checkpoint).
    pub position: LogPosition,
    /// Application rows after the swap.
    pub applications: i64,
    pub elapsed: Duration,
    /// How long the swap transaction (catch-up, drop, renames) held the live tables.
    pub swap: Duration,
}

/// Rebuilds the application read model from the whole event store (never from NATS): the log
/// is replayed into fresh shadow tables ([`SHADOW`]) in short transactions (on SQLite batches
/// of [`REBUILD_BATCH`] events; on PostgreSQL see the `replay` module, which needs two
/// connections of the pool at once), while the live tables keep serving and the projector
/// keeps them current; then one transaction catches the shadow tables up to the head of the
/// log, drops the live tables, renames the shadow ones (and their indexes) to the live names
/// and moves the live checkpoint to the shadow's. A running projector then continues from
/// there: the events of its current batch that the swap already applied are skipped by the
/// checkpoint.
///
/// Only folds events: no handler with side effects runs. One rebuild at a time per database.
pub async fn rebuild(
    db: &Database,
    mut progress: impl FnMut(&Progress),
) -> Result<RebuildSummary, ReadModelError> {
    let started = std::time::Instant::now();
    let store = db.event_store().await.map_err(ReadModelError::from)?;
    const COUNT: &str = "SELECT COUNT(*) FROM events";
    // On PostgreSQL the count (a scan of the log) runs beside the replay; until it is known,
    // the progress's total is the planner's estimate.
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let (mut total, counting) = match db {
        Database::Postgres(pool) => {
            let estimate: f32 =
                sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
            let (pool, counted) = (pool.clone(), counted.clone());
            let counting = tokio::spawn(async move {
                let n: i64 = sqlx::query_scalar(COUNT).fetch_one(&pool).await?;
                let n = u64::try_from(n).unwrap_or_default();
                counted.store(n, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, sqlx::Error>(n)
            });
            (estimate.max(0.0) as u64, Some(counting))
        }
        Database::Sqlite(pool) => {
            let counted: i64 = sqlx::query_scalar(COUNT)
                .fetch_one(pool)
                .await
                .map_err(db_err)?;
            (u64::try_from(counted).unwrap_or_default(), None)
        }
    };
    prepare_shadow(db).await?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild counted the log and prepared the shadow tables"
    );
    let mut done = 0u64;
    progress(&Progress {
        done,
        total,
        elapsed: started.elapsed(),
    });
    let mut position = LogPosition::START;
    if let Database::Postgres(pool) = db {
        // Fresh tables only the rebuild writes: folded in memory, rows written about once
        // with COPY, in short transactions (see the `replay` module).
        let mut with_count = |p: &Progress| {
            let n = counted.load(std::sync::atomic::Ordering::Relaxed);
            let total = if n == u64::MAX {
                p.total
            } else {
                n.max(p.done)
            };
            progress(&Progress { total, ..*p })
        };
        position = replay::replay(
            pool,
            &SHADOW,
            started,
            &mut done,
            &mut total,
            &mut with_count,
        )
        .await?;
        if let Some(counting) = counting {
            total = counting
                .await
                .map_err(ReadModelError::internal)?
                .map_err(db_err)?
                .max(done);
        }
    } else {
        loop {
            let batch = store
                .read_log(position, REBUILD_BATCH)
                .await
                .map_err(ReadModelError::from)?;
            if batch.is_empty() {
                break;
            }
            position = apply_parking(db, &SHADOW, &batch, RetryPolicy::REPLAY, None).await?;
            done += batch.len() as u64;
            total = total.max(done);
            progress(&Progress {
                done,
                total,
                elapsed: started.elapsed(),
            });
        }
    }
    let replayed = done;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild replayed the log"
    );
    let swap_started = std::time::Instant::now();
    let (position, caught_up) = swap(db, store.as_ref(), position).await?;
    let swap = swap_started.elapsed();
    done += caught_up;
    progress(&Progress {
        done,
        total: total.max(done),
        elapsed: started.elapsed(),
    });
    let applications: i64 =
        with_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM rm_applications")
        .fetch_one(pool)
        .await)
        .map_err(db_err)?;
    Ok(RebuildSummary {
        replayed,
        caught_up,
        position,
        applications,
        elapsed: started.elapsed(),
        swap,
    })
}

/// Drops what an interrupted rebuild left and creates empty shadow tables at `START`.
async fn prepare_shadow(db: &Database) -> Result<(), ReadModelError> {
    let (begin, _) = write_begin(db);
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        for table in SHADOW.all() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        // On PostgreSQL the replay adds the primary keys of the applications and members and
        // creates the secondary indexes once the rows are in.
        let ddl = if db.is_postgres() { SHADOW.tables_ddl(false) } else { SHADOW.ddl() };
        for ddl in ddl {
            sqlx::query(&ddl).execute(&mut *tx).await.map_err(db_err)?;
        }
        sqlx::query("DELETE FROM rm_parked WHERE projection = $1")
            .bind(SHADOW.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(SHADOW.checkpoint)
            .bind(0i64)
            .bind(0i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    });
    Ok(())
}

/// The swap, in one transaction: the live checkpoint is locked first (as the projector does,
/// so neither waits for the other in a cycle), then on PostgreSQL the live tables (readers wait
/// for the commit instead of seeing half a swap); the shadow tables catch up to the head of the
/// log, replace the live ones, and the live checkpoint moves to theirs. Returns that position
/// and the number of events applied here.
async fn swap(
    db: &Database,
    store: &dyn EventStore,
    replayed_to: LogPosition,
) -> Result<(LogPosition, u64), ReadModelError> {
    let (begin, lock) = write_begin(db);
    let mut caught_up = 0u64;
    let mut position = replayed_to;
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        let live: Option<(i64, i64)> = sqlx::query_as(lock)
            .bind(LIVE.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let live = live.map(|(tx, pos)| LogPosition { tx, pos }).unwrap_or(LogPosition::START);
        if db.is_postgres() {
            sqlx::query(&format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", LIVE.all().join(", ")))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let shadow: Option<(i64, i64)> = sqlx::query_as(lock)
            .bind(SHADOW.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some((tx, pos)) = shadow {
            position = position.max(LogPosition { tx, pos });
        }
        loop {
            let batch = store.read_log(position, REBUILD_BATCH).await.map_err(ReadModelError::from)?;
            let Some(last) = batch.last().map(|e| e.position) else { break };
            let fresh: Vec<&StoredEvent> = batch.iter().filter(|e| e.position > position).collect();
            caught_up += fresh.len() as u64;
            write_fresh!(tx, SHADOW, fresh);
            position = last;
        }
        if position < live {
            // Cannot happen (the projector only applies events `read_log` returned, and the
            // horizon only moves forward); never move the live model back.
            return Err(ReadModelError::internal(format!(
                "rebuild reached {position}, behind the live read model at {live}"
            )));
        }
        for table in LIVE.all() {
            sqlx::query(&format!("DROP TABLE {table}")).execute(&mut *tx).await.map_err(db_err)?;
        }
        for (shadow, live) in SHADOW.all().into_iter().zip(LIVE.all()) {
            sqlx::query(&format!("ALTER TABLE {shadow} RENAME TO {live}"))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        // Index names are per schema: the shadow set's must be free for the next rebuild.
        let mut renames = Vec::new();
        if db.is_postgres() {
            renames.push(format!("ALTER INDEX {} RENAME TO {}", SHADOW.applications_index, LIVE.applications_index));
            renames.push(format!("ALTER INDEX {} RENAME TO {}", SHADOW.members_index, LIVE.members_index));
            renames.push(format!("ALTER INDEX {} RENAME TO {}", SHADOW.users_index, LIVE.users_index));
            for (shadow, live) in SHADOW.all().into_iter().zip(LIVE.all()) {
                renames.push(format!("ALTER INDEX {shadow}_pkey RENAME TO {live}_pkey"));
            }
        } else {
            // SQLite has no ALTER INDEX (its primary keys have internal names).
            renames.push(format!("DROP INDEX {}", SHADOW.applications_index));
            renames.push(format!("DROP INDEX {}", SHADOW.members_index));
            renames.push(format!("DROP INDEX {}", SHADOW.users_index));
            renames.extend(LIVE.index_ddl());
        }
        for sql in renames {
            sqlx::query(&sql).execute(&mut *tx).await.map_err(db_err)?;
        }
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(LIVE.checkpoint)
            .bind(position.tx)
            .bind(position.pos)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // The rebuilt model's parked events replace the old model's.
        sqlx::query("DELETE FROM rm_parked WHERE projection = $1")
            .bind(LIVE.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("UPDATE rm_parked SET projection = $1 WHERE projection = $2")
            .bind(LIVE.checkpoint)
            .bind(SHADOW.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM rm_checkpoints WHERE name = $1")
            .bind(SHADOW.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    });
    Ok((position, caught_up))
}
