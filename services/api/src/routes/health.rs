//! Liveness, readiness and the Prometheus metrics.

use super::*;

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
