//! The deployed topology, for real: what `deploy/compose.yaml` describes, run without containers
//! on loopback — PostgreSQL with the file's settings (a private server: the file's
//! `max_connections`, user, password and database), its three clustered `nats-server`s with the
//! file's arguments, the one-shot `migrate` and `nats-setup`, and every appreg service as many
//! times as the file runs it (the real `appreg` binary). Each process gets its command and
//! environment by reading compose.yaml (anchors, merges and `${VAR}` of `.env` resolved); the
//! test only moves hosts and ports to free loopback ports (every `service:port` and
//! `0.0.0.0:port`, the api's `listen`), maps the volumes to directories, and points the token
//! issuer's URLs (`auth.issuer`, `auth.jwks_url`) at a JWKS it serves. Start order, readiness
//! and restarts follow the file's `depends_on` conditions, healthchecks and `restart` policies.
//!
//! Under a mixed load through both apis (creates of simple and OAuth applications — registered
//! by the DCR saga at the npm `oidc-provider` —, renames, members, subscriptions, archives,
//! restores), it SIGKILLs in turn the active relay, a projector, the active DCR saga, the NATS
//! node leading the stream, and then both projectors, held down until the apis' `/readyz` is
//! red. Afterwards it checks that every acknowledged command is in the read model of both apis,
//! that JetStream holds every stored event exactly once in log order with the stream at R3 and
//! its replicas current, and that each api's `/readyz` went red (503) while no projector was
//! running and green again afterwards. It prints what it did and what it saw.
//!
//! Profiles: `short_profile` (about 45 s of load, in CI) and `long_profile` (8 minutes of
//! load, about 10 in all, four rounds of faults; `cargo nextest run -p appreg --test topology
//! --run-ignored only --no-capture`). `APPREG_TOPOLOGY_SECONDS` overrides the load's duration;
//! `APPREG_TOPOLOGY_KEEP=1` keeps the run's directory (logs). A missing `nats-server`,
//! PostgreSQL server binaries or Node.js fails the test, never skips it.

mod compose;
#[allow(dead_code)] // the fault suite's crash and restart are not used here
#[path = "../faults/pg.rs"]
mod pg;

use appreg_auth::{DevClaims, DevKey};
use appreg_config::{NatsAuth, NatsServers};
use appreg_eventstore::Database;
use appreg_test_support::nats::{
    all_events, assert_exactly_once, free_port, nats_server_binary, Published,
};
use appreg_test_support::settle::quiescent;
use compose::{Compose, Kind, Volume};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_appreg");
/// What `deploy/.env` holds for compose's `${…}` (see `deploy/.env.example`).
const POSTGRES_PASSWORD: &str = "topology-pw";
const MASTER_KEY: &str = "topology:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The NATS users' passwords (compose.yaml's `.env`): the servers load the accounts of
/// `deploy/nats/accounts.conf` with them, each service connects as its own user.
const NATS_RELAY_PASSWORD: &str = "topologyRelayPw";
const NATS_PROJECTOR_PASSWORD: &str = "topologyProjectorPw";
const NATS_NOTIFIER_PASSWORD: &str = "topologyNotifierPw";
const NATS_SETUP_PASSWORD: &str = "topologySetupPw";
/// The client port of a `nats-server` that names none (compose's nodes use the default).
const NATS_CLIENT_PORT: u16 = 4222;
/// The port of a PostgreSQL server that names none.
const POSTGRES_PORT: u16 = 5432;
/// How long a killed service stays down before its `restart` policy brings it back.
const RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long the killed NATS node stays down.
const NATS_DOWN: Duration = Duration::from_secs(4);

