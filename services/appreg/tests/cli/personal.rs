//! `appreg migrate`'s one rewrite of the log: events recorded before personal data was sealed
//! (plaintext names and e-mail addresses, schema version 1) are rewritten sealed, once; the
//! rewrite is recorded; the database holds the plaintext nowhere afterwards (pg_dump), and the
//! vault's key opens what it sealed.

use super::EXE;
use appreg_eventstore::{AppendRequest, Database, NewEvent};
use std::path::Path;
use std::process::{Command, Stdio};

const NAME: &str = "Legacy Plaintext-Wombat";
const EMAIL: &str = "wombat.legacy5531@example.org";

fn migrate(db_url: &str, key: Option<&str>) -> String {
    let mut command = Command::new(EXE);
    command
        .args(["migrate", "--database-url", db_url])
        .env_remove("APPREG_SECRETS_MASTER_KEY");
    if let Some(key) = key {
        command.env("APPREG_SECRETS_MASTER_KEY", key);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pg_dump(db_url: &str) -> String {
    let out = Command::new("pg_dump")
        .args(["--no-owner", "--dbname", db_url])
        .output()
        .expect("pg_dump must be installed (postgresql-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn migrate_seals_the_plaintext_of_older_events_once() {
    let db_url = appreg_test_support::postgres::fresh_postgres_url().await;
    // Without the vault's key: the tables, and nothing rewritten or recorded.
    assert!(migrate(&db_url, None).contains("not sealed yet"));
    let db = Database::connect(&db_url, 2).await.unwrap();
    let store = db.event_store().await.unwrap();
    // What an older appreg wrote: a first visit in plaintext, version 1.
    let metadata = serde_json::json!({"environment": "DEFAULT", "actor": "wombat",
        "actor_name": NAME, "actor_admin": false, "correlation_id": "c", "causation_id": "c",
        "at": "2026-01-01T00:00:00Z"});
    store
        .append(AppendRequest {
            stream_id: "user-DEFAULT/wombat".into(),
            stream_type: "user".into(),
            expected_version: 0,
            events: vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "UserFirstSeen".into(),
                schema_version: 1,
                data: serde_json::json!({"user": "wombat", "name": NAME, "email": EMAIL,
                    "admin": false, "default_application": null}),
                metadata,
                recorded_at: chrono::Utc::now(),
            }],
            claims: vec![],
            releases: vec![],
        })
        .await
        .unwrap();
    assert!(pg_dump(&db_url).contains(NAME));

    let key = appreg_secrets::MasterKey::generate("k1", &mut rand::rngs::OsRng).unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key.to_config_string()).to_string();
    let out = migrate(&db_url, Some(&key));
    assert!(out.contains("1 event(s) rewritten"), "{out}");
    let dump = pg_dump(&db_url);
    assert!(
        !dump.contains(NAME) && !dump.contains(EMAIL),
        "plaintext left"
    );
    assert!(
        dump.contains("personal-data-sealed"),
        "the rewrite is recorded"
    );

    // The same event, sealed, in version 2; the key opens it.
    let events = store
        .read_stream("user-DEFAULT/wombat", 0, 10)
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].schema_version, 2);
    let keyring = appreg_secrets::Keyring::parse(&key, []).unwrap();
    let keys = appreg_secrets::PersonalKeys::new(appreg_secrets::SecretStore::new(
        db.clone(),
        std::sync::Arc::new(keyring),
    ));
    let open = |value: &serde_json::Value, field: &'static str| {
        let keys = keys.clone();
        let value = value.as_str().unwrap().to_string();
        async move { keys.open("wombat", field, &value).await.unwrap() }
    };
    assert_eq!(
        open(&events[0].data["name"], "name").await.as_deref(),
        Some(NAME)
    );
    assert_eq!(
        open(&events[0].data["email"], "email").await.as_deref(),
        Some(EMAIL)
    );
    assert_eq!(
        open(&events[0].metadata["actor_name"], "name")
            .await
            .as_deref(),
        Some(NAME)
    );
    // The read model was rebuilt from the sealed log.
    let row: (Option<String>,) =
        sqlx::query_as("SELECT name FROM rm_users WHERE user_id = 'wombat'")
            .fetch_one(match &db {
                Database::Postgres(pool) => pool,
                Database::Sqlite(_) => unreachable!(),
            })
            .await
            .unwrap();
    assert!(row.0.unwrap().starts_with("pd1."));

    // Once: a second run rewrites nothing.
    let out = migrate(&db_url, Some(&key));
    assert!(out.contains("the log's rewrite is recorded"), "{out}");
}

const ERASED_NAME: &str = "Numbat Forgettable-Qx";
const ERASED_EMAIL: &str = "numbat.qx2209@example.org";
const ERASED_ALERTS: &str = "numbat.alerts2209@example.net";

/// Starts `appreg dev` with `extra` arguments, its log (debug level) written to `log`.
fn start_logged(data: &Path, extra: &[&str], log: &Path) -> (super::Running, String) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(EXE)
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = super::Running(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("appreg dev printed its URL").unwrap();
        if let Some(url) = line.strip_prefix("appreg listening on ") {
            break url.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (running, url)
}

fn profile_token(data: &Path, sub: &str) -> String {
    let out = Command::new(EXE)
        .args([
            "token",
            "--sub",
            sub,
            "--name",
            ERASED_NAME,
            "--email",
            ERASED_EMAIL,
        ])
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every byte of every file under `dir`.
fn files_under(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                out.extend(bytes);
            }
        }
    }
    out
}

