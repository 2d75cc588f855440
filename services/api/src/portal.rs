//! The developer portal: static HTML, CSS and JavaScript modules (`services/api/portal/`),
//! embedded in the binary and served at `/` and `/portal/…` when `portal_enabled` is on.
//!
//! The portal is a client like any other: it uses the public HTTP api and the event stream
//! only. What it learns from the server is `GET /portal/config.json` (the environment, how to
//! sign in: the OpenID Connect issuer and the portal's public client id, or the development
//! sign-in). The development sign-in, `POST /portal/dev/sign-in`, mints a token with the
//! development key; it is mounted only when `appreg dev` hands that key over
//! ([`crate::service::Service::with_dev_sign_in`]), never by `appreg api`.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and images from this
//! origin only, no inline script; connections to this origin and the issuer), `nosniff`, no
//! referrer and no framing. Assets are revalidated on every load (`no-cache` with an `ETag`):
//! their names carry no version.
//!
//! These routes are not part of the api's OpenAPI document, as `/openapi.json` itself is not.

use crate::error::ApiError;
use crate::extract::JsonBody;
use crate::state::AppState;
use appreg_auth::{DevClaims, DevKey};
use appreg_config::Config;
use appreg_domain::UserId;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// One embedded file: its name under `/portal/`, its content type, its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_str!(concat!("../portal/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the portal. A name not listed here is a 404.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("auth.js", JS),
    asset!("live.js", JS),
    asset!("ui.js", JS),
    asset!("applications.js", JS),
    asset!("application.js", JS),
    asset!("admin.js", JS),
];

/// How long a development token lives, in seconds.
const DEV_TOKEN_TTL: i64 = 8 * 3600;

/// The portal's settings, from the configuration.
#[derive(Clone)]
pub struct Portal {
    environment: String,
    issuer: Option<String>,
    client_id: Option<String>,
    scopes: String,
    role_claim: String,
    admin_role: String,
    admin_environments_claim: String,
    csp: HeaderValue,
    dev_sign_in: Option<DevSignIn>,
}

/// What the development sign-in signs with (`appreg dev` only).
#[derive(Clone)]
struct DevSignIn {
    key: Arc<DevKey>,
}

impl Portal {
    /// The portal of `config`, or none when `portal_enabled` is off.
    ///
    /// # Errors
    /// `auth.issuer` cannot be part of the Content-Security-Policy.
    pub fn from_config(config: &Config) -> Result<Option<Portal>, ApiError> {
        if !config.api.portal_on() {
            return Ok(None);
        }
        // The issuer's origin only: the portal fetches its discovery document and token endpoint.
        let issuer_origin = match config.auth.issuer.as_deref().filter(|_| !config.auth.dev) {
            Some(issuer) => {
                let url = url::Url::parse(issuer)
                    .map_err(|e| ApiError::internal(format!("auth.issuer: {e}")))?;
                format!(" {}", url.origin().ascii_serialization())
            }
            None => String::new(),
        };
        let csp = format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'{issuer_origin}; form-action 'self'; base-uri 'none'; \
             frame-ancestors 'none'"
        );
        Ok(Some(Portal {
            environment: config.api.portal_environment.clone(),
            issuer: config.auth.issuer.clone().filter(|_| !config.auth.dev),
            client_id: config.api.portal_oidc_client_id.clone(),
            scopes: config.api.portal_oidc_scopes.clone(),
            role_claim: config.auth.role_claim.clone(),
            admin_role: config.auth.admin_role.clone(),
            admin_environments_claim: config.auth.admin_environments_claim.clone(),
            csp: HeaderValue::from_str(&csp)
                .map_err(|e| ApiError::internal(format!("auth.issuer: {e}")))?,
            dev_sign_in: None,
        }))
    }

    /// The same portal, signing in with the development key (`appreg dev`).
    pub fn with_dev_sign_in(mut self, key: Arc<DevKey>) -> Self {
        self.dev_sign_in = Some(DevSignIn { key });
        self
    }

    /// How the portal signs users in: `development`, `oidc`, or `unavailable` (no client id).
    fn sign_in(&self) -> &'static str {
        if self.dev_sign_in.is_some() {
            "development"
        } else if self.issuer.is_some() && self.client_id.is_some() {
            "oidc"
        } else {
            "unavailable"
        }
    }

    /// The headers of every answer of the portal.
    fn secure(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        response
    }
}

