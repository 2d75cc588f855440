//! A durable JetStream pull consumer feeding a [`Handler`]: what `appreg notifier` follows in
//! production, instead of tailing the event log on its own (the log follower,
//! [`crate::follower`], stays for SQLite and `appreg dev`).
//!
//! [`consume`] keeps one instance active per database ([`lead`](crate::lock::lead)), so the
//! handler sees the events in log order, one at a time. As in the projector, a message is a
//! signal, not a source: for each batch of messages the log is read from the follower's
//! checkpoint up to the batch's last claimed position (`Appreg-Position`), every message
//! confirmed against it (an event at that position with its `Nats-Msg-Id`; others are logged,
//! counted and skipped, their bodies never read), and the handler gets the store's events, a
//! page at a time ([`Handler::handle_all`]). So
//! messages that went to an instance that died before handling them are covered by the next
//! batch, and a redelivered message (at or below the checkpoint) changes nothing. A batch is
//! acknowledged (ack-all on its last message) once its events are handled and the checkpoint
//! saved. When no message came for [`ConsumerConfig::catch_up_after`] while the log moved past
//! the checkpoint, the log is handled without one (the messages are signals, not the source).
//! [`ensure`] creates or updates a consumer (`appreg nats setup`, the projector).

use crate::envelope::{self, MSG_ID_HEADER};
use crate::follower::{Checkpoint, Handler, Outcome};
use crate::stream::{changed_settings, Ensured};
use appreg_eventstore::{Database, EventStore, LogPosition, StoredEvent};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use std::collections::BTreeMap;
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
    /// No message for this long while the log moved past the checkpoint (a relay down for
    /// long, messages a dead instance held until `ack_wait`): the log is handled without one
    /// (checked every [`CATCH_UP_CHECK`]).
    pub catch_up_after: Duration,
}

/// How often a silent consumer looks whether the log moved on.
pub const CATCH_UP_CHECK: Duration = Duration::from_secs(2);

