//! The command line's arguments: [`Cli`] and its subcommands (the operators' tools' own
//! subcommands are in `ops`).

use super::*;

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
    /// consumer `projector.consumer`). Run the api with `read_models = "external"`.
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
    /// The notifier, for production: delivers the environments' events to their webhook
    /// endpoints (signed, retried, logged). One is active per database; others stand by.
    Notifier {
        #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// NATS server(s) of its JetStream consumer, comma-separated (default: nats_url of the
        /// configuration; not used on SQLite, where it follows the event log).
        #[arg(long, env = "APPREG_NATS_URL", hide_env_values = true)]
        nats_url: Option<String>,
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
    /// (deploy/nats/consumers/appreg-projector.json, named `projector.consumer`), or updates
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
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists the events the projection parked (poison events, and the later events of their
    /// streams that wait behind them), oldest first.
    Parked {
        #[command(flatten)]
        store: StoreArgs,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Replays the parked events from the event store (after a fix); what fails again stays
    /// parked.
    Retry {
        #[command(flatten)]
        store: StoreArgs,
    },
}

/// Where the database is: `--database-url` (default: the configured one), else the embedded
/// database under `--data`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    #[arg(long, env = "APPREG_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
}

impl StoreArgs {
    /// The database URL these arguments name, with the configuration's default.
    pub(crate) fn url(&self, config: &Config) -> anyhow::Result<String> {
        database_url(config, self.database_url.clone(), Some(&self.data))
    }
}
