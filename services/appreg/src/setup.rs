//! What the subcommands start from: the database URL and pool (every component's migrations:
//! the operators' tools and `appreg dev`), the development master key, telemetry, the SIGTERM
//! token.

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
    let db = Database::connect(url, max).await.with_context(|| {
        format!(
            "cannot open the database {}",
            appreg_worker::connect::redact(url)
        )
    })?;
    appreg_api::migrate(&db)
        .await
        .context("cannot migrate the database")?;
    appreg_dcr_saga::migrate(&db)
        .await
        .context("cannot migrate the DCR saga's tables")?;
    appreg_lifecycle::migrate(&db)
        .await
        .context("cannot migrate the lifecycle process manager's tables")?;
    appreg_notifier::migrate(&db)
        .await
        .context("cannot migrate the notifier's tables")?;
    Ok(db)
}

/// Opens the database `store` names for a command that needs the vault: the embedded mode's
/// master key is used when none is configured and `--data` holds one (never a new one).
pub(crate) async fn open_with_vault(
    config: &mut Config,
    store: &crate::cli::StoreArgs,
    max: u32,
) -> anyhow::Result<Database> {
    let url = store.url(config)?;
    if config.secrets_master_key.is_none() && store.data.join("master.key").exists() {
        config.secrets_master_key = Some(dev_master_key(&store.data)?);
    }
    open(&url, max).await
}

/// A token cancelled by SIGTERM or Ctrl-C.
pub(crate) fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM; only Ctrl-C shuts down");
                let _ = ctrl_c.await;
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
