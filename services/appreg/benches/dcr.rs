//! DCR benchmark (a program, not a timed test): `cargo bench -p appreg --bench dcr`.
//!
//! In one run, against a real OpenID Connect provider (npm `oidc-provider`, one Node process)
//! on loopback, it measures
//!   (a) the provider's own registration rate: RFC 7591 registrations sent directly with the
//!       provider client, `APPREG_BENCH_CONCURRENCY` (default 16) at a time;
//!   (b) appreg's: backend_to_backend applications created through the HTTP api (same
//!       concurrency) with the DCR saga registering their clients — registrations/s from the first
//!       create to the last REGISTERED, and the create → REGISTERED latency (p50/p99), from the
//!       events' own timestamps (`ApplicationCreated` → `DcrClientRegistered`);
//! and prints (b) as a ratio of (a), with the CPU time per registration of PostgreSQL, the
//! provider, appreg (api + saga, this process less its load generator) and the load generator
//! during (b), and the provider's during (a), read from /proc; then (c) the create path alone
//! (the saga stopped: api, append, read model), to tell the saga's part of a registration's CPU
//! from the rest; and (d) PostgreSQL's own cost of writing on appreg's core (pgbench), to tell
//! what (b)'s rows and write transactions must cost PostgreSQL from what it spent. (a) and (b)
//! are each measured after a warm-up of 500 registrations of its own (the JIT, the pool's
//! connections, PostgreSQL's caches).
//!
//! On a machine with at least two cores the provider is pinned to the last core and this
//! process (load generator, api, saga) and PostgreSQL's server processes to the others
//! (`taskset`, restored to every core at the end), so that the provider and appreg do not share
//! a core and the ratio says something about appreg rather than the machine;
//! `APPREG_BENCH_PIN=0` turns that off. Needs PostgreSQL (`APPREG_BENCH_DATABASE_URL`, default
//! postgres://postgres@127.0.0.1:5432/postgres) on this machine (to pin its processes), Node.js
//! and npm, `taskset` (util-linux) and `pgbench` (postgresql-client).
//! `APPREG_BENCH_REGISTRATIONS` (default 5000) per step; `APPREG_BENCH_SAGA_CONCURRENCY`
//! (default: the saga's, 256) requests the saga handles at a time (its calls to the provider are
//! bounded by its bulkhead, 16, as in production).

use appreg_dcr_client::provider::{ClientMetadata, ProviderClient};
use appreg_domain::{ApplicationType, GrantType};
use appreg_eventstore::Database;
use appreg_test_support::bench::{drop_database, fresh_database, load_average};
use appreg_test_support::oidc::{Mode, OidcProvider};
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The name of the load generator's threads (their CPU is told apart from appreg's).
const LOAD_THREAD: &str = "bench-load";

/// utime + stime in seconds from a /proc `stat` line, and the command name in it.
fn stat_cpu(stat: &str) -> Option<(String, f64)> {
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat[open + 1..close].to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    let used = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are the 14th and 15th fields of the whole line; USER_HZ is 100 on Linux.
    Some((comm, (used(11) + used(12)) / 100.0))
}

/// CPU seconds used so far by this process's load generator threads.
fn load_thread_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| stat_cpu(&s))
        .filter(|(comm, _)| comm == LOAD_THREAD)
        .map(|(_, cpu)| cpu)
        .sum()
}

/// The pids of the processes named `comm` (only this process's children with `children`).
fn pids_named(comm: &str, children: bool) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id().to_string();
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // The parent's pid is the 4th field, the first after the command name.
            let parent = stat
                .rfind(')')
                .and_then(|c| stat.get(c + 2..))
                .and_then(|rest| rest.split_whitespace().nth(1));
            stat_cpu(&stat).is_some_and(|(c, _)| c == comm)
                && (!children || parent == Some(me.as_str()))
        })
        .collect()
}

