//! Liveness, readiness and the Prometheus metrics: public, outside any environment.

use crate::error::{ApiError, Problem};
use crate::state::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
}

/// Liveness: 503 once a background task kept dying and was given up (restart the process).
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "alive"), (status = 503, body = Problem)))]
pub async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let dead = state.supervisor().not_alive();
    if !dead.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "not alive: {}",
            dead.join("; ")
        )));
    }
    Ok("ok")
}

/// Readiness: every background task runs, the database answers and the read model is not far
/// behind.
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, description = "ready"), (status = 503, body = Problem)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    // A background task (the projector, the lag gauges) is dead: not ready until restarted.
    let dead = state.supervisor().not_ready();
    if !dead.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "not ready: {}",
            dead.join("; ")
        )));
    }
    let lag = match tokio::time::timeout(TIMEOUT, state.projection_lag()).await {
        Ok(Ok(lag)) => lag,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readyz: the database does not answer");
            return Err(ApiError::Unavailable(
                "not ready: the database is unreachable".into(),
            ));
        }
        Err(_) => {
            return Err(ApiError::Unavailable(format!(
                "not ready: the database did not answer within {} ms",
                TIMEOUT.as_millis()
            )))
        }
    };
    let bound = state.readyz_max_lag();
    if lag.seconds > bound.as_secs_f64() {
        return Err(ApiError::Unavailable(format!(
            "not ready: the read model {:?} is {} event(s) and {:.1} s behind the event log \
             (readyz_max_lag_ms = {})",
            crate::readmodel::PROJECTION,
            lag.events,
            lag.seconds,
            bound.as_millis()
        )));
    }
    Ok("ready")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_eventstore::{AppendRequest, Database, NewEvent};
    use appreg_test_support::postgres::{
        fresh_postgres_url, DEFAULT_TEST_DATABASE_URL, TEST_DATABASE_URL_ENV,
    };
    use sqlx::Connection;
    use uuid::Uuid;

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

        // The database goes away (it refuses connections, its connections are terminated): 503,
        // the database named. Not `DROP DATABASE`: it holds a transaction id through a forced
        // checkpoint, and so the cluster-wide snapshot horizon every PostgreSQL event store's
        // tailer reads up to, stalling the read models of every other test (the fuzz runs'
        // seeding then timed out on a read model that was behind).
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
        sqlx::query(&format!(
            r#"ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false"#
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&name)
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
