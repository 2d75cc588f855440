//! `readmodel::rebuild`: replaying the whole log into shadow tables and swapping them in gives
//! the same read model, row for row, and the api keeps answering throughout.

use crate::helpers::TestApp;
use crate::on_both;
use appreg_eventstore::{Database, LogPosition};
use serde_json::json;
use std::time::Duration;

/// Every row of the read model tables, ordered, with the live checkpoint.
async fn dump(db: &Database) -> Vec<String> {
    macro_rules! rows {
        ($pool:expr) => {{
            let mut out = Vec::new();
            let apps: Vec<(String, String, String, String, String, i32)> = sqlx::query_as(
                "SELECT id, environment, status, created_at, doc, pending_subscriptions \
                 FROM rm_applications ORDER BY id",
            )
            .fetch_all($pool)
            .await
            .unwrap();
            out.extend(apps.iter().map(|r| format!("app {r:?}")));
            let members: Vec<(String, String, String, String)> = sqlx::query_as(
                "SELECT application_id, user_id, environment, role FROM rm_application_members \
                 ORDER BY application_id, user_id",
            )
            .fetch_all($pool)
            .await
            .unwrap();
            out.extend(members.iter().map(|r| format!("member {r:?}")));
            let users: Vec<(String, String, Option<String>, Option<String>, String)> =
                sqlx::query_as(
                    "SELECT environment, user_id, name, email, first_seen FROM rm_users \
                     ORDER BY environment, user_id",
                )
                .fetch_all($pool)
                .await
                .unwrap();
            out.extend(users.iter().map(|r| format!("user {r:?}")));
            let envs: Vec<(String, String, String)> =
                sqlx::query_as("SELECT id, name, created_at FROM rm_environments ORDER BY id")
                    .fetch_all($pool)
                    .await
                    .unwrap();
            out.extend(envs.iter().map(|r| format!("env {r:?}")));
            let checkpoints: Vec<(String, i64, i64)> =
                sqlx::query_as("SELECT name, tx, pos FROM rm_checkpoints ORDER BY name")
                    .fetch_all($pool)
                    .await
                    .unwrap();
            out.extend(checkpoints.iter().map(|r| format!("checkpoint {r:?}")));
            out
        }};
    }
    match db {
        Database::Postgres(pool) => rows!(pool),
        Database::Sqlite(pool) => rows!(pool),
    }
}

async fn live_checkpoint(db: &Database) -> LogPosition {
    let sql = "SELECT tx, pos FROM rm_checkpoints WHERE name = 'applications'";
    let (tx, pos): (i64, i64) = match db {
        Database::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await,
        Database::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await,
    }
    .unwrap();
    LogPosition { tx, pos }
}

