//! The command path against the real event stores (PostgreSQL and SQLite): snapshots of
//! another shape, a stale cache, and group commit under conflicting claims.

use appreg_commands::{
    Aggregate, ApplicationState, CommandError, CommandSettings, Commands, Start,
};
use appreg_domain::application::{
    Application, CreateApplication, Patch, Policy, UpdateApplication,
};
use appreg_domain::{
    Actor, ApplicationId, ApplicationName, ApplicationType, BoundedText, ClientId, DomainError,
    EnvironmentId, Operation, Permission, Role, UserId,
};
use appreg_eventstore::{Database, EventStore, Snapshot};
use appreg_test_support::postgres::{fresh_postgres_url, fresh_sqlite_url, SqliteFile};
use std::collections::HashMap;
use std::sync::Arc;

struct Backend {
    store: Arc<dyn EventStore>,
    _file: Option<SqliteFile>,
}

async fn postgres() -> Backend {
    let db = Database::connect(&fresh_postgres_url().await, 32)
        .await
        .unwrap();
    db.migrate().await.unwrap();
    Backend {
        store: db.event_store().await.unwrap(),
        _file: None,
    }
}

async fn sqlite() -> Backend {
    let (file, url) = fresh_sqlite_url();
    let db = Database::connect(&url, 8).await.unwrap();
    db.migrate().await.unwrap();
    Backend {
        store: db.event_store().await.unwrap(),
        _file: Some(file),
    }
}

fn settings(group_commit_writers: usize) -> CommandSettings {
    CommandSettings {
        retries: 50,
        cache_mib: 16,
        snapshot_every: 100,
        group_commit_writers,
        max_batch: 64,
    }
}

fn user(u: &str) -> UserId {
    UserId::parse(u).unwrap()
}

fn meta() -> serde_json::Value {
    serde_json::json!({"environment": "DEFAULT", "actor": "test"})
}

fn create(id: ApplicationId, client_id: Option<&str>) -> CreateApplication {
    CreateApplication {
        id,
        environment: EnvironmentId::parse("DEFAULT").unwrap(),
        name: ApplicationName::parse("Weather").unwrap(),
        description: None,
        domain: None,
        app_type: ApplicationType::Simple,
        client_id: client_id.map(|c| ClientId::parse(c).unwrap()),
        redirect_uris: vec![],
        grant_types: vec![],
        client_uri: None,
        logo_uri: None,
        provider_id: None,
        owner: user("alice"),
    }
}

fn describe(text: &str) -> UpdateApplication {
    UpdateApplication {
        description: Patch::Set(BoundedText::parse(text, 4000).unwrap()),
        ..Default::default()
    }
}

async fn create_app(
    c: &Commands,
    client_id: Option<&str>,
) -> Result<ApplicationId, CommandError<DomainError>> {
    let id = ApplicationId(uuid::Uuid::now_v7());
    c.execute::<ApplicationState, DomainError, _>(&id.stream_id(), Start::New, &meta(), |_| {
        Application::create(create(id, client_id), &Policy::default())
    })
    .await?;
    Ok(id)
}

async fn update(
    c: &Commands,
    id: ApplicationId,
    text: &str,
) -> Result<i64, CommandError<DomainError>> {
    let executed = c
        .execute::<ApplicationState, DomainError, _>(
            &id.stream_id(),
            Start::Current,
            &meta(),
            |s| {
                s.0.as_ref()
                    .ok_or(DomainError::AdminOnly)?
                    .update(describe(text), &Policy::default())
            },
        )
        .await?;
    Ok(executed.version)
}

fn description(state: &ApplicationState) -> String {
    state
        .0
        .as_ref()
        .unwrap()
        .description
        .as_ref()
        .unwrap()
        .as_str()
        .to_string()
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod pg { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(super::postgres().await).await } )* }
        mod sqlite { $( #[tokio::test(flavor = "multi_thread", worker_threads = 4)] async fn $name() { super::$name(super::sqlite().await).await } )* }
    };
}

on_both!(
    snapshots_of_another_shape_or_undecodable_are_ignored,
    a_cold_load_reads_the_snapshot_and_the_tail,
    a_stale_cache_never_decides_alone,
    group_commit_with_conflicting_claims_loses_and_doubles_nothing,
    concurrent_writers_on_one_stream_lose_no_update,
    grouped_updates_without_claims_lose_and_double_nothing,
);

