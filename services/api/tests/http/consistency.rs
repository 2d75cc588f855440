//! Two api instances on one PostgreSQL database, each with its own aggregate cache: a caller
//! never reads, nor is refused on, anything older than what it wrote through the other.

use crate::helpers::*;
use serde_json::json;

#[tokio::test]
async fn read_your_writes_across_two_api_instances() {
    let a = spawn(Backend::Postgres).await;
    let b = spawn_peer(&a, |c| {
        c.api.read_models = appreg_config::ReadModels::External
    })
    .await;
    let alice = a.token("alice", false);
    let bob = a.token("bob", false);
    let id = a.create_simple_in("DEFAULT", &alice, "Shared").await;
    let path = format!("/v1/environments/DEFAULT/applications/{id}");

    // `b` caches the application at version 1.
    b.get(&path, &alice).await.assert_status(200);
    for i in 0..30 {
        let written = a
            .put(
                &path,
                &alice,
                json!({"description": format!("written on a, {i}")}),
            )
            .await;
        written.assert_status(200);
        let version = written.body["version"].as_i64().unwrap();
        // Read at once on `b`, without the consistency token: the write is there.
        let read = b.get(&path, &alice).await;
        read.assert_status(200);
        assert_eq!(
            read.body["version"].as_i64(),
            Some(version),
            "{}",
            read.body
        );
        assert_eq!(read.body["description"], format!("written on a, {i}"));
        // And the other way round.
        let written = b
            .put(
                &path,
                &alice,
                json!({"description": format!("written on b, {i}")}),
            )
            .await;
        written.assert_status(200);
        assert_eq!(written.body["version"].as_i64(), Some(version + 1));
        let read = a.get(&path, &alice).await;
        assert_eq!(read.body["version"].as_i64(), Some(version + 1));
        assert_eq!(read.body["description"], format!("written on b, {i}"));
    }

    // bob becomes an owner through `a`; `b`'s cache (from before) must not refuse him.
    a.post(
        &format!("{path}/members"),
        &alice,
        json!({"user": "bob", "role": "OWNER"}),
    )
    .await
    .assert_status(201);
    let by_bob = b
        .put(&path, &bob, json!({"description": "bob was here"}))
        .await;
    by_bob.assert_status(200);
    let members = b.get(&format!("{path}/members"), &bob).await;
    members.assert_status(200);
    assert!(
        members.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "bob" && m["role"] == "OWNER"),
        "{}",
        members.body
    );
    // bob is removed through `b`; `a` refuses him at once.
    b.delete(&format!("{path}/members/bob"), &alice)
        .await
        .assert_status(204);
    a.put(&path, &bob, json!({"description": "bob again"}))
        .await
        .assert_status(404);
    // The stream has every write once, in order.
    let uuid = uuid::Uuid::parse_str(&id).unwrap();
    let events = a
        .store
        .read_stream(&appreg_domain::ApplicationId(uuid).stream_id(), 0, 1000)
        .await
        .unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        (1..=(1 + 60 + 1 + 1 + 1)).collect::<Vec<_>>()
    );
}
