//! Group commit of obtained clients: the saga's requests in flight hand the clients the provider
//! issued to one task, which records whatever has queued up meanwhile together — the secrets and
//! `dcr_requests` rows of the whole batch in one transaction, then every application's
//! `DcrClientRegistered` in one atomic multi-stream append ([`EventStore::append_batch`]).
//! Under load a batch holds the answers that arrived while the previous one was being written,
//! so the statements and commits per registration fall with the rate; alone, a request is a
//! batch of one.
//!
//! Order and failure rules are those of the one-by-one path: the secrets and the request row
//! commit before the event that names them (a crash in between leaves a recorded client, which
//! the replay reuses); when the batch append fails (a concurrent change of one application, a
//! client_id claimed elsewhere) nothing of it is appended and each request goes back to the
//! one-by-one path, which loads the application again and decides alone.

use crate::apps;
use crate::batch::{self, Queue};
use crate::saga::SagaError;
use appreg_dcr_client::provider::RegisteredClient;
use appreg_dcr_client::vault::secret_owner;
use appreg_domain::application::Application;
use appreg_domain::dcr::IssuedClient;
use appreg_domain::ApplicationId;
use appreg_eventstore::{Database, EventStore, Kept};
use appreg_secrets::SecretStore;
use sqlx::{Connection, PgConnection, SqlitePool};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most answers recorded in one batch.
const MAX_BATCH: usize = 256;

/// A client the provider issued for a registration request, with what recording it needs.
pub(crate) struct Obtained {
    /// `<application>:<request version>`, the `dcr_requests` key.
    pub key: String,
    pub id: ApplicationId,
    pub provider_id: String,
    pub client: RegisteredClient,
    pub request_version: i64,
    pub issued: IssuedClient,
    /// The application's state and stream version the request was decided on.
    pub loaded: (Application, i64),
    pub meta: serde_json::Value,
}

/// What became of an obtained client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Recorded, and the application's `DcrClientRegistered` appended.
    Registered,
    /// Recorded (secrets and request row), not appended: the one-by-one path decides.
    Recorded,
}

struct Job {
    obtained: Obtained,
    reply: oneshot::Sender<Result<Outcome, SagaError>>,
}

/// The rows that keep an obtained client: its sealed secrets and its request row.
pub(crate) struct Rows {
    /// (owner, kind, sealed, fingerprint).
    pub secrets: Vec<(String, &'static str, String, String)>,
    pub request: RequestRow,
}

pub(crate) struct RequestRow {
    pub key: String,
    pub application_id: String,
    pub provider_id: String,
    pub client_id: String,
    pub registration_client_uri: Option<String>,
    pub secret_fingerprint: Option<String>,
    pub secret_expires_at: Option<String>,
}

/// Seals what the provider issued (the secrets never leave this process unsealed).
pub(crate) fn rows_of(
    vault: &SecretStore,
    key: &str,
    id: ApplicationId,
    provider_id: &str,
    client: &RegisteredClient,
) -> Rows {
    let owner = secret_owner(id);
    let mut secrets = Vec::new();
    let mut secret_fingerprint = None;
    if let Some(secret) = &client.client_secret {
        let (value, fp) = vault.seal(&owner, "client_secret", secret);
        secret_fingerprint = Some(fp.clone());
        secrets.push((owner.clone(), "client_secret", value, fp));
    }
    if let Some(token) = &client.registration_access_token {
        let (value, fp) = vault.seal(&owner, "registration_access_token", token);
        secrets.push((owner.clone(), "registration_access_token", value, fp));
    }
    Rows {
        secrets,
        request: RequestRow {
            key: key.to_string(),
            application_id: id.0.to_string(),
            provider_id: provider_id.to_string(),
            client_id: client.client_id.clone(),
            registration_client_uri: client.registration_client_uri.clone(),
            secret_fingerprint,
            secret_expires_at: client
                .client_secret_expires_at
                .filter(|t| *t > 0)
                .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
                .map(|t| t.to_rfc3339()),
        },
    }
}

const UPSERT_SECRETS: &str = "\
INSERT INTO vault_secrets (owner, kind, sealed, fingerprint, updated_at)
SELECT s.owner, s.kind, s.sealed, s.fingerprint, $5
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) AS s(owner, kind, sealed, fingerprint)
ON CONFLICT (owner, kind) DO UPDATE SET sealed = excluded.sealed, \
    fingerprint = excluded.fingerprint, updated_at = excluded.updated_at";

