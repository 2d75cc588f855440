//! The client of a DCR provider: OpenID Connect discovery, initial access tokens (fixed, or a
//! `client_credentials` token of an admin client), RFC 7591 registration, RFC 7592 read /
//! update / delete, and client secret renewal through a configured endpoint.
//!
//! Secrets are [`SecretString`]s end to end; no `Debug`/`Display` here prints one.

mod error;
mod metadata;
mod outbound;
mod validate;

pub use error::ProviderError;
pub use metadata::{
    response_types_for, ClientMetadata, OidcApplicationType, TokenEndpointAuthMethod,
};
pub use outbound::{is_public, ClientOptions, DOCUMENT_CAP, TOKEN_CAP};
use validate::check_endpoints;
pub use validate::check_renewal_origin;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::{header, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------
// Settings
// ---------------------------------------------------------------------------------------------

/// What a DCR provider record holds (the part the saga needs).
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    /// The OpenID Connect discovery document URL (`…/.well-known/openid-configuration`).
    pub discovery_endpoint: String,
    pub initial_access_token: InitialAccessTokenMode,
    /// Sent as `software_id` when the metadata has none.
    pub software_id: Option<String>,
    pub renew_client_secret: RenewSettings,
    /// Whether the token, registration and renewal endpoints may be on another origin than the
    /// discovery endpoint (set by an organisation administrator only). When false, no
    /// credential is ever sent off the discovery endpoint's origin.
    pub allow_cross_origin_endpoints: bool,
}

/// How appreg obtains the initial access token a registration request carries.
#[derive(Debug, Clone)]
pub enum InitialAccessTokenMode {
    /// A `client_credentials` grant (`client_secret_basic`) at the provider's token endpoint;
    /// the access token is the initial access token (Gravitee AM's `dcr_admin` flow).
    ClientCredentials {
        client_id: String,
        client_secret: SecretString,
        scopes: Vec<String>,
    },
    /// A fixed token configured by the administrator.
    InitialAccessToken { token: SecretString },
}

/// Client secret renewal through a provider-specific endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewSettings {
    pub enabled: bool,
    /// URL template; `{client_id}` (percent-encoded) and `{registration_endpoint}` (from
    /// discovery, without a trailing `/`) are expanded.
    pub endpoint_template: String,
    pub method: RenewMethod,
}

impl Default for RenewSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint_template: "{registration_endpoint}/{client_id}/renew_secret".into(),
            method: RenewMethod::Post,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewMethod {
    Post,
    Put,
    Patch,
}

impl RenewMethod {
    fn http(self) -> Method {
        match self {
            RenewMethod::Post => Method::POST,
            RenewMethod::Put => Method::PUT,
            RenewMethod::Patch => Method::PATCH,
        }
    }
}

impl RenewSettings {
    /// The renewal URL for a client.
    pub fn expand(
        &self,
        registration_endpoint: &str,
        client_id: &str,
    ) -> Result<String, ProviderError> {
        let url = self
            .endpoint_template
            .trim()
            .replace(
                "{registration_endpoint}",
                registration_endpoint.trim_end_matches('/'),
            )
            .replace("{client_id}", &encode_path_segment(client_id));
        match url::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(url),
            _ => Err(ProviderError::Invalid(format!(
                "the secret renewal endpoint template {:?} does not give an absolute http(s) URL",
                self.endpoint_template
            ))),
        }
    }
}

