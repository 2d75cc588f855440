//! The api's settings (`appreg api`, and the api of `appreg dev`): `[api]` in the file,
//! `APPREG_API__*` in the environment. Their former top-level names (`listen`,
//! `APPREG_LISTEN`, …) still work and win when set.

use crate::ReadModels;
use serde::{Deserialize, Serialize};

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// Upper bound of a request body, in bytes.
    pub max_body_bytes: usize,
    /// Give each new non-administrator user a simple "Default application" on their first
    /// request in an environment (Gravitee's `user.login.default_application`).
    pub default_application: bool,
    /// Accept `http` redirect URIs for non-loopback hosts (never in production).
    pub allow_http_redirect_uris: bool,
    /// Accept `http` webhook URLs on loopback hosts (`https` is required elsewhere, always).
    /// Unset: off, but on in `appreg dev` ([`ApiSettings::http_webhooks_on`]).
    pub allow_http_webhooks: Option<bool>,
    /// Longest wait of a read for the read models to include a write, in milliseconds.
    pub consistency_wait_ms: u64,
    /// Who keeps the api's read models: the api itself (`inline`) or `appreg projector`
    /// (`external`).
    pub read_models: ReadModels,
    /// Interval of the heartbeats (SSE comments) of an idle `GET /events` stream, in
    /// milliseconds: keeps proxies from closing the connection and lets clients notice a dead one.
    pub sse_heartbeat_ms: u64,
    /// Most `GET /events` streams one user (token subject) may have open on one api at once;
    /// more are answered 429.
    pub sse_max_streams_per_user: usize,
    /// Most `GET /events` streams open on one api at once; more are answered 429.
    pub sse_max_streams: usize,
    /// Farthest a stream resumes (`Last-Event-ID`): at most this many events back; an older
    /// resume point is answered 410 (`events.replay_too_old`).
    pub sse_max_replay_events: i64,
    /// Lifetime of a `POST /events/_ticket` ticket, in milliseconds (at most 60000).
    pub sse_ticket_ttl_ms: u64,
    /// Origins (`scheme://host[:port]`) whose pages may call the api (CORS); empty: none.
    /// `APPREG_API__CORS_ALLOWED_ORIGINS` is comma-separated. Checked by
    /// [`Config::cors_origins`](crate::Config::cors_origins).
    #[serde(deserialize_with = "crate::browser::origin_list")]
    pub cors_allowed_origins: Vec<String>,
    /// Serve the developer portal at `/` (assets under `/portal/`). Unset: off, but on in
    /// `appreg dev` ([`ApiSettings::portal_on`]).
    pub portal_enabled: Option<bool>,
    /// The portal's public OpenID Connect client at `auth.issuer` (code flow with PKCE).
    pub portal_oidc_client_id: Option<String>,
    /// The scopes the portal asks the issuer for.
    pub portal_oidc_scopes: String,
    /// The environment the portal works in.
    pub portal_environment: String,
}

impl ApiSettings {
    /// Whether the portal is served (`portal_enabled`, off when unset).
    pub fn portal_on(&self) -> bool {
        self.portal_enabled.unwrap_or(false)
    }

    /// Whether `http` webhook URLs on loopback hosts are accepted (`allow_http_webhooks`, off
    /// when unset).
    pub fn http_webhooks_on(&self) -> bool {
        self.allow_http_webhooks.unwrap_or(false)
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 64 * 1024,
            default_application: true,
            allow_http_redirect_uris: false,
            allow_http_webhooks: None,
            consistency_wait_ms: 5000,
            read_models: ReadModels::Inline,
            sse_heartbeat_ms: 15_000,
            sse_max_streams_per_user: 16,
            sse_max_streams: 512,
            sse_max_replay_events: 10_000,
            sse_ticket_ttl_ms: crate::browser::default_sse_ticket_ttl_ms(),
            cors_allowed_origins: Vec::new(),
            portal_enabled: None,
            portal_oidc_client_id: None,
            portal_oidc_scopes: crate::portal::default_oidc_scopes(),
            portal_environment: crate::portal::default_environment(),
        }
    }
}

/// The api's settings under their former top-level names; each one set overrides its `[api]`
/// counterpart ([`ApiSettings`]).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub(crate) struct FormerApiKeys {
    #[serde(default)]
    listen: Option<String>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    default_application: Option<bool>,
    #[serde(default)]
    allow_http_redirect_uris: Option<bool>,
    #[serde(default)]
    consistency_wait_ms: Option<u64>,
    #[serde(default)]
    read_models: Option<ReadModels>,
    #[serde(default)]
    sse_heartbeat_ms: Option<u64>,
    #[serde(default)]
    sse_max_streams_per_user: Option<usize>,
    #[serde(default)]
    sse_max_streams: Option<usize>,
    #[serde(default)]
    sse_max_replay_events: Option<i64>,
}

impl FormerApiKeys {
    /// Moves every former key that is set into `api`.
    pub(crate) fn apply_to(&mut self, api: &mut ApiSettings) {
        let former = std::mem::take(self);
        macro_rules! apply {
            ($($field:ident),*) => {
                $(if let Some(value) = former.$field {
                    api.$field = value;
                })*
            };
        }
        apply!(
            listen,
            max_body_bytes,
            default_application,
            allow_http_redirect_uris,
            consistency_wait_ms,
            read_models,
            sse_heartbeat_ms,
            sse_max_streams_per_user,
            sse_max_streams,
            sse_max_replay_events
        );
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use crate::{Config, ReadModels};
    use figment::Jail;

    #[test]
    fn the_api_section_and_the_former_top_level_keys() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "appreg.toml",
                "[api]\nlisten = \"0.0.0.0:9000\"\nsse_max_streams = 8\nread_models = \"external\"\n",
            )?;
            jail.set_env("APPREG_API__MAX_BODY_BYTES", "1024");
            let c = Config::load(Some(std::path::Path::new("appreg.toml"))).unwrap();
            assert_eq!(c.api.listen, "0.0.0.0:9000");
            assert_eq!(c.api.sse_max_streams, 8);
            assert_eq!(c.api.max_body_bytes, 1024);
            assert_eq!(c.api.read_models, ReadModels::External);
            assert_eq!(c.api.sse_heartbeat_ms, 15_000);
            // A former top-level key wins over its `[api]` counterpart.
            jail.set_env("APPREG_LISTEN", "127.0.0.1:7000");
            jail.set_env("APPREG_DEFAULT_APPLICATION", "false");
            let c = Config::load(Some(std::path::Path::new("appreg.toml"))).unwrap();
            assert_eq!(c.api.listen, "127.0.0.1:7000");
            assert!(!c.api.default_application);
            Ok(())
        });
    }

    #[test]
    fn an_unknown_api_key_is_refused() {
        Jail::expect_with(|jail| {
            jail.create_file("appreg.toml", "[api]\nlisen = \"0.0.0.0:9000\"\n")?;
            assert!(Config::load(Some(std::path::Path::new("appreg.toml"))).is_err());
            Ok(())
        });
    }
}
