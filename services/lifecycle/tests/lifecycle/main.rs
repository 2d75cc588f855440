//! The lifecycle process manager against a real event store: what an archive ends and a restore
//! reopens, exactly once, across stale triggers, crashes between two steps and replays.

mod helpers;
mod vault;

use appreg_domain::application::ApplicationEvent;
use appreg_domain::catalogue::{PlanSecurity, PlanValidation};
use appreg_domain::subscription::{Hook, SubscriptionStatus, ARCHIVED_REASON};
use appreg_eventstore::{LogPosition, StoredEvent};
use appreg_lifecycle::{Handled, LifecycleConfig, TriggerKind};
use helpers::*;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Checks the archive's steps: every open subscription ended once (closed, or rejected when
/// pending), its keys revoked, the notification settings deleted, nothing else.
async fn assert_archived(t: &TestDb, subs: &Subs, archive: &StoredEvent) {
    let id = appreg_lifecycle::trigger(archive).unwrap().application_id;
    let events = t.events(id).await;
    let caused = caused_by(&events, archive);
    let after = events
        .iter()
        .filter(|e| e.version > archive.version)
        .count();
    assert_eq!(
        caused.len(),
        after,
        "every later event is one of the archive's steps"
    );
    assert_eq!(
        counts(caused.iter().copied()),
        expect_counts(&[
            ("ApiKeyRevoked", 3),
            ("NotificationSettingsDeleted", 1),
            ("SubscriptionClosed", 3),
            ("SubscriptionRejected", 1),
        ])
    );
    for e in &caused {
        assert_step_metadata(e, archive);
        let version = match decode(e) {
            ApplicationEvent::SubscriptionClosed(c) => c.archive_version,
            ApplicationEvent::SubscriptionRejected(r) => {
                assert_eq!(r.reason.as_deref(), Some(ARCHIVED_REASON));
                r.archive_version
            }
            ApplicationEvent::ApiKeyRevoked(k) => k.archive_version,
            ApplicationEvent::NotificationSettingsDeleted(d) => d.archive_version,
            other => panic!("unexpected step {other:?}"),
        };
        assert_eq!(version, Some(archive.version));
    }
    for s in subs.open() {
        let ended = caused
            .iter()
            .filter(|e| subscription_of(e).as_deref() == Some(s))
            .filter(|e| e.event_type != "ApiKeyRevoked")
            .count();
        assert_eq!(ended, 1, "{s} ended exactly once");
    }
    for s in [&subs.closed_before, &subs.rejected_before] {
        assert!(!caused
            .iter()
            .any(|e| subscription_of(e).as_deref() == Some(s.as_str())));
    }
    let app = t.app(id).await;
    let status = |s: &str| app.subscription(s).unwrap().status;
    assert_eq!(status(&subs.pending), SubscriptionStatus::Rejected);
    for s in [&subs.accepted_two_keys, &subs.accepted_jwt, &subs.paused] {
        assert_eq!(status(s), SubscriptionStatus::Closed);
    }
    for s in subs.open() {
        assert_eq!(
            app.subscription(s).unwrap().ended_by_archive,
            Some(archive.version)
        );
    }
    assert_eq!(status(&subs.closed_before), SubscriptionStatus::Closed);
    assert_eq!(status(&subs.rejected_before), SubscriptionStatus::Rejected);
    for s in [&subs.closed_before, &subs.rejected_before] {
        assert_eq!(app.subscription(s).unwrap().ended_by_archive, None);
    }
    assert!(app
        .subscriptions
        .iter()
        .flat_map(|s| &s.api_keys)
        .all(|k| k.revoked_at.is_some()));
    assert!(app.notifications.is_empty());
}

