//! A fresh database per test (PostgreSQL at `APPREG_TEST_DATABASE_URL`, default
//! 127.0.0.1:5432; a missing server fails the test), applications built from real domain
//! decisions appended through the command path (`appreg_commands`), and the process manager run as a task.

use appreg_commands::{Aggregate, ApplicationState};
use appreg_domain::application::{claim_changes, Application, ApplicationEvent};
use appreg_domain::catalogue::{Plan, PlanSecurity, PlanStatus, PlanValidation};
use appreg_domain::subscription::{Hook, NewApiKey};
use appreg_domain::{
    Actor, ApplicationId, ApplicationName, ApplicationType, ClientId, CreateApplication,
    DomainEvent, EnvironmentId, Policy, UserId,
};
use appreg_eventstore::{
    AppendRequest, Claim, Database, EventStore, LogPosition, NewEvent, StoredEvent,
};
use appreg_lifecycle::LifecycleConfig;
use appreg_test_support::postgres::{fresh_postgres_url, fresh_sqlite_url, SqliteFile};
use chrono::{SubsecRound, Utc};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

pub struct TestDb {
    pub db: Database,
    pub store: Arc<dyn EventStore>,
    _file: Option<SqliteFile>,
}

impl TestDb {
    pub async fn postgres() -> TestDb {
        let url = fresh_postgres_url().await;
        TestDb::open(&url, None).await
    }

    pub async fn sqlite() -> TestDb {
        let (file, url) = fresh_sqlite_url();
        TestDb::open(&url, Some(file)).await
    }

    async fn open(url: &str, file: Option<SqliteFile>) -> TestDb {
        let db = Database::connect(url, 8).await.unwrap();
        db.migrate().await.unwrap();
        appreg_lifecycle::migrate(&db).await.unwrap();
        // Idempotent.
        appreg_lifecycle::migrate(&db).await.unwrap();
        let store = db.event_store().await.unwrap();
        TestDb {
            db,
            store,
            _file: file,
        }
    }

    /// Starts a process manager.
    pub fn start(&self, step_pause: Duration) -> Manager {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(appreg_lifecycle::run(
            LifecycleConfig {
                step_pause,
                ..Default::default()
            },
            self.db.clone(),
            self.store.clone(),
            shutdown.clone(),
        ));
        Manager { shutdown, task }
    }

