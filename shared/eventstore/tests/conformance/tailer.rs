//! Scenarios on following the log with a [`LogTailer`].

use crate::{event, events, read_whole_log, request, unique, wait_for_head, Harness, PATIENCE};
use appreg_eventstore::{
    AppendError, EventStore, LogPosition, LogTailer, NewEvent, StoreError, StoredEvent,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;
use uuid::Uuid;

/// A caught-up tailer waits (and may be cancelled while waiting without losing anything),
/// is woken by an append, honours its batch size and resumes from a checkpoint.
pub async fn tailer_waits_resumes_and_is_cancel_safe(h: Harness) {
    let store = h.store.clone();
    let poll = Duration::from_millis(50);
    let mut tailer = LogTailer::new(store.clone(), LogPosition::START, 10).with_poll_interval(poll);
    assert!(timeout(Duration::from_millis(200), tailer.next_batch())
        .await
        .is_err());
    assert_eq!(tailer.position(), LogPosition::START);

    // A waiting tailer returns the events of an append, all of them (one transaction).
    let waiting = tokio::spawn(async move {
        let batch = tailer.next_batch().await.unwrap();
        (tailer, batch)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stream = unique("app");
    let first = store.append(request(&stream, 0, events(3))).await.unwrap();
    let (mut tailer, batch) = timeout(PATIENCE, waiting).await.unwrap().unwrap();
    assert_eq!(
        batch.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(tailer.position(), first.position);

    // Batch size.
    let second = store.append(request(&stream, 3, events(5))).await.unwrap();
    let mut small = LogTailer::new(store.clone(), first.position, 2).with_poll_interval(poll);
    let mut sizes = Vec::new();
    let mut versions = Vec::new();
    while versions.len() < 5 {
        let batch = timeout(PATIENCE, small.next_batch())
            .await
            .unwrap()
            .unwrap();
        sizes.push(batch.len());
        versions.extend(batch.iter().map(|e| e.version));
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(versions, [4, 5, 6, 7, 8]);
    assert_eq!(small.position(), second.position);

    // The first tailer, resumed at its checkpoint, gets the same five.
    let batch = timeout(PATIENCE, tailer.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        batch.iter().map(|e| e.version).collect::<Vec<_>>(),
        [4, 5, 6, 7, 8]
    );

    // Cancelled while waiting: nothing lost.
    assert!(timeout(Duration::from_millis(100), small.next_batch())
        .await
        .is_err());
    assert_eq!(small.position(), second.position);
    let third = store
        .append(request(&stream, 8, vec![event(9)]))
        .await
        .unwrap();
    let batch = timeout(PATIENCE, small.next_batch())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch[0].version, 9);
    assert_eq!(small.position(), third.position);
}

/// What one writer did.
#[derive(Default)]
struct WriterLog {
    /// (event id, stream, version) of every committed event.
    committed: Vec<(Uuid, String, i64)>,
    /// Event ids of appends that failed: they must never be seen.
    failed: Vec<Uuid>,
    duplicate_rollbacks: usize,
    version_conflicts: usize,
    /// Position of the writer's last committed event.
    last: LogPosition,
}

const WRITERS: usize = 8;
const APPENDS_PER_WRITER: usize = 150;

/// Appends to a few streams of its own, 1–3 events at a time; about 10% of the appends roll back
/// after writing (an event id repeated in the batch or already stored) and about 5% have a
/// stale expected version.
async fn run_writer(store: Arc<dyn EventStore>, writer: usize, seed: u64) -> WriterLog {
    let mut rng = StdRng::seed_from_u64(seed ^ (writer as u64).wrapping_mul(0x9e37_79b9));
    let streams: Vec<String> = (0..3).map(|s| unique(&format!("w{writer}s{s}"))).collect();
    let mut versions = [0i64; 3];
    let mut log = WriterLog::default();
    for _ in 0..APPENDS_PER_WRITER {
        let s = rng.gen_range(0..streams.len());
        let count = rng.gen_range(1..=3u64);
        let mut batch: Vec<NewEvent> = events(count);
        let fresh_ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
        let roll: f64 = rng.gen();
        if roll < 0.10 {
            // Rolls back after its rows were inserted: the last event repeats an id.
            let mut dup = event(0);
            dup.event_id = if !log.committed.is_empty() && rng.gen_bool(0.5) {
                log.committed[rng.gen_range(0..log.committed.len())].0
            } else {
                batch[0].event_id
            };
            batch.push(dup);
            match store.append(request(&streams[s], versions[s], batch)).await {
                Err(AppendError::Backend(StoreError::DuplicateEventId)) => {}
                other => panic!("expected DuplicateEventId, got {other:?}"),
            }
            log.failed.extend(fresh_ids);
            log.duplicate_rollbacks += 1;
        } else if roll < 0.15 {
            let stale = if versions[s] > 0 { versions[s] - 1 } else { 1 };
            match store.append(request(&streams[s], stale, batch)).await {
                Err(AppendError::VersionConflict { actual, .. }) => assert_eq!(actual, versions[s]),
                other => panic!("expected VersionConflict, got {other:?}"),
            }
            log.failed.extend(fresh_ids);
            log.version_conflicts += 1;
        } else {
            let appended = store
                .append(request(&streams[s], versions[s], batch))
                .await
                .unwrap_or_else(|e| panic!("append failed: {e:?}"));
            for id in fresh_ids {
                versions[s] += 1;
                log.committed.push((id, streams[s].clone(), versions[s]));
            }
            assert_eq!(appended.version, versions[s]);
            log.last = log.last.max(appended.position);
        }
    }
    log
}

/// e. 8 concurrent writers (on PostgreSQL holding their transactions open 0–5 ms, so commits
/// land out of transaction-id order) while a tailer follows the log from START: the tailer sees
/// every committed event exactly once, no rolled-back one, each stream in version order without
/// gaps, and exactly what a full re-read returns afterwards.
pub async fn tailer_sees_every_committed_event_exactly_once(h: Harness) {
    let writer_store = h.delayed_writer_store().await;
    let seed: u64 = rand::random();
    println!("seed {seed}");

    // The follower stops once its checkpoint reaches the target: the position of the last
    // committed event, sent when the writers are done and `head` has reached it.
    let (target_tx, mut target_rx) = tokio::sync::watch::channel(None::<LogPosition>);
    let reader = h.store.clone();
    let follower = tokio::spawn(async move {
        let mut tailer = LogTailer::new(reader, LogPosition::START, 7)
            .with_poll_interval(Duration::from_millis(50));
        let mut seen: Vec<StoredEvent> = Vec::new();
        let mut batches = 0usize;
        loop {
            if let Some(target) = *target_rx.borrow_and_update() {
                if tailer.position() >= target {
                    break;
                }
            }
            tokio::select! {
                batch = tailer.next_batch() => {
                    let batch = batch.expect("read_log");
                    assert!(!batch.is_empty() && batch.len() <= 7);
                    batches += 1;
                    seen.extend(batch);
                }
                _ = target_rx.changed() => {}
            }
        }
        (seen, tailer.position(), batches)
    });

    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(run_writer(writer_store.clone(), w, seed)))
        .collect();
    let mut committed = Vec::new();
    let mut failed = HashSet::new();
    let (mut duplicates, mut conflicts) = (0, 0);
    let mut last = LogPosition::START;
    for writer in writers {
        let log = writer.await.expect("writer panicked");
        committed.extend(log.committed);
        failed.extend(log.failed);
        duplicates += log.duplicate_rollbacks;
        conflicts += log.version_conflicts;
        last = last.max(log.last);
    }
    assert!(
        duplicates > 0 && conflicts > 0,
        "the mix must include failures"
    );
    wait_for_head(h.store.as_ref(), last).await;
    assert_eq!(h.store.head().await.unwrap(), last);
    target_tx.send(Some(last)).unwrap();
    let (seen, position, batches) = timeout(PATIENCE, follower)
        .await
        .expect("the tailer did not reach the head")
        .expect("tailer task panicked");
    println!(
        "{} committed events in {batches} batches, {duplicates} rolled-back and {conflicts} \
         conflicting appends",
        committed.len()
    );

    // Exactly once, nothing else.
    let seen_ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "an event was seen twice");
    let missed = committed
        .iter()
        .filter(|(id, _, _)| !seen_ids.contains(id))
        .count();
    assert_eq!(missed, 0, "the tailer skipped {missed} committed events");
    assert_eq!(
        seen.len(),
        committed.len(),
        "the tailer saw events nobody committed"
    );
    let committed_by_id: HashMap<Uuid, (String, i64)> = committed
        .iter()
        .map(|(id, stream, version)| (*id, (stream.clone(), *version)))
        .collect();
    for event in &seen {
        assert!(
            !failed.contains(&event.event_id),
            "saw an event of a failed append"
        );
        let (stream, version) = committed_by_id
            .get(&event.event_id)
            .expect("saw an event nobody committed");
        assert_eq!((&event.stream_id, event.version), (stream, *version));
    }

    // Log order: strictly increasing positions, each stream 1, 2, 3… without gaps.
    assert!(seen.windows(2).all(|w| w[0].position < w[1].position));
    let mut next_version: HashMap<&str, i64> = HashMap::new();
    for event in &seen {
        let next = next_version.entry(&event.stream_id).or_insert(1);
        assert_eq!(
            event.version, *next,
            "stream {} out of order",
            event.stream_id
        );
        *next += 1;
    }
    assert_eq!(position, seen.last().unwrap().position);

    // A full re-read gives the same sequence, and nothing follows it.
    let reread = read_whole_log(h.store.as_ref(), 50).await;
    assert_eq!(reread, seen);
    assert!(h.store.read_log(position, 10).await.unwrap().is_empty());
}
