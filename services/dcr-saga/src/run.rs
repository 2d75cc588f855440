//! The saga's loop: a follower of the event log ([`appreg_worker::follower`]) resumable from its
//! checkpoint in `saga_checkpoints`, handing its requests to [`Saga::handle`], several at a time
//! across batches; its checkpoint only moves past a request once it and every earlier one was
//! handled. A request that cannot be handled now (the database or the vault is down) is retried,
//! never skipped; a crash replays the batch, which the saga's idempotency makes harmless. One
//! active saga per database (a PostgreSQL advisory lock); a standby takes over when it dies.

use crate::saga::{Saga, SagaError};
use appreg_eventstore::{Database, EventStore, StoredEvent};
use appreg_worker::follower::{self, Checkpoint, FollowerConfig, Handler, Outcome};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The saga's row in `saga_checkpoints`.
const CHECKPOINT: Checkpoint = Checkpoint {
    table: "saga_checkpoints",
    name: "dcr-saga",
};
/// The advisory lock that makes one saga active.
const LOCK: &str = "saga:dcr";

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
    let config = FollowerConfig {
        concurrency,
        ..FollowerConfig::new("dcr-saga", LOCK, CHECKPOINT)
    };
    follower::follow(Reactor(saga), config, db, store, shutdown).await;
}
