//! `GET /audit`: every event of an environment, oldest first, paged by log position and
//! filtered by actor, type, stream type and time; administrators of the environment only.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

fn types(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the environment's log holds `n` events (PostgreSQL shows an event to log
/// readers once every earlier transaction of the cluster has ended).
async fn audit_until(app: &TestApp, env: &str, token: &str, n: usize) -> Value {
    for _ in 0..100 {
        let r = app
            .get_query(
                &format!("/v1/environments/{env}/audit"),
                token,
                &[("limit", "1000")],
            )
            .await;
        r.assert_status(200);
        if r.body["items"].as_array().unwrap().len() >= n {
            return r.body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the audit log of {env} never held {n} events");
}

async fn auditing(app: TestApp) {
    app.create_environment_http("team").await;
    let root = app.token("root", true);
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Audited", None).await;
    app.put(
        &format!("applications/{id}"),
        &alice,
        json!({"name": "Audited 2"}),
    )
    .await
    .assert_status(200);
    let team_admin = app.admin_of("tina", &["team"]);
    app.create_simple_in("team", &team_admin, "Team app").await;

    // DEFAULT: alice's first visit, her create and update, root's first visit (this read).
    let all = audit_until(&app, "DEFAULT", &root, 4).await;
    assert_eq!(
        types(&all),
        [
            "UserFirstSeen",
            "ApplicationCreated",
            "ApplicationUpdated",
            "UserFirstSeen"
        ]
    );
    assert_eq!(all["next_after"], Value::Null);
    for e in all["items"].as_array().unwrap() {
        assert_eq!(e["metadata"]["environment"], "DEFAULT", "{e}");
        assert_eq!(
            e.as_object().unwrap().len(),
            9,
            "the envelope of GET /events: {e}"
        );
    }
    // Another environment's events are its own, and its administrator reads them there only.
    let team = audit_until(&app, "team", &team_admin, 2).await;
    assert!(types(&team).contains(&"ApplicationCreated".to_string()));
    for e in team["items"].as_array().unwrap() {
        assert_eq!(e["metadata"]["environment"], "team", "{e}");
    }
    app.get("/v1/environments/DEFAULT/audit", &team_admin)
        .await
        .assert_problem(403, "permission.admin_only");
    app.get("audit", &alice)
        .await
        .assert_problem(403, "permission.admin_only");

    // Filters.
    let r = app.get_query("audit", &root, &[("actor", "alice")]).await;
    assert_eq!(
        types(&r.body),
        ["UserFirstSeen", "ApplicationCreated", "ApplicationUpdated"]
    );
    let r = app
        .get_query("audit", &root, &[("type", "ApplicationUpdated")])
        .await;
    assert_eq!(types(&r.body), ["ApplicationUpdated"]);
    // (tina's refused read above was her first visit in DEFAULT: recorded before the refusal.)
    let r = app
        .get_query("audit", &root, &[("stream_type", "user")])
        .await;
    let actors: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["metadata"]["actor"].as_str().unwrap())
        .collect();
    assert_eq!(types(&r.body), ["UserFirstSeen"; 3]);
    assert_eq!(actors, ["alice", "root", "tina"]);
    let items = all["items"].as_array().unwrap();
    let created_at = items[1]["at"].as_str().unwrap();
    let updated_at = items[2]["at"].as_str().unwrap();
    let r = app
        .get_query("audit", &root, &[("from", created_at), ("to", updated_at)])
        .await;
    assert_eq!(
        types(&r.body),
        ["ApplicationCreated"],
        "from is inclusive, to exclusive"
    );

    // Paging: a page of 1 at a time walks the same events in the same order.
    let mut after: Option<String> = None;
    let mut walked = Vec::new();
    loop {
        let mut q = vec![("limit", "1".to_string())];
        if let Some(a) = &after {
            q.push(("after", a.clone()));
        }
        let q: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = app.get_query("audit", &root, &q).await;
        r.assert_status(200);
        walked.extend(r.body["items"].as_array().unwrap().iter().cloned());
        match r.body["next_after"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
        assert!(walked.len() <= 10, "paging ends");
    }
    let everything = app.get("audit", &root).await;
    assert_eq!(
        walked.len(),
        5,
        "alice's three events, root's and tina's first visits"
    );
    assert_eq!(
        walked
            .iter()
            .map(|e| e["event_id"].clone())
            .collect::<Vec<_>>(),
        everything.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].clone())
            .collect::<Vec<_>>()
    );

    // Every parameter is checked.
    let long_type = "T".repeat(201);
    for (field, value, code) in [
        ("limit", "0", "limit.invalid"),
        ("limit", "1001", "limit.invalid"),
        ("after", "12", "after.invalid"),
        ("after", "-1.2", "after.invalid"),
        ("from", "yesterday", "time.invalid"),
        ("to", "2024-13-01T00:00:00Z", "time.invalid"),
        ("actor", "", "filter.invalid"),
        ("type", "", "filter.invalid"),
        ("stream_type", "", "filter.invalid"),
        ("actor", "al\u{0}ice", "filter.invalid"),
        ("type", long_type.as_str(), "filter.invalid"),
    ] {
        app.get_query("audit", &root, &[(field, value)])
            .await
            .assert_invalid(&[(field, code)]);
    }
    app.get_query("audit", &root, &[("nope", "1")])
        .await
        .assert_invalid_fields(&["query"]);
    app.stop().await;
}

on_both!(auditing);
