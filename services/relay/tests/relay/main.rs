//! The relay against the real PostgreSQL (a fresh database per test) and a private nats-server
//! per test: exactly once, in order, through concurrent appends, crashes, NATS outages, a NATS
//! that lost acknowledged messages, and a standby taking over.

mod helpers;

use appreg_eventstore::LogPosition;
use appreg_worker::subject::{event_subject, parse_event_subject};
use appreg_worker::Envelope;
use helpers::*;
use std::time::{Duration, Instant};

/// 2,000 events over 200 streams, appended by 16 concurrent writers (commits out of id order)
/// while the relay runs: each is in JetStream once, in log order, with its subject, headers and
/// envelope. Then the lag is zero and the relay stops gracefully.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_published_once_in_log_order() {
    let env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    let started = Instant::now();
    let appended = append_batch(env.writer_store().await, 0, 200, 10, 16).await;
    assert_eq!(appended, 2000);
    let js = env.js().await;
    let n = assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(n, 2000);
    eprintln!(
        "2,000 events appended and published in {:?}",
        started.elapsed()
    );

    let events = all_events(env.store.as_ref()).await;
    let last = events.last().unwrap().position;
    let lag = appreg_relay::measure_lag(env.store.as_ref(), Some(&env.pool), last)
        .await
        .unwrap();
    assert_eq!((lag.events, lag.seconds), (0, 0.0));
    let lag = appreg_relay::measure_lag(env.store.as_ref(), Some(&env.pool), LogPosition::START)
        .await
        .unwrap();
    assert_eq!(lag.events, 2000);
    assert!(lag.seconds > 0.0);
    let without_pg = appreg_relay::measure_lag(env.store.as_ref(), None, events[1499].position)
        .await
        .unwrap();
    assert_eq!(without_pg.events, 500);

    let took = relay.stop().await;
    assert!(took < Duration::from_secs(3), "graceful stop took {took:?}");
}

/// The relay dies abruptly in the middle of a backlog while commands keep arriving; a new one
/// resumes from the stream's last message: no duplicate, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_relay_is_resumed_without_duplicate_or_gap() {
    let env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    append_batch(env.writer_store().await, 0, 100, 30, 8).await;
    let writers = Writers::start(env.store.clone(), 4, Duration::from_millis(5));
    let js = env.js().await;

    for round in 0..3 {
        let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
        let before = message_count(&js, &config.stream).await;
        wait_for_messages(&js, &config.stream, before + 700, Duration::from_secs(20)).await;
        relay.kill();
        let at_kill = message_count(&js, &config.stream).await;
        eprintln!("round {round}: killed with {at_kill} messages in the stream");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let appended = writers.stop().await;
    assert!(appended > 0);
    let n = assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(30),
    )
    .await;
    eprintln!("{n} events exactly once after 3 kills");
    relay.stop().await;
}

/// NATS is down for 10 s while commands keep succeeding; once it is back, the relay catches up
/// and every event is in the stream exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_for_ten_seconds_then_every_event_exactly_once() {
    let mut env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    let writers = Writers::start(env.store.clone(), 4, Duration::from_millis(5));
    let js = env.js().await;
    wait_for_messages(&js, &config.stream, 200, Duration::from_secs(10)).await;

    env.nats.kill();
    let before = writers.appended();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = writers.appended() - before;
    assert!(
        during > 100,
        "commands went on while NATS was down ({during})"
    );
    env.nats.restart();
    let back = Instant::now();

    tokio::time::sleep(Duration::from_millis(500)).await;
    let appended = writers.stop().await;
    let n = assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(20),
    )
    .await;
    eprintln!(
        "{appended} events appended, {during} while NATS was down; all {n} exactly once, {:?} after NATS came back",
        back.elapsed()
    );
    relay.stop().await;
}

