//! `outbound_allow_private = false` (as `deploy/` sets it): an application's owner cannot point
//! the notifier at the network appreg runs in. The api refuses a webhook URL whose host is a
//! non-public address or `localhost`; an endpoint recorded before (while private addresses were
//! allowed) gets nothing from a notifier that refuses them: its deliveries FAIL at once, and the
//! receiver is never called.

use super::{eventually, System};
use appreg_eventstore::Database;
use appreg_test_support::app::TestApi;
use serde_json::json;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_on_non_public_addresses_are_refused_and_never_called() {
    let system = System::start().await;
    let alice = system.token("alice", false);
    // An endpoint on loopback, recorded while private addresses are allowed (the test api).
    let (id, rx, hook) = system.app_with_endpoint(&alice).await;
    let hooks = format!("applications/{id}/webhooks");

    // An api of the same database that refuses private addresses.
    let mut config = appreg_test_support::app::config("notifier");
    config.outbound_allow_private = false;
    // The same vault: the callers' data keys are sealed with the first api's master key.
    config.secrets_master_key = Some(secrecy::SecretString::from(system.master_key.clone()));
    let strict = TestApi::start(&system.db, &config, &system.key).await;
    let client = reqwest::Client::new();
    let strict_hooks = format!("{}/v1/environments/DEFAULT/{hooks}", strict.base);
    for url in [
        "https://10.0.0.5:8443/admin",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://[::ffff:192.168.1.1]/hook",
        "https://localhost/hook",
        "https://0x7f.1/hook",
    ] {
        let r = client
            .post(&strict_hooks)
            .bearer_auth(&alice)
            .json(&json!({"url": url}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(
            body["errors"][0]["code"], "webhook.url.private_address",
            "{url}: {body}"
        );
    }
    let r = client
        .post(&strict_hooks)
        .bearer_auth(&alice)
        .json(&json!({"url": "https://hooks.example.com/appreg"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "a public name is accepted");
    let public_hook: serde_json::Value = r.json().await.unwrap();
    // Deleted again: its deliveries would try the real name.
    let r = client
        .delete(format!(
            "{strict_hooks}/{}",
            public_hook["id"].as_str().unwrap()
        ))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    strict.shutdown.cancel();

    // A notifier that refuses private addresses: the loopback endpoint's delivery fails at once.
    let mut notifier = system.notifier_with(&[("APPREG_OUTBOUND_ALLOW_PRIVATE", "false")]);
    system.rename(&alice, &id, "Shop 2").await;
    let Database::Postgres(pool) = &system.db else {
        unreachable!()
    };
    let webhook_id = hook["id"].as_str().unwrap().to_string();
    eventually("the deliveries to the loopback endpoint end", || async {
        let (open, failed): (i64, i64) = sqlx::query_as(
            "SELECT COUNT(*) FILTER (WHERE status <> 'FAILED'), COUNT(*) FILTER (WHERE status = 'FAILED') \
             FROM webhook_deliveries WHERE webhook_id = $1",
        )
        .bind(&webhook_id)
        .fetch_one(pool)
        .await
        .unwrap();
        open == 0 && failed > 0
    })
    .await;
    let answered: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND response_status IS NOT NULL",
    )
    .bind(&webhook_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(answered, 0, "no delivery reached the receiver");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.records().is_empty(), "the receiver was never called");
    notifier.kill().unwrap();
    notifier.wait().unwrap();
    system.api.shutdown.cancel();
}
