//! The `openidconnect` crate (and its `oauth2`) over appreg's outbound client. The crate builds
//! and reads the messages: the provider metadata of discovery, the client-credentials token
//! request and answer, the RFC 7591 registration request and answer. Every request goes out
//! through [`Outbound`], the crate's asynchronous HTTP client here, which keeps the rules of
//! `outbound` (non-public addresses refused, answers capped, timeouts, no redirects, uniform
//! transport failures, secrets scrubbed) and adds a registration's `Idempotency-Key`.
//!
//! Where the crate refuses an answer that appreg accepts, our own reading decides (each case has
//! a test in `tests/provider/crate_gaps.rs` or below):
//! - a registration answered `200 OK` (the crate takes `201 Created` only);
//! - a registration answer without `redirect_uris` (a client_credentials client; the crate
//!   requires the field);
//! - any other successful registration answer the crate's types cannot read but which names a
//!   `client_id`: the client exists at the provider, and refusing the answer would orphan it;
//! - an error answer, whatever its status and body: classified by `error::from_status` (the
//!   crate reads 400 only, and loses the status of the others).
//!
//! Discovery does not use the crate's `discover_async`: that also downloads the provider's JWKS,
//! which appreg never uses (it verifies no ID token), so a JWKS endpoint that is down would stop
//! registrations. The document is fetched here and read with the crate's
//! [`CoreProviderMetadata`], whose issuer rule (OpenID Connect Discovery 1.0 §4.3) is applied
//! alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use openidconnect::core::{
    CoreApplicationType, CoreClientAuthMethod, CoreGrantType, CoreJsonWebKey,
    CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm, CoreProviderMetadata,
    CoreRegisterErrorResponseType, CoreResponseType, CoreSubjectIdentifierType,
};
use openidconnect::registration::{
    AdditionalClientMetadata, ClientRegistrationRequest, ClientRegistrationResponse,
    EmptyAdditionalClientRegistrationResponse,
};
use openidconnect::{
    AsyncHttpClient, ClientName, ClientUrl, HttpRequest, HttpResponse, LocalizedClaim, LogoUrl,
    RedirectUrl, ResponseTypes,
};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    ClientMetadata, Discovery, OidcApplicationType, ProviderClient, ProviderError,
    RegisteredClient, TokenEndpointAuthMethod,
};

/// The RFC 7591 metadata appreg sends beyond OpenID Connect's: `software_id`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Extra {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) software_id: Option<String>,
}
impl AdditionalClientMetadata for Extra {}

/// The crate's registration request with [`Extra`].
pub(super) type RegistrationRequest = ClientRegistrationRequest<
    Extra,
    EmptyAdditionalClientRegistrationResponse,
    CoreApplicationType,
    CoreClientAuthMethod,
    CoreRegisterErrorResponseType,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// The crate's registration answer with [`Extra`].
pub(super) type RegistrationResponse = ClientRegistrationResponse<
    Extra,
    EmptyAdditionalClientRegistrationResponse,
    CoreApplicationType,
    CoreClientAuthMethod,
    CoreGrantType,
    CoreJweContentEncryptionAlgorithm,
    CoreJweKeyManagementAlgorithm,
    CoreJsonWebKey,
    CoreResponseType,
    CoreSubjectIdentifierType,
>;

/// One exchange with a provider as the crate's HTTP client: what it is (for messages), how much
/// of the answer is read, which secrets are scrubbed from failures, the `Idempotency-Key` to add.
/// Keeps the last answer (status and body) so that a failure the crate reports can be classified
/// from what the provider actually said.
pub(super) struct Outbound<'a> {
    client: &'a ProviderClient,
    what: &'static str,
    cap: usize,
    secrets: Vec<&'a str>,
    idempotency_key: Option<&'a str>,
    last: Mutex<Option<(StatusCode, Vec<u8>)>>,
}