/// The portal's routes (`/`, `/portal/config.json`, `/portal/{file}`, and the development
/// sign-in when the portal has it).
pub fn router(portal: &Portal) -> Router<AppState> {
    let routes = Router::new()
        .route("/", get(index))
        .route("/portal/config.json", get(config))
        .route("/portal/{file}", get(file));
    if portal.dev_sign_in.is_some() {
        routes.route("/portal/dev/sign-in", post(dev_sign_in))
    } else {
        routes
    }
}

fn portal(state: &AppState) -> Result<&Portal, ApiError> {
    state
        .portal()
        .ok_or_else(|| ApiError::not_found("route.not_found", "no such resource"))
}

/// A 64-bit FNV-1a digest: the assets' `ETag` (not a security measure).
fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{hash:016x}\"")
}

fn serve(portal: &Portal, asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset.body);
    let cache = [
        (header::CACHE_CONTROL, "no-cache".to_string()),
        (header::ETAG, tag.clone()),
    ];
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let response = if fresh {
        (StatusCode::NOT_MODIFIED, cache).into_response()
    } else {
        (
            cache,
            [(header::CONTENT_TYPE, asset.content_type.to_string())],
            asset.body,
        )
            .into_response()
    };
    portal.secure(response)
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let portal = portal(&state)?;
    let index = ASSETS
        .iter()
        .find(|a| a.name == "index.html")
        .ok_or_else(|| ApiError::internal("the portal has no index.html"))?;
    Ok(serve(portal, index, &headers))
}

async fn file(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let portal = portal(&state)?;
    match ASSETS.iter().find(|a| a.name == name) {
        Some(asset) => Ok(serve(portal, asset, &headers)),
        None => Err(ApiError::not_found(
            "route.not_found",
            "the portal has no such file",
        )),
    }
}

fn no_store(portal: &Portal, body: serde_json::Value) -> Response {
    portal.secure(
        (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Json(body),
        )
            .into_response(),
    )
}

/// `GET /portal/config.json`: what the portal needs to know to sign in and call the api.
async fn config(State(state): State<AppState>) -> Result<Response, ApiError> {
    let portal = portal(&state)?;
    Ok(no_store(
        portal,
        json!({
            "environment": portal.environment,
            "sign_in": portal.sign_in(),
            "issuer": portal.issuer,
            "client_id": portal.client_id,
            "scopes": portal.scopes,
            "role_claim": portal.role_claim,
            "admin_role": portal.admin_role,
            "admin_environments_claim": portal.admin_environments_claim,
        }),
    ))
}

/// `POST /portal/dev/sign-in` (`appreg dev` only).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DevSignInRequest {
    user: String,
    #[serde(default)]
    admin: bool,
}

async fn dev_sign_in(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<DevSignInRequest>,
) -> Result<Response, ApiError> {
    let portal = portal(&state)?;
    let Some(dev) = &portal.dev_sign_in else {
        return Err(ApiError::not_found("route.not_found", "no such resource"));
    };
    let user = body.user.trim();
    let user =
        UserId::parse(user).map_err(|(code, message)| ApiError::invalid("user", code, message))?;
    let roles = if body.admin {
        vec![portal.admin_role.clone()]
    } else {
        vec![]
    };
    let token = dev
        .key
        .sign(&DevClaims {
            name: Some(user.to_string()),
            ..DevClaims::issue(user.to_string(), roles, DEV_TOKEN_TTL)
        })
        .map_err(ApiError::internal)?;
    let mut response = no_store(
        portal,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": DEV_TOKEN_TTL}),
    );
    response.headers_mut().insert(
        HeaderName::from_static("pragma"),
        HeaderValue::from_static("no-cache"),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_asset_is_embedded_once_and_the_etag_follows_the_content() {
        let mut names: Vec<_> = super::ASSETS.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), super::ASSETS.len());
        assert!(super::ASSETS.iter().all(|a| !a.body.is_empty()));
        assert_ne!(super::etag("a"), super::etag("b"));
        assert_eq!(super::etag("a"), super::etag("a"));
    }
}
