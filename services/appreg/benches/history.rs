//! Command and read cost against history (a program, not a timed test):
//! `cargo bench -p appreg --bench history`.
//!
//! Against a separate `appreg api` process on a fresh PostgreSQL database, in one run:
//!   (a) `PUT` and `GET /applications/{id}` p50/p99 on an application whose stream holds 10
//!       events and on one that holds 10,000 (each update a 1 KB description), and the ratio of
//!       the second to the first (target ≤ 1.5: a command's cost does not grow with history);
//!       also the first (cold) `GET` of each after a restart of the api, which reads a snapshot
//!       and the events after it;
//!   (b) the api's resident memory once its aggregate cache is full (`commands.cache_mib`,
//!       64 MiB here), beside the bound + 64 MiB the issue allows.
//! The 10,000 events are written through the same command path in this process (the api then
//! finds them, and their snapshots, in the database).
//!
//! Environment: `APPREG_BENCH_DATABASE_URL` (default postgres://postgres@127.0.0.1:5432/postgres),
//! `APPREG_BENCH_REQUESTS` (requests per measured series, default 300),
//! `APPREG_BENCH_HISTORY` (events of the long stream, default 10000).

use appreg_commands::{ApplicationState, CommandSettings, Commands, Start};
use appreg_domain::application::{
    Application, CreateApplication, Patch, Policy, UpdateApplication,
};
use appreg_domain::{
    ApplicationId, ApplicationName, ApplicationType, BoundedText, DomainError, EnvironmentId,
    UserId,
};
use appreg_eventstore::Database;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CACHE_MIB: u64 = 64;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn kib(text: usize, seed: usize) -> String {
    let mut s = format!("{seed:08} ");
    while s.len() < text {
        s.push_str("lorem ipsum dolor sit amet ");
    }
    s.truncate(text);
    s
}

/// Writes an application owned by `bench-user` with `events` events in its stream.
async fn seed(commands: &Commands, events: usize) -> ApplicationId {
    let id = ApplicationId(uuid::Uuid::now_v7());
    let meta = serde_json::json!({"environment": "DEFAULT", "actor": "bench-user"});
    commands
        .execute::<ApplicationState, DomainError, _>(&id.stream_id(), Start::New, &meta, |_| {
            Application::create(
                CreateApplication {
                    id,
                    environment: EnvironmentId::parse("DEFAULT").unwrap(),
                    name: ApplicationName::parse("history bench").unwrap(),
                    description: None,
                    domain: None,
                    app_type: ApplicationType::Simple,
                    client_id: None,
                    redirect_uris: vec![],
                    grant_types: vec![],
                    client_uri: None,
                    logo_uri: None,
                    provider_id: None,
                    owner: UserId::parse("bench-user").unwrap(),
                },
                &Policy::default(),
            )
        })
        .await
        .unwrap();
    for i in 1..events {
        let text = BoundedText::parse(&kib(1000, i), 4000).unwrap();
        commands
            .execute::<ApplicationState, DomainError, _>(
                &id.stream_id(),
                Start::Current,
                &meta,
                |s| {
                    s.0.as_ref().unwrap().update(
                        UpdateApplication {
                            description: Patch::Set(text.clone()),
                            ..Default::default()
                        },
                        &Policy::default(),
                    )
                },
            )
            .await
            .unwrap();
    }
    id
}

struct Api {
    child: Child,
    base: String,
}