impl<'a> Outbound<'a> {
    pub(super) fn new(
        client: &'a ProviderClient,
        what: &'static str,
        cap: usize,
        secrets: Vec<&'a str>,
        idempotency_key: Option<&'a str>,
    ) -> Self {
        Self {
            client,
            what,
            cap,
            secrets,
            idempotency_key,
            last: Mutex::new(None),
        }
    }

    /// The status and body of the last answer received, if any.
    pub(super) fn last_answer(&self) -> Option<(StatusCode, Vec<u8>)> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, ProviderError> {
        let (parts, body) = request.into_parts();
        let url = parts.uri.to_string();
        let mut builder = self
            .client
            .http
            .request(parts.method, url.as_str())
            .headers(parts.headers);
        if let Some(key) = self.idempotency_key {
            builder = builder.header("Idempotency-Key", key);
        }
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let (status, headers, body) = self
            .client
            .exchange_with_headers(builder, &url, self.what, self.cap, &self.secrets)
            .await?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((status, body.clone()));
        let mut response = HttpResponse::new(body);
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

impl<'c> AsyncHttpClient<'c> for Outbound<'_> {
    type Error = ProviderError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, ProviderError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

// ----- discovery -------------------------------------------------------------------------------

const WELL_KNOWN: &str = "/.well-known/openid-configuration";

/// The discovery document at `url`, read with the crate's provider metadata: a complete OpenID
/// Connect discovery document whose issuer is the discovery endpoint's (when the endpoint is
/// `<issuer>/.well-known/openid-configuration`), naming a registration endpoint.
pub(super) fn discovery_document(url: &str, body: &[u8]) -> Result<Discovery, ProviderError> {
    const WHAT: &str = "discovery";
    let doc: CoreProviderMetadata = serde_json::from_slice(body).map_err(|e| {
        ProviderError::Invalid(format!(
            "{WHAT}: the answer is not an OpenID Connect discovery document ({e})"
        ))
    })?;
    let issuer = doc.issuer().to_string();
    if let Some(expected) = url.trim().strip_suffix(WELL_KNOWN) {
        if issuer.trim_end_matches('/') != expected.trim_end_matches('/') {
            return Err(ProviderError::Invalid(format!(
                "{WHAT}: the document's issuer {issuer:?} is not the discovery endpoint's issuer {expected:?}"
            )));
        }
    }
    let registration_endpoint = doc
        .registration_endpoint()
        .map(|u| u.to_string())
        .ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "the provider {issuer} advertises no registration_endpoint"
            ))
        })?;
    Ok(Discovery {
        registration_endpoint,
        token_endpoint: doc.token_endpoint().map(|u| u.to_string()),
        grant_types_supported: doc.grant_types_supported().map(|g| names(g)),
        response_types_supported: Some(names(doc.response_types_supported())),
        code_challenge_methods_supported: pkce_methods(body),
        issuer,
    })
}

/// `code_challenge_methods_supported` of a discovery document (RFC 8414; the crate's provider
/// metadata does not carry it); a value that is not a list of strings counts as not listed.
fn pkce_methods(body: &[u8]) -> Option<Vec<String>> {
    #[derive(Deserialize)]
    struct Pkce {
        code_challenge_methods_supported: Option<Vec<String>>,
    }
    serde_json::from_slice::<Pkce>(body)
        .ok()
        .and_then(|p| p.code_challenge_methods_supported)
}

/// The names of serialized values (grant types, response types).
fn names<T: Serialize>(values: &[T]) -> Vec<String> {
    values
        .iter()
        .filter_map(|v| match serde_json::to_value(v) {
            Ok(Value::String(s)) => Some(s),
            _ => None,
        })
        .collect()
}

// ----- registration ----------------------------------------------------------------------------

