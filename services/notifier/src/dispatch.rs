//! From deliveries to receivers: one worker per endpoint with due deliveries (so a slow or dead
//! endpoint holds up only its own queue), each attempt signed, bounded in time and recorded.

use crate::{now_ms, NotifierConfig, ACTOR};
use appreg_commands::{Commands, Start};
use appreg_domain::webhook::{DisabledReason, Webhook, WebhookRegistry};
use appreg_domain::DomainError;
use appreg_eventstore::Database;
use appreg_notify::deliveries::{self, Attempted, Delivery, Status, MAX_RESPONSE_BODY};
use appreg_secrets::SecretStore;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most endpoints looked at per round.
const ENDPOINTS_PER_ROUND: i64 = 10_000;

pub(crate) struct Dispatcher {
    pub db: Database,
    pub commands: Commands,
    pub vault: SecretStore,
    pub client: reqwest::Client,
    pub config: NotifierConfig,
    pub wake: Arc<Notify>,
    pub in_flight: Arc<Semaphore>,
}

/// The outbound client: no redirects followed (a receiver cannot send a signed delivery
/// elsewhere), no proxy from the environment.
pub(crate) fn client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent("appreg-notifier")
        .build()
}

/// What one attempt's answer was.
enum Answer {
    /// The receiver answered (status, the first [`MAX_RESPONSE_BODY`] bytes of its body).
    Status(u16, String),
    /// No answer: refused, reset, timed out.
    None,
    /// The endpoint is gone, disabled, or its secret is missing: nothing was sent.
    NotSent,
}

impl Dispatcher {
    /// Runs the dispatcher until `stop` fires: every `poll` (or when woken), a worker for each
    /// endpoint with due deliveries that has none yet.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            workers.retain(|_, w| !w.is_finished());
            match deliveries::due_endpoints(&self.db, now_ms(), ENDPOINTS_PER_ROUND).await {
                Ok(endpoints) => {
                    for wid in endpoints {
                        if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(wid)
                        {
                            let me = self.clone();
                            let (id, stop) = (slot.key().clone(), stop.clone());
                            slot.insert(tokio::spawn(me.endpoint(id, stop)));
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "notifier: due deliveries could not be read"),
            }
            self.gauges(workers.len()).await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll) => {}
            }
        }
        for (_, worker) in workers {
            let _ = worker.await;
        }
    }

    async fn gauges(&self, endpoints: usize) {
        metrics::gauge!("appreg_notifier_busy_endpoints").set(endpoints as f64);
        if let Ok((depth, oldest)) = deliveries::backlog(&self.db).await {
            metrics::gauge!("appreg_notifier_queue_depth").set(depth as f64);
            let age = oldest.map_or(0, |at| (now_ms() - at).max(0));
            metrics::gauge!("appreg_notifier_oldest_undelivered_seconds").set(age as f64 / 1000.0);
        }
    }

    /// One endpoint's worker: attempts its due deliveries (the head of each application's
    /// queue, at most `endpoint_concurrency` at once) until none is due.
    async fn endpoint(self: Arc<Self>, wid: String, stop: CancellationToken) {
        let limit = i64::try_from(self.config.endpoint_concurrency).unwrap_or(1);
        while !stop.is_cancelled() {
            let due = match deliveries::due(&self.db, &wid, now_ms(), limit).await {
                Ok(due) if !due.is_empty() => due,
                Ok(_) => return,
                Err(error) => {
                    tracing::warn!(%error, webhook = %wid, "notifier: deliveries could not be read");
                    return;
                }
            };
            futures::future::join_all(due.iter().map(|d| self.attempt(d))).await;
        }
    }

    /// One attempt of `d`, recorded.
    async fn attempt(&self, d: &Delivery) {
        let Ok(_permit) = self.in_flight.acquire().await else {
            return;
        };
        let endpoint = match self.endpoint_of(d).await {
            Ok(endpoint) => endpoint,
            Err(error) => {
                tracing::warn!(%error, delivery = %d.id, "notifier: the endpoint could not be read");
                return;
            }
        };
        let answer = match &endpoint {
            Some(w) => self.send(w, d).await,
            None => Answer::NotSent,
        };
        let now = now_ms();
        let (attempted, outcome) = self.judge(d, answer, now);
        if let Err(error) = deliveries::record(&self.db, &d.id, &attempted, now).await {
            tracing::warn!(%error, delivery = %d.id, "notifier: an attempt could not be recorded");
            return;
        }
        metrics::counter!("appreg_notifier_deliveries_total", "outcome" => outcome).increment(1);
        if outcome == "gone" {
            self.disable(d).await;
        }
    }

    /// The endpoint of `d` if it still exists and is enabled.
    async fn endpoint_of(
        &self,
        d: &Delivery,
    ) -> Result<Option<Webhook>, appreg_commands::LoadError> {
        let registry = self
            .commands
            .load::<WebhookRegistry>(&WebhookRegistry::stream_id(&d.environment))
            .await?
            .state;
        Ok(registry
            .webhooks
            .get(&d.webhook_id)
            .filter(|w| w.enabled)
            .cloned())
    }

    /// POSTs `d` to `w`, signed.
    async fn send(&self, w: &Webhook, d: &Delivery) -> Answer {
        let (owner, kind) = appreg_secrets::store::webhook_secret_slot(&w.id);
        let secret = match self.vault.get(&owner, kind).await {
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
