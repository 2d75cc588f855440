//! Notifier benchmark (a program, not a timed test): `cargo bench -p appreg --bench notifier`.
//!
//! In a fresh PostgreSQL database, with the api in process (endpoints created through HTTP), the
//! relay publishing to a private nats-server and the notifier consuming its durable JetStream
//! consumer (the production path), both built by their own crates in process, 16 local
//! receivers (in-process HTTP servers that answer 200 at once and note when each delivery first
//! arrived):
//!
//! - (a) deliveries/s: a backlog of `APPREG_BENCH_EVENTS` events (default 2,000), appended and
//!   published before the notifier starts, from its start until every one reached all 16
//!   endpoints; beside it, the relay's publish rate of the same log to a second private
//!   nats-server, measured right after in the same run;
//! - (b) delivery lag: events appended at 500/s (`APPREG_BENCH_RATE`) for
//!   `APPREG_BENCH_SECONDS` (default 10), from each append's commit to its first arrival at an
//!   endpoint, p50/p90/p99/max, with 1 endpoint enabled and then with 16.
//!
//! Environment: `APPREG_BENCH_DATABASE_URL` (default
//! postgres://postgres@127.0.0.1:5432/postgres, a server where it may create databases).

use appreg_eventstore::{AppendRequest, Database, NewEvent};
use appreg_test_support::bench::{drop_database, fresh_database, load_average};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ENDPOINTS: usize = 16;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

/// First arrivals: (endpoint, event id) → when.
#[derive(Default)]
struct Arrivals {
    first: Mutex<HashMap<(usize, String), Instant>>,
    count: AtomicU64,
}

async fn receive(
    State((endpoint, arrivals)): State<(usize, Arc<Arrivals>)>,
    _headers: HeaderMap,
    body: Bytes,
) -> &'static str {
    let now = Instant::now();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = event["event_id"].as_str().unwrap_or_default().to_string();
    if arrivals
        .first
        .lock()
        .unwrap()
        .insert((endpoint, id), now)
        .is_none()
    {
        arrivals.count.fetch_add(1, Ordering::Relaxed);
    }
    "ok"
}

async fn receiver(endpoint: usize, arrivals: Arc<Arrivals>) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state((endpoint, arrivals));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// An `ApplicationUpdated` of stream `stream` at `version`.
fn request(stream: usize, version: i64) -> (AppendRequest, String) {
    let event_id = uuid::Uuid::now_v7();
    let now =
        chrono::DateTime::from_timestamp_micros(chrono::Utc::now().timestamp_micros()).unwrap();
    (
        AppendRequest {
            stream_id: format!("application-{}", uuid::Uuid::from_u128(stream as u128 + 1)),
            stream_type: "application".into(),
            expected_version: version - 1,
            events: vec![NewEvent {
                event_id,
                event_type: "ApplicationUpdated".into(),
                schema_version: 1,
                data: serde_json::json!({"name": format!("bench {stream} {version}")}),
                metadata: serde_json::json!({"environment": "DEFAULT", "actor": "bench", "correlation_id": event_id.to_string(), "causation_id": event_id.to_string(), "at": now}),
                recorded_at: now,
            }],
            claims: vec![],
            releases: vec![],
        },
        event_id.to_string(),
    )
}