/// A value of the crate's types from its JSON name (the types have an `Extension` variant, so
/// any name is one).
fn named<T: serde::de::DeserializeOwned>(name: &str, field: &str) -> Result<T, ProviderError> {
    serde_json::from_value(Value::String(name.to_string()))
        .map_err(|_| ProviderError::Invalid(format!("the {field} {name:?} cannot be registered")))
}

fn url_of<T>(
    value: &str,
    field: &str,
    parse: impl Fn(String) -> Result<T, url::ParseError>,
) -> Result<T, ProviderError> {
    parse(value.to_string())
        .map_err(|_| ProviderError::Invalid(format!("the {field} {value:?} is not a URL")))
}

/// The crate's registration request for `metadata` (`software_id` of the settings when the
/// metadata has none). `response_types` is always sent, `[]` included.
pub(super) fn registration_request(
    metadata: &ClientMetadata,
    software_id: Option<&str>,
) -> Result<RegistrationRequest, ProviderError> {
    let redirect_uris = metadata
        .redirect_uris
        .iter()
        .map(|u| url_of(u, "redirect URI", RedirectUrl::new))
        .collect::<Result<Vec<_>, _>>()?;
    let grant_types = metadata
        .grant_types
        .iter()
        .map(|g| named::<CoreGrantType>(g, "grant type"))
        .collect::<Result<Vec<_>, _>>()?;
    let response_types = metadata
        .response_types
        .iter()
        .map(|r| named::<ResponseTypes<CoreResponseType>>(r, "response type"))
        .collect::<Result<Vec<_>, _>>()?;
    let software_id = metadata
        .software_id
        .clone()
        .or_else(|| software_id.filter(|s| !s.is_empty()).map(str::to_string));
    let request = RegistrationRequest::new(redirect_uris, Extra { software_id })
        .set_application_type(Some(match metadata.application_type {
            OidcApplicationType::Web => CoreApplicationType::Web,
            OidcApplicationType::Native => CoreApplicationType::Native,
        }))
        .set_token_endpoint_auth_method(Some(match metadata.token_endpoint_auth_method {
            TokenEndpointAuthMethod::None => CoreClientAuthMethod::None,
            TokenEndpointAuthMethod::ClientSecretBasic => CoreClientAuthMethod::ClientSecretBasic,
        }))
        .set_grant_types(Some(grant_types))
        .set_response_types(Some(response_types))
        .set_client_name(
            metadata
                .client_name
                .clone()
                .map(|n| LocalizedClaim::from(ClientName::new(n))),
        )
        .set_client_uri(
            metadata
                .client_uri
                .as_deref()
                .map(|u| url_of(u, "client_uri", ClientUrl::new))
                .transpose()?
                .map(LocalizedClaim::from),
        )
        .set_logo_uri(
            metadata
                .logo_uri
                .as_deref()
                .map(|u| url_of(u, "logo_uri", LogoUrl::new))
                .transpose()?
                .map(LocalizedClaim::from),
        );
    Ok(request)
}

/// The JSON body of a registration request (also the body of an RFC 7592 update, with
/// `client_id` added).
pub(super) fn request_body(request: &RegistrationRequest) -> Map<String, Value> {
    match serde_json::to_value(request.client_metadata()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// A registered client from the crate's reading of a registration answer; `raw` is the answer
/// itself, kept (without its secrets) as the client's metadata.
pub(super) fn registered(
    typed: RegistrationResponse,
    raw: &[u8],
    what: &str,
) -> Result<RegisteredClient, ProviderError> {
    let mut metadata = match serde_json::from_slice(raw) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(ProviderError::Invalid(format!(
                "{what}: the answer is not a JSON object"
            )))
        }
    };
    metadata.remove("client_secret");
    metadata.remove("registration_access_token");
    let secret = |s: &str| (!s.is_empty()).then(|| secrecy::SecretString::from(s.to_string()));
    let client_id = typed.client_id().to_string();
    if client_id.is_empty() {
        return Err(ProviderError::Invalid(format!(
            "{what}: the answer has no client_id"
        )));
    }
    Ok(RegisteredClient {
        client_id,
        client_secret: typed.client_secret().and_then(|s| secret(s.secret())),
        client_secret_expires_at: typed.client_secret_expires_at().map(|t| t.timestamp()),
        registration_access_token: typed
            .registration_access_token()
            .and_then(|t| secret(t.secret())),
        registration_client_uri: typed.registration_client_uri().map(|u| u.to_string()),
        metadata,
    })
}

