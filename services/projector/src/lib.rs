//! The projector: keeps the read models from the JetStream stream the relay fills.
//!
//! A durable pull consumer (`appreg-projector` by default) delivers the relay's messages in
//! stream order; they are gathered into batches (what is ready, up to
//! [`ProjectorConfig::batch`]). A message is a signal, not a source: what the projector folds is
//! always the event store's log. For each batch it reads the log after the model's checkpoint
//! ([`EventStore::read_log`], one read for a batch of the relay's messages), confirms each
//! message against it — the store holds an event at the message's `Appreg-Position` with its
//! `Nats-Msg-Id` —, and folds the store's events up to the last confirmed position into the read
//! model, in one PostgreSQL transaction together with the model's checkpoint and the consumer's
//! stream sequence ([`appreg_readmodel::Mark`]), then acknowledges the batch (ack-all on the last
//! message). So:
//!
//! - a message the store does not confirm (published by someone else than a relay: a forged
//!   envelope, a position beyond the log's head, a real position under another id) is logged,
//!   counted (`appreg_projector_forged_messages_total`) and skipped; it can neither add to the
//!   read model nor move its checkpoint, and its body is never read;
//! - a redelivered or duplicated message changes nothing: events at or below the checkpoint are
//!   skipped inside that transaction;
//! - nothing is skipped: the log is read contiguously from the checkpoint, in log order, and
//!   only below its visibility horizon (where no earlier event can still commit). A message whose
//!   stream sequence is past the next expected one means the messages in between went to another
//!   instance (perhaps dead before applying them): the checkpoint is read again from the
//!   database, and the log from there covers their events;
//! - a poison event (one the model cannot fold) is retried with back-off a bounded number of
//!   times and then parked, with the later events of its stream ([`appreg_readmodel`]);
//!   database failures are retried without end and never skip anything.
//! - a silent stream does not freeze the model: when no message came for
//!   [`ProjectorConfig::silence`] while the log moved on (a relay down for long, a consumer the
//!   server stopped delivering to), the projector folds the log past its checkpoint itself
//!   (`catch_up`); the messages that come later are redeliveries for the checkpoint.
//!
//! This crate only folds events; it never runs a side effect and never writes the event store.

mod counters;
mod fold;
mod message;
pub mod service;

pub use message::{claim, decode, BadMessage, Claim};

use appreg_eventstore::EventStore;
use appreg_readmodel::{Mark, ReadModel, ReadModelError};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use counters::Metrics;
use fold::{catch_up, fold_confirmed, retry_db, Claimed};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the parked-events gauge is read from the database (another process, `appreg
/// projections retry`, may change it).
const PARKED_REFRESH: Duration = Duration::from_secs(5);

/// How the projector runs. [`ProjectorConfig::default`] is the production setting.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// The JetStream stream the relay publishes to (`APPREG_EVENTS`).
    pub stream: String,
    /// First token(s) of every subject (`appreg`): the consumer filters on `<prefix>.>`.
    pub subject_prefix: String,
    /// The durable consumer's name (one per deployment; instances sharing it share the work).
    pub consumer: String,
    /// Most events per transaction.
    pub batch: usize,
    /// Longest wait, after the first message of a batch, for more to arrive.
    pub gather: Duration,
    /// JetStream redelivers a message not acknowledged within this time.
    pub ack_wait: Duration,
    /// First and longest pause before retrying after an error (doubling in between).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// No message for this long while the log moved on: the projector folds the log itself
    /// (checked every 5 s; see `catch_up`).
    pub silence: Duration,
}

