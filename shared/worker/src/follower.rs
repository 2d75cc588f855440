//! A checkpointed follower of the event log: what the DCR saga and the lifecycle process manager
//! share.
//!
//! [`follow`] keeps one instance active per database ([`lead`](crate::lock::lead)), reads the
//! follower's checkpoint, tails the log in its commit-safe order from there, and hands each
//! event the [`Handler`] wants to [`Handler::handle`], up to [`FollowerConfig::concurrency`] at a
//! time across batches. Events may finish in any order (a slow one never holds a window slot
//! of the others): the checkpoint is a **low-water mark**, the position just before the oldest
//! event still in flight (or the last position read when none is), so it never passes an
//! unfinished event. An event that cannot be handled now (the database is down) is retried with
//! exponential back-off, never skipped; with [`FollowerConfig::parking`], one that failed that
//! many times in a row is parked ([`crate::parked`]) and the checkpoint moves on. A crash
//! replays from the checkpoint, which the handler must make harmless (idempotency, or deciding
//! on the current state with an expected version).
//!
//! This module never decides anything about an event and never writes the event store; the
//! only rows it writes are its checkpoint and its parked events.

use crate::lock;
use crate::parked::{self, Parking};
use appreg_eventstore::{Database, EventStore, LogPosition, LogTailer, StoredEvent};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::collections::BTreeMap;
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

    /// Moves the checkpoint forward to `at`; never back. A former leader stepping down writes
    /// its last position after the new leader may already have saved a later one (the old
    /// leader's final write can wait on a connection for seconds after a database restart):
    /// that write must not move the checkpoint back, or the new leader, caught up and with
    /// nothing new to save, would leave it behind for good.
    pub async fn save(&self, db: &Database, at: LogPosition) -> Result<(), sqlx::Error> {
        self.write(db, at, true).await
    }

    /// Sets the checkpoint to `at`, back as well (an operator replaying the log; never while a
    /// follower runs).
    pub async fn reset(&self, db: &Database, at: LogPosition) -> Result<(), sqlx::Error> {
        self.write(db, at, false).await
    }

    async fn write(
        &self,
        db: &Database,
        at: LogPosition,
        forward_only: bool,
    ) -> Result<(), sqlx::Error> {
        let t = self.table;
        let only_forward = if forward_only {
            format!(" WHERE ({t}.tx, {t}.pos) < (excluded.tx, excluded.pos)")
        } else {
            String::new()
        };
        let sql = format!(
            "INSERT INTO {t} (name, tx, pos) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, pos = excluded.pos{only_forward}"
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

    /// The event types whose payloads [`Handler::handle`] and [`Handler::observe`] read; the
    /// log is read with the other events' payloads left out (JSON null). `None` (the
    /// default): every payload. A handler that names types wants no event of another type.
    fn payload_types(&self) -> Option<&'static [&'static str]> {
        None
    }

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

    /// Handles the wanted events of a batch, in log order (the JetStream consumer hands over a
    /// page of the log at a time); on an error the whole batch is handled again. By default one
    /// after another with [`Handler::handle`]; a handler may do them together (one statement).
    fn handle_all(
        &self,
        events: &[StoredEvent],
        stop: &CancellationToken,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send {
        async move {
            for e in events {
                if self.handle(e, stop).await? == Outcome::Interrupted {
                    return Ok(Outcome::Interrupted);
                }
            }
            Ok(Outcome::Done)
        }
    }
}

/// How a follower runs.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// The name of the process in logs (`dcr-saga`, `lifecycle`).
    pub label: &'static str,
    /// The leader lock's name ([`lock`]): one active instance per database.
    pub lock: &'static str,
    pub checkpoint: Checkpoint,
    /// Events in flight at the same time (read and not yet finished; they may finish in any
    /// order, the checkpoint is their low-water mark).
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
    /// Park an event after this many failed tries (None: retry it until it succeeds).
    pub parking: Option<Parking>,
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
            parking: None,
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
        let mut tailer = LogTailer::new(self.store.clone(), start, self.config.batch)
            .with_min_interval(Duration::from_millis(2));
        if let Some(types) = self.handler.payload_types() {
            tailer = tailer.with_payloads_of(types);
        }
        // The log, batch after batch, as events to handle and batch ends (read errors retried).
        let observer = self.handler.clone();
        let items = futures::stream::unfold(tailer, move |tailer| {
            next_items(observer.clone(), tailer, label)
        })
        .flatten();
        // Up to `concurrency` events in flight across batches, finishing in any order.
        let mut items = Box::pin(items);
        let mut running = FuturesUnordered::new();
        // The events in flight, by position, each with the position read just before it:
        // everything up to that one is handled once the events in flight before it are.
        let mut in_flight: BTreeMap<LogPosition, LogPosition> = BTreeMap::new();
        // The last position read (an event handed out, or a batch's end).
        let mut frontier = start;
        let window = self.config.concurrency.max(1);
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
            let room = running.len() < window;
            tokio::select! {
                _ = stop.cancelled() => break,
                Some((position, handled)) = running.next(), if !running.is_empty() => {
                    // Interrupted (the stop fired): it stays in flight, the checkpoint before it.
                    if handled {
                        in_flight.remove(&position);
                    }
                }
                item = items.next(), if room => match item {
                    None => break,
                    Some(Item::Mark(p)) => frontier = frontier.max(p),
                    Some(Item::Handle(e)) => {
                        in_flight.insert(e.position, frontier);
                        frontier = frontier.max(e.position);
                        let (this, stop) = (self.clone(), stop.clone());
                        running.push(async move {
                            let handled = this.handled(&e, &stop).await;
                            (e.position, handled)
                        });
                    }
                },
            }
            let low = match in_flight.first_key_value() {
                Some((_, before)) => *before,
                None => frontier,
            };
            if low > done {
                done = low;
                progress.send_replace(done);
            }
        }
        // Events still in flight are dropped (their transactions roll back; they are replayed at
        // the next start) before the last write, which may need one of their connections.
        drop(running);
        drop(items);
        drop(progress);
        // The saver writes the last position it was given, then ends.
        if let Err(error) = saver.await {
            tracing::warn!(%error, "{label}: the checkpoint task failed");
        }
    }

    /// Handles `e` until it is done or parked (true) or `stop` fires (false), retrying failures
    /// with exponential back-off.
    async fn handled(&self, e: &StoredEvent, stop: &CancellationToken) -> bool {
        let mut delay = self.config.first_retry;
        let mut attempts: u32 = 0;
        loop {
            match self.handler.handle(e, stop).await {
                Ok(Outcome::Done) => return true,
                Ok(Outcome::Interrupted) => return false,
                Err(error) => {
                    attempts = attempts.saturating_add(1);
                    if let Some(parking) = self.config.parking.filter(|p| attempts >= p.after) {
                        if self.park(parking, e, &error.to_string(), attempts).await {
                            return true;
                        }
                    }
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

impl<H: Handler + 'static> Follower<H> {
    /// Parks `e` (true), or says why it could not (false: it is retried).
    async fn park(&self, parking: Parking, e: &StoredEvent, reason: &str, attempts: u32) -> bool {
        let label = self.config.label;
        match parked::park(
            &self.db,
            parking.table,
            self.config.checkpoint.name,
            e,
            reason,
            attempts,
        )
        .await
        {
            Ok(()) => {
                tracing::error!(event_id = %e.event_id, stream_id = %e.stream_id, event_type = %e.event_type, attempts, reason, "{label}: event parked after repeated failures");
                metrics::counter!("appreg_worker_parked_total", "process" => label).increment(1);
                true
            }
            Err(error) => {
                tracing::warn!(%error, event_id = %e.event_id, "{label}: cannot park the event");
                false
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