/// Pins every thread of `pid` to `cpus` (a taskset list); false when taskset refused.
fn pin(pid: u32, cpus: &str) -> bool {
    std::process::Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where the provider and appreg run: the provider on the last core, the rest on the others.
struct Pinning {
    all: String,
    appreg: String,
    /// The cores of `appreg`.
    appreg_cores: Vec<usize>,
    provider: String,
}

impl Pinning {
    /// None with fewer than two cores or `APPREG_BENCH_PIN=0`.
    fn plan() -> Option<Pinning> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores < 2 || std::env::var("APPREG_BENCH_PIN").is_ok_and(|v| v == "0") {
            return None;
        }
        let last = cores - 1;
        Some(Pinning {
            all: format!("0-{last}"),
            appreg: if last == 1 {
                "0".into()
            } else {
                format!("0-{}", last - 1)
            },
            appreg_cores: (0..last).collect(),
            provider: last.to_string(),
        })
    }

    /// Pins the provider, this process and PostgreSQL; says what it did.
    fn apply(&self) {
        let me = pin(std::process::id(), &self.appreg);
        let node: Vec<bool> = pids_named("node", true)
            .into_iter()
            .map(|p| pin(p, &self.provider))
            .collect();
        let pg: Vec<bool> = pids_named("postgres", false)
            .into_iter()
            .map(|p| pin(p, &self.appreg))
            .collect();
        let ok = |v: &[bool]| v.iter().filter(|b| **b).count();
        println!(
            "pinned: provider (node: {}/{} processes) on CPU {}; this process ({}) and PostgreSQL \
             ({}/{} processes) on CPU {}",
            ok(&node),
            node.len(),
            self.provider,
            if me { "yes" } else { "no" },
            ok(&pg),
            pg.len(),
            self.appreg
        );
        assert!(
            me && ok(&node) > 0 && ok(&pg) > 0,
            "taskset could not pin the processes (APPREG_BENCH_PIN=0 runs unpinned)"
        );
    }
}

impl Drop for Pinning {
    /// Every process back on every core (PostgreSQL serves others), a failed run included.
    fn drop(&mut self) {
        for pid in pids_named("postgres", false)
            .into_iter()
            .chain(pids_named("node", true))
            .chain([std::process::id()])
        {
            pin(pid, &self.all);
        }
    }
}

/// Runs `work` on a runtime of its own, on a thread named [`LOAD_THREAD`] (the load generator);
/// returns its output and the CPU seconds that thread used.
fn on_load_thread<F, T>(work: F) -> (T, f64)
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let thread = std::thread::Builder::new()
        .name(LOAD_THREAD.into())
        .spawn(move || {
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(work);
            (out, load_thread_seconds())
        })
        .unwrap();
    tokio::task::block_in_place(|| thread.join().unwrap())
}

/// Busy and total clock ticks so far of `cores` (all of them when empty), from /proc/stat:
/// busy is everything but idle and I/O wait.
fn core_ticks(cores: &[usize]) -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let names: Vec<String> = if cores.is_empty() {
        vec!["cpu".into()]
    } else {
        cores.iter().map(|c| format!("cpu{c}")).collect()
    };
    let (mut busy, mut total) = (0, 0);
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        if !fields.next().is_some_and(|n| names.iter().any(|m| m == n)) {
            continue;
        }
        // user nice system idle iowait irq softirq steal (guest time is counted in user).
        let ticks: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
        let all: u64 = ticks.iter().sum();
        total += all;
        busy += all - ticks.get(3).copied().unwrap_or(0) - ticks.get(4).copied().unwrap_or(0);
    }
    (busy, total)
}

/// CPU seconds used so far by the processes named `postgres`, `node`, and this one. PostgreSQL's
/// include its ended backends (the server's children it has reaped: pgbench's connections).
fn cpu_seconds() -> [f64; 3] {
    let ticks = 100.0; // USER_HZ on Linux
    let mut sums = [0.0; 3];
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return sums;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let used = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        // utime and stime are the 14th and 15th fields of the whole line; cutime and cstime,
        // the reaped children's, the 16th and 17th.
        let cpu = (used(11) + used(12)) / ticks;
        let slot = if name == me {
            2
        } else if comm == "postgres" {
            sums[0] += (used(13) + used(14)) / ticks;
            0
        } else if comm == "node" {
            1
        } else {
            continue;
        };
        sums[slot] += cpu;
    }
    sums
}

