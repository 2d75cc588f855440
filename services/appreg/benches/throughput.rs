//! Throughput benchmark (a program, not a timed test): `cargo bench -p appreg --bench throughput`.
//!
//! Against one PostgreSQL server, in one run, it measures
//!   (a) raw single-row INSERT transactions/s with pgbench, and appreg's single-event appends/s
//!       through the event store at 1, 16 and 64 concurrent clients, each alone in its
//!       transaction and through the command path's group commit;
//!   (b) `POST /applications` (simple) through HTTP against a separate `appreg api` process, at
//!       64 connections: commands/s, p50/p99 latency, and the process's resident memory idle and
//!       at peak — beside a bare axum handler doing one INSERT per request, in the same run;
//!   (c) the cost of sealing personal data on the create path: in one api process, rounds of
//!       creates whose token has a name (sealed into every event's metadata) alternate with
//!       rounds whose token has none (nothing to seal);
//! and prints each figure beside the limit measured in the same run, as a ratio.
//!
//! Environment: `APPREG_BENCH_API_CONNECTIONS` (the api's pool, default 16),
//! `APPREG_BENCH_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres,
//! a server where it may create databases), `APPREG_BENCH_SECONDS` (default 10 per step),
//! `APPREG_BENCH_SEALING_ROUNDS` (default 3 of each kind in (c)), `APPREG_BENCH_ONLY_SEALING`
//! (set: (c) only).

use appreg_eventstore::{AppendRequest, Database, NewEvent};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fresh database of the benchmark server: its URL.
async fn fresh_db(prefix: &str) -> String {
    appreg_test_support::bench::fresh_database(prefix).await.1
}

fn seconds() -> u64 {
    std::env::var("APPREG_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10)
}

/// pgbench: single-row INSERT transactions (an event-sized jsonb row) per second.
async fn pgbench_inserts(clients: u32) -> f64 {
    let url = fresh_db("appreg_bench_raw").await;
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE raw_events (position bigserial PRIMARY KEY, stream_id text NOT NULL, data jsonb NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let script = std::env::temp_dir().join(format!("appreg-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "INSERT INTO raw_events (stream_id, data) VALUES (md5(random()::text), '{\"name\":\"bench\",\"type\":\"simple\",\"client_id\":null}');\n",
    )
    .unwrap();
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds().to_string(),
            "-f",
        ])
        .arg(&script)
        .arg("-d")
        .arg(&url)
        .stderr(Stdio::null())
        .output()
        .expect("pgbench must be installed (Debian: postgresql-client)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read pgbench's output: {text}"))
}