/// NATS loses acknowledged messages (its store rolls back to an older copy, as after a crash
/// before the sync to disk), then loses everything: the relay re-publishes from PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_losing_acknowledged_messages_is_refilled_from_the_log() {
    let mut env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    let js = env.js().await;
    append_batch(env.store.clone(), 0, 50, 10, 4).await;
    assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(20),
    )
    .await;

    // Snapshot the server's store with 500 messages.
    env.nats.kill();
    let snapshot = env.nats.store_dir().with_extension("snapshot");
    copy_dir(env.nats.store_dir(), &snapshot);
    env.nats.restart();

    append_batch(env.store.clone(), 50, 50, 10, 4).await;
    assert_eq!(
        assert_exactly_once(
            &js,
            env.store.as_ref(),
            Published {
                stream: &config.stream,
                subject_prefix: &config.subject_prefix
            },
            Duration::from_secs(20)
        )
        .await,
        1000
    );

    // The 500 messages acknowledged since the snapshot are lost.
    env.nats.kill();
    std::fs::remove_dir_all(env.nats.store_dir()).unwrap();
    copy_dir(&snapshot, env.nats.store_dir());
    env.nats.restart();
    assert_eq!(message_count(&js, &config.stream).await, 500);
    append_batch(env.store.clone(), 100, 20, 10, 4).await;
    assert_eq!(
        assert_exactly_once(
            &js,
            env.store.as_ref(),
            Published {
                stream: &config.stream,
                subject_prefix: &config.subject_prefix
            },
            Duration::from_secs(20)
        )
        .await,
        1200
    );

    // Everything is lost (the stream too).
    env.nats.kill();
    std::fs::remove_dir_all(env.nats.store_dir()).unwrap();
    std::fs::create_dir_all(env.nats.store_dir()).unwrap();
    env.nats.restart();
    assert_eq!(
        assert_exactly_once(
            &js,
            env.store.as_ref(),
            Published {
                stream: &config.stream,
                subject_prefix: &config.subject_prefix
            },
            Duration::from_secs(20)
        )
        .await,
        1200
    );
    relay.stop().await;
    let _ = std::fs::remove_dir_all(snapshot);
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Two relays on one database: only the lock holder publishes; when it dies the standby takes
/// over within 5 s, and the stream is still exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_within_five_seconds() {
    let env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    let writers = Writers::start(env.store.clone(), 4, Duration::from_millis(5));
    let js = env.js().await;

    let active = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    wait_for_messages(&js, &config.stream, 100, Duration::from_secs(10)).await;
    let standby = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    let before = message_count(&js, &config.stream).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        message_count(&js, &config.stream).await > before + 50,
        "the active relay keeps publishing"
    );
    assert_eq!(standby.sent(), 0, "the standby sends nothing to NATS");
    let holders: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_one(&env.pool)
    .await
    .unwrap();
    assert_eq!(holders, 1, "one relay holds the lock");

    active.kill();
    let killed = Instant::now();
    while standby.sent() == 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "the standby did not take over within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at = message_count(&js, &config.stream).await;
    wait_for_messages(&js, &config.stream, at + 20, Duration::from_secs(5)).await;
    let takeover = killed.elapsed();
    assert!(
        takeover < Duration::from_secs(5),
        "publishing resumed {takeover:?} after the kill"
    );
    eprintln!("the standby published again {takeover:?} after the active relay died");

    let appended = writers.stop().await;
    let n = assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n as u64, appended);
    standby.stop().await;
}

/// Awkward stream ids, types and environments: subjects are valid, decode back to the envelope's
/// fields, and filter exactly one stream; a custom stream name and prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_escaping_round_trips_through_nats() {
    let env = Env::new().await;
    let config = test_config("T_ESCAPE", "t.run-1");
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    append_batch(env.store.clone(), 0, 25, 2, 5).await;
    let js = env.js().await;
    let n = assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(n, 50);

    let stream = js.get_stream(&config.stream).await.unwrap();
    for seq in 1..=50 {
        let message = stream.get_raw_message(seq).await.unwrap();
        let subject = message.subject.as_str();
        assert!(subject.starts_with("t.run-1."), "{subject}");
        assert_eq!(subject.split('.').count(), 6, "{subject}");
        assert!(!subject.contains(char::is_whitespace) && !subject.contains('*'));
        let body: Envelope = serde_json::from_slice(&message.payload).unwrap();
        let parts = parse_event_subject(&config.subject_prefix, subject).unwrap();
        assert_eq!(parts.stream_id, body.stream_id);
        assert_eq!(parts.stream_type, body.stream_type);
        assert_eq!(parts.event_type, body.event_type);
        assert_eq!(
            parts.environment,
            body.metadata["environment"].as_str().unwrap()
        );
    }
    // A subscriber filtering on one awkward stream sees that stream only.
    for i in 0..5 {
        let (id, ty, environment) = stream_of(i);
        let filter = format!(
            "{}.*",
            event_subject(&config.subject_prefix, &environment, &ty, &id, "x")
                .rsplit_once('.')
                .unwrap()
                .0
        );
        let last = stream
            .get_last_raw_message_by_subject(&filter)
            .await
            .unwrap_or_else(|e| panic!("{filter}: {e}"));
        let body: Envelope = serde_json::from_slice(&last.payload).unwrap();
        assert_eq!((body.stream_id, body.version), (id, 2), "{filter}");
    }
    relay.stop().await;
}

