//! The audit trail (`/history`) with actors and correlation ids, and time travel (`?version=`,
//! `?as_of=`).

use crate::helpers::TestApp;
use crate::on_both;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;

async fn history_with_correlation_ids(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    let r = app
        .send(
            app.client
                .post(app.url("applications"))
                .bearer_auth(&alice)
                .header("x-request-id", "create-req-0001")
                .json(&json!({"name": "Audited", "type": "simple", "client_id": "audited"})),
        )
        .await;
    r.assert_status(201);
    assert_eq!(
        r.header("x-request-id").as_deref(),
        Some("create-req-0001"),
        "X-Request-Id is echoed"
    );
    let id = r.body["id"].as_str().unwrap().to_string();
    let path = format!("applications/{id}");
    let r = app
        .send(
            app.client
                .put(app.url(&path))
                .bearer_auth(&alice)
                .header("x-request-id", "update-req-0002")
                .json(&json!({"name": "Audited 2", "description": "now described"})),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("update-req-0002"));
    // Without X-Request-Id, one is generated (and used as the correlation id).
    let r = app.delete(&path, &alice).await;
    r.assert_status(204);
    let generated = r.header("x-request-id").expect("a generated request id");
    assert!(!generated.is_empty());
    let r = app
        .post(&format!("{path}/_restore"), &admin, json!({}))
        .await;
    r.assert_status(200);
    let restore_id = r.header("x-request-id").unwrap();

    let r = app
        .send(
            app.client
                .get(app.url(&format!("{path}/history")))
                .bearer_auth(&admin)
                .header("x-request-id", "history-req-3"),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.header("x-request-id").as_deref(), Some("history-req-3"));
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{}", r.body);
    let expected = [
        (1, "ApplicationCreated", "alice", "create-req-0001"),
        (2, "ApplicationUpdated", "alice", "update-req-0002"),
        (3, "ApplicationArchived", "alice", generated.as_str()),
        (4, "ApplicationRestored", "root", restore_id.as_str()),
    ];
    let mut last_at: Option<DateTime<Utc>> = None;
    for (item, (version, kind, actor, correlation)) in items.iter().zip(expected) {
        assert_eq!(item["version"], version, "{item}");
        assert_eq!(item["type"], kind, "{item}");
        assert_eq!(item["actor"], actor, "{item}");
        assert_eq!(item["correlation_id"], correlation, "{item}");
        assert!(item["data"].is_object(), "{item}");
        let at: DateTime<Utc> = item["at"].as_str().unwrap().parse().unwrap();
        assert!(last_at.is_none_or(|l| l <= at), "oldest first");
        assert!(
            (Utc::now() - at).num_seconds().abs() < 60,
            "at is the time of the command"
        );
        last_at = Some(at);
    }
    assert_eq!(items[0]["data"]["name"], "Audited");
    assert_eq!(items[0]["data"]["client_id"], "audited");
    assert_eq!(items[0]["data"]["primary_owner"], "alice");
    assert_eq!(items[1]["data"]["name"], "Audited 2");
    assert_eq!(items[3]["data"]["primary_owner"], "root");

    // The stored events carry the same metadata (environment, actor, correlation id).
    let events = app.stream(&format!("application-{id}")).await;
    assert_eq!(events[0].metadata["environment"], "DEFAULT");
    assert_eq!(events[0].metadata["actor"], "alice");
    assert_eq!(events[0].metadata["correlation_id"], "create-req-0001");
    assert!(events[0].metadata["causation_id"].is_string());

    // A request id that is not a sane header token is replaced, not echoed.
    let r = app
        .send(
            app.client
                .get(app.url(&format!("{path}/history")))
                .bearer_auth(&admin)
                .header("x-request-id", "has space"),
        )
        .await;
    r.assert_status(200);
    let echoed = r.header("x-request-id").unwrap();
    assert_ne!(echoed, "has space");
    assert!(!echoed.is_empty());
    app.stop().await;
}

