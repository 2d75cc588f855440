//! The seed documentation's archive/restore story, end to end on PostgreSQL + NATS with real
//! processes: `appreg api` (read models from the projector), `relay`, `projector` and
//! `lifecycle` (the archive/restore process manager). Once as is, once with the process manager
//! SIGKILLed between two of its steps and restarted: the same end state, no step done twice.

use super::projector::{service, PREFIX, STREAM};
use super::{temp_dir, token, Running};
use appreg_eventstore::{Database, EventStore, StoredEvent};
use appreg_test_support::nats::{all_events, assert_exactly_once, NatsServer, Published};
use appreg_test_support::postgres::fresh_postgres_url;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct System {
    db_url: String,
    nats_url: String,
    data: PathBuf,
    base: String,
    client: reqwest::Client,
    _api: Running,
    _relay: Running,
    _projector: Running,
    lifecycle: Option<Running>,
}

impl System {
    async fn start(nats_url: &str, step_pause_ms: u64) -> System {
        let db_url = fresh_postgres_url().await;
        let data = temp_dir("lifecycle");
        // The api's debug log is kept, to show that no key value reaches it.
        let log = std::fs::File::create(data.join("api.log")).unwrap();
        let mut api = service(&["api"], &db_url, nats_url, &data)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(api.stdout.take().unwrap()).lines();
        let api = Running(Some(api));
        let base = loop {
            let line = lines.next().expect("appreg api printed its URL").unwrap();
            if let Some(url) = line.strip_prefix("appreg listening on ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let spawn = |args: &[&str]| {
            Running(Some(
                service(args, &db_url, nats_url, &data)
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap(),
            ))
        };
        let relay = spawn(&["relay"]);
        let projector = spawn(&["projector"]);
        let mut system = System {
            db_url: db_url.clone(),
            nats_url: nats_url.to_string(),
            data: data.clone(),
            base,
            client: reqwest::Client::new(),
            _api: api,
            _relay: relay,
            _projector: projector,
            lifecycle: None,
        };
        system.start_lifecycle(step_pause_ms);
        system
    }

    fn start_lifecycle(&mut self, step_pause_ms: u64) {
        let child = service(&["lifecycle"], &self.db_url, &self.nats_url, &self.data)
            .env("APPREG_LIFECYCLE__STEP_PAUSE_MS", step_pause_ms.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.lifecycle = Some(Running(Some(child)));
    }

    fn kill_lifecycle(&mut self) {
        let mut running = self.lifecycle.take().expect("a lifecycle process");
        let mut child = running.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = child.wait();
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v1/environments/DEFAULT/{path}", self.base)
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
        let mut request = match method {
            "GET" => self.client.get(self.url(path)),
            "POST" => self.client.post(self.url(path)),
            "PUT" => self.client.put(self.url(path)),
            "DELETE" => self.client.delete(self.url(path)),
            _ => unreachable!(),
        }
        .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

impl System {
    /// The gateway's check of a key (as an administrator).
    async fn verify(&self, admin: &str, key: &str) -> bool {
        self.call("POST", "api-keys/_verify", admin, Some(json!({"key": key})))
            .await["valid"]
            .as_bool()
            .unwrap()
    }
}

impl Drop for System {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

fn id(v: &Value) -> String {
    v["id"].as_str().unwrap().to_string()
}

fn key_of(sub: &Value) -> String {
    sub["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|k| k["key"].as_str())
        .expect("a key shown in full")
        .to_string()
}

/// The application's events, in order.
async fn stream(store: &Arc<dyn EventStore>, app: &str) -> Vec<StoredEvent> {
    store
        .read_stream(&format!("application-{app}"), 0, 10_000)
        .await
        .unwrap()
}

fn count(events: &[StoredEvent], event_type: &str) -> usize {
    events.iter().filter(|e| e.event_type == event_type).count()
}

/// Waits until `done` holds for the application's events.
async fn wait_until(
    store: &Arc<dyn EventStore>,
    app: &str,
    what: &str,
    done: impl Fn(&[StoredEvent]) -> bool,
) -> Vec<StoredEvent> {
    let started = Instant::now();
    loop {
        let events = stream(store, app).await;
        if done(&events) {
            return events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; events: {:?}",
            events.iter().map(|e| &e.event_type).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of(subs: &Value, sid: &str) -> String {
    subs["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == sid)
        .map(|s| s["status"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

/// The events the process manager wrote for a trigger (its causation id).
fn caused_by<'a>(events: &'a [StoredEvent], trigger: &StoredEvent) -> Vec<&'a StoredEvent> {
    events
        .iter()
        .filter(|e| e.metadata["causation_id"] == trigger.event_id.to_string())
        .filter(|e| e.event_id != trigger.event_id)
        .collect()
}

async fn seed_story(kill_between_steps: bool) {
    let nats = NatsServer::start();
    let mut system = System::start(&nats.url(), if kill_between_steps { 1500 } else { 0 }).await;
    let db = Database::connect(&system.db_url, 4).await.unwrap();
    let store = db.event_store().await.unwrap();
    let alice = token(&system.data, "alice", false);
    let admin = token(&system.data, "root", true);

    // The catalogue: four plans of one API.
    let api = system
        .call("POST", "apis", &admin, Some(json!({"name": "Orders"})))
        .await;
    let api_id = id(&api);
    let mut plans = Vec::new();
    for (name, security, validation) in [
        ("keys", "API_KEY", "AUTO"),
        ("jwt", "JWT", "MANUAL"),
        ("oauth", "OAUTH2", "MANUAL"),
        ("trial", "JWT", "AUTO"),
    ] {
        let plan = system
            .call(
                "POST",
                &format!("apis/{api_id}/plans"),
                &admin,
                Some(json!({"name": name, "security": security, "validation": validation})),
            )
            .await;
        plans.push(id(&plan));
    }

    // Alice's application, with a client_id, subscribed to the four plans.
    let app = system
        .call(
            "POST",
            "applications",
            &alice,
            Some(json!({"name": "Seed", "type": "simple", "client_id": "seed-client"})),
        )
        .await;
    let app_id = id(&app);
    let subs_path = format!("applications/{app_id}/subscriptions");
    let mut sids = Vec::new();
    let mut first_key = String::new();
    for (i, plan) in plans.iter().enumerate() {
        let s = system
            .call("POST", &subs_path, &alice, Some(json!({"plan_id": plan})))
            .await;
        let expected = if i == 0 || i == 3 {
            "ACCEPTED"
        } else {
            "PENDING"
        };
        assert_eq!(s["status"], expected, "plan {i}");
        if i == 0 {
            first_key = key_of(&s);
        }
        sids.push(id(&s));
    }
    system
        .call(
            "POST",
            &format!("subscriptions/{}/_accept", sids[1]),
            &admin,
            None,
        )
        .await;
    system
        .call(
            "POST",
            &format!("subscriptions/{}/_close", sids[3]),
            &alice,
            None,
        )
        .await;
    system
        .call(
            "PUT",
            &format!("applications/{app_id}/notifications"),
            &alice,
            Some(json!({"hooks": ["SUBSCRIPTION_CLOSED"], "email": "alice@example.org"})),
        )
        .await;
    assert!(system.verify(&admin, &first_key).await);

    // Archive.
    let r = system
        .client
        .delete(system.url(&format!("applications/{app_id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let archive = stream(&store, &app_id)
        .await
        .into_iter()
        .find(|e| e.event_type == "ApplicationArchived")
        .unwrap();
    // The archive's steps: close 2 (one with its key revoked), reject 1, delete the settings.
    let archive_done = |events: &[StoredEvent]| count(events, "NotificationSettingsDeleted") == 1;
    if kill_between_steps {
        // Killed after its first step, before the second.
        let events = wait_until(&store, &app_id, "the first archive step", |events| {
            !caused_by(events, &archive).is_empty()
        })
        .await;
        system.kill_lifecycle();
        let done = caused_by(&events, &archive).len();
        let after_kill = stream(&store, &app_id).await;
        assert!(
            !archive_done(&after_kill),
            "killed between two steps ({done} events of the archive so far)"
        );
        eprintln!("process manager killed after {done} event(s) of the archive");
        system.start_lifecycle(0);
    }
    let events = wait_until(&store, &app_id, "the archive's steps", archive_done).await;
    let by_archive = caused_by(&events, &archive);
    for e in &by_archive {
        assert_eq!(e.metadata["actor"], "lifecycle");
        assert_eq!(
            e.metadata["correlation_id"],
            archive.metadata["correlation_id"]
        );
    }
    let types: Vec<&str> = by_archive.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(
        count(&events, "SubscriptionClosed"),
        3,
        "the user's close and the archive's two: {types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| **t == "SubscriptionClosed").count(),
        2,
        "{types:?}"
    );
    assert_eq!(count(&events, "SubscriptionRejected"), 1, "{types:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "ApiKeyRevoked").count(),
        1,
        "{types:?}"
    );
    assert_eq!(count(&events, "NotificationSettingsDeleted"), 1);
    assert_eq!(by_archive.len(), 5, "no step twice: {types:?}");

    // What the administrator sees.
    let subs = system.call("GET", &subs_path, &admin, None).await;
    assert_eq!(status_of(&subs, &sids[0]), "CLOSED");
    assert_eq!(status_of(&subs, &sids[1]), "CLOSED");
    assert_eq!(status_of(&subs, &sids[2]), "REJECTED");
    assert_eq!(status_of(&subs, &sids[3]), "CLOSED");
    assert!(
        !system.verify(&admin, &first_key).await,
        "the key is revoked"
    );
    let notifications = system
        .call(
            "GET",
            &format!("applications/{app_id}/notifications"),
            &admin,
            None,
        )
        .await;
    assert_eq!(notifications["items"], json!([]));
    let archived = system
        .call("GET", &format!("applications/{app_id}"), &admin, None)
        .await;
    assert_eq!(archived["status"], "ARCHIVED");
    assert_eq!(archived["owner"], Value::Null, "no primary owner link");

    // Restore by the administrator.
    let restored = system
        .call(
            "POST",
            &format!("applications/{app_id}/_restore"),
            &admin,
            None,
        )
        .await;
    assert_eq!(restored["owner"]["id"], "root");
    let restore = stream(&store, &app_id)
        .await
        .into_iter()
        .find(|e| e.event_type == "ApplicationRestored")
        .unwrap();
    let events = wait_until(&store, &app_id, "the restore's steps", |events| {
        count(events, "SubscriptionReopened") == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let events_after = stream(&store, &app_id).await;
    assert_eq!(
        events.len(),
        events_after.len(),
        "nothing more after the restore's steps"
    );
    let by_restore = caused_by(&events_after, &restore);
    assert_eq!(by_restore.len(), 3);
    assert!(by_restore
        .iter()
        .all(|e| e.event_type == "SubscriptionReopened"));
    let subs = system.call("GET", &subs_path, &admin, None).await;
    assert_eq!(status_of(&subs, &sids[0]), "PENDING");
    assert_eq!(status_of(&subs, &sids[1]), "PENDING");
    assert_eq!(status_of(&subs, &sids[2]), "PENDING");
    assert_eq!(
        status_of(&subs, &sids[3]),
        "CLOSED",
        "the user's close stays"
    );
    assert!(
        !system.verify(&admin, &first_key).await,
        "a revoked key stays revoked"
    );

    // Accepting again issues a new key that works.
    let accepted = system
        .call(
            "POST",
            &format!("subscriptions/{}/_accept", sids[0]),
            &admin,
            None,
        )
        .await;
    let new_key = key_of(&accepted);
    assert_ne!(new_key, first_key);
    assert!(system.verify(&admin, &new_key).await);
    assert!(!system.verify(&admin, &first_key).await);

    // Every event is on the NATS stream exactly once; no key value in any event or message.
    let mut config = appreg_config::Config::defaults();
    config.nats_stream = STREAM.into();
    config.nats_subject_prefix = PREFIX.into();
    let relay_config = appreg_relay::RelayConfig::from_config(&config);
    let nats_client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats_client);
    assert_exactly_once(
        &js,
        store.as_ref(),
        Published {
            stream: &relay_config.stream,
            subject_prefix: &relay_config.subject_prefix,
        },
        Duration::from_secs(30),
    )
    .await;
    for e in all_events(store.as_ref()).await {
        let text = format!("{} {}", e.data, e.metadata);
        assert!(!text.contains(&first_key) && !text.contains(&new_key));
    }
    let mut stream = js.get_stream(STREAM).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let payload = String::from_utf8_lossy(&message.payload);
        assert!(!payload.contains(&first_key) && !payload.contains(&new_key));
    }
    let log = std::fs::read_to_string(system.data.join("api.log")).unwrap();
    assert!(log.len() > 1000, "the api logged at debug level");
    assert!(
        !log.contains(&first_key) && !log.contains(&new_key),
        "a key value in the api's log"
    );
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_and_restore_follow_the_seed_story() {
    seed_story(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_manager_killed_between_two_steps_finishes_exactly_once() {
    seed_story(true).await;
}
