//! Batched reads for registration requests: the requests in flight ask for their application's
//! state and for a client obtained earlier for them; one task answers whatever has queued up
//! meanwhile with two statements — one read of all their streams
//! ([`EventStore::read_streams`]) and one of their `dcr_requests` and `dcr_attempts` rows.
//! Every answer is read after it was asked for, so it is as fresh as a read of its own.

use crate::apps;
use crate::batch::{self, Queue};
use crate::saga::{SagaError, Stored};
use appreg_domain::application::Application;
use appreg_domain::ApplicationId;
use appreg_eventstore::{Database, EventStore, Kept, StoredEvent};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most requests answered by one read.
const MAX_BATCH: usize = 256;

/// A registration request's application and what was obtained for it before.
pub(crate) struct Loaded {
    pub app: Option<Application>,
    pub version: i64,
    /// A client obtained earlier for the request and recorded in `dcr_requests`.
    pub obtained: Option<Stored>,
    /// An attempt of the request left in flight (`dcr_attempts`): its number and start.
    pub in_flight: Option<(u32, chrono::DateTime<chrono::Utc>)>,
}

struct Job {
    id: ApplicationId,
    key: String,
    reply: oneshot::Sender<Result<Loaded, SagaError>>,
}

pub(crate) struct Loader {
    queue: Queue<Job>,
    db: Database,
    store: Arc<dyn EventStore>,
}

impl Loader {
    pub fn new(db: Database, store: Arc<dyn EventStore>) -> Self {
        Loader {
            queue: Queue::new(),
            db,
            store,
        }
    }

    /// The application and the client obtained for request `key`, read with the others waiting.
    pub async fn load(&self, id: ApplicationId, key: &str) -> Result<Loaded, SagaError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            id,
            key: key.to_string(),
            reply,
        };
        let stopped = || SagaError::Stopped("loader");
        let start = |receiver| batches(receiver, self.db.clone(), self.store.clone());
        if !self.queue.send(job, start) {
            return Err(stopped());
        }
        answer.await.map_err(|_| stopped())?
    }
}

async fn batches(
    mut receiver: mpsc::UnboundedReceiver<Job>,
    db: Database,
    store: Arc<dyn EventStore>,
) {
    let mut kept = Kept::new();
    while let Some(mut jobs) = batch::next(&mut receiver, MAX_BATCH, &mut kept).await {
        jobs.retain(|job| !job.reply.is_closed());
        if !jobs.is_empty() {
            answer(&db, store.as_ref(), jobs, &mut kept).await;
        }
    }
}

async fn answer(db: &Database, store: &dyn EventStore, jobs: Vec<Job>, kept: &mut Kept) {
    let streams: Vec<String> = jobs.iter().map(|j| j.id.stream_id()).collect();
    let keys: Vec<String> = jobs.iter().map(|j| j.key.clone()).collect();
    let read = async {
        let events = store
            .read_streams(&streams)
            .await
            .map_err(|e| SagaError::Command(e.into()))?;
        let (obtained, in_flight) = recorded(db, &keys, kept).await?;
        Ok::<_, SagaError>((events, obtained, in_flight))
    };
    let (events, obtained, in_flight) = match read.await {
        Ok(read) => read,
        Err(error) => {
            let error = Arc::new(error);
            for job in jobs {
                let _ = job.reply.send(Err(SagaError::Batch(error.clone())));
            }
            return;
        }
    };
    let mut by_stream: HashMap<&str, Vec<StoredEvent>> = HashMap::new();
    for e in &events {
        by_stream
            .entry(e.stream_id.as_str())
            .or_default()
            .push(e.clone());
    }
    for (job, stream) in jobs.into_iter().zip(&streams) {
        let events = by_stream.get(stream.as_str()).map(Vec::as_slice);
        let loaded = apps::fold(events.unwrap_or_default())
            .map(|(app, version)| Loaded {
                app,
                version,
                obtained: obtained.get(&job.key).cloned(),
                in_flight: in_flight.get(&job.key).copied(),
            })
            .map_err(SagaError::from);
        let _ = job.reply.send(loaded);
    }
}

/// The `dcr_requests` and `dcr_attempts` rows of the request keys `$1` (PostgreSQL): one
/// primary-key look-up per key in each table whatever the plan cache decides. With
/// `request_key = ANY($1)`, the generic plan a connection made while `dcr_requests` was small (no
/// statistics yet) was a scan of the whole table, kept as the table grew: 121 scans reading
/// 280,000 rows in one benchmark run of 5,500 registrations, each row compared with every key.
const RECORDED: &str = "\
SELECT r.request_key, r.client_id, r.registration_client_uri, r.secret_fingerprint, \
       r.secret_expires_at, NULL::bigint, NULL::text
FROM (SELECT DISTINCT k FROM UNNEST($1::text[]) AS u(k)) AS s
CROSS JOIN LATERAL (SELECT * FROM dcr_requests x WHERE x.request_key = s.k OFFSET 0) AS r
UNION ALL
SELECT a.request_key, NULL, NULL, NULL, NULL, a.attempt, a.started_at
FROM (SELECT DISTINCT k FROM UNNEST($1::text[]) AS u(k)) AS s
CROSS JOIN LATERAL (SELECT * FROM dcr_attempts x WHERE x.request_key = s.k OFFSET 0) AS a";

