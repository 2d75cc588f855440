//! `GET /applications/{id}?version=N|as_of=…`: the application at that point, with its members
//! and subscriptions then (the current state has neither field).

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

fn members(body: &Value) -> Vec<(String, String)> {
    body["members"]
        .as_array()
        .expect("members at a past point")
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

async fn members_and_subscriptions_then(app: TestApp) {
    let admin = app.token("root", true);
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let api = app
        .post(
            "apis",
            &admin,
            json!({"name": "Weather", "description": "forecasts"}),
        )
        .await;
    api.assert_status(201);
    let api_id = api.body["id"].as_str().unwrap().to_string();
    let plan = app
        .post(
            &format!("apis/{api_id}/plans"),
            &admin,
            json!({"name": "keys", "security": "API_KEY", "validation": "AUTO"}),
        )
        .await;
    plan.assert_status(201);
    let plan_id = plan.body["id"].as_str().unwrap().to_string();

    let id = app.create_simple(&alice, "Then and now", None).await;
    let path = format!("applications/{id}");
    app.post(
        &format!("{path}/members"),
        &alice,
        json!({"user": "bob", "role": "USER"}),
    )
    .await
    .assert_status(201);
    let before_subscription = app.get(&path, &alice).await.body["version"]
        .as_i64()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let sub = app
        .post(
            &format!("{path}/subscriptions"),
            &alice,
            json!({ "plan_id": plan_id }),
        )
        .await;
    sub.assert_status(201);
    let sid = sub.body["id"].as_str().unwrap().to_string();
    app.delete(&format!("{path}/members/bob"), &alice)
        .await
        .assert_status(204);

    // Now: no past fields.
    let now = app.get(&path, &alice).await;
    now.assert_status(200);
    assert!(now.body.get("members").is_none() && now.body.get("subscriptions").is_none());
    let current = now.body["version"].as_i64().unwrap();

    // Version 1: the creator alone, no subscription.
    let v1 = app.get_query(&path, &alice, &[("version", "1")]).await;
    v1.assert_status(200);
    assert_eq!(
        members(&v1.body),
        [("alice".into(), "PRIMARY_OWNER".into())]
    );
    assert_eq!(v1.body["subscriptions"], json!([]));
    // Before the subscription: bob is a member.
    let v = before_subscription.to_string();
    let before = app
        .get_query(&path, &alice, &[("version", v.as_str())])
        .await;
    assert_eq!(
        members(&before.body),
        [
            ("alice".into(), "PRIMARY_OWNER".into()),
            ("bob".into(), "USER".into())
        ]
    );
    assert_eq!(before.body["subscriptions"], json!([]));
    // As of the subscription's time (its history entry): subscribed, bob still a member; no key
    // values in the past.
    let history = app.get(&format!("{path}/history"), &alice).await;
    let subscribed_at = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"].as_str().is_some_and(|t| t.starts_with("Subscri")))
        .expect("a subscription event")["at"]
        .as_str()
        .unwrap()
        .to_string();
    let then = app
        .get_query(&path, &alice, &[("as_of", &subscribed_at)])
        .await;
    then.assert_status(200);
    assert_eq!(members(&then.body).len(), 2);
    let subs = then.body["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0]["id"], sid.as_str());
    assert_eq!(subs[0]["plan_id"], plan_id.as_str());
    assert!(subs[0].get("api_keys").is_none(), "{}", then.body);
    // The last version: bob is gone, the subscription stays.
    let v = current.to_string();
    let last = app
        .get_query(&path, &alice, &[("version", v.as_str())])
        .await;
    assert_eq!(
        members(&last.body),
        [("alice".into(), "PRIMARY_OWNER".into())]
    );
    assert_eq!(last.body["subscriptions"][0]["status"], "ACCEPTED");
    // Bob is no member now: the past is not his to read.
    app.get_query(&path, &bob, &[("version", "2")])
        .await
        .assert_status(404);
    app.stop().await;
}

on_both!(members_and_subscriptions_then);
