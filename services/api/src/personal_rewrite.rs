//! The one rewrite the event log ever gets (DESIGN.md "Personal data"): events recorded before
//! personal data was sealed carry names and e-mail addresses in plaintext (`UserFirstSeen` and
//! `NotificationSettingsUpdated` schema version 1, and the metadata's `actor_name`). `appreg
//! migrate` rewrites them, once, into the sealed versions, so that an erasure can reach them;
//! the rewrite is recorded in `log_rewrites` and never runs again.
//!
//! Each rewritten event keeps its id, stream, version and log position; only its payload (and
//! schema version) and metadata change, to exactly what the api writes today. A value of a
//! user erased before the rewrite cannot be sealed with a key they no longer have: it is
//! dropped (null). The snapshots (a cache of folded states, holding those plaintexts) are
//! deleted; the caller then rebuilds the read models from the rewritten log and [`vacuum`]s.

use crate::personal::{EMAIL, NAME};
use appreg_domain::personal::is_sealed;
use appreg_eventstore::Database;
use appreg_secrets::{PersonalError, PersonalKeys};
use serde_json::Value;

/// The name of the rewrite in `log_rewrites`.
pub const REWRITE: &str = "personal-data-sealed";
const PAGE: i64 = 1000;

/// Why the rewrite failed (nothing recorded: running it again resumes it).
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the event log cannot be read or written: {0}")]
    Database(#[from] sqlx::Error),
    #[error("a personal value cannot be sealed: {0}")]
    Seal(#[from] PersonalError),
    #[error("event {0} holds malformed JSON: {1}")]
    Malformed(String, serde_json::Error),
}

/// What the rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Recorded by an earlier run: nothing done.
    AlreadyDone,
    /// Done now: how many events were rewritten (0 on a log that never held plaintext).
    Done { events: u64 },
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

/// Seals the personal values of `data`'s `fields` for `user` (or drops them when the user was
/// erased); whether anything changed.
async fn seal_fields(
    keys: &PersonalKeys,
    user: &str,
    erased: bool,
    data: &mut Value,
    fields: &[(&str, &str)],
) -> Result<bool, PersonalError> {
    let mut changed = false;
    for (key, field) in fields {
        let Some(slot) = data.get_mut(*key) else {
            continue;
        };
        let Some(plain) = slot.as_str().filter(|s| !is_sealed(s)).map(str::to_string) else {
            continue;
        };
        *slot = if erased {
            Value::Null
        } else {
            let clipped: String = plain.chars().take(200).collect();
            Value::String(keys.seal(user, field, &clipped).await?)
        };
        changed = true;
    }
    Ok(changed)
}

/// One event's new (schema version, payload, metadata), if it holds plaintext.
async fn rewritten(
    keys: &PersonalKeys,
    event_type: &str,
    schema_version: i32,
    mut data: Value,
    mut metadata: Value,
) -> Result<Option<(i32, Value, Value)>, PersonalError> {
    let mut changed = false;
    let mut version = schema_version;
    if let Some(actor) = metadata
        .get("actor")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        let erased = keys.erased_at(&actor).await?.is_some();
        changed |=
            seal_fields(keys, &actor, erased, &mut metadata, &[("actor_name", NAME)]).await?;
    }
    let fields: &[(&str, &str)] = match (event_type, schema_version) {
        ("UserFirstSeen", 1) => &[("name", NAME), ("email", EMAIL)],
        ("NotificationSettingsUpdated", 1) => &[("email", EMAIL)],
        _ => &[],
    };
    if !fields.is_empty() {
        if let Some(user) = data.get("user").and_then(Value::as_str).map(str::to_string) {
            let erased = keys.erased_at(&user).await?.is_some();
            seal_fields(keys, &user, erased, &mut data, fields).await?;
        }
        version = 2;
        changed = true;
    }
    Ok(changed.then_some((version, data, metadata)))
}

/// Runs the rewrite unless it is recorded (see the module's doc).
pub async fn seal_personal_data(
    db: &Database,
    keys: &PersonalKeys,
) -> Result<Rewrite, RewriteError> {
    let done: Option<String> = with_pool!(db, pool => sqlx::query_scalar(
        "SELECT done_at FROM log_rewrites WHERE name = $1",
    )
    .bind(REWRITE)
    .fetch_optional(pool)
    .await)?;
    if done.is_some() {
        return Ok(Rewrite::AlreadyDone);
    }
    let update = if db.is_postgres() {
        "UPDATE events SET schema_version = $1, data = CAST($2 AS jsonb), metadata = CAST($3 AS jsonb) WHERE event_id = CAST($4 AS uuid)"
    } else {
        "UPDATE events SET schema_version = $1, data = $2, metadata = $3 WHERE event_id = $4"
    };
    let mut after: i64 = 0;
    let mut events: u64 = 0;
    loop {
        type Row = (i64, String, String, i32, String, String);
        let page: Vec<Row> = with_pool!(db, pool => sqlx::query_as(
            "SELECT CAST(position AS BIGINT), CAST(event_id AS TEXT), event_type, schema_version, \
             CAST(data AS TEXT), CAST(metadata AS TEXT) FROM events WHERE position > $1 \
             ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(PAGE)
        .fetch_all(pool)
        .await)?;
        let n = page.len() as i64;
        for (position, event_id, event_type, schema_version, data, metadata) in page {
            after = position;
            let parse = |text: &str| {
                serde_json::from_str::<Value>(text)
                    .map_err(|e| RewriteError::Malformed(event_id.clone(), e))
            };
            let (data, metadata) = (parse(&data)?, parse(&metadata)?);
            let Some((version, data, metadata)) =
                rewritten(keys, &event_type, schema_version, data, metadata).await?
            else {
                continue;
            };
            with_pool!(db, pool => sqlx::query(update)
                .bind(version)
                .bind(data.to_string())
                .bind(metadata.to_string())
                .bind(&event_id)
                .execute(pool)
                .await
                .map(|_| ()))?;
            events += 1;
        }
        if n < PAGE {
            break;
        }
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    with_pool!(db, pool => async {
        let mut tx = pool.begin().await?;
        if events > 0 {
            // Folded states that may hold the plaintexts: a cache, rebuilt on the next load.
            sqlx::query("DELETE FROM snapshots").execute(&mut *tx).await?;
        }
        sqlx::query("INSERT INTO log_rewrites (name, done_at, events) VALUES ($1, $2, $3)")
            .bind(REWRITE)
            .bind(&now)
            .bind(i64::try_from(events).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }
    .await)?;
    Ok(Rewrite::Done { events })
}

/// Drops the old row versions of rewritten events out of the database files (PostgreSQL keeps
/// them until vacuumed, SQLite in its free pages): after [`seal_personal_data`] rewrote events
/// and the read models were rebuilt.
pub async fn vacuum(db: &Database) -> Result<(), RewriteError> {
    match db {
        Database::Postgres(pool) => {
            sqlx::query("VACUUM FULL events").execute(pool).await?;
            sqlx::query("VACUUM FULL snapshots").execute(pool).await?;
        }
        Database::Sqlite(pool) => {
            sqlx::query("VACUUM").execute(pool).await?;
        }
    }
    Ok(())
}
