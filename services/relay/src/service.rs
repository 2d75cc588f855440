//! `appreg relay` as a service: [`build`] connects (the event store's database, migrated; a
//! NATS client that keeps retrying) and binds the metrics listener; [`Service::run`] publishes
//! until shutdown.

use crate::{RelayConfig, RelayError};
use appreg_config::{Config, NatsServers};
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::probes::{BindError, MetricsListener, Readiness};
use appreg_worker::service::{Opened, Start};
use tokio_util::sync::CancellationToken;

/// Why the relay cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Metrics(#[from] BindError),
    #[error(transparent)]
    Relay(#[from] RelayError),
}

/// The relay, connected, ready to run.
pub struct Service {
    config: RelayConfig,
    database: Opened,
    store: std::sync::Arc<dyn appreg_eventstore::EventStore>,
    nats: async_nats::Client,
    servers: String,
    metrics: Option<MetricsListener>,
}

/// The relay of `config` on `start`'s database, publishing to `nats`.
///
/// # Errors
/// The database cannot be opened or migrated, the NATS client cannot be set up, the metrics
/// address cannot be listened on.
pub async fn build(
    config: &Config,
    start: &Start,
    nats: &NatsServers,
) -> Result<Service, ServiceError> {
    // The recorder, installed before the relay registers its metrics.
    appreg_telemetry::metrics_handle();
    let database = start.open(4).await?;
    if database.owned {
        connect::migrate("the event store", database.db.migrate()).await?;
    }
    let store = connect::event_store(&database.db).await?;
    let client = connect::nats(nats, "appreg-relay").await?;
    let metrics = start.metrics_listener("relay").await?;
    Ok(Service {
        config: RelayConfig::from_config(config),
        database,
        store,
        nats: client,
        servers: nats.to_string(),
        metrics,
    })
}

impl Service {
    /// The NATS client the relay publishes with.
    pub fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    /// Publishes until `shutdown` fires, then closes what it opened.
    ///
    /// # Errors
    /// An unusable configuration (stream name, subject prefix) or event store.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let db = &self.database.db;
        if let Some(listener) = self.metrics {
            let ready = Readiness::new(db, Some(&self.nats));
            listener.spawn(appreg_telemetry::metrics_handle(), ready, shutdown.clone());
        }
        let pg_pool = match db {
            appreg_eventstore::Database::Postgres(pool) => Some(pool.clone()),
            appreg_eventstore::Database::Sqlite(_) => None,
        };
        tracing::info!(
            stream = %self.config.stream,
            subject_prefix = %self.config.subject_prefix,
            nats = %self.servers,
            postgres = db.is_postgres(),
            "appreg relay starting"
        );
        let ran = crate::run(self.config, self.store, pg_pool, self.nats, shutdown).await;
        self.database.close().await;
        Ok(ran?)
    }
}
