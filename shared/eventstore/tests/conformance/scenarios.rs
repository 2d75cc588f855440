//! Scenarios on appends, reads, claims, head, wake-ups and migrations.

use crate::{
    assert_stored_as, claim, event, events, request, settled_log, unique, wait_for_head, Harness,
};
use appreg_eventstore::{AppendError, Database, LogPosition, StoreError};
use std::sync::Arc;

/// Several streams in one read: every event of each (and nothing of others), grouped by
/// stream, in version order; unknown streams give nothing; too many streams are refused.
pub async fn read_streams_reads_several_streams_at_once(h: Harness) {
    let store = h.store.as_ref();
    let (a, b, other) = (unique("app"), unique("app"), unique("app"));
    let (ea, eb) = (events(3), events(2));
    store.append(request(&a, 0, ea.clone())).await.unwrap();
    store.append(request(&other, 0, events(1))).await.unwrap();
    store.append(request(&b, 0, eb.clone())).await.unwrap();
    store.append(request(&a, 3, events(1))).await.unwrap();

    let missing = unique("app");
    let read = store
        .read_streams(&[b.clone(), a.clone(), missing, a.clone()])
        .await
        .unwrap();
    let mut of_a: Vec<_> = read.iter().filter(|e| e.stream_id == a).collect();
    let of_b: Vec<_> = read.iter().filter(|e| e.stream_id == b).collect();
    assert_eq!(read.len(), 6, "4 of a, 2 of b, none of the others");
    assert_eq!(
        of_a.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    for (stored, new) in of_b.iter().zip(&eb) {
        assert_stored_as(stored, new, &b, stored.version);
    }
    of_a.truncate(3);
    for (stored, new) in of_a.iter().zip(&ea) {
        assert_stored_as(stored, new, &a, stored.version);
    }
    // Grouped by stream: once a stream's events end, none of it comes again.
    let order: Vec<&str> = read.iter().map(|e| e.stream_id.as_str()).collect();
    let mut groups = order.clone();
    groups.dedup();
    assert_eq!(groups.len(), 2, "{order:?}");

    assert!(store.read_streams(&[]).await.unwrap().is_empty());
    let many: Vec<String> = (0..=appreg_eventstore::MAX_STREAMS_PER_READ)
        .map(|i| format!("s{i}"))
        .collect();
    assert!(matches!(
        store.read_streams(&many).await,
        Err(StoreError::TooManyStreams)
    ));
}

/// `read_at`: the events at the positions asked for, in log order and once each, as stored;
/// positions holding no event, or beyond the visibility horizon, give nothing; too many refused.
pub async fn read_at_reads_the_events_at_positions(h: Harness) {
    let store = h.store.as_ref();
    let (a, b) = (unique("app"), unique("app"));
    let ea = events(3);
    store.append(request(&a, 0, ea.clone())).await.unwrap();
    let last = store.append(request(&b, 0, events(2))).await.unwrap();
    let log = settled_log(store, last.position).await;
    let of_a: Vec<_> = log.iter().filter(|e| e.stream_id == a).collect();
    let beyond = LogPosition {
        tx: last.position.tx + 1_000_000,
        pos: last.position.pos + 1_000_000,
    };
    let asked = [
        of_a[2].position,
        beyond,
        of_a[0].position,
        LogPosition::START,
        of_a[2].position,
        LogPosition {
            tx: of_a[0].position.tx,
            pos: of_a[0].position.pos - 1_000_000,
        },
    ];
    let read = store.read_at(&asked).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.position).collect::<Vec<_>>(),
        [of_a[0].position, of_a[2].position],
        "the positions that hold an event, in log order, once each"
    );
    assert_stored_as(&read[0], &ea[0], &a, 1);
    assert_stored_as(&read[1], &ea[2], &a, 3);
    assert!(store.read_at(&[]).await.unwrap().is_empty());
    let many = vec![of_a[0].position; appreg_eventstore::MAX_POSITIONS_PER_READ + 1];
    assert!(matches!(
        store.read_at(&many).await,
        Err(StoreError::TooManyPositions)
    ));

    // An event committed while an older transaction still runs is beyond the horizon (and
    // head): `read_at` does not return it before `read_log` could.
    if let Database::Postgres(pool) = &h.db {
        let mut older = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *older)
            .await
            .unwrap();
        let late = store.append(request(&a, 3, events(1))).await.unwrap();
        assert!(store.head().await.unwrap() < late.position);
        assert!(store.read_at(&[late.position]).await.unwrap().is_empty());
        older.rollback().await.unwrap();
        wait_for_head(store, late.position).await;
        let read = store.read_at(&[late.position]).await.unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].version, 4);
    }
}

