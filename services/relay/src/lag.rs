//! The relay's lag: how many committed events JetStream has not acknowledged yet, and how old
//! the first of them is. Measured periodically by the active relay (never inside the publish
//! path), and exported as gauges.

use appreg_eventstore::{EventStore, LogPosition, StoreError};
use chrono::Utc;
use sqlx::postgres::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Counting stops here: beyond it the exact figure does not matter and costs a long scan.
const COUNT_CAP: i64 = 1_000_000;

/// Without PostgreSQL the lag is measured by reading at most this many events.
const SCAN_CAP: i64 = 1_000;

/// Committed events after a position (whether or not below the visibility horizon yet).
const PG_LAG: &str = "\
SELECT (SELECT count(*) FROM (SELECT 1 FROM events WHERE (tx_id, position) > ($1, $2) \
                              LIMIT $3) pending)::bigint,
       (SELECT recorded_at FROM events WHERE (tx_id, position) > ($1, $2) \
        ORDER BY tx_id, position LIMIT 1)";

/// One measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub events: i64,
    pub seconds: f64,
}

/// Measures the lag behind `published`: with SQL on PostgreSQL, otherwise through the store.
pub async fn measure(
    store: &dyn EventStore,
    pg_pool: Option<&PgPool>,
    published: LogPosition,
) -> Result<Lag, StoreError> {
    let (events, oldest) = match pg_pool {
        Some(pool) => {
            let (events, oldest): (i64, Option<chrono::DateTime<Utc>>) = sqlx::query_as(PG_LAG)
                .bind(published.tx)
                .bind(published.pos)
                .bind(COUNT_CAP)
                .fetch_one(pool)
                .await?;
            (events, oldest)
        }
        None => {
            let pending = store.read_log(published, SCAN_CAP).await?;
            let count = i64::try_from(pending.len()).unwrap_or(i64::MAX);
            (count, pending.first().map(|e| e.recorded_at))
        }
    };
    let seconds = oldest.map_or(0.0, |at| {
        (Utc::now() - at).num_milliseconds().max(0) as f64 / 1000.0
    });
    Ok(Lag { events, seconds })
}

/// Updates the lag gauges every `every` from the published position, until dropped.
pub async fn monitor(
    store: Arc<dyn EventStore>,
    pg_pool: Option<PgPool>,
    mut published: watch::Receiver<LogPosition>,
    stream: String,
    every: Duration,
) {
    loop {
        let position = *published.borrow_and_update();
        match measure(store.as_ref(), pg_pool.as_ref(), position).await {
            Ok(lag) => {
                metrics::gauge!("appreg_relay_lag_events", "stream" => stream.clone())
                    .set(lag.events as f64);
                metrics::gauge!("appreg_relay_lag_seconds", "stream" => stream.clone())
                    .set(lag.seconds);
            }
            Err(error) => tracing::debug!(%error, "relay: lag measurement failed"),
        }
        tokio::time::sleep(every).await;
    }
}