/// A client's `X-Request-Id` becomes the correlation id of the request's events only when it is
/// a bounded, safe token (at most 128 of `[A-Za-z0-9._:-]`); anything else is replaced by a
/// generated id, in the answer and in the audit trail.
async fn only_safe_request_ids_become_correlation_ids(app: TestApp) {
    let alice = app.token("alice", false);
    let long = "a".repeat(129);
    let refused = [
        "<script>alert(1)</script>",
        "id'; DROP TABLE events;--",
        "../../etc/passwd",
        "a,b",
        "{\"json\":true}",
        long.as_str(),
    ];
    let accepted = [
        "req-1",
        "trace:span.01_ab-CD",
        "0191d3b4-7c1e-7a8b-9c2d-3e4f5a6b7c8d",
    ];
    for (i, id) in refused.iter().chain(accepted.iter()).enumerate() {
        let r = app
            .send(
                app.request(Method::POST, "applications", Some(&alice))
                    .header("x-request-id", *id)
                    .json(&json!({"name": format!("app {i}"), "type": "simple"})),
            )
            .await;
        r.assert_status(201);
        let echoed = r.header("x-request-id").expect("a request id");
        let app_id = r.body["id"].as_str().unwrap();
        let events = app.stream(&format!("application-{app_id}")).await;
        let correlation = events[0].metadata["correlation_id"].as_str().unwrap();
        assert_eq!(correlation, echoed, "the answer names the correlation id");
        if accepted.contains(id) {
            assert_eq!(echoed, *id);
        } else {
            assert_ne!(echoed, *id, "{id:?} is replaced");
            assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{echoed}");
        }
    }
    app.stop().await;
}

async fn state_at_a_version_or_time(app: TestApp) {
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Before", Some("before")).await;
    let path = format!("applications/{id}");
    // Make sure the two events have distinct times, at the store's microsecond precision.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    app.put(
        &path,
        &alice,
        json!({"name": "After", "client_id": "after"}),
    )
    .await
    .assert_status(200);

    let history = app.get(&format!("{path}/history"), &alice).await;
    let at1 = history.body["items"][0]["at"].as_str().unwrap().to_string();
    let at2 = history.body["items"][1]["at"].as_str().unwrap().to_string();
    assert_ne!(at1, at2);

    let v1 = app.get_query(&path, &alice, &[("version", "1")]).await;
    v1.assert_status(200);
    assert_eq!(v1.body["name"], "Before");
    assert_eq!(v1.body["client_id"], "before");
    assert_eq!(v1.body["version"], 1);
    let v2 = app.get_query(&path, &alice, &[("version", "2")]).await;
    assert_eq!(v2.body["name"], "After");
    assert_eq!(v2.body["version"], 2);

    // as_of: at the first event's time → the first state; at the second's, or now → current.
    let t1 = app.get_query(&path, &alice, &[("as_of", &at1)]).await;
    t1.assert_status(200);
    assert_eq!(t1.body["name"], "Before");
    assert_eq!(t1.body["version"], 1);
    let t2 = app.get_query(&path, &alice, &[("as_of", &at2)]).await;
    assert_eq!(t2.body["name"], "After");
    // Between the two events, with a time-zone offset.
    let mid: DateTime<Utc> =
        at1.parse::<DateTime<Utc>>().unwrap() + chrono::Duration::microseconds(1);
    let mid = mid
        .with_timezone(&chrono::FixedOffset::east_opt(2 * 3600).unwrap())
        .to_rfc3339();
    let tm = app.get_query(&path, &alice, &[("as_of", &mid)]).await;
    tm.assert_status(200);
    assert_eq!(tm.body["name"], "Before", "{mid}");
    let now = Utc::now().to_rfc3339();
    assert_eq!(
        app.get_query(&path, &alice, &[("as_of", &now)]).await.body["name"],
        "After"
    );
    // Before the application existed.
    app.get_query(&path, &alice, &[("as_of", "2000-01-01T00:00:00Z")])
        .await
        .assert_problem(404, "application.not_found");

    let count = app.event_count().await;
    // No such version.
    for v in ["0", "3", "-1", "9223372036854775807"] {
        let r = app.get_query(&path, &alice, &[("version", v)]).await;
        assert_eq!(r.status, 404, "version {v}: {}", r.body);
        r.assert_problem(404, "application.version_not_found");
    }
    // Bad parameters.
    app.get_query(&path, &alice, &[("version", "1"), ("as_of", &at1)])
        .await
        .assert_problem(422, "validation.failed");
    for bad in [
        "yesterday",
        "2024-13-01T00:00:00Z",
        "2024-01-01",
        "1700000000",
    ] {
        let r = app.get_query(&path, &alice, &[("as_of", bad)]).await;
        assert_eq!(r.status, 422, "as_of {bad}: {}", r.body);
        r.assert_invalid(&[("as_of", "as_of.invalid")]);
    }
    let r = app.get_query(&path, &alice, &[("version", "two")]).await;
    r.assert_problem(422, "validation.failed");
    let r = app.get_query(&path, &alice, &[("verson", "1")]).await;
    r.assert_problem(422, "validation.failed");
    app.assert_unchanged(count, "reads").await;
    // Someone else's application stays hidden, at any version.
    let bob = app.token("bob", false);
    app.get_query(&path, &bob, &[("version", "1")])
        .await
        .assert_problem(404, "application.not_found");
    app.get_query(&path, &bob, &[("version", "9")])
        .await
        .assert_problem(404, "application.not_found");
    app.stop().await;
}

