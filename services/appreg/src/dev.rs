//! `appreg dev`: every service of the system in one process, on one database, each built by its
//! own crate on the shared pool ([`Start::shared`]); the saga and the process manager are
//! supervised with the api's tasks (a dead one fails the api's `/readyz`).

use super::*;

/// Runs the api (with the developer portal and its development sign-in, signed with `key`), the DCR saga, the lifecycle process manager, the notifier and, with `nats_servers`, the
/// relay and the projector (the read models then come from the stream, as in production) on
/// `db` until SIGTERM; the caller opened (and migrated) `db`, which is closed here.
pub(crate) async fn dev(
    config: &mut Config,
    db: &Database,
    (auth, key): (Arc<Authenticator>, Arc<DevKey>),
    data: &Path,
    nats_servers: Option<NatsServers>,
) -> anyhow::Result<()> {
    let shutdown = shutdown_signal();
    let shared = Start::shared(db);
    let streaming = match nats_servers {
        Some(servers) => {
            let relay = appreg_relay::service::build(config, &shared, &servers).await?;
            let projector = appreg_projector::service::build(config, &shared, &servers).await?;
            println!("relay publishing to {servers}, projector consuming from it");
            config.api.read_models = appreg_config::ReadModels::External;
            Some((
                tokio::spawn(relay.run(shutdown.clone())),
                tokio::spawn(projector.run(shutdown.clone())),
            ))
        }
        None => None,
    };
    let supervisor = appreg_worker::Supervisor::new(Default::default());
    let saga = appreg_dcr_saga::service::build(config, &shared)
        .await?
        .supervised_by(&supervisor);
    let lifecycle = appreg_lifecycle::service::build(config, &shared)
        .await?
        .supervised_by(&supervisor);
    // The embedded mode's notifier follows the log (it may have no NATS).
    let notifier = appreg_notifier::service::build(config, &shared, None)
        .await?
        .supervised_by(&supervisor);
    let saga = tokio::spawn(saga.run(shutdown.clone()));
    let notifier = tokio::spawn(notifier.run(shutdown.clone()));
    let lifecycle = tokio::spawn(lifecycle.run(shutdown.clone()));
    let served = serve(
        config,
        &shared,
        (auth, key),
        data,
        supervisor,
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    saga.await.context("the saga task failed")??;
    lifecycle
        .await
        .context("the lifecycle process manager task failed")??;
    notifier.await.context("the notifier task failed")??;
    if let Some((relay, projector)) = streaming {
        relay.await.context("the relay task failed")??;
        projector.await.context("the projector task failed")??;
    }
    db.close().await;
    served
}

/// The api of `appreg dev` until `shutdown` fires.
async fn serve(
    config: &Config,
    shared: &Start,
    (auth, key): (Arc<Authenticator>, Arc<DevKey>),
    data: &Path,
    supervisor: appreg_worker::Supervisor,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = appreg_api::service::build_with(config, shared, auth)
        .await?
        .supervised_by(supervisor)
        .with_dev_sign_in(key);
    let addr = api.local_addr()?;
    println!("appreg listening on http://{addr}");
    if config.api.portal_on() {
        println!("developer portal: http://{addr}/ (development sign-in: any user name)");
    }
    println!(
        "get a token with: appreg token --sub alice --data {}   (add --admin for an administrator)",
        data.display()
    );
    Ok(api.run(shutdown).await?)
}
