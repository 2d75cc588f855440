//! The projector: keeps the read models from the JetStream stream the relay fills.
//!
//! A durable pull consumer (`appreg-projector` by default) delivers the events in stream order;
//! they are gathered into batches (what is ready, up to [`ProjectorConfig::batch`]) and each
//! batch is folded into the read model in one PostgreSQL transaction together with the model's
//! checkpoint (a log position) and the consumer's stream sequence ([`appreg_readmodel::Mark`]),
//! then acknowledged (ack-all on the last message). So:
//!
//! - a redelivered or duplicated message changes nothing: events at or below the checkpoint are
//!   skipped inside that transaction;
//! - nothing is skipped: a message whose stream sequence is past the next expected one means the
//!   messages in between were delivered to an instance that died before applying them (JetStream
//!   redelivers them only after the ack wait); they are fetched from the stream directly and
//!   applied first. The batch is applied in log order (the relay publishes in log order);
//! - a poison event (one the model cannot fold) is retried with back-off a bounded number of
//!   times and then parked, with the later events of its stream ([`appreg_readmodel`]);
//!   database failures are retried without end and never skip anything.
//!
//! This crate only folds events; it never runs a side effect and never writes the event store.

use appreg_eventstore::{LogPosition, StoredEvent};
use appreg_readmodel::{Mark, ReadModel, ReadModelError};
use appreg_worker::envelope::{self, Envelope};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

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
        }
    }
}

/// Why a message cannot become an event (it was not published by a relay).
#[derive(Debug, thiserror::Error)]
pub enum BadMessage {
    #[error("message without an Appreg-Position header")]
    NoPosition,
    #[error("message body is not an event envelope: {0}")]
    Body(serde_json::Error),
}

/// The stored event a relay message carries.
pub fn decode(
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<StoredEvent, BadMessage> {
    let position = envelope::position(headers).ok_or(BadMessage::NoPosition)?;
    let e: Envelope = serde_json::from_slice(payload).map_err(BadMessage::Body)?;
    Ok(StoredEvent {
        position,
        event_id: e.event_id,
        stream_id: e.stream_id,
        stream_type: e.stream_type,
        version: e.version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        data: e.data,
        metadata: e.metadata,
        recorded_at: e.at,
    })
}

#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    ReadModel(#[from] ReadModelError),
}

fn nats_error(e: impl std::fmt::Display) -> Interrupted {
    Interrupted::Nats(e.to_string())
}

struct Metrics {
    events: metrics::Counter,
    batches: metrics::Counter,
    errors: metrics::Counter,
    gaps: metrics::Counter,
    foreign: metrics::Counter,
    parked: metrics::Gauge,
}

impl Metrics {
    fn new() -> Self {
        let p = appreg_readmodel::PROJECTION;
        Metrics {
            events: metrics::counter!("appreg_projector_events_total", "projection" => p),
            batches: metrics::counter!("appreg_projector_batches_total", "projection" => p),
            errors: metrics::counter!("appreg_projector_errors_total", "projection" => p),
            gaps: metrics::counter!("appreg_projector_gap_fills_total", "projection" => p),
            foreign: metrics::counter!("appreg_projector_foreign_messages_total", "projection" => p),
            parked: metrics::gauge!("appreg_projection_parked_events", "projection" => p),
        }
    }
}

