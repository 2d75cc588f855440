//! The fault-and-load suite: the whole system as real processes on loopback — a private
//! PostgreSQL server, a private nats-server, the npm `oidc-provider`, and two each of `appreg api`,
//! `relay`, `projector`, `dcr-saga` and `lifecycle` (scaled out) — under a mixed load (creates of simple and OAuth
//! applications, renames, member changes, subscriptions, accepts, closes, archives, restores),
//! while each service in turn is SIGKILLed and restarted, NATS is killed and restarted, and
//! PostgreSQL crashes and restarts. At the end it checks that every command answered 2xx is in
//! the event store, JetStream holds every event exactly once in log order, the read model equals
//! a fresh rebuild, no application has two primary owners or two clients at the provider, every
//! archived application's subscriptions are ended and keys revoked, and no secret appears in the
//! events, the NATS stream or the processes' logs. It prints what it did and what it found.
//!
//! NATS runs with the deployment's accounts and users (`deploy/nats/accounts.conf`, fresh
//! passwords): each relay and projector connects with its own service's credentials
//! (`APPREG_NATS_CREDENTIALS`), the other services have none, and the stream, subjects and
//! consumer are the deployment's default names the accounts are written for.
//!
//! Profiles: `short_profile` (about a minute of load, in CI) and `long_profile` (about ten
//! minutes; `cargo nextest run -p appreg --test faults --run-ignored only --no-capture`).
//! `APPREG_FAULTS_SECONDS` overrides the load's duration.

mod pg;

use appreg_domain::Role;
use appreg_eventstore::{Database, StoredEvent};
use appreg_test_support::nats::{
    all_events, assert_exactly_once, free_port, NatsAccounts, NatsServer, Published,
};
use appreg_test_support::settle::{final_states, quiescent};
use pg::PrivatePostgres;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_appreg");
/// The deployment's names, which `deploy/nats/accounts.conf` grants.
const STREAM: &str = "APPREG_EVENTS";
const PREFIX: &str = "appreg";
const MASTER_KEY: &str = "faults:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

struct Profile {
    name: &'static str,
    load: Duration,
    clients: usize,
    /// Fault rounds: each kills every service once, restarts NATS and PostgreSQL.
    rounds: usize,
}

/// One service process, restartable on the same port.
struct Service {
    name: &'static str,
    args: Vec<String>,
    /// `APPREG_LISTEN` of an api (a fixed port, kept across restarts).
    listen: Option<String>,
    child: Option<Child>,
}

struct System {
    data: PathBuf,
    db_url: String,
    nats_url: String,
    /// Each NATS user's credentials.
    nats_accounts: NatsAccounts,
    services: Vec<Service>,
    api_urls: Vec<String>,
}

impl System {
    fn command(&self, args: &[String], name: &str) -> Command {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.data.join(format!("{name}.log")))
            .unwrap();
        let mut cmd = Command::new(EXE);
        cmd.args(args)
            .env("APPREG_DATABASE_URL", &self.db_url)
            .env("APPREG_NATS_URL", &self.nats_url)
            .env("APPREG_NATS_STREAM", STREAM)
            .env("APPREG_NATS_SUBJECT_PREFIX", PREFIX)
            .env("APPREG_READ_MODELS", "external")
            .env("APPREG_SECRETS_MASTER_KEY", MASTER_KEY)
            .env("APPREG_AUTH__DEV", "true")
            .env("APPREG_DATA_DIR", &self.data)
            .env("APPREG_DEFAULT_APPLICATION", "false")
            .env("APPREG_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        // Only the services that use NATS have a NATS user, each its own.
        if let Some(service @ ("relay" | "projector")) = args.first().map(String::as_str) {
            cmd.env(
                "APPREG_NATS_CREDENTIALS",
                self.nats_accounts.credentials(service),
            );
        }
        cmd
    }

    fn spawn(&mut self, i: usize) {
        let mut cmd = self.command(&self.services[i].args, self.services[i].name);
        if let Some(listen) = &self.services[i].listen {
            cmd.env("APPREG_LISTEN", listen);
        }
        let cmd = cmd.spawn().unwrap();
        self.services[i].child = Some(cmd);
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.services[i].child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        for i in 0..self.services.len() {
            self.kill(i);
        }
    }
}

