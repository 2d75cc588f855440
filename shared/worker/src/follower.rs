//! A checkpointed follower of the event log: what the DCR saga and the lifecycle process manager
//! share.
//!
//! [`follow`] keeps one instance active per database ([`lead`](crate::lock::lead)), reads the
//! follower's checkpoint, tails the log in its commit-safe order from there, and hands each
//! event the [`Handler`] wants to [`Handler::handle`], up to [`FollowerConfig::concurrency`] at a
//! time across batches; results are taken in log order, so the checkpoint only moves past an
//! event once it and every earlier one was handled. An event that cannot be handled now (the
//! database is down) is retried with exponential back-off, never skipped; a crash replays from the
//! checkpoint, which the handler must make harmless (idempotency, or deciding on the current
//! state with an expected version).
//!
//! This module never decides anything about an event and never writes the event store; the
//! only row it writes is its checkpoint.

use crate::lock;
use appreg_eventstore::{Database, EventStore, LogPosition, LogTailer, StoredEvent};
use futures::StreamExt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A follower's row in its checkpoint table (`name`, `tx`, `pos`): every event up to that log
/// position is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checkpoint {
    /// The table (`saga_checkpoints`, `lifecycle_checkpoints`); a constant of the code, never
    /// input, since it is written into the SQL.
    pub table: &'static str,
    /// The follower's row.
    pub name: &'static str,
}

impl Checkpoint {
    /// Where the follower is in the log (the start of the log without a row).
    pub async fn load(&self, db: &Database) -> Result<LogPosition, sqlx::Error> {
        let sql = format!("SELECT tx, pos FROM {} WHERE name = $1", self.table);
        let row: Option<(i64, i64)> = match db {
            Database::Postgres(p) => {
                sqlx::query_as(&sql)
                    .bind(self.name)
                    .fetch_optional(p)
                    .await?
            }
            Database::Sqlite(p) => {
                sqlx::query_as(&sql)
                    .bind(self.name)
                    .fetch_optional(p)
                    .await?
            }
        };
        Ok(row
            .map(|(tx, pos)| LogPosition { tx, pos })
            .unwrap_or(LogPosition::START))
    }

    /// Sets the checkpoint to `at`.
    pub async fn save(&self, db: &Database, at: LogPosition) -> Result<(), sqlx::Error> {
        let sql = format!(
            "INSERT INTO {} (name, tx, pos) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, pos = excluded.pos",
            self.table
        );
        match db {
            Database::Postgres(p) => {
                sqlx::query(&sql)
                    .bind(self.name)
                    .bind(at.tx)
                    .bind(at.pos)
                    .execute(p)
                    .await?;
            }
            Database::Sqlite(p) => {
                sqlx::query(&sql)
                    .bind(self.name)
                    .bind(at.tx)
                    .bind(at.pos)
                    .execute(p)
                    .await?;
            }
        }
        Ok(())
    }
}

/// What handling an event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Handled: the checkpoint may move past it.
    Done,
    /// Stopped half-way because the stop token fired: it is handled again at the next start.
    Interrupted,
}

/// What a follower does with the log.
pub trait Handler: Send + Sync {
    /// Why an event could not be handled now (it is retried).
    type Error: std::fmt::Display + Send;

    /// Whether `e` is for this handler; the others only move the checkpoint.
    fn wants(&self, e: &StoredEvent) -> bool;

    /// Sees every event of a batch, in log order, before any event of it is handled.
    fn observe(&self, _e: &StoredEvent) {}

    /// This instance starts following the log (it was standing by, or stepped down, and saw
    /// nothing meanwhile).
    fn activated(&self) {}

    /// Handles `e`; a long handling should stop at a safe point when `stop` fires.
    fn handle(
        &self,
        e: &StoredEvent,
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;
}

/// How a follower runs.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// The name of the process in logs (`dcr-saga`, `lifecycle`).
    pub label: &'static str,
    /// The leader lock's name ([`lock`]): one active instance per database.
    pub lock: &'static str,
    pub checkpoint: Checkpoint,
    /// Events handled at the same time (results are still taken in log order).
    pub concurrency: usize,
    /// Events read from the log at a time.
    pub batch: i64,
    /// How often a standby tries the lock, and the holder checks its lock connection.
    pub lock_retry: Duration,
    /// First and longest pause before handling a failed event again (doubling in between).
    pub first_retry: Duration,
    pub last_retry: Duration,
    /// The checkpoint is written at most this often (a replay after a crash redoes a little
    /// more).
    pub save_every: Duration,
}

impl FollowerConfig {
    /// The settings of the saga and the process manager, for a follower named `label`.
    pub fn new(label: &'static str, lock: &'static str, checkpoint: Checkpoint) -> Self {
        FollowerConfig {
            label,
            lock,
            checkpoint,
            concurrency: 1,
            batch: 500,
            lock_retry: Duration::from_secs(1),
            first_retry: Duration::from_millis(200),
            last_retry: Duration::from_secs(10),
            save_every: Duration::from_millis(100),
        }
    }
}

/// Follows the log with `handler` until `shutdown` fires (on PostgreSQL, standing by while
/// another instance holds the lock).
pub async fn follow<H: Handler + 'static>(
    handler: H,
    config: FollowerConfig,
    db: Database,
    store: Arc<dyn EventStore>,
    shutdown: CancellationToken,
) {
    let pool = match &db {
        Database::Postgres(pool) => Some(pool.clone()),
        Database::Sqlite(_) => None,
    };
    let follower = Follower {
        handler: Arc::new(handler),
        config: Arc::new(config),
        db,
        store,
    };
    let config = follower.config.clone();
    lock::lead(
        config.label,
        pool.as_ref(),
        config.lock,
        config.lock_retry,
        &shutdown,
        |stop| follower.clone().active(stop),
    )
    .await;
}

