//! Every request of the provider client goes out here: to URLs an environment administrator
//! chose (the discovery endpoint) or that a provider named (its token and registration
//! endpoints). So this module decides what may be called and how much of an answer is read:
//!
//! - **Origins.** The credentials (the admin client's secret, the initial access token, an
//!   application's registration access token) only go to endpoints on the discovery endpoint's
//!   origin, unless the provider allows other origins (`allow_cross_origin_endpoints`, which
//!   only an organisation administrator may set). Checked before anything is sent.
//! - **Addresses.** With `allow_private = false`, no request goes to a loopback, private,
//!   link-local, unique-local, CGNAT or otherwise non-public address: IP-literal hosts are
//!   checked before the request, names by the client's resolver, whose checked addresses are the
//!   ones connected to (no second lookup to rebind). No proxy from the environment is used then
//!   (the check must be on the address connected to).
//! - **Sizes.** Answers are read chunk by chunk and dropped past a cap (1 MiB for documents,
//!   64 KiB for tokens): a provider cannot make the client buffer without bound.
//! - **Uniform failures.** Refused, reset, timed out, not HTTP, too large: one message
//!   ("no usable answer"); what actually happened goes to tracing only, so error answers
//!   cannot be used to scan ports.
//!
//! It must never log or return a secret, nor follow redirects.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use super::{error, ProviderClient, ProviderError};

/// Most bytes read of a discovery document, a registration or a management answer.
pub const DOCUMENT_CAP: usize = 1024 * 1024;
/// Most bytes read of a token answer.
pub const TOKEN_CAP: usize = 64 * 1024;

/// How the provider client is built.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Whether non-public addresses (loopback, private, link-local, …) may be called.
    pub allow_private: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            allow_private: true,
        }
    }
}

/// The reqwest client of [`ClientOptions`].
pub(super) fn http_client(options: &ClientOptions) -> Result<reqwest::Client, ProviderError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("appreg-dcr-saga/", env!("CARGO_PKG_VERSION")));
    if !options.allow_private {
        builder = appreg_outbound::public_only(builder);
    }
    builder
        .build()
        .map_err(|e| ProviderError::Invalid(format!("cannot build the HTTP client: {e}")))
}

/// The same origin (scheme, host, port)?
pub(super) fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.origin() == b.origin()
}

/// `url` parsed as an absolute http(s) URL.
pub(super) fn http_url(url: &str, what: &str) -> Result<url::Url, ProviderError> {
    match url::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(u),
        _ => Err(ProviderError::Invalid(format!(
            "{what}: {url:?} is not an absolute http(s) URL"
        ))),
    }
}

/// Refuses `endpoint` (named `name`) when it is not on the discovery endpoint's origin and the
/// settings do not allow other origins.
pub(super) fn check_origin(
    discovery_endpoint: &str,
    allow_cross_origin: bool,
    name: &str,
    endpoint: &str,
) -> Result<(), ProviderError> {
    let discovery = http_url(discovery_endpoint, "discovery")?;
    let target = http_url(endpoint, name)?;
    if allow_cross_origin || same_origin(&discovery, &target) {
        return Ok(());
    }
    Err(ProviderError::CrossOrigin(format!(
        "the {name} {} is not on the discovery endpoint's origin {}; only an organisation administrator can allow other origins (allow_cross_origin_endpoints)",
        target.origin().ascii_serialization(),
        discovery.origin().ascii_serialization(),
    )))
}

/// What a transport failure (or an answer too large) reports: the same text for every cause;
/// [`ProviderError::OutcomeUnknown`] unless the request was surely not sent (`sent = false`: the
/// connection was refused, the name did not resolve).
pub(super) fn no_usable_answer(what: &str, sent: bool) -> ProviderError {
    let text = format!("{what}: no usable answer from the provider");
    if sent {
        ProviderError::OutcomeUnknown(text)
    } else {
        ProviderError::Transient(text)
    }
}

fn private_address(what: &str) -> ProviderError {
    ProviderError::PrivateAddress(format!(
        "{what}: the endpoint's host is a loopback, private or otherwise non-public address, which this deployment does not call (outbound_allow_private)"
    ))
}

