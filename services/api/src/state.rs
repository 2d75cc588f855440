//! The state shared by every request: the event store, the read model, the authenticator and
//! the configuration the rules depend on.

use crate::error::ApiError;
use crate::readmodel::ReadModel;
use appreg_auth::Authenticator;
use appreg_config::Config;
use appreg_domain::{EnvironmentId, Policy};
use appreg_eventstore::{Database, EventStore};
use appreg_telemetry::lag::{self, Lag, LagGauges};
use appreg_telemetry::PrometheusHandle;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    /// The background tasks of the api (inline projector or checkpoint follower, lag gauges).
    supervisor: appreg_worker::Supervisor,
    /// The developer portal, when `portal_enabled` is on.
    portal: Option<Arc<crate::portal::Portal>>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    /// The one command path (cache, snapshots, group commit) over `store`.
    commands: appreg_commands::Commands,
    vault: appreg_secrets::SecretStore,
    /// Users' data keys (personal data), cached.
    personal: appreg_secrets::PersonalKeys,
    provider_client: appreg_dcr_client::provider::ProviderClient,
    read: Arc<ReadModel>,
    auth: Arc<Authenticator>,
    admin_role: String,
    admin_environments_claim: String,
    gateway_role: String,
    /// How long renewed API keys stay valid.
    api_key_grace: chrono::Duration,
    default_application: bool,
    /// (environment, user) pairs known to have been seen (bounded; emptied when full).
    seen_users: std::sync::Mutex<HashSet<(String, String)>>,
    /// Each environment's providers as last read, and when: what a create checks its provider
    /// against (see [`crate::commands::provider_exists`]).
    provider_registries: std::sync::Mutex<
        std::collections::HashMap<
            String,
            (
                std::time::Instant,
                appreg_domain::provider::ProviderRegistry,
            ),
        >,
    >,
    allow_http_redirect_uris: bool,
    /// `http` webhook URLs on loopback hosts (`api.allow_http_webhooks`; `appreg dev`).
    allow_http_webhooks: bool,
    /// Calls to loopback, private or otherwise non-public addresses (`outbound_allow_private`).
    outbound_allow_private: bool,
    max_body_bytes: usize,
    consistency_wait: Duration,
    metrics: PrometheusHandle,
    known_environments: RwLock<HashSet<String>>,
    /// Interval of the heartbeats of an idle event stream.
    sse_heartbeat: Duration,
    /// The open event streams, per user and in all, and their limits.
    streams: Arc<crate::streams::StreamLimits>,
    /// Farthest back (in events) an event stream resumes.
    sse_max_replay_events: i64,
    /// Cancelled when the server shuts down: long-lived responses (event streams) end.
    closing: CancellationToken,
    /// `/readyz` fails when the read model is further behind the log than this.
    readyz_max_lag: Duration,
    /// The origins whose pages may call the api (`cors_allowed_origins`).
    cors: Arc<crate::cors::CorsPolicy>,
    /// Lifetime of an event-stream ticket (`sse_ticket_ttl_ms`).
    sse_ticket_ttl: Duration,
}

/// The vault's keyring from the configuration (`secrets_master_key`, `secrets_previous_keys`).
pub fn keyring(config: &Config) -> Result<appreg_secrets::Keyring, ApiError> {
    use secrecy::ExposeSecret;
    let Some(current) = &config.secrets_master_key else {
        return Err(ApiError::internal(
            "secrets_master_key is not configured (APPREG_SECRETS_MASTER_KEY)",
        ));
    };
    appreg_secrets::Keyring::parse(
        current.expose_secret(),
        config
            .secrets_previous_keys
            .iter()
            .map(|k| k.expose_secret()),
    )
    .map_err(|e| ApiError::internal(format!("secrets_master_key: {e}")))
}

