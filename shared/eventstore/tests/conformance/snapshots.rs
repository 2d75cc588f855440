//! Scenarios on snapshots: at most one per stream, the newest of its shape, beside the log and
//! never part of it.

use crate::{events, read_whole_log, request, settled_log, unique, Harness, PATIENCE};
use appreg_eventstore::{Database, EventStore, LogPosition, Snapshot, StoredEvent};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngCore, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

fn snapshot(stream_id: &str, schema_version: i32, version: i64, data: &[u8]) -> Snapshot {
    Snapshot {
        stream_id: stream_id.to_string(),
        schema_version,
        version,
        data: data.to_vec(),
    }
}

async fn read(store: &dyn EventStore, stream_id: &str) -> Option<Snapshot> {
    store.read_snapshot(stream_id).await.expect("read_snapshot")
}

async fn write(store: &dyn EventStore, snapshot: &Snapshot) {
    store
        .write_snapshot(snapshot)
        .await
        .expect("write_snapshot");
}

/// Asserts `actual == expected` without printing megabytes of bytes on failure.
fn assert_same_snapshot(actual: Option<Snapshot>, expected: &Snapshot, what: &str) {
    let actual = actual.unwrap_or_else(|| panic!("{what}: no snapshot"));
    assert_eq!(actual.stream_id, expected.stream_id, "{what}: stream_id");
    assert_eq!(
        (actual.schema_version, actual.version),
        (expected.schema_version, expected.version),
        "{what}: (schema_version, version)"
    );
    assert_eq!(
        actual.data.len(),
        expected.data.len(),
        "{what}: data length"
    );
    if let Some(at) = (0..actual.data.len()).find(|&i| actual.data[i] != expected.data[i]) {
        panic!(
            "{what}: data differs first at byte {at}: {:#04x} instead of {:#04x}",
            actual.data[at], expected.data[at]
        );
    }
}

/// a. A stream without a snapshot has none, whether or not it has events.
pub async fn absent_snapshot_is_none(h: Harness) {
    let store = h.store.as_ref();
    assert_eq!(read(store, &unique("nothing")).await, None);
    assert_eq!(read(store, "").await, None);

    let stream = unique("app");
    store.append(request(&stream, 0, events(3))).await.unwrap();
    assert_eq!(read(store, &stream).await, None);

    // A snapshot of another stream is not this one's (no prefix or pattern match).
    write(store, &snapshot(&format!("{stream}-2"), 1, 1, b"x")).await;
    write(store, &snapshot(&stream[..stream.len() - 1], 1, 1, b"y")).await;
    assert_eq!(read(store, &stream).await, None);
    assert_eq!(read(store, &format!("{stream}%")).await, None);
}

/// b. What is read is exactly what was written: every byte value (not UTF-8), empty data, a
/// 1 MiB payload, large versions.
pub async fn snapshot_round_trip_is_byte_exact(h: Harness) {
    let store = h.store.as_ref();

    let stream = unique("app-élan-✓");
    let all_bytes: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    assert!(std::str::from_utf8(&all_bytes).is_err());
    let first = snapshot(&stream, 1, 1, &all_bytes);
    write(store, &first).await;
    assert_same_snapshot(read(store, &stream).await, &first, "every byte value");
    assert_eq!(read(store, &stream).await, Some(first));

    // Invalid UTF-8 sequences, NULs and a lone continuation byte, replacing the first.
    let odd = snapshot(
        &stream,
        1,
        2,
        b"\0\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\xf0\x28\x8c\xbc\x80\0",
    );
    write(store, &odd).await;
    assert_eq!(read(store, &stream).await, Some(odd));

    let empty = snapshot(&unique("empty"), 3, 7, b"");
    write(store, &empty).await;
    assert_eq!(read(store, &empty.stream_id).await, Some(empty));

    let mut big = vec![0u8; 1 << 20];
    StdRng::seed_from_u64(0xb16).fill_bytes(&mut big);
    let large = snapshot(&stream, 1, 1 << 40, &big);
    write(store, &large).await;
    assert_same_snapshot(read(store, &stream).await, &large, "1 MiB payload");

    // A 1 MiB payload is replaced as a whole by a small one (nothing of it is left behind).
    let small = snapshot(&stream, 1, (1 << 40) + 1, b"small");
    write(store, &small).await;
    assert_eq!(read(store, &stream).await, Some(small));

    let extremes = snapshot(&unique("extremes"), i32::MAX, i64::MAX, &[0x80]);
    write(store, &extremes).await;
    assert_eq!(read(store, &extremes.stream_id).await, Some(extremes));
}

