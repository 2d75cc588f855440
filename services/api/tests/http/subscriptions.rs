//! The catalogue, subscriptions and their status machine, API keys (issue, show, renew with a
//! grace period, revoke, the gateway's check) and notification settings — every refusal.

use crate::helpers::{Resp, TestApp};
use crate::{on_both, on_both_with};
use serde_json::{json, Value};

/// An API with one plan per (security, validation) given; returns the plan ids in order.
async fn catalogue(app: &TestApp, admin: &str, plans: &[(&str, &str)]) -> Vec<String> {
    let api = app
        .post(
            "apis",
            admin,
            json!({"name": "Weather", "description": "forecasts"}),
        )
        .await;
    api.assert_status(201);
    let api_id = api.body["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for (i, (security, validation)) in plans.iter().enumerate() {
        let r = app
            .post(
                &format!("apis/{api_id}/plans"),
                admin,
                json!({"name": format!("plan {i}"), "security": security, "validation": validation}),
            )
            .await;
        r.assert_status(201);
        assert_eq!(r.body["status"], "PUBLISHED");
        assert_eq!(r.body["api_id"], api_id.as_str());
        ids.push(r.body["id"].as_str().unwrap().to_string());
    }
    ids
}

async fn subscribe(app: &TestApp, token: &str, app_id: &str, plan: &str) -> Resp {
    app.post(
        &format!("applications/{app_id}/subscriptions"),
        token,
        json!({ "plan_id": plan }),
    )
    .await
}

