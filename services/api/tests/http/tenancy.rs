//! Tenancy: environments are created by organisation administrators, listed by what the caller
//! administers, and isolated — an administrator of one environment is nobody in another, and an
//! object of another environment is a 404 whoever asks.

use crate::helpers::TestApp;
use crate::on_both;
use reqwest::Method;
use serde_json::{json, Value};

fn in_env(env: &str, path: &str) -> String {
    format!("/v1/environments/{env}/{path}")
}

fn ids(r: &crate::helpers::Resp) -> Vec<String> {
    r.assert_status(200);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

async fn create_and_list_environments(app: TestApp) {
    let org = app.token("olga", true);
    let star = app.admin_of("stella", &["*"]);
    let alpha_admin = app.admin_of("ada", &["alpha"]);
    let user = app.token("bob", false);
    let count = app.event_count().await;

    // Organisation administrators only.
    let r = app
        .post(
            "/v1/environments",
            &alpha_admin,
            json!({"id": "gamma", "name": "Gamma"}),
        )
        .await;
    r.assert_problem(403, "permission.admin_only");
    app.post(
        "/v1/environments",
        &user,
        json!({"id": "gamma", "name": "Gamma"}),
    )
    .await
    .assert_problem(403, "permission.admin_only");
    // Whatever the body: only an organisation administrator learns what is wrong with it.
    app.post("/v1/environments", &alpha_admin, json!({"id": "bad id"}))
        .await
        .assert_problem(403, "permission.admin_only");
    let r = app
        .send(
            app.request(Method::POST, "/v1/environments", None)
                .json(&json!({"id": "gamma", "name": "Gamma"})),
        )
        .await;
    r.assert_problem(401, "auth.unauthenticated");
    // Without a valid token it is 401 whatever the body.
    let r = app
        .send(
            app.request(Method::POST, "/v1/environments", None)
                .json(&json!({"id": "bad id", "name": ""})),
        )
        .await;
    r.assert_problem(401, "auth.unauthenticated");
    let r = app
        .send(
            app.request(Method::POST, "/v1/environments", Some("not-a-token"))
                .json(&json!({"id": "gamma"})),
        )
        .await;
    r.assert_problem(401, "auth.unauthenticated");
    // A token whose subject is not usable is no valid token, for an organisation
    // administrator too.
    let nobody = app.sign(app.claims("", true));
    app.post(
        "/v1/environments",
        &nobody,
        json!({"id": "gamma", "name": "Gamma"}),
    )
    .await
    .assert_problem(401, "auth.unauthenticated");
    app.assert_unchanged(count, "refused environment creations")
        .await;

    // Created: 201 with the environment, and a consistency token.
    let r = app
        .post(
            "/v1/environments",
            &org,
            json!({"id": "alpha", "name": "  Alpha team "}),
        )
        .await;
    r.assert_status(201);
    assert_eq!(r.body, json!({"id": "alpha", "name": "Alpha team"}));
    assert!(r.header("x-consistency-token").is_some(), "a write");
    let count = app.assert_appended(count, 1, "alpha").await;
    let events = app.stream("environment-alpha").await;
    assert_eq!(events[0].event_type, "EnvironmentCreated");
    assert_eq!(events[0].metadata["actor"], "olga");
    let r = app
        .post(
            "/v1/environments",
            &star,
            json!({"id": "beta", "name": "Beta"}),
        )
        .await;
    r.assert_status(201);
    let count = app.assert_appended(count, 1, "beta").await;
    // It exists at once: usable in the next request.
    app.get(&in_env("beta", "applications"), &user)
        .await
        .assert_status(200);

    // Conflicts and invalid input.
    for id in ["alpha", "beta", "DEFAULT"] {
        app.post("/v1/environments", &org, json!({"id": id, "name": "Again"}))
            .await
            .assert_problem(409, "environment.exists");
    }
    for id in ["bad id", "", "a/b", "é", &"x".repeat(65)] {
        app.post("/v1/environments", &org, json!({"id": id, "name": "Bad"}))
            .await
            .assert_invalid(&[("id", "environment.invalid")]);
    }
    for name in ["", "   ", &"n".repeat(101), "tab\there"] {
        app.post(
            "/v1/environments",
            &org,
            json!({"id": "gamma", "name": name}),
        )
        .await
        .assert_invalid(&[("name", "name.invalid")]);
    }
    app.post("/v1/environments", &org, json!({"id": "gamma"}))
        .await
        .assert_invalid(&[("name", "field.required")]);
    app.post(
        "/v1/environments",
        &org,
        json!({"id": "gamma", "name": "G", "owner": "x"}),
    )
    .await
    .assert_problem(422, "validation.failed");
    app.assert_unchanged(count, "conflicting and invalid creations")
        .await;

    // Listed: DEFAULT for everyone, plus what the caller administers (organisation: all).
    let list = |token: String| {
        let app = &app;
        async move {
            let r = app.get("/v1/environments", &token).await;
            r.assert_status(200);
            r.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(user.clone()).await, ["DEFAULT"]);
    assert_eq!(list(alpha_admin.clone()).await, ["DEFAULT", "alpha"]);
    assert_eq!(list(org.clone()).await, ["DEFAULT", "alpha", "beta"]);
    assert_eq!(list(star.clone()).await, ["DEFAULT", "alpha", "beta"]);
    // An environment named in the token that does not exist is not listed.
    assert_eq!(
        list(app.admin_of("gus", &["ghost", "beta"])).await,
        ["DEFAULT", "beta"]
    );
    let r = app.get("/v1/environments", &org).await;
    assert_eq!(
        r.body["items"][1],
        json!({"id": "alpha", "name": "Alpha team"})
    );
    app.send(app.request(Method::GET, "/v1/environments", None))
        .await
        .assert_problem(401, "auth.unauthenticated");
    // A new environment is listed right after it is created (no waiting, no retry).
    let mut expected = vec!["DEFAULT", "alpha", "beta"];
    let names: Vec<String> = (0..20).map(|i| format!("env-{i:02}")).collect();
    for id in &names {
        app.post("/v1/environments", &org, json!({"id": id, "name": id}))
            .await
            .assert_status(201);
        expected.push(id);
        assert_eq!(list(org.clone()).await, expected);
    }
    app.stop().await;
}

async fn an_administrator_of_one_environment_is_nobody_in_another(app: TestApp) {
    app.create_environment_http("alpha").await;
    app.create_environment_http("beta").await;
    let ada = app.admin_of("ada", &["alpha"]);
    let bob = app.token("bob", false);
    let carol = app.token("carol", false);
    let b1 = app.create_simple_in("beta", &bob, "Bob's in beta").await;
    let a1 = app
        .create_simple_in("alpha", &carol, "Carol's in alpha")
        .await;
    let count = app.event_count().await;

    // In beta, ada is a user like any other: 404 on bob's application, whatever the endpoint.
    let base = in_env("beta", &format!("applications/{b1}"));
    let requests = [
        app.request(Method::GET, &base, Some(&ada)),
        app.request(Method::GET, &format!("{base}?version=1"), Some(&ada)),
        app.request(Method::GET, &format!("{base}/history"), Some(&ada)),
        app.request(Method::GET, &format!("{base}/members"), Some(&ada)),
        app.request(Method::PUT, &base, Some(&ada))
            .json(&json!({"name": "taken over"})),
        app.request(Method::DELETE, &base, Some(&ada)),
        app.request(Method::POST, &format!("{base}/_restore"), Some(&ada))
            .json(&json!({})),
        app.request(Method::POST, &format!("{base}/members"), Some(&ada))
            .json(&json!({"user": "ada", "role": "OWNER"})),
        app.request(Method::PUT, &format!("{base}/members/bob"), Some(&ada))
            .json(&json!({"role": "USER"})),
        app.request(Method::DELETE, &format!("{base}/members/bob"), Some(&ada)),
        app.request(
            Method::POST,
            &format!("{base}/members/_transfer_ownership"),
            Some(&ada),
        )
        .json(&json!({"user": "ada"})),
    ];
    for request in requests {
        let r = app.send(request).await;
        r.assert_problem(404, "application.not_found");
    }
    // Not an administrator of beta's settings either.
    let settings = in_env("beta", "settings/client-registration");
    let current = app.get(&settings, &ada).await;
    current.assert_status(200);
    app.put(&settings, &ada, current.body.clone())
        .await
        .assert_problem(403, "permission.admin_only");
    // Archived applications are for administrators.
    app.get_query(
        &in_env("beta", "applications"),
        &ada,
        &[("status", "ARCHIVED")],
    )
    .await
    .assert_problem(403, "permission.admin_only");
    app.assert_unchanged(count, "ada in beta").await;

    // Her beta list shows only her own applications; her alpha list shows all of alpha's.
    assert!(ids(&app.get(&in_env("beta", "applications"), &ada).await).is_empty());
    let own = app.create_simple_in("beta", &ada, "Ada's in beta").await;
    let listed = app.get(&in_env("beta", "applications"), &ada).await;
    assert_eq!(ids(&listed), [own.as_str()]);
    assert_eq!(listed.body["items"][0]["role"], "PRIMARY_OWNER");
    assert_eq!(listed.body["items"][0]["permissions"]["DEFINITION"], "CRUD");
    let alpha_list = app.get(&in_env("alpha", "applications"), &ada).await;
    assert_eq!(ids(&alpha_list), [a1.as_str()]);
    assert_eq!(alpha_list.body["items"][0]["role"], Value::Null);
    // In alpha she administers: carol's application, her settings, the archived list.
    let alpha_app = in_env("alpha", &format!("applications/{a1}"));
    app.get(&alpha_app, &ada).await.assert_status(200);
    app.put(&alpha_app, &ada, json!({"description": "by alpha's admin"}))
        .await
        .assert_status(200);
    app.get(&format!("{alpha_app}/members"), &ada)
        .await
        .assert_status(200);
    let alpha_settings = in_env("alpha", "settings/client-registration");
    let mut body = app.get(&alpha_settings, &ada).await.body;
    body["dcr_enabled"] = Value::Bool(true);
    app.put(&alpha_settings, &ada, body)
        .await
        .assert_status(200);
    app.get_query(
        &in_env("alpha", "applications"),
        &ada,
        &[("status", "ARCHIVED")],
    )
    .await
    .assert_status(200);
    // beta's settings did not change.
    assert_eq!(app.get(&settings, &bob).await.body["dcr_enabled"], false);

    // In DEFAULT she is nobody too.
    let d1 = app.create_simple(&bob, "Bob's in DEFAULT", None).await;
    app.get(&format!("applications/{d1}"), &ada)
        .await
        .assert_problem(404, "application.not_found");
    app.stop().await;
}

async fn objects_of_another_environment_are_not_found(app: TestApp) {
    app.create_environment_http("alpha").await;
    app.create_environment_http("beta").await;
    let carol = app.token("carol", false);
    let beta_admin = app.admin_of("bea", &["beta"]);
    let both_admin = app.admin_of("bo", &["alpha", "beta"]);
    let org = app.token("olga", true);
    let a1 = app
        .create_simple_in("alpha", &carol, "Carol's in alpha")
        .await;
    let archived = app
        .create_simple_in("alpha", &carol, "Archived in alpha")
        .await;
    app.delete(
        &in_env("alpha", &format!("applications/{archived}")),
        &carol,
    )
    .await
    .assert_status(204);
    let count = app.event_count().await;

    // alpha's application asked for under beta (or DEFAULT): 404, for its own primary owner,
    // beta's administrator, an administrator of both, an organisation administrator.
    for env in ["beta", "DEFAULT"] {
        for token in [&carol, &beta_admin, &both_admin, &org] {
            for id in [&a1, &archived] {
                let base = in_env(env, &format!("applications/{id}"));
                let requests = [
                    app.request(Method::GET, &base, Some(token)),
                    app.request(Method::GET, &format!("{base}?version=1"), Some(token)),
                    app.request(Method::GET, &format!("{base}/history"), Some(token)),
                    app.request(Method::GET, &format!("{base}/members"), Some(token)),
                    app.request(Method::PUT, &base, Some(token))
                        .json(&json!({"name": "moved"})),
                    app.request(Method::DELETE, &base, Some(token)),
                    app.request(Method::POST, &format!("{base}/_restore"), Some(token))
                        .json(&json!({})),
                    app.request(Method::POST, &format!("{base}/members"), Some(token))
                        .json(&json!({"user": "x"})),
                    app.request(Method::PUT, &format!("{base}/members/carol"), Some(token))
                        .json(&json!({"role": "USER"})),
                    app.request(
                        Method::DELETE,
                        &format!("{base}/members/carol"),
                        Some(token),
                    ),
                    app.request(
                        Method::POST,
                        &format!("{base}/members/_transfer_ownership"),
                        Some(token),
                    )
                    .json(&json!({"user": "x"})),
                ];
                for request in requests {
                    let r = app.send(request).await;
                    r.assert_problem(404, "application.not_found");
                }
            }
            let listed = app.get(&in_env(env, "applications"), token).await;
            assert!(
                !ids(&listed).contains(&a1),
                "{env}: alpha's application listed"
            );
        }
        let archived_list = app
            .get_query(
                &in_env(env, "applications"),
                &org,
                &[("status", "ARCHIVED")],
            )
            .await;
        assert!(ids(&archived_list).is_empty(), "{env}");
    }
    app.assert_unchanged(count, "cross-environment requests")
        .await;

    // Under alpha, the same requests work for those who may.
    let base = in_env("alpha", &format!("applications/{a1}"));
    for token in [&carol, &both_admin, &org] {
        app.get(&base, token).await.assert_status(200);
        let h = app.get(&format!("{base}/history"), token).await;
        h.assert_status(200);
        assert_eq!(h.body["items"][0]["type"], "ApplicationCreated");
    }
    app.get(&base, &beta_admin)
        .await
        .assert_problem(404, "application.not_found");
    app.post(
        &in_env("alpha", &format!("applications/{archived}/_restore")),
        &both_admin,
        json!({}),
    )
    .await
    .assert_status(200);
    app.stop().await;
}

async fn concurrent_creations_of_one_environment(app: TestApp) {
    let org = app.token("olga", true);
    let before = app.event_count().await;
    let creations = (0..12).map(|i| {
        app.post(
            "/v1/environments",
            &org,
            json!({"id": "contested", "name": format!("Contested {i}")}),
        )
    });
    let answers = futures::future::join_all(creations).await;
    let created: Vec<_> = answers.iter().filter(|r| r.status == 201).collect();
    assert_eq!(
        created.len(),
        1,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in answers.iter().filter(|r| r.status != 201) {
        r.assert_problem(409, "environment.exists");
    }
    app.assert_appended(before, 1, "12 racing creations").await;
    let listed = app.get("/v1/environments", &org).await;
    assert_eq!(listed.body["items"][1], created[0].body);
    app.stop().await;
}

on_both!(
    concurrent_creations_of_one_environment,
    create_and_list_environments,
    an_administrator_of_one_environment_is_nobody_in_another,
    objects_of_another_environment_are_not_found,
);
