//! Configuration of every appreg process: defaults, then an optional TOML file, then `APPREG_*`
//! environment variables (`__` separates nested keys: `APPREG_AUTH__ISSUER`). Secrets are
//! `SecretString`s, so they cannot be printed by accident.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub mod api;
pub mod browser;
pub mod dcr;
pub mod nats;
pub mod notifier;
mod portal;
pub mod services;
pub use api::ApiSettings;
use api::FormerApiKeys;
pub use dcr::DcrSettings;
pub use nats::{NatsAuth, NatsServers, NatsUrlError};
pub use notifier::NotifierSettings;
pub use services::{LifecycleSettings, ProjectorSettings, RelaySettings};

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

/// Settings of the api and the all-in-one `appreg dev`.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    /// PostgreSQL URL (`postgres://…`) or SQLite URL (`sqlite://…`). Empty: the embedded
    /// SQLite database under `data_dir`.
    #[serde(default)]
    pub database_url: Option<SecretString>,
    #[serde(default = "default_max_connections")]
    pub database_max_connections: u32,
    /// Where the embedded mode keeps its database and its development signing key.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub auth: AuthConfig,
    /// `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub log_format: String,
    /// Tries of a command after optimistic-concurrency conflicts (former name of
    /// `commands.retries`, which it overrides when set).
    #[serde(default)]
    pub command_retries: Option<u32>,
    /// The command path: aggregate cache, snapshots, group commit, retries.
    #[serde(default)]
    pub commands: CommandSettings,
    /// NATS server(s) of the relay, the projector and `appreg nats setup`
    /// (`nats://host:4222`, comma-separated for a cluster, spaces allowed). May carry
    /// credentials (`nats://user:password@host`, `nats://token@host`), hence a secret. Parsed
    /// by [`Config::nats_servers`].
    #[serde(default = "default_nats_url")]
    pub nats_url: SecretString,
    /// NATS credentials for every server of `nats_url`: `user:password`, or a token. An
    /// alternative to credentials in the URLs (not both).
    #[serde(default)]
    pub nats_credentials: Option<SecretString>,
    /// The JetStream stream the relay publishes to (one per deployment sharing a NATS).
    #[serde(default = "default_nats_stream")]
    pub nats_stream: String,
    /// First token(s) of every event subject: `<prefix>.<env>.<stream_type>.<stream_id>.<Type>`.
    #[serde(default = "default_nats_subject_prefix")]
    pub nats_subject_prefix: String,
    /// Former name of `projector.consumer`, which it overrides when set.
    #[serde(default)]
    pub projector_consumer: Option<String>,
    /// Former name of `lifecycle.step_pause_ms`, which it overrides when set.
    #[serde(default)]
    pub lifecycle_step_pause_ms: Option<u64>,
    /// The api (`[api]`).
    #[serde(default)]
    pub api: ApiSettings,
    /// The api's settings under their former top-level names, moved into `api` on load.
    #[serde(flatten)]
    former_api: FormerApiKeys,
    /// `appreg relay` (`[relay]`).
    #[serde(default)]
    pub relay: RelaySettings,
    /// `appreg projector` (`[projector]`; read with [`Config::projector_settings`]).
    #[serde(default)]
    pub projector: ProjectorSettings,
    /// `appreg lifecycle` (`[lifecycle]`; read with [`Config::lifecycle_settings`]).
    #[serde(default)]
    pub lifecycle: LifecycleSettings,
    /// `appreg notifier` (`[notifier]`).
    #[serde(default)]
    pub notifier: NotifierSettings,
    /// The secrets vault's master key, `<key-id>:<base64 of 32 bytes>` (client secrets,
    /// registration access tokens and provider secrets are sealed with it). Required by the
    /// api and the DCR saga; `appreg dev` generates one in its data directory. Give it through
    /// `APPREG_SECRETS_MASTER_KEY` from a secret store, never in the file.
    #[serde(default)]
    pub secrets_master_key: Option<SecretString>,
    /// Former master keys, still used to open what they sealed (key rotation).
    #[serde(default)]
    pub secrets_previous_keys: Vec<SecretString>,
    /// How long the keys of a subscription stay valid after a renewal issued a new one.
    #[serde(default = "default_api_key_grace_seconds")]
    pub api_key_grace_seconds: u64,
    /// An OpenTelemetry collector's OTLP/HTTP base URL (`http://collector:4318`): every
    /// process then exports its spans to `<otlp_endpoint>/v1/traces` (HTTP/protobuf), as
    /// service `appreg-<service>`. None (default): no export.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// The api's `/readyz` fails while the read model it serves is further behind the event
    /// log than this (the age of the first event it has not applied), in milliseconds.
    #[serde(default = "default_readyz_max_lag_ms")]
    pub readyz_max_lag_ms: u64,
    /// Whether the api and the DCR saga may call providers (discovery, token, registration,
    /// renewal endpoints) on loopback, private (RFC 1918), link-local, unique-local, CGNAT and
    /// other non-public addresses. True by default (development and tests run providers on
    /// loopback); production sets false, and a provider whose host resolves to such an address
    /// is refused (the addresses checked are the ones connected to).
    #[serde(default = "default_true")]
    pub outbound_allow_private: bool,
    /// The DCR saga (`[dcr]`): requests in flight, per-provider bulkheads, the provider calls'
    /// retries, parking of failing requests.
    #[serde(default)]
    pub dcr: DcrSettings,
}

