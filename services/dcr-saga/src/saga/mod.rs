//! The DCR saga: reacts to `DcrRegistrationRequested` by obtaining a client at the application's
//! provider (RFC 7591) and recording the answer with a command (`register_dcr_client` or
//! `fail_dcr_registration`).
//!
//! - **Idempotent.** A request is acted on only while it is the application's current one and
//!   still REGISTERING (a replayed or redelivered event finds it answered and does nothing; side
//!   effects never run for history). A client obtained for a request is recorded in
//!   `dcr_requests` (and its secrets in the vault) before the command, so a retry after a crash
//!   reuses it instead of registering again.
//! - **Failures.** 4xx from the provider → REGISTRATION_FAILED with the provider's `error` and
//!   `error_description`; 5xx, timeouts and resets → retried with exponential back-off and
//!   jitter ([`SagaConfig::attempts`], [`SagaConfig::first_delay`]), then failed.
//! - **No orphans.** A client that cannot be recorded (the application was archived meanwhile,
//!   its request superseded, or its client_id taken) is deleted at the provider (RFC 7592); where
//!   the provider offers no deletion, an `OrphanClientDetected` event tells operators.
//! - **Suspected orphans.** An attempt whose answer was lost (5xx, a timeout or a reset after
//!   sending) is recorded (`DcrAttemptOutcomeUnknown`) before the next one; after success a
//!   replay probe proves the provider honours `Idempotency-Key` (suspicions cleared) or not
//!   (they stay open): see `orphans`.
//! - **Secrets** go to the vault only; events carry fingerprints.
//!
//! Layout: this file holds the configuration, [`Saga`], its dispatch and retries, and the
//! helpers; `register` the registration and the recording of its outcome, `orphans` the
//! suspected orphans and the replay probe, `manage` the update, renewal and deletion of a
//! registered client.

use crate::apps::{self, CommandError};
use crate::bulkhead::Bulkheads;
use crate::loader::{Loaded, Loader};
use crate::marks::Marks;
use crate::recorder::{self, Obtained, Outcome, Recorder};
use appreg_dcr_client::provider::{
    ClientMetadata, ProviderClient, ProviderError, ProviderSettings, RegisteredClient,
    RegistrationHandle, TokenEndpointAuthMethod,
};
use appreg_dcr_client::settings::settings_of;
use appreg_dcr_client::vault::{provider_owner, secret_kind, secret_owner};
use appreg_domain::application::{
    Application, ApplicationStatus, ClientOperationKind, OperationState, RegistrationState,
};
use appreg_domain::dcr::{IssuedClient, ProviderFailure};
use appreg_domain::provider::{Provider, ProviderRegistry};
use appreg_domain::{ApplicationId, ClientId};
use appreg_eventstore::{Database, EventStore, Kept, StoredEvent};
use appreg_secrets::SecretStore;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// How the saga retries a provider that does not answer.
#[derive(Debug, Clone)]
pub struct SagaConfig {
    /// Calls of the provider per request, in all (5xx, timeouts, resets).
    pub attempts: u32,
    /// First pause between two calls; doubled each time, with ±25% jitter.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Requests in flight at the same time (read from the log, not yet finished; they finish
    /// in any order). Much larger than [`SagaConfig::provider_concurrency`], so that a hanging
    /// provider's requests never fill it.
    pub concurrency: usize,
    /// Calls in flight to one provider (its bulkhead, [`crate::bulkhead`]).
    pub provider_concurrency: usize,
    /// Failed tries of a request (a [`SagaError`] each time) before it is parked
    /// (`appreg saga parked` lists it, `appreg saga retry` tries it again); 0: never parked.
    pub park_after: u32,
    /// The command path (cache, snapshots, retries). Its group commit is off by default: the
    /// saga group-commits the clients it obtains itself ([`crate::recorder`]).
    pub commands: appreg_commands::CommandSettings,
}

impl Default for SagaConfig {
    fn default() -> Self {
        SagaConfig {
            attempts: 5,
            first_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
            concurrency: 256,
            provider_concurrency: 16,
            park_after: 10,
            commands: appreg_commands::CommandSettings {
                group_commit_writers: 0,
                ..Default::default()
            },
        }
    }
}

