//! Issue #18 through the notifier: a webhook shows an erased user as `GET /events` does — the
//! subject id, the personal fields null and `erased: true` — and never their name or e-mail.

use super::{eventually, Receiver, System};
use serde_json::{json, Value};

const NAME: &str = "Webhook Erasable-Pangolin";
const EMAIL: &str = "pangolin.hooks4417@example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_shows_an_erased_user_as_erased() {
    let system = System::start().await;
    let admin = system.token("root", true);
    let alice = system.token("alice", false);
    let mut claims = appreg_test_support::tokens::claims("pangolin", false, 3600);
    claims.name = Some(NAME.into());
    claims.email = Some(EMAIL.into());
    let pangolin = appreg_test_support::tokens::sign(&system.key, &claims);
    let post = reqwest::Method::POST;

    let mut rx = Receiver::start("fast");
    let (status, hook) = system
        .call(
            post.clone(),
            "webhooks",
            &admin,
            Some(json!({"url": rx.url(),
                "event_types": ["UserFirstSeen", "ApplicationCreated", "UserErased"]})),
        )
        .await;
    assert_eq!(status, 201, "{hook}");
    rx.give_secret(hook["secret"].as_str().unwrap());
    for (token, name) in [(&pangolin, "Pangolin's app"), (&alice, "Alice's app")] {
        let (status, body) = system
            .call(
                post.clone(),
                "applications",
                token,
                Some(json!({"name": name, "type": "simple"})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let erased = system
        .client
        .post(format!("{}/v1/users/pangolin/_erase", system.api.base))
        .bearer_auth(&admin)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status().as_u16(), 202);

    // Started after the erasure: everything it records of pangolin shows them erased.
    let mut notifier = system.notifier();
    eventually("the receiver gets the erasure", || {
        let done = rx
            .records()
            .iter()
            .any(|r| r["type"] == json!("UserErased"));
        async move { done }
    })
    .await;
    eventually("the receiver gets both applications", || {
        let n = rx
            .records()
            .iter()
            .filter(|r| r["type"] == json!("ApplicationCreated"))
            .count();
        async move { n == 2 }
    })
    .await;
    let _ = notifier.kill();
    let _ = notifier.wait();

    let records = rx.records();
    let of = |kind: &str, actor: &str| -> Vec<Value> {
        records
            .iter()
            .filter(|r| r["type"] == json!(kind) && r["metadata"]["actor"] == json!(actor))
            .cloned()
            .collect()
    };
    let seen = of("UserFirstSeen", "pangolin");
    assert_eq!(seen.len(), 1, "{records:?}");
    assert_eq!(seen[0]["data"]["user"], "pangolin");
    assert_eq!(seen[0]["data"]["name"], Value::Null);
    assert_eq!(seen[0]["data"]["email"], Value::Null);
    assert_eq!(seen[0]["data"]["erased"], true);
    assert_eq!(seen[0]["metadata"]["actor_name"], Value::Null);
    assert_eq!(seen[0]["metadata"]["erased"], true);
    let created = of("ApplicationCreated", "pangolin");
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["metadata"]["actor_name"], Value::Null);
    assert_eq!(created[0]["metadata"]["erased"], true);
    let gone = of("UserErased", "root");
    assert_eq!(gone.len(), 1, "{records:?}");
    assert_eq!(gone[0]["data"], json!({"user": "pangolin", "erased": true}));
    // Someone not erased: their name stays sealed (receivers read names through the api).
    let kept = of("ApplicationCreated", "alice");
    assert_eq!(kept.len(), 1);
    let sealed = kept[0]["metadata"]["actor_name"].as_str().unwrap();
    assert!(sealed.starts_with("pd1."), "{sealed}");
    assert!(kept[0]["metadata"].get("erased").is_none());
    let all = serde_json::to_string(&records).unwrap();
    assert!(!all.contains(NAME) && !all.contains(EMAIL));
}
