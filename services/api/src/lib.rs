//! The appreg HTTP api: commands are validated at the edge, authorised, decided by the domain
//! and appended through the command path (`appreg_commands`); lists read the read model, one
//! application's current state comes from the command path's cache or snapshot plus the
//! stream's tail, history is read a page at a time, and time travel folds the log to its point.
//! Served with graceful shutdown; `run` is what `appreg api` and `appreg dev` call, and what
//! tests call on a random port.
//!
//! Layout: one module per resource (`applications`, `members`, `subscriptions`, `api_keys`,
//! `notifications`, `webhooks`, `providers`, `settings`, `catalogue`, `events` with `tickets` (opening a
//! stream without a header), `audit`, `directory` (the users seen), `environments`, `health`),
//! each with its handlers, its request and response bodies and its router, which both routes
//! and describes them (utoipa-axum's `OpenApiRouter`): [`router`] and [`openapi`] assemble
//! them, so the document cannot drift from the routes. Resources import shared modules only
//! (`error`, `extract`, `state`, `commands`, `consistency`, `dto`, `users`, `visibility`,
//! `apidoc`, `streams`, `cors`), never each other's handlers (`api_keys` uses the subscriptions' key
//! issue, as a key lives in its subscription).

mod api_keys;
mod apidoc;
pub mod applications;
mod audit;
mod catalogue;
pub mod commands;
mod consistency;
mod cors;
mod directory;
pub mod dto;
mod environments;
pub mod error;
mod events;
mod extract;
mod health;
mod members;
mod notifications;
mod personal;
pub mod personal_rewrite;
pub mod portal;
mod providers;
pub use appreg_readmodel as readmodel;
pub mod service;
mod settings;
pub mod state;
mod streams;
mod subscriptions;
mod tickets;
mod user_erasure;
mod users;
mod visibility;
mod webhooks;

pub use error::ApiError;
pub use state::AppState;

use apidoc::{BearerAuth, CommonResponses};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use users::FirstVisit;
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

/// The document's own parts; its paths and schemas come from the resources' routers.
#[derive(OpenApi)]
#[openapi(
    info(title = "appreg", description = "Applications, OAuth clients and their lifecycle, for API-management portals."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Every resource's routes, each resource's router describing its own in the OpenAPI document.
/// The routes of an environment record the caller's first visit ([`FirstVisit`]).
fn resources(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(environments::router())
        .merge(user_erasure::router())
        .merge(settings::router(first_visit))
        .merge(applications::router(first_visit))
        .merge(members::router(first_visit))
        .merge(subscriptions::router(first_visit))
        .merge(api_keys::router(first_visit))
        .merge(notifications::router(first_visit))
        .merge(webhooks::router(first_visit))
        .merge(providers::router(first_visit))
        .merge(catalogue::router(first_visit))
        .merge(events::router(first_visit))
        .merge(tickets::router(first_visit))
        .merge(audit::router(first_visit))
        .merge(directory::router(first_visit))
        .merge(health::router())
}

/// The OpenAPI document: what the resources' routers describe, with what every operation
/// shares ([`CommonResponses`]).
fn document(mut openapi: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    CommonResponses.modify(&mut openapi);
    openapi
}

/// The OpenAPI document of the api (`GET /openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    document(resources(&FirstVisit::document_only()).into_openapi())
}

async fn not_found() -> ApiError {
    ApiError::not_found("route.not_found", "no such resource")
}

