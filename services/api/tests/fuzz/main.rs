//! Fuzzes the running api with schemathesis (PyPI) against its own `/openapi.json`: no 5xx, and
//! every response documented (status code, content type, headers, body schema). See
//! `tests/schemathesis/README.md`.
//!
//! Each test spawns the real router and projector on a random port over a fresh PostgreSQL
//! database, seeds a few objects over HTTP, and runs schemathesis (pinned in
//! `tests/schemathesis/requirements.txt`, installed once into a virtualenv under the temporary
//! directory keyed by that file's hash) with one caller's bearer token. A missing `python3` (with
//! its `venv` module) or a failing `pip install` is a failure, never a skip.
//!
//! The api under fuzz reaches nothing beyond loopback: creating or updating a client
//! registration provider validates it live at the URL given in the body, so the process's HTTP
//! proxy is a local sink that refuses every request (checked before the run).
//!
//! `APPREG_FUZZ_EXAMPLES` (examples per operation, default [`DEFAULT_EXAMPLES`]),
//! `APPREG_FUZZ_SEED` (default [`DEFAULT_SEED`]) and `APPREG_FUZZ_ARGS` (more `st run`
//! arguments, split on whitespace, e.g. `--max-time 600`) make a longer campaign.

use appreg_auth::{DevClaims, DevKey};
use appreg_eventstore::Database;
use appreg_test_support::postgres::fresh_postgres_url;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use tokio_util::sync::CancellationToken;

/// Examples per operation (fuzzing phase) in CI: about 30 s per run on two cores.
const DEFAULT_EXAMPLES: u32 = 30;
/// A fixed seed, so that a CI failure reproduces.
const DEFAULT_SEED: u64 = 20_240_607;

fn schemathesis_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/schemathesis")
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        Err(_) => default,
    }
}

// ----- the proxy sink ------------------------------------------------------------------------

const PROXY_VARS: [&str; 8] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
];

/// A local HTTP proxy that answers 403 to every request, and remembers each request line.
struct Sink {
    requests: Arc<Mutex<Vec<String>>>,
    /// The proxy variables as they were before the sink took them over, for child processes
    /// (pip may need the machine's real proxy).
    original: Vec<(&'static str, Option<std::ffi::OsString>)>,
}

/// Points this process's HTTP proxy at the sink, once, before any HTTP client is built.
fn sink() -> &'static Sink {
    static SINK: OnceLock<Sink> = OnceLock::new();
    SINK.get_or_init(|| {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy sink");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                seen.lock().unwrap().push(line);
                let _ = stream.write_all(
                    b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        let original = PROXY_VARS
            .iter()
            .map(|v| (*v, std::env::var_os(v)))
            .collect();
        for v in PROXY_VARS {
            std::env::remove_var(v);
        }
        for v in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
            std::env::set_var(v, &url);
        }
        Sink { requests, original }
    })
}

impl Sink {
    /// A command for a child process, with the proxy variables of the machine.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        self.proxy_env(&mut command);
        command
    }

    /// Gives a child process the proxy variables of the machine.
    fn proxy_env(&self, command: &mut Command) {
        for (name, value) in &self.original {
            match value {
                Some(v) => command.env(name, v),
                None => command.env_remove(name),
            };
        }
    }
}

// ----- the virtualenv ------------------------------------------------------------------------

/// The virtualenv's interpreter with the pinned requirements installed (pip with the machine's
/// proxy variables, not the sink's).
fn schemathesis_python(sink: &Sink) -> PathBuf {
    appreg_test_support::python::venv_with(
        &schemathesis_dir().join("requirements.txt"),
        "schemathesis",
        "the schemathesis fuzz test needs python3 (>= 3.11, as schemathesis 4 does) with venv and \
         pip (Debian: apt-get install python3 python3-venv python3-pip)",
        std::ffi::OsStr::new("python3"),
        &|command| sink.proxy_env(command),
    )
}

// ----- the api -------------------------------------------------------------------------------