impl AppState {
    pub async fn new(
        config: &Config,
        db: &Database,
        auth: Arc<Authenticator>,
    ) -> Result<AppState, ApiError> {
        let store = appreg_telemetry::count_appends(db.event_store().await?);
        let vault = appreg_secrets::SecretStore::new(db.clone(), Arc::new(keyring(config)?));
        let cors = crate::cors::CorsPolicy::new(config.cors_origins().map_err(ApiError::internal)?);
        let sse_ticket_ttl = config.sse_ticket_ttl().map_err(ApiError::internal)?;
        let read = Arc::new(match config.api.read_models {
            appreg_config::ReadModels::Inline => ReadModel::new(db.clone()).await?,
            appreg_config::ReadModels::External => ReadModel::external(db.clone()).await?,
        });
        Ok(AppState {
            supervisor: appreg_worker::Supervisor::new(appreg_worker::RestartPolicy::default()),
            portal: crate::portal::Portal::from_config(config)?.map(Arc::new),
            inner: Arc::new(Inner {
                commands: appreg_commands::Commands::new(store.clone(), config.command_settings()),
                store,
                personal: appreg_secrets::PersonalKeys::new(vault.clone()),
                vault,
                provider_client: appreg_dcr_client::provider::ProviderClient::with_options(
                    appreg_dcr_client::provider::ClientOptions {
                        allow_private: config.outbound_allow_private,
                        ..Default::default()
                    },
                )
                .map_err(ApiError::internal)?,
                read,
                auth,
                admin_role: config.auth.admin_role.clone(),
                admin_environments_claim: config.auth.admin_environments_claim.clone(),
                gateway_role: config.auth.gateway_role.clone(),
                api_key_grace: chrono::Duration::seconds(
                    i64::try_from(config.api_key_grace_seconds).unwrap_or(i64::MAX / 1000),
                ),
                default_application: config.api.default_application,
                seen_users: Default::default(),
                provider_registries: Default::default(),
                allow_http_redirect_uris: config.api.allow_http_redirect_uris,
                allow_http_webhooks: config.api.http_webhooks_on(),
                outbound_allow_private: config.outbound_allow_private,
                max_body_bytes: config.api.max_body_bytes,
                consistency_wait: Duration::from_millis(config.api.consistency_wait_ms),
                metrics: appreg_telemetry::metrics_handle(),
                known_environments: RwLock::new(HashSet::from(
                    [EnvironmentId::DEFAULT.to_string()],
                )),
                sse_heartbeat: Duration::from_millis(config.api.sse_heartbeat_ms.max(1)),
                streams: Arc::new(crate::streams::StreamLimits::new(
                    config.api.sse_max_streams_per_user,
                    config.api.sse_max_streams,
                )),
                sse_max_replay_events: config.api.sse_max_replay_events.max(0),
                closing: CancellationToken::new(),
                readyz_max_lag: Duration::from_millis(config.readyz_max_lag_ms),
                cors: Arc::new(cors),
                sse_ticket_ttl,
            }),
        })
    }

    /// The supervisor of the api's background tasks: dead ones make `/readyz` fail, given-up
    /// ones `/healthz`.
    pub fn supervisor(&self) -> &appreg_worker::Supervisor {
        &self.supervisor
    }

    /// The same state, its background tasks supervised by `supervisor` (another restart
    /// policy).
    pub fn with_supervisor(mut self, supervisor: appreg_worker::Supervisor) -> Self {
        self.supervisor = supervisor;
        self
    }

    /// The developer portal, when it is served.
    pub fn portal(&self) -> Option<&crate::portal::Portal> {
        self.portal.as_deref()
    }

