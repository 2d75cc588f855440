//! Authentication (bearer tokens) and authorisation (members, administrators, 404 for what the
//! caller may not see).

use crate::helpers::{Resp, TestApp};
use crate::on_both;
use appreg_auth::DevKey;
use reqwest::Method;
use serde_json::json;

#[track_caller]
fn assert_unauthenticated(r: &Resp, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.body);
    r.assert_problem(401, "auth.unauthenticated");
    assert_eq!(
        r.header("www-authenticate").as_deref(),
        Some("Bearer"),
        "{what}: 401 carries WWW-Authenticate"
    );
}

fn other_key() -> DevKey {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    DevKey::from_pkcs8(pkcs8.as_ref().to_vec()).unwrap()
}

async fn bad_tokens_are_refused(app: TestApp) {
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Mine", None).await;
    let before = app.event_count().await;

    let now = chrono::Utc::now().timestamp();
    let mut expired = app.claims("alice", false);
    expired.iat = now - 3600;
    expired.exp = now - 120;
    let expired = app.sign(expired);
    let forged = other_key().sign(&app.claims("alice", true)).unwrap();
    let mut issuer = app.claims("alice", false);
    issuer.iss = "https://evil.example".into();
    let wrong_issuer = app.sign(issuer);
    let mut empty = app.claims("", false);
    empty.sub = String::new();
    let empty_subject = app.sign(empty);
    // A valid token with its signature cut off, and one whose payload was edited.
    let mut parts: Vec<String> = alice.split('.').map(String::from).collect();
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut payload: serde_json::Value =
            serde_json::from_slice(&engine.decode(&parts[1]).unwrap()).unwrap();
        payload["roles"] = json!(["ADMIN"]);
        parts[1] = engine.encode(payload.to_string());
    }
    let tampered = parts.join(".");
    // Algorithm confusion: "none", and HS256 keyed with the trusted public key.
    let none = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = engine.encode(r#"{"alg":"none","typ":"JWT","kid":"appreg-dev-1"}"#);
        let payload = engine.encode(serde_json::to_string(&app.claims("alice", true)).unwrap());
        format!("{header}.{payload}.")
    };
    let hs256 = {
        use base64::Engine;
        let x = serde_json::to_value(app.jwk()).unwrap()["x"]
            .as_str()
            .unwrap()
            .to_string();
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(x)
            .unwrap();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("appreg-dev-1".into());
        jsonwebtoken::encode(
            &header,
            &app.claims("alice", true),
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap()
    };
    let long_subject = app.sign(app.claims(&"s".repeat(256), false));

    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing token", None),
        ("expired token", Some(format!("Bearer {expired}"))),
        (
            "forged token (another key)",
            Some(format!("Bearer {forged}")),
        ),
        ("wrong issuer", Some(format!("Bearer {wrong_issuer}"))),
        ("empty subject", Some(format!("Bearer {empty_subject}"))),
        ("unsigned token", Some(format!("Bearer {unsigned}"))),
        ("tampered payload", Some(format!("Bearer {tampered}"))),
        ("alg none", Some(format!("Bearer {none}"))),
        (
            "HS256 keyed with the public key",
            Some(format!("Bearer {hs256}")),
        ),
        (
            "unusable subject (256 characters)",
            Some(format!("Bearer {long_subject}")),
        ),
        ("garbage token", Some("Bearer not.a.jwt".into())),
        ("empty bearer", Some("Bearer ".into())),
        ("basic auth", Some("Basic YWxpY2U6c2VjcmV0".into())),
        ("token without scheme", Some(alice.clone())),
    ];
    let app_path = format!("applications/{id}");
    for (what, header) in &cases {
        let with = |b: reqwest::RequestBuilder| match header {
            Some(h) => b.header("authorization", h),
            None => b,
        };
        let requests = [
            ("create", with(app.request(Method::POST, "applications", None)).json(&json!({"name": "x", "type": "simple"}))),
            ("list", with(app.request(Method::GET, "applications", None))),
            ("get", with(app.request(Method::GET, &app_path, None))),
            ("update", with(app.request(Method::PUT, &app_path, None)).json(&json!({"name": "stolen"}))),
            ("archive", with(app.request(Method::DELETE, &app_path, None))),
            ("history", with(app.request(Method::GET, &format!("{app_path}/history"), None))),
            ("types", with(app.request(Method::GET, "application-types", None))),
            ("settings", with(app.request(Method::GET, "settings/client-registration", None))),
            (
                "put settings",
                with(app.request(Method::PUT, "settings/client-registration", None)).json(&json!({
                    "allowed_types": {"simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true},
                    "dcr_enabled": true
                })),
            ),
            // Authentication comes before the environment check.
            ("unknown environment", with(app.client.get(app.url("/v1/environments/NOPE/applications")))),
        ];
        for (action, request) in requests {
            let r = app.send(request).await;
            assert_unauthenticated(&r, &format!("{what}, {action}"));
        }
    }
    // The expired token is told apart from an invalid one.
    let r = app
        .send(app.request(Method::GET, "applications", Some(&expired)))
        .await;
    assert!(r.detail().contains("expired"), "{}", r.body);

    app.assert_unchanged(before, "requests with bad tokens")
        .await;
    let got = app.get(&app_path, &alice).await;
    assert_eq!(got.body["name"], "Mine");
    assert_eq!(got.body["status"], "ACTIVE");
    app.stop().await;
}

