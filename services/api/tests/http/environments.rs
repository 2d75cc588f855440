//! Environments are tenants: an unknown one is 404 `environment.not_found`, and nothing of one
//! environment is visible or changeable through another.

use crate::helpers::TestApp;
use crate::on_both;
use reqwest::Method;
use serde_json::json;

async fn unknown_environment(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&alice, "Home", Some("home")).await;
    let count = app.event_count().await;
    for env in ["OTHER", "default", "bad%20env", "x".repeat(65).as_str()] {
        let base = format!("/v1/environments/{env}");
        let requests = [
            app.request(Method::GET, &format!("{base}/applications/{id}"), Some(&alice)),
            app.request(Method::GET, &format!("{base}/applications"), Some(&admin)),
            app.request(Method::POST, &format!("{base}/applications"), Some(&alice)).json(&json!({"name": "x", "type": "simple"})),
            app.request(Method::PUT, &format!("{base}/applications/{id}"), Some(&admin)).json(&json!({"name": "x"})),
            app.request(Method::DELETE, &format!("{base}/applications/{id}"), Some(&admin)),
            app.request(Method::POST, &format!("{base}/applications/{id}/_restore"), Some(&admin)),
            app.request(Method::GET, &format!("{base}/applications/{id}/history"), Some(&admin)),
            app.request(Method::GET, &format!("{base}/application-types"), Some(&alice)),
            app.request(Method::GET, &format!("{base}/settings/client-registration"), Some(&alice)),
            app.request(Method::PUT, &format!("{base}/settings/client-registration"), Some(&admin)).json(&json!({
                "allowed_types": {"simple": true, "browser": true, "web": true, "native": true, "backend_to_backend": true},
                "dcr_enabled": true
            })),
        ];
        for request in requests {
            let r = app.send(request).await;
            assert_eq!(r.status, 404, "{env}: {}", r.body);
            r.assert_problem(404, "environment.not_found");
        }
    }
    app.assert_unchanged(count, "requests to unknown environments")
        .await;
    app.stop().await;
}

async fn environments_are_isolated(app: TestApp) {
    app.create_environment("OTHER").await;
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    let id = app
        .create_simple(&alice, "Home", Some("shared-client"))
        .await;
    let other = |path: &str| format!("/v1/environments/OTHER/{path}");
    let count = app.event_count().await;

    // The DEFAULT application does not exist in OTHER, for its owner or an administrator.
    for token in [&alice, &admin] {
        app.get(&other(&format!("applications/{id}")), token)
            .await
            .assert_problem(404, "application.not_found");
        app.get(&other(&format!("applications/{id}/history")), token)
            .await
            .assert_problem(404, "application.not_found");
        app.put(
            &other(&format!("applications/{id}")),
            token,
            json!({"name": "moved"}),
        )
        .await
        .assert_problem(404, "application.not_found");
        app.delete(&other(&format!("applications/{id}")), token)
            .await
            .assert_problem(404, "application.not_found");
        let list = app.get(&other("applications"), token).await;
        list.assert_status(200);
        assert_eq!(list.body["total"], 0);
    }
    app.post(
        &other(&format!("applications/{id}/_restore")),
        &admin,
        json!({}),
    )
    .await
    .assert_problem(404, "application.not_found");
    app.assert_unchanged(count, "cross-environment attempts")
        .await;
    assert_eq!(
        app.get(&format!("applications/{id}"), &alice).await.body["name"],
        "Home"
    );

    // client_id is unique per environment: OTHER may use the same one.
    let r = app
        .post(
            &other("applications"),
            &alice,
            json!({"name": "Away", "type": "simple", "client_id": "shared-client"}),
        )
        .await;
    r.assert_status(201);
    let away = r.body["id"].as_str().unwrap().to_string();
    assert_eq!(
        r.header("location").unwrap(),
        format!("/v1/environments/OTHER/applications/{away}")
    );
    app.get(&format!("applications/{away}"), &alice)
        .await
        .assert_problem(404, "application.not_found");
    assert_eq!(app.get("applications", &alice).await.body["total"], 1);
    assert_eq!(
        app.get(&other("applications"), &alice).await.body["total"],
        1
    );
    assert_eq!(
        app.get(&other("applications"), &admin).await.body["items"][0]["id"],
        away.as_str()
    );

    // Settings are per environment.
    app.enable_dcr().await;
    let r = app
        .get(&other("settings/client-registration"), &alice)
        .await;
    assert_eq!(r.body["dcr_enabled"], false);
    let r = app
        .post(
            &other("applications"),
            &alice,
            json!({"name": "m2m", "type": "backend_to_backend"}),
        )
        .await;
    r.assert_invalid(&[("type", "type.dcr_disabled")]);
    app.post(
        "applications",
        &alice,
        json!({"name": "m2m", "type": "backend_to_backend"}),
    )
    .await
    .assert_status(202);
    app.stop().await;
}

on_both!(unknown_environment, environments_are_isolated);

async fn undecodable_paths_are_404(app: TestApp) {
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Home", None).await;
    for path in [
        "/v1/environments/%FF/applications".to_string(),
        format!("/v1/environments/%FF/applications/{id}"),
        "/v1/environments/DEFAULT/applications/%FF".to_string(),
    ] {
        let r = app
            .send(app.request(Method::GET, &path, Some(&alice)))
            .await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    app.stop().await;
}

on_both!(undecodable_paths_are_404);
