//! The application read model: one row per application (its folded state as JSON) and one per
//! membership, for the list queries, plus the users and environments known. Kept by a projector
//! (inside the api, tailing the event store, or the `appreg projector` service, from JetStream);
//! its checkpoint is written in the same transaction as its rows, so replays change nothing.
//!
//! The SQL is portable (PostgreSQL and SQLite run the same statements); `with_pool!` expands
//! the same code once per backend. This crate never decides anything: it only folds events
//! with the domain's `evolve`, and never runs a side effect.
//!
//! The statements that write the model are built from a [`Tables`] set: the live one ([`LIVE`])
//! or the shadow one ([`SHADOW`]) that [`rebuild`] replays the whole log into before swapping it
//! in.

use appreg_domain::environment::{EnvironmentEvent, UserEvent};
use appreg_domain::{
    Application, ApplicationEvent, ApplicationId, ClientRegistrationSettings, DomainEvent,
    SettingsEvent,
};
use appreg_eventstore::{Database, EventStore, LogPosition, LogTailer, StoreError, StoredEvent};
use chrono::SecondsFormat;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

mod replay;

/// Stream types (the `stream_type` column) of the streams the model folds.
pub const APPLICATION_STREAM: &str = "application";
pub const SETTINGS_STREAM: &str = "settings";
pub const ENVIRONMENT_STREAM: &str = "environment";
pub const USER_STREAM: &str = "user";

/// Why the read model could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ReadModelError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An event the model cannot fold (undecodable data, an unknown type or schema version):
    /// retrying it gives the same answer, so a projector parks it after a few attempts.
    #[error("event {event_id} ({event_type}) cannot be projected: {reason}")]
    Event {
        event_id: uuid::Uuid,
        event_type: String,
        reason: String,
    },
    #[error("read model: {0}")]
    Internal(String),
}

impl ReadModelError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ReadModelError::Internal(e.to_string())
    }

    fn event(e: &StoredEvent, reason: impl std::fmt::Display) -> Self {
        ReadModelError::Event {
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            reason: reason.to_string(),
        }
    }
}

impl From<sqlx::Error> for ReadModelError {
    fn from(e: sqlx::Error) -> Self {
        ReadModelError::Store(StoreError::from(e))
    }
}

/// Applies the read models' migrations (the event store's come first: see the api's `migrate`).
pub async fn migrate(db: &Database) -> Result<(), StoreError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await?,
        Database::Sqlite(pool) => migrator.run(pool).await?,
    }
    Ok(())
}

/// Decodes a stored application event (upcasting older schema versions).
pub fn decode_app(e: &StoredEvent) -> Result<ApplicationEvent, ReadModelError> {
    ApplicationEvent::decode(&e.event_type, e.schema_version, e.data.clone())
        .map_err(|err| ReadModelError::event(e, err))
}

const CHECKPOINT: &str = "applications";
/// The only projection `rebuild` knows.
pub const PROJECTION: &str = CHECKPOINT;
/// Events per projected batch, and the least time between two reads once caught up (so a busy
/// log is projected in a few large transactions rather than one per event).
const BATCH: i64 = 500;
const GATHER: Duration = Duration::from_millis(5);
/// Rows per set-based statement (bounded by SQLite's limit on bound parameters).
const CHUNK: usize = 200;

/// A set of read-model tables, by name: the live set the api reads, or the shadow set a rebuild
/// fills. Every statement that writes the model is built from one of these. Checkpoints of
/// both sets are rows of `rm_checkpoints`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub applications: &'static str,
    pub members: &'static str,
    pub users: &'static str,
    pub environments: &'static str,
    /// The set's row in `rm_checkpoints`.
    pub checkpoint: &'static str,
    /// Index names (PostgreSQL keeps an index's name when its table is renamed, so the shadow
    /// set's indexes are named apart and renamed at the swap).
    pub applications_index: &'static str,
    pub members_index: &'static str,
}

/// The tables the api serves from (created by the migrations).
pub const LIVE: Tables = Tables {
    applications: "rm_applications",
    members: "rm_application_members",
    users: "rm_users",
    environments: "rm_environments",
    checkpoint: CHECKPOINT,
    applications_index: "rm_applications_env_status",
    members_index: "rm_application_members_user",
};

/// The tables a rebuild replays into before the swap.
pub const SHADOW: Tables = Tables {
    applications: "rm_applications_rebuild",
    members: "rm_application_members_rebuild",
    users: "rm_users_rebuild",
    environments: "rm_environments_rebuild",
    checkpoint: "applications_rebuild",
    applications_index: "rm_applications_rebuild_env_status",
    members_index: "rm_application_members_rebuild_user",
};

impl Tables {
    fn all(&self) -> [&'static str; 4] {
        [
            self.applications,
            self.members,
            self.users,
            self.environments,
        ]
    }

    /// The set's secondary indexes, as in the migrations.
    fn index_ddl(&self) -> [String; 2] {
        [
            format!(
                "CREATE INDEX {} ON {} (environment, status, created_at, id)",
                self.applications_index, self.applications
            ),
            format!(
                "CREATE INDEX {} ON {} (environment, user_id)",
                self.members_index, self.members
            ),
        ]
    }

    /// The set's DDL: the same columns, keys and indexes as the migrations (portable SQL).
    fn ddl(&self) -> Vec<String> {
        let mut ddl = self.tables_ddl(true);
        ddl.extend(self.index_ddl());
        ddl
    }

    /// The set's tables; without `keys`, the applications and members tables have no primary
    /// key yet (a PostgreSQL rebuild adds them with [`Tables::key_ddl`] once the rows are in:
    /// one sort each instead of one index insert per row).
    fn tables_ddl(&self, keys: bool) -> Vec<String> {
        let (id, members_key) = if keys {
            (
                "id TEXT PRIMARY KEY",
                ", PRIMARY KEY (application_id, user_id)",
            )
        } else {
            ("id TEXT NOT NULL", "")
        };
        vec![
            format!(
                "CREATE TABLE {} ({id}, environment TEXT NOT NULL, status TEXT NOT NULL, \
                 created_at TEXT NOT NULL, doc TEXT NOT NULL)",
                self.applications
            ),
            format!(
                "CREATE TABLE {} (application_id TEXT NOT NULL, user_id TEXT NOT NULL, environment TEXT NOT NULL, \
                 role TEXT NOT NULL{members_key})",
                self.members
            ),
            format!(
                "CREATE TABLE {} (environment TEXT NOT NULL, user_id TEXT NOT NULL, name TEXT, email TEXT, \
                 first_seen TEXT NOT NULL, PRIMARY KEY (environment, user_id))",
                self.users
            ),
            format!(
                "CREATE TABLE {} (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL)",
                self.environments
            ),
        ]
    }

