//! Users: `UserFirstSeen` on a subject's first authenticated request in an environment, and the
//! "Default application" of a new non-administrator — exactly once, also when 20 first requests
//! arrive at the same moment; none for an administrator of the environment, none with the flag
//! off.

use crate::helpers::{Resp, TestApp};
use crate::{on_both, on_both_with};
use futures::future::join_all;
use reqwest::Method;
use serde_json::{json, Value};

const DEFAULT_APPLICATION: &str = "Default application";

fn with_default_application(config: &mut appreg_config::Config) {
    config.api.default_application = true;
}

/// The events of a user's stream in an environment.
async fn user_events(app: &TestApp, env: &str, user: &str) -> Vec<appreg_eventstore::StoredEvent> {
    app.stream(&format!("user-{env}/{user}")).await
}

/// `n` requests at once, as `token`, cycling over a few endpoints of environment `env` that any
/// authenticated user may call.
async fn first_requests(app: &TestApp, env: &str, token: &str, n: usize) -> Vec<Resp> {
    let base = format!("/v1/environments/{env}");
    let missing = uuid::Uuid::now_v7();
    let requests = (0..n).map(|i| {
        let (method, path) = match i % 4 {
            0 => (Method::GET, format!("{base}/applications")),
            1 => (Method::GET, format!("{base}/application-types")),
            2 => (Method::GET, format!("{base}/settings/client-registration")),
            _ => (Method::GET, format!("{base}/applications/{missing}")),
        };
        app.send(app.request(method, &path, Some(token)))
    });
    join_all(requests).await
}

fn assert_answered(answers: &[Resp]) {
    for (i, r) in answers.iter().enumerate() {
        let expected = if i % 4 == 3 { 404 } else { 200 };
        assert_eq!(r.status, expected, "request {i}: {}", r.body);
    }
}

async fn twenty_first_requests_make_one_default_application(app: TestApp) {
    let before = app.event_count().await;
    let mut claims = app.claims("newbie", false);
    claims.email = Some("newbie@example.com".into());
    let newbie = app.sign(claims);

    // 20 first requests at once, all of them lists: each answer already shows the application
    // (it is made before the request goes on).
    let lists = (0..20).map(|_| app.get("applications", &newbie));
    let answers = join_all(lists).await;
    let mut ids = std::collections::BTreeSet::new();
    for r in &answers {
        r.assert_status(200);
        assert_eq!(r.body["total"], 1, "{}", r.body);
        let item = &r.body["items"][0];
        assert_eq!(item["name"], DEFAULT_APPLICATION);
        assert_eq!(item["type"], "simple");
        assert_eq!(item["status"], "ACTIVE");
        assert_eq!(item["client_id"], Value::Null);
        assert_eq!(item["role"], "PRIMARY_OWNER");
        assert_eq!(item["owner"]["id"], "newbie");
        ids.insert(item["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "one default application: {ids:?}");
    let id = ids.into_iter().next().unwrap();
    app.assert_appended(before, 1, "20 first requests").await;
    assert_eq!(app.count_events_of_type("ApplicationCreated").await, 1);
    assert_eq!(app.count_events_of_type("UserFirstSeen").await, 1);

    // The first sighting, with the token's profile and the default application's id.
    let seen = user_events(&app, "DEFAULT", "newbie").await;
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].event_type, "UserFirstSeen");
    // The profile is sealed with the user's data key (personal data).
    assert_eq!(seen[0].schema_version, 2);
    assert_sealed(&seen[0].data["name"], "newbie name");
    assert_sealed(&seen[0].data["email"], "newbie@example.com");
    let mut data = seen[0].data.clone();
    data["name"] = Value::Null;
    data["email"] = Value::Null;
    assert_eq!(
        data,
        json!({"user": "newbie", "name": null, "email": null, "admin": false, "default_application": id})
    );
    assert_eq!(seen[0].metadata["environment"], "DEFAULT");
    let created = app.stream(&format!("application-{id}")).await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].event_type, "ApplicationCreated");
    assert_eq!(created[0].metadata["actor"], "newbie");

    // Later requests make no other one, also after the user archived it.
    let count = app.event_count().await;
    assert_answered(&first_requests(&app, "DEFAULT", &newbie, 8).await);
    app.delete(&format!("applications/{id}"), &newbie)
        .await
        .assert_status(204);
    assert_answered(&first_requests(&app, "DEFAULT", &newbie, 8).await);
    app.assert_appended(count, 1, "the archive only").await;
    assert_eq!(app.get("applications", &newbie).await.body["total"], 0);

    // Another user, mixing endpoints: one as well, their own.
    let count = app.event_count().await;
    let mixer = app.token("mixer", false);
    assert_answered(&first_requests(&app, "DEFAULT", &mixer, 20).await);
    app.assert_appended(count, 1, "20 mixed first requests")
        .await;
    let list = app.get("applications", &mixer).await;
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["name"], DEFAULT_APPLICATION);
    assert_eq!(list.body["items"][0]["owner"]["id"], "mixer");
    assert_eq!(app.count_events_of_type("UserFirstSeen").await, 2);

    // A first request in another environment: a default application there too.
    app.create_environment_http("team").await;
    let count = app.event_count().await;
    assert_answered(&first_requests(&app, "team", &newbie, 20).await);
    app.assert_appended(count, 1, "first requests in team")
        .await;
    let team = app.get("/v1/environments/team/applications", &newbie).await;
    assert_eq!(team.body["total"], 1);
    assert_eq!(team.body["items"][0]["name"], DEFAULT_APPLICATION);
    assert_ne!(team.body["items"][0]["id"], id.as_str());
    assert_eq!(user_events(&app, "team", "newbie").await.len(), 1);
    app.stop().await;
}

