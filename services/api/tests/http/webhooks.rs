//! `/webhooks` and `/applications/{id}/webhooks` (issue #17, step 1): who may manage which
//! endpoints, what a URL and a filter may be, the signing secret shown once and kept in the vault
//! (never in an event), and another scope's or environment's endpoint as a 404.

use crate::helpers::TestApp;
use crate::{on_both, on_both_with};
use serde_json::{json, Value};

fn body(url: &str) -> Value {
    json!({ "url": url })
}

/// The environment's endpoints: administrators only; the secret answered once, sealed in the
/// vault, absent from the events; updates keep it; deletes remove it.
async fn environment_endpoints(app: TestApp) {
    let admin = app.admin_of("env-admin", &["DEFAULT"]);
    let alice = app.token("alice", false);
    app.post("webhooks", &alice, body("https://hooks.example/in"))
        .await
        .assert_problem(403, "permission.admin_only");
    app.get("webhooks", &alice)
        .await
        .assert_problem(403, "permission.admin_only");

    let created = app
        .post(
            "webhooks",
            &admin,
            json!({"url": "https://hooks.example/in", "event_types": ["PlanCreated", "ApplicationCreated"], "description": " ops "}),
        )
        .await;
    created.assert_status(201);
    assert_eq!(created.header("cache-control").as_deref(), Some("no-store"));
    let secret = created.body["secret"].as_str().unwrap().to_string();
    let raw = secret
        .strip_prefix("whsec_")
        .expect("a Standard Webhooks secret");
    use base64::Engine as _;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .unwrap()
            .len(),
        32
    );
    let id = created.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        created.body["event_types"],
        json!(["ApplicationCreated", "PlanCreated"])
    );
    assert_eq!(created.body["enabled"], json!(true));
    assert_eq!(created.body["description"], json!("ops"));
    assert_eq!(created.body["application_id"], Value::Null);

    // The vault holds it; no event, and no later answer, carries it.
    let (owner, kind) = appreg_secrets::store::webhook_secret_slot(&id);
    let vault = appreg_secrets::SecretStore::new(
        app.db.clone(),
        std::sync::Arc::new(appreg_api::state::keyring(&app.config).unwrap()),
    );
    use secrecy::ExposeSecret;
    assert_eq!(
        vault
            .get(&owner, kind)
            .await
            .unwrap()
            .unwrap()
            .expose_secret(),
        secret
    );
    let got = app.get(&format!("webhooks/{id}"), &admin).await;
    got.assert_status(200);
    assert!(got.body.get("secret").is_none());
    assert_eq!(
        got.body["secret_fingerprint"],
        json!(appreg_secrets::fingerprint(&secrecy::SecretString::from(
            secret.clone()
        )))
    );
    let list = app.get("webhooks", &admin).await;
    list.assert_status(200);
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);
    assert!(!list.body.to_string().contains(raw));

    // An update replaces the definition and keeps the secret.
    let put = app
        .put(
            &format!("webhooks/{id}"),
            &admin,
            json!({"url": "https://hooks.example/v2", "enabled": false}),
        )
        .await;
    put.assert_status(200);
    assert_eq!(put.body["url"], json!("https://hooks.example/v2"));
    assert_eq!(put.body["event_types"], json!([]));
    assert_eq!(put.body["enabled"], json!(false));
    assert_eq!(
        put.body["secret_fingerprint"],
        got.body["secret_fingerprint"]
    );
    let count = app.event_count().await;
    app.put(
        &format!("webhooks/{id}"),
        &admin,
        json!({"url": "https://hooks.example/v2", "enabled": false}),
    )
    .await
    .assert_status(200);
    app.assert_unchanged(count, "the same definition again")
        .await;

    let events = app
        .store
        .read_stream("webhooks-DEFAULT", 0, 100)
        .await
        .unwrap();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["WebhookCreated", "WebhookUpdated"]);
    for e in &events {
        assert!(!e.data.to_string().contains(raw), "{}", e.data);
    }

    app.delete(&format!("webhooks/{id}"), &admin)
        .await
        .assert_status(204);
    assert!(vault.get(&owner, kind).await.unwrap().is_none());
    app.get(&format!("webhooks/{id}"), &admin)
        .await
        .assert_problem(404, "webhook.not_found");
    app.delete(&format!("webhooks/{id}"), &admin)
        .await
        .assert_problem(404, "webhook.not_found");
}