    /// The primary keys `tables_ddl(false)` leaves out, the applications' and the members'
    /// (PostgreSQL), each as its unique index (named `<table>_pkey`, as an inline key's), then
    /// the constraint that makes it the primary key: the index can be built beside the
    /// table's other index (two `CREATE INDEX` do not block each other; `ADD PRIMARY KEY`
    /// would).
    fn key_ddl(&self) -> [[String; 2]; 2] {
        let key = |table: &str, columns: &str| {
            [
                format!("CREATE UNIQUE INDEX {table}_pkey ON {table} ({columns})"),
                format!(
                    "ALTER TABLE {table} ADD CONSTRAINT {table}_pkey PRIMARY KEY USING INDEX {table}_pkey"
                ),
            ]
        };
        [
            key(self.applications, "id"),
            key(self.members, "application_id, user_id"),
        ]
    }
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// Writes the rows of `$fresh` (events past the table set's checkpoint, in log order) into the
/// table set `$t` inside the open transaction `$tx`: the touched applications' documents are
/// folded in memory and written back in a few set-based statements per batch. Shared by the
/// projector, the rebuild's replay and the rebuild's final catch-up. The caller writes the
/// checkpoint.
macro_rules! write_fresh {
    ($tx:ident, $t:expr, $fresh:expr) => {{
            // The touched applications' documents, folded in memory, written back in a few
            // set-based statements per batch (not a few per event).
            let mut order: Vec<String> = Vec::new();
            let mut states: HashMap<String, Option<Application>> = HashMap::new();
            let mut existed: std::collections::HashSet<String> = Default::default();
            let app_events: Vec<(&StoredEvent, String)> = $fresh
                .iter()
                .filter(|e| e.stream_type == APPLICATION_STREAM)
                .map(|e| (*e, e.stream_id.strip_prefix("application-").unwrap_or(&e.stream_id).to_string()))
                .collect();
            for (_, id) in &app_events {
                if !states.contains_key(id) {
                    states.insert(id.clone(), None);
                    order.push(id.clone());
                }
            }
            for chunk in order.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("SELECT id, doc FROM {} WHERE id IN (", $t.applications));
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind(id.clone());
                }
                ids.push_unseparated(")");
                let rows: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *$tx).await.map_err(db_err)?;
                for (id, doc) in rows {
                    states.insert(id.clone(), Some(parse_doc(&doc)?));
                    existed.insert(id);
                }
            }
            for (e, id) in &app_events {
                let state = states.get_mut(id).expect("every touched id has an entry");
                if state.as_ref().is_some_and(|a| a.version >= e.version) {
                    continue; // already included
                }
                *state = Application::evolve(state.take(), &decode_app(e)?, e.recorded_at, e.version);
            }
            let mut rows = Vec::with_capacity(order.len());
            let mut members = Vec::new();
            for id in &order {
                let Some(app) = &states[id] else { continue };
                let status = if app.status == appreg_domain::ApplicationStatus::Active { "ACTIVE" } else { "ARCHIVED" };
                rows.push((
                    id.clone(),
                    app.environment.to_string(),
                    status,
                    app.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    serde_json::to_string(app).map_err(ReadModelError::internal)?,
                ));
                for (user, role) in &app.members {
                    members.push((id.clone(), user.to_string(), app.environment.to_string(), role.as_str()));
                }
            }
            for chunk in rows.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("INSERT INTO {} (id, environment, status, created_at, doc) ", $t.applications));
                q.push_values(chunk, |mut b, (id, env, status, created, doc)| {
                    b.push_bind(id.clone()).push_bind(env.clone()).push_bind(*status).push_bind(created.clone()).push_bind(doc.clone());
                });
                q.push(" ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc");
                q.build().execute(&mut *$tx).await.map_err(db_err)?;
            }
            // Only applications projected before can have membership rows to replace.
            let known: Vec<&String> = existed.iter().collect();
            for chunk in known.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("DELETE FROM {} WHERE application_id IN (", $t.members));
                let mut ids = q.separated(", ");
                for id in chunk {
                    ids.push_bind((*id).clone());
                }
                ids.push_unseparated(")");
                q.build().execute(&mut *$tx).await.map_err(db_err)?;
            }
            for chunk in members.chunks(CHUNK) {
                let mut q = sqlx::QueryBuilder::new(format!("INSERT INTO {} (application_id, user_id, environment, role) ", $t.members));
                q.push_values(chunk, |mut b, (id, user, env, role)| {
                    b.push_bind(id.clone()).push_bind(user.clone()).push_bind(env.clone()).push_bind(*role);
                });
                q.build().execute(&mut *$tx).await.map_err(db_err)?;
            }
            for e in $fresh.iter() {
                let at = e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true);
                if e.stream_type == USER_STREAM {
                    let UserEvent::UserFirstSeen(u) = UserEvent::decode(&e.event_type, e.schema_version, e.data.clone())
                        .map_err(|err| ReadModelError::event(e, err))?;
                    let env = e.metadata.get("environment").and_then(|v| v.as_str()).unwrap_or_default();
                    sqlx::query(&format!(
                        "INSERT INTO {} (environment, user_id, name, email, first_seen) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (environment, user_id) DO NOTHING",
                        $t.users
                    ))
                    .bind(env)
                    .bind(u.user.as_str())
                    .bind(u.name.as_deref())
                    .bind(u.email.as_deref())
                    .bind(&at)
                    .execute(&mut *$tx)
                    .await
                    .map_err(db_err)?;
                } else if e.stream_type == ENVIRONMENT_STREAM {
                    let EnvironmentEvent::EnvironmentCreated(c) =
                        EnvironmentEvent::decode(&e.event_type, e.schema_version, e.data.clone())
                            .map_err(|err| ReadModelError::event(e, err))?;
                    sqlx::query(&format!(
                        "INSERT INTO {} (id, name, created_at) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                        $t.environments
                    ))
                    .bind(c.id.as_str())
                    .bind(&c.name)
                    .bind(&at)
                    .execute(&mut *$tx)
                    .await
                    .map_err(db_err)?;
                }
            }
    }};
}

