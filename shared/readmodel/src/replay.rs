//! The replay of a rebuild on PostgreSQL: the shadow tables are fresh and only the rebuild
//! writes them, so the log is read in large pages (a reader task runs one page ahead of the
//! fold), each application's events are folded in memory, and each row is written about once,
//! with `COPY ... FROM STDIN`, in short transactions of at most [`FLUSH_ROWS`] applications.
//! Folded applications are kept in a bounded map ([`MAX_CACHED`]): past it, every folded row is
//! written and forgotten, and read back from the shadow table when a later event needs it
//! (then upserted through a staging table).
//!
//! The rows are those `write_fresh!` writes (same fold, same documents, first-seen users and
//! environments kept), and poison events are parked as `apply_parking` parks them under
//! [`RetryPolicy::REPLAY`]: the event with its reason and one attempt, then every later event
//! of its stream, waiting behind it.

use super::{
    db_err, Progress, ReadModelError, Tables, APPLICATION_STREAM, ENVIRONMENT_STREAM,
    UPSERT_CHECKPOINT, USER_STREAM,
};
use appreg_domain::environment::{EnvironmentEvent, UserEvent};
use appreg_domain::{Application, ApplicationEvent, DomainEvent};
use appreg_eventstore::{EventStore, LogPosition, StoreError, StoredEvent};
use chrono::SecondsFormat;
use sqlx::postgres::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Events per page read from the log (small in tests, so applications are read back).
const PAGE: i64 = if cfg!(test) { 16 } else { 10_000 };
/// Applications kept folded in memory; past this, all are written and forgotten
/// (`APPREG_REBUILD_CACHE` overrides it).
const MAX_CACHED: usize = 200_000;
/// Application rows per write transaction (a few tens of milliseconds each).
const FLUSH_ROWS: usize = 5_000;

struct Entry {
    state: Option<Application>,
    /// Changed since it was last written.
    dirty: bool,
}

struct Parked {
    event_id: uuid::Uuid,
    stream_id: String,
    version: i64,
    event_type: String,
    position: LogPosition,
    reason: String,
    attempts: u32,
}

/// A row of the users table: environment, user, name, email, first seen.
type UserRow = (String, String, Option<String>, Option<String>, String);

#[derive(Default)]
struct Replay {
    cache: HashMap<String, Entry>,
    /// Applications with a row in the shadow table.
    written: HashSet<String>,
    users_seen: HashSet<(String, String)>,
    /// (environment, user, name, email, first_seen) not yet written.
    users: Vec<UserRow>,
    environments_seen: HashSet<String>,
    /// (id, name, created_at) not yet written.
    environments: Vec<(String, String, String)>,
    parked: Vec<Parked>,
    /// Streams with a parked event: their later events wait behind it.
    blocked: HashMap<String, uuid::Uuid>,
}

