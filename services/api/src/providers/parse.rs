//! A provider body parsed into the domain's definition, and which stored secret it may keep.

use super::{ProviderBody, TokenType};
use crate::error::ApiError;
use crate::state::AppState;
use appreg_domain::provider::{
    HttpMethod, InitialAccessTokenMode, Provider, ProviderDefinition, RenewClientSecret,
};
use appreg_domain::{FieldErrors, HttpUrl};
use secrecy::SecretString;

/// The submitted definition, parsed; the secrets it carries (to validate, then to seal).
pub(super) struct Parsed {
    pub(super) definition: ProviderDefinition,
    pub(super) secret: Option<SecretString>,
}

fn parse_method(raw: Option<&str>, errors: &mut FieldErrors) -> HttpMethod {
    match raw.map(str::to_ascii_uppercase).as_deref() {
        None | Some("POST") => HttpMethod::Post,
        Some("PUT") => HttpMethod::Put,
        Some("PATCH") => HttpMethod::Patch,
        Some(_) => {
            errors.add(
                "renew_client_secret.method",
                "renew.method.invalid",
                "POST, PUT or PATCH",
            );
            HttpMethod::Post
        }
    }
}

/// Parses a body. `current` (on update) supplies the fingerprint of a secret left out.
pub(super) fn parse(
    state: &AppState,
    body: ProviderBody,
    current: Option<&Provider>,
) -> Result<Parsed, ApiError> {
    let mut errors = FieldErrors::new();
    let discovery = match HttpUrl::parse(body.discovery_endpoint.trim()) {
        Ok(url) if url.as_str().starts_with("https://") || state.allows_http_url(url.as_str()) => {
            Some(url)
        }
        Ok(_) => {
            errors.add(
                "discovery_endpoint",
                "url.https_required",
                "the discovery endpoint must use https (http only on loopback)",
            );
            None
        }
        Err((code, message)) => {
            errors.add("discovery_endpoint", code, message);
            None
        }
    };
    let fingerprint = |s: &SecretString| appreg_secrets::fingerprint(s);
    // A stored secret is kept only where it was given: same discovery endpoint, same client.
    let same_place = |client_id: Option<&str>| {
        current.filter(|p| {
            discovery
                .as_ref()
                .is_some_and(|d| d.as_str() == p.discovery_endpoint.as_str())
                && match (&p.mode, client_id) {
                    (
                        InitialAccessTokenMode::ClientCredentials { client_id: was, .. },
                        Some(now),
                    ) => was == now,
                    (InitialAccessTokenMode::InitialAccessToken { .. }, None) => true,
                    _ => false,
                }
        })
    };
    let secret_required = |current_is_elsewhere: bool, what: &str| {
        if current_is_elsewhere {
            format!("changing the discovery endpoint, the token mode or the client_id needs the {what} again")
        } else {
            format!(
                "{} needs the {what}",
                match what {
                    "client_secret" => "CLIENT_CREDENTIALS",
                    _ => "INITIAL_ACCESS_TOKEN",
                }
            )
        }
    };
    let (mode, secret) = match body.initial_access_token_type {
        TokenType::ClientCredentials => {
            let client_id = body.client_id.clone().unwrap_or_default();
            if client_id.trim().is_empty() {
                errors.add(
                    "client_id",
                    "field.required",
                    "CLIENT_CREDENTIALS needs the client_id",
                );
            }
            let kept = same_place(Some(client_id.trim())).and_then(|p| match &p.mode {
                InitialAccessTokenMode::ClientCredentials {
                    client_secret_fingerprint,
                    ..
                } => Some(client_secret_fingerprint.clone()),
                _ => None,
            });
            let fp = match (&body.client_secret, kept) {
                (Some(s), _) => fingerprint(s),
                (None, Some(kept)) => kept,
                (None, None) => {
                    errors.add(
                        "client_secret",
                        if current.is_some() {
                            "provider.secret.required"
                        } else {
                            "field.required"
                        },
                        secret_required(current.is_some(), "client_secret"),
                    );
                    String::new()
                }
            };
            (
                InitialAccessTokenMode::ClientCredentials {
                    client_id: client_id.trim().to_string(),
                    scopes: body.scopes.clone(),
                    client_secret_fingerprint: fp,
                },
                body.client_secret,
            )
        }
        TokenType::InitialAccessToken => {
            let kept = same_place(None).and_then(|p| match &p.mode {
                InitialAccessTokenMode::InitialAccessToken { token_fingerprint } => {
                    Some(token_fingerprint.clone())
                }
                _ => None,
            });
            let fp = match (&body.initial_access_token, kept) {
                (Some(s), _) => fingerprint(s),
                (None, Some(kept)) => kept,
                (None, None) => {
                    errors.add(
                        "initial_access_token",
                        if current.is_some() {
                            "provider.secret.required"
                        } else {
                            "field.required"
                        },
                        secret_required(current.is_some(), "initial_access_token"),
                    );
                    String::new()
                }
            };
            (
                InitialAccessTokenMode::InitialAccessToken {
                    token_fingerprint: fp,
                },
                body.initial_access_token,
            )
        }
    };
    let renew = match body.renew_client_secret {
        Some(r) => RenewClientSecret {
            enabled: r.enabled,
            endpoint: r
                .endpoint
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty()),
            method: parse_method(r.method.as_deref(), &mut errors),
        },
        None => RenewClientSecret {
            enabled: false,
            endpoint: None,
            method: HttpMethod::Post,
        },
    };
    errors.into_result()?;
    let Some(discovery_endpoint) = discovery else {
        return Err(ApiError::internal(
            "a provider without its discovery endpoint",
        ));
    };
    Ok(Parsed {
        definition: ProviderDefinition {
            name: body.name,
            description: body.description.filter(|d| !d.trim().is_empty()),
            discovery_endpoint,
            mode,
            software_id: body.software_id.filter(|s| !s.trim().is_empty()),
            renew_client_secret: renew,
            delete_client_on_archive: body.delete_client_on_archive,
            default: body.default,
            allow_cross_origin_endpoints: body.allow_cross_origin_endpoints,
        },
        secret,
    })
}
