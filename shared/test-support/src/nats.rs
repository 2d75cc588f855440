//! A private `nats-server` process for tests that stop, restart or fill NATS (never the shared
//! server on 4222). Each one listens on a free loopback port with JetStream storage in a
//! directory of its own, and is killed (and its directory removed) on drop.
//!
//! A missing `nats-server` binary is a failure, never a skip: the helpers panic saying what to
//! install.
//!
//! Also a workload (writers appending through the event store, with stream ids that exercise
//! the subject escaping) and the exactly-once check shared by the relay's tests and the CLI's: every event of the log
//! is in the stream once, in log order, with its subject, headers and envelope.

use appreg_eventstore::{AppendRequest, EventStore, LogPosition, NewEvent, StoredEvent};
use appreg_worker::envelope::{self, Envelope, MSG_ID_HEADER, POSITION_HEADER, TRACEPARENT_HEADER};
use async_nats::jetstream;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The environment variable naming the `nats-server` binary for tests.
pub const NATS_SERVER_ENV: &str = "APPREG_TEST_NATS_SERVER";

/// Where Debian's `nats-server` package installs the binary.
const DEBIAN_NATS_SERVER: &str = "/usr/sbin/nats-server";

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A private NATS server with JetStream.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    store_dir: PathBuf,
    /// A configuration file (`-c`), and the environment it refers to.
    config: Option<PathBuf>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// The deployment's NATS accounts and users (`deploy/nats/accounts.conf`).
pub fn deploy_accounts_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/accounts.conf")
}

/// Fresh passwords for the users of `deploy/nats/accounts.conf`: the server's environment, and
/// each service's `APPREG_NATS_CREDENTIALS`.
#[derive(Debug, Clone)]
pub struct NatsAccounts {
    relay: String,
    projector: String,
    notifier: String,
    setup: String,
}

impl NatsAccounts {
    pub fn generate() -> NatsAccounts {
        let password = || {
            format!(
                "{}{}",
                uuid::Uuid::now_v7().simple(),
                uuid::Uuid::now_v7().simple()
            )
        };
        NatsAccounts {
            relay: password(),
            projector: password(),
            notifier: password(),
            setup: password(),
        }
    }

    /// The variables `accounts.conf` reads its passwords from.
    pub fn server_env(&self) -> Vec<(String, String)> {
        vec![
            ("APPREG_NATS_RELAY_PASSWORD".into(), self.relay.clone()),
            (
                "APPREG_NATS_PROJECTOR_PASSWORD".into(),
                self.projector.clone(),
            ),
            (
                "APPREG_NATS_NOTIFIER_PASSWORD".into(),
                self.notifier.clone(),
            ),
            ("APPREG_NATS_SETUP_PASSWORD".into(), self.setup.clone()),
        ]
    }

    /// `APPREG_NATS_CREDENTIALS` of a service (`relay`, `projector`, `notifier` or `setup`).
    ///
    /// # Panics
    /// For another service (none other has a NATS user).
    pub fn credentials(&self, service: &str) -> String {
        let password = match service {
            "relay" => &self.relay,
            "projector" => &self.projector,
            "notifier" => &self.notifier,
            "setup" => &self.setup,
            other => panic!("no NATS user for {other}"),
        };
        format!("appreg-{service}:{password}")
    }

    /// Every password (to check that none shows up where it must not).
    pub fn passwords(&self) -> [&str; 4] {
        [&self.relay, &self.projector, &self.notifier, &self.setup]
    }
}

/// The `nats-server` binary: `$APPREG_TEST_NATS_SERVER`, `/usr/sbin/nats-server`, or on PATH.
///
/// # Panics
/// If none is found.
pub fn nats_server_binary() -> PathBuf {
    if let Some(path) = std::env::var_os(NATS_SERVER_ENV) {
        return PathBuf::from(path);
    }
    if Path::new(DEBIAN_NATS_SERVER).exists() {
        return PathBuf::from(DEBIAN_NATS_SERVER);
    }
    if let Some(path) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.exists())
    }) {
        return path;
    }
    panic!(
        "nats-server is not installed: `apt-get install nats-server` (Debian), or point \
         {NATS_SERVER_ENV} at a nats-server binary"
    );
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener =
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

impl NatsServer {
    /// Starts a server on a free port with a fresh store directory, and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// If `nats-server` is missing or does not start.
    pub fn start() -> NatsServer {
        NatsServer::start_with_config(None, Vec::new())
    }