/// Gives axum's bare 405 a problem body, keeping its `Allow` header.
async fn method_not_allowed(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status() != axum::http::StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let mut problem = ApiError::MethodNotAllowed.into_response();
    if let Some(allow) = response.headers().get(axum::http::header::ALLOW) {
        problem
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    problem
}

/// The `method` label of the HTTP metrics: a standard method, else `OTHER` (any token is a valid
/// method: a label per token would grow the metrics without bound).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

async fn http_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(request.method()).to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("appreg_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("appreg_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Applies the migrations the api needs: the event store's, the read models', the vault's and
/// its own (`migrations/`: the event-stream tickets).
/// (The background processes' own tables, the DCR saga's and the lifecycle process manager's,
/// are theirs to migrate: `appreg` applies every migration when it opens the database.)
pub async fn migrate(
    db: &appreg_eventstore::Database,
) -> Result<(), appreg_eventstore::StoreError> {
    db.migrate().await?;
    appreg_readmodel::migrate(db).await?;
    appreg_secrets::store::migrate(db).await?;
    let mut own = sqlx::migrate!("./migrations");
    // The other components' migrations share the table of applied migrations.
    own.set_ignore_missing(true);
    match db {
        appreg_eventstore::Database::Postgres(pool) => own.run(pool).await?,
        appreg_eventstore::Database::Sqlite(pool) => own.run(pool).await?,
    }
    // The webhook deliveries, whose log the api serves.
    appreg_notify::migrate(db).await?;
    Ok(())
}

/// The router, with every layer.
pub fn router(state: AppState) -> Router {
    let (routes, openapi) = resources(&FirstVisit::recorded(&state)).split_for_parts();
    let openapi = std::sync::Arc::new(document(openapi));
    let max_body = state.max_body_bytes();
    let routes = match state.portal() {
        Some(portal) => routes.merge(portal::router(portal)),
        None => routes,
    };
    let cors_policy = state.cors().clone();
    routes
        .route(
            "/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { axum::Json(openapi.as_ref()).into_response() }
            }),
        )
        .fallback(not_found)
        .layer(middleware::from_fn(method_not_allowed))
        .route_layer(middleware::from_fn(http_metrics))
        .layer(DefaultBodyLimit::max(max_body))
        // The request span is `extract::trace_context`'s (with the W3C trace context); the
        // trace layer only logs failures inside it.
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(|_: &Request| tracing::Span::none()),
        )
        // Outside the routes (a preflight needs none), inside the request's span.
        .layer(middleware::from_fn_with_state(cors_policy, cors::cors))
        .layer(middleware::from_fn(extract::trace_context))
        .layer(middleware::from_fn(extract::request_id))
        .with_state(state)
}

/// How often the api reads the checkpoint of a read model kept by `appreg projector` when no
/// notification came.
const CHECKPOINT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Serves the api on `listener` and runs its projector (or follows the external one) until `shutdown` fires, then drains
/// in-flight requests.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    // Supervised: a task that dies makes /readyz fail and is restarted (each resumes from the
    // read model's position); one that keeps dying makes /healthz fail.
    let supervisor = state.supervisor().clone();
    let projector = if state.read().is_external() {
        let read = state.read().clone();
        supervisor.spawn("read-model-follower", shutdown.child_token(), {
            let stop = shutdown.child_token();
            move || {
                let (read, stop) = (read.clone(), stop.clone());
                async move {
                    read.follow_checkpoint(CHECKPOINT_POLL, stop).await;
                    Ok::<_, std::convert::Infallible>(())
                }
            }
        })
    } else {
        let (read, store) = (state.read().clone(), state.store().clone());
        supervisor.spawn("inline-projector", shutdown.child_token(), {
            let stop = shutdown.child_token();
            move || {
                let run = readmodel::run_projector(read.clone(), store.clone(), stop.clone());
                async move {
                    run.await;
                    Ok::<_, std::convert::Infallible>(())
                }
            }
        })
    };
    let lag = supervisor.spawn("lag-gauges", shutdown.child_token(), {
        let (state, stop) = (state.clone(), shutdown.child_token());
        move || {
            let run = state.clone().keep_lag_measured(stop.clone());
            async move {
                run.await;
                Ok::<_, std::convert::Infallible>(())
            }
        }
    });
    // Event streams never end on their own: they end when the shutdown starts, so that the
    // graceful shutdown can drain them.
    let closing = state.closing().clone();
    let app = router(state);
    let token = shutdown.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            token.cancelled().await;
            closing.cancel();
        })
        .await;
    shutdown.cancel();
    let _ = projector.await;
    let _ = lag.await;
    served
}

#[cfg(test)]
mod supervision_tests;

#[cfg(test)]
mod tests {
    #[test]
    fn the_method_label_is_bounded() {
        use axum::http::Method;
        assert_eq!(super::method_label(&Method::GET), "GET");
        assert_eq!(super::method_label(&Method::OPTIONS), "OPTIONS");
        for other in ["FOO", "BREW", "X-1", "PROPFIND"] {
            let method = Method::from_bytes(other.as_bytes()).unwrap();
            assert_eq!(super::method_label(&method), "OTHER", "{other}");
        }
    }

    /// The OpenAPI document is part of the contract: a change to it must be deliberate.
    /// Regenerate the snapshot with `UPDATE_SNAPSHOTS=1 cargo test -p appreg-api openapi`.
    #[test]
    fn openapi_snapshot_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../proto-schemas/openapi.json"
        );
        let current = serde_json::to_string_pretty(&super::openapi()).unwrap() + "\n";
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &current).unwrap();
        }
        let snapshot = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            snapshot == current,
            "proto-schemas/openapi.json is stale: run UPDATE_SNAPSHOTS=1 cargo test -p appreg-api openapi"
        );
        assert!(current.contains("\"openapi\": \"3.1"));
    }
}