async fn tokens_within_leeway_and_role_claim(app: TestApp) {
    // Expired 10 s ago: within the 30 s leeway.
    let now = chrono::Utc::now().timestamp();
    let mut c = app.claims("alice", false);
    c.exp = now - 10;
    let r = app.get("applications", &app.sign(c)).await;
    r.assert_status(200);
    // Another role than the configured admin role does not make an administrator.
    let mut c = app.claims("mallory", false);
    c.roles = vec!["admin".into(), "USER".into()];
    let mallory = app.sign(c);
    let r = app
        .get_query("applications", &mallory, &[("status", "ARCHIVED")])
        .await;
    r.assert_problem(403, "permission.admin_only");
    let admin = app.token("root", true);
    app.get_query("applications", &admin, &[("status", "ARCHIVED")])
        .await
        .assert_status(200);
    app.stop().await;
}

async fn members_admins_and_strangers(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let id = app
        .create_simple(&alice, "Alice's", Some("alice-client"))
        .await;
    let path = format!("applications/{id}");
    let before = app.event_count().await;

    // A non-member sees nothing and can do nothing: 404 everywhere (never 403).
    app.get(&path, &bob)
        .await
        .assert_problem(404, "application.not_found");
    app.get_query(&path, &bob, &[("version", "1")])
        .await
        .assert_problem(404, "application.not_found");
    app.get(&format!("{path}/history"), &bob)
        .await
        .assert_problem(404, "application.not_found");
    app.put(&path, &bob, json!({"name": "Bob's now"}))
        .await
        .assert_problem(404, "application.not_found");
    app.delete(&path, &bob)
        .await
        .assert_problem(404, "application.not_found");
    app.post(&format!("{path}/_restore"), &bob, json!({}))
        .await
        .assert_problem(404, "application.not_found");
    let list = app.get("applications", &bob).await;
    assert_eq!(list.body["total"], 0);
    // The same for an id that does not exist, and for one that is not a UUID.
    let missing = uuid::Uuid::now_v7();
    app.get(&format!("applications/{missing}"), &alice)
        .await
        .assert_problem(404, "application.not_found");
    app.put(
        &format!("applications/{missing}"),
        &admin,
        json!({"name": "x"}),
    )
    .await
    .assert_problem(404, "application.not_found");
    app.delete(&format!("applications/{missing}"), &admin)
        .await
        .assert_problem(404, "application.not_found");
    app.post(
        &format!("applications/{missing}/_restore"),
        &admin,
        json!({}),
    )
    .await
    .assert_problem(404, "application.not_found");
    app.get(&format!("applications/{missing}/history"), &admin)
        .await
        .assert_problem(404, "application.not_found");
    app.get("applications/not-a-uuid", &alice)
        .await
        .assert_problem(404, "application.not_found");
    app.delete("applications/not-a-uuid", &admin)
        .await
        .assert_problem(404, "application.not_found");
    app.assert_unchanged(before, "a stranger's attempts").await;

    // The creator is PRIMARY_OWNER, with every permission.
    let mine = app.get(&path, &alice).await;
    mine.assert_status(200);
    assert_eq!(mine.body["role"], "PRIMARY_OWNER");
    assert_eq!(mine.body["owner"]["id"], "alice");
    for p in [
        "DEFINITION",
        "MEMBER",
        "SUBSCRIPTION",
        "NOTIFICATION",
        "METADATA",
    ] {
        assert_eq!(mine.body["permissions"][p], "CRUD", "{p}");
    }
    // The primary owner may not restore (administrators only), even an active application:
    // she sees it, so the answer is 403, not 404.
    app.post(&format!("{path}/_restore"), &alice, json!({}))
        .await
        .assert_problem(403, "permission.admin_only");
    app.put(&path, &alice, json!({"name": "Alice's v2"}))
        .await
        .assert_status(200);

    // An administrator sees and may change any application of the environment, without being a
    // member.
    let seen = app.get(&path, &admin).await;
    seen.assert_status(200);
    assert_eq!(seen.body["role"], serde_json::Value::Null);
    assert_eq!(seen.body["owner"]["id"], "alice");
    assert_eq!(seen.body["permissions"]["DEFINITION"], "CRUD");
    app.get(&format!("{path}/history"), &admin)
        .await
        .assert_status(200);
    let r = app
        .put(&path, &admin, json!({"description": "by the admin"}))
        .await;
    r.assert_status(200);
    assert_eq!(
        r.body["owner"]["id"], "alice",
        "an admin's update does not change the owner"
    );
    let admin_list = app.get("applications", &admin).await;
    assert_eq!(admin_list.body["total"], 1);
    assert_eq!(admin_list.body["items"][0]["role"], serde_json::Value::Null);
    let history = app.get(&format!("{path}/history"), &alice).await;
    assert_eq!(history.body["items"][2]["actor"], "root");

    // The primary owner archives (DEFINITION[D]).
    app.delete(&path, &alice).await.assert_status(204);
    // Another application: archived by an administrator.
    let other = app.create_simple(&bob, "Bob's", None).await;
    app.delete(&format!("applications/{other}"), &admin)
        .await
        .assert_status(204);
    let h = app
        .get(&format!("applications/{other}/history"), &admin)
        .await;
    assert_eq!(h.body["items"][1]["type"], "ApplicationArchived");
    assert_eq!(h.body["items"][1]["actor"], "root");
    app.stop().await;
}

on_both!(
    bad_tokens_are_refused,
    tokens_within_leeway_and_role_claim,
    members_admins_and_strangers
);
