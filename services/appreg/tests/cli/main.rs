//! End-to-end tests of the `appreg` binary: `dev` on a random port (SQLite, then PostgreSQL),
//! `token`, `migrate`, `history`, a graceful stop on SIGTERM, and `relay` processes killed and
//! taken over (`relay.rs`).

mod auth;
mod forged;
mod lifecycle;
mod personal;
mod projector;
mod relay;
mod vault;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const EXE: &str = env!("CARGO_BIN_EXE_appreg");

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "appreg-cli-{tag}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `appreg dev` on a random port and returns the child and its base URL.
/// A child process killed when dropped, so a failing test leaves no server behind.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_dev(data: &Path, extra: &[&str]) -> (Running, String) {
    let mut child = Command::new(EXE)
        .args(["dev", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("appreg dev printed its URL").unwrap();
        if let Some(url) = line.strip_prefix("appreg listening on ") {
            break url.to_string();
        }
    };
    // Keep draining stdout: a closed pipe would make the server's next print fail.
    std::thread::spawn(move || for _ in lines {});
    (running, url)
}

fn token(data: &Path, sub: &str, admin: bool) -> String {
    let mut cmd = Command::new(EXE);
    cmd.args(["token", "--sub", sub, "--data"]).arg(data);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn stop(mut running: Running) {
    let mut child = running.0.take().expect("running");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "appreg exits cleanly on SIGTERM: {exit}");
}

