//! Scenarios on `append_batch`: several streams appended in one transaction, all or nothing.

use crate::{assert_stored_as, claim, events, request, settled_log, unique, Harness};
use appreg_eventstore::{
    AppendError, AppendRequest, Appended, Claim, EventStore, LogPosition, NewEvent, StoreError,
    StoredEvent,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

/// `request` with claims and releases.
fn request_with(
    stream_id: &str,
    expected_version: i64,
    events: Vec<NewEvent>,
    claims: &[&Claim],
    releases: &[&Claim],
) -> AppendRequest {
    let mut req = request(stream_id, expected_version, events);
    req.claims = claims.iter().map(|&c| c.clone()).collect();
    req.releases = releases.iter().map(|&c| c.clone()).collect();
    req
}

/// The events of a stream (all of them).
async fn stream(store: &dyn EventStore, stream_id: &str) -> Vec<StoredEvent> {
    store.read_stream(stream_id, 0, 10_000).await.unwrap()
}

/// Asserts that the log is still `before` (settled): after one more append, the log is `before`
/// plus that append. Returns the new settled log.
async fn assert_log_unchanged(store: &dyn EventStore, before: &[StoredEvent]) -> Vec<StoredEvent> {
    let sentinel = store
        .append(request(&unique("sentinel"), 0, events(1)))
        .await
        .unwrap();
    let log = settled_log(store, sentinel.position).await;
    assert_eq!(
        log.len(),
        before.len() + 1,
        "a failed batch reached the log"
    );
    assert_eq!(log[..before.len()], before[..]);
    log
}

/// The settled log after `last` (the position of the last successful append).
async fn log_at(store: &dyn EventStore, last: LogPosition) -> Vec<StoredEvent> {
    settled_log(store, last).await
}

/// a. A batch on three streams (a new one, an existing one, one with two events) commits as one
/// transaction: every request's events are stored, the results match each request's last event,
/// and the batch is contiguous in the log, in request order.
pub async fn batch_appends_several_streams_at_once(h: Harness) {
    let store = h.store.as_ref();
    let existing = unique("existing");
    let before = store
        .append(request(&existing, 0, events(2)))
        .await
        .unwrap();
    let log_before = log_at(store, before.position).await;
    let mut wakeups = store.wakeups();
    wakeups.borrow_and_update();

    let fresh = unique("fresh");
    let pair = unique("pair");
    let fresh_claim = claim("client_id/DEFAULT", &unique("cid"));
    let (e_fresh, e_existing, e_pair) = (events(1), events(1), events(2));
    let appended = store
        .append_batch(vec![
            request_with(&fresh, 0, e_fresh.clone(), &[&fresh_claim], &[]),
            request(&existing, 2, e_existing.clone()),
            request(&pair, 0, e_pair.clone()),
        ])
        .await
        .unwrap();
    assert!(
        wakeups.has_changed().unwrap(),
        "a batch must bump the wake-up channel before it returns"
    );
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 3, 2]
    );
    assert!(
        appended.windows(2).all(|w| w[0].position < w[1].position),
        "results follow request order in the log: {appended:?}"
    );
    assert!(
        appended
            .iter()
            .all(|a| a.position.tx == appended[0].position.tx),
        "one batch is one transaction: {appended:?}"
    );
    assert!(appended[0].position > before.position);

    let read_fresh = stream(store, &fresh).await;
    assert_eq!(read_fresh.len(), 1);
    assert_stored_as(&read_fresh[0], &e_fresh[0], &fresh, 1);
    assert_eq!(read_fresh[0].position, appended[0].position);

    let read_existing = stream(store, &existing).await;
    assert_eq!(
        read_existing.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(read_existing[..2], log_before[..]);
    assert_stored_as(&read_existing[2], &e_existing[0], &existing, 3);
    assert_eq!(read_existing[2].position, appended[1].position);

    let read_pair = stream(store, &pair).await;
    assert_eq!(read_pair.len(), 2);
    assert_stored_as(&read_pair[0], &e_pair[0], &pair, 1);
    assert_stored_as(&read_pair[1], &e_pair[1], &pair, 2);
    assert_eq!(read_pair[1].position, appended[2].position);

    assert_eq!(
        store.claim_holder(&fresh_claim).await.unwrap(),
        Some(fresh.clone())
    );
    assert_eq!(store.last_committed().await.unwrap(), appended[2].position);

    // The log: the old events, then the batch's four, contiguous and in request order.
    let log = log_at(store, appended[2].position).await;
    assert_eq!(log.len(), 6);
    assert_eq!(log[..2], log_before[..]);
    let expected: Vec<StoredEvent> = [
        read_fresh[0].clone(),
        read_existing[2].clone(),
        read_pair[0].clone(),
        read_pair[1].clone(),
    ]
    .into();
    assert_eq!(log[2..], expected[..]);
    assert_eq!(store.head().await.unwrap(), appended[2].position);

    // A one-request batch is an append, and the streams go on from their new versions.
    let next = store
        .append_batch(vec![request(&pair, 2, events(1))])
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].version, 3);
    assert!(next[0].position > appended[2].position);
    let last = store.append(request(&fresh, 1, events(1))).await.unwrap();
    assert_eq!(last.version, 2);
}

