//! How far behind the event log a consumer is: the events after its checkpoint and the age of
//! the first of them. Two indexed queries on `events` (a count of at most [`COUNT_CAP`] index
//! entries and one row), cheap enough to run every few seconds and on every `/readyz`.

use appreg_eventstore::{Database, LogPosition};
use chrono::{DateTime, Utc};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The count of events behind stops here (a consumer that far behind is simply "far behind").
pub const COUNT_CAP: i64 = 100_000;

/// How often the lag gauges are refreshed.
pub const REFRESH: Duration = Duration::from_secs(5);

/// A consumer's distance from the head of the log.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Lag {
    /// Committed events after the checkpoint (at most [`COUNT_CAP`]).
    pub events: u64,
    /// Age of the first of them, in seconds (0 when there is none).
    pub seconds: f64,
}

/// The lag of a consumer whose checkpoint is `after` (everything up to it is applied).
pub async fn log_lag(db: &Database, after: LogPosition) -> Result<Lag, sqlx::Error> {
    let (count, first): (i64, Option<DateTime<Utc>>) = match db {
        Database::Postgres(pool) => {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM events WHERE (tx_id, position) > ($1, $2) \
                 LIMIT $3) AS behind",
            )
            .bind(after.tx)
            .bind(after.pos)
            .bind(COUNT_CAP)
            .fetch_one(pool)
            .await?;
            let first = if count == 0 {
                None
            } else {
                sqlx::query_scalar(
                    "SELECT recorded_at FROM events WHERE (tx_id, position) > ($1, $2) \
                     ORDER BY tx_id, position LIMIT 1",
                )
                .bind(after.tx)
                .bind(after.pos)
                .fetch_optional(pool)
                .await?
            };
            (count, first)
        }
        // One writer at a time: `position` alone orders the log (tx is always 0).
        Database::Sqlite(pool) => {
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM events WHERE position > $1 LIMIT $2)",
            )
            .bind(after.pos)
            .bind(COUNT_CAP)
            .fetch_one(pool)
            .await?;
            let first: Option<String> = if count == 0 {
                None
            } else {
                sqlx::query_scalar(
                    "SELECT recorded_at FROM events WHERE position > $1 ORDER BY position LIMIT 1",
                )
                .bind(after.pos)
                .fetch_optional(pool)
                .await?
            };
            let first = first
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            (count, first)
        }
    };
    let seconds = first
        .map(|t| (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0)
        .unwrap_or(0.0);
    Ok(Lag {
        events: u64::try_from(count).unwrap_or(0),
        seconds,
    })
}

/// The checkpoint a reactor keeps in `table` (`saga_checkpoints`, `lifecycle_checkpoints`:
/// columns `name`, `tx`, `pos`) under `name`; the start of the log when there is none.
pub async fn stored_checkpoint(
    db: &Database,
    table: &'static str,
    name: &str,
) -> Result<LogPosition, sqlx::Error> {
    let sql = format!("SELECT tx, pos FROM {table} WHERE name = $1");
    let row: Option<(i64, i64)> = match db {
        Database::Postgres(pool) => sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?,
        Database::Sqlite(pool) => sqlx::query_as(&sql).bind(name).fetch_optional(pool).await?,
    };
    Ok(row
        .map(|(tx, pos)| LogPosition { tx, pos })
        .unwrap_or(LogPosition::START))
}

/// A pair of gauges `<prefix>_lag_events` and `<prefix>_lag_seconds`, with labels.
#[derive(Clone)]
pub struct LagGauges {
    events: metrics::Gauge,
    seconds: metrics::Gauge,
}

impl LagGauges {
    /// `appreg_projection_lag_events{projection}` / `appreg_projection_lag_seconds{projection}`.
    pub fn projection(projection: &'static str) -> Self {
        LagGauges {
            events: metrics::gauge!("appreg_projection_lag_events", "projection" => projection),
            seconds: metrics::gauge!("appreg_projection_lag_seconds", "projection" => projection),
        }
    }

    /// `<prefix>_lag_events` / `<prefix>_lag_seconds`, unlabelled (`appreg_saga`,
    /// `appreg_lifecycle`).
    pub fn named(prefix: &'static str) -> Self {
        LagGauges {
            events: metrics::gauge!(format!("{prefix}_lag_events")),
            seconds: metrics::gauge!(format!("{prefix}_lag_seconds")),
        }
    }

    pub fn set(&self, lag: Lag) {
        self.events.set(lag.events as f64);
        self.seconds.set(lag.seconds);
    }
}

