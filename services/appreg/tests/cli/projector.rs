//! The read side in its production topology, as real processes: `appreg api` (read models
//! `external`), `appreg relay` and `appreg projector`, on a fresh PostgreSQL database and a
//! private nats-server. Faults: NATS down for 10 s while creates keep arriving, and the projector
//! SIGKILLed mid-batch and restarted. Afterwards every create answered 2xx is in the read model,
//! and the read model equals a fresh rebuild (row counts and a checksum of every row). Also: a
//! poison event is parked with the later events of its stream, while other streams go on, and
//! `appreg projections parked` / `retry` list and replay it. And: with the relay down, the
//! projector folds the log itself once no message came for `projector.catch_up_after_ms`.

use super::{temp_dir, token, Running, EXE};
use appreg_eventstore::Database;
use appreg_test_support::nats::NatsServer;
use appreg_test_support::postgres::fresh_postgres_url;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(super) const STREAM: &str = "RS_EVENTS";
pub(super) const PREFIX: &str = "rs.appreg";

/// The three services of the read side, sharing one database, one NATS and one data dir (the
/// api's development signing key).
pub(super) struct ReadSide {
    pub(super) db_url: String,
    nats_url: String,
    data: PathBuf,
    api: Option<Running>,
    pub(super) relay: Option<Running>,
    pub(super) projector: Option<Running>,
    base: String,
}

pub(super) fn service(args: &[&str], db_url: &str, nats_url: &str, data: &Path) -> Command {
    let mut cmd = Command::new(EXE);
    cmd.args(args)
        .env("APPREG_DATABASE_URL", db_url)
        .env("APPREG_NATS_URL", nats_url)
        .env("APPREG_NATS_STREAM", STREAM)
        .env("APPREG_NATS_SUBJECT_PREFIX", PREFIX)
        .env("APPREG_API__READ_MODELS", "external")
        .env(
            "APPREG_SECRETS_MASTER_KEY",
            "test:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("APPREG_AUTH__DEV", "true")
        .env("APPREG_DATA_DIR", data)
        .env("APPREG_DEFAULT_APPLICATION", "false")
        .env("APPREG_API__LISTEN", "127.0.0.1:0")
        .env("APPREG_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1");
    cmd
}

impl ReadSide {
    pub(super) async fn start(nats_url: &str) -> ReadSide {
        let db_url = fresh_postgres_url().await;
        let data = temp_dir("readside");
        let mut side = ReadSide {
            db_url,
            nats_url: nats_url.to_string(),
            data,
            api: None,
            relay: None,
            projector: None,
            base: String::new(),
        };
        side.start_api();
        side.relay = Some(side.spawn(&["relay"]));
        side.start_projector();
        side
    }

    pub(super) fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_with(args, &[])
    }

    /// [`ReadSide::spawn`] with more environment variables.
    pub(super) fn spawn_with(&self, args: &[&str], env: &[(&str, &str)]) -> Running {
        let child = service(args, &self.db_url, &self.nats_url, &self.data)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Running(Some(child))
    }

    fn start_api(&mut self) {
        let mut child = service(&["api"], &self.db_url, &self.nats_url, &self.data)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        self.api = Some(Running(Some(child)));
        self.base = loop {
            let line = lines.next().expect("appreg api printed its URL").unwrap();
            if let Some(url) = line.strip_prefix("appreg listening on ") {
                break url.to_string();
            }
        };
        std::thread::spawn(move || for _ in lines {});
    }

    fn start_projector(&mut self) {
        self.projector = Some(self.spawn(&["projector"]));
    }

    pub(super) fn kill_projector(&mut self) {
        let mut running = self.projector.take().expect("a projector");
        let mut child = running.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-KILL", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = child.wait();
    }

    pub(super) fn token(&self, sub: &str) -> String {
        token(&self.data, sub, false)
    }

    pub(super) fn apps_url(&self) -> String {
        format!("{}/v1/environments/DEFAULT/applications", self.base)
    }
}