/// b. One stale (or too high) expected version in the middle of a batch: a `VersionConflict`
/// naming that stream and its actual version, and nothing of the batch is written.
pub async fn batch_with_a_stale_version_writes_nothing(h: Harness) {
    let store = h.store.as_ref();
    let first = unique("first");
    let middle = unique("middle");
    let fresh = unique("fresh");
    let held = claim("client_id/DEFAULT", &unique("cid"));
    let wanted = claim("client_id/DEFAULT", &unique("cid"));
    store.append(request(&first, 0, events(1))).await.unwrap();
    let last = store
        .append(request_with(&middle, 0, events(3), &[&held], &[]))
        .await
        .unwrap();
    let first_before = stream(store, &first).await;
    let middle_before = stream(store, &middle).await;
    let mut log_before = log_at(store, last.position).await;

    for (stale, actual) in [(2, 3), (0, 3), (4, 3), (100, 3)] {
        let batch = vec![
            request_with(&first, 1, events(2), &[&wanted], &[]),
            request_with(&middle, stale, events(1), &[], &[&held]),
            request(&fresh, 0, events(1)),
        ];
        match store.append_batch(batch).await {
            Err(AppendError::VersionConflict {
                stream_id,
                expected,
                actual: reported,
            }) => {
                assert_eq!(stream_id, middle);
                assert_eq!(expected, stale);
                assert_eq!(reported, actual);
            }
            other => panic!("expected a version conflict of {middle}, got {other:?}"),
        }
        assert_eq!(stream(store, &first).await, first_before);
        assert_eq!(stream(store, &middle).await, middle_before);
        assert!(stream(store, &fresh).await.is_empty());
        assert_eq!(store.claim_holder(&wanted).await.unwrap(), None);
        assert_eq!(
            store.claim_holder(&held).await.unwrap(),
            Some(middle.clone()),
            "a failed batch released a claim"
        );
    }

    // A new stream with a non-zero expected version, last of the batch.
    let batch = vec![
        request(&first, 1, events(1)),
        request(&middle, 3, events(1)),
        request(&fresh, 1, events(1)),
    ];
    match store.append_batch(batch).await {
        Err(AppendError::VersionConflict {
            stream_id,
            expected: 1,
            actual: 0,
        }) => assert_eq!(stream_id, fresh),
        other => panic!("expected a version conflict of {fresh}, got {other:?}"),
    }
    assert_eq!(stream(store, &first).await, first_before);
    assert_eq!(stream(store, &middle).await, middle_before);
    log_before = assert_log_unchanged(store, &log_before).await;

    // With the right versions the same batch commits (the caller's retry).
    let appended = store
        .append_batch(vec![
            request_with(&first, 1, events(2), &[&wanted], &[]),
            request_with(&middle, 3, events(1), &[], &[&held]),
            request(&fresh, 0, events(1)),
        ])
        .await
        .unwrap();
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [3, 4, 1]
    );
    assert_eq!(store.claim_holder(&held).await.unwrap(), None);
    assert_eq!(
        store.claim_holder(&wanted).await.unwrap(),
        Some(first.clone())
    );
    let log = log_at(store, appended[2].position).await;
    assert_eq!(log.len(), log_before.len() + 4);
}

