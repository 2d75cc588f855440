//! `appreg notifier` end to end (issue #17): the real binary delivering to real receivers
//! (`tests/webhooks/receiver.py`) that verify every signature with the Standard Webhooks
//! reference library (`standardwebhooks` from PyPI, pinned in `tests/webhooks/requirements.txt`,
//! installed by this test into a cached virtualenv), over a fresh PostgreSQL database, with the
//! api in process and the production path: a relay (in process) publishing the log to a private
//! nats-server, the notifier following its durable JetStream consumer.
//!
//! Needs PostgreSQL, `nats-server` and python3 with venv and pip; fails (never skips) without
//! them.

use appreg_auth::DevKey;
use appreg_eventstore::{Database, LogPosition};
use appreg_test_support::app::TestApi;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod erasure;
mod outbound;
mod readiness;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The interpreter of `tests/<dir>`'s pinned tools.
fn python(dir: &str) -> PathBuf {
    appreg_test_support::python::venv(
        &repo().join("tests").join(dir).join("requirements.txt"),
        dir,
        "the notifier test needs python3 with venv and pip (Debian: apt-get install python3-venv python3-pip)",
    )
}

/// A receiver process and what it reported.
struct Receiver {
    child: Child,
    port: u16,
    records: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    fn start(mode: &str) -> Receiver {
        let mut child = Command::new(python("webhooks"))
            .arg(repo().join("tests/webhooks/receiver.py"))
            .arg(mode)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the receiver");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let port = first["port"].as_u64().unwrap() as u16;
        let records = Arc::new(Mutex::new(Vec::new()));
        let sink = records.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        Receiver {
            child,
            port,
            records,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn give_secret(&mut self, secret: &str) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{secret}").unwrap();
        stdin.flush().unwrap();
    }

    fn records(&self) -> Vec<Value> {
        self.records.lock().unwrap().clone()
    }

    /// A `gone` receiver answers the requests it holds, and every later one at once.
    fn release(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "release").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct System {
    api: TestApi,
    db: Database,
    url: String,
    key: DevKey,
    client: reqwest::Client,
    master_key: String,
    /// The production path: a relay (in process) publishes the log to this server, the
    /// notifier consumes its durable consumer.
    nats: appreg_test_support::nats::NatsServer,
    relay: tokio_util::sync::CancellationToken,
}

impl System {
    async fn start() -> System {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        let db = Database::connect(&url, 8).await.expect("database");
        let mut config = appreg_test_support::app::config("notifier");
        config.api.allow_http_webhooks = Some(true);
        let (key, _) = appreg_test_support::tokens::fresh_key();
        let api = TestApi::start(&db, &config, &key).await;
        let nats = appreg_test_support::nats::NatsServer::start();
        let servers = appreg_config::NatsServers::parse(&nats.url(), None).unwrap();
        let relay = appreg_relay::service::build(
            &config,
            &appreg_worker::service::Start::shared(&db),
            &servers,
        )
        .await
        .expect("the relay");
        let relay_stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(relay.run(relay_stop.clone()));
        use secrecy::ExposeSecret;
        let master_key = config
            .secrets_master_key
            .as_ref()
            .unwrap()
            .expose_secret()
            .to_string();
        System {
            api,
            db,
            url,
            key,
            client: reqwest::Client::new(),
            master_key,
            nats,
            relay: relay_stop,
        }
    }

    fn token(&self, sub: &str, admin: bool) -> String {
        appreg_test_support::tokens::token(&self.key, sub, admin, 3600)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self
            .client
            .request(
                method,
                format!("{}/v1/environments/DEFAULT/{path}", self.api.base),
            )
            .bearer_auth(token);
        if let Some(body) = body {
            r = r.json(&body);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Renames application `id` as `owner` (an `ApplicationUpdated`); asserts 200.
    async fn rename(&self, owner: &str, id: &str, name: &str) {
        let (status, body) = self
            .call(
                reqwest::Method::PUT,
                &format!("applications/{id}"),
                owner,
                Some(json!({"name": name})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// The first page of environment endpoint `hook`'s deliveries, as `admin` reads it.
    async fn deliveries(&self, admin: &str, hook: &str) -> Vec<Value> {
        let (_, page) = self
            .call(
                reqwest::Method::GET,
                &format!("webhooks/{hook}/deliveries"),
                admin,
                None,
            )
            .await;
        page["items"].as_array().cloned().unwrap_or_default()
    }

    /// A simple application "Shop" of `owner`, with an endpoint on a fresh `fast` receiver that
    /// holds its signing secret: (the application's id, the receiver, the created endpoint).
    async fn app_with_endpoint(&self, owner: &str) -> (String, Receiver, Value) {
        let post = reqwest::Method::POST;
        let (status, app) = self
            .call(
                post.clone(),
                "applications",
                owner,
                Some(json!({"name": "Shop", "type": "simple"})),
            )
            .await;
        assert_eq!(status, 201, "{app}");
        let id = app["id"].as_str().unwrap().to_string();
        let mut rx = Receiver::start("fast");
        let (status, hook) = self
            .call(
                post,
                &format!("applications/{id}/webhooks"),
                owner,
                Some(json!({"url": rx.url()})),
            )
            .await;
        assert_eq!(status, 201, "{hook}");
        rx.give_secret(hook["secret"].as_str().unwrap());
        (id, rx, hook)
    }

    /// `appreg notifier` as a process, with quick retries and a short timeout.
    fn notifier(&self) -> Child {
        self.notifier_with(&[])
    }

    fn notifier_with(&self, env: &[(&str, &str)]) -> Child {
        self.notifier_args(&[], env)
    }

    /// `appreg notifier` with more arguments (`--metrics-listen`) and environment variables
    /// (which win over the settings above).
    fn notifier_args(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        Command::new(env!("CARGO_BIN_EXE_appreg"))
            .arg("notifier")
            .args(args)
            .env("APPREG_DATABASE_URL", &self.url)
            .env("APPREG_NATS_URL", self.nats.url())
            .env("APPREG_SECRETS_MASTER_KEY", &self.master_key)
            .env("APPREG_NOTIFIER__TIMEOUT_MS", "1500")
            .env("APPREG_NOTIFIER__RETRY_FIRST_MS", "200")
            .env("APPREG_NOTIFIER__RETRY_MAX_MS", "1000")
            .env("APPREG_NOTIFIER__POLL_MS", "100")
            // What a SIGKILLed notifier had pulled is redelivered soon.
            .env("APPREG_NOTIFIER__ACK_WAIT_MS", "2000")
            // A test's own settings win over these.
            .envs(env.iter().copied())
            .env("APPREG_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("appreg notifier")
    }

    /// Every event of the log, in log order.
    async fn log(&self) -> Vec<appreg_eventstore::StoredEvent> {
        let store = self.db.event_store().await.unwrap();
        let mut out = Vec::new();
        let mut after = LogPosition::START;
        loop {
            let page = store.read_log(after, 1000).await.unwrap();
            let Some(last) = page.last() else { return out };
            after = last.position;
            out.extend(page);
        }
    }

    async fn statuses(&self) -> BTreeMap<String, i64> {
        let Database::Postgres(pool) = &self.db else {
            unreachable!()
        };
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM webhook_deliveries GROUP BY status")
                .fetch_all(pool)
                .await
                .unwrap();
        rows.into_iter().collect()
    }
}

/// Item: three receivers (fast, 500 three times, hanging) each get every event once after
/// de-duplication by `webhook-id`, in per-application order, every signature verified by the
/// reference library; the notifier SIGKILLed mid-delivery loses nothing, and a delivery sent
/// twice carries the same `webhook-id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_receivers_get_every_event_once_in_order_across_a_sigkill() {
    let system = System::start().await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);
    let mut receivers: Vec<(&str, Receiver)> = ["fast", "fail3", "hang"]
        .into_iter()
        .map(|mode| (mode, Receiver::start(mode)))
        .collect();
    let mut hooks = Vec::new();
    for (_, receiver) in &mut receivers {
        let (status, created) = system
            .call(
                reqwest::Method::POST,
                "webhooks",
                &admin,
                Some(json!({"url": receiver.url()})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        receiver.give_secret(created["secret"].as_str().unwrap());
        hooks.push(created["id"].as_str().unwrap().to_string());
    }
    // Every event from the last endpoint's creation on goes to all three.
    let from = system.log().await.len();

    let mut notifier = system.notifier();
    let mut apps = Vec::new();
    for n in 0..3 {
        let (status, app) = system
            .call(
                reqwest::Method::POST,
                "applications",
                &alice,
                Some(json!({"name": format!("App {n}"), "type": "simple"})),
            )
            .await;
        assert_eq!(status, 201, "{app}");
        apps.push(app["id"].as_str().unwrap().to_string());
    }
    let update = |round: usize| {
        let system = &system;
        let alice = &alice;
        let apps = &apps;
        async move {
            let updates = apps.iter().map(|id| async move {
                let path = format!("applications/{id}");
                let body = json!({"name": format!("App {id} round {round}")});
                system
                    .call(reqwest::Method::PUT, &path, alice, Some(body))
                    .await
            });
            for (status, body) in futures::future::join_all(updates).await {
                assert_eq!(status, 200, "{body}");
            }
        }
    };
    for round in 0..3 {
        update(round).await;
    }
    // Mid-delivery: the hanging receiver holds requests, the failing one is being retried.
    let started = Instant::now();
    while receivers[2].1.records().is_empty() && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !receivers[2].1.records().is_empty(),
        "the notifier delivers nothing"
    );
    notifier.kill().expect("SIGKILL the notifier");
    notifier.wait().unwrap();
    for round in 3..5 {
        update(round).await;
    }
    let mut notifier = system.notifier();

    let events: Vec<_> = system.log().await.split_off(from);
    let expected: BTreeSet<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = receivers.iter().all(|(_, r)| {
            let got: BTreeSet<String> = r
                .records()
                .iter()
                .filter(|x| x["status"] == json!(200))
                .filter_map(|x| x["event_id"].as_str().map(String::from))
                .collect();
            expected.is_subset(&got)
        });
        if done {
            break;
        }
        if Instant::now() >= deadline {
            let js =
                async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap());
            let stream = js.get_stream("APPREG_EVENTS").await.unwrap();
            let consumer = stream.consumer_info("appreg-notifier").await;
            panic!(
                "not every event was delivered: {:?}; stream {:?}; consumer {consumer:?}; log {}",
                system.statuses().await,
                stream.cached_info().state,
                system.log().await.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every delivery ends DELIVERED (an answer the notifier has not recorded yet is in flight).
    eventually("every delivery is recorded as delivered", || {
        let system = &system;
        async move {
            let statuses = system.statuses().await;
            statuses.keys().all(|s| s == "DELIVERED")
        }
    })
    .await;
    // The events came through the notifier's durable JetStream consumer, every message of the
    // relay acknowledged.
    let js = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap());
    let mut stream = js.get_stream("APPREG_EVENTS").await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    assert!(last >= events.len() as u64);
    eventually("the notifier's consumer acknowledged every message", || {
        let stream = stream.clone();
        async move {
            let info = stream.consumer_info("appreg-notifier").await.unwrap();
            info.ack_floor.stream_sequence >= last && info.num_pending == 0
        }
    })
    .await;
    notifier.kill().unwrap();
    notifier.wait().unwrap();

    for ((mode, receiver), hook) in receivers.iter().zip(&hooks) {
        let records = receiver.records();
        assert!(
            records.iter().all(|r| r.get("bad").is_none()),
            "{mode}: a signature did not verify: {records:?}"
        );
        // One webhook-id per event, the one derived from (endpoint, event), on every attempt.
        let mut ids: HashMap<String, BTreeSet<String>> = HashMap::new();
        for r in &records {
            ids.entry(r["event_id"].as_str().unwrap().to_string())
                .or_default()
                .insert(r["id"].as_str().unwrap().to_string());
        }
        for (event, seen) in &ids {
            assert_eq!(
                seen,
                &BTreeSet::from([appreg_notify::signature::webhook_id(hook, event)]),
                "{mode}: event {event}"
            );
        }
        // Each accepted once after de-duplication; none outside the environment's log.
        let accepted: Vec<&Value> = records
            .iter()
            .filter(|r| r["status"] == json!(200))
            .collect();
        let unique: BTreeSet<&str> = accepted.iter().map(|r| r["id"].as_str().unwrap()).collect();
        let all: BTreeSet<String> = system
            .log()
            .await
            .iter()
            .map(|e| e.event_id.to_string())
            .collect();
        assert!(accepted
            .iter()
            .all(|r| all.contains(r["event_id"].as_str().unwrap())));
        assert!(unique.len() >= expected.len(), "{mode}");
        // Per-application order: the first acceptance of each event of a stream follows its
        // versions.
        let mut first_seen: BTreeSet<&str> = BTreeSet::new();
        let mut last_version: HashMap<&str, i64> = HashMap::new();
        for r in &accepted {
            if !first_seen.insert(r["id"].as_str().unwrap()) {
                continue;
            }
            let stream = r["stream_id"].as_str().unwrap();
            let version = r["version"].as_i64().unwrap();
            if let Some(before) = last_version.insert(stream, version) {
                assert!(
                    version > before,
                    "{mode}: {stream} version {version} after {before}"
                );
            }
        }
        if *mode != "fast" {
            assert!(
                records.iter().any(|r| r["status"] != json!(200)),
                "{mode}: never failed"
            );
        }
    }
    system.relay.cancel();
    system.api.shutdown.cancel();
}

/// Waits (at most 30 s) until `check` holds.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut check: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Items: an application's endpoint never receives what a member's role may not read; a 410
/// disables the endpoint (`WebhookDisabled`, by the notifier) and fails what it had pending; a
/// receiver's answer is kept to 1 KiB; the delivery log and a manual retry (same `webhook-id`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_endpoints_gone_endpoints_and_the_delivery_log() {
    let system = System::start().await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);
    let bob = system.token("bob", false);
    let post = reqwest::Method::POST;
    let put = reqwest::Method::PUT;
    let get = reqwest::Method::GET;
    let (_, app) = system
        .call(
            post.clone(),
            "applications",
            &alice,
            Some(json!({"name": "Shop", "type": "simple"})),
        )
        .await;
    let id = app["id"].as_str().unwrap().to_string();
    let members = format!("applications/{id}/members");
    let (status, _) = system
        .call(post.clone(), &members, &alice, Some(json!({"user": "bob"})))
        .await;
    assert_eq!(status, 201);

    let mut app_rx = Receiver::start("fast");
    let mut gone_rx = Receiver::start("gone");
    let mut big_rx = Receiver::start("big");
    let (status, hook) = system
        .call(
            post.clone(),
            &format!("applications/{id}/webhooks"),
            &alice,
            Some(json!({"url": app_rx.url()})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    app_rx.give_secret(hook["secret"].as_str().unwrap());
    let app_hook = hook["id"].as_str().unwrap().to_string();
    let mut env_hooks = Vec::new();
    for rx in [&mut gone_rx, &mut big_rx] {
        let (status, hook) = system
            .call(
                post.clone(),
                "webhooks",
                &admin,
                Some(json!({"url": rx.url(), "event_types": ["ApplicationUpdated"]})),
            )
            .await;
        assert_eq!(status, 201, "{hook}");
        rx.give_secret(hook["secret"].as_str().unwrap());
        env_hooks.push(hook["id"].as_str().unwrap().to_string());
    }
    let (gone_hook, big_hook) = (env_hooks[0].clone(), env_hooks[1].clone());

    // The gone endpoint holds its answer (below), longer than the usual timeout.
    let mut notifier = system.notifier_with(&[("APPREG_NOTIFIER__TIMEOUT_MS", "60000")]);
    // A member's e-mail address (NOTIFICATION[R]: not for the USER member bob), then changes
    // every role may read.
    let (status, _) = system
        .call(
            put.clone(),
            &format!("applications/{id}/notifications"),
            &alice,
            Some(json!({"hooks": ["SUBSCRIPTION_ACCEPTED"], "email": "alice@example.com"})),
        )
        .await;
    assert_eq!(status, 200);
    for name in ["Shop 2", "Shop 3"] {
        system.rename(&alice, &id, name).await;
    }
    let (status, _) = system
        .call(
            post.clone(),
            &members,
            &alice,
            Some(json!({"user": "carol"})),
        )
        .await;
    assert_eq!(status, 201);

    eventually("the application's endpoint gets the member added", || {
        let done = app_rx
            .records()
            .iter()
            .any(|r| r["type"] == json!("MemberAdded"));
        async move { done }
    })
    .await;
    let types: Vec<String> = app_rx
        .records()
        .iter()
        .map(|r| r["type"].as_str().unwrap().to_string())
        .collect();
    assert!(
        types.iter().filter(|t| *t == "ApplicationUpdated").count() >= 2,
        "{types:?}"
    );
    assert!(
        !types.iter().any(|t| t.starts_with("Notification")),
        "a USER member may not read these: {types:?}"
    );
    assert!(app_rx
        .records()
        .iter()
        .all(|r| r["stream_id"] == json!(format!("application-{id}"))));

    // 410: the endpoint is disabled by the notifier, through the command path. The gone
    // receiver holds its answer until both renames' deliveries are recorded (the first in
    // flight, the second pending behind it in the application's order), so the 410 has one to
    // fail; a rename handled after the endpoint is disabled records no delivery for it.
    eventually("the gone endpoint's two deliveries are recorded", || {
        let (system, admin, gone_hook) = (&system, &admin, &gone_hook);
        async move { system.deliveries(admin, gone_hook).await.len() == 2 }
    })
    .await;
    gone_rx.release();
    eventually("the gone endpoint is disabled", || {
        let system = &system;
        let (admin, gone_hook) = (&admin, &gone_hook);
        async move {
            let (_, w) = system
                .call(
                    reqwest::Method::GET,
                    &format!("webhooks/{gone_hook}"),
                    admin,
                    None,
                )
                .await;
            w["enabled"] == json!(false) && w["disabled_reason"] == json!("GONE")
        }
    })
    .await;
    let log = system.log().await;
    let disabled = log
        .iter()
        .find(|e| e.event_type == "WebhookDisabled")
        .expect("WebhookDisabled");
    assert_eq!(disabled.metadata["actor"], json!("notifier"));
    eventually("the gone endpoint's deliveries all end", || {
        let (system, admin, gone_hook) = (&system, &admin, &gone_hook);
        async move {
            let items = system.deliveries(admin, gone_hook).await;
            items.len() == 2 && items.iter().all(|d| d["status"] == json!("FAILED"))
        }
    })
    .await;
    assert_eq!(gone_rx.records().len(), 1, "nothing more after the 410");
    let (_, page) = system
        .call(
            get.clone(),
            &format!("webhooks/{gone_hook}/deliveries"),
            &admin,
            None,
        )
        .await;
    assert_eq!(page["items"][0]["response_status"], json!(410));

    // The answer is kept to 1 KiB (on a character boundary).
    eventually("the big endpoint's deliveries are delivered", || {
        let (system, admin, big_hook) = (&system, &admin, &big_hook);
        async move {
            let items = system.deliveries(admin, big_hook).await;
            items.len() == 2 && items.iter().all(|d| d["status"] == json!("DELIVERED"))
        }
    })
    .await;
    let (_, page) = system
        .call(
            get.clone(),
            &format!("webhooks/{big_hook}/deliveries?limit=1"),
            &admin,
            None,
        )
        .await;
    let first = page["items"][0].clone();
    let body = first["response_body"].as_str().unwrap();
    assert_eq!(body.len(), 1024, "{}", body.len());
    assert!(body.starts_with('é'));
    assert_eq!(page["next_after"], first["id"]);
    let (_, next) = system
        .call(
            get.clone(),
            &format!(
                "webhooks/{big_hook}/deliveries?after={}",
                first["id"].as_str().unwrap()
            ),
            &admin,
            None,
        )
        .await;
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert_ne!(next["items"][0]["id"], first["id"]);

    // A manual retry: sent again with the same webhook-id.
    let did = first["id"].as_str().unwrap().to_string();
    let (status, retried) = system
        .call(
            post.clone(),
            &format!("webhooks/{big_hook}/deliveries/{did}/_retry"),
            &admin,
            None,
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["status"], json!("PENDING"));
    eventually("the retried delivery is sent again", || {
        let n = big_rx
            .records()
            .iter()
            .filter(|r| r["id"] == json!(did))
            .count();
        async move { n == 2 }
    })
    .await;
    let (status, missing) = system
        .call(
            post.clone(),
            &format!("webhooks/{big_hook}/deliveries/msg_nope/_retry"),
            &admin,
            None,
        )
        .await;
    assert_eq!(
        (status, missing["code"].clone()),
        (404, json!("delivery.not_found"))
    );
    // The application's log: DEFINITION[U] (not bob), not under /webhooks, not another's.
    let path = format!("applications/{id}/webhooks/{app_hook}/deliveries");
    let (status, page) = system.call(get.clone(), &path, &alice, None).await;
    assert_eq!(status, 200);
    assert!(page["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["status"] == json!("DELIVERED")));
    assert_eq!(system.call(get.clone(), &path, &bob, None).await.0, 403);
    assert_eq!(
        system
            .call(
                get.clone(),
                &format!("webhooks/{app_hook}/deliveries"),
                &admin,
                None
            )
            .await
            .0,
        404
    );
    assert_eq!(
        system
            .call(
                get.clone(),
                &format!("webhooks/{big_hook}/deliveries"),
                &alice,
                None
            )
            .await
            .0,
        403
    );
    notifier.kill().unwrap();
    notifier.wait().unwrap();
    system.api.shutdown.cancel();
}

/// A real SMTP server (aiosmtpd, `tests/smtp/server.py`) and the messages it accepted.
struct SmtpServer {
    child: Child,
    port: u16,
    messages: Arc<Mutex<Vec<Value>>>,
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let mut child = Command::new(python("smtp"))
            .arg(repo().join("tests/smtp/server.py"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the SMTP server");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let port = first["port"].as_u64().unwrap() as u16;
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock()
                    .unwrap()
                    .push(serde_json::from_str(&line).unwrap());
            }
        });
        SmtpServer {
            child,
            port,
            messages,
        }
    }

    /// (recipient, subject) of every message, sorted.
    fn received(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .messages
            .lock()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["to"][0].as_str().unwrap().to_string(),
                    m["subject"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Item: the notification hooks by e-mail, to each member who asked, one mail per (event,
/// member), `API_KEY_EXPIRING` once (a renewed key ends within `api_key_expiring_days`), and
/// nothing again when the notifier restarts and even replays the whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_smtp_server_gets_exactly_the_expected_mails() {
    let system = System::start().await;
    let smtp = SmtpServer::start();
    let admin = system.token("root", true);
    let alice = system.token("alice", false);
    let bob = system.token("bob", false);
    let (post, put) = (reqwest::Method::POST, reqwest::Method::PUT);
    let call =
        |method: reqwest::Method, path: String, token: String, body: Option<Value>, want: u16| {
            let system = &system;
            async move {
                let (status, answer) = system.call(method, &path, &token, body).await;
                assert_eq!(status, want, "{path}: {answer}");
                answer
            }
        };
    let api = call(
        post.clone(),
        "apis".into(),
        admin.clone(),
        Some(json!({"name": "Weather"})),
        201,
    )
    .await;
    let api = api["id"].as_str().unwrap().to_string();
    let plan = call(
        post.clone(),
        format!("apis/{api}/plans"),
        admin.clone(),
        Some(json!({"name": "Gold", "security": "API_KEY", "validation": "MANUAL"})),
        201,
    )
    .await;
    let plan = plan["id"].as_str().unwrap().to_string();
    let app = call(
        post.clone(),
        "applications".into(),
        alice.clone(),
        Some(json!({"name": "Shop", "type": "simple"})),
        201,
    )
    .await;
    let id = app["id"].as_str().unwrap().to_string();
    call(
        post.clone(),
        format!("applications/{id}/members"),
        alice.clone(),
        Some(json!({"user": "bob", "role": "OWNER"})),
        201,
    )
    .await;
    call(
        post.clone(),
        format!("applications/{id}/members"),
        alice.clone(),
        Some(json!({"user": "carol"})),
        201,
    )
    .await;
    let notifications = format!("applications/{id}/notifications");
    call(
        put.clone(),
        notifications.clone(),
        alice.clone(),
        Some(json!({"hooks": ["SUBSCRIPTION_ACCEPTED", "SUBSCRIPTION_PAUSED", "API_KEY_EXPIRING"], "email": "alice@example.com"})),
        200,
    )
    .await;
    call(
        put.clone(),
        notifications,
        bob.clone(),
        Some(json!({"hooks": ["SUBSCRIPTION_ACCEPTED"], "email": "bob@example.com"})),
        200,
    )
    .await;

    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let env = [
        ("APPREG_NOTIFIER__SMTP_URL", smtp_url.as_str()),
        ("APPREG_NOTIFIER__MAIL_FROM", "appreg <noreply@example.com>"),
    ];
    let mut notifier = system.notifier_with(&env);
    let sub = call(
        post.clone(),
        format!("applications/{id}/subscriptions"),
        alice.clone(),
        Some(json!({"plan_id": plan})),
        201,
    )
    .await;
    let sid = sub["id"].as_str().unwrap().to_string();
    for action in ["_accept", "_pause", "_resume"] {
        call(
            post.clone(),
            format!("subscriptions/{sid}/{action}"),
            admin.clone(),
            None,
            200,
        )
        .await;
    }
    call(
        post.clone(),
        format!("subscriptions/{sid}/api-keys/_renew"),
        alice.clone(),
        None,
        200,
    )
    .await;

    let expected = |who: &str, what: &str| {
        (
            format!("{who}@example.com"),
            format!("[appreg] Shop: {what}"),
        )
    };
    let mut want = vec![
        expected("alice", &format!("the subscription {sid} is now accepted")),
        expected("bob", &format!("the subscription {sid} is now accepted")),
        expected("alice", &format!("the subscription {sid} is now paused")),
    ];
    eventually("four mails", || {
        let n = smtp.received().len();
        async move { n >= 4 }
    })
    .await;
    let got = smtp.received();
    let expiring: Vec<_> = got
        .iter()
        .filter(|(_, s)| s.contains("expires at"))
        .cloned()
        .collect();
    assert_eq!(expiring.len(), 1, "{got:?}");
    assert_eq!(expiring[0].0, "alice@example.com");
    want.push(expiring[0].clone());
    want.sort();
    assert_eq!(got, want);
    for m in smtp.messages.lock().unwrap().iter() {
        assert_eq!(m["from"], json!("noreply@example.com"));
        assert!(m["body"].as_str().unwrap().contains(&id), "{m}");
    }

    // A restart that even replays the whole log sends nothing again: its durable consumer is
    // deleted (the notifier creates it again, from the stream's start). First every mail is
    // recorded as sent (one taken by the SMTP server and not yet recorded when the notifier dies
    // may go again: at least once).
    let Database::Postgres(pool) = &system.db else {
        unreachable!()
    };
    eventually("every mail is recorded as sent", || async {
        let unsent: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM notifier_mails WHERE status <> 'SENT'")
                .fetch_one(pool)
                .await
                .unwrap();
        unsent == 0
    })
    .await;
    notifier.kill().unwrap();
    notifier.wait().unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap());
    js.get_stream("APPREG_EVENTS")
        .await
        .unwrap()
        .delete_consumer("appreg-notifier")
        .await
        .unwrap();
    sqlx::query("UPDATE notifier_checkpoints SET tx = 0, pos = 0")
        .execute(pool)
        .await
        .unwrap();
    let head = system.log().await.last().unwrap().position;
    let mut notifier = system.notifier_with(&env);
    eventually("the replay reaches the head of the log", || async {
        let at: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx, pos FROM notifier_checkpoints WHERE name = 'notifier'")
                .fetch_optional(pool)
                .await
                .unwrap();
        at.is_some_and(|(tx, pos)| (tx, pos) >= (head.tx, head.pos))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(smtp.received(), want, "no mail twice");
    notifier.kill().unwrap();
    notifier.wait().unwrap();
    system.api.shutdown.cancel();
}
