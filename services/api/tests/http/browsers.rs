//! Browsers on another origin: CORS (preflights, exposed headers, origins refused before any
//! handler runs) and event-stream tickets (`POST /events/_ticket`, `GET /events?ticket=`), with
//! raw requests setting the headers a browser would.

use crate::events::open_with;
use crate::helpers::{Resp, TestApp};
use crate::on_both_with;
use appreg_config::Config;
use appreg_eventstore::Database;
use serde_json::json;
use std::time::Duration;

const PORTAL: &str = "https://portal.example.com";
const EVIL: &str = "https://evil.example";

fn allow_portal(config: &mut Config) {
    config.api.cors_allowed_origins = vec![PORTAL.into()];
}

fn short_tickets(config: &mut Config) {
    allow_portal(config);
    config.api.sse_ticket_ttl_ms = 300;
}

async fn preflight(app: &TestApp, origin: &str, path: &str) -> Resp {
    app.send(
        app.client
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type, idempotency-key",
            ),
    )
    .await
}

fn list(r: &Resp, name: &str) -> Vec<String> {
    r.header(name)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

async fn preflights(app: TestApp) {
    // An allowed origin: 204 with the methods and headers, whatever the path.
    for path in ["applications", "applications/x/members", "/v1/environments"] {
        let r = preflight(&app, PORTAL, path).await;
        r.assert_status(204);
        assert_eq!(
            r.header("access-control-allow-origin").as_deref(),
            Some(PORTAL)
        );
        let methods = list(&r, "access-control-allow-methods");
        for m in ["get", "post", "put", "delete"] {
            assert!(methods.contains(&m.to_string()), "{m} in {methods:?}");
        }
        let headers = list(&r, "access-control-allow-headers");
        for h in [
            "authorization",
            "content-type",
            "x-consistency-token",
            "last-event-id",
            "idempotency-key",
        ] {
            assert!(headers.contains(&h.to_string()), "{h} in {headers:?}");
        }
        assert!(list(&r, "vary").contains(&"origin".to_string()));
        assert_eq!(r.header("access-control-allow-credentials"), None);
    }
    // Another origin: no CORS header at all (and no 204).
    let r = preflight(&app, EVIL, "applications").await;
    assert_ne!(r.status, 204);
    for h in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-expose-headers",
    ] {
        assert_eq!(r.header(h), None, "{h} for a refused origin");
    }
    // An origin that differs only by scheme or port is another origin.
    for other in [
        "http://portal.example.com",
        "https://portal.example.com:8443",
    ] {
        let r = preflight(&app, other, "applications").await;
        assert_eq!(r.header("access-control-allow-origin"), None, "{other}");
    }
    app.stop().await;
}

async fn exposed_headers(app: TestApp) {
    let alice = app.token("alice", false);
    let r = app
        .send(
            app.request(reqwest::Method::POST, "applications", Some(&alice))
                .header("Origin", PORTAL)
                .json(&json!({"name": "From the portal", "type": "simple"})),
        )
        .await;
    r.assert_status(201);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    let exposed = list(&r, "access-control-expose-headers");
    for h in ["x-consistency-token", "x-request-id", "location"] {
        assert!(exposed.contains(&h.to_string()), "{h} in {exposed:?}");
        assert!(r.header(h).is_some(), "the response has {h}");
    }
    // A read from the portal names it too; a problem as well.
    let r = app
        .send(
            app.request(reqwest::Method::GET, "applications", Some(&alice))
                .header("Origin", PORTAL),
        )
        .await;
    r.assert_status(200);
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    let r = app
        .send(
            app.request(reqwest::Method::GET, "applications", None)
                .header("Origin", PORTAL),
        )
        .await;
    r.assert_problem(401, "auth.unauthenticated");
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some(PORTAL)
    );
    // Another origin's read is answered, without CORS headers (the browser hides it).
    let r = app
        .send(
            app.request(reqwest::Method::GET, "applications", Some(&alice))
                .header("Origin", EVIL),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-expose-headers"), None);
    assert!(
        list(&r, "vary").contains(&"origin".to_string()),
        "caches keep one answer per origin"
    );
    app.stop().await;
}

