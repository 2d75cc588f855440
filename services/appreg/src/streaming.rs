//! `appreg nats setup`: the JetStream stream and the consumers of the projector and the notifier.

use super::*;

/// `appreg nats setup`: the stream and the projector's and the notifier's consumers, created or updated, retried
/// until `wait` has passed while NATS is unreachable or its JetStream not ready (a cluster
/// electing its leader).
pub(crate) async fn nats_setup(
    config: &Config,
    nats_servers: &NatsServers,
    replicas: Option<usize>,
    wait: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let definition = appreg_relay::RelayConfig::from_config(config).stream_definition()?;
    let projector_config = appreg_projector::ProjectorConfig::from_config(config);
    let client = appreg_worker::connect::nats_options(nats_servers, "appreg-nats-setup")
        .retry_on_initial_connect()
        .connect(nats_servers.urls().to_vec());
    let client = tokio::time::timeout_at(deadline, client)
        .await
        .map_err(|_| anyhow::anyhow!("no answer from NATS at {nats_servers} in {wait:?}"))?
        .with_context(|| format!("cannot connect to NATS at {nats_servers}"))?;
    let js = async_nats::jetstream::new(client.clone());
    let context = || format!("cannot set up JetStream at {nats_servers}");
    let (stream, stream_done) = retry_until(deadline, || {
        appreg_worker::stream::ensure_replicas(&js, &definition, replicas)
    })
    .await
    .with_context(context)?;
    let (_, consumer_done) = retry_until(deadline, || {
        appreg_projector::ensure_consumer(&stream, &projector_config)
    })
    .await
    .with_context(context)?;
    let notifier =
        appreg_worker::consumer::pull_config(&appreg_notifier::service::consumer_config(config));
    let (_, notifier_done) = retry_until(deadline, || {
        appreg_worker::consumer::ensure(&stream, notifier.clone())
    })
    .await
    .with_context(context)?;
    let stream = stream.cached_info().config.clone();
    println!(
        "stream {} (subjects {}, {} storage, {} replica(s)): {stream_done}",
        stream.name,
        stream.subjects.join(" "),
        format!("{:?}", stream.storage).to_lowercase(),
        stream.num_replicas
    );
    let projector = appreg_projector::consumer_config(&projector_config);
    for (consumer, done) in [(projector, consumer_done), (notifier, notifier_done)] {
        println!(
            "consumer {} on {} (filter {}, ack {}, ack wait {:?}, max ack pending {}): {done}",
            consumer.durable_name.as_deref().unwrap_or_default(),
            stream.name,
            consumer.filter_subject,
            format!("{:?}", consumer.ack_policy).to_lowercase(),
            consumer.ack_wait,
            consumer.max_ack_pending
        );
    }
    client.flush().await.ok();
    Ok(())
}

/// Runs `attempt` until it succeeds, retrying its errors (with back-off, each on stderr) until
/// `deadline`.
pub(crate) async fn retry_until<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, async_nats::Error>>,
{
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(done)) => return Ok(done),
            Ok(Err(e)) if tokio::time::Instant::now() + delay < deadline => {
                eprintln!("appreg nats setup: {e}; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("no answer from JetStream in time"),
        }
    }
}