/// Why a request could not be handled now (it is retried; nothing is skipped). Each variant
/// keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("vault: {0}")]
    Vault(#[from] appreg_secrets::VaultStoreError),
    /// A provider's secret is not in the vault.
    #[error("vault: provider {provider}: its {kind} is not in the vault")]
    SecretMissing { provider: String, kind: String },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A batched read or write of several requests failed: each of them gets the one cause.
    #[error("{0}")]
    Batch(#[source] Arc<SagaError>),
    /// The loader or the recorder task is gone (the saga is stopping).
    #[error("the {0} stopped")]
    Stopped(&'static str),
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

mod manage;
mod orphans;
mod register;

pub struct Saga {
    /// Provider settings by (environment, provider id), with the provider record they were built
    /// from: a changed record (a new secret has a new fingerprint there) is read again.
    settings_cache:
        std::sync::Mutex<std::collections::HashMap<(String, String), (Provider, ProviderSettings)>>,
    db: Database,
    /// The command path the saga's commands go through (and its event store).
    commands: appreg_commands::Commands,
    vault: SecretStore,
    client: ProviderClient,
    config: SagaConfig,
    recorder: Recorder,
    loader: Loader,
    marks: Marks,
    /// Providers by environment, folded from their streams; used only while the run loop shows
    /// the saga every event of the log ([`Saga::observe`]), which drops an environment's entry
    /// when its providers change, before any later request is handled.
    registries: std::sync::Mutex<std::collections::HashMap<String, ProviderRegistry>>,
    /// Bumped by every provider change observed: a registry read before it is not kept.
    registry_generation: AtomicU64,
    observing: AtomicBool,
    bulkheads: Bulkheads,
}

impl Saga {
    pub fn new(
        db: Database,
        store: Arc<dyn EventStore>,
        vault: SecretStore,
        client: ProviderClient,
        config: SagaConfig,
    ) -> Self {
        Saga {
            settings_cache: Default::default(),
            recorder: Recorder::new(db.clone(), store.clone(), vault.clone()),
            loader: Loader::new(db.clone(), store.clone()),
            marks: Marks::new(db.clone()),
            registries: Default::default(),
            registry_generation: AtomicU64::new(0),
            observing: AtomicBool::new(false),
            bulkheads: Bulkheads::new(config.provider_concurrency),
            commands: appreg_commands::Commands::new(store.clone(), config.commands.clone()),
            db,
            vault,
            client,
            config,
        }
    }

    /// The command path the saga's commands go through.
    pub(crate) fn command_path(&self) -> &appreg_commands::Commands {
        &self.commands
    }

    /// The configuration the saga runs with.
    pub fn config(&self) -> &SagaConfig {
        &self.config
    }

    /// The types of the application events the saga acts on.
    pub const EVENT_TYPES: &'static [&'static str] = &[
        "DcrRegistrationRequested",
        "DcrClientUpdateRequested",
        "ClientSecretRenewalRequested",
        "ApplicationArchived",
    ];

    /// Whether the saga acts on an event.
    pub fn wants(e: &StoredEvent) -> bool {
        e.stream_type == apps::APPLICATION_STREAM
            && Self::EVENT_TYPES.contains(&e.event_type.as_str())
    }

    /// Shows the saga an event of the log before the requests after it are handled (the run
    /// loop does so for every event it reads): a change of an environment's providers drops
    /// its cached registry.
    pub fn observe(&self, e: &StoredEvent) {
        self.observing.store(true, Ordering::SeqCst);
        if let Some(environment) = e.stream_id.strip_prefix("providers-") {
            self.registry_generation.fetch_add(1, Ordering::SeqCst);
            self.registries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(environment);
        }
    }

    /// Forgets every cached registry: the run loop calls it when it starts following the log
    /// (again): provider changes made while it was not following are not observed.
    pub fn forget_registries(&self) {
        self.registry_generation.fetch_add(1, Ordering::SeqCst);
        self.registries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// An environment's providers: cached while the log is observed, else read.
    async fn registry(&self, environment: &str) -> Result<ProviderRegistry, SagaError> {
        let observing = self.observing.load(Ordering::SeqCst);
        if observing {
            let cache = self
                .registries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(registry) = cache.get(environment) {
                return Ok(registry.clone());
            }
        }
        let generation = self.registry_generation.load(Ordering::SeqCst);
        let registry = apps::providers(&self.commands, environment).await?;
        if observing {
            let mut cache = self
                .registries
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Not if a change was observed meanwhile: the read may predate it.
            if self.registry_generation.load(Ordering::SeqCst) == generation {
                cache.insert(environment.to_string(), registry.clone());
            }
        }
        Ok(registry)
    }

    /// Handles one event of the log (others than the saga's are ignored).
    pub async fn handle(&self, e: &StoredEvent) -> Result<(), SagaError> {
        if !Self::wants(e) {
            return Ok(());
        }
        let Some(id) = e
            .stream_id
            .strip_prefix("application-")
            .and_then(|s| uuid::Uuid::parse_str(s).ok())
            .map(ApplicationId)
        else {
            return Ok(());
        };
        // With OTLP export, the request's spans are children of the event's (its traceparent).
        let span = appreg_telemetry::trace::event_span(traceparent(e));
        async {
            match e.event_type.as_str() {
                "DcrRegistrationRequested" => self.register(e, id).await,
                "DcrClientUpdateRequested" => self.update(e, id).await,
                "ClientSecretRenewalRequested" => self.renew(e, id).await,
                "ApplicationArchived" => self.delete_at_archive(e, id).await,
                _ => Ok(()),
            }
        }
        .instrument(span)
        .await
    }

    /// The provider that issued the application's client, with its settings; `Err(failure)`
    /// when it is gone.
    async fn issuer_of(
        &self,
        app: &Application,
    ) -> Result<Result<(Provider, ProviderSettings), ProviderFailure>, SagaError> {
        let registry = self.registry(app.environment.as_str()).await?;
        let issuer = app
            .registration
            .as_ref()
            .and_then(|r| r.provider_id.as_deref());
        let Some(provider) = issuer.and_then(|id| registry.providers.get(id)).cloned() else {
            return Ok(Err(ProviderFailure {
                error: "provider_not_found".into(),
                error_description: Some(
                    "the provider that issued the client no longer exists".into(),
                ),
            }));
        };
        let settings = self.settings(app.environment.as_str(), &provider).await?;
        Ok(Ok((provider, settings)))
    }

    /// What RFC 7592 management of the application's client needs.
    async fn handle_of(&self, app: &Application) -> Result<RegistrationHandle, SagaError> {
        let uri: Option<Option<String>> = with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT registration_client_uri FROM dcr_requests WHERE application_id = $1 AND client_id = $2 \
             ORDER BY updated_at DESC LIMIT 1",
        )
        .bind(app.id.0.to_string())
        .bind(app.client_id.as_ref().map(|c| c.as_str().to_string()).unwrap_or_default())
        .fetch_optional(pool)
        .await)?;
        let token = self
            .vault
            .get(&secret_owner(app.id), "registration_access_token")
            .await?;
        Ok(RegistrationHandle {
            client_id: app
                .client_id
                .as_ref()
                .map(|c| c.as_str().to_string())
                .unwrap_or_default(),
            registration_client_uri: uri.flatten(),
            registration_access_token: token,
        })
    }

    /// Calls the provider `provider` of `environment` in one of its slots ([`Bulkheads`]),
    /// retrying what is retryable.
    async fn with_retries<T, F, Fut>(
        &self,
        environment: &str,
        provider: &Provider,
        call: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let noted = self
            .with_retries_noting(
                environment,
                provider,
                0,
                |_, _| std::future::ready(Ok(())),
                call,
                |_| std::future::ready(Ok(())),
            )
            .await;
        match noted {
            Ok(answer) => answer,
            // The hook above never fails.
            Err(e) => Err(ProviderError::Invalid(e.to_string())),
        }
    }

    /// [`Saga::with_retries`], telling `start` of every attempt before it is sent (its number
    /// and time) and `note` of every attempt whose outcome is unknown
    /// ([`ProviderError::outcome_unknown`]) before anything else happens — the next attempt, or
    /// the answer. Attempts are numbered from `first_attempt + 1`. A failing hook stops the
    /// calls (`Err`): no attempt goes unnoted.
    async fn with_retries_noting<T, S, SFut, F, Fut, N, NFut>(
        &self,
        environment: &str,
        provider: &Provider,
        first_attempt: u32,
        mut start: S,
        mut call: F,
        mut note: N,
    ) -> Result<Result<T, ProviderError>, SagaError>
    where
        S: FnMut(u32, chrono::DateTime<chrono::Utc>) -> SFut,
        SFut: std::future::Future<Output = Result<(), SagaError>>,
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
        N: FnMut(LostAttempt) -> NFut,
        NFut: std::future::Future<Output = Result<(), SagaError>>,
    {
        let _slot = self.bulkheads.enter(environment, &provider.id).await;
        let mut delay = self.config.first_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            metrics::counter!("appreg_dcr_attempts_total").increment(1);
            let started_at = chrono::Utc::now();
            start(first_attempt.saturating_add(attempt), started_at).await?;
            let result = call().await;
            if let Err(e) = &result {
                if e.outcome_unknown() {
                    metrics::counter!("appreg_dcr_unknown_outcomes_total").increment(1);
                    note(LostAttempt {
                        attempt: first_attempt.saturating_add(attempt),
                        started_at,
                        ended_at: chrono::Utc::now(),
                        error: e.to_string(),
                    })
                    .await?;
                }
            }
            match result {
                Ok(v) => return Ok(Ok(v)),
                Err(e) if e.is_retryable() && attempt < self.config.attempts => {
                    metrics::counter!("appreg_dcr_retries_total").increment(1);
                    let jitter = 0.75 + rand::random::<f64>() * 0.5;
                    tracing::info!(attempt, error = %e, "provider unavailable; retrying");
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay = (delay * 2).min(self.config.max_delay);
                }
                Err(e) => return Ok(Err(e)),
            }
        }
    }
}