/// c. A claim held by a stream outside the batch: `ClaimTaken`, and nothing of the batch is
/// written (no events, no claims of the other requests, no releases).
pub async fn batch_with_a_claim_held_elsewhere_writes_nothing(h: Harness) {
    let store = h.store.as_ref();
    let outsider = unique("outsider");
    let releaser = unique("releaser");
    let held = claim("client_id/DEFAULT", &unique("held"));
    let kept = claim("client_id/DEFAULT", &unique("kept"));
    let free_a = claim("client_id/DEFAULT", &unique("free"));
    let free_b = claim("client_id/PRODUCTION", &unique("free"));
    store
        .append(request_with(&outsider, 0, events(1), &[&held], &[]))
        .await
        .unwrap();
    let last = store
        .append(request_with(&releaser, 0, events(1), &[&kept], &[]))
        .await
        .unwrap();
    let releaser_before = stream(store, &releaser).await;
    let log_before = log_at(store, last.position).await;

    let a = unique("a");
    let b = unique("b");
    let batch = vec![
        request_with(&a, 0, events(2), &[&free_a], &[]),
        request_with(&releaser, 1, events(1), &[], &[&kept]),
        request_with(&b, 0, events(1), &[&free_b, &held], &[]),
    ];
    match store.append_batch(batch).await {
        Err(AppendError::ClaimTaken { scope, value }) => {
            assert_eq!((scope, value), (held.scope.clone(), held.value.clone()));
        }
        other => panic!("expected ClaimTaken, got {other:?}"),
    }
    assert!(stream(store, &a).await.is_empty());
    assert!(stream(store, &b).await.is_empty());
    assert_eq!(stream(store, &releaser).await, releaser_before);
    assert_eq!(store.claim_holder(&free_a).await.unwrap(), None);
    assert_eq!(store.claim_holder(&free_b).await.unwrap(), None);
    assert_eq!(
        store.claim_holder(&held).await.unwrap(),
        Some(outsider.clone())
    );
    assert_eq!(
        store.claim_holder(&kept).await.unwrap(),
        Some(releaser.clone())
    );
    let log_before = assert_log_unchanged(store, &log_before).await;

    // Without the taken claim, the same streams commit at the same versions.
    let appended = store
        .append_batch(vec![
            request_with(&a, 0, events(2), &[&free_a], &[]),
            request_with(&releaser, 1, events(1), &[], &[&kept]),
            request_with(&b, 0, events(1), &[&free_b], &[]),
        ])
        .await
        .unwrap();
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [2, 2, 1]
    );
    assert_eq!(store.claim_holder(&free_a).await.unwrap(), Some(a));
    assert_eq!(store.claim_holder(&free_b).await.unwrap(), Some(b));
    assert_eq!(store.claim_holder(&kept).await.unwrap(), None);
    let log = log_at(store, appended[2].position).await;
    assert_eq!(log.len(), log_before.len() + 4);
}

/// d. Two streams of one batch claiming the same value: `ClaimTaken` for it, nothing written.
/// One stream claiming a value twice, or one it already holds, is idempotent.
pub async fn batch_streams_claiming_one_value_conflict(h: Harness) {
    let store = h.store.as_ref();
    let holder = unique("holder");
    let own = claim("client_id/DEFAULT", &unique("own"));
    let contested = claim("client_id/DEFAULT", &unique("contested"));
    let other = claim("client_id/DEFAULT", &unique("other"));
    let last = store
        .append(request_with(&holder, 0, events(1), &[&own], &[]))
        .await
        .unwrap();
    let holder_before = stream(store, &holder).await;
    let log_before = log_at(store, last.position).await;

    let a = unique("a");
    let b = unique("b");
    let batch = vec![
        request_with(&a, 0, events(1), &[&other, &contested], &[]),
        request_with(&holder, 1, events(1), &[&own], &[]),
        request_with(&b, 0, events(2), &[&contested], &[]),
    ];
    match store.append_batch(batch).await {
        Err(AppendError::ClaimTaken { scope, value }) => {
            assert_eq!(
                (scope, value),
                (contested.scope.clone(), contested.value.clone())
            );
        }
        other => panic!("expected ClaimTaken, got {other:?}"),
    }
    assert!(stream(store, &a).await.is_empty());
    assert!(stream(store, &b).await.is_empty());
    assert_eq!(stream(store, &holder).await, holder_before);
    assert_eq!(store.claim_holder(&contested).await.unwrap(), None);
    assert_eq!(store.claim_holder(&other).await.unwrap(), None);
    let log_before = assert_log_unchanged(store, &log_before).await;

    // The same stream claiming a value twice, and re-claiming one it holds, in one batch.
    let appended = store
        .append_batch(vec![
            request_with(&a, 0, events(1), &[&contested, &other, &contested], &[]),
            request_with(&holder, 1, events(1), &[&own, &own], &[]),
            request(&b, 0, events(2)),
        ])
        .await
        .unwrap();
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 2, 2]
    );
    assert_eq!(
        store.claim_holder(&contested).await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.claim_holder(&other).await.unwrap(), Some(a.clone()));
    assert_eq!(store.claim_holder(&own).await.unwrap(), Some(holder));
    let log = log_at(store, appended[2].position).await;
    assert_eq!(log.len(), log_before.len() + 4);
}

