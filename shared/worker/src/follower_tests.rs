//! The follower against a real event store (SQLite): events finish in any order, the
//! checkpoint is their low-water mark (it never passes an event still in flight), and an event
//! failing every time is parked after the configured tries, after which the checkpoint moves on.

use crate::follower::{follow, Checkpoint, FollowerConfig, Handler, Outcome};
use crate::parked::{self, Parking};
use appreg_eventstore::{AppendRequest, Database, LogPosition, NewEvent, StoredEvent};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const CHECKPOINT: Checkpoint = Checkpoint {
    table: "test_checkpoints",
    name: "test",
};

struct Test {
    release: Arc<Notify>,
    done: Arc<AtomicUsize>,
}

impl Handler for Test {
    type Error = String;

    fn wants(&self, e: &StoredEvent) -> bool {
        e.stream_type == "t"
    }

    async fn handle(&self, e: &StoredEvent, _: &CancellationToken) -> Result<Outcome, String> {
        match e.event_type.as_str() {
            "Slow" => self.release.notified().await,
            "Poison" => return Err("always fails".into()),
            _ => {}
        }
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(Outcome::Done)
    }
}

async fn append(db: &Database, stream: &str, event_type: &str) -> LogPosition {
    let store = db.event_store().await.unwrap();
    store
        .append(AppendRequest {
            stream_id: stream.into(),
            stream_type: "t".into(),
            expected_version: 0,
            events: vec![NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: event_type.into(),
                schema_version: 1,
                data: serde_json::json!({}),
                metadata: serde_json::json!({}),
                recorded_at: chrono::Utc::now(),
            }],
            claims: vec![],
            releases: vec![],
        })
        .await
        .unwrap();
    store.read_stream(stream, 0, 1).await.unwrap()[0].position
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < Duration::from_secs(10), "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpoint_is_the_low_water_mark_and_poison_events_are_parked() {
    let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let Database::Sqlite(pool) = &db else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE test_checkpoints (name TEXT PRIMARY KEY, tx BIGINT NOT NULL, pos BIGINT NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE test_parked (name TEXT NOT NULL, event_id TEXT NOT NULL, stream_id TEXT NOT NULL, \
         version BIGINT NOT NULL, event_type TEXT NOT NULL, tx BIGINT NOT NULL, pos BIGINT NOT NULL, \
         reason TEXT NOT NULL, attempts BIGINT NOT NULL, parked_at TEXT NOT NULL, PRIMARY KEY (name, event_id))",
    )
    .execute(pool)
    .await
    .unwrap();
    let slow = append(&db, "s-slow", "Slow").await;
    for i in 0..4 {
        append(&db, &format!("s-{i}"), "Fine").await;
    }
    let poison = append(&db, "s-poison", "Poison").await;
    let last = append(&db, "s-last", "Fine").await;

    let (release, done) = (Arc::new(Notify::new()), Arc::new(AtomicUsize::new(0)));
    let handler = Test {
        release: release.clone(),
        done: done.clone(),
    };
    let config = FollowerConfig {
        concurrency: 8,
        first_retry: Duration::from_millis(10),
        last_retry: Duration::from_millis(20),
        save_every: Duration::from_millis(10),
        parking: Some(Parking {
            table: "test_parked",
            after: 3,
        }),
        ..FollowerConfig::new("test", "test", CHECKPOINT)
    };
    let stop = CancellationToken::new();
    let store = db.event_store().await.unwrap();
    let task = tokio::spawn(follow(handler, config, db.clone(), store, stop.clone()));

    // Everything after the slow event is handled or parked; the checkpoint stays before it.
    eventually("the later events are handled", async || {
        done.load(Ordering::SeqCst) == 5
    })
    .await;
    eventually("the poison event is parked", async || {
        parked::count(&db, "test_parked", "test").await.unwrap() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(CHECKPOINT.load(&db).await.unwrap() < slow);
    let listed = parked::list(&db, "test_parked", "test", 10).await.unwrap();
    assert_eq!(listed[0].position, poison);
    assert_eq!(
        (listed[0].attempts, listed[0].reason.as_str()),
        (3, "always fails")
    );

    // The slow one finishes: the checkpoint moves past everything, the parked event included.
    release.notify_one();
    eventually("the checkpoint reaches the end", async || {
        CHECKPOINT.load(&db).await.unwrap() >= last
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}

/// A former leader's late write (an older position) never moves the checkpoint back; an
/// operator's reset does.
async fn checkpoint_moves_only_forward(db: Database) {
    let create = "CREATE TABLE mono_checkpoints (name TEXT PRIMARY KEY, tx BIGINT NOT NULL, pos BIGINT NOT NULL)";
    match &db {
        Database::Postgres(p) => sqlx::query(create).execute(p).await.map(drop),
        Database::Sqlite(p) => sqlx::query(create).execute(p).await.map(drop),
    }
    .unwrap();
    let c = Checkpoint {
        table: "mono_checkpoints",
        name: "follower",
    };
    let (early, late) = (
        LogPosition { tx: 7, pos: 40 },
        LogPosition { tx: 9, pos: 52 },
    );
    assert_eq!(c.load(&db).await.unwrap(), LogPosition::START);
    c.save(&db, late).await.unwrap();
    c.save(&db, early).await.unwrap();
    assert_eq!(
        c.load(&db).await.unwrap(),
        late,
        "a late, older write is ignored"
    );
    c.save(&db, LogPosition { tx: 9, pos: 53 }).await.unwrap();
    assert_eq!(c.load(&db).await.unwrap(), LogPosition { tx: 9, pos: 53 });
    c.reset(&db, LogPosition::START).await.unwrap();
    assert_eq!(c.load(&db).await.unwrap(), LogPosition::START);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_moves_only_forward_on_sqlite() {
    let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
    checkpoint_moves_only_forward(Database::connect(&url, 2).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_moves_only_forward_on_postgres() {
    let url = appreg_test_support::postgres::fresh_postgres_url().await;
    checkpoint_moves_only_forward(Database::connect(&url, 2).await.unwrap()).await;
}
