//! Read-side benchmark (a program, not a timed test): `cargo bench -p appreg --bench readside`.
//!
//! `rebuild_speed`: in a fresh database it generates a realistic event log (ApplicationCreated
//! for a tenth of the events' applications, then ApplicationUpdated / MemberAdded spread over
//! them, plus a few environments and users), then, `APPREG_BENCH_REBUILDS` times (default 3),
//! measures the raw rate of `COPY (SELECT ... FROM events ORDER BY tx_id, position) TO STDOUT`
//! over the same events (the physical limit of reading the log) and runs `readmodel::rebuild`
//! right after, printing its rate beside that limit, as a ratio; then the range of the runs.
//!
//! `lag`: commit → visible-in-read-model lag through the production read side (the relay
//! publishing to a private nats-server, the projector consuming into PostgreSQL), p50/p90/p99 at
//! 500 and 2,000 creates/s (`APPREG_BENCH_LAG_RATES`, `APPREG_BENCH_LAG_SECONDS`, default 10).
//!
//! Environment: `APPREG_BENCH_DATABASE_URL` (default
//! postgres://postgres@127.0.0.1:5432/postgres, a server where it may create databases),
//! `APPREG_BENCH_EVENTS` (default 1,000,000), `APPREG_BENCH_REBUILDS` (default 3),
//! `APPREG_BENCH_VERIFY=1` (first project the log with the incremental projector and check that
//! every rebuild gives the same checksum; slow), `RUST_LOG=appreg_readmodel=debug` (the
//! rebuild's stages).

use appreg_api::readmodel;
use appreg_eventstore::{AppendRequest, Database, NewEvent};
use appreg_test_support::bench::{drop_database, fresh_database, load_average, server_url};
use futures::StreamExt;
use sqlx::postgres::PgPoolCopyExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

fn events_wanted() -> i64 {
    std::env::var("APPREG_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.replace('_', "").parse().ok())
        .unwrap_or(1_000_000)
}

fn verify() -> bool {
    std::env::var("APPREG_BENCH_VERIFY").is_ok_and(|v| v == "1")
}

/// Environments and users created before the applications.
const ENVIRONMENTS: i64 = 3;
const USERS: i64 = 1000;

/// Fills the log with `total` valid events, in several transactions (each one's `tx_id` is
/// above the previous one's, so every stream's events are in version order in the log).
async fn generate(pool: &sqlx::PgPool, total: i64) -> i64 {
    let apps = (total / 10).max(1);
    let mut statements = vec![format!(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, data, metadata, recorded_at) \
         SELECT gen_random_uuid(), 'environment-env-' || g, 'environment', 1, 'EnvironmentCreated', 1, \
                jsonb_build_object('id', 'env-' || g, 'name', 'Environment ' || g), \
                jsonb_build_object('environment', 'env-' || g, 'actor', 'bench'), \
                timestamptz '2026-01-01 00:00:00+00' + g * interval '1 second' \
         FROM generate_series(1, {ENVIRONMENTS}) g ORDER BY g"
    )];
    statements.push(format!(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, data, metadata, recorded_at) \
         SELECT gen_random_uuid(), 'user-' || env || '/u' || g, 'user', 1, 'UserFirstSeen', 1, \
                jsonb_build_object('user', 'u' || g, 'name', 'User ' || g, 'email', 'u' || g || '@example.com', \
                                   'admin', false, 'default_application', null), \
                jsonb_build_object('environment', env, 'actor', 'u' || g), \
                timestamptz '2026-01-01 01:00:00+00' + g * interval '1 millisecond' \
         FROM (SELECT g, CASE g % 4 WHEN 0 THEN 'env-1' WHEN 1 THEN 'env-2' ELSE 'DEFAULT' END AS env \
               FROM generate_series(0, {}) g) s ORDER BY g",
        USERS - 1
    ));
    // Applications i in 0..apps: environment and owner from i.
    let app = "md5('app' || i)::uuid::text";
    let env = "CASE i % 4 WHEN 0 THEN 'env-1' WHEN 1 THEN 'env-2' ELSE 'DEFAULT' END";
    statements.push(format!(
        "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, data, metadata, recorded_at) \
         SELECT gen_random_uuid(), 'application-' || {app}, 'application', 1, 'ApplicationCreated', 1, \
                jsonb_build_object('id', {app}, 'environment', {env}, 'name', 'app ' || i, \
                                   'description', 'An application created by the benchmark', 'domain', null, \
                                   'type', 'simple', 'client_id', null, 'oauth', null, 'provider_id', null, \
                                   'primary_owner', 'u' || (i % {USERS})), \
                jsonb_build_object('environment', {env}, 'actor', 'u' || (i % {USERS})), \
                timestamptz '2026-01-02 00:00:00+00' + i * interval '1 millisecond' \
         FROM generate_series(0, {}) i ORDER BY i",
        apps - 1
    ));
    // Then rounds of one event per application (version round + 2): every third a MemberAdded,
    // the others ApplicationUpdated.
    let mut left = total - apps - ENVIRONMENTS - USERS;
    let mut round = 0i64;
    while left > 0 {
        let n = left.min(apps);
        let version = round + 2;
        let (event_type, data) = if round % 3 == 0 {
            (
                "MemberAdded",
                format!(
                    "jsonb_build_object('user', 'm' || ((i * 7 + {round}) % 5000), 'role', \
                     CASE (i + {round}) % 2 WHEN 0 THEN 'OWNER' ELSE 'USER' END)"
                ),
            )
        } else {
            (
                "ApplicationUpdated",
                format!(
                    "jsonb_build_object('name', 'app ' || i || ' rev {version}', 'description', \
                     'Revision {version} of application ' || i, 'domain', null, 'client_id', null, \
                     'oauth', null, 'changed', jsonb_build_array('name', 'description'))"
                ),
            )
        };
        statements.push(format!(
            "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, schema_version, data, metadata, recorded_at) \
             SELECT gen_random_uuid(), 'application-' || {app}, 'application', {version}, '{event_type}', 1, {data}, \
                    jsonb_build_object('environment', {env}, 'actor', 'u' || (i % {USERS})), \
                    timestamptz '2026-02-01 00:00:00+00' + {round} * interval '1 day' + i * interval '1 millisecond' \
             FROM generate_series(0, {}) i ORDER BY i",
            n - 1
        ));
        left -= n;
        round += 1;
    }
    for sql in statements {
        sqlx::query(&sql).execute(pool).await.unwrap();
    }
    sqlx::query("VACUUM ANALYZE events")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The raw rate of reading the log: COPY of the same columns in log order. Returns events/s.
