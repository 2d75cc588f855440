//! Batched reads for registration requests: the requests in flight ask for their application's
//! state and for a client obtained earlier for them; one task answers whatever has queued up
//! meanwhile with two statements — one read of all their streams
//! ([`EventStore::read_streams`]) and one of their `dcr_requests` rows. Every answer is read
//! after it was asked for, so it is as fresh as a read of its own.

use crate::apps;
use crate::saga::{SagaError, Stored};
use appreg_domain::application::Application;
use appreg_domain::ApplicationId;
use appreg_eventstore::{Database, EventStore, StoredEvent};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
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
    jobs: OnceLock<mpsc::UnboundedSender<Job>>,
    db: Database,
    store: Arc<dyn EventStore>,
}

impl Loader {
    pub fn new(db: Database, store: Arc<dyn EventStore>) -> Self {
        Loader {
            jobs: OnceLock::new(),
            db,
            store,
        }
    }

    /// The application and the client obtained for request `key`, read with the others waiting.
    pub async fn load(&self, id: ApplicationId, key: &str) -> Result<Loaded, SagaError> {
        let jobs = self.jobs.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(batches(receiver, self.db.clone(), self.store.clone()));
            sender
        });
        let (reply, answer) = oneshot::channel();
        let job = Job {
            id,
            key: key.to_string(),
            reply,
        };
        let stopped = || SagaError::Stopped("loader");
        jobs.send(job).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn batches(
    mut receiver: mpsc::UnboundedReceiver<Job>,
    db: Database,
    store: Arc<dyn EventStore>,
) {
    while let Some(first) = receiver.recv().await {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        jobs.retain(|job| !job.reply.is_closed());
        if !jobs.is_empty() {
            answer(&db, store.as_ref(), jobs).await;
        }
    }
}

async fn answer(db: &Database, store: &dyn EventStore, jobs: Vec<Job>) {
    let streams: Vec<String> = jobs.iter().map(|j| j.id.stream_id()).collect();
    let keys: Vec<String> = jobs.iter().map(|j| j.key.clone()).collect();
    let read = async {
        let events = store
            .read_streams(&streams)
            .await
            .map_err(|e| SagaError::Command(e.into()))?;
        let obtained = obtained(db, &keys).await?;
        let in_flight = in_flight(db, &keys).await?;
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

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

/// The `dcr_requests` rows of these requests, by request key.
async fn obtained(db: &Database, keys: &[String]) -> Result<HashMap<String, Stored>, sqlx::Error> {
    const COLUMNS: &str =
        "SELECT request_key, client_id, registration_client_uri, secret_fingerprint, \
                           secret_expires_at FROM dcr_requests";
    let rows: Vec<Row> = match db {
        Database::Postgres(pool) => {
            sqlx::query_as(&format!("{COLUMNS} WHERE request_key = ANY($1)"))
                .bind(keys)
                .fetch_all(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            let mut rows = Vec::new();
            for key in keys {
                let row: Option<Row> = sqlx::query_as(&format!("{COLUMNS} WHERE request_key = $1"))
                    .bind(key)
                    .fetch_optional(pool)
                    .await?;
                rows.extend(row);
            }
            rows
        }
    };
    Ok(rows
        .into_iter()
        .map(|(key, client_id, uri, fingerprint, expires)| {
            let stored = Stored {
                client_id,
                registration_client_uri: uri,
                secret_fingerprint: fingerprint,
                secret_expires_at: expires
                    .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
                    .map(|d| d.with_timezone(&chrono::Utc)),
            };
            (key, stored)
        })
        .collect())
}

/// The in-flight marks (`dcr_attempts`) of these requests, by request key.
async fn in_flight(
    db: &Database,
    keys: &[String],
) -> Result<HashMap<String, (u32, chrono::DateTime<chrono::Utc>)>, sqlx::Error> {
    const COLUMNS: &str = "SELECT request_key, attempt, started_at FROM dcr_attempts";
    let rows: Vec<(String, i64, String)> = match db {
        Database::Postgres(pool) => {
            sqlx::query_as(&format!("{COLUMNS} WHERE request_key = ANY($1)"))
                .bind(keys)
                .fetch_all(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            let mut rows = Vec::new();
            for key in keys {
                let row: Option<(String, i64, String)> =
                    sqlx::query_as(&format!("{COLUMNS} WHERE request_key = $1"))
                        .bind(key)
                        .fetch_optional(pool)
                        .await?;
                rows.extend(row);
            }
            rows
        }
    };
    Ok(rows
        .into_iter()
        .filter_map(|(key, attempt, started_at)| {
            let attempt = u32::try_from(attempt).ok()?;
            let started_at = chrono::DateTime::parse_from_rfc3339(&started_at).ok()?;
            Some((key, (attempt, started_at.with_timezone(&chrono::Utc))))
        })
        .collect())
}