fn start_api(url: &str, data: &std::path::Path) -> Api {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(env!("CARGO_BIN_EXE_appreg"))
        .arg("api")
        .env("APPREG_DATABASE_URL", url)
        .env("APPREG_LISTEN", format!("127.0.0.1:{port}"))
        .env("APPREG_AUTH__DEV", "true")
        .env("APPREG_DEFAULT_APPLICATION", "false")
        .env("APPREG_COMMANDS__CACHE_MIB", CACHE_MIB.to_string())
        .env(
            "APPREG_SECRETS_MASTER_KEY",
            "bench:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .env("APPREG_DATA_DIR", data)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start appreg api");
    Api {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(client: &reqwest::Client, api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while client
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "appreg api did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stop(mut api: Api) {
    let _ = Command::new("kill")
        .arg(api.child.id().to_string())
        .status();
    let _ = api.child.wait();
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

struct Series {
    get_p50: f64,
    get_p99: f64,
    put_p50: f64,
    put_p99: f64,
}

async fn measure(client: &reqwest::Client, api: &Api, token: &str, id: ApplicationId) -> Series {
    let path = format!("{}/v1/environments/DEFAULT/applications/{}", api.base, id.0);
    let n = env_or("APPREG_BENCH_REQUESTS", 300);
    let (mut gets, mut puts) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let t = Instant::now();
        let r = client
            .put(&path)
            .bearer_auth(token)
            .json(&serde_json::json!({"description": kib(1000, 1_000_000 + i)}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let _ = r.bytes().await;
        puts.push(t.elapsed());
        let t = Instant::now();
        let r = client.get(&path).bearer_auth(token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        gets.push(t.elapsed());
    }
    gets.sort();
    puts.sort();
    Series {
        get_p50: percentile(&gets, 0.5),
        get_p99: percentile(&gets, 0.99),
        put_p50: percentile(&puts, 0.5),
        put_p99: percentile(&puts, 0.99),
    }
}

async fn cold_get(client: &reqwest::Client, api: &Api, token: &str, id: ApplicationId) -> f64 {
    let t = Instant::now();
    let r = client
        .get(format!(
            "{}/v1/environments/DEFAULT/applications/{}",
            api.base, id.0
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    t.elapsed().as_secs_f64() * 1000.0
}

/// The allocator of the `appreg` binary (src/main.rs), so what runs in process is measured as
/// it runs in production.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    let url = appreg_test_support::bench::fresh_database("appreg_bench_history")
        .await
        .1;
    let db = Database::connect(&url, 8).await.unwrap();
    db.migrate().await.unwrap();
    let data = std::env::temp_dir().join(format!("appreg-bench-history-{}", std::process::id()));
    std::fs::create_dir_all(&data).unwrap();
    let api = start_api(&url, &data);
    let client = reqwest::Client::new();
    wait_ready(&client, &api).await;
    let token = String::from_utf8(
        Command::new(env!("CARGO_BIN_EXE_appreg"))
            .args(["token", "--sub", "bench-user", "--data"])
            .arg(&data)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();

    let long = env_or("APPREG_BENCH_HISTORY", 10_000);
    let commands = Commands::new(
        db.event_store().await.unwrap(),
        CommandSettings {
            group_commit_writers: 0,
            ..Default::default()
        },
    );
    let t = Instant::now();
    let short_id = seed(&commands, 10).await;
    let long_id = seed(&commands, long).await;
    println!(
        "seeded streams of 10 and {long} events (1 KB descriptions) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    // Let the background snapshot writes finish, then restart the api: its cache starts empty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop(api);
    let api = start_api(&url, &data);
    wait_ready(&client, &api).await;
    let cold_short = cold_get(&client, &api, &token, short_id).await;
    let cold_long = cold_get(&client, &api, &token, long_id).await;
    println!("(a) first GET after a restart (snapshot + tail): 10 events {cold_short:.1} ms, {long} events {cold_long:.1} ms");

    let short = measure(&client, &api, &token, short_id).await;
    let long_s = measure(&client, &api, &token, long_id).await;
    println!(
        "{:>14} {:>10} {:>10} {:>10} {:>10}",
        "stream", "GET p50", "GET p99", "PUT p50", "PUT p99"
    );
    for (name, s) in [
        ("10 events", &short),
        (&format!("{long} events")[..], &long_s),
    ] {
        println!(
            "{:>14} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms",
            name, s.get_p50, s.get_p99, s.put_p50, s.put_p99
        );
    }
    println!(
        "{:>14} {:>9.2}x {:>9.2}x {:>9.2}x {:>9.2}x   (target ≤ 1.5x)",
        "ratio",
        long_s.get_p50 / short.get_p50,
        long_s.get_p99 / short.get_p99,
        long_s.put_p50 / short.put_p50,
        long_s.put_p99 / short.put_p99
    );

    // (b) Fill the cache: applications with 4 KB descriptions, created and read through HTTP.
    let endpoint = format!("{}/v1/environments/DEFAULT/applications", api.base);
    let idle = rss_mib(api.child.id());
    let apps = env_or("APPREG_BENCH_CACHE_APPS", 12_000);
    let t = Instant::now();
    let mut ids = Vec::with_capacity(apps);
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = apps / 16;
    for w in 0..16 {
        let (client, endpoint, token) = (client.clone(), endpoint.clone(), token.clone());
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..per_task {
                let r = client
                    .post(&endpoint)
                    .bearer_auth(&token)
                    .json(&serde_json::json!({"name": format!("cache {w}-{i}"), "type": "simple", "description": kib(4000, i)}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                let body: serde_json::Value = r.json().await.unwrap();
                ids.push(body["id"].as_str().unwrap().to_string());
            }
            ids
        });
    }
    while let Some(r) = tasks.join_next().await {
        ids.extend(r.unwrap());
    }
    let mut peak = rss_mib(api.child.id());
    for id in &ids {
        let r = client
            .get(format!("{endpoint}/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
    }
    peak = peak.max(rss_mib(api.child.id()));
    println!(
        "(b) {} applications of ~4 KB created and read in {:.1} s: api resident memory idle {idle:.0} MiB, \
         with the cache full {peak:.0} MiB; bound {CACHE_MIB} MiB + 64 MiB = {} MiB ({})",
        ids.len(),
        t.elapsed().as_secs_f64(),
        CACHE_MIB + 64,
        if peak <= (CACHE_MIB + 64) as f64 { "within" } else { "OVER" }
    );
    stop(api);
    let _ = std::fs::remove_dir_all(&data);
}
