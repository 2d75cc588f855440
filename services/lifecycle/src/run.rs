//! The process manager's loop: tails the event log (commit-safe order, resumable from its
//! checkpoint in `lifecycle_checkpoints`) and handles its triggers one after another, in log
//! order. The checkpoint only moves past a trigger once all its steps are recorded; a trigger
//! that cannot be handled now is retried with back-off, never skipped; a crash replays from the
//! checkpoint, which deciding every step on the current state makes harmless. One active
//! instance per database (a PostgreSQL advisory lock); a standby takes over when it dies.

use crate::process::{handle, trigger, Handled, TriggerKind};
use crate::LifecycleConfig;
use appreg_eventstore::{Database, EventStore, LogPosition, LogTailer, StoredEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The name of the process manager's row in `lifecycle_checkpoints`.
pub const CHECKPOINT: &str = "lifecycle";
/// The advisory lock that makes one instance active.
const LOCK: &str = "lifecycle";
const BATCH: i64 = 500;
/// The checkpoint is written at most this often (a replay after a crash redoes a little more).
const SAVE_EVERY: Duration = Duration::from_millis(100);
const FIRST_RETRY: Duration = Duration::from_millis(200);
const LAST_RETRY: Duration = Duration::from_secs(10);

/// Applies the process manager's migration (its checkpoint table).
pub async fn migrate(db: &Database) -> Result<(), appreg_eventstore::StoreError> {
    // Other components keep their own migrations in the same database.
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await?,
        Database::Sqlite(pool) => migrator.run(pool).await?,
    }
    Ok(())
}

/// Where the process manager is in the log: every trigger up to it is handled.
pub async fn checkpoint(db: &Database) -> Result<LogPosition, sqlx::Error> {
    const SQL: &str = "SELECT tx, pos FROM lifecycle_checkpoints WHERE name = $1";
    let row: Option<(i64, i64)> = match db {
        Database::Postgres(p) => {
            sqlx::query_as(SQL)
                .bind(CHECKPOINT)
                .fetch_optional(p)
                .await?
        }
        Database::Sqlite(p) => {
            sqlx::query_as(SQL)
                .bind(CHECKPOINT)
                .fetch_optional(p)
                .await?
        }
    };
    Ok(row
        .map(|(tx, pos)| LogPosition { tx, pos })
        .unwrap_or(LogPosition::START))
}

/// Sets the checkpoint (`LogPosition::START`: the next run replays the whole log, which
/// appends nothing for the triggers already handled).
pub async fn set_checkpoint(db: &Database, at: LogPosition) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO lifecycle_checkpoints (name, tx, pos) VALUES ($1, $2, $3) \
                       ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, pos = excluded.pos";
    match db {
        Database::Postgres(p) => {
            sqlx::query(SQL)
                .bind(CHECKPOINT)
                .bind(at.tx)
                .bind(at.pos)
                .execute(p)
                .await?;
        }
        Database::Sqlite(p) => {
            sqlx::query(SQL)
                .bind(CHECKPOINT)
                .bind(at.tx)
                .bind(at.pos)
                .execute(p)
                .await?;
        }
    }
    Ok(())
}

/// Runs the process manager until `shutdown` fires (on PostgreSQL, standing by while another
/// instance holds the lock).
pub async fn run(
    config: LifecycleConfig,
    db: Database,
    store: Arc<dyn EventStore>,
    shutdown: CancellationToken,
) {
    // Exported from the start (at 0), not only after the first step or error.
    for kind in [TriggerKind::Archive, TriggerKind::Restore] {
        metrics::counter!("appreg_lifecycle_steps_total", "kind" => kind.as_str()).increment(0);
    }
    metrics::counter!("appreg_lifecycle_errors_total").increment(0);
    loop {
        let leadership = match &db {
            Database::Postgres(pool) => {
                match appreg_worker::Leadership::acquire(
                    pool,
                    LOCK,
                    Duration::from_secs(1),
                    &shutdown,
                )
                .await
                {
                    Some(l) => Some(l),
                    None => return,
                }
            }
            Database::Sqlite(_) => None,
        };
        tracing::info!("lifecycle: active");
        let stop = shutdown.child_token();
        let mut leadership = leadership;
        {
            let active = active(&config, &db, &store, &stop);
            tokio::pin!(active);
            let lost = async {
                match leadership.as_mut() {
                    Some(l) => l.lost(Duration::from_secs(1)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = &mut active => {}
                () = lost => {
                    tracing::error!("lifecycle: stepping down, the lock may be lost");
                    stop.cancel();
                    active.await;
                }
            }
        }
        if let Some(l) = leadership {
            l.release().await;
        }
        if shutdown.is_cancelled() {
            tracing::info!("lifecycle: stopped");
            return;
        }
    }
}

async fn save(db: &Database, at: LogPosition) -> bool {
    match set_checkpoint(db, at).await {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(%error, "lifecycle: cannot save its checkpoint");
            false
        }
    }
}

/// Handles a trigger until it is done (true) or `stop` fires (false), retrying failures with
/// exponential back-off.
async fn handled(
    config: &LifecycleConfig,
    store: &dyn EventStore,
    e: &StoredEvent,
    stop: &CancellationToken,
) -> bool {
    let mut delay = FIRST_RETRY;
    loop {
        match handle(config, store, e, stop).await {
            Ok(Handled::Done { .. }) => return true,
            Ok(Handled::Interrupted { .. }) => return false,
            Err(error) => {
                metrics::counter!("appreg_lifecycle_errors_total").increment(1);
                tracing::warn!(%error, event_id = %e.event_id, ?delay, "lifecycle: trigger not handled; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return false,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(LAST_RETRY);
            }
        }
    }
}

async fn active(
    config: &LifecycleConfig,
    db: &Database,
    store: &Arc<dyn EventStore>,
    stop: &CancellationToken,
) {
    let start = loop {
        match checkpoint(db).await {
            Ok(p) => break p,
            Err(error) => {
                tracing::warn!(%error, "lifecycle: cannot read its checkpoint; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    tracing::debug!(%start, "lifecycle: following the log");
    let mut tailer =
        LogTailer::new(store.clone(), start, BATCH).with_min_interval(Duration::from_millis(2));
    // `done`: every event up to it is handled; `saved`: the stored checkpoint.
    let mut done = start;
    let mut saved = start;
    let mut last_save = tokio::time::Instant::now();
    'log: loop {
        let due = last_save + SAVE_EVERY;
        let batch = tokio::select! {
            _ = stop.cancelled() => break,
            batch = tailer.next_batch() => batch,
            // Idle with progress not yet saved.
            _ = tokio::time::sleep_until(due), if done > saved => {
                if save(db, done).await {
                    saved = done;
                }
                last_save = tokio::time::Instant::now();
                continue;
            }
        };
        let batch = match batch {
            Ok(batch) => batch,
            Err(error) => {
                tracing::warn!(%error, "lifecycle: cannot read the log; retrying");
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
                continue;
            }
        };
        for e in &batch {
            if trigger(e).is_some() && !handled(config, store.as_ref(), e, stop).await {
                break 'log;
            }
            done = e.position;
        }
        if done > saved && last_save.elapsed() >= SAVE_EVERY {
            if save(db, done).await {
                saved = done;
            }
            last_save = tokio::time::Instant::now();
        }
    }
    // Everything up to `done` is handled; an unfinished trigger is handled again at the next start.
    if done > saved {
        save(db, done).await;
    }
}
