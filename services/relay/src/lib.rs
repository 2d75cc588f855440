//! The relay: publishes every event of the log to NATS JetStream, exactly once and in log order.
//!
//! The event log in PostgreSQL is the outbox. The relay tails it in the commit-safe order of
//! [`EventStore::read_log`] and publishes each event on its subject (see
//! [`appreg_worker::subject`]) with the envelope body and headers of [`appreg_worker::envelope`].
//! It keeps no checkpoint of its own: the stream's last message says which log position was
//! published last ([`resume`], which trusts a message's position only once the event store
//! confirms it), so after a crash, a
//! NATS outage, or a NATS server that lost acknowledged messages, it re-publishes from PostgreSQL
//! and consumers see neither a gap nor a duplicate.
//!
//! # Exactly once, in order
//! - Events are published in log order, up to [`RelayConfig::max_in_flight`] at a time, and their
//!   acks awaited in order. The published position only moves past an event whose ack came
//!   back; any error (a missing ack, a NATS error, a reconnect) stops the batch, and the relay
//!   resumes from the stream's actual last message.
//! - Every message carries `Nats-Expected-Last-Sequence`: JetStream stores it only directly after
//!   the message the relay believes is last, so a late message of an interrupted batch, or of a
//!   relay that lost its lock without knowing yet, can never land out of place. The ack's
//!   sequence must be exactly the expected one, or the relay resumes.
//! - Every message carries `Nats-Msg-Id` = event id: a publish retried after its ack was lost is
//!   de-duplicated by JetStream (within the stream's duplicate window, ≥ 2 minutes).
//!
//! # One active relay
//! A PostgreSQL session advisory lock ([`appreg_worker::lock`]) held on a dedicated connection, per
//! stream; a standby tries
//! every second. Without PostgreSQL (the embedded SQLite mode) there is one process and no lock.
//!
//! This crate must never write to the event store, never skip an event it could not publish,
//! and never advance past an event whose ack it did not receive.

mod lag;
pub mod resume;
pub mod service;

pub use lag::{measure as measure_lag, Lag};

use appreg_eventstore::{EventStore, LogPosition, LogTailer, StoreError, StoredEvent};
use appreg_worker::stream::DefinitionError;
use appreg_worker::{envelope, lock, stream, subject};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::ContextBuilder;
use sqlx::postgres::PgPool;
use std::future::IntoFuture;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Publishes awaiting their ack, abandoned ones included (the client's bound).
const MAX_ACKS_PENDING: usize = 8192;

/// How the relay runs. [`RelayConfig::default`] is the production setting.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The JetStream stream (`APPREG_EVENTS`).
    pub stream: String,
    /// First token(s) of every subject (`appreg`).
    pub subject_prefix: String,
    /// Messages published before their acks are awaited (also the read batch size).
    pub max_in_flight: usize,
    /// Longest wait for a JetStream API answer or a publish ack.
    pub ack_timeout: Duration,
    /// Longest pause between two reads of the log when no wake-up comes.
    pub poll_interval: Duration,
    /// How often a standby tries the lock, and the holder checks its lock connection.
    pub lock_retry_interval: Duration,
    /// First and longest pause before resuming after an error (doubling in between).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// How often the lag gauges are refreshed.
    pub lag_interval: Duration,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            stream: "APPREG_EVENTS".into(),
            subject_prefix: "appreg".into(),
            max_in_flight: 256,
            ack_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(200),
            lock_retry_interval: Duration::from_secs(1),
            retry_min: Duration::from_millis(100),
            retry_max: Duration::from_secs(2),
            lag_interval: Duration::from_secs(1),
        }
    }
}

