//! From deliveries to receivers: one worker per endpoint, working from the endpoint's queue in
//! memory ([`Queue`]), so a slow or dead endpoint holds up only its own queue and a fresh
//! delivery costs no query. The ingest records deliveries and hands the new ones over
//! ([`Dispatcher::hand_over`]); attempts are recorded in batches by one writer task. The
//! database stays the record: when this instance becomes active, and whenever an endpoint's
//! queue was full, the queue is refilled from its `PENDING` rows in order; every `poll` the
//! due rows that no queue holds (an operator's retry, deliveries recorded by an ingest in
//! another instance, an attempt whose record was lost) are taken in.

use crate::endpoints::Endpoints;
use crate::queue::Queue;
use crate::{now_ms, NotifierConfig, ACTOR};
use appreg_commands::{Commands, Start};
use appreg_domain::webhook::{DisabledReason, Webhook, WebhookRegistry};
use appreg_domain::DomainError;
use appreg_eventstore::Database;
use appreg_notify::deliveries::{self, Attempt, Attempted, Delivery, Status, MAX_RESPONSE_BODY};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, Notify, RwLock, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most deliveries one endpoint's queue holds; beyond, they wait in the database.
const QUEUE_MAX: usize = 10_000;
/// Most due rows looked at per poll.
const POLL_LIMIT: i64 = 2_000;
/// Most attempts written per statement.
const RECORD_BATCH: usize = 1_000;

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct Worker {
    queue: Mutex<Queue>,
    wake: Notify,
}

/// The state of an active dispatcher.
struct Active {
    workers: HashMap<String, (Arc<Worker>, JoinHandle<()>)>,
    stop: CancellationToken,
    records: mpsc::UnboundedSender<Attempt>,
}

pub(crate) struct Dispatcher {
    pub db: Database,
    pub commands: Commands,
    pub endpoints: Arc<Endpoints>,
    pub client: reqwest::Client,
    pub config: NotifierConfig,
    pub in_flight: Arc<Semaphore>,
    /// Held shared by the ingest from recording deliveries until it handed them over, and
    /// exclusively by a refill from the database: a refill sees every delivery whose hand-over
    /// it may have missed.
    pub gate: RwLock<()>,
    active: Mutex<Option<Active>>,
    /// Deliveries with an attempt not yet written (by id: how many).
    recording: Mutex<HashMap<String, u32>>,
}

/// The outbound client: no redirects followed (a receiver cannot send a signed delivery
/// elsewhere), no proxy from the environment; without `allow_private`, names that resolve to a
/// non-public address are refused ([`appreg_outbound::public_only`]).
pub(crate) fn client(allow_private: bool) -> Result<reqwest::Client, reqwest::Error> {
    let builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent("appreg-notifier");
    if allow_private {
        builder.build()
    } else {
        appreg_outbound::public_only(builder).build()
    }
}

/// What one attempt's answer was.
enum Answer {
    /// The receiver answered (status, the first [`MAX_RESPONSE_BODY`] bytes of its body).
    Status(u16, String),
    /// No answer: refused, reset, timed out.
    None,
    /// The endpoint is gone, disabled, or its secret is missing: nothing was sent.
    NotSent,
    /// The endpoint's host is (or resolves to) a non-public address, which this deployment does
    /// not call (`outbound_allow_private = false`): nothing was sent.
    Refused,
}

/// How an attempt ended for its endpoint's queue.
struct Ended {
    stream: String,
    /// Attempt it again then; `None`: it is done.
    retry_at: Option<i64>,
    /// The endpoint answered 410 and is disabled.
    gone: bool,
}

impl Dispatcher {
    pub fn new(
        db: Database,
        commands: Commands,
        endpoints: Arc<Endpoints>,
        client: reqwest::Client,
        config: NotifierConfig,
    ) -> Self {
        Dispatcher {
            db,
            commands,
            endpoints,
            client,
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            gate: RwLock::new(()),
            active: Mutex::new(None),
            recording: Mutex::new(HashMap::new()),
        }
    }