/// Waits until the live read model includes every committed event.
async fn settle(app: &TestApp) {
    let target = app.store.last_committed().await.unwrap();
    for _ in 0..400 {
        if live_checkpoint(&app.db).await >= target {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the read model did not reach {target}");
}

/// The users' lists, then the administrator's (`admin`), active and archived.
async fn lists(app: &TestApp, users: &[&str], admin: &str) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let requests = users
        .iter()
        .map(|t| (*t, "ACTIVE"))
        .chain([(admin, "ACTIVE"), (admin, "ARCHIVED")]);
    for (token, status) in requests {
        {
            let r = app
                .get_query(
                    "applications",
                    token,
                    &[("status", status), ("size", "100")],
                )
                .await;
            r.assert_status(200);
            out.push(r.body);
        }
    }
    out
}

async fn a_rebuild_gives_the_same_read_model(app: TestApp) {
    let alice = app.token("alice", false);
    let bob = app.token("bob", false);
    let admin = app.token("root", true);
    let mut ids = Vec::new();
    for i in 0..12usize {
        let owner = if i.is_multiple_of(3) { &bob } else { &alice };
        ids.push(
            app.create_simple(owner, &format!("rebuilt {i}"), Some(&format!("rb-{i}")))
                .await,
        );
    }
    let owner = |i: usize| if i.is_multiple_of(3) { &bob } else { &alice };
    for (i, id) in ids.iter().enumerate().filter(|(i, _)| !i.is_multiple_of(3)) {
        let other = if i.is_multiple_of(2) { "carol" } else { "bob" };
        app.post(
            &format!("applications/{id}/members"),
            owner(i),
            json!({"user": other, "role": "USER"}),
        )
        .await
        .assert_status(201);
    }
    for (i, id) in ids.iter().enumerate().skip(1).step_by(4) {
        app.delete(&format!("applications/{id}"), owner(i))
            .await
            .assert_status(204);
    }
    app.put(
        &format!("applications/{}", ids[2]),
        &alice,
        json!({"name": "renamed before the rebuild"}),
    )
    .await
    .assert_status(200);
    // Subscriptions: two pending (the queue's column), one of them accepted afterwards.
    let api = app
        .post(
            "apis",
            &admin,
            json!({"name": "Rebuilt API", "description": "rebuilt"}),
        )
        .await;
    api.assert_status(201);
    let plan = app
        .post(
            &format!("apis/{}/plans", api.body["id"].as_str().unwrap()),
            &admin,
            json!({"name": "manual", "security": "API_KEY", "validation": "MANUAL"}),
        )
        .await;
    plan.assert_status(201);
    let mut subscriptions = Vec::new();
    for id in [&ids[3], &ids[6]] {
        let r = app
            .post(
                &format!("applications/{id}/subscriptions"),
                &bob,
                json!({"plan_id": plan.body["id"]}),
            )
            .await;
        r.assert_status(201);
        subscriptions.push(r.body["id"].as_str().unwrap().to_string());
    }
    app.post(
        &format!("subscriptions/{}/_accept", subscriptions[0]),
        &admin,
        json!({}),
    )
    .await
    .assert_status(200);
    settle(&app).await;
    let queue = app
        .get_query("subscriptions", &admin, &[("status", "PENDING")])
        .await;
    assert_eq!(queue.body["total"], 1, "{:?}", queue.body);
    let carol = app.token("carol", false);
    let tokens = [alice.as_str(), bob.as_str(), carol.as_str()];
    // Every reader's first request records a `UserFirstSeen`: make them before the snapshot.
    let listed = lists(&app, &tokens, &admin).await;
    settle(&app).await;
    let before = dump(&app.db).await;
    assert!(before.len() > 20, "{before:?}");

    let mut calls = Vec::new();
    let summary = appreg_api::readmodel::rebuild(&app.db, |p| calls.push((p.done, p.total)))
        .await
        .unwrap();
    assert_eq!(summary.applications, 12);
    assert_eq!(
        summary.position,
        live_checkpoint(&app.db).await,
        "the live checkpoint is the rebuild's"
    );
    let (done, total) = *calls.last().unwrap();
    assert_eq!(done, total);
    assert_eq!(done, summary.replayed + summary.caught_up);
    assert_eq!(calls[0].0, 0, "progress starts at zero");

    assert_eq!(dump(&app.db).await, before, "the same rows after a rebuild");
    assert_eq!(
        lists(&app, &tokens, &admin).await,
        listed,
        "the same list responses"
    );

    // Twice in a row (the shadow names are free again), and the projector still follows.
    appreg_api::readmodel::rebuild(&app.db, |_| {})
        .await
        .unwrap();
    assert_eq!(dump(&app.db).await, before);
    let later = app.create_simple(&alice, "after the rebuild", None).await;
    settle(&app).await;
    let r = app.get(&format!("applications/{later}"), &alice).await;
    r.assert_status(200);
    let mine = app
        .get_query("applications", &alice, &[("size", "100")])
        .await;
    assert_eq!(
        mine.body["total"].as_i64().unwrap(),
        listed[0]["total"].as_i64().unwrap() + 1
    );
    app.stop().await;
}

on_both!(a_rebuild_gives_the_same_read_model);

/// List requests keep answering, complete, while ~2,000 events are replayed and swapped in,
/// and creates made during the rebuild are in the model afterwards.
async fn the_api_answers_during_a_rebuild(app: TestApp) {
    let alice = app.token("alice", false);
    for round in 0..20 {
        let creates = (0..100).map(|i| {
            app.post(
                "applications",
                &alice,
                json!({"name": format!("load {round}-{i}"), "type": "simple"}),
            )
        });
        for r in futures::future::join_all(creates).await {
            r.assert_status(201);
        }
    }
    settle(&app).await;
    let done = tokio_util::sync::CancellationToken::new();
    let reader = {
        let done = done.clone();
        let client = app.client.clone();
        let url = app.url("applications?size=50");
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            let mut last_total = 0;
            while !done.is_cancelled() {
                let r = client.get(&url).bearer_auth(&alice).send().await.unwrap();
                assert_eq!(r.status(), 200, "a list during the rebuild");
                let body: serde_json::Value = r.json().await.unwrap();
                let total = body["total"].as_i64().unwrap();
                assert!(total >= 2000 && total >= last_total, "total {total}");
                assert_eq!(body["items"].as_array().unwrap().len(), 50);
                last_total = total;
                answered += 1;
            }
            answered
        })
    };
    let writer = {
        let done = done.clone();
        let client = app.client.clone();
        let url = app.url("applications");
        let alice = alice.clone();
        tokio::spawn(async move {
            let mut created = 0;
            while !done.is_cancelled() && created < 200 {
                let r = client
                    .post(&url)
                    .bearer_auth(&alice)
                    .json(&json!({"name": format!("during {created}"), "type": "simple"}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                created += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            created
        })
    };
    let started = std::time::Instant::now();
    let summary = appreg_api::readmodel::rebuild(&app.db, |_| {})
        .await
        .unwrap();
    let elapsed = started.elapsed();
    done.cancel();
    let answered = reader.await.unwrap();
    let created = writer.await.unwrap();
    eprintln!(
        "rebuild of {} events in {elapsed:?} ({:.0} events/s), {} caught up in the swap ({:?}); \
         {answered} lists and {created} creates meanwhile",
        summary.replayed + summary.caught_up,
        (summary.replayed + summary.caught_up) as f64 / elapsed.as_secs_f64(),
        summary.caught_up,
        summary.swap
    );
    assert!(summary.replayed >= 2000);
    assert!(answered > 0);
    settle(&app).await;
    let all = app
        .get_query("applications", &alice, &[("size", "10")])
        .await;
    assert_eq!(all.body["total"].as_i64().unwrap(), 2000 + created);
    // The swapped-in model equals a second, quiet rebuild.
    let before = dump(&app.db).await;
    appreg_api::readmodel::rebuild(&app.db, |_| {})
        .await
        .unwrap();
    assert_eq!(dump(&app.db).await, before);
    app.stop().await;
}

on_both!(the_api_answers_during_a_rebuild);
