//! Scenarios on `append_each`: independent appends written together, each all or nothing on its
//! own, each with its own answer — as if each had been an `append`.

use crate::{assert_stored_as, events, request, unique, Harness};
use appreg_eventstore::{AppendError, EventStore, StoreError};
use std::collections::HashMap;
use std::sync::Arc;

async fn stream_len(store: &dyn EventStore, stream_id: &str) -> usize {
    store.read_stream(stream_id, 0, 10_000).await.unwrap().len()
}

/// a. A stale request among good ones gets its own `VersionConflict` and writes nothing; the
/// others (a new stream with two events, an existing stream) are written and answered with their
/// own versions.
pub async fn each_answers_every_request_on_its_own(h: Harness) {
    let store = h.store.as_ref();
    let (fresh, existing, stale) = (unique("fresh"), unique("existing"), unique("stale"));
    store
        .append(request(&existing, 0, events(1)))
        .await
        .unwrap();
    store.append(request(&stale, 0, events(1))).await.unwrap();

    let fresh_events = events(2);
    let existing_events = events(1);
    let answers = store
        .append_each(vec![
            request(&fresh, 0, fresh_events.clone()),
            request(&stale, 0, events(1)),
            request(&existing, 1, existing_events.clone()),
        ])
        .await;

    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0].as_ref().unwrap().version, 2);
    match &answers[1] {
        Err(AppendError::VersionConflict {
            stream_id,
            expected,
            actual,
        }) => {
            assert_eq!((stream_id, *expected, *actual), (&stale, 0, 1));
        }
        other => panic!("the stale request must conflict alone, got {other:?}"),
    }
    assert_eq!(answers[2].as_ref().unwrap().version, 2);

    let stored = store.read_stream(&fresh, 0, 10).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_stored_as(&stored[0], &fresh_events[0], &fresh, 1);
    assert_stored_as(&stored[1], &fresh_events[1], &fresh, 2);
    let stored = store.read_stream(&existing, 0, 10).await.unwrap();
    assert_stored_as(&stored[1], &existing_events[0], &existing, 2);
    assert_eq!(
        stream_len(store, &stale).await,
        1,
        "a refused request wrote nothing"
    );
}

/// b. Two requests carrying the same event id: exactly one is written, the other is refused with
/// `DuplicateEventId`, and each answer says which.
pub async fn each_with_a_duplicate_event_id_answers_each(h: Harness) {
    let store = h.store.as_ref();
    let (one, two) = (unique("one"), unique("two"));
    let shared = events(1);
    let answers = store
        .append_each(vec![
            request(&one, 0, shared.clone()),
            request(&two, 0, shared.clone()),
        ])
        .await;
    let written: Vec<bool> = answers.iter().map(Result::is_ok).collect();
    assert_eq!(
        written.iter().filter(|w| **w).count(),
        1,
        "exactly one of the two is written: {answers:?}"
    );
    for (answer, stream_id) in answers.iter().zip([&one, &two]) {
        match answer {
            Ok(appended) => {
                assert_eq!(appended.version, 1);
                assert_eq!(stream_len(store, stream_id).await, 1);
            }
            Err(AppendError::Backend(StoreError::DuplicateEventId)) => {
                assert_eq!(stream_len(store, stream_id).await, 0);
            }
            Err(other) => panic!("unexpected answer {other:?}"),
        }
    }
}

/// c. Many writers call `append_each` at once, each batch holding new streams and one request on
/// a stream that every writer appends to (so batches race on it): every answer is true — an `Ok`
/// event is stored at the answered version, a refused one is nowhere — nothing is lost or doubled.
pub async fn concurrent_each_loses_and_doubles_nothing(h: Harness) {
    let store = h.store.clone();
    let hot = unique("hot");
    let mut writers = Vec::new();
    for _ in 0..6 {
        let (store, hot) = (store.clone(), hot.clone());
        writers.push(tokio::spawn(async move {
            let mut written = Vec::new();
            let mut refused = 0usize;
            for _ in 0..15 {
                let hot_version = store.read_stream(&hot, 0, 10_000).await.unwrap().len() as i64;
                let mut requests = vec![request(&hot, hot_version, events(1))];
                for _ in 0..3 {
                    requests.push(request(&unique("cold"), 0, events(1)));
                }
                let sent = requests.clone();
                for (request, answer) in sent.iter().zip(store.append_each(requests).await) {
                    match answer {
                        Ok(appended) => written.push((
                            request.stream_id.clone(),
                            appended.version,
                            request.events[0].event_id,
                        )),
                        Err(AppendError::VersionConflict { .. }) => {
                            assert_eq!(request.stream_id, hot, "only the hot stream races");
                            refused += 1;
                        }
                        Err(other) => panic!("unexpected answer {other:?}"),
                    }
                }
            }
            (written, refused)
        }));
    }
    let mut written = Vec::new();
    for writer in writers {
        let (w, _) = writer.await.unwrap();
        written.extend(w);
    }
    let store: Arc<dyn EventStore> = store;
    let mut by_stream: HashMap<String, Vec<(i64, uuid::Uuid)>> = HashMap::new();
    for (stream_id, version, event_id) in written {
        by_stream
            .entry(stream_id)
            .or_default()
            .push((version, event_id));
    }
    for (stream_id, mut answered) in by_stream {
        answered.sort();
        let stored: Vec<(i64, uuid::Uuid)> = store
            .read_stream(&stream_id, 0, 10_000)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.version, e.event_id))
            .collect();
        assert_eq!(
            stored, answered,
            "{stream_id}: the store holds exactly the answered appends"
        );
    }
}