    /// Hands deliveries just recorded to their endpoints' workers (nothing while this
    /// instance's dispatcher is not active: the active one polls them from the database).
    /// The caller holds [`Dispatcher::gate`] shared since before it recorded them.
    pub fn hand_over(self: &Arc<Self>, rows: Vec<Delivery>) {
        let mut active = locked(&self.active);
        let Some(active) = active.as_mut() else {
            return;
        };
        for d in rows {
            let worker = self.worker(active, &d.webhook_id);
            let mut queue = locked(&worker.queue);
            if queue.spilled {
                continue;
            }
            if queue.len() >= QUEUE_MAX {
                queue.spilled = true;
                continue;
            }
            queue.push(d);
            drop(queue);
            worker.wake.notify_one();
        }
    }

    /// The worker of endpoint `wid`, started if there is none.
    fn worker(self: &Arc<Self>, active: &mut Active, wid: &str) -> Arc<Worker> {
        if let Some((worker, _)) = active.workers.get(wid) {
            return worker.clone();
        }
        let worker = Arc::new(Worker {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
        });
        let task = tokio::spawn(self.clone().work(
            wid.to_string(),
            worker.clone(),
            active.records.clone(),
            active.stop.clone(),
        ));
        active
            .workers
            .insert(wid.to_string(), (worker.clone(), task));
        worker
    }

