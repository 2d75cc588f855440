//! The state shared by every request: the event store, the read model, the authenticator and
//! the configuration the rules depend on.

use crate::error::ApiError;
use crate::readmodel::ReadModel;
use appreg_auth::Authenticator;
use appreg_config::Config;
use appreg_domain::{EnvironmentId, Policy};
use appreg_eventstore::{Database, EventStore};
use appreg_telemetry::PrometheusHandle;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn EventStore>,
    read: Arc<ReadModel>,
    auth: Arc<Authenticator>,
    admin_role: String,
    allow_http_redirect_uris: bool,
    max_body_bytes: usize,
    retries: u32,
    consistency_wait: Duration,
    metrics: PrometheusHandle,
    known_environments: RwLock<HashSet<String>>,
}

impl AppState {
    pub async fn new(
        config: &Config,
        db: &Database,
        auth: Arc<Authenticator>,
    ) -> Result<AppState, ApiError> {
        let store = db.event_store().await?;
        let read = Arc::new(ReadModel::new(db.clone()).await?);
        Ok(AppState {
            inner: Arc::new(Inner {
                store,
                read,
                auth,
                admin_role: config.auth.admin_role.clone(),
                allow_http_redirect_uris: config.allow_http_redirect_uris,
                max_body_bytes: config.max_body_bytes,
                retries: config.command_retries.max(1),
                consistency_wait: Duration::from_millis(config.consistency_wait_ms),
                metrics: appreg_telemetry::metrics_handle(),
                known_environments: RwLock::new(HashSet::from(
                    [EnvironmentId::DEFAULT.to_string()],
                )),
            }),
        })
    }

    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }
    pub fn read(&self) -> &Arc<ReadModel> {
        &self.inner.read
    }
    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }
    pub fn admin_role(&self) -> &str {
        &self.inner.admin_role
    }
    pub fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }
    pub fn retries(&self) -> u32 {
        self.inner.retries
    }
    pub fn consistency_wait(&self) -> Duration {
        self.inner.consistency_wait
    }

    pub fn metrics(&self) -> &PrometheusHandle {
        &self.inner.metrics
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
        let stream = format!("environment-{env}");
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