async fn copy_rate(pool: &sqlx::PgPool, events: i64) -> f64 {
    let started = Instant::now();
    let mut stream = pool
        .copy_out_raw(
            "COPY (SELECT event_id, stream_id, stream_type, version, event_type, schema_version, data, \
             metadata, recorded_at FROM events ORDER BY tx_id, position) TO STDOUT",
        )
        .await
        .unwrap();
    let (mut bytes, mut rows) = (0usize, 0usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        bytes += chunk.len();
        rows += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(rows as i64, events, "COPY returned every event");
    println!(
        "raw COPY of the log: {rows} events, {:.1} MiB in {secs:.2} s: {:.0} events/s",
        bytes as f64 / (1024.0 * 1024.0),
        rows as f64 / secs
    );
    rows as f64 / secs
}

/// Projects the whole log with the incremental projector's code path (batches of 500).
async fn project_incrementally(db: &Database) -> readmodel::Checksum {
    let store = db.event_store().await.unwrap();
    let read = readmodel::ReadModel::new(db.clone()).await.unwrap();
    let started = Instant::now();
    let mut n = 0usize;
    loop {
        let batch = store.read_log(read.position(), 500).await.unwrap();
        if batch.is_empty() {
            break;
        }
        n += batch.len();
        read.apply(&batch).await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "incremental projection: {n} events in {secs:.1} s ({:.0} events/s)",
        n as f64 / secs
    );
    readmodel::checksum(db).await.unwrap()
}

fn rebuilds_wanted() -> usize {
    std::env::var("APPREG_BENCH_REBUILDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
        .max(1)
}

/// Rebuild rate against the raw COPY rate of the same log, measured just before each rebuild
/// (`APPREG_BENCH_REBUILDS` pairs, default 3), then the range of the ratios.
async fn rebuild_speed(total: i64) {
    println!("rebuild speed — {total} events");
    let (name, url) = fresh_database("appreg_bench_readside").await;
    let db = Database::connect(&url, 4).await.unwrap();
    appreg_api::migrate(&db).await.unwrap();
    let Database::Postgres(pool) = &db else {
        unreachable!("the benchmark database is PostgreSQL")
    };
    let started = Instant::now();
    let events = generate(pool, total).await;
    println!(
        "generated {events} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let incremental = if verify() {
        Some(project_incrementally(&db).await)
    } else {
        None
    };
    let runs = rebuilds_wanted();
    let mut results: Vec<(f64, f64)> = Vec::new();
    for run in 1..=runs {
        println!("\nrun {run}/{runs}");
        let copy = copy_rate(pool, events).await;
        println!("load average before the rebuild: {}", load_average());
        let mut last_print = Instant::now();
        let summary = readmodel::rebuild(&db, |p| {
            if last_print.elapsed().as_secs_f64() >= 2.0 {
                last_print = Instant::now();
                eprintln!(
                    "  rebuild: {}/{} events, {:.0} events/s",
                    p.done,
                    p.total,
                    p.rate()
                );
            }
        })
        .await
        .unwrap();
        let secs = summary.elapsed.as_secs_f64();
        let replayed = summary.replayed + summary.caught_up;
        let rate = replayed as f64 / secs;
        let load = load_average();
        let checksum = readmodel::checksum(&db).await.unwrap();
        println!(
            "rebuild: {replayed} events in {secs:.2} s: {rate:.0} events/s (target ≥ 50,000); \
             swap {:.0} ms",
            summary.swap.as_secs_f64() * 1000.0
        );
        println!(
            "raw COPY {copy:.0} events/s; rebuild / COPY = {:.0}%",
            100.0 * rate / copy
        );
        println!("load average after the rebuild: {load}");
        println!(
            "read model: {} applications, {} members, {} users, {} environments, digest {}",
            checksum.applications,
            checksum.members,
            checksum.users,
            checksum.environments,
            &checksum.digest[..16]
        );
        if let Some(incremental) = &incremental {
            assert_eq!(
                incremental, &checksum,
                "the rebuild gives the incremental projector's model"
            );
            println!("checksum equal to the incremental projector's");
        }
        results.push((rate, copy));
    }
    let range = |f: &dyn Fn(&(f64, f64)) -> f64| {
        let values: Vec<f64> = results.iter().map(f).collect();
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(0.0, f64::max);
        (min, max)
    };
    let (rate_min, rate_max) = range(&|r| r.0);
    let (copy_min, copy_max) = range(&|r| r.1);
    let (ratio_min, ratio_max) = range(&|r| 100.0 * r.0 / r.1);
    println!(
        "\n{runs} rebuilds: {rate_min:.0}–{rate_max:.0} events/s beside raw COPY \
         {copy_min:.0}–{copy_max:.0} events/s; rebuild / COPY = {ratio_min:.0}–{ratio_max:.0}% \
         (target ≥ 50%)"
    );
    db.close().await;
    drop_database(&name).await;
}

/// The allocator of the `appreg` binary (src/main.rs), so what runs in process is measured as
/// it runs in production.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() {
    // RUST_LOG=appreg_readmodel=debug shows the rebuild's stages.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    println!(
        "appreg read-side benchmark — PostgreSQL at {}",
        server_url()
    );
    println!("load average at start: {}", load_average());
    println!();
    let rates: Vec<u64> = std::env::var("APPREG_BENCH_LAG_RATES")
        .unwrap_or_else(|_| "500,2000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    let seconds = std::env::var("APPREG_BENCH_LAG_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    if !rates.is_empty() {
        lag(&rates, seconds).await;
        println!();
    }
    rebuild_speed(events_wanted()).await;
    println!();
    println!("load average at end: {}", load_average());
}

/// Commit → visible-in-read-model lag through the production read side: appends of
/// `ApplicationCreated` events (new applications) at a fixed rate, the relay publishing them to a
/// private nats-server, the projector consuming them into PostgreSQL. An event is visible when
/// the projector's commit notification (payload `applications TX.POS`) covers its position; its
/// lag is the time from its append's commit to that notification.
async fn lag(rates: &[u64], seconds: u64) {
    use appreg_eventstore::LogPosition;
    use std::collections::BTreeMap;
    let nats = appreg_test_support::nats::NatsServer::start();
    let (name, url) = fresh_database("appreg_bench_lag").await;
    let db = Database::connect(&url, 16).await.unwrap();
    appreg_api::migrate(&db).await.unwrap();
    let store = db.event_store().await.unwrap();
    let pool = match &db {
        Database::Postgres(pool) => pool.clone(),
        Database::Sqlite(_) => unreachable!(),
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    // The production read side, each service built by its own crate on this database.
    let config = appreg_config::Config::defaults();
    let servers = appreg_config::NatsServers::parse(&nats.url(), None).unwrap();
    let shared = appreg_worker::service::Start::shared(&db);
    let relay = appreg_relay::service::build(&config, &shared, &servers)
        .await
        .unwrap();
    let projector = appreg_projector::service::build(&config, &shared, &servers)
        .await
        .unwrap();
    let relay = tokio::spawn(relay.run(shutdown.clone()));
    let projector = tokio::spawn(projector.run(shutdown.clone()));

    // Appended events not yet seen, by position, with their commit time; lags in µs.
    let pending: Arc<std::sync::Mutex<BTreeMap<LogPosition, Instant>>> = Default::default();
    let visible = Arc::new(std::sync::Mutex::new(LogPosition::START));
    let lags: Arc<std::sync::Mutex<Vec<u64>>> = Default::default();
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool)
        .await
        .unwrap();
    listener.listen(readmodel::NOTIFY_CHANNEL).await.unwrap();
    let watcher = {
        let (pending, visible, lags) = (pending.clone(), visible.clone(), lags.clone());
        tokio::spawn(async move {
            while let Ok(n) = listener.recv().await {
                let now = Instant::now();
                let Some(position) = n
                    .payload()
                    .strip_prefix("applications ")
                    .and_then(|p| p.parse::<LogPosition>().ok())
                else {
                    continue;
                };
                *visible.lock().unwrap() = position;
                let mut pending = pending.lock().unwrap();
                let later = pending.split_off(&LogPosition {
                    tx: position.tx,
                    pos: position.pos + 1,
                });
                let seen = std::mem::replace(&mut *pending, later);
                let mut lags = lags.lock().unwrap();
                lags.extend(
                    seen.values()
                        .map(|t| now.duration_since(*t).as_micros() as u64),
                );
            }
        })
    };

    println!("\n(c) commit → visible in the read model (relay → JetStream → projector → PostgreSQL), {seconds} s per rate, load average {}", load_average());
    println!(
        "{:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "target/s", "achieved/s", "p50 ms", "p90 ms", "p99 ms", "max ms"
    );
    for &rate in rates {
        lags.lock().unwrap().clear();
        let writers = 16u64;
        let per_writer = Duration::from_secs_f64(writers as f64 / rate as f64);
        let stop = Arc::new(AtomicBool::new(false));
        let appended = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let (store, stop, appended) = (store.clone(), stop.clone(), appended.clone());
                let (pending, visible, lags) = (pending.clone(), visible.clone(), lags.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(per_writer);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                    tokio::time::sleep(per_writer.mul_f64(w as f64 / writers as f64)).await;
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let id = uuid::Uuid::now_v7();
                        let done = store
                            .append(AppendRequest {
                                stream_id: format!("application-{id}"),
                                stream_type: "application".into(),
                                expected_version: 0,
                                events: vec![created_event(id)],
                                claims: vec![],
                                releases: vec![],
                            })
                            .await
                            .unwrap();
                        let at = Instant::now();
                        if done.position <= *visible.lock().unwrap() {
                            lags.lock().unwrap().push(0);
                        } else {
                            pending.lock().unwrap().insert(done.position, at);
                        }
                        appended.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        let achieved = appended.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        // Let the last events become visible.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pending.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let left = pending.lock().unwrap().len();
        assert_eq!(left, 0, "{left} events never became visible");
        let mut l = lags.lock().unwrap().clone();
        l.sort_unstable();
        let q = |f: f64| l[((l.len() as f64 * f) as usize).min(l.len() - 1)] as f64 / 1000.0;
        println!(
            "{rate:>10} {achieved:>10.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1}",
            q(0.50),
            q(0.90),
            q(0.99),
            *l.last().unwrap() as f64 / 1000.0
        );
    }
    shutdown.cancel();
    let _ = relay.await;
    let _ = projector.await;
    watcher.abort();
    db.close().await;
    pool.close().await;
    drop(nats);
    drop_database(&name).await;
}

/// A valid `ApplicationCreated` (simple application owned by `bench`).
fn created_event(id: uuid::Uuid) -> NewEvent {
    let now = chrono::Utc::now();
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "ApplicationCreated".into(),
        schema_version: 1,
        data: serde_json::json!({
            "id": id, "environment": "DEFAULT", "name": "lag", "description": null, "domain": null,
            "type": "simple", "client_id": null, "oauth": null, "provider_id": null,
            "primary_owner": "bench",
        }),
        metadata: serde_json::json!({"environment": "DEFAULT", "actor": "bench"}),
        recorded_at: chrono::DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap(),
    }
}