const INSERT_REQUESTS: &str = "\
INSERT INTO dcr_requests (request_key, application_id, provider_id, client_id, \
    registration_client_uri, secret_fingerprint, secret_expires_at, state, updated_at)
SELECT r.key, r.app, r.provider, r.client, r.uri, r.fp, r.expires, 'OBTAINED', $8
FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
     AS r(key, app, provider, client, uri, fp, expires)
ON CONFLICT (request_key) DO NOTHING";

const INSERT_REQUEST: &str = "\
INSERT INTO dcr_requests (request_key, application_id, provider_id, client_id, \
    registration_client_uri, secret_fingerprint, secret_expires_at, state, updated_at) \
VALUES ($1, $2, $3, $4, $5, $6, $7, 'OBTAINED', $8) ON CONFLICT (request_key) DO NOTHING";

/// Writes the rows of obtained clients in one transaction (one statement per table on
/// PostgreSQL), and drops their requests' in-flight marks (`dcr_attempts`). No (owner, kind) twice: one row per application and request.
pub(crate) async fn write_obtained(
    db: &Database,
    rows: &[Rows],
    kept: &mut Kept,
) -> Result<(), sqlx::Error> {
    match db {
        Database::Postgres(pool) => {
            let written = write_obtained_pg(kept.get(pool).await?, rows).await;
            kept.used(written.is_ok());
            written
        }
        Database::Sqlite(pool) => write_obtained_sqlite(pool, rows).await,
    }
}

async fn write_obtained_pg(conn: &mut PgConnection, rows: &[Rows]) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now().to_rfc3339();
    let secrets = rows.iter().flat_map(|r| r.secrets.iter());
    let column = |f: fn(&RequestRow) -> Option<String>| {
        rows.iter().map(|r| f(&r.request)).collect::<Vec<_>>()
    };
    let mut tx = conn.begin().await?;
    sqlx::query(UPSERT_SECRETS)
        .bind(secrets.clone().map(|s| s.0.clone()).collect::<Vec<_>>())
        .bind(secrets.clone().map(|s| s.1).collect::<Vec<_>>())
        .bind(secrets.clone().map(|s| s.2.clone()).collect::<Vec<_>>())
        .bind(secrets.map(|s| s.3.clone()).collect::<Vec<_>>())
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(INSERT_REQUESTS)
        .bind(column(|r| Some(r.key.clone())))
        .bind(column(|r| Some(r.application_id.clone())))
        .bind(column(|r| Some(r.provider_id.clone())))
        .bind(column(|r| Some(r.client_id.clone())))
        .bind(column(|r| r.registration_client_uri.clone()))
        .bind(column(|r| r.secret_fingerprint.clone()))
        .bind(column(|r| r.secret_expires_at.clone()))
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM dcr_attempts WHERE request_key = ANY($1)")
        .bind(column(|r| Some(r.key.clone())))
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