fn default_readyz_max_lag_ms() -> u64 {
    5000
}

fn default_api_key_grace_seconds() -> u64 {
    2 * 3600
}

/// The command path's settings (configuration `[commands]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CommandSettings {
    /// Tries of a command that loses optimistic-concurrency races (then a conflict).
    pub retries: u32,
    /// Memory the aggregate cache may hold, in MiB (0: no cache).
    pub cache_mib: usize,
    /// A snapshot is written every this many events of a stream (0: never).
    pub snapshot_every: i64,
    /// Group-commit writers: each writes one batch of concurrent appends at a time (0: every
    /// command appends alone).
    pub group_commit_writers: usize,
    /// Most appends one group-commit batch holds.
    pub max_batch: usize,
}

impl Default for CommandSettings {
    fn default() -> Self {
        CommandSettings {
            retries: 5,
            cache_mib: 64,
            snapshot_every: 100,
            group_commit_writers: 4,
            max_batch: 128,
        }
    }
}

impl Config {
    /// The command path's settings, `command_retries` applied.
    pub fn command_settings(&self) -> CommandSettings {
        CommandSettings {
            retries: self.command_retries.unwrap_or(self.commands.retries).max(1),
            ..self.commands.clone()
        }
    }
}

/// Who keeps the read models (see [`ApiSettings::read_models`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadModels {
    Inline,
    External,
}