async fn other_origins_change_nothing(app: TestApp) {
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Mine", None).await;
    let before = app.event_count().await;
    let refused = [
        app.request(reqwest::Method::POST, "applications", Some(&alice))
            .json(&json!({"name": "Forged", "type": "simple"})),
        app.request(
            reqwest::Method::PUT,
            &format!("applications/{id}"),
            Some(&alice),
        )
        .json(&json!({"name": "Forged"})),
        app.request(
            reqwest::Method::DELETE,
            &format!("applications/{id}"),
            Some(&alice),
        ),
        app.request(reqwest::Method::POST, "events/_ticket", Some(&alice)),
    ];
    for request in refused {
        for origin in [EVIL, "null", "http://portal.example.com"] {
            let r = app
                .send(request.try_clone().unwrap().header("Origin", origin))
                .await;
            r.assert_problem(403, "cors.origin_denied");
            assert_eq!(r.header("access-control-allow-origin"), None);
        }
    }
    app.assert_unchanged(before, "requests from refused origins")
        .await;
    assert_eq!(
        app.get(&format!("applications/{id}"), &alice).await.body["name"],
        "Mine"
    );
    // Without an Origin (not a browser), from the api's own origin, or from an allowed one: as
    // usual.
    let own = app.base.clone();
    for origin in [None, Some(own.as_str()), Some(PORTAL)] {
        let mut request = app
            .request(reqwest::Method::POST, "applications", Some(&alice))
            .json(&json!({"name": "Allowed", "type": "simple"}));
        if let Some(o) = origin {
            request = request.header("Origin", o);
        }
        app.send(request).await.assert_status(201);
    }
    app.assert_appended(before, 3, "three allowed creates")
        .await;
    app.stop().await;
}

async fn ticket(app: &TestApp, env: &str, token: &str) -> String {
    let r = app
        .post(
            &format!("/v1/environments/{env}/events/_ticket"),
            token,
            json!({}),
        )
        .await;
    r.assert_status(200);
    let expires_in = r.body["expires_in"].as_u64().expect("expires_in");
    assert!((1..=60).contains(&expires_in), "{}", r.body);
    let ticket = r.body["ticket"].as_str().expect("ticket").to_string();
    // 256 random bits, base64url.
    assert!(ticket.len() >= 43, "{ticket}");
    ticket
}

fn with_ticket(app: &TestApp, env: &str, ticket: &str) -> reqwest::RequestBuilder {
    app.client
        .get(app.url(&format!("/v1/environments/{env}/events")))
        .query(&[("ticket", ticket)])
}

async fn tickets_open_a_stream_once(app: TestApp) {
    let alice = app.token("alice", false);
    let t = ticket(&app, "DEFAULT", &alice).await;
    let mut stream = open_with(with_ticket(&app, "DEFAULT", &t).header("Origin", PORTAL)).await;
    let id = app
        .create_simple(&alice, "Seen through a ticket", None)
        .await;
    let frame = stream.next().await;
    assert_eq!(frame.kind(), "ApplicationCreated");
    assert_eq!(frame.json()["stream_id"], format!("application-{id}"));
    // Used: refused, without saying why.
    let again = app.send(with_ticket(&app, "DEFAULT", &t)).await;
    again.assert_problem(401, "auth.ticket_invalid");
    assert!(!again.detail().contains("used"), "{}", again.body);
    // Unknown: the same answer.
    let unknown = app
        .send(with_ticket(
            &app,
            "DEFAULT",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ))
        .await;
    unknown.assert_problem(401, "auth.ticket_invalid");
    assert_eq!(unknown.detail(), again.detail());
    // Only the hash is stored.
    let db = &app.db;
    let sql = "SELECT hash FROM api_sse_tickets";
    let hashes: Vec<String> = match db {
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_all(pool).await,
    }
    .unwrap();
    assert_eq!(hashes.len(), 1);
    assert_eq!(hashes[0].len(), 64);
    assert_ne!(hashes[0], t);
    app.stop().await;
}

