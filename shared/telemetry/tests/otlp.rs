//! OTLP export: with an endpoint configured, spans reach `<endpoint>/v1/traces` as
//! HTTP/protobuf, in the trace of the `traceparent` they were started from. The collector is a
//! tiny local HTTP sink; the protobuf is not decoded (only searched for the ids and the name).

use appreg_telemetry::trace::{self, TraceParent};
use axum::body::Bytes;
use axum::http::{HeaderMap, Uri};
use opentelemetry::trace::TraceContextExt;
use std::time::Duration;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Export {
    path: String,
    content_type: String,
    body: Bytes,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn bytes_of_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_in_the_callers_trace() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Export>();
    let sink = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let tx = tx.clone();
        async move {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let _ = tx.send(Export {
                path: uri.path().to_string(),
                content_type,
                body,
            });
            // An empty ExportTraceServiceResponse: everything accepted.
            ([("content-type", "application/x-protobuf")], Bytes::new())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, sink).await.unwrap() });

    assert!(appreg_telemetry::init("appreg-otlp-test", "json", Some("ftp://nope")).is_err());
    appreg_telemetry::init("appreg-otlp-test", "json", Some(&endpoint)).unwrap();
    assert!(trace::exporting());

    // A request span continuing a caller's trace: the tracer's ids, the caller's trace.
    let caller =
        TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
    let request = tracing::info_span!("http", trace_id = tracing::field::Empty);
    let context = trace::start(&request, Some(caller));
    assert_eq!(context.trace_id(), caller.trace_id());
    assert_ne!(context.span_id(), caller.span_id());
    let exported = request.context();
    let exported = exported.span();
    let exported = exported.span_context();
    assert_eq!(exported.trace_id().to_string(), caller.trace_id());
    assert_eq!(exported.span_id().to_string(), context.span_id());
    request.in_scope(|| tracing::info!("handled"));
    drop(request);

    // A consumer of the request's event: a child of the request's span.
    let consumer = tracing::info_span!("consumer", trace_id = tracing::field::Empty);
    trace::follow(&consumer, Some(&context.to_string()));
    assert_eq!(
        consumer
            .context()
            .span()
            .span_context()
            .trace_id()
            .to_string(),
        caller.trace_id()
    );
    drop(consumer);

    tokio::task::spawn_blocking(appreg_telemetry::flush)
        .await
        .unwrap();
    let export = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an export within 20 s")
        .unwrap();
    assert_eq!(export.path, "/v1/traces");
    assert_eq!(export.content_type, "application/x-protobuf");
    assert!(!export.body.is_empty());
    assert!(
        contains(&export.body, b"appreg-otlp-test"),
        "the service name"
    );
    assert!(
        contains(&export.body, &bytes_of_hex(&caller.trace_id())),
        "the caller's trace id"
    );
    assert!(
        contains(&export.body, &bytes_of_hex(&context.span_id())),
        "the request span's id"
    );
    tokio::task::spawn_blocking(appreg_telemetry::shutdown)
        .await
        .unwrap();
}
