//! Native applications registered as confidential clients, before appreg registered native
//! applications as public clients (RFC 8252 §8.4: a native app cannot keep a secret), are moved
//! to public ones, once per database: the saga scans the log up to its head at start, asks each
//! such application for a client update (`DcrClientUpdateRequested` naming
//! `token_endpoint_auth_method`, through the one command path), and handles those requests as
//! any other: an RFC 7592 update with `token_endpoint_auth_method: none`, the secret deleted from
//! the vault, `DcrClientUpdated` with `client_secret_removed`. The scan's end is kept in
//! `saga_checkpoints` (row `dcr-saga:native-public-clients`); native applications created later
//! are public from the start. An application with another operation in progress is asked again
//! after it; one still busy after five minutes keeps the scan from being marked done, and the
//! whole scan is tried again later. Several saga instances may scan at once: each decision is made on
//! the application's current state, so a second request is never made.

use crate::apps::{self, CommandError};
use crate::saga::{Saga, SagaError};
use appreg_domain::application::ApplicationEvent;
use appreg_domain::DomainEvent;
use appreg_domain::{ApplicationId, ApplicationType, DomainError};
use appreg_eventstore::{Database, EventStore, LogPosition};
use appreg_worker::follower::Checkpoint;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the scan's end is kept.
const DONE: Checkpoint = Checkpoint {
    table: "saga_checkpoints",
    name: "dcr-saga:native-public-clients",
};
/// Events read per page of the scan.
const PAGE: i64 = 1_000;
/// How often, and how many times, applications busy with another operation are asked again.
const BUSY_RETRY: Duration = Duration::from_secs(2);
const BUSY_ROUNDS: u32 = 150;

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The scan had run before (nothing was read).
    pub already_done: bool,
    /// Native applications found in the log.
    pub native: usize,
    /// Client updates requested.
    pub requested: usize,
    /// Applications still busy with another operation when the scan gave up.
    pub busy: usize,
}

/// Scans the log once and asks every confidential native client to become public (see the
/// module's documentation). Returns early, with what was done so far, when `shutdown` fires.
pub async fn move_native_clients(
    saga: &Saga,
    db: &Database,
    store: &dyn EventStore,
    shutdown: &CancellationToken,
) -> Result<Moved, SagaError> {
    let mut moved = Moved::default();
    let done = DONE.load(db).await.map_err(SagaError::from)?;
    if done != LogPosition::START {
        moved.already_done = true;
        return Ok(moved);
    }
    let head = store.head().await.map_err(CommandError::from)?;
    let mut natives: Vec<(ApplicationId, String)> = Vec::new();
    let mut after = LogPosition::START;
    while after < head {
        let page = store
            .read_log(after, PAGE)
            .await
            .map_err(CommandError::from)?;
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in page.iter().filter(|e| e.position <= head) {
            if e.event_type != "ApplicationCreated" {
                continue;
            }
            if let Ok(ApplicationEvent::ApplicationCreated(c)) =
                ApplicationEvent::decode(&e.event_type, e.schema_version, e.data.clone())
            {
                if c.app_type == ApplicationType::Native {
                    natives.push((c.id, c.environment.as_str().to_string()));
                }
            }
        }
    }
    moved.native = natives.len();
    let mut round = 0;
    while !natives.is_empty() {
        let mut busy = Vec::new();
        for (id, environment) in natives {
            let meta = metadata(&environment);
            match apps::execute(saga.command_path(), id, &meta, |app| {
                app.request_public_client()
            })
            .await
            {
                Ok(events) => moved.requested += events.len(),
                Err(CommandError::Domain(DomainError::OperationPending)) => {
                    busy.push((id, environment))
                }
                Err(CommandError::NoApplication) => {}
                Err(other) => return Err(other.into()),
            }
        }
        natives = busy;
        round += 1;
        if natives.is_empty() || round >= BUSY_ROUNDS {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(BUSY_RETRY) => {}
        }
    }
    moved.busy = natives.len();
    metrics::counter!("appreg_dcr_public_client_moves_total").increment(moved.requested as u64);
    if moved.busy == 0 && !shutdown.is_cancelled() {
        DONE.save(db, head).await.map_err(SagaError::from)?;
    }
    Ok(moved)
}

/// Runs [`move_native_clients`] beside the saga's loop, retrying (with back-off) while the
/// database is unreachable or applications stay busy, until it is done or `shutdown` fires.
pub async fn run(
    saga: Arc<Saga>,
    db: Database,
    store: Arc<dyn EventStore>,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    loop {
        match move_native_clients(&saga, &db, store.as_ref(), &shutdown).await {
            Ok(moved) if moved.busy == 0 => {
                if !moved.already_done {
                    tracing::info!(
                        native = moved.native,
                        requested = moved.requested,
                        "native applications' confidential clients asked to become public"
                    );
                }
                return;
            }
            Ok(moved) => tracing::warn!(
                busy = moved.busy,
                requested = moved.requested,
                "native applications still busy with another operation; asked again later"
            ),
            Err(error) => {
                tracing::warn!(%error, "cannot move native applications to public clients now; retrying")
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(300));
    }
}

/// The metadata of the saga's requests (no request or event caused them: the scan did).
fn metadata(environment: &str) -> serde_json::Value {
    let id = uuid::Uuid::now_v7().to_string();
    serde_json::json!({
        "environment": environment,
        "actor": "dcr-saga",
        "correlation_id": id,
        "causation_id": format!("native-public-clients:{id}"),
        "at": chrono::Utc::now(),
    })
}