/// Runs the projector until `shutdown` fires (a batch being applied is finished first).
/// NATS and PostgreSQL failures are logged, counted and retried.
pub async fn run(
    config: ProjectorConfig,
    read: Arc<ReadModel>,
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
            r = consume(&config, &read, &js, &metrics, &shutdown) => r,
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
        max_ack_pending: (config.batch * 4) as i64,
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
    use appreg_worker::stream::{changed_settings, Ensured};
    use async_nats::jetstream::context::ConsumerInfoErrorKind;
    let wanted = consumer_config(config);
    let changes = match stream.consumer_info(&config.consumer).await {
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
        return Ok((
            stream.get_consumer(&config.consumer).await?,
            Ensured::Unchanged,
        ));
    }
    // A durable consumer created again under its name is updated (the server refuses changes
    // it cannot make, such as another deliver policy).
    let consumer = stream.create_consumer(wanted).await?;
    Ok((consumer, Ensured::Updated(changes)))
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
    js: &Context,
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), Interrupted> {
    let mut stream = js.get_stream(&config.stream).await.map_err(nats_error)?;
    let consumer = consumer(config, &stream).await?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(nats_error)?;
    // The next stream sequence to apply: after the stored mark, or the stream's first message.
    let mut next = match appreg_readmodel::consumer_mark(read_db(read), &config.consumer).await? {
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
    tracing::info!(consumer = %config.consumer, next, "projector consuming");
    let mut refresh = tokio::time::interval(PARKED_REFRESH);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = refresh.tick() => {
                metrics.parked.set(appreg_readmodel::parked_count(read_db(read)).await? as f64);
                continue;
            }
            m = messages.next() => m,
        };
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
        // Events by log position (the relay's order), without duplicates; gaps filled first.
        let mut events: BTreeMap<LogPosition, StoredEvent> = BTreeMap::new();
        let mut last_sequence = 0u64;
        for m in &batch {
            let info = m.info().map_err(nats_error)?;
            let sequence = info.stream_sequence;
            if sequence > next {
                metrics.gaps.increment(1);
                tracing::warn!(from = next, to = sequence - 1, "projector: messages delivered to another (dead?) instance; reading them from the stream");
                fill(&mut stream, next, sequence, &mut events, metrics).await?;
            }
            add(
                m.headers.as_ref(),
                &m.payload,
                sequence,
                &mut events,
                metrics,
            );
            next = next.max(sequence + 1);
            last_sequence = last_sequence.max(sequence);
        }
        let events: Vec<StoredEvent> = events.into_values().collect();
        let mark = Mark {
            consumer: config.consumer.clone(),
            sequence: i64::try_from(last_sequence).unwrap_or(i64::MAX),
        };
        let span = batch_span(&events, last_sequence);
        apply(read, &events, &mark, config, metrics)
            .instrument(span)
            .await?;
        metrics.events.increment(events.len() as u64);
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

fn read_db(read: &ReadModel) -> &appreg_eventstore::Database {
    read.database()
}

/// The span of one batch: its size and end, and the `trace_id` of the requests its events come
/// from (one, or a list; with OTLP export, the span's parent or links).
fn batch_span(events: &[StoredEvent], last_sequence: u64) -> tracing::Span {
    let span = tracing::info_span!(
        "projector_batch",
        projection = appreg_readmodel::PROJECTION,
        events = events.len(),
        last_sequence,
        last_position = %events.last().map(|e| e.position).unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    appreg_telemetry::trace::follow_batch(
        &span,
        events.iter().filter_map(|e| {
            e.metadata
                .get("traceparent")
                .and_then(serde_json::Value::as_str)
        }),
    );
    span
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

/// Adds a message's event, or counts and skips a message a relay did not publish.
fn add(
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
    sequence: u64,
    events: &mut BTreeMap<LogPosition, StoredEvent>,
    metrics: &Metrics,
) {
    match decode(headers, payload) {
        Ok(e) => {
            events.insert(e.position, e);
        }
        Err(error) => {
            metrics.foreign.increment(1);
            tracing::error!(%error, sequence, "projector: skipping a message that is not an appreg event");
        }
    }
}

/// Reads the stream's messages `from..to` directly (they were delivered to an instance that
/// did not apply them).
async fn fill(
    stream: &mut Stream,
    from: u64,
    to: u64,
    events: &mut BTreeMap<LogPosition, StoredEvent>,
    metrics: &Metrics,
) -> Result<(), Interrupted> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    for sequence in from..to {
        match stream.get_raw_message(sequence).await {
            Ok(m) => add(Some(&m.headers), &m.payload, sequence, events, metrics),
            // Deleted or lost: the relay re-publishes lost events after the stream's end.
            Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => {}
            Err(e) => return Err(nats_error(e)),
        }
    }
    Ok(())
}

/// Applies a batch, retrying database failures until they pass (never skipping the batch).
async fn apply(
    read: &ReadModel,
    events: &[StoredEvent],
    mark: &Mark,
    config: &ProjectorConfig,
    metrics: &Metrics,
) -> Result<(), Interrupted> {
    let mut delay = config.retry_min;
    loop {
        match read.apply_marked(events, Some(mark)).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                metrics.errors.increment(1);
                tracing::error!(error = %e, "projector cannot apply a batch; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(config.retry_max);
            }
        }
    }
}