/// A call of the provider whose outcome is unknown (its answer was lost).
#[derive(Debug, Clone)]
pub(crate) struct LostAttempt {
    pub attempt: u32,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub ended_at: chrono::DateTime<chrono::Utc>,
    /// The error's text (secrets are never in it: [`ProviderError`]).
    pub error: String,
}

/// What the saga keeps of an obtained client (secrets are in the vault).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub client_id: String,
    pub registration_client_uri: Option<String>,
    pub secret_fingerprint: Option<String>,
    pub secret_expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<&RegisteredClient> for Stored {
    fn from(c: &RegisteredClient) -> Self {
        Stored {
            client_id: c.client_id.clone(),
            registration_client_uri: c.registration_client_uri.clone(),
            secret_fingerprint: c.client_secret.as_ref().map(appreg_secrets::fingerprint),
            secret_expires_at: c
                .client_secret_expires_at
                .filter(|t| *t > 0)
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0)),
        }
    }
}

/// What `DcrClientRegistered` records of an obtained client.
fn issued(provider: &Provider, client_id: ClientId, client: &Stored) -> IssuedClient {
    IssuedClient {
        provider_id: provider.id.clone(),
        client_id,
        client_secret_fingerprint: client.secret_fingerprint.clone(),
        client_secret_expires_at: client.secret_expires_at,
    }
}