    /// Runs the dispatcher until `stop` fires: the endpoints with `PENDING` deliveries are
    /// refilled from the database, then fresh deliveries come from the ingest and every `poll`
    /// the due ones no queue holds are taken in.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let (records, written) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().write_attempts(written));
        {
            let _gate = self.gate.write().await;
            let pending = loop {
                match deliveries::pending_endpoints(&self.db).await {
                    Ok(pending) => break pending,
                    Err(error) => {
                        tracing::warn!(%error, "notifier: pending deliveries could not be read");
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(self.config.poll) => {}
                        }
                    }
                }
            };
            let mut active = Active {
                workers: HashMap::new(),
                stop: stop.child_token(),
                records,
            };
            for wid in pending {
                let worker = self.worker(&mut active, &wid);
                locked(&worker.queue).spilled = true;
                worker.wake.notify_one();
            }
            *locked(&self.active) = Some(active);
        }
        loop {
            if let Err(error) = self.poll().await {
                tracing::warn!(%error, "notifier: due deliveries could not be read");
            }
            self.gauges().await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
        let active = locked(&self.active).take();
        if let Some(active) = active {
            for (_, (_, task)) in active.workers {
                let _ = task.await;
            }
        }
        // Every worker's sender is gone: the writer writes what it has, then ends.
        let _ = recorder.await;
    }

    /// Takes in the due deliveries that no queue holds.
    async fn poll(self: &Arc<Self>) -> Result<(), sqlx::Error> {
        let spilled: Vec<String> = match locked(&self.active).as_ref() {
            Some(active) => active
                .workers
                .iter()
                .filter(|(_, (w, _))| locked(&w.queue).spilled)
                .map(|(wid, _)| wid.clone())
                .collect(),
            None => return Ok(()),
        };
        let due = deliveries::due_ids(&self.db, now_ms(), &spilled, POLL_LIMIT).await?;
        let mut unknown = Vec::new();
        {
            let active = locked(&self.active);
            let recording = locked(&self.recording);
            for d in due {
                if recording.contains_key(&d.id) {
                    continue;
                }
                let worker = active.as_ref().and_then(|a| a.workers.get(&d.webhook_id));
                match worker {
                    Some((w, _)) if locked(&w.queue).knows(&d.id) => {
                        // Held, perhaps waiting for a later retry than an operator asked for.
                        locked(&w.queue).hasten(&d.stream_id, &d.id, d.next_attempt_at);
                        w.wake.notify_one();
                    }
                    _ => unknown.push(d.id),
                }
            }
        }
        if unknown.is_empty() {
            return Ok(());
        }
        let rows = deliveries::pending_among(&self.db, &unknown).await?;
        let rows: Vec<Delivery> = {
            let recording = locked(&self.recording);
            rows.into_iter()
                .filter(|d| !recording.contains_key(&d.id))
                .collect()
        };
        self.hand_over(rows);
        Ok(())
    }

    async fn gauges(&self) {
        let busy = locked(&self.active).as_ref().map_or(0, |a| {
            a.workers
                .values()
                .filter(|(w, _)| locked(&w.queue).len() > 0)
                .count()
        });
        metrics::gauge!("appreg_notifier_busy_endpoints").set(busy as f64);
        if let Ok((depth, oldest)) = deliveries::backlog(&self.db).await {
            metrics::gauge!("appreg_notifier_queue_depth").set(depth as f64);
            let age = oldest.map_or(0, |at| (now_ms() - at).max(0));
            metrics::gauge!("appreg_notifier_oldest_undelivered_seconds").set(age as f64 / 1000.0);
        }
    }

    /// Writes attempts, as many per statement as have arrived meanwhile, until every sender is
    /// gone. A batch that cannot be written is retried a few times, then left: its deliveries
    /// stay `PENDING` and are attempted again (at least once).
    async fn write_attempts(self: Arc<Self>, mut attempts: mpsc::UnboundedReceiver<Attempt>) {
        while let Some(first) = attempts.recv().await {
            let mut batch = vec![first];
            while batch.len() < RECORD_BATCH {
                match attempts.try_recv() {
                    Ok(a) => batch.push(a),
                    Err(_) => break,
                }
            }
            let mut delay = Duration::from_millis(100);
            for tries in 1..=5 {
                match deliveries::record(&self.db, &batch).await {
                    Ok(()) => break,
                    Err(error) => {
                        tracing::warn!(%error, attempts = batch.len(), tries, "notifier: attempts could not be recorded");
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
            for a in &batch {
                self.recorded(&a.id);
            }
        }
    }

    /// An attempt of delivery `id` is written (or given up).
    fn recorded(&self, id: &str) {
        let mut recording = locked(&self.recording);
        if let Some(n) = recording.get_mut(id) {
            *n -= 1;
            if *n == 0 {
                recording.remove(id);
            }
        }
    }

    /// One endpoint's worker: attempts the due heads of its queue, at most
    /// `endpoint_concurrency` at once, until `stop` fires.
    async fn work(
        self: Arc<Self>,
        wid: String,
        worker: Arc<Worker>,
        records: mpsc::UnboundedSender<Attempt>,
        stop: CancellationToken,
    ) {
        let mut running = FuturesUnordered::new();
        let concurrency = self.config.endpoint_concurrency;
        while !stop.is_cancelled() {
            let refill = {
                let queue = locked(&worker.queue);
                queue.spilled && queue.len() <= QUEUE_MAX / 2
            };
            if refill {
                if let Err(error) = self.refill(&wid, &worker).await {
                    tracing::warn!(%error, webhook = %wid, "notifier: deliveries could not be read");
                }
            }
            let now = now_ms();
            let (due, next) = {
                let mut queue = locked(&worker.queue);
                let due = queue.take(now, concurrency.saturating_sub(running.len()));
                (due, queue.next_due())
            };
            for d in due {
                running.push(self.attempt(d, &records));
            }
            let pause = match next {
                Some(at) if running.len() < concurrency => {
                    Duration::from_millis(u64::try_from(at - now).unwrap_or(0).max(1))
                }
                _ => self.config.poll,
            };
            tokio::select! {
                () = stop.cancelled() => {}
                Some(ended) = running.next(), if !running.is_empty() => {
                    let mut queue = locked(&worker.queue);
                    if ended.gone {
                        queue.clear();
                    }
                    queue.finish(&ended.stream, ended.retry_at);
                }
                () = worker.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        // Attempts in flight are dropped: their deliveries are attempted again (at least once).
    }

    /// Refills a spilled queue from the endpoint's `PENDING` rows, oldest first; once they
    /// all fit, fresh deliveries are taken again.
    async fn refill(&self, wid: &str, worker: &Worker) -> Result<(), sqlx::Error> {
        let _gate = self.gate.write().await;
        let limit = QUEUE_MAX;
        let rows = deliveries::pending_of(&self.db, wid, limit as i64).await?;
        let mut complete = rows.len() < limit;
        let recording = locked(&self.recording);
        let mut queue = locked(&worker.queue);
        for d in rows {
            if recording.contains_key(&d.id) {
                continue;
            }
            if queue.len() >= QUEUE_MAX && !queue.knows(&d.id) {
                complete = false;
                break;
            }
            queue.push(d);
        }
        if complete {
            queue.spilled = false;
        }
        drop(queue);
        worker.wake.notify_one();
        Ok(())
    }

    /// One attempt of `d`, handed to the writer.
    async fn attempt(&self, d: Arc<Delivery>, records: &mpsc::UnboundedSender<Attempt>) -> Ended {
        let retry_soon = |d: &Delivery| Ended {
            stream: d.stream_id.clone(),
            retry_at: Some(now_ms() + backoff(&self.config, 0)),
            gone: false,
        };
        let Ok(_permit) = self.in_flight.acquire().await else {
            return retry_soon(&d);
        };
        let endpoint = match self.endpoints.enabled(&d.environment, &d.webhook_id).await {
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::warn!(%error, delivery = %d.id, "notifier: the endpoint could not be read");
                return retry_soon(&d);
            }
        };
        let answer = match &endpoint {
            Some(w) => self.send(w, &d).await,
            None => Answer::NotSent,
        };
        let now = now_ms();
        let (outcome, label) = self.judge(&d, answer, now);
        let retry_at = (outcome.status == Status::Pending).then_some(outcome.next_attempt_at);
        let attempt = Attempt {
            id: d.id.clone(),
            at: now,
            outcome,
        };
        metrics::counter!("appreg_notifier_deliveries_total", "outcome" => label).increment(1);
        let gone = label == "gone";
        if gone {
            // Written before the endpoint's other deliveries are ended, or its answer is lost.
            if let Err(error) = deliveries::record(&self.db, &[attempt]).await {
                tracing::warn!(%error, delivery = %d.id, "notifier: an attempt could not be recorded");
            }
            self.disable(&d).await;
        } else {
            *locked(&self.recording).entry(d.id.clone()).or_insert(0) += 1;
            if records.send(attempt).is_err() {
                self.recorded(&d.id);
                tracing::warn!(delivery = %d.id, "notifier: an attempt could not be recorded");
            }
        }
        Ended {
            stream: d.stream_id.clone(),
            retry_at,
            gone,
        }
    }

    /// POSTs `d` to `w`, signed.
    async fn send(&self, w: &Webhook, d: &Delivery) -> Answer {
        let secret = match self.endpoints.secret(&d.environment, &w.id).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return Answer::NotSent,
            Err(error) => {
                tracing::warn!(%error, webhook = %w.id, "notifier: the signing secret could not be opened");
                return Answer::None;
            }
        };
        let timestamp = chrono::Utc::now().timestamp();
        let Ok(signature) =
            appreg_notify::signature::sign(&secret, &d.id, timestamp, d.payload.as_bytes())
        else {
            return Answer::NotSent;
        };
        if !self.config.allow_private
            && url::Url::parse(w.url.as_str()).map_or(true, |u| appreg_outbound::refused_host(&u))
        {
            tracing::info!(webhook = %w.id, "notifier: the endpoint's host is not a public address; not sent");
            return Answer::Refused;
        }
        let request = self
            .client
            .post(w.url.as_str())
            .timeout(self.config.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &d.id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(d.payload.clone());
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) if appreg_outbound::is_non_public(&e) => return Answer::Refused,
            Err(_) => return Answer::None,
        };
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while body.len() <= MAX_RESPONSE_BODY {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                _ => break,
            }
        }
        Answer::Status(status, String::from_utf8_lossy(&body).into_owned())
    }

    /// What an answer makes of `d`, and the outcome's metric label.
    fn judge(&self, d: &Delivery, answer: Answer, now: i64) -> (Attempted, &'static str) {
        let done = |status, response_status, response_body| Attempted {
            status,
            next_attempt_at: now,
            response_status,
            response_body,
        };
        match answer {
            Answer::Status(s, body) if (200..300).contains(&s) => (
                done(Status::Delivered, Some(i32::from(s)), Some(body)),
                "delivered",
            ),
            Answer::Status(410, body) => (done(Status::Failed, Some(410), Some(body)), "gone"),
            Answer::NotSent => (done(Status::Failed, None, None), "not_sent"),
            Answer::Refused => (done(Status::Failed, None, None), "refused"),
            Answer::Status(s, body) => self.later(d, now, Some(i32::from(s)), Some(body)),
            Answer::None => self.later(d, now, None, None),
        }
    }

    /// A failed attempt: retried after the back-off, or FAILED once `retry_for` has passed.
    fn later(
        &self,
        d: &Delivery,
        now: i64,
        response_status: Option<i32>,
        response_body: Option<String>,
    ) -> (Attempted, &'static str) {
        let retry_for = i64::try_from(self.config.retry_for.as_millis()).unwrap_or(i64::MAX);
        if now.saturating_sub(d.created_at) >= retry_for {
            return (
                Attempted {
                    status: Status::Failed,
                    next_attempt_at: now,
                    response_status,
                    response_body,
                },
                "failed",
            );
        }
        let next = now.saturating_add(backoff(&self.config, d.attempt));
        (
            Attempted {
                status: Status::Pending,
                next_attempt_at: next,
                response_status,
                response_body,
            },
            "retry",
        )
    }

    /// The receiver answered 410: the endpoint is disabled through the command path, and what it
    /// had pending fails.
    async fn disable(&self, d: &Delivery) {
        let metadata = serde_json::json!({
            "environment": d.environment,
            "actor": ACTOR,
            "correlation_id": d.id,
            "causation_id": d.event_id,
            "at": appreg_commands::now(),
        });
        let disabled = self
            .commands
            .execute::<WebhookRegistry, DomainError, _>(
                &WebhookRegistry::stream_id(&d.environment),
                Start::Current,
                &metadata,
                |r| r.disable(&d.webhook_id, DisabledReason::Gone),
            )
            .await;
        self.endpoints.forget(&d.environment);
        if let Err(error) = disabled {
            tracing::warn!(%error, webhook = %d.webhook_id, "notifier: an endpoint that answered 410 could not be disabled");
            return;
        }
        if let Err(error) = deliveries::fail_endpoint(&self.db, &d.webhook_id, now_ms()).await {
            tracing::warn!(%error, webhook = %d.webhook_id, "notifier: the pending deliveries of a gone endpoint could not be ended");
        }
    }
}

/// The pause after failed attempt number `attempt + 1`: `retry_first` doubled per earlier
/// attempt, at most `retry_max`, ±20%.
pub(crate) fn backoff(config: &NotifierConfig, attempt: i32) -> i64 {
    let first = config.retry_first.as_millis() as f64;
    let max = config.retry_max.as_millis() as f64;
    let exp = attempt.clamp(0, 30);
    let base = (first * 2f64.powi(exp)).min(max);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    (base * jitter) as i64
}