struct Api {
    base: String,
    key: DevKey,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn_api() -> Api {
    let url = fresh_postgres_url().await;
    let config = appreg_test_support::app::config("fuzz");
    let db = Database::connect(&url, 16).await.expect("database");
    let (key, _) = appreg_test_support::tokens::fresh_key();
    let api = appreg_test_support::app::TestApi::start(&db, &config, &key).await;
    Api {
        base: api.base,
        key,
        client: reqwest::Client::builder().no_proxy().build().unwrap(),
        shutdown: api.shutdown,
    }
}

impl Api {
    /// A token for `sub`, valid for a day (long campaigns).
    fn token(&self, sub: &str, admin: bool) -> String {
        let claims = DevClaims {
            email: Some(format!("{sub}@example.com")),
            ..appreg_test_support::tokens::claims(sub, admin, 86_400)
        };
        appreg_test_support::tokens::sign(&self.key, &claims)
    }

    async fn send(&self, method: reqwest::Method, path: &str, token: &str, body: Value) -> Value {
        let url = format!("{}/v1/environments/DEFAULT/{path}", self.base);
        let response = self
            .client
            .request(method.clone(), &url)
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "seeding: {method} {path} answered {status}: {body}"
        );
        body
    }
}

/// What the tests seed, for the path parameters.
#[derive(Default)]
struct Seeded {
    applications: Vec<String>,
    apis: Vec<String>,
    plans: Vec<String>,
    subscriptions: Vec<String>,
    users: Vec<String>,
}

