//! OTLP export of spans (HTTP/protobuf), when `otlp_endpoint` is configured.
//!
//! The SDK's batch processor exports from a thread of its own, outside the tokio runtime, so
//! the exporter's client is reqwest's blocking one (the workspace's reqwest; the clients of
//! `opentelemetry-http` are on another major version). A collector that is down only loses
//! spans: the processor's queue is bounded and exports time out.

use crate::TelemetryError;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::sync::OnceLock;
use std::time::Duration;

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// The OTLP endpoint of traces under a collector's base URL (`http://collector:4318`).
pub(crate) fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// A tracer exporting to `endpoint` as `service`; the provider is kept for [`shutdown`].
pub(crate) fn tracer(service: &'static str, endpoint: &str) -> Result<SdkTracer, TelemetryError> {
    let error = |reason: String| TelemetryError::Otlp {
        endpoint: endpoint.to_string(),
        reason,
    };
    let url = traces_url(endpoint);
    url::Url::parse(&url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| error("expected an http(s) URL, such as http://collector:4318".into()))?;
    if let Some(provider) = PROVIDER.get() {
        return Ok(provider.tracer(service));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient::new().map_err(|e| error(e.to_string()))?)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| error(e.to_string()))?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    let provider = PROVIDER.get_or_init(|| provider);
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider.tracer(service))
}

pub(crate) fn flush() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.force_flush() {
            tracing::warn!(%error, "cannot export the last spans");
        }
    }
}

pub(crate) fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(error) = provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::warn!(%error, "cannot export the last spans");
        }
    }
}

/// reqwest's blocking client as the exporter's transport.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

impl BlockingClient {
    fn new() -> Result<Self, reqwest::Error> {
        // A blocking client owns a runtime: it is built (and used) off the async runtime.
        std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .timeout(EXPORT_TIMEOUT)
                .build()
        })
        .join()
        .unwrap_or_else(|_| Ok(reqwest::blocking::Client::new()))
        .map(BlockingClient)
    }
}

#[async_trait::async_trait]
impl HttpClient for BlockingClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let answer = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let mut response = Response::builder().status(answer.status());
        if let Some(headers) = response.headers_mut() {
            *headers = answer.headers().clone();
        }
        let body = answer.bytes()?;
        Ok(response.body(body)?)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_traces_path_is_appended_once() {
        assert_eq!(
            super::traces_url("http://c:4318"),
            "http://c:4318/v1/traces"
        );
        assert_eq!(
            super::traces_url("http://c:4318/"),
            "http://c:4318/v1/traces"
        );
    }
}