async fn write_obtained_sqlite(pool: &SqlitePool, rows: &[Rows]) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now().to_rfc3339();
    let mut tx = pool.begin().await?;
    for r in rows {
        for (owner, kind, sealed, fp) in &r.secrets {
            sqlx::query(SecretStore::UPSERT)
                .bind(owner)
                .bind(*kind)
                .bind(sealed)
                .bind(fp)
                .bind(&now)
                .execute(&mut *tx)
                .await?;
        }
        let q = &r.request;
        sqlx::query(INSERT_REQUEST)
            .bind(&q.key)
            .bind(&q.application_id)
            .bind(&q.provider_id)
            .bind(&q.client_id)
            .bind(q.registration_client_uri.as_deref())
            .bind(q.secret_fingerprint.as_deref())
            .bind(q.secret_expires_at.as_deref())
            .bind(&now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM dcr_attempts WHERE request_key = $1")
            .bind(&q.key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

/// Hands obtained clients to the batching task (started on first use).
pub(crate) struct Recorder {
    queue: Queue<Job>,
    db: Database,
    store: Arc<dyn EventStore>,
    vault: SecretStore,
}

impl Recorder {
    pub fn new(db: Database, store: Arc<dyn EventStore>, vault: SecretStore) -> Self {
        Recorder {
            queue: Queue::new(),
            db,
            store,
            vault,
        }
    }

    /// Records an obtained client with whatever else is waiting; `Err` when its rows could not
    /// be written (nothing of it is recorded; the request is retried).
    pub async fn record(&self, obtained: Obtained) -> Result<Outcome, SagaError> {
        let (reply, answer) = oneshot::channel();
        let start = |receiver| {
            batches(
                receiver,
                self.db.clone(),
                self.store.clone(),
                self.vault.clone(),
            )
        };
        if !self.queue.send(Job { obtained, reply }, start) {
            return Err(SagaError::Stopped("recorder"));
        }
        answer.await.map_err(|_| SagaError::Stopped("recorder"))?
    }
}

/// The batching task: ends when the saga (the sender) is gone.
async fn batches(
    mut receiver: mpsc::UnboundedReceiver<Job>,
    db: Database,
    store: Arc<dyn EventStore>,
    vault: SecretStore,
) {
    let mut waiting: Vec<Job> = Vec::new();
    let mut kept = Kept::new();
    loop {
        if waiting.is_empty() {
            match batch::wait(&mut receiver, &mut kept).await {
                Some(job) => waiting.push(job),
                None => return,
            }
        }
        while waiting.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => waiting.push(job),
                Err(_) => break,
            }
        }
        // A request whose handler is gone (the saga stepped down) is not recorded here.
        waiting.retain(|job| !job.reply.is_closed());
        // One request per application in a batch (one append per stream); the others wait.
        let mut seen = HashSet::new();
        let (batch, later): (Vec<Job>, Vec<Job>) = std::mem::take(&mut waiting)
            .into_iter()
            .partition(|job| seen.insert(job.obtained.id));
        waiting = later;
        if !batch.is_empty() {
            record_batch(&db, store.as_ref(), &vault, batch, &mut kept).await;
        }
    }
}

async fn record_batch(
    db: &Database,
    store: &dyn EventStore,
    vault: &SecretStore,
    jobs: Vec<Job>,
    kept: &mut Kept,
) {
    metrics::histogram!("appreg_dcr_record_batch_size").record(jobs.len() as f64);
    let rows: Vec<Rows> = jobs
        .iter()
        .map(|j| {
            let o = &j.obtained;
            rows_of(vault, &o.key, o.id, &o.provider_id, &o.client)
        })
        .collect();
    if let Err(e) = write_obtained(db, &rows, kept).await {
        let error = Arc::new(SagaError::from(e));
        for job in jobs {
            let _ = job.reply.send(Err(SagaError::Batch(error.clone())));
        }
        return;
    }
    let mut appends = Vec::new();
    let mut appending = Vec::new();
    for job in jobs {
        let o = &job.obtained;
        let (app, version) = &o.loaded;
        match app.register_dcr_client(o.request_version, o.issued.clone()) {
            Ok(events) if events.is_empty() => {
                let _ = job.reply.send(Ok(Outcome::Registered));
            }
            Ok(events) => {
                appends.push(apps::append_request(o.id, app, *version, &events, &o.meta));
                appending.push(job);
            }
            // Refused on the loaded state: the one-by-one path decides (and gives the client back).
            Err(_) => {
                let _ = job.reply.send(Ok(Outcome::Recorded));
            }
        }
    }
    if appends.is_empty() {
        return;
    }
    let outcome = match store.append_batch(appends).await {
        Ok(_) => Outcome::Registered,
        Err(error) => {
            tracing::debug!(%error, requests = appending.len(), "batch append refused; recording one by one");
            metrics::counter!("appreg_dcr_record_batch_fallbacks_total").increment(1);
            Outcome::Recorded
        }
    };
    for job in appending {
        let _ = job.reply.send(Ok(outcome));
    }
}
