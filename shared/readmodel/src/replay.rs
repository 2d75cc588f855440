//! The replay of a rebuild on PostgreSQL. The shadow tables are fresh and only the rebuild
//! writes them, so:
//!
//! - the log is read in large pages, each with one binary `COPY` ([`read_log_page`]: the rows
//!   of `read_log`, without a row type or a JSON tree per event, and without the metadata of
//!   the events whose metadata is not folded), by a reader task one page ahead;
//! - each page's application events are decoded from their JSON text by a task of their own
//!   (on another core than the fold), straight into the domain's events;
//! - each application's events are folded in memory, and each row is written about once, with
//!   `COPY ... FROM STDIN`, by two writer tasks (the applications' rows and the membership
//!   rows, one connection each) in short transactions of at most [`FLUSH_ROWS`] applications,
//!   while the next rows are prepared;
//! - the applications' and members' primary keys and secondary indexes are built once the rows
//!   are in (one sort each instead of one index insert per row), by the two connections at
//!   once, then the tables are analyzed.
//!
//! Folded applications are kept in a bounded map ([`MAX_CACHED`]): past it, every folded row is
//! written and forgotten, and read back from the shadow table when a later event needs it
//! (then upserted through a staging table; the keys are then added before the first such
//! write). The replay needs two connections of its pool at once.
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
use appreg_domain::Personal;
use appreg_domain::{Application, ApplicationEvent, DomainEvent};
use appreg_eventstore::{read_log_page, LogPage, LogPosition, RawEvent, StoreError};
use chrono::SecondsFormat;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool, Postgres};
use std::collections::{HashMap, HashSet};
use std::time::Instant;

/// Events per page read from the log (small in tests, so applications are read back).
mod write;
use write::*;

const PAGE: i64 = if cfg!(test) { 16 } else { 20_000 };
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
    /// The folded applications in memory: their index in `entries`, by id (a small map, so
    /// the lookup of every event stays in the CPU caches).
    cache: HashMap<String, usize>,
    entries: Vec<Entry>,
    /// Applications with a row in the shadow table.
    written: HashSet<String>,
    users_seen: HashSet<(String, String)>,
    /// (environment, user, name, email, first_seen) not yet written.
    users: Vec<UserRow>,
    /// (environment, user) erased, not yet written.
    erased: Vec<(String, String)>,
    environments_seen: HashSet<String>,
    /// (id, name, created_at) not yet written.
    environments: Vec<(String, String, String)>,
    parked: Vec<Parked>,
    /// Every suspected orphan, written at the end of the log (few rows; a clearing updates them).
    orphans: std::collections::BTreeMap<crate::orphans::Key, crate::orphans::SuspectedOrphan>,
    /// Streams with a parked event: their later events wait behind it.
    blocked: HashMap<String, uuid::Uuid>,
    /// The applications and members tables have their primary keys (added before the first
    /// flush that is not the last one: rows written then may be upserted or replaced later).
    keyed: bool,
}

