//! W3C trace context: the caller's `traceparent` is continued (a new trace without one, or with
//! an invalid one), every event of the request carries the request span's `traceparent` in its
//! metadata, and the response answers it. And the metrics of the same requests: command
//! latency by outcome, appended events, the read model's lag.

use crate::helpers::TestApp;
use crate::on_both;
use appreg_eventstore::Database;
use serde_json::{json, Value};

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// (trace id, parent id, flags) of a strictly valid version-00 `traceparent`.
#[track_caller]
fn parts(traceparent: &str) -> (String, String, String) {
    let fields: Vec<&str> = traceparent.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            && s.bytes().any(|b| b != b'0')
    };
    assert!(
        fields.len() == 4
            && fields[0] == "00"
            && hex(fields[1], 32)
            && hex(fields[2], 16)
            && fields[3].len() == 2
            && fields[3].bytes().all(|b| b.is_ascii_hexdigit()),
        "not a valid traceparent: {traceparent:?}"
    );
    (
        fields[1].to_string(),
        fields[2].to_string(),
        fields[3].to_string(),
    )
}

/// The metadata of every stored event of the request with this `X-Request-Id`.
async fn metadata_of_request(app: &TestApp, request_id: &str) -> Vec<Value> {
    let rows: Vec<String> = match &app.db {
        Database::Postgres(pool) => {
            sqlx::query_scalar("SELECT metadata::text FROM events ORDER BY position")
                .fetch_all(pool)
                .await
        }
        Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT metadata FROM events ORDER BY position")
                .fetch_all(pool)
                .await
        }
    }
    .unwrap();
    rows.iter()
        .map(|m| serde_json::from_str::<Value>(m).unwrap())
        .filter(|m| m["correlation_id"] == request_id)
        .collect()
}

/// Creates an application with these extra headers; returns the response.
async fn create(app: &TestApp, token: &str, headers: &[(&str, &str)]) -> crate::helpers::Resp {
    let mut request = app
        .client
        .post(app.url("applications"))
        .bearer_auth(token)
        .json(&json!({ "name": "traced", "type": "simple" }));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let r = app.send(request).await;
    r.assert_status(201);
    r
}

async fn a_callers_trace_is_continued_into_the_events(app: TestApp) {
    let alice = app.token("alice", false);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let r = create(
        &app,
        &alice,
        &[
            ("traceparent", &caller),
            ("x-request-id", "traced-create-1"),
        ],
    )
    .await;
    let answered = r
        .header("traceparent")
        .expect("the response carries a traceparent");
    let (trace, span, flags) = parts(&answered);
    assert_eq!(trace, CALLER_TRACE, "the caller's trace goes on");
    assert_ne!(span, CALLER_SPAN, "the request is a span of its own");
    assert_eq!(flags, "01");

    // Every event of the request (its user's first sighting and the creation) carries it.
    let metadata = metadata_of_request(&app, "traced-create-1").await;
    assert!(metadata.len() >= 2, "{metadata:?}");
    for m in &metadata {
        assert_eq!(m["traceparent"], answered.as_str(), "{m}");
    }
    let id = r.body["id"].as_str().unwrap();
    let created = app.stream(&format!("application-{id}")).await;
    assert_eq!(created[0].metadata["traceparent"], answered.as_str());

    // A later request of the same trace: the same trace id, another span.
    let update = app
        .send(
            app.client
                .put(app.url(&format!("applications/{id}")))
                .bearer_auth(&alice)
                .header("traceparent", &caller)
                .json(&json!({ "name": "traced again" })),
        )
        .await;
    update.assert_status(200);
    let again = update.header("traceparent").unwrap();
    let (trace, span2, _) = parts(&again);
    assert_eq!(trace, CALLER_TRACE);
    assert_ne!(span2, span);
    let events = app.stream(&format!("application-{id}")).await;
    assert_eq!(
        events.last().unwrap().metadata["traceparent"],
        again.as_str()
    );
    app.stop().await;
}