/// Checks the restore's steps: exactly the subscriptions the archive ended are PENDING again,
/// keys stay revoked.
async fn assert_restored(t: &TestDb, subs: &Subs, restore: &StoredEvent) {
    let id = appreg_lifecycle::trigger(restore).unwrap().application_id;
    let events = t.events(id).await;
    let caused = caused_by(&events, restore);
    let after = events
        .iter()
        .filter(|e| e.version > restore.version)
        .count();
    assert_eq!(
        caused.len(),
        after,
        "every later event is one of the restore's steps"
    );
    assert_eq!(
        counts(caused.iter().copied()),
        expect_counts(&[("SubscriptionReopened", 4)])
    );
    for e in &caused {
        assert_step_metadata(e, restore);
        let ApplicationEvent::SubscriptionReopened(r) = decode(e) else {
            unreachable!()
        };
        assert_eq!(r.restore_version, restore.version);
    }
    let mut reopened: Vec<String> = caused.iter().filter_map(|e| subscription_of(e)).collect();
    reopened.sort();
    let mut expected: Vec<String> = subs.open().into_iter().map(str::to_string).collect();
    expected.sort();
    assert_eq!(
        reopened, expected,
        "exactly what the archive ended, once each"
    );
    let app = t.app(id).await;
    for s in subs.open() {
        let sub = app.subscription(s).unwrap();
        assert_eq!(sub.status, SubscriptionStatus::Pending, "{s}");
        assert_eq!(sub.ended_by_archive, None);
        assert_eq!(sub.reason, None);
    }
    let status = |s: &str| app.subscription(s).unwrap().status;
    assert_eq!(status(&subs.closed_before), SubscriptionStatus::Closed);
    assert_eq!(status(&subs.rejected_before), SubscriptionStatus::Rejected);
    assert!(app
        .subscriptions
        .iter()
        .flat_map(|s| &s.api_keys)
        .all(|k| k.revoked_at.is_some()));
}

async fn archive_then_restore(t: TestDb) {
    let (id, subs) = populated(&t).await;
    let archive = t.archive(id, "req-archive").await;
    let manager = t.start(Duration::ZERO);
    t.wait_idle().await;
    assert_archived(&t, &subs, &archive).await;

    let restore = t.restore(id, "req-restore").await;
    t.wait_idle().await;
    manager.stop().await;
    assert_restored(&t, &subs, &restore).await;
    // The archive's steps are what they were.
    assert_eq!(caused_by(&t.events(id).await, &archive).len(), 8);
}

#[tokio::test]
async fn an_archive_ends_every_open_subscription_and_a_restore_reopens_exactly_those() {
    archive_then_restore(TestDb::postgres().await).await;
}

#[tokio::test]
async fn archive_and_restore_on_sqlite() {
    archive_then_restore(TestDb::sqlite().await).await;
}

#[tokio::test]
async fn an_archive_undone_by_a_restore_does_nothing() {
    let t = TestDb::postgres().await;
    let (id, subs) = populated(&t).await;
    let before = t.app(id).await;
    let archive = t.archive(id, "req-archive").await;
    let restore = t.restore(id, "req-restore").await;
    let manager = t.start(Duration::ZERO);
    t.wait_idle().await;
    manager.stop().await;

    let events = t.events(id).await;
    assert!(by_manager(&events).is_empty(), "stale triggers do nothing");
    assert_eq!(events.last().unwrap().event_id, restore.event_id);
    assert!(caused_by(&events, &archive).is_empty());
    let app = t.app(id).await;
    assert_eq!(app.subscriptions, before.subscriptions);
    assert_eq!(app.notifications, before.notifications);
    for s in subs.open() {
        assert!(app.subscription(s).unwrap().status.is_open());
    }
}

#[tokio::test]
async fn a_restore_followed_by_a_new_archive_does_nothing() {
    let t = TestDb::postgres().await;
    let (id, subs) = populated(&t).await;
    let first = t.archive(id, "req-archive-1").await;
    let restore = t.restore(id, "req-restore").await;
    let second = t.archive(id, "req-archive-2").await;
    let manager = t.start(Duration::ZERO);
    t.wait_idle().await;
    manager.stop().await;

    let events = t.events(id).await;
    assert!(caused_by(&events, &first).is_empty());
    assert!(caused_by(&events, &restore).is_empty());
    assert_eq!(
        by_manager(&events).len(),
        caused_by(&events, &second).len(),
        "only the last archive has steps"
    );
    assert_archived(&t, &subs, &second).await;
}

