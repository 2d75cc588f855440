//! Archive and restore, and the uniqueness of client_id among ACTIVE applications (concurrent
//! creates, archive frees it, restore and update re-check it).

use crate::helpers::TestApp;
use crate::on_both;
use serde_json::{json, Value};

fn ids(r: &crate::helpers::Resp) -> Vec<String> {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_string())
        .collect()
}

async fn archive_and_restore(app: TestApp) {
    let alice = app.token("alice", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&alice, "Old", Some("old-client")).await;
    let keep = app.create_simple(&alice, "Kept", None).await;
    let path = format!("applications/{id}");
    let mut count = app.event_count().await;

    // The primary owner archives: 204, with a consistency token.
    let r = app.delete(&path, &alice).await;
    r.assert_status(204);
    assert_eq!(r.body, Value::Null, "204 has no body");
    let token = r
        .header("x-consistency-token")
        .expect("a write answers with X-Consistency-Token");
    count = app.assert_appended(count, 1, "archive").await;

    // Hidden from her now: 404 and not in her list, even right after the write.
    app.get(&path, &alice)
        .await
        .assert_problem(404, "application.not_found");
    let list = app
        .send(
            app.client
                .get(app.url("applications"))
                .bearer_auth(&alice)
                .header("x-consistency-token", &token),
        )
        .await;
    list.assert_status(200);
    assert_eq!(ids(&list), [keep.as_str()]);
    assert_eq!(list.body["total"], 1);
    app.get(&format!("{path}/history"), &alice)
        .await
        .assert_problem(404, "application.not_found");
    // Archived applications are listed for administrators only.
    app.get_query("applications", &alice, &[("status", "ARCHIVED")])
        .await
        .assert_problem(403, "permission.admin_only");
    let archived = app
        .get_query("applications", &admin, &[("status", "ARCHIVED")])
        .await;
    archived.assert_status(200);
    assert_eq!(ids(&archived), [id.as_str()]);
    assert_eq!(archived.body["items"][0]["status"], "ARCHIVED");
    let active = app.get("applications", &admin).await;
    assert_eq!(
        ids(&active),
        [keep.as_str()],
        "the default list is of ACTIVE applications"
    );
    assert_eq!(
        ids(&app
            .get_query("applications", &admin, &[("status", "ACTIVE")])
            .await),
        [keep.as_str()]
    );
    app.get_query("applications", &admin, &[("status", "DELETED")])
        .await
        .assert_invalid(&[("status", "status.invalid")]);
    // The administrator still reads it: ARCHIVED, without a primary owner.
    let seen = app.get(&path, &admin).await;
    seen.assert_status(200);
    assert_eq!(seen.body["status"], "ARCHIVED");
    assert_eq!(seen.body["owner"], Value::Null);
    assert_eq!(seen.body["version"], 2);

    // Archive of an archived application: 404 for the former owner, 409 for an admin.
    app.delete(&path, &alice)
        .await
        .assert_problem(404, "application.not_found");
    let r = app.delete(&path, &admin).await;
    r.assert_problem(409, "application.archived");
    assert!(r.header("x-consistency-token").is_none());
    // Update of an archived application: the same.
    app.put(&path, &alice, json!({"name": "New"}))
        .await
        .assert_problem(404, "application.not_found");
    app.put(&path, &admin, json!({"name": "New"}))
        .await
        .assert_problem(409, "application.archived");
    app.put(&path, &admin, json!({}))
        .await
        .assert_problem(409, "application.archived");
    // Restore by a non-admin: archived applications are hidden from them.
    app.post(&format!("{path}/_restore"), &alice, json!({}))
        .await
        .assert_problem(404, "application.not_found");
    let bob = app.token("bob", false);
    app.post(&format!("{path}/_restore"), &bob, json!({}))
        .await
        .assert_problem(404, "application.not_found");
    app.assert_unchanged(count, "refused archive / update / restore")
        .await;

    // Restore by an administrator, who becomes primary owner.
    let r = app
        .post(&format!("{path}/_restore"), &admin, json!({}))
        .await;
    r.assert_status(200);
    assert!(r.header("x-consistency-token").is_some());
    assert_eq!(r.body["status"], "ACTIVE");
    assert_eq!(r.body["owner"]["id"], "root");
    assert_eq!(r.body["role"], "PRIMARY_OWNER");
    assert_eq!(r.body["client_id"], "old-client");
    assert_eq!(r.body["name"], "Old");
    assert_eq!(r.body["version"], 3);
    count = app.assert_appended(count, 1, "restore").await;
    // Restore needs no body.
    let got = app.get(&path, &admin).await;
    assert_eq!(got.body["role"], "PRIMARY_OWNER");
    // The former primary owner's link was dropped by the archive.
    app.get(&path, &alice)
        .await
        .assert_problem(404, "application.not_found");
    let admin_list = app.get("applications", &admin).await;
    assert_eq!(ids(&admin_list), [id.as_str(), keep.as_str()]);
    // The restoring administrator is a member now: listed for them even without the role.
    let root_as_user = app.token("root", false);
    let own = app.get("applications", &root_as_user).await;
    assert_eq!(ids(&own), [id.as_str()]);
    assert_eq!(own.body["items"][0]["role"], "PRIMARY_OWNER");
    app.put(&path, &root_as_user, json!({"description": "mine now"}))
        .await
        .assert_status(200);
    count += 1;
    assert_eq!(
        app.get_query("applications", &admin, &[("status", "ARCHIVED")])
            .await
            .body["total"],
        0
    );

    // Restore of an active application: 409, nothing appended.
    let r = app
        .post(&format!("{path}/_restore"), &admin, json!({}))
        .await;
    r.assert_problem(409, "application.not_archived");
    app.assert_unchanged(count, "restore of an active application")
        .await;

    let history = app.get(&format!("{path}/history"), &admin).await;
    let types: Vec<&str> = history.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "ApplicationCreated",
            "ApplicationArchived",
            "ApplicationRestored",
            "ApplicationUpdated"
        ]
    );
    assert_eq!(history.body["items"][1]["actor"], "alice");
    assert_eq!(history.body["items"][2]["actor"], "root");
    assert_eq!(history.body["items"][3]["actor"], "root");
    app.stop().await;
}

