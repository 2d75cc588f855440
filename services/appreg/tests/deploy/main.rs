//! The deployment files of `deploy/`:
//!
//! - `deploy/check/check.py`, in a Python virtualenv with the pinned packages of
//!   `deploy/check/requirements.txt` (built once under the target directory, keyed by a hash of
//!   that file and of the Python version): every Kubernetes manifest against the official
//!   Kubernetes schemas (strict), `compose.yaml` against the Compose Specification schema,
//!   compose and Kubernetes naming the same services, ports, probes and `APPREG_*` settings, and
//!   no secret in a ConfigMap or in `deploy/appreg.toml`;
//! - `appreg nats setup` against a private `nats-server`: the stream and the projector's and the
//!   notifier's consumers of `deploy/nats/` are created, a second run changes nothing, drift is
//!   repaired;
//! - the consumer definitions in `deploy/nats/consumers/` are what the projector and the notifier
//!   create.
//!
//! A missing `python3`, `venv` or `pip` (or `nats-server`) is a failure, never a skip.

use appreg_projector::{consumer_config, ProjectorConfig};
use async_nats::jetstream::consumer::{pull, AckPolicy};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

mod architecture;
mod nats_permissions;

const EXE: &str = env!("CARGO_BIN_EXE_appreg");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn run(command: &mut Command, what: &str, hint: &str) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run it ({e}). {hint}"));
    if !output.status.success() {
        panic!(
            "{what} failed ({}). {hint}\n--- stdout\n{}\n--- stderr\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

const PYTHON_HINT: &str = "The deploy test needs Python 3 with venv and pip (Debian: apt-get \
                           install python3 python3-venv python3-pip; another interpreter: \
                           APPREG_TEST_PYTHON=/path/to/python3) and, on its first run, access to \
                           PyPI";

/// The checker's virtualenv (its directory): reused when it exists for these requirements and
/// this Python, else built in a directory of its own and renamed into place.
fn venv() -> PathBuf {
    let python = std::env::var_os("APPREG_TEST_PYTHON").unwrap_or_else(|| "python3".into());
    let interpreter = appreg_test_support::python::venv_with(
        &repo().join("deploy/check/requirements.txt"),
        "deploy-check",
        PYTHON_HINT,
        &python,
        &|_| {},
    );
    interpreter
        .parent()
        .and_then(Path::parent)
        .expect("bin/python in the virtualenv")
        .to_path_buf()
}

#[test]
fn the_manifests_pass_the_checker() {
    let started = Instant::now();
    let venv = venv();
    let prepared = started.elapsed();
    let output = Command::new(venv.join("bin/python"))
        .arg(repo().join("deploy/check/check.py"))
        .arg("--repo")
        .arg(repo())
        .output()
        .expect("run deploy/check/check.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    println!(
        "virtualenv ready in {:.1}s, checks in {:.1}s",
        prepared.as_secs_f64(),
        (started.elapsed() - prepared).as_secs_f64()
    );
    assert!(
        output.status.success(),
        "deploy/check/check.py found problems in deploy/:\n{stdout}{stderr}"
    );
    assert_eq!(stdout.lines().filter(|l| l.starts_with("ok: ")).count(), 3);
}

#[test]
fn the_consumer_definition_is_what_the_projector_creates() {
    let shipped = read_json(&repo().join("deploy/nats/consumers/appreg-projector.json"));
    let created = serde_json::to_value(consumer_config(&ProjectorConfig::default())).unwrap();
    assert_eq!(
        shipped, created,
        "deploy/nats/consumers/appreg-projector.json differs from the projector's consumer_config"
    );
    let parsed: pull::Config = serde_json::from_value(shipped).unwrap();
    assert_eq!(parsed.durable_name.as_deref(), Some("appreg-projector"));
    assert_eq!(parsed.ack_policy, AckPolicy::All);
    assert_eq!(parsed.filter_subject, "appreg.>");
}

#[test]
fn the_consumer_definition_is_what_the_notifier_creates() {
    let shipped = read_json(&repo().join("deploy/nats/consumers/appreg-notifier.json"));
    let config = appreg_config::Config::defaults();
    let created = serde_json::to_value(appreg_worker::consumer::pull_config(
        &appreg_notifier::service::consumer_config(&config),
    ))
    .unwrap();
    assert_eq!(
        shipped, created,
        "deploy/nats/consumers/appreg-notifier.json differs from the notifier's consumer_config"
    );
    let parsed: pull::Config = serde_json::from_value(shipped).unwrap();
    assert_eq!(parsed.durable_name.as_deref(), Some("appreg-notifier"));
    assert_eq!(parsed.ack_policy, AckPolicy::All);
    assert_eq!(parsed.filter_subject, "appreg.>");
}

/// `appreg nats setup` with a configuration of its own names (no APPREG_* of the caller).
fn setup(url: &str, extra: &[&str]) -> String {
    let mut command = Command::new(EXE);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("APPREG_") {
            command.env_remove(name);
        }
    }
    let output = run(
        command
            .args(["nats", "setup", "--nats-url", url, "--wait", "20"])
            .args(extra)
            .env("APPREG_NATS_STREAM", "T_DEPLOY")
            .env("APPREG_NATS_SUBJECT_PREFIX", "t.deploy")
            .env("APPREG_PROJECTOR__CONSUMER", "t-deploy-projector"),
        "appreg nats setup",
        "",
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{stdout}");
    stdout
}

/// The `<what>: <outcome>` of each line `appreg nats setup` printed.
fn outcomes(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| l.rsplit_once("): ").map_or(l, |(_, o)| o).to_string())
        .collect()
}

/// Every setting of a definition file (but its name and subjects) as the server has it.
fn assert_server_has(definition: &serde_json::Value, server: &serde_json::Value, skip: &[&str]) {
    for (key, wanted) in definition.as_object().unwrap() {
        if skip.contains(&key.as_str()) {
            continue;
        }
        let actual = server.get(key).unwrap_or(&serde_json::Value::Null);
        let blank = |v: &serde_json::Value| matches!(v, serde_json::Value::Null) || *v == false;
        assert!(
            actual == wanted || (blank(actual) && blank(wanted)),
            "{key}: the server has {actual}, the definition says {wanted}"
        );
    }
}

#[tokio::test]
async fn nats_setup_creates_the_stream_and_consumer_and_a_second_run_changes_nothing() {
    let nats = appreg_test_support::nats::NatsServer::start();
    let url = nats.url();

    let first = setup(&url, &[]);
    assert_eq!(
        outcomes(&first),
        ["created", "created", "created"],
        "{first}"
    );
    let second = setup(&url, &[]);
    assert_eq!(
        outcomes(&second),
        ["unchanged", "unchanged", "unchanged"],
        "{second}"
    );

    // The stream and the consumer have the definitions' settings, under the configured names.
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("T_DEPLOY").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, ["t.deploy.>"]);
    let server_stream = serde_json::to_value(&config).unwrap();
    let stream_definition = read_json(&repo().join("deploy/nats/APPREG_EVENTS.json"));
    assert_server_has(&stream_definition, &server_stream, &["name", "subjects"]);
    let consumer = stream.consumer_info("t-deploy-projector").await.unwrap();
    assert_eq!(
        consumer.config.durable_name.as_deref(),
        Some("t-deploy-projector")
    );
    assert_eq!(consumer.config.filter_subject, "t.deploy.>");
    let consumer_definition =
        read_json(&repo().join("deploy/nats/consumers/appreg-projector.json"));
    assert_server_has(
        &consumer_definition,
        &serde_json::to_value(&consumer.config).unwrap(),
        &["durable_name", "filter_subject"],
    );
    let notifier = stream.consumer_info("appreg-notifier").await.unwrap();
    assert_eq!(notifier.config.filter_subject, "t.deploy.>");
    assert_server_has(
        &read_json(&repo().join("deploy/nats/consumers/appreg-notifier.json")),
        &serde_json::to_value(&notifier.config).unwrap(),
        &["durable_name", "filter_subject"],
    );

    // Drift (someone changed the consumer by hand) is repaired, then nothing changes again.
    stream
        .create_consumer(pull::Config {
            ack_wait: Duration::from_secs(10),
            ..consumer_config(&ProjectorConfig {
                consumer: "t-deploy-projector".into(),
                subject_prefix: "t.deploy".into(),
                ..ProjectorConfig::default()
            })
        })
        .await
        .unwrap();
    let repaired = setup(&url, &[]);
    assert_eq!(
        outcomes(&repaired),
        [
            "unchanged",
            "updated (ack_wait: 10000000000 → 30000000000)",
            "unchanged"
        ],
        "{repaired}"
    );
    let consumer = stream.consumer_info("t-deploy-projector").await.unwrap();
    assert_eq!(consumer.config.ack_wait, Duration::from_secs(30));
    assert_eq!(
        outcomes(&setup(&url, &[])),
        ["unchanged", "unchanged", "unchanged"]
    );

    // Replicas are the operator's: `--replicas` sets them, and neither a later run without it
    // nor a relay starting with the single-node definition undoes that. (A standalone
    // nats-server keeps the setting as given; a cluster places that many copies.)
    let scaled = setup(&url, &["--replicas", "3"]);
    assert_eq!(
        outcomes(&scaled),
        ["updated (num_replicas: 1 → 3)", "unchanged", "unchanged"],
        "{scaled}"
    );
    assert_eq!(
        outcomes(&setup(&url, &[])),
        ["unchanged", "unchanged", "unchanged"]
    );
    let definition = appreg_worker::stream::definition("T_DEPLOY", "t.deploy").unwrap();
    assert_eq!(definition.num_replicas, 1);
    let mut kept = appreg_worker::stream::ensure(&js, &definition)
        .await
        .unwrap();
    assert_eq!(kept.info().await.unwrap().config.num_replicas, 3);
}

