//! Logging, tracing and metrics set-up shared by every appreg process: structured `tracing` logs
//! (JSON by default), W3C trace context ([`trace`]) carried from the HTTP request into the event
//! metadata and on to every process that handles the event, spans exported over OTLP when an
//! endpoint is configured, one process-wide Prometheus recorder rendered by `/metrics`, and the
//! probes behind the lag metrics and `/readyz` ([`lag`], [`database_ready`]).
//!
//! Nothing here may fail a request or an event: telemetry that cannot be recorded or exported
//! is dropped (and logged), never returned as an error to the caller.

pub mod lag;
mod otlp;
mod store;
pub mod trace;

pub use metrics_exporter_prometheus::PrometheusHandle;
pub use store::{count_appends, CountingStore};

use appreg_eventstore::Database;
use metrics_exporter_prometheus::PrometheusBuilder;
use std::sync::OnceLock;
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("otlp_endpoint {endpoint:?}: {reason}")]
    Otlp { endpoint: String, reason: String },
}

/// Installs the global tracing subscriber (once; later calls are no-ops). `RUST_LOG` filters,
/// default `info`. Without OTLP export; see [`init`].
pub fn init_tracing(format: &str) {
    let _ = init("appreg", format, None);
}

/// Installs the global tracing subscriber (once; later calls are no-ops): logs on stderr in
/// `format` (`json` or `text`), and, with `otlp_endpoint` (`http://collector:4318`), every span
/// exported over OTLP (HTTP/protobuf to `<endpoint>/v1/traces`) as service `service`
/// (`appreg-api`, `appreg-relay`…). Call [`shutdown`] before the process exits so that the
/// last spans are sent.
pub fn init(
    service: &'static str,
    format: &str,
    otlp_endpoint: Option<&str>,
) -> Result<(), TelemetryError> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = if format == "text" {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let tracer = match otlp_endpoint.map(str::trim).filter(|e| !e.is_empty()) {
        Some(endpoint) => Some(otlp::tracer(service, endpoint)?),
        None => None,
    };
    let exporting = tracer.is_some();
    let otel = tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t));
    let installed = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init()
        .is_ok();
    if installed && exporting {
        trace::set_exporting();
    }
    Ok(())
}

/// Sends the spans not yet exported and stops the exporter (no-op without OTLP). Blocks for at
/// most a few seconds: call it when the process is done, outside async code.
pub fn shutdown() {
    otlp::shutdown();
}

/// Sends the spans not yet exported (no-op without OTLP). Blocks: call it outside async code.
pub fn flush() {
    otlp::flush();
}

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus handle; installs the recorder on first use.
#[allow(clippy::expect_used)] // invariant: the bucket list is constant and not empty
pub fn metrics_handle() -> PrometheusHandle {
    PROMETHEUS
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Whether the database answers a trivial query within `timeout` (readiness probes). The error
/// says why, without the database's address or credentials.
pub async fn database_ready(db: &Database, timeout: Duration) -> Result<(), String> {
    let ping = async {
        match db {
            Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
            Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()),
        }
    };
    match tokio::time::timeout(timeout, ping).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: the database does not answer");
            Err("the database is unreachable".into())
        }
        Err(_) => Err(format!(
            "the database did not answer within {} ms",
            timeout.as_millis()
        )),
    }
}
