//! What the subcommands start from: the database URL and pool, the development master key,
//! telemetry, the SIGTERM token, the NATS connection, and serving the api.

use super::*;

/// The development master key of the secrets vault, `DIR/master.key` (created once, mode 0600).
pub(crate) fn dev_master_key(data: &Path) -> anyhow::Result<SecretString> {
    let path = data.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(SecretString::from(text.trim().to_string()));
    }
    let key = appreg_secrets::MasterKey::generate("dev", &mut rand::rngs::OsRng)
        .map_err(|e| anyhow::anyhow!("cannot generate a master key: {e}"))?;
    let text = key.to_config_string();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            use std::io::Write;
            file.write_all(text.expose_secret().as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(text)
        }
        // Created meanwhile by another process: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(SecretString::from(
            std::fs::read_to_string(&path)?.trim().to_string(),
        )),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

pub(crate) fn sqlite_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("appreg.db").display())
}

pub(crate) fn database_url(
    config: &Config,
    flag: Option<String>,
    data: Option<&Path>,
) -> anyhow::Result<String> {
    if let Some(url) = flag {
        return Ok(url);
    }
    if let Some(url) = &config.database_url {
        return Ok(url.expose_secret().to_string());
    }
    match data {
        Some(dir) => Ok(sqlite_url(dir)),
        None => bail!("no database configured: set database_url in the configuration file or APPREG_DATABASE_URL"),
    }
}

pub(crate) async fn open(url: &str, max: u32) -> anyhow::Result<Database> {
    let db = Database::connect(url, max)
        .await
        .with_context(|| format!("cannot open the database {}", redact(url)))?;
    appreg_api::migrate(&db)
        .await
        .context("cannot migrate the database")?;
    appreg_dcr_saga::migrate(&db)
        .await
        .context("cannot migrate the DCR saga's tables")?;
    appreg_lifecycle::migrate(&db)
        .await
        .context("cannot migrate the lifecycle process manager's tables")?;
    Ok(db)
}

/// Hides the password of a database URL in messages.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.find(':') {
                Some(c) => format!("{}{}:***{}", &url[..s + 3], &creds[..c], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// How the api keeps an external issuer's keys (`auth.jwks_*`).
pub(crate) fn jwks_settings(auth: &appreg_config::AuthConfig) -> JwksSettings {
    use std::time::Duration;
    JwksSettings {
        max_age: Duration::from_secs(auth.jwks_max_age_seconds),
        unknown_kid_interval: Duration::from_secs(auth.jwks_unknown_kid_interval_seconds),
        stale_if_error: Duration::from_secs(auth.jwks_stale_if_error_seconds),
        timeout: Duration::from_millis(auth.jwks_timeout_ms.max(1)),
        ..JwksSettings::default()
    }
}

/// A token cancelled by SIGTERM or Ctrl-C.
pub(crate) fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}

/// Logs, and OTLP export of spans when `otlp_endpoint` is set, as `service`.
pub(crate) fn init_telemetry(config: &Config, service: &'static str) -> anyhow::Result<()> {
    appreg_telemetry::init(service, &config.log_format, config.otlp_endpoint.as_deref())?;
    Ok(())
}

/// The client options for `servers` (parsed by [`Config::nats_servers`]): the client's name,
/// its inbox prefix `_INBOX.<name>` (the replies to its requests come there; the deployment's
/// NATS users may subscribe to their own prefix only, `deploy/nats/accounts.conf`), and the
/// credentials, which the client uses for every server of the list (it ignores credentials
/// written in a URL, hence taken out by the parser).
pub(crate) fn nats_options(servers: &NatsServers, name: &str) -> async_nats::ConnectOptions {
    let options = async_nats::ConnectOptions::new()
        .name(name)
        .custom_inbox_prefix(format!("_INBOX.{name}"));
    match servers.auth() {
        None => options,
        Some(NatsAuth::UserPassword { user, password }) => {
            options.user_and_password(user.clone(), password.expose_secret().to_string())
        }
        Some(NatsAuth::Token(token)) => options.token(token.expose_secret().to_string()),
    }
}

/// A NATS client on every server of the list. Connecting never fails here: the client keeps
/// retrying in the background (moving to another server of the list when one is gone), and
/// the relay publishes once NATS answers.
pub(crate) async fn connect_nats(
    servers: &NatsServers,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    nats_options(servers, name)
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis(100 * attempts.min(10) as u64)
        })
        .connect(servers.urls().to_vec())
        .await
        .with_context(|| format!("cannot connect to NATS at {servers}"))
}

/// Serves the api until `shutdown` fires (the caller closes the database afterwards).
pub(crate) async fn serve(
    config: &Config,
    db: &Database,
    auth: Arc<Authenticator>,
    dev_data: Option<&Path>,
    supervisor: Option<appreg_worker::Supervisor>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut state = appreg_api::AppState::new(config, db, auth).await?;
    if let Some(supervisor) = supervisor {
        state = state.with_supervisor(supervisor);
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, postgres = db.is_postgres(), "appreg listening");
    println!("appreg listening on http://{addr}");
    if let Some(dir) = dev_data {
        println!("get a token with: appreg token --sub alice --data {}   (add --admin for an administrator)", dir.display());
    }
    appreg_api::run(listener, state, shutdown).await?;
    Ok(())
}
