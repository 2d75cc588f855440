//! The `appreg` command line: the all-in-one development system, each production service (api,
//! relay, projector, dcr-saga, lifecycle), and the operators' tools (migrations, tokens, history). Each subcommand composes the libraries;
//! none holds business logic.
//!
//! Layout: this file holds [`main`] and [`run`], the dispatch of a parsed [`Cli`]; `cli` the
//! arguments, `setup` what every subcommand starts from (database, telemetry, NATS, serving
//! the api), `workers` the saga and the process manager, `streaming` the relay, the projector
//! and the NATS setup, `probes` a service's metrics listener, and `ops` the operators' tools.

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

mod cli;
mod probes;
mod setup;
mod streaming;
mod workers;

pub use cli::{Cli, Command, NatsCommand, ProjectionsCommand};
use ops::{history, rebuild};
use probes::*;
use setup::*;
use streaming::*;
use workers::*;

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
