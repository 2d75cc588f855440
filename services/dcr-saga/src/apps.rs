//! The saga's side of the event store: an application's current state (folded from its stream)
//! and its commands, appended with optimistic concurrency and the client_id claim — the same
//! rules as the api's commands, without HTTP.

use appreg_domain::application::{claim_changes, Application, ApplicationEvent};
use appreg_domain::provider::{ProviderEvent, ProviderRegistry};
use appreg_domain::{ApplicationId, DomainError, DomainEvent};
use appreg_eventstore::{AppendError, AppendRequest, Claim, EventStore, NewEvent, StoreError};
use chrono::{DateTime, SubsecRound, Utc};

/// Stream type of applications (as the api writes them).
pub const APPLICATION_STREAM: &str = "application";
const PAGE: i64 = 1000;

/// Why a saga command could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("client_id {0:?} is held by another active application")]
    ClientIdTaken(String),
    #[error("the application does not exist")]
    NoApplication,
    #[error("event store: {0}")]
    Store(String),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::Store(e.to_string())
    }
}

/// Every event of a stream, oldest first.
pub async fn read_stream(
    store: &dyn EventStore,
    stream_id: &str,
) -> Result<Vec<appreg_eventstore::StoredEvent>, StoreError> {
    let mut out = Vec::new();
    loop {
        let after = out
            .last()
            .map(|e: &appreg_eventstore::StoredEvent| e.version)
            .unwrap_or(0);
        let page = store.read_stream(stream_id, after, PAGE).await?;
        let n = page.len() as i64;
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// An application's state and stream version (None: no such application).
pub async fn load(
    store: &dyn EventStore,
    id: ApplicationId,
) -> Result<(Option<Application>, i64), CommandError> {
    let events = read_stream(store, &id.stream_id()).await?;
    fold(&events)
}

/// An application's state and stream version from its events (oldest first).
pub fn fold(
    events: &[appreg_eventstore::StoredEvent],
) -> Result<(Option<Application>, i64), CommandError> {
    let mut app = None;
    for e in events {
        let event = ApplicationEvent::decode(&e.event_type, e.schema_version, e.data.clone())
            .map_err(|err| CommandError::Store(format!("event {}: {err}", e.event_id)))?;
        app = Application::evolve(app, &event, e.recorded_at, e.version);
    }
    Ok((app, events.last().map(|e| e.version).unwrap_or(0)))
}

/// An environment's providers.
pub async fn providers(
    store: &dyn EventStore,
    environment: &str,
) -> Result<ProviderRegistry, CommandError> {
    let mut registry = ProviderRegistry::default();
    for e in read_stream(store, &ProviderRegistry::stream_id(environment)).await? {
        let event = ProviderEvent::decode(&e.event_type, e.schema_version, e.data.clone())
            .map_err(|err| CommandError::Store(format!("event {}: {err}", e.event_id)))?;
        registry.evolve(&event);
    }
    Ok(registry)
}

/// Runs a saga command on an application: load, decide, append (with the client_id claim
/// changes), retrying on a concurrent change. Returns the events appended (none: nothing to do).
pub async fn execute(
    store: &dyn EventStore,
    id: ApplicationId,
    metadata: &serde_json::Value,
    decide: impl FnMut(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
) -> Result<Vec<ApplicationEvent>, CommandError> {
    execute_from(store, id, None, metadata, decide).await
}

/// [`execute`], deciding first on a state the caller just loaded (`loaded`: the state and its
/// stream version); a concurrent change makes it load again.
pub async fn execute_from(
    store: &dyn EventStore,
    id: ApplicationId,
    mut loaded: Option<(Option<Application>, i64)>,
    metadata: &serde_json::Value,
    mut decide: impl FnMut(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
) -> Result<Vec<ApplicationEvent>, CommandError> {
    for _ in 0..10 {
        let (before, version) = match loaded.take() {
            Some(state) => state,
            None => load(store, id).await?,
        };
        let Some(app) = before else {
            return Err(CommandError::NoApplication);
        };
        let events = decide(&app)?;
        if events.is_empty() {
            return Ok(events);
        }
        let request = append_request(id, &app, version, &events, metadata);
        match store.append(request).await {
            Ok(_) => return Ok(events),
            Err(AppendError::VersionConflict { .. }) => continue,
            Err(AppendError::ClaimTaken { value, .. }) => {
                return Err(CommandError::ClientIdTaken(value))
            }
            Err(e) => return Err(CommandError::Store(e.to_string())),
        }
    }
    Err(CommandError::Store("too many concurrent changes".into()))
}

/// The append that records `events`, decided on `app` at stream `version`: the events with
/// their metadata and timestamp, the expected version and the client_id claim changes.
pub fn append_request(
    id: ApplicationId,
    app: &Application,
    version: i64,
    events: &[ApplicationEvent],
    metadata: &serde_json::Value,
) -> AppendRequest {
    let now: DateTime<Utc> = Utc::now().trunc_subsecs(6);
    let mut after = Some(app.clone());
    for (i, e) in events.iter().enumerate() {
        after = Application::evolve(after, e, now, version + 1 + i as i64);
    }
    let (claims, releases) = claim_changes(Some(app), after.as_ref());
    let to = |c: Vec<appreg_domain::UniqueClaim>| {
        c.into_iter()
            .map(|c| Claim {
                scope: c.scope,
                value: c.value,
            })
            .collect()
    };
    AppendRequest {
        stream_id: id.stream_id(),
        stream_type: APPLICATION_STREAM.into(),
        expected_version: version,
        events: new_events(events, metadata, now),
        claims: to(claims),
        releases: to(releases),
    }
}

/// Domain events as the store takes them: a fresh id each, the same metadata and time.
pub fn new_events<E: DomainEvent>(
    events: &[E],
    metadata: &serde_json::Value,
    at: DateTime<Utc>,
) -> Vec<NewEvent> {
    events
        .iter()
        .map(|e| NewEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: e.event_type().to_string(),
            schema_version: e.schema_version(),
            data: e.data(),
            metadata: metadata.clone(),
            recorded_at: at,
        })
        .collect()
}
