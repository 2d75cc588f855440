//! `appreg api` as a service: [`build`] connects (its database, migrated: the event store, the
//! read models, the vault), sets up whose tokens it trusts, builds its state and binds its
//! listener; [`Service::run`] serves until shutdown, then drains.

use crate::{ApiError, AppState};
use appreg_auth::{Authenticator, DevKey, JwksSettings, RemoteIssuer};
use appreg_config::{AuthConfig, Config, ConfigError, TokenTrust};
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::service::{Opened, Start};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the api cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] appreg_auth::AuthError),
    #[error(transparent)]
    State(#[from] ApiError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the api server failed")]
    Serve(#[source] std::io::Error),
}

/// How the api keeps an external issuer's keys (`auth.jwks_*`).
pub fn jwks_settings(auth: &AuthConfig) -> JwksSettings {
    JwksSettings {
        max_age: Duration::from_secs(auth.jwks_max_age_seconds),
        unknown_kid_interval: Duration::from_secs(auth.jwks_unknown_kid_interval_seconds),
        stale_if_error: Duration::from_secs(auth.jwks_stale_if_error_seconds),
        timeout: Duration::from_millis(auth.jwks_timeout_ms.max(1)),
        ..JwksSettings::default()
    }
}

/// Whose tokens the api of `config` accepts ([`AuthConfig::trust`]): the development key of
/// `data_dir`, or the external issuer with its JWKS and audience.
///
/// # Errors
/// A missing setting, or an unusable development key.
pub fn authenticator(config: &Config) -> Result<Arc<Authenticator>, ServiceError> {
    Ok(match config.auth.trust()? {
        TokenTrust::Dev => {
            let key = DevKey::load_or_create(&config.data_dir)?;
            Authenticator::dev(&key, &config.auth.role_claim)
        }
        TokenTrust::Issuer {
            issuer,
            jwks_url,
            audience,
        } => Authenticator::remote(RemoteIssuer {
            issuer: issuer.into(),
            jwks_url: jwks_url.into(),
            audience: audience.into(),
            role_claim: config.auth.role_claim.clone(),
            jwks: jwks_settings(&config.auth),
        })?,
    })
}

/// The api, built and listening, ready to serve.
pub struct Service {
    database: Opened,
    state: AppState,
    listener: tokio::net::TcpListener,
}

/// The api of `config` on `start`'s database, trusting the tokens `config` says
/// ([`authenticator`]).
///
/// # Errors
/// As [`build_with`], and [`authenticator`]'s.
pub async fn build(config: &Config, start: &Start) -> Result<Service, ServiceError> {
    build_with(config, start, authenticator(config)?).await
}

/// The api of `config` on `start`'s database, trusting `auth`'s tokens (`appreg dev`: its
/// development key), listening on `listen`.
///
/// # Errors
/// The database cannot be opened or migrated, the state cannot be built (no master key…), the
/// address cannot be listened on.
pub async fn build_with(
    config: &Config,
    start: &Start,
    auth: Arc<Authenticator>,
) -> Result<Service, ServiceError> {
    // Settings checked before anything is opened: a clear configuration error.
    config.cors_origins()?;
    config.sse_ticket_ttl()?;
    let database = start.open(config.database_max_connections).await?;
    if database.owned {
        connect::migrate("the api's tables", crate::migrate(&database.db)).await?;
    }
    let state = AppState::new(config, &database.db, auth).await?;
    let listener = tokio::net::TcpListener::bind(&config.api.listen)
        .await
        .map_err(|source| ServiceError::Listen {
            addr: config.api.listen.clone(),
            source,
        })?;
    Ok(Service {
        database,
        state,
        listener,
    })
}

impl Service {
    /// Supervises the api's tasks with `supervisor` (`appreg dev`: with the saga and the
    /// process manager, so a dead one fails `/readyz`).
    pub fn supervised_by(mut self, supervisor: appreg_worker::Supervisor) -> Self {
        self.state = self.state.with_supervisor(supervisor);
        self
    }

    /// Its state (event store, vault, read models), shared with the server once it runs.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The portal (when `portal_enabled` is on) signs users in with the development key
    /// (`appreg dev` only: `appreg api` never mounts the development sign-in).
    pub fn with_dev_sign_in(mut self, key: Arc<appreg_auth::DevKey>) -> Self {
        self.state = self.state.with_dev_sign_in(key);
        self
    }

    /// The address the api listens on.
    ///
    /// # Errors
    /// The socket has none.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` fires (in-flight requests drained), then closes what it opened.
    ///
    /// # Errors
    /// The server failed.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, postgres = self.database.db.is_postgres(), "appreg listening");
        }
        let served = crate::run(self.listener, self.state, shutdown).await;
        self.database.close().await;
        served.map_err(ServiceError::Serve)
    }
}