fn token(data: &Path, sub: &str, admin: bool) -> String {
    let mut cmd = Command::new(EXE);
    cmd.args(["token", "--sub", sub, "--ttl", "7200", "--data"])
        .arg(data);
    if admin {
        cmd.arg("--admin");
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "appreg token");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn wait_healthy(http: &reqwest::Client, base: &str, log: &Path) {
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            panic!(
                "{base} did not come up; its log ends with:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one request did.
struct Outcome {
    started: Instant,
    elapsed: Duration,
    ok: bool,
    /// The HTTP status and problem code (0 and "transport" when no answer came).
    answer: (u16, String),
    request_id: String,
    kind: &'static str,
}

#[derive(Default)]
struct Record {
    outcomes: Mutex<Vec<Outcome>>,
    /// Key values seen in responses (must never leak).
    secrets: Mutex<HashSet<String>>,
}

struct Client {
    http: reqwest::Client,
    urls: Vec<String>,
    record: Arc<Record>,
    n: AtomicU64,
}

impl Client {
    /// Sends one request to one of the api instances (round robin), records it, never retries.
    async fn call(
        &self,
        kind: &'static str,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
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
        let started = Instant::now();
        let result = request.send().await;
        let (ok, value, answer) = match result {
            Ok(r) => {
                let status = r.status();
                let v = r.json::<Value>().await.unwrap_or(Value::Null);
                let code = v["code"].as_str().unwrap_or_default().to_string();
                (status.is_success(), v, (status.as_u16(), code))
            }
            Err(_) => (false, Value::Null, (0, "transport".to_string())),
        };
        if ok {
            let mut secrets = self.record.secrets.lock().unwrap();
            for k in value["api_keys"].as_array().into_iter().flatten() {
                if let Some(key) = k["key"].as_str() {
                    secrets.insert(key.to_string());
                }
            }
        }
        let code = answer.1.clone();
        self.record.outcomes.lock().unwrap().push(Outcome {
            started,
            elapsed: started.elapsed(),
            ok,
            answer,
            request_id,
            kind,
        });
        if ok {
            Ok(value)
        } else {
            Err(code)
        }
    }
}

/// A tiny deterministic generator (xorshift), one per load client.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Clone)]
struct AppState {
    id: String,
    active: bool,
    members: Vec<String>,
    /// (subscription id, plan index, status)
    subs: Vec<(String, usize, String)>,
}

/// An administrator restores the application (becoming its primary owner), then gives the
/// primary ownership back to the load client's user.
async fn restore(client: &Client, app: &mut AppState, admin: &str, k: usize) {
    use reqwest::Method;
    let path = format!("applications/{}/_restore", app.id);
    match client
        .call("restore", Method::POST, &path, admin, None)
        .await
    {
        Ok(_) => {}
        // An earlier restore went through though its answer was lost.
        Err(code) if code == "application.not_archived" => {}
        Err(_) => return,
    }
    // The archive ended the subscriptions (the process manager may still be at it); the
    // restore reopens those, as PENDING.
    for s in &mut app.subs {
        if s.2 != "CLOSED_BY_USER" {
            s.2 = "PENDING".into();
        }
    }
    app.members.clear();
    let path = format!("applications/{}/members/_transfer_ownership", app.id);
    match client
        .call(
            "transfer",
            Method::POST,
            &path,
            admin,
            Some(json!({"user": format!("user-{k}"), "former_owner_role": "USER"})),
        )
        .await
    {
        Ok(_) => app.active = true,
        // An earlier transfer went through though its answer was lost.
        Err(code) if code == "member.already_primary_owner" => app.active = true,
        Err(_) => {}
    }
}

/// One load client: its own user, its own applications, a mix of commands until `stop`.
async fn load_client(
    k: usize,
    client: Arc<Client>,
    user: String,
    admin: String,
    plans: Vec<String>,
    stop: Arc<AtomicBool>,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (k as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut apps: Vec<AppState> = Vec::new();
    let mut counter = 0u64;
    use reqwest::Method;
    while !stop.load(Ordering::Relaxed) {
        counter += 1;
        let active: Vec<usize> = (0..apps.len()).filter(|&i| apps[i].active).collect();
        let archived: Vec<usize> = (0..apps.len()).filter(|&i| !apps[i].active).collect();
        let roll = rng.below(100);
        if apps.len() < 3 || roll < 12 {
            let body = if rng.below(5) == 0 {
                json!({"name": format!("oauth {k}-{counter}"), "type": "backend_to_backend"})
            } else {
                json!({"name": format!("app {k}-{counter}"), "type": "simple"})
            };
            if let Ok(v) = client
                .call("create", Method::POST, "applications", &user, Some(body))
                .await
            {
                apps.push(AppState {
                    id: v["id"].as_str().unwrap_or_default().to_string(),
                    active: true,
                    members: vec![],
                    subs: vec![],
                });
            }
            continue;
        }
        if active.is_empty() {
            if let Some(&i) = archived.first() {
                restore(&client, &mut apps[i], &admin, k).await;
            }
            continue;
        }
        let i = active[rng.below(active.len())];
        let id = apps[i].id.clone();
        match roll {
            12..=36 => {
                let path = format!("applications/{id}");
                let _ = client
                    .call(
                        "rename",
                        Method::PUT,
                        &path,
                        &user,
                        Some(json!({"name": format!("renamed {k}-{counter}")})),
                    )
                    .await;
            }
            37..=49 => {
                let member = format!("member-{k}-{counter}");
                let path = format!("applications/{id}/members");
                if client
                    .call(
                        "add member",
                        Method::POST,
                        &path,
                        &user,
                        Some(json!({"user": member, "role": "USER"})),
                    )
                    .await
                    .is_ok()
                {
                    apps[i].members.push(member);
                }
            }
            50..=56 => {
                if let Some(member) = apps[i].members.pop() {
                    let path = format!("applications/{id}/members/{member}");
                    let _ = client
                        .call("remove member", Method::DELETE, &path, &user, None)
                        .await;
                }
            }
            57..=71 => {
                let p = rng.below(plans.len());
                if apps[i]
                    .subs
                    .iter()
                    .any(|s| s.1 == p && matches!(s.2.as_str(), "PENDING" | "ACCEPTED"))
                {
                    continue;
                }
                let path = format!("applications/{id}/subscriptions");
                if let Ok(v) = client
                    .call(
                        "subscribe",
                        Method::POST,
                        &path,
                        &user,
                        Some(json!({"plan_id": plans[p]})),
                    )
                    .await
                {
                    apps[i].subs.push((
                        v["id"].as_str().unwrap_or_default().to_string(),
                        p,
                        v["status"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
            72..=79 => {
                if let Some(s) = apps[i].subs.iter_mut().find(|s| s.2 == "PENDING") {
                    let path = format!("subscriptions/{}/_accept", s.0);
                    if client
                        .call("accept", Method::POST, &path, &admin, None)
                        .await
                        .is_ok()
                    {
                        s.2 = "ACCEPTED".into();
                    }
                }
            }
            80..=86 => {
                if let Some(s) = apps[i].subs.iter_mut().find(|s| s.2 == "ACCEPTED") {
                    let path = format!("subscriptions/{}/_close", s.0);
                    if client
                        .call("close", Method::POST, &path, &user, None)
                        .await
                        .is_ok()
                    {
                        s.2 = "CLOSED_BY_USER".into();
                    }
                }
            }
            87..=93 => {
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
                if let Some(&j) = archived.first() {
                    restore(&client, &mut apps[j], &admin, k).await;
                }
            }
        }
    }
}

/// A window of time during which a fault was in effect (plus a settling margin).
struct Window {
    what: String,
    from: Instant,
    to: Instant,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)]
}

async fn run(profile: Profile) {
    let run_started = Instant::now();
    let load_time = std::env::var("APPREG_FAULTS_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(profile.load);
    println!(
        "fault-and-load suite, {} profile: {} clients, {:?} of load, {} fault round(s); load average {}",
        profile.name,
        profile.clients,
        load_time,
        profile.rounds,
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    let postgres = PrivatePostgres::start();
    let nats_accounts = NatsAccounts::generate();
    let mut nats = NatsServer::start_with_accounts(&nats_accounts);
    let oidc = appreg_test_support::oidc::OidcProvider::start(
        appreg_test_support::oidc::Mode::fixed_token(),
    );
    let data = postgres.dir().join("appreg");
    std::fs::create_dir_all(&data).unwrap();
    let db_url = postgres.url("postgres");
    let status = Command::new(EXE)
        .args(["migrate", "--database-url", &db_url])
        .env("APPREG_LOG_FORMAT", "text")
        .status()
        .unwrap();
    assert!(status.success(), "appreg migrate");
    let api_ports = [free_port(), free_port()];
    let mut services = Vec::new();
    for (i, port) in api_ports.iter().enumerate() {
        services.push(Service {
            name: if i == 0 { "api-1" } else { "api-2" },
            args: vec!["api".into()],
            listen: Some(format!("127.0.0.1:{port}")),
            child: None,
        });
    }
    // Two of every service (scale-out): the relays, sagas and process managers take turns by
    // advisory lock, the projectors share one durable consumer.
    for (name, args) in [
        ("relay-1", vec!["relay"]),
        ("relay-2", vec!["relay"]),
        ("projector-1", vec!["projector"]),
        ("projector-2", vec!["projector"]),
        ("dcr-saga-1", vec!["dcr-saga"]),
        ("dcr-saga-2", vec!["dcr-saga"]),
        ("lifecycle-1", vec!["lifecycle"]),
        ("lifecycle-2", vec!["lifecycle"]),
    ] {
        services.push(Service {
            name,
            args: args.into_iter().map(String::from).collect(),
            listen: None,
            child: None,
        });
    }
    let api_urls: Vec<String> = api_ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let mut system = System {
        data: data.clone(),
        db_url: db_url.clone(),
        nats_url: nats.url(),
        nats_accounts: nats_accounts.clone(),
        services,
        api_urls: api_urls.clone(),
    };
    for i in 0..system.services.len() {
        system.spawn(i);
    }
    let http = reqwest::Client::new();
    for (i, url) in system.api_urls.iter().enumerate() {
        wait_healthy(
            &http,
            url,
            &data.join(format!("{}.log", system.services[i].name)),
        )
        .await;
    }

    // The environment: DCR on, a provider, an API with two API_KEY plans (AUTO, MANUAL).
    let admin = token(&data, "root", true);
    let record = Arc::new(Record::default());
    let client = Arc::new(Client {
        http: http.clone(),
        urls: api_urls.clone(),
        record: record.clone(),
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
    record.secrets.lock().unwrap().insert(iat.clone());
    client
        .call(
            "setup",
            Method::POST,
            "client-registration-providers",
            &admin,
            Some(
                json!({"name": "faults provider", "discovery_endpoint": oidc.discovery_url(),
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
            Some(json!({"name": "Faults API"})),
        )
        .await
        .expect("api");
    let api_id = api["id"].as_str().unwrap().to_string();
    let mut plans = Vec::new();
    for validation in ["AUTO", "MANUAL"] {
        let p = client
            .call(
                "setup",
                Method::POST,
                &format!("apis/{api_id}/plans"),
                &admin,
                Some(json!({"name": validation, "security": "API_KEY", "validation": validation})),
            )
            .await
            .expect("plan");
        plans.push(p["id"].as_str().unwrap().to_string());
    }

    // The load.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for k in 0..profile.clients {
        let user = token(&data, &format!("user-{k}"), false);
        tasks.push(tokio::spawn(load_client(
            k,
            client.clone(),
            user,
            admin.clone(),
            plans.clone(),
            stop.clone(),
        )));
    }
    let load_started = Instant::now();

    // The faults, spread evenly over the load.
    let mut windows: Vec<Window> = Vec::new();
    let mut kills = 0;
    let steps_per_round = system.services.len() + 2;
    let step = load_time / (profile.rounds * steps_per_round + 1) as u32;
    let settle = Duration::from_secs(2);
    for _round in 0..profile.rounds {
        for i in 0..system.services.len() {
            tokio::time::sleep(step).await;
            let from = Instant::now();
            system.kill(i);
            tokio::time::sleep(Duration::from_millis(500)).await;
            system.spawn(i);
            if system.services[i].name.starts_with("api") {
                let log = data.join(format!("{}.log", system.services[i].name));
                wait_healthy(&http, &system.api_urls[i], &log).await;
            }
            kills += 1;
            windows.push(Window {
                what: format!("SIGKILL {} and restart", system.services[i].name),
                from,
                to: Instant::now() + settle,
            });
        }
        tokio::time::sleep(step).await;
        let from = Instant::now();
        nats.kill();
        tokio::time::sleep(Duration::from_secs(3)).await;
        nats.restart();
        windows.push(Window {
            what: "NATS killed for 3 s and restarted".into(),
            from,
            to: Instant::now() + settle,
        });
        tokio::time::sleep(step).await;
        let from = Instant::now();
        postgres.crash();
        tokio::time::sleep(Duration::from_secs(2)).await;
        postgres.restart();
        windows.push(Window {
            what: "PostgreSQL crashed (immediate stop) for 2 s and restarted".into(),
            from,
            to: Instant::now() + settle + Duration::from_secs(3),
        });
    }
    let left = load_time.saturating_sub(load_started.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let load_elapsed = load_started.elapsed();

    // Settle, then check.
    let stamp = || format!("[{:>5.1} s]", run_started.elapsed().as_secs_f64());
    let db = Database::connect(&db_url, 4).await.unwrap();
    let store = db.event_store().await.unwrap();
    let settling = Instant::now();
    quiescent(&db, store.as_ref()).await;
    println!(
        "settled {:.1} s after the load stopped",
        settling.elapsed().as_secs_f64()
    );
    let outcomes = std::mem::take(&mut *record.outcomes.lock().unwrap());
    let acknowledged: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.ok && o.kind != "setup")
        .collect();
    let mut by_kind: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for o in outcomes.iter().filter(|o| o.kind != "setup") {
        let e = by_kind.entry(o.kind).or_default();
        e.0 += 1;
        if o.ok {
            e.1 += 1;
        }
    }
    println!(
        "load: {} commands issued, {} acknowledged (2xx) in {:.1} s",
        outcomes.len(),
        acknowledged.len(),
        load_elapsed.as_secs_f64()
    );
    for (kind, (issued, ok)) in &by_kind {
        let mut refused: BTreeMap<String, usize> = BTreeMap::new();
        for o in outcomes.iter().filter(|o| o.kind == *kind && !o.ok) {
            *refused
                .entry(format!("{} {}", o.answer.0, o.answer.1))
                .or_default() += 1;
        }
        println!("  {kind:<14} issued {issued:>6}, 2xx {ok:>6}; others: {refused:?}");
    }
    println!("faults: {kills} SIGKILLs and restarts, {} NATS restarts, {} PostgreSQL crashes and restarts", profile.rounds, profile.rounds);
    for w in &windows {
        println!(
            "  at {:>6.1} s: {}",
            w.from.duration_since(load_started).as_secs_f64(),
            w.what
        );
    }
    let mut quiet: Vec<f64> = acknowledged
        .iter()
        .filter(|o| {
            let end = o.started + o.elapsed;
            windows.iter().all(|w| end < w.from || o.started > w.to)
        })
        .map(|o| o.elapsed.as_secs_f64() * 1000.0)
        .collect();
    quiet.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "latency of 2xx commands outside the fault windows ({} commands): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        quiet.len(),
        quantile(&quiet, 0.5),
        quantile(&quiet, 0.99),
        quiet.last().copied().unwrap_or_default()
    );
    assert!(acknowledged.len() > 50, "the load did some work");

    // 1. Every command answered 2xx is in the event store (its request id is the correlation id
    //    of the events it appended).
    let events = all_events(store.as_ref()).await;
    let correlations: HashSet<String> = events
        .iter()
        .filter_map(|e| e.metadata["correlation_id"].as_str().map(String::from))
        .collect();
    let lost: Vec<&str> = acknowledged
        .iter()
        .filter(|o| !correlations.contains(&o.request_id))
        .map(|o| o.kind)
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged commands missing from the event store: {lost:?}"
    );
    println!(
        "{} check: all {} acknowledged commands are in the event store ({} events)",
        stamp(),
        acknowledged.len(),
        events.len()
    );

    // 2. JetStream holds every event exactly once, in log order.
    let mut config = appreg_config::Config::defaults();
    config.nats_stream = STREAM.into();
    config.nats_subject_prefix = PREFIX.into();
    let relay_config = appreg_relay::RelayConfig::from_config(&config);
    // Read with the relay's user (the one that may read messages back).
    let relay_credentials = nats_accounts.credentials("relay");
    let (user, password) = relay_credentials.split_once(':').unwrap();
    let js = async_nats::jetstream::new(
        async_nats::ConnectOptions::new()
            .user_and_password(user.into(), password.into())
            .custom_inbox_prefix("_INBOX.appreg-relay")
            .connect(nats.url())
            .await
            .unwrap(),
    );
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
    println!(
        "{} check: JetStream holds each of the {n} events exactly once, in log order",
        stamp()
    );

    // 3. The read model equals a fresh rebuild.
    let live = appreg_readmodel::checksum(&db).await.unwrap();
    appreg_readmodel::rebuild(&db, |_| {}).await.unwrap();
    let rebuilt = appreg_readmodel::checksum(&db).await.unwrap();
    assert_eq!(live, rebuilt, "the read model equals a fresh rebuild");
    println!(
        "{} check: the read model equals a fresh rebuild ({} applications, checksums equal)",
        stamp(),
        live.applications
    );

    // 4. One primary owner per active application, none while archived; one client per OAuth
    //    application at the provider, and no other client there; archives finished.
    let states = final_states(store.as_ref()).await;
    let mut client_ids = HashSet::new();
    for (stream, app) in &states {
        let owners = app
            .members
            .values()
            .filter(|r| **r == Role::PrimaryOwner)
            .count();
        let active = app.status == appreg_domain::ApplicationStatus::Active;
        assert_eq!(
            owners,
            usize::from(active),
            "{stream}: {owners} primary owners"
        );
        if app.app_type.is_oauth() {
            if let Some(c) = &app.client_id {
                assert!(
                    client_ids.insert(c.as_str().to_string()),
                    "{stream}: a client_id twice"
                );
            }
        }
        if !active {
            let now = chrono::Utc::now();
            for s in &app.subscriptions {
                assert!(
                    !s.status.is_open(),
                    "{stream}: an open subscription after the archive"
                );
                assert!(
                    s.api_keys.iter().all(|k| !k.valid_at(now)),
                    "{stream}: a valid key after the archive"
                );
            }
            assert!(app.notifications.is_empty());
        }
    }
    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    let doubled: Vec<String> = sqlx::query_scalar(
        "SELECT application_id FROM rm_application_members WHERE role = 'PRIMARY_OWNER' \
         GROUP BY application_id HAVING COUNT(*) > 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        doubled.is_empty(),
        "two primary owners in the read model: {doubled:?}"
    );
    let at_provider: HashSet<String> = oidc.clients().await.into_iter().collect();
    assert_eq!(
        at_provider, client_ids,
        "the provider's clients are exactly the OAuth applications' clients"
    );
    println!(
        "{} check: {} applications, one primary owner each while active; {} clients at the provider, one per OAuth application; archived applications' subscriptions ended, keys revoked", stamp(),
        states.len(),
        at_provider.len()
    );

    // 5. No secret in the events, the NATS stream or the logs.
    let mut secrets: HashSet<String> = record.secrets.lock().unwrap().clone();
    secrets.insert(MASTER_KEY.split_once(':').unwrap().1.to_string());
    secrets.extend(nats_accounts.passwords().map(String::from));
    for (stream, app) in &states {
        if app.client_id.is_some() && app.app_type.is_oauth() {
            let id = stream.strip_prefix("application-").unwrap();
            if let Ok(v) = client
                .call(
                    "setup",
                    Method::GET,
                    &format!("applications/{id}/credentials"),
                    &admin,
                    None,
                )
                .await
            {
                if let Some(s) = v["client_secret"].as_str() {
                    secrets.insert(s.to_string());
                }
            }
        }
    }
    let mut texts: Vec<(String, String)> = events
        .iter()
        .map(|e: &StoredEvent| {
            (
                format!("event {}", e.event_id),
                format!("{} {}", e.data, e.metadata),
            )
        })
        .collect();
    let mut nats_stream = js.get_stream(STREAM).await.unwrap();
    let last = nats_stream.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let m = nats_stream.get_raw_message(seq).await.unwrap();
        texts.push((
            format!("NATS message {seq}"),
            String::from_utf8_lossy(&m.payload).to_string(),
        ));
    }
    for s in &system.services {
        let log = std::fs::read_to_string(data.join(format!("{}.log", s.name))).unwrap_or_default();
        texts.push((format!("{} log", s.name), log));
    }
    let finder = aho_corasick::AhoCorasick::new(secrets.iter()).unwrap();
    for (what, text) in &texts {
        assert!(
            finder.find(text.as_str()).is_none(),
            "a secret in the {what}"
        );
    }
    println!(
        "{} check: none of {} secrets (API keys, client secrets, the provider's token, the master key, the NATS passwords) in {} events, {} NATS messages or {} logs", stamp(),
        secrets.len(),
        events.len(),
        last,
        system.services.len()
    );
    println!(
        "fault-and-load suite passed in {:.0} s",
        run_started.elapsed().as_secs_f64()
    );
    db.close().await;
    drop(system);
    drop(nats);
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
        load: Duration::from_secs(540),
        clients: 8,
        rounds: 4,
    })
    .await;
}