    /// Waits until the process manager has handled everything in the log (its checkpoint is at
    /// the last committed event, and stays there).
    pub async fn wait_idle(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut stable = 0;
        loop {
            let last = self.store.last_committed().await.unwrap();
            let at = appreg_lifecycle::checkpoint(&self.db).await.unwrap();
            if at == last && last != LogPosition::START {
                stable += 1;
                if stable == 3 {
                    return;
                }
            } else {
                stable = 0;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the process manager did not catch up: checkpoint {at}, log at {last}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event of an application, oldest first.
    pub async fn events(&self, id: ApplicationId) -> Vec<StoredEvent> {
        self.store
            .read_stream(&id.stream_id(), 0, 100_000)
            .await
            .unwrap()
    }

    /// Every event of the log.
    pub async fn log(&self) -> Vec<StoredEvent> {
        let mut out: Vec<StoredEvent> = Vec::new();
        loop {
            let after = out.last().map(|e| e.position).unwrap_or(LogPosition::START);
            let page = self.store.read_log(after, 1000).await.unwrap();
            if page.is_empty() {
                return out;
            }
            out.extend(page);
        }
    }

    /// A command path without cache or group commit, as a test's other writer.
    fn commands(&self) -> appreg_commands::Commands {
        appreg_commands::Commands::new(
            self.store.clone(),
            appreg_commands::CommandSettings {
                cache_mib: 0,
                group_commit_writers: 0,
                ..Default::default()
            },
        )
    }

    pub async fn app(&self, id: ApplicationId) -> Application {
        let loaded = self
            .commands()
            .load::<ApplicationState>(&id.stream_id())
            .await
            .unwrap();
        loaded.state.0.clone().unwrap()
    }

    /// Runs a command as the api would (an api-like metadata with `correlation`).
    pub async fn command(
        &self,
        id: ApplicationId,
        correlation: &str,
        mut decide: impl FnMut(
            &Application,
        ) -> Result<Vec<ApplicationEvent>, appreg_domain::DomainError>,
    ) -> Vec<ApplicationEvent> {
        let mut decided = Vec::new();
        let executed = self
            .commands()
            .execute::<ApplicationState, appreg_domain::DomainError, _>(
                &id.stream_id(),
                appreg_commands::Start::Current,
                &api_metadata(correlation),
                |state| {
                    decided = decide(state.0.as_ref().expect("the application exists"))?;
                    Ok(decided.clone())
                },
            )
            .await
            .unwrap();
        if executed.appended.is_some() {
            decided
        } else {
            Vec::new()
        }
    }

    /// Creates a simple application with a client_id (JWT plans need one), owned by alice.
    pub async fn create_app(&self) -> ApplicationId {
        let id = ApplicationId(Uuid::now_v7());
        let cmd = CreateApplication {
            id,
            environment: EnvironmentId::default_env(),
            name: ApplicationName::parse("Weather").unwrap(),
            description: None,
            domain: None,
            app_type: ApplicationType::Simple,
            client_id: Some(ClientId::parse(&format!("client-{}", id.0.simple())).unwrap()),
            redirect_uris: vec![],
            grant_types: vec![],
            client_uri: None,
            logo_uri: None,
            provider_id: None,
            owner: user("alice"),
        };
        let events = Application::create(cmd, &Policy::default()).unwrap();
        let now = Utc::now().trunc_subsecs(6);
        let mut after = None;
        for (i, e) in events.iter().enumerate() {
            after = Application::evolve(after, e, now, 1 + i as i64);
        }
        let (claims, releases) = claim_changes(None, after.as_ref());
        let to = |c: Vec<appreg_domain::UniqueClaim>| {
            c.into_iter()
                .map(|c| Claim {
                    scope: c.scope,
                    value: c.value,
                })
                .collect()
        };
        let meta = api_metadata("req-create");
        self.store
            .append(AppendRequest {
                stream_id: id.stream_id(),
                stream_type: ApplicationState::STREAM_TYPE.into(),
                expected_version: 0,
                events: events
                    .iter()
                    .map(|e| NewEvent {
                        event_id: Uuid::now_v7(),
                        event_type: e.event_type().into(),
                        schema_version: e.schema_version(),
                        data: e.data(),
                        metadata: meta.clone(),
                        recorded_at: now,
                    })
                    .collect(),
                claims: to(claims),
                releases: to(releases),
            })
            .await
            .unwrap();
        id
    }

    /// Subscribes to a new plan of its own; returns the subscription's id.
    pub async fn subscribe(
        &self,
        id: ApplicationId,
        security: PlanSecurity,
        validation: PlanValidation,
    ) -> String {
        let plan = plan(security, validation);
        let sub = format!("sub-{}", Uuid::now_v7().simple());
        let key = new_key();
        let s = sub.clone();
        self.command(id, "req-subscribe", move |app| {
            app.subscribe(s.clone(), &plan, &key)
        })
        .await;
        sub
    }

    pub async fn accept(&self, id: ApplicationId, sub: &str) {
        let key = new_key();
        self.command(id, "req-accept", |app| app.accept_subscription(sub, &key))
            .await;
    }

    /// Archives the application as the api would; returns the `ApplicationArchived` event.
    pub async fn archive(&self, id: ApplicationId, correlation: &str) -> StoredEvent {
        self.command(id, correlation, |app| app.archive()).await;
        self.last_of(id, "ApplicationArchived").await
    }

    /// Restores it (by the administrator root); returns the `ApplicationRestored` event.
    pub async fn restore(&self, id: ApplicationId, correlation: &str) -> StoredEvent {
        let admin = Actor {
            user: user("root"),
            admin: true,
        };
        self.command(id, correlation, |app| app.restore(&admin))
            .await;
        self.last_of(id, "ApplicationRestored").await
    }

    async fn last_of(&self, id: ApplicationId, event_type: &str) -> StoredEvent {
        self.events(id)
            .await
            .into_iter()
            .rev()
            .find(|e| e.event_type == event_type)
            .unwrap()
    }
}

/// A running process manager.
pub struct Manager {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Manager {
    /// Stops it the orderly way.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the process manager stops on shutdown")
            .unwrap();
    }

    /// Kills it where it stands (a crash: nothing after the last await point runs).
    pub async fn kill(self) {
        self.task.abort();
        assert!(self.task.await.unwrap_err().is_cancelled());
    }
}

pub fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

/// Metadata as the api writes it (with a trace context).
pub fn api_metadata(correlation: &str) -> Value {
    json!({
        "environment": EnvironmentId::DEFAULT,
        "actor": "alice",
        "actor_name": null,
        "actor_admin": false,
        "correlation_id": correlation,
        "causation_id": correlation,
        "at": Utc::now(),
        "traceparent": TRACEPARENT,
    })
}

pub fn plan(security: PlanSecurity, validation: PlanValidation) -> Plan {
    Plan {
        id: format!("plan-{}", Uuid::now_v7().simple()),
        api_id: "api-weather".into(),
        name: "Gold".into(),
        security,
        validation,
        status: PlanStatus::Published,
    }
}

pub fn new_key() -> NewApiKey {
    let id = Uuid::now_v7().simple().to_string();
    NewApiKey {
        prefix: id[..8].to_string(),
        hash: format!("{:0>64}", id),
        id: format!("key-{id}"),
    }
}

/// The subscriptions of [`populated`], by what the archive must do with them.
pub struct Subs {
    /// Accepted (AUTO, API key) with two valid keys after a renewal: closed, both revoked.
    pub accepted_two_keys: String,
    /// Pending (MANUAL): rejected.
    pub pending: String,
    /// Accepted (JWT, MANUAL then accepted), no key: closed.
    pub accepted_jwt: String,
    /// Paused (API key): closed, its key revoked.
    pub paused: String,
    /// Closed by a member before the archive: untouched, never reopened.
    pub closed_before: String,
    /// Rejected by an administrator before the archive: untouched, never reopened.
    pub rejected_before: String,
}

impl Subs {
    /// The subscriptions the archive ends.
    pub fn open(&self) -> Vec<&str> {
        vec![
            &self.accepted_two_keys,
            &self.pending,
            &self.accepted_jwt,
            &self.paused,
        ]
    }
}

/// An application with every kind of subscription and two members' notification settings.
pub async fn populated(t: &TestDb) -> (ApplicationId, Subs) {
    use PlanSecurity::*;
    use PlanValidation::*;
    let id = t.create_app().await;
    let accepted_two_keys = t.subscribe(id, ApiKey, Auto).await;
    let renewal = new_key();
    t.command(id, "req-renew", |app| {
        app.renew_api_key(
            &accepted_two_keys,
            &renewal,
            Utc::now(),
            chrono::Duration::days(1),
        )
    })
    .await;
    let pending = t.subscribe(id, ApiKey, Manual).await;
    let accepted_jwt = t.subscribe(id, Jwt, Manual).await;
    t.accept(id, &accepted_jwt).await;
    let paused = t.subscribe(id, ApiKey, Auto).await;
    t.command(id, "req-pause", |app| app.pause_subscription(&paused))
        .await;
    let closed_before = t.subscribe(id, ApiKey, Auto).await;
    t.command(id, "req-close", |app| {
        app.close_subscription(&closed_before)
    })
    .await;
    let rejected_before = t.subscribe(id, Oauth2, Manual).await;
    t.command(id, "req-reject", |app| {
        app.reject_subscription(&rejected_before, Some("no"))
    })
    .await;
    for (who, email) in [("alice", "alice@example.org"), ("bob", "bob@example.org")] {
        t.command(id, "req-notify", |app| {
            app.update_notifications(
                user(who),
                [Hook::SubscriptionAccepted, Hook::ApiKeyExpiring].into(),
                Some(sealed(email)),
            )
        })
        .await;
    }
    let app = t.app(id).await;
    assert_eq!(app.notifications.len(), 2);
    let keys = |s: &str| {
        app.subscription(s)
            .unwrap()
            .api_keys
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .count()
    };
    assert_eq!(keys(&accepted_two_keys), 2);
    assert_eq!(keys(&paused), 1);
    assert_eq!(keys(&closed_before), 0);
    (
        id,
        Subs {
            accepted_two_keys,
            pending,
            accepted_jwt,
            paused,
            closed_before,
            rejected_before,
        },
    )
}

pub fn decode(e: &StoredEvent) -> ApplicationEvent {
    ApplicationEvent::decode(&e.event_type, e.schema_version, e.data.clone()).unwrap()
}

/// The subscription an event is about, if any.
pub fn subscription_of(e: &StoredEvent) -> Option<String> {
    e.data
        .get("subscription_id")
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// The events caused by `trigger` (its event id as causation).
pub fn caused_by<'a>(events: &'a [StoredEvent], trigger: &StoredEvent) -> Vec<&'a StoredEvent> {
    let id = trigger.event_id.to_string();
    events
        .iter()
        .filter(|e| e.metadata["causation_id"] == id.as_str())
        .collect()
}

/// How many events of each type.
pub fn counts<'a>(events: impl IntoIterator<Item = &'a StoredEvent>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for e in events {
        *out.entry(e.event_type.clone()).or_default() += 1;
    }
    out
}

pub fn expect_counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

/// The events of the process manager (its actor).
pub fn by_manager(events: &[StoredEvent]) -> Vec<&StoredEvent> {
    events
        .iter()
        .filter(|e| e.metadata["actor"] == appreg_lifecycle::ACTOR)
        .collect()
}

/// The published metadata schema.
pub fn metadata_validator() -> jsonschema::Validator {
    appreg_test_support::schemas::validator("metadata/v1.json")
}

/// A step's metadata: caused by `trigger`, its correlation, environment and trace context
/// copied, the manager as actor, valid against the published schema.
pub fn assert_step_metadata(e: &StoredEvent, trigger: &StoredEvent) {
    let m = &e.metadata;
    assert_eq!(m["causation_id"], trigger.event_id.to_string().as_str());
    assert_eq!(m["correlation_id"], trigger.metadata["correlation_id"]);
    assert_eq!(m["environment"], trigger.metadata["environment"]);
    assert_eq!(m["traceparent"], trigger.metadata["traceparent"]);
    assert_eq!(m["actor"], appreg_lifecycle::ACTOR);
    assert!(m["at"].is_string());
    let errors: Vec<String> = metadata_validator()
        .iter_errors(m)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "invalid metadata {m}: {errors:?}");
}

/// A stand-in for an address the api sealed (the lifecycle only carries it).
pub fn sealed(value: &str) -> appreg_domain::Personal {
    let hex: String = value.bytes().map(|b| format!("{b:02x}")).collect();
    appreg_domain::Personal::sealed(format!("pd1.s{hex}")).expect("a sealed form")
}
