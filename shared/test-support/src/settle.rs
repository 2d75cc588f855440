//! A whole system settling, and the applications its log holds: what the fault-and-load suite
//! (`appreg --test faults`) and the deployed-topology suite (`appreg --test topology`) check after
//! their load.

use crate::nats::all_events;
use appreg_domain::{
    Application, ApplicationEvent, ApplicationStatus, DomainEvent, RegistrationState,
};
use appreg_eventstore::{Database, EventStore, LogPosition};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a system may take to settle.
const SETTLE_WITHIN: Duration = Duration::from_secs(180);

/// The log position in the one `(tx, pos)` row `sql` selects (none: no row, or the database
/// cannot answer now).
pub async fn checkpoint(pool: &PgPool, sql: &str) -> Option<LogPosition> {
    sqlx::query_as::<_, (i64, i64)>(sql)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
        .map(|(tx, pos)| LogPosition { tx, pos })
}

/// Every application's final state (archived ones included), folded from the log.
pub async fn final_states(store: &dyn EventStore) -> BTreeMap<String, Application> {
    let mut states: BTreeMap<String, Option<Application>> = BTreeMap::new();
    for e in all_events(store).await {
        if e.stream_type != "application" {
            continue;
        }
        let event = ApplicationEvent::decode(&e.event_type, e.schema_version, e.data)
            .expect("a stored event decodes");
        let entry = states.entry(e.stream_id).or_default();
        *entry = Application::evolve(entry.take(), &event, e.recorded_at, e.version);
    }
    states
        .into_iter()
        .filter_map(|(id, app)| app.map(|a| (id, a)))
        .collect()
}

/// Active applications still waiting for their client at the provider.
pub async fn registering(store: &dyn EventStore) -> usize {
    final_states(store)
        .await
        .values()
        .filter(|a| {
            a.status == ApplicationStatus::Active
                && a.registration
                    .as_ref()
                    .is_some_and(|r| r.state == RegistrationState::Registering)
        })
        .count()
}

/// Waits until the read model's projector, the DCR saga and the lifecycle process manager have
/// handled every committed event, nothing new has arrived for four checks in a row (half a
/// second apart), and no registration is in flight; fails the test after three minutes, naming
/// who lags. PostgreSQL only.
pub async fn quiescent(db: &Database, store: &dyn EventStore) {
    let Database::Postgres(pool) = db else {
        panic!("the checkpoints are read on PostgreSQL")
    };
    let started = Instant::now();
    let mut stable = 0;
    let mut last = None;
    loop {
        let committed = store.last_committed().await.unwrap();
        let rm = checkpoint(
            pool,
            "SELECT tx, pos FROM rm_checkpoints WHERE name = 'applications'",
        )
        .await;
        let saga = checkpoint(
            pool,
            "SELECT tx, pos FROM saga_checkpoints WHERE name = 'dcr-saga'",
        )
        .await;
        let pm = checkpoint(
            pool,
            "SELECT tx, pos FROM lifecycle_checkpoints WHERE name = 'lifecycle'",
        )
        .await;
        let caught = [rm, saga, pm]
            .iter()
            .all(|c| c.is_some_and(|c| c >= committed));
        if caught && last == Some(committed) {
            stable += 1;
            if stable >= 4 && registering(store).await == 0 {
                return;
            }
        } else {
            stable = 0;
        }
        last = Some(committed);
        if started.elapsed().as_secs().is_multiple_of(10) && stable == 0 {
            println!(
                "  settling: committed {committed}, read model {rm:?}, saga {saga:?}, lifecycle {pm:?}"
            );
        }
        assert!(
            started.elapsed() < SETTLE_WITHIN,
            "the system did not settle: committed {committed}, read model {rm:?}, saga {saga:?}, lifecycle {pm:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
