//! `appreg projector` as a service: [`build`] connects (the read models' database, migrated; a
//! NATS client that keeps retrying) and binds the metrics listener; [`Service::run`] keeps the
//! read models until shutdown.

use crate::ProjectorConfig;
use appreg_config::{Config, NatsServers};
use appreg_readmodel::{ReadModel, ReadModelError};
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::probes::{BindError, MetricsListener, Readiness};
use appreg_worker::service::{Opened, Start};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the projector cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Metrics(#[from] BindError),
    #[error("cannot open the read models")]
    ReadModel(#[source] ReadModelError),
}

impl ProjectorConfig {
    /// The projector settings of the shared configuration (`nats_stream`,
    /// `nats_subject_prefix`, `[projector]`).
    pub fn from_config(config: &Config) -> Self {
        let settings = config.projector_settings();
        ProjectorConfig {
            stream: config.nats_stream.clone(),
            subject_prefix: config.nats_subject_prefix.clone(),
            consumer: settings.consumer,
            batch: settings.batch.max(1),
            ack_wait: Duration::from_millis(settings.ack_wait_ms.max(1)),
            silence: Duration::from_millis(settings.catch_up_after_ms),
            ..ProjectorConfig::default()
        }
    }
}

/// The projector, connected, ready to run.
pub struct Service {
    config: ProjectorConfig,
    database: Opened,
    read: Arc<ReadModel>,
    store: Arc<dyn appreg_eventstore::EventStore>,
    nats: async_nats::Client,
    servers: String,
    metrics: Option<MetricsListener>,
}

/// The projector of `config` on `start`'s database, consuming from `nats`.
///
/// # Errors
/// The database cannot be opened or migrated, the NATS client cannot be set up, the metrics
/// address cannot be listened on.
pub async fn build(
    config: &Config,
    start: &Start,
    nats: &NatsServers,
) -> Result<Service, ServiceError> {
    appreg_telemetry::metrics_handle();
    let database = start.open(4).await?;
    let db = &database.db;
    if database.owned {
        connect::migrate("the event store", db.migrate()).await?;
        connect::migrate("the read models", appreg_readmodel::migrate(db)).await?;
    }
    let client = connect::nats(nats, "appreg-projector").await?;
    let metrics = start.metrics_listener("projector").await?;
    let read = ReadModel::new(db.clone())
        .await
        .map_err(ServiceError::ReadModel)?;
    let store = connect::event_store(db).await?;
    Ok(Service {
        config: ProjectorConfig::from_config(config),
        database,
        read: Arc::new(read),
        store,
        nats: client,
        servers: nats.to_string(),
        metrics,
    })
}

impl Service {
    /// Keeps the read models until `shutdown` fires, then closes what it opened.
    ///
    /// # Errors
    /// None today (NATS and PostgreSQL failures are retried); the signature is every service's.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        if let Some(listener) = self.metrics {
            let ready = Readiness::new(&self.database.db, Some(&self.nats));
            listener.spawn(appreg_telemetry::metrics_handle(), ready, shutdown.clone());
        }
        tracing::info!(
            stream = %self.config.stream,
            consumer = %self.config.consumer,
            nats = %self.servers,
            "appreg projector starting"
        );
        crate::run(self.config, self.read, self.store, self.nats, shutdown).await;
        self.database.close().await;
        Ok(())
    }
}
