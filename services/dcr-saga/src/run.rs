//! The saga's loop: tails the event log (commit-safe order, resumable from its checkpoint in
//! `saga_checkpoints`) and hands its requests to [`Saga::handle`], several at a time across
//! batches; its checkpoint only moves past a request once it and every earlier one was handled. A request
//! that cannot be handled now (the database or the vault is down) is retried, never skipped; a
//! crash replays the batch, which the saga's idempotency makes harmless. One active saga per
//! database (a PostgreSQL advisory lock); a standby takes over when it dies.

use crate::saga::Saga;
use appreg_eventstore::{Database, EventStore, LogPosition, LogTailer};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const CHECKPOINT: &str = "dcr-saga";
const BATCH: i64 = 500;
/// The checkpoint is written at most this often (a replay after a crash redoes a little more).
const SAVE_EVERY: Duration = Duration::from_millis(100);

/// Applies the saga's migration.
pub async fn migrate(db: &Database) -> Result<(), appreg_eventstore::StoreError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await?,
        Database::Sqlite(pool) => migrator.run(pool).await?,
    }
    Ok(())
}

async fn checkpoint(db: &Database) -> Result<LogPosition, sqlx::Error> {
    let row: Option<(i64, i64)> = match db {
        Database::Postgres(p) => {
            sqlx::query_as("SELECT tx, pos FROM saga_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_optional(p)
                .await?
        }
        Database::Sqlite(p) => {
            sqlx::query_as("SELECT tx, pos FROM saga_checkpoints WHERE name = $1")
                .bind(CHECKPOINT)
                .fetch_optional(p)
                .await?
        }
    };
    Ok(row
        .map(|(tx, pos)| LogPosition { tx, pos })
        .unwrap_or(LogPosition::START))
}

async fn save(db: &Database, at: LogPosition) -> Result<(), sqlx::Error> {
    const SQL: &str = "INSERT INTO saga_checkpoints (name, tx, pos) VALUES ($1, $2, $3) \
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

/// Runs the saga until `shutdown` fires.
pub async fn run(
    saga: Arc<Saga>,
    db: Database,
    store: Arc<dyn EventStore>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    loop {
        let leadership = match &db {
            Database::Postgres(pool) => {
                match appreg_worker::Leadership::acquire(
                    pool,
                    "saga:dcr",
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
        tracing::info!("dcr-saga: active");
        let stop = shutdown.child_token();
        let mut leadership = leadership;
        {
            let active = active(&saga, &db, &store, concurrency, &stop);
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
                    tracing::error!("dcr-saga: stepping down, the lock may be lost");
                    stop.cancel();
                    active.await;
                }
            }
        }
        if let Some(l) = leadership {
            l.release().await;
        }
        if shutdown.is_cancelled() {
            tracing::info!("dcr-saga: stopped");
            return;
        }
    }
}

/// What the pipeline carries: a request to handle, or the end of a log batch (past which the
/// checkpoint may move once everything before it is handled).
enum Item {
    Handle(appreg_eventstore::StoredEvent),
    Mark(LogPosition),
}

async fn active(
    saga: &Arc<Saga>,
    db: &Database,
    store: &Arc<dyn EventStore>,
    concurrency: usize,
    stop: &CancellationToken,
) {
    let start = loop {
        match checkpoint(db).await {
            Ok(p) => break p,
            Err(e) => {
                tracing::warn!(error = %e, "dcr-saga: cannot read its checkpoint; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    // A standby (or a saga that stepped down) observed nothing meanwhile.
    saga.forget_registries();
    let tailer =
        LogTailer::new(store.clone(), start, BATCH).with_min_interval(Duration::from_millis(2));
    // The log, batch after batch, as requests and batch ends (read errors retried).
    let observer = saga.clone();
    let items = futures::stream::unfold(tailer, move |mut tailer| {
        let saga = observer.clone();
        async move {
            loop {
                match tailer.next_batch().await {
                    Ok(batch) => {
                        let Some(last) = batch.last().map(|e| e.position) else {
                            continue;
                        };
                        for e in &batch {
                            saga.observe(e);
                        }
                        let mut items: Vec<Item> = batch
                            .into_iter()
                            .filter(Saga::wants)
                            .map(Item::Handle)
                            .collect();
                        items.push(Item::Mark(last));
                        return Some((futures::stream::iter(items), tailer));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "dcr-saga: cannot read the log; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        }
    })
    .flatten();
    // Up to `concurrency` requests in flight across batches; results come back in log order, so
    // the position of each one is a safe checkpoint (everything before it is handled).
    let handled = items
        .map(|item| async move {
            match item {
                Item::Mark(p) => Some(p),
                Item::Handle(e) => {
                    let mut delay = Duration::from_millis(200);
                    loop {
                        match saga.handle(&e).await {
                            Ok(()) => return Some(e.position),
                            Err(error) => {
                                tracing::warn!(%error, event_id = %e.event_id, "dcr-saga: request not handled; retrying");
                                metrics::counter!("appreg_dcr_handler_errors_total").increment(1);
                                tokio::select! {
                                    _ = stop.cancelled() => return None,
                                    _ = tokio::time::sleep(delay) => {}
                                }
                                delay = (delay * 2).min(Duration::from_secs(10));
                            }
                        }
                    }
                }
            }
        })
        .buffered(concurrency.max(1));
    let mut handled = Box::pin(handled);
    // The checkpoint is written by its own task: awaiting a write here would stop polling the
    // requests in flight, which hold pool connections (some inside a transaction), and the
    // write would wait for one of them — a deadlock until the pool's acquire timeout.
    let (progress, watched) = tokio::sync::watch::channel(start);
    let saver = tokio::spawn(keep_saved(db.clone(), watched, start));
    let mut done = start;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = handled.next() => next.flatten(),
        };
        let Some(position) = next else { break };
        if position > done {
            done = position;
            progress.send_replace(done);
        }
    }
    // Requests still in flight are dropped (their transactions roll back; they are replayed at
    // the next start) before the last write, which may need one of their connections.
    drop(handled);
    drop(progress);
    // The saver writes the last position it was given, then ends.
    if let Err(e) = saver.await {
        tracing::warn!(error = %e, "dcr-saga: the checkpoint task failed");
    }
}

/// Writes the latest handled position at most every [`SAVE_EVERY`], and once more when the
/// sender is gone (everything up to it is handled; what comes after is replayed at the next
/// start, which the saga's idempotency makes harmless).
async fn keep_saved(
    db: Database,
    mut watched: tokio::sync::watch::Receiver<LogPosition>,
    start: LogPosition,
) {
    let mut saved = start;
    loop {
        let open = watched.changed().await.is_ok();
        let latest = *watched.borrow_and_update();
        if latest > saved {
            match save(&db, latest).await {
                Ok(()) => saved = latest,
                Err(e) => tracing::warn!(error = %e, "dcr-saga: cannot save its checkpoint"),
            }
        }
        if !open {
            return;
        }
        tokio::time::sleep(SAVE_EVERY).await;
    }
}