/// c. A snapshot of the same shape and a lower version does not replace a higher one.
pub async fn lower_version_does_not_replace_a_higher_one(h: Harness) {
    let store = h.store.as_ref();
    let stream = unique("app");
    let high = snapshot(&stream, 2, 10, b"state at 10");
    write(store, &high).await;
    for version in [9, 1, 0, -1] {
        write(store, &snapshot(&stream, 2, version, b"older state")).await;
        assert_eq!(
            read(store, &stream).await.as_ref(),
            Some(&high),
            "{version}"
        );
    }
    let higher = snapshot(&stream, 2, 11, b"state at 11");
    write(store, &higher).await;
    assert_eq!(read(store, &stream).await, Some(higher));
}

/// d. A snapshot of the same shape and the same version is a no-op: the first one stays.
pub async fn equal_version_is_a_no_op(h: Harness) {
    let store = h.store.as_ref();
    let stream = unique("app");
    let first = snapshot(&stream, 1, 5, b"first");
    write(store, &first).await;
    write(store, &snapshot(&stream, 1, 5, b"second, same version")).await;
    write(store, &snapshot(&stream, 1, 5, b"")).await;
    assert_eq!(read(store, &stream).await, Some(first.clone()));
    // Writing the very same snapshot again is harmless too.
    write(store, &first).await;
    assert_eq!(read(store, &stream).await, Some(first));
}

/// e. A snapshot of another shape replaces the stored one whatever the versions (the stored one
/// is unusable by the writer's code), in both directions.
pub async fn another_schema_version_replaces_it_regardless_of_version(h: Harness) {
    let store = h.store.as_ref();
    let stream = unique("app");
    write(store, &snapshot(&stream, 1, 100, b"shape 1 at 100")).await;

    let newer_shape_lower_version = snapshot(&stream, 2, 3, b"shape 2 at 3");
    write(store, &newer_shape_lower_version).await;
    assert_eq!(read(store, &stream).await, Some(newer_shape_lower_version));

    let newer_shape_same_version = snapshot(&stream, 3, 3, b"shape 3 at 3");
    write(store, &newer_shape_same_version).await;
    assert_eq!(read(store, &stream).await, Some(newer_shape_same_version));

    // An older shape replaces it too (e.g. an old binary during a rolling deploy).
    let older_shape = snapshot(&stream, 1, 1, b"shape 1 at 1");
    write(store, &older_shape).await;
    assert_eq!(read(store, &stream).await, Some(older_shape.clone()));

    // And then the usual rule holds within the new shape.
    write(store, &snapshot(&stream, 1, 1, b"same version")).await;
    write(store, &snapshot(&stream, 1, 0, b"lower version")).await;
    assert_eq!(read(store, &stream).await, Some(older_shape));
    let next = snapshot(&stream, 1, 2, b"shape 1 at 2");
    write(store, &next).await;
    assert_eq!(read(store, &stream).await, Some(next));
}

/// f. Snapshots of different streams are independent: writing one neither replaces nor blocks
/// another, whatever their versions and shapes.
pub async fn snapshots_of_different_streams_are_independent(h: Harness) {
    let store = h.store.as_ref();
    let a = snapshot(&unique("a"), 1, 50, b"a at 50");
    let b = snapshot(&unique("b"), 1, 5, b"b at 5");
    write(store, &a).await;
    assert_eq!(read(store, &b.stream_id).await, None);
    write(store, &b).await;
    assert_eq!(read(store, &a.stream_id).await, Some(a.clone()));
    assert_eq!(read(store, &b.stream_id).await, Some(b.clone()));

    // A lower version or another shape written to `b` does nothing to `a`, and the reverse.
    let b2 = snapshot(&b.stream_id, 2, 1, b"b in shape 2");
    write(store, &b2).await;
    write(store, &snapshot(&a.stream_id, 1, 10, b"a at 10")).await;
    assert_eq!(read(store, &a.stream_id).await, Some(a));
    assert_eq!(read(store, &b.stream_id).await, Some(b2));
}

/// The data of the snapshot at `version` in [`concurrent_writers_leave_the_highest`]: about
/// 1 KB, different for every version, so a torn or mixed-up row is seen.
fn payload(stream: usize, version: i64) -> Vec<u8> {
    let mut data = format!("stream {stream} version {version};").into_bytes();
    data.resize(1024, (version % 251) as u8);
    data
}

const SNAPSHOT_WRITERS: usize = 16;
const SNAPSHOT_VERSIONS: i64 = 60;
const SNAPSHOT_STREAMS: usize = 2;

