//! Conformance suite of the event store adapters.
//!
//! Every scenario is written once, against the [`EventStore`] port, and run against both
//! adapters (`postgres::<scenario>` and `sqlite::<scenario>`), each test on a database of its own
//! so that tests run in parallel. PostgreSQL must be reachable (see
//! `appreg_test_support::postgres`): a missing server fails the tests, it never skips them.
//!
//! On PostgreSQL the visibility horizon of `read_log`/`head` is cluster-wide, so a transaction of
//! a test running in parallel (in another database) may briefly delay the visibility of this
//! test's events: log assertions wait until `head` reaches the expected position, then compare
//! exactly.

mod batch;
mod each;
mod environment_log;
mod scenarios;
mod snapshots;
mod tailer;

use appreg_eventstore::{
    AppendRequest, Claim, Database, EventStore, LogPosition, NewEvent, PgEventStore, StoredEvent,
};
use appreg_test_support::postgres::{fresh_postgres_url, fresh_sqlite_url, SqliteFile};
use chrono::{SubsecRound, Utc};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// How long a test waits for something that must happen "soon".
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A fresh, migrated database and a store over it.
pub struct Harness {
    pub db: Database,
    pub store: Arc<dyn EventStore>,
    pub url: String,
    _file: Option<SqliteFile>,
}

impl Harness {
    pub async fn postgres() -> Harness {
        let url = fresh_postgres_url().await;
        Harness::open(url, None).await
    }

    pub async fn sqlite() -> Harness {
        let (file, url) = fresh_sqlite_url();
        Harness::open(url, Some(file)).await
    }

    async fn open(url: String, file: Option<SqliteFile>) -> Harness {
        let db = Database::connect(&url, 16).await.expect("connect");
        db.migrate().await.expect("migrate");
        let store = db.event_store().await.expect("event store");
        Harness {
            db,
            store,
            url,
            _file: file,
        }
    }

    /// A second store instance over the same database, with a pool of its own (as another
    /// process would have).
    pub async fn second_store(&self) -> Arc<dyn EventStore> {
        let db = Database::connect(&self.url, 4).await.expect("connect");
        db.event_store().await.expect("event store")
    }

    /// A store for concurrent writers: on PostgreSQL a separate instance (so readers of
    /// `self.store` are woken through NOTIFY) whose transactions stay open 0–5 ms before they
    /// commit or roll back; on SQLite `self.store` itself.
    pub async fn delayed_writer_store(&self) -> Arc<dyn EventStore> {
        match &self.db {
            Database::Postgres(pool) => Arc::new(
                PgEventStore::new(pool.clone())
                    .await
                    .expect("event store")
                    .with_commit_delay_for_tests(Duration::from_millis(5)),
            ),
            Database::Sqlite(_) => self.store.clone(),
        }
    }
}

/// Declares `postgres::$scenario` and `sqlite::$scenario` tests for each scenario
/// `scenarios::$scenario(Harness)` (or `tailer::…`, `batch::…`, `snapshots::…`).
macro_rules! conformance {
    ($($module:ident::$scenario:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::$module::$scenario(crate::Harness::postgres().await).await
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    crate::$module::$scenario(crate::Harness::sqlite().await).await
                }
            )*
        }
    };
}