/// a. Appended events come back as appended, versions 1..n, in version order, with paging.
pub async fn append_and_read_stream_round_trip(h: Harness) {
    let store = h.store.as_ref();
    let stream = unique("app");
    let first = events(3);
    let appended = store
        .append(request(&stream, 0, first.clone()))
        .await
        .unwrap();
    assert_eq!(appended.version, 3);

    let read = store.read_stream(&stream, 0, 100).await.unwrap();
    assert_eq!(read.len(), 3);
    for (i, (stored, new)) in read.iter().zip(&first).enumerate() {
        assert_stored_as(stored, new, &stream, i as i64 + 1);
    }
    assert!(read.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(read[2].position, appended.position);

    let second = events(2);
    let appended2 = store
        .append(request(&stream, 3, second.clone()))
        .await
        .unwrap();
    assert_eq!(appended2.version, 5);
    assert!(appended2.position > appended.position);

    let all = store.read_stream(&stream, 0, 100).await.unwrap();
    let versions: Vec<i64> = all.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
    for (stored, new) in all[3..].iter().zip(&second) {
        assert_stored_as(stored, new, &stream, stored.version);
    }
    assert_eq!(all[4].position, appended2.position);

    // Paging: after_version and limit.
    let page = store.read_stream(&stream, 2, 2).await.unwrap();
    assert_eq!(page.iter().map(|e| e.version).collect::<Vec<_>>(), [3, 4]);
    assert_eq!(page[..], all[2..4]);
    let tail = store.read_stream(&stream, 4, 100).await.unwrap();
    assert_eq!(tail[..], all[4..]);
    assert!(store.read_stream(&stream, 5, 100).await.unwrap().is_empty());
    assert!(store.read_stream(&stream, 0, 0).await.unwrap().is_empty());
    assert!(store
        .read_stream(&unique("nobody"), 0, 100)
        .await
        .unwrap()
        .is_empty());

    // An append without events is refused and writes nothing.
    assert!(matches!(
        store.append(request(&stream, 5, Vec::new())).await,
        Err(AppendError::Empty)
    ));
    assert_eq!(store.read_stream(&stream, 0, 100).await.unwrap(), all);

    // The log holds exactly these events, in order.
    assert_eq!(settled_log(store, appended2.position).await, all);
}

/// b. A stale or too-high expected version appends nothing and reports the actual version.
pub async fn stale_or_too_high_expected_version_appends_nothing(h: Harness) {
    let store = h.store.as_ref();
    let stream = unique("app");
    let appended = store.append(request(&stream, 0, events(2))).await.unwrap();
    assert_eq!(appended.version, 2);
    let stream_before = store.read_stream(&stream, 0, 100).await.unwrap();
    let log_before = settled_log(store, appended.position).await;
    let wanted = claim("client_id/DEFAULT", &unique("cid"));

    for expected in [0, 1, 3, 4, 100] {
        let mut req = request(&stream, expected, events(2));
        req.claims.push(wanted.clone());
        match store.append(req).await {
            Err(AppendError::VersionConflict {
                stream_id,
                expected: reported,
                actual,
            }) => {
                assert_eq!(stream_id, stream);
                assert_eq!(reported, expected);
                assert_eq!(actual, 2);
            }
            other => panic!("expected a version conflict for {expected}, got {other:?}"),
        }
    }
    // A new stream with a non-zero expected version: no gaps, ever.
    let fresh = unique("app");
    match store.append(request(&fresh, 1, events(1))).await {
        Err(AppendError::VersionConflict { actual: 0, .. }) => {}
        other => panic!("expected a version conflict, got {other:?}"),
    }

    assert_eq!(
        store.read_stream(&stream, 0, 100).await.unwrap(),
        stream_before
    );
    assert!(store.read_stream(&fresh, 0, 100).await.unwrap().is_empty());
    assert_eq!(store.claim_holder(&wanted).await.unwrap(), None);

    // Nothing reached the log: after a later append, the log is the old log plus that append.
    let sentinel = store
        .append(request(&unique("sentinel"), 0, events(1)))
        .await
        .unwrap();
    let log = settled_log(store, sentinel.position).await;
    assert_eq!(log.len(), log_before.len() + 1);
    assert_eq!(log[..log_before.len()], log_before[..]);
}

/// b'. Of concurrent appenders with the same expected version, exactly one wins; the others
/// get a conflict naming the winner's version.
pub async fn concurrent_appenders_of_one_stream_conflict(h: Harness) {
    let stream = unique("app");
    h.store
        .append(request(&stream, 0, events(2)))
        .await
        .unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = h.store.clone();
            let stream = stream.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store.append(request(&stream, 2, events(3))).await
            })
        })
        .collect();
    let mut wins = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(appended) => {
                assert_eq!(appended.version, 5);
                wins += 1;
            }
            Err(AppendError::VersionConflict {
                expected: 2,
                actual: 5,
                ..
            }) => {}
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(wins, 1);
    let read = h.store.read_stream(&stream, 0, 100).await.unwrap();
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
}