async fn administrators_get_no_default_application(app: TestApp) {
    app.create_environment_http("other").await;
    let before = app.event_count().await;
    // An organisation administrator, an administrator of DEFAULT (`admin_environments`), and
    // one of every environment (`*`): 20 first requests each, no application.
    let admins = [
        ("root", app.token("root", true)),
        ("ada", app.admin_of("ada", &["DEFAULT"])),
        ("stella", app.admin_of("stella", &["*"])),
    ];
    for (sub, token) in &admins {
        assert_answered(&first_requests(&app, "DEFAULT", token, 20).await);
        let seen = user_events(&app, "DEFAULT", sub).await;
        assert_eq!(seen.len(), 1, "{sub}");
        assert_eq!(seen[0].data["admin"], true, "{sub}");
        assert_eq!(seen[0].data["default_application"], Value::Null, "{sub}");
        assert_eq!(app.get("applications", token).await.body["total"], 0);
    }
    app.assert_unchanged(before, "administrators' first requests")
        .await;
    assert_eq!(app.count_events_of_type("ApplicationCreated").await, 0);

    // An administrator of another environment is nobody in DEFAULT: a user like any other.
    let oscar = app.admin_of("oscar", &["other"]);
    assert_answered(&first_requests(&app, "DEFAULT", &oscar, 4).await);
    app.assert_appended(before, 1, "oscar's first requests in DEFAULT")
        .await;
    let list = app.get("applications", &oscar).await;
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["name"], DEFAULT_APPLICATION);
    // ... and an administrator in the one they administer: none there.
    let count = app.event_count().await;
    assert_answered(&first_requests(&app, "other", &oscar, 4).await);
    app.assert_unchanged(count, "oscar's first requests in other")
        .await;
    app.stop().await;
}

async fn no_default_application_when_simple_applications_are_disabled(app: TestApp) {
    let admin = app.token("root", true);
    app.put(
        "settings/client-registration",
        &admin,
        json!({
            "allowed_types": {"simple": false, "browser": true, "web": true, "native": true, "backend_to_backend": true},
            "dcr_enabled": false
        }),
    )
    .await
    .assert_status(200);
    let count = app.event_count().await;
    let newbie = app.token("newbie", false);
    assert_answered(&first_requests(&app, "DEFAULT", &newbie, 8).await);
    app.assert_unchanged(count, "no simple applications: no default application")
        .await;
    assert_eq!(user_events(&app, "DEFAULT", "newbie").await.len(), 1);
    app.stop().await;
}

