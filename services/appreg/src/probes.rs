//! The metrics listener of a service: `/metrics`, and `/healthz` and `/readyz` ([`Readiness`]).

use super::*;

/// What `/readyz` of a service's metrics listener checks: PostgreSQL answers and, for the
/// relay and the projector, the NATS client is connected.
#[derive(Clone)]
pub(crate) struct Readiness {
    db: Database,
    nats: Option<async_nats::Client>,
    /// The process's supervised tasks: a dead one fails `/readyz`, a given-up one `/healthz`.
    supervisor: appreg_worker::Supervisor,
}

impl Readiness {
    pub(crate) fn new(db: &Database, nats: Option<&async_nats::Client>) -> Self {
        Readiness {
            db: db.clone(),
            nats: nats.cloned(),
            supervisor: appreg_worker::Supervisor::default(),
        }
    }

    /// The same checks, and the tasks of `supervisor`.
    pub(crate) fn supervised(mut self, supervisor: &appreg_worker::Supervisor) -> Self {
        self.supervisor = supervisor.clone();
        self
    }

    /// 200 `ok`, or 503 with a problem document naming the tasks given up.
    pub(crate) fn alive(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let dead = self.supervisor.not_alive();
        if dead.is_empty() {
            return "ok".into_response();
        }
        unavailable(format!("not alive: {}", dead.join("; ")))
    }

    /// 200 `ready`, or 503 with a problem document saying why not.
    pub(crate) async fn check(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let mut reasons = self.supervisor.not_ready();
        if let Err(reason) =
            appreg_telemetry::database_ready(&self.db, std::time::Duration::from_secs(2)).await
        {
            reasons.push(reason);
        }
        if let Some(nats) = &self.nats {
            let state = nats.connection_state();
            if state != async_nats::connection::State::Connected {
                reasons.push(format!("NATS is not connected ({state})"));
            }
        }
        if reasons.is_empty() {
            return "ready".into_response();
        }
        unavailable(format!("not ready: {}", reasons.join("; ")))
    }
}

/// A 503 problem document (code `service.unavailable`) saying `detail`.
pub(crate) fn unavailable(detail: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let problem = serde_json::json!({
        "type": "urn:appreg:problem:service.unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": detail,
        "code": "service.unavailable",
    });
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [(axum::http::header::CONTENT_TYPE, "application/problem+json")],
        problem.to_string(),
    )
        .into_response()
}

/// Serves `/metrics`, `/healthz` (alive) and `/readyz` ([`Readiness`]) on `addr` until
/// `shutdown` fires.
pub(crate) async fn serve_metrics(
    addr: &str,
    metrics: appreg_telemetry::PrometheusHandle,
    shutdown: CancellationToken,
    service: &'static str,
    ready: Readiness,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, service, "metrics listening");
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route(
            "/healthz",
            axum::routing::get({
                let ready = ready.clone();
                move || {
                    let ready = ready.clone();
                    async move { ready.alive() }
                }
            }),
        )
        .route(
            "/readyz",
            axum::routing::get(move || {
                let ready = ready.clone();
                async move { ready.check().await }
            }),
        );
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, service, "metrics server failed");
        }
    });
    Ok(())
}