pub struct ReadModel {
    db: Database,
    position: watch::Sender<LogPosition>,
    /// Each environment's client registration settings and their stream version, read on every
    /// create: kept current by this process's writes and by the projector (other instances'
    /// writes), never moved back to an older version.
    settings: std::sync::RwLock<HashMap<String, (ClientRegistrationSettings, i64)>>,
    /// Kept by another process (`appreg projector`): this one only follows its checkpoint
    /// ([`ReadModel::follow_checkpoint`]) and caches no settings (it sees no settings event).
    external: bool,
    policy: RetryPolicy,
}

fn db_err(e: sqlx::Error) -> ReadModelError {
    ReadModelError::from(appreg_eventstore::StoreError::from(e))
}

fn parse_doc(doc: &str) -> Result<Application, ReadModelError> {
    serde_json::from_str(doc)
        .map_err(|e| ReadModelError::internal(format!("read model document: {e}")))
}

impl ReadModel {
    pub async fn new(db: Database) -> Result<ReadModel, ReadModelError> {
        let row: Option<(i64, i64)> = with_pool!(&db, pool => sqlx::query_as("SELECT tx, pos FROM rm_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(pool)
            .await)
        .map_err(db_err)?;
        let start = match row {
            Some((tx, pos)) => LogPosition { tx, pos },
            None => LogPosition::START,
        };
        Ok(ReadModel {
            db,
            position: watch::Sender::new(start),
            settings: Default::default(),
            external: false,
            policy: RetryPolicy::default(),
        })
    }

    /// A read model kept by another process: run [`ReadModel::follow_checkpoint`] to see it move.
    pub async fn external(db: Database) -> Result<ReadModel, ReadModelError> {
        let mut read = ReadModel::new(db).await?;
        read.external = true;
        Ok(read)
    }

    /// The database the model lives in.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Whether another process keeps this model.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// Sets how poison events are retried before they are parked.
    pub fn with_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Reads the stored checkpoint and moves [`ReadModel::position`] forward to it.
    pub async fn refresh_position(&self) -> Result<LogPosition, ReadModelError> {
        let row: Option<(i64, i64)> = with_pool!(&self.db, pool => sqlx::query_as("SELECT tx, pos FROM rm_checkpoints WHERE name = $1")
            .bind(CHECKPOINT)
            .fetch_optional(pool)
            .await)
        .map_err(db_err)?;
        let stored = row
            .map(|(tx, pos)| LogPosition { tx, pos })
            .unwrap_or(LogPosition::START);
        self.advance(stored);
        Ok(self.position())
    }

    fn advance(&self, to: LogPosition) {
        self.position.send_if_modified(|p| {
            if *p < to {
                *p = to;
                true
            } else {
                false
            }
        });
    }

    /// Follows the checkpoint another process writes, until `cancel` fires: woken by the
    /// projector's notifications on PostgreSQL, and polled every `poll` in any case.
    pub async fn follow_checkpoint(self: Arc<Self>, poll: Duration, cancel: CancellationToken) {
        let mut listener = match &self.db {
            Database::Postgres(pool) => {
                match sqlx::postgres::PgListener::connect_with(pool).await {
                    Ok(mut l) => match l.listen(NOTIFY_CHANNEL).await {
                        Ok(()) => Some(l),
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot listen for read-model notifications; polling");
                            None
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot listen for read-model notifications; polling");
                        None
                    }
                }
            }
            Database::Sqlite(_) => None,
        };
        loop {
            if let Err(e) = self.refresh_position().await {
                tracing::warn!(error = %e, "cannot read the read-model checkpoint");
            }
            let woken = async {
                match listener.as_mut() {
                    Some(l) => {
                        let _ = l.try_recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = woken => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// The log position the read model includes.
    pub fn position(&self) -> LogPosition {
        *self.position.borrow()
    }

    /// The cached settings of an environment, if known.
    pub fn cached_settings(&self, env: &str) -> Option<(ClientRegistrationSettings, i64)> {
        if self.external {
            return None;
        }
        let cache = self
            .settings
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(env).copied()
    }

    /// Remembers an environment's settings at a version, unless a newer one is known.
    pub fn remember_settings(&self, env: &str, settings: ClientRegistrationSettings, version: i64) {
        let mut cache = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match cache.get(env) {
            Some((_, known)) if *known >= version => {}
            _ => {
                cache.insert(env.to_string(), (settings, version));
            }
        }
    }

    /// Applies a settings event to the cache: the next version is folded in; after a gap the
    /// entry is dropped (the next read loads it from the event store).
    fn follow_settings(&self, e: &StoredEvent) {
        let Some(env) = e.stream_id.strip_prefix("settings-") else {
            return;
        };
        let mut cache = self
            .settings
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some((settings, version)) = cache.get_mut(env) else {
            return;
        };
        if e.version <= *version {
            return;
        }
        match SettingsEvent::decode(&e.event_type, e.schema_version, e.data.clone()) {
            Ok(event) if e.version == *version + 1 => {
                settings.evolve(&event);
                *version = e.version;
            }
            _ => {
                cache.remove(env);
            }
        }
    }

    /// Waits until the read model includes `target`; false after `timeout`.
    pub async fn wait_for(&self, target: LogPosition, timeout: Duration) -> bool {
        let mut rx = self.position.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies a batch of events in one transaction, with the checkpoint.
    pub async fn apply(&self, events: &[StoredEvent]) -> Result<(), ReadModelError> {
        self.apply_marked(events, None).await
    }

    /// Applies a batch of events in one transaction, with the checkpoint and, when given, the
    /// consumer's [`Mark`].
    pub async fn apply_marked(
        &self,
        events: &[StoredEvent],
        mark: Option<&Mark>,
    ) -> Result<(), ReadModelError> {
        if events.is_empty() {
            return Ok(());
        }
        for e in events.iter().filter(|e| e.stream_type == SETTINGS_STREAM) {
            self.follow_settings(e);
        }
        let applied = apply_parking(&self.db, &LIVE, events, self.policy, mark).await?;
        self.advance(applied);
        Ok(())
    }

    /// A page of applications of an environment with a status: all of them (`member: None`,
    /// administrators) or those the user is a member of. Oldest first.
    pub async fn list(
        &self,
        env: &str,
        member: Option<&str>,
        status: &str,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<Application>, i64), ReadModelError> {
        let (docs, total): (Vec<String>, i64) = match member {
            Some(user) => with_pool!(&self.db, pool => {
                let docs = sqlx::query_scalar(
                    "SELECT a.doc FROM rm_applications a JOIN rm_application_members m ON m.application_id = a.id \
                     WHERE m.environment = $1 AND m.user_id = $2 AND a.status = $3 ORDER BY a.created_at, a.id LIMIT $4 OFFSET $5",
                )
                .bind(env).bind(user).bind(status).bind(limit).bind(offset)
                .fetch_all(pool).await.map_err(db_err)?;
                let total = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM rm_applications a JOIN rm_application_members m ON m.application_id = a.id \
                     WHERE m.environment = $1 AND m.user_id = $2 AND a.status = $3",
                )
                .bind(env).bind(user).bind(status)
                .fetch_one(pool).await.map_err(db_err)?;
                (docs, total)
            }),
            None => with_pool!(&self.db, pool => {
                let docs = sqlx::query_scalar(
                    "SELECT doc FROM rm_applications WHERE environment = $1 AND status = $2 ORDER BY created_at, id LIMIT $3 OFFSET $4",
                )
                .bind(env).bind(status).bind(limit).bind(offset)
                .fetch_all(pool).await.map_err(db_err)?;
                let total = sqlx::query_scalar("SELECT COUNT(*) FROM rm_applications WHERE environment = $1 AND status = $2")
                    .bind(env).bind(status)
                    .fetch_one(pool).await.map_err(db_err)?;
                (docs, total)
            }),
        };
        let apps = docs
            .iter()
            .map(|d| parse_doc(d))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((apps, total))
    }

    /// A user's profile (name, email) in an environment, once first seen.
    pub async fn user_profile(
        &self,
        env: &str,
        user: &str,
    ) -> Result<Option<(Option<String>, Option<String>)>, ReadModelError> {
        with_pool!(&self.db, pool => sqlx::query_as("SELECT name, email FROM rm_users WHERE environment = $1 AND user_id = $2")
            .bind(env)
            .bind(user)
            .fetch_optional(pool)
            .await)
        .map_err(db_err)
    }

    /// Every environment (id, name), `DEFAULT` first.
    pub async fn environments(&self) -> Result<Vec<(String, String)>, ReadModelError> {
        let rows: Vec<(String, String)> = with_pool!(&self.db, pool => sqlx::query_as("SELECT id, name FROM rm_environments ORDER BY id LIMIT 10000")
            .fetch_all(pool)
            .await)
        .map_err(db_err)?;
        let mut out = vec![(
            appreg_domain::EnvironmentId::DEFAULT.to_string(),
            "Default environment".to_string(),
        )];
        out.extend(rows);
        Ok(out)
    }

    /// Whether an application of the environment (active or archived) names the provider or
    /// holds a client it issued. Reads the documents (`"provider_id":"<id>"` appears in a
    /// document exactly then: ids are UUIDs, documents compact JSON).
    pub async fn uses_provider(
        &self,
        env: &str,
        provider_id: &str,
    ) -> Result<bool, ReadModelError> {
        let pattern = format!("%\"provider_id\":\"{provider_id}\"%");
        let n: i64 = with_pool!(&self.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM rm_applications WHERE environment = $1 AND doc LIKE $2",
        )
        .bind(env)
        .bind(&pattern)
        .fetch_one(pool)
        .await)
        .map_err(db_err)?;
        Ok(n > 0)
    }

    /// One application's row, if projected.
    pub async fn get(&self, id: ApplicationId) -> Result<Option<Application>, ReadModelError> {
        let doc: Option<String> = with_pool!(&self.db, pool => sqlx::query_scalar("SELECT doc FROM rm_applications WHERE id = $1")
            .bind(id.0.to_string())
            .fetch_optional(pool)
            .await)
        .map_err(db_err)?;
        doc.as_deref().map(parse_doc).transpose()
    }
}

/// The statements that open a write transaction and lock a checkpoint row: several api
/// instances (and a rebuild) may write the same tables, so the stored checkpoint is locked
/// (PostgreSQL) or the write lock taken (SQLite, one writer), and only events past it are
/// applied, so a model never goes back and nothing is applied twice.
fn write_begin(db: &Database) -> (&'static str, &'static str) {
    if db.is_postgres() {
        (
            "BEGIN",
            "SELECT tx, pos FROM rm_checkpoints WHERE name = $1 FOR UPDATE",
        )
    } else {
        (
            "BEGIN IMMEDIATE",
            "SELECT tx, pos FROM rm_checkpoints WHERE name = $1",
        )
    }
}

const UPSERT_CHECKPOINT: &str = "INSERT INTO rm_checkpoints (name, tx, pos) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO UPDATE SET tx = excluded.tx, pos = excluded.pos";

/// Applies a batch of events to the table set `t` in one transaction, with its checkpoint;
/// returns the position the set then includes. Events named in `park` (poison events, with
/// the reason), and every later event of a stream that has a parked event, are written to
/// `rm_parked` instead of being folded; the checkpoint moves past them all.
async fn apply_batch(
    db: &Database,
    t: &Tables,
    events: &[StoredEvent],
    park: &HashMap<uuid::Uuid, (String, u32)>,
    mark: Option<&Mark>,
) -> Result<LogPosition, ReadModelError> {
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(LogPosition::START);
    };
    let (begin, lock) = write_begin(db);
    let now = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        let stored: Option<(i64, i64)> = sqlx::query_as(lock)
            .bind(t.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let stored = stored.map(|(tx, pos)| LogPosition { tx, pos }).unwrap_or(LogPosition::START);
        let fresh: Vec<&StoredEvent> = events.iter().filter(|e| e.position > stored).collect();
        if fresh.is_empty() {
            tx.rollback().await.map_err(db_err)?;
            return Ok(last.max(stored));
        }
        // Streams with a parked event: their later events wait behind it.
        let mut blocked: HashMap<String, uuid::Uuid> = HashMap::new();
        let mut streams: Vec<&str> = fresh.iter().map(|e| e.stream_id.as_str()).collect();
        streams.sort_unstable();
        streams.dedup();
        for chunk in streams.chunks(CHUNK) {
            let mut q = sqlx::QueryBuilder::new("SELECT stream_id, MIN(event_id) FROM rm_parked WHERE projection = ");
            q.push_bind(t.checkpoint).push(" AND stream_id IN (");
            let mut ids = q.separated(", ");
            for id in chunk {
                ids.push_bind(id.to_string());
            }
            ids.push_unseparated(") GROUP BY stream_id");
            let rows: Vec<(String, String)> = q.build_query_as().fetch_all(&mut *tx).await.map_err(db_err)?;
            for (stream, event) in rows {
                blocked.insert(stream, event.parse().unwrap_or_default());
            }
        }
        let mut foldable: Vec<&StoredEvent> = Vec::with_capacity(fresh.len());
        let mut parked: Vec<(&StoredEvent, String, u32)> = Vec::new();
        for e in fresh {
            if let Some(behind) = blocked.get(&e.stream_id) {
                parked.push((e, format!("waits behind parked event {behind}"), 0));
            } else if let Some((reason, attempts)) = park.get(&e.event_id) {
                parked.push((e, reason.clone(), *attempts));
                blocked.insert(e.stream_id.clone(), e.event_id);
            } else {
                foldable.push(e);
            }
        }
        write_fresh!(tx, t, foldable);
        for (e, reason, attempts) in &parked {
            sqlx::query(
                "INSERT INTO rm_parked (projection, event_id, stream_id, version, event_type, tx, pos, reason, attempts, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (projection, event_id) DO NOTHING",
            )
            .bind(t.checkpoint)
            .bind(e.event_id.to_string())
            .bind(&e.stream_id)
            .bind(e.version)
            .bind(&e.event_type)
            .bind(e.position.tx)
            .bind(e.position.pos)
            .bind(reason)
            .bind(i64::from(*attempts))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(t.checkpoint)
            .bind(last.tx)
            .bind(last.pos)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some(mark) = mark {
            sqlx::query(
                "INSERT INTO rm_consumers (name, sequence) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET sequence = excluded.sequence",
            )
            .bind(&mark.consumer)
            .bind(mark.sequence)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        if db.is_postgres() {
            // Wakes whoever waits for the model to move (api instances, benchmarks): delivered
            // at commit.
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(NOTIFY_CHANNEL)
                .bind(format!("{} {}", t.checkpoint, last))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        if !parked.is_empty() {
            tracing::warn!(projection = t.checkpoint, parked = parked.len(), "events parked");
            metrics::counter!("appreg_projection_parked_total", "projection" => t.checkpoint)
                .increment(parked.len() as u64);
        }
    });
    Ok(last)
}

/// Where a JetStream consumer is in its stream, stored with the rows it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub consumer: String,
    /// The stream sequence of the last message of the batch.
    pub sequence: i64,
}

/// The stored stream sequence of a consumer, if it ever applied a batch.
pub async fn consumer_mark(db: &Database, consumer: &str) -> Result<Option<i64>, ReadModelError> {
    with_pool!(db, pool => sqlx::query_scalar("SELECT sequence FROM rm_consumers WHERE name = $1")
        .bind(consumer)
        .fetch_optional(pool)
        .await)
    .map_err(db_err)
}

/// The PostgreSQL channel a projection notifies (payload `NAME TX.POS`) when it commits.
pub const NOTIFY_CHANNEL: &str = "appreg_read_models";

/// How a projection treats an event it cannot fold: retried `attempts` times in all, waiting
/// `first_delay` then twice as long each time (at most `max_delay`), then parked.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// No retry, no wait: a rebuild replays a log whose poison events fail the same way every
    /// time.
    pub const REPLAY: RetryPolicy = RetryPolicy {
        attempts: 1,
        first_delay: Duration::ZERO,
        max_delay: Duration::ZERO,
    };
}

/// Applies a batch to the table set `t`: a poison event is retried per `policy`, then parked
/// (with the later events of its stream) while the rest of the batch is folded. Other errors
/// (the database) are returned: the caller retries the whole batch, which never skips it.
async fn apply_parking(
    db: &Database,
    t: &Tables,
    events: &[StoredEvent],
    policy: RetryPolicy,
    mark: Option<&Mark>,
) -> Result<LogPosition, ReadModelError> {
    let mut park: HashMap<uuid::Uuid, (String, u32)> = HashMap::new();
    let mut failures: HashMap<uuid::Uuid, u32> = HashMap::new();
    loop {
        match apply_batch(db, t, events, &park, mark).await {
            Err(ReadModelError::Event {
                event_id,
                event_type,
                reason,
            }) if !park.contains_key(&event_id) => {
                let n = failures.entry(event_id).or_default();
                *n += 1;
                if *n >= policy.attempts.max(1) {
                    tracing::error!(projection = t.checkpoint, %event_id, event_type, reason, attempts = *n, "poison event parked");
                    park.insert(event_id, (reason, *n));
                } else {
                    tracing::warn!(projection = t.checkpoint, %event_id, event_type, reason, attempt = *n, "cannot fold an event; retrying");
                    let delay = policy
                        .first_delay
                        .saturating_mul(1 << (*n - 1).min(16))
                        .min(policy.max_delay);
                    tokio::time::sleep(delay).await;
                }
            }
            other => return other,
        }
    }
}

/// An event a projection parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub projection: String,
    pub event_id: String,
    pub stream_id: String,
    pub version: i64,
    pub event_type: String,
    pub position: LogPosition,
    pub reason: String,
    pub attempts: i64,
    pub parked_at: String,
}

/// The events parked by the live projection, oldest first (at most `limit`).
pub async fn parked(db: &Database, limit: i64) -> Result<Vec<ParkedEvent>, ReadModelError> {
    type Row = (
        String,
        String,
        String,
        i64,
        String,
        i64,
        i64,
        String,
        i64,
        String,
    );
    let rows: Vec<Row> = with_pool!(db, pool => sqlx::query_as(
        "SELECT projection, event_id, stream_id, version, event_type, tx, pos, reason, CAST(attempts AS BIGINT), parked_at \
         FROM rm_parked WHERE projection = $1 ORDER BY tx, pos LIMIT $2",
    )
    .bind(LIVE.checkpoint)
    .bind(limit)
    .fetch_all(pool)
    .await)
    .map_err(db_err)?;
    Ok(rows
        .into_iter()
        .map(
            |(
                projection,
                event_id,
                stream_id,
                version,
                event_type,
                tx,
                pos,
                reason,
                attempts,
                parked_at,
            )| ParkedEvent {
                projection,
                event_id,
                stream_id,
                version,
                event_type,
                position: LogPosition { tx, pos },
                reason,
                attempts,
                parked_at,
            },
        )
        .collect())
}

/// The number of events the live projection has parked.
pub async fn parked_count(db: &Database) -> Result<i64, ReadModelError> {
    with_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM rm_parked WHERE projection = $1")
        .bind(LIVE.checkpoint)
        .fetch_one(pool)
        .await)
    .map_err(db_err)
}

/// What a retry of the parked events did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetrySummary {
    /// Events folded into the model and removed from the parked set.
    pub applied: u64,
    /// Events still parked (the first of each stream failed again, or waits behind one that did).
    pub still_parked: u64,
}

/// Replays the parked events of the live projection, oldest first, each read again from the
/// event store (the truth: a repaired event or a newer decoder is what makes a retry succeed).
/// Each event is folded and unparked in one transaction under the checkpoint's lock, so a
/// running projector never interleaves; a stream stops at its first event that fails again
/// (its reason and attempts are updated).
pub async fn retry_parked(db: &Database) -> Result<RetrySummary, ReadModelError> {
    let store = db.event_store().await?;
    let mut summary = RetrySummary::default();
    let mut failed_streams: std::collections::HashSet<String> = Default::default();
    let mut after = LogPosition::START;
    loop {
        let page: Vec<ParkedEvent> = parked(db, 1000)
            .await?
            .into_iter()
            .filter(|p| p.position > after)
            .collect();
        let Some(last) = page.last().map(|p| p.position) else {
            break;
        };
        for p in page {
            if failed_streams.contains(&p.stream_id) {
                summary.still_parked += 1;
                continue;
            }
            let event = store
                .read_stream(&p.stream_id, p.version - 1, 1)
                .await?
                .into_iter()
                .next()
                .filter(|e| e.event_id.to_string() == p.event_id)
                .ok_or_else(|| {
                    ReadModelError::internal(format!(
                        "parked event {} is not in the event store",
                        p.event_id
                    ))
                })?;
            match unpark(db, &event).await {
                Ok(()) => summary.applied += 1,
                Err(ReadModelError::Event { reason, .. }) => {
                    with_pool!(db, pool => sqlx::query(
                        "UPDATE rm_parked SET reason = $1, attempts = attempts + 1 WHERE projection = $2 AND event_id = $3",
                    )
                    .bind(&reason)
                    .bind(LIVE.checkpoint)
                    .bind(&p.event_id)
                    .execute(pool)
                    .await
                    .map(|_| ()))
                    .map_err(db_err)?;
                    failed_streams.insert(p.stream_id.clone());
                    summary.still_parked += 1;
                }
                Err(other) => return Err(other),
            }
        }
        after = last;
    }
    Ok(summary)
}

/// Folds one parked event into the live model and removes it from the parked set.
async fn unpark(db: &Database, event: &StoredEvent) -> Result<(), ReadModelError> {
    let (begin, lock) = write_begin(db);
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        sqlx::query(lock).bind(LIVE.checkpoint).fetch_optional(&mut *tx).await.map_err(db_err)?;
        let fresh = [event];
        write_fresh!(tx, LIVE, fresh);
        sqlx::query("DELETE FROM rm_parked WHERE projection = $1 AND event_id = $2")
            .bind(LIVE.checkpoint)
            .bind(event.event_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    });
    Ok(())
}