/// The harness turns the flag off: first requests record the user and create nothing.
async fn flag_off_creates_none(app: TestApp) {
    let before = app.event_count().await;
    let newbie = app.token("newbie", false);
    assert_answered(&first_requests(&app, "DEFAULT", &newbie, 20).await);
    app.assert_unchanged(before, "first requests with the flag off")
        .await;
    assert_eq!(app.count_events_of_type("ApplicationCreated").await, 0);
    let seen = user_events(&app, "DEFAULT", "newbie").await;
    assert_eq!(seen.len(), 1);
    assert_sealed(&seen[0].data["name"], "newbie name");
    let mut data = seen[0].data.clone();
    data["name"] = Value::Null;
    assert_eq!(
        data,
        json!({"user": "newbie", "name": null, "email": null, "admin": false, "default_application": null})
    );
    assert_eq!(app.get("applications", &newbie).await.body["total"], 0);
    // A user's own applications are theirs alone, as usual.
    app.create_simple(&newbie, "Mine", None).await;
    assert_eq!(app.get("applications", &newbie).await.body["total"], 1);
    app.stop().await;
}

/// Requests that fail before the caller is known (no token, an unknown environment) record no
/// user.
async fn unauthenticated_and_unknown_environment_record_nobody(app: TestApp) {
    let newbie = app.token("newbie", false);
    app.send(app.request(Method::GET, "applications", None))
        .await
        .assert_status(401);
    app.get("/v1/environments/nowhere/applications", &newbie)
        .await
        .assert_problem(404, "environment.not_found");
    assert_eq!(app.count_events_of_type("UserFirstSeen").await, 0);
    assert_eq!(app.count_events_of_type("ApplicationCreated").await, 0);
    app.stop().await;
}

/// A gateway checking API keys is no user: its requests record no first visit and make no
/// default application, in any environment.
async fn a_gateway_is_not_a_user(app: TestApp) {
    app.create_environment_http("EU").await;
    let before = app.count_events_of_type("UserFirstSeen").await;
    let mut claims = app.claims("gateway-1", false);
    claims.roles = vec!["appreg-gateway".into()];
    let gateway = app.sign(claims);
    for env in ["DEFAULT", "EU"] {
        for _ in 0..3 {
            let r = app
                .post(
                    &format!("/v1/environments/{env}/api-keys/_verify"),
                    &gateway,
                    json!({ "key": "apk_not-a-key" }),
                )
                .await;
            r.assert_status(200);
            assert_eq!(r.body["valid"], false);
        }
        assert!(
            user_events(&app, env, "gateway-1").await.is_empty(),
            "no first visit of the gateway in {env}"
        );
    }
    assert_eq!(app.count_events_of_type("UserFirstSeen").await, before);
    assert_eq!(app.count_events_of_type("ApplicationCreated").await, 0);
    // A user still gets theirs.
    let newbie = app.token("newbie", false);
    app.get("applications", &newbie).await.assert_status(200);
    assert_eq!(app.count_events_of_type("ApplicationCreated").await, 1);
    app.stop().await;
}