async fn time_travel_over_archive(app: TestApp) {
    // An administrator reads an archived application's past: at version 1 it was ACTIVE with
    // its primary owner.
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&alice, "Gone", None).await;
    let path = format!("applications/{id}");
    app.delete(&path, &alice).await.assert_status(204);
    let v1 = app.get_query(&path, &admin, &[("version", "1")]).await;
    v1.assert_status(200);
    assert_eq!(v1.body["status"], "ACTIVE");
    assert_eq!(v1.body["owner"]["id"], "alice");
    let v2 = app.get_query(&path, &admin, &[("version", "2")]).await;
    assert_eq!(v2.body["status"], "ARCHIVED");
    // The former owner cannot read the past of an application now hidden from her.
    app.get_query(&path, &alice, &[("version", "1")])
        .await
        .assert_problem(404, "application.not_found");
    app.stop().await;
}

/// An event stored in an older schema version is upcast on read. The application is written as a
/// deployment before `DcrRegistrationRequested` v2 stored it (its request in v1, `{provider_id}`
/// alone): its detail, its history and the list (the read model) all read it in the current
/// shape, and the stored row is left as it was.
async fn an_older_schema_version_is_upcast_on_read(app: TestApp) {
    app.enable_dcr().await;
    let alice = app.token("alice", false);
    let r = app
        .post(
            "applications",
            &alice,
            json!({"name": "Template", "type": "web", "redirect_uris": ["https://legacy.example/cb"]}),
        )
        .await;
    r.assert_status(202);
    let template = app
        .stream(&format!("application-{}", r.body["id"].as_str().unwrap()))
        .await;
    let legacy = uuid::Uuid::now_v7();
    let mut created = template[0].data.clone();
    created["id"] = json!(legacy);
    created["name"] = json!("Legacy");
    let event = |event_type: &str, schema_version: i32, data: serde_json::Value| {
        appreg_eventstore::NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            data,
            metadata: template[0].metadata.clone(),
            recorded_at: template[0].recorded_at,
        }
    };
    app.store
        .append(appreg_eventstore::AppendRequest {
            stream_id: format!("application-{legacy}"),
            stream_type: "application".into(),
            expected_version: 0,
            events: vec![
                event("ApplicationCreated", 1, created),
                event("DcrRegistrationRequested", 1, json!({"provider_id": null})),
            ],
            claims: vec![],
            releases: vec![],
        })
        .await
        .unwrap();

    let path = format!("applications/{legacy}");
    let got = app.get(&path, &alice).await;
    got.assert_status(200);
    assert_eq!(got.body["registration"]["state"], "REGISTERING");
    let history = app.get(&format!("{path}/history"), &alice).await;
    history.assert_status(200);
    assert_eq!(history.body["items"][1]["type"], "DcrRegistrationRequested");
    assert_eq!(
        history.body["items"][1]["data"],
        json!({"provider_id": null, "attempt": 1, "reason": "CREATED"})
    );
    let stored = app.stream(&format!("application-{legacy}")).await;
    assert_eq!(
        (stored[1].schema_version, stored[1].data.clone()),
        (1, json!({"provider_id": null})),
        "the stored event is never rewritten"
    );
    let mut listed = false;
    for _ in 0..100 {
        let list = app.get("applications", &alice).await;
        if list.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["id"] == json!(legacy) && a["registration"]["state"] == "REGISTERING")
        {
            listed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(listed, "the read model folded the v1 event");
    app.stop().await;
}