async fn concurrent_creates_claim_one_client_id(app: TestApp) {
    let alice = app.token("alice", false);
    let before = app.event_count().await;
    let creates = (0..32).map(|i| {
        let body =
            json!({"name": format!("racer {i}"), "type": "simple", "client_id": "contested"});
        app.post("applications", &alice, body)
    });
    let answers = futures::future::join_all(creates).await;
    let won: Vec<_> = answers.iter().filter(|r| r.status == 201).collect();
    let lost: Vec<_> = answers.iter().filter(|r| r.status == 409).collect();
    assert_eq!(
        won.len(),
        1,
        "exactly one create wins: {:?}",
        answers
            .iter()
            .map(|r| (r.status, r.code()))
            .collect::<Vec<_>>()
    );
    assert_eq!(lost.len(), 31, "every other create conflicts");
    for r in &lost {
        r.assert_problem(409, "application.client_id.exists");
        assert!(r.detail().contains("contested"), "{}", r.body);
    }
    let first = won[0].body["id"].as_str().unwrap().to_string();
    let mut count = app.assert_appended(before, 1, "32 racing creates").await;
    let list = app.get("applications", &alice).await;
    assert_eq!(list.body["total"], 1);

    // Still taken, sequentially too.
    app.post(
        "applications",
        &alice,
        json!({"name": "late", "type": "simple", "client_id": "contested"}),
    )
    .await
    .assert_problem(409, "application.client_id.exists");
    // A client_id is unique per environment whoever asks: another user, an admin.
    let admin = app.token("root", true);
    app.post(
        "applications",
        &admin,
        json!({"name": "admin's", "type": "simple", "client_id": "contested"}),
    )
    .await
    .assert_problem(409, "application.client_id.exists");
    app.assert_unchanged(count, "late creates").await;

    // Archive frees the client_id: another application takes it.
    app.delete(&format!("applications/{first}"), &alice)
        .await
        .assert_status(204);
    let bob = app.token("bob", false);
    let second = app.create_simple(&bob, "second", Some("contested")).await;
    count = app.assert_appended(count, 2, "archive + create").await;

    // Restoring the first application now conflicts, and appends nothing.
    let r = app
        .post(&format!("applications/{first}/_restore"), &admin, json!({}))
        .await;
    r.assert_problem(409, "application.client_id.exists");
    app.assert_unchanged(count, "conflicting restore").await;
    let still = app.get(&format!("applications/{first}"), &admin).await;
    assert_eq!(still.body["status"], "ARCHIVED");

    // Once the second lets it go (update to another client_id), the restore succeeds.
    app.put(
        &format!("applications/{second}"),
        &bob,
        json!({"client_id": "second-own"}),
    )
    .await
    .assert_status(200);
    let r = app
        .post(&format!("applications/{first}/_restore"), &admin, json!({}))
        .await;
    r.assert_status(200);
    assert_eq!(r.body["client_id"], "contested");
    // The restore re-claimed it.
    let count = app.event_count().await;
    app.post(
        "applications",
        &bob,
        json!({"name": "third", "type": "simple", "client_id": "contested"}),
    )
    .await
    .assert_problem(409, "application.client_id.exists");
    app.put(
        &format!("applications/{second}"),
        &bob,
        json!({"client_id": "contested"}),
    )
    .await
    .assert_problem(409, "application.client_id.exists");
    app.assert_unchanged(count, "claims on a restored client_id")
        .await;
    app.stop().await;
}

