//! The client of a DCR provider: OpenID Connect discovery, initial access tokens (fixed, or a
//! `client_credentials` token of an admin client), RFC 7591 registration, RFC 7592 read /
//! update / delete, and client secret renewal through a configured endpoint.
//!
//! Secrets are [`SecretString`]s end to end; no `Debug`/`Display` here prints one.
//!
//! The OpenID Connect and OAuth messages (provider metadata, the client-credentials token, the
//! RFC 7591 registration request and answer) are the `openidconnect` crate's, sent through our
//! own outbound client (`oidc`); RFC 7592 management and secret renewal are our own code.
//!
//! Layout: this file holds [`ProviderClient`], its caches and discovery; `settings` what a
//! provider record holds, `answers` what a provider answers, `token` the initial access token,
//! `registration` registration, management and secret renewal; `oidc` the crate's types and
//! its HTTP client over `outbound`; `error`, `metadata`, `outbound` and `validate` as before.

mod error;
mod metadata;
mod oidc;
mod outbound;
mod validate;

pub use error::ProviderError;
pub use metadata::{
    response_types_for, ClientMetadata, OidcApplicationType, TokenEndpointAuthMethod,
};
pub use outbound::{ClientOptions, DOCUMENT_CAP, TOKEN_CAP};
use validate::check_endpoints;
pub use validate::check_renewal_origin;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::{header, Method};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

mod answers;
mod registration;
mod settings;
mod token;

pub use answers::{Discovery, RegisteredClient, RegistrationHandle, RenewedSecret};
pub use settings::{InitialAccessTokenMode, ProviderSettings, RenewMethod, RenewSettings};

/// How long a discovery document is trusted before it is fetched again (it is also dropped
/// whenever a call that used it fails).
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// A cached initial access token is used until this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(30);

struct CachedDiscovery {
    discovery: Discovery,
    fetched: Instant,
}

#[derive(PartialEq, Eq, Hash)]
struct TokenKey {
    token_endpoint: String,
    client_id: String,
    scopes: String,
    /// A hash of the client secret, so a changed secret is not served an old token.
    secret_hash: u64,
}

struct CachedToken {
    token: SecretString,
    valid_until: Instant,
}

/// The HTTP client of DCR providers; cheap to share (`Arc`) between saga tasks. Caches
/// discovery documents per discovery URL and initial access tokens per admin client.
pub struct ProviderClient {
    http: reqwest::Client,
    options: ClientOptions,
    discoveries: Mutex<HashMap<String, CachedDiscovery>>,
    tokens: Mutex<HashMap<TokenKey, CachedToken>>,
}

impl std::fmt::Debug for ProviderClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderClient").finish_non_exhaustive()
    }
}

/// What a request carries, to scrub echoes of it from errors.
fn exposed<'a>(secrets: &[&'a SecretString]) -> Vec<&'a str> {
    secrets.iter().map(|s| s.expose_secret()).collect()
}

impl ProviderClient {
    /// Connect timeout 5 s, whole request 10 s; redirects are not followed; every address may
    /// be called ([`ClientOptions::default`]).
    pub fn new() -> Result<Self, ProviderError> {
        Self::with_options(ClientOptions::default())
    }

    pub fn with_timeouts(connect: Duration, request: Duration) -> Result<Self, ProviderError> {
        Self::with_options(ClientOptions {
            connect_timeout: connect,
            request_timeout: request,
            ..ClientOptions::default()
        })
    }

    pub fn with_options(options: ClientOptions) -> Result<Self, ProviderError> {
        Ok(Self {
            http: outbound::http_client(&options)?,
            options,
            discoveries: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        })
    }

    // ----- discovery ---------------------------------------------------------------------

    /// The provider's discovery document, cached per discovery URL.
    /// Refused ([`ProviderError::CrossOrigin`]) when an endpoint the settings send credentials to
    /// (registration; token in client-credentials mode) is off the discovery endpoint's origin
    /// and the settings do not allow that.
    pub async fn discover(&self, settings: &ProviderSettings) -> Result<Discovery, ProviderError> {
        let key = settings.discovery_endpoint.trim();
        let cached = self
            .discoveries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(key)
            .filter(|c| c.fetched.elapsed() < DISCOVERY_TTL)
            .map(|c| c.discovery.clone());
        let discovery = match cached {
            Some(d) => d,
            None => self.fetch_discovery(key).await?,
        };
        check_endpoints(settings, &discovery)?;
        Ok(discovery)
    }

    /// Forgets the cached discovery document (and so refetches it on the next call).
    pub fn forget_discovery(&self, settings: &ProviderSettings) {
        self.discoveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(settings.discovery_endpoint.trim());
    }

