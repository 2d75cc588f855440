//! `appreg notifier` as a service: [`build`] connects (its database, migrated: the event store,
//! the vault, the deliveries and its checkpoint) and binds the metrics listener;
//! [`Service::run`] runs the log follower that records deliveries and the dispatcher that sends
//! them, both supervised (a dead one fails `/readyz`), until shutdown.

use crate::dispatch::{self, Dispatcher};
use crate::endpoints::Endpoints;
use crate::ingest::Ingest;
use crate::{NotifierConfig, CHECKPOINT};
use appreg_config::{Config, NatsServers};
use appreg_eventstore::Database;
use appreg_worker::connect::{self, ConnectError};
use appreg_worker::consumer::ConsumerConfig;
use appreg_worker::follower::{self, Checkpoint, FollowerConfig};
use appreg_worker::probes::{BindError, MetricsListener};
use appreg_worker::service::{run_follower, FollowerTask, Opened, Start};
use appreg_worker::Supervisor;
use futures::future::Either;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const CHECKPOINT_ROW: Checkpoint = Checkpoint {
    table: "notifier_checkpoints",
    name: CHECKPOINT,
};
/// The advisory locks that make one ingest (log follower or JetStream consumer), one
/// dispatcher and one mailer active per database.
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
    /// The NATS client and durable consumer the events come through (else the log is followed).
    consumer: Option<(async_nats::Client, ConsumerConfig)>,
    store: Arc<dyn appreg_eventstore::EventStore>,
    supervisor: Supervisor,
    metrics: Option<MetricsListener>,
}

/// The notifier's durable consumer (`notifier.consumer`, `notifier.ack_wait_ms`; with the
/// defaults: `deploy/nats/consumers/appreg-notifier.json`).
pub fn consumer_config(config: &Config) -> ConsumerConfig {
    let n = &config.notifier;
    ConsumerConfig {
        label: "notifier",
        lock: INGEST_LOCK,
        checkpoint: CHECKPOINT_ROW,
        stream: config.nats_stream.clone(),
        subject_prefix: config.nats_subject_prefix.clone(),
        durable: n.consumer.clone(),
        description: "appreg webhooks and e-mail",
        batch: 500,
        ack_wait: std::time::Duration::from_millis(n.ack_wait_ms.max(1)),
        first_retry: std::time::Duration::from_millis(200),
        last_retry: std::time::Duration::from_secs(10),
        catch_up_after: std::time::Duration::from_millis(n.catch_up_after_ms),
    }
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

/// The notifier of `config` on `start`'s database: on PostgreSQL with `nats`, following the
/// events through its durable JetStream consumer (`notifier.consumer`), else the event log
/// itself (SQLite, `appreg dev`).
///
/// # Errors
/// The database cannot be opened or migrated, the master key is missing, the metrics address
/// cannot be listened on.
pub async fn build(
    config: &Config,
    start: &Start,
    nats: Option<&NatsServers>,
) -> Result<Service, ServiceError> {
    appreg_telemetry::metrics_handle();
    let keyring = Arc::new(keyring(config)?);
    // The follower, the dispatcher's poll, the attempts' writer, a refill, the mailer and the
    // leader locks' connections.
    let database = start.open(12).await?;
    let db: Database = database.db.clone();
    if database.owned {
        connect::migrate("the event store", db.migrate()).await?;
    }
    // Its own tables, also on a shared database (`appreg dev` migrates the others' tables).
    connect::migrate("the notifier's tables", crate::migrate(&db)).await?;
    let store = appreg_telemetry::count_appends(connect::event_store(&db).await?);
    let notifier = NotifierConfig::from_config(config);
    let commands = appreg_commands::Commands::new(store.clone(), notifier.commands.clone());
    let endpoints = Arc::new(Endpoints::new(
        commands.clone(),
        appreg_secrets::SecretStore::new(db.clone(), keyring.clone()),
    ));
    let dispatcher = Arc::new(Dispatcher::new(
        db.clone(),
        commands.clone(),
        endpoints.clone(),
        dispatch::client(notifier.allow_private).map_err(ServiceError::Client)?,
        notifier.clone(),
    ));
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
    let consumer = match nats {
        Some(servers) if db.is_postgres() => Some((
            connect::nats(servers, "appreg-notifier").await?,
            consumer_config(config),
        )),
        _ => None,
    };
    for outcome in ["delivered", "retry", "failed", "gone", "not_sent"] {
        metrics::counter!("appreg_notifier_deliveries_total", "outcome" => outcome).increment(0);
    }
    Ok(Service {
        ingest: Arc::new(Ingest {
            commands,
            db: db.clone(),
            keys: appreg_secrets::PersonalKeys::new(appreg_secrets::SecretStore::new(
                db.clone(),
                keyring.clone(),
            )),
            endpoints,
            dispatcher: dispatcher.clone(),
            mail: mailer
                .as_ref()
                .map(|m| (notifier.api_key_expiring_days, m.wake.clone())),
        }),
        mailer,
        dispatcher,
        consumer,
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
        let (ingest, store, consumer) = (self.ingest, self.store, self.consumer);
        let task = FollowerTask {
            name: "notifier",
            lag_task: "notifier-lag",
            lag_prefix: "appreg_notifier",
            checkpoint: ("notifier_checkpoints", CHECKPOINT),
            nats: consumer.as_ref().map(|(nats, _)| nats.clone()),
        };
        let followed = run_follower(
            self.database,
            self.supervisor,
            self.metrics,
            task,
            shutdown,
            move |stop| {
                let handler = Ingest::clone(&ingest);
                match &consumer {
                    Some((nats, config)) => Either::Left(appreg_worker::consumer::consume(
                        handler,
                        config.clone(),
                        db.clone(),
                        store.clone(),
                        nats.clone(),
                        stop,
                    )),
                    None => {
                        let config = FollowerConfig::new("notifier", INGEST_LOCK, CHECKPOINT_ROW);
                        Either::Right(follower::follow(
                            handler,
                            config,
                            db.clone(),
                            store.clone(),
                            stop,
                        ))
                    }
                }
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