/// Whether the application's current operation of `kind` is the pending one requested at
/// `version` (a replayed or superseded request is not).
fn pending(app: &Application, kind: ClientOperationKind, version: i64) -> bool {
    app.registration
        .as_ref()
        .and_then(|r| r.operation.as_ref())
        .is_some_and(|o| {
            o.kind == kind && o.request_version == version && o.state == OperationState::Pending
        })
}

/// The W3C trace context of the request an event comes from (its metadata's), if any.
fn traceparent(e: &StoredEvent) -> Option<&str> {
    e.metadata
        .get("traceparent")
        .and_then(serde_json::Value::as_str)
}

/// The `trace_id` span field of the request handling `e` ("" without trace context).
fn trace_id(e: &StoredEvent) -> String {
    appreg_telemetry::trace::trace_id(traceparent(e))
}

/// A decision refused (a stale answer, an archived application) is not an error of the saga.
fn ignore_refusals<T>(result: Result<T, CommandError>) -> Result<(), SagaError> {
    match result {
        Ok(_) | Err(CommandError::Domain(_)) | Err(CommandError::NoApplication) => Ok(()),
        Err(other) => Err(other.into()),
    }
}

fn failure_of(error: &ProviderError) -> ProviderFailure {
    match error {
        ProviderError::Rejected {
            error,
            error_description,
            ..
        } => ProviderFailure {
            error: error.clone(),
            error_description: error_description.clone(),
        },
        other => ProviderFailure {
            error: "provider_unavailable".into(),
            error_description: Some(other.to_string()),
        },
    }
}

fn client_metadata(
    app: &Application,
    provider: &Provider,
) -> Result<ClientMetadata, ProviderError> {
    let oauth = app.oauth.as_ref();
    ClientMetadata::for_application(
        app.app_type,
        oauth.map(|o| o.grant_types.as_slice()).unwrap_or_default(),
        oauth
            .map(|o| o.redirect_uris.as_slice())
            .unwrap_or_default(),
        app.name.as_str(),
        provider.software_id.as_deref(),
        oauth.and_then(|o| o.client_uri.as_ref()),
        oauth.and_then(|o| o.logo_uri.as_ref()),
    )
}
