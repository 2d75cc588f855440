//! The background workers' wiring: `appreg dcr-saga` and `appreg lifecycle` (also spawned by
//! `appreg dev`), their supervision and checkpoint-lag gauges.

use super::*;

/// What `appreg dcr-saga` and `appreg lifecycle` start with: telemetry as `service`, the
/// database (migrated, `pool` connections), the SIGTERM token, and `/metrics`, `/healthz`,
/// `/readyz` on `metrics_listen` when given, both failing when a task of the returned
/// supervisor is dead (`/healthz`: given up).
pub(crate) async fn start_worker(
    config: &Config,
    url: Option<String>,
    metrics_listen: Option<&str>,
    service: &'static str,
    pool: u32,
) -> anyhow::Result<(Database, appreg_worker::Supervisor, CancellationToken)> {
    let name = service.trim_start_matches("appreg-");
    init_telemetry(config, service)?;
    let metrics = appreg_telemetry::metrics_handle();
    let url = database_url(config, url, None)?;
    let shutdown = shutdown_signal();
    let db = open(&url, pool).await?;
    let supervisor = appreg_worker::Supervisor::new(Default::default());
    if let Some(addr) = metrics_listen {
        let ready = Readiness::new(&db, None).supervised(&supervisor);
        serve_metrics(addr, metrics, shutdown.clone(), name, ready).await?;
    }
    tracing::info!(postgres = db.is_postgres(), "appreg {name} starting");
    Ok((db, supervisor, shutdown))
}

/// The DCR saga on `db`, its keyring from the configuration, and its event store.
pub(crate) async fn build_saga(
    config: &Config,
    db: &Database,
) -> anyhow::Result<(
    Arc<appreg_dcr_saga::Saga>,
    Arc<dyn appreg_eventstore::EventStore>,
)> {
    let keyring = appreg_api::state::keyring(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let vault = appreg_secrets::SecretStore::new(db.clone(), Arc::new(keyring));
    let client = appreg_dcr_client::provider::ProviderClient::with_options(
        appreg_dcr_client::provider::ClientOptions {
            allow_private: config.outbound_allow_private,
            ..Default::default()
        },
    )
    .map_err(|e| anyhow::anyhow!("cannot build the provider client: {e}"))?;
    let store = appreg_telemetry::count_appends(db.event_store().await?);
    let saga_config = appreg_dcr_saga::SagaConfig {
        commands: appreg_commands::CommandSettings {
            group_commit_writers: 0,
            ..config.command_settings()
        },
        concurrency: config.dcr.max_in_flight.max(1),
        provider_concurrency: config.dcr.provider_concurrency.max(1),
        park_after: config.dcr.park_after,
        ..appreg_dcr_saga::SagaConfig::default()
    };
    let saga = Arc::new(appreg_dcr_saga::Saga::new(
        db.clone(),
        store.clone(),
        vault,
        client,
        saga_config,
    ));
    Ok((saga, store))
}

/// Starts the DCR saga on `db` (its keyring from the configuration) until `shutdown` fires,
/// supervised (restarted from its checkpoint when it dies), with its lag gauges.
pub(crate) async fn spawn_saga(
    config: &Config,
    db: &Database,
    supervisor: &appreg_worker::Supervisor,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let (saga, store) = build_saga(config, db).await?;
    // appreg_saga_lag_events / _seconds, from the saga's checkpoint (its row in saga_checkpoints).
    supervise_checkpoint_lag(
        supervisor,
        "saga-lag",
        db,
        "saga_checkpoints",
        "dcr-saga",
        "appreg_saga",
        &shutdown,
    );
    let concurrency = saga.config().concurrency;
    let db = db.clone();
    let stop = shutdown.clone();
    Ok(supervisor.spawn("dcr-saga", shutdown, move || {
        let run = appreg_dcr_saga::run(
            saga.clone(),
            db.clone(),
            store.clone(),
            concurrency,
            stop.clone(),
        );
        async move {
            run.await;
            Ok::<_, std::convert::Infallible>(())
        }
    }))
}

/// A reactor's lag gauges ([`appreg_telemetry::lag`]) as the supervised task `task`.
pub(crate) fn supervise_checkpoint_lag(
    supervisor: &appreg_worker::Supervisor,
    task: &'static str,
    db: &Database,
    table: &'static str,
    name: &'static str,
    prefix: &'static str,
    shutdown: &CancellationToken,
) {
    let (db, stop) = (db.clone(), shutdown.clone());
    supervisor.spawn(task, shutdown.clone(), move || {
        let probe = db.clone();
        let run = appreg_telemetry::lag::keep_refreshed(
            db.clone(),
            appreg_telemetry::lag::LagGauges::named(prefix),
            move || {
                let probe = probe.clone();
                async move { appreg_telemetry::lag::stored_checkpoint(&probe, table, name).await }
            },
            stop.clone(),
        );
        async move {
            run.await;
            Ok::<_, std::convert::Infallible>(())
        }
    });
}

/// Starts the lifecycle process manager on `db` until `shutdown` fires, supervised (restarted
/// from its checkpoint when it dies), with its lag gauges.
pub(crate) async fn spawn_lifecycle(
    config: &Config,
    db: &Database,
    supervisor: &appreg_worker::Supervisor,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let store = appreg_telemetry::count_appends(db.event_store().await?);
    // appreg_lifecycle_lag_events / _seconds, from the process manager's checkpoint.
    supervise_checkpoint_lag(
        supervisor,
        "lifecycle-lag",
        db,
        "lifecycle_checkpoints",
        appreg_lifecycle::CHECKPOINT,
        "appreg_lifecycle",
        &shutdown,
    );
    let lifecycle_config = appreg_lifecycle::LifecycleConfig {
        step_pause: std::time::Duration::from_millis(config.lifecycle_step_pause_ms),
        commands: config.command_settings(),
    };
    let db = db.clone();
    let stop = shutdown.clone();
    Ok(supervisor.spawn("lifecycle", shutdown, move || {
        let run = appreg_lifecycle::run(
            lifecycle_config.clone(),
            db.clone(),
            store.clone(),
            stop.clone(),
        );
        async move {
            run.await;
            Ok::<_, std::convert::Infallible>(())
        }
    }))
}
