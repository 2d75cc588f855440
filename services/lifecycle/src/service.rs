//! `appreg lifecycle` as a service: [`build`] connects (its database, migrated: the event
//! store, the vault and its checkpoint table) and binds the metrics listener; [`Service::run`]
//! runs the process manager, supervised, with its lag gauges, until shutdown.

use crate::LifecycleConfig;
use appreg_config::Config;
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::probes::{BindError, MetricsListener};
use appreg_worker::service::{run_follower, FollowerTask, Opened, Start};
use appreg_worker::Supervisor;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Why the process manager cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Metrics(#[from] BindError),
    #[error("the lifecycle process manager task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl LifecycleConfig {
    /// The process manager's settings of the shared configuration (`[lifecycle]`, `[commands]`).
    pub fn from_config(config: &Config) -> Self {
        LifecycleConfig {
            step_pause: std::time::Duration::from_millis(config.lifecycle_settings().step_pause_ms),
            commands: config.command_settings(),
        }
    }
}

/// The process manager, connected, ready to run.
pub struct Service {
    config: LifecycleConfig,
    database: Opened,
    store: Arc<dyn appreg_eventstore::EventStore>,
    supervisor: Supervisor,
    metrics: Option<MetricsListener>,
}

/// The process manager of `config` on `start`'s database.
///
/// # Errors
/// The database cannot be opened or migrated, the metrics address cannot be listened on.
pub async fn build(config: &Config, start: &Start) -> Result<Service, ServiceError> {
    appreg_telemetry::metrics_handle();
    let database = start.open(4).await?;
    let db = &database.db;
    if database.owned {
        connect::migrate("the event store", db.migrate()).await?;
        connect::migrate("the lifecycle process manager's tables", crate::migrate(db)).await?;
    }
    let store = appreg_telemetry::count_appends(connect::event_store(db).await?);
    let metrics = start.metrics_listener("lifecycle").await?;
    Ok(Service {
        config: LifecycleConfig::from_config(config),
        database,
        store,
        supervisor: Supervisor::new(Default::default()),
        metrics,
    })
}

impl Service {
    /// Supervises the process manager with `supervisor`'s tasks (`appreg dev`: a dead one
    /// fails the api's `/readyz`) instead of its own.
    pub fn supervised_by(mut self, supervisor: &Supervisor) -> Self {
        self.supervisor = supervisor.clone();
        self
    }

    /// Runs the process manager until `shutdown` fires: supervised (restarted from its
    /// checkpoint when it dies), with its lag gauges (`appreg_lifecycle_lag_*`) and its metrics
    /// listener; then closes what it opened.
    ///
    /// # Errors
    /// The supervised task panicked beyond recovery.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let db = self.database.db.clone();
        let (config, store) = (self.config, self.store);
        let task = FollowerTask {
            name: "lifecycle",
            lag_task: "lifecycle-lag",
            lag_prefix: "appreg_lifecycle",
            checkpoint: ("lifecycle_checkpoints", crate::CHECKPOINT),
            nats: None,
        };
        run_follower(
            self.database,
            self.supervisor,
            self.metrics,
            task,
            shutdown,
            move |stop| crate::run(config.clone(), db.clone(), store.clone(), stop),
        )
        .await
        .map_err(ServiceError::Task)
    }
}