/// c. An append is all or nothing: a taken claim or a duplicate event id writes no event, takes
/// no claim and releases nothing.
pub async fn append_is_all_or_nothing(h: Harness) {
    let store = h.store.as_ref();
    let holder = unique("holder");
    let held = claim("client_id/DEFAULT", &unique("cid"));
    let free = claim("client_id/DEFAULT", &unique("cid"));
    let mut req = request(&holder, 0, events(1));
    req.claims.push(held.clone());
    let holder_appended = store.append(req).await.unwrap();
    let holder_event = store.read_stream(&holder, 0, 10).await.unwrap().remove(0);

    // Three events whose second claim is taken.
    let other = unique("other");
    let mut req = request(&other, 0, events(3));
    req.claims = vec![free.clone(), held.clone()];
    match store.append(req).await {
        Err(AppendError::ClaimTaken { scope, value }) => {
            assert_eq!((scope, value), (held.scope.clone(), held.value.clone()));
        }
        other => panic!("expected ClaimTaken, got {other:?}"),
    }
    assert!(store.read_stream(&other, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.claim_holder(&free).await.unwrap(), None);
    assert_eq!(
        store.claim_holder(&held).await.unwrap(),
        Some(holder.clone())
    );

    // A duplicate of an already stored event id, last of three events.
    let mut dup = events(3);
    dup[2].event_id = holder_event.event_id;
    let mut req = request(&other, 0, dup);
    req.claims.push(free.clone());
    assert!(
        matches!(
            store.append(req).await,
            Err(AppendError::Backend(StoreError::DuplicateEventId))
        ),
        "a duplicate event id must fail the append"
    );
    assert!(store.read_stream(&other, 0, 10).await.unwrap().is_empty());
    assert_eq!(store.claim_holder(&free).await.unwrap(), None);

    // The same event id twice in one append.
    let mut twice = events(2);
    twice[1].event_id = twice[0].event_id;
    assert!(matches!(
        store.append(request(&other, 0, twice)).await,
        Err(AppendError::Backend(StoreError::DuplicateEventId))
    ));
    assert!(store.read_stream(&other, 0, 10).await.unwrap().is_empty());

    // A failing append releases nothing.
    let mut dup = events(2);
    dup[1].event_id = holder_event.event_id;
    let mut req = request(&holder, 1, dup);
    req.releases.push(held.clone());
    assert!(matches!(
        store.append(req).await,
        Err(AppendError::Backend(StoreError::DuplicateEventId))
    ));
    assert_eq!(
        store.claim_holder(&held).await.unwrap(),
        Some(holder.clone())
    );
    assert_eq!(
        store.read_stream(&holder, 0, 10).await.unwrap(),
        vec![holder_event.clone()]
    );

    // The stream is still usable at the version it had, and the log holds nothing else.
    let appended = store.append(request(&other, 0, events(1))).await.unwrap();
    assert_eq!(appended.version, 1);
    let log = settled_log(store, appended.position).await;
    assert_eq!(log.len(), 2);
    assert_eq!(log[0], holder_event);
    assert_eq!(log[0].position, holder_appended.position);
    assert_eq!(log[1].stream_id, other);
}

/// d. Claims: exclusive under contention, releasable, re-claimable by another stream, idempotent
/// for their holder.
pub async fn claims_are_exclusive_releasable_and_idempotent(h: Harness) {
    let contested = claim("client_id/DEFAULT", "shared-id");
    let barrier = Arc::new(tokio::sync::Barrier::new(32));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let store = h.store.clone();
            let contested = contested.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let stream = unique(&format!("app{i}"));
                let mut req = request(&stream, 0, events(2));
                req.claims.push(contested);
                barrier.wait().await;
                (stream, store.append(req).await)
            })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            (stream, Ok(appended)) => {
                assert_eq!(appended.version, 2);
                winners.push(stream);
            }
            (stream, Err(AppendError::ClaimTaken { scope, value })) => {
                assert_eq!(
                    (scope, value),
                    (contested.scope.clone(), contested.value.clone())
                );
                losers.push(stream);
            }
            (_, Err(other)) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one stream may take the claim");
    assert_eq!(losers.len(), 31);
    let winner = winners.remove(0);
    let store = h.store.as_ref();
    assert_eq!(
        store.claim_holder(&contested).await.unwrap(),
        Some(winner.clone())
    );
    for loser in &losers {
        assert!(store.read_stream(loser, 0, 10).await.unwrap().is_empty());
    }

    // Re-claiming a value the stream holds is idempotent.
    let mut req = request(&winner, 2, events(1));
    req.claims = vec![contested.clone(), contested.clone()];
    assert_eq!(store.append(req).await.unwrap().version, 3);
    assert_eq!(
        store.claim_holder(&contested).await.unwrap(),
        Some(winner.clone())
    );

    // Releasing a claim held by another stream is a no-op.
    let mut req = request(&losers[0], 0, events(1));
    req.releases.push(contested.clone());
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_holder(&contested).await.unwrap(),
        Some(winner.clone())
    );

    // The holder releases it; another stream can then take it.
    let mut req = request(&winner, 3, events(1));
    req.releases.push(contested.clone());
    store.append(req).await.unwrap();
    assert_eq!(store.claim_holder(&contested).await.unwrap(), None);

    let mut req = request(&losers[1], 0, events(1));
    req.claims.push(contested.clone());
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_holder(&contested).await.unwrap(),
        Some(losers[1].clone())
    );

    // The original holder can no longer claim it, and its stream is unchanged.
    let mut req = request(&winner, 4, events(1));
    req.claims.push(contested.clone());
    assert!(matches!(
        store.append(req).await,
        Err(AppendError::ClaimTaken { .. })
    ));
    assert_eq!(store.read_stream(&winner, 0, 100).await.unwrap().len(), 4);

    // A stream moves a claim: release one value and take another in one append; releasing and
    // claiming the same value keeps it.
    let moved_to = claim("client_id/DEFAULT", &unique("cid"));
    let mut req = request(&losers[1], 1, events(1));
    req.releases.push(contested.clone());
    req.claims.push(moved_to.clone());
    store.append(req).await.unwrap();
    assert_eq!(store.claim_holder(&contested).await.unwrap(), None);
    assert_eq!(
        store.claim_holder(&moved_to).await.unwrap(),
        Some(losers[1].clone())
    );
    let mut req = request(&losers[1], 2, events(1));
    req.releases.push(moved_to.clone());
    req.claims.push(moved_to.clone());
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_holder(&moved_to).await.unwrap(),
        Some(losers[1].clone())
    );

    // Claims are per scope.
    let other_scope = claim("client_id/PRODUCTION", "shared-id");
    let mut req = request(&winner, 4, events(1));
    req.claims.push(other_scope.clone());
    store.append(req).await.unwrap();
    assert_eq!(
        store.claim_holder(&other_scope).await.unwrap(),
        Some(winner)
    );
}

