//! What a provider answers: its discovery document ([`Discovery`]), a registered client
//! ([`RegisteredClient`], its [`RegistrationHandle`]), a renewed secret, a token.

use super::*;

/// The parts of the discovery document appreg uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub registration_endpoint: String,
    pub token_endpoint: Option<String>,
    pub grant_types_supported: Option<Vec<String>>,
    pub response_types_supported: Option<Vec<String>>,
    /// The PKCE methods the provider lists (`code_challenge_methods_supported`, RFC 8414), if it
    /// lists them.
    pub code_challenge_methods_supported: Option<Vec<String>>,
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

    pub(super) fn from_json(body: Value, what: &str) -> Result<Self, ProviderError> {
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