/// Commit → first arrival of each (endpoint, event) seen so far, in ms.
fn lags_of(
    commits: &HashMap<String, Instant>,
    first: &HashMap<(usize, String), Instant>,
    endpoints: usize,
) -> Vec<f64> {
    (0..endpoints)
        .flat_map(|e| commits.iter().map(move |(id, at)| (e, id, at)))
        .filter_map(|(e, id, at)| {
            first
                .get(&(e, id.clone()))
                .map(|t| t.duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The allocator of the `appreg` binary (src/main.rs), so what runs in process is measured as
/// it runs in production.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let events: usize = env_or("APPREG_BENCH_EVENTS", 2000);
    let rate: u64 = env_or("APPREG_BENCH_RATE", 500);
    let seconds: u64 = env_or("APPREG_BENCH_SECONDS", 10);
    let (name, url) = fresh_database("appreg_bench_notifier").await;
    let db = Database::connect(&url, 16).await.unwrap();
    appreg_api::migrate(&db).await.unwrap();
    appreg_notifier::migrate(&db).await.unwrap();
    let store = db.event_store().await.unwrap();
    let mut config = appreg_test_support::app::config("bench");
    config.api.allow_http_webhooks = Some(true);
    let (key, _) = appreg_test_support::tokens::fresh_key();
    let api = appreg_test_support::app::TestApi::start(&db, &config, &key).await;
    let admin = appreg_test_support::tokens::token(&key, "root", true, 3600);
    let client = reqwest::Client::new();
    let arrivals = Arc::new(Arrivals::default());
    let mut hooks = Vec::new();
    for endpoint in 0..ENDPOINTS {
        let url = receiver(endpoint, arrivals.clone()).await;
        let created: serde_json::Value = client
            .post(format!("{}/v1/environments/DEFAULT/webhooks", api.base))
            .bearer_auth(&admin)
            .json(&serde_json::json!({"url": url, "event_types": ["ApplicationUpdated"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        hooks.push((created["id"].as_str().unwrap().to_string(), url));
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The relay and the notifier open their own pools, as their processes do in production.
    let shared = appreg_worker::service::Start::url(url.clone(), None);
    // The production path: the relay publishes, the notifier consumes its durable consumer.
    let nats = appreg_test_support::nats::NatsServer::start();
    let servers = appreg_config::NatsServers::parse(&nats.url(), None).unwrap();
    let relay = appreg_relay::service::build(&config, &shared, &servers)
        .await
        .unwrap();
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    while js.get_stream("APPREG_EVENTS").await.is_err() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let notifier = appreg_notifier::service::build(&config, &shared, Some(&servers))
        .await
        .unwrap();
    println!(
        "notifier benchmark: {ENDPOINTS} endpoints, load average {}",
        load_average()
    );

    // (a) Throughput.
    // The backlog: appended (and published by the relay) before the notifier starts.
    let appending = Instant::now();
    let mut versions = vec![0i64; 200];
    for n in 0..events {
        let stream = n % versions.len();
        versions[stream] += 1;
        let (req, _) = request(stream, versions[stream]);
        store.append(req).await.unwrap();
    }
    let appended = appending.elapsed();
    let started = Instant::now();
    let notifier = tokio::spawn(notifier.run(shutdown.clone()));
    let want = (events * ENDPOINTS) as u64;
    while arrivals.count.load(Ordering::Relaxed) < want {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "deliveries stalled at {}",
            arrivals.count.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let deliveries_per_s = want as f64 / took.as_secs_f64();
    let fanned_out = events as f64 / took.as_secs_f64();
    println!(
        "(a) {events} events × {ENDPOINTS} endpoints = {want} deliveries in {:.2} s from the notifier's start (the backlog's appends took {:.2} s before): {deliveries_per_s:.0} deliveries/s ({fanned_out:.0} events/s fanned out)",
        took.as_secs_f64(),
        appended.as_secs_f64(),
    );

    // The relay's publish rate of the same log, in the same run, to another server and stream
    // (the relay's lock is its stream's name).
    {
        let nats = appreg_test_support::nats::NatsServer::start();
        let servers = appreg_config::NatsServers::parse(&nats.url(), None).unwrap();
        let mut config = config.clone();
        config.nats_stream = "BENCH_RATE".into();
        let total = {
            let Database::Postgres(pool) = &db else {
                unreachable!()
            };
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events")
                .fetch_one(pool)
                .await
                .unwrap() as u64
        };
        let stop = tokio_util::sync::CancellationToken::new();
        let relay = appreg_relay::service::build(&config, &shared, &servers)
            .await
            .unwrap();
        let started = Instant::now();
        let relay = tokio::spawn(relay.run(stop.clone()));
        let nc = async_nats::connect(nats.url()).await.unwrap();
        let js = async_nats::jetstream::new(nc);
        appreg_test_support::nats::wait_for_messages(
            &js,
            "BENCH_RATE",
            total,
            Duration::from_secs(300),
        )
        .await;
        let took = started.elapsed();
        stop.cancel();
        let _ = relay.await;
        let relay_rate = total as f64 / took.as_secs_f64();
        println!(
            "    the relay published the same log ({total} events) at {relay_rate:.0} events/s: the notifier fanned events out to {ENDPOINTS} endpoints at {:.0}% of the relay's rate",
            100.0 * fanned_out / relay_rate
        );
    }

    // (b) Lag at a fixed rate, with 1 endpoint enabled, then 16.
    println!("(b) commit → first arrival at an endpoint, {rate} events/s for {seconds} s");
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "endpoints", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "missing"
    );
    for enabled in [1, ENDPOINTS] {
        for (i, (id, url)) in hooks.iter().enumerate() {
            let body = serde_json::json!({"url": url, "event_types": ["ApplicationUpdated"], "enabled": i < enabled});
            let r = client
                .put(format!(
                    "{}/v1/environments/DEFAULT/webhooks/{id}",
                    api.base
                ))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        let commits: Arc<Mutex<HashMap<String, Instant>>> = Default::default();
        let total = rate * seconds;
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let per_tick = (rate / 100).max(1);
        let mut sent = 0u64;
        while sent < total {
            tick.tick().await;
            // A tick's appends at once (different streams), each noted at its commit.
            let mut appends = Vec::new();
            for _ in 0..per_tick {
                let stream = (sent as usize) % versions.len();
                versions[stream] += 1;
                let (req, id) = request(stream, versions[stream]);
                let (store, commits) = (store.clone(), commits.clone());
                appends.push(async move {
                    store.append(req).await.unwrap();
                    commits.lock().unwrap().insert(id, Instant::now());
                });
                sent += 1;
            }
            futures::future::join_all(appends).await;
        }
        let achieved = total as f64 / started.elapsed().as_secs_f64();
        let deadline = Instant::now() + Duration::from_secs(120);
        let lags = loop {
            let lags = lags_of(
                &commits.lock().unwrap(),
                &arrivals.first.lock().unwrap(),
                enabled,
            );
            if lags.len() == total as usize * enabled || Instant::now() > deadline {
                break lags;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let missing = total as usize * enabled - lags.len();
        let mut sorted = lags;
        sorted.sort_by(|a, b| a.total_cmp(b));
        println!(
            "{:>10} {:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1} {:>10}",
            enabled,
            achieved,
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 0.99),
            sorted.last().copied().unwrap_or(f64::NAN),
            missing
        );
    }
    println!("load average at end: {}", load_average());
    shutdown.cancel();
    let notifier = tokio::time::timeout(Duration::from_secs(30), notifier).await;
    assert!(notifier.is_ok(), "the notifier did not stop within 30 s");
    let relay = tokio::time::timeout(Duration::from_secs(30), relay).await;
    assert!(relay.is_ok(), "the relay did not stop within 30 s");
    // The in-process api closes the pool it shares with this program once it stopped serving,
    // which waits for every connection to come back; a connection this program's tasks still
    // hold would keep it waiting (seen: more than 30 s). The figures are printed: give it a few
    // seconds, then end it; the database is dropped with FORCE.
    drop(client);
    drop(store);
    api.shutdown.cancel();
    let mut handle = api.handle;
    if tokio::time::timeout(Duration::from_secs(5), &mut handle)
        .await
        .is_err()
    {
        println!("(the in-process api had not closed its pool after 5 s: ended)");
        handle.abort();
    }
    drop_database(&name).await;
}
