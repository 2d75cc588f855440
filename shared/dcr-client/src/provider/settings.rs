//! What a DCR provider record holds: [`ProviderSettings`], the initial access token mode and
//! the secret renewal settings, and the encoding of the renewal URL.

use super::*;

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
    pub(super) fn http(self) -> Method {
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