/// g. 16 tasks each write every version 1..=N of the same streams in a random order, while a
/// reader watches: the highest version is what stays, a reader never sees the version go back,
/// and every snapshot read is one that was written whole.
pub async fn concurrent_writers_leave_the_highest(h: Harness) {
    let streams: Arc<Vec<String>> =
        Arc::new((0..SNAPSHOT_STREAMS).map(|_| unique("hot")).collect());
    let barrier = Arc::new(tokio::sync::Barrier::new(SNAPSHOT_WRITERS + 1));
    let writers: Vec<_> = (0..SNAPSHOT_WRITERS)
        .map(|writer| {
            let store = h.store.clone();
            let streams = streams.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(0x5a9 ^ writer as u64);
                let mut order: Vec<(usize, i64)> = (0..SNAPSHOT_STREAMS)
                    .flat_map(|s| (1..=SNAPSHOT_VERSIONS).map(move |v| (s, v)))
                    .collect();
                order.shuffle(&mut rng);
                barrier.wait().await;
                for (s, version) in order {
                    let data = payload(s, version);
                    write(store.as_ref(), &snapshot(&streams[s], 1, version, &data)).await;
                }
            })
        })
        .collect();

    let reader = {
        let store = h.store.clone();
        let streams = streams.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let mut seen = [0i64; SNAPSHOT_STREAMS];
            let mut reads = 0usize;
            while seen.iter().any(|&v| v < SNAPSHOT_VERSIONS) {
                for (s, stream) in streams.iter().enumerate() {
                    if let Some(found) = read(store.as_ref(), stream).await {
                        assert_eq!(found.stream_id, *stream);
                        assert_eq!(found.schema_version, 1);
                        assert!(
                            found.version >= seen[s],
                            "stream {s}: read version {} after {}",
                            found.version,
                            seen[s]
                        );
                        assert!(
                            found.data == payload(s, found.version),
                            "stream {s}: the data read is not that of version {}",
                            found.version
                        );
                        seen[s] = found.version;
                        reads += 1;
                    }
                }
                tokio::task::yield_now().await;
            }
            reads
        })
    };

    tokio::time::timeout(PATIENCE * 6, async {
        for writer in writers {
            writer.await.expect("writer task");
        }
    })
    .await
    .expect("the snapshot writers did not finish");
    let reads = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("the reader never saw the highest versions")
        .expect("reader task");
    assert!(reads > 0);

    for (s, stream) in streams.iter().enumerate() {
        assert_eq!(
            read(h.store.as_ref(), stream).await,
            Some(snapshot(
                stream,
                1,
                SNAPSHOT_VERSIONS,
                &payload(s, SNAPSHOT_VERSIONS)
            )),
            "stream {s}"
        );
    }
}

/// Everything the log answers, to compare before and after snapshot writes.
#[derive(Debug, PartialEq)]
struct LogView {
    streams: Vec<Vec<StoredEvent>>,
    read_streams: Vec<StoredEvent>,
    log: Vec<StoredEvent>,
    head: LogPosition,
    last_committed: LogPosition,
}

async fn log_view(store: &dyn EventStore, stream_ids: &[String]) -> LogView {
    let mut streams = Vec::new();
    for id in stream_ids {
        streams.push(store.read_stream(id, 0, 10_000).await.unwrap());
    }
    LogView {
        streams,
        read_streams: store.read_streams(stream_ids).await.unwrap(),
        log: read_whole_log(store, 100).await,
        head: store.head().await.unwrap(),
        last_committed: store.last_committed().await.unwrap(),
    }
}

/// h. Writing snapshots changes nothing that the log answers (`read_stream`, `read_streams`,
/// `read_log`, `head`, `last_committed`), nor the versions appends are checked against.
pub async fn writing_a_snapshot_does_not_change_the_log(h: Harness) {
    let store = h.store.as_ref();
    let a = unique("a");
    let b = unique("b");
    let without_events = unique("no-events");
    store.append(request(&a, 0, events(3))).await.unwrap();
    let last = store.append(request(&b, 0, events(2))).await.unwrap();
    settled_log(store, last.position).await;
    let ids = vec![a.clone(), b.clone(), without_events.clone()];
    let before = log_view(store, &ids).await;
    assert_eq!(before.log.len(), 5);

    write(store, &snapshot(&a, 1, 3, b"a at 3")).await;
    write(store, &snapshot(&b, 1, 1, b"b at 1")).await;
    // The store does not check a snapshot against the stream: it is the writer's word.
    write(store, &snapshot(&b, 1, 99, b"b ahead of its stream")).await;
    write(store, &snapshot(&without_events, 1, 4, b"no events")).await;
    write(store, &snapshot(&a, 2, 1, b"a in shape 2")).await;

    assert_eq!(log_view(store, &ids).await, before);
    // The stream without events still has none: an append to it starts at version 0.
    let first = store
        .append(request(&without_events, 0, events(1)))
        .await
        .unwrap();
    assert_eq!(first.version, 1);
    let next = store.append(request(&b, 2, events(1))).await.unwrap();
    assert_eq!(next.version, 3);
    let log = settled_log(store, next.position).await;
    assert_eq!(log.len(), 7);
    assert_eq!(log[..5], before.log[..]);
    // Appends leave snapshots alone.
    assert_eq!(
        read(store, &b).await,
        Some(snapshot(&b, 1, 99, b"b ahead of its stream"))
    );
}