/// Waits until `trigger` has at least one step in the store; returns how many events it has.
async fn first_step(t: &TestDb, trigger: &StoredEvent) -> usize {
    let id = appreg_lifecycle::trigger(trigger).unwrap().application_id;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = caused_by(&t.events(id).await, trigger).len();
        if n > 0 {
            return n;
        }
        assert!(tokio::time::Instant::now() < deadline, "no step recorded");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_crash_between_two_steps_does_no_step_twice() {
    let t = TestDb::postgres().await;
    let id = t.create_app().await;
    let mut subs = Vec::new();
    for _ in 0..5 {
        subs.push(
            t.subscribe(id, PlanSecurity::ApiKey, PlanValidation::Auto)
                .await,
        );
    }
    t.command(id, "req-notify", |app| {
        app.update_notifications(
            user("alice"),
            [Hook::SubscriptionClosed].into(),
            Some(helpers::sealed("alice@example.org")),
        )
    })
    .await;
    let archive = t.archive(id, "req-archive").await;

    // The first instance records one step (a subscription closed, its key revoked) and dies
    // in the pause after it; a standby, waiting on the lock meanwhile, takes over.
    let crashing = t.start(Duration::from_secs(5));
    assert_eq!(first_step(&t, &archive).await, 2);
    let standby = t.start(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        caused_by(&t.events(id).await, &archive).len(),
        2,
        "the standby waits while the active instance lives"
    );
    crashing.kill().await;
    t.wait_idle().await;
    standby.stop().await;

    let events = t.events(id).await;
    let caused = caused_by(&events, &archive);
    assert_eq!(
        caused.len(),
        events
            .iter()
            .filter(|e| e.version > archive.version)
            .count()
    );
    assert_eq!(
        counts(caused.iter().copied()),
        expect_counts(&[
            ("ApiKeyRevoked", 5),
            ("NotificationSettingsDeleted", 1),
            ("SubscriptionClosed", 5),
        ])
    );
    for s in &subs {
        let of_sub = caused
            .iter()
            .filter(|e| subscription_of(e).as_deref() == Some(s.as_str()));
        assert_eq!(
            counts(of_sub.copied()),
            expect_counts(&[("ApiKeyRevoked", 1), ("SubscriptionClosed", 1)]),
            "{s}: no step twice"
        );
    }
    for e in &caused {
        assert_step_metadata(e, &archive);
    }
    let app = t.app(id).await;
    assert!(app
        .subscriptions
        .iter()
        .all(|s| s.status == SubscriptionStatus::Closed));
    assert!(app.notifications.is_empty());
}

#[tokio::test]
async fn a_restore_during_an_unfinished_archive_reopens_only_what_it_ended() {
    let t = TestDb::postgres().await;
    let (id, subs) = populated(&t).await;
    let archive = t.archive(id, "req-archive").await;
    let crashing = t.start(Duration::from_secs(5));
    // The first open subscription (with two keys) is closed, then the process dies.
    assert_eq!(first_step(&t, &archive).await, 3);
    crashing.kill().await;
    let restore = t.restore(id, "req-restore").await;
    let manager = t.start(Duration::ZERO);
    t.wait_idle().await;
    manager.stop().await;

    let events = t.events(id).await;
    assert_eq!(
        caused_by(&events, &archive).len(),
        3,
        "the archive is stale"
    );
    let reopened = caused_by(&events, &restore);
    assert_eq!(reopened.len(), 1);
    assert_eq!(
        subscription_of(reopened[0]).as_deref(),
        Some(subs.accepted_two_keys.as_str())
    );
    assert_step_metadata(reopened[0], &restore);
    let app = t.app(id).await;
    let status = |s: &str| app.subscription(s).unwrap().status;
    assert_eq!(status(&subs.accepted_two_keys), SubscriptionStatus::Pending);
    assert_eq!(status(&subs.pending), SubscriptionStatus::Pending);
    assert_eq!(status(&subs.accepted_jwt), SubscriptionStatus::Accepted);
    assert_eq!(status(&subs.paused), SubscriptionStatus::Paused);
    assert_eq!(app.notifications.len(), 2);
}

#[tokio::test]
async fn replaying_the_whole_log_appends_nothing() {
    let t = TestDb::postgres().await;
    let (id, subs) = populated(&t).await;
    let (other, _) = populated(&t).await;
    let manager = t.start(Duration::ZERO);
    let archive = t.archive(id, "req-archive").await;
    t.wait_idle().await;
    let restore = t.restore(id, "req-restore").await;
    t.wait_idle().await;
    t.archive(other, "req-archive-other").await;
    t.restore(other, "req-restore-other").await;
    t.wait_idle().await;
    manager.stop().await;
    assert_archived_then_restored(&t, &subs, &archive, &restore).await;
    let log: Vec<_> = t.log().await.into_iter().map(|e| e.event_id).collect();

    appreg_lifecycle::set_checkpoint(&t.db, LogPosition::START)
        .await
        .unwrap();
    let manager = t.start(Duration::ZERO);
    t.wait_idle().await;
    manager.stop().await;
    let replayed: Vec<_> = t.log().await.into_iter().map(|e| e.event_id).collect();
    assert_eq!(replayed, log, "a replay appends nothing");
    assert_eq!(
        appreg_lifecycle::checkpoint(&t.db).await.unwrap(),
        t.store.last_committed().await.unwrap()
    );
}

async fn assert_archived_then_restored(
    t: &TestDb,
    subs: &Subs,
    archive: &StoredEvent,
    restore: &StoredEvent,
) {
    let id = appreg_lifecycle::trigger(archive).unwrap().application_id;
    let events = t.events(id).await;
    assert_eq!(
        counts(caused_by(&events, archive)),
        expect_counts(&[
            ("ApiKeyRevoked", 3),
            ("NotificationSettingsDeleted", 1),
            ("SubscriptionClosed", 3),
            ("SubscriptionRejected", 1),
        ])
    );
    assert_restored(t, subs, restore).await;
}

#[tokio::test]
async fn other_events_are_not_triggers_and_metadata_falls_back() {
    let event = |stream_type: &str, stream_id: &str, event_type: &str| StoredEvent {
        position: LogPosition { tx: 1, pos: 1 },
        event_id: uuid::Uuid::now_v7(),
        stream_id: stream_id.into(),
        stream_type: stream_type.into(),
        version: 7,
        event_type: event_type.into(),
        schema_version: 1,
        data: serde_json::json!({}),
        metadata: serde_json::json!({"environment": "DEFAULT", "actor": "alice", "correlation_id": "c", "causation_id": "c", "at": "2024-01-01T00:00:00Z"}),
        recorded_at: chrono::Utc::now(),
    };
    let app = uuid::Uuid::now_v7();
    let stream = format!("application-{app}");
    let archived = event("application", &stream, "ApplicationArchived");
    let t = appreg_lifecycle::trigger(&archived).unwrap();
    assert_eq!(
        (t.kind, t.application_id.0, t.version),
        (TriggerKind::Archive, app, 7)
    );
    assert_eq!(
        appreg_lifecycle::trigger(&event("application", &stream, "ApplicationRestored"))
            .unwrap()
            .kind,
        TriggerKind::Restore
    );
    for other in [
        event("application", &stream, "ApplicationUpdated"),
        event("application", &stream, "SubscriptionClosed"),
        event("settings", &stream, "ApplicationArchived"),
        event(
            "application",
            "application-not-a-uuid",
            "ApplicationArchived",
        ),
    ] {
        assert!(appreg_lifecycle::trigger(&other).is_none(), "{other:?}");
    }

    // No traceparent: none copied. No correlation id: the trigger's own id.
    let m = appreg_lifecycle::metadata(&archived);
    assert!(m.get("traceparent").is_none());
    assert_eq!(m["correlation_id"], "c");
    let mut bare = archived.clone();
    bare.metadata = serde_json::json!({"environment": "DEFAULT"});
    let m = appreg_lifecycle::metadata(&bare);
    assert_eq!(m["correlation_id"], bare.event_id.to_string().as_str());
    assert_eq!(m["causation_id"], bare.event_id.to_string().as_str());
    let errors: Vec<String> = metadata_validator()
        .iter_errors(&m)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // A trigger whose application does not exist: nothing to do, not an error.
    let db = TestDb::sqlite().await;
    let handled = appreg_lifecycle::handle(
        &LifecycleConfig::default(),
        &db.store,
        &archived,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(handled, Handled::Done { steps: 0 });
    assert!(db.log().await.is_empty());
}