/// What the saga recorded of these requests, by request key: the clients obtained for them
/// (`dcr_requests`) and their attempts left in flight (`dcr_attempts`). One statement on
/// PostgreSQL ([`RECORDED`]).
async fn recorded(
    db: &Database,
    keys: &[String],
    kept: &mut Kept,
) -> Result<(Obtained, InFlight), sqlx::Error> {
    let mut obtained = Obtained::new();
    let mut in_flight = InFlight::new();
    match db {
        Database::Postgres(pool) => {
            let rows: Result<Vec<RecordedRow>, _> = sqlx::query_as(RECORDED)
                .bind(keys)
                .fetch_all(kept.get(pool).await?)
                .await;
            kept.used(rows.is_ok());
            for (key, client_id, uri, fingerprint, expires, attempt, started_at) in rows? {
                if let Some(client_id) = client_id {
                    obtained.insert(key.clone(), stored(client_id, uri, fingerprint, expires));
                }
                if let Some(mark) = attempt.zip(started_at).and_then(mark) {
                    in_flight.insert(key, mark);
                }
            }
        }
        Database::Sqlite(pool) => {
            for key in keys {
                let row: Option<ClientRow> = sqlx::query_as(
                    "SELECT client_id, registration_client_uri, secret_fingerprint, \
                     secret_expires_at FROM dcr_requests WHERE request_key = $1",
                )
                .bind(key)
                .fetch_optional(pool)
                .await?;
                if let Some((client_id, uri, fingerprint, expires)) = row {
                    obtained.insert(key.clone(), stored(client_id, uri, fingerprint, expires));
                }
                let row: Option<(i64, String)> = sqlx::query_as(
                    "SELECT attempt, started_at FROM dcr_attempts WHERE request_key = $1",
                )
                .bind(key)
                .fetch_optional(pool)
                .await?;
                if let Some(mark) = row.and_then(mark) {
                    in_flight.insert(key.clone(), mark);
                }
            }
        }
    }
    Ok((obtained, in_flight))
}

type Obtained = HashMap<String, Stored>;
/// A client obtained for a request: client_id, registration_client_uri, secret fingerprint,
/// secret expiry.
type ClientRow = (String, Option<String>, Option<String>, Option<String>);
/// A request key with its obtained client's columns and its in-flight mark's (either may be
/// NULL).
type RecordedRow = (
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<String>,
);
type InFlight = HashMap<String, (u32, chrono::DateTime<chrono::Utc>)>;

fn stored(
    client_id: String,
    registration_client_uri: Option<String>,
    secret_fingerprint: Option<String>,
    secret_expires_at: Option<String>,
) -> Stored {
    Stored {
        client_id,
        registration_client_uri,
        secret_fingerprint,
        secret_expires_at: secret_expires_at
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
            .map(|d| d.with_timezone(&chrono::Utc)),
    }
}

/// An in-flight mark's attempt number and start (a mark that does not parse is ignored).
fn mark((attempt, started_at): (i64, String)) -> Option<(u32, chrono::DateTime<chrono::Utc>)> {
    let attempt = u32::try_from(attempt).ok()?;
    let started_at = chrono::DateTime::parse_from_rfc3339(&started_at).ok()?;
    Some((attempt, started_at.with_timezone(&chrono::Utc)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_test_support::postgres::{fresh_postgres_url, generic_plan};

    /// Given the saga's tables without statistics (as on a server without autovacuum, or before
    /// its first analyze), empty and then of 20,000 recorded requests, when PostgreSQL plans the
    /// read of the recorded requests once for any arguments (the generic plan a connection then
    /// keeps, however the tables grow), then it looks each key up in the primary keys and scans
    /// neither table.
    #[tokio::test]
    async fn recorded_requests_are_read_by_key_whatever_the_plan_cache_decides() {
        let db = Database::connect(&fresh_postgres_url().await, 2)
            .await
            .unwrap();
        crate::migrate(&db).await.unwrap();
        let Database::Postgres(pool) = &db else {
            unreachable!()
        };
        for requests in [0, 20_000] {
            if requests > 0 {
                sqlx::query(
                    "INSERT INTO dcr_requests (request_key, application_id, provider_id, client_id, \
                                               state, updated_at) \
                     SELECT i || ':2', i::text, 'p', 'c' || i, 'OBTAINED', '' \
                     FROM generate_series(1, 20000) AS i",
                )
                .execute(pool)
                .await
                .unwrap();
            }
            let plan = generic_plan(pool, RECORDED, "text[]", "'{a:2,b:2,a:2}'").await;
            assert!(!plan.contains("Seq Scan"), "{requests} requests:\n{plan}");
            for index in ["dcr_requests_pkey", "dcr_attempts_pkey"] {
                assert!(
                    plan.contains(&format!("Index Scan using {index}")),
                    "{plan}"
                );
            }
        }
        db.close().await;
    }
}