/// RFC 3986 path-segment encoding: unreserved characters stay, everything else is `%XX`.
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `Authorization: Basic` for `client_secret_basic` (RFC 6749 §2.3.1: both parts
/// form-urlencoded first; everything but unreserved characters is `%XX`-encoded, which every
/// decoder reads alike, `+` for a space would not be).
fn basic_auth(client_id: &str, secret: &str) -> String {
    let raw = format!(
        "{}:{}",
        encode_path_segment(client_id),
        encode_path_segment(secret)
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

// ---------------------------------------------------------------------------------------------
// Provider answers
// ---------------------------------------------------------------------------------------------

/// The parts of the discovery document appreg uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub registration_endpoint: String,
    pub token_endpoint: Option<String>,
    pub grant_types_supported: Option<Vec<String>>,
    pub response_types_supported: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct DiscoveryDoc {
    issuer: Option<String>,
    registration_endpoint: Option<String>,
    token_endpoint: Option<String>,
    grant_types_supported: Option<Vec<String>>,
    response_types_supported: Option<Vec<String>>,
}

/// A client as the provider describes it after registration, update or read.
#[derive(Debug, Clone)]
pub struct RegisteredClient {
    pub client_id: String,
    /// None for public clients (`token_endpoint_auth_method: none`).
    pub client_secret: Option<SecretString>,
    /// As returned; `0` means the secret does not expire.
    pub client_secret_expires_at: Option<i64>,
    pub registration_access_token: Option<SecretString>,
    pub registration_client_uri: Option<String>,
    /// The provider's answer without `client_secret` and `registration_access_token`.
    pub metadata: Map<String, Value>,
}

/// What RFC 7592 management of a registered client needs (what the saga stores).
#[derive(Debug, Clone)]
pub struct RegistrationHandle {
    pub client_id: String,
    pub registration_client_uri: Option<String>,
    pub registration_access_token: Option<SecretString>,
}

impl RegisteredClient {
    pub fn handle(&self) -> RegistrationHandle {
        RegistrationHandle {
            client_id: self.client_id.clone(),
            registration_client_uri: self.registration_client_uri.clone(),
            registration_access_token: self.registration_access_token.clone(),
        }
    }

    /// A string array of the metadata (`grant_types`, `redirect_uris`, …).
    pub fn strings(&self, field: &str) -> Vec<String> {
        self.metadata
            .get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn from_json(body: Value, what: &str) -> Result<Self, ProviderError> {
        let Value::Object(mut m) = body else {
            return Err(ProviderError::Invalid(format!(
                "{what}: the answer is not a JSON object"
            )));
        };
        let secret = |m: &mut Map<String, Value>, k: &str| match m.remove(k) {
            Some(Value::String(s)) if !s.is_empty() => Some(SecretString::from(s)),
            _ => None,
        };
        let client_secret = secret(&mut m, "client_secret");
        let registration_access_token = secret(&mut m, "registration_access_token");
        let client_id = match m.get("client_id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(ProviderError::Invalid(format!(
                    "{what}: the answer has no client_id"
                )))
            }
        };
        Ok(RegisteredClient {
            client_id,
            client_secret,
            client_secret_expires_at: m.get("client_secret_expires_at").and_then(Value::as_i64),
            registration_access_token,
            registration_client_uri: m
                .get("registration_client_uri")
                .and_then(Value::as_str)
                .map(str::to_string),
            metadata: m,
        })
    }
}