/// How bearer tokens are checked.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct AuthConfig {
    /// Expected `iss`. With `jwks_url`, tokens of that issuer are accepted (production).
    #[serde(default)]
    pub issuer: Option<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// Expected `aud`: required with an external issuer (a token the issuer made for another
    /// of its clients is refused); `appreg dev` has its own.
    #[serde(default)]
    pub audience: Option<String>,
    /// The issuer's keys are refreshed (in the background) when older than this, in seconds.
    #[serde(default = "default_jwks_max_age")]
    pub jwks_max_age_seconds: u64,
    /// A token naming a key the JWKS lacks makes it be fetched again at most this often, in
    /// seconds.
    #[serde(default = "default_jwks_unknown_kid_interval")]
    pub jwks_unknown_kid_interval_seconds: u64,
    /// While the JWKS endpoint fails, the last keys fetched stay in use this long past
    /// `jwks_max_age_seconds`, in seconds (then tokens cannot be verified: 503).
    #[serde(default = "default_jwks_stale_if_error")]
    pub jwks_stale_if_error_seconds: u64,
    /// Longest wait for the JWKS endpoint, in milliseconds.
    #[serde(default = "default_jwks_timeout")]
    pub jwks_timeout_ms: u64,
    /// The claim that lists the caller's roles, and the role that makes an administrator.
    #[serde(default = "default_role_claim")]
    pub role_claim: String,
    #[serde(default = "default_admin_role")]
    pub admin_role: String,
    /// The claim listing the environments the caller administers (`*`: all of them). A token
    /// with `admin_role` in the role claim administers every environment.
    #[serde(default = "default_admin_environments_claim")]
    pub admin_environments_claim: String,
    /// The role (in `role_claim`) of API gateways: they may check API keys
    /// (`POST /api-keys/_verify`) and nothing else an administrator may do.
    #[serde(default = "default_gateway_role")]
    pub gateway_role: String,
    /// Accept tokens signed by the development key under `data_dir` (`appreg token`).
    #[serde(default)]
    pub dev: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            jwks_url: None,
            audience: None,
            jwks_max_age_seconds: default_jwks_max_age(),
            jwks_unknown_kid_interval_seconds: default_jwks_unknown_kid_interval(),
            jwks_stale_if_error_seconds: default_jwks_stale_if_error(),
            jwks_timeout_ms: default_jwks_timeout(),
            role_claim: default_role_claim(),
            admin_role: default_admin_role(),
            admin_environments_claim: default_admin_environments_claim(),
            gateway_role: default_gateway_role(),
            dev: false,
        }
    }
}

/// Whose tokens an api accepts ([`AuthConfig::trust`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenTrust<'a> {
    /// The development key under `data_dir` (`auth.dev`).
    Dev,
    /// An external issuer, its keys at `jwks_url`, for tokens of `audience`.
    Issuer {
        issuer: &'a str,
        jwks_url: &'a str,
        audience: &'a str,
    },
}

impl AuthConfig {
    /// Whose tokens an api accepts. Outside development, the issuer, its JWKS URL and the
    /// expected audience are all required: without an audience, any token the issuer signed
    /// for any of its clients would be accepted.
    ///
    /// # Errors
    /// A missing setting, named.
    pub fn trust(&self) -> Result<TokenTrust<'_>, ConfigError> {
        if self.dev {
            return Ok(TokenTrust::Dev);
        }
        fn present(v: &Option<String>) -> Option<&str> {
            v.as_deref().map(str::trim).filter(|v| !v.is_empty())
        }
        let (Some(issuer), Some(jwks_url)) = (present(&self.issuer), present(&self.jwks_url))
        else {
            return Err(ConfigError(
                "auth.issuer and auth.jwks_url are required (or auth.dev = true for development)"
                    .into(),
            ));
        };
        let Some(audience) = present(&self.audience) else {
            return Err(ConfigError(
                "auth.audience is required with an external issuer (APPREG_AUTH__AUDIENCE): the \
                 audience the issuer puts in the tokens it makes for appreg; without it, tokens \
                 the issuer made for any of its other clients would be accepted"
                    .into(),
            ));
        };
        Ok(TokenTrust::Issuer {
            issuer,
            jwks_url,
            audience,
        })
    }
}

fn default_jwks_max_age() -> u64 {
    3600
}
fn default_jwks_unknown_kid_interval() -> u64 {
    30
}
fn default_jwks_stale_if_error() -> u64 {
    6 * 3600
}
fn default_jwks_timeout() -> u64 {
    5000
}
fn default_max_connections() -> u32 {
    32
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data")
}
fn default_log_format() -> String {
    "json".into()
}
fn default_nats_url() -> SecretString {
    SecretString::from("nats://127.0.0.1:4222")
}
fn default_nats_stream() -> String {
    "APPREG_EVENTS".into()
}
fn default_nats_subject_prefix() -> String {
    "appreg".into()
}
fn default_role_claim() -> String {
    "roles".into()
}
fn default_gateway_role() -> String {
    "appreg-gateway".into()
}
fn default_admin_role() -> String {
    "ADMIN".into()
}
fn default_admin_environments_claim() -> String {
    "admin_environments".into()
}
fn default_true() -> bool {
    true
}