/// Row counts and a digest of every row of the live read model: two databases (or one before
/// and after a rebuild) hold the same model exactly when their checksums are equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    pub applications: i64,
    pub members: i64,
    pub users: i64,
    pub environments: i64,
    /// SHA-256 over every row of the four tables, in key order.
    pub digest: String,
}

/// The [`Checksum`] of the live tables.
pub async fn checksum(db: &Database) -> Result<Checksum, ReadModelError> {
    use sha2::{Digest, Sha256};
    let queries = [
        "SELECT id || '|' || environment || '|' || status || '|' || created_at || '|' || doc FROM rm_applications ORDER BY id",
        "SELECT application_id || '|' || user_id || '|' || environment || '|' || role FROM rm_application_members ORDER BY application_id, user_id",
        "SELECT environment || '|' || user_id || '|' || COALESCE(name, '') || '|' || COALESCE(email, '') || '|' || first_seen FROM rm_users ORDER BY environment, user_id",
        "SELECT id || '|' || name || '|' || created_at FROM rm_environments ORDER BY id",
    ];
    let mut hasher = Sha256::new();
    let mut counts = [0i64; 4];
    for (i, sql) in queries.iter().enumerate() {
        let rows: Vec<String> =
            with_pool!(db, pool => sqlx::query_scalar(sql).fetch_all(pool).await)
                .map_err(db_err)?;
        counts[i] = rows.len() as i64;
        hasher.update(format!("table {i}\n"));
        for row in rows {
            hasher.update(row.as_bytes());
            hasher.update(b"\n");
        }
    }
    let digest = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Checksum {
        applications: counts[0],
        members: counts[1],
        users: counts[2],
        environments: counts[3],
        digest,
    })
}