/// e. Releases of a batch come before its claims, whatever the request order: a stream takes a
/// value another stream of the batch gives up. Releasing a value another stream holds is a
/// no-op.
pub async fn batch_releases_come_before_claims(h: Harness) {
    let store = h.store.as_ref();
    let a = unique("a");
    let b = unique("b");
    let c = unique("c");
    let x = claim("client_id/DEFAULT", &unique("x"));
    let y = claim("client_id/DEFAULT", &unique("y"));
    store
        .append(request_with(&a, 0, events(1), &[&x], &[]))
        .await
        .unwrap();

    // The releaser first.
    let appended = store
        .append_batch(vec![
            request_with(&a, 1, events(1), &[], &[&x]),
            request_with(&b, 0, events(1), &[&x], &[]),
        ])
        .await
        .unwrap();
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [2, 1]
    );
    assert_eq!(store.claim_holder(&x).await.unwrap(), Some(b.clone()));

    // The claimer first; the releaser also moves to a new value.
    let appended = store
        .append_batch(vec![
            request_with(&c, 0, events(1), &[&x], &[]),
            request_with(&b, 1, events(1), &[&y], &[&x]),
        ])
        .await
        .unwrap();
    assert_eq!(
        appended.iter().map(|a| a.version).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(store.claim_holder(&x).await.unwrap(), Some(c.clone()));
    assert_eq!(store.claim_holder(&y).await.unwrap(), Some(b.clone()));

    // Releasing a value held by another stream changes nothing, and does not let a third
    // stream of the batch take it.
    let appended = store
        .append_batch(vec![request_with(&a, 2, events(1), &[], &[&x])])
        .await
        .unwrap();
    assert_eq!(appended[0].version, 3);
    assert_eq!(store.claim_holder(&x).await.unwrap(), Some(c.clone()));
    match store
        .append_batch(vec![
            request_with(&a, 3, events(1), &[], &[&x]),
            request_with(&b, 2, events(1), &[&x], &[]),
        ])
        .await
    {
        Err(AppendError::ClaimTaken { scope, value }) => {
            assert_eq!((scope, value), (x.scope.clone(), x.value.clone()));
        }
        other => panic!("expected ClaimTaken, got {other:?}"),
    }
    assert_eq!(stream(store, &a).await.len(), 3);
    assert_eq!(stream(store, &b).await.len(), 2);
    assert_eq!(store.claim_holder(&x).await.unwrap(), Some(c));
}

/// f. The same stream twice in one batch: `DuplicateStream`, nothing written.
pub async fn batch_with_a_stream_twice_is_refused(h: Harness) {
    let store = h.store.as_ref();
    let a = unique("a");
    let b = unique("b");
    let x = claim("client_id/DEFAULT", &unique("x"));
    let last = store.append(request(&a, 0, events(1))).await.unwrap();
    let a_before = stream(store, &a).await;
    let log_before = log_at(store, last.position).await;

    for batch in [
        vec![
            request(&a, 1, events(1)),
            request_with(&b, 0, events(1), &[&x], &[]),
            request(&a, 2, events(1)),
        ],
        vec![request(&b, 0, events(1)), request(&b, 0, events(1))],
    ] {
        let twice = batch[batch.len() - 1].stream_id.clone();
        match store.append_batch(batch).await {
            Err(AppendError::DuplicateStream { stream_id }) => assert_eq!(stream_id, twice),
            other => panic!("expected DuplicateStream, got {other:?}"),
        }
    }
    assert_eq!(stream(store, &a).await, a_before);
    assert!(stream(store, &b).await.is_empty());
    assert_eq!(store.claim_holder(&x).await.unwrap(), None);
    assert_log_unchanged(store, &log_before).await;
}

