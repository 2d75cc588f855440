//! Issue #20, item 9: the api's background tasks (the inline projector, the lag gauges) are
//! supervised. A task that dies makes `/readyz` answer 503 naming it, and is restarted; one
//! that keeps dying makes `/healthz` answer 503. The deaths are injected with the supervisor's
//! test hook (feature `test-hooks` of appreg-worker, enabled for tests only).

use crate::AppState;
use appreg_eventstore::Database;
use appreg_worker::{RestartPolicy, Supervisor};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

async fn serve(policy: RestartPolicy) -> (AppState, String, CancellationToken, Database) {
    let url = appreg_test_support::postgres::fresh_postgres_url().await;
    let mut config = appreg_config::Config::defaults();
    config.secrets_master_key = Some(
        appreg_secrets::MasterKey::generate("test", &mut rand::rngs::OsRng)
            .unwrap()
            .to_config_string(),
    );
    let db = Database::connect(&url, 4).await.unwrap();
    crate::migrate(&db).await.unwrap();
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let key = appreg_auth::DevKey::from_pkcs8(pkcs8.as_ref().to_vec()).unwrap();
    let auth = appreg_auth::Authenticator::dev(&key, &config.auth.role_claim);
    let state = AppState::new(&config, &db, auth)
        .await
        .unwrap()
        .with_supervisor(Supervisor::new(policy));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::run(listener, state.clone(), shutdown.clone()));
    (state, base, shutdown, db)
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("{base}{path}")).await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

/// Waits (at most `within`) until `path` answers `status`; returns the body.
async fn until(base: &str, path: &str, status: u16, within: Duration) -> String {
    let started = Instant::now();
    loop {
        let (got, body) = get(base, path).await;
        if got == status {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "{path} still answers {got}, not {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The inline projector panics: `/readyz` answers 503 naming it (no panic text), `/healthz`
/// stays 200; once restarted, `/readyz` is 200 again. The lag task likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_background_task_fails_readyz_until_restarted() {
    let (state, base, shutdown, db) = serve(RestartPolicy {
        first_delay: Duration::from_millis(1500),
        ..RestartPolicy::default()
    })
    .await;
    until(&base, "/readyz", 200, Duration::from_secs(5)).await;
    for task in ["inline-projector", "lag-gauges"] {
        state.supervisor().inject_panic(task);
        let body = until(&base, "/readyz", 503, Duration::from_secs(2)).await;
        assert!(body.contains(task), "{body}");
        assert!(body.contains("panicked"), "{body}");
        assert!(body.contains("service.unavailable"), "{body}");
        assert!(
            !body.contains("injected"),
            "no panic text in answers: {body}"
        );
        assert_eq!(get(&base, "/healthz").await.0, 200);
        until(&base, "/readyz", 200, Duration::from_secs(5)).await;
    }
    shutdown.cancel();
    db.close().await;
}

/// A task that keeps dying is given up: `/healthz` answers 503 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_dying_fails_healthz() {
    let (state, base, shutdown, db) = serve(RestartPolicy {
        first_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(100),
        give_up_after: 2,
        healthy_after: Duration::from_secs(60),
    })
    .await;
    until(&base, "/healthz", 200, Duration::from_secs(5)).await;
    state.supervisor().inject_panic("inline-projector");
    until(&base, "/readyz", 503, Duration::from_secs(2)).await;
    until(&base, "/readyz", 200, Duration::from_secs(2)).await;
    state.supervisor().inject_panic("inline-projector");
    let body = until(&base, "/healthz", 503, Duration::from_secs(2)).await;
    assert!(body.contains("inline-projector"), "{body}");
    assert!(body.contains("given up"), "{body}");
    shutdown.cancel();
    db.close().await;
}