/// A ticket carries its caller: a user's ticket shows what the user may see, not more.
async fn tickets_are_bound_to_the_caller(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let t = ticket(&app, "DEFAULT", &bob).await;
    let mut stream = open_with(with_ticket(&app, "DEFAULT", &t)).await;
    app.create_simple(&alice, "Alice's", None).await;
    let bobs = app.create_simple(&bob, "Bob's", None).await;
    let frame = stream.next().await;
    assert_eq!(
        frame.json()["stream_id"],
        format!("application-{bobs}"),
        "alice's application is not bob's to see"
    );
    app.stop().await;
}

async fn tickets_expire(app: TestApp) {
    let alice = app.token("alice", false);
    let t = ticket(&app, "DEFAULT", &alice).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    app.send(with_ticket(&app, "DEFAULT", &t))
        .await
        .assert_problem(401, "auth.ticket_invalid");
    // Issuing another deletes the expired row.
    let fresh = ticket(&app, "DEFAULT", &alice).await;
    let sql = "SELECT COUNT(*) FROM api_sse_tickets";
    let n: i64 = match &app.db {
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
    }
    .unwrap();
    assert_eq!(n, 1, "the expired ticket is deleted");
    open_with(with_ticket(&app, "DEFAULT", &fresh)).await;
    app.stop().await;
}

async fn tickets_stay_in_their_environment(app: TestApp) {
    app.create_environment_http("team").await;
    let admin = app.token("root", true);
    let in_default = ticket(&app, "DEFAULT", &admin).await;
    app.send(with_ticket(&app, "team", &in_default))
        .await
        .assert_problem(401, "auth.ticket_invalid");
    let in_team = ticket(&app, "team", &admin).await;
    app.send(with_ticket(&app, "DEFAULT", &in_team))
        .await
        .assert_problem(401, "auth.ticket_invalid");
    app.stop().await;
}

async fn tickets_open_nothing_else(app: TestApp) {
    let alice = app.token("alice", false);
    let t = ticket(&app, "DEFAULT", &alice).await;
    for (method, path) in [
        (reqwest::Method::GET, "applications"),
        (reqwest::Method::GET, "settings/client-registration"),
        (reqwest::Method::GET, "users"),
        (reqwest::Method::GET, "/v1/environments"),
        (reqwest::Method::POST, "events/_ticket"),
    ] {
        let request = app.request(method, path, None).query(&[("ticket", &t)]);
        app.send(request)
            .await
            .assert_problem(401, "auth.unauthenticated");
    }
    // None of those consumed it.
    open_with(with_ticket(&app, "DEFAULT", &t)).await;
    app.stop().await;
}

/// The api's logs and spans (everything of the api's crates, the HTTP layers and the server, at
/// every level) never hold a ticket: not as issued, not in the stream's URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_never_logged() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "appreg_api=trace,appreg_auth=trace,appreg_telemetry=trace,tower_http=trace,axum=trace,hyper=trace",
        ))
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::NEW)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber)
        .expect("this test binary's only global subscriber");
    let app = crate::helpers::spawn_with(crate::helpers::Backend::Sqlite, allow_portal).await;
    let alice = app.token("alice", false);
    let t = ticket(&app, "DEFAULT", &alice).await;
    let mut stream = open_with(with_ticket(&app, "DEFAULT", &t)).await;
    app.create_simple(&alice, "Logged", None).await;
    stream.next().await;
    app.send(with_ticket(&app, "DEFAULT", &t))
        .await
        .assert_problem(401, "auth.ticket_invalid");
    drop(stream);
    app.stop().await;
    let logs = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
    assert!(
        logs.contains("an event-stream ticket is issued") && logs.contains("/events"),
        "the logs were captured"
    );
    assert!(!logs.contains(&t), "a ticket in the logs");
    assert!(!logs.contains("ticket="), "a query string in the logs");
}

on_both_with!(allow_portal;
    preflights,
    exposed_headers,
    other_origins_change_nothing,
    tickets_open_a_stream_once,
    tickets_are_bound_to_the_caller,
    tickets_stay_in_their_environment,
    tickets_open_nothing_else,
);
on_both_with!(short_tickets; tickets_expire);
