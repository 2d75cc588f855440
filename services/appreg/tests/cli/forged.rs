//! Forged messages on the event subjects, against the real read side (`appreg api`, `relay`,
//! `projector` on a fresh database and a private nats-server): the projector folds only what the
//! event store holds.

use super::projector::{assert_complete_and_equal_to_rebuild, caught_up, ReadSide, PREFIX, STREAM};
use appreg_eventstore::Database;
use appreg_test_support::nats::NatsServer;
use std::time::{Duration, Instant};

/// Someone who may publish on the event subjects sends a copy of a real `MemberAdded` envelope
/// that makes mallory an OWNER of alice's application, under a new event id: once with a
/// position beyond the log's head, once with the position of the real event. The projector
/// folds neither (it counts them, `appreg_projector_forged_messages_total`): mallory cannot see
/// the application, and the events published after them are projected as the store holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_envelopes_are_not_projected() {
    let nats = NatsServer::start();
    let mut side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let metrics_port = appreg_test_support::nats::free_port();
    side.kill_projector();
    let metrics_listen = format!("127.0.0.1:{metrics_port}");
    side.projector = Some(side.spawn(&["projector", "--metrics-listen", &metrics_listen]));
    let client = reqwest::Client::new();
    let alice = side.token("alice");
    let r = client
        .post(side.apps_url())
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "alice's", "type": "simple"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let app = format!("{}/{id}", side.apps_url());
    let r = client
        .post(format!("{app}/members"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"user": "bob"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    caught_up(&db, Duration::from_secs(30)).await;

    // The real MemberAdded, as the relay published it, copied with mallory as OWNER.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream(STREAM).await.unwrap();
    let real = stream
        .get_last_raw_message_by_subject(&format!("{PREFIX}.>"))
        .await
        .unwrap();
    let mut envelope: serde_json::Value = serde_json::from_slice(&real.payload).unwrap();
    assert_eq!(envelope["type"], "MemberAdded", "{envelope}");
    envelope["data"]["user"] = "mallory".into();
    envelope["data"]["role"] = "OWNER".into();
    let real_position = real.headers.get("Appreg-Position").unwrap().to_string();
    for position in [format!("{}.1", i64::MAX), real_position] {
        let forged_id = uuid::Uuid::now_v7();
        envelope["event_id"] = forged_id.to_string().into();
        envelope["version"] = 3.into();
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", forged_id.to_string().as_str());
        headers.insert("Appreg-Position", position.as_str());
        js.publish_with_headers(
            real.subject.to_string(),
            headers,
            serde_json::to_vec(&envelope).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // A real event after them.
    let r = client
        .put(&app)
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "alice's, renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    caught_up(&db, Duration::from_secs(30)).await;
    let pool = match &db {
        Database::Postgres(pool) => pool,
        Database::Sqlite(_) => unreachable!(),
    };
    let doc: String = sqlx::query_scalar("SELECT doc FROM rm_applications WHERE id = $1")
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(!doc.contains("mallory"), "{doc}");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["name"], "alice's, renamed", "{doc}");
    assert_eq!(doc["version"], 3, "{doc}");
    let r = client
        .get(&app)
        .bearer_auth(side.token("mallory"))
        .send()
        .await
        .unwrap();
    assert!(
        r.status() == 403 || r.status() == 404,
        "mallory is not a member: {}",
        r.status()
    );
    let r = client
        .get(side.apps_url())
        .bearer_auth(side.token("mallory"))
        .send()
        .await
        .unwrap();
    let listed = r.text().await.unwrap();
    assert!(!listed.contains(&id), "{listed}");
    assert_complete_and_equal_to_rebuild(&db, &[id]).await;
    let forged_counted = || async {
        let metrics = client
            .get(format!("http://{metrics_listen}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metrics
            .lines()
            .find(|l| l.starts_with("appreg_projector_forged_messages_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let started = Instant::now();
    while forged_counted().await < 2.0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the projector counted 2 forged messages"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    db.close().await;
}

/// A forged message may even be an exact copy of what the relay would publish for an event it
/// has not published yet (event ids and positions are visible to members, e.g. through SSE):
/// with the relay down, alice creates and renames an application and someone publishes a copy
/// of the rename alone. The projector folds the log up to that position, so the creation before
/// it is not skipped; once the relay is back, the read model equals a fresh rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_unpublished_event_skips_nothing() {
    let nats = NatsServer::start();
    let mut side = ReadSide::start(&nats.url()).await;
    let db = Database::connect(&side.db_url, 4).await.unwrap();
    let client = reqwest::Client::new();
    let alice = side.token("alice");
    let apps = side.apps_url();
    let create = |name: &'static str| {
        let (client, apps, alice) = (client.clone(), apps.clone(), alice.clone());
        async move {
            let r = client
                .post(&apps)
                .bearer_auth(&alice)
                .json(&serde_json::json!({"name": name, "type": "simple"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let first = create("published").await;
    caught_up(&db, Duration::from_secs(30)).await;

    side.relay = None; // killed: nothing more is published
    let second = create("not yet published").await;
    let r = client
        .put(format!("{apps}/{second}"))
        .bearer_auth(&alice)
        .json(&serde_json::json!({"name": "renamed, not yet published"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let store = db.event_store().await.unwrap();
    let rename = loop {
        let log = appreg_test_support::nats::all_events(store.as_ref()).await;
        let last = log.last().unwrap().clone();
        if last.event_type == "ApplicationUpdated" {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.publish_with_headers(
        appreg_worker::envelope::subject(PREFIX, &rename),
        appreg_worker::envelope::headers(&rename),
        appreg_worker::envelope::body(&rename).unwrap(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    caught_up(&db, Duration::from_secs(30)).await;
    let pool = match &db {
        Database::Postgres(pool) => pool,
        Database::Sqlite(_) => unreachable!(),
    };
    let doc: Option<String> = sqlx::query_scalar("SELECT doc FROM rm_applications WHERE id = $1")
        .bind(&second)
        .fetch_optional(pool)
        .await
        .unwrap();
    let doc: serde_json::Value =
        serde_json::from_str(&doc.expect("the creation before the copied event is projected"))
            .unwrap();
    assert_eq!(
        (doc["name"].as_str(), doc["version"].as_i64()),
        (Some("renamed, not yet published"), Some(2))
    );

    side.relay = Some(side.spawn(&["relay"]));
    let third = create("after the relay is back").await;
    caught_up(&db, Duration::from_secs(30)).await;
    assert_complete_and_equal_to_rebuild(&db, &[first, second, third]).await;
    db.close().await;
}
