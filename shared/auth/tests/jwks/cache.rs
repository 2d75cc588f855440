//! The issuer's keys under a slow, failing or abused JWKS endpoint: no verification waits for a
//! fetch it does not need (a fetch holds no lock), one fetch at a time, unknown key ids refetch
//! at most once per interval (and only for tokens that could be valid), and a failing endpoint
//! leaves the last good keys in use for a bounded time, counted.

use crate::server::{JwksServer, Mode};
use crate::{authenticator, claims, jwks, Key, ISSUER};
use appreg_auth::{AuthError, JwksSettings};
use std::time::Duration;
use tokio::time::{sleep, timeout, Instant};

fn settings() -> JwksSettings {
    JwksSettings {
        max_age: Duration::from_secs(3600),
        unknown_kid_interval: Duration::from_millis(200),
        stale_if_error: Duration::from_secs(3600),
        retry_interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_fetch_delays_no_other_verification() {
    let (k1, stranger) = (Key::new("k1"), Key::new("ghost"));
    let server = JwksServer::start(Mode::Serve(jwks(&[&k1]))).await;
    let auth = authenticator(&server.url, settings());
    auth.authenticate(&k1.token("first")).await.unwrap();
    sleep(Duration::from_millis(250)).await;

    // A token naming an unknown key makes the keys be fetched again; the endpoint hangs.
    server.set(Mode::Hang(Duration::from_secs(5)));
    let ghost = {
        let auth = auth.clone();
        let token = stranger.token("ghost");
        tokio::spawn(async move { auth.authenticate(&token).await })
    };
    sleep(Duration::from_millis(100)).await;
    assert_eq!(server.hits(), 2, "the refetch is in flight");

    // Meanwhile, tokens of the known key are verified at once (no lock held by the fetch)...
    let started = Instant::now();
    for i in 0..5 {
        let token = k1.token(&format!("known-{i}"));
        let p = timeout(Duration::from_millis(500), auth.authenticate(&token))
            .await
            .expect("a known key's token waits for no fetch")
            .unwrap();
        assert_eq!(p.subject, format!("known-{i}"));
    }
    assert!(started.elapsed() < Duration::from_millis(500));
    // ...and more unknown key ids start no second fetch.
    let others: Vec<_> = (0..10)
        .map(|i| {
            let auth = auth.clone();
            let token = Key::new(&format!("ghost-{i}")).token("ghost");
            tokio::spawn(async move { auth.authenticate(&token).await })
        })
        .collect();
    for other in others {
        assert!(other.await.unwrap().is_err());
    }
    assert!(ghost.await.unwrap().is_err());
    assert_eq!(server.hits(), 2, "one fetch at a time, none repeated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_key_ids_refetch_at_most_once_per_interval() {
    let (k1, k2) = (Key::new("k1"), Key::new("k2"));
    let server = JwksServer::start(Mode::Serve(jwks(&[&k1]))).await;
    let auth = authenticator(
        &server.url,
        JwksSettings {
            unknown_kid_interval: Duration::from_secs(1),
            ..settings()
        },
    );
    auth.authenticate(&k1.token("first")).await.unwrap();
    // The endpoint fails from now on; tokens naming keys nobody published keep coming.
    server.set(Mode::Fail);
    sleep(Duration::from_millis(1100)).await;
    for i in 0..30 {
        let token = Key::new(&format!("forged-{i}")).token("mallory");
        let refused = auth.authenticate(&token).await;
        // The issuer's keys are known (if a little old): an unknown key is an invalid token,
        // not an outage.
        assert!(
            matches!(refused, Err(AuthError::Invalid(_))),
            "token {i}: {refused:?}"
        );
    }
    assert_eq!(server.hits(), 2, "one refetch in the interval");

    // A token that could not be valid anyway (another issuer, expired) fetches nothing.
    sleep(Duration::from_millis(1100)).await;
    let mut foreign = claims("mallory");
    foreign["iss"] = "https://evil.test".into();
    let foreign = Key::new("evil").sign_as(Some("evil"), &foreign);
    assert!(auth.authenticate(&foreign).await.is_err());
    let mut expired = claims("mallory");
    expired["exp"] = (chrono::Utc::now().timestamp() - 3600).into();
    assert!(matches!(
        auth.authenticate(&Key::new("old").sign_as(Some("old"), &expired))
            .await,
        Err(AuthError::Expired)
    ));
    assert_eq!(
        server.hits(),
        2,
        "no fetch for tokens refused on their claims"
    );
    assert_eq!(claims("x")["iss"], ISSUER);

    // The issuer rotates to k2 and is back: the first token of k2 fetches the new keys.
    server.set(Mode::Serve(jwks(&[&k1, &k2])));
    let p = auth.authenticate(&k2.token("rotated")).await.unwrap();
    assert_eq!(p.subject, "rotated");
    assert_eq!(server.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_refresh_delays_no_request() {
    let k1 = Key::new("k1");
    let server = JwksServer::start(Mode::Serve(jwks(&[&k1]))).await;
    let auth = authenticator(
        &server.url,
        JwksSettings {
            max_age: Duration::from_millis(200),
            ..settings()
        },
    );
    auth.authenticate(&k1.token("first")).await.unwrap();
    server.set(Mode::Hang(Duration::from_secs(5)));
    sleep(Duration::from_millis(300)).await;
    // The keys are due for a refresh and the endpoint hangs: requests go on with the keys
    // they have while one refresh runs in the background.
    let requests: Vec<_> = (0..10)
        .map(|i| {
            let auth = auth.clone();
            let token = k1.token(&format!("user-{i}"));
            tokio::spawn(async move {
                timeout(Duration::from_millis(500), auth.authenticate(&token)).await
            })
        })
        .collect();
    for r in requests {
        r.await
            .unwrap()
            .expect("no request waits for the refresh")
            .unwrap();
    }
    sleep(Duration::from_millis(50)).await;
    assert_eq!(server.hits(), 2, "a single refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_leaves_the_last_good_keys_in_use_for_a_bounded_time() {
    let k1 = Key::new("k1");
    let server = JwksServer::start(Mode::Serve(jwks(&[&k1]))).await;
    let auth = authenticator(
        &server.url,
        JwksSettings {
            max_age: Duration::from_millis(300),
            stale_if_error: Duration::from_millis(1500),
            ..settings()
        },
    );
    auth.authenticate(&k1.token("first")).await.unwrap();
    server.set(Mode::Fail);
    sleep(Duration::from_millis(400)).await;
    // Refreshes fail: the keys fetched 400 ms ago (past their 300 ms) still verify tokens.
    for i in 0..3 {
        let p = auth.authenticate(&k1.token(&format!("stale-{i}"))).await;
        assert!(p.is_ok(), "stale-if-error: {p:?}");
        sleep(Duration::from_millis(150)).await;
    }
    let stats = auth.jwks_stats();
    assert!(stats.failures >= 1, "failed fetches are counted: {stats:?}");
    assert!(
        stats.stale_uses >= 3,
        "uses of stale keys are counted: {stats:?}"
    );
    // Failed refreshes are retried no more often than the retry interval (100 ms).
    assert!(server.hits() <= 1 + 6, "hits: {}", server.hits());

    // Past max_age + stale_if_error (1.8 s): the keys are not trusted any more.
    sleep(Duration::from_millis(1500)).await;
    let refused = auth.authenticate(&k1.token("too-late")).await;
    assert!(
        matches!(refused, Err(AuthError::KeysUnavailable(_))),
        "{refused:?}"
    );
    // The endpoint is back: keys are fetched again and tokens verify.
    server.set(Mode::Serve(jwks(&[&k1])));
    sleep(Duration::from_millis(150)).await;
    let p = auth.authenticate(&k1.token("back")).await;
    assert!(p.is_ok(), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_fetch() {
    let k1 = Key::new("k1");
    let server = JwksServer::start(Mode::Serve(jwks(&[&k1]))).await;
    let auth = authenticator(&server.url, settings());
    let requests: Vec<_> = (0..20)
        .map(|i| {
            let auth = auth.clone();
            let token = k1.token(&format!("user-{i}"));
            tokio::spawn(async move { auth.authenticate(&token).await })
        })
        .collect();
    for r in requests {
        r.await.unwrap().unwrap();
    }
    assert_eq!(server.hits(), 1);
}