/// Events per replayed batch (one short write transaction each) during a rebuild.
pub const REBUILD_BATCH: i64 = 1000;

/// How far a rebuild is: events replayed out of the events counted at its start (events
/// appended meanwhile raise `total`; on PostgreSQL the count runs beside the replay, and until
/// it is known `total` is the planner's estimate of the log's size).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

impl Progress {
    /// Events per second so far.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.done as f64 / secs
        } else {
            0.0
        }
    }

    /// The time left at the current rate, once there is one.
    pub fn eta(&self) -> Option<Duration> {
        let rate = self.rate();
        (rate > 0.0)
            .then(|| Duration::from_secs_f64(self.total.saturating_sub(self.done) as f64 / rate))
    }
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildSummary {
    /// Events replayed in batches while the live tables kept serving.
    pub replayed: u64,
    /// Events applied in the swap transaction (appended during the replay).
    pub caught_up: u64,
    /// The log position the swapped-in tables include (the live checkpoint).
    pub position: LogPosition,
    /// Application rows after the swap.
    pub applications: i64,
    pub elapsed: Duration,
    /// How long the swap transaction (catch-up, drop, renames) held the live tables.
    pub swap: Duration,
}

/// Rebuilds the application read model from the whole event store (never from NATS): the log
/// is replayed into fresh shadow tables ([`SHADOW`]) in short transactions (on SQLite batches
/// of [`REBUILD_BATCH`] events; on PostgreSQL see the `replay` module, which needs two
/// connections of the pool at once), while the live tables keep serving and the projector
/// keeps them current; then one transaction catches the shadow tables up to the head of the
/// log, drops the live tables, renames the shadow ones (and their indexes) to the live names
/// and moves the live checkpoint to the shadow's. A running projector then continues from
/// there: the events of its current batch that the swap already applied are skipped by the
/// checkpoint.
///
/// Only folds events: no handler with side effects runs. One rebuild at a time per database.
pub async fn rebuild(
    db: &Database,
    mut progress: impl FnMut(&Progress),
) -> Result<RebuildSummary, ReadModelError> {
    let started = std::time::Instant::now();
    let store = db.event_store().await.map_err(ReadModelError::from)?;
    const COUNT: &str = "SELECT COUNT(*) FROM events";
    // On PostgreSQL the count (a scan of the log) runs beside the replay; until it is known,
    // the progress's total is the planner's estimate.
    let counted = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let (mut total, counting) = match db {
        Database::Postgres(pool) => {
            let estimate: f32 =
                sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
                    .fetch_one(pool)
                    .await
                    .map_err(db_err)?;
            let (pool, counted) = (pool.clone(), counted.clone());
            let counting = tokio::spawn(async move {
                let n: i64 = sqlx::query_scalar(COUNT).fetch_one(&pool).await?;
                let n = u64::try_from(n).unwrap_or_default();
                counted.store(n, std::sync::atomic::Ordering::Relaxed);
                Ok::<_, sqlx::Error>(n)
            });
            (estimate.max(0.0) as u64, Some(counting))
        }
        Database::Sqlite(pool) => {
            let counted: i64 = sqlx::query_scalar(COUNT)
                .fetch_one(pool)
                .await
                .map_err(db_err)?;
            (u64::try_from(counted).unwrap_or_default(), None)
        }
    };
    prepare_shadow(db).await?;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild counted the log and prepared the shadow tables"
    );
    let mut done = 0u64;
    progress(&Progress {
        done,
        total,
        elapsed: started.elapsed(),
    });
    let mut position = LogPosition::START;
    if let Database::Postgres(pool) = db {
        // Fresh tables only the rebuild writes: folded in memory, rows written about once
        // with COPY, in short transactions (see the `replay` module).
        let mut with_count = |p: &Progress| {
            let n = counted.load(std::sync::atomic::Ordering::Relaxed);
            let total = if n == u64::MAX {
                p.total
            } else {
                n.max(p.done)
            };
            progress(&Progress { total, ..*p })
        };
        position = replay::replay(
            pool,
            &SHADOW,
            started,
            &mut done,
            &mut total,
            &mut with_count,
        )
        .await?;
        total = counting
            .expect("counted beside the replay")
            .await
            .map_err(ReadModelError::internal)?
            .map_err(db_err)?
            .max(done);
    } else {
        loop {
            let batch = store
                .read_log(position, REBUILD_BATCH)
                .await
                .map_err(ReadModelError::from)?;
            if batch.is_empty() {
                break;
            }
            position = apply_parking(db, &SHADOW, &batch, RetryPolicy::REPLAY, None).await?;
            done += batch.len() as u64;
            total = total.max(done);
            progress(&Progress {
                done,
                total,
                elapsed: started.elapsed(),
            });
        }
    }
    let replayed = done;
    tracing::debug!(
        seconds = started.elapsed().as_secs_f64(),
        "rebuild replayed the log"
    );
    let swap_started = std::time::Instant::now();
    let (position, caught_up) = swap(db, store.as_ref(), position).await?;
    let swap = swap_started.elapsed();
    done += caught_up;
    progress(&Progress {
        done,
        total: total.max(done),
        elapsed: started.elapsed(),
    });
    let applications: i64 =
        with_pool!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM rm_applications")
        .fetch_one(pool)
        .await)
        .map_err(db_err)?;
    Ok(RebuildSummary {
        replayed,
        caught_up,
        position,
        applications,
        elapsed: started.elapsed(),
        swap,
    })
}

