//! What one caller can cost the api through `GET /events`: open streams are limited per user
//! and in all (429 with `Retry-After`, `events.too_many_streams`), a stream closed by its client
//! frees its place, and a resume point more than `sse_max_replay_events` back is answered 410
//! (`events.replay_too_old`), never replayed.

use crate::events::{open, stop};
use crate::helpers::{Resp, TestApp};
use crate::on_both_with;
use std::time::Duration;

fn small_limits(config: &mut appreg_config::Config) {
    config.api.sse_max_streams_per_user = 3;
    config.api.sse_max_streams = 5;
    config.api.sse_max_replay_events = 5;
    // A closed stream is noticed at its next heartbeat.
    config.api.sse_heartbeat_ms = 100;
}

/// `GET /events` as `token`, resuming after `last_id`, when a refusal is expected.
async fn refused(app: &TestApp, token: &str, last_id: Option<&str>) -> Resp {
    let mut request = app.client.get(app.url("events")).bearer_auth(token);
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    tokio::time::timeout(Duration::from_secs(5), app.send(request))
        .await
        .expect("a refusal is immediate")
}

#[track_caller]
fn assert_too_many(r: &Resp) {
    r.assert_problem(429, "events.too_many_streams");
    let retry: u64 = r
        .header("retry-after")
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "{retry}");
}

async fn open_streams_are_limited_per_user_and_in_all(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let mut alices = Vec::new();
    for _ in 0..3 {
        alices.push(open(&app, "DEFAULT", &alice, None).await);
    }
    // A fourth of alice's: refused, for her alone.
    let r = refused(&app, &alice, None).await;
    assert_too_many(&r);
    assert!(
        r.detail().contains('3'),
        "the detail names the limit: {}",
        r.body
    );
    let b1 = open(&app, "DEFAULT", &bob, None).await;
    let _b2 = open(&app, "DEFAULT", &bob, None).await;
    // Five open in all: nobody gets a sixth, not even a new user or an administrator.
    assert_too_many(&refused(&app, &app.token("carol", false), None).await);
    assert_too_many(&refused(&app, &app.token("root", true), None).await);

    // A stream its client closes frees its place (noticed at its next heartbeat).
    drop(b1);
    drop(alices.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        // The headers only: a stream that opens does not end.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            app.client.get(app.url("events")).bearer_auth(&alice).send(),
        )
        .await
        .expect("an answer")
        .unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "a closed stream frees its place"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop(app).await;
}

async fn a_resume_point_too_far_back_is_gone(app: TestApp) {
    let alice = app.token("alice", false);
    let mut live = open(&app, "DEFAULT", &alice, None).await;
    for i in 0..8 {
        app.create_simple(&alice, &format!("app {i}"), None).await;
    }
    let frames: Vec<_> = {
        let mut out = Vec::new();
        for _ in 0..8 {
            out.push(live.next().await);
        }
        out
    };
    drop(live);
    // The whole log, or 7 events back: more than 5, refused.
    for far in ["0.0".to_string(), frames[0].id.clone().unwrap()] {
        let r = refused(&app, &alice, Some(&far)).await;
        r.assert_problem(410, "events.replay_too_old");
    }
    // 3 events back: replayed, exactly those.
    let mut s = open(&app, "DEFAULT", &alice, frames[4].id.as_deref()).await;
    for expected in &frames[5..] {
        let got = s.next().await;
        assert_eq!(got.id, expected.id);
        assert_eq!(got.kind(), "ApplicationCreated");
    }
    stop(app).await;
}

on_both_with!(
    small_limits;
    open_streams_are_limited_per_user_and_in_all,
    a_resume_point_too_far_back_is_gone,
);
