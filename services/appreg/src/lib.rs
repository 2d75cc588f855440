//! The `appreg` command line: the all-in-one development system, each production service (api,
//! relay, projector, dcr-saga, lifecycle), and the operators' tools (migrations, tokens, history). Each subcommand composes the libraries;
//! none holds business logic.

use anyhow::{bail, Context};
use appreg_api::commands::decode_app;
use appreg_api::dto::{ApplicationView, HistoryEntry};
use appreg_auth::{Authenticator, DevClaims, DevKey, JwksSettings, RemoteIssuer, DEV_ISSUER};
use appreg_config::{Config, NatsAuth, NatsServers, TokenTrust};
use appreg_domain::{Actor, Application, ApplicationId, UserId};
use appreg_eventstore::Database;
use clap::{Parser, Subcommand};
use secrecy::{ExposeSecret, SecretString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

mod ops;
pub use ops::{SagaCommand, VaultCommand};

#[derive(Debug, Parser)]
#[command(
    name = "appreg",
    version,
    about = "Applications and their OAuth clients, event-sourced."
)]
pub struct Cli {
    /// Configuration file (TOML); `APPREG_*` environment variables override it.
    #[arg(long, global = true, env = "APPREG_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The whole system in one process: embedded SQLite under --data, or PostgreSQL when
    /// --database-url is given. Development tokens come from `appreg token`.
    Dev {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Also run the relay and the projector on this NATS JetStream (one URL, or a cluster's
        /// servers comma-separated).
        #[arg(long, env = "APPREG_NATS_URL", hide_env_values = true)]
        nats_url: Option<String>,
    },
    /// The HTTP api, for production (PostgreSQL and the token issuer from configuration).
    Api,
    /// The relay, for production: publishes every event to NATS JetStream once and in log
    /// order. Several may run against one database: one publishes, the others stand by.
    Relay {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// NATS server(s), comma-separated (default: nats_url of the configuration).
        #[arg(long, env = "APPREG_NATS_URL", hide_env_values = true)]
        nats_url: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) and liveness (GET /healthz) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// The projector, for production: keeps the read models from the JetStream stream (durable
    /// consumer `projector_consumer`). Run the api with `read_models = "external"`.
    Projector {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// NATS server(s), comma-separated (default: nats_url of the configuration).
        #[arg(long, env = "APPREG_NATS_URL", hide_env_values = true)]
        nats_url: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) and liveness (GET /healthz) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// The DCR saga, for production: obtains clients at the providers for OAuth applications
    /// (RFC 7591). One is active per database; others stand by.
    DcrSaga {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) and liveness (GET /healthz) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// The lifecycle process manager, for production: ends the subscriptions of archived
    /// applications (keys revoked, notification settings deleted) and reopens them at a restore.
    /// One is active per database; others stand by.
    Lifecycle {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Serve Prometheus metrics (GET /metrics) and liveness (GET /healthz) on this address.
        #[arg(long, value_name = "ADDR")]
        metrics_listen: Option<String>,
    },
    /// Applies the PostgreSQL (or SQLite) migrations, then exits.
    Migrate {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Prints a bearer token signed with the development key of --data (dev mode only).
    Token {
        #[arg(long)]
        sub: String,
        /// Give the token the administrator role (administrator of every environment).
        #[arg(long)]
        admin: bool,
        /// Make the user administrator of this environment only (repeatable).
        #[arg(long = "admin-of", value_name = "ENV")]
        admin_of: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        email: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 12 * 3600)]
        ttl: i64,
    },
    /// An application's audit trail, or its state at a point (--as-of or --version).
    History {
        application_id: String,
        #[arg(long, conflicts_with = "version")]
        as_of: Option<String>,
        #[arg(long)]
        version: Option<i64>,
        /// Events read from the event store at a time (the history is read page by page).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        page_size: i64,
        /// The database (default: the configured one, or the embedded database of --data).
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
    /// Operators' tools for the read models (projections).
    Projections {
        #[command(subcommand)]
        command: ProjectionsCommand,
    },
    /// Operators' tools for the DCR saga: its parked requests.
    Saga {
        #[command(subcommand)]
        command: SagaCommand,
    },
    /// Operators' tools for the secrets vault: re-seal after a master-key rotation.
    Vault {
        #[command(subcommand)]
        command: VaultCommand,
    },
    /// Operators' tools for NATS JetStream.
    Nats {
        #[command(subcommand)]
        command: NatsCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Creates the JetStream stream (deploy/nats/APPREG_EVENTS.json, named `nats_stream`,
    /// subjects `<nats_subject_prefix>.>`) and the projector's durable consumer
    /// (deploy/nats/consumers/appreg-projector.json, named `projector_consumer`), or updates
    /// them where their settings differ; prints what it did. Running it again changes nothing.
    Setup {
        /// NATS server(s), comma-separated (default: nats_url of the configuration).
        #[arg(long, env = "APPREG_NATS_URL", hide_env_values = true)]
        nats_url: Option<String>,
        /// Replicas of the stream (3 on a 3-node cluster). Default: keep those of an existing
        /// stream; a new one gets the definition's (1).
        #[arg(long, value_parser = clap::value_parser!(u8).range(1..=5))]
        replicas: Option<u8>,
        /// How long to keep trying while NATS or its JetStream is not ready, in seconds.
        #[arg(long, default_value_t = 60)]
        wait: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectionsCommand {
    /// Replays the whole event store into fresh tables while the live ones keep serving, then
    /// swaps them in atomically and catches up the tail. Progress on stderr.
    Rebuild {
        /// The projection (`applications`, the only one); default: all.
        name: Option<String>,
        /// The database (default: the configured one, or the embedded database of --data).
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
    /// Lists the events the projection parked (poison events, and the later events of their
    /// streams that wait behind them), oldest first.
    Parked {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Replays the parked events from the event store (after a fix); what fails again stays
    /// parked.
    Retry {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("appreg: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // The last spans, when they are exported (OTLP).
    appreg_telemetry::shutdown();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("appreg: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The development master key of the secrets vault, `DIR/master.key` (created once, mode 0600).
fn dev_master_key(data: &Path) -> anyhow::Result<SecretString> {
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

fn sqlite_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("appreg.db").display())
}

fn database_url(
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

async fn open(url: &str, max: u32) -> anyhow::Result<Database> {
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
fn redact(url: &str) -> String {
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
fn jwks_settings(auth: &appreg_config::AuthConfig) -> JwksSettings {
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
fn shutdown_signal() -> CancellationToken {
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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Dev {
            listen,
            data,
            database_url: url,
            nats_url,
        } => {
            // A malformed --nats-url stops the start, before anything is created or opened.
            let nats_servers = nats_url
                .as_deref()
                .map(|flag| config.nats_servers(Some(flag)))
                .transpose()?;
            if config.log_format == "json" && std::env::var_os("APPREG_LOG_FORMAT").is_none() {
                config.log_format = "text".into();
            }
            init_telemetry(&config, "appreg-dev")?;
            std::fs::create_dir_all(&data)
                .with_context(|| format!("cannot create {}", data.display()))?;
            let url = database_url(&config, url, Some(&data))?;
            config.listen = listen;
            config.data_dir = data.clone();
            config.database_url = Some(SecretString::from(url.clone()));
            let key = DevKey::load_or_create(&data)?;
            let auth = Authenticator::dev(&key, &config.auth.role_claim);
            if config.secrets_master_key.is_none() {
                config.secrets_master_key = Some(dev_master_key(&data)?);
            }
            let db = open(&url, config.database_max_connections).await?;
            let shutdown = shutdown_signal();
            let relay = match nats_servers {
                Some(nats_servers) => {
                    let nats = connect_nats(&nats_servers, "appreg-dev").await?;
                    let store = db.event_store().await?;
                    let pg_pool = match &db {
                        Database::Postgres(pool) => Some(pool.clone()),
                        Database::Sqlite(_) => None,
                    };
                    println!("relay publishing to {nats_servers}, projector consuming from it");
                    let relay_config = appreg_relay::RelayConfig::from_config(&config);
                    // The read models come from the stream, as in production.
                    appreg_api::migrate(&db).await?;
                    config.read_models = appreg_config::ReadModels::External;
                    let read = Arc::new(appreg_readmodel::ReadModel::new(db.clone()).await?);
                    let projector = tokio::spawn(appreg_projector::run(
                        projector_config(&config),
                        read,
                        store.clone(),
                        nats.clone(),
                        shutdown.clone(),
                    ));
                    Some((
                        tokio::spawn(appreg_relay::run(
                            relay_config,
                            store,
                            pg_pool,
                            nats,
                            shutdown.clone(),
                        )),
                        projector,
                    ))
                }
                None => None,
            };
            // The saga and the process manager are supervised with the api's tasks: a dead one
            // fails the api's /readyz.
            let supervisor = appreg_worker::Supervisor::new(Default::default());
            let saga = spawn_saga(&config, &db, &supervisor, shutdown.clone()).await?;
            let lifecycle = spawn_lifecycle(&config, &db, &supervisor, shutdown.clone()).await?;
            let served = serve(
                &config,
                &db,
                auth,
                Some(&data),
                Some(supervisor),
                shutdown.clone(),
            )
            .await;
            shutdown.cancel();
            saga.await.context("the saga task failed")?;
            lifecycle
                .await
                .context("the lifecycle process manager task failed")?;
            if let Some((relay, projector)) = relay {
                relay.await.context("the relay task failed")??;
                projector.await.context("the projector task failed")?;
            }
            db.close().await;
            served
        }
        Command::Api => {
            init_telemetry(&config, "appreg-api")?;
            let url = database_url(&config, None, None)?;
            let auth = match config.auth.trust()? {
                TokenTrust::Dev => {
                    let key = DevKey::load_or_create(&config.data_dir)?;
                    Authenticator::dev(&key, &config.auth.role_claim)
                }
                TokenTrust::Issuer {
                    issuer,
                    jwks_url,
                    audience,
                } => Authenticator::remote(RemoteIssuer {
                    issuer: issuer.into(),
                    jwks_url: jwks_url.into(),
                    audience: audience.into(),
                    role_claim: config.auth.role_claim.clone(),
                    jwks: jwks_settings(&config.auth),
                })?,
            };
            let db = open(&url, config.database_max_connections).await?;
            let served = serve(&config, &db, auth, None, None, shutdown_signal()).await;
            db.close().await;
            served
        }
        Command::Relay {
            database_url: url,
            nats_url,
            metrics_listen,
        } => {
            let nats_servers = config.nats_servers(nats_url.as_deref())?;
            init_telemetry(&config, "appreg-relay")?;
            let url = database_url(&config, url, None)?;
            relay(&config, &url, &nats_servers, metrics_listen.as_deref()).await
        }
        Command::Migrate { database_url: url } => {
            appreg_telemetry::init_tracing("text");
            let url = database_url(&config, url, None)?;
            open(&url, 2).await?;
            println!("migrations applied to {}", redact(&url));
            Ok(())
        }
        Command::Token {
            sub,
            admin,
            admin_of,
            name,
            email,
            data,
            ttl,
        } => {
            UserId::parse(&sub).map_err(|(_, m)| anyhow::anyhow!("--sub: {m}"))?;
            let key = DevKey::load_or_create(&data)?;
            let now = chrono::Utc::now().timestamp();
            let roles = if admin {
                vec![config.auth.admin_role.clone()]
            } else {
                vec![]
            };
            let token = key.sign(&DevClaims {
                iss: DEV_ISSUER.into(),
                sub,
                iat: now,
                exp: now + ttl,
                name,
                email,
                roles,
                admin_environments: admin_of,
            })?;
            println!("{token}");
            Ok(())
        }
        Command::History {
            application_id,
            as_of,
            version,
            page_size,
            database_url: url,
            data,
        } => {
            let id = uuid::Uuid::parse_str(&application_id).context("APPLICATION_ID is a UUID")?;
            let url = database_url(&config, url, Some(&data))?;
            let db = open(&url, 2).await?;
            history(&db, ApplicationId(id), as_of, version, page_size).await
        }
        Command::Projections {
            command:
                ProjectionsCommand::Rebuild {
                    name,
                    database_url: url,
                    data,
                },
        } => {
            let projection = appreg_api::readmodel::PROJECTION;
            if let Some(name) = name.as_deref().filter(|n| *n != projection) {
                bail!("no projection {name:?} (known: {projection})");
            }
            let url = database_url(&config, url, Some(&data))?;
            let db = open(&url, 4).await?;
            let rebuilt = rebuild(&db, projection).await;
            db.close().await;
            rebuilt
        }
        Command::Projections {
            command:
                ProjectionsCommand::Parked {
                    database_url: url,
                    data,
                    limit,
                },
        } => {
            let url = database_url(&config, url, Some(&data))?;
            let db = open(&url, 2).await?;
            let parked = appreg_readmodel::parked(&db, limit.clamp(1, 10_000)).await?;
            let total = appreg_readmodel::parked_count(&db).await?;
            db.close().await;
            if parked.is_empty() {
                println!("no parked events");
            }
            for p in &parked {
                println!(
                    "{}  {}  {} v{}  {}  attempts={}  parked_at={}  reason: {}",
                    p.position,
                    p.event_id,
                    p.stream_id,
                    p.version,
                    p.event_type,
                    p.attempts,
                    p.parked_at,
                    p.reason
                );
            }
            if total > parked.len() as i64 {
                println!("… {} more", total - parked.len() as i64);
            }
            Ok(())
        }
        Command::Projections {
            command:
                ProjectionsCommand::Retry {
                    database_url: url,
                    data,
                },
        } => {
            let url = database_url(&config, url, Some(&data))?;
            let db = open(&url, 2).await?;
            let summary = appreg_readmodel::retry_parked(&db).await;
            db.close().await;
            let summary = summary?;
            println!(
                "{} parked events applied, {} still parked",
                summary.applied, summary.still_parked
            );
            if summary.still_parked > 0 {
                bail!("{} events are still parked", summary.still_parked);
            }
            Ok(())
        }
        Command::Saga {
            command:
                SagaCommand::Parked {
                    database_url: url,
                    data,
                    limit,
                },
        } => {
            let url = database_url(&config, url, Some(&data))?;
            let db = open(&url, 2).await?;
            let listed = ops::saga_parked(&db, limit).await;
            db.close().await;
            listed
        }
        Command::Saga {
            command:
                SagaCommand::Retry {
                    database_url: url,
                    data,
                },
        } => {
            appreg_telemetry::init_tracing("text");
            let url = database_url(&config, url, Some(&data))?;
            // The embedded mode's key, when there is one (never a new one).
            if config.secrets_master_key.is_none() && data.join("master.key").exists() {
                config.secrets_master_key = Some(dev_master_key(&data)?);
            }
            let db = open(&url, 4).await?;
            let retried = ops::saga_retry(&config, &db).await;
            db.close().await;
            retried
        }
        Command::Vault {
            command:
                VaultCommand::Reseal {
                    database_url: url,
                    data,
                },
        } => {
            appreg_telemetry::init_tracing("text");
            let url = database_url(&config, url, Some(&data))?;
            // The embedded mode's key, when there is one (never a new one).
            if config.secrets_master_key.is_none() && data.join("master.key").exists() {
                config.secrets_master_key = Some(dev_master_key(&data)?);
            }
            let db = open(&url, 2).await?;
            let resealed = ops::vault_reseal(&config, &db).await;
            db.close().await;
            resealed
        }
        Command::DcrSaga {
            database_url: url,
            metrics_listen,
        } => {
            let (db, supervisor, shutdown) = start_worker(
                &config,
                url,
                metrics_listen.as_deref(),
                "appreg-dcr-saga",
                8,
            )
            .await?;
            spawn_saga(&config, &db, &supervisor, shutdown)
                .await?
                .await
                .context("the saga task failed")?;
            db.close().await;
            Ok(())
        }
        Command::Lifecycle {
            database_url: url,
            metrics_listen,
        } => {
            let (db, supervisor, shutdown) = start_worker(
                &config,
                url,
                metrics_listen.as_deref(),
                "appreg-lifecycle",
                4,
            )
            .await?;
            spawn_lifecycle(&config, &db, &supervisor, shutdown)
                .await?
                .await
                .context("the lifecycle process manager task failed")?;
            db.close().await;
            Ok(())
        }
        Command::Nats {
            command:
                NatsCommand::Setup {
                    nats_url,
                    replicas,
                    wait,
                },
        } => {
            let nats_servers = config.nats_servers(nats_url.as_deref())?;
            nats_setup(
                &config,
                &nats_servers,
                replicas.map(usize::from),
                std::time::Duration::from_secs(wait),
            )
            .await
        }
        Command::Projector {
            database_url: url,
            nats_url,
            metrics_listen,
        } => {
            let nats_servers = config.nats_servers(nats_url.as_deref())?;
            init_telemetry(&config, "appreg-projector")?;
            let url = database_url(&config, url, None)?;
            projector(&config, &url, &nats_servers, metrics_listen.as_deref()).await
        }
    }
}

/// What `appreg dcr-saga` and `appreg lifecycle` start with: telemetry as `service`, the
/// database (migrated, `pool` connections), the SIGTERM token, and `/metrics`, `/healthz`,
/// `/readyz` on `metrics_listen` when given, both failing when a task of the returned
/// supervisor is dead (`/healthz`: given up).
async fn start_worker(
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
async fn build_saga(
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
async fn spawn_saga(
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
fn supervise_checkpoint_lag(
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
async fn spawn_lifecycle(
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

/// The projector settings of the shared configuration.
fn projector_config(config: &Config) -> appreg_projector::ProjectorConfig {
    appreg_projector::ProjectorConfig {
        stream: config.nats_stream.clone(),
        subject_prefix: config.nats_subject_prefix.clone(),
        consumer: config.projector_consumer.clone(),
        ..appreg_projector::ProjectorConfig::default()
    }
}

/// `appreg nats setup`: the stream and the projector's consumer, created or updated, retried
/// until `wait` has passed while NATS is unreachable or its JetStream not ready (a cluster
/// electing its leader).
async fn nats_setup(
    config: &Config,
    nats_servers: &NatsServers,
    replicas: Option<usize>,
    wait: std::time::Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let definition = appreg_relay::RelayConfig::from_config(config).stream_definition()?;
    let projector_config = projector_config(config);
    let client = nats_options(nats_servers, "appreg-nats-setup")
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
    let stream = stream.cached_info().config.clone();
    println!(
        "stream {} (subjects {}, {} storage, {} replica(s)): {stream_done}",
        stream.name,
        stream.subjects.join(" "),
        format!("{:?}", stream.storage).to_lowercase(),
        stream.num_replicas
    );
    let consumer = appreg_projector::consumer_config(&projector_config);
    println!(
        "consumer {} on {} (filter {}, ack {}, ack wait {:?}, max ack pending {}): {consumer_done}",
        projector_config.consumer,
        stream.name,
        consumer.filter_subject,
        format!("{:?}", consumer.ack_policy).to_lowercase(),
        consumer.ack_wait,
        consumer.max_ack_pending
    );
    client.flush().await.ok();
    Ok(())
}

/// Runs `attempt` until it succeeds, retrying its errors (with back-off, each on stderr) until
/// `deadline`.
async fn retry_until<T, F, Fut>(deadline: tokio::time::Instant, mut attempt: F) -> anyhow::Result<T>
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

/// `appreg projector`: the read models' database (migrated), a NATS connection that keeps
/// retrying, and the projector until SIGTERM.
async fn projector(
    config: &Config,
    url: &str,
    nats_servers: &NatsServers,
    metrics_listen: Option<&str>,
) -> anyhow::Result<()> {
    let metrics = appreg_telemetry::metrics_handle();
    let shutdown = shutdown_signal();
    let db = open(url, 4).await?;
    let nats = connect_nats(nats_servers, "appreg-projector").await?;
    if let Some(addr) = metrics_listen {
        let ready = Readiness::new(&db, Some(&nats));
        serve_metrics(addr, metrics, shutdown.clone(), "projector", ready).await?;
    }
    let read = Arc::new(appreg_readmodel::ReadModel::new(db.clone()).await?);
    let projector_config = projector_config(config);
    tracing::info!(
        stream = %projector_config.stream,
        consumer = %projector_config.consumer,
        nats = %nats_servers,
        "appreg projector starting"
    );
    let store = db.event_store().await?;
    appreg_projector::run(projector_config, read, store, nats, shutdown).await;
    db.close().await;
    Ok(())
}

/// Logs, and OTLP export of spans when `otlp_endpoint` is set, as `service`.
fn init_telemetry(config: &Config, service: &'static str) -> anyhow::Result<()> {
    appreg_telemetry::init(service, &config.log_format, config.otlp_endpoint.as_deref())?;
    Ok(())
}

/// What `/readyz` of a service's metrics listener checks: PostgreSQL answers and, for the
/// relay and the projector, the NATS client is connected.
#[derive(Clone)]
struct Readiness {
    db: Database,
    nats: Option<async_nats::Client>,
    /// The process's supervised tasks: a dead one fails `/readyz`, a given-up one `/healthz`.
    supervisor: appreg_worker::Supervisor,
}

impl Readiness {
    fn new(db: &Database, nats: Option<&async_nats::Client>) -> Self {
        Readiness {
            db: db.clone(),
            nats: nats.cloned(),
            supervisor: appreg_worker::Supervisor::default(),
        }
    }

    /// The same checks, and the tasks of `supervisor`.
    fn supervised(mut self, supervisor: &appreg_worker::Supervisor) -> Self {
        self.supervisor = supervisor.clone();
        self
    }

    /// 200 `ok`, or 503 with a problem document naming the tasks given up.
    fn alive(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let dead = self.supervisor.not_alive();
        if dead.is_empty() {
            return "ok".into_response();
        }
        unavailable(format!("not alive: {}", dead.join("; ")))
    }

    /// 200 `ready`, or 503 with a problem document saying why not.
    async fn check(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut reasons = self.supervisor.not_ready();
        if let Err(reason) =
            appreg_telemetry::database_ready(&self.db, std::time::Duration::from_secs(2)).await
        {
            reasons.push(reason);
        }
        if let Some(nats) = &self.nats {
            let state = nats.connection_state();
            if state != async_nats::connection::State::Connected {
                reasons.push(format!("NATS is not connected ({state})"));
            }
        }
        if reasons.is_empty() {
            return "ready".into_response();
        }
        unavailable(format!("not ready: {}", reasons.join("; ")))
    }
}

/// A 503 problem document (code `service.unavailable`) saying `detail`.
fn unavailable(detail: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let problem = serde_json::json!({
        "type": "urn:appreg:problem:service.unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": detail,
        "code": "service.unavailable",
    });
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        problem.to_string(),
    )
        .into_response()
}

/// Serves `/metrics`, `/healthz` (alive) and `/readyz` ([`Readiness`]) on `addr` until
/// `shutdown` fires.
async fn serve_metrics(
    addr: &str,
    metrics: appreg_telemetry::PrometheusHandle,
    shutdown: CancellationToken,
    service: &'static str,
    ready: Readiness,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, service, "metrics listening");
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get({
                let ready = ready.clone();
                move || {
                    let ready = ready.clone();
                    async move { ready.alive() }
                }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move { ready.check().await }
            }),
        );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, service, "metrics server failed");
        }
    });
    Ok(())
}

/// `appreg projections rebuild`: a progress line on stderr (rewritten with `\r` at most every
/// 200 ms), then a summary on stdout.
async fn rebuild(db: &Database, projection: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut last_print: Option<std::time::Instant> = None;
    let summary = appreg_api::readmodel::rebuild(db, |p| {
        let finished = p.done >= p.total;
        if !finished && last_print.is_some_and(|t| t.elapsed().as_millis() < 200) {
            return;
        }
        last_print = Some(std::time::Instant::now());
        let percent = if p.total == 0 {
            100.0
        } else {
            p.done as f64 * 100.0 / p.total as f64
        };
        let eta = match p.eta() {
            Some(eta) => format!("{}s", eta.as_secs()),
            None => "?".into(),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rrebuilding {projection}: {}/{} events ({percent:.0}%), {:.0} events/s, ETA {eta}   ",
            p.done,
            p.total,
            p.rate()
        );
        let _ = err.flush();
    })
    .await
    .map_err(|e| anyhow::anyhow!("rebuild of {projection} failed: {e}"))?;
    eprintln!();
    let secs = summary.elapsed.as_secs_f64();
    let events = summary.replayed + summary.caught_up;
    println!(
        "rebuilt {projection}: {events} events ({} replayed, {} caught up in the swap) in {secs:.2}s \
         ({:.0} events/s), {} applications, checkpoint {}, swap held the tables {} ms",
        summary.replayed,
        summary.caught_up,
        if secs > 0.0 { events as f64 / secs } else { 0.0 },
        summary.applications,
        summary.position,
        summary.swap.as_millis()
    );
    Ok(())
}

/// Serves the api until `shutdown` fires (the caller closes the database afterwards).
async fn serve(
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

/// The client options for `servers` (parsed by [`Config::nats_servers`]): the client's name,
/// its inbox prefix `_INBOX.<name>` (the replies to its requests come there; the deployment's
/// NATS users may subscribe to their own prefix only, `deploy/nats/accounts.conf`), and the
/// credentials, which the client uses for every server of the list (it ignores credentials
/// written in a URL, hence taken out by the parser).
fn nats_options(servers: &NatsServers, name: &str) -> async_nats::ConnectOptions {
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
async fn connect_nats(servers: &NatsServers, name: &str) -> anyhow::Result<async_nats::Client> {
    nats_options(servers, name)
        .retry_on_initial_connect()
        .reconnect_delay_callback(|attempts| {
            std::time::Duration::from_millis(100 * attempts.min(10) as u64)
        })
        .connect(servers.urls().to_vec())
        .await
        .with_context(|| format!("cannot connect to NATS at {servers}"))
}

/// `appreg relay`: the event store's pool, a NATS connection that keeps retrying, and the
/// relay until SIGTERM.
async fn relay(
    config: &Config,
    url: &str,
    nats_servers: &NatsServers,
    metrics_listen: Option<&str>,
) -> anyhow::Result<()> {
    // Install the recorder before the relay registers its metrics.
    let metrics = appreg_telemetry::metrics_handle();
    let shutdown = shutdown_signal();
    let db = Database::connect(url, 4)
        .await
        .with_context(|| format!("cannot open the database {}", redact(url)))?;
    db.migrate()
        .await
        .context("cannot migrate the event store")?;
    let store = db.event_store().await?;
    let pg_pool = match &db {
        Database::Postgres(pool) => Some(pool.clone()),
        Database::Sqlite(_) => None,
    };
    let nats = connect_nats(nats_servers, "appreg-relay").await?;
    if let Some(addr) = metrics_listen {
        let ready = Readiness::new(&db, Some(&nats));
        serve_metrics(addr, metrics, shutdown.clone(), "relay", ready).await?;
    }
    let relay_config = appreg_relay::RelayConfig::from_config(config);
    tracing::info!(
        stream = %relay_config.stream,
        subject_prefix = %relay_config.subject_prefix,
        nats = %nats_servers,
        postgres = db.is_postgres(),
        "appreg relay starting"
    );
    appreg_relay::run(relay_config, store, pg_pool, nats, shutdown).await?;
    db.close().await;
    Ok(())
}

/// `appreg history`: the audit trail as JSON lines, or the state at a point (`--as-of`,
/// `--version`). Reads the stream `page_size` events at a time, never all at once, and stops at
/// the point asked for.
async fn history(
    db: &Database,
    id: ApplicationId,
    as_of: Option<String>,
    version: Option<i64>,
    page_size: i64,
) -> anyhow::Result<()> {
    use std::io::Write;
    let store = db.event_store().await?;
    let at = as_of
        .map(|t| chrono::DateTime::parse_from_rfc3339(&t).context("--as-of is an RFC 3339 time"))
        .transpose()?;
    let point = at.is_some() || version.is_some();
    let stream = id.stream_id();
    let mut out = std::io::BufWriter::new(std::io::stdout());
    let mut app: Option<Application> = None;
    let mut after = 0;
    'pages: loop {
        let events = store
            .read_stream(&stream, after, page_size)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if after == 0 && events.is_empty() {
            bail!("no application {}", id);
        }
        for e in &events {
            if !point {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&HistoryEntry::from_event(e))?
                )?;
                continue;
            }
            let keep = match at {
                Some(at) => e.recorded_at <= at,
                None => e.version <= version.unwrap_or_default(),
            };
            if !keep {
                break 'pages;
            }
            let event = decode_app(e).map_err(|e| anyhow::anyhow!("{e}"))?;
            app = Application::evolve(app, &event, e.recorded_at, e.version);
        }
        match events.last() {
            Some(last) if events.len() as i64 == page_size => after = last.version,
            _ => break,
        }
    }
    out.flush()?;
    if !point {
        return Ok(());
    }
    let app = app.context("the application did not exist at that point")?;
    let auditor = Actor {
        user: UserId::parse("appreg-cli").expect("valid"),
        admin: true,
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&ApplicationView::new(&app, &auditor))?
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn readiness(ready: &Readiness) -> (u16, String) {
        let response = ready.check().await;
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The metrics listener's `/readyz`: ready while the database answers (and, for the relay
    /// and the projector, the NATS client is connected), else 503 saying why.
    #[tokio::test]
    async fn readyz_of_a_service_checks_the_database_and_nats() {
        let (_file, url) = appreg_eventstore::testing::fresh_sqlite_url();
        let db = Database::connect(&url, 2).await.unwrap();
        assert_eq!(readiness(&Readiness::new(&db, None)).await.0, 200);

        // A NATS that does not answer (nothing listens on port 1): the client is not connected.
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        let (status, body) = readiness(&Readiness::new(&db, Some(&nats))).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("NATS is not connected"), "{body}");
        assert!(body.contains("service.unavailable"), "{body}");

        // The database is gone.
        db.close().await;
        let (status, body) = readiness(&Readiness::new(&db, None)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("the database is unreachable"), "{body}");
    }

    /// A worker's supervised task (the saga, the process manager, their lag gauges) dies:
    /// `/readyz` of its metrics listener fails naming it; given up, `/healthz` fails too.
    #[tokio::test]
    async fn a_dead_task_fails_the_probes_of_a_worker() {
        let (_file, url) = appreg_eventstore::testing::fresh_sqlite_url();
        let db = Database::connect(&url, 2).await.unwrap();
        let supervisor = appreg_worker::Supervisor::new(appreg_worker::RestartPolicy {
            first_delay: std::time::Duration::from_millis(300),
            max_delay: std::time::Duration::from_millis(300),
            give_up_after: 2,
            healthy_after: std::time::Duration::from_secs(60),
        });
        let ready = Readiness::new(&db, None).supervised(&supervisor);
        let shutdown = CancellationToken::new();
        supervisor.spawn("dcr-saga", shutdown.clone(), || async {
            Err::<(), _>("the database is gone")
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (status, body) = readiness(&ready).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("the task dcr-saga failed"), "{body}");
        assert!(!body.contains("the database is gone"), "{body}");
        assert_eq!(ready.alive().status().as_u16(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let alive = ready.alive();
        assert_eq!(alive.status().as_u16(), 503);
        shutdown.cancel();
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
        assert_eq!(
            redact("sqlite://./data/appreg.db"),
            "sqlite://./data/appreg.db"
        );
    }
}
