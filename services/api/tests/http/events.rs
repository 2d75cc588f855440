//! `GET /events`: lifecycle events as Server-Sent Events, filtered to what the caller may see,
//! with heartbeats, resumable with `Last-Event-ID`. Every read has a timeout: a bug fails the
//! test instead of hanging it.

use crate::helpers::TestApp;
use crate::{on_both, on_both_with};
use serde_json::{json, Value};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);

/// One SSE frame: an event, or a comment (a heartbeat).
#[derive(Debug, Clone, Default)]
pub(crate) struct Frame {
    pub(crate) id: Option<String>,
    event: Option<String>,
    data: String,
    comment: bool,
}

impl Frame {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data is JSON: {e}: {self:?}"))
    }
    pub(crate) fn kind(&self) -> &str {
        self.event.as_deref().unwrap_or("")
    }
    pub(crate) fn pos(&self) -> (i64, i64) {
        let id = self.id.as_deref().expect("every event has an id");
        let (tx, pos) = id.split_once('.').expect("id is tx.pos");
        (tx.parse().unwrap(), pos.parse().unwrap())
    }
}

pub(crate) struct Stream {
    response: reqwest::Response,
    buf: String,
}

/// Opens the event stream of `env` as `token`, optionally resuming after `last_id`.
pub(crate) async fn open(app: &TestApp, env: &str, token: &str, last_id: Option<&str>) -> Stream {
    let mut request = app
        .client
        .get(app.url(&format!("/v1/environments/{env}/events")))
        .bearer_auth(token);
    if let Some(id) = last_id {
        request = request.header("Last-Event-ID", id);
    }
    open_with(request).await
}

/// Opens an event stream with `request` (which must open one).
pub(crate) async fn open_with(request: reqwest::RequestBuilder) -> Stream {
    let response = tokio::time::timeout(WAIT, request.send())
        .await
        .expect("the stream opens in time")
        .expect("request");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    Stream {
        response,
        buf: String::new(),
    }
}

impl Stream {
    /// The next frame (event or comment), or None if none arrives within `wait`.
    async fn frame_within(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(frame) = self.parse() {
                return Some(frame);
            }
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return None,
                Ok(chunk) => {
                    let chunk = chunk
                        .expect("stream read")
                        .expect("the stream does not end");
                    self.buf
                        .push_str(std::str::from_utf8(&chunk).expect("UTF-8"));
                }
            }
        }
    }

    /// Parses one complete frame from the buffer.
    fn parse(&mut self) -> Option<Frame> {
        self.buf = self.buf.replace("\r\n", "\n");
        let end = self.buf.find("\n\n")?;
        let block: String = self.buf[..end].to_string();
        self.buf.drain(..end + 2);
        let mut frame = Frame::default();
        let mut data = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                frame.comment = true;
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => frame.id = Some(value.to_string()),
                "event" => frame.event = Some(value.to_string()),
                "data" => data.push(value.to_string()),
                _ => {}
            }
        }
        frame.data = data.join("\n");
        if frame.comment && frame.event.is_none() && frame.id.is_none() && data.is_empty() {
            return Some(frame);
        }
        frame.comment = false;
        Some(frame)
    }

    /// The next event (heartbeats skipped); panics after 5 s without one.
    pub(crate) async fn next(&mut self) -> Frame {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self
                .frame_within(left)
                .await
                .expect("an event arrives within 5 s");
            if !frame.comment {
                return frame;
            }
        }
    }

    /// Events up to and including the first of type `marker`.
    async fn until(&mut self, marker: &str) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self.next().await;
            let done = f.kind() == marker;
            out.push(f);
            if done {
                return out;
            }
        }
    }

    /// Asserts that no event arrives within `wait`.
    async fn assert_quiet(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.frame_within(left).await {
                None => return,
                Some(f) if f.comment => {}
                Some(f) => panic!("no event expected, got {f:?}"),
            }
        }
    }
}

pub(crate) async fn stop(app: TestApp) {
    tokio::time::timeout(WAIT, app.stop())
        .await
        .expect("the server stops although event streams are open");
}

fn app_events(frames: &[Frame]) -> Vec<&Frame> {
    frames
        .iter()
        .filter(|f| f.kind().starts_with("Application"))
        .collect()
}