async fn snapshots_of_another_shape_or_undecodable_are_ignored(b: Backend) {
    let c = Commands::new(b.store.clone(), settings(0));
    let id = create_app(&c, None).await.unwrap();
    for i in 0..5 {
        update(&c, id, &format!("v{i}")).await.unwrap();
    }
    let stream = id.stream_id();
    let truth = c.load::<ApplicationState>(&stream).await.unwrap();
    assert_eq!((truth.version, description(&truth.state)), (6, "v4".into()));

    // A snapshot of an older shape, at the stream's version, holding another state.
    let mut other = ApplicationState::clone(&truth.state);
    other.0.as_mut().unwrap().description = Some(BoundedText::parse("FROM-SNAPSHOT", 100).unwrap());
    let bytes = serde_json::to_vec(&other).unwrap();
    b.store
        .write_snapshot(&Snapshot {
            stream_id: stream.clone(),
            schema_version: ApplicationState::SNAPSHOT_SCHEMA - 1,
            version: 6,
            data: bytes.clone(),
        })
        .await
        .unwrap();
    let cold = Commands::new(b.store.clone(), settings(0));
    let loaded = cold.load::<ApplicationState>(&stream).await.unwrap();
    assert_eq!(
        (loaded.version, description(&loaded.state)),
        (6, "v4".into()),
        "older shape ignored"
    );

    // The current shape but bytes that do not decode (a field of a future shape missing…).
    b.store
        .write_snapshot(&Snapshot {
            stream_id: stream.clone(),
            schema_version: ApplicationState::SNAPSHOT_SCHEMA,
            version: 6,
            data: br#"{"id": 42}"#.to_vec(),
        })
        .await
        .unwrap();
    let cold = Commands::new(b.store.clone(), settings(0));
    let loaded = cold.load::<ApplicationState>(&stream).await.unwrap();
    assert_eq!(
        (loaded.version, description(&loaded.state)),
        (6, "v4".into()),
        "undecodable ignored"
    );
    // And a command decided on it appends at the right version.
    assert_eq!(update(&cold, id, "v5").await.unwrap(), 7);

    // A snapshot of the current shape is used (what it holds is what a cold load starts from).
    b.store
        .write_snapshot(&Snapshot {
            stream_id: stream.clone(),
            schema_version: ApplicationState::SNAPSHOT_SCHEMA,
            version: 7,
            data: bytes,
        })
        .await
        .unwrap();
    let cold = Commands::new(b.store.clone(), settings(0));
    let loaded = cold.load::<ApplicationState>(&stream).await.unwrap();
    assert_eq!(
        (loaded.version, description(&loaded.state)),
        (7, "FROM-SNAPSHOT".into())
    );
}

