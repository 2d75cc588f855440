//! The appreg HTTP api: commands are validated at the edge, authorised, decided by the domain
//! and appended through the command path (`appreg_commands`); lists read the read model, one
//! application's current state comes from the command path's cache or snapshot plus the
//! stream's tail, history is read a page at a time, and time travel folds the log to its point. Served with graceful shutdown; `run` is what `appreg api` and
//! `appreg dev` call, and what tests call on a random port.

mod apidoc;
mod catalogue;
pub mod commands;
pub mod dto;
mod environments;
pub mod error;
mod events;
mod extract;
mod members;
mod providers;
pub use appreg_readmodel as readmodel;
mod routes;
pub mod state;
mod streams;
pub mod subscriptions;
mod users;

pub use error::ApiError;
pub use state::AppState;

use apidoc::{BearerAuth, CommonResponses};
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(title = "appreg", description = "Applications, OAuth clients and their lifecycle, for API-management portals."),
    paths(
        routes::get_settings, routes::put_settings, routes::application_types,
        routes::create_application, routes::list_applications, routes::get_application,
        routes::update_application, routes::archive_application, routes::restore_application,
        routes::history, events::events,
        members::list, members::add, members::change_role, members::remove, members::transfer,
        environments::create, environments::list, routes::healthz, routes::readyz, routes::metrics,
        providers::list, providers::get, providers::create, providers::update, providers::delete,
        routes::retry_registration, routes::renew_secret, routes::credentials,
        catalogue::list_apis, catalogue::create_api, catalogue::list_plans, catalogue::create_plan,
        catalogue::close_plan,
        subscriptions::list, subscriptions::subscribe, subscriptions::get, subscriptions::accept,
        subscriptions::reject, subscriptions::pause, subscriptions::resume, subscriptions::close,
        subscriptions::renew_key, subscriptions::revoke_key, subscriptions::verify,
        subscriptions::get_notifications, subscriptions::put_notifications,
    ),
    modifiers(&BearerAuth, &CommonResponses),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
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

/// Applies the migrations the api needs: the event store's, the read models' and the vault's.
/// (The background processes' own tables, the DCR saga's and the lifecycle process manager's,
/// are theirs to migrate: `appreg` applies every migration when it opens the database.)
pub async fn migrate(
    db: &appreg_eventstore::Database,
) -> Result<(), appreg_eventstore::StoreError> {
    db.migrate().await?;
    appreg_readmodel::migrate(db).await?;
    appreg_secrets::store::migrate(db).await
}

/// The router, with every layer.
pub fn router(state: AppState) -> Router {
    let env = Router::new()
        .route(
            "/settings/client-registration",
            get(routes::get_settings).put(routes::put_settings),
        )
        .route("/application-types", get(routes::application_types))
        .route(
            "/client-registration-providers",
            get(providers::list).post(providers::create),
        )
        .route(
            "/client-registration-providers/{id}",
            get(providers::get)
                .put(providers::update)
                .delete(providers::delete),
        )
        .route(
            "/applications/{id}/_retry_registration",
            post(routes::retry_registration),
        )
        .route(
            "/applications/{id}/_renew_secret",
            post(routes::renew_secret),
        )
        .route("/applications/{id}/credentials", get(routes::credentials))
        .route(
            "/applications",
            get(routes::list_applications).post(routes::create_application),
        )
        .route(
            "/applications/{id}",
            get(routes::get_application)
                .put(routes::update_application)
                .delete(routes::archive_application),
        )
        .route(
            "/applications/{id}/_restore",
            post(routes::restore_application),
        )
        .route("/applications/{id}/history", get(routes::history))
        .route("/events", get(events::events))
        .route(
            "/applications/{id}/members",
            get(members::list).post(members::add),
        )
        .route(
            "/applications/{id}/members/_transfer_ownership",
            post(members::transfer),
        )
        .route(
            "/applications/{id}/members/{user}",
            axum::routing::put(members::change_role).delete(members::remove),
        )
        .route(
            "/apis",
            get(catalogue::list_apis).post(catalogue::create_api),
        )
        .route(
            "/apis/{api}/plans",
            get(catalogue::list_plans).post(catalogue::create_plan),
        )
        .route(
            "/apis/{api}/plans/{plan}/_close",
            post(catalogue::close_plan),
        )
        .route(
            "/applications/{id}/subscriptions",
            get(subscriptions::list).post(subscriptions::subscribe),
        )
        .route("/subscriptions/{sid}", get(subscriptions::get))
        .route("/subscriptions/{sid}/_accept", post(subscriptions::accept))
        .route("/subscriptions/{sid}/_reject", post(subscriptions::reject))
        .route("/subscriptions/{sid}/_pause", post(subscriptions::pause))
        .route("/subscriptions/{sid}/_resume", post(subscriptions::resume))
        .route("/subscriptions/{sid}/_close", post(subscriptions::close))
        .route(
            "/subscriptions/{sid}/api-keys/_renew",
            post(subscriptions::renew_key),
        )
        .route(
            "/subscriptions/{sid}/api-keys/{key}/_revoke",
            post(subscriptions::revoke_key),
        )
        .route("/api-keys/_verify", post(subscriptions::verify))
        .route(
            "/applications/{id}/notifications",
            get(subscriptions::get_notifications).put(subscriptions::put_notifications),
        );
    let max_body = state.max_body_bytes();
    Router::new()
        .route(
            "/v1/environments",
            get(environments::list).post(environments::create),
        )
        .nest("/v1/environments/{env}", env)
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(openapi))
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
        use utoipa::OpenApi;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../proto-schemas/openapi.json"
        );
        let current = serde_json::to_string_pretty(&super::ApiDoc::openapi()).unwrap() + "\n";
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