impl Default for ProjectorConfig {
    fn default() -> Self {
        ProjectorConfig {
            stream: "APPREG_EVENTS".into(),
            subject_prefix: "appreg".into(),
            consumer: "appreg-projector".into(),
            batch: 500,
            gather: Duration::from_millis(2),
            ack_wait: Duration::from_secs(30),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            silence: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("NATS: {0}")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

fn nats_error(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Interrupted {
    Interrupted::Nats(e.into())
}

/// Runs the projector until `shutdown` fires (a batch being applied is finished first).
/// NATS and PostgreSQL failures are logged, counted and retried. `store` is the event store the
/// relay publishes from: every message is confirmed against it, and its events are what is folded.
pub async fn run(
    config: ProjectorConfig,
    read: Arc<ReadModel>,
    store: Arc<dyn EventStore>,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) {
    let js = async_nats::jetstream::new(nats);
    let metrics = Metrics::new();
    // The model's lag, from the checkpoint every instance sharing the consumer writes.
    let lag_stop = shutdown.child_token();
    tokio::spawn(keep_lag_measured(read.clone(), lag_stop.clone()));
    let _lag_stop = lag_stop.drop_guard();
    let mut delay = config.retry_min;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = consume(&config, &read, store.as_ref(), &js, &metrics, &shutdown) => r,
        };
        match result {
            Ok(()) => return,
            Err(e) => {
                metrics.errors.increment(1);
                tracing::warn!(error = %e, consumer = %config.consumer, "projector interrupted; resuming");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(config.retry_max);
    }
}

/// The durable consumer's settings (with the defaults: `deploy/nats/consumers/appreg-projector.json`).
pub fn consumer_config(config: &ProjectorConfig) -> pull::Config {
    pull::Config {
        durable_name: Some(config.consumer.clone()),
        description: Some("appreg read models".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::All,
        ack_wait: config.ack_wait,
        filter_subject: format!("{}.>", config.subject_prefix),
        max_ack_pending: appreg_worker::consumer::max_ack_pending(config.batch),
        ..Default::default()
    }
}

/// Creates the durable consumer, or updates it when its settings differ from
/// [`consumer_config`], and says which (`appreg nats setup`; the projector itself only creates
/// a missing one).
pub async fn ensure_consumer(
    stream: &Stream,
    config: &ProjectorConfig,
) -> Result<(PullConsumer, appreg_worker::stream::Ensured), async_nats::Error> {
    appreg_worker::consumer::ensure(stream, consumer_config(config)).await
}

/// The consumer, created when missing.
async fn consumer(config: &ProjectorConfig, stream: &Stream) -> Result<PullConsumer, Interrupted> {
    stream
        .get_or_create_consumer(&config.consumer, consumer_config(config))
        .await
        .map_err(nats_error)
}

/// One session: from the consumer's current point until an error or the shutdown.
async fn consume(
    config: &ProjectorConfig,
    read: &Arc<ReadModel>,
    store: &dyn EventStore,
    js: &Context,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    // The database first: a session that fails here has pulled nothing. Messages a session
    // pulled and did not acknowledge count against the consumer's `max_ack_pending` until
    // `ack_wait` (see `appreg_worker::consumer::max_ack_pending`).
    let mark = appreg_readmodel::consumer_mark(read_db(read), &config.consumer).await?;
    // Another instance may have moved the checkpoint since this one last looked.
    read.refresh_position().await?;
    let mut stream = js.get_stream(&config.stream).await.map_err(nats_error)?;
    let consumer = consumer(config, &stream).await?;
    // The next stream sequence to apply: after the stored mark, or the stream's first message.
    let mut next = match mark {
        Some(seq) => u64::try_from(seq).unwrap_or(0) + 1,
        None => {
            stream
                .info()
                .await
                .map_err(nats_error)?
                .state
                .first_sequence
                // An empty stream reports 0; its first message will be 1.
                .max(1)
        }
    };
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(nats_error)?;
    tracing::info!(consumer = %config.consumer, next, "projector consuming");
    let mut refresh = tokio::time::interval(PARKED_REFRESH);
    // When the last message arrived (or the session started).
    let mut last_message = tokio::time::Instant::now();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = refresh.tick() => {
                // A failure here (a connection the database dropped, the database down) is
                // tried again at the next tick; ending the session would strand the messages
                // already pulled.
                match appreg_readmodel::parked_count(read_db(read)).await {
                    Ok(parked) => metrics.parked.set(parked as f64),
                    Err(e) => background_failure(metrics, "reading the parked events", &e),
                }
                if last_message.elapsed() >= config.silence {
                    if let Err(e) = catch_up(read, store, config, metrics).await {
                        background_failure(metrics, "folding the log without a message", &e);
                    }
                }
                continue;
            }
            m = messages.next() => m,
        };
        last_message = tokio::time::Instant::now();
        let Some(first) = first else {
            return Err(Interrupted::Nats("the message stream ended".into()));
        };
        let mut batch = vec![first.map_err(nats_error)?];
        let deadline = tokio::time::Instant::now() + config.gather;
        while batch.len() < config.batch {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(m)) => batch.push(m.map_err(nats_error)?),
                Ok(None) => return Err(Interrupted::Nats("the message stream ended".into())),
                Err(_) => break,
            }
        }
        // What the messages claim; a gap in stream sequences means another instance took the
        // messages in between: its checkpoint tells what it applied.
        let mut claims = Vec::with_capacity(batch.len());
        let mut last_sequence = 0u64;
        let mut gap = false;
        for m in &batch {
            let info = m.info().map_err(nats_error)?;
            let sequence = info.stream_sequence;
            if sequence > next {
                gap = true;
                metrics.gaps.increment(1);
                tracing::debug!(from = next, to = sequence - 1, "projector: messages delivered to another instance; reading the checkpoint again");
            }
            match claim(m.headers.as_ref()) {
                Ok(claim) => claims.push(Claimed {
                    sequence,
                    subject: m.subject.to_string(),
                    claim,
                }),
                Err(error) => {
                    metrics.foreign.increment(1);
                    tracing::error!(%error, sequence, subject = %m.subject, "projector: skipping a message that is not an appreg event");
                }
            }
            next = next.max(sequence + 1);
            last_sequence = last_sequence.max(sequence);
        }
        if gap {
            retry_db(config, metrics, || read.refresh_position()).await;
        }
        let mark = Mark {
            consumer: config.consumer.clone(),
            sequence: i64::try_from(last_sequence).unwrap_or(i64::MAX),
        };
        fold_confirmed(read, store, claims, &mark, config, metrics).await;
        metrics.batches.increment(1);
        if let Some(last) = batch.last() {
            // Ack-all: acknowledges every message up to this one. A lost ack only means a
            // redelivery, which the checkpoint ignores.
            if let Err(e) = last.ack().await {
                tracing::warn!(error = %e, "projector: ack failed");
            }
        }
    }
}

/// Counts and logs a failure of the session's periodic work, which the next tick tries again.
fn background_failure(metrics: &Metrics, what: &str, error: &dyn std::error::Error) {
    metrics.errors.increment(1);
    tracing::warn!(%error, "projector: {what} failed; trying again at the next check");
}

fn read_db(read: &ReadModel) -> &appreg_eventstore::Database {
    read.database()
}

/// Keeps `appreg_projection_lag_events` / `_seconds` current: the events of the log after the
/// model's stored checkpoint (written by whichever instance applied the last batch).
async fn keep_lag_measured(read: Arc<ReadModel>, shutdown: CancellationToken) {
    use appreg_telemetry::lag::{keep_refreshed, LagGauges};
    let db = read.database().clone();
    keep_refreshed(
        db,
        LagGauges::projection(appreg_readmodel::PROJECTION),
        move || {
            let read = read.clone();
            async move { read.refresh_position().await }
        },
        shutdown,
    )
    .await;
}