/// A durable consumer's `max_ack_pending` for instances pulling `batch` messages at a time:
/// room for the messages of many sessions, not just the live ones.
///
/// A session that ends (its database connection dropped, the process killed) leaves the
/// messages it pulled and did not acknowledge pending until `ack_wait`, and JetStream delivers
/// nothing more to anyone while the pending messages are at the limit. Each session holds up to
/// two pull requests of `batch` (the client asks for more before a batch is used up), so with a
/// limit of four batches two instances that each lost three sessions after a PostgreSQL restart
/// froze the consumer for `ack_wait` (30 s), until the silence catch-up folded the log. Forty
/// batches leave room for about ten ended sessions within one `ack_wait`; the first message a
/// live instance acknowledges (ack-all) then clears every earlier one, and the log, not the
/// messages, is what the handlers read, so the redeliveries that follow change nothing.
pub fn max_ack_pending(batch: usize) -> i64 {
    i64::try_from(batch.saturating_mul(40)).unwrap_or(i64::MAX)
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
        max_ack_pending: max_ack_pending(config.batch),
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

/// How long a claim beyond the log's visible head is looked for, and how often.
const HORIZON_WAIT: Duration = Duration::from_secs(2);
const HORIZON_POLL: Duration = Duration::from_millis(10);

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
        // Everything up to the checkpoint is handled (another instance may have moved it).
        let mut cursor = self.config.checkpoint.load(&self.db).await?;
        let stream = self.js.get_stream(&self.config.stream).await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.config.durable, pull_config(&self.config))
            .await?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.config.batch)
            // Short pull requests: a request of an instance that died stops taking messages
            // (which then wait `ack_wait` to be redelivered) within seconds.
            .heartbeat(Duration::from_secs(2))
            .expires(Duration::from_secs(5))
            .messages()
            .await?;
        let mut check = tokio::time::interval(CATCH_UP_CHECK);
        let mut last_message = tokio::time::Instant::now();
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                _ = check.tick() => {
                    if last_message.elapsed() >= self.config.catch_up_after {
                        // A failure is tried again at the next check: ending the session
                        // would strand the messages already pulled (see `max_ack_pending`).
                        match self.catch_up(cursor, stop).await {
                            Ok(Some(handled)) => cursor = handled,
                            Ok(None) => return Ok(()),
                            Err(error) => {
                                let label = self.config.label;
                                metrics::counter!("appreg_worker_consumer_errors_total", "process" => label)
                                    .increment(1);
                                tracing::warn!(%error, consumer = %self.config.durable, "{label}: catching up without a message failed; trying again at the next check");
                            }
                        }
                    }
                    continue;
                }
                m = messages.next() => m,
            };
            last_message = tokio::time::Instant::now();
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
            match self.handle_batch(&batch, cursor, stop).await? {
                Some(handled) => cursor = handled,
                None => return Ok(()),
            }
            if let Some(last) = batch.last() {
                // Ack-all: every message up to this one. A lost ack means a redelivery, which
                // the handler makes harmless.
                last.ack().await?;
            }
        }
    }

    /// Reads the log from `cursor` up to the batch's last claimed position, confirms the
    /// batch's messages against it, handles its events in log order and saves the checkpoint;
    /// the position handled up to, or `None` when `stop` fired first.
    async fn handle_batch(
        &self,
        batch: &[async_nats::jetstream::Message],
        mut cursor: LogPosition,
        stop: &CancellationToken,
    ) -> Result<Option<LogPosition>, Failure> {
        let label = self.config.label;
        // Claims above the cursor, by position; those at or below it are redeliveries.
        let mut claims: BTreeMap<LogPosition, Vec<(String, String)>> = BTreeMap::new();
        for m in batch {
            let headers = m.headers.as_ref();
            let id = headers
                .and_then(|h| h.get(MSG_ID_HEADER))
                .map(|v| v.as_str().to_string());
            match envelope::position(headers).zip(id) {
                Some((position, id)) if position > cursor => claims
                    .entry(position)
                    .or_default()
                    .push((id, m.subject.to_string())),
                Some(_) => {}
                None => foreign(label, m.subject.as_str(), "not an appreg event"),
            }
        }
        let start = cursor;
        let page_size = i64::try_from(self.config.batch).unwrap_or(500);
        // The log is read below its visibility horizon, which a transaction still running in
        // the database may hold a moment behind the relay's read: a claim beyond what the log
        // shows is looked for again, for up to `HORIZON_WAIT`, before it counts as forged.
        let mut waited = Duration::ZERO;
        while let Some(&target) = claims.keys().next_back() {
            let mut page = self.store.read_log(cursor, page_size).await?;
            let end_of_log = page.len() < self.config.batch;
            page.retain(|e| e.position <= target);
            let Some(last) = page.last().map(|e| e.position) else {
                if waited < HORIZON_WAIT {
                    tokio::time::sleep(HORIZON_POLL).await;
                    waited += HORIZON_POLL;
                    continue;
                }
                break;
            };
            for e in &page {
                for (id, subject) in claims.remove(&e.position).unwrap_or_default() {
                    if id != e.event_id.to_string() {
                        foreign(label, &subject, "not confirmed by the event store");
                    }
                }
            }
            // Claims between the page's events are not in the log.
            let passed: Vec<LogPosition> = claims.range(..=last).map(|(p, _)| *p).collect();
            for p in passed {
                for (_, subject) in claims.remove(&p).unwrap_or_default() {
                    foreign(label, &subject, "not confirmed by the event store");
                }
            }
            if !self.handle_page(page, stop).await {
                self.save(cursor, start).await;
                return Ok(None);
            }
            cursor = last;
            if end_of_log && claims.keys().next_back().is_none_or(|t| *t <= cursor) {
                break;
            }
        }
        // Beyond the log's head: no relay published these.
        for (_, subject) in claims.into_values().flatten() {
            foreign(label, &subject, "not confirmed by the event store");
        }
        self.save(cursor, start).await;
        Ok(Some(cursor))
    }

    /// Handles the log past `cursor` up to its visible head without a message (see
    /// [`ConsumerConfig::catch_up_after`]), page by page, saving the checkpoint; the position
    /// handled up to, or `None` when `stop` fired first. The messages of these events, when they
    /// come, are at or below the checkpoint: redeliveries, which change nothing.
    async fn catch_up(
        &self,
        mut cursor: LogPosition,
        stop: &CancellationToken,
    ) -> Result<Option<LogPosition>, Failure> {
        let (start, label) = (cursor, self.config.label);
        let page_size = i64::try_from(self.config.batch).unwrap_or(500);
        loop {
            let page = self.store.read_log(cursor, page_size).await?;
            let Some(last) = page.last().map(|e| e.position) else {
                break;
            };
            let full = page.len() >= self.config.batch;
            if !self.handle_page(page, stop).await {
                self.save(cursor, start).await;
                return Ok(None);
            }
            cursor = last;
            if !full {
                break;
            }
        }
        if cursor > start {
            metrics::counter!("appreg_worker_consumer_catch_ups_total", "process" => label)
                .increment(1);
            tracing::warn!(consumer = %self.config.durable, from = %start, to = %cursor, "{label}: no message for a while though the log moved on; handled the log directly");
        }
        self.save(cursor, start).await;
        Ok(Some(cursor))
    }

    /// Shows the handler a page of the log and hands it the events it wants: true when they are
    /// handled, false when `stop` fired first.
    async fn handle_page(&self, page: Vec<StoredEvent>, stop: &CancellationToken) -> bool {
        for e in &page {
            self.handler.observe(e);
        }
        let wanted: Vec<StoredEvent> = page.into_iter().filter(|e| self.handler.wants(e)).collect();
        self.handled(&wanted, stop).await
    }

    /// Moves the checkpoint to `cursor` if it moved from `start`.
    async fn save(&self, cursor: LogPosition, start: LogPosition) {
        if cursor > start {
            if let Err(error) = self.config.checkpoint.save(&self.db, cursor).await {
                tracing::warn!(%error, "{}: cannot save its checkpoint", self.config.label);
            }
        }
    }

    /// Handles `events` until they are done (true) or `stop` fires (false), retrying failures.
    async fn handled(&self, events: &[StoredEvent], stop: &CancellationToken) -> bool {
        if events.is_empty() {
            return true;
        }
        let mut delay = self.config.first_retry;
        loop {
            match self.handler.handle_all(events, stop).await {
                Ok(Outcome::Done) => return true,
                Ok(Outcome::Interrupted) => return false,
                Err(error) => {
                    tracing::warn!(%error, events = events.len(), first_event_id = %events[0].event_id, ?delay, "{}: events not handled; retrying", self.config.label);
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