/// g. An empty batch, or a request without events in a batch: `Empty`, nothing written.
pub async fn empty_batches_are_refused(h: Harness) {
    let store = h.store.as_ref();
    let a = unique("a");
    let b = unique("b");
    let x = claim("client_id/DEFAULT", &unique("x"));
    let last = store.append(request(&a, 0, events(1))).await.unwrap();
    let log_before = log_at(store, last.position).await;

    assert!(matches!(
        store.append_batch(Vec::new()).await,
        Err(AppendError::Empty)
    ));
    for batch in [
        vec![
            request_with(&b, 0, events(2), &[&x], &[]),
            request(&a, 1, Vec::new()),
        ],
        vec![
            request(&a, 1, Vec::new()),
            request_with(&b, 0, events(2), &[&x], &[]),
        ],
    ] {
        match store.append_batch(batch).await {
            Err(AppendError::Empty) => {}
            other => panic!("expected Empty, got {other:?}"),
        }
    }
    assert_eq!(stream(store, &a).await.len(), 1);
    assert!(stream(store, &b).await.is_empty());
    assert_eq!(store.claim_holder(&x).await.unwrap(), None);
    assert_log_unchanged(store, &log_before).await;
}

/// h. An event id already stored, or repeated in two requests of the batch:
/// `DuplicateEventId`, nothing written.
pub async fn batch_with_a_duplicate_event_id_writes_nothing(h: Harness) {
    let store = h.store.as_ref();
    let a = unique("a");
    let b = unique("b");
    let c = unique("c");
    let held = claim("client_id/DEFAULT", &unique("held"));
    let wanted = claim("client_id/DEFAULT", &unique("wanted"));
    let last = store
        .append(request_with(&a, 0, events(2), &[&held], &[]))
        .await
        .unwrap();
    let a_before = stream(store, &a).await;
    let log_before = log_at(store, last.position).await;

    // An id already stored, in the last request.
    let mut dup = events(2);
    dup[1].event_id = a_before[0].event_id;
    let batch = vec![
        request_with(&b, 0, events(2), &[&wanted], &[]),
        request_with(&a, 2, events(1), &[], &[&held]),
        request(&c, 0, dup),
    ];
    assert!(
        matches!(
            store.append_batch(batch).await,
            Err(AppendError::Backend(StoreError::DuplicateEventId))
        ),
        "an event id already stored must fail the batch"
    );

    // The same new id in two requests.
    let first = events(1);
    let mut second = events(2);
    second[0].event_id = first[0].event_id;
    let batch = vec![
        request(&b, 0, first),
        request_with(&a, 2, events(1), &[], &[&held]),
        request(&c, 0, second),
    ];
    assert!(
        matches!(
            store.append_batch(batch).await,
            Err(AppendError::Backend(StoreError::DuplicateEventId))
        ),
        "an event id twice in one batch must fail it"
    );

    assert!(stream(store, &b).await.is_empty());
    assert!(stream(store, &c).await.is_empty());
    assert_eq!(stream(store, &a).await, a_before);
    assert_eq!(store.claim_holder(&wanted).await.unwrap(), None);
    assert_eq!(store.claim_holder(&held).await.unwrap(), Some(a.clone()));
    assert_log_unchanged(store, &log_before).await;
}

// ---------------------------------------------------------------------------------------------
// i. Concurrency.

const BATCH_WRITERS: usize = 8;
const SINGLE_WRITERS: usize = 4;
const ROUNDS: usize = 20;
const NEW_STREAMS_PER_BATCH: usize = 5;
const SINGLE_APPENDS: usize = 30;
const SHARED_STREAMS: usize = 2;

/// One request of a batch, as sent.
struct Sent {
    stream_id: String,
    expected: i64,
    event_ids: Vec<Uuid>,
    claims: Vec<Claim>,
}