/// What the pipeline carries: an event to handle, or the end of a log batch (past which the
/// checkpoint may move once everything before it is handled).
enum Item {
    Handle(StoredEvent),
    Mark(LogPosition),
}

struct Follower<H> {
    handler: Arc<H>,
    config: Arc<FollowerConfig>,
    db: Database,
    store: Arc<dyn EventStore>,
}

impl<H> Clone for Follower<H> {
    fn clone(&self) -> Self {
        Follower {
            handler: self.handler.clone(),
            config: self.config.clone(),
            db: self.db.clone(),
            store: self.store.clone(),
        }
    }
}

impl<H: Handler + 'static> Follower<H> {
    /// Follows the log until `stop` fires.
    async fn active(self, stop: CancellationToken) {
        let label = self.config.label;
        tracing::info!("{label}: active");
        let start = loop {
            match self.config.checkpoint.load(&self.db).await {
                Ok(p) => break p,
                Err(error) => {
                    tracing::warn!(%error, "{label}: cannot read its checkpoint; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        };
        self.handler.activated();
        tracing::debug!(%start, "{label}: following the log");
        let tailer = LogTailer::new(self.store.clone(), start, self.config.batch)
            .with_min_interval(Duration::from_millis(2));
        // The log, batch after batch, as events to handle and batch ends (read errors retried).
        let observer = self.handler.clone();
        let items = futures::stream::unfold(tailer, move |tailer| {
            next_items(observer.clone(), tailer, label)
        })
        .flatten();
        // Up to `concurrency` events in flight across batches; results come back in log order,
        // so the position of each one is a safe checkpoint (everything before it is handled).
        let this = self.clone();
        let in_flight = stop.clone();
        let handled = items
            .map(move |item| {
                let (this, stop) = (this.clone(), in_flight.clone());
                async move {
                    match item {
                        Item::Mark(p) => Some(p),
                        Item::Handle(e) => this.handled(&e, &stop).await.then_some(e.position),
                    }
                }
            })
            .buffered(self.config.concurrency.max(1));
        let mut handled = Box::pin(handled);
        // The checkpoint is written by its own task: awaiting a write here would stop polling
        // the events in flight, which hold pool connections (some inside a transaction), and the
        // write would wait for one of them — a deadlock until the pool's acquire timeout.
        let (progress, watched) = tokio::sync::watch::channel(start);
        let saver = tokio::spawn(keep_saved(
            self.db.clone(),
            self.config.clone(),
            watched,
            start,
        ));
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
        // Events still in flight are dropped (their transactions roll back; they are replayed at
        // the next start) before the last write, which may need one of their connections.
        drop(handled);
        drop(progress);
        // The saver writes the last position it was given, then ends.
        if let Err(error) = saver.await {
            tracing::warn!(%error, "{label}: the checkpoint task failed");
        }
    }

    /// Handles `e` until it is done (true) or `stop` fires (false), retrying failures with
    /// exponential back-off.
    async fn handled(&self, e: &StoredEvent, stop: &CancellationToken) -> bool {
        let mut delay = self.config.first_retry;
        loop {
            match self.handler.handle(e, stop).await {
                Ok(Outcome::Done) => return true,
                Ok(Outcome::Interrupted) => return false,
                Err(error) => {
                    tracing::warn!(%error, event_id = %e.event_id, ?delay, "{}: event not handled; retrying", self.config.label);
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(self.config.last_retry);
                }
            }
        }
    }
}

/// The next batch of the log as pipeline items: the events `handler` wants, then the batch's
/// end (read errors are retried).
async fn next_items<H: Handler>(
    handler: Arc<H>,
    mut tailer: LogTailer,
    label: &'static str,
) -> Option<(futures::stream::Iter<std::vec::IntoIter<Item>>, LogTailer)> {
    loop {
        match tailer.next_batch().await {
            Ok(batch) => {
                let Some(last) = batch.last().map(|e| e.position) else {
                    continue;
                };
                for e in &batch {
                    handler.observe(e);
                }
                let mut items: Vec<Item> = batch
                    .into_iter()
                    .filter(|e| handler.wants(e))
                    .map(Item::Handle)
                    .collect();
                items.push(Item::Mark(last));
                return Some((futures::stream::iter(items), tailer));
            }
            Err(error) => {
                tracing::warn!(%error, "{label}: cannot read the log; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Writes the latest handled position at most every [`FollowerConfig::save_every`], and once
/// more when the sender is gone (everything up to it is handled; what comes after is replayed at
/// the next start).
async fn keep_saved(
    db: Database,
    config: Arc<FollowerConfig>,
    mut watched: tokio::sync::watch::Receiver<LogPosition>,
    start: LogPosition,
) {
    let mut saved = start;
    loop {
        let open = watched.changed().await.is_ok();
        let latest = *watched.borrow_and_update();
        if latest > saved {
            match config.checkpoint.save(&db, latest).await {
                Ok(()) => saved = latest,
                Err(error) => {
                    tracing::warn!(%error, "{}: cannot save its checkpoint", config.label)
                }
            }
        }
        if !open {
            return;
        }
        tokio::time::sleep(config.save_every).await;
    }
}