async fn seed(api: &Api, admin: &str, user: &str) -> Seeded {
    use reqwest::Method;
    let mut seeded = Seeded {
        users: vec!["fuzz-user".into(), "fuzz-member".into()],
        ..Default::default()
    };
    for (token, name) in [
        (user, "Fuzz one"),
        (user, "Fuzz two"),
        (admin, "Fuzz admin's"),
    ] {
        let app = api
            .send(
                Method::POST,
                "applications",
                token,
                json!({ "name": name, "type": "simple", "description": "seeded" }),
            )
            .await;
        seeded.applications.push(app["id"].as_str().unwrap().into());
    }
    let member = api.token("fuzz-member", false);
    api.send(Method::GET, "applications", &member, Value::Null)
        .await;
    let first = seeded.applications[0].clone();
    api.send(
        Method::POST,
        &format!("applications/{first}/members"),
        user,
        json!({ "user": "fuzz-member", "role": "USER" }),
    )
    .await;
    let archived = api
        .send(
            Method::POST,
            "applications",
            user,
            json!({ "name": "Fuzz archived", "type": "simple" }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!(
        "{}/v1/environments/DEFAULT/applications/{archived}",
        api.base
    );
    let status = api
        .client
        .delete(url)
        .bearer_auth(user)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 204, "seeding: archive");
    seeded.applications.push(archived);

    let catalogue = api
        .send(
            Method::POST,
            "apis",
            admin,
            json!({ "name": "Fuzz API", "description": "seeded" }),
        )
        .await;
    let api_id = catalogue["id"].as_str().unwrap().to_string();
    for (name, security, validation) in [
        ("Keys", "API_KEY", "AUTO"),
        ("Manual keys", "API_KEY", "MANUAL"),
    ] {
        let plan = api
            .send(
                Method::POST,
                &format!("apis/{api_id}/plans"),
                admin,
                json!({ "name": name, "security": security, "validation": validation }),
            )
            .await;
        seeded.plans.push(plan["id"].as_str().unwrap().into());
    }
    for plan in seeded.plans.clone() {
        let subscription = api
            .send(
                Method::POST,
                &format!("applications/{first}/subscriptions"),
                user,
                json!({ "plan_id": plan }),
            )
            .await;
        seeded
            .subscriptions
            .push(subscription["id"].as_str().unwrap().into());
    }
    seeded.apis.push(api_id);
    seeded
}

/// Checks that the api's outgoing HTTP goes to the sink: a provider whose discovery endpoint
/// is on a reserved name (never resolved) must be refused after a request to the sink.
async fn assert_outbound_goes_to_sink(api: &Api, sink: &Sink, admin: &str) {
    let url = format!(
        "{}/v1/environments/DEFAULT/client-registration-providers",
        api.base
    );
    let response = api
        .client
        .post(url)
        .bearer_auth(admin)
        .json(&json!({
            "name": "Sink check",
            "discovery_endpoint": "https://sink-check.invalid/.well-known/openid-configuration",
            "initial_access_token_type": "INITIAL_ACCESS_TOKEN",
            "initial_access_token": "not-a-secret",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422, "a provider nobody can reach");
    let requests = sink.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.contains("sink-check.invalid")),
        "the api's HTTP client must go through the proxy sink; it saw {requests:?}"
    );
}

// ----- schemathesis --------------------------------------------------------------------------

/// The configuration file of a run: the repository's, and the seeded ids.
fn write_config(dir: &Path, seeded: &Seeded) -> PathBuf {
    let base = std::fs::read_to_string(schemathesis_dir().join("schemathesis.toml")).unwrap();
    let list = |values: &[String]| {
        let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        format!("[{}]", quoted.join(", "))
    };
    let config = format!(
        "{base}
# ----- appended by services/api/tests/fuzz: the seeded objects ------------------------------
[dictionaries.environments]
values = [\"DEFAULT\"]
[dictionaries.applications]
values = {applications}
[dictionaries.apis]
values = {apis}
[dictionaries.plans]
values = {plans}
[dictionaries.subscriptions]
values = {subscriptions}
[dictionaries.users]
values = {users}

[parameters]
\"path.env\" = {{ dictionary = \"environments\", probability = 0.9 }}
\"path.id\" = {{ dictionary = \"applications\", probability = 0.7 }}
\"path.api\" = {{ dictionary = \"apis\", probability = 0.7 }}
\"path.plan\" = {{ dictionary = \"plans\", probability = 0.7 }}
\"path.sid\" = {{ dictionary = \"subscriptions\", probability = 0.7 }}
\"path.user\" = {{ dictionary = \"users\", probability = 0.7 }}
",
        applications = list(&seeded.applications),
        apis = list(&seeded.apis),
        plans = list(&seeded.plans),
        subscriptions = list(&seeded.subscriptions),
        users = list(&seeded.users),
    );
    let path = dir.join("schemathesis.toml");
    std::fs::write(&path, config).unwrap();
    path
}

/// Runs schemathesis with an administrator's token, or a plain user's (a member of the seeded
/// applications); panics with its report when it finds anything.
async fn fuzz(admin: bool) {
    let sink = sink();
    let python = tokio::task::spawn_blocking(move || schemathesis_python(sink))
        .await
        .unwrap();
    let api = spawn_api().await;
    let admin_token = api.token("fuzz-admin", true);
    let user_token = api.token("fuzz-user", false);
    let seeded = seed(&api, &admin_token, &user_token).await;
    assert_outbound_goes_to_sink(&api, sink, &admin_token).await;

    let work = std::env::temp_dir().join(format!("appreg-fuzz-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let config = write_config(&work, &seeded);
    let examples: u32 = env_or("APPREG_FUZZ_EXAMPLES", DEFAULT_EXAMPLES);
    let seed: u64 = env_or("APPREG_FUZZ_SEED", DEFAULT_SEED);
    let extra = std::env::var("APPREG_FUZZ_ARGS").unwrap_or_default();
    let mut command = sink.command(&python);
    command
        .current_dir(&work)
        .env(
            "APPREG_FUZZ_TOKEN",
            if admin { &admin_token } else { &user_token },
        )
        .env("NO_COLOR", "1")
        .args(["-m", "schemathesis.cli", "--config-file"])
        .arg(&config)
        .arg("run")
        .arg(format!("{}/openapi.json", api.base))
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(extra.split_whitespace())
        .stdin(Stdio::null());
    let started = std::time::Instant::now();
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("cannot run schemathesis");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let who = if admin { "administrator" } else { "user" };
    std::fs::write(work.join("report.txt"), &report).unwrap();
    assert!(
        output.status.success(),
        "schemathesis as {who} found problems ({}); its files are in {}. Reproduce with \
         APPREG_FUZZ_SEED={seed} APPREG_FUZZ_EXAMPLES={examples}.\n{report}",
        output.status,
        work.display()
    );
    eprintln!(
        "schemathesis as {who} ({examples} examples, seed {seed}) passed in {:?}:\n{report}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_as_administrator() {
    fuzz(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_as_user() {
    fuzz(false).await;
}