/// The versions of a history page's items, and its `next_after_version`.
fn page_of(r: &crate::helpers::Resp) -> (Vec<i64>, Option<i64>) {
    r.assert_status(200);
    let versions = r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("items: {}", r.body))
        .iter()
        .map(|i| i["version"].as_i64().unwrap())
        .collect();
    let next = &r.body["next_after_version"];
    assert!(
        next.is_null() || next.is_i64(),
        "next_after_version is a version or null: {}",
        r.body
    );
    (versions, next.as_i64())
}

/// Follows `next_after_version` from the start with `limit`; every page's versions, in order.
async fn walk(app: &TestApp, path: &str, token: &str, limit: &str) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut after = "0".to_string();
    loop {
        let r = app
            .get_query(path, token, &[("after_version", &after), ("limit", limit)])
            .await;
        let (versions, next) = page_of(&r);
        pages.push(versions);
        match next {
            Some(n) => {
                assert!(n > after.parse::<i64>().unwrap(), "pages move forward");
                after = n.to_string();
            }
            None => return pages,
        }
        assert!(pages.len() <= 1000, "paging loops");
    }
}

/// 250 events: the default page is 100, `limit` changes it, the last page says null, and a page
/// after the end is empty. Bad parameters are a 422 naming the field.
async fn history_is_paged(app: TestApp) {
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Long", None).await;
    let path = format!("applications/{id}");
    for i in 2..=250 {
        app.put(&path, &alice, json!({"description": format!("change {i}")}))
            .await
            .assert_status(200);
    }
    let history = format!("{path}/history");
    let count = app.event_count().await;
    let range = |from: i64, to: i64| (from..=to).collect::<Vec<i64>>();

    // The default page: 100 events; then on from its next_after_version.
    let first = app.get(&history, &alice).await;
    assert_eq!(page_of(&first), (range(1, 100), Some(100)));
    assert_eq!(first.body["items"][0]["type"], "ApplicationCreated");
    assert_eq!(first.body["items"][99]["type"], "ApplicationUpdated");
    assert_eq!(first.body["items"][99]["data"]["description"], "change 100");
    let q = |after: &'static str, limit: Option<&'static str>| {
        let mut q = vec![("after_version", after)];
        if let Some(l) = limit {
            q.push(("limit", l));
        }
        q
    };
    let second = app.get_query(&history, &alice, &q("100", None)).await;
    assert_eq!(page_of(&second), (range(101, 200), Some(200)));
    let last = app.get_query(&history, &alice, &q("200", None)).await;
    assert_eq!(page_of(&last), (range(201, 250), None), "the last page");

    // An explicit limit.
    for (after, limit, want) in [
        ("0", "1000", (range(1, 250), None)),
        ("0", "250", (range(1, 250), None)),
        ("0", "249", (range(1, 249), Some(249))),
        ("0", "1", (vec![1], Some(1))),
        ("249", "1", (vec![250], None)),
        ("248", "2", (range(249, 250), None)),
        ("10", "5", (range(11, 15), Some(15))),
    ] {
        let r = app
            .get_query(&history, &alice, &q(after, Some(limit)))
            .await;
        assert_eq!(page_of(&r), want, "after_version={after}&limit={limit}");
    }
    // Walking every page gives each event once, in order.
    let pages = walk(&app, &history, &alice, "7").await;
    assert_eq!(pages.len(), 36);
    assert!(pages.iter().all(|p| p.len() <= 7));
    assert_eq!(pages.concat(), range(1, 250));
    // After the end: empty, and nothing next.
    for after in ["250", "251", "100000", "9223372036854775807"] {
        let r = app.get_query(&history, &alice, &q(after, None)).await;
        assert_eq!(page_of(&r), (vec![], None), "after_version={after}");
        let r = app
            .get_query(&history, &alice, &q(after, Some("1000")))
            .await;
        assert_eq!(page_of(&r), (vec![], None), "after_version={after}");
    }

    // Bad input: 422 naming the field.
    for bad in ["0", "1001", "-1", "ten", "", "1.5", "99999999999999999999"] {
        let r = app.get_query(&history, &alice, &[("limit", bad)]).await;
        r.assert_invalid(&[("limit", "limit.invalid")]);
    }
    for bad in ["-1", "abc", "", "1.5", "99999999999999999999"] {
        let r = app
            .get_query(&history, &alice, &[("after_version", bad)])
            .await;
        r.assert_invalid(&[("after_version", "after_version.invalid")]);
    }
    app.get_query(&history, &alice, &[("after_version", "-5"), ("limit", "0")])
        .await
        .assert_invalid(&[
            ("after_version", "after_version.invalid"),
            ("limit", "limit.invalid"),
        ]);
    app.get_query(&history, &alice, &[("after", "5")])
        .await
        .assert_invalid(&[("query", "query.invalid")]);
    app.assert_unchanged(count, "history reads").await;
    // Someone else's application stays hidden, whatever the page.
    let bob = app.token("bob", false);
    app.get_query(&history, &bob, &q("100", Some("10")))
        .await
        .assert_problem(404, "application.not_found");
    app.stop().await;
}

