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
//! - **Secrets** go to the vault only; events carry fingerprints.

use crate::apps::{self, CommandError};
use crate::bulkhead::Bulkheads;
use crate::loader::{Loaded, Loader};
use crate::recorder::{self, Obtained, Outcome, Recorder};
use appreg_dcr_client::provider::{
    ClientMetadata, ProviderClient, ProviderError, ProviderSettings, RegisteredClient,
    RegistrationHandle,
};
use appreg_dcr_client::settings::settings_of;
use appreg_dcr_client::vault::{provider_owner, secret_kind, secret_owner};
use appreg_domain::application::{
    Application, ApplicationStatus, ClientOperationKind, OperationState, RegistrationState,
};
use appreg_domain::dcr::{IssuedClient, ProviderFailure};
use appreg_domain::provider::{Provider, ProviderRegistry};
use appreg_domain::{ApplicationId, ClientId};
use appreg_eventstore::{Database, EventStore, StoredEvent};
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

/// Why a request could not be handled now (it is retried; nothing is skipped).
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error("vault: {0}")]
    Vault(String),
    #[error("database: {0}")]
    Database(String),
}

impl From<sqlx::Error> for SagaError {
    fn from(e: sqlx::Error) -> Self {
        SagaError::Database(e.to_string())
    }
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

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

    /// The configuration the saga runs with.
    pub fn config(&self) -> &SagaConfig {
        &self.config
    }