async fn stream_receives_new_events_with_envelopes(app: TestApp) {
    let alice = app.token("alice", false);
    let mut s = open(&app, "DEFAULT", &alice, None).await;
    let id = app.create_simple(&alice, "Streamed", None).await;
    app.put(
        &format!("applications/{id}"),
        &alice,
        json!({"name": "Streamed 2"}),
    )
    .await
    .assert_status(200);

    let created = s.next().await;
    let updated = s.next().await;
    assert_eq!(created.kind(), "ApplicationCreated");
    assert_eq!(updated.kind(), "ApplicationUpdated");
    assert!(created.pos() < updated.pos(), "ids increase");
    let stored = app.stream(&format!("application-{id}")).await;
    for (frame, event) in [&created, &updated].into_iter().zip(&stored) {
        let env = frame.json();
        assert_eq!(env.as_object().unwrap().len(), 9, "{env}");
        assert_eq!(
            frame.id.as_deref(),
            Some(event.position.to_string().as_str())
        );
        assert_eq!(env["event_id"], event.event_id.to_string());
        assert_eq!(env["stream_id"], format!("application-{id}"));
        assert_eq!(env["stream_type"], "application");
        assert_eq!(env["version"], event.version);
        assert_eq!(env["type"], event.event_type);
        assert_eq!(env["schema_version"], 1);
        assert!(env["at"].is_string());
        assert_eq!(env["metadata"]["environment"], "DEFAULT");
        assert_eq!(env["metadata"]["actor"], "alice");
        assert_eq!(env["data"], event.data);
    }
    assert_eq!(created.json()["version"], 1);
    assert_eq!(updated.json()["version"], 2);
    assert_eq!(created.json()["data"]["name"], "Streamed");
    s.assert_quiet(Duration::from_millis(200)).await;
    stop(app).await;
}

async fn resuming_with_last_event_id_loses_and_repeats_nothing(app: TestApp) {
    let alice = app.token("alice", false);
    // A reference stream that stays connected throughout.
    let mut reference = open(&app, "DEFAULT", &alice, None).await;
    let mut first = open(&app, "DEFAULT", &alice, None).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(
            app.create_simple(&alice, &format!("Resume {i}"), None)
                .await,
        );
    }
    for (i, id) in ids.iter().take(3).enumerate() {
        app.put(
            &format!("applications/{id}"),
            &alice,
            json!({"name": format!("Resumed {i}")}),
        )
        .await
        .assert_status(200);
    }
    // 7 events committed; read 5 and hang up.
    let mut received = Vec::new();
    for _ in 0..5 {
        received.push(first.next().await);
    }
    drop(first);
    let last = received.last().unwrap().id.clone().unwrap();
    for i in 0..3 {
        app.create_simple(&alice, &format!("Later {i}"), None).await;
    }
    let mut resumed = open(&app, "DEFAULT", &alice, Some(&last)).await;
    for _ in 0..5 {
        received.push(resumed.next().await);
    }
    resumed.assert_quiet(Duration::from_millis(300)).await;

    let mut expected = Vec::new();
    for _ in 0..10 {
        expected.push(reference.next().await);
    }
    let key = |f: &Frame| (f.id.clone(), f.json()["event_id"].clone());
    assert_eq!(
        received.iter().map(key).collect::<Vec<_>>(),
        expected.iter().map(key).collect::<Vec<_>>(),
        "the resumed stream continues exactly after the last id received"
    );
    for pair in received.windows(2) {
        assert!(pair[0].pos() < pair[1].pos(), "ids strictly increase");
    }
    let kinds: Vec<&str> = received.iter().map(Frame::kind).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ApplicationCreated").count(),
        7
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "ApplicationUpdated").count(),
        3
    );
    stop(app).await;
}

async fn callers_see_only_what_they_may(app: TestApp) {
    app.create_environment("other").await;
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let carol = app.admin_of("carol", &["DEFAULT"]);
    let olga = app.admin_of("olga", &["other"]);
    let mut alice_s = open(&app, "DEFAULT", &alice, None).await;
    let mut bob_s = open(&app, "DEFAULT", &bob, None).await;
    let mut carol_s = open(&app, "DEFAULT", &carol, None).await;
    let mut olga_default = open(&app, "DEFAULT", &olga, None).await;
    let mut olga_other = open(&app, "other", &olga, None).await;

    let private = app.create_simple(&alice, "Private", None).await;
    app.put(
        &format!("applications/{private}"),
        &alice,
        json!({"name": "Private 2"}),
    )
    .await
    .assert_status(200);
    let bobs = app.create_simple(&bob, "Bob's", None).await;
    let olgas = app.create_simple_in("other", &olga, "Olga's").await;
    // Visible to everyone in DEFAULT: the end marker of every DEFAULT stream.
    app.enable_dcr().await;

    let stream_of = |f: &Frame| f.json()["stream_id"].as_str().unwrap().to_string();
    let private_stream = format!("application-{private}");
    let bobs_stream = format!("application-{bobs}");

    let seen = alice_s.until("ClientRegistrationSettingsUpdated").await;
    let apps: Vec<String> = app_events(&seen).into_iter().map(stream_of).collect();
    assert_eq!(
        apps,
        vec![private_stream.clone(), private_stream.clone()],
        "alice sees her own application only"
    );

    let seen = bob_s.until("ClientRegistrationSettingsUpdated").await;
    let apps: Vec<String> = app_events(&seen).into_iter().map(stream_of).collect();
    assert_eq!(
        apps,
        vec![bobs_stream.clone()],
        "bob sees none of alice's events"
    );
    for f in &seen {
        if f.kind() == "UserFirstSeen" {
            assert_eq!(
                f.json()["data"]["user"],
                "bob",
                "only his own first sighting"
            );
        }
    }

    let seen = carol_s.until("ClientRegistrationSettingsUpdated").await;
    let apps: Vec<String> = app_events(&seen).into_iter().map(stream_of).collect();
    assert_eq!(
        apps,
        vec![
            private_stream.clone(),
            private_stream.clone(),
            bobs_stream.clone()
        ],
        "an administrator of the environment sees every application"
    );
    assert!(seen
        .iter()
        .all(|f| f.json()["metadata"]["environment"] == "DEFAULT"));

    let seen = olga_default
        .until("ClientRegistrationSettingsUpdated")
        .await;
    assert!(
        app_events(&seen).is_empty(),
        "an administrator of another environment sees no application of DEFAULT: {seen:?}"
    );
    for f in &seen {
        assert_ne!(f.kind(), "UserFirstSeen", "nor its users");
    }

    let seen = olga_other.until("ApplicationCreated").await;
    for f in &seen {
        assert_eq!(f.json()["metadata"]["environment"], "other", "{f:?}");
    }
    assert_eq!(
        stream_of(seen.last().unwrap()),
        format!("application-{olgas}")
    );
    olga_other.assert_quiet(Duration::from_millis(200)).await;
    stop(app).await;
}

