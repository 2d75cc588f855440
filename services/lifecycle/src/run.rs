//! The process manager's loop: a follower of the event log ([`appreg_worker::follower`])
//! resumable from its checkpoint in `lifecycle_checkpoints`, handling its triggers one after
//! another, in log order. The checkpoint only moves past a trigger once all its steps are
//! recorded; a trigger that cannot be handled now is retried with back-off, never skipped; a
//! crash replays from the checkpoint, which deciding every step on the current state makes
//! harmless. One active instance per database (a PostgreSQL advisory lock); a standby takes over
//! when it dies.
//!
//! It also keeps the vault clean: every `ApiKeyRevoked` (a key revoked by a member, or with its
//! subscription closed by a member or by an archive) deletes the key's sealed value from the
//! vault; the key's prefix and hash stay in the events and read models for audit. Idempotent: a
//! replay deletes nothing more.

use crate::process::{handle, trigger, Handled, LifecycleError, TriggerKind};
use crate::LifecycleConfig;
use appreg_eventstore::{Database, EventStore, LogPosition, StoredEvent};
use appreg_worker::follower::{self, Checkpoint, FollowerConfig, Handler, Outcome};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The name of the process manager's row in `lifecycle_checkpoints`.
pub const CHECKPOINT: &str = "lifecycle";
const CHECKPOINT_ROW: Checkpoint = Checkpoint {
    table: "lifecycle_checkpoints",
    name: CHECKPOINT,
};
/// The advisory lock that makes one instance active.
const LOCK: &str = "lifecycle";

/// Applies the process manager's migration (its checkpoint table), and the vault's (whose
/// revoked keys it deletes).
pub async fn migrate(db: &Database) -> Result<(), appreg_eventstore::StoreError> {
    appreg_secrets::store::migrate(db).await?;
    // Other components keep their own migrations in the same database.
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await?,
        Database::Sqlite(pool) => migrator.run(pool).await?,
    }
    Ok(())
}

/// Where the process manager is in the log: every trigger up to it is handled.
pub async fn checkpoint(db: &Database) -> Result<LogPosition, sqlx::Error> {
    CHECKPOINT_ROW.load(db).await
}

/// Sets the checkpoint (`LogPosition::START`: the next run replays the whole log, which
/// appends nothing for the triggers already handled).
pub async fn set_checkpoint(db: &Database, at: LogPosition) -> Result<(), sqlx::Error> {
    CHECKPOINT_ROW.reset(db, at).await
}

/// The process manager as a follower of the log.
struct ProcessManager {
    config: LifecycleConfig,
    store: Arc<dyn EventStore>,
    db: Database,
}

/// The vault owner and kind of the key an `ApiKeyRevoked` revoked.
fn revoked_key(e: &StoredEvent) -> Option<(String, String)> {
    if e.event_type != "ApiKeyRevoked" {
        return None;
    }
    let application = e.stream_id.strip_prefix("application-")?;
    let key_id = e.data.get("key_id")?.as_str()?;
    Some((
        appreg_secrets::store::api_key_owner(application),
        key_id.to_string(),
    ))
}

/// The event types the process manager acts on: only their payloads are read from the log
/// (a test checks that it wants no event of another type).
const PAYLOAD_TYPES: &[&str] = &[
    "ApplicationArchived",
    "ApplicationRestored",
    "ApiKeyRevoked",
];

fn wants(e: &StoredEvent) -> bool {
    trigger(e).is_some() || revoked_key(e).is_some()
}

impl Handler for ProcessManager {
    type Error = LifecycleError;

    fn wants(&self, e: &StoredEvent) -> bool {
        wants(e)
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        Some(PAYLOAD_TYPES)
    }

    async fn handle(
        &self,
        e: &StoredEvent,
        stop: &CancellationToken,
    ) -> Result<Outcome, LifecycleError> {
        if let Some((owner, key_id)) = revoked_key(e) {
            let purged = appreg_secrets::store::purge(&self.db, &owner, &key_id).await?;
            if purged > 0 {
                metrics::counter!("appreg_vault_purged_keys_total").increment(purged);
            }
            return Ok(Outcome::Done);
        }
        match handle(&self.config, &self.store, e, stop).await {
            Ok(Handled::Done { .. }) => Ok(Outcome::Done),
            Ok(Handled::Interrupted { .. }) => Ok(Outcome::Interrupted),
            Err(error) => {
                metrics::counter!("appreg_lifecycle_errors_total").increment(1);
                Err(error)
            }
        }
    }
}

/// Runs the process manager until `shutdown` fires (on PostgreSQL, standing by while another
/// instance holds the lock). Triggers are handled one at a time, in log order.
pub async fn run(
    config: LifecycleConfig,
    db: Database,
    store: Arc<dyn EventStore>,
    shutdown: CancellationToken,
) {
    // Exported from the start (at 0), not only after the first step or error.
    for kind in [TriggerKind::Archive, TriggerKind::Restore] {
        metrics::counter!("appreg_lifecycle_steps_total", "kind" => kind.as_str()).increment(0);
    }
    metrics::counter!("appreg_lifecycle_errors_total").increment(0);
    let pm = ProcessManager {
        config,
        store: store.clone(),
        db: db.clone(),
    };
    let follower = FollowerConfig::new("lifecycle", LOCK, CHECKPOINT_ROW);
    follower::follow(pm, follower, db, store, shutdown).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Given an application event of each of appreg's types (with the payload field a revoked
    /// key has), when the process manager is asked whether it wants it, then it wants only
    /// events of the types whose payloads it reads from the log.
    #[test]
    fn it_wants_only_the_types_whose_payloads_it_reads() {
        for event_type in appreg_domain::event_types() {
            let e = StoredEvent {
                position: LogPosition { tx: 1, pos: 1 },
                event_id: uuid::Uuid::now_v7(),
                stream_id: format!("application-{}", uuid::Uuid::now_v7()),
                stream_type: "application".into(),
                version: 2,
                event_type: event_type.to_string(),
                schema_version: 1,
                data: serde_json::json!({"key_id": "k"}),
                metadata: serde_json::json!({}),
                recorded_at: chrono::Utc::now(),
            };
            assert_eq!(
                wants(&e),
                PAYLOAD_TYPES.contains(&event_type),
                "{event_type}"
            );
        }
    }
}