/// Bad input: 422 naming the field; nothing appended, nothing left in the vault.
async fn bad_input(app: TestApp) {
    let admin = app.token("root", true);
    let id = app.create_simple(&admin, "Shop", None).await;
    let count = app.event_count().await;
    let too_long = format!("https://hooks.example/{}", "a".repeat(2048 - 21));
    for (url, code) in [
        ("http://hooks.example/in", "webhook.url.not_https"),
        // Loopback http is allowed only with `api.allow_http_webhooks` (off here).
        ("http://127.0.0.1:9/in", "webhook.url.not_https"),
        ("https://user:pw@hooks.example/in", "webhook.url.userinfo"),
        ("https://token@hooks.example/in", "webhook.url.userinfo"),
        (too_long.as_str(), "webhook.url.too_long"),
        ("hooks.example/in", "webhook.url.invalid"),
        ("https://hooks.example/in#x", "webhook.url.invalid"),
    ] {
        app.post("webhooks", &admin, body(url))
            .await
            .assert_invalid(&[("url", code)]);
    }
    app.post(
        "webhooks",
        &admin,
        json!({"url": "https://hooks.example/in", "event_types": ["PlanCreated", "ApplicationEaten"]}),
    )
    .await
    .assert_invalid(&[("event_types[1]", "webhook.event_type.unknown")]);
    app.post("webhooks", &admin, json!({"event_types": []}))
        .await
        .assert_invalid(&[("url", "field.required")]);
    app.post(
        "webhooks",
        &admin,
        json!({"url": "https://hooks.example/in", "secret": "mine"}),
    )
    .await
    .assert_status(422);
    // An application's endpoint takes application event types only.
    app.post(
        &format!("applications/{id}/webhooks"),
        &admin,
        json!({"url": "https://hooks.example/in", "event_types": ["MemberAdded", "PlanCreated"]}),
    )
    .await
    .assert_invalid(&[("event_types[1]", "webhook.event_type.unknown")]);
    app.assert_unchanged(count, "refused endpoints").await;
    let rows: i64 = match &app.db {
        appreg_eventstore::Database::Postgres(p) => {
            sqlx::query_scalar("SELECT count(*) FROM vault_secrets WHERE owner LIKE 'webhooks/%'")
                .fetch_one(p)
                .await
                .unwrap()
        }
        appreg_eventstore::Database::Sqlite(p) => {
            sqlx::query_scalar("SELECT count(*) FROM vault_secrets WHERE owner LIKE 'webhooks/%'")
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert_eq!(rows, 0, "no secret left behind by a refused endpoint");
}

/// An application's endpoints: DEFINITION[U] (owners, not USER members, not strangers); they are
/// not the environment's, nor another application's, nor another environment's.
async fn application_endpoints(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let carol = app.token("carol", false);
    let admin = app.admin_of("env-admin", &["DEFAULT"]);
    let id = app.create_simple(&alice, "Shop", None).await;
    let other = app.create_simple(&carol, "Other", None).await;
    app.post(
        &format!("applications/{id}/members"),
        &alice,
        json!({"user": "bob"}),
    )
    .await
    .assert_status(201);
    let path = format!("applications/{id}/webhooks");
    app.post(&path, &bob, body("https://hooks.example/in"))
        .await
        .assert_problem(403, "permission.denied");
    app.get(&path, &bob)
        .await
        .assert_problem(403, "permission.denied");
    app.post(&path, &carol, body("https://hooks.example/in"))
        .await
        .assert_problem(404, "application.not_found");
    let created = app
        .post(
            &path,
            &alice,
            json!({"url": "https://hooks.example/shop", "event_types": ["SubscriptionAccepted"]}),
        )
        .await;
    created.assert_status(201);
    assert!(created.body["secret"]
        .as_str()
        .unwrap()
        .starts_with("whsec_"));
    assert_eq!(created.body["application_id"], json!(id));
    let wid = created.body["id"].as_str().unwrap().to_string();
    // Reachable under its application only.
    app.get(&format!("{path}/{wid}"), &alice)
        .await
        .assert_status(200);
    app.get(&format!("{path}/{wid}"), &admin)
        .await
        .assert_status(200);
    app.get(&format!("webhooks/{wid}"), &admin)
        .await
        .assert_problem(404, "webhook.not_found");
    app.get(&format!("applications/{other}/webhooks/{wid}"), &carol)
        .await
        .assert_problem(404, "webhook.not_found");
    app.put(
        &format!("applications/{other}/webhooks/{wid}"),
        &carol,
        body("https://evil.example/"),
    )
    .await
    .assert_problem(404, "webhook.not_found");
    app.delete(&format!("applications/{other}/webhooks/{wid}"), &carol)
        .await
        .assert_problem(404, "webhook.not_found");
    assert_eq!(
        app.get("webhooks", &admin).await.body["items"],
        json!([]),
        "an application's endpoint is not listed with the environment's"
    );
    let list = app.get(&path, &alice).await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1);

    // Another environment: its administrator does not see DEFAULT's endpoints.
    app.create_environment_http("team").await;
    let team_admin = app.admin_of("team-admin", &["team"]);
    let env_hook = app
        .post("webhooks", &admin, body("https://hooks.example/env"))
        .await;
    env_hook.assert_status(201);
    let env_wid = env_hook.body["id"].as_str().unwrap();
    app.get(
        &format!("/v1/environments/team/webhooks/{env_wid}"),
        &team_admin,
    )
    .await
    .assert_problem(404, "webhook.not_found");
    app.delete(
        &format!("/v1/environments/team/webhooks/{env_wid}"),
        &team_admin,
    )
    .await
    .assert_problem(404, "webhook.not_found");
    app.get(
        &format!("/v1/environments/team/applications/{id}/webhooks/{wid}"),
        &team_admin,
    )
    .await
    .assert_problem(404, "application.not_found");

    // At most 10 per application.
    for n in 1..10 {
        app.post(&path, &alice, body(&format!("https://hooks.example/{n}")))
            .await
            .assert_status(201);
    }
    app.post(&path, &alice, body("https://hooks.example/11"))
        .await
        .assert_problem(409, "webhook.limit");
    app.delete(&format!("{path}/{wid}"), &alice)
        .await
        .assert_status(204);
}

/// With `api.allow_http_webhooks` (as in `appreg dev`): http on a loopback host, never elsewhere.
async fn loopback_http_where_allowed(app: TestApp) {
    let admin = app.token("root", true);
    for url in [
        "http://127.0.0.1:9000/in",
        "http://localhost:9000/in",
        "http://[::1]:9000/in",
    ] {
        app.post("webhooks", &admin, body(url))
            .await
            .assert_status(201);
    }
    app.post("webhooks", &admin, body("http://hooks.example/in"))
        .await
        .assert_invalid(&[("url", "webhook.url.not_https")]);
}

fn allow_http(c: &mut appreg_config::Config) {
    c.api.allow_http_webhooks = Some(true);
}

on_both!(environment_endpoints, bad_input, application_endpoints);
on_both_with!(allow_http; loopback_http_where_allowed);