    /// Whether the saga acts on an event.
    pub fn wants(e: &StoredEvent) -> bool {
        e.stream_type == apps::APPLICATION_STREAM
            && matches!(
                e.event_type.as_str(),
                "DcrRegistrationRequested"
                    | "DcrClientUpdateRequested"
                    | "ClientSecretRenewalRequested"
                    | "ApplicationArchived"
            )
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
            .await
            .map_err(|e| SagaError::Vault(e.to_string()))?;
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
        mut call: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let _slot = self.bulkheads.enter(environment, &provider.id).await;
        let mut delay = self.config.first_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            metrics::counter!("appreg_dcr_attempts_total").increment(1);
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.config.attempts => {
                    metrics::counter!("appreg_dcr_retries_total").increment(1);
                    let jitter = 0.75 + rand::random::<f64>() * 0.5;
                    tracing::info!(attempt, error = %e, "provider unavailable; retrying");
                    tokio::time::sleep(delay.mul_f64(jitter)).await;
                    delay = (delay * 2).min(self.config.max_delay);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// RFC 7592 PUT of the full metadata after an OAuth settings change; the rotated
    /// registration access token replaces the old one; a failure is recorded and shown.
    #[tracing::instrument(skip_all, fields(application_id = %id.0, request_version = e.version, trace_id = %trace_id(e)), err(Display))]
    async fn update(&self, e: &StoredEvent, id: ApplicationId) -> Result<(), SagaError> {
        let (app, _) = apps::load(&self.commands, id).await?;
        let Some(app) = app else { return Ok(()) };
        if !pending(&app, ClientOperationKind::Update, e.version) {
            return Ok(());
        }
        let meta = self.metadata(e);
        let outcome = match self.issuer_of(&app).await? {
            Err(failure) => Err(failure),
            Ok((provider, settings)) => match client_metadata(&app, &provider) {
                Err(error) => Err(failure_of(&error)),
                Ok(metadata) => {
                    let handle = self.handle_of(&app).await?;
                    match self
                        .with_retries(app.environment.as_str(), &provider, || {
                            self.client.update(&settings, &handle, &metadata)
                        })
                        .await
                    {
                        Ok(updated) => {
                            if let Some(token) = &updated.registration_access_token {
                                self.vault
                                    .put(&secret_owner(id), "registration_access_token", token)
                                    .await
                                    .map_err(|e| SagaError::Vault(e.to_string()))?;
                            }
                            Ok(())
                        }
                        Err(error) => Err(failure_of(&error)),
                    }
                }
            },
        };
        let version = e.version;
        let result = apps::execute(&self.commands, id, &meta, |app| match &outcome {
            Ok(()) => app.complete_client_update(version),
            Err(failure) => app.fail_client_update(version, failure.clone()),
        })
        .await;
        ignore_refusals(result)
    }

    /// Secret renewal through the provider's endpoint; the new secret goes to the vault, its
    /// fingerprint into `ClientSecretRenewed`.
    #[tracing::instrument(skip_all, fields(application_id = %id.0, request_version = e.version, trace_id = %trace_id(e)), err(Display))]
    async fn renew(&self, e: &StoredEvent, id: ApplicationId) -> Result<(), SagaError> {
        let (app, _) = apps::load(&self.commands, id).await?;
        let Some(app) = app else { return Ok(()) };
        if !pending(&app, ClientOperationKind::RenewSecret, e.version) {
            return Ok(());
        }
        let meta = self.metadata(e);
        let outcome = match self.issuer_of(&app).await? {
            Err(failure) => Err(failure),
            Ok((provider, settings)) => {
                let handle = self.handle_of(&app).await?;
                match &handle.registration_access_token {
                    None => Err(ProviderFailure {
                        error: "renewal_unsupported".into(),
                        error_description: Some(
                            "the provider gave no registration access token".into(),
                        ),
                    }),
                    Some(_) => match self
                        .with_retries(app.environment.as_str(), &provider, || {
                            self.client.renew_secret_at(&settings, &handle)
                        })
                        .await
                    {
                        Ok(renewed) => {
                            let owner = secret_owner(id);
                            let fingerprint = self
                                .vault
                                .put(&owner, "client_secret", &renewed.client_secret)
                                .await
                                .map_err(|e| SagaError::Vault(e.to_string()))?;
                            if let Some(token) = &renewed.registration_access_token {
                                self.vault
                                    .put(&owner, "registration_access_token", token)
                                    .await
                                    .map_err(|e| SagaError::Vault(e.to_string()))?;
                            }
                            let expires = renewed
                                .client_secret_expires_at
                                .filter(|t| *t > 0)
                                .and_then(|t| chrono::DateTime::from_timestamp(t, 0));
                            Ok((fingerprint, expires))
                        }
                        Err(error) => Err(failure_of(&error)),
                    },
                }
            }
        };
        let version = e.version;
        let result = apps::execute(&self.commands, id, &meta, |app| match &outcome {
            Ok((fingerprint, expires)) => {
                app.complete_secret_renewal(version, fingerprint.clone(), *expires)
            }
            Err(failure) => app.fail_secret_renewal(version, failure.clone()),
        })
        .await;
        ignore_refusals(result)
    }

    /// With the provider's `delete_client_on_archive`: the archived application's client is
    /// deleted at the provider (RFC 7592) and its secrets purged; a restore registers a new one.
    #[tracing::instrument(skip_all, fields(application_id = %id.0, trace_id = %trace_id(e)), err(Display))]
    async fn delete_at_archive(&self, e: &StoredEvent, id: ApplicationId) -> Result<(), SagaError> {
        let (app, _) = apps::load(&self.commands, id).await?;
        let Some(app) = app else { return Ok(()) };
        let registered = app
            .registration
            .as_ref()
            .is_some_and(|r| r.state == RegistrationState::Registered && !r.client_deleted);
        if app.status != ApplicationStatus::Archived || !registered {
            return Ok(());
        }
        let Ok((provider, settings)) = self.issuer_of(&app).await? else {
            return Ok(());
        };
        if !provider.delete_client_on_archive {
            return Ok(());
        }
        let handle = self.handle_of(&app).await?;
        match self
            .with_retries(app.environment.as_str(), &provider, || {
                self.client.delete(&settings, &handle)
            })
            .await
        {
            // Gone already (a deletion whose answer was lost): its token is refused.
            Ok(())
            | Err(ProviderError::Rejected {
                status: 401 | 404, ..
            }) => {}
            Err(error) => {
                tracing::error!(%error, "cannot delete the archived application's client at the provider");
                metrics::counter!("appreg_dcr_delete_failures_total").increment(1);
                return Ok(());
            }
        }
        let meta = self.metadata(e);
        let result =
            apps::execute(&self.commands, id, &meta, |app| app.record_client_deleted()).await;
        ignore_refusals(result)?;
        self.vault
            .delete_owner(&secret_owner(id))
            .await
            .map_err(|e| SagaError::Vault(e.to_string()))?;
        Ok(())
    }

    fn metadata(&self, e: &StoredEvent) -> serde_json::Value {
        let mut m = serde_json::json!({
            "environment": e.metadata.get("environment").cloned().unwrap_or_default(),
            "actor": "dcr-saga",
            "correlation_id": e.metadata.get("correlation_id").cloned().unwrap_or_default(),
            "causation_id": e.event_id.to_string(),
            "at": chrono::Utc::now(),
        });
        if let Some(tp) = e.metadata.get("traceparent") {
            m["traceparent"] = tp.clone();
        }
        m
    }

    #[tracing::instrument(skip_all, fields(application_id = %id.0, request_version = e.version, trace_id = %trace_id(e)), err(Display))]
    async fn register(&self, e: &StoredEvent, id: ApplicationId) -> Result<(), SagaError> {
        let key = format!("{}:{}", id.0, e.version);
        let Loaded {
            app,
            version,
            obtained,
        } = self.loader.load(id, &key).await?;
        let loaded = (app.clone(), version);
        let Some(app) = app else { return Ok(()) };
        let current = app.registration.as_ref().is_some_and(|r| {
            r.request_version == e.version && r.state == RegistrationState::Registering
        });
        if !current {
            tracing::debug!("request already answered or superseded");
            return Ok(());
        }
        let meta = self.metadata(e);
        let registry = self.registry(app.environment.as_str()).await?;
        let Some(provider) = registry.resolve(app.provider_id.as_deref()).cloned() else {
            let failure = ProviderFailure {
                error: "provider_not_found".into(),
                error_description: Some(match &app.provider_id {
                    Some(p) => format!("no client registration provider {p:?} in this environment"),
                    None => "the environment has no default client registration provider".into(),
                }),
            };
            return self.fail(id, e.version, None, failure, &meta).await;
        };
        // A client obtained earlier for this request (recorded), or a fresh one (not yet).
        let (client, fresh) = match obtained {
            Some(client) => (client, None),
            None => {
                let settings = self.settings(app.environment.as_str(), &provider).await?;
                let metadata = match client_metadata(&app, &provider) {
                    Ok(m) => m,
                    Err(error) => {
                        let failure = failure_of(&error);
                        return self
                            .fail(id, e.version, Some(&provider), failure, &meta)
                            .await;
                    }
                };
                // The same key on every attempt: a provider that honours it gives back the
                // client an attempt whose answer was lost created.
                let idempotency_key = e.event_id.to_string();
                match self
                    .with_retries(app.environment.as_str(), &provider, || {
                        self.client.register_idempotent(
                            &settings,
                            &metadata,
                            Some(&idempotency_key),
                        )
                    })
                    .await
                {
                    Ok(client) => (Stored::from(&client), Some(client)),
                    Err(error) => {
                        let failure = failure_of(&error);
                        return self
                            .fail(id, e.version, Some(&provider), failure, &meta)
                            .await;
                    }
                }
            }
        };
        let parsed = ClientId::parse(&client.client_id);
        let mut loaded = Some(loaded);
        match (fresh, &parsed, &loaded) {
            // The usual case: recorded and registered together with the other answers
            // in flight (group commit).
            (Some(fresh), Ok(client_id), Some((Some(app), version))) => {
                let obtained = Obtained {
                    key: key.clone(),
                    id,
                    provider_id: provider.id.clone(),
                    client: fresh,
                    request_version: e.version,
                    issued: issued(&provider, client_id.clone(), &client),
                    loaded: (app.clone(), *version),
                    meta: meta.clone(),
                };
                if self.recorder.record(obtained).await? == Outcome::Registered {
                    metrics::counter!("appreg_dcr_registrations_total", "outcome" => "registered")
                        .increment(1);
                    return Ok(());
                }
                // Recorded but not appended: decided again alone, on a fresh load.
                loaded = None;
            }
            (Some(fresh), _, _) => self.record_obtained(&key, id, &provider, &fresh).await?,
            (None, _, _) => {}
        }
        let client_id = match parsed {
            Ok(c) => c,
            Err((_, message)) => {
                // Not a client_id appreg can hold (its rules for client_id): give it back.
                let reason =
                    format!("the provider issued a client_id appreg cannot hold: {message}");
                self.discard(id, &provider, &client, &reason, &meta).await?;
                self.mark(&key, "DISCARDED").await?;
                let failure = ProviderFailure {
                    error: "invalid_client_id".into(),
                    error_description: Some(reason),
                };
                return self
                    .fail(id, e.version, Some(&provider), failure, &meta)
                    .await;
            }
        };
        let issued = issued(&provider, client_id, &client);
        let recorded = apps::execute_from(&self.commands, id, loaded, &meta, |app| {
            app.register_dcr_client(e.version, issued.clone())
        })
        .await;
        match recorded {
            Ok(_) => {
                metrics::counter!("appreg_dcr_registrations_total", "outcome" => "registered")
                    .increment(1);
                Ok(())
            }
            Err(
                reason @ (CommandError::Domain(_)
                | CommandError::ClientIdTaken(_)
                | CommandError::NoApplication),
            ) => {
                tracing::warn!(%reason, client_id = client.client_id.as_str(), "the obtained client cannot be recorded; deleting it at the provider");
                self.discard(id, &provider, &client, &reason.to_string(), &meta)
                    .await?;
                self.mark(&key, "DISCARDED").await?;
                Ok(())
            }
            Err(other) => Err(other.into()),
        }
    }

    async fn fail(
        &self,
        id: ApplicationId,
        request_version: i64,
        provider: Option<&Provider>,
        failure: ProviderFailure,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        tracing::warn!(error = %failure.error, "registration failed");
        metrics::counter!("appreg_dcr_registrations_total", "outcome" => "failed").increment(1);
        let provider_id = provider.map(|p| p.id.clone());
        match apps::execute(&self.commands, id, meta, |app| {
            app.fail_dcr_registration(request_version, provider_id.clone(), failure.clone())
        })
        .await
        {
            Ok(_) | Err(CommandError::Domain(_)) | Err(CommandError::NoApplication) => Ok(()),
            Err(other) => Err(other.into()),
        }
    }

    /// The provider settings with their secret from the vault (cached while the provider's
    /// recorded definition, which carries its secret's fingerprint, is unchanged).
    async fn settings(
        &self,
        environment: &str,
        p: &Provider,
    ) -> Result<ProviderSettings, SagaError> {
        let key = (environment.to_string(), p.id.clone());
        let cached = self
            .settings_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key)
            .filter(|(known, _)| known == p)
            .map(|(_, settings)| settings.clone());
        if let Some(settings) = cached {
            return Ok(settings);
        }
        let kind = secret_kind(&p.mode);
        let secret = self
            .vault
            .get(&provider_owner(environment, &p.id), kind)
            .await
            .map_err(|e| SagaError::Vault(e.to_string()))?
            .ok_or_else(|| {
                SagaError::Vault(format!("provider {}: its {kind} is not in the vault", p.id))
            })?;
        let settings = settings_of(p, secret);
        self.settings_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, (p.clone(), settings.clone()));
        Ok(settings)
    }