async fn members_see_events_while_they_are_members(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let id = app.create_simple(&alice, "Team", None).await;
    let path = format!("applications/{id}");
    let members = format!("{path}/members");
    app.put(&path, &alice, json!({"name": "Team 1"}))
        .await
        .assert_status(200);
    let mut bob_s = open(&app, "DEFAULT", &bob, None).await;
    let app_event = |f: &Frame| {
        let e = f.json();
        assert_eq!(e["stream_id"], format!("application-{id}"));
        (f.kind().to_string(), e["version"].as_i64().unwrap())
    };
    // Added: bob sees his addition and what follows.
    app.post(&members, &alice, json!({"user": "bob", "role": "USER"}))
        .await
        .assert_status(201);
    assert_eq!(app_event(&bob_s.next().await), ("MemberAdded".into(), 3));
    app.put(&path, &alice, json!({"name": "Team 2"}))
        .await
        .assert_status(200);
    assert_eq!(
        app_event(&bob_s.next().await),
        ("ApplicationUpdated".into(), 4)
    );
    // Notification settings (an e-mail address) are not a USER member's to read: bob's stream
    // skips them, the owner's has them.
    let mut alice_s = open(&app, "DEFAULT", &alice, None).await;
    app.put(
        &format!("{path}/notifications"),
        &alice,
        json!({"hooks": ["SUBSCRIPTION_ACCEPTED"], "email": "alice@example.org"}),
    )
    .await
    .assert_status(200);
    app.put(&path, &alice, json!({"name": "Team 2b"}))
        .await
        .assert_status(200);
    assert_eq!(
        app_event(&alice_s.next().await),
        ("NotificationSettingsUpdated".into(), 5)
    );
    assert_eq!(
        app_event(&bob_s.next().await),
        ("ApplicationUpdated".into(), 6),
        "a USER member does not see notification settings"
    );
    // Removed: no more of the application's events.
    app.delete(&format!("{members}/bob"), &alice)
        .await
        .assert_status(204);
    app.put(&path, &alice, json!({"name": "Team 3"}))
        .await
        .assert_status(200);
    app.enable_dcr().await;
    let seen = bob_s.until("ClientRegistrationSettingsUpdated").await;
    assert!(
        app_events(&seen).is_empty() && seen.iter().all(|f| f.kind().starts_with("Client")),
        "a former member sees nothing more of the application: {seen:?}"
    );
    stop(app).await;
}

async fn bad_last_event_id_is_422(app: TestApp) {
    let alice = app.token("alice", false);
    for bad in ["abc", "1", "1.x", "-1.5"] {
        let r = app
            .send(
                app.client
                    .get(app.url("events"))
                    .bearer_auth(&alice)
                    .header("Last-Event-ID", bad),
            )
            .await;
        r.assert_invalid(&[("Last-Event-ID", "last_event_id.invalid")]);
    }
    let r = app.send(app.client.get(app.url("events"))).await;
    r.assert_status(401);
    stop(app).await;
}

on_both!(
    stream_receives_new_events_with_envelopes,
    resuming_with_last_event_id_loses_and_repeats_nothing,
    callers_see_only_what_they_may,
    members_see_events_while_they_are_members,
    bad_last_event_id_is_422,
);

fn fast_heartbeats(config: &mut appreg_config::Config) {
    config.api.sse_heartbeat_ms = 100;
}

async fn idle_streams_get_heartbeats(app: TestApp) {
    let alice = app.token("alice", false);
    let mut s = open(&app, "DEFAULT", &alice, None).await;
    let mut comments = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while comments < 3 {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let f = s
            .frame_within(left)
            .await
            .expect("heartbeats arrive every 100 ms");
        assert!(f.comment, "only heartbeats on an idle stream: {f:?}");
        comments += 1;
    }
    // Heartbeats do not disturb events.
    app.create_simple(&alice, "Beating", None).await;
    assert_eq!(s.next().await.kind(), "ApplicationCreated");
    stop(app).await;
}

on_both_with!(fast_heartbeats; idle_streams_get_heartbeats);
