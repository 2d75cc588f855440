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
//!
//! Layout: this file holds the stream types, the error, the migrations and `with_pool!`;
//! `tables` the table sets, `fresh` the fold (`write_fresh!`), `model` the [`ReadModel`] handle
//! (its queries in `model::queries`), `apply` the batch transaction, `parking` poison events,
//! `checksum`, `rebuild` (with `replay`, the PostgreSQL replay) and `projector` the tailing
//! loop.

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
    /// A failure of the read model's own machinery (a task that died, a document that does not
    /// serialise), with its cause.
    #[error("read model: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ReadModelError {
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ReadModelError::Internal(e.into())
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

/// The number of an application's PENDING subscriptions: the `pending_subscriptions` column,
/// which lets the environment's queue of pending subscriptions read only the applications that
/// have one.
pub(crate) fn pending_subscriptions(app: &appreg_domain::Application) -> i32 {
    let pending = app
        .subscriptions
        .iter()
        .filter(|s| s.status == appreg_domain::subscription::SubscriptionStatus::Pending)
        .count();
    i32::try_from(pending).unwrap_or(i32::MAX)
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

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

#[macro_use]
mod fresh;

mod apply;
mod checksum;
mod model;
pub mod orphans;
mod parking;
mod projector;
mod rebuild;
mod replay;
mod tables;

use apply::{apply_batch, write_begin, UPSERT_CHECKPOINT};
pub use apply::{consumer_mark, Mark, NOTIFY_CHANNEL};
pub use checksum::{checksum, Checksum};
use model::{db_err, parse_doc};
pub use model::{AppFilter, AppSort, ReadModel};
use parking::apply_parking;
pub use parking::{parked, parked_count, retry_parked, ParkedEvent, RetryPolicy, RetrySummary};
pub use projector::run_projector;
pub use rebuild::{rebuild, Progress, RebuildSummary, REBUILD_BATCH};
pub use tables::{Tables, LIVE, SHADOW};

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
        let (_file, url) = appreg_test_support::postgres::fresh_sqlite_url();
        large_batch(Database::connect(&url, 2).await.unwrap()).await;
    }

    #[tokio::test]
    async fn large_batch_postgres() {
        let url = appreg_test_support::postgres::fresh_postgres_url().await;
        large_batch(Database::connect(&url, 2).await.unwrap()).await;
    }
}