    /// Starts a server with the deployment's accounts and users (`deploy/nats/accounts.conf`)
    /// and `accounts`' passwords: a client needs a user's credentials and has its permissions.
    pub fn start_with_accounts(accounts: &NatsAccounts) -> NatsServer {
        NatsServer::start_with_config(Some(deploy_accounts_file()), accounts.server_env())
    }

    /// Starts a server with a configuration file (`-c`; the command line's port, address and
    /// store directory win over it) and `env` in its environment.
    pub fn start_with_config(config: Option<PathBuf>, env: Vec<(String, String)>) -> NatsServer {
        let store_dir =
            std::env::temp_dir().join(format!("appreg-nats-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&store_dir).expect("create the NATS store directory");
        let mut server = NatsServer {
            binary: nats_server_binary(),
            port: free_port(),
            store_dir,
            config,
            env,
            child: None,
        };
        server.spawn();
        server
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL): acknowledged messages not yet synced may be lost, as in a
    /// crash. A no-op when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port with the same store directory.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = self.store_dir.join("nats-server.log");
        let started = Instant::now();
        // The port may still be held for a moment by the previous process (or, rarely, taken
        // by someone else since free_port): retry the start.
        loop {
            let mut command = Command::new(&self.binary);
            if let Some(config) = &self.config {
                command.arg("-c").arg(config);
            }
            let mut child = command
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .args(["-js", "-a", "127.0.0.1", "-p"])
                .arg(self.port.to_string())
                .arg("-sd")
                .arg(&self.store_dir)
                .arg("-l")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {}: {e}", self.binary.display());
                });
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    if started.elapsed() > START_TIMEOUT {
                        panic!(
                            "nats-server exited ({status}) on port {}: {}",
                            self.port,
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
                if TcpStream::connect_timeout(
                    &SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port).into(),
                    Duration::from_millis(200),
                )
                .is_ok()
                {
                    self.child = Some(child);
                    return;
                }
                if started.elapsed() > START_TIMEOUT {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "nats-server did not accept connections on port {} within {START_TIMEOUT:?}: {}",
                        self.port,
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}

/// The number of messages in `stream` (0 if it does not exist yet or NATS is down).
pub async fn message_count(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until `stream` holds at least `n` messages.
pub async fn wait_for_messages(js: &jetstream::Context, stream: &str, n: u64, within: Duration) {
    let started = Instant::now();
    loop {
        let count = message_count(js, stream).await;
        if count >= n {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{stream} has {count} messages, not {n}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every event of the log, in log order, once all committed events are readable.
pub async fn all_events(store: &dyn EventStore) -> Vec<StoredEvent> {
    let committed = store.last_committed().await.unwrap();
    let started = Instant::now();
    while store.head().await.unwrap() < committed {
        assert!(started.elapsed() < Duration::from_secs(10), "horizon stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut events = Vec::new();
    let mut after = LogPosition::START;
    loop {
        let page = store.read_log(after, 1000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.position;
        events.extend(page);
    }
    events
}

/// Where a relay publishes: its stream and subject prefix (a `RelayConfig`'s `stream` and
/// `subject_prefix`).
#[derive(Debug, Clone, Copy)]
pub struct Published<'a> {
    pub stream: &'a str,
    pub subject_prefix: &'a str,
}

/// Waits until the relay has published every event of the log, then checks that the stream holds
/// each exactly once, in log order, with its subject, headers and envelope. Returns the number
/// of events.
pub async fn assert_exactly_once(
    js: &jetstream::Context,
    store: &dyn EventStore,
    published: Published<'_>,
    within: Duration,
) -> usize {
    let events = all_events(store).await;
    let n = events.len() as u64;
    wait_for_messages(js, published.stream, n, within).await;
    // Nothing more arrives (no late duplicate).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stream = js.get_stream(published.stream).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, n, "one message per event");
    assert_eq!(
        (state.first_sequence, state.last_sequence),
        (1, n),
        "a dense stream"
    );
    for (i, event) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        let message = stream.get_raw_message(seq).await.unwrap();
        assert_eq!(
            message.subject.as_str(),
            envelope::subject(published.subject_prefix, event),
            "subject of message {seq}"
        );
        let h = &message.headers;
        assert_eq!(
            h.get(MSG_ID_HEADER).map(|v| v.as_str()),
            Some(event.event_id.to_string().as_str()),
            "message {seq} is event {i} of the log"
        );
        assert_eq!(
            h.get(POSITION_HEADER).map(|v| v.as_str()),
            Some(event.position.to_string().as_str())
        );
        assert_eq!(
            h.get(TRACEPARENT_HEADER).map(|v| v.as_str().to_string()),
            event
                .metadata
                .get("traceparent")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        );
        let body: Envelope = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(body, Envelope::new(event), "envelope of message {seq}");
    }
    events.len()
}

/// Stream ids, types and environments that exercise the subject escaping.
pub fn stream_of(i: usize) -> (String, String, String) {
    match i % 5 {
        0 => (
            format!("application-0190f0c8-6d1a-7c7e-8a51-{i:012}"),
            "application".into(),
            "DEFAULT".into(),
        ),
        1 => (
            format!("user-DEFAULT/user.{i}@example.com"),
            "user".into(),
            "DEFAULT".into(),
        ),
        2 => (
            format!("odd id {i} *.>%20"),
            "odd type".into(),
            "prod.eu".into(),
        ),
        3 => (format!("ünïcødé-{i} ☃"), "user".into(), String::new()),
        _ => (format!("settings-{i}"), "settings".into(), "*".into()),
    }
}

fn metadata(environment: &str, n: u64) -> serde_json::Value {
    let mut m = serde_json::json!({
        "environment": environment,
        "actor": "tester",
        "correlation_id": uuid::Uuid::now_v7(),
        "causation_id": uuid::Uuid::now_v7(),
        "at": chrono::Utc::now(),
    });
    if n.is_multiple_of(3) {
        m["traceparent"] =
            serde_json::json!(format!("00-{:032x}-{:016x}-01", u128::from(n) + 1, n + 1));
    }
    m
}

fn new_event(n: u64, environment: &str) -> NewEvent {
    let recorded_at = chrono::Utc::now();
    NewEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: if n.is_multiple_of(2) {
            "ThingHappened"
        } else {
            "Other.Thing*"
        }
        .into(),
        schema_version: 1,
        data: serde_json::json!({"n": n, "text": "x".repeat((n % 7) as usize)}),
        metadata: metadata(environment, n),
        recorded_at: chrono::DateTime::from_timestamp_micros(recorded_at.timestamp_micros())
            .unwrap(),
    }
}

/// Appends `per_stream` events to each of `streams` streams with `writers` concurrent writers,
/// 1 to 3 events per append. Returns the number of events appended.
pub async fn append_batch(
    store: Arc<dyn EventStore>,
    first_stream: usize,
    streams: usize,
    per_stream: usize,
    writers: usize,
) -> u64 {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mine: Vec<usize> = (first_stream..first_stream + streams)
                .filter(|s| s % writers == w)
                .collect();
            let mut state: Vec<(String, String, String, i64)> = mine
                .iter()
                .map(|&s| {
                    let (id, ty, env) = stream_of(s);
                    (id, ty, env, 0)
                })
                .collect();
            let mut appended = 0u64;
            let mut round = 0usize;
            while state.iter().any(|s| (s.3 as usize) < per_stream) {
                for (k, (id, ty, env, version)) in state.iter_mut().enumerate() {
                    let left = per_stream - *version as usize;
                    if left == 0 {
                        continue;
                    }
                    let count = ((k + round) % 3 + 1).min(left);
                    let events = (0..count)
                        .map(|j| new_event(appended + j as u64, env))
                        .collect();
                    store
                        .append(AppendRequest {
                            stream_id: id.clone(),
                            stream_type: ty.clone(),
                            expected_version: *version,
                            events,
                            claims: vec![],
                            releases: vec![],
                        })
                        .await
                        .unwrap();
                    *version += count as i64;
                    appended += count as u64;
                }
                round += 1;
            }
            appended
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    total
}

/// Writers that keep appending (one event per append, a few ms apart) until stopped: commands
/// that go on while the relay or NATS is down.
pub struct Writers {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub fn start(store: Arc<dyn EventStore>, writers: usize, pause: Duration) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (store, stop, count) = (store.clone(), stop.clone(), count.clone());
                tokio::spawn(async move {
                    let (id, ty, env) = stream_of(10_000 + w);
                    let mut version = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let n = count.load(Ordering::Relaxed);
                        store
                            .append(AppendRequest {
                                stream_id: id.clone(),
                                stream_type: ty.clone(),
                                expected_version: version,
                                events: vec![new_event(n, &env)],
                                claims: vec![],
                                releases: vec![],
                            })
                            .await
                            .expect("commands succeed whatever NATS and the relay do");
                        version += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Writers { stop, count, tasks }
    }

    pub fn appended(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.count.load(Ordering::Relaxed)
    }
}