/// The answer of a secret renewal.
#[derive(Debug, Clone)]
pub struct RenewedSecret {
    pub client_secret: SecretString,
    pub client_secret_expires_at: Option<i64>,
    /// Set when the provider rotated the registration access token too.
    pub registration_access_token: Option<SecretString>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    expires_in: Option<Value>,
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

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
        let doc: DiscoveryDoc = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::Invalid(format!(
                "{WHAT}: the answer is not an OpenID Connect discovery document ({e})"
            ))
        })?;
        let issuer = doc
            .issuer
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ProviderError::Invalid(format!("{WHAT}: the document has no issuer")))?;
        let registration_endpoint = doc
            .registration_endpoint
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                ProviderError::Unsupported(format!(
                    "the provider {issuer} advertises no registration_endpoint"
                ))
            })?;
        let discovery = Discovery {
            issuer,
            registration_endpoint,
            token_endpoint: doc.token_endpoint.filter(|s| !s.is_empty()),
            grant_types_supported: doc.grant_types_supported,
            response_types_supported: doc.response_types_supported,
        };
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

    /// The bearer token of a registration request: the fixed token, or a `client_credentials`
    /// token cached until 30 s before it expires.
    pub async fn initial_access_token(
        &self,
        settings: &ProviderSettings,
    ) -> Result<SecretString, ProviderError> {
        self.initial_access_token_inner(settings, true).await
    }

    async fn initial_access_token_inner(
        &self,
        settings: &ProviderSettings,
        use_cache: bool,
    ) -> Result<SecretString, ProviderError> {
        let (client_id, client_secret, scopes) = match &settings.initial_access_token {
            InitialAccessTokenMode::InitialAccessToken { token } => {
                if token.expose_secret().trim().is_empty() {
                    return Err(ProviderError::Invalid(
                        "the initial access token is empty".into(),
                    ));
                }
                return Ok(token.clone());
            }
            InitialAccessTokenMode::ClientCredentials {
                client_id,
                client_secret,
                scopes,
            } => (client_id, client_secret, scopes),
        };
        let discovery = self.discover(settings).await?;
        let token_endpoint = discovery.token_endpoint.clone().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "the provider {} advertises no token_endpoint",
                discovery.issuer
            ))
        })?;
        let key = TokenKey {
            token_endpoint: token_endpoint.clone(),
            client_id: client_id.clone(),
            scopes: scopes.join(" "),
            secret_hash: {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                client_secret.expose_secret().hash(&mut h);
                h.finish()
            },
        };
        if use_cache {
            if let Some(t) = self
                .tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
            {
                if Instant::now() < t.valid_until {
                    return Ok(t.token.clone());
                }
            }
        }
        let result = self
            .client_credentials(&token_endpoint, client_id, client_secret, scopes)
            .await;
        let (token, expires_in) = match result {
            Ok(t) => t,
            Err(e) => {
                self.forget_discovery(settings);
                return Err(e);
            }
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match expires_in.and_then(|e| e.checked_sub(TOKEN_MARGIN)) {
            Some(ttl) if !ttl.is_zero() => {
                tokens.insert(
                    key,
                    CachedToken {
                        token: token.clone(),
                        valid_until: Instant::now() + ttl,
                    },
                );
            }
            _ => {
                tokens.remove(&key);
            }
        }
        Ok(token)
    }

    fn forget_token(&self, settings: &ProviderSettings) {
        if let InitialAccessTokenMode::ClientCredentials { client_id, .. } =
            &settings.initial_access_token
        {
            self.tokens
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .retain(|k, _| &k.client_id != client_id);
        }
    }

    /// A `client_credentials` grant with `client_secret_basic`.
    async fn client_credentials(
        &self,
        token_endpoint: &str,
        client_id: &str,
        client_secret: &SecretString,
        scopes: &[String],
    ) -> Result<(SecretString, Option<Duration>), ProviderError> {
        const WHAT: &str = "token request";
        let secrets = exposed(&[client_secret]);
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        if !scopes.is_empty() {
            form.push(("scope", scopes.join(" ")));
        }
        let request = self
            .http
            .post(token_endpoint)
            .header(
                header::AUTHORIZATION,
                basic_auth(client_id, client_secret.expose_secret()),
            )
            .header(header::ACCEPT, "application/json")
            .form(&form);
        let (status, body) = self
            .exchange(request, token_endpoint, WHAT, TOKEN_CAP, &secrets)
            .await?;
        if !status.is_success() {
            return Err(error::from_status(status.as_u16(), &body, WHAT, &secrets));
        }
        let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|_| {
            ProviderError::Invalid(format!("{WHAT}: the answer has no access_token"))
        })?;
        let expires_in = answer.expires_in.and_then(|v| match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
        Ok((
            SecretString::from(answer.access_token),
            expires_in.map(Duration::from_secs),
        ))
    }

    // ----- RFC 7591 registration -----------------------------------------------------------

    /// Registers a client (RFC 7591). `software_id` of the settings is added when the
    /// metadata has none. In client-credentials mode a `401` (token expired or revoked early)
    /// is retried once with a fresh token: nothing was created.
    pub async fn register(
        &self,
        settings: &ProviderSettings,
        metadata: &ClientMetadata,
    ) -> Result<RegisteredClient, ProviderError> {
        self.register_idempotent(settings, metadata, None).await
    }

    /// [`Self::register`] with an `Idempotency-Key` (the same for every attempt of one request):
    /// a provider that honours it answers a repeated attempt with the client the first one
    /// created, so an answer lost after the provider created the client (a 5xx, a reset) leaves
    /// no second client behind. Providers that ignore the header are unaffected.
    pub async fn register_idempotent(
        &self,
        settings: &ProviderSettings,
        metadata: &ClientMetadata,
        idempotency_key: Option<&str>,
    ) -> Result<RegisteredClient, ProviderError> {
        let mut body = metadata.to_json();
        if metadata.software_id.is_none() {
            if let Some(s) = settings.software_id.as_deref().filter(|s| !s.is_empty()) {
                body.insert("software_id".into(), Value::String(s.to_string()));
            }
        }
        let result = self.register_once(settings, &body, idempotency_key).await;
        let result = match result {
            Err(ProviderError::Rejected { status: 401, .. })
                if matches!(
                    settings.initial_access_token,
                    InitialAccessTokenMode::ClientCredentials { .. }
                ) =>
            {
                self.forget_token(settings);
                self.register_once(settings, &body, idempotency_key).await
            }
            other => other,
        };
        if result.is_err() {
            self.forget_discovery(settings);
        }
        result
    }

    async fn register_once(
        &self,
        settings: &ProviderSettings,
        body: &Map<String, Value>,
        idempotency_key: Option<&str>,
    ) -> Result<RegisteredClient, ProviderError> {
        const WHAT: &str = "registration";
        let discovery = self.discover(settings).await?;
        let token = self.initial_access_token(settings).await?;
        let (status, answer) = self
            .send_json_keyed(
                Method::POST,
                &discovery.registration_endpoint,
                Some(&token),
                Some(body),
                WHAT,
                idempotency_key,
            )
            .await?;
        if status != StatusCode::CREATED && status != StatusCode::OK {
            return Err(ProviderError::Invalid(format!(
                "{WHAT}: unexpected HTTP status {status}"
            )));
        }
        RegisteredClient::from_json(answer, WHAT)
    }

    // ----- RFC 7592 management -------------------------------------------------------------

    fn management<'a>(
        handle: &'a RegistrationHandle,
        what: &str,
    ) -> Result<(&'a str, &'a SecretString), ProviderError> {
        let uri = handle.registration_client_uri.as_deref().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "{what}: the provider gave no registration_client_uri for client {}",
                handle.client_id
            ))
        })?;
        let token = handle.registration_access_token.as_ref().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "{what}: the provider gave no registration access token for client {}",
                handle.client_id
            ))
        })?;
        Ok((uri, token))
    }

    /// Reads the client's current registration (RFC 7592 GET).
    pub async fn read(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
    ) -> Result<RegisteredClient, ProviderError> {
        const WHAT: &str = "client read";
        let _ = settings;
        let (uri, token) = Self::management(handle, WHAT)?;
        let (_, answer) = self
            .send_json(Method::GET, uri, Some(token), None, WHAT)
            .await?;
        let mut client = RegisteredClient::from_json(answer, WHAT)?;
        client.registration_access_token = client
            .registration_access_token
            .or_else(|| handle.registration_access_token.clone());
        client.registration_client_uri = client
            .registration_client_uri
            .or_else(|| handle.registration_client_uri.clone());
        Ok(client)
    }

    /// Replaces the client's metadata (RFC 7592 PUT, the full metadata with `client_id`).
    /// The answer's `registration_access_token` is the rotated one (the old token when the
    /// provider does not rotate): the caller must store it, the old one may be dead.
    pub async fn update(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
        metadata: &ClientMetadata,
    ) -> Result<RegisteredClient, ProviderError> {
        const WHAT: &str = "client update";
        let (uri, token) = Self::management(handle, WHAT)?;
        let mut body = metadata.to_json();
        if metadata.software_id.is_none() {
            if let Some(s) = settings.software_id.as_deref().filter(|s| !s.is_empty()) {
                body.insert("software_id".into(), Value::String(s.to_string()));
            }
        }
        body.insert("client_id".into(), Value::String(handle.client_id.clone()));
        let (_, answer) = self
            .send_json(Method::PUT, uri, Some(token), Some(&body), WHAT)
            .await?;
        let mut client = RegisteredClient::from_json(answer, WHAT)?;
        if client.client_id != handle.client_id {
            return Err(ProviderError::Invalid(format!(
                "{WHAT}: the provider answered for another client"
            )));
        }
        client.registration_access_token = client
            .registration_access_token
            .or_else(|| handle.registration_access_token.clone());
        client.registration_client_uri = client
            .registration_client_uri
            .or_else(|| handle.registration_client_uri.clone());
        Ok(client)
    }

    /// Deletes the client (RFC 7592 DELETE). [`ProviderError::Unsupported`] without a
    /// `registration_client_uri`.
    pub async fn delete(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
    ) -> Result<(), ProviderError> {
        const WHAT: &str = "client deletion";
        let _ = settings;
        let (uri, token) = Self::management(handle, WHAT)?;
        self.send_json(Method::DELETE, uri, Some(token), None, WHAT)
            .await?;
        Ok(())
    }

    /// Renews the client secret through the configured endpoint: the template expanded, the
    /// configured method, the registration access token as bearer. Prefer
    /// [`Self::renew_secret_at`], which also checks that the token goes back where it was issued.
    pub async fn renew_secret(
        &self,
        settings: &ProviderSettings,
        client_id: &str,
        registration_access_token: &SecretString,
    ) -> Result<RenewedSecret, ProviderError> {
        self.renew_secret_inner(settings, client_id, registration_access_token, None)
            .await
    }

    /// [`Self::renew_secret`] for a registered client: the renewal endpoint must also be on the
    /// origin of the client's `registration_client_uri` (where its registration access token
    /// was issued), unless the settings allow other origins. So a provider record moved to
    /// another discovery endpoint never sends the clients' old tokens to the new server.
    pub async fn renew_secret_at(
        &self,
        settings: &ProviderSettings,
        handle: &RegistrationHandle,
    ) -> Result<RenewedSecret, ProviderError> {
        let token = handle.registration_access_token.as_ref().ok_or_else(|| {
            ProviderError::Unsupported("the provider gave no registration access token".into())
        })?;
        self.renew_secret_inner(
            settings,
            &handle.client_id,
            token,
            handle.registration_client_uri.as_deref(),
        )
        .await
    }

    async fn renew_secret_inner(
        &self,
        settings: &ProviderSettings,
        client_id: &str,
        registration_access_token: &SecretString,
        issued_at: Option<&str>,
    ) -> Result<RenewedSecret, ProviderError> {
        const WHAT: &str = "secret renewal";
        let renew = &settings.renew_client_secret;
        if !renew.enabled {
            return Err(ProviderError::Unsupported(
                "client secret renewal is not enabled for this provider".into(),
            ));
        }
        let registration_endpoint = if renew.endpoint_template.contains("{registration_endpoint}") {
            self.discover(settings).await?.registration_endpoint
        } else {
            String::new()
        };
        let url = renew.expand(&registration_endpoint, client_id)?;
        outbound::check_origin(
            &settings.discovery_endpoint,
            settings.allow_cross_origin_endpoints,
            "secret renewal endpoint",
            &url,
        )?;
        if let Some(issued_at) = issued_at {
            // The token's own origin stands where the discovery endpoint does above.
            outbound::check_origin(
                issued_at,
                settings.allow_cross_origin_endpoints,
                "secret renewal endpoint (the registration access token's provider)",
                &url,
            )?;
        }
        let result = self
            .send_json(
                renew.method.http(),
                &url,
                Some(registration_access_token),
                None,
                WHAT,
            )
            .await;
        let (_, answer) = match result {
            Ok(a) => a,
            Err(e) => {
                self.forget_discovery(settings);
                return Err(e);
            }
        };
        let client = RegisteredClient::from_json(answer, WHAT)?;
        let client_secret = client.client_secret.ok_or_else(|| {
            ProviderError::Invalid(format!("{WHAT}: the answer has no client_secret"))
        })?;
        Ok(RenewedSecret {
            client_secret,
            client_secret_expires_at: client.client_secret_expires_at,
            registration_access_token: client.registration_access_token,
        })
    }
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

    #[test]
    fn basic_auth_form_encodes_both_parts() {
        let h = basic_auth("id:1", "p w&");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "id%3A1:p%20w%26");
    }
}