async fn a_cold_load_reads_the_snapshot_and_the_tail(b: Backend) {
    let c = Commands::new(b.store.clone(), settings(4));
    let id = create_app(&c, None).await.unwrap();
    for i in 0..249 {
        update(&c, id, &format!("v{i}")).await.unwrap();
    }
    // Snapshots are written in the background after versions 100 and 200.
    let stream = id.stream_id();
    let mut snapshot = None;
    for _ in 0..100 {
        snapshot = b.store.read_snapshot(&stream).await.unwrap();
        if snapshot.as_ref().is_some_and(|s| s.version == 200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let snapshot = snapshot.expect("a snapshot");
    assert_eq!(snapshot.version, 200);
    assert_eq!(snapshot.schema_version, ApplicationState::SNAPSHOT_SCHEMA);
    let at_200: ApplicationState = serde_json::from_slice(&snapshot.data).unwrap();
    assert_eq!(description(&at_200), "v198");
    let cold = Commands::new(b.store.clone(), settings(0));
    let loaded = cold.load::<ApplicationState>(&stream).await.unwrap();
    assert_eq!(
        (loaded.version, description(&loaded.state)),
        (250, "v248".into())
    );
    assert_eq!(loaded.state.0.as_ref().unwrap().version, 250);
}

async fn a_stale_cache_never_decides_alone(b: Backend) {
    // Two api instances: each with its own cache over one store.
    let a = Commands::new(b.store.clone(), settings(2));
    let other = Commands::new(b.store.clone(), settings(2));
    let id = create_app(&a, None).await.unwrap();
    let stream = id.stream_id();
    // `other` caches the application before bob is a member.
    other.load::<ApplicationState>(&stream).await.unwrap();
    a.execute::<ApplicationState, DomainError, _>(&stream, Start::Current, &meta(), |s| {
        s.0.as_ref().unwrap().add_member(user("bob"), Role::Owner)
    })
    .await
    .unwrap();
    // On `other`, bob may update at once (the refusal decided on the stale cache is confirmed
    // against the stream, which has the member).
    let bob = Actor {
        user: user("bob"),
        admin: false,
    };
    let executed = other
        .execute::<ApplicationState, DomainError, _>(&stream, Start::Current, &meta(), |s| {
            let app = s.0.as_ref().unwrap();
            app.authorize(&bob, Permission::Definition, Operation::Update)?;
            app.update(describe("by bob"), &Policy::default())
        })
        .await
        .unwrap();
    assert_eq!(executed.version, 3);
    // A load on `a` (whose cache holds version 2) sees bob's update.
    let loaded = a.load::<ApplicationState>(&stream).await.unwrap();
    assert_eq!(
        (loaded.version, description(&loaded.state)),
        (3, "by bob".into())
    );
    // And `a` deciding on its cache appends after the conflict at the right version.
    assert_eq!(update(&a, id, "by alice").await.unwrap(), 4);
    let log = b.store.read_stream(&stream, 0, 100).await.unwrap();
    assert_eq!(
        log.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
}

async fn group_commit_with_conflicting_claims_loses_and_doubles_nothing(b: Backend) {
    // 4 writers, batches of up to 64: 240 creates race for 60 client_ids (4 each), mixed with
    // updates of 20 existing applications; batches with a taken claim fall back to one by one.
    let c = Commands::new(b.store.clone(), settings(4));
    let mut existing = Vec::new();
    for _ in 0..20 {
        existing.push(create_app(&c, None).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..240 {
        let c = c.clone();
        let client_id = format!("client-{}", i % 60);
        tasks.spawn(async move { (client_id.clone(), create_app(&c, Some(&client_id)).await) });
    }
    let mut updates = tokio::task::JoinSet::new();
    for (i, id) in existing.iter().enumerate() {
        for j in 0..5 {
            let c = c.clone();
            let id = *id;
            updates.spawn(async move { update(&c, id, &format!("{i}-{j}")).await });
        }
    }
    let mut winners: HashMap<String, Vec<ApplicationId>> = HashMap::new();
    let mut taken = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (client_id, Ok(id)) => winners.entry(client_id).or_default().push(id),
            (_, Err(CommandError::ClaimTaken { scope, .. })) => {
                assert!(scope.starts_with("client_id/"), "{scope}");
                taken += 1;
            }
            (_, Err(other)) => panic!("unexpected {other}"),
        }
    }
    while let Some(joined) = updates.join_next().await {
        joined.unwrap().unwrap();
    }
    assert_eq!(winners.len(), 60, "every client_id has a winner");
    assert!(
        winners.values().all(|w| w.len() == 1),
        "one winner per client_id"
    );
    assert_eq!(taken, 180);
    // The log holds exactly the winners' creates and the updates: nothing lost, nothing twice.
    // (The log is read below PostgreSQL's cluster-wide visibility horizon: wait until every
    // committed append is under it, whatever other tests hold open on the server.)
    let committed = b.store.last_committed().await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while b.store.head().await.unwrap() < committed {
        assert!(
            std::time::Instant::now() < deadline,
            "the log's head never reached {committed}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut log = Vec::new();
    loop {
        let after = log
            .last()
            .map(|e: &appreg_eventstore::StoredEvent| e.position)
            .unwrap_or_default();
        let page = b.store.read_log(after, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        log.extend(page);
    }
    let created = log
        .iter()
        .filter(|e| e.event_type == "ApplicationCreated")
        .count();
    let updated = log
        .iter()
        .filter(|e| e.event_type == "ApplicationUpdated")
        .count();
    assert_eq!((created, updated), (20 + 60, 100));
    for w in winners.values() {
        let events = b.store.read_stream(&w[0].stream_id(), 0, 10).await.unwrap();
        assert_eq!(events.len(), 1);
    }
    for id in &existing {
        let events = b.store.read_stream(&id.stream_id(), 0, 100).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=6).collect::<Vec<_>>()
        );
    }
}

async fn concurrent_writers_on_one_stream_lose_no_update(b: Backend) {
    // Three command paths (three api instances) update one application concurrently.
    let paths: Vec<Commands> = (0..3)
        .map(|_| Commands::new(b.store.clone(), settings(2)))
        .collect();
    let id = create_app(&paths[0], None).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for (p, c) in paths.iter().enumerate() {
        for i in 0..15 {
            let c = c.clone();
            tasks.spawn(async move { update(&c, id, &format!("{p}-{i}")).await });
        }
    }
    let mut versions = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        versions.push(joined.unwrap().unwrap());
    }
    versions.sort();
    assert_eq!(
        versions,
        (2..=46).collect::<Vec<_>>(),
        "each update at its own version"
    );
    for c in &paths {
        assert_eq!(
            c.load::<ApplicationState>(&id.stream_id())
                .await
                .unwrap()
                .version,
            46
        );
    }
}

async fn grouped_updates_without_claims_lose_and_double_nothing(b: Backend) {
    // Three command paths (three api instances), each grouping its appends (no claims: one
    // `append_each` per batch), update ten applications at once; the paths race on every stream,
    // so grouped inserts are refused in part (a stale guard) or whole (a unique violation).
    let paths: Vec<Commands> = (0..3)
        .map(|_| Commands::new(b.store.clone(), settings(2)))
        .collect();
    let mut apps = Vec::new();
    for _ in 0..10 {
        apps.push(create_app(&paths[0], None).await.unwrap());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (p, c) in paths.iter().enumerate() {
        for (a, id) in apps.iter().enumerate() {
            for i in 0..6 {
                let (c, id) = (c.clone(), *id);
                tasks.spawn(async move { (a, update(&c, id, &format!("{p}-{a}-{i}")).await) });
            }
        }
    }
    let mut versions: HashMap<usize, Vec<i64>> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (a, version) = joined.unwrap();
        versions.entry(a).or_default().push(version.unwrap());
    }
    for (a, id) in apps.iter().enumerate() {
        let mut answered = versions.remove(&a).unwrap_or_default();
        answered.sort();
        assert_eq!(
            answered,
            (2..=19).collect::<Vec<_>>(),
            "each update at its own version"
        );
        let stored = b.store.read_stream(&id.stream_id(), 0, 100).await.unwrap();
        assert_eq!(
            stored.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=19).collect::<Vec<_>>()
        );
    }
}