/// f. head() follows the log; wakeups() change after an append (across processes on
/// PostgreSQL, through NOTIFY).
pub async fn head_and_wakeups(h: Harness) {
    let store = h.store.as_ref();
    assert_eq!(store.head().await.unwrap(), LogPosition::START);
    assert!(store
        .read_log(LogPosition::START, 10)
        .await
        .unwrap()
        .is_empty());

    let remote = if h.db.is_postgres() {
        let remote = h.second_store().await;
        let mut wakeups = remote.wakeups();
        wakeups.borrow_and_update();
        Some((remote, wakeups))
    } else {
        None
    };

    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();
    let first = store
        .append(request(&unique("app"), 0, events(2)))
        .await
        .unwrap();
    assert!(
        wakeups.has_changed().unwrap(),
        "a local append must bump the wake-up channel before it returns"
    );
    // The last committed event is known at once, horizon or not.
    assert_eq!(store.last_committed().await.unwrap(), first.position);
    wakeups.borrow_and_update();

    if let Some((remote, mut remote_wakeups)) = remote {
        tokio::time::timeout(std::time::Duration::from_secs(2), remote_wakeups.changed())
            .await
            .expect("no wake-up through NOTIFY within 2 s")
            .unwrap();
        wait_for_head(remote.as_ref(), first.position).await;
        assert_eq!(remote.head().await.unwrap(), first.position);

        // Dropping a store stops its background tasks (they hold the channel's only other
        // sender, so the receiver sees the channel close).
        drop(remote);
        tokio::time::timeout(std::time::Duration::from_secs(2), async {
            while remote_wakeups.changed().await.is_ok() {}
        })
        .await
        .expect("the LISTEN task outlived its store");
    }

    wait_for_head(store, first.position).await;
    assert_eq!(store.head().await.unwrap(), first.position);

    let second = store
        .append(request(&unique("app"), 0, events(1)))
        .await
        .unwrap();
    assert!(wakeups.has_changed().unwrap());
    assert!(second.position > first.position);
    assert_eq!(store.last_committed().await.unwrap(), second.position);
    wait_for_head(store, second.position).await;
    assert_eq!(store.head().await.unwrap(), second.position);
    let log = settled_log(store, second.position).await;
    assert_eq!(log.len(), 3);
    assert_eq!(log[1].position, first.position);

    // head() of a fresh reader never passes what read_log returns.
    let after_first = store.read_log(first.position, 10).await.unwrap();
    assert_eq!(after_first.len(), 1);
    assert_eq!(after_first[0].position, second.position);
}

