//! `appreg relay` as real processes against PostgreSQL and a private nats-server: the active relay
//! is SIGKILLed mid-stream, the standby takes over within 5 s, a restarted relay resumes, and
//! JetStream holds every event exactly once, in order.

use super::EXE;
use appreg_eventstore::Database;
use appreg_relay::RelayConfig;
use appreg_test_support::nats::{
    append_batch, assert_exactly_once, message_count, wait_for_messages, NatsServer, Published,
    Writers,
};
use appreg_test_support::postgres::fresh_postgres_url;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const STREAM: &str = "CLI_EVENTS";
const PREFIX: &str = "cli.appreg";

/// A running `appreg relay` and what it logged.
struct RelayProcess {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl RelayProcess {
    fn start(db_url: &str, nats_url: &str) -> RelayProcess {
        let mut child = Command::new(EXE)
            .args(["relay", "--database-url", db_url, "--nats-url", nats_url])
            .env("APPREG_NATS_STREAM", STREAM)
            .env("APPREG_NATS_SUBJECT_PREFIX", PREFIX)
            .env("APPREG_LOG_FORMAT", "text")
            .env("RUST_LOG", "appreg_relay=info,warn")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (stderr, sink) = (child.stderr.take().unwrap(), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        RelayProcess { child, log }
    }

    fn is_active(&self) -> bool {
        self.log.lock().unwrap().contains("relay: active")
    }

    fn sigkill(mut self) {
        let status = Command::new("kill")
            .args(["-KILL", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait();
    }

    fn sigterm(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(
                    exit.success(),
                    "appreg relay exits cleanly on SIGTERM: {exit}"
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "appreg relay did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_processes_sigkill_standby_takeover_and_restart() {
    let nats = NatsServer::start();
    let db_url = fresh_postgres_url().await;
    let db = Database::connect(&db_url, 8).await.unwrap();
    db.migrate().await.unwrap();
    let store = db.event_store().await.unwrap();
    let config = RelayConfig {
        stream: STREAM.into(),
        subject_prefix: PREFIX.into(),
        ..RelayConfig::default()
    };
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    // A backlog, and commands that keep coming.
    append_batch(store.clone(), 0, 100, 30, 8).await;
    let writers = Writers::start(store.clone(), 4, Duration::from_millis(5));

    let first = RelayProcess::start(&db_url, &nats.url());
    wait_for_messages(&js, STREAM, 500, Duration::from_secs(20)).await;
    assert!(first.is_active());
    let second = RelayProcess::start(&db_url, &nats.url());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!second.is_active(), "the second relay stands by");

    // SIGKILL the active relay mid-stream: the standby takes over within 5 s.
    let at_kill = message_count(&js, STREAM).await;
    first.sigkill();
    let killed = Instant::now();
    wait_for_messages(&js, STREAM, at_kill + 300, Duration::from_secs(5)).await;
    let takeover = killed.elapsed();
    assert!(second.is_active());
    eprintln!("standby took over and published 300 more events {takeover:?} after the SIGKILL");

    // SIGKILL that one too while it works; a restarted relay resumes.
    let at_kill = message_count(&js, STREAM).await;
    second.sigkill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let third = RelayProcess::start(&db_url, &nats.url());
    wait_for_messages(&js, STREAM, at_kill + 100, Duration::from_secs(10)).await;

    let appended = writers.stop().await;
    let n = assert_exactly_once(
        &js,
        store.as_ref(),
        Published {
            stream: &config.stream,
            subject_prefix: &config.subject_prefix,
        },
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(n as u64, 3000 + appended);
    third.sigterm();
    db.close().await;
}
