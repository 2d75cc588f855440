//! The deployment's NATS accounts (`deploy/nats/accounts.conf`) on a private `nats-server`: only
//! the relay's user may publish on the event subjects; the projector's and `nats setup`'s users
//! may do what their service does and nothing that changes the stream's content; the DCR saga
//! and the lifecycle process manager have no NATS user; and the real `appreg nats setup`,
//! `appreg relay` and `appreg projector` work end to end with their own credentials.

use appreg_eventstore::{AppendRequest, Database, NewEvent};
use appreg_test_support::nats::{NatsAccounts, NatsServer};
use async_nats::jetstream::{self, stream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const EXE: &str = env!("CARGO_BIN_EXE_appreg");
const SUBJECT: &str = "appreg.DEFAULT.application.application-forged.MemberAdded";

/// A client of a deployment user, with its service's inbox prefix.
async fn client(nats: &NatsServer, user: &str, password: &str, inbox: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password.into())
        .custom_inbox_prefix(format!("_INBOX.{inbox}"))
        .connect(nats.url())
        .await
        .unwrap_or_else(|e| panic!("{user} cannot connect: {e}"));
    jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(client)
}

fn password_of(credentials: &str) -> &str {
    credentials.split_once(':').unwrap().1
}

/// A command of the real binary with only the given settings (none of the caller's APPREG_*).
fn appreg(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(EXE);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("APPREG_") {
            command.env_remove(name);
        }
    }
    command
        .args(args)
        .envs(env.iter().copied())
        .env("APPREG_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn");
    command
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn messages(js: &jetstream::Context) -> u64 {
    let mut stream = js.get_stream("APPREG_EVENTS").await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// What a user that must not change the stream's content tries, each refused by the server
/// (the request gets no answer but a permissions violation).
async fn assert_cannot_change_the_stream(js: &jetstream::Context, who: &str) {
    let published = match js.publish(SUBJECT, "{}".into()).await {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!published, "{who} published on an event subject");
    js.client()
        .publish(SUBJECT, "{}".into())
        .await
        .unwrap_or_default();
    js.client().flush().await.unwrap_or_default();
    let update = stream::Config {
        name: "APPREG_EVENTS".into(),
        subjects: vec!["appreg.>".into(), "$JS.ACK.>".into(), "_INBOX.>".into()],
        ..Default::default()
    };
    assert!(
        js.update_stream(&update).await.is_err(),
        "{who} updated the stream"
    );
    let other = stream::Config {
        name: "SHADOW".into(),
        subjects: vec!["shadow.>".into()],
        ..Default::default()
    };
    assert!(
        js.create_stream(other).await.is_err(),
        "{who} created a stream"
    );
    let requests = [
        "STREAM.PURGE.APPREG_EVENTS",
        "STREAM.DELETE.APPREG_EVENTS",
        "STREAM.MSG.DELETE.APPREG_EVENTS",
        "CONSUMER.DELETE.APPREG_EVENTS.appreg-projector",
        "CONSUMER.CREATE.APPREG_EVENTS.shadow",
    ];
    for request in requests {
        let answer: Result<serde_json::Value, _> = js
            .request(request.to_string(), &serde_json::json!({"seq": 1}))
            .await;
        assert!(
            answer.is_err(),
            "{who} got an answer to {request}: {answer:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_permissions_only_the_relay_publishes_events() {
    let accounts = NatsAccounts::generate();
    let nats = NatsServer::start_with_accounts(&accounts);
    let url = nats.url();

    // No user, or a wrong password: refused.
    let anonymous = async_nats::ConnectOptions::new()
        .max_reconnects(0)
        .connect(&url)
        .await;
    let anonymous_refused = match anonymous {
        Err(_) => true,
        Ok(c) => c.flush().await.is_err(),
    };
    assert!(anonymous_refused, "an anonymous client connected");
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password("appreg-relay".into(), "wrong".into())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "a wrong password connected");

    // `appreg nats setup` with its own user creates the stream and the projector's and the
    // notifier's consumers.
    let setup = accounts.credentials("setup");
    let out = appreg(
        &["nats", "setup", "--nats-url", &url, "--wait", "20"],
        &[("APPREG_NATS_CREDENTIALS", &setup)],
    )
    .output()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "nats setup: {text}");
    assert_eq!(text.matches(": created").count(), 3, "{text}");

    // The relay's user publishes into the stream.
    let relay = accounts.credentials("relay");
    let relay_js = client(&nats, "appreg-relay", password_of(&relay), "appreg-relay").await;
    let ack = relay_js
        .publish(SUBJECT, "{}".into())
        .await
        .unwrap()
        .await
        .expect("the relay's user publishes an event");
    assert_eq!(ack.sequence, 1);
    let stream = relay_js.get_stream("APPREG_EVENTS").await.unwrap();
    stream.get_raw_message(1).await.expect("and reads it back");

    // The others cannot: neither publish on an event subject nor change the stream otherwise.
    let projector = accounts.credentials("projector");
    let projector_js = client(
        &nats,
        "appreg-projector",
        password_of(&projector),
        "appreg-projector",
    )
    .await;
    projector_js
        .get_stream("APPREG_EVENTS")
        .await
        .expect("the projector's user reads the stream's state");
    assert_cannot_change_the_stream(&projector_js, "the projector's user").await;
    // The notifier's user reads its own consumer (and pulls from it below), not the projector's.
    let notifier = accounts.credentials("notifier");
    let notifier_js = client(
        &nats,
        "appreg-notifier",
        password_of(&notifier),
        "appreg-notifier",
    )
    .await;
    let events = notifier_js
        .get_stream("APPREG_EVENTS")
        .await
        .expect("the notifier's user reads the stream's state");
    events
        .consumer_info("appreg-notifier")
        .await
        .expect("the notifier's user reads its consumer");
    assert!(
        events.consumer_info("appreg-projector").await.is_err(),
        "the notifier's user read the projector's consumer"
    );
    assert_cannot_change_the_stream(&notifier_js, "the notifier's user").await;
    let setup_js = client(
        &nats,
        "appreg-setup",
        password_of(&setup),
        "appreg-nats-setup",
    )
    .await;
    assert_cannot_change_the_stream(&setup_js, "nats setup's user").await;
    // The relay may publish events, yet not purge or delete them.
    for request in [
        "STREAM.PURGE.APPREG_EVENTS",
        "STREAM.DELETE.APPREG_EVENTS",
        "STREAM.MSG.DELETE.APPREG_EVENTS",
    ] {
        let answer: Result<serde_json::Value, _> = relay_js
            .request(request.to_string(), &serde_json::json!({"seq": 1}))
            .await;
        assert!(answer.is_err(), "the relay got an answer to {request}");
    }
    assert_eq!(messages(&relay_js).await, 1, "only the relay's message");

    // No NATS user for the services that do not use NATS.
    let conf = std::fs::read_to_string(appreg_test_support::nats::deploy_accounts_file()).unwrap();
    let users: Vec<&str> = conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("user: "))
        .collect();
    assert_eq!(
        users,
        [
            "appreg-relay",
            "appreg-projector",
            "appreg-notifier",
            "appreg-setup"
        ]
    );

    // End to end: the real relay and projector, each with its own user, on a fresh database.
    let db_url = appreg_test_support::postgres::fresh_postgres_url().await;
    let db = Database::connect(&db_url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let spawn = |service: &str, credentials: &str| {
        Killed(
            appreg(
                &[service],
                &[
                    ("APPREG_DATABASE_URL", &db_url),
                    ("APPREG_NATS_URL", &url),
                    ("APPREG_NATS_CREDENTIALS", credentials),
                    ("APPREG_READ_MODELS", "external"),
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
        )
    };
    let _relay = spawn("relay", &relay);
    let _projector = spawn("projector", &projector);
    let store = db.event_store().await.unwrap();
    let mut last = None;
    for i in 0..20 {
        let appended = store
            .append(AppendRequest {
                stream_id: format!("thing-{i}"),
                stream_type: "thing".into(),
                expected_version: 0,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: "ThingHappened".into(),
                    schema_version: 1,
                    data: serde_json::json!({"i": i}),
                    metadata: serde_json::json!({"environment": "DEFAULT"}),
                    recorded_at: chrono::Utc::now(),
                }],
                claims: vec![],
                releases: vec![],
            })
            .await
            .unwrap();
        last = Some(appended.position);
    }
    let last = last.unwrap();
    let Database::Postgres(pool) = &db else {
        unreachable!()
    };
    let started = Instant::now();
    loop {
        let checkpoint: Option<(i64, i64)> =
            sqlx::query_as("SELECT tx, pos FROM rm_checkpoints WHERE name = 'applications'")
                .fetch_optional(pool)
                .await
                .unwrap_or(None);
        if checkpoint.is_some_and(|(tx, pos)| (appreg_eventstore::LogPosition { tx, pos }) >= last)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the projector did not reach {last} through NATS within 30 s (at {checkpoint:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        messages(&relay_js).await,
        21,
        "the forged-looking test message and 20 events"
    );
    db.close().await;
}
