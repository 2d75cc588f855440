//! What every service's `build` starts from ([`Start`]): its database — a URL it opens and
//! migrates (a production process) or a pool it shares with the other services of the process
//! (`appreg dev`) — and the address of its metrics listener, if any.

use crate::connect::{self, ConnectError};
use crate::probes::{BindError, MetricsListener};
use appreg_eventstore::Database;

/// The database of a service.
#[derive(Clone)]
pub enum DatabaseSource {
    /// Opened by the service (and closed when it stops); it migrates what it owns.
    Url(String),
    /// Opened, migrated and closed by the caller (the all-in-one `appreg dev`).
    Shared(Database),
}

/// Where a service starts from.
#[derive(Clone)]
pub struct Start {
    pub database: DatabaseSource,
    /// `/metrics`, `/healthz`, `/readyz` on this address (`--metrics-listen`).
    pub metrics_listen: Option<String>,
}

/// A service's database, and whether the service closes it when it stops.
pub struct Opened {
    pub db: Database,
    pub owned: bool,
}

impl Start {
    /// A process of its own: the database at `url`, metrics on `metrics_listen` if given.
    pub fn url(url: impl Into<String>, metrics_listen: Option<String>) -> Start {
        Start {
            database: DatabaseSource::Url(url.into()),
            metrics_listen,
        }
    }

    /// A service of a process that holds `db` (no metrics listener of its own).
    pub fn shared(db: &Database) -> Start {
        Start {
            database: DatabaseSource::Shared(db.clone()),
            metrics_listen: None,
        }
    }

    /// The database: opened with `pool` connections, or the shared one.
    ///
    /// # Errors
    /// It cannot be opened.
    pub async fn open(&self, pool: u32) -> Result<Opened, ConnectError> {
        Ok(match &self.database {
            DatabaseSource::Url(url) => Opened {
                db: connect::open(url, pool).await?,
                owned: true,
            },
            DatabaseSource::Shared(db) => Opened {
                db: db.clone(),
                owned: false,
            },
        })
    }

    /// The metrics listener, bound, when an address is given.
    ///
    /// # Errors
    /// The address cannot be listened on.
    pub async fn metrics_listener(
        &self,
        service: &'static str,
    ) -> Result<Option<MetricsListener>, BindError> {
        match &self.metrics_listen {
            Some(addr) => Ok(Some(MetricsListener::bind(addr, service).await?)),
            None => Ok(None),
        }
    }
}

impl Opened {
    /// Closes the database if the service opened it.
    pub async fn close(&self) {
        if self.owned {
            self.db.close().await;
        }
    }
}

/// A follower of the log run as a supervised service task (the DCR saga, the lifecycle process
/// manager): its task's name, its lag gauges' task and prefix, its checkpoint row.
pub struct FollowerTask {
    pub name: &'static str,
    pub lag_task: &'static str,
    pub lag_prefix: &'static str,
    /// `(table, name)` of its checkpoint row.
    pub checkpoint: (&'static str, &'static str),
    /// The NATS client it consumes through (the notifier on PostgreSQL): `/readyz` fails while
    /// it is not connected.
    pub nats: Option<async_nats::Client>,
}

/// Runs `task` until `shutdown` fires: the metrics listener (its `/readyz` and `/healthz`
/// following `supervisor`'s tasks), the lag gauges, and the follower `run(shutdown)` —
/// supervised, restarted from its checkpoint when it dies; then closes what the service opened.
///
/// # Errors
/// The supervised task panicked beyond recovery.
pub async fn run_follower<F, Fut>(
    database: Opened,
    supervisor: crate::Supervisor,
    metrics: Option<MetricsListener>,
    task: FollowerTask,
    shutdown: tokio_util::sync::CancellationToken,
    run: F,
) -> Result<(), tokio::task::JoinError>
where
    F: Fn(tokio_util::sync::CancellationToken) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let db = &database.db;
    if let Some(listener) = metrics {
        let ready = crate::probes::Readiness::new(db, task.nats.as_ref()).supervised(&supervisor);
        listener.spawn(appreg_telemetry::metrics_handle(), ready, shutdown.clone());
    }
    tracing::info!(postgres = db.is_postgres(), "appreg {} starting", task.name);
    crate::probes::supervise_checkpoint_lag(
        &supervisor,
        task.lag_task,
        db,
        task.checkpoint,
        task.lag_prefix,
        &shutdown,
    );
    let stop = shutdown.clone();
    let handle = supervisor.spawn(task.name, shutdown, move || {
        let running = run(stop.clone());
        async move {
            running.await;
            Ok::<_, std::convert::Infallible>(())
        }
    });
    let ended = handle.await;
    database.close().await;
    ended
}
