//! W3C trace context (`traceparent`, version 00) across processes.
//!
//! The api reads the caller's `traceparent` (or starts a trace), gives its request span the
//! `trace_id`, writes `00-<trace-id>-<request span id>-<flags>` into the metadata of every event
//! the request appends, and answers it in a `traceparent` header. The relay copies it into the
//! NATS header; the projector, the DCR saga and the lifecycle process manager record its
//! `trace_id` on the span handling the event, and the events they append keep it. So
//! `trace_id=<id>` finds one request's log lines in every process.
//!
//! With OTLP export ([`crate::init`]), the spans themselves are exported, parented on the
//! context they received: the api's request span on the caller's `traceparent`, the consumers'
//! spans on the event's. Without it, ids are drawn here and nothing else changes.

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceFlags, TraceState};
use opentelemetry::trace::{SpanId, TraceId};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The HTTP (and NATS) header carrying the trace context.
pub const TRACEPARENT: &str = "traceparent";

static EXPORTING: AtomicBool = AtomicBool::new(false);

pub(crate) fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported over OTLP.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// A W3C `traceparent` of version 00: a trace id, the id of the span it comes from (the
/// "parent id" of whatever receives it) and the trace flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

/// Lower-case hex only, as W3C trace context requires.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let bytes = s.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = hex_digit(pair[0])? << 4 | hex_digit(pair[1])?;
    }
    Some(out)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let mut bytes = [0u8; N];
        rand::Rng::fill(&mut rand::thread_rng(), &mut bytes[..]);
        if bytes != [0u8; N] {
            return bytes;
        }
    }
}

impl TraceParent {
    /// Parses a `traceparent` strictly: version `00`, a trace id of 32 lower-case hex digits not
    /// all zero, a parent id of 16 lower-case hex digits not all zero, flags of 2 hex digits,
    /// separated by `-`, nothing more. Anything else is `None` (the receiver starts a new trace).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches(|c| c == ' ' || c == '\t');
        let mut parts = value.split('-');
        let (version, trace_id, span_id, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || version != "00" {
            return None;
        }
        let trace_id = parse_hex::<16>(trace_id).filter(|t| *t != [0; 16])?;
        let span_id = parse_hex::<8>(span_id).filter(|s| *s != [0; 8])?;
        let [flags] = parse_hex::<1>(flags)?;
        Some(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new trace: random trace and span ids, sampled.
    pub fn new_root() -> TraceParent {
        TraceParent {
            trace_id: nonzero(),
            span_id: nonzero(),
            flags: 0x01,
        }
    }

    /// A new span of the same trace (a random span id, the same flags).
    pub fn child(&self) -> TraceParent {
        TraceParent {
            span_id: nonzero(),
            ..*self
        }
    }

    /// The trace id, 32 lower-case hex digits.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// The span id, 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    pub fn sampled(&self) -> bool {
        self.flags & 0x01 == 0x01
    }

    fn span_context(&self) -> SpanContext {
        SpanContext::new(
            TraceId::from_bytes(self.trace_id),
            SpanId::from_bytes(self.span_id),
            TraceFlags::new(self.flags),
            true,
            TraceState::default(),
        )
    }

    fn from_span_context(context: &SpanContext) -> Option<TraceParent> {
        context.is_valid().then(|| TraceParent {
            trace_id: context.trace_id().to_bytes(),
            span_id: context.span_id().to_bytes(),
            flags: context.trace_flags().to_u8(),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    struct Hex<'a>(&'a [u8]);
    impl fmt::Display for Hex<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write_hex(f, self.0)
        }
    }
    Hex(bytes).to_string()
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        write_hex(f, &self.trace_id)?;
        f.write_str("-")?;
        write_hex(f, &self.span_id)?;
        write!(f, "-{:02x}", self.flags)
    }
}

impl std::str::FromStr for TraceParent {
    type Err = &'static str;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TraceParent::parse(s).ok_or("not a W3C traceparent of version 00")
    }
}

/// Makes `span` (not entered yet, with an empty `trace_id` field) the span of a request that
/// came with `incoming` (None: a new trace), records its `trace_id`, and returns the context
/// that names it: its trace id, its own span id, the flags. With OTLP export, `span` is
/// exported as a child of `incoming`, with the ids the tracer gave it.
pub fn start(span: &Span, incoming: Option<TraceParent>) -> TraceParent {
    let mut context = None;
    if exporting() && !span.is_disabled() {
        if let Some(parent) = incoming {
            let parent =
                opentelemetry::Context::new().with_remote_span_context(parent.span_context());
            let _ = span.set_parent(parent);
        }
        context = TraceParent::from_span_context(span.context().span().span_context());
    }
    let context = context.unwrap_or_else(|| match incoming {
        Some(parent) => parent.child(),
        None => TraceParent::new_root(),
    });
    span.record("trace_id", context.trace_id());
    context
}

/// The trace id of an event's `traceparent` (its metadata's), or "" when it has none (for span
/// fields).
pub fn trace_id(traceparent: Option<&str>) -> String {
    traceparent
        .and_then(TraceParent::parse)
        .map(|t| t.trace_id())
        .unwrap_or_default()
}

/// Makes `span` (not entered yet) follow the event whose metadata carries `traceparent`: its
/// `trace_id` field is recorded and, with OTLP export, it becomes a child of the event's span.
pub fn follow(span: &Span, traceparent: Option<&str>) -> Option<TraceParent> {
    let parent = traceparent.and_then(TraceParent::parse)?;
    follow_parent(span, parent);
    Some(parent)
}

fn follow_parent(span: &Span, parent: TraceParent) {
    span.record("trace_id", parent.trace_id());
    if exporting() && !span.is_disabled() {
        let context = opentelemetry::Context::new().with_remote_span_context(parent.span_context());
        let _ = span.set_parent(context);
    }
}