/// g. Migrations can be run again, by the same and by a new pool, without harm.
pub async fn migrations_are_idempotent(h: Harness) {
    h.db.migrate().await.expect("second migrate");
    let again = Database::connect(&h.url, 2).await.unwrap();
    again.migrate().await.expect("migrate from another pool");
    assert_eq!(again.is_postgres(), h.db.is_postgres());
    let store = again.event_store().await.unwrap();
    let stream = unique("app");
    let appended = store
        .append(request(&stream, 0, vec![event(1)]))
        .await
        .unwrap();
    assert_eq!(appended.version, 1);
    assert_eq!(h.store.read_stream(&stream, 0, 10).await.unwrap().len(), 1);
    again.close().await;
}

/// The log with only some types' payloads: the same events in the same order and pages as
/// `read_log`, the named types' payloads as stored, the others' JSON null on PostgreSQL (an
/// adapter may return them all: SQLite does).
pub async fn read_log_of_types_reads_only_their_payloads(h: Harness) {
    let store = h.store.as_ref();
    let appended = store
        .append(request(&unique("app"), 0, events(6)))
        .await
        .unwrap();
    wait_for_head(store, appended.position).await;
    let full = store.read_log(LogPosition::START, 100).await.unwrap();
    let wanted = ["ThingHappened1".to_string()];
    let sparse = store
        .read_log_of_types(LogPosition::START, 100, &wanted)
        .await
        .unwrap();
    assert_eq!(full.len(), 6);
    assert_eq!(sparse.len(), full.len());
    let key = |e: &appreg_eventstore::StoredEvent| {
        let e = e.clone();
        (
            e.position,
            e.event_id,
            e.stream_id,
            e.stream_type,
            e.version,
            e.event_type,
            e.schema_version,
            e.recorded_at,
        )
    };
    for (f, s) in full.iter().zip(&sparse) {
        assert_eq!(key(s), key(f));
        if f.event_type == wanted[0] || !h.db.is_postgres() {
            assert_eq!((&s.data, &s.metadata), (&f.data, &f.metadata));
        } else {
            assert!(s.data.is_null() && s.metadata.is_null(), "{s:?}");
            assert!(!f.data.is_null());
        }
    }
    // Paged from a position, as `read_log`.
    let page = store
        .read_log_of_types(full[2].position, 2, &[])
        .await
        .unwrap();
    let positions: Vec<LogPosition> = page.iter().map(|e| e.position).collect();
    assert_eq!(positions, [full[3].position, full[4].position]);
}