/// The history is filtered like `GET /events`: a USER member does not read the notification
/// settings (other members' e-mail addresses) that the owner and an administrator read, and
/// paging stays correct around what is skipped.
async fn history_is_filtered_by_role(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&alice, "Shared", None).await;
    let path = format!("applications/{id}");
    app.post(
        &format!("{path}/members"),
        &alice,
        json!({"user": "bob", "role": "USER"}),
    )
    .await
    .assert_status(201);
    app.put(
        &format!("{path}/notifications"),
        &alice,
        json!({"hooks": ["SUBSCRIPTION_ACCEPTED"], "email": "alice@example.org"}),
    )
    .await
    .assert_status(200);
    app.put(&path, &alice, json!({"name": "Shared 2"}))
        .await
        .assert_status(200);
    // The same content is refused to bob on /notifications.
    app.get(&format!("{path}/notifications"), &bob)
        .await
        .assert_problem(403, "permission.denied");

    let history = format!("{path}/history");
    let types = |r: &crate::helpers::Resp| -> Vec<String> {
        r.assert_status(200);
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["type"].as_str().unwrap().to_string())
            .collect()
    };
    let all = [
        "ApplicationCreated",
        "MemberAdded",
        "NotificationSettingsUpdated",
        "ApplicationUpdated",
    ];
    for token in [&alice, &admin] {
        let r = app.get(&history, token).await;
        assert_eq!(types(&r), all);
        assert_eq!(r.body["items"][2]["data"]["email"], "alice@example.org");
        assert_eq!(r.body["next_after_version"], serde_json::Value::Null);
    }
    let r = app.get(&history, &bob).await;
    assert_eq!(
        types(&r),
        ["ApplicationCreated", "MemberAdded", "ApplicationUpdated"],
        "a USER member does not read notification settings"
    );
    assert!(
        !r.body.to_string().contains("alice@example.org"),
        "{}",
        r.body
    );
    // One event a page: the skipped one leaves an empty page, and paging goes on past it.
    assert_eq!(
        walk(&app, &history, &bob, "1").await,
        [vec![1], vec![2], vec![], vec![4]]
    );
    assert_eq!(
        walk(&app, &history, &alice, "1").await,
        [vec![1], vec![2], vec![3], vec![4]]
    );
    let r = app
        .get_query(&history, &bob, &[("after_version", "2"), ("limit", "1")])
        .await;
    assert_eq!(page_of(&r), (vec![], Some(3)));
    app.stop().await;
}

on_both!(
    history_is_paged,
    history_is_filtered_by_role,
    an_older_schema_version_is_upcast_on_read,
    history_with_correlation_ids,
    only_safe_request_ids_become_correlation_ids,
    state_at_a_version_or_time,
    time_travel_over_archive
);