fn key_of(sub: &Value) -> String {
    sub["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find_map(|k| k["key"].as_str())
        .expect("a key shown in full")
        .to_string()
}

async fn verify(app: &TestApp, token: &str, key: &str) -> Value {
    let r = app
        .post("api-keys/_verify", token, json!({ "key": key }))
        .await;
    r.assert_status(200);
    r.body
}

async fn catalogue_is_admin_managed(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    app.post("apis", &alice, json!({"name": "Mine"}))
        .await
        .assert_problem(403, "permission.admin_only");
    let count = app.event_count().await;
    app.post("apis", &admin, json!({"name": "  "}))
        .await
        .assert_invalid(&[("name", "text.invalid")]);
    app.post("apis", &admin, json!({}))
        .await
        .assert_invalid(&[("name", "field.required")]);
    app.assert_unchanged(count, "refused catalogue commands")
        .await;
    let plans = catalogue(&app, &admin, &[("API_KEY", "AUTO"), ("JWT", "MANUAL")]).await;
    let list = app.get("apis", &alice).await;
    list.assert_status(200);
    assert_eq!(list.body["total"], 1);
    let api_id = list.body["items"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(list.body["items"][0]["plans"].as_array().unwrap().len(), 2);
    let r = app
        .post(
            &format!("apis/{api_id}/plans"),
            &admin,
            json!({"name": "x", "security": "BASIC", "validation": "SOMETIMES"}),
        )
        .await;
    r.assert_invalid(&[
        ("security", "plan.security.invalid"),
        ("validation", "plan.validation.invalid"),
    ]);
    app.post(
        "apis/nope/plans",
        &admin,
        json!({"name": "x", "security": "JWT", "validation": "AUTO"}),
    )
    .await
    .assert_problem(404, "api.not_found");
    app.post(
        &format!("apis/{api_id}/plans"),
        &alice,
        json!({"name": "x", "security": "JWT", "validation": "AUTO"}),
    )
    .await
    .assert_problem(403, "permission.admin_only");
    app.post(
        &format!("apis/{api_id}/plans/{}/_close", plans[1]),
        &alice,
        json!({}),
    )
    .await
    .assert_problem(403, "permission.admin_only");
    let closed = app
        .post(
            &format!("apis/{api_id}/plans/{}/_close", plans[1]),
            &admin,
            json!({}),
        )
        .await;
    closed.assert_status(200);
    assert_eq!(closed.body["status"], "CLOSED");
    let plans_list = app.get(&format!("apis/{api_id}/plans"), &alice).await;
    plans_list.assert_status(200);
    assert_eq!(plans_list.body["items"][1]["status"], "CLOSED");
    app.get("apis/nope/plans", &alice)
        .await
        .assert_problem(404, "api.not_found");
}

/// A consumer closes a PENDING subscription before an administrator validated it: it is withdrawn
/// (REJECTED, reason `withdrawn`), the plan can be subscribed to again, and a USER member cannot.
async fn withdrawing(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let plans = catalogue(&app, &admin, &[("API_KEY", "MANUAL")]).await;
    let id = app.create_simple(&alice, "Withdrawn", None).await;
    app.post(
        &format!("applications/{id}/members"),
        &alice,
        json!({"user": "bob", "role": "USER"}),
    )
    .await
    .assert_status(201);
    let pending = subscribe(&app, &alice, &id, &plans[0]).await;
    pending.assert_status(201);
    assert_eq!(pending.body["status"], "PENDING");
    let sid = pending.body["id"].as_str().unwrap().to_string();

    // SUBSCRIPTION[D]: a USER member may not withdraw.
    app.post(&format!("subscriptions/{sid}/_close"), &bob, json!({}))
        .await
        .assert_problem(403, "permission.denied");
    let withdrawn = app
        .post(&format!("subscriptions/{sid}/_close"), &alice, json!({}))
        .await;
    withdrawn.assert_status(200);
    assert_eq!(withdrawn.body["status"], "REJECTED");
    assert_eq!(withdrawn.body["reason"], "withdrawn");
    assert_eq!(withdrawn.body["api_keys"], json!([]));
    // Ended: nothing more to do with it; the plan is open to a new request.
    for action in ["_accept", "_reject", "_close"] {
        app.post(&format!("subscriptions/{sid}/{action}"), &admin, json!({}))
            .await
            .assert_problem(409, "subscription.transition");
    }
    subscribe(&app, &alice, &id, &plans[0])
        .await
        .assert_status(201);
}

/// The environment's queue of pending subscriptions: administrators only, oldest request first,
/// paged, one environment's, and a subscription leaves it once accepted, rejected or withdrawn.
async fn pending_queue(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let plans = catalogue(
        &app,
        &admin,
        &[
            ("API_KEY", "MANUAL"),
            ("API_KEY", "MANUAL"),
            ("API_KEY", "AUTO"),
        ],
    )
    .await;
    let first = app.create_simple(&alice, "First", None).await;
    let second = app.create_simple(&alice, "Second", None).await;
    let bobs = app.create_simple(&bob, "Bob's", None).await;
    let mut pending = Vec::new();
    for (id, plan) in [
        (&first, &plans[0]),
        (&second, &plans[0]),
        (&first, &plans[1]),
    ] {
        let r = subscribe(&app, &alice, id, plan).await;
        r.assert_status(201);
        assert_eq!(r.body["status"], "PENDING");
        pending.push(r.body["id"].as_str().unwrap().to_string());
    }
    let accepted = subscribe(&app, &bob, &bobs, &plans[2]).await;
    accepted.assert_status(201);
    assert_eq!(accepted.body["status"], "ACCEPTED");

    let queue = |token: String, query: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.get_query("subscriptions", &token, &query).await
        }
    };
    let pending_query = |page: i64, size: i64| {
        vec![
            ("status", "PENDING".to_string()),
            ("page", page.to_string()),
            ("size", size.to_string()),
        ]
    };
    let ids = |r: &Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };

    queue(alice.clone(), pending_query(1, 20))
        .await
        .assert_problem(403, "permission.admin_only");
    queue(admin.clone(), vec![])
        .await
        .assert_invalid(&[("status", "status.invalid")]);
    queue(admin.clone(), vec![("status", "ACCEPTED".into())])
        .await
        .assert_invalid(&[("status", "status.invalid")]);
    queue(admin.clone(), pending_query(1, 0))
        .await
        .assert_invalid_fields(&["size"]);

    let all = queue(admin.clone(), pending_query(1, 20)).await;
    all.assert_status(200);
    assert_eq!(all.body["total"], 3);
    assert_eq!(ids(&all), pending);
    let names: Vec<&str> = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["application_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["First", "Second", "First"]);
    assert_eq!(all.body["items"][1]["application_id"], second.as_str());
    assert_eq!(all.body["items"][1]["status"], "PENDING");
    let page_one = queue(admin.clone(), pending_query(1, 2)).await;
    let page_two = queue(admin.clone(), pending_query(2, 2)).await;
    assert_eq!(ids(&page_one), pending[..2]);
    assert_eq!(ids(&page_two), pending[2..]);
    assert_eq!(page_two.body["total"], 3);

    // Another environment's administrator sees that environment's queue only.
    app.create_environment_http("beta").await;
    let beta = app
        .get_query(
            "/v1/environments/beta/subscriptions",
            &app.admin_of("ada", &["beta"]),
            &[("status", "PENDING")],
        )
        .await;
    beta.assert_status(200);
    assert_eq!(beta.body["total"], 0);

    // Decided or withdrawn: out of the queue.
    app.post(
        &format!("subscriptions/{}/_accept", pending[1]),
        &admin,
        json!({}),
    )
    .await
    .assert_status(200);
    app.post(
        &format!("subscriptions/{}/_reject", pending[2]),
        &admin,
        json!({}),
    )
    .await
    .assert_status(200);
    assert_eq!(
        ids(&queue(admin.clone(), pending_query(1, 20)).await),
        pending[..1]
    );
    app.post(
        &format!("subscriptions/{}/_close", pending[0]),
        &alice,
        json!({}),
    )
    .await
    .assert_status(200);
    let empty = queue(admin.clone(), pending_query(1, 20)).await;
    assert_eq!(empty.body["total"], 0);
    assert_eq!(empty.body["items"], json!([]));
}