/// appreg event store: single-event appends per second, each writer creating new streams.
/// Single-event appends/s of `writers` concurrent writers, each alone in its transaction
/// (`grouped`: false) or through the command path's group commit (`grouped`: true).
async fn store_appends(writers: u32, grouped: bool) -> f64 {
    let url = fresh_db("appreg_bench_store").await;
    let db = Database::connect(&url, writers.max(2)).await.unwrap();
    db.migrate().await.unwrap();
    let store = db.event_store().await.unwrap();
    let commands = appreg_commands::Commands::new(
        store.clone(),
        appreg_commands::CommandSettings {
            // As the api would run: APPREG_COMMANDS__GROUP_COMMIT_WRITERS, else the default.
            group_commit_writers: if grouped {
                std::env::var("APPREG_COMMANDS__GROUP_COMMIT_WRITERS")
                    .ok()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(appreg_commands::CommandSettings::default().group_commit_writers)
            } else {
                0
            },
            ..Default::default()
        },
    );
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..writers {
        let (commands, done, stop) = (commands.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let id = uuid::Uuid::now_v7();
                let request = AppendRequest {
                    stream_id: format!("application-{id}"),
                    stream_type: "application".into(),
                    expected_version: 0,
                    events: vec![NewEvent {
                        event_id: uuid::Uuid::now_v7(),
                        event_type: "ApplicationCreated".into(),
                        schema_version: 1,
                        data: serde_json::json!({"name": "bench", "type": "simple", "client_id": null}),
                        metadata: serde_json::json!({"environment": "DEFAULT", "actor": "bench"}),
                        recorded_at: chrono::Utc::now(),
                    }],
                    claims: vec![],
                    releases: vec![],
                };
                commands.append(request).await.unwrap();
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds())).await;
    stop.store(true, Ordering::Relaxed);
    let n = done.load(Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    for t in tasks {
        t.await.unwrap();
    }
    db.close().await;
    n as f64 / elapsed
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct HttpFigures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    idle_rss_mib: f64,
    peak_rss_mib: f64,
}

/// A separate `appreg api` process on a fresh database: the child, its base URL and its data
/// directory (the development token key), once it answers.
async fn start_api(client: &reqwest::Client) -> (std::process::Child, String, std::path::PathBuf) {
    let url = fresh_db("appreg_bench_http").await;
    let data = std::env::temp_dir().join(format!(
        "appreg-bench-data-{}-{}",
        std::process::id(),
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&data).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_appreg"))
        .arg("api")
        .env("APPREG_DATABASE_URL", &url)
        .env("APPREG_LISTEN", format!("127.0.0.1:{port}"))
        .env("APPREG_AUTH__DEV", "true")
        .env(
            "APPREG_SECRETS_MASTER_KEY",
            "bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("APPREG_DATA_DIR", &data)
        .env(
            "APPREG_DATABASE_MAX_CONNECTIONS",
            std::env::var("APPREG_BENCH_API_CONNECTIONS").unwrap_or_else(|_| "16".into()),
        )
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start appreg api");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "appreg api did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (child, base, data)
}

/// A development token of `data` for `sub`, with `extra` arguments (`--name`, `--email`).
fn dev_token(data: &std::path::Path, sub: &str, extra: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_appreg"))
        .args(["token", "--sub", sub])
        .args(extra)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `POST /applications` at `connections` connections against a separate `appreg api` process.
async fn http_creates(connections: usize) -> HttpFigures {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let (mut child, base, data) = start_api(&client).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(child.id(), "VmRSS:");
    let token = dev_token(&data, "bench-user", &[]);
    let endpoint = format!("{base}/v1/environments/DEFAULT/applications");
    // Warm up the connections.
    for _ in 0..connections {
        client.get(format!("{base}/healthz")).send().await.unwrap();
    }
    let (mut figures, peak) = drive(
        &client,
        &endpoint,
        Some(&token),
        connections,
        Some(child.id()),
    )
    .await;
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    figures.idle_rss_mib = idle as f64 / 1024.0;
    figures.peak_rss_mib = peak as f64 / 1024.0;
    figures
}

/// The cost of sealing personal data on the create path, in one api process: creates by a
/// caller whose token has no name (nothing to seal) alternate with creates by one whose token
/// has a name and an e-mail (the metadata's `actor_name` sealed on every request), `rounds`
/// times each, in the order A B B A A B … Returns the two mean rates and p99s (unsealed, sealed).
async fn sealing_cost(connections: usize, rounds: usize) -> (HttpFigures, HttpFigures) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let (mut child, base, data) = start_api(&client).await;
    let plain = dev_token(&data, "bench-plain", &[]);
    let named = dev_token(
        &data,
        "bench-named",
        &[
            "--name",
            "Bench Named-User",
            "--email",
            "bench.named@example.org",
        ],
    );
    let endpoint = format!("{base}/v1/environments/DEFAULT/applications");
    // Warm-up, not counted: both callers' first visits, the connections, the first pages.
    for token in [&plain, &named] {
        drive(&client, &endpoint, Some(token), connections, None).await;
    }
    let mut sums = [(0.0, 0.0, 0.0, 0u64), (0.0, 0.0, 0.0, 0u64)];
    for round in 0..rounds * 2 {
        // A B B A …: the rate drifts as the tables grow and the machine's load changes;
        // neither kind always goes first.
        let i = (round + round / 2) % 2;
        let token = if i == 0 { &plain } else { &named };
        let (f, _) = drive(&client, &endpoint, Some(token), connections, None).await;
        println!(
            "  round {}: {:<8} {:>7.0}/s p50 {:>5.1} ms p99 {:>5.1} ms",
            round / 2 + 1,
            if i == 0 { "unsealed" } else { "sealed" },
            f.rate,
            f.p50_ms,
            f.p99_ms
        );
        sums[i].0 += f.rate;
        sums[i].1 += f.p50_ms;
        sums[i].2 += f.p99_ms;
        sums[i].3 += f.errors;
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&data);
    let n = rounds.max(1) as f64;
    let mean = |s: (f64, f64, f64, u64)| HttpFigures {
        rate: s.0 / n,
        p50_ms: s.1 / n,
        p99_ms: s.2 / n,
        errors: s.3,
        idle_rss_mib: 0.0,
        peak_rss_mib: 0.0,
    };
    (mean(sums[0]), mean(sums[1]))
}

/// `connections` clients POST a simple application to `endpoint` for the configured time;
/// samples the resident memory of `pid` meanwhile (peak, KiB).
async fn drive(
    client: &reqwest::Client,
    endpoint: &str,
    token: Option<&str>,
    connections: usize,
    pid: Option<u32>,
) -> (HttpFigures, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..connections {
        let (client, stop, errors, endpoint, token) = (
            client.clone(),
            stop.clone(),
            errors.clone(),
            endpoint.to_string(),
            token.map(str::to_string),
        );
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(4096);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let mut request = client
                    .post(&endpoint)
                    .json(&serde_json::json!({"name": "bench app", "type": "simple"}));
                if let Some(token) = &token {
                    request = request.bearer_auth(token);
                }
                match request.send().await {
                    Ok(r) if r.status() == 201 => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                    }
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut peak = 0;
    let end = Instant::now() + Duration::from_secs(seconds());
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(pid) = pid {
            peak = peak.max(rss_kib(pid, "VmRSS:"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    if let Some(pid) = pid {
        peak = peak.max(rss_kib(pid, "VmHWM:"));
    }
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    let figures = HttpFigures {
        rate: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors: errors.load(Ordering::Relaxed),
        idle_rss_mib: 0.0,
        peak_rss_mib: 0.0,
    };
    (figures, peak)
}

/// The limit of (b): a bare axum handler that does one INSERT per request (no auth, no
/// validation, no read model), on its own runtime with 2 workers and a 16-connection pool.
async fn bare_handler(connections: usize) -> HttpFigures {
    use axum::routing::post;
    let url = fresh_db("appreg_bench_bare").await;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .test_before_acquire(false)
        .connect(&url)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE raw_apps (id uuid PRIMARY KEY, data jsonb NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server_pool = pool.clone();
    runtime.spawn(async move {
        let app = axum::Router::new().route(
            "/raw",
            post(move |axum::Json(body): axum::Json<serde_json::Value>| {
                let pool = server_pool.clone();
                async move {
                    sqlx::query("INSERT INTO raw_apps (id, data) VALUES ($1, $2)")
                        .bind(uuid::Uuid::now_v7())
                        .bind(&body)
                        .execute(&pool)
                        .await
                        .unwrap();
                    (axum::http::StatusCode::CREATED, axum::Json(body))
                }
            }),
        );
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(listener, app).await.unwrap();
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}/raw");
    let (figures, _) = drive(&client, &endpoint, None, connections, None).await;
    runtime.shutdown_background();
    pool.close().await;
    figures
}

/// The allocator of the `appreg` binary (src/main.rs), so what runs in process is measured as
/// it runs in production.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    println!(
        "appreg throughput benchmark — {} s per step, PostgreSQL at {}",
        seconds(),
        appreg_test_support::bench::server_url()
    );
    println!(
        "load average at start: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    if std::env::var("APPREG_BENCH_ONLY_SEALING").is_ok() {
        sealing(rounds()).await;
        return;
    }
    println!();
    println!("(a) single-event appends vs pgbench single-row INSERT transactions");
    println!(
        "{:>8} {:>14} {:>14} {:>8} {:>18} {:>8}",
        "clients", "pgbench tps", "alone/s", "ratio", "group-committed/s", "ratio"
    );
    let mut raw16 = 0.0;
    let clients_list: Vec<u32> = std::env::var("APPREG_BENCH_CLIENTS")
        .ok()
        .map(|c| c.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 64]);
    for clients in clients_list {
        let raw = pgbench_inserts(clients).await;
        let alone = store_appends(clients, false).await;
        let grouped = store_appends(clients, true).await;
        if clients == 16 {
            raw16 = raw;
        }
        println!(
            "{clients:>8} {raw:>14.0} {alone:>14.0} {:>7.0}% {grouped:>18.0} {:>7.0}%",
            100.0 * alone / raw,
            100.0 * grouped / raw
        );
    }
    println!("target: group-committed appends ≥ 90% of pgbench at 16 clients");
    println!();
    if std::env::var("APPREG_BENCH_ONLY_APPENDS").is_ok() {
        return;
    }

    println!("(b) POST /applications (simple) through HTTP, 64 connections, durable commits");
    let bare = bare_handler(64).await;
    println!(
        "limit: a bare axum handler doing one INSERT: {:.0} req/s ({:.0}% of pgbench), p99 {:.1} ms",
        bare.rate,
        100.0 * bare.rate / raw16.max(1.0),
        bare.p99_ms
    );
    let h = http_creates(64).await;
    println!(
        "commands/s {:.0} ({:.0}% of pgbench's 16-client INSERT rate {:.0}; target ≥ 60%), p50 {:.1} ms, p99 {:.1} ms (target < 30 ms), errors {}",
        h.rate,
        100.0 * h.rate / raw16.max(1.0),
        raw16,
        h.p50_ms,
        h.p99_ms,
        h.errors
    );
    println!(
        "appreg create vs the bare one-INSERT handler: {:.0}%",
        100.0 * h.rate / bare.rate.max(1.0)
    );
    println!(
        "api resident memory: idle {:.1} MiB (target < 64), peak {:.1} MiB (target < 256)",
        h.idle_rss_mib, h.peak_rss_mib
    );
    sealing(rounds()).await;
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}

/// Rounds of each kind in the sealing comparison (`APPREG_BENCH_SEALING_ROUNDS`, default 3).
fn rounds() -> usize {
    std::env::var("APPREG_BENCH_SEALING_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// (c): what sealing personal data costs the create path.
async fn sealing(rounds: usize) {
    println!();
    println!("(c) personal data: creates whose actor's name is sealed vs creates with nothing to seal, 64 connections, alternating");
    let (plain, sealed) = sealing_cost(64, rounds).await;
    println!(
        "unsealed {:.0}/s (p99 {:.1} ms), sealed {:.0}/s (p99 {:.1} ms): sealed = {:.1}% of unsealed (target ≥ 95%), errors {}",
        plain.rate,
        plain.p99_ms,
        sealed.rate,
        sealed.p99_ms,
        100.0 * sealed.rate / plain.rate.max(1.0),
        plain.errors + sealed.errors
    );
}