/// Drops what an interrupted rebuild left and creates empty shadow tables at `START`.
async fn prepare_shadow(db: &Database) -> Result<(), ReadModelError> {
    let (begin, _) = write_begin(db);
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        for table in SHADOW.all() {
            sqlx::query(&format!("DROP TABLE IF EXISTS {table}"))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        // On PostgreSQL the replay adds the primary keys of the applications and members and
        // creates the secondary indexes once the rows are in.
        let ddl = if db.is_postgres() { SHADOW.tables_ddl(false) } else { SHADOW.ddl() };
        for ddl in ddl {
            sqlx::query(&ddl).execute(&mut *tx).await.map_err(db_err)?;
        }
        sqlx::query("DELETE FROM rm_parked WHERE projection = $1")
            .bind(SHADOW.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(SHADOW.checkpoint)
            .bind(0i64)
            .bind(0i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    });
    Ok(())
}

/// The swap, in one transaction: the live checkpoint is locked first (as the projector does,
/// so neither waits for the other in a cycle), then on PostgreSQL the live tables (readers wait
/// for the commit instead of seeing half a swap); the shadow tables catch up to the head of the
/// log, replace the live ones, and the live checkpoint moves to theirs. Returns that position
/// and the number of events applied here.
async fn swap(
    db: &Database,
    store: &dyn EventStore,
    replayed_to: LogPosition,
) -> Result<(LogPosition, u64), ReadModelError> {
    let (begin, lock) = write_begin(db);
    let mut caught_up = 0u64;
    let mut position = replayed_to;
    with_pool!(db, pool => {
        let mut tx = pool.begin_with(begin).await.map_err(db_err)?;
        let live: Option<(i64, i64)> = sqlx::query_as(lock)
            .bind(LIVE.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let live = live.map(|(tx, pos)| LogPosition { tx, pos }).unwrap_or(LogPosition::START);
        if db.is_postgres() {
            sqlx::query(&format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", LIVE.all().join(", ")))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let shadow: Option<(i64, i64)> = sqlx::query_as(lock)
            .bind(SHADOW.checkpoint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        if let Some((tx, pos)) = shadow {
            position = position.max(LogPosition { tx, pos });
        }
        loop {
            let batch = store.read_log(position, REBUILD_BATCH).await.map_err(ReadModelError::from)?;
            let Some(last) = batch.last().map(|e| e.position) else { break };
            let fresh: Vec<&StoredEvent> = batch.iter().filter(|e| e.position > position).collect();
            caught_up += fresh.len() as u64;
            write_fresh!(tx, SHADOW, fresh);
            position = last;
        }
        if position < live {
            // Cannot happen (the projector only applies events `read_log` returned, and the
            // horizon only moves forward); never move the live model back.
            return Err(ReadModelError::internal(format!(
                "rebuild reached {position}, behind the live read model at {live}"
            )));
        }
        for table in LIVE.all() {
            sqlx::query(&format!("DROP TABLE {table}")).execute(&mut *tx).await.map_err(db_err)?;
        }
        for (shadow, live) in SHADOW.all().into_iter().zip(LIVE.all()) {
            sqlx::query(&format!("ALTER TABLE {shadow} RENAME TO {live}"))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        // Index names are per schema: the shadow set's must be free for the next rebuild.
        let mut renames = Vec::new();
        if db.is_postgres() {
            renames.push(format!("ALTER INDEX {} RENAME TO {}", SHADOW.applications_index, LIVE.applications_index));
            renames.push(format!("ALTER INDEX {} RENAME TO {}", SHADOW.members_index, LIVE.members_index));
            for (shadow, live) in SHADOW.all().into_iter().zip(LIVE.all()) {
                renames.push(format!("ALTER INDEX {shadow}_pkey RENAME TO {live}_pkey"));
            }
        } else {
            // SQLite has no ALTER INDEX (its primary keys have internal names).
            renames.push(format!("DROP INDEX {}", SHADOW.applications_index));
            renames.push(format!("DROP INDEX {}", SHADOW.members_index));
            renames.extend(LIVE.index_ddl());
        }
        for sql in renames {
            sqlx::query(&sql).execute(&mut *tx).await.map_err(db_err)?;
        }
        sqlx::query(UPSERT_CHECKPOINT)
            .bind(LIVE.checkpoint)
            .bind(position.tx)
            .bind(position.pos)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        // The rebuilt model's parked events replace the old model's.
        sqlx::query("DELETE FROM rm_parked WHERE projection = $1")
            .bind(LIVE.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("UPDATE rm_parked SET projection = $1 WHERE projection = $2")
            .bind(LIVE.checkpoint)
            .bind(SHADOW.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        sqlx::query("DELETE FROM rm_checkpoints WHERE name = $1")
            .bind(SHADOW.checkpoint)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
    });
    Ok((position, caught_up))
}

/// Tails the event store into the read model until `cancel` fires. A batch that fails to apply
/// is retried with back-off; it is never skipped.
pub async fn run_projector(
    read: Arc<ReadModel>,
    store: Arc<dyn EventStore>,
    cancel: CancellationToken,
) {
    let mut tailer = LogTailer::new(store, read.position(), BATCH).with_min_interval(GATHER);
    loop {
        let batch = tokio::select! {
            _ = cancel.cancelled() => return,
            batch = tailer.next_batch() => batch,
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "projector cannot read the log; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                }
            }
        };
        let mut delay = Duration::from_millis(50);
        loop {
            match read.apply(&batch).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, "projector cannot apply a batch; retrying");
                    metrics::counter!("appreg_projection_errors_total", "projection" => CHECKPOINT)
                        .increment(1);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics::counter!("appreg_projected_events_total", "projection" => CHECKPOINT)
            .increment(batch.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_domain::application::ApplicationCreated;
    use appreg_domain::{
        ApplicationEvent, ApplicationName, ApplicationType, EnvironmentId, UserId,
    };

    fn created(i: i64) -> StoredEvent {
        let id = ApplicationId(uuid::Uuid::from_u128(i as u128 + 1));
        let event = ApplicationEvent::ApplicationCreated(ApplicationCreated {
            id,
            environment: EnvironmentId::default_env(),
            name: ApplicationName::parse(&format!("app {i}")).unwrap(),
            description: None,
            domain: None,
            app_type: ApplicationType::Simple,
            client_id: None,
            oauth: None,
            provider_id: None,
            primary_owner: UserId::parse("alice").unwrap(),
        });
        StoredEvent {
            position: LogPosition { tx: 0, pos: i + 1 },
            event_id: uuid::Uuid::now_v7(),
            stream_id: id.stream_id(),
            stream_type: APPLICATION_STREAM.into(),
            version: 1,
            event_type: event.event_type().into(),
            schema_version: 1,
            data: event.data(),
            metadata: serde_json::json!({"environment": "DEFAULT"}),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// One batch larger than a statement's chunk is projected whole, and applying it again
    /// (a redelivery) changes nothing.
    async fn large_batch(db: Database) {
        db.migrate().await.unwrap();
        crate::migrate(&db).await.unwrap();
        let read = ReadModel::new(db).await.unwrap();
        let batch: Vec<StoredEvent> = (0..(CHUNK as i64 * 2 + 50)).map(created).collect();
        read.apply(&batch).await.unwrap();
        read.apply(&batch).await.unwrap();
        let (apps, total) = read
            .list("DEFAULT", Some("alice"), "ACTIVE", 1000, 0)
            .await
            .unwrap();
        assert_eq!(total, CHUNK as i64 * 2 + 50);
        assert_eq!(apps.len() as i64, total);
        assert_eq!(read.position(), batch.last().unwrap().position);
    }

    #[tokio::test]
    async fn large_batch_sqlite() {
        let (_file, url) = appreg_eventstore::testing::fresh_sqlite_url();
        large_batch(Database::connect(&url, 2).await.unwrap()).await;
    }

    #[tokio::test]
    async fn large_batch_postgres() {
        let url = appreg_eventstore::testing::fresh_postgres_url().await;
        large_batch(Database::connect(&url, 2).await.unwrap()).await;
    }
}