/// One batch and what became of it.
struct BatchOutcome {
    sent: Vec<Sent>,
    result: Result<Vec<Appended>, AppendError>,
}

/// The current version of a stream.
async fn version_of(store: &dyn EventStore, stream_id: &str) -> i64 {
    stream(store, stream_id)
        .await
        .last()
        .map_or(0, |e| e.version)
}

/// Appends `ROUNDS` batches of new streams (1–3 events and one claim each); every other batch
/// also appends to a shared stream at the version it just read, racing the other writers.
async fn batch_writer(
    store: Arc<dyn EventStore>,
    writer: usize,
    shared: Arc<Vec<String>>,
) -> Vec<BatchOutcome> {
    let mut rng = StdRng::seed_from_u64(0x5eed ^ writer as u64);
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let mut batch = Vec::new();
        for s in 0..NEW_STREAMS_PER_BATCH {
            let stream_id = unique(&format!("w{writer}r{round}s{s}"));
            let count = rng.gen_range(1..=3);
            let value = claim("client_id/DEFAULT", &stream_id);
            batch.push(request_with(&stream_id, 0, events(count), &[&value], &[]));
        }
        if round % 2 == 1 {
            let stream_id = &shared[rng.gen_range(0..shared.len())];
            let expected = version_of(store.as_ref(), stream_id).await;
            let position = rng.gen_range(0..=batch.len());
            batch.insert(position, request(stream_id, expected, events(1)));
        }
        let sent = batch
            .iter()
            .map(|r| Sent {
                stream_id: r.stream_id.clone(),
                expected: r.expected_version,
                event_ids: r.events.iter().map(|e| e.event_id).collect(),
                claims: r.claims.clone(),
            })
            .collect();
        let result = store.append_batch(batch).await;
        outcomes.push(BatchOutcome { sent, result });
    }
    outcomes
}

/// Appends single events to the shared streams, retrying on conflicts; returns the committed
/// (stream, event id, appended) triples.
async fn single_writer(
    store: Arc<dyn EventStore>,
    writer: usize,
    shared: Arc<Vec<String>>,
) -> Vec<(String, Uuid, Appended)> {
    let mut committed = Vec::new();
    for i in 0..SINGLE_APPENDS {
        let stream_id = &shared[(writer + i) % shared.len()];
        loop {
            let expected = version_of(store.as_ref(), stream_id).await;
            let new = events(1);
            let id = new[0].event_id;
            match store.append(request(stream_id, expected, new)).await {
                Ok(appended) => {
                    assert_eq!(appended.version, expected + 1);
                    committed.push((stream_id.clone(), id, appended));
                    break;
                }
                Err(AppendError::VersionConflict {
                    expected: e,
                    actual,
                    ..
                }) => {
                    assert_eq!(e, expected);
                    assert!(actual > expected, "a conflict must report a newer version");
                }
                Err(other) => panic!("unexpected error {other:?}"),
            }
        }
    }
    committed
}

