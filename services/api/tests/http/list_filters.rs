//! Lists of applications narrowed by name prefix (`q`) and type, ordered by `sort`, with the
//! paging and the status filter; every bad value a 422 naming its field.

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

fn names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect()
}

async fn filtering_and_sorting(app: TestApp) {
    app.enable_dcr().await;
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    for name in ["beta", "Alpha", "alpine", "Gamma", "al_x"] {
        app.create_simple(&alice, name, None).await;
    }
    let spa = app
        .post(
            "applications",
            &alice,
            json!({"name": "Alpha SPA", "type": "browser", "redirect_uris": ["https://spa.example/cb"]}),
        )
        .await;
    spa.assert_status(202);
    // Someone else's: never in alice's lists.
    app.create_simple(&app.token("bob", false), "Alps", None)
        .await;

    // Name prefix, case aside; oldest first by default.
    let r = app.get_query("applications", &alice, &[("q", "al")]).await;
    r.assert_status(200);
    assert_eq!(names(&r.body), ["Alpha", "alpine", "al_x", "Alpha SPA"]);
    assert_eq!(r.body["total"], 4);
    // `_` is a character, not a wildcard.
    let r = app.get_query("applications", &alice, &[("q", "al_")]).await;
    assert_eq!(names(&r.body), ["al_x"]);
    // Sorted by name (case aside), newest first.
    let r = app
        .get_query("applications", &alice, &[("sort", "name")])
        .await;
    assert_eq!(
        names(&r.body),
        ["al_x", "Alpha", "Alpha SPA", "alpine", "beta", "Gamma"]
    );
    let r = app
        .get_query("applications", &alice, &[("sort", "-created_at")])
        .await;
    assert_eq!(
        names(&r.body),
        ["Alpha SPA", "al_x", "Gamma", "alpine", "Alpha", "beta"]
    );
    // By type, with the prefix.
    let r = app
        .get_query("applications", &alice, &[("type", "browser")])
        .await;
    assert_eq!(names(&r.body), ["Alpha SPA"]);
    let r = app
        .get_query(
            "applications",
            &alice,
            &[("type", "simple"), ("q", "alpha")],
        )
        .await;
    assert_eq!(names(&r.body), ["Alpha"]);
    assert_eq!(r.body["total"], 1);
    // Paging under a sort: pages of 2 by name cover every application once, in order.
    let mut paged = Vec::new();
    for page in ["1", "2", "3", "4"] {
        let r = app
            .get_query(
                "applications",
                &alice,
                &[("sort", "name"), ("size", "2"), ("page", page)],
            )
            .await;
        assert_eq!(r.body["total"], 6);
        paged.extend(names(&r.body));
    }
    assert_eq!(
        paged,
        ["al_x", "Alpha", "Alpha SPA", "alpine", "beta", "Gamma"]
    );
    // Administrators: every application of the environment, with the filters.
    let r = app.get_query("applications", &admin, &[("q", "alp")]).await;
    assert_eq!(names(&r.body), ["Alpha", "alpine", "Alpha SPA", "Alps"]);
    // Archived applications take the same filters.
    let alps = app
        .get_query("applications", &admin, &[("q", "alps")])
        .await;
    let alps_id = alps.body["items"][0]["id"].as_str().unwrap().to_string();
    app.delete(&format!("applications/{alps_id}"), &admin)
        .await
        .assert_status(204);
    let r = app
        .get_query(
            "applications",
            &admin,
            &[
                ("status", "ARCHIVED"),
                ("q", "ALP"),
                ("type", "simple"),
                ("sort", "name"),
            ],
        )
        .await;
    assert_eq!(names(&r.body), ["Alps"]);
    let r = app
        .get_query(
            "applications",
            &admin,
            &[("status", "ARCHIVED"), ("q", "beta")],
        )
        .await;
    assert_eq!(names(&r.body), Vec::<String>::new());

    // Bad values, each named.
    app.get_query("applications", &alice, &[("type", "desktop")])
        .await
        .assert_invalid(&[("type", "type.invalid")]);
    for sort in ["created", "-name", "NAME", ""] {
        app.get_query("applications", &alice, &[("sort", sort)])
            .await
            .assert_invalid(&[("sort", "sort.invalid")]);
    }
    app.get_query("applications", &alice, &[("q", "al\u{0}")])
        .await
        .assert_invalid(&[("q", "q.invalid")]);
    let long = "x".repeat(201);
    app.get_query(
        "applications",
        &alice,
        &[("q", long.as_str()), ("type", "x"), ("sort", "y")],
    )
    .await
    .assert_invalid(&[
        ("q", "q.invalid"),
        ("type", "type.invalid"),
        ("sort", "sort.invalid"),
    ]);
    app.stop().await;
}

on_both!(filtering_and_sorting);