/// Replays the whole log into the table set `t` (created empty, the applications and members
/// without their keys, no secondary indexes), writes its checkpoint, then creates the keys and
/// indexes and analyzes the tables. Returns the position replayed to.
pub(crate) async fn replay(
    pool: &PgPool,
    t: &Tables,
    started: Instant,
    done: &mut u64,
    total: &mut u64,
    progress: &mut dyn FnMut(&Progress),
) -> Result<LogPosition, ReadModelError> {
    // Three stages, one page apart: the reader (one binary COPY per page), the decoder (the
    // application events' JSON, the costliest part, on another core than the fold) and the
    // fold with its writes.
    let (send, mut raw) = tokio::sync::mpsc::channel::<Result<LogPage, StoreError>>(2);
    let reader = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut position = LogPosition::START;
            loop {
                // Only the users' metadata is folded (their environment).
                let page = read_log_page(&pool, position, PAGE, Some(&[USER_STREAM])).await;
                let last = match &page {
                    Ok(p) => p.last_position(),
                    Err(_) => None,
                };
                let stop = last.is_none();
                if send.send(page).await.is_err() || stop {
                    return;
                }
                position = last.unwrap_or(position);
            }
        })
    };
    // Each page is decoded by its own task (two or three at a time on different cores), and
    // taken in log order.
    type Pending = tokio::task::JoinHandle<Result<Decoded, StoreError>>;
    let (send, mut pages) = tokio::sync::mpsc::channel::<Pending>(2);
    let decoder = tokio::spawn(async move {
        while let Some(page) = raw.recv().await {
            let decoding = tokio::spawn(async move { page.map(decode) });
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
            let Decoded { page, mut apps } = page?;
            let Some(last) = page.last_position() else {
                break;
            };
            r.reload(pool, t, page.iter()).await?;
            for (e, app) in page.iter().zip(apps.iter_mut()) {
                r.fold(&e, app.take());
            }
            position = last;
            t_fold += t0.elapsed().as_secs_f64();
            *done += page.len() as u64;
            *total = (*total).max(*done);
            if r.cache.len() > max_cached {
                r.flush(pool, t, None).await?;
                r.cache.clear();
                r.entries.clear();
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
    tracing::debug!(
        waiting = t_wait,
        folding = t_fold,
        final_write = t_flush,
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
        page: impl Iterator<Item = RawEvent<'_>>,
    ) -> Result<(), ReadModelError> {
        if self.written.is_empty() {
            return Ok(());
        }
        let mut ids: Vec<String> = page
            .filter(|e| e.stream_type == APPLICATION_STREAM)
            .map(|e| app_id(e.stream_id))
            .filter(|id| !self.cache.contains_key(*id) && self.written.contains(*id))
            .map(str::to_string)
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
            self.cache.insert(id, self.entries.len());
            self.entries.push(Entry {
                state,
                dirty: false,
            });
        }
        Ok(())
    }

    fn park(&mut self, e: &RawEvent<'_>, reason: String, attempts: u32) {
        self.parked.push(Parked {
            event_id: e.event_id,
            stream_id: e.stream_id.to_string(),
            version: e.version,
            event_type: e.event_type.to_string(),
            position: e.position,
            reason,
            attempts,
        });
    }

    /// Folds one event; `app` is its decoded form for an application event (or why it cannot
    /// be decoded).
    fn fold(&mut self, e: &RawEvent<'_>, app: Option<Result<ApplicationEvent, String>>) {
        if let Some(behind) = self.blocked.get(e.stream_id) {
            let reason = format!("waits behind parked event {behind}");
            self.park(e, reason, 0);
            return;
        }
        let poison = if e.stream_type == APPLICATION_STREAM {
            let id = app_id(e.stream_id);
            let i = match self.cache.get(id) {
                Some(i) => *i,
                None => {
                    self.cache.insert(id.to_string(), self.entries.len());
                    self.entries.push(Entry {
                        state: None,
                        dirty: false,
                    });
                    self.entries.len() - 1
                }
            };
            let entry = &mut self.entries[i];
            if entry.state.as_ref().is_some_and(|a| a.version >= e.version) {
                return; // already included
            }
            match app {
                Some(Ok(event)) => {
                    entry.state =
                        Application::evolve(entry.state.take(), &event, e.recorded_at, e.version);
                    if let Some(app) = &entry.state {
                        if let Some(change) =
                            crate::orphans::change(id, app.environment.as_str(), &event)
                        {
                            crate::orphans::apply_in_memory(&mut self.orphans, change);
                        }
                    }
                    entry.dirty |= entry.state.is_some();
                    None
                }
                Some(Err(reason)) => Some(reason),
                // The page decodes every application event; a gap would be a bug: parked, not
                // folded wrong.
                None => Some("the application event was not decoded".to_string()),
            }
        } else if e.stream_type == USER_STREAM {
            let decoded = json(e.data).and_then(|data| {
                UserEvent::decode(e.event_type, e.schema_version, data)
                    .map_err(|err| err.to_string())
            });
            match decoded {
                Ok(u) => {
                    // As the projector reads it from the stored metadata.
                    let env = e
                        .metadata
                        .and_then(|m| serde_json::from_str::<serde_json::Value>(m).ok())
                        .and_then(|m| m.get("environment")?.as_str().map(str::to_string))
                        .unwrap_or_default();
                    let key = (env, u.user().as_str().to_string());
                    match u {
                        UserEvent::UserFirstSeen(u) => {
                            if self.users_seen.insert(key.clone()) {
                                let text = |p: Option<Personal>| p.map(|p| p.as_str().to_string());
                                self.users.push((
                                    key.0,
                                    key.1,
                                    text(u.name),
                                    text(u.email),
                                    timestamp(e),
                                ));
                            }
                        }
                        UserEvent::UserErased(_) => self.erased.push(key),
                    }
                    None
                }
                Err(reason) => Some(reason),
            }
        } else if e.stream_type == ENVIRONMENT_STREAM {
            let decoded = json(e.data).and_then(|data| {
                EnvironmentEvent::decode(e.event_type, e.schema_version, data)
                    .map_err(|err| err.to_string())
            });
            match decoded {
                Ok(EnvironmentEvent::EnvironmentCreated(c)) => {
                    if self.environments_seen.insert(c.id.as_str().to_string()) {
                        self.environments
                            .push((c.id.as_str().to_string(), c.name, timestamp(e)));
                    }
                    None
                }
                Err(reason) => Some(reason),
            }
        } else {
            None
        };
        if let Some(reason) = poison {
            tracing::error!(projection = super::SHADOW.checkpoint, event_id = %e.event_id, event_type = e.event_type, reason, attempts = 1, "poison event parked");
            self.park(e, reason, 1);
            self.blocked.insert(e.stream_id.to_string(), e.event_id);
        }
    }

    /// Writes every changed application, the new users and environments and the parked events,
    /// in transactions of at most [`FLUSH_ROWS`] applications, then the checkpoint when given
    /// (the end of the log). Two writer tasks, one per table and connection, write the
    /// application rows and the membership rows while the next rows are prepared. At the end
    /// of the log the two connections then build the tables' keys and secondary indexes (one
    /// sort each instead of one index insert per row), and analyze the tables.
    async fn flush(
        &mut self,
        pool: &PgPool,
        t: &Tables,
        checkpoint: Option<LogPosition>,
    ) -> Result<(), ReadModelError> {
        let started = Instant::now();
        let end = checkpoint.is_some();
        let mut dirty: Vec<(&str, usize)> = self
            .cache
            .iter()
            .filter(|(_, i)| self.entries[**i].dirty)
            .map(|(id, i)| (id.as_str(), *i))
            .collect();
        dirty.sort_unstable(); // rows in key order: the key's sort finds them sorted
        if !end && !self.keyed {
            // The tables are still empty: from here on their keys are kept as rows are written
            // (rows written now may be upserted or replaced later).
            let mut tx = pool.begin().await.map_err(db_err)?;
            for ddl in t.key_ddl().into_iter().flatten() {
                sqlx::query(&ddl).execute(&mut *tx).await.map_err(db_err)?;
            }
            tx.commit().await.map_err(db_err)?;
            self.keyed = true;
        }
        // Both connections first (a pool of one fails here rather than waiting forever).
        let connections = (pool.acquire().await, pool.acquire().await);
        let apps_conn = connections.0.map_err(db_err)?;
        let members_conn = connections.1.map_err(db_err)?;
        let (send_apps, apps) = tokio::sync::mpsc::channel::<Rows>(1);
        let (send_members, members) = tokio::sync::mpsc::channel::<Rows>(1);
        let apps_writer = tokio::spawn(write_rows(apps_conn, apps, AppRows(*t)));
        let members_writer = tokio::spawn(write_rows(members_conn, members, MemberRows(*t)));
        let (mut result, mut building, mut newly_written) = (Ok(()), 0f64, Vec::new());
        for chunk in dirty.chunks(FLUSH_ROWS) {
            let t0 = Instant::now();
            let batch = self.batch(chunk, &mut newly_written);
            building += t0.elapsed().as_secs_f64();
            let (app_rows, member_rows) = match batch {
                Ok(rows) => rows,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            };
            // A writer that failed has dropped its receiver: its error is returned below.
            if send_apps.send(app_rows).await.is_err()
                || send_members.send(member_rows).await.is_err()
            {
                break;
            }
        }
        drop((send_apps, send_members));
        let newly_written: Vec<String> = newly_written.into_iter().map(str::to_string).collect();
        let applications = dirty.len();
        drop(dirty);
        let written = (apps_writer.await, members_writer.await);
        let apps_conn = written.0.map_err(ReadModelError::internal)??;
        let members_conn = written.1.map_err(ReadModelError::internal)??;
        result?;
        let t_rows = started.elapsed().as_secs_f64();
        let others = self.others(checkpoint);
        let mut apps_conn = apps_conn;
        let mut tx = sqlx::Connection::begin(&mut *apps_conn)
            .await
            .map_err(db_err)?;
        write_others(&mut tx, t, others).await?;
        tx.commit().await.map_err(db_err)?;
        let t0 = Instant::now();
        if end {
            finish_tables(t, self.keyed, [apps_conn, members_conn]).await?;
        }
        tracing::debug!(
            applications,
            building,
            rows = t_rows,
            indexes_and_analyze = t0.elapsed().as_secs_f64(),
            seconds = started.elapsed().as_secs_f64(),
            "rebuild wrote the folded applications"
        );
        for entry in &mut self.entries {
            entry.dirty = false;
        }
        self.written.extend(newly_written);
        Ok(())
    }

    /// The rows of one write transaction per table: the applications `ids` (those with a
    /// state) and their members. Applications written before are upserted, and their
    /// membership rows replaced.
    fn batch<'a>(
        &self,
        ids: &[(&'a str, usize)],
        newly_written: &mut Vec<&'a str>,
    ) -> Result<(Rows, Rows), ReadModelError> {
        let (mut apps, mut members) = (Rows::default(), Rows::default());
        apps.fresh.reserve(ids.len() * 700);
        members.fresh.reserve(ids.len() * 300);
        for (id, i) in ids {
            let Some(app) = self.entries[*i].state.as_ref() else {
                continue;
            };
            let out = if self.written.contains(*id) {
                members.again_ids.push(id.to_string());
                &mut apps.again
            } else {
                newly_written.push(id);
                &mut apps.fresh
            };
            let status = if app.status == appreg_domain::ApplicationStatus::Active {
                "ACTIVE"
            } else {
                "ARCHIVED"
            };
            let env = app.environment.to_string();
            let doc = serde_json::to_string(app).map_err(ReadModelError::internal)?;
            let created = app.created_at.to_rfc3339_opts(SecondsFormat::Micros, true);
            let pending = crate::pending_subscriptions(app).to_string();
            row(
                out,
                &[
                    Some(id),
                    Some(&env),
                    Some(status),
                    Some(&created),
                    Some(&doc),
                    Some(&pending),
                ],
            );
            for (user, role) in &app.members {
                row(
                    &mut members.fresh,
                    &[
                        Some(id),
                        Some(user.as_str()),
                        Some(&env),
                        Some(role.as_str()),
                    ],
                );
            }
        }
        Ok((apps, members))
    }

    /// Users, environments and parked events not yet written, and the checkpoint.
    fn others(&mut self, checkpoint: Option<LogPosition>) -> Others {
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
        let mut environments = String::new();
        for (id, name, created_at) in self.environments.drain(..) {
            row(
                &mut environments,
                &[Some(&id), Some(&name), Some(&created_at)],
            );
        }
        // Every suspected orphan at once, at the end of the log.
        let orphans = match checkpoint {
            Some(_) => orphan_rows(std::mem::take(&mut self.orphans)),
            None => String::new(),
        };
        Others {
            users,
            environments,
            orphans,
            parked: std::mem::take(&mut self.parked),
            erased: std::mem::take(&mut self.erased),
            checkpoint,
        }
    }
}

/// A page of the log and, for each of its application events, the decoded event (or why it
/// cannot be decoded); `None` for the other events.
struct Decoded {
    page: LogPage,
    apps: Vec<Option<Result<ApplicationEvent, String>>>,
}

fn decode(page: LogPage) -> Decoded {
    let apps = page
        .iter()
        .map(|e| {
            (e.stream_type == APPLICATION_STREAM).then(|| {
                ApplicationEvent::decode_json(e.event_type, e.schema_version, e.data)
                    .map_err(|err| err.to_string())
            })
        })
        .collect();
    Decoded { page, apps }
}

/// A payload as the projector gets it (`jsonb` always prints one valid JSON value).
fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|err| err.to_string())
}

fn app_id(stream_id: &str) -> &str {
    stream_id.strip_prefix("application-").unwrap_or(stream_id)
}

fn timestamp(e: &RawEvent<'_>) -> String {
    e.recorded_at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests;