/// A registration answer the crate does not read (see the module's list): a success status
/// with a JSON object naming a `client_id` is a registered client, read by our own parser;
/// anything else is classified from its status and body.
pub(super) fn unread_answer(
    status: StatusCode,
    body: &[u8],
    what: &str,
    secrets: &[&str],
) -> Result<RegisteredClient, ProviderError> {
    if status == StatusCode::OK || status == StatusCode::CREATED {
        let value = serde_json::from_slice(body).map_err(|_| {
            ProviderError::Invalid(format!("{what}: the answer (HTTP {status}) is not JSON"))
        })?;
        return RegisteredClient::from_json(value, what);
    }
    if status.is_success() {
        return Err(ProviderError::Invalid(format!(
            "{what}: unexpected HTTP status {status}"
        )));
    }
    Err(super::error::from_status(
        status.as_u16(),
        body,
        what,
        secrets,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_domain::{ApplicationType, GrantType, HttpUrl, RedirectUri};
    use serde_json::json;

    fn metadata(t: ApplicationType, grants: &[GrantType], uris: &[&str]) -> ClientMetadata {
        let uris: Vec<RedirectUri> = uris
            .iter()
            .map(|u| RedirectUri::parse(u).unwrap())
            .collect();
        let client_uri = HttpUrl::parse("https://app.example/home").unwrap();
        ClientMetadata::for_application(t, grants, &uris, "App", None, Some(&client_uri), None)
            .unwrap()
    }

    /// The crate's request carries exactly what appreg's metadata says: names as they are
    /// (no rewriting of URLs or response types), `response_types: []` kept, `software_id` added.
    #[test]
    fn the_crate_sends_our_metadata_unchanged() {
        for (t, grants, uris) in [
            (
                ApplicationType::Browser,
                vec![GrantType::AuthorizationCode, GrantType::Implicit],
                vec!["https://spa.example/cb?x=1"],
            ),
            (ApplicationType::Native, vec![], vec!["com.example.app:/cb"]),
            (
                ApplicationType::Web,
                vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                vec!["https://app.example/cb"],
            ),
            (ApplicationType::BackendToBackend, vec![], vec![]),
        ] {
            let m = metadata(t, &grants, &uris);
            let body = request_body(&registration_request(&m, Some("tpl")).unwrap());
            let mut ours = m.to_json();
            ours.insert("software_id".into(), json!("tpl"));
            // The crate always sends redirect_uris (RFC 7591 §2 allows [] for clients without
            // redirection-based grants).
            ours.entry("redirect_uris").or_insert(json!([]));
            assert_eq!(Value::Object(body), Value::Object(ours), "{t:?}");
        }
        let m = metadata(ApplicationType::BackendToBackend, &[], &[]);
        let body = request_body(&registration_request(&m, None).unwrap());
        assert_eq!(body["response_types"], json!([]));
        assert!(!body.contains_key("software_id"));
    }

    fn typed(answer: &Value) -> RegistrationResponse {
        serde_json::from_value(answer.clone()).unwrap()
    }

    /// `client_secret_expires_at: 0` (RFC 7591 §3.2.1: the secret does not expire) stays 0 through
    /// the crate's timestamp type; secrets leave the kept metadata; extra fields stay.
    #[test]
    fn a_secret_that_never_expires_stays_zero() {
        let answer = json!({
            "client_id": "c1", "client_secret": "s3cr3t-value", "client_secret_expires_at": 0,
            "registration_access_token": "rat-value", "registration_client_uri": "https://idp.example/reg/c1",
            "redirect_uris": [], "grant_types": ["client_credentials"], "response_types": [],
            "x-vendor": {"kept": true},
        });
        let raw = answer.to_string();
        let c = registered(typed(&answer), raw.as_bytes(), "registration").unwrap();
        assert_eq!(c.client_secret_expires_at, Some(0));
        assert_eq!(
            c.registration_client_uri.as_deref(),
            Some("https://idp.example/reg/c1")
        );
        assert!(!c.metadata.contains_key("client_secret"));
        assert!(!c.metadata.contains_key("registration_access_token"));
        assert_eq!(c.metadata["x-vendor"], json!({"kept": true}));
        assert_eq!(c.metadata["response_types"], json!([]));
        let c = registered(
            typed(&json!({"client_id": "c2", "redirect_uris": [], "client_secret_expires_at": 1893456000})),
            br#"{"client_id": "c2"}"#,
            "registration",
        )
        .unwrap();
        assert_eq!(c.client_secret_expires_at, Some(1_893_456_000));
        assert!(c.client_secret.is_none());
    }

    /// The crate requires `redirect_uris` in a registration answer; RFC 7591 providers may omit
    /// it for a client that has none. Our parser reads such an answer.
    #[test]
    fn an_answer_without_redirect_uris_is_read_by_our_parser() {
        let answer = json!({"client_id": "c1", "client_secret": "s3cr3t-value", "grant_types": ["client_credentials"]});
        assert!(serde_json::from_value::<RegistrationResponse>(answer.clone()).is_err());
        let c = unread_answer(
            StatusCode::CREATED,
            answer.to_string().as_bytes(),
            "registration",
            &[],
        )
        .unwrap();
        assert_eq!(c.client_id, "c1");
        assert!(c.client_secret.is_some());
    }

    #[test]
    fn error_answers_are_classified_by_status() {
        let e = unread_answer(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_token"}"#,
            "registration",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.oauth_error(), Some("invalid_token"));
        let e = unread_answer(StatusCode::BAD_GATEWAY, b"<html>", "registration", &[]).unwrap_err();
        assert!(e.is_retryable());
        let e = unread_answer(StatusCode::NO_CONTENT, b"", "registration", &[]).unwrap_err();
        assert!(matches!(e, ProviderError::Invalid(_)));
    }

    #[test]
    fn discovery_needs_the_issuer_of_its_endpoint() {
        let doc = |issuer: &str| {
            json!({
                "issuer": issuer,
                "authorization_endpoint": format!("{issuer}/auth"),
                "jwks_uri": format!("{issuer}/jwks"),
                "token_endpoint": format!("{issuer}/token"),
                "registration_endpoint": format!("{issuer}/reg"),
                "response_types_supported": ["code", "id_token token"],
                "grant_types_supported": ["authorization_code", "client_credentials", "urn:x:custom"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256", "EdDSA-unknown"],
            })
            .to_string()
        };
        let url = "https://idp.example/t1/.well-known/openid-configuration";
        let d = discovery_document(url, doc("https://idp.example/t1").as_bytes()).unwrap();
        assert_eq!(d.registration_endpoint, "https://idp.example/t1/reg");
        assert_eq!(
            d.token_endpoint.as_deref(),
            Some("https://idp.example/t1/token")
        );
        assert_eq!(
            d.grant_types_supported.unwrap(),
            ["authorization_code", "client_credentials", "urn:x:custom"]
        );
        assert_eq!(
            d.response_types_supported.unwrap(),
            ["code", "id_token token"]
        );
        let e = discovery_document(url, doc("https://evil.example/t1").as_bytes()).unwrap_err();
        assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
        let e = discovery_document(url, br#"{"issuer": "https://idp.example/t1"}"#).unwrap_err();
        assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
    }
}