async fn update_to_a_taken_client_id(app: TestApp) {
    let alice = app.token("alice", false);
    let a = app.create_simple(&alice, "A", Some("a-client")).await;
    let b = app.create_simple(&alice, "B", Some("b-client")).await;
    let c = app.create_simple(&alice, "C", None).await;
    let count = app.event_count().await;

    let r = app
        .put(
            &format!("applications/{b}"),
            &alice,
            json!({"client_id": "a-client", "name": "B2"}),
        )
        .await;
    r.assert_problem(409, "application.client_id.exists");
    let r = app
        .put(
            &format!("applications/{c}"),
            &alice,
            json!({"client_id": "a-client"}),
        )
        .await;
    r.assert_problem(409, "application.client_id.exists");
    app.assert_unchanged(count, "updates to a taken client_id")
        .await;
    let got = app.get(&format!("applications/{b}"), &alice).await;
    assert_eq!(got.body["client_id"], "b-client");
    assert_eq!(got.body["name"], "B", "a refused update changes nothing");

    // Swapping through a free value works, and frees the old one.
    app.put(
        &format!("applications/{a}"),
        &alice,
        json!({"client_id": "a-client-2"}),
    )
    .await
    .assert_status(200);
    app.put(
        &format!("applications/{b}"),
        &alice,
        json!({"client_id": "a-client"}),
    )
    .await
    .assert_status(200);
    app.put(
        &format!("applications/{c}"),
        &alice,
        json!({"client_id": "b-client"}),
    )
    .await
    .assert_status(200);
    app.assert_appended(count, 3, "three client_id changes")
        .await;

    // An archived application's client_id is free; an archived application keeps its value
    // but holds nothing.
    app.delete(&format!("applications/{c}"), &alice)
        .await
        .assert_status(204);
    app.create_simple(&alice, "D", Some("b-client")).await;
    app.stop().await;
}

async fn concurrent_archive_and_update(app: TestApp) {
    // Racing commands on one application: each is decided on the latest version (retry on a
    // version conflict), so the log never holds an update after the archive. Five commands and
    // five tries each: a command loses at most once per other command, so none runs out.
    let alice = app.token("alice", false);
    let id = app.create_simple(&alice, "Racy", None).await;
    let path = format!("applications/{id}");
    let updates = (0..4).map(|i| app.put(&path, &alice, json!({"description": format!("v{i}")})));
    let (answers, archived) = tokio::join!(
        futures::future::join_all(updates),
        app.delete(&path, &alice)
    );
    archived.assert_status(204);
    for r in &answers {
        assert!(
            r.status == 200 || r.status == 404,
            "update: {} {}",
            r.status,
            r.body
        );
    }
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let events = app.stream(&format!("application-{id}")).await;
    assert_eq!(events.len(), 2 + ok, "one event per successful command");
    assert_eq!(events.last().unwrap().event_type, "ApplicationArchived");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as i64 + 1);
    }
    app.stop().await;
}

on_both!(
    archive_and_restore,
    concurrent_creates_claim_one_client_id,
    update_to_a_taken_client_id,
    concurrent_archive_and_update,
);