/// Replays the whole log into the table set `t` (created empty, without its secondary
/// indexes), writes its checkpoint, then creates the indexes. Returns the position replayed to.
pub(crate) async fn replay(
    pool: &PgPool,
    store: Arc<dyn EventStore>,
    t: &Tables,
    started: Instant,
    done: &mut u64,
    total: &mut u64,
    progress: &mut dyn FnMut(&Progress),
) -> Result<LogPosition, ReadModelError> {
    // Three stages, one page apart: the reader, the decoder (the application events' JSON,
    // the costliest part, on another core than the fold) and the fold with its writes.
    let (send, mut raw) = tokio::sync::mpsc::channel::<Result<Vec<StoredEvent>, StoreError>>(2);
    let reader = tokio::spawn(async move {
        let mut position = LogPosition::START;
        loop {
            let page = store.read_log(position, PAGE).await;
            let last = match &page {
                Ok(p) => p.last().map(|e| e.position),
                Err(_) => None,
            };
            let stop = last.is_none();
            if send.send(page).await.is_err() || stop {
                return;
            }
            position = last.unwrap_or(position);
        }
    });
    // Each page is decoded by its own task (two or three at a time on different cores), and
    // taken in log order.
    type Pending = tokio::task::JoinHandle<Result<Vec<Decoded>, StoreError>>;
    let (send, mut pages) = tokio::sync::mpsc::channel::<Pending>(2);
    let decoder = tokio::spawn(async move {
        while let Some(page) = raw.recv().await {
            let decoding =
                tokio::spawn(
                    async move { page.map(|page| page.into_iter().map(decode).collect()) },
                );
            if send.send(decoding).await.is_err() {
                return;
            }
        }
    });
    let max_cached = std::env::var("APPREG_REBUILD_CACHE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MAX_CACHED);
    let mut r = Replay::default();
    let mut position = LogPosition::START;
    // Seconds spent waiting for decoded pages, folding them, and in the final write.
    let (mut t_wait, mut t_fold, mut t_flush) = (0f64, 0f64, 0f64);
    let result = async {
        loop {
            let t0 = Instant::now();
            let Some(page) = pages.recv().await else {
                break;
            };
            let page = page.await.map_err(ReadModelError::internal)?;
            t_wait += t0.elapsed().as_secs_f64();
            let t0 = Instant::now();
            let mut page = page?;
            let Some(last) = page.last().map(|d| d.event.position) else {
                break;
            };
            r.reload(pool, t, page.iter().map(|d| &d.event)).await?;
            for d in page.iter_mut() {
                r.fold(d);
            }
            position = last;
            t_fold += t0.elapsed().as_secs_f64();
            *done += page.len() as u64;
            *total = (*total).max(*done);
            if r.cache.len() > max_cached {
                r.flush(pool, t, None).await?;
                r.cache.clear();
            }
            progress(&Progress {
                done: *done,
                total: *total,
                elapsed: started.elapsed(),
            });
        }
        let t0 = Instant::now();
        r.flush(pool, t, Some(position)).await?;
        t_flush += t0.elapsed().as_secs_f64();
        Ok::<(), ReadModelError>(())
    }
    .await;
    reader.abort();
    decoder.abort();
    result?;
    let t0 = Instant::now();
    // The secondary indexes, once the rows are in (one sort each, not one insert per row).
    let mut tx = pool.begin().await.map_err(db_err)?;
    for ddl in t.index_ddl() {
        sqlx::query(&ddl).execute(&mut *tx).await.map_err(db_err)?;
    }
    tx.commit().await.map_err(db_err)?;
    for table in t.all() {
        sqlx::query(&format!("ANALYZE {table}"))
            .execute(pool)
            .await
            .map_err(db_err)?;
    }
    tracing::debug!(
        waiting = t_wait,
        folding = t_fold,
        final_write = t_flush,
        indexes = t0.elapsed().as_secs_f64(),
        "rebuild replay stages (seconds)"
    );
    Ok(position)
}

impl Replay {
    /// Reads back the rows of the page's applications that were written and forgotten.
    async fn reload(
        &mut self,
        pool: &PgPool,
        t: &Tables,
        page: impl Iterator<Item = &StoredEvent>,
    ) -> Result<(), ReadModelError> {
        if self.written.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = page
            .filter(|e| e.stream_type == APPLICATION_STREAM)
            .map(|e| app_id(e).to_string())
            .filter(|id| !self.cache.contains_key(id) && self.written.contains(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(());
        }
        let rows: Vec<(String, String)> = sqlx::query_as(&format!(
            "SELECT id, doc FROM {} WHERE id = ANY($1)",
            t.applications
        ))
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(db_err)?;
        for (id, doc) in rows {
            let state = Some(super::parse_doc(&doc)?);
            self.cache.insert(
                id,
                Entry {
                    state,
                    dirty: false,
                },
            );
        }
        Ok(())
    }

    fn park(&mut self, e: &StoredEvent, reason: String, attempts: u32) {
        self.parked.push(Parked {
            event_id: e.event_id,
            stream_id: e.stream_id.clone(),
            version: e.version,
            event_type: e.event_type.clone(),
            position: e.position,
            reason,
            attempts,
        });
    }

    /// Folds one event (its data is taken: the page is not used again).
    fn fold(&mut self, d: &mut Decoded) {
        let e = &mut d.event;
        if let Some(behind) = self.blocked.get(&e.stream_id) {
            let reason = format!("waits behind parked event {behind}");
            self.park(e, reason, 0);
            return;
        }
        let poison = if e.stream_type == APPLICATION_STREAM {
            let id = app_id(e);
            if !self.cache.contains_key(id) {
                let fresh = Entry {
                    state: None,
                    dirty: false,
                };
                self.cache.insert(id.to_string(), fresh);
            }
            let entry = self.cache.get_mut(id).expect("inserted above");
            if entry.state.as_ref().is_some_and(|a| a.version >= e.version) {
                return; // already included
            }
            match d.app.take().expect("application events are decoded") {
                Ok(event) => {
                    entry.state =
                        Application::evolve(entry.state.take(), &event, e.recorded_at, e.version);
                    entry.dirty |= entry.state.is_some();
                    None
                }
                Err(reason) => Some(reason),
            }
        } else if e.stream_type == USER_STREAM {
            let data = std::mem::take(&mut e.data);
            match UserEvent::decode(&e.event_type, e.schema_version, data) {
                Ok(UserEvent::UserFirstSeen(u)) => {
                    let env = e
                        .metadata
                        .get("environment")
                        .and_then(|v| v.as_str())
                        .unwrap_or_default()
                        .to_string();
                    let key = (env, u.user.as_str().to_string());
                    if self.users_seen.insert(key.clone()) {
                        self.users
                            .push((key.0, key.1, u.name, u.email, timestamp(e)));
                    }
                    None
                }
                Err(err) => Some(err.to_string()),
            }
        } else if e.stream_type == ENVIRONMENT_STREAM {
            let data = std::mem::take(&mut e.data);
            match EnvironmentEvent::decode(&e.event_type, e.schema_version, data) {
                Ok(EnvironmentEvent::EnvironmentCreated(c)) => {
                    if self.environments_seen.insert(c.id.as_str().to_string()) {
                        self.environments
                            .push((c.id.as_str().to_string(), c.name, timestamp(e)));
                    }
                    None
                }
                Err(err) => Some(err.to_string()),
            }
        } else {
            None
        };
        if let Some(reason) = poison {
            tracing::error!(projection = super::SHADOW.checkpoint, event_id = %e.event_id, event_type = e.event_type, reason, attempts = 1, "poison event parked");
            self.park(e, reason, 1);
            self.blocked.insert(e.stream_id.clone(), e.event_id);
        }
    }

    /// Writes every changed application, the new users and environments and the parked events,
    /// in transactions of at most [`FLUSH_ROWS`] applications; the last one also writes the
    /// checkpoint when given.
    async fn flush(
        &mut self,
        pool: &PgPool,
        t: &Tables,
        checkpoint: Option<LogPosition>,
    ) -> Result<(), ReadModelError> {
        let mut dirty: Vec<String> = self
            .cache
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(id, _)| id.clone())
            .collect();
        dirty.sort_unstable(); // rows in key order: a denser primary key
        let chunks: Vec<&[String]> = if dirty.is_empty() {
            vec![&[]]
        } else {
            dirty.chunks(FLUSH_ROWS).collect()
        };
        let n = chunks.len();
        let mut newly_written: Vec<String> = Vec::with_capacity(dirty.len());
        for (i, chunk) in chunks.into_iter().enumerate() {
            let last = i + 1 == n;
            let (mut fresh, mut again, mut members) = (String::new(), String::new(), String::new());
            for id in chunk {
                let Some(app) = self.cache[id].state.as_ref() else {
                    continue;
                };
                let out = if self.written.contains(id) {
                    &mut again
                } else {
                    newly_written.push(id.clone());
                    &mut fresh
                };
                let status = if app.status == appreg_domain::ApplicationStatus::Active {
                    "ACTIVE"
                } else {
                    "ARCHIVED"
                };
                let env = app.environment.to_string();
                let doc = serde_json::to_string(app).map_err(ReadModelError::internal)?;
                let created = app.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
                row(
                    out,
                    &[
                        Some(id.as_str()),
                        Some(&env),
                        Some(status),
                        Some(&created),
                        Some(&doc),
                    ],
                );
                for (user, role) in &app.members {
                    row(
                        &mut members,
                        &[
                            Some(id.as_str()),
                            Some(user.as_str()),
                            Some(&env),
                            Some(role.as_str()),
                        ],
                    );
                }
            }
            let mut tx = pool.begin().await.map_err(db_err)?;
            // Nothing here must survive a crash before the swap, whose commit is durable (and
            // makes every earlier commit durable with it).
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            copy_in(
                &mut tx,
                &format!(
                    "COPY {} (id, environment, status, created_at, doc) FROM STDIN",
                    t.applications
                ),
                fresh,
            )
            .await?;
            if !again.is_empty() {
                sqlx::query(&format!(
                    "CREATE TEMP TABLE rm_rebuild_stage (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP",
                    t.applications
                ))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                copy_in(
                    &mut tx,
                    "COPY rm_rebuild_stage (id, environment, status, created_at, doc) FROM STDIN",
                    again,
                )
                .await?;
                sqlx::query(&format!(
                    "INSERT INTO {} (id, environment, status, created_at, doc) \
                     SELECT id, environment, status, created_at, doc FROM rm_rebuild_stage \
                     ON CONFLICT (id) DO UPDATE SET status = excluded.status, doc = excluded.doc",
                    t.applications
                ))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                sqlx::query(&format!(
                    "DELETE FROM {} WHERE application_id IN (SELECT id FROM rm_rebuild_stage)",
                    t.members
                ))
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            copy_in(
                &mut tx,
                &format!(
                    "COPY {} (application_id, user_id, environment, role) FROM STDIN",
                    t.members
                ),
                members,
            )
            .await?;
            if last {
                self.write_others(&mut tx, t).await?;
                if let Some(position) = checkpoint {
                    sqlx::query(UPSERT_CHECKPOINT)
                        .bind(t.checkpoint)
                        .bind(position.tx)
                        .bind(position.pos)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_err)?;
                }
            }
            tx.commit().await.map_err(db_err)?;
        }
        for entry in self.cache.values_mut() {
            entry.dirty = false;
        }
        self.written.extend(newly_written);
        Ok(())
    }

    /// Users, environments and parked events not yet written.
    async fn write_others(
        &mut self,
        tx: &mut PgConnection,
        t: &Tables,
    ) -> Result<(), ReadModelError> {
        let mut users = String::new();
        for (env, user, name, email, first_seen) in self.users.drain(..) {
            row(
                &mut users,
                &[
                    Some(&env),
                    Some(&user),
                    name.as_deref(),
                    email.as_deref(),
                    Some(&first_seen),
                ],
            );
        }
        copy_in(
            tx,
            &format!(
                "COPY {} (environment, user_id, name, email, first_seen) FROM STDIN",
                t.users
            ),
            users,
        )
        .await?;
        let mut environments = String::new();
        for (id, name, created_at) in self.environments.drain(..) {
            row(
                &mut environments,
                &[Some(&id), Some(&name), Some(&created_at)],
            );
        }
        copy_in(
            tx,
            &format!("COPY {} (id, name, created_at) FROM STDIN", t.environments),
            environments,
        )
        .await?;
        if self.parked.is_empty() {
            return Ok(());
        }
        let now = chrono::Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        for p in &self.parked {
            sqlx::query(
                "INSERT INTO rm_parked (projection, event_id, stream_id, version, event_type, tx, pos, reason, attempts, parked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (projection, event_id) DO NOTHING",
            )
            .bind(t.checkpoint)
            .bind(p.event_id.to_string())
            .bind(&p.stream_id)
            .bind(p.version)
            .bind(&p.event_type)
            .bind(p.position.tx)
            .bind(p.position.pos)
            .bind(&p.reason)
            .bind(i64::from(p.attempts))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tracing::warn!(
            projection = t.checkpoint,
            parked = self.parked.len(),
            "events parked"
        );
        metrics::counter!("appreg_projection_parked_total", "projection" => t.checkpoint)
            .increment(self.parked.len() as u64);
        self.parked.clear();
        Ok(())
    }
}

/// An event and, for an application event, its decoded form (or why it cannot be decoded).
struct Decoded {
    event: StoredEvent,
    app: Option<Result<ApplicationEvent, String>>,
}

fn decode(mut event: StoredEvent) -> Decoded {
    let app = (event.stream_type == APPLICATION_STREAM).then(|| {
        let data = std::mem::take(&mut event.data);
        ApplicationEvent::decode(&event.event_type, event.schema_version, data)
            .map_err(|err| err.to_string())
    });
    Decoded { event, app }
}

fn app_id(e: &StoredEvent) -> &str {
    e.stream_id
        .strip_prefix("application-")
        .unwrap_or(&e.stream_id)
}

fn timestamp(e: &StoredEvent) -> String {
    e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Appends one row in COPY's text format (`None` is NULL).
fn row(out: &mut String, fields: &[Option<&str>]) {
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match field {
            None => out.push_str("\\N"),
            Some(s) => escape(out, s),
        }
    }
    out.push('\n');
}

fn escape(out: &mut String, s: &str) {
    if !s
        .bytes()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b'\t'))
    {
        out.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
}

async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    data: String,
) -> Result<(), ReadModelError> {
    if data.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(statement).await.map_err(db_err)?;
    copy.send(data.into_bytes()).await.map_err(db_err)?;
    copy.finish().await.map_err(db_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::{checksum, parked, ReadModel, RetryPolicy};
    use appreg_eventstore::{AppendRequest, Database, NewEvent};
    use serde_json::json;

    fn event(event_type: &str, data: serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data,
            metadata: json!({"environment": "DEFAULT", "actor": "alice"}),
            recorded_at: chrono::Utc::now(),
        }
    }

    fn created(id: uuid::Uuid) -> NewEvent {
        event(
            "ApplicationCreated",
            json!({"id": id.to_string(), "environment": "DEFAULT", "name": format!("app {id}"),
                   "description": "with a \\ backslash,\ta tab and a\nnewline", "domain": null,
                   "type": "simple", "client_id": null, "oauth": null, "provider_id": null,
                   "primary_owner": "alice"}),
        )
    }

    fn updated(name: &str) -> NewEvent {
        event(
            "ApplicationUpdated",
            json!({"name": name, "description": null, "domain": null, "client_id": null,
                   "oauth": null, "changed": ["name"]}),
        )
    }

    /// The PostgreSQL replay (with a cache small enough to forget and read back applications)
    /// gives the incremental projector's rows and parks the same events.
    #[tokio::test]
    async fn replay_equals_incremental_projection() {
        let url = appreg_eventstore::testing::fresh_postgres_url().await;
        let db = Database::connect(&url, 4).await.unwrap();
        db.migrate().await.unwrap();
        crate::migrate(&db).await.unwrap();
        let store = db.event_store().await.unwrap();
        let ids: Vec<uuid::Uuid> = (0..30).map(|_| uuid::Uuid::now_v7()).collect();
        let append = |id: uuid::Uuid, version: i64, events: Vec<NewEvent>| AppendRequest {
            stream_id: format!("application-{id}"),
            stream_type: "application".into(),
            expected_version: version,
            events,
            claims: vec![],
            releases: vec![],
        };
        for id in &ids {
            store
                .append(append(*id, 0, vec![created(*id)]))
                .await
                .unwrap();
        }
        for round in 0..3i64 {
            for (i, id) in ids.iter().enumerate() {
                let mut e = updated(&format!("app {i} round {round}"));
                if i == 7 && round == 1 {
                    e.data = json!({"name": "", "changed": "not a list"}); // poison
                }
                let member = event(
                    "MemberAdded",
                    json!({"user": format!("m{round}"), "role": "USER"}),
                );
                store
                    .append(append(*id, 1 + 2 * round, vec![e, member]))
                    .await
                    .unwrap();
            }
        }
        let user = AppendRequest {
            stream_id: "user-DEFAULT/alice".into(),
            stream_type: "user".into(),
            expected_version: 0,
            events: vec![event(
                "UserFirstSeen",
                json!({"user": "alice", "name": "Alice", "email": null, "admin": false,
                       "default_application": null}),
            )],
            claims: vec![],
            releases: vec![],
        };
        store.append(user).await.unwrap();
        let read = ReadModel::new(db.clone())
            .await
            .unwrap()
            .with_policy(RetryPolicy::REPLAY);
        loop {
            let batch = store.read_log(read.position(), 7).await.unwrap();
            if batch.is_empty() {
                break;
            }
            read.apply(&batch).await.unwrap();
        }
        let incremental = checksum(&db).await.unwrap();
        let key = |p: &crate::ParkedEvent| (p.event_id.clone(), p.reason.clone(), p.attempts);
        let parked_before: Vec<_> = parked(&db, 100).await.unwrap().iter().map(key).collect();
        assert_eq!(
            parked_before.len(),
            4,
            "the poison event and the 3 behind it"
        );
        std::env::set_var("APPREG_REBUILD_CACHE", "10");
        let summary = crate::rebuild(&db, |_| {}).await.unwrap();
        std::env::remove_var("APPREG_REBUILD_CACHE");
        assert_eq!(summary.applications, 30);
        assert_eq!(checksum(&db).await.unwrap(), incremental);
        let parked_after: Vec<_> = parked(&db, 100).await.unwrap().iter().map(key).collect();
        assert_eq!(parked_after, parked_before);
    }
}