impl ProviderClient {
    /// Sends `request` to `url` and reads the answer, at most `cap` bytes. Transport failures
    /// and oversized answers are [`no_usable_answer`] (the cause in tracing, scrubbed of
    /// `secrets`).
    pub(super) async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        what: &str,
        cap: usize,
        secrets: &[&str],
    ) -> Result<(StatusCode, Vec<u8>), ProviderError> {
        self.exchange_with_headers(request, url, what, cap, secrets)
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// [`Self::exchange`], with the answer's headers.
    pub(super) async fn exchange_with_headers(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
        what: &str,
        cap: usize,
        secrets: &[&str],
    ) -> Result<(StatusCode, header::HeaderMap, Vec<u8>), ProviderError> {
        let parsed = http_url(url, what)?;
        if !self.options.allow_private && appreg_outbound::refused_host(&parsed) {
            tracing::info!(what, "outbound call to a non-public address refused");
            return Err(private_address(what));
        }
        let mut resp = match request.send().await {
            Ok(r) => r,
            Err(e) if appreg_outbound::is_non_public(&e) => return Err(private_address(what)),
            Err(e) => return Err(transport(e, what, secrets)),
        };
        let status = resp.status();
        let headers = resp.headers().clone();
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            tracing::info!(what, cap, "the provider's answer is larger than the cap");
            return Err(no_usable_answer(what, true));
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > cap {
                        tracing::info!(what, cap, "the provider's answer is larger than the cap");
                        return Err(no_usable_answer(what, true));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(transport(e, what, secrets)),
            }
        }
        Ok((status, headers, body))
    }

    /// Sends a request with an optional bearer token and JSON body; 2xx gives the status and
    /// the JSON answer (`null` when empty), anything else a classified error.
    pub(super) async fn send_json(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&SecretString>,
        body: Option<&Map<String, Value>>,
        what: &str,
    ) -> Result<(StatusCode, Value), ProviderError> {
        self.send_json_keyed(method, url, bearer, body, what, None)
            .await
    }

    /// [`Self::send_json`] with an `Idempotency-Key` header (draft-ietf-httpapi-idempotency-key-header).
    pub(super) async fn send_json_keyed(
        &self,
        method: Method,
        url: &str,
        bearer: Option<&SecretString>,
        body: Option<&Map<String, Value>>,
        what: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(StatusCode, Value), ProviderError> {
        let secrets: Vec<&str> = bearer.map(|b| b.expose_secret()).into_iter().collect();
        let mut req = self
            .http
            .request(method, url.trim())
            .header(header::ACCEPT, "application/json");
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        if let Some(b) = bearer {
            req = req.header(
                header::AUTHORIZATION,
                format!("Bearer {}", b.expose_secret()),
            );
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let (status, bytes) = self
            .exchange(req, url, what, DOCUMENT_CAP, &secrets)
            .await?;
        if !status.is_success() {
            tracing::debug!(
                what,
                status = status.as_u16(),
                "the provider refused a request"
            );
            return Err(error::from_status(status.as_u16(), &bytes, what, &secrets));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok((status, Value::Null));
        }
        let value = serde_json::from_slice(&bytes).map_err(|_| {
            ProviderError::Invalid(format!("{what}: the answer (HTTP {status}) is not JSON"))
        })?;
        Ok((status, value))
    }
}

/// A transport error: logged (without its URL, scrubbed), answered uniformly.
fn transport(err: reqwest::Error, what: &str, secrets: &[&str]) -> ProviderError {
    if err.is_builder() {
        return ProviderError::Invalid(format!("{what}: the request cannot be built"));
    }
    // A connect error (refused, unresolvable, a connect timeout) sent nothing; anything later
    // (a timeout or a reset while waiting for the answer, a body cut short) may have been acted on.
    let sent = !err.is_connect();
    let detail = error::describe_reqwest(err, secrets);
    tracing::info!(what, error = %detail, sent, "no usable answer from the provider");
    no_usable_answer(what, sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let d = "https://idp.example/.well-known/openid-configuration";
        assert!(check_origin(d, false, "token_endpoint", "https://idp.example/token").is_ok());
        assert!(check_origin(d, false, "token_endpoint", "https://IDP.example:443/t").is_ok());
        for other in [
            "http://idp.example/token",
            "https://idp.example:8443/token",
            "https://evil.example/token",
            "https://idp.example.evil.example/token",
        ] {
            let e = check_origin(d, false, "token_endpoint", other).unwrap_err();
            assert!(matches!(e, ProviderError::CrossOrigin(_)), "{other}");
            assert!(check_origin(d, true, "token_endpoint", other).is_ok());
        }
    }
}