/// Every `APPREG_NATS_URL` the deployment files ship (compose.yaml's list, the Kubernetes
/// Secret's placeholder list) is what the services' one parser accepts, all three servers.
#[test]
fn the_shipped_nats_server_lists_parse() {
    fn collect(v: &serde_json::Value, found: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    match (k.as_str(), v) {
                        ("APPREG_NATS_URL", serde_json::Value::String(s)) => found.push(s.clone()),
                        _ => collect(v, found),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, found)),
            _ => {}
        }
    }
    for file in ["deploy/compose.yaml", "deploy/k8s/11-secret.yaml"] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
        let mut found = Vec::new();
        collect(&serde_json::to_value(&yaml).unwrap(), &mut found);
        assert!(!found.is_empty(), "{file} sets no APPREG_NATS_URL");
        for list in found {
            let servers = appreg_config::NatsServers::parse(&list, None)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(servers.urls().len(), 3, "{file}: {list}");
        }
    }
}

/// A nats-server that requires a user and password: `appreg nats setup` gets in with the
/// credentials written in one URL of a list (the client library ignores URL credentials; the
/// parser hands them to it) or given in `APPREG_NATS_CREDENTIALS`, and is refused without.
#[test]
fn nats_setup_authenticates_with_the_credentials_of_the_list() {
    let port = appreg_test_support::nats::free_port();
    let dir = std::env::temp_dir().join(format!(
        "appreg-deploy-auth-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Command::new(appreg_test_support::nats::nats_server_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string()])
        .args(["--user", "appreg", "--pass", "s3cr@t", "-sd"])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nats-server");
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let attempt = |list: &str, credentials: Option<&str>| {
        let mut command = Command::new(EXE);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("APPREG_") {
                command.env_remove(name);
            }
        }
        if let Some(c) = credentials {
            command.env("APPREG_NATS_CREDENTIALS", c);
        }
        command
            .args(["nats", "setup", "--nats-url", list, "--wait", "5"])
            .env("APPREG_NATS_STREAM", "T_AUTH")
            .env("APPREG_NATS_SUBJECT_PREFIX", "t.auth")
            .output()
            .unwrap()
    };
    let ok = |out: &Output| {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!text.contains("s3cr"), "a password in the output: {text}");
        (out.status.success(), text)
    };
    let in_url = format!("nats://127.0.0.1:{port}, nats://appreg:s3cr%40t@127.0.0.1:{port}");
    let (success, text) = ok(&attempt(&in_url, None));
    assert!(success, "credentials in a URL of the list: {text}");
    let plain = format!("nats://127.0.0.1:{port}");
    let (success, text) = ok(&attempt(&plain, Some("appreg:s3cr@t")));
    assert!(success, "credentials in APPREG_NATS_CREDENTIALS: {text}");
    assert!(text.contains("unchanged"), "{text}");
    let (success, text) = ok(&attempt(&plain, None));
    assert!(!success, "no credentials, yet set up: {text}");
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