/// i. A snapshot write and an append of the same stream never wait for each other. On
/// PostgreSQL: a snapshot is written while an append of its stream holds its transaction open,
/// and an append commits (and snapshots are read) while a snapshot writer holds the stream's
/// snapshot row. On SQLite (one writer at a time, so they do queue) appends and snapshot writes
/// of one stream interleave from many tasks, and every one of them completes.
pub async fn snapshot_writes_and_appends_do_not_block_each_other(h: Harness) {
    let store = h.store.clone();
    let stream = unique("app");
    store.append(request(&stream, 0, events(1))).await.unwrap();
    let quick = Duration::from_secs(3);

    match &h.db {
        Database::Postgres(pool) => {
            // An appender of the stream, inside its (still open) transaction.
            let mut appender = pool.begin().await.unwrap();
            sqlx::query(
                "INSERT INTO events (event_id, stream_id, stream_type, version, event_type, \
                 schema_version, data, metadata, recorded_at) \
                 VALUES (gen_random_uuid(), $1, 'application', 2, 'Pending', 1, '{}', '{}', now())",
            )
            .bind(&stream)
            .execute(&mut *appender)
            .await
            .unwrap();
            let during_append = snapshot(&stream, 1, 1, b"at 1");
            tokio::time::timeout(quick, store.write_snapshot(&during_append))
                .await
                .expect("a snapshot write waited for an open append of its stream")
                .unwrap();
            appender.rollback().await.unwrap();
            assert_eq!(read(store.as_ref(), &stream).await, Some(during_append));

            // A snapshot writer of the stream, holding its row.
            let mut writer = pool.begin().await.unwrap();
            sqlx::query("SELECT 1 FROM snapshots WHERE stream_id = $1 FOR UPDATE")
                .bind(&stream)
                .fetch_one(&mut *writer)
                .await
                .unwrap();
            let appended =
                tokio::time::timeout(quick, store.append(request(&stream, 1, events(1))))
                    .await
                    .expect("an append waited for a snapshot writer of its stream")
                    .unwrap();
            assert_eq!(appended.version, 2);
            let seen = tokio::time::timeout(quick, store.read_snapshot(&stream))
                .await
                .expect("a snapshot read waited for a snapshot writer")
                .unwrap();
            assert_eq!(seen.map(|s| s.version), Some(1));
            writer.rollback().await.unwrap();
            let versions: Vec<i64> = store
                .read_stream(&stream, 0, 10)
                .await
                .unwrap()
                .iter()
                .map(|e| e.version)
                .collect();
            assert_eq!(versions, [1, 2], "the rolled-back append left nothing");
        }
        Database::Sqlite(_) => {
            let tasks: Vec<_> = (0..8i64)
                .map(|task| {
                    let store = store.clone();
                    let stream = stream.clone();
                    tokio::spawn(async move {
                        for round in 0..10i64 {
                            if task % 2 == 0 {
                                let version = round * 8 + task + 1;
                                write(store.as_ref(), &snapshot(&stream, 1, version, b"s")).await;
                            } else if task == 1 {
                                // The one appender of the stream (its first event is version 1).
                                store
                                    .append(request(&stream, round + 1, events(1)))
                                    .await
                                    .unwrap();
                            } else {
                                store
                                    .append(request(&unique("other"), 0, events(1)))
                                    .await
                                    .unwrap();
                            }
                        }
                    })
                })
                .collect();
            tokio::time::timeout(PATIENCE, async {
                for task in tasks {
                    task.await.unwrap();
                }
            })
            .await
            .expect("appends and snapshot writes did not all complete");
            assert_eq!(
                read(store.as_ref(), &stream).await.map(|s| s.version),
                Some(79)
            );
            let versions: Vec<i64> = store
                .read_stream(&stream, 0, 100)
                .await
                .unwrap()
                .iter()
                .map(|e| e.version)
                .collect();
            assert_eq!(versions, (1..=11).collect::<Vec<_>>());
        }
    }
}
