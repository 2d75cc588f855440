//! `appreg notifier` as a service: [`build`] connects (its database, migrated: the event store,
//! the vault, the deliveries and its checkpoint) and binds the metrics listener;
//! [`Service::run`] runs the log follower that records deliveries and the dispatcher that sends
//! them, both supervised (a dead one fails `/readyz`), until shutdown.

use crate::dispatch::{self, Dispatcher};
use crate::ingest::Ingest;
use crate::{NotifierConfig, CHECKPOINT};
use appreg_config::Config;
use appreg_eventstore::Database;
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::follower::{self, Checkpoint, FollowerConfig};
use appreg_worker::probes::{BindError, MetricsListener};
use appreg_worker::service::{run_follower, FollowerTask, Opened, Start};
use appreg_worker::Supervisor;
use std::sync::Arc;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

const CHECKPOINT_ROW: Checkpoint = Checkpoint {
    table: "notifier_checkpoints",
    name: CHECKPOINT,
};
/// The advisory locks that make one follower and one dispatcher active per database.
const INGEST_LOCK: &str = "notifier";
const DISPATCH_LOCK: &str = "notifier-dispatch";
const MAIL_LOCK: &str = "notifier-mail";

/// Why the notifier cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Metrics(#[from] BindError),
    #[error("the vault: {0}")]
    Vault(String),
    #[error(transparent)]
    Mail(#[from] crate::MailSetupError),
    #[error("the outbound HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the notifier task failed")]
    Task(#[source] tokio::task::JoinError),
}

/// Runs `run` as the supervised task `name`, active only while this process holds the lock
/// `lock` (on PostgreSQL; at once on SQLite), until `shutdown` fires.
fn spawn_led<F, Fut>(
    supervisor: &Supervisor,
    name: &'static str,
    lock: &'static str,
    pool: Option<sqlx::PgPool>,
    shutdown: &CancellationToken,
    run: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(CancellationToken) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let outer = shutdown.clone();
    supervisor.spawn(name, shutdown.clone(), move || {
        let (pool, shutdown, run) = (pool.clone(), outer.clone(), run.clone());
        async move {
            appreg_worker::lead(
                name,
                pool.as_ref(),
                lock,
                std::time::Duration::from_secs(1),
                &shutdown,
                run,
            )
            .await;
            Ok::<_, std::convert::Infallible>(())
        }
    })
}

/// The notifier, connected, ready to run.
pub struct Service {
    database: Opened,
    ingest: Arc<Ingest>,
    dispatcher: Arc<Dispatcher>,
    mailer: Option<Arc<crate::mail::Mailer>>,
    store: Arc<dyn appreg_eventstore::EventStore>,
    supervisor: Supervisor,
    metrics: Option<MetricsListener>,
}

/// The vault's keyring from the configuration (the signing secrets are sealed with it).
fn keyring(config: &Config) -> Result<appreg_secrets::Keyring, ServiceError> {
    use secrecy::ExposeSecret;
    let current = config.secrets_master_key.as_ref().ok_or_else(|| {
        ServiceError::Vault(
            "secrets_master_key is not configured (APPREG_SECRETS_MASTER_KEY)".into(),
        )
    })?;
    appreg_secrets::Keyring::parse(
        current.expose_secret(),
        config
            .secrets_previous_keys
            .iter()
            .map(|k| k.expose_secret()),
    )
    .map_err(|e| ServiceError::Vault(format!("secrets_master_key: {e}")))
}

/// The notifier of `config` on `start`'s database.
///
/// # Errors
/// The database cannot be opened or migrated, the master key is missing, the metrics address
/// cannot be listened on.
pub async fn build(config: &Config, start: &Start) -> Result<Service, ServiceError> {
    appreg_telemetry::metrics_handle();
    let keyring = Arc::new(keyring(config)?);
    let database = start.open(8).await?;
    let db: Database = database.db.clone();
    if database.owned {
        connect::migrate("the event store", db.migrate()).await?;
    }
    // Its own tables, also on a shared database (`appreg dev` migrates the others' tables).
    connect::migrate("the notifier's tables", crate::migrate(&db)).await?;
    let store = appreg_telemetry::count_appends(connect::event_store(&db).await?);
    let notifier = NotifierConfig::from_config(config);
    let commands = appreg_commands::Commands::new(store.clone(), notifier.commands.clone());
    let wake = Arc::new(Notify::new());
    let mailer = match &config.notifier.smtp_url {
        Some(url) => {
            let (transport, from) =
                crate::mail::Mailer::transport(url, &config.notifier.mail_from, &notifier)?;
            Some(Arc::new(crate::mail::Mailer {
                db: db.clone(),
                keys: appreg_secrets::PersonalKeys::new(appreg_secrets::SecretStore::new(
                    db.clone(),
                    keyring.clone(),
                )),
                transport,
                from,
                config: notifier.clone(),
                wake: Arc::new(Notify::new()),
            }))
        }
        None => None,
    };
    let metrics = start.metrics_listener("notifier").await?;
    for outcome in ["delivered", "retry", "failed", "gone", "not_sent"] {
        metrics::counter!("appreg_notifier_deliveries_total", "outcome" => outcome).increment(0);
    }
    Ok(Service {
        ingest: Arc::new(Ingest {
            commands: commands.clone(),
            db: db.clone(),
            keys: appreg_secrets::PersonalKeys::new(appreg_secrets::SecretStore::new(
                db.clone(),
                keyring.clone(),
            )),
            wake: wake.clone(),
            mail: mailer
                .as_ref()
                .map(|m| (notifier.api_key_expiring_days, m.wake.clone())),
        }),
        mailer,
        dispatcher: Arc::new(Dispatcher {
            db: db.clone(),
            commands,
            vault: appreg_secrets::SecretStore::new(db.clone(), keyring),
            client: dispatch::client().map_err(ServiceError::Client)?,
            in_flight: Arc::new(Semaphore::new(notifier.max_in_flight)),
            config: notifier,
            wake,
        }),
        database,
        store,
        supervisor: Supervisor::new(Default::default()),
        metrics,
    })
}

impl Service {
    /// Supervises the notifier with `supervisor`'s tasks (`appreg dev`: a dead one fails the
    /// api's `/readyz`) instead of its own.
    pub fn supervised_by(mut self, supervisor: &Supervisor) -> Self {
        self.supervisor = supervisor.clone();
        self
    }

    /// Runs the notifier until `shutdown` fires: the follower recording deliveries (lag gauges
    /// `appreg_notifier_lag_*`) and the dispatcher sending them, each active in one instance
    /// per database; then closes what it opened.
    ///
    /// # Errors
    /// A supervised task panicked beyond recovery.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServiceError> {
        let db = self.database.db.clone();
        let dispatcher = self.dispatcher.clone();
        let pool = match &db {
            Database::Postgres(pool) => Some(pool.clone()),
            Database::Sqlite(_) => None,
        };
        let mailing = self.mailer.map(|mailer| {
            spawn_led(
                &self.supervisor,
                "notifier-mail",
                MAIL_LOCK,
                pool.clone(),
                &shutdown,
                move |stop| mailer.clone().run(stop),
            )
        });
        let dispatching = spawn_led(
            &self.supervisor,
            "notifier-dispatch",
            DISPATCH_LOCK,
            pool.clone(),
            &shutdown,
            move |stop| dispatcher.clone().run(stop),
        );
        let (ingest, store) = (self.ingest, self.store);
        let task = FollowerTask {
            name: "notifier",
            lag_task: "notifier-lag",
            lag_prefix: "appreg_notifier",
            checkpoint: ("notifier_checkpoints", CHECKPOINT),
        };
        let followed = run_follower(
            self.database,
            self.supervisor,
            self.metrics,
            task,
            shutdown,
            move |stop| {
                let handler = Ingest {
                    commands: ingest.commands.clone(),
                    db: ingest.db.clone(),
                    keys: ingest.keys.clone(),
                    wake: ingest.wake.clone(),
                    mail: ingest.mail.clone(),
                };
                let config = FollowerConfig::new("notifier", INGEST_LOCK, CHECKPOINT_ROW);
                follower::follow(handler, config, db.clone(), store.clone(), stop)
            },
        )
        .await;
        let _ = dispatching.await;
        if let Some(mailing) = mailing {
            let _ = mailing.await;
        }
        followed.map_err(ServiceError::Task)
    }
}
