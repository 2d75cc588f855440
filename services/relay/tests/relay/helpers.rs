//! Test harness: a fresh PostgreSQL database, a private nats-server, and relays that can be
//! killed like a crashed process. The workload and the exactly-once check are in
//! `appreg_test_support::nats` (shared with the CLI's tests).

pub use appreg_test_support::nats::*;

use appreg_eventstore::{Database, EventStore, PgEventStore};
use appreg_relay::RelayConfig;
use appreg_test_support::postgres::fresh_postgres_url;
use async_nats::jetstream;
use sqlx::postgres::PgPool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A fresh database and a private NATS server.
pub struct Env {
    pub db_url: String,
    pub pool: PgPool,
    pub store: Arc<dyn EventStore>,
    pub nats: NatsServer,
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "appreg_relay=info,warn".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Env {
    pub async fn new() -> Env {
        init_tracing();
        let nats = NatsServer::start();
        let db_url = fresh_postgres_url().await;
        let db = Database::connect(&db_url, 8).await.unwrap();
        db.migrate().await.unwrap();
        let Database::Postgres(pool) = db else {
            unreachable!()
        };
        let store: Arc<dyn EventStore> = Arc::new(PgEventStore::new(pool.clone()).await.unwrap());
        Env {
            db_url,
            pool,
            store,
            nats,
        }
    }

    /// A store for writers whose appends commit after a random delay (out of id order).
    pub async fn writer_store(&self) -> Arc<dyn EventStore> {
        Arc::new(
            PgEventStore::new(self.pool.clone())
                .await
                .unwrap()
                .with_commit_delay_for_tests(Duration::from_millis(3)),
        )
    }

    /// A client of the private server for the test's own checks.
    pub async fn js(&self) -> jetstream::Context {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .reconnect_delay_callback(|_| Duration::from_millis(100))
            .connect(self.nats.url())
            .await
            .unwrap();
        jetstream::new(client)
    }
}

/// Relay settings for tests: quick polls and retries; the production lock interval.
pub fn test_config(stream: &str, prefix: &str) -> RelayConfig {
    RelayConfig {
        stream: stream.into(),
        subject_prefix: prefix.into(),
        ack_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        retry_max: Duration::from_millis(500),
        ..RelayConfig::default()
    }
}

/// A relay in a runtime of its own, with its own PostgreSQL pool and NATS connection, so that
/// [`RelayHandle::kill`] drops every task and socket at once, like a process dying.
pub struct RelayHandle {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: CancellationToken,
    done: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
    nats_stats: Arc<async_nats::Statistics>,
}

impl RelayHandle {
    pub async fn start(db_url: &str, nats_url: &str, config: RelayConfig) -> RelayHandle {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let shutdown = CancellationToken::new();
        let (stats_tx, stats_rx) = tokio::sync::oneshot::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (db_url, nats_url, token) =
            (db_url.to_string(), nats_url.to_string(), shutdown.clone());
        runtime.spawn(async move {
            let db = Database::connect(&db_url, 4).await.unwrap();
            let store = db.event_store().await.unwrap();
            let Database::Postgres(pool) = db else {
                unreachable!()
            };
            let client = async_nats::ConnectOptions::new()
                .name("appreg-relay-test")
                .retry_on_initial_connect()
                .reconnect_delay_callback(|attempts| {
                    Duration::from_millis(100 * attempts.min(5) as u64)
                })
                .connect(nats_url)
                .await
                .unwrap();
            let _ = stats_tx.send(client.statistics());
            let result = appreg_relay::run(config, store, Some(pool), client, token)
                .await
                .map_err(|e| e.to_string());
            let _ = done_tx.send(result);
        });
        let nats_stats = stats_rx.await.expect("the relay started");
        RelayHandle {
            runtime: Some(runtime),
            shutdown,
            done: Some(done_rx),
            nats_stats,
        }
    }

    /// Messages this relay's NATS connection has sent (publishes and API requests).
    pub fn sent(&self) -> u64 {
        self.nats_stats.out_messages.load(Ordering::Relaxed)
    }

    /// Drops the relay's runtime at once: every task and connection goes, as in a SIGKILL.
    pub fn kill(mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }

    /// Graceful shutdown; returns how long it took.
    pub async fn stop(mut self) -> Duration {
        let started = Instant::now();
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(10), self.done.take().unwrap())
            .await
            .expect("the relay stops within 10 s")
            .expect("the relay task ended");
        result.expect("the relay ends without error");
        let elapsed = started.elapsed();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
        elapsed
    }
}

impl Drop for RelayHandle {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