/// Refreshes `gauges` every [`REFRESH`] from the checkpoint `checkpoint` reads, until
/// `shutdown` fires. Failures are logged at debug level (the consumer itself reports its own).
pub async fn keep_refreshed<F, Fut, E>(
    db: Database,
    gauges: LagGauges,
    mut checkpoint: F,
    shutdown: CancellationToken,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<LogPosition, E>>,
    E: std::fmt::Display,
{
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let lag = async {
            let at = checkpoint().await.map_err(|e| e.to_string())?;
            log_lag(&db, at).await.map_err(|e| e.to_string())
        };
        match lag.await {
            Ok(lag) => gauges.set(lag),
            Err(error) => tracing::debug!(%error, "cannot measure a consumer's lag"),
        }
    }
}

/// Spawns [`keep_refreshed`] for a reactor whose checkpoint is the row `name` of `table`.
pub fn spawn_checkpoint_lag(
    db: Database,
    table: &'static str,
    name: &'static str,
    prefix: &'static str,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let probe = db.clone();
    tokio::spawn(keep_refreshed(
        db,
        LagGauges::named(prefix),
        move || {
            let probe = probe.clone();
            async move { stored_checkpoint(&probe, table, name).await }
        },
        shutdown,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_eventstore::{AppendRequest, NewEvent};
    use appreg_test_support::postgres::{fresh_postgres_url, fresh_sqlite_url};

    async fn append(db: &Database, stream: &str, age: chrono::Duration) -> LogPosition {
        let at =
            chrono::DateTime::from_timestamp_micros((Utc::now() - age).timestamp_micros()).unwrap();
        let store = db.event_store().await.unwrap();
        store
            .append(AppendRequest {
                stream_id: stream.into(),
                stream_type: "test".into(),
                expected_version: 0,
                events: vec![NewEvent {
                    event_id: uuid::Uuid::now_v7(),
                    event_type: "Happened".into(),
                    schema_version: 1,
                    data: serde_json::json!({}),
                    metadata: serde_json::json!({}),
                    recorded_at: at,
                }],
                claims: vec![],
                releases: vec![],
            })
            .await
            .unwrap()
            .position
    }

    async fn lag_of_a_consumer(db: Database) {
        db.migrate().await.unwrap();
        assert_eq!(
            log_lag(&db, LogPosition::START).await.unwrap(),
            Lag::default()
        );
        let first = append(&db, "s-1", chrono::Duration::seconds(30)).await;
        let second = append(&db, "s-2", chrono::Duration::zero()).await;
        let lag = log_lag(&db, LogPosition::START).await.unwrap();
        assert_eq!(lag.events, 2);
        assert!((29.0..60.0).contains(&lag.seconds), "{lag:?}");
        let lag = log_lag(&db, first).await.unwrap();
        assert_eq!(lag.events, 1);
        assert!(lag.seconds < 10.0, "{lag:?}");
        assert_eq!(log_lag(&db, second).await.unwrap(), Lag::default());
        // A reactor's checkpoint row; none yet: the start of the log.
        let create = "CREATE TABLE lag_test_checkpoints (name TEXT PRIMARY KEY, tx BIGINT NOT NULL, pos BIGINT NOT NULL)";
        let insert = "INSERT INTO lag_test_checkpoints (name, tx, pos) VALUES ('r', $1, $2)";
        match &db {
            Database::Postgres(pool) => {
                sqlx::query(create).execute(pool).await.unwrap();
            }
            Database::Sqlite(pool) => {
                sqlx::query(create).execute(pool).await.unwrap();
            }
        }
        let table = "lag_test_checkpoints";
        assert_eq!(
            stored_checkpoint(&db, table, "r").await.unwrap(),
            LogPosition::START
        );
        match &db {
            Database::Postgres(pool) => {
                sqlx::query(insert)
                    .bind(first.tx)
                    .bind(first.pos)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            Database::Sqlite(pool) => {
                sqlx::query(insert)
                    .bind(first.tx)
                    .bind(first.pos)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        assert_eq!(stored_checkpoint(&db, table, "r").await.unwrap(), first);
    }

    #[tokio::test]
    async fn lag_on_sqlite() {
        let (_file, url) = fresh_sqlite_url();
        lag_of_a_consumer(Database::connect(&url, 2).await.unwrap()).await;
    }

    #[tokio::test]
    async fn lag_on_postgres() {
        let url = fresh_postgres_url().await;
        lag_of_a_consumer(Database::connect(&url, 2).await.unwrap()).await;
    }
}
