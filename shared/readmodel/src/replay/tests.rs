use crate::{checksum, parked, ReadModel, RetryPolicy};
use appreg_eventstore::{AppendRequest, Database, NewEvent};
use serde_json::json;

fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: event_type.into(),
        schema_version: 1,
        data,
        metadata: json!({"environment": "DEFAULT", "actor": "alice"}),
        recorded_at: chrono::Utc::now(),
    }
}

fn created(id: uuid::Uuid) -> NewEvent {
    event(
        "ApplicationCreated",
        json!({"id": id.to_string(), "environment": "DEFAULT", "name": format!("app {id}"),
               "description": "with a \\ backslash,\ta tab and a\nnewline", "domain": null,
               "type": "simple", "client_id": null, "oauth": null, "provider_id": null,
               "primary_owner": "alice"}),
    )
}

fn updated(name: &str) -> NewEvent {
    event(
        "ApplicationUpdated",
        json!({"name": name, "description": null, "domain": null, "client_id": null,
               "oauth": null, "changed": ["name"]}),
    )
}

/// The PostgreSQL replay (with a cache small enough to forget and read back applications)
/// gives the incremental projector's rows and parks the same events.
#[tokio::test]
async fn replay_equals_incremental_projection() {
    let url = appreg_test_support::postgres::fresh_postgres_url().await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    crate::migrate(&db).await.unwrap();
    let store = db.event_store().await.unwrap();
    let ids: Vec<uuid::Uuid> = (0..30).map(|_| uuid::Uuid::now_v7()).collect();
    let append = |id: uuid::Uuid, version: i64, events: Vec<NewEvent>| AppendRequest {
        stream_id: format!("application-{id}"),
        stream_type: "application".into(),
        expected_version: version,
        events,
        claims: vec![],
        releases: vec![],
    };
    for id in &ids {
        store
            .append(append(*id, 0, vec![created(*id)]))
            .await
            .unwrap();
    }
    for round in 0..3i64 {
        for (i, id) in ids.iter().enumerate() {
            let mut e = updated(&format!("app {i} round {round}"));
            if i == 7 && round == 1 {
                e.data = json!({"name": "", "changed": "not a list"}); // poison
            }
            let member = event(
                "MemberAdded",
                json!({"user": format!("m{round}"), "role": "USER"}),
            );
            store
                .append(append(*id, 1 + 2 * round, vec![e, member]))
                .await
                .unwrap();
        }
    }
    let user = AppendRequest {
        stream_id: "user-DEFAULT/alice".into(),
        stream_type: "user".into(),
        expected_version: 0,
        events: vec![event(
            "UserFirstSeen",
            json!({"user": "alice", "name": "Alice", "email": null, "admin": false,
                   "default_application": null}),
        )],
        claims: vec![],
        releases: vec![],
    };
    let last = store.append(user).await.unwrap().position;
    // The horizon is cluster-wide (another test's transaction may hold it back a moment):
    // every event must be visible before the log is read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while store.head().await.unwrap() < last {
        assert!(
            std::time::Instant::now() < deadline,
            "the log never reached {last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let schema = || async {
        let Database::Postgres(pool) = &db else {
            unreachable!()
        };
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT indexname::text, indexdef FROM pg_indexes WHERE tablename LIKE 'rm\\_%' \
             UNION ALL SELECT conname::text, contype::text || ' ' || pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE conrelid::regclass::text LIKE 'rm\\_%' \
             UNION ALL SELECT attrelid::regclass::text || '.' || attname, \
             format_type(atttypid, atttypmod) || ' ' || attnotnull FROM pg_attribute \
             WHERE attrelid::regclass::text LIKE 'rm\\_%' AND attnum > 0 AND NOT attisdropped \
             ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        rows
    };
    let schema_before = schema().await;
    assert!(schema_before
        .iter()
        .any(|(name, _)| name == "rm_applications_pkey"));
    let read = ReadModel::new(db.clone())
        .await
        .unwrap()
        .with_policy(RetryPolicy::REPLAY);
    loop {
        let batch = store.read_log(read.position(), 7).await.unwrap();
        if batch.is_empty() {
            break;
        }
        read.apply(&batch).await.unwrap();
    }
    let incremental = checksum(&db).await.unwrap();
    let key = |p: &crate::ParkedEvent| (p.event_id.clone(), p.reason.clone(), p.attempts);
    let parked_before: Vec<_> = parked(&db, 100).await.unwrap().iter().map(key).collect();
    assert_eq!(
        parked_before.len(),
        4,
        "the poison event and the 3 behind it"
    );
    std::env::set_var("APPREG_REBUILD_CACHE", "10");
    let summary = crate::rebuild(&db, |_| {}).await.unwrap();
    std::env::remove_var("APPREG_REBUILD_CACHE");
    assert_eq!(summary.applications, 30);
    assert_eq!(checksum(&db).await.unwrap(), incremental);
    let parked_after: Vec<_> = parked(&db, 100).await.unwrap().iter().map(key).collect();
    assert_eq!(parked_after, parked_before);
    assert_eq!(
        schema().await,
        schema_before,
        "the same tables, keys and indexes"
    );

    // Without forgetting applications: the keys are added once the rows are in.
    crate::rebuild(&db, |_| {}).await.unwrap();
    assert_eq!(checksum(&db).await.unwrap(), incremental);
    let parked_after: Vec<_> = parked(&db, 100).await.unwrap().iter().map(key).collect();
    assert_eq!(parked_after, parked_before);
    assert_eq!(
        schema().await,
        schema_before,
        "the same tables, keys and indexes"
    );

    // The projector continues on the rebuilt tables (its upserts need their keys).
    let done = store
        .append(append(ids[0], 7, vec![updated("after the rebuild")]))
        .await
        .unwrap();
    while store.head().await.unwrap() < done.position {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let read = ReadModel::new(db.clone()).await.unwrap();
    let batch = store.read_log(read.position(), 100).await.unwrap();
    assert_eq!(batch.len(), 1);
    read.apply(&batch).await.unwrap();
    let app = read
        .get(appreg_domain::ApplicationId(ids[0]))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(app.name.as_str(), "after the rebuild");
}
