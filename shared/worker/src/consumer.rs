//! A durable JetStream pull consumer feeding a [`Handler`]: what `appreg notifier` follows in
//! production, instead of the event log itself (the log follower, [`crate::follower`], stays
//! for SQLite and `appreg dev`).
//!
//! [`consume`] keeps one instance active per database ([`lead`](crate::lock::lead)), so the
//! handler sees the events in stream order, one at a time. A message is a signal, not a
//! source: its `Appreg-Position` and `Nats-Msg-Id` headers are confirmed against the event
//! store ([`EventStore::read_at`], one read per batch of messages) and the handler gets the
//! store's event; a message the store does not confirm (not published by a relay) is logged,
//! counted and skipped, its body never read. A batch is acknowledged (ack-all on its last
//! message) once every event of it is handled, so the handler must make a redelivery harmless
//! (idempotency). Each batch also moves the follower's checkpoint row forward (the lag gauges
//! read it). [`ensure`] creates or updates a consumer (`appreg nats setup`, the projector).

use crate::envelope::{self, MSG_ID_HEADER};
use crate::follower::{Checkpoint, Handler, Outcome};
use crate::stream::{changed_settings, Ensured};
use appreg_eventstore::{Database, EventStore, LogPosition, StoredEvent};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A durable consumer of the events' stream.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The process in logs and metrics (`notifier`).
    pub label: &'static str,
    /// The leader lock's name: one active instance per database.
    pub lock: &'static str,
    /// The checkpoint row moved after each batch (for the lag gauges).
    pub checkpoint: Checkpoint,
    /// The JetStream stream (`APPREG_EVENTS`) and the subjects' first token(s) (`appreg`).
    pub stream: String,
    pub subject_prefix: String,
    /// The durable consumer's name and description.
    pub durable: String,
    pub description: &'static str,
    /// Most messages per batch.
    pub batch: usize,
    /// JetStream redelivers what is not acknowledged within this time.
    pub ack_wait: Duration,
    /// First and longest pause before retrying (an event not handled, NATS down).
    pub first_retry: Duration,
    pub last_retry: Duration,
}

/// The durable pull consumer's settings: every message of `<prefix>.>` from the stream's
/// start, acknowledged cumulatively.
pub fn pull_config(config: &ConsumerConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.durable.clone()),
        description: Some(config.description.into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::All,
        ack_wait: config.ack_wait,
        filter_subject: format!("{}.>", config.subject_prefix),
        max_ack_pending: (config.batch * 4) as i64,
        ..Default::default()
    }
}

/// Creates the durable consumer `wanted`, or updates it when its settings differ, and says
/// which.
pub async fn ensure(
    stream: &Stream,
    wanted: pull::Config,
) -> Result<(PullConsumer, Ensured), async_nats::Error> {
    use async_nats::jetstream::context::ConsumerInfoErrorKind;
    let name = wanted.durable_name.clone().unwrap_or_default();
    let changes = match stream.consumer_info(&name).await {
        Ok(info) => changed_settings(
            &serde_json::to_value(&wanted)?,
            &serde_json::to_value(&info.config)?,
            &[],
        ),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            return Ok((stream.create_consumer(wanted).await?, Ensured::Created));
        }
        Err(e) => return Err(e.into()),
    };
    if changes.is_empty() {
        return Ok((stream.get_consumer(&name).await?, Ensured::Unchanged));
    }
    // A durable consumer created again under its name is updated (the server refuses changes
    // it cannot make, such as another deliver policy).
    let consumer = stream.create_consumer(wanted).await?;
    Ok((consumer, Ensured::Updated(changes)))
}

/// Consumes with `handler` until `shutdown` fires (on PostgreSQL, standing by while another
/// instance holds the lock). NATS and database failures are logged and retried.
pub async fn consume<H: Handler + 'static>(
    handler: H,
    config: ConsumerConfig,
    db: Database,
    store: Arc<dyn EventStore>,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) {
    let pool = match &db {
        Database::Postgres(pool) => Some(pool.clone()),
        Database::Sqlite(_) => None,
    };
    let session = Arc::new(Session {
        handler,
        config,
        db,
        store,
        js: async_nats::jetstream::new(nats),
    });
    let (label, lock, retry) = (
        session.config.label,
        session.config.lock,
        session.config.first_retry,
    );
    crate::lock::lead(label, pool.as_ref(), lock, retry, &shutdown, |stop| {
        session.clone().active(stop)
    })
    .await;
}

struct Session<H> {
    handler: H,
    config: ConsumerConfig,
    db: Database,
    store: Arc<dyn EventStore>,
    js: async_nats::jetstream::Context,
}

type Failure = Box<dyn std::error::Error + Send + Sync>;