struct Profile {
    name: &'static str,
    load: Duration,
    clients: usize,
    /// Each round kills the active relay, a projector, the active saga, a NATS node, then both
    /// projectors.
    rounds: usize,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn is_set(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

// ------------------------------------------------------------------------------ processes

/// One process of the topology (a NATS node or an appreg service), restartable with the same
/// command, environment and ports.
struct Proc {
    name: String,
    kind: Kind,
    program: PathBuf,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    log: PathBuf,
    /// The healthcheck: an HTTP URL, or a command.
    health: Option<Health>,
    restart: String,
    child: Option<Child>,
    /// Length of the log when the current incarnation started.
    log_start: u64,
    /// Exit status of a finished one-shot.
    exited: Option<std::process::ExitStatus>,
}

#[derive(Clone)]
enum Health {
    Http(String),
    Command(Vec<String>),
}

impl Proc {
    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        self.log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(&self.env)
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display())),
        );
        self.exited = None;
    }

    /// SIGKILL (a crash: no shutdown path runs).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The log of the current incarnation.
    fn current_log(&self) -> String {
        let text = std::fs::read(&self.log).unwrap_or_default();
        let start = (self.log_start as usize).min(text.len());
        String::from_utf8_lossy(&text[start..]).into_owned()
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    async fn healthy(&self, http: &reqwest::Client) -> bool {
        match &self.health {
            None => self.child.is_some(),
            Some(Health::Http(url)) => http
                .get(url)
                .timeout(Duration::from_secs(3))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
            Some(Health::Command(cmd)) => Command::new(&cmd[0])
                .args(&cmd[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap_or_else(|e| {
                    panic!("{}: cannot run its healthcheck {}: {e}", self.name, cmd[0])
                })
                .success(),
        }
    }

    async fn wait_healthy(&mut self, http: &reqwest::Client, within: Duration) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "{} exited ({status}) instead of becoming healthy; its log ends with:\n{}",
                        self.name,
                        self.log_tail()
                    );
                }
            }
            if self.healthy(http).await {
                return;
            }
            assert!(
                started.elapsed() < within,
                "{} did not become healthy within {within:?}; its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits for a one-shot to finish and requires success.
    async fn wait_completed(&mut self, within: Duration) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited {
                assert!(
                    status.success(),
                    "{} failed ({status}); its log ends with:\n{}",
                    self.name,
                    self.log_tail()
                );
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exited = Some(status);
                    self.child = None;
                    continue;
                }
            }
            assert!(
                started.elapsed() < within,
                "{} did not finish within {within:?}; its log ends with:\n{}",
                self.name,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The whole topology; every process is killed on drop.
struct Topology {
    run_dir: PathBuf,
    procs: Vec<Proc>,
    postgres: Option<pg::PrivatePostgres>,
    /// The appreg database, as the superuser sees it (for the checks).
    db_url: String,
    /// `APPREG_NATS_URL` as the services got it.
    nats_url: String,
    /// `APPREG_NATS_CREDENTIALS` of the relay (the test reads the stream as the relay's user).
    relay_nats_credentials: String,
    api_urls: Vec<String>,
}

impl Topology {
    fn index(&self, name: &str) -> usize {
        self.procs
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no process {name}"))
    }

    fn names(&self, prefix: &str) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.name.starts_with(prefix) && p.kind == Kind::Appreg)
            .map(|p| p.name.clone())
            .collect()
    }

    fn kill(&mut self, name: &str) {
        let i = self.index(name);
        self.procs[i].kill();
    }

    /// What the service's `restart` policy does after a crash (`unless-stopped`, `always`,
    /// `on-failure`: start it again).
    fn restart(&mut self, name: &str) {
        let i = self.index(name);
        let policy = self.procs[i].restart.clone();
        assert!(
            policy == "unless-stopped" || policy == "always" || policy.starts_with("on-failure"),
            "{name} has restart: {policy}: it would stay down after a crash"
        );
        self.procs[i].spawn();
    }

    /// The instance of `prefix` (e.g. `relay-`) whose current incarnation logged `marker`
    /// (e.g. `relay: active`): the one holding the lock.
    async fn active(&self, prefix: &str, marker: &str) -> String {
        let started = Instant::now();
        loop {
            let active: Vec<&Proc> = self
                .procs
                .iter()
                .filter(|p| p.name.starts_with(prefix) && p.child.is_some())
                .filter(|p| p.current_log().contains(marker))
                .collect();
            if let [one] = active.as_slice() {
                return one.name.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no single active {prefix}* ({} logged {marker:?})",
                active.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        drop(self.postgres.take());
        if std::thread::panicking() || is_set("APPREG_TOPOLOGY_KEEP") {
            eprintln!("kept {} (the processes' logs)", self.run_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.run_dir);
        }
    }
}

/// `listen` of `deploy/appreg.toml` (the api's address; compose publishes its port).
fn toml_listen(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("listen = "))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{} sets no listen", path.display()))
}

/// Every `HOST:PORT` of the file whose host is a service (or the service's own `0.0.0.0`,
/// `127.0.0.1`, `localhost`), every `--http_port`, published port, and the NATS client port:
/// the ports to move to loopback.
fn container_ports(c: &Compose) -> BTreeMap<(String, u16), u16> {
    let mut wanted: HashSet<(String, u16)> = HashSet::new();
    for s in c.services.values() {
        let mut texts: Vec<&String> = s.command.iter().chain(s.environment.values()).collect();
        texts.extend(s.healthcheck.iter().flatten());
        for text in texts {
            compose::rewrite_addresses(text, |host, port| {
                if c.services.contains_key(host) {
                    wanted.insert((host.to_string(), port));
                } else if matches!(host, "0.0.0.0" | "127.0.0.1" | "localhost") {
                    wanted.insert((s.name.clone(), port));
                }
                None
            });
        }
        for w in s.command.windows(2) {
            if w[0] == "--http_port" || w[0] == "-m" {
                wanted.insert((s.name.clone(), w[1].parse().expect("--http_port N")));
            }
        }
        for port in &s.ports {
            wanted.insert((s.name.clone(), *port));
        }
        if s.kind == Kind::Nats {
            wanted.insert((s.name.clone(), NATS_CLIENT_PORT));
        }
    }
    // Distinct ports (free_port may hand out one twice).
    let mut taken = HashSet::new();
    wanted
        .into_iter()
        .filter(|(service, _)| c.services[service].kind != Kind::Postgres)
        .map(|k| loop {
            let port = free_port();
            if taken.insert(port) {
                break (k, port);
            }
        })
        .collect()
}

/// Serves the token issuer's keys (`GET /jwks`), as `auth.jwks_url` expects; returns the issuer
/// URL.
async fn serve_jwks(key: &DevKey) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let jwks = json!({ "keys": [serde_json::to_value(key.jwk()).unwrap()] });
    let app = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

fn sign(key: &DevKey, issuer: &str, sub: &str, admin: bool) -> String {
    let claims = DevClaims {
        iss: issuer.into(),
        name: None,
        ..appreg_test_support::tokens::claims(sub, admin, 4 * 3600)
    };
    appreg_test_support::tokens::sign(key, &claims)
}