/// Creates `count` backend_to_backend applications named `<prefix> <i>` through the api,
/// `concurrency` at a time, on the load generator's thread; returns the CPU seconds it used.
fn creates(base: &str, user: &str, prefix: &str, count: usize, concurrency: usize) -> f64 {
    let (base, user, prefix) = (base.to_string(), user.to_string(), prefix.to_string());
    on_load_thread(async move {
        let http = reqwest::Client::new();
        futures::stream::iter(0..count)
            .for_each_concurrent(concurrency, |i| {
                let (http, base, user, prefix) = (http.clone(), &base, &user, &prefix);
                async move {
                    let r = http
                        .post(format!("{base}/applications"))
                        .bearer_auth(user)
                        .json(&serde_json::json!({"name": format!("{prefix} {i}"), "type": "backend_to_backend"}))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                }
            })
            .await;
    })
    .1
}

/// Waits until `count` registrations were answered (registered or failed).
async fn wait_registered(pool: &sqlx::PgPool, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM events WHERE event_type IN ('DcrClientRegistered', 'DcrRegistrationFailed')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if done as usize >= count {
            return;
        }
        assert!(Instant::now() < deadline, "registrations did not finish");
        // Not more often: each count scans the events table, PostgreSQL work that is not
        // appreg's but is counted as its (the rate comes from the events' timestamps, so the
        // pause does not change it).
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// (a) registrations/s sent directly to the provider.
async fn provider_rate(oidc: &OidcProvider, n: usize, concurrency: usize) -> f64 {
    let client = Arc::new(ProviderClient::new().unwrap());
    let settings = Arc::new(oidc.settings());
    let metadata = Arc::new(
        ClientMetadata::for_application(
            ApplicationType::BackendToBackend,
            &[GrantType::ClientCredentials],
            &[],
            "direct",
            None,
            None,
            None,
        )
        .unwrap(),
    );
    // Warm-up (discovery, token caches, the JIT) at the same concurrency: without it the
    // provider's rate swings by a third from run to run.
    futures::stream::iter(0..n.min(500))
        .for_each_concurrent(concurrency, |_| {
            let (client, settings, metadata) = (client.clone(), settings.clone(), metadata.clone());
            async move {
                client.register(&settings, &metadata).await.unwrap();
            }
        })
        .await;
    let started = Instant::now();
    futures::stream::iter(0..n)
        .for_each_concurrent(concurrency, |_| {
            let (client, settings, metadata) = (client.clone(), settings.clone(), metadata.clone());
            async move {
                client.register(&settings, &metadata).await.unwrap();
            }
        })
        .await;
    n as f64 / started.elapsed().as_secs_f64()
}

/// What PostgreSQL has written so far: rows changed (inserted, updated or deleted) in
/// `pool`'s database, and write transactions (transaction ids assigned, in the whole server).
/// Waits first until the last writes' counters are in: a backend reports them once idle, within
/// a second.
async fn writes(pool: &sqlx::PgPool) -> (f64, f64) {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    sqlx::query_as(
        "SELECT (SELECT tup_inserted + tup_updated + tup_deleted FROM pg_stat_database \
         WHERE datname = current_database())::float8, \
         pg_snapshot_xmax(pg_current_snapshot())::text::float8",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// (d) PostgreSQL's own cost of writing, on appreg's core: pgbench (prepared statements, 16
/// clients, itself on the provider's core) inserting event-sized rows (a jsonb document, a
/// primary key and a unique index), 10 and then 1 per transaction, each for `seconds`. Returns
/// PostgreSQL's CPU ms per row and per transaction beyond its rows (statement, commit, round
/// trip).
async fn pgbench_floor(pinning: Option<&Pinning>, seconds: u64) -> (f64, f64) {
    let (name, url) = fresh_database("appreg_bench_dcr_floor").await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query(
        "CREATE TABLE floor_rows (id bigserial PRIMARY KEY, stream_id text NOT NULL, \
         version bigint NOT NULL, data jsonb NOT NULL, UNIQUE (stream_id, version))",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let document = r#"'{"name":"bench 1234","type":"backend_to_backend","grant_types":["client_credentials"],"redirect_uris":[],"environment":"DEFAULT"}'"#;
    let mut per_transaction = Vec::new();
    for rows in [10, 1] {
        let script = std::env::temp_dir().join(format!(
            "appreg-dcr-floor-{}-{rows}.sql",
            std::process::id()
        ));
        std::fs::write(
            &script,
            format!(
                "INSERT INTO floor_rows (stream_id, version, data) SELECT md5(random()::text), g, \
                 {document} FROM generate_series(1, {rows}) g;\n"
            ),
        )
        .unwrap();
        let mut command = match pinning {
            Some(p) => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", &p.provider, "pgbench"]);
                c
            }
            None => std::process::Command::new("pgbench"),
        };
        let before = cpu_seconds()[0];
        let out = command
            .args(["-n", "-M", "prepared", "-c", "16", "-j", "1", "-T"])
            .arg(seconds.to_string())
            .arg("-f")
            .arg(&script)
            .arg("-d")
            .arg(&url)
            .stderr(std::process::Stdio::null())
            .output()
            .expect("pgbench must be installed (Debian: postgresql-client)");
        // Its connections' backends ended: their CPU is the server's once reaped.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cpu = cpu_seconds()[0] - before;
        let _ = std::fs::remove_file(&script);
        let text = String::from_utf8_lossy(&out.stdout);
        let done: f64 = text
            .lines()
            .find(|l| l.starts_with("number of transactions actually processed"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("cannot read pgbench's output: {text}"));
        per_transaction.push(cpu * 1000.0 / done);
    }
    drop_database(&name).await;
    let row = (per_transaction[0] - per_transaction[1]) / 9.0;
    (row, per_transaction[1] - row)
}

/// The allocator of the `appreg` binary (src/main.rs), so what runs in process is measured as
/// it runs in production.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let n = env_usize("APPREG_BENCH_REGISTRATIONS", 5000);
    let concurrency = env_usize("APPREG_BENCH_CONCURRENCY", 16);
    println!(
        "DCR benchmark: {n} registrations per step, {concurrency} at a time, load average {}",
        load_average()
    );
    let oidc = OidcProvider::start(Mode::fixed_token());
    let pinning = Pinning::plan();
    match &pinning {
        Some(p) => p.apply(),
        None => println!("not pinned: the provider and appreg share the machine's cores"),
    }
    let direct_cpu = cpu_seconds();
    let direct = provider_rate(&oidc, n, concurrency).await;
    let direct_cpu = (cpu_seconds()[1] - direct_cpu[1]) * 1000.0 / (n + n.min(500)) as f64;
    println!("(a) oidc-provider direct: {direct:.0} registrations/s");

    // (b) through appreg: api + saga in this process, on a fresh database.
    let (name, url) = fresh_database("appreg_bench_dcr").await;
    let config = appreg_test_support::app::config("bench");
    let db = Database::connect(&url, 32).await.unwrap();
    let (key, _) = appreg_test_support::tokens::fresh_key();
    let api = appreg_test_support::app::TestApi::start(&db, &config, &key).await;
    appreg_dcr_saga::migrate(&db).await.unwrap();
    let base = format!("{}/v1/environments/DEFAULT", api.base);
    let pool = match &db {
        Database::Postgres(p) => p.clone(),
        Database::Sqlite(_) => unreachable!(),
    };
    let shutdown = api.shutdown;
    let store = db.event_store().await.unwrap();
    let vault = appreg_secrets::SecretStore::new(
        db.clone(),
        Arc::new(appreg_api::state::keyring(&config).unwrap()),
    );
    let saga_concurrency = env_usize(
        "APPREG_BENCH_SAGA_CONCURRENCY",
        appreg_dcr_saga::SagaConfig::default().concurrency,
    );
    let saga_config = appreg_dcr_saga::SagaConfig {
        concurrency: saga_concurrency,
        ..appreg_dcr_saga::SagaConfig::default()
    };
    let saga = Arc::new(appreg_dcr_saga::Saga::new(
        db.clone(),
        store.clone(),
        vault,
        ProviderClient::new().unwrap(),
        saga_config,
    ));
    // Stopped alone before (c).
    let saga_stop = shutdown.child_token();
    tokio::spawn(appreg_dcr_saga::run(
        saga,
        db.clone(),
        store,
        saga_concurrency,
        saga_stop.clone(),
    ));

    let sign = |sub: &str, admin: bool| appreg_test_support::tokens::token(&key, sub, admin, 3600);
    let admin = sign("root", true);
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{base}/settings/client-registration"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"allowed_types": {"simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true}, "dcr_enabled": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let Mode::InitialAccessToken(token) = oidc.mode().clone() else {
        unreachable!()
    };
    let r = http
        .post(format!("{base}/client-registration-providers"))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"name": "bench provider", "discovery_endpoint": oidc.discovery_url(),
            "initial_access_token_type": "INITIAL_ACCESS_TOKEN", "initial_access_token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let user = sign("bench", false);
    // Warm-up, as for (a): the pool's connections opened and PostgreSQL's backends' caches
    // filled, the provider's clients cached; not counted.
    let warm = n.min(500);
    creates(&base, &user, "warm-up", warm, concurrency);
    wait_registered(&pool, warm).await;
    let written_before = writes(&pool).await;
    let appreg_cores = pinning
        .as_ref()
        .map(|p| p.appreg_cores.clone())
        .unwrap_or_default();
    let cpu_before = cpu_seconds();
    let ticks_before = core_ticks(&appreg_cores);
    let started = Instant::now();
    let load_cpu = creates(&base, &user, "bench", n, concurrency);
    let created = started.elapsed();
    // The appreg cores' use while the creates were sent (the saga busy throughout): near 100%,
    // appreg's rate is bound by its CPU per registration; well below, by waiting.
    let ticks_created = core_ticks(&appreg_cores);
    wait_registered(&pool, warm + n).await;
    // After the read model's last updates (the counters' wait).
    let written_after = writes(&pool).await;
    let cpu_after = cpu_seconds();
    let failed: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM events WHERE event_type = 'DcrRegistrationFailed'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // Latency from the events' own timestamps.
    let rows: Vec<(f64, f64)> = sqlx::query_as(
        "SELECT EXTRACT(EPOCH FROM c.recorded_at)::float8, EXTRACT(EPOCH FROM r.recorded_at)::float8 \
         FROM events c JOIN events r ON r.stream_id = c.stream_id AND r.event_type = 'DcrClientRegistered' \
         WHERE c.event_type = 'ApplicationCreated' AND c.data->>'name' LIKE 'bench %'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let first = rows.iter().map(|r| r.0).fold(f64::MAX, f64::min);
    let last = rows.iter().map(|r| r.1).fold(f64::MIN, f64::max);
    let mut lat: Vec<f64> = rows.iter().map(|(c, r)| (r - c) * 1000.0).collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |f: f64| lat[((lat.len() as f64 * f) as usize).min(lat.len() - 1)];
    let rate = rows.len() as f64 / (last - first);
    println!(
        "(b) through appreg (HTTP create → saga → provider → REGISTERED): {rate:.0} registrations/s \
         ({} registered, {failed} failed; creates took {:.1}s), create → REGISTERED p50 {:.0} ms, p99 {:.0} ms",
        rows.len(),
        created.as_secs_f64(),
        q(0.5),
        q(0.99)
    );
    let per = |i: usize| (cpu_after[i] - cpu_before[i]) * 1000.0 / rows.len() as f64;
    let load_per = load_cpu * 1000.0 / rows.len() as f64;
    let appreg_per = per(2) - load_per;
    println!(
        "CPU per registration during (b): PostgreSQL {:.2} ms, provider (node) {:.2} ms, appreg \
         (api + saga) {:.2} ms, load generator {:.2} ms; the provider's in (a): {:.2} ms",
        per(0),
        per(1),
        appreg_per,
        load_per,
        direct_cpu
    );
    println!(
        "appreg's own CPU per registration (api + saga + PostgreSQL) {:.2} ms = {:.0}% of the \
         provider's {:.2} ms during (b) (target ≤ 100%)",
        appreg_per + per(0),
        (appreg_per + per(0)) / per(1) * 100.0,
        per(1)
    );
    println!(
        "ratio: appreg = {:.0}% of the provider's own{} rate (target ≥ 80%); {} busy {:.0}% \
         while the creates were sent; load average {}",
        rate / direct * 100.0,
        if pinning.is_some() { " pinned" } else { "" },
        match &pinning {
            Some(p) => format!("appreg's CPU {}", p.appreg),
            None => "the machine's CPUs".into(),
        },
        (ticks_created.0 - ticks_before.0) as f64
            / (ticks_created.1 - ticks_before.1).max(1) as f64
            * 100.0,
        load_average()
    );

    // (c) The create path alone — the api's request, its append and its read-model update — with
    // the saga stopped (the requests wait): what of (b) is not the saga's.
    saga_stop.cancel();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let projected: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_applications")
        .fetch_one(&pool)
        .await
        .unwrap();
    let cpu_before = cpu_seconds();
    let load_cpu = creates(&base, &user, "create-only", n, concurrency);
    // Until the read model holds them all.
    loop {
        let now: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM rm_applications")
            .fetch_one(&pool)
            .await
            .unwrap();
        if now >= projected + n as i64 {
            break;
        }
        // Not more often: each count is PostgreSQL work that is not appreg's.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let cpu_after = cpu_seconds();
    let create_pg = (cpu_after[0] - cpu_before[0]) * 1000.0 / n as f64;
    let create_appreg = ((cpu_after[2] - cpu_before[2]) - load_cpu) * 1000.0 / n as f64;
    println!(
        "(c) the create path alone (saga stopped): PostgreSQL {create_pg:.2} ms, appreg (api) \
         {create_appreg:.2} ms per create; so the saga's part of a registration (its reads, the \
         provider's answer recorded, its read-model update): PostgreSQL {:.2} ms, appreg {:.2} ms",
        per(0) - create_pg,
        appreg_per - create_appreg
    );
    shutdown.cancel();
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.close().await;
    pool.close().await;
    drop_database(&name).await;

    // (d) What (b)'s writes cost PostgreSQL at pgbench's own efficiency, on the same core.
    let (row_ms, transaction_ms) = pgbench_floor(pinning.as_ref(), 5).await;
    let registered = rows.len() as f64;
    let rows_per = (written_after.0 - written_before.0) / registered;
    let transactions_per = (written_after.1 - written_before.1) / registered;
    let floor = rows_per * row_ms + transactions_per * transaction_ms;
    println!(
        "(d) PostgreSQL's own cost of writing on appreg's core (pgbench, prepared, 16 clients, \
         event-sized rows): {:.1} µs per row, {:.1} µs per transaction beyond its rows; (b) \
         wrote {rows_per:.1} rows in {transactions_per:.2} write transactions per registration: \
         {:.2} ms at pgbench's cost = {:.0}% of PostgreSQL's {:.2} ms during (b), {:.0}% of the \
         provider's {:.2} ms",
        row_ms * 1000.0,
        transaction_ms * 1000.0,
        floor,
        floor / per(0) * 100.0,
        per(0),
        floor / per(1) * 100.0,
        per(1)
    );
    drop(pinning);
}