async fn subscription_refusals(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let plans = catalogue(
        &app,
        &admin,
        &[
            ("KEYLESS", "AUTO"),
            ("JWT", "MANUAL"),
            ("OAUTH2", "AUTO"),
            ("API_KEY", "MANUAL"),
            ("API_KEY", "AUTO"),
        ],
    )
    .await;
    let (keyless, jwt, oauth2, key_manual, key_auto) =
        (&plans[0], &plans[1], &plans[2], &plans[3], &plans[4]);
    let plain = app.create_simple(&alice, "No client id", None).await;
    let with_cid = app
        .create_simple(&alice, "With client id", Some("cid-1"))
        .await;
    let count = app.event_count().await;

    subscribe(&app, &alice, &plain, keyless)
        .await
        .assert_problem(422, "subscription.plan_keyless");
    subscribe(&app, &alice, &plain, jwt)
        .await
        .assert_problem(422, "subscription.client_id_required");
    subscribe(&app, &alice, &plain, oauth2)
        .await
        .assert_problem(422, "subscription.client_id_required");
    subscribe(&app, &alice, &plain, "no-such-plan")
        .await
        .assert_problem(404, "plan.not_found");
    app.post(
        &format!("applications/{plain}/subscriptions"),
        &alice,
        json!({}),
    )
    .await
    .assert_invalid(&[("plan_id", "field.required")]);
    // Not a member: the application does not exist for bob.
    subscribe(&app, &bob, &plain, key_manual)
        .await
        .assert_problem(404, "application.not_found");
    app.assert_unchanged(count, "refused subscriptions").await;

    // JWT with a client_id: PENDING (manual); a second open one to the same plan is refused.
    let s = subscribe(&app, &alice, &with_cid, jwt).await;
    s.assert_status(201);
    assert_eq!(s.body["status"], "PENDING");
    assert_eq!(s.body["api_keys"], json!([]));
    let sid = s.body["id"].as_str().unwrap().to_string();
    subscribe(&app, &alice, &with_cid, jwt)
        .await
        .assert_problem(409, "subscription.exists");
    // OAUTH2 AUTO: accepted at once, no key.
    let o = subscribe(&app, &alice, &with_cid, oauth2).await;
    o.assert_status(201);
    assert_eq!(o.body["status"], "ACCEPTED");
    assert_eq!(o.body["api_keys"], json!([]));

    // Only administrators accept, reject, pause, resume; the owner may close.
    for action in ["_accept", "_reject", "_pause", "_resume"] {
        app.post(&format!("subscriptions/{sid}/{action}"), &alice, json!({}))
            .await
            .assert_problem(403, "permission.admin_only");
    }
    // Illegal transitions from PENDING: 409 (`_close` withdraws it: see `withdrawing`).
    for action in ["_pause", "_resume"] {
        app.post(&format!("subscriptions/{sid}/{action}"), &admin, json!({}))
            .await
            .assert_problem(409, "subscription.transition");
    }
    let r = app
        .post(
            &format!("subscriptions/{sid}/_reject"),
            &admin,
            json!({"reason": "not now"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["status"], "REJECTED");
    assert_eq!(r.body["reason"], "not now");
    for action in ["_accept", "_reject", "_pause", "_resume", "_close"] {
        app.post(&format!("subscriptions/{sid}/{action}"), &admin, json!({}))
            .await
            .assert_problem(409, "subscription.transition");
    }
    // Rejected is not open: the plan may be subscribed to again.
    let again = subscribe(&app, &alice, &with_cid, jwt).await;
    again.assert_status(201);
    let sid2 = again.body["id"].as_str().unwrap().to_string();
    let ok = app
        .post(&format!("subscriptions/{sid2}/_accept"), &admin, json!({}))
        .await;
    ok.assert_status(200);
    assert_eq!(ok.body["status"], "ACCEPTED");
    let paused = app
        .post(&format!("subscriptions/{sid2}/_pause"), &admin, json!({}))
        .await;
    assert_eq!(paused.body["status"], "PAUSED");
    app.post(&format!("subscriptions/{sid2}/_pause"), &admin, json!({}))
        .await
        .assert_problem(409, "subscription.transition");
    let resumed = app
        .post(&format!("subscriptions/{sid2}/_resume"), &admin, json!({}))
        .await;
    assert_eq!(resumed.body["status"], "ACCEPTED");

    // A USER member may subscribe (SUBSCRIPTION[C]) but not close (SUBSCRIPTION[D]).
    app.post(
        &format!("applications/{with_cid}/members"),
        &alice,
        json!({"user": "bob", "role": "USER"}),
    )
    .await
    .assert_status(201);
    app.post(&format!("subscriptions/{sid2}/_close"), &bob, json!({}))
        .await
        .assert_problem(403, "permission.denied");
    let km = subscribe(&app, &bob, &with_cid, key_manual).await;
    km.assert_status(201);
    assert_eq!(km.body["status"], "PENDING");
    let closed = app
        .post(&format!("subscriptions/{sid2}/_close"), &alice, json!({}))
        .await;
    closed.assert_status(200);
    assert_eq!(closed.body["status"], "CLOSED");

    // Another environment's subscription does not exist.
    app.create_environment("OTHER").await;
    let other_admin = app.admin_of("other-admin", &["OTHER"]);
    let r = app
        .send(
            app.client
                .post(format!(
                    "{}/v1/environments/OTHER/subscriptions/{sid2}/_close",
                    app.base
                ))
                .bearer_auth(&other_admin)
                .json(&json!({})),
        )
        .await;
    r.assert_problem(404, "subscription.not_found");
    app.post("subscriptions/nope/_accept", &admin, json!({}))
        .await
        .assert_problem(404, "subscription.not_found");

    // The list, filtered by status.
    let list = app
        .get_query(
            &format!("applications/{with_cid}/subscriptions"),
            &bob,
            &[("status", "PENDING")],
        )
        .await;
    list.assert_status(200);
    assert_eq!(list.body["total"], 1);
    let all = app
        .get(&format!("applications/{with_cid}/subscriptions"), &bob)
        .await;
    assert_eq!(all.body["total"], 4);
    app.get_query(
        &format!("applications/{with_cid}/subscriptions"),
        &bob,
        &[("status", "OPEN")],
    )
    .await
    .assert_invalid(&[("status", "status.invalid")]);

    // A closed plan takes no new subscription; an archived application none at all.
    let list = app.get("apis", &admin).await;
    let api_id = list.body["items"][0]["id"].as_str().unwrap().to_string();
    app.post(
        &format!("apis/{api_id}/plans/{key_auto}/_close"),
        &admin,
        json!({}),
    )
    .await
    .assert_status(200);
    subscribe(&app, &alice, &plain, key_auto)
        .await
        .assert_problem(409, "subscription.plan_closed");
    app.delete(&format!("applications/{plain}"), &alice)
        .await
        .assert_status(204);
    subscribe(&app, &admin, &plain, key_manual)
        .await
        .assert_problem(409, "application.archived");
}

async fn api_keys(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let mut gateway_claims = app.claims("gateway-1", false);
    gateway_claims.roles = vec!["appreg-gateway".into()];
    let gateway = app.sign(gateway_claims);
    let plans = catalogue(&app, &admin, &[("API_KEY", "AUTO"), ("API_KEY", "MANUAL")]).await;
    let id = app.create_simple(&alice, "Keys", None).await;
    app.post(
        &format!("applications/{id}/members"),
        &alice,
        json!({"user": "bob", "role": "USER"}),
    )
    .await
    .assert_status(201);

    let s = subscribe(&app, &alice, &id, &plans[0]).await;
    s.assert_status(201);
    assert_eq!(s.body["status"], "ACCEPTED");
    assert_eq!(s.header("cache-control").as_deref(), Some("no-store"));
    let sid = s.body["id"].as_str().unwrap().to_string();
    let key = key_of(&s.body);
    assert!(key.starts_with("apk_") && key.len() >= 47, "{key}");
    let prefix = s.body["api_keys"][0]["prefix"].as_str().unwrap();
    assert!(key.starts_with(prefix) && prefix.len() < key.len());

    // A USER member sees the prefix only.
    let seen = app.get(&format!("subscriptions/{sid}"), &bob).await;
    seen.assert_status(200);
    assert!(seen.body["api_keys"][0].get("key").is_none());
    assert_eq!(seen.body["api_keys"][0]["prefix"], prefix);
    assert!(!seen.body.to_string().contains(&key));

    // Gateways and administrators check keys; members may not.
    app.post("api-keys/_verify", &alice, json!({"key": key}))
        .await
        .assert_problem(403, "permission.gateway_only");
    let v = verify(&app, &gateway, &key).await;
    assert_eq!(v["valid"], true);
    assert_eq!(v["subscription_id"], sid.as_str());
    assert_eq!(v["application_id"], id.as_str());
    assert_eq!(v["plan_id"], plans[0].as_str());
    assert_eq!(verify(&app, &admin, &key).await["valid"], true);
    let unknown = verify(&app, &gateway, "apk_not-a-key").await;
    assert_eq!(unknown["valid"], false);
    assert_eq!(unknown["subscription_id"], Value::Null);
    app.post("api-keys/_verify", &gateway, json!({}))
        .await
        .assert_invalid(&[("key", "field.required")]);
    app.post(
        "api-keys/_verify",
        &gateway,
        json!({"key": "x".repeat(300)}),
    )
    .await
    .assert_invalid(&[("key", "api_key.invalid")]);

    // A paused subscription's key is not valid; resumed, it is again.
    app.post(&format!("subscriptions/{sid}/_pause"), &admin, json!({}))
        .await
        .assert_status(200);
    assert_eq!(verify(&app, &gateway, &key).await["valid"], false);
    app.post(&format!("subscriptions/{sid}/_resume"), &admin, json!({}))
        .await
        .assert_status(200);
    assert_eq!(verify(&app, &gateway, &key).await["valid"], true);

    // Renewal (SUBSCRIPTION[U]: not for a USER member): a new key, the old one in its grace.
    app.post(
        &format!("subscriptions/{sid}/api-keys/_renew"),
        &bob,
        json!({}),
    )
    .await
    .assert_problem(403, "permission.denied");
    let renewed = app
        .post(
            &format!("subscriptions/{sid}/api-keys/_renew"),
            &alice,
            json!({}),
        )
        .await;
    renewed.assert_status(200);
    let keys = renewed.body["api_keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert!(keys[0]["expires_at"].is_string(), "the old key has an end");
    assert!(keys[1]["expires_at"].is_null());
    let new_key = keys[1]["key"].as_str().unwrap().to_string();
    assert_ne!(new_key, key);
    assert_eq!(
        verify(&app, &gateway, &key).await["valid"],
        true,
        "inside the grace period"
    );
    assert_eq!(verify(&app, &gateway, &new_key).await["valid"], true);
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let old = verify(&app, &gateway, &key).await;
    assert_eq!(old["valid"], false, "after the grace period");
    assert_eq!(old["subscription_id"], sid.as_str());
    assert_eq!(verify(&app, &gateway, &new_key).await["valid"], true);

    // Revocation is immediate (no read model in the way) and idempotent.
    let new_key_id = keys[1]["id"].as_str().unwrap().to_string();
    app.post(
        &format!("subscriptions/{sid}/api-keys/{new_key_id}/_revoke"),
        &bob,
        json!({}),
    )
    .await
    .assert_problem(403, "permission.denied");
    let r = app
        .post(
            &format!("subscriptions/{sid}/api-keys/{new_key_id}/_revoke"),
            &alice,
            json!({}),
        )
        .await;
    r.assert_status(200);
    assert!(r.body["api_keys"][1]["revoked_at"].is_string());
    assert!(
        r.body["api_keys"][1].get("key").is_none(),
        "a revoked key is not shown"
    );
    assert_eq!(verify(&app, &gateway, &new_key).await["valid"], false);
    let count = app.event_count().await;
    app.post(
        &format!("subscriptions/{sid}/api-keys/{new_key_id}/_revoke"),
        &alice,
        json!({}),
    )
    .await
    .assert_status(200);
    app.assert_unchanged(count, "a second revocation").await;
    app.post(
        &format!("subscriptions/{sid}/api-keys/nope/_revoke"),
        &alice,
        json!({}),
    )
    .await
    .assert_problem(404, "api_key.not_found");

    // Manual plan: no key until accepted; closing revokes the keys.
    let m = subscribe(&app, &alice, &id, &plans[1]).await;
    let msid = m.body["id"].as_str().unwrap().to_string();
    assert_eq!(m.body["api_keys"], json!([]));
    let accepted = app
        .post(&format!("subscriptions/{msid}/_accept"), &admin, json!({}))
        .await;
    accepted.assert_status(200);
    let manual_key = key_of(&accepted.body);
    assert_eq!(verify(&app, &gateway, &manual_key).await["valid"], true);
    let closed = app
        .post(&format!("subscriptions/{msid}/_close"), &alice, json!({}))
        .await;
    closed.assert_status(200);
    assert!(closed.body["api_keys"][0]["revoked_at"].is_string());
    assert_eq!(verify(&app, &gateway, &manual_key).await["valid"], false);
    app.post(
        &format!("subscriptions/{msid}/api-keys/_renew"),
        &alice,
        json!({}),
    )
    .await
    .assert_problem(409, "subscription.transition");

    // No key value in any event.
    for e in app.stream(&format!("application-{id}")).await {
        let text = e.data.to_string();
        for k in [&key, &new_key, &manual_key] {
            assert!(
                !text.contains(k.as_str()),
                "a key value in {}",
                e.event_type
            );
        }
    }
}

async fn renewal_needs_an_api_key_plan(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    let plans = catalogue(&app, &admin, &[("JWT", "AUTO")]).await;
    let id = app.create_simple(&alice, "Jwt", Some("jwt-client")).await;
    let s = subscribe(&app, &alice, &id, &plans[0]).await;
    let sid = s.body["id"].as_str().unwrap();
    app.post(
        &format!("subscriptions/{sid}/api-keys/_renew"),
        &alice,
        json!({}),
    )
    .await
    .assert_problem(422, "subscription.not_api_key");
}

async fn notifications(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let id = app.create_simple(&alice, "Notified", None).await;
    let path = format!("applications/{id}/notifications");
    app.post(
        &format!("applications/{id}/members"),
        &alice,
        json!({"user": "bob", "role": "USER"}),
    )
    .await
    .assert_status(201);
    let r = app.get(&path, &alice).await;
    r.assert_status(200);
    assert_eq!(r.body["items"], json!([]));
    // NOTIFICATION is not a USER's permission.
    app.get(&path, &bob)
        .await
        .assert_problem(403, "permission.denied");
    app.put(
        &path,
        &bob,
        json!({"hooks": ["SUBSCRIPTION_ACCEPTED"], "email": "b@example.org"}),
    )
    .await
    .assert_problem(403, "permission.denied");
    let count = app.event_count().await;
    app.put(
        &path,
        &alice,
        json!({"hooks": ["SUBSCRIPTION_EXPLODED"], "email": "nope"}),
    )
    .await
    .assert_invalid(&[
        ("hooks[0]", "notification.hook.invalid"),
        ("email", "notification.email.invalid"),
    ]);
    app.put(&path, &alice, json!({"hooks": ["SUBSCRIPTION_ACCEPTED"]}))
        .await
        .assert_invalid(&[("email", "notification.email.required")]);
    app.assert_unchanged(count, "refused settings").await;
    let r = app
        .put(
            &path,
            &alice,
            json!({"hooks": ["SUBSCRIPTION_CLOSED", "API_KEY_EXPIRING"], "email": "alice@example.org"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(
        r.body["items"],
        json!([{"user": "alice", "hooks": ["SUBSCRIPTION_CLOSED", "API_KEY_EXPIRING"], "email": "alice@example.org"}])
    );
    let count = app.event_count().await;
    app.put(
        &path,
        &alice,
        json!({"hooks": ["API_KEY_EXPIRING", "SUBSCRIPTION_CLOSED"], "email": "alice@example.org"}),
    )
    .await
    .assert_status(200);
    app.assert_unchanged(count, "the same settings again").await;
    let r = app.put(&path, &alice, json!({"hooks": []})).await;
    r.assert_status(200);
    assert_eq!(r.body["items"], json!([]));
}

on_both!(
    catalogue_is_admin_managed,
    subscription_refusals,
    withdrawing,
    pending_queue,
    renewal_needs_an_api_key_plan,
    notifications
);

/// A short grace period, so the test sees a renewed key expire.
fn short_grace(c: &mut appreg_config::Config) {
    c.api_key_grace_seconds = 2;
}

on_both_with!(short_grace; api_keys);
