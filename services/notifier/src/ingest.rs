//! From the log to deliveries: a follower of the event log that records, for each event, one
//! delivery per endpoint that should receive it. Idempotent (the delivery's id is derived from
//! endpoint and event), so the follower's replay from its checkpoint after a crash is harmless.

use crate::dispatch::Dispatcher;
use crate::endpoints::Endpoints;
use appreg_commands::{ApplicationState, Commands, LoadError};
use appreg_domain::permissions::{role_may_read, Role};
use appreg_domain::webhook::{Webhook, WebhookRegistry};
use appreg_eventstore::{Database, StoredEvent};
use appreg_notify::deliveries::{self, NewDelivery};
use appreg_notify::signature::webhook_id;
use appreg_worker::follower::{Handler, Outcome};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why an event's deliveries could not be recorded now (retried by the follower).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("loading the endpoints or the application: {0}")]
    Load(#[source] LoadError),
    #[error("recording the deliveries: {0}")]
    Database(#[from] sqlx::Error),
    #[error("encoding the envelope: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("looking up whether a user is erased: {0}")]
    Personal(#[from] appreg_secrets::PersonalError),
}

/// The follower's handler.
#[derive(Clone)]
pub(crate) struct Ingest {
    pub commands: Commands,
    pub db: Database,
    /// Users' data keys: whether a personal field's subject is erased.
    pub keys: appreg_secrets::PersonalKeys,
    /// The endpoints in memory (forgotten when their stream changes).
    pub endpoints: Arc<Endpoints>,
    /// Where new deliveries are handed over.
    pub dispatcher: Arc<Dispatcher>,
    /// With an SMTP server: the days before a renewed key's end its `API_KEY_EXPIRING` is
    /// sent, and the mailer to wake.
    pub mail: Option<(i64, Arc<Notify>)>,
}

/// Whether endpoint `w` receives `e`, given the roles of `e`'s application's members (`None`:
/// not an application event).
fn receives(w: &Webhook, e: &StoredEvent, application: Option<&str>, roles: &[Role]) -> bool {
    if !w.wants(&e.event_type) || w.created_at.is_some_and(|at| e.recorded_at < at) {
        return false;
    }
    match &w.application_id {
        None => true,
        Some(id) => {
            application == Some(id.as_str())
                && roles.iter().all(|r| role_may_read(*r, &e.event_type))
        }
    }
}

impl Ingest {
    /// The deliveries `e` calls for.
    async fn deliveries_of(&self, e: &StoredEvent) -> Result<Vec<NewDelivery>, IngestError> {
        let env = appreg_worker::envelope::environment(e);
        let registry = self
            .endpoints
            .registry(env)
            .await
            .map_err(IngestError::Load)?;
        if registry.webhooks.is_empty() {
            return Ok(Vec::new());
        }
        let application = (e.stream_type == "application")
            .then(|| e.stream_id.strip_prefix("application-"))
            .flatten();
        // The members' roles, read once and only when an application endpoint may need them;
        // an application without members is held to the least role.
        let mut roles = Vec::new();
        if application.is_some()
            && registry
                .webhooks
                .values()
                .any(|w| w.application_id.as_deref() == application)
        {
            let app = self
                .commands
                .load::<ApplicationState>(&e.stream_id)
                .await
                .map_err(IngestError::Load)?;
            roles = app
                .state
                .0
                .as_ref()
                .map(|a| a.members.values().copied().collect())
                .unwrap_or_default();
            if roles.is_empty() {
                roles.push(Role::User);
            }
        }
        let mut out = Vec::new();
        let mut payload = None;
        for w in registry.webhooks.values() {
            if !receives(w, e, application, &roles) {
                continue;
            }
            let body = match &payload {
                Some(body) => String::clone(body),
                None => {
                    let body =
                        serde_json::to_string(&crate::erased::envelope_of(&self.keys, e).await?)?;
                    payload = Some(body.clone());
                    body
                }
            };
            let event_id = e.event_id.to_string();
            out.push(NewDelivery {
                id: webhook_id(&w.id, &event_id),
                webhook_id: w.id.clone(),
                environment: env.to_string(),
                event_id,
                event_type: e.event_type.clone(),
                stream_id: e.stream_id.clone(),
                version: e.version,
                payload: body,
            });
        }
        Ok(out)
    }
}

impl Handler for Ingest {
    type Error = IngestError;

    fn wants(&self, e: &StoredEvent) -> bool {
        !appreg_worker::envelope::environment(e).is_empty()
    }

    async fn handle(
        &self,
        e: &StoredEvent,
        stop: &CancellationToken,
    ) -> Result<Outcome, IngestError> {
        self.handle_all(std::slice::from_ref(e), stop).await
    }

    /// The events' mails, then all their deliveries in one statement per 1,000, handed over.
    async fn handle_all(
        &self,
        events: &[StoredEvent],
        _stop: &CancellationToken,
    ) -> Result<Outcome, IngestError> {
        let mut rows = Vec::new();
        for e in events {
            self.record_mails(e).await?;
            let env = appreg_worker::envelope::environment(e);
            if e.stream_id == WebhookRegistry::stream_id(env) {
                self.endpoints.forget(env);
            }
            rows.extend(self.deliveries_of(e).await?);
        }
        if !rows.is_empty() {
            // Held from the insert to the hand-over: a refill of a queue sees these rows.
            let _gate = self.dispatcher.gate.read().await;
            let added = deliveries::insert(&self.db, &rows, crate::now_ms()).await?;
            metrics::counter!("appreg_notifier_deliveries_recorded_total")
                .increment(added.len() as u64);
            self.dispatcher.hand_over(added);
        }
        Ok(Outcome::Done)
    }
}

impl Ingest {
    /// With an SMTP server: the mails of `e` (an application event with a notification hook).
    async fn record_mails(&self, e: &StoredEvent) -> Result<(), IngestError> {
        let Some((expiring_days, wake)) = &self.mail else {
            return Ok(());
        };
        if e.stream_type != "application"
            || appreg_domain::subscription::Hook::for_event(&e.event_type).is_none()
        {
            return Ok(());
        }
        let app = self
            .commands
            .load::<ApplicationState>(&e.stream_id)
            .await
            .map_err(IngestError::Load)?;
        if let Some(app) = app.state.0.as_ref() {
            let now = crate::now_ms();
            let mails = crate::mail::mails_of(e, app, *expiring_days, now);
            if !mails.is_empty() {
                appreg_notify::mails::insert(&self.db, &mails, now).await?;
                wake.notify_one();
            }
        }
        Ok(())
    }
}
