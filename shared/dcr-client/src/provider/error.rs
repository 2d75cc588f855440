//! Errors of the provider client, classified for the saga's retry decisions.

use serde::Deserialize;

/// What went wrong talking to a DCR provider. Neither `Debug` nor `Display` ever contains a
/// secret: the texts are built from status codes, the provider's RFC 6749/7591 `error` and
/// `error_description`, and transport errors without their URL; anything the provider echoes is
/// scrubbed of the secrets the request carried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider refused the request (HTTP 4xx other than 408/429), e.g.
    /// `invalid_client_metadata`, `invalid_redirect_uri`, `invalid_token`, `invalid_client`.
    /// Not retryable as is.
    #[error("the provider rejected the request (HTTP {status} {error}{})", describe(.error_description))]
    Rejected {
        status: u16,
        error: String,
        error_description: Option<String>,
    },
    /// 408, 429, a refused connection, a name that does not resolve: try again later. The
    /// request was not acted on (it was not sent, or the provider said it did not take it).
    #[error("the provider is unavailable: {0}")]
    Transient(String),
    /// 5xx, a timeout or a reset after the request was sent, an answer cut short or too large:
    /// try again later, but the provider may have acted on the request (for a registration,
    /// created the client) and the answer was lost. See [`ProviderError::outcome_unknown`].
    #[error("the provider is unavailable: {0}")]
    OutcomeUnknown(String),
    /// The provider (or its configuration in appreg) does not offer what was asked: no
    /// registration endpoint, no `registration_client_uri`, secret renewal disabled, …
    #[error("not supported by the provider: {0}")]
    Unsupported(String),
    /// Bad input or a bad answer: invalid settings or metadata, an unparsable or incomplete
    /// provider response, an unexpected status.
    #[error("invalid: {0}")]
    Invalid(String),
    /// An endpoint the credentials would go to (token, registration, renewal) is not on the
    /// discovery endpoint's origin, and the provider does not allow that
    /// (`allow_cross_origin_endpoints`, which only an organisation administrator may set).
    /// Nothing was sent there.
    #[error("refused: {0}")]
    CrossOrigin(String),
    /// The endpoint's host is (or resolves to) a loopback, private, link-local or otherwise
    /// non-public address, and the deployment refuses those (`outbound_allow_private = false`).
    /// Nothing was sent there.
    #[error("refused: {0}")]
    PrivateAddress(String),
}

fn describe(d: &Option<String>) -> String {
    match d {
        Some(d) if !d.is_empty() => format!(": {d}"),
        _ => String::new(),
    }
}

impl ProviderError {
    /// Whether the same request may succeed later ([`ProviderError::Transient`] and
    /// [`ProviderError::OutcomeUnknown`]).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ProviderError::Transient(_) | ProviderError::OutcomeUnknown(_)
        )
    }

    /// Whether the request was (or may have been) sent and acted on while its answer was lost:
    /// any 5xx, a timeout or a reset after sending, an answer cut short. Not: a refused
    /// connection, an unresolvable name, a 4xx (429 and 408 included), a cross-origin or
    /// private-address refusal (nothing was sent, or the provider said it took nothing).
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, ProviderError::OutcomeUnknown(_))
    }

    /// The provider's OAuth `error` code, for a rejection.
    pub fn oauth_error(&self) -> Option<&str> {
        match self {
            ProviderError::Rejected { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// The longest `error_description` kept from a provider answer.
const MAX_DESCRIPTION: usize = 500;

#[derive(Deserialize)]
struct OAuthErrorBody {
    error: Option<String>,
    error_description: Option<String>,
}

/// Replaces every occurrence of one of `secrets` (non-empty ones) in `text`.
pub(crate) fn scrub(mut text: String, secrets: &[&str]) -> String {
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if text.contains(*s) {
            text = text.replace(*s, "[REDACTED]");
        }
    }
    text
}

fn truncate(mut s: String) -> String {
    if s.chars().count() > MAX_DESCRIPTION {
        s = s.chars().take(MAX_DESCRIPTION).collect::<String>() + "…";
    }
    s
}

/// Classifies a non-success HTTP answer. `what` names the request ("registration", …).
pub(crate) fn from_status(status: u16, body: &[u8], what: &str, secrets: &[&str]) -> ProviderError {
    let parsed = serde_json::from_slice::<OAuthErrorBody>(body).ok();
    let (error, description) = match parsed {
        Some(OAuthErrorBody {
            error: Some(e),
            error_description,
        }) => (
            scrub(truncate(e), secrets),
            error_description.map(|d| scrub(truncate(d), secrets)),
        ),
        _ => ("http_error".to_string(), None),
    };
    match status {
        408 | 429 => ProviderError::Transient(format!(
            "{what}: HTTP {status} {error}{}",
            describe(&description)
        )),
        500..=599 => ProviderError::OutcomeUnknown(format!(
            "{what}: HTTP {status} {error}{}",
            describe(&description)
        )),
        400..=499 => ProviderError::Rejected {
            status,
            error,
            error_description: description.or_else(|| Some(format!("{what}: HTTP {status}"))),
        },
        _ => ProviderError::Invalid(format!("{what}: unexpected HTTP status {status}")),
    }
}

/// What a transport error says happened ("connection refused", a timeout, …), without its URL
/// and scrubbed of `secrets`: for tracing, never for an answer.
pub(crate) fn describe_reqwest(err: reqwest::Error, secrets: &[&str]) -> String {
    let timeout = err.is_timeout();
    let err = err.without_url();
    let mut text = err.to_string();
    // The sources (hyper / io errors) say what actually happened: "connection refused", …
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    if timeout {
        text = format!("timed out ({text})");
    }
    scrub(text, secrets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_answers_leave_the_outcome_unknown() {
        for status in [500, 502, 503, 504] {
            let e = from_status(status, b"", "registration", &[]);
            assert!(e.outcome_unknown() && e.is_retryable(), "{status}: {e:?}");
        }
        for status in [400, 401, 403, 404, 408, 409, 429] {
            let e = from_status(status, b"", "registration", &[]);
            assert!(!e.outcome_unknown(), "{status}: {e:?}");
        }
        assert!(from_status(429, b"", "x", &[]).is_retryable());
        for e in [
            ProviderError::CrossOrigin("x".into()),
            ProviderError::PrivateAddress("x".into()),
            ProviderError::Transient("x".into()),
            ProviderError::Invalid("x".into()),
            ProviderError::Unsupported("x".into()),
        ] {
            assert!(!e.outcome_unknown(), "{e:?}");
        }
    }
}