    async fn fetch_discovery(&self, url: &str) -> Result<Discovery, ProviderError> {
        const WHAT: &str = "discovery";
        let request = self
            .http
            .get(url)
            .header(header::ACCEPT, "application/json");
        let (status, body) = self.exchange(request, url, WHAT, DOCUMENT_CAP, &[]).await?;
        if !status.is_success() {
            return Err(error::from_status(status.as_u16(), &body, WHAT, &[]));
        }
        let discovery = oidc::discovery_document(url, &body)?;
        self.discoveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                url.to_string(),
                CachedDiscovery {
                    discovery: discovery.clone(),
                    fetched: Instant::now(),
                },
            );
        Ok(discovery)
    }

    // ----- initial access token ----------------------------------------------------------
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "super-secret-value-1234";

    #[test]
    fn debug_never_prints_secrets() {
        let settings = ProviderSettings {
            discovery_endpoint: "https://idp.example/.well-known/openid-configuration".into(),
            initial_access_token: InitialAccessTokenMode::ClientCredentials {
                client_id: "admin".into(),
                client_secret: SECRET.into(),
                scopes: vec!["dcr".into()],
            },
            software_id: None,
            renew_client_secret: RenewSettings::default(),
            allow_cross_origin_endpoints: false,
        };
        let fixed = InitialAccessTokenMode::InitialAccessToken {
            token: SECRET.into(),
        };
        let client = RegisteredClient::from_json(
            serde_json::json!({
                "client_id": "c1",
                "client_secret": SECRET,
                "registration_access_token": SECRET,
                "registration_client_uri": "https://idp.example/reg/c1",
                "client_secret_expires_at": 0,
            }),
            "test",
        )
        .unwrap();
        assert_eq!(
            client.client_secret.as_ref().unwrap().expose_secret(),
            SECRET
        );
        assert!(!client.metadata.contains_key("client_secret"));
        assert!(!client.metadata.contains_key("registration_access_token"));
        let renewed = RenewedSecret {
            client_secret: SECRET.into(),
            client_secret_expires_at: None,
            registration_access_token: Some(SECRET.into()),
        };
        for text in [
            format!("{settings:?}"),
            format!("{fixed:?}"),
            format!("{client:?}"),
            format!("{:?}", client.handle()),
            format!("{renewed:?}"),
            format!("{:?}", ProviderClient::new().unwrap()),
        ] {
            assert!(!text.contains(SECRET), "{text}");
        }
    }

    #[test]
    fn errors_never_echo_secrets() {
        let body = serde_json::json!({
            "error": "invalid_request",
            "error_description": format!("token {SECRET} is bad"),
        })
        .to_string();
        let e = error::from_status(400, body.as_bytes(), "registration", &[SECRET]);
        for text in [format!("{e}"), format!("{e:?}")] {
            assert!(!text.contains(SECRET), "{text}");
            assert!(text.contains("invalid_request"), "{text}");
        }
        assert!(!e.is_retryable());
        let e = error::from_status(503, body.as_bytes(), "registration", &[SECRET]);
        assert!(e.is_retryable());
        assert!(!format!("{e}").contains(SECRET));
        assert!(error::from_status(429, b"", "x", &[]).is_retryable());
        assert_eq!(
            error::from_status(404, b"<html>", "x", &[]),
            ProviderError::Rejected {
                status: 404,
                error: "http_error".into(),
                error_description: Some("x: HTTP 404".into()),
            }
        );
        assert!(matches!(
            error::from_status(302, b"", "x", &[]),
            ProviderError::Invalid(_)
        ));
    }

    #[test]
    fn renew_template_expansion() {
        let r = RenewSettings {
            enabled: true,
            ..RenewSettings::default()
        };
        assert_eq!(
            r.expand("https://idp.example/reg/", "a b/c").unwrap(),
            "https://idp.example/reg/a%20b%2Fc/renew_secret"
        );
        let r = RenewSettings {
            enabled: true,
            endpoint_template: "https://idp.example/clients/{client_id}/secret".into(),
            method: RenewMethod::Patch,
        };
        assert_eq!(
            r.expand("ignored", "c1").unwrap(),
            "https://idp.example/clients/c1/secret"
        );
        assert_eq!(r.method.http(), Method::PATCH);
        let r = RenewSettings {
            enabled: true,
            endpoint_template: "/{client_id}".into(),
            method: RenewMethod::Put,
        };
        assert!(matches!(r.expand("", "c1"), Err(ProviderError::Invalid(_))));
    }
}