/// A span to run the handling of one event under, parented on the event's `traceparent`, when
/// spans are exported (else none: the handler's own spans carry the `trace_id` field).
pub fn event_span(traceparent: Option<&str>) -> Span {
    match traceparent.and_then(TraceParent::parse) {
        Some(parent) if exporting() => {
            let span = tracing::info_span!("event", trace_id = tracing::field::Empty);
            follow_parent(&span, parent);
            span
        }
        _ => Span::none(),
    }
}

/// Most trace ids listed on a batch span.
const MAX_BATCH_TRACES: usize = 16;

/// Makes `span` (not entered yet) follow a batch of events: with one trace among them, as
/// [`follow`]; with several, `trace_id` lists them (space-separated, at most 16, then `+N`) and,
/// with OTLP export, the span links to each event's span.
pub fn follow_batch<'a>(span: &Span, traceparents: impl IntoIterator<Item = &'a str>) {
    let mut parents: Vec<TraceParent> = Vec::new();
    for parent in traceparents.into_iter().filter_map(TraceParent::parse) {
        if !parents.contains(&parent) {
            parents.push(parent);
        }
    }
    let mut traces: Vec<String> = Vec::new();
    for parent in &parents {
        let id = parent.trace_id();
        if !traces.contains(&id) {
            traces.push(id);
        }
    }
    match traces.len() {
        0 => {}
        1 if parents.len() == 1 => follow_parent(span, parents[0]),
        1 => {
            span.record("trace_id", &traces[0]);
            link(span, &parents);
        }
        n => {
            let mut listed = traces[..n.min(MAX_BATCH_TRACES)].join(" ");
            if n > MAX_BATCH_TRACES {
                listed.push_str(&format!(" +{}", n - MAX_BATCH_TRACES));
            }
            span.record("trace_id", listed);
            link(span, &parents);
        }
    }
}

/// Links `span` to the spans of `parents` (with OTLP export).
fn link(span: &Span, parents: &[TraceParent]) {
    if exporting() && !span.is_disabled() {
        for parent in parents.iter().take(4 * MAX_BATCH_TRACES) {
            span.add_link(parent.span_context());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let t = TraceParent::parse(VALID).unwrap();
        assert_eq!(t.to_string(), VALID);
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.span_id(), "00f067aa0ba902b7");
        assert!(t.sampled());
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled());
    }

    #[test]
    fn anything_but_a_strict_version_00_is_refused() {
        for bad in [
            "",
            "00",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-00",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn new_traces_and_children_are_valid() {
        let root = TraceParent::new_root();
        let text = root.to_string();
        assert_eq!(TraceParent::parse(&text), Some(root));
        assert!(root.sampled());
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_ne!(TraceParent::new_root().trace_id(), root.trace_id());
    }

    /// The values recorded into `trace_id` fields while `f` runs.
    fn recorded_trace_ids(f: impl FnOnce()) -> Vec<String> {
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::{Context, SubscriberExt};
        struct Capture(Arc<Mutex<Vec<String>>>);
        struct Visit<'a>(&'a Mutex<Vec<String>>);
        impl tracing::field::Visit for Visit<'_> {
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                if field.name() == "trace_id" {
                    self.0.lock().unwrap().push(value.to_string());
                }
            }
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
                if field.name() == "trace_id" {
                    self.0.lock().unwrap().push(format!("{value:?}"));
                }
            }
        }
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
            fn on_record(
                &self,
                _: &tracing::span::Id,
                values: &tracing::span::Record<'_>,
                _: Context<'_, S>,
            ) {
                values.record(&mut Visit(&self.0));
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let subscriber = tracing_subscriber::registry().with(Capture(seen.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let seen = seen.lock().unwrap().clone();
        seen
    }

    #[test]
    fn consumers_record_the_trace_id_of_what_they_handle() {
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let seen = recorded_trace_ids(|| {
            let span = tracing::info_span!("event", trace_id = tracing::field::Empty);
            assert!(follow(&span, Some(VALID)).is_some());
            assert!(follow(&span, Some("junk")).is_none());
            assert!(follow(&span, None).is_none());
            // A batch of one request's events: its trace id.
            let batch = tracing::info_span!("batch", trace_id = tracing::field::Empty);
            follow_batch(&batch, [VALID, VALID, "junk"]);
            // Of several requests: all of them.
            let batch = tracing::info_span!("batch", trace_id = tracing::field::Empty);
            follow_batch(&batch, [VALID, other, VALID]);
            // Without trace context: nothing.
            let batch = tracing::info_span!("batch", trace_id = tracing::field::Empty);
            follow_batch(&batch, ["junk"]);
            // Without export, no extra span for the handler.
            assert!(event_span(Some(VALID)).is_none());
        });
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        assert_eq!(
            seen,
            vec![
                trace.to_string(),
                trace.to_string(),
                format!("{trace} 0af7651916cd43dd8448eb211c80319c"),
            ]
        );
    }

    #[test]
    fn without_export_a_request_span_continues_the_callers_trace() {
        let incoming = TraceParent::parse(VALID).unwrap();
        let span = tracing::info_span!("http", trace_id = tracing::field::Empty);
        let mine = start(&span, Some(incoming));
        assert_eq!(mine.trace_id(), incoming.trace_id());
        assert_ne!(mine.span_id(), incoming.span_id());
        let fresh = start(&span, None);
        assert_ne!(fresh.trace_id(), incoming.trace_id());
        assert_eq!(trace_id(Some(VALID)), incoming.trace_id());
        assert_eq!(trace_id(Some("nope")), "");
        assert_eq!(trace_id(None), "");
    }
}