impl Drop for ReadSide {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Clients that create (and rename) simple applications until stopped; every id answered 201
/// is recorded. Failed requests are counted, never retried.
struct Load {
    stop: Arc<AtomicBool>,
    created: Arc<Mutex<Vec<String>>>,
    failed: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(apps: String, token: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let created = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|c| {
                let (apps, token) = (apps.clone(), token.clone());
                let (stop, created, failed) = (stop.clone(), created.clone(), failed.clone());
                tokio::spawn(async move {
                    let client = reqwest::Client::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let r = client
                            .post(&apps)
                            .bearer_auth(&token)
                            .json(&serde_json::json!({"name": format!("load {c}/{i}"), "type": "simple"}))
                            .send()
                            .await;
                        match r {
                            Ok(r) if r.status() == 201 => {
                                let body: serde_json::Value = r.json().await.unwrap();
                                let id = body["id"].as_str().unwrap().to_string();
                                if i % 3 == 0 {
                                    // A second event in the stream.
                                    let r = client
                                        .put(format!("{apps}/{id}"))
                                        .bearer_auth(&token)
                                        .json(&serde_json::json!({"name": format!("renamed {c}/{i}")}))
                                        .send()
                                        .await
                                        .unwrap();
                                    assert_eq!(r.status(), 200, "an update answers 200");
                                }
                                created.lock().unwrap().push(id);
                            }
                            Ok(r) => failed.lock().unwrap().push(format!("{}", r.status())),
                            Err(e) => failed.lock().unwrap().push(e.to_string()),
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            created,
            failed,
            tasks,
        }
    }

    fn created(&self) -> usize {
        self.created.lock().unwrap().len()
    }

    async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        assert!(failed.is_empty(), "commands failed: {failed:?}");
        let created = self.created.lock().unwrap().clone();
        created
    }
}

/// Waits until the read model's checkpoint covers every committed event.
pub(super) async fn caught_up(db: &Database, within: Duration) {
    let store = db.event_store().await.unwrap();
    let target = store.last_committed().await.unwrap();
    let started = Instant::now();
    loop {
        let pool = match db {
            Database::Postgres(pool) => pool,
            Database::Sqlite(_) => unreachable!(),
        };
        let (tx, pos): (i64, i64) =
            sqlx::query_as("SELECT tx, pos FROM rm_checkpoints WHERE name = 'applications'")
                .fetch_one(pool)
                .await
                .unwrap();
        if (appreg_eventstore::LogPosition { tx, pos }) >= target {
            return;
        }
        assert!(
            started.elapsed() < within,
            "the read model did not reach {target} within {within:?} (at {tx}.{pos})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every id is in the read model; the read model equals a fresh rebuild.
pub(super) async fn assert_complete_and_equal_to_rebuild(db: &Database, created: &[String]) {
    let pool = match db {
        Database::Postgres(pool) => pool,
        Database::Sqlite(_) => unreachable!(),
    };
    let ids: HashSet<String> = sqlx::query_scalar("SELECT id FROM rm_applications")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let missing: Vec<&String> = created.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "created but not in the read model: {missing:?}"
    );
    assert_eq!(ids.len(), created.len(), "no other application appeared");
    let live = appreg_readmodel::checksum(db).await.unwrap();
    appreg_readmodel::rebuild(db, |_| {}).await.unwrap();
    let rebuilt = appreg_readmodel::checksum(db).await.unwrap();
    assert_eq!(
        live, rebuilt,
        "the projected read model equals a fresh rebuild"
    );
    assert_eq!(live.applications as usize, created.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_10_seconds_while_creates_keep_arriving() {
    let mut nats = NatsServer::start();
    let side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let load = Load::start(side.apps_url(), side.token("alice"), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;

    nats.kill();
    let down_at = load.created();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = load.created() - down_at;
    assert!(
        during > 50,
        "creates kept succeeding while NATS was down ({during})"
    );
    nats.restart();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let created = load.stop().await;
    eprintln!(
        "{} creates answered 2xx, {during} of them while NATS was down",
        created.len()
    );

    caught_up(&db, Duration::from_secs(60)).await;
    assert_complete_and_equal_to_rebuild(&db, &created).await;
    db.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projector_killed_mid_batch_and_restarted() {
    let nats = NatsServer::start();
    let mut side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let load = Load::start(side.apps_url(), side.token("bob"), 4);
    for round in 0..4 {
        tokio::time::sleep(Duration::from_millis(1500 + 250 * round)).await;
        side.kill_projector();
        tokio::time::sleep(Duration::from_millis(300)).await;
        side.start_projector();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = load.stop().await;
    eprintln!(
        "{} creates answered 2xx across 4 projector kills",
        created.len()
    );
    caught_up(&db, Duration::from_secs(60)).await;
    assert_complete_and_equal_to_rebuild(&db, &created).await;
    db.close().await;
}

fn cli(args: &[&str], db_url: &str) -> (bool, String) {
    let out = Command::new(EXE)
        .args(args)
        .args(["--database-url", db_url])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn update(name: &str) -> appreg_eventstore::NewEvent {
    appreg_eventstore::NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "ApplicationUpdated".into(),
        schema_version: 1,
        data: serde_json::json!({"name": name, "description": null, "domain": null,
            "client_id": null, "oauth": null, "changed": ["name"]}),
        metadata: serde_json::json!({"environment": "DEFAULT", "actor": "carol"}),
        recorded_at: chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros())
            .unwrap(),
    }
}

/// A poison event (here: data the decoder rejects) is retried, then parked; the later event
/// of its stream waits behind it; other applications keep being projected. `projections
/// parked` lists both; after the stored event is repaired, `projections retry` folds both in
/// order and the read model equals a fresh rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_event_parked_listed_and_retried() {
    let nats = NatsServer::start();
    let side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let store = db.event_store().await.unwrap();
    let client = reqwest::Client::new();
    let carol = side.token("carol");
    let create = |name: &'static str| {
        let (client, apps, carol) = (client.clone(), side.apps_url(), carol.clone());
        async move {
            let r = client
                .post(&apps)
                .bearer_auth(&carol)
                .json(&serde_json::json!({"name": name, "type": "simple"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let victim = create("victim").await;
    let stream_id = format!("application-{victim}");
    let mut poison = update("x");
    poison.data = serde_json::json!({"name": "", "changed": "not a list"});
    let poison_id = poison.event_id;
    store
        .append(appreg_eventstore::AppendRequest {
            stream_id: stream_id.clone(),
            stream_type: "application".into(),
            expected_version: 1,
            events: vec![poison],
            claims: vec![],
            releases: vec![],
        })
        .await
        .unwrap();
    store
        .append(appreg_eventstore::AppendRequest {
            stream_id: stream_id.clone(),
            stream_type: "application".into(),
            expected_version: 2,
            events: vec![update("victim, renamed twice")],
            claims: vec![],
            releases: vec![],
        })
        .await
        .unwrap();
    let bystander = create("bystander").await;
    caught_up(&db, Duration::from_secs(30)).await;

    let (ok, listed) = cli(&["projections", "parked"], &side.db_url);
    assert!(ok, "{listed}");
    assert!(listed.contains(&poison_id.to_string()), "{listed}");
    assert!(
        listed.contains("attempts=5"),
        "retried 5 times before parking: {listed}"
    );
    assert!(listed.contains("waits behind parked event"), "{listed}");
    assert_eq!(listed.lines().count(), 2, "{listed}");
    let pool = match &db {
        Database::Postgres(pool) => pool,
        Database::Sqlite(_) => unreachable!(),
    };
    let doc_of = |id: String| async move {
        let doc: String = sqlx::query_scalar("SELECT doc FROM rm_applications WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&doc).unwrap()
    };
    assert_eq!(
        doc_of(victim.clone()).await["version"],
        1,
        "the stream waits behind its poison event"
    );
    assert_eq!(
        doc_of(bystander.clone()).await["name"],
        "bystander",
        "other streams go on"
    );

    // Retrying without a fix changes nothing.
    let (ok, out) = cli(&["projections", "retry"], &side.db_url);
    assert!(
        !ok && out.contains("0 parked events applied, 2 still parked"),
        "{out}"
    );

    // The operator repairs the stored event (or ships a decoder that reads it), then retries.
    sqlx::query("UPDATE events SET data = $1 WHERE event_id = $2")
        .bind(update("victim, renamed once").data)
        .bind(poison_id)
        .execute(pool)
        .await
        .unwrap();
    let (ok, out) = cli(&["projections", "retry"], &side.db_url);
    assert!(
        ok && out.contains("2 parked events applied, 0 still parked"),
        "{out}"
    );
    let doc = doc_of(victim.clone()).await;
    assert_eq!(
        (doc["version"].clone(), doc["name"].clone()),
        (3.into(), "victim, renamed twice".into())
    );
    let (ok, listed) = cli(&["projections", "parked"], &side.db_url);
    assert!(ok && listed.contains("no parked events"), "{listed}");
    assert_complete_and_equal_to_rebuild(&db, &[victim, bystander]).await;
    db.close().await;
}

/// Creates a simple application; its id.
async fn create(side: &ReadSide, token: &str, name: &str) -> String {
    let r = reqwest::Client::new()
        .post(side.apps_url())
        .bearer_auth(token)
        .json(&serde_json::json!({"name": name, "type": "simple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: serde_json::Value = r.json().await.unwrap();
    body["id"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_the_projector_folds_the_log_itself() {
    let nats = NatsServer::start();
    let mut side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let token = side.token("carol");
    let first = create(&side, &token, "through the relay").await;
    caught_up(&db, Duration::from_secs(30)).await;
    // A projector that folds the log after 1 s without a message; then the relay stops, so no
    // message comes for what follows.
    side.kill_projector();
    side.projector = Some(side.spawn_with(
        &["projector"],
        &[("APPREG_PROJECTOR__CATCH_UP_AFTER_MS", "1000")],
    ));
    side.relay = None;
    let started = Instant::now();
    let second = create(&side, &token, "while the relay is down").await;
    // Checked every 5 s: within one check after a second of silence.
    caught_up(&db, Duration::from_secs(20)).await;
    eprintln!(
        "folded without a message after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The relay back: its late messages change nothing, and the messages path goes on.
    side.relay = Some(side.spawn(&["relay"]));
    let third = create(&side, &token, "through the relay again").await;
    caught_up(&db, Duration::from_secs(30)).await;
    assert_complete_and_equal_to_rebuild(&db, &[first, second, third]).await;
    db.close().await;
}

/// Messages that sessions pulled and never acknowledged (an instance killed, or sessions ended by
/// a PostgreSQL restart: each holds up to two pull requests of a batch) stay pending until
/// `ack_wait`. They must not freeze the consumer for the live instance: before the consumer's
/// `max_ack_pending` left room for them, two instances whose sessions ended after a PostgreSQL
/// restart froze it until the silence catch-up. Here a dead instance holds six batches, and
/// `ack_wait` and the catch-up silence are two minutes, so only new deliveries can bring the read
/// model up to date within the test's 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_held_by_ended_sessions_do_not_freeze_the_projector() {
    use async_nats::jetstream::consumer::PullConsumer;
    use futures::StreamExt;
    let nats = NatsServer::start();
    let mut side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let token = side.token("dora");

    // The consumer of projectors that pull ten messages at a time.
    side.kill_projector();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // The relay creates the stream as it starts.
    let waited = Instant::now();
    let mut stream = loop {
        match js.get_stream(STREAM).await {
            Ok(stream) => break stream,
            Err(e) => assert!(waited.elapsed() < Duration::from_secs(20), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let config = appreg_projector::ProjectorConfig {
        stream: STREAM.into(),
        subject_prefix: PREFIX.into(),
        batch: 10,
        ack_wait: Duration::from_secs(120),
        ..Default::default()
    };
    let _ = stream.delete_consumer(&config.consumer).await;
    appreg_projector::ensure_consumer(&stream, &config)
        .await
        .unwrap();

    let mut created = Vec::new();
    for i in 0..100 {
        created.push(create(&side, &token, &format!("held {i}")).await);
    }
    let published = Instant::now();
    while stream.info().await.unwrap().state.messages < 100 {
        assert!(
            published.elapsed() < Duration::from_secs(20),
            "the relay published the 100 creates"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A dead instance: six batches pulled, never acknowledged.
    let consumer: PullConsumer = stream.get_consumer(&config.consumer).await.unwrap();
    let mut held = consumer
        .fetch()
        .max_messages(6 * config.batch)
        // What the server hands out at once (it hands out no more than `max_ack_pending`).
        .expires(Duration::from_secs(1))
        .messages()
        .await
        .unwrap();
    let mut pulled = 0;
    while let Some(m) = held.next().await {
        m.unwrap();
        pulled += 1;
    }
    drop(held);
    let pending = consumer.clone().info().await.unwrap().num_ack_pending;
    eprintln!("a dead instance holds {pulled} messages ({pending} pending)");
    assert!(pulled >= 4 * config.batch, "pulled {pulled}");

    side.projector = Some(side.spawn_with(
        &["projector"],
        &[
            ("APPREG_PROJECTOR__BATCH", "10"),
            ("APPREG_PROJECTOR__ACK_WAIT_MS", "120000"),
            ("APPREG_PROJECTOR__CATCH_UP_AFTER_MS", "120000"),
        ],
    ));
    let started = Instant::now();
    caught_up(&db, Duration::from_secs(20)).await;
    eprintln!(
        "the live instance caught up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    created.push(create(&side, &token, "after").await);
    caught_up(&db, Duration::from_secs(20)).await;
    assert_complete_and_equal_to_rebuild(&db, &created).await;
    db.close().await;
}