/// Starts what compose.yaml describes, in its `depends_on` order, each service once its
/// dependencies meet their conditions; then waits, as `docker compose up --wait`, for every
/// healthcheck.
async fn start(http: &reqwest::Client, issuer: &str) -> Topology {
    let deploy = repo().join("deploy");
    let env = BTreeMap::from([
        ("POSTGRES_PASSWORD", POSTGRES_PASSWORD.to_string()),
        ("APPREG_SECRETS_MASTER_KEY", MASTER_KEY.to_string()),
        (
            "APPREG_NATS_RELAY_PASSWORD",
            NATS_RELAY_PASSWORD.to_string(),
        ),
        (
            "APPREG_NATS_PROJECTOR_PASSWORD",
            NATS_PROJECTOR_PASSWORD.to_string(),
        ),
        (
            "APPREG_NATS_NOTIFIER_PASSWORD",
            NATS_NOTIFIER_PASSWORD.to_string(),
        ),
        (
            "APPREG_NATS_SETUP_PASSWORD",
            NATS_SETUP_PASSWORD.to_string(),
        ),
    ]);
    // The variables the test gives are the ones deploy/.env.example names.
    let example = std::fs::read_to_string(deploy.join(".env.example")).unwrap();
    let mut named: Vec<&str> = example
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .filter(|k| !k.starts_with('#'))
        .collect();
    named.sort_unstable();
    assert_eq!(
        named,
        env.keys().copied().collect::<Vec<_>>(),
        "deploy/.env.example names other variables than the test gives compose.yaml"
    );
    let compose = Compose::load(&deploy.join("compose.yaml"), &env);
    let run_dir =
        std::env::temp_dir().join(format!("appreg-topology-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&run_dir).unwrap();

    // PostgreSQL first (nothing it depends on): the file's server arguments, then what the
    // image's entrypoint does with POSTGRES_USER, _PASSWORD and _DB.
    let (pg_name, pg_service) = compose
        .services
        .iter()
        .find(|(_, s)| s.kind == Kind::Postgres)
        .expect("compose.yaml has a PostgreSQL service");
    assert!(pg_service.depends_on.is_empty());
    let settings: Vec<String> = match pg_service.command.split_first() {
        Some((program, rest)) if program == "postgres" => rest.to_vec(),
        None => vec![],
        Some(_) => panic!("{pg_name}: the command is not `postgres …`"),
    };
    let postgres = pg::PrivatePostgres::start_with(&settings);
    let superuser = postgres.url("postgres");
    let pg_port: u16 = superuser
        .rsplit_once(':')
        .and_then(|(_, r)| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("the private server's port");
    let user = &pg_service.environment["POSTGRES_USER"];
    let database = &pg_service.environment["POSTGRES_DB"];
    {
        let admin = Database::connect(&superuser, 1).await.unwrap();
        let Database::Postgres(pool) = &admin else {
            unreachable!()
        };
        let password = pg_service.environment["POSTGRES_PASSWORD"].replace('\'', "''");
        for sql in [
            format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"),
            format!("CREATE DATABASE \"{database}\" OWNER \"{user}\""),
        ] {
            sqlx::query(&sql).execute(pool).await.unwrap();
        }
        admin.close().await;
    }

    let mut ports = container_ports(&compose);
    ports.insert((pg_name.clone(), POSTGRES_PORT), pg_port);
    let listen = toml_listen(&deploy.join("appreg.toml"));
    let volumes_dir = run_dir.join("volumes");
    let mut topology = Topology {
        run_dir: run_dir.clone(),
        procs: Vec::new(),
        postgres: Some(postgres),
        db_url: format!("postgres://postgres@127.0.0.1:{pg_port}/{database}"),
        nats_url: String::new(),
        relay_nats_credentials: String::new(),
        api_urls: Vec::new(),
    };

    for name in compose.start_order() {
        let service = &compose.services[&name];
        // Its dependencies' conditions.
        for (dep, condition) in &service.depends_on {
            if compose.services[dep].kind == Kind::Postgres {
                continue; // started and set up above; its healthcheck is checked below
            }
            let i = topology.index(dep);
            match condition.as_str() {
                "service_healthy" => {
                    topology.procs[i]
                        .wait_healthy(http, Duration::from_secs(90))
                        .await
                }
                "service_completed_successfully" => {
                    topology.procs[i]
                        .wait_completed(Duration::from_secs(120))
                        .await
                }
                "service_started" => {}
                other => panic!("{name}: depends_on condition {other} is not understood"),
            }
        }
        let own = |host: &str, port: u16| -> Option<u16> {
            let owner = if matches!(host, "0.0.0.0" | "127.0.0.1" | "localhost") {
                name.as_str()
            } else {
                host
            };
            ports.get(&(owner.to_string(), port)).copied()
        };
        let volume_path = |path: &str| -> Option<String> {
            service.volumes.iter().find_map(|(source, target)| {
                let rest = path.strip_prefix(target.as_str())?;
                if !(rest.is_empty() || rest.starts_with('/')) {
                    return None;
                }
                let host = match source {
                    Volume::Bind(p) => p.clone(),
                    Volume::Named(v) => {
                        let dir = volumes_dir.join(v);
                        std::fs::create_dir_all(&dir).unwrap();
                        dir
                    }
                };
                Some(format!("{}{rest}", host.display()))
            })
        };
        let rewrite = |s: &str| -> String {
            volume_path(s).unwrap_or_else(|| compose::rewrite_addresses(s, own))
        };
        match service.kind {
            Kind::Postgres => {
                let check = service
                    .healthcheck
                    .clone()
                    .expect("the PostgreSQL service has a healthcheck");
                assert_eq!(check[0], "pg_isready", "{name}: its healthcheck");
                let mut cmd = check;
                cmd.extend([
                    "-h".into(),
                    "127.0.0.1".into(),
                    "-p".into(),
                    pg_port.to_string(),
                ]);
                let ok = Command::new(&cmd[0])
                    .args(&cmd[1..])
                    .status()
                    .unwrap_or_else(|e| {
                        panic!("{name}: cannot run its healthcheck {} (PostgreSQL's client tools): {e}", cmd[0])
                    });
                assert!(ok.success(), "{name}: `{}` failed", cmd.join(" "));
                continue;
            }
            Kind::Nats | Kind::Appreg => {}
        }
        let mut args: Vec<String> = Vec::new();
        let mut iter = service.command.iter();
        while let Some(arg) = iter.next() {
            args.push(rewrite(arg));
            if (arg == "--http_port" || arg == "-m") && service.kind == Kind::Nats {
                let port: u16 = iter.next().unwrap().parse().unwrap();
                args.push(own("0.0.0.0", port).unwrap().to_string());
            }
        }
        let dir = run_dir.join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let log = run_dir.join(format!("{name}.log"));
        let mut env: BTreeMap<String, String> = service
            .environment
            .iter()
            .map(|(k, v)| (k.clone(), rewrite(v)))
            .collect();
        let program = match service.kind {
            Kind::Nats => {
                // The file relies on the default client port (4222) on every interface.
                args.extend([
                    "--addr".into(),
                    "127.0.0.1".into(),
                    "--port".into(),
                    own("0.0.0.0", NATS_CLIENT_PORT).unwrap().to_string(),
                    "--log".into(),
                    dir.join("nats-server.log").display().to_string(),
                ]);
                nats_server_binary()
            }
            _ => {
                // Not from the file: the token issuer (its URLs, on loopback, and the audience
                // its tokens carry) and the logs' verbosity.
                env.insert("APPREG_AUTH__ISSUER".into(), issuer.to_string());
                env.insert("APPREG_AUTH__JWKS_URL".into(), format!("{issuer}/jwks"));
                env.insert(
                    "APPREG_AUTH__AUDIENCE".into(),
                    appreg_auth::DEV_AUDIENCE.to_string(),
                );
                // The test's OIDC provider is on loopback, which the file refuses.
                env.insert("APPREG_OUTBOUND_ALLOW_PRIVATE".into(), "true".into());
                env.insert("RUST_LOG".into(), "info".into());
                if service.command.first().map(String::as_str) == Some("api") {
                    let addr = compose::rewrite_addresses(&listen, own);
                    assert_ne!(
                        addr, listen,
                        "{name}: the api's listen {listen} is not published"
                    );
                    topology.api_urls.push(format!("http://{addr}"));
                    env.insert("APPREG_LISTEN".into(), addr);
                }
                if let Some(url) = env.get("APPREG_NATS_URL") {
                    topology.nats_url = url.clone();
                }
                if service.command.first().map(String::as_str) == Some("relay") {
                    if let Some(credentials) = env.get("APPREG_NATS_CREDENTIALS") {
                        topology.relay_nats_credentials = credentials.clone();
                    }
                }
                PathBuf::from(EXE)
            }
        };
        let health = service.healthcheck.as_ref().map(|check| {
            match check.iter().find(|a| a.starts_with("http://")) {
                Some(url) => Health::Http(compose::rewrite_addresses(url, own)),
                None => Health::Command(check.iter().map(|a| rewrite(a)).collect()),
            }
        });
        let mut proc = Proc {
            name: name.clone(),
            kind: service.kind,
            program,
            args,
            env,
            cwd: dir,
            log,
            health,
            restart: service.restart.clone(),
            child: None,
            log_start: 0,
            exited: None,
        };
        proc.spawn();
        topology.procs.push(proc);
    }

    // `docker compose up --wait`: every long-running service healthy, every one-shot done.
    for i in 0..topology.procs.len() {
        if topology.procs[i].restart == "no" {
            topology.procs[i]
                .wait_completed(Duration::from_secs(120))
                .await;
        } else {
            topology.procs[i]
                .wait_healthy(http, Duration::from_secs(90))
                .await;
        }
    }
    assert!(
        topology.nats_url.contains(','),
        "compose.yaml gives the services a NATS server list"
    );
    assert_eq!(topology.api_urls.len(), 2, "two apis");
    topology
}

// ---------------------------------------------------------------------------------- load

/// What one request did.
struct Outcome {
    kind: &'static str,
    ok: bool,
    /// The HTTP status (0: no answer).
    status: u16,
    request_id: String,
}

struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    outcomes: Mutex<Vec<Outcome>>,
    n: AtomicU64,
}

impl Client {
    /// One request to one of the apis (round robin), recorded, never retried.
    async fn call(
        &self,
        kind: &'static str,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, (u16, String)> {
        let n = self.n.fetch_add(1, Ordering::Relaxed) as usize;
        let base = &self.urls[n % self.urls.len()];
        let request_id = uuid::Uuid::now_v7().to_string();
        let mut request = self
            .http
            .request(method, format!("{base}/v1/environments/DEFAULT/{path}"))
            .bearer_auth(token)
            .header("x-request-id", &request_id)
            .timeout(Duration::from_secs(15));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let (ok, status, value) = match request.send().await {
            Ok(r) => {
                let status = r.status();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                (status.is_success(), status.as_u16(), v)
            }
            Err(_) => (false, 0, Value::Null),
        };
        self.outcomes.lock().unwrap().push(Outcome {
            kind,
            ok,
            status,
            request_id,
        });
        if ok {
            Ok(value)
        } else {
            let code = value["code"].as_str().unwrap_or("transport").to_string();
            Err((status, code))
        }
    }
}

/// A tiny deterministic generator (xorshift), one per load client.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

struct App {
    id: String,
    active: bool,
    members: Vec<String>,
    subscribed: bool,
}

/// One load client: its own user and applications, a mix of commands until `stop`.
async fn load_client(
    k: usize,
    client: Arc<Client>,
    user: String,
    admin: String,
    plan: String,
    stop: Arc<AtomicBool>,
) {
    use reqwest::Method;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut apps: Vec<App> = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let roll = rng.below(100);
        let active: Vec<usize> = (0..apps.len()).filter(|&i| apps[i].active).collect();
        if active.len() < 3 || roll < 20 {
            let body = if rng.below(5) == 0 {
                json!({"name": format!("oauth {k}-{n}"), "type": "backend_to_backend"})
            } else {
                json!({"name": format!("app {k}-{n}"), "type": "simple"})
            };
            if let Ok(v) = client
                .call("create", Method::POST, "applications", &user, Some(body))
                .await
            {
                apps.push(App {
                    id: v["id"].as_str().unwrap_or_default().to_string(),
                    active: true,
                    members: vec![],
                    subscribed: false,
                });
            }
            continue;
        }
        let i = active[rng.below(active.len())];
        let id = apps[i].id.clone();
        match roll {
            20..=49 => {
                let body = json!({"name": format!("renamed {k}-{n}")});
                let path = format!("applications/{id}");
                let _ = client
                    .call("rename", Method::PUT, &path, &user, Some(body))
                    .await;
            }
            50..=64 => {
                let member = format!("member-{k}-{n}");
                let path = format!("applications/{id}/members");
                let body = json!({"user": member, "role": "USER"});
                if client
                    .call("add member", Method::POST, &path, &user, Some(body))
                    .await
                    .is_ok()
                {
                    apps[i].members.push(member);
                }
            }
            65..=71 => {
                if let Some(member) = apps[i].members.pop() {
                    let path = format!("applications/{id}/members/{member}");
                    let _ = client
                        .call("remove member", Method::DELETE, &path, &user, None)
                        .await;
                }
            }
            72..=83 => {
                if !apps[i].subscribed {
                    let path = format!("applications/{id}/subscriptions");
                    let body = json!({"plan_id": plan});
                    if client
                        .call("subscribe", Method::POST, &path, &user, Some(body))
                        .await
                        .is_ok()
                    {
                        apps[i].subscribed = true;
                    }
                }
            }
            84..=91 => {
                let path = format!("applications/{id}");
                if client
                    .call("archive", Method::DELETE, &path, &user, None)
                    .await
                    .is_ok()
                {
                    apps[i].active = false;
                }
            }
            _ => {
                // An administrator restores an archived one (becoming its primary owner), then
                // hands the ownership back.
                let Some(j) = (0..apps.len()).find(|&j| !apps[j].active) else {
                    continue;
                };
                let id = apps[j].id.clone();
                let path = format!("applications/{id}/_restore");
                match client
                    .call("restore", Method::POST, &path, &admin, None)
                    .await
                {
                    Ok(_) => {}
                    Err((_, code)) if code == "application.not_archived" => {}
                    Err(_) => continue,
                }
                // (Its subscription, if any, is reopened by the restore.)
                apps[j].members.clear();
                let path = format!("applications/{id}/members/_transfer_ownership");
                let body = json!({"user": format!("user-{k}"), "former_owner_role": "USER"});
                match client
                    .call("transfer", Method::POST, &path, &admin, Some(body))
                    .await
                {
                    Ok(_) => apps[j].active = true,
                    Err((_, code)) if code == "member.already_primary_owner" => {
                        apps[j].active = true
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// `/readyz` answers: (when, api, status).
type Samples = Arc<Mutex<Vec<(Instant, usize, u16)>>>;

/// Polls `/readyz` of every api every 200 ms until `stop`.
fn poll_readyz(
    http: reqwest::Client,
    urls: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (Samples, tokio::task::JoinHandle<()>) {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    let task = tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            for (i, url) in urls.iter().enumerate() {
                let status = match http
                    .get(format!("{url}/readyz"))
                    .timeout(Duration::from_secs(3))
                    .send()
                    .await
                {
                    Ok(r) => r.status().as_u16(),
                    Err(_) => 0,
                };
                out.lock().unwrap().push((Instant::now(), i, status));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (samples, task)
}

/// The latest `/readyz` status of each api.
async fn readyz(http: &reqwest::Client, urls: &[String]) -> Vec<u16> {
    let mut out = Vec::new();
    for url in urls {
        out.push(
            match http
                .get(format!("{url}/readyz"))
                .timeout(Duration::from_secs(3))
                .send()
                .await
            {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            },
        );
    }
    out
}

// -------------------------------------------------------------------------------- checks

/// Every application of the read model an api serves (an administrator lists ACTIVE and
/// ARCHIVED, page by page): id → version.
async fn read_model(http: &reqwest::Client, base: &str, admin: &str) -> BTreeMap<String, i64> {
    let mut apps = BTreeMap::new();
    for status in ["ACTIVE", "ARCHIVED"] {
        for page in 1.. {
            let r = http
                .get(format!(
                    "{base}/v1/environments/DEFAULT/applications?status={status}&page={page}&size=100"
                ))
                .bearer_auth(admin)
                .timeout(Duration::from_secs(30))
                .send()
                .await
                .unwrap();
            assert!(
                r.status().is_success(),
                "{base}: list {status} page {page}: {}",
                r.status()
            );
            let v: Value = r.json().await.unwrap();
            let items = v["items"].as_array().unwrap();
            for item in items {
                apps.insert(
                    item["id"].as_str().unwrap().to_string(),
                    item["version"].as_i64().unwrap(),
                );
            }
            if items.len() < 100 {
                break;
            }
        }
    }
    apps
}

/// A client of the cluster, on the list the services were given, through the same parser.
/// A client of the cluster as the relay's user (whose permissions allow reading the stream),
/// with the relay's inbox prefix.
async fn nats_client(url: &str, credentials: &str) -> async_nats::Client {
    let credentials = secrecy::SecretString::from(credentials.to_string());
    let servers = NatsServers::parse(url, Some(&credentials)).expect("compose's NATS list parses");
    let mut options = async_nats::ConnectOptions::new()
        .name("appreg-topology-test")
        .custom_inbox_prefix("_INBOX.appreg-relay");
    match servers.auth() {
        None => {}
        Some(NatsAuth::UserPassword { user, password }) => {
            options = options.user_and_password(user.clone(), password.expose_secret().into())
        }
        Some(NatsAuth::Token(t)) => options = options.token(t.expose_secret().into()),
    }
    options
        .retry_on_initial_connect()
        .connect(servers.urls().to_vec())
        .await
        .unwrap()
}

/// The stream's replication: (replicas, leader, [(peer, current)]).
async fn replication(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Option<(usize, String, Vec<(String, bool)>)> {
    let mut s = js.get_stream(stream).await.ok()?;
    let info = s.info().await.ok()?;
    let cluster = info.cluster.clone()?;
    Some((
        info.config.num_replicas,
        cluster.leader.unwrap_or_default(),
        cluster
            .replicas
            .iter()
            .map(|p| (p.name.clone(), p.current && !p.offline))
            .collect(),
    ))
}

// ----------------------------------------------------------------------------------- run

struct Fault {
    what: String,
    at: Duration,
}

async fn run(profile: Profile) {
    let run_started = Instant::now();
    let load_time = std::env::var("APPREG_TOPOLOGY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(profile.load);
    println!(
        "topology test, {} profile: deploy/compose.yaml on loopback, {} clients, {:?} of load, {} fault round(s); load average {}",
        profile.name,
        profile.clients,
        load_time,
        profile.rounds,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let http = reqwest::Client::new();
    let key_dir = std::env::temp_dir().join(format!(
        "appreg-topology-key-{}",
        uuid::Uuid::now_v7().simple()
    ));
    let key = DevKey::load_or_create(&key_dir).unwrap();
    let _ = std::fs::remove_dir_all(&key_dir);
    let issuer = serve_jwks(&key).await;
    let oidc = appreg_test_support::oidc::OidcProvider::start(
        appreg_test_support::oidc::Mode::fixed_token(),
    );
    let mut topology = start(&http, &issuer).await;
    let startup = run_started.elapsed();
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    for p in &topology.procs {
        if p.restart != "no" {
            *counts.entry(p.kind).or_default() += 1;
        }
    }
    println!(
        "started in {:.1} s: PostgreSQL, {} NATS nodes, {} appreg services ({}), migrate and nats-setup done; NATS list {}",
        startup.as_secs_f64(),
        counts.get(&Kind::Nats).copied().unwrap_or(0),
        counts.get(&Kind::Appreg).copied().unwrap_or(0),
        topology
            .procs
            .iter()
            .filter(|p| p.kind == Kind::Appreg && p.restart != "no")
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        topology.nats_url
    );
    let api_urls = topology.api_urls.clone();
    let relays = topology.names("relay-");
    let projectors = topology.names("projector-");
    let sagas = topology.names("dcr-saga-");
    assert!(relays.len() >= 2 && projectors.len() >= 2 && sagas.len() >= 2);

    // The environment: DCR on, a provider, an API with an API_KEY plan (AUTO).
    let admin = sign(&key, &issuer, "root", true);
    let client = Arc::new(Client {
        http: http.clone(),
        urls: api_urls.clone(),
        outcomes: Mutex::new(Vec::new()),
        n: AtomicU64::new(0),
    });
    use reqwest::Method;
    client
        .call(
            "setup",
            Method::PUT,
            "settings/client-registration",
            &admin,
            Some(json!({"allowed_types": {"simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true}, "dcr_enabled": true})),
        )
        .await
        .expect("settings");
    let appreg_test_support::oidc::Mode::InitialAccessToken(iat) = oidc.mode().clone() else {
        unreachable!()
    };
    client
        .call(
            "setup",
            Method::POST,
            "client-registration-providers",
            &admin,
            Some(
                json!({"name": "topology provider", "discovery_endpoint": oidc.discovery_url(),
                "initial_access_token_type": "INITIAL_ACCESS_TOKEN", "initial_access_token": iat}),
            ),
        )
        .await
        .expect("provider");
    let api = client
        .call(
            "setup",
            Method::POST,
            "apis",
            &admin,
            Some(json!({"name": "Topology API"})),
        )
        .await
        .expect("api");
    let plan = client
        .call(
            "setup",
            Method::POST,
            &format!("apis/{}/plans", api["id"].as_str().unwrap()),
            &admin,
            Some(json!({"name": "keys", "security": "API_KEY", "validation": "AUTO"})),
        )
        .await
        .expect("plan")["id"]
        .as_str()
        .unwrap()
        .to_string();

    // NATS as the test sees it: the stream the relay feeds, on the cluster.
    let config = {
        let mut c = appreg_config::Config::load(Some(&repo().join("deploy/appreg.toml")))
            .expect("deploy/appreg.toml");
        c.nats_url = secrecy::SecretString::from(topology.nats_url.clone());
        c
    };
    let relay_config = appreg_relay::RelayConfig::from_config(&config);
    assert!(
        topology.relay_nats_credentials.starts_with("appreg-relay:"),
        "compose.yaml gives the relay its own NATS user"
    );
    let js = async_nats::jetstream::new(
        nats_client(&topology.nats_url, &topology.relay_nats_credentials).await,
    );

    // The load, and /readyz watched all along.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for k in 0..profile.clients {
        let user = sign(&key, &issuer, &format!("user-{k}"), false);
        tasks.push(tokio::spawn(load_client(
            k,
            client.clone(),
            user,
            admin.clone(),
            plan.clone(),
            stop.clone(),
        )));
    }
    let readyz_stop = Arc::new(AtomicBool::new(false));
    let (samples, poller) = poll_readyz(http.clone(), api_urls.clone(), readyz_stop.clone());
    let load_started = Instant::now();
    let since = |t: Instant| t.duration_since(load_started);

    // The faults, spread over the load.
    let max_lag = Duration::from_millis(config.readyz_max_lag_ms);
    let mut faults: Vec<Fault> = Vec::new();
    let mut kills = 0usize;
    // (projectors down, projectors restarted) of each round.
    let mut outages: Vec<(Instant, Instant)> = Vec::new();
    let step = load_time / (profile.rounds * 5 + 1) as u32;
    for round in 0..profile.rounds {
        // The active relay.
        tokio::time::sleep(step).await;
        let relay = topology.active("relay-", "relay: active").await;
        let killed = Instant::now();
        topology.kill(&relay);
        kills += 1;
        // The standby takes over (the killed one is not running: `active` skips it).
        let taken_over = topology.active("relay-", "relay: active").await;
        let took = killed.elapsed();
        tokio::time::sleep(RESTART_DELAY.saturating_sub(took)).await;
        topology.restart(&relay);
        faults.push(Fault {
            what: format!(
                "SIGKILL {relay} (the active relay; {taken_over} active {:.1} s later), restarted",
                took.as_secs_f64()
            ),
            at: since(killed),
        });

        // A projector.
        tokio::time::sleep(step).await;
        let projector = projectors[round % projectors.len()].clone();
        let at = since(Instant::now());
        topology.kill(&projector);
        kills += 1;
        tokio::time::sleep(RESTART_DELAY).await;
        topology.restart(&projector);
        faults.push(Fault {
            what: format!("SIGKILL {projector}, restarted after {RESTART_DELAY:?}"),
            at,
        });

        // The active DCR saga.
        tokio::time::sleep(step).await;
        let saga = topology.active("dcr-saga-", "dcr-saga: active").await;
        let killed = Instant::now();
        topology.kill(&saga);
        kills += 1;
        let taken_over = topology.active("dcr-saga-", "dcr-saga: active").await;
        let took = killed.elapsed();
        tokio::time::sleep(RESTART_DELAY.saturating_sub(took)).await;
        topology.restart(&saga);
        faults.push(Fault {
            what: format!(
                "SIGKILL {saga} (the active saga; {taken_over} active {:.1} s later), restarted",
                took.as_secs_f64()
            ),
            at: since(killed),
        });

        // The NATS node leading the stream.
        tokio::time::sleep(step).await;
        let electing = Instant::now();
        let leader = loop {
            match replication(&js, &relay_config.stream).await {
                Some((replicas, leader, _)) if !leader.is_empty() => {
                    assert_eq!(replicas, 3, "the stream has 3 replicas");
                    break leader;
                }
                other => assert!(
                    electing.elapsed() < Duration::from_secs(30),
                    "the stream has no leader: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let at = since(Instant::now());
        topology.kill(&leader);
        kills += 1;
        tokio::time::sleep(NATS_DOWN).await;
        topology.restart(&leader);
        let i = topology.index(&leader);
        topology.procs[i]
            .wait_healthy(&http, Duration::from_secs(60))
            .await;
        faults.push(Fault {
            what: format!("SIGKILL {leader} (the stream's leader), restarted after {NATS_DOWN:?}"),
            at,
        });

        // Every projector: the apis' /readyz must go red, then green again after the restart.
        // First both green for 3 s in a row (the earlier faults over, the read model caught up:
        // the red that follows is the projectors' absence).
        tokio::time::sleep(step).await;
        let waiting = Instant::now();
        let mut green_since: Option<Instant> = None;
        loop {
            let statuses = readyz(&http, &api_urls).await;
            if statuses.iter().all(|s| *s == 200) {
                let since = *green_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_secs(3) {
                    break;
                }
            } else {
                green_since = None;
            }
            assert!(
                waiting.elapsed() < Duration::from_secs(90),
                "the apis' /readyz is not green 90 s after the earlier faults: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let waited = waiting.elapsed();
        let down = Instant::now();
        for p in &projectors {
            topology.kill(p);
            kills += 1;
        }
        let bound = max_lag + Duration::from_secs(20);
        loop {
            let statuses = readyz(&http, &api_urls).await;
            if statuses.iter().all(|s| *s == 503) {
                break;
            }
            assert!(
                down.elapsed() < bound,
                "the apis' /readyz did not fail within {bound:?} without a projector: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let red_after = down.elapsed();
        // Red for a moment more, then the restart policy brings them back.
        tokio::time::sleep(Duration::from_secs(1)).await;
        for p in &projectors {
            topology.restart(p);
        }
        let up = Instant::now();
        loop {
            let statuses = readyz(&http, &api_urls).await;
            if statuses.iter().all(|s| *s == 200) {
                break;
            }
            assert!(
                up.elapsed() < Duration::from_secs(60),
                "the apis' /readyz did not recover within 60 s of the projectors' restart: {statuses:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        outages.push((down, up));
        faults.push(Fault {
            what: format!(
                "SIGKILL {} (no projector; both apis' /readyz 200 for 3 s first, {:.1} s after the step began): both 503 after {:.1} s, projectors restarted 1 s later, both 200 again {:.1} s after the restart",
                projectors.join(" and "),
                waited.as_secs_f64(),
                red_after.as_secs_f64(),
                up.elapsed().as_secs_f64()
            ),
            at: since(down),
        });
    }
    let left = load_time.saturating_sub(load_started.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let load_elapsed = load_started.elapsed();

    // Settle.
    let db = Database::connect(&topology.db_url, 4).await.unwrap();
    let store = db.event_store().await.unwrap();
    let settling = Instant::now();
    quiescent(&db, store.as_ref()).await;
    let settled = settling.elapsed();
    readyz_stop.store(true, Ordering::Relaxed);
    poller.await.unwrap();
    let outcomes = std::mem::take(&mut *client.outcomes.lock().unwrap());
    let acknowledged: Vec<&Outcome> = outcomes.iter().filter(|o| o.ok).collect();
    let mut by_kind: BTreeMap<&str, (usize, usize, BTreeMap<u16, usize>)> = BTreeMap::new();
    for o in &outcomes {
        let e = by_kind.entry(o.kind).or_default();
        e.0 += 1;
        if o.ok {
            e.1 += 1;
        } else {
            *e.2.entry(o.status).or_default() += 1;
        }
    }
    println!(
        "load: {} commands through both apis, {} acknowledged (2xx) in {:.1} s; settled {:.1} s after",
        outcomes.len(),
        acknowledged.len(),
        load_elapsed.as_secs_f64(),
        settled.as_secs_f64()
    );
    for (kind, (issued, ok, refused)) in &by_kind {
        println!("  {kind:<14} issued {issued:>6}, 2xx {ok:>6}; others by status: {refused:?}");
    }
    println!("faults: {kills} SIGKILLs");
    for f in &faults {
        println!("  at {:>6.1} s: {}", f.at.as_secs_f64(), f.what);
    }
    assert!(acknowledged.len() > 100, "the load did some work");
    let stamp = || format!("[{:>5.1} s]", run_started.elapsed().as_secs_f64());

    // 1. Every acknowledged command is in the event store (its request id is the correlation
    //    id of its events) and in the read model of both apis (the applications it changed are
    //    there at its version or later); every application of the store is in both read models
    //    at its last version.
    let events = all_events(store.as_ref()).await;
    let mut by_correlation: HashMap<&str, Vec<(&str, i64)>> = HashMap::new();
    let mut last_version: BTreeMap<String, i64> = BTreeMap::new();
    for e in &events {
        if let Some(c) = e.metadata["correlation_id"].as_str() {
            by_correlation
                .entry(c)
                .or_default()
                .push((e.stream_id.as_str(), e.version));
        }
        if e.stream_type == "application" {
            let id = e
                .stream_id
                .strip_prefix("application-")
                .unwrap()
                .to_string();
            let v = last_version.entry(id).or_default();
            *v = (*v).max(e.version);
        }
    }
    let lost: Vec<&str> = acknowledged
        .iter()
        .filter(|o| !by_correlation.contains_key(o.request_id.as_str()))
        .map(|o| o.kind)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged commands missing from the event store: {lost:?}"
    );
    let mut in_read_models = 0;
    for (i, base) in api_urls.iter().enumerate() {
        let read = read_model(&http, base, &admin).await;
        assert_eq!(
            read.len(),
            last_version.len(),
            "api-{}: {} applications in its read model, {} in the event store",
            i + 1,
            read.len(),
            last_version.len()
        );
        for (id, version) in &last_version {
            assert_eq!(
                read.get(id),
                Some(version),
                "api-{}: application {id} in the read model",
                i + 1
            );
        }
        in_read_models = 0;
        for o in &acknowledged {
            let changed: Vec<(&str, i64)> = by_correlation[o.request_id.as_str()]
                .iter()
                .filter_map(|(stream, v)| stream.strip_prefix("application-").map(|id| (id, *v)))
                .collect();
            for (id, v) in &changed {
                let seen = read.get(*id).copied().unwrap_or(0);
                assert!(
                    seen >= *v,
                    "api-{}: acknowledged {} of {id} (version {v}) not in the read model (version {seen})",
                    i + 1,
                    o.kind
                );
            }
            if !changed.is_empty() {
                in_read_models += 1;
            }
        }
    }
    println!(
        "{} check: all {} acknowledged commands are in the event store ({} events); the {} that changed applications are in the read model of both apis, which hold all {} applications at their last version",
        stamp(),
        acknowledged.len(),
        events.len(),
        in_read_models,
        last_version.len()
    );

    // 2. JetStream holds every stored event exactly once, in log order, on a stream of 3
    //    replicas, all current.
    let n = assert_exactly_once(
        &js,
        store.as_ref(),
        Published {
            stream: &relay_config.stream,
            subject_prefix: &relay_config.subject_prefix,
        },
        Duration::from_secs(120),
    )
    .await;
    let started = Instant::now();
    let (replicas, leader, peers) = loop {
        let r = replication(&js, &relay_config.stream).await;
        if let Some((3, leader, peers)) = &r {
            if !leader.is_empty() && peers.len() == 2 && peers.iter().all(|p| p.1) {
                break r.unwrap();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stream is not at R3 with current replicas: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!(
        "{} check: JetStream holds each of the {n} events exactly once, in log order; stream {} at R{replicas}, leader {leader}, replicas {peers:?}",
        stamp(),
        relay_config.stream
    );

    // 3. /readyz went red while no projector ran, and green again afterwards.
    let samples = std::mem::take(&mut *samples.lock().unwrap());
    for (k, (down, up)) in outages.iter().enumerate() {
        for api in 0..api_urls.len() {
            let red = samples
                .iter()
                .filter(|(t, a, s)| *a == api && *s == 503 && t > down && t < up)
                .count();
            let green_after = samples
                .iter()
                .any(|(t, a, s)| *a == api && *s == 200 && t > up);
            assert!(
                red > 0,
                "api-{}: /readyz never 503 during outage {}",
                api + 1,
                k + 1
            );
            assert!(
                green_after,
                "api-{}: /readyz never 200 after outage {}",
                api + 1,
                k + 1
            );
        }
    }
    for api in 0..api_urls.len() {
        let mine: Vec<&(Instant, usize, u16)> = samples.iter().filter(|s| s.1 == api).collect();
        assert_eq!(
            mine.last().map(|s| s.2),
            Some(200),
            "api-{}: /readyz at the end",
            api + 1
        );
        // Its changes of status, in seconds since the load began.
        let mut changes = Vec::new();
        let mut last = 0;
        for (t, _, s) in &mine {
            if *s != last {
                let at = t.saturating_duration_since(load_started).as_secs_f64();
                changes.push(format!("{s} at {at:.1} s"));
                last = *s;
            }
        }
        println!(
            "{} check: api-{} /readyz went 503 while no projector ran and 200 after the restart; its {} samples (every 200 ms): {}",
            stamp(),
            api + 1,
            mine.len(),
            changes.join(", ")
        );
    }
    println!(
        "topology test passed in {:.0} s (start {:.0} s, load {:.0} s, settle and checks {:.0} s)",
        run_started.elapsed().as_secs_f64(),
        startup.as_secs_f64(),
        load_elapsed.as_secs_f64(),
        (run_started.elapsed() - startup - load_elapsed).as_secs_f64()
    );
    db.close().await;
    drop(topology);
    drop(oidc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_profile() {
    run(Profile {
        name: "short",
        load: Duration::from_secs(45),
        clients: 4,
        rounds: 1,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "the long profile (about 10 minutes): run it with --run-ignored only"]
async fn long_profile() {
    run(Profile {
        name: "long",
        load: Duration::from_secs(480),
        clients: 8,
        rounds: 4,
    })
    .await;
}
