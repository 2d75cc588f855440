//! Extractors that turn an HTTP request into typed, checked input at the edge: the caller
//! (authenticated, in an existing environment), and bounded JSON bodies whose errors name the
//! offending field.

use crate::error::ApiError;
use crate::state::AppState;
use appreg_auth::{AuthError, Principal};
use appreg_domain::{Actor, EnvironmentId, UserId};
use appreg_telemetry::trace::{self, TraceParent};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use tracing::Instrument;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The correlation id of a request: the caller's `X-Request-Id` when it is a safe token
/// ([`safe_request_id`]), else a new UUIDv7. Echoed in the response, and the correlation id of
/// the events the request appends (the audit trail).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Longest `X-Request-Id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

/// A client's request id is kept when it is 1 to 128 of `[A-Za-z0-9._:-]` (a UUID is): it ends
/// up in logs, event metadata and audit answers, where markup, quotes, separators or control
/// characters have no business.
fn safe_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

pub async fn request_id(mut request: Request, next: Next) -> Response {
    let given = request.headers().get(&REQUEST_ID);
    let id = match given.map(|v| v.to_str().ok().filter(|s| safe_request_id(s))) {
        Some(Some(id)) => id.to_string(),
        Some(None) => {
            let id = uuid::Uuid::now_v7().to_string();
            // The refused value is not logged (it is what was unsafe), only its length.
            tracing::info!(request_id = %id, given_len = given.map_or(0, |v| v.len()), "the client's X-Request-Id is not a safe token; replaced");
            id
        }
        None => uuid::Uuid::now_v7().to_string(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    response
}

/// The W3C trace context of a request (`traceparent`): the caller's trace, or a new one, and
/// the request span's own id.
#[derive(Debug, Clone, Copy)]
pub struct RequestTrace(pub TraceParent);

/// Runs the request in its span (`http`: method, path, request id, `trace_id`), continuing the
/// caller's `traceparent` when it is valid W3C trace context (else a new trace), and answers
/// the request span's `traceparent`. Runs inside [`request_id`].
pub async fn trace_context(mut request: Request, next: Next) -> Response {
    let incoming = request
        .headers()
        .get(trace::TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    // The path only, never the query: `GET /events?ticket=…` carries a credential.
    let span = tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    let context = trace::start(&span, incoming);
    request.extensions_mut().insert(RequestTrace(context));
    let mut response = next.run(request).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&context.to_string()) {
        response.headers_mut().insert(trace::TRACEPARENT, v);
    }
    response
}

/// The `traceparent` the events of a request carry (its trace, the request span as parent).
pub fn request_traceparent(parts: &Parts) -> Option<String> {
    parts
        .extensions
        .get::<RequestTrace>()
        .map(|t| t.0.to_string())
}

/// The authenticated caller of a request under `/v1/environments/{env}`. Authenticating records
/// nothing: the routes of an environment record the caller's first visit in a layer
/// (`users::FirstVisit`), which hands its `Ctx` on in the request's extensions.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub principal: Principal,
    pub actor: Actor,
    pub environment: EnvironmentId,
    pub correlation_id: String,
    /// The request's W3C `traceparent`, copied into the metadata of its events.
    pub traceparent: Option<String>,
    /// The caller's name from their token, sealed with their data key: the metadata's
    /// `actor_name` (personal data never goes into the log in plaintext).
    pub actor_name: Option<String>,
}

/// The caller's name sealed for the metadata's `actor_name` (none when the token has none).
pub async fn sealed_actor_name(
    state: &AppState,
    principal: &Principal,
    user: &UserId,
) -> Result<Option<String>, ApiError> {
    Ok(crate::personal::seal_opt(
        state,
        user,
        crate::personal::NAME,
        principal.name.as_deref(),
    )
    .await?
    .map(|p| p.as_str().to_string()))
}

/// The authenticated caller, for routes outside an environment.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Principal, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthenticated("missing Authorization: Bearer token".into()))?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthenticated("the Authorization header must be `Bearer <token>`".into())
        })?;
    state.auth().authenticate(token).await.map_err(|e| match e {
        AuthError::KeysUnavailable(reason) => {
            tracing::error!(%reason, "cannot fetch the token issuer's keys");
            ApiError::Unavailable("tokens cannot be verified right now".into())
        }
        AuthError::Expired => ApiError::Unauthenticated("the token has expired".into()),
        other => {
            tracing::info!(error = %other, "token refused");
            ApiError::Unauthenticated("the token is not valid".into())
        }
    })
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Made already by the layer that recorded the caller's first visit (`users`).
        if let Some(ctx) = parts.extensions.get::<Ctx>() {
            return Ok(ctx.clone());
        }
        let principal = authenticate(parts, state).await?;
        // A token whose subject is not usable is not a valid token: 401 before anything else.
        let user = UserId::parse(&principal.subject).map_err(|(_, m)| {
            ApiError::Unauthenticated(format!("the token's subject is not usable: {m}"))
        })?;
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            // A segment that is not UTF-8 (`%FF`) names nothing: 404, never a 500.
            .map_err(|e| {
                tracing::debug!(error = %e, "undecodable path");
                ApiError::not_found(
                    "route.not_found",
                    "no such resource: the path is not valid UTF-8",
                )
            })?;
        let env_raw = params.get("env").map(String::as_str).unwrap_or_default();
        let environment = EnvironmentId::parse(env_raw).map_err(|_| {
            ApiError::not_found(
                "environment.not_found",
                format!("no environment {env_raw:?}"),
            )
        })?;
        if !state.environment_exists(&environment).await? {
            return Err(ApiError::not_found(
                "environment.not_found",
                format!("no environment {env_raw:?}"),
            ));
        }
        let admin = state.is_admin_of(&principal, &environment);
        let correlation_id = parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let actor_name = sealed_actor_name(state, &principal, &user).await?;
        Ok(Ctx {
            actor: Actor { user, admin },
            principal,
            environment,
            correlation_id,
            traceparent: request_traceparent(parts),
            actor_name,
        })
    }
}

/// A JSON body bounded by the configured size. Syntax errors are 400, a wrong type is a 422
/// naming the field, an oversized body 413, another content type 415.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = state.max_body_bytes();
        let bytes = Bytes::from_request(request, state).await.map_err(|r| {
            if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(limit)
            } else {
                ApiError::MalformedJson(r.body_text())
            }
        })?;
        parse_json(&bytes).map(JsonBody)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // Syntax first, so that malformed JSON is a 400 whatever its shape.
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    // Every body is an object: serde would also read a struct from an array, positionally.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(
            "body",
            "type.invalid",
            "the body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let at = |name: &str| {
                    if path == "." {
                        name.to_string()
                    } else {
                        format!("{path}.{name}")
                    }
                };
                // A missing field is named, not its parent (the path of an unknown one already
                // ends with it).
                if let Some(name) = quoted_after(&message, "missing field `") {
                    ApiError::invalid(
                        &at(name),
                        "field.required",
                        format!("the field {name} is required"),
                    )
                } else if message.starts_with("unknown field `") {
                    ApiError::invalid(&path, "field.unknown", message.clone())
                } else {
                    let field = if path == "." {
                        "body".to_string()
                    } else {
                        path
                    };
                    ApiError::invalid(&field, "type.invalid", message)
                }
            }
            _ => ApiError::MalformedJson(inner.to_string()),
        }
    })?;
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
}

/// The name between `prefix` (ending in a backquote) and the next backquote, as serde spells
/// missing and unknown fields.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    message
        .strip_prefix(prefix)
        .and_then(|rest| rest.split('`').next())
}

fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}
