//! Browsers on other origins (`cors_allowed_origins`): CORS, and the refusal of a
//! state-changing request from an origin that is neither allowed nor the api's own.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
//!   origin is answered here, 204, whatever the path: the methods and request headers a portal
//!   uses, cached for [`MAX_AGE_SECONDS`].
//! - Every other response to an allowed origin names it (`Access-Control-Allow-Origin`, never
//!   `*`) and exposes `x-consistency-token`, `x-request-id` and `location`. Credentials are not
//!   allowed: tokens travel in the `Authorization` header, never in cookies.
//! - A request from another origin gets no CORS header. A state-changing one (any method but
//!   GET, HEAD and OPTIONS) whose `Origin` is neither allowed nor the api's own (the scheme, host
//!   and port of the `Host` it was sent to) is refused 403 `cors.origin_denied` before any
//!   handler runs: it changes nothing, even when the browser would not have shown the answer.
//!
//! What this module must never do: answer a wildcard, reflect an origin that is not in the list,
//! or let a refused request reach a handler.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Methods a page of an allowed origin may use.
pub const ALLOWED_METHODS: &str = "GET, HEAD, POST, PUT, PATCH, DELETE";
/// Request headers a page of an allowed origin may send.
pub const ALLOWED_HEADERS: &str =
    "authorization, content-type, x-consistency-token, last-event-id, idempotency-key";
/// Response headers a page of an allowed origin may read.
pub const EXPOSED_HEADERS: &str = "x-consistency-token, x-request-id, location";
/// How long a browser may cache a preflight's answer.
pub const MAX_AGE_SECONDS: u32 = 600;

/// The allowed origins, normalised (`scheme://host[:port]`, lower case, no default port).
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    origins: Vec<String>,
}

impl CorsPolicy {
    pub fn new(origins: Vec<String>) -> Self {
        CorsPolicy { origins }
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

/// Whether `origin` is the api's own: the same host and port as the request's `Host` (its port
/// defaulting by the origin's scheme, as the api may sit behind a TLS-terminating proxy).
fn is_own_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    let Ok(sent_to) = url::Url::parse(&format!("{}://{host}", origin.scheme())) else {
        return false;
    };
    sent_to.path() == "/"
        && origin.host_str().map(str::to_ascii_lowercase)
            == sent_to.host_str().map(str::to_ascii_lowercase)
        && origin.port_or_known_default() == sent_to.port_or_known_default()
}

fn static_value(s: &'static str) -> HeaderValue {
    HeaderValue::from_static(s)
}

/// The layer (outside the routes: preflights need no route).
pub async fn cors(State(policy): State<Arc<CorsPolicy>>, request: Request, next: Next) -> Response {
    let Some(origin) = request
        .headers()
        .get(header::ORIGIN)
        .map(|o| o.to_str().unwrap_or("").to_string())
    else {
        return next.run(request).await;
    };
    let allowed = policy.allows(&origin);
    let method = request.method().clone();
    let preflight = method == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight && allowed {
        let mut response = StatusCode::NO_CONTENT.into_response();
        let headers = response.headers_mut();
        allow_origin(headers, &origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            static_value(ALLOWED_METHODS),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            static_value(ALLOWED_HEADERS),
        );
        headers.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(MAX_AGE_SECONDS),
        );
        return response;
    }
    let safe = matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && !allowed && !is_own_origin(&origin, request.headers()) {
        // The origin is the browser's word about the page; it is not secret.
        tracing::info!(%method, origin = %origin.chars().take(200).collect::<String>(), "a request from an origin that is not allowed is refused");
        return ApiError::Forbidden {
            code: "cors.origin_denied",
            message: "requests from this origin are not allowed".into(),
        }
        .into_response();
    }
    let mut response = next.run(request).await;
    // The answer depends on the origin: caches keep one per origin.
    response
        .headers_mut()
        .append(header::VARY, static_value("origin"));
    if allowed {
        let headers = response.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            static_value(EXPOSED_HEADERS),
        );
    }
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.append(header::VARY, static_value("origin"));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
        m
    }

    #[test]
    fn the_own_origin_is_the_host_the_request_was_sent_to() {
        assert!(is_own_origin(
            "http://127.0.0.1:8080",
            &host("127.0.0.1:8080")
        ));
        assert!(is_own_origin(
            "https://api.example.com",
            &host("api.example.com")
        ));
        assert!(is_own_origin(
            "https://API.example.com",
            &host("api.example.com:443")
        ));
        assert!(!is_own_origin(
            "http://127.0.0.1:8081",
            &host("127.0.0.1:8080")
        ));
        assert!(!is_own_origin(
            "https://evil.example",
            &host("api.example.com")
        ));
        assert!(!is_own_origin("null", &host("api.example.com")));
        assert!(!is_own_origin("https://api.example.com", &HeaderMap::new()));
        assert!(!is_own_origin(
            "https://api.example.com",
            &host("api.example.com/x")
        ));
    }
}