/// The scan's control: the subject id stays (so the bytes scanned are the right ones).
fn assert_subject_kept(bytes: &[u8], what: &str) {
    let found = bytes.windows(6).any(|w| w == b"numbat");
    assert!(
        found,
        "the subject id is not in {what}: the scan looks at the wrong bytes"
    );
}

fn assert_nowhere(bytes: &[u8], what: &str) {
    for value in [
        ERASED_NAME,
        ERASED_EMAIL,
        ERASED_ALERTS,
        "Forgettable",
        "qx2209",
        "alerts2209",
    ] {
        let found = bytes.windows(value.len()).any(|w| w == value.as_bytes());
        assert!(!found, "{value:?} found in {what}");
    }
}

/// The user's profile and notification address go into the system through the api, the user
/// is erased; then the answers after the erasure (`answers`) carry none of it.
async fn give_then_erase(data: &Path, url: &str) -> Vec<u8> {
    let client = reqwest::Client::new();
    let numbat = profile_token(data, "numbat");
    let admin = super::token(data, "root", true);
    let env = format!("{url}/v1/environments/DEFAULT");
    let created: serde_json::Value = client
        .post(format!("{env}/applications"))
        .bearer_auth(&numbat)
        .json(&serde_json::json!({"name": "Numbat's app", "type": "simple"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let app = format!("{env}/applications/{}", created["id"].as_str().unwrap());
    let r = client
        .put(format!("{app}/notifications"))
        .bearer_auth(&numbat)
        .json(&serde_json::json!({"hooks": ["SUBSCRIPTION_CLOSED"], "email": ERASED_ALERTS}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Opened for an allowed reader before the erasure.
    let members = client
        .get(format!("{app}/members"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(members.contains(ERASED_NAME), "{members}");

    let mut answers = Vec::new();
    let r = client
        .post(format!("{url}/v1/users/numbat/_erase"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let token = r.headers()["x-consistency-token"].clone();
    answers.extend(r.bytes().await.unwrap());
    for path in [
        format!("{app}/members"),
        format!("{app}/notifications"),
        format!("{app}/history"),
        app.clone(),
        format!("{env}/audit?limit=1000"),
        format!("{env}/users?q=n"),
        format!("{url}/v1/users/numbat"),
    ] {
        let r = client
            .get(&path)
            .bearer_auth(&admin)
            .header("x-consistency-token", token.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        answers.extend(r.bytes().await.unwrap());
    }
    let audit = String::from_utf8_lossy(&answers).into_owned();
    assert!(audit.contains("\"erased\":true") && audit.contains("UserErased"));
    answers
}

/// After an erasure in embedded mode (`appreg dev`, SQLite): neither the name nor the addresses
/// in the data directory (the SQLite file and its log), the process's log, or the answers.
#[tokio::test]
async fn an_erasure_leaves_nothing_in_embedded_mode() {
    let data = super::temp_dir("erasure-dev");
    let log = data.with_extension("log");
    let (child, url) = start_logged(&data, &[], &log);
    let answers = give_then_erase(&data, &url).await;
    super::stop(child);
    assert_subject_kept(&answers, "the answers");
    assert_nowhere(&answers, "the answers after the erasure");
    let files = files_under(&data);
    assert!(
        files.len() > 10_000,
        "the data directory holds the database"
    );
    assert_subject_kept(&files, "the data directory");
    assert_nowhere(&files, "the data directory (SQLite)");
    let log_bytes = std::fs::read(&log).unwrap();
    assert!(!log_bytes.is_empty(), "the log was written");
    assert_nowhere(&log_bytes, "the log");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_file(&log).unwrap();
}

/// After an erasure on PostgreSQL with the relay publishing to a private nats-server: neither
/// the name nor the addresses in a pg_dump, the JetStream store directory, the log, or the
/// answers; every event (the erasure's too) reached JetStream.
#[tokio::test]
async fn an_erasure_leaves_nothing_in_postgres_nor_jetstream() {
    let db_url = appreg_test_support::postgres::fresh_postgres_url().await;
    let nats = appreg_test_support::nats::NatsServer::start();
    let data = super::temp_dir("erasure-pg");
    let log = data.with_extension("log");
    let (child, url) = start_logged(
        &data,
        &["--database-url", &db_url, "--nats-url", &nats.url()],
        &log,
    );
    let answers = give_then_erase(&data, &url).await;
    let db = Database::connect(&db_url, 2).await.unwrap();
    let store = db.event_store().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let config = appreg_relay::RelayConfig::from_config(&appreg_config::Config::defaults());
    let n = appreg_test_support::nats::assert_exactly_once(
        &js,
        store.as_ref(),
        appreg_test_support::nats::Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        std::time::Duration::from_secs(20),
    )
    .await;
    assert!(n >= 5, "the events reached JetStream ({n})");
    super::stop(child);
    assert_nowhere(&answers, "the answers after the erasure");
    assert_nowhere(pg_dump(&db_url).as_bytes(), "the pg_dump");
    let stored = files_under(nats.store_dir());
    assert!(
        stored.len() > 1_000,
        "the JetStream store holds the messages"
    );
    assert_nowhere(&stored, "the JetStream store directory");
    assert_nowhere(&std::fs::read(&log).unwrap(), "the log");
    std::fs::remove_dir_all(&data).unwrap();
    std::fs::remove_file(&log).unwrap();
}