impl Config {
    /// Loads defaults, then `file` (or `$APPREG_CONFIG`) if given, then `APPREG_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::new().merge(Serialized::defaults(serde_json_empty()));
        let env_file = std::env::var_os("APPREG_CONFIG").map(PathBuf::from);
        if let Some(path) = file.map(Path::to_path_buf).or(env_file) {
            if !path.exists() {
                return Err(ConfigError(format!(
                    "configuration file {} not found",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("APPREG_").ignore(&["CONFIG"]).split("__"));
        let mut config: Config = figment.extract().map_err(|e| ConfigError(e.to_string()))?;
        config.former_api.apply_to(&mut config.api);
        Ok(config)
    }

    /// The NATS servers of `nats_url`, or of `flag` (a `--nats-url` given on the command line)
    /// when set, with `nats_credentials`. The one parser of every process that connects to
    /// NATS ([`NatsServers::parse`]).
    ///
    /// # Errors
    /// A malformed list: the message names the entry, its credentials redacted.
    pub fn nats_servers(&self, flag: Option<&str>) -> Result<NatsServers, NatsUrlError> {
        use secrecy::ExposeSecret;
        let list = flag.unwrap_or_else(|| self.nats_url.expose_secret());
        NatsServers::parse(list, self.nats_credentials.as_ref())
    }

    /// The defaults alone (tests, embedded mode).
    #[allow(clippy::expect_used)] // invariant: the defaults are valid (tested: `defaults_and_environment_overrides`)
    pub fn defaults() -> Config {
        Figment::new()
            .merge(Serialized::defaults(serde_json_empty()))
            .extract()
            .expect("defaults are valid")
    }
}

fn serde_json_empty() -> std::collections::BTreeMap<String, String> {
    std::collections::BTreeMap::new()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn defaults_and_environment_overrides() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "appreg.toml",
                "listen = \"0.0.0.0:9000\"\n[auth]\nissuer = \"https://idp\"\n",
            )?;
            jail.set_env("APPREG_AUTH__ADMIN_ROLE", "root");
            jail.set_env("APPREG_DATABASE_URL", "postgres://u:pw@h/db");
            jail.set_env("APPREG_LIFECYCLE_STEP_PAUSE_MS", "250");
            jail.set_env("APPREG_OTLP_ENDPOINT", "http://collector:4318");
            jail.set_env("APPREG_DCR__PROVIDER_CONCURRENCY", "4");
            let c = Config::load(Some(Path::new("appreg.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.api.listen, "0.0.0.0:9000");
            assert_eq!(c.auth.issuer.as_deref(), Some("https://idp"));
            assert_eq!(c.auth.admin_role, "root");
            assert_eq!(c.auth.role_claim, "roles");
            assert_eq!(
                c.database_url.as_ref().unwrap().expose_secret(),
                "postgres://u:pw@h/db"
            );
            assert_eq!(c.api.max_body_bytes, 65536);
            assert_eq!(c.api.sse_heartbeat_ms, 15_000);
            assert_eq!(c.api.sse_max_streams_per_user, 16);
            assert_eq!(c.api.sse_max_streams, 512);
            assert_eq!(c.api.sse_max_replay_events, 10_000);
            assert_eq!(c.nats_url.expose_secret(), "nats://127.0.0.1:4222");
            assert_eq!(c.nats_stream, "APPREG_EVENTS");
            assert_eq!(c.nats_subject_prefix, "appreg");
            assert_eq!(c.api.read_models, ReadModels::Inline);
            assert_eq!(c.lifecycle_settings().step_pause_ms, 250);
            assert_eq!(Config::defaults().lifecycle_settings().step_pause_ms, 0);
            assert_eq!(c.otlp_endpoint.as_deref(), Some("http://collector:4318"));
            assert_eq!(Config::defaults().otlp_endpoint, None);
            assert_eq!(c.readyz_max_lag_ms, 5000);
            assert!(Config::defaults().outbound_allow_private);
            assert_eq!(c.dcr.provider_concurrency, 4);
            assert_eq!(c.dcr.max_in_flight, 256);
            assert_eq!(Config::defaults().dcr, DcrSettings::default());
            assert!(!format!("{:?}", Config::defaults()).contains("pw"));
            assert!(c.nats_credentials.is_none());
            Ok(())
        });
    }

    #[test]
    fn nats_url_lists_and_credentials_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "APPREG_NATS_URL",
                "nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222",
            );
            jail.set_env("APPREG_NATS_CREDENTIALS", "appreg:pw");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let servers = c.nats_servers(None).map_err(|e| e.to_string())?;
            assert_eq!(servers.urls().len(), 3);
            assert!(matches!(
                servers.auth(),
                Some(NatsAuth::UserPassword { .. })
            ));
            assert!(!format!("{c:?}").contains("pw"));
            // The command line's --nats-url wins over the setting.
            let flag = c
                .nats_servers(Some("nats://other:4222"))
                .map_err(|e| e.to_string())?;
            assert_eq!(flag.urls(), ["nats://other:4222"]);
            let bad = c
                .nats_servers(Some("nats://a:4222,nats://b:x"))
                .unwrap_err();
            assert!(bad.to_string().contains("entry 2 of 2"), "{bad}");
            Ok(())
        });
    }

    #[test]
    fn the_deployment_sample_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/appreg.toml");
        figment::Jail::expect_with(|_| {
            let c = Config::load(Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(c.api.listen, "0.0.0.0:8080");
            assert!(!c.auth.dev && !c.api.allow_http_redirect_uris);
            assert!(c.auth.jwks_url.is_some());
            assert!(
                matches!(c.auth.trust(), Ok(TokenTrust::Issuer { .. })),
                "the sample names an audience"
            );
            assert_eq!(c.nats_stream, "APPREG_EVENTS");
            assert_eq!(c.nats_subject_prefix, "appreg");
            assert_eq!(c.api.read_models, ReadModels::External);
            assert_eq!(c.projector_settings().consumer, "appreg-projector");
            assert_eq!(
                c.nats_servers(None)
                    .map_err(|e| e.to_string())?
                    .urls()
                    .len(),
                1
            );
            assert_eq!(c.lifecycle_settings().step_pause_ms, 0);
            assert_eq!(c.otlp_endpoint, None);
            assert_eq!(c.readyz_max_lag_ms, 5000);
            assert!(!c.outbound_allow_private);
            Ok(())
        });
    }

    #[test]
    fn an_external_issuer_needs_an_audience() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("APPREG_AUTH__ISSUER", "https://idp.example.com");
            jail.set_env("APPREG_AUTH__JWKS_URL", "https://idp.example.com/certs");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            let refused = c.auth.trust().unwrap_err().to_string();
            assert!(refused.contains("auth.audience is required"), "{refused}");
            jail.set_env("APPREG_AUTH__AUDIENCE", " ");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert!(c.auth.trust().is_err(), "a blank audience is none");
            jail.set_env("APPREG_AUTH__AUDIENCE", "appreg");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.auth.trust().map_err(|e| e.to_string())?,
                TokenTrust::Issuer {
                    issuer: "https://idp.example.com",
                    jwks_url: "https://idp.example.com/certs",
                    audience: "appreg"
                }
            );
            // Development trusts its own key, for its own audience.
            jail.set_env("APPREG_AUTH__DEV", "true");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.auth.trust().map_err(|e| e.to_string())?, TokenTrust::Dev);
            assert_eq!(c.auth.jwks_max_age_seconds, 3600);
            assert_eq!(c.auth.jwks_unknown_kid_interval_seconds, 30);
            assert_eq!(c.auth.jwks_stale_if_error_seconds, 21600);
            assert_eq!(c.auth.jwks_timeout_ms, 5000);
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/appreg.toml"))).is_err());
    }
}