    /// Keeps what the provider issued before anything else, in one transaction: the secrets in
    /// the vault, the rest in `dcr_requests`.
    async fn record_obtained(
        &self,
        key: &str,
        id: ApplicationId,
        provider: &Provider,
        client: &RegisteredClient,
    ) -> Result<(), SagaError> {
        let rows = recorder::rows_of(&self.vault, key, id, &provider.id, client);
        recorder::write_obtained(&self.db, &[rows]).await?;
        Ok(())
    }

    async fn mark(&self, key: &str, state: &str) -> Result<(), SagaError> {
        let now = chrono::Utc::now().to_rfc3339();
        with_pool!(&self.db, pool => sqlx::query("UPDATE dcr_requests SET state = $1, updated_at = $2 WHERE request_key = $3")
            .bind(state)
            .bind(&now)
            .bind(key)
            .execute(pool)
            .await
            .map(|_| ()))?;
        Ok(())
    }

    /// Deletes a client that no application will hold; records an orphan when the provider
    /// offers no deletion or refuses it.
    async fn discard(
        &self,
        id: ApplicationId,
        provider: &Provider,
        client: &Stored,
        reason: &str,
        meta: &serde_json::Value,
    ) -> Result<(), SagaError> {
        let owner = secret_owner(id);
        let token = self
            .vault
            .get(&owner, "registration_access_token")
            .await
            .map_err(|e| SagaError::Vault(e.to_string()))?;
        let handle = RegistrationHandle {
            client_id: client.client_id.as_str().to_string(),
            registration_client_uri: client.registration_client_uri.clone(),
            registration_access_token: token,
        };
        let environment = meta
            .get("environment")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_string();
        let deleted = match self.settings(&environment, provider).await {
            Ok(settings) => {
                let _slot = self.bulkheads.enter(&environment, &provider.id).await;
                self.client.delete(&settings, &handle).await
            }
            Err(e) => Err(ProviderError::Invalid(e.to_string())),
        };
        match deleted {
            Ok(()) => {
                metrics::counter!("appreg_dcr_discarded_clients_total").increment(1);
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, client_id = client.client_id.as_str(), "cannot delete the client at the provider: recording an orphan");
                metrics::counter!("appreg_dcr_orphans_total").increment(1);
                let (provider_id, client_id) =
                    (provider.id.clone(), client.client_id.as_str().to_string());
                let why = format!("{reason}; deletion failed: {error}");
                apps::execute(&self.commands, id, meta, |app| {
                    Ok(app.record_orphan(provider_id.clone(), client_id.clone(), why.clone()))
                })
                .await
                .map(|_| ())
                .map_err(SagaError::from)
            }
        }
    }
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