impl RelayConfig {
    /// The relay settings of the shared configuration (`nats_stream`, `nats_subject_prefix`,
    /// `[relay]`).
    pub fn from_config(config: &appreg_config::Config) -> Self {
        RelayConfig {
            stream: config.nats_stream.clone(),
            subject_prefix: config.nats_subject_prefix.clone(),
            max_in_flight: config.relay.max_in_flight.max(1),
            ack_timeout: Duration::from_millis(config.relay.ack_timeout_ms.max(1)),
            ..RelayConfig::default()
        }
    }

    /// The JetStream stream this configuration publishes to: the shipped definition
    /// ([`appreg_worker::stream::DEFINITION`]) under the configured name and subjects.
    pub fn stream_definition(&self) -> Result<async_nats::jetstream::stream::Config, RelayError> {
        Ok(stream::definition(&self.stream, &self.subject_prefix)?)
    }

    fn validate(&self) -> Result<(), RelayError> {
        let bad_name = self.stream.is_empty()
            || self.stream.len() > 255
            || self.stream.bytes().any(|b| {
                !matches!(b, b'!'..=b'~') || matches!(b, b'.' | b'*' | b'>' | b'/' | b'\\')
            });
        if bad_name {
            return Err(RelayError::Config(format!(
                "invalid stream name {:?}",
                self.stream
            )));
        }
        if !subject::is_valid_prefix(&self.subject_prefix) {
            return Err(RelayError::Config(format!(
                "invalid subject prefix {:?}",
                self.subject_prefix
            )));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1024 {
            return Err(RelayError::Config("max_in_flight must be 1..=1024".into()));
        }
        Ok(())
    }
}

/// Why the relay could not run at all (everything else is retried).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("relay configuration: {0}")]
    Config(String),
    #[error("relay configuration: {0}")]
    Definition(#[from] DefinitionError),
}

/// Why publishing stopped; the relay resumes from the stream after a pause.
#[derive(Debug, thiserror::Error)]
enum Interrupted {
    #[error("NATS: {0}")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("event store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot encode event {0}: {1}")]
    Encode(uuid::Uuid, serde_json::Error),
    #[error("publish of event {event_id} at {position} failed: {reason}")]
    Publish {
        event_id: uuid::Uuid,
        position: LogPosition,
        reason: String,
    },
    #[error("event {event_id} stored as {stream}/{actual}, expected {expected_stream}/{expected}")]
    UnexpectedAck {
        event_id: uuid::Uuid,
        stream: String,
        actual: u64,
        expected_stream: String,
        expected: u64,
    },
    #[error("the NATS connection was re-established")]
    Reconnected,
    #[error("cannot find where to resume: {0}")]
    Resume(#[from] resume::ResumeError),
}

fn nats_error(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Interrupted {
    Interrupted::Nats(error.into())
}

/// Runs the relay until `shutdown` fires: waits for the lock (when `pg_pool` is given), then
/// publishes. Returns an error only for an unusable configuration; NATS and PostgreSQL failures
/// are logged, counted and retried.
///
/// `pg_pool` is the PostgreSQL pool behind `store` (the lock and the lag gauges use it); `None`
/// for SQLite, where a single process needs no lock.
pub async fn run(
    config: RelayConfig,
    store: Arc<dyn EventStore>,
    pg_pool: Option<PgPool>,
    nats: async_nats::Client,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    config.validate()?;
    let relay = Relay {
        definition: config.stream_definition()?,
        // Acks of an interrupted batch are abandoned but keep their in-flight permit until
        // they time out: leave room for many batches, and fail rather than wait for a permit.
        js: ContextBuilder::new()
            .timeout(config.ack_timeout)
            .ack_timeout(config.ack_timeout)
            .max_ack_inflight(MAX_ACKS_PENDING)
            .backpressure_on_inflight(false)
            .build(nats.clone()),
        metrics: Metrics::new(&config.stream),
        config,
        store,
        pg_pool,
        nats,
    };
    let relay = &relay;
    lock::lead(
        "relay",
        relay.pg_pool.as_ref(),
        &relay.config.stream,
        relay.config.lock_retry_interval,
        &shutdown,
        |stop| async move {
            tracing::info!(stream = %relay.config.stream, "relay: active");
            relay.metrics.active.set(1.0);
            relay.active(&stop).await;
            relay.metrics.active.set(0.0);
        },
    )
    .await;
    Ok(())
}

struct Metrics {
    published: metrics::Counter,
    duplicates: metrics::Counter,
    errors: metrics::Counter,
    resumes: metrics::Counter,
    untrusted: metrics::Counter,
    active: metrics::Gauge,
}

impl Metrics {
    fn new(stream: &str) -> Self {
        let s = stream.to_string();
        Metrics {
            published: metrics::counter!("appreg_relay_published_total", "stream" => s.clone()),
            duplicates: metrics::counter!("appreg_relay_duplicates_total", "stream" => s.clone()),
            errors: metrics::counter!("appreg_relay_publish_errors_total", "stream" => s.clone()),
            resumes: metrics::counter!("appreg_relay_resumes_total", "stream" => s.clone()),
            untrusted: metrics::counter!("appreg_relay_untrusted_messages_total", "stream" => s.clone()),
            active: metrics::gauge!("appreg_relay_active", "stream" => s),
        }
    }
}

struct Relay {
    config: RelayConfig,
    definition: async_nats::jetstream::stream::Config,
    store: Arc<dyn EventStore>,
    pg_pool: Option<PgPool>,
    nats: async_nats::Client,
    js: async_nats::jetstream::Context,
    metrics: Metrics,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Relay {
    /// Publishes until `stop` fires, resuming after every interruption.
    async fn active(&self, stop: &CancellationToken) {
        let (published, published_rx) = watch::channel(LogPosition::START);
        let _lag = AbortOnDrop(tokio::spawn(lag::monitor(
            self.store.clone(),
            self.pg_pool.clone(),
            published_rx,
            self.config.stream.clone(),
            self.config.lag_interval,
        )));
        let mut delay = self.config.retry_min;
        let mut failures = 0u64;
        while !stop.is_cancelled() {
            let mut progressed = false;
            match self.session(stop, &published, &mut progressed).await {
                Ok(()) => return,
                Err(error) => {
                    self.metrics.errors.increment(1);
                    if progressed {
                        delay = self.config.retry_min;
                        failures = 0;
                    }
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%error, failures, retry_in = ?delay, "relay: publishing interrupted; resuming from the stream");
                    } else {
                        tracing::debug!(%error, failures, "relay: publishing interrupted");
                    }
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(self.config.retry_max);
                }
            }
        }
    }

    /// One publishing session: make sure of the stream, find where to resume, then follow the
    /// log. Returns `Ok` only when `stop` fires.
    #[tracing::instrument(skip_all, fields(stream = %self.config.stream))]
    async fn session(
        &self,
        stop: &CancellationToken,
        published: &watch::Sender<LogPosition>,
        progressed: &mut bool,
    ) -> Result<(), Interrupted> {
        let mut stream = stream::ensure(&self.js, &self.definition)
            .await
            .map_err(nats_error)?;
        // Connected now. A reconnect that slips in before this read goes unnoticed here, but
        // not by the stream: the next publish would fail on its expected last sequence.
        let connects = self.nats.statistics().connects.load(Ordering::Relaxed);
        let resume = resume::resume(
            &mut stream,
            self.store.as_ref(),
            &self.config.subject_prefix,
        )
        .await?;
        self.metrics.resumes.increment(1);
        self.metrics.untrusted.increment(resume.untrusted);
        tracing::info!(
            position = %resume.position,
            last_sequence = resume.last_sequence,
            "relay: publishing after the stream's last message"
        );
        published.send_replace(resume.position);
        let mut tailer = LogTailer::new(
            self.store.clone(),
            resume.position,
            i64::try_from(self.config.max_in_flight).unwrap_or(256),
        )
        .with_poll_interval(self.config.poll_interval);
        let mut last_sequence = resume.last_sequence;
        loop {
            let batch = tokio::select! {
                biased;
                _ = stop.cancelled() => return Ok(()),
                () = reconnected(&self.nats, connects) => return Err(Interrupted::Reconnected),
                batch = tailer.next_batch() => batch?,
            };
            last_sequence = self.publish(&batch, last_sequence, published).await?;
            *progressed = true;
        }
    }

    /// Publishes `batch` after stream sequence `last_sequence` and waits for every ack, in
    /// order. Returns the new last sequence.
    #[tracing::instrument(skip_all, fields(events = batch.len(), after = last_sequence))]
    async fn publish(
        &self,
        batch: &[StoredEvent],
        last_sequence: u64,
        published: &watch::Sender<LogPosition>,
    ) -> Result<u64, Interrupted> {
        let failed = |event: &StoredEvent, reason: String| Interrupted::Publish {
            event_id: event.event_id,
            position: event.position,
            reason,
        };
        let mut acks = Vec::with_capacity(batch.len());
        // Each message must directly follow the one before it in the stream.
        for (expected, event) in (last_sequence..).zip(batch) {
            let body = envelope::body(event).map_err(|e| Interrupted::Encode(event.event_id, e))?;
            let message = PublishMessage::build()
                .payload(body)
                .headers(envelope::headers(event))
                .expected_last_sequence(expected);
            let ack = self
                .js
                .send_publish(
                    envelope::subject(&self.config.subject_prefix, event),
                    message,
                )
                .await
                .map_err(|e| failed(event, e.to_string()))?;
            acks.push(ack);
        }
        // Every ack of the batch is due within the ack timeout of the last publish.
        let deadline = tokio::time::Instant::now() + self.config.ack_timeout;
        let mut sequence = last_sequence;
        for (event, ack) in batch.iter().zip(acks) {
            let ack = tokio::time::timeout_at(deadline, ack.into_future())
                .await
                .map_err(|_| failed(event, "no ack within the ack timeout".into()))?
                .map_err(|e| failed(event, e.to_string()))?;
            sequence += 1;
            if ack.sequence != sequence || ack.stream != self.config.stream {
                return Err(Interrupted::UnexpectedAck {
                    event_id: event.event_id,
                    stream: ack.stream,
                    actual: ack.sequence,
                    expected_stream: self.config.stream.clone(),
                    expected: sequence,
                });
            }
            if ack.duplicate {
                self.metrics.duplicates.increment(1);
            }
            self.metrics.published.increment(1);
            published.send_replace(event.position);
        }
        tracing::debug!(last_sequence = sequence, "relay: batch acknowledged");
        Ok(sequence)
    }
}

/// Resolves once the NATS client has connected again since `connects` was read: the server may
/// have restarted and lost messages, so the relay resumes from the stream.
async fn reconnected(nats: &async_nats::Client, connects: u64) {
    let statistics = nats.statistics();
    while statistics.connects.load(Ordering::Relaxed) == connects {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_validated() {
        assert!(RelayConfig::default().validate().is_ok());
        for stream in ["", "A.B", "A B", "A*", "A>", "A/B"] {
            let c = RelayConfig {
                stream: stream.into(),
                ..RelayConfig::default()
            };
            assert!(c.validate().is_err(), "{stream:?}");
        }
        for prefix in ["", "a.", "a.*", "a b"] {
            let c = RelayConfig {
                subject_prefix: prefix.into(),
                ..RelayConfig::default()
            };
            assert!(c.validate().is_err(), "{prefix:?}");
        }
        let c = RelayConfig {
            max_in_flight: 0,
            ..RelayConfig::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn shared_configuration_names_the_stream_and_prefix() {
        let c = RelayConfig::from_config(&appreg_config::Config::defaults());
        assert_eq!(c.stream, "APPREG_EVENTS");
        assert_eq!(c.subject_prefix, "appreg");
    }
}