/// Someone who may publish on the relay's subjects appends messages of their own to the stream:
/// one with a huge `Appreg-Position`, one claiming a real event's position under another event
/// id, one without a position. The next relay trusts none of them (the event store does not
/// confirm them): it resumes after the last message a relay published, and the events appended
/// since reach the stream, each once and in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_positions_in_the_stream_are_not_trusted() {
    let env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    append_batch(env.store.clone(), 0, 10, 3, 2).await;
    let js = env.js().await;
    assert_eq!(
        assert_exactly_once(
            &js,
            env.store.as_ref(),
            Published {
                stream: &config.stream,
                subject_prefix: &config.subject_prefix
            },
            Duration::from_secs(20)
        )
        .await,
        30
    );
    relay.stop().await;

    let real = all_events(env.store.as_ref()).await;
    let forged = |position: String| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::now_v7().to_string().as_str());
        headers.insert("Appreg-Position", position.as_str());
        headers
    };
    let subject = "appreg.DEFAULT.application.forged.ApplicationCreated";
    for headers in [
        forged(format!("{}.1", i64::MAX)),
        forged(real[5].position.to_string()),
        async_nats::HeaderMap::new(),
    ] {
        js.publish_with_headers(subject, headers, "{}".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    append_batch(env.store.clone(), 10, 5, 2, 2).await;
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;

    // Every event of the log, once each and in log order, among the stream's messages.
    let events = all_events(env.store.as_ref()).await;
    assert_eq!(events.len(), 40);
    wait_for_messages(&js, &config.stream, 43, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = js.get_stream(&config.stream).await.unwrap();
    let mut ids = Vec::new();
    for seq in 1..=43 {
        let message = stream.get_raw_message(seq).await.unwrap();
        if let Some(id) = message.headers.get("Nats-Msg-Id") {
            ids.push(id.as_str().to_string());
        }
    }
    let published: Vec<String> = ids
        .into_iter()
        .filter(|id| events.iter().any(|e| e.event_id.to_string() == *id))
        .collect();
    let expected: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(published, expected, "each event once, in log order");
    assert_eq!(message_count(&js, &config.stream).await, 43);
    relay.stop().await;
}

/// An exact copy of what the relay would publish for an event it has not published yet (its
/// subject, headers and envelope: event ids and positions are visible to members) is appended to
/// the stream while the relay is down. The store confirms the copy's event, but not that it
/// follows the stream's last relay message in the log: the next relay resumes after that
/// message, so the events before the copied one are published, not skipped. (The copied event
/// itself and those after it follow once JetStream's duplicate window has passed: until then a
/// publish of its event id is a duplicate of the copy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_an_unpublished_event_does_not_make_the_relay_skip() {
    let env = Env::new().await;
    let config = test_config("APPREG_EVENTS", "appreg");
    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    append_batch(env.store.clone(), 0, 5, 2, 2).await;
    let js = env.js().await;
    assert_exactly_once(
        &js,
        env.store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(20),
    )
    .await;
    relay.stop().await;

    append_batch(env.store.clone(), 5, 5, 2, 2).await;
    let events = all_events(env.store.as_ref()).await;
    assert_eq!(events.len(), 20);
    let copied = &events[15];
    js.publish_with_headers(
        appreg_worker::envelope::subject(&config.subject_prefix, copied),
        appreg_worker::envelope::headers(copied),
        appreg_worker::envelope::body(copied).unwrap(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let relay = RelayHandle::start(&env.db_url, &env.nats.url(), config.clone()).await;
    // The 10 published, the copy, then the 5 events before the copied one.
    wait_for_messages(&js, &config.stream, 16, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stream = js.get_stream(&config.stream).await.unwrap();
    let mut ids = Vec::new();
    for seq in 12..=16 {
        let message = stream.get_raw_message(seq).await.unwrap();
        ids.push(message.headers.get("Nats-Msg-Id").unwrap().to_string());
    }
    let expected: Vec<String> = events[10..15]
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(
        ids, expected,
        "the events before the copied one, in log order"
    );
    relay.stop().await;
}