async fn without_a_valid_traceparent_a_new_trace_starts(app: TestApp) {
    let alice = app.token("alice", false);
    let r = create(&app, &alice, &[("x-request-id", "untraced-1")]).await;
    let answered = r.header("traceparent").expect("a new trace is answered");
    let (trace, _, flags) = parts(&answered);
    assert_eq!(flags, "01");
    let metadata = metadata_of_request(&app, "untraced-1").await;
    assert!(!metadata.is_empty());
    for m in &metadata {
        assert_eq!(m["traceparent"], answered.as_str(), "{m}");
    }

    // Invalid ones are ignored: a new trace each time, never the caller's.
    let mut traces = vec![trace];
    for (i, bad) in [
        format!("01-{CALLER_TRACE}-{CALLER_SPAN}-01"),
        format!("00-{}-{CALLER_SPAN}-01", CALLER_TRACE.to_uppercase()),
        format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32)),
        format!("00-{CALLER_TRACE}-{}-01", "0".repeat(16)),
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-1"),
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01-extra"),
        "garbage".to_string(),
    ]
    .iter()
    .enumerate()
    {
        let request_id = format!("bad-trace-{i}");
        let r = create(
            &app,
            &alice,
            &[("traceparent", bad), ("x-request-id", &request_id)],
        )
        .await;
        let answered = r.header("traceparent").unwrap();
        let (trace, _, _) = parts(&answered);
        assert_ne!(trace, CALLER_TRACE, "{bad:?} is not continued");
        assert!(!traces.contains(&trace), "{bad:?}: a new trace");
        for m in metadata_of_request(&app, &request_id).await {
            assert_eq!(m["traceparent"], answered.as_str(), "{m}");
        }
        traces.push(trace);
    }

    // Every answer carries one, failures included.
    let r = app
        .send(
            app.client
                .get(app.url("/nope"))
                .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-00")),
        )
        .await;
    r.assert_status(404);
    let (trace, _, flags) = parts(&r.header("traceparent").unwrap());
    assert_eq!(trace, CALLER_TRACE);
    assert_eq!(flags, "00", "the caller's flags are kept");
    app.stop().await;
}

/// The value of the first sample of `/metrics` named `name` with every label of `labels`.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|label| l.contains(label)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn commands_appends_and_lag_are_measured(app: TestApp) {
    let alice = app.token("alice", false);
    create(&app, &alice, &[]).await;
    let unknown = uuid::Uuid::now_v7();
    app.put(
        &format!("applications/{unknown}"),
        &alice,
        json!({ "name": "nobody's" }),
    )
    .await
    .assert_problem(404, "application.not_found");
    // /readyz measures the read model's lag (as does a timer).
    app.send(app.client.get(app.url("/readyz")))
        .await
        .assert_status(200);

    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = "appreg_command_duration_seconds_count";
    let ok = sample(
        &text,
        count,
        &[r#"command="CreateApplication""#, r#"outcome="ok""#],
    );
    assert!(ok.is_some_and(|n| n >= 1.0), "{text}");
    let refused = sample(
        &text,
        count,
        &[
            r#"command="UpdateApplication""#,
            r#"outcome="application.not_found""#,
        ],
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
    let appended = "appreg_events_appended_total";
    for stream_type in ["application", "user"] {
        let n = sample(
            &text,
            appended,
            &[&format!(r#"stream_type="{stream_type}""#)],
        );
        assert!(n.is_some_and(|n| n >= 1.0), "{stream_type}: {text}");
    }
    let projection = r#"projection="applications""#;
    assert!(
        sample(&text, "appreg_projection_lag_events", &[projection]).is_some(),
        "{text}"
    );
    assert!(
        sample(&text, "appreg_projection_lag_seconds", &[projection]).is_some(),
        "{text}"
    );
    app.stop().await;
}

on_both!(
    a_callers_trace_is_continued_into_the_events,
    without_a_valid_traceparent_a_new_trace_starts,
    commands_appends_and_lag_are_measured,
);
