//! The saga's side of the command path ([`appreg_commands`]): an application's current state
//! and its commands, with the saga's own error type. The loading, deciding, appending and
//! retrying are the command path's, the same as the api's.

use appreg_commands::{
    Aggregate, ApplicationState, CommandError as PathError, Commands, Loaded, Start,
};
use appreg_domain::application::{Application, ApplicationEvent};
use appreg_domain::provider::ProviderRegistry;
use appreg_domain::{ApplicationId, DomainError};
use appreg_eventstore::{AppendRequest, StoreError, StoredEvent};
use std::sync::Arc;

pub use appreg_commands::new_events;

/// Stream type of applications (as the api writes them).
pub const APPLICATION_STREAM: &str = ApplicationState::STREAM_TYPE;

/// Why a saga command could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("client_id {0:?} is held by another active application")]
    ClientIdTaken(String),
    #[error("the application does not exist")]
    NoApplication,
    /// The event store or the command path failed (its cause kept).
    #[error("event store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<StoreError> for CommandError {
    fn from(e: StoreError) -> Self {
        CommandError::Store(Box::new(e))
    }
}

impl From<PathError<CommandError>> for CommandError {
    fn from(e: PathError<CommandError>) -> Self {
        match e {
            PathError::Rejected(e) => e,
            PathError::ClaimTaken { value, .. } => CommandError::ClientIdTaken(value),
            other => CommandError::Store(Box::new(other)),
        }
    }
}

/// An application's state and stream version (None: no such application).
pub async fn load(
    commands: &Commands,
    id: ApplicationId,
) -> Result<(Option<Application>, i64), CommandError> {
    let loaded = commands
        .load::<ApplicationState>(&id.stream_id())
        .await
        .map_err(|e| CommandError::Store(Box::new(e)))?;
    Ok((loaded.state.0.clone(), loaded.version))
}

/// An application's state and stream version from its events (oldest first).
pub fn fold(events: &[StoredEvent]) -> Result<(Option<Application>, i64), CommandError> {
    let mut state = ApplicationState::default();
    appreg_commands::fold(&mut state, events).map_err(|e| CommandError::Store(Box::new(e)))?;
    Ok((state.0, events.last().map(|e| e.version).unwrap_or(0)))
}

/// An environment's providers.
pub async fn providers(
    commands: &Commands,
    environment: &str,
) -> Result<ProviderRegistry, CommandError> {
    let loaded = commands
        .load::<ProviderRegistry>(&ProviderRegistry::stream_id(environment))
        .await
        .map_err(|e| CommandError::Store(Box::new(e)))?;
    Ok(ProviderRegistry::clone(&loaded.state))
}

/// Runs a saga command on an application through the command path. Returns the events
/// appended (none: nothing to do).
pub async fn execute(
    commands: &Commands,
    id: ApplicationId,
    metadata: &serde_json::Value,
    decide: impl FnMut(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
) -> Result<Vec<ApplicationEvent>, CommandError> {
    execute_from(commands, id, None, metadata, decide).await
}

/// [`execute`], deciding first on a state the caller just loaded (`loaded`: the state and its
/// stream version); a concurrent change makes it load again.
pub async fn execute_from(
    commands: &Commands,
    id: ApplicationId,
    loaded: Option<(Option<Application>, i64)>,
    metadata: &serde_json::Value,
    mut decide: impl FnMut(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
) -> Result<Vec<ApplicationEvent>, CommandError> {
    let start = match loaded {
        Some((app, version)) => Start::Loaded(Loaded {
            state: Arc::new(ApplicationState(app)),
            version,
        }),
        None => Start::Current,
    };
    let mut decided = Vec::new();
    let executed = commands
        .execute::<ApplicationState, CommandError, _>(&id.stream_id(), start, metadata, |state| {
            let app = state.0.as_ref().ok_or(CommandError::NoApplication)?;
            decided = decide(app)?;
            Ok(decided.clone())
        })
        .await?;
    Ok(match executed.appended {
        Some(_) => decided,
        None => Vec::new(),
    })
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
    appreg_commands::append_request(
        &id.stream_id(),
        &ApplicationState(Some(app.clone())),
        version,
        events,
        metadata,
    )
    .0
}
