//! `appreg dcr-saga` as a service: [`build`] connects (its database, migrated: the event store,
//! the vault and the saga's tables), builds the saga from the configuration (keyring, provider
//! client, `[dcr]`, `[commands]`) and binds the metrics listener; [`Service::run`] runs it,
//! supervised, with its lag gauges, until shutdown.

use crate::{Saga, SagaConfig};
use appreg_config::Config;
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::probes::{BindError, MetricsListener};
use appreg_worker::service::{run_follower, FollowerTask, Opened, Start};
use appreg_worker::Supervisor;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why the saga cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Metrics(#[from] BindError),
    #[error("secrets_master_key is not configured (APPREG_SECRETS_MASTER_KEY)")]
    NoMasterKey,
    #[error("secrets_master_key")]
    MasterKey(#[source] appreg_secrets::KeyError),
    #[error("cannot build the provider client")]
    ProviderClient(#[source] appreg_dcr_client::provider::ProviderError),
    #[error("the saga task failed")]
    Task(#[source] tokio::task::JoinError),
}

impl SagaConfig {
    /// The saga settings of the shared configuration: `[dcr]`, and `[commands]` without group
    /// commit (the saga group-commits the clients it obtains itself).
    pub fn from_config(config: &Config) -> Self {
        let dcr = &config.dcr;
        SagaConfig {
            commands: appreg_commands::CommandSettings {
                group_commit_writers: 0,
                ..config.command_settings()
            },
            concurrency: dcr.max_in_flight.max(1),
            provider_concurrency: dcr.provider_concurrency.max(1),
            park_after: dcr.park_after,
            attempts: dcr.attempts.max(1),
            first_delay: Duration::from_millis(dcr.first_delay_ms),
            max_delay: Duration::from_millis(dcr.max_delay_ms),
        }
    }
}

/// The vault's keyring from the configuration (`secrets_master_key`, `secrets_previous_keys`).
///
/// # Errors
/// No master key, or a malformed one (the message never holds a key).
pub fn keyring(config: &Config) -> Result<appreg_secrets::Keyring, ServiceError> {
    use secrecy::ExposeSecret;
    let current = config
        .secrets_master_key
        .as_ref()
        .ok_or(ServiceError::NoMasterKey)?;
    appreg_secrets::Keyring::parse(
        current.expose_secret(),
        config
            .secrets_previous_keys
            .iter()
            .map(|k| k.expose_secret()),
    )
    .map_err(ServiceError::MasterKey)
}

/// The saga, built, ready to run.
pub struct Service {
    database: Opened,
    saga: Arc<Saga>,
    store: Arc<dyn appreg_eventstore::EventStore>,
    supervisor: Supervisor,
    metrics: Option<MetricsListener>,
}

/// The saga of `config` on `start`'s database.
///
/// # Errors
/// The database cannot be opened or migrated, no usable master key, the provider client or
/// the metrics listener cannot be set up.
pub async fn build(config: &Config, start: &Start) -> Result<Service, ServiceError> {
    appreg_telemetry::metrics_handle();
    let database = start.open(8).await?;
    let db = &database.db;
    if database.owned {
        connect::migrate("the event store", db.migrate()).await?;
        connect::migrate("the vault", appreg_secrets::store::migrate(db)).await?;
        connect::migrate("the DCR saga's tables", crate::migrate(db)).await?;
    }
    let vault = appreg_secrets::SecretStore::new(db.clone(), Arc::new(keyring(config)?));
    let client = appreg_dcr_client::provider::ProviderClient::with_options(
        appreg_dcr_client::provider::ClientOptions {
            allow_private: config.outbound_allow_private,
            ..Default::default()
        },
    )
    .map_err(ServiceError::ProviderClient)?;
    let store = appreg_telemetry::count_appends(connect::event_store(db).await?);
    let saga = Arc::new(Saga::new(
        db.clone(),
        store.clone(),
        vault,
        client,
        SagaConfig::from_config(config),
    ));
    let metrics = start.metrics_listener("dcr-saga").await?;
    Ok(Service {
        database,
        saga,
        store,
        supervisor: Supervisor::new(Default::default()),
        metrics,
    })
}

impl Service {
    /// Supervises the saga with `supervisor`'s tasks (`appreg dev`: a dead saga fails the api's
    /// `/readyz`) instead of its own.
    pub fn supervised_by(mut self, supervisor: &Supervisor) -> Self {
        self.supervisor = supervisor.clone();
        self
    }

    /// The saga.
    pub fn saga(&self) -> &Arc<Saga> {
        &self.saga
    }

    /// The event store it appends to (its appends counted).
    pub fn store(&self) -> &Arc<dyn appreg_eventstore::EventStore> {
        &self.store
    }

    /// Runs the saga until `shutdown` fires: supervised (restarted from its checkpoint when it
    /// dies), with its lag gauges (`appreg_saga_lag_*`) and its metrics listener; then closes
    /// what it opened.
    ///
    /// # Errors
    /// The supervised task panicked beyond recovery.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let db = self.database.db.clone();
        let (saga, store) = (self.saga, self.store);
        let concurrency = saga.config().concurrency;
        let task = FollowerTask {
            name: "dcr-saga",
            lag_task: "saga-lag",
            lag_prefix: "appreg_saga",
            checkpoint: ("saga_checkpoints", "dcr-saga"),
            nats: None,
        };
        run_follower(
            self.database,
            self.supervisor,
            self.metrics,
            task,
            shutdown,
            move |stop| crate::run(saga.clone(), db.clone(), store.clone(), concurrency, stop),
        )
        .await
        .map_err(ServiceError::Task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every setting of `[dcr]` reaches the saga; `[commands]` does too, without group commit.
    #[test]
    fn every_saga_setting_comes_from_the_configuration() {
        let mut config = Config::defaults();
        config.dcr = appreg_config::DcrSettings {
            max_in_flight: 7,
            provider_concurrency: 3,
            park_after: 2,
            attempts: 9,
            first_delay_ms: 11,
            max_delay_ms: 13,
        };
        config.commands.retries = 4;
        let saga = SagaConfig::from_config(&config);
        assert_eq!(
            (saga.concurrency, saga.provider_concurrency, saga.park_after),
            (7, 3, 2)
        );
        assert_eq!(saga.attempts, 9);
        assert_eq!(saga.first_delay, Duration::from_millis(11));
        assert_eq!(saga.max_delay, Duration::from_millis(13));
        assert_eq!(saga.commands.retries, 4);
        assert_eq!(saga.commands.group_commit_writers, 0);
        // The defaults are the saga's former constants.
        let defaults = SagaConfig::from_config(&Config::defaults());
        let former = SagaConfig::default();
        assert_eq!(defaults.attempts, former.attempts);
        assert_eq!(defaults.first_delay, former.first_delay);
        assert_eq!(defaults.max_delay, former.max_delay);
        assert_eq!(defaults.concurrency, former.concurrency);
        assert_eq!(defaults.provider_concurrency, former.provider_concurrency);
        assert_eq!(defaults.park_after, former.park_after);
        assert_eq!(
            defaults.commands.group_commit_writers,
            former.commands.group_commit_writers
        );
    }

    /// `build` opens and migrates its database, and refuses to start without a master key,
    /// saying which setting is missing (and never a key).
    #[tokio::test]
    async fn build_migrates_its_tables_and_needs_a_master_key() {
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        let start = Start::url(url.clone(), None);
        let refused = build(&Config::defaults(), &start).await.err().unwrap();
        assert!(
            refused.to_string().contains("APPREG_SECRETS_MASTER_KEY"),
            "{refused}"
        );
        let db = appreg_eventstore::Database::connect(&url, 1).await.unwrap();
        // Its own tables were created before the key was looked at.
        assert!(crate::parked(&db, 10).await.unwrap().0.is_empty());

        let mut config = Config::defaults();
        let key = appreg_secrets::MasterKey::generate("t", &mut rand::rngs::OsRng).unwrap();
        config.secrets_master_key = Some(key.to_config_string());
        let service = build(&config, &start).await.unwrap();
        assert_eq!(service.saga().config().attempts, 5);
        // A shared database is not closed by the service: it stays usable after the run.
        let shared = build(&config, &Start::shared(&db)).await.unwrap();
        let stop = CancellationToken::new();
        stop.cancel();
        shared.run(stop).await.unwrap();
        assert!(crate::parked(&db, 10).await.is_ok());
    }
}
