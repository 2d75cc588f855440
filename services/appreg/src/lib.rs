//! The `appreg` command line: the all-in-one development system, each production service (api,
//! relay, projector, dcr-saga, lifecycle), and the operators' tools (migrations, tokens, history). Each subcommand composes the libraries;
//! none holds business logic.
//!
//! Layout: this file holds [`main`] and [`run`], the dispatch of a parsed [`Cli`]: it parses
//! the arguments, loads the configuration, and calls each service crate's `service::build` and
//! `Service::run` (the services do their own wiring); `cli` the arguments, `setup` what the
//! subcommands start from (database URL and migrations, telemetry, the SIGTERM token), `dev`
//! the all-in-one process, `streaming` the NATS setup, and `ops` the operators' tools.

use anyhow::{bail, Context};
use appreg_api::commands::decode_app;
use appreg_api::dto::{ApplicationView, HistoryEntry};
use appreg_auth::{Authenticator, DevClaims, DevKey};
use appreg_config::{Config, NatsServers};
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
mod dev;
mod setup;
mod streaming;

use appreg_worker::service::Start;
pub use cli::{Cli, Command, NatsCommand, ProjectionsCommand};
use dev::dev;
use ops::{history, rebuild};
use setup::*;
use streaming::*;

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
            config.api.listen = listen;
            // The portal `appreg dev` serves calls the api from the api's own origin.
            config.allow_own_origin();
            config.data_dir = data.clone();
            config.database_url = Some(SecretString::from(url.clone()));
            let key = DevKey::load_or_create(&data)?;
            let auth = Authenticator::dev(&key, &config.auth.role_claim);
            if config.secrets_master_key.is_none() {
                config.secrets_master_key = Some(dev_master_key(&data)?);
            }
            // The portal is on in development unless the configuration says otherwise.
            config.api.portal_enabled.get_or_insert(true);
            // So are webhooks to a receiver on this machine over plain http.
            config.api.allow_http_webhooks.get_or_insert(true);
            let db = open(&url, config.database_max_connections).await?;
            dev(&mut config, &db, (auth, Arc::new(key)), &data, nats_servers).await
        }
        Command::Api => {
            init_telemetry(&config, "appreg-api")?;
            let url = database_url(&config, None, None)?;
            let api = appreg_api::service::build(&config, &Start::url(url, None)).await?;
            println!("appreg listening on http://{}", api.local_addr()?);
            Ok(api.run(shutdown_signal()).await?)
        }
        Command::Relay {
            database_url: url,
            nats_url,
            metrics_listen,
        } => {
            let nats_servers = config.nats_servers(nats_url.as_deref())?;
            init_telemetry(&config, "appreg-relay")?;
            let start = Start::url(database_url(&config, url, None)?, metrics_listen);
            let relay = appreg_relay::service::build(&config, &start, &nats_servers).await?;
            Ok(relay.run(shutdown_signal()).await?)
        }
        Command::Migrate { database_url: url } => {
            appreg_telemetry::init_tracing("text");
            let url = database_url(&config, url, None)?;
            let db = open(&url, 2).await?;
            println!(
                "migrations applied to {}",
                appreg_worker::connect::redact(&url)
            );
            ops::seal_personal_data(&config, &db).await
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
            let roles = if admin {
                vec![config.auth.admin_role.clone()]
            } else {
                vec![]
            };
            let token = key.sign(&DevClaims {
                name,
                email,
                admin_environments: admin_of,
                ..DevClaims::issue(sub, roles, ttl)
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
            command: ProjectionsCommand::Rebuild { name, store },
        } => {
            let projection = appreg_api::readmodel::PROJECTION;
            if let Some(name) = name.as_deref().filter(|n| *n != projection) {
                bail!("no projection {name:?} (known: {projection})");
            }
            let db = open(&store.url(&config)?, 4).await?;
            let rebuilt = rebuild(&db, projection).await;
            db.close().await;
            rebuilt
        }
        Command::Projections {
            command: ProjectionsCommand::Parked { store, limit },
        } => {
            let db = open(&store.url(&config)?, 2).await?;
            let parked = appreg_readmodel::parked(&db, limit.clamp(1, 10_000)).await?;
            let total = appreg_readmodel::parked_count(&db).await?;
            db.close().await;
            let parked: Vec<_> = parked
                .into_iter()
                .map(|p| appreg_worker::parked::ParkedEvent {
                    event_id: p.event_id,
                    stream_id: p.stream_id,
                    version: p.version,
                    event_type: p.event_type,
                    position: p.position,
                    reason: p.reason,
                    attempts: p.attempts,
                    parked_at: p.parked_at,
                })
                .collect();
            ops::print_parked(&parked, total, "events");
            Ok(())
        }
        Command::Projections {
            command: ProjectionsCommand::Retry { store },
        } => {
            let db = open(&store.url(&config)?, 2).await?;
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
            command: SagaCommand::Parked { store, limit },
        } => {
            let db = open(&store.url(&config)?, 2).await?;
            let listed = ops::saga_parked(&db, limit).await;
            db.close().await;
            listed
        }
        Command::Saga {
            command: SagaCommand::Retry { store },
        } => {
            appreg_telemetry::init_tracing("text");
            let db = open_with_vault(&mut config, &store, 4).await?;
            let retried = ops::saga_retry(&config, &db).await;
            db.close().await;
            retried
        }
        Command::Vault {
            command: VaultCommand::Reseal { store },
        } => {
            appreg_telemetry::init_tracing("text");
            let db = open_with_vault(&mut config, &store, 2).await?;
            let resealed = ops::vault_reseal(&config, &db).await;
            db.close().await;
            resealed
        }
        Command::DcrSaga {
            database_url: url,
            metrics_listen,
        } => {
            init_telemetry(&config, "appreg-dcr-saga")?;
            let start = Start::url(database_url(&config, url, None)?, metrics_listen);
            let saga = appreg_dcr_saga::service::build(&config, &start).await?;
            Ok(saga.run(shutdown_signal()).await?)
        }
        Command::Lifecycle {
            database_url: url,
            metrics_listen,
        } => {
            init_telemetry(&config, "appreg-lifecycle")?;
            let start = Start::url(database_url(&config, url, None)?, metrics_listen);
            let lifecycle = appreg_lifecycle::service::build(&config, &start).await?;
            Ok(lifecycle.run(shutdown_signal()).await?)
        }
        Command::Notifier {
            database_url: url,
            nats_url,
            metrics_listen,
        } => {
            let nats_servers = config.nats_servers(nats_url.as_deref())?;
            init_telemetry(&config, "appreg-notifier")?;
            let start = Start::url(database_url(&config, url, None)?, metrics_listen);
            let notifier =
                appreg_notifier::service::build(&config, &start, Some(&nats_servers)).await?;
            Ok(notifier.run(shutdown_signal()).await?)
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
            let start = Start::url(database_url(&config, url, None)?, metrics_listen);
            let projector =
                appreg_projector::service::build(&config, &start, &nats_servers).await?;
            Ok(projector.run(shutdown_signal()).await?)
        }
    }
}