/// i. Batches of new streams race each other and single appends on shared streams: every
/// committed batch is complete and contiguous in the log, every failed one left nothing, and
/// every stream's versions are 1..n without gaps.
pub async fn concurrent_batches_are_atomic(h: Harness) {
    let shared: Arc<Vec<String>> =
        Arc::new((0..SHARED_STREAMS).map(|_| unique("shared")).collect());
    let delayed = h.delayed_writer_store().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(BATCH_WRITERS + SINGLE_WRITERS));

    let batch_tasks: Vec<_> = (0..BATCH_WRITERS)
        .map(|writer| {
            // Half of the batch writers hold their transactions open a little before COMMIT.
            let store = if writer % 2 == 0 {
                h.store.clone()
            } else {
                delayed.clone()
            };
            let shared = shared.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                batch_writer(store, writer, shared).await
            })
        })
        .collect();
    let single_tasks: Vec<_> = (0..SINGLE_WRITERS)
        .map(|writer| {
            let store = h.store.clone();
            let shared = shared.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                single_writer(store, writer, shared).await
            })
        })
        .collect();
    let mut batches = Vec::new();
    for task in batch_tasks {
        batches.extend(task.await.unwrap());
    }
    let mut singles = Vec::new();
    for task in single_tasks {
        singles.extend(task.await.unwrap());
    }

    let store = h.store.as_ref();
    let mut last = LogPosition::START;
    let mut committed_events = 0usize;
    // Shared stream -> event ids committed to it.
    let mut shared_ids: HashMap<String, HashSet<Uuid>> = HashMap::new();
    let mut failed_ids: HashSet<Uuid> = HashSet::new();
    let (mut ok, mut conflicts) = (0, 0);
    for (stream_id, id, appended) in &singles {
        shared_ids.entry(stream_id.clone()).or_default().insert(*id);
        committed_events += 1;
        last = last.max(appended.position);
    }
    for batch in &batches {
        match &batch.result {
            Ok(appended) => {
                ok += 1;
                assert_eq!(appended.len(), batch.sent.len());
                for (sent, appended) in batch.sent.iter().zip(appended) {
                    assert_eq!(
                        appended.version,
                        sent.expected + sent.event_ids.len() as i64
                    );
                    committed_events += sent.event_ids.len();
                    last = last.max(appended.position);
                    if shared.contains(&sent.stream_id) {
                        shared_ids
                            .entry(sent.stream_id.clone())
                            .or_default()
                            .extend(&sent.event_ids);
                    } else {
                        let read = stream(store, &sent.stream_id).await;
                        assert_eq!(
                            read.iter().map(|e| e.event_id).collect::<Vec<_>>(),
                            sent.event_ids,
                            "a committed batch is incomplete"
                        );
                        assert_eq!(
                            read.iter().map(|e| e.version).collect::<Vec<_>>(),
                            (1..=sent.event_ids.len() as i64).collect::<Vec<_>>()
                        );
                        assert_eq!(read.last().unwrap().position, appended.position);
                        for value in &sent.claims {
                            assert_eq!(
                                store.claim_holder(value).await.unwrap().as_deref(),
                                Some(sent.stream_id.as_str())
                            );
                        }
                    }
                }
            }
            Err(AppendError::VersionConflict {
                stream_id,
                expected,
                actual,
            }) => {
                conflicts += 1;
                let sent = batch
                    .sent
                    .iter()
                    .find(|s| &s.stream_id == stream_id)
                    .expect("the conflict names a stream of the batch");
                assert!(
                    shared.contains(stream_id),
                    "only shared streams can conflict"
                );
                assert_eq!(*expected, sent.expected);
                assert!(actual > expected, "a conflict must report a newer version");
                for sent in &batch.sent {
                    failed_ids.extend(&sent.event_ids);
                    if !shared.contains(&sent.stream_id) {
                        assert!(stream(store, &sent.stream_id).await.is_empty());
                        for value in &sent.claims {
                            assert_eq!(store.claim_holder(value).await.unwrap(), None);
                        }
                    }
                }
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!(ok + conflicts, BATCH_WRITERS * ROUNDS);
    assert!(
        ok >= BATCH_WRITERS * ROUNDS / 2,
        "the batches without a shared stream cannot fail"
    );

    // Shared streams: versions 1..n without gaps, exactly the committed events.
    for stream_id in shared.iter() {
        let read = stream(store, stream_id).await;
        assert_eq!(
            read.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=read.len() as i64).collect::<Vec<_>>(),
            "versions of {stream_id} have gaps"
        );
        let ids: HashSet<Uuid> = read.iter().map(|e| e.event_id).collect();
        assert_eq!(ids, shared_ids.remove(stream_id).unwrap_or_default());
    }

    // The log: every committed event once, each committed batch contiguous in request order,
    // nothing of a failed batch.
    let log = settled_log(store, last).await;
    assert_eq!(log.len(), committed_events);
    let index: HashMap<Uuid, usize> = log
        .iter()
        .enumerate()
        .map(|(i, e)| (e.event_id, i))
        .collect();
    assert_eq!(index.len(), log.len(), "an event appears twice in the log");
    assert!(failed_ids.iter().all(|id| !index.contains_key(id)));
    for batch in batches.iter().filter(|b| b.result.is_ok()) {
        let at: Vec<usize> = batch
            .sent
            .iter()
            .flat_map(|s| &s.event_ids)
            .map(|id| index[id])
            .collect();
        assert!(
            at.windows(2).all(|w| w[1] == w[0] + 1),
            "a batch is not contiguous in the log: {at:?}"
        );
    }
}