impl<H: Handler + 'static> Session<H> {
    /// Consumes until `stop` fires, starting again after a failure.
    async fn active(self: Arc<Self>, stop: CancellationToken) {
        let label = self.config.label;
        tracing::info!(consumer = %self.config.durable, "{label}: consuming");
        self.handler.activated();
        let mut delay = self.config.first_retry;
        while !stop.is_cancelled() {
            if let Err(error) = self.session(&stop).await {
                metrics::counter!("appreg_worker_consumer_errors_total", "process" => label)
                    .increment(1);
                tracing::warn!(%error, consumer = %self.config.durable, "{label}: consumer interrupted; resuming");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(self.config.last_retry);
            }
        }
    }

    /// One session of the consumer: batches until an error or `stop`.
    async fn session(&self, stop: &CancellationToken) -> Result<(), Failure> {
        let stream = self.js.get_stream(&self.config.stream).await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.config.durable, pull_config(&self.config))
            .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await?;
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                m = messages.next() => m,
            };
            let Some(first) = first else {
                return Err("the message stream ended".into());
            };
            let mut batch = vec![first?];
            // What else is ready, without waiting.
            while batch.len() < self.config.batch {
                match tokio::time::timeout(Duration::ZERO, messages.next()).await {
                    Ok(Some(m)) => batch.push(m?),
                    Ok(None) => return Err("the message stream ended".into()),
                    Err(_) => break,
                }
            }
            if !self.handle_batch(&batch, stop).await? {
                return Ok(());
            }
            if let Some(last) = batch.last() {
                // Ack-all: every message up to this one. A lost ack means a redelivery, which
                // the handler makes harmless.
                last.ack().await?;
            }
        }
    }

    /// Confirms the batch's messages against the store and handles their events in log
    /// order; false when `stop` fired first.
    async fn handle_batch(
        &self,
        batch: &[async_nats::jetstream::Message],
        stop: &CancellationToken,
    ) -> Result<bool, Failure> {
        let label = self.config.label;
        let mut claims: Vec<(LogPosition, String)> = Vec::with_capacity(batch.len());
        for m in batch {
            let headers = m.headers.as_ref();
            let position = envelope::position(headers);
            let id = headers
                .and_then(|h| h.get(MSG_ID_HEADER))
                .map(|v| v.as_str().to_string());
            match position.zip(id) {
                Some(claim) => claims.push(claim),
                None => foreign(label, m.subject.as_str(), "not an appreg event"),
            }
        }
        let mut events: Vec<StoredEvent> = Vec::with_capacity(claims.len());
        for chunk in claims.chunks(appreg_eventstore::MAX_POSITIONS_PER_READ) {
            let positions: Vec<LogPosition> = chunk.iter().map(|(p, _)| *p).collect();
            let stored: HashMap<LogPosition, StoredEvent> = self
                .store
                .read_at(&positions)
                .await?
                .into_iter()
                .map(|e| (e.position, e))
                .collect();
            for (position, id) in chunk {
                match stored.get(position) {
                    Some(e) if e.event_id.to_string() == *id => events.push(e.clone()),
                    _ => foreign(
                        label,
                        &format!("{position}"),
                        "not confirmed by the event store",
                    ),
                }
            }
        }
        events.sort_by_key(|e| e.position);
        events.dedup_by_key(|e| e.position);
        for e in &events {
            self.handler.observe(e);
        }
        let mut last = None;
        for e in events {
            if self.handler.wants(&e) && !self.handled(&e, stop).await {
                return Ok(false);
            }
            last = Some(e.position);
        }
        if let Some(last) = last {
            if let Err(error) = self.config.checkpoint.save(&self.db, last).await {
                tracing::warn!(%error, "{label}: cannot save its checkpoint");
            }
        }
        Ok(true)
    }

    /// Handles `e` until it is done (true) or `stop` fires (false), retrying failures.
    async fn handled(&self, e: &StoredEvent, stop: &CancellationToken) -> bool {
        let mut delay = self.config.first_retry;
        loop {
            match self.handler.handle(e, stop).await {
                Ok(Outcome::Done) => return true,
                Ok(Outcome::Interrupted) => return false,
                Err(error) => {
                    tracing::warn!(%error, event_id = %e.event_id, ?delay, "{}: event not handled; retrying", self.config.label);
                }
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(self.config.last_retry);
        }
    }
}

/// Logs and counts a message that is skipped (its body is never read).
fn foreign(label: &'static str, what: &str, why: &'static str) {
    metrics::counter!("appreg_worker_foreign_messages_total", "process" => label).increment(1);
    tracing::error!(message = %what, why, "{label}: skipping a message");
}
