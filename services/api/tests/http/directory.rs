//! `GET /users?q=&limit=`: the users seen in an environment, by id or name prefix, for picking
//! members; e-mail for administrators only; never another environment's users.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::Value;

/// A token for `sub` with a profile (name, e-mail).
fn person(app: &TestApp, sub: &str, name: &str, admin: bool) -> String {
    let mut claims = app.claims(sub, admin);
    claims.name = Some(name.into());
    claims.email = Some(format!("{sub}@example.com"));
    app.sign(claims)
}

fn ids(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect()
}

async fn finding_users(app: TestApp) {
    let admin = person(&app, "root", "Root Admin", true);
    let alice = person(&app, "alice", "Alice Liddell", false);
    let albert = person(&app, "u-17", "albert Camus", false);
    let bob = person(&app, "bob", "Bob_Dylan", false);
    for t in [&admin, &alice, &albert, &bob] {
        app.get("applications", t).await.assert_status(200);
    }
    // Seen in another environment only: never found here.
    app.create_environment_http("team").await;
    let carla = person(&app, "alcarla", "Alcarla", false);
    app.get("/v1/environments/team/applications", &carla)
        .await
        .assert_status(200);

    // By name prefix, case aside, ordered by name; no e-mail for a user.
    let r = app.get_query("users", &bob, &[("q", "AL")]).await;
    r.assert_status(200);
    assert_eq!(ids(&r.body), ["u-17", "alice"]);
    assert_eq!(r.body["items"][0]["name"], "albert Camus");
    for item in r.body["items"].as_array().unwrap() {
        assert!(item.get("email").is_none(), "{item}");
    }
    // By id prefix.
    let r = app.get_query("users", &bob, &[("q", "u-1")]).await;
    assert_eq!(ids(&r.body), ["u-17"]);
    // Wildcards are characters like any other.
    assert_eq!(
        ids(&app.get_query("users", &bob, &[("q", "%")]).await.body),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(&app.get_query("users", &bob, &[("q", "bob_")]).await.body),
        ["bob"]
    );
    assert_eq!(
        ids(&app.get_query("users", &bob, &[("q", "bobx")]).await.body),
        Vec::<String>::new()
    );
    // Administrators see e-mail addresses.
    let r = app.get_query("users", &admin, &[("q", "alice")]).await;
    assert_eq!(r.body["items"][0]["email"], "alice@example.com");
    // No q: the first users by name; limit bounds the answer.
    let r = app.get("users", &alice).await;
    assert_eq!(ids(&r.body), ["u-17", "alice", "bob", "root"]);
    let r = app.get_query("users", &alice, &[("limit", "2")]).await;
    assert_eq!(ids(&r.body), ["u-17", "alice"]);
    // The other environment's users are its own.
    let r = app
        .get_query("/v1/environments/team/users", &carla, &[("q", "al")])
        .await;
    assert_eq!(ids(&r.body), ["alcarla"]);
    // Bad parameters.
    for limit in ["0", "101", "x", "-1"] {
        app.get_query("users", &alice, &[("limit", limit)])
            .await
            .assert_invalid(&[("limit", "limit.invalid")]);
    }
    let long = "a".repeat(201);
    for q in [long.as_str(), "al\u{0}", "a\u{85}"] {
        app.get_query("users", &alice, &[("q", q)])
            .await
            .assert_invalid(&[("q", "q.invalid")]);
    }
    app.get_query("users", &alice, &[("nope", "1")])
        .await
        .assert_invalid_fields(&["query"]);
    app.stop().await;
}

on_both!(finding_users);