    /// The same state, its portal (if served) signing users in with the development key
    /// (`appreg dev`).
    pub fn with_dev_sign_in(mut self, key: Arc<appreg_auth::DevKey>) -> Self {
        self.portal = self
            .portal
            .take()
            .map(|p| Arc::new(p.as_ref().clone().with_dev_sign_in(key)));
        self
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }
    pub fn vault(&self) -> &appreg_secrets::SecretStore {
        &self.inner.vault
    }
    pub fn personal(&self) -> &appreg_secrets::PersonalKeys {
        &self.inner.personal
    }
    pub fn provider_client(&self) -> &appreg_dcr_client::provider::ProviderClient {
        &self.inner.provider_client
    }
    /// Whether a webhook may be an `http` URL on a loopback host (`api.allow_http_webhooks`).
    pub fn allows_http_webhooks(&self) -> bool {
        self.inner.allow_http_webhooks
    }
    /// Whether URLs users chose may name loopback, private or otherwise non-public hosts
    /// (`outbound_allow_private`).
    pub fn allows_private_outbound(&self) -> bool {
        self.inner.outbound_allow_private
    }
    /// Whether an `http` URL is acceptable for a provider: on a loopback host, or when http is
    /// allowed (`allow_http_redirect_uris`, never in production).
    pub fn allows_http_url(&self, url: &str) -> bool {
        if self.inner.allow_http_redirect_uris {
            return true;
        }
        url::Url::parse(url).is_ok_and(|u| match u.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        })
    }
    pub fn read(&self) -> &Arc<ReadModel> {
        &self.inner.read
    }
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }
    /// An organisation administrator: the admin role, or `*` among administered environments.
    pub fn is_org_admin(&self, principal: &appreg_auth::Principal) -> bool {
        principal.roles.iter().any(|r| *r == self.inner.admin_role)
            || principal
                .strings(&self.inner.admin_environments_claim)
                .iter()
                .any(|e| e == "*")
    }

    /// An administrator of `env`: an organisation administrator, or `env` among the
    /// environments the token names. An administrator of one environment is nobody elsewhere.
    pub fn is_admin_of(&self, principal: &appreg_auth::Principal, env: &EnvironmentId) -> bool {
        self.is_org_admin(principal)
            || principal
                .strings(&self.inner.admin_environments_claim)
                .iter()
                .any(|e| e == env.as_str())
    }

    /// An API gateway: the configured gateway role in the role claim.
    pub fn is_gateway(&self, principal: &appreg_auth::Principal) -> bool {
        principal
            .roles
            .iter()
            .any(|r| *r == self.inner.gateway_role)
    }

    pub fn api_key_grace(&self) -> chrono::Duration {
        self.inner.api_key_grace
    }

    pub fn default_application(&self) -> bool {
        self.inner.default_application
    }

    pub fn user_seen(&self, env: &EnvironmentId, user: &appreg_domain::UserId) -> bool {
        let seen = self
            .inner
            .seen_users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        seen.contains(&(env.to_string(), user.to_string()))
    }

    pub fn mark_user_seen(&self, env: &EnvironmentId, user: &appreg_domain::UserId) {
        let mut seen = self
            .inner
            .seen_users
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.len() >= 100_000 {
            seen.clear();
        }
        seen.insert((env.to_string(), user.to_string()));
    }

    /// An environment's providers if read less than `max_age` ago.
    pub fn recent_registry(
        &self,
        env: &EnvironmentId,
        max_age: Duration,
    ) -> Option<appreg_domain::provider::ProviderRegistry> {
        let cache = self
            .inner
            .provider_registries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache
            .get(env.as_str())
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, registry)| registry.clone())
    }

    /// Remembers an environment's providers as just read (`None`: forgets them, after a change).
    pub fn remember_registry(
        &self,
        env: &EnvironmentId,
        registry: Option<appreg_domain::provider::ProviderRegistry>,
    ) {
        let mut cache = self
            .inner
            .provider_registries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match registry {
            Some(registry) => {
                if cache.len() >= 10_000 {
                    cache.clear();
                }
                cache.insert(env.to_string(), (std::time::Instant::now(), registry));
            }
            None => {
                cache.remove(env.as_str());
            }
        }
    }

    /// Remembers that an environment exists (after creating it).
    pub async fn mark_environment(&self, env: &EnvironmentId) {
        self.inner
            .known_environments
            .write()
            .await
            .insert(env.to_string());
    }
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }
    pub fn commands(&self) -> &appreg_commands::Commands {
        &self.inner.commands
    }
    pub fn consistency_wait(&self) -> Duration {
        self.inner.consistency_wait
    }

    pub fn sse_heartbeat(&self) -> Duration {
        self.inner.sse_heartbeat
    }

    /// The limits on open event streams.
    pub fn streams(&self) -> &Arc<crate::streams::StreamLimits> {
        &self.inner.streams
    }

    /// Farthest back (in events) an event stream resumes (`sse_max_replay_events`).
    pub fn sse_max_replay_events(&self) -> i64 {
        self.inner.sse_max_replay_events
    }

    /// Cancelled when the server shuts down.
    pub fn closing(&self) -> &CancellationToken {
        &self.inner.closing
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
    }

    /// The origins whose pages may call the api.
    pub fn cors(&self) -> &Arc<crate::cors::CorsPolicy> {
        &self.inner.cors
    }

    /// Lifetime of an event-stream ticket.
    pub fn sse_ticket_ttl(&self) -> Duration {
        self.inner.sse_ticket_ttl
    }

    /// The bound of `/readyz` on the read model's lag (`readyz_max_lag_ms`).
    pub fn readyz_max_lag(&self) -> Duration {
        self.inner.readyz_max_lag
    }

    /// How far the read model this api serves is behind the event log: the events after its
    /// position and the age of the first of them (also a database round trip).
    pub async fn projection_lag(&self) -> Result<Lag, sqlx::Error> {
        let read = self.read();
        let lag = lag::log_lag(read.database(), read.position()).await?;
        LagGauges::projection(appreg_readmodel::PROJECTION).set(lag);
        Ok(lag)
    }

    /// Keeps `appreg_projection_lag_events` / `_seconds` current until `shutdown` fires.
    pub async fn keep_lag_measured(self, shutdown: CancellationToken) {
        let read = self.read().clone();
        lag::keep_refreshed(
            read.database().clone(),
            LagGauges::projection(appreg_readmodel::PROJECTION),
            move || {
                let at = read.position();
                async move { Ok::<_, std::convert::Infallible>(at) }
            },
            shutdown,
        )
        .await;
    }

    /// The rules' configuration, with the environment's current settings.
    pub fn policy(&self, settings: appreg_domain::ClientRegistrationSettings) -> Policy {
        Policy {
            settings,
            allow_http_redirect_uris: self.inner.allow_http_redirect_uris,
        }
    }

    /// `DEFAULT` always exists; another environment exists once its stream has an event.
    pub async fn environment_exists(&self, env: &EnvironmentId) -> Result<bool, ApiError> {
        if self
            .inner
            .known_environments
            .read()
            .await
            .contains(env.as_str())
        {
            return Ok(true);
        }
        let stream = appreg_domain::environment::environment_stream(env);
        let exists = !self
            .inner
            .store
            .read_stream(&stream, 0, 1)
            .await?
            .is_empty();
        if exists {
            self.inner
                .known_environments
                .write()
                .await
                .insert(env.to_string());
        }
        Ok(exists)
    }
}