async fn scenario(data: &Path, url: &str, history_args: &[&str]) {
    let client = reqwest::Client::new();
    let alice = token(data, "alice", false);
    let r = client
        .post(format!("{url}/v1/environments/DEFAULT/applications"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "cli app", "type": "simple", "client_id": "cli-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = client
        .put(format!("{url}/v1/environments/DEFAULT/applications/{id}"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "cli app renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let list: serde_json::Value = client
        .get(format!("{url}/v1/environments/DEFAULT/applications"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Default application", "cli app renamed"],
        "alice's first request gave her a default application"
    );
    let anonymous = client
        .get(format!("{url}/v1/environments/DEFAULT/applications"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // The audit trail, from the binary.
    let out = Command::new(EXE)
        .args(["history", &id])
        .args(history_args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = out.stdout;
    let lines: Vec<serde_json::Value> = String::from_utf8(whole.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["type"], "ApplicationCreated");
    assert_eq!(lines[0]["actor"], "alice");
    assert_eq!(lines[1]["type"], "ApplicationUpdated");
    // Read page by page (one event a page here): the same lines.
    let out = Command::new(EXE)
        .args(["history", &id, "--page-size", "1"])
        .args(history_args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(whole).unwrap()
    );
    for page_size in ["1000", "1"] {
        let out = Command::new(EXE)
            .args(["history", &id, "--version", "1", "--page-size", page_size])
            .args(history_args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["name"], "cli app");
        assert_eq!(state["version"], 1);
        let out = Command::new(EXE)
            .args(["history", &id, "--version", "2", "--page-size", page_size])
            .args(history_args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["name"], "cli app renamed");
        assert_eq!(state["version"], 2);
        let out = Command::new(EXE)
            .args(["history", &id, "--as-of", lines[0]["at"].as_str().unwrap()])
            .args(["--page-size", page_size])
            .args(history_args)
            .output()
            .unwrap();
        assert!(out.status.success());
        let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(state["version"], 1, "--as-of the first event's time");
    }
    let out = Command::new(EXE)
        .args(["history", &uuid::Uuid::now_v7().to_string()])
        .args(history_args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "an unknown application is an error");
}

#[tokio::test]
async fn dev_mode_on_embedded_sqlite() {
    let data = temp_dir("sqlite");
    let (child, url) = start_dev(&data, &[]);
    assert!(data.join("appreg.db").exists());
    let data_arg = data.to_str().unwrap().to_string();
    scenario(&data, &url, &["--data", &data_arg]).await;
    stop(child);
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test]
async fn dev_mode_on_postgres_and_migrate() {
    let db_url = appreg_test_support::postgres::fresh_postgres_url().await;
    for _ in 0..2 {
        let out = Command::new(EXE)
            .args(["migrate", "--database-url", &db_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let data = temp_dir("pg");
    // With --nats-url, appreg dev also runs the relay (a private nats-server).
    let nats = appreg_test_support::nats::NatsServer::start();
    let (child, url) = start_dev(
        &data,
        &["--database-url", &db_url, "--nats-url", &nats.url()],
    );
    assert!(
        !data.join("appreg.db").exists(),
        "no SQLite database when PostgreSQL is given"
    );
    scenario(&data, &url, &["--database-url", &db_url]).await;
    let db = appreg_eventstore::Database::connect(&db_url, 2)
        .await
        .unwrap();
    let store = db.event_store().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
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
    assert!(n >= 3, "the dev scenario's events reached JetStream ({n})");
    stop(child);
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = Command::new(EXE)
        .args(["history", "not-a-uuid"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UUID"));
    let out = Command::new(EXE)
        .args([
            "history",
            &uuid::Uuid::now_v7().to_string(),
            "--page-size",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--page-size"));
    let out = Command::new(EXE)
        .args(["migrate"])
        .env_remove("APPREG_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no database configured"));
}

/// `appreg projections rebuild` against PostgreSQL while `appreg dev` serves the same database:
/// progress on stderr, a summary on stdout, the same lists afterwards, and new writes still
/// projected.
#[tokio::test]
async fn projections_rebuild_on_postgres() {
    let db_url = appreg_test_support::postgres::fresh_postgres_url().await;
    let data = temp_dir("rebuild");
    let (child, url) = start_dev(&data, &["--database-url", &db_url]);
    let client = reqwest::Client::new();
    let alice = token(&data, "alice", false);
    let apps = format!("{url}/v1/environments/DEFAULT/applications");
    for i in 0..30 {
        let r = client
            .post(&apps)
            .bearer_auth(&alice)
            .json(&serde_json::json!({"name": format!("rebuild {i}"), "type": "simple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let list = |client: reqwest::Client, apps: String, alice: String| async move {
        for _ in 0..100 {
            let body: serde_json::Value = client
                .get(format!("{apps}?size=100"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if body["total"].as_i64() >= Some(30) {
                return body;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the applications were not projected");
    };
    let before = list(client.clone(), apps.clone(), alice.clone()).await;

    let out = Command::new(EXE)
        .args([
            "projections",
            "rebuild",
            "applications",
            "--database-url",
            &db_url,
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("rebuilding applications:")
            && stderr.contains("events/s")
            && stderr.contains("ETA"),
        "a progress line: {stderr}"
    );
    assert!(
        stdout.starts_with("rebuilt applications: ")
            && stdout.contains(" applications, checkpoint "),
        "a summary: {stdout}"
    );
    assert_eq!(
        list(client.clone(), apps.clone(), alice.clone()).await,
        before
    );

    let r = client
        .post(&apps)
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "after", "type": "simple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut total = 0;
    for _ in 0..100 {
        let body = list(client.clone(), apps.clone(), alice.clone()).await;
        total = body["total"].as_i64().unwrap();
        if total == before["total"].as_i64().unwrap() + 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        total,
        before["total"].as_i64().unwrap() + 1,
        "the running api's projector follows the swapped tables"
    );

    let out = Command::new(EXE)
        .args(["projections", "rebuild", "audit", "--database-url", &db_url])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no projection \"audit\""));
    stop(child);
    std::fs::remove_dir_all(&data).unwrap();
}

/// `--help` never prints the value of a variable that may carry a password.
#[test]
fn help_hides_connection_strings() {
    for sub in [
        "dev",
        "api",
        "relay",
        "projector",
        "dcr-saga",
        "lifecycle",
        "migrate",
        "history",
    ] {
        let out = Command::new(EXE)
            .args([sub, "--help"])
            .env("APPREG_DATABASE_URL", "postgres://u:hunter2@db/appreg")
            .env("APPREG_NATS_URL", "nats://u:hunter3@nats:4222")
            .output()
            .unwrap();
        assert!(out.status.success(), "appreg {sub} --help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains("hunter2") && !text.contains("hunter3"),
            "appreg {sub} --help shows a password:\n{text}"
        );
    }
}

/// Every process that connects to NATS (`relay`, `projector`, `nats setup`, `dev`) refuses a
/// malformed entry of the server list at start, naming it with its credentials redacted, from
/// the flag and from `APPREG_NATS_URL` alike; never starts on part of the list.
#[test]
fn a_malformed_nats_url_stops_every_nats_process_at_start() {
    let data = temp_dir("bad-nats-url");
    let bad = "nats://n1:4222, nats://app:hunter2@n2:42x22 ,nats://n3:4222";
    let named = "entry 2 of 3 \"nats://***@n2:42x22\"";
    let dev: Vec<String> = ["dev", "--data"]
        .into_iter()
        .map(String::from)
        .chain([data.join("dev").display().to_string()])
        .collect();
    let runs: [Vec<String>; 4] = [
        vec!["relay".into()],
        vec!["projector".into()],
        vec!["nats".into(), "setup".into(), "--wait".into(), "1".into()],
        dev,
    ];
    for args in runs {
        for from_flag in [true, false] {
            let mut command = Command::new(EXE);
            command
                .args(&args)
                .env(
                    "APPREG_DATABASE_URL",
                    "postgres://u:hunter3@127.0.0.1:1/nothing",
                )
                .env("APPREG_LOG_FORMAT", "text");
            if from_flag {
                command
                    .args(["--nats-url", bad])
                    .env_remove("APPREG_NATS_URL");
            } else {
                command.env("APPREG_NATS_URL", bad);
            }
            let started = std::time::Instant::now();
            let out = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "appreg {args:?} started: {stderr}");
            assert!(
                stderr.contains("invalid nats_url") && stderr.contains(named),
                "appreg {args:?}: {stderr}"
            );
            assert!(
                !stderr.contains("hunter2") && !stderr.contains("hunter3"),
                "appreg {args:?} shows a password: {stderr}"
            );
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
        }
    }
    // `dev` stopped before creating its data directory.
    assert!(!data.join("dev").exists());
    let _ = std::fs::remove_dir_all(&data);
}
