//! HTTP handlers of `/v1/environments/{env}/…` (API.md). Handlers are thin: parse at the edge,
//! run a command through `commands`, render a view.
//!
//! Layout: this file holds the consistency token and the helpers the handlers share;
//! `applications` the application endpoints, `history` an application's history, `settings`
//! the client registration settings, `health` liveness, readiness and metrics.

use crate::commands::{
    current_settings, execute_app, execute_settings, fold_app, load_settings, read_all,
};
use crate::dto::*;
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use appreg_domain::{Application, ApplicationId, ApplicationType, Operation, Permission};
use appreg_eventstore::{Appended, LogPosition};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

pub static CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

pub(crate) fn with_token(mut response: Response, appended: Option<&Appended>) -> Response {
    if let Some(a) = appended {
        if let Ok(v) = HeaderValue::from_str(&a.position.to_string()) {
            response.headers_mut().insert(CONSISTENCY_TOKEN.clone(), v);
        }
    }
    response
}

/// Waits until the read model includes the caller's last write (`X-Consistency-Token`), or,
/// without a token, everything committed before the request and every write this process
/// acknowledged: a list never misses a write the caller has seen acknowledged (through another
/// api instance, send the token).
pub(crate) async fn fresh_read_model(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let target = match headers.get(&CONSISTENCY_TOKEN) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<LogPosition>().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "X-Consistency-Token",
                    "consistency_token.invalid",
                    "not a token this api issued",
                )
            })?,
        None => state.store().last_committed().await?,
    };
    if state.read().position() >= target
        || state
            .read()
            .wait_for(target, state.consistency_wait())
            .await
    {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "the read models are behind; retry shortly".into(),
        ))
    }
}

pub(crate) fn parse_app_id(raw: &str) -> Result<ApplicationId, ApiError> {
    Uuid::parse_str(raw)
        .map(ApplicationId)
        .map_err(|_| ApiError::not_found("application.not_found", "no such application"))
}

/// The caller's view of an application, with the primary owner's name.
pub(crate) async fn view(
    state: &AppState,
    ctx: &Ctx,
    app: &Application,
) -> Result<ApplicationView, ApiError> {
    let mut view = ApplicationView::new(app, &ctx.actor);
    if let Some(owner) = view.owner.as_mut() {
        owner.name = if owner.id == ctx.actor.user.as_str() {
            // The caller's own name is in their token: no read needed.
            ctx.principal.name.clone()
        } else {
            state
                .read()
                .user_profile(ctx.environment.as_str(), &owner.id)
                .await?
                .and_then(|(name, _)| name)
        };
    }
    Ok(view)
}

pub(crate) fn not_found() -> ApiError {
    ApiError::not_found("application.not_found", "no such application")
}

mod applications;
mod health;
mod history;
mod settings;

pub use applications::*;
pub use health::*;
pub use history::*;
pub use settings::*;

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_eventstore::testing::{
        fresh_postgres_url, DEFAULT_TEST_DATABASE_URL, TEST_DATABASE_URL_ENV,
    };
    use appreg_eventstore::{AppendRequest, Database, NewEvent};
    use sqlx::Connection;

    async fn state(url: &str, max_lag_ms: u64) -> (AppState, Database) {
        let mut config = appreg_config::Config::defaults();
        config.readyz_max_lag_ms = max_lag_ms;
        config.secrets_master_key = Some(
            appreg_secrets::MasterKey::generate("test", &mut rand::rngs::OsRng)
                .unwrap()
                .to_config_string(),
        );
        let db = Database::connect(url, 4).await.unwrap();
        crate::migrate(&db).await.unwrap();
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = appreg_auth::DevKey::from_pkcs8(pkcs8.as_ref().to_vec()).unwrap();
        let auth = appreg_auth::Authenticator::dev(&key, &config.auth.role_claim);
        (AppState::new(&config, &db, auth).await.unwrap(), db)
    }

    /// An event recorded `age` ago that no projector applies (none runs here).
    async fn unapplied_event(state: &AppState, age: chrono::Duration) {
        let at = crate::commands::now() - age;
        state
            .store()
            .append(AppendRequest {
                stream_id: "environment-LAGGING".into(),
                stream_type: "environment".into(),
                expected_version: 0,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "EnvironmentCreated".into(),
                    schema_version: 1,
                    data: serde_json::json!({ "id": "LAGGING", "name": "lagging" }),
                    metadata: serde_json::json!({
                        "environment": "LAGGING", "actor": "test", "correlation_id": "test",
                        "causation_id": "test", "at": at,
                    }),
                    recorded_at: at,
                }],
                claims: vec![],
                releases: vec![],
            })
            .await
            .unwrap();
    }

    async fn problem(result: Result<&'static str, ApiError>) -> (u16, serde_json::Value) {
        let response = match result {
            Ok(body) => body.into_response(),
            Err(e) => e.into_response(),
        };
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Ready while the database answers and the read model is within the bound; 503 saying why
    /// when the read model is behind, and when the database is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_fails_when_the_read_model_lags_or_the_database_is_gone() {
        let url = fresh_postgres_url().await;
        let (state, db) = state(&url, 5000).await;
        assert_eq!(problem(readyz(State(state.clone())).await).await.0, 200);

        // The first event the read model has not applied is 10 s old: behind the 5 s bound.
        unapplied_event(&state, chrono::Duration::seconds(10)).await;
        let lag = state.projection_lag().await.unwrap();
        assert_eq!(lag.events, 1);
        assert!(lag.seconds >= 9.0, "{lag:?}");
        let (status, body) = problem(readyz(State(state.clone())).await).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "service.unavailable");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("1 event(s)"), "{detail}");
        assert!(detail.contains("behind the event log"), "{detail}");
        assert!(detail.contains("readyz_max_lag_ms = 5000"), "{detail}");

        // Applied: ready again.
        let events = state
            .store()
            .read_stream("environment-LAGGING", 0, 10)
            .await
            .unwrap();
        state.read().apply(&events).await.unwrap();
        assert_eq!(state.projection_lag().await.unwrap().events, 0);
        assert_eq!(problem(readyz(State(state.clone())).await).await.0, 200);

        // The database is dropped (its connections terminated): 503, the database named.
        let admin_url = std::env::var(TEST_DATABASE_URL_ENV)
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string());
        let name = url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
            .execute(&mut admin)
            .await
            .unwrap();
        let (status, body) = problem(readyz(State(state.clone())).await).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "service.unavailable");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("database"), "{detail}");
        db.close().await;
    }
}
