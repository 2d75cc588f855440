//! Lists: paging, who sees what, and reading one's own writes at once.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::json;

fn names(r: &crate::helpers::Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

async fn paging_and_visibility(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    for i in 0..25 {
        app.create_simple(&alice, &format!("app-{i:02}"), None)
            .await;
    }
    app.create_simple(&bob, "bob-1", None).await;
    app.create_simple(&bob, "bob-2", None).await;

    // Page 3 of 10: the last five, oldest first.
    let r = app
        .get_query("applications", &alice, &[("size", "10"), ("page", "3")])
        .await;
    r.assert_status(200);
    assert_eq!(r.body["total"], 25);
    assert_eq!(r.body["page"], 3);
    assert_eq!(r.body["size"], 10);
    assert_eq!(
        names(&r),
        ["app-20", "app-21", "app-22", "app-23", "app-24"]
    );
    let r = app
        .get_query("applications", &alice, &[("size", "10"), ("page", "1")])
        .await;
    assert_eq!(
        names(&r),
        (0..10).map(|i| format!("app-{i:02}")).collect::<Vec<_>>()
    );
    // Defaults: page 1, size 20.
    let r = app.get("applications", &alice).await;
    assert_eq!(r.body["page"], 1);
    assert_eq!(r.body["size"], 20);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 20);
    // Past the end: empty, same total.
    let r = app
        .get_query("applications", &alice, &[("size", "10"), ("page", "4")])
        .await;
    r.assert_status(200);
    assert_eq!(r.body["items"], json!([]));
    assert_eq!(r.body["total"], 25);
    // Bounds.
    let r = app
        .get_query("applications", &alice, &[("size", "100")])
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 25);
    for (k, v) in [
        ("size", "0"),
        ("size", "101"),
        ("size", "-5"),
        ("page", "0"),
        ("page", "-1"),
    ] {
        let r = app.get_query("applications", &alice, &[(k, v)]).await;
        assert_eq!(r.status, 422, "{k}={v}: {}", r.body);
        r.assert_invalid(&[(k, &format!("{k}.invalid"))]);
    }
    let r = app
        .get_query(
            "applications",
            &alice,
            &[("size", "0"), ("page", "0"), ("status", "GONE")],
        )
        .await;
    r.assert_invalid_fields(&["status", "page", "size"]);
    // (`sort` is a parameter now — see list_filters — so an unknown one is `order`.)
    for (k, v) in [("size", "ten"), ("page", "1.5"), ("order", "name")] {
        let r = app.get_query("applications", &alice, &[(k, v)]).await;
        assert_eq!(r.status, 422, "{k}={v}: {}", r.body);
        r.assert_problem(422, "validation.failed");
    }

    // Who sees what: a user their own, an administrator all of the environment.
    let r = app.get("applications", &bob).await;
    assert_eq!(r.body["total"], 2);
    assert_eq!(names(&r), ["bob-1", "bob-2"]);
    assert!(r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["role"] == "PRIMARY_OWNER"));
    let r = app
        .get_query("applications", &admin, &[("size", "100")])
        .await;
    assert_eq!(r.body["total"], 27);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 27);
    let carol = app.token("carol", false);
    let r = app.get("applications", &carol).await;
    assert_eq!(r.body["total"], 0);
    assert_eq!(r.body["items"], json!([]));
    app.stop().await;
}

async fn reads_see_writes_at_once(app: TestApp) {
    let alice = app.token("alice", false);
    for i in 0..10 {
        // Without a token: a list includes everything acknowledged before it.
        let r = app
            .post(
                "applications",
                &alice,
                json!({"name": format!("rw-{i}"), "type": "simple"}),
            )
            .await;
        r.assert_status(201);
        let id = r.body["id"].as_str().unwrap().to_string();
        let list = app
            .get_query("applications", &alice, &[("size", "100")])
            .await;
        list.assert_status(200);
        assert!(
            list.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a["id"] == id.as_str()),
            "create {i} is listed at once"
        );
        assert_eq!(list.body["total"], i + 1);

        // With the write's token.
        let r = app
            .put(
                &format!("applications/{id}"),
                &alice,
                json!({"name": format!("rw-{i}-renamed")}),
            )
            .await;
        let token = r.header("x-consistency-token").unwrap();
        let list = app
            .send(
                app.client
                    .get(app.url("applications"))
                    .query(&[("size", "100")])
                    .bearer_auth(&alice)
                    .header("x-consistency-token", &token),
            )
            .await;
        list.assert_status(200);
        let item = list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == id.as_str())
            .unwrap()
            .clone();
        assert_eq!(item["name"], format!("rw-{i}-renamed"));
        assert_eq!(item["version"], 2);
    }
    // An archive disappears from the list at once.
    let first = app.get("applications", &alice).await.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.delete(&format!("applications/{first}"), &alice)
        .await
        .assert_status(204);
    let list = app
        .get_query("applications", &alice, &[("size", "100")])
        .await;
    assert_eq!(list.body["total"], 9);
    assert!(list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["id"] != first.as_str()));

    // A token this api did not issue: 422.
    for garbage in ["garbage", "1", "1.x", "", "-"] {
        let r = app
            .send(
                app.client
                    .get(app.url("applications"))
                    .bearer_auth(&alice)
                    .header("x-consistency-token", garbage),
            )
            .await;
        assert_eq!(r.status, 422, "{garbage:?}: {}", r.body);
        r.assert_invalid(&[("X-Consistency-Token", "consistency_token.invalid")]);
    }
    app.stop().await;
}

/// A consistency token the read model never reaches: the read gives up after the configured
/// wait with 503 and Retry-After (a list never answers without the write it was asked for).
async fn unreachable_consistency_token(app: TestApp) {
    let alice = app.token("alice", false);
    app.create_simple(&alice, "x", None).await;
    let started = std::time::Instant::now();
    let r = app
        .send(
            app.client
                .get(app.url("applications"))
                .bearer_auth(&alice)
                .header("x-consistency-token", "999999999999.1"),
        )
        .await;
    r.assert_problem(503, "service.unavailable");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(300),
        "it waited for the configured time"
    );
    // A token already reached answers at once.
    app.send(
        app.client
            .get(app.url("applications"))
            .bearer_auth(&alice)
            .header("x-consistency-token", "0.0"),
    )
    .await
    .assert_status(200);
    app.stop().await;
}

mod unreachable_consistency_token {
    use crate::helpers::{spawn_with, Backend};

    async fn spawn(backend: Backend) -> crate::helpers::TestApp {
        spawn_with(backend, |c| c.api.consistency_wait_ms = 300).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::unreachable_consistency_token(spawn(Backend::Postgres).await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::unreachable_consistency_token(spawn(Backend::Sqlite).await).await;
    }
}

on_both!(paging_and_visibility, reads_see_writes_at_once);
