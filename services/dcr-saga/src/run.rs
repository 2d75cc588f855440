//! The saga's loop: a follower of the event log ([`appreg_worker::follower`]) resumable from its
//! checkpoint in `saga_checkpoints`, handing its requests to [`Saga::handle`], up to
//! [`SagaConfig::concurrency`](crate::SagaConfig::concurrency) in flight, finishing in any order
//! (each provider's calls are bounded by its own bulkhead); its checkpoint is their low-water
//! mark: it only moves past a request once it and every earlier one was handled (or parked). A
//! request that cannot be handled now (the database or the vault is down) is retried; after
//! [`SagaConfig::park_after`](crate::SagaConfig::park_after) failed tries it is parked in
//! `saga_parked` ([`parked`], [`retry_parked`]) and no longer holds the checkpoint. A crash
//! replays from the checkpoint, which the saga's idempotency makes harmless. One active saga per
//! database (a PostgreSQL advisory lock); a standby takes over when it dies.

use crate::saga::{Saga, SagaError};
use appreg_eventstore::{Database, EventStore, StoredEvent};
use appreg_worker::follower::{self, Checkpoint, FollowerConfig, Handler, Outcome};
use appreg_worker::parked::{self as parking, ParkedError, ParkedEvent, Parking, RetrySummary};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The saga's row in `saga_checkpoints`.
const CHECKPOINT: Checkpoint = Checkpoint {
    table: "saga_checkpoints",
    name: "dcr-saga",
};
/// The advisory lock that makes one saga active.
const LOCK: &str = "saga:dcr";
/// Where the saga parks the requests that keep failing.
const PARKED: &str = "saga_parked";

/// Applies the saga's migration.
pub async fn migrate(db: &Database) -> Result<(), appreg_eventstore::StoreError> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    match db {
        Database::Postgres(pool) => migrator.run(pool).await?,
        Database::Sqlite(pool) => migrator.run(pool).await?,
    }
    Ok(())
}

/// The saga as a follower of the log.
struct Reactor(Arc<Saga>);

impl Handler for Reactor {
    type Error = SagaError;

    fn wants(&self, e: &StoredEvent) -> bool {
        Saga::wants(e)
    }

    fn payload_types(&self) -> Option<&'static [&'static str]> {
        // `observe` reads only the stream.
        Some(Saga::EVENT_TYPES)
    }

    fn observe(&self, e: &StoredEvent) {
        self.0.observe(e);
    }

    fn activated(&self) {
        // A standby (or a saga that stepped down) observed nothing meanwhile.
        self.0.forget_registries();
    }

    async fn handle(&self, e: &StoredEvent, _: &CancellationToken) -> Result<Outcome, SagaError> {
        match self.0.handle(e).await {
            Ok(()) => Ok(Outcome::Done),
            Err(error) => {
                metrics::counter!("appreg_dcr_handler_errors_total").increment(1);
                Err(error)
            }
        }
    }
}

/// Runs the saga until `shutdown` fires, `concurrency` requests at a time.
pub async fn run(
    saga: Arc<Saga>,
    db: Database,
    store: Arc<dyn EventStore>,
    concurrency: usize,
    shutdown: CancellationToken,
) {
    let park_after = saga.config().park_after;
    let config = FollowerConfig {
        concurrency,
        parking: (park_after > 0).then_some(Parking {
            table: PARKED,
            after: park_after,
        }),
        ..FollowerConfig::new("dcr-saga", LOCK, CHECKPOINT)
    };
    // Once per database: native applications registered as confidential clients become
    // public ones (their requests are handled by the loop below).
    let moving = tokio::spawn(crate::public_clients::run(
        saga.clone(),
        db.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    follower::follow(Reactor(saga), config, db, store, shutdown).await;
    moving.abort();
}

/// The requests the saga parked, oldest first (at most `limit`), and how many there are.
pub async fn parked(db: &Database, limit: i64) -> Result<(Vec<ParkedEvent>, i64), ParkedError> {
    let list = parking::list(db, PARKED, CHECKPOINT.name, limit).await?;
    let count = parking::count(db, PARKED, CHECKPOINT.name).await?;
    Ok((list, count))
}

/// Hands every parked request to `saga` once more (after the cause was fixed): the handled ones
/// leave `saga_parked`, the others stay with their new reason. Safe beside a running saga: the
/// saga decides on the application's current state, idempotently.
pub async fn retry_parked(
    saga: Arc<Saga>,
    db: &Database,
    store: &dyn EventStore,
) -> Result<RetrySummary, ParkedError> {
    parking::retry(&Reactor(saga), db, store, PARKED, CHECKPOINT.name).await
}