conformance!(
    scenarios::append_and_read_stream_round_trip,
    scenarios::read_streams_reads_several_streams_at_once,
    scenarios::read_at_reads_the_events_at_positions,
    scenarios::stale_or_too_high_expected_version_appends_nothing,
    scenarios::concurrent_appenders_of_one_stream_conflict,
    scenarios::append_is_all_or_nothing,
    scenarios::claims_are_exclusive_releasable_and_idempotent,
    scenarios::head_and_wakeups,
    scenarios::read_log_of_types_reads_only_their_payloads,
    scenarios::migrations_are_idempotent,
    tailer::tailer_waits_resumes_and_is_cancel_safe,
    tailer::tailer_sees_every_committed_event_exactly_once,
    batch::batch_appends_several_streams_at_once,
    batch::batch_with_a_stale_version_writes_nothing,
    batch::batch_with_a_claim_held_elsewhere_writes_nothing,
    batch::batch_streams_claiming_one_value_conflict,
    batch::batch_releases_come_before_claims,
    batch::batch_with_a_stream_twice_is_refused,
    batch::empty_batches_are_refused,
    batch::batch_with_a_duplicate_event_id_writes_nothing,
    batch::concurrent_batches_are_atomic,
    each::each_answers_every_request_on_its_own,
    each::each_with_a_duplicate_event_id_answers_each,
    each::concurrent_each_loses_and_doubles_nothing,
    snapshots::absent_snapshot_is_none,
    snapshots::snapshot_round_trip_is_byte_exact,
    snapshots::lower_version_does_not_replace_a_higher_one,
    snapshots::equal_version_is_a_no_op,
    snapshots::another_schema_version_replaces_it_regardless_of_version,
    snapshots::snapshots_of_different_streams_are_independent,
    snapshots::concurrent_writers_leave_the_highest,
    snapshots::writing_a_snapshot_does_not_change_the_log,
    snapshots::snapshot_writes_and_appends_do_not_block_each_other,
    environment_log::environment_log_is_filtered_and_paged,
    environment_log::environment_log_reads_the_index,
);

// ---------------------------------------------------------------------------------------------
// Helpers shared by the scenarios.

/// A stream id no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::now_v7().simple())
}

/// An event with recognisable, nested data (`recorded_at` at microsecond precision, which both
/// backends store exactly).
pub fn event(n: u64) -> NewEvent {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    NewEvent {
        event_id: Uuid::now_v7(),
        event_type: format!("ThingHappened{}", n % 3),
        schema_version: 1 + (n % 2) as i32,
        data: json!({
            "n": n,
            "seq": seq,
            "name": "élan – ünïcode ✓",
            "nested": {"list": [1, 2.5, null, true, "x"], "empty": {}},
        }),
        metadata: json!({"actor": "tester", "correlation_id": Uuid::now_v7()}),
        recorded_at: Utc::now().trunc_subsecs(6),
    }
}

pub fn events(count: u64) -> Vec<NewEvent> {
    (0..count).map(event).collect()
}

pub fn claim(scope: &str, value: &str) -> Claim {
    Claim {
        scope: scope.to_string(),
        value: value.to_string(),
    }
}

pub fn request(stream_id: &str, expected_version: i64, events: Vec<NewEvent>) -> AppendRequest {
    AppendRequest {
        stream_id: stream_id.to_string(),
        stream_type: "application".to_string(),
        expected_version,
        events,
        claims: Vec::new(),
        releases: Vec::new(),
    }
}

/// Waits until `head()` reaches `position` (it must never pass the last appended event).
pub async fn wait_for_head(store: &dyn EventStore, position: LogPosition) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let head = store.head().await.expect("head");
        if head >= position {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "head stayed at {head}, expected it to reach {position}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The whole log, read from START in pages of `page`.
pub async fn read_whole_log(store: &dyn EventStore, page: i64) -> Vec<StoredEvent> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map_or(LogPosition::START, |e| e.position);
        let batch = store.read_log(after, page).await.expect("read_log");
        assert!(
            batch.len() as i64 <= page,
            "read_log returned more than its limit"
        );
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

/// The whole log once every event up to `last` (the last event appended) is visible.
pub async fn settled_log(store: &dyn EventStore, last: LogPosition) -> Vec<StoredEvent> {
    wait_for_head(store, last).await;
    let log = read_whole_log(store, 100).await;
    assert_eq!(
        log.last().map(|e| e.position),
        Some(last),
        "the log must end with the last appended event"
    );
    log
}

/// Asserts that a stored event is the appended one.
pub fn assert_stored_as(stored: &StoredEvent, new: &NewEvent, stream_id: &str, version: i64) {
    assert_eq!(stored.event_id, new.event_id);
    assert_eq!(stored.stream_id, stream_id);
    assert_eq!(stored.stream_type, "application");
    assert_eq!(stored.version, version);
    assert_eq!(stored.event_type, new.event_type);
    assert_eq!(stored.schema_version, new.schema_version);
    assert_eq!(stored.data, new.data);
    assert_eq!(stored.metadata, new.metadata);
    assert_eq!(stored.recorded_at, new.recorded_at);
}
