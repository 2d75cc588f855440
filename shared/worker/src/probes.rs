//! The metrics listener of a service process: `/metrics` (Prometheus), `/healthz` (alive) and
//! `/readyz` ([`Readiness`]). Each service's `build` binds it ([`MetricsListener::bind`]), its
//! `run` serves it until shutdown.

use crate::Supervisor;
use appreg_eventstore::Database;
use tokio_util::sync::CancellationToken;

/// What `/readyz` of a service's metrics listener checks: PostgreSQL answers and, for the
/// relay, the projector and the notifier (on PostgreSQL), the NATS client is connected.
#[derive(Clone)]
pub struct Readiness {
    db: Database,
    nats: Option<async_nats::Client>,
    /// The process's supervised tasks: a dead one fails `/readyz`, a given-up one `/healthz`.
    supervisor: Supervisor,
}

impl Readiness {
    pub fn new(db: &Database, nats: Option<&async_nats::Client>) -> Self {
        Readiness {
            db: db.clone(),
            nats: nats.cloned(),
            supervisor: Supervisor::default(),
        }
    }

    /// The same checks, and the tasks of `supervisor`.
    pub fn supervised(mut self, supervisor: &Supervisor) -> Self {
        self.supervisor = supervisor.clone();
        self
    }

    /// 200 `ok`, or 503 with a problem document naming the tasks given up.
    pub fn alive(&self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let dead = self.supervisor.not_alive();
        if dead.is_empty() {
            return "ok".into_response();
        }
        unavailable(format!("not alive: {}", dead.join("; ")))
    }

    /// 200 `ready`, or 503 with a problem document saying why not.
    pub async fn check(&self) -> axum::response::Response {
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
pub fn unavailable(detail: String) -> axum::response::Response {
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

/// The metrics address cannot be listened on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    pub addr: String,
    #[source]
    pub source: std::io::Error,
}

/// A bound metrics listener, not serving yet.
pub struct MetricsListener {
    listener: tokio::net::TcpListener,
    service: &'static str,
}

impl MetricsListener {
    /// Binds `addr` for the service `service` (`relay`, `projector`, …).
    ///
    /// # Errors
    /// The address is malformed or taken.
    pub async fn bind(addr: &str, service: &'static str) -> Result<Self, BindError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| BindError {
                addr: addr.to_string(),
                source,
            })?;
        Ok(MetricsListener { listener, service })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves `/metrics`, `/healthz` (alive) and `/readyz` ([`Readiness`]) in the background
    /// until `shutdown` fires.
    pub fn spawn(
        self,
        metrics: appreg_telemetry::PrometheusHandle,
        ready: Readiness,
        shutdown: CancellationToken,
    ) {
        let service = self.service;
        if let Ok(addr) = self.listener.local_addr() {
            tracing::info!(%addr, service, "metrics listening");
        }
        let healthz = ready.clone();
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
                axum::routing::get(move || {
                    let ready = healthz.clone();
                    async move { ready.alive() }
                }),
            )
            .route(
                "/readyz",
                axum::routing::get(move || {
                    let ready = ready.clone();
                    async move { ready.check().await }
                }),
            );
        let listener = self.listener;
        tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, service, "metrics server failed");
            }
        });
    }
}

/// A reactor's lag gauges ([`appreg_telemetry::lag`], named `prefix`) from its checkpoint row
/// (`name` in `table`), as the supervised task `task`.
pub fn supervise_checkpoint_lag(
    supervisor: &Supervisor,
    task: &'static str,
    db: &Database,
    (table, name): (&'static str, &'static str),
    prefix: &'static str,
    shutdown: &CancellationToken,
) {
    let (db, stop) = (db.clone(), shutdown.clone());
    supervisor.spawn(task, shutdown.clone(), move || {
        let probe = db.clone();
        let run = appreg_telemetry::lag::keep_refreshed(
            db.clone(),
            appreg_telemetry::lag::LagGauges::named(prefix),
            move || {
                let probe = probe.clone();
                async move { appreg_telemetry::lag::stored_checkpoint(&probe, table, name).await }
            },
            stop.clone(),
        );
        async move {
            run.await;
            Ok::<_, std::convert::Infallible>(())
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn readiness(ready: &Readiness) -> (u16, String) {
        let response = ready.check().await;
        let status = response.status().as_u16();
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The metrics listener's `/readyz`: ready while the database answers (and, for the relay
    /// and the projector, the NATS client is connected), else 503 saying why.
    #[tokio::test]
    async fn readyz_of_a_service_checks_the_database_and_nats() {
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        let db = Database::connect(&url, 2).await.unwrap();
        assert_eq!(readiness(&Readiness::new(&db, None)).await.0, 200);

        // A NATS that does not answer (nothing listens on port 1): the client is not connected.
        let nats = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .unwrap();
        let (status, body) = readiness(&Readiness::new(&db, Some(&nats))).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("NATS is not connected"), "{body}");
        assert!(body.contains("service.unavailable"), "{body}");

        // The database is gone.
        db.close().await;
        let (status, body) = readiness(&Readiness::new(&db, None)).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("the database is unreachable"), "{body}");
    }

    /// A worker's supervised task (the saga, the process manager, their lag gauges) dies:
    /// `/readyz` of its metrics listener fails naming it; given up, `/healthz` fails too.
    #[tokio::test]
    async fn a_dead_task_fails_the_probes_of_a_worker() {
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        let db = Database::connect(&url, 2).await.unwrap();
        let supervisor = Supervisor::new(crate::RestartPolicy {
            first_delay: std::time::Duration::from_millis(300),
            max_delay: std::time::Duration::from_millis(300),
            give_up_after: 2,
            healthy_after: std::time::Duration::from_secs(60),
        });
        let ready = Readiness::new(&db, None).supervised(&supervisor);
        let shutdown = CancellationToken::new();
        supervisor.spawn("dcr-saga", shutdown.clone(), || async {
            Err::<(), _>("the database is gone")
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (status, body) = readiness(&ready).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("the task dcr-saga failed"), "{body}");
        assert!(!body.contains("the database is gone"), "{body}");
        assert_eq!(ready.alive().status().as_u16(), 200);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let alive = ready.alive();
        assert_eq!(alive.status().as_u16(), 503);
        shutdown.cancel();
    }
}