/// A user's first visit is recorded by a layer on the routes of an environment, before their
/// handler runs: the first request to any of them records it, whatever the handler then answers
/// (here mostly 403, 404 or 422), on every method of every resource. Routes outside an
/// environment record nobody.
async fn every_route_of_an_environment_records_the_first_visit(app: TestApp) {
    let missing = uuid::Uuid::now_v7();
    let app_path = format!("applications/{missing}");
    let routes: Vec<(Method, String)> = vec![
        (Method::GET, "settings/client-registration".into()),
        (Method::PUT, "settings/client-registration".into()),
        (Method::GET, "application-types".into()),
        (Method::GET, "applications".into()),
        (Method::POST, "applications".into()),
        (Method::GET, app_path.clone()),
        (Method::PUT, app_path.clone()),
        (Method::DELETE, app_path.clone()),
        (Method::POST, format!("{app_path}/_restore")),
        (Method::GET, format!("{app_path}/history")),
        (Method::POST, format!("{app_path}/_retry_registration")),
        (Method::POST, format!("{app_path}/_renew_secret")),
        (Method::GET, format!("{app_path}/credentials")),
        (Method::GET, format!("{app_path}/members")),
        (Method::POST, format!("{app_path}/members")),
        (Method::PUT, format!("{app_path}/members/bob")),
        (Method::DELETE, format!("{app_path}/members/bob")),
        (
            Method::POST,
            format!("{app_path}/members/_transfer_ownership"),
        ),
        (Method::GET, format!("{app_path}/subscriptions")),
        (Method::POST, format!("{app_path}/subscriptions")),
        (Method::GET, "subscriptions/s".into()),
        (Method::POST, "subscriptions/s/_accept".into()),
        (Method::POST, "subscriptions/s/_reject".into()),
        (Method::POST, "subscriptions/s/_pause".into()),
        (Method::POST, "subscriptions/s/_resume".into()),
        (Method::POST, "subscriptions/s/_close".into()),
        (Method::POST, "subscriptions/s/api-keys/_renew".into()),
        (Method::POST, "subscriptions/s/api-keys/k/_revoke".into()),
        (Method::POST, "api-keys/_verify".into()),
        (Method::GET, format!("{app_path}/notifications")),
        (Method::PUT, format!("{app_path}/notifications")),
        (Method::GET, "client-registration-providers".into()),
        (Method::POST, "client-registration-providers".into()),
        (Method::GET, "client-registration-providers/p".into()),
        (Method::PUT, "client-registration-providers/p".into()),
        (Method::DELETE, "client-registration-providers/p".into()),
        (
            Method::GET,
            "client-registration-providers/p/suspected-orphans".into(),
        ),
        (Method::GET, "apis".into()),
        (Method::POST, "apis".into()),
        (Method::GET, "apis/a/plans".into()),
        (Method::POST, "apis/a/plans".into()),
        (Method::POST, "apis/a/plans/p/_close".into()),
        // A stream never ends: an invalid resume point is answered 422 by the handler.
        (Method::GET, "events".into()),
    ];
    for (i, (method, path)) in routes.iter().enumerate() {
        let user = format!("visitor-{i}");
        let token = app.token(&user, false);
        let mut request = app.request(method.clone(), path, Some(&token));
        if *method != Method::GET && *method != Method::DELETE {
            request = request.json(&json!({}));
        }
        let r = app.send(request.header("last-event-id", "not-an-id")).await;
        assert!(
            r.status != 401 && r.status != 405 && r.status < 500,
            "{method} {path}: {} {}",
            r.status,
            r.body
        );
        let seen = user_events(&app, "DEFAULT", &user).await;
        assert_eq!(
            seen.len(),
            1,
            "{method} {path} ({}) records the first visit",
            r.status
        );
        assert_eq!(seen[0].event_type, "UserFirstSeen");
    }
    // Outside an environment nobody is a user of one.
    let outsider = app.token("outsider", false);
    app.get("/v1/environments", &outsider)
        .await
        .assert_status(200);
    app.get("/healthz", &outsider).await.assert_status(200);
    assert!(user_events(&app, "DEFAULT", "outsider").await.is_empty());
    assert_eq!(
        app.count_events_of_type("UserFirstSeen").await,
        routes.len()
    );
    app.stop().await;
}

/// The layer is on the methods a route has: a request answered 405 (a method the route does not
/// have) records nobody, and is 405 with or without a token, as it always was.
async fn a_request_answered_405_records_nobody(app: TestApp) {
    let newbie = app.token("newbie", false);
    for token in [None, Some(newbie.as_str())] {
        for (method, path) in [
            (Method::PATCH, "applications"),
            (Method::DELETE, "application-types"),
            (Method::PUT, "events"),
        ] {
            let r = app.send(app.request(method.clone(), path, token)).await;
            r.assert_problem(405, "request.method_not_allowed");
        }
    }
    assert_eq!(app.count_events_of_type("UserFirstSeen").await, 0);
    // The same user's first request to a route's method records them.
    app.get("applications", &newbie).await.assert_status(200);
    assert_eq!(user_events(&app, "DEFAULT", "newbie").await.len(), 1);
    app.stop().await;
}

on_both_with!(
    with_default_application;
    a_gateway_is_not_a_user,
    twenty_first_requests_make_one_default_application,
    administrators_get_no_default_application,
    no_default_application_when_simple_applications_are_disabled,
    unauthenticated_and_unknown_environment_record_nobody,
);
on_both!(
    flag_off_creates_none,
    every_route_of_an_environment_records_the_first_visit,
    a_request_answered_405_records_nobody,
);

/// A personal value as the log keeps it: sealed (`pd1.…`), the plaintext nowhere in it.
fn assert_sealed(stored: &Value, plain: &str) {
    let text = stored
        .as_str()
        .unwrap_or_else(|| panic!("not sealed: {stored}"));
    assert!(text.starts_with("pd1.") && !text.contains(plain), "{text}");
}
