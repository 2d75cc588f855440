//! The api's side of the command path ([`appreg_commands`]): the events' metadata from the
//! request, the caller's environment as a filter on what a command may see, metrics by command,
//! the mapping of the path's errors to the api's, and the loads of the aggregates several
//! resources read (an application, the settings, the providers, the catalogue).

use crate::error::ApiError;
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_commands::{ApplicationState, Start};
use appreg_domain::catalogue::Catalogue;
use appreg_domain::provider::ProviderRegistry;
use appreg_domain::{
    Application, ApplicationEvent, ApplicationId, ClientRegistrationSettings, DomainEvent,
    EnvironmentId,
};
use appreg_eventstore::{AppendError, AppendRequest, Appended, EventStore, NewEvent, StoredEvent};
use chrono::{DateTime, Utc};
use std::time::Instant;

pub use appreg_readmodel::{APPLICATION_STREAM, ENVIRONMENT_STREAM, SETTINGS_STREAM, USER_STREAM};
const PAGE: i64 = 1000;

/// Every event of a stream, in version order (for views of past states: `as_of`, history).
pub async fn read_all(
    store: &dyn EventStore,
    stream_id: &str,
) -> Result<Vec<StoredEvent>, ApiError> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map(|e: &StoredEvent| e.version).unwrap_or(0);
        let page = store.read_stream(stream_id, after, PAGE).await?;
        let n = page.len() as i64;
        out.extend(page);
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// Decodes a stored application event.
pub fn decode_app(e: &StoredEvent) -> Result<ApplicationEvent, ApiError> {
    ApplicationEvent::decode(&e.event_type, e.schema_version, e.data.clone())
        .map_err(|err| ApiError::internal(format!("event {}: {err}", e.event_id)))
}

/// Folds stored events into the application state, stopping where `keep` says no (a past
/// state: `as_of`, `version`).
pub fn fold_app(
    events: &[StoredEvent],
    mut keep: impl FnMut(&StoredEvent) -> bool,
) -> Result<Option<Application>, ApiError> {
    let mut app = None;
    for e in events {
        if !keep(e) {
            break;
        }
        app = Application::evolve(app, &decode_app(e)?, e.recorded_at, e.version);
    }
    Ok(app)
}

/// Loads an application of the caller's environment (another environment's is `None`): the
/// current state, from the command path's cache or snapshot and the stream's tail.
pub async fn load_app(
    state: &AppState,
    ctx: &Ctx,
    id: ApplicationId,
) -> Result<(Option<Application>, i64), ApiError> {
    let loaded = state
        .commands()
        .load::<ApplicationState>(&id.stream_id())
        .await
        .map_err(|e| ApiError::from(e.widen()))?;
    let app = loaded
        .state
        .0
        .as_ref()
        .filter(|a| a.environment == ctx.environment)
        .cloned();
    Ok((app, loaded.version))
}

/// The environment's settings for deciding a command: from the cache the projector keeps
/// current, else from the event store.
pub async fn current_settings(
    state: &AppState,
    env: &str,
) -> Result<ClientRegistrationSettings, ApiError> {
    if let Some((settings, _)) = state.read().cached_settings(env) {
        return Ok(settings);
    }
    let (settings, version) = load_settings(state, env).await?;
    state.read().remember_settings(env, settings, version);
    Ok(settings)
}

/// The environment's settings and their stream version, from the event store.
pub async fn load_settings(
    state: &AppState,
    env: &str,
) -> Result<(ClientRegistrationSettings, i64), ApiError> {
    let loaded = state
        .commands()
        .load::<ClientRegistrationSettings>(&ClientRegistrationSettings::stream_id(env))
        .await
        .map_err(|e| ApiError::from(e.widen()))?;
    Ok((*loaded.state, loaded.version))
}

/// An environment's providers and their stream version.
pub async fn load_registry(
    state: &AppState,
    env: &EnvironmentId,
) -> Result<(ProviderRegistry, i64), ApiError> {
    let loaded = state
        .commands()
        .load::<ProviderRegistry>(&ProviderRegistry::stream_id(env.as_str()))
        .await
        .map_err(|e| ApiError::from(e.widen()))?;
    Ok((ProviderRegistry::clone(&loaded.state), loaded.version))
}

/// How long a create trusts a provider it found in an earlier read of the environment's
/// providers.
const REGISTRY_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether a create may name this provider (`None`: the environment's default). A provider
/// found in a read of the last [`REGISTRY_MAX_AGE`] is trusted without reading again; a miss
/// always reads. This instance forgets the cache when it changes the providers; a provider
/// deleted through another instance within that second still lets a create through, and the
/// DCR saga (which resolves the provider from the event store) then fails the registration with
/// `provider_not_found`, shown on the application and retryable.
pub async fn provider_exists(
    state: &AppState,
    env: &EnvironmentId,
    provider: Option<&str>,
) -> Result<bool, ApiError> {
    if let Some(registry) = state.recent_registry(env, REGISTRY_MAX_AGE) {
        if registry.resolve(provider).is_some() {
            return Ok(true);
        }
    }
    let (registry, _) = load_registry(state, env).await?;
    let exists = registry.resolve(provider).is_some();
    state.remember_registry(env, Some(registry));
    Ok(exists)
}

/// The environment's catalogue and its stream version.
pub async fn load_catalogue(state: &AppState, env: &str) -> Result<(Catalogue, i64), ApiError> {
    let loaded = state
        .commands()
        .load::<Catalogue>(&Catalogue::stream_id(env))
        .await
        .map_err(|e| ApiError::from(e.widen()))?;
    Ok((Catalogue::clone(&loaded.state), loaded.version))
}

/// The time of a command, at the precision the event store keeps (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    appreg_commands::now()
}

/// The metadata every event carries.
pub fn metadata(ctx: &Ctx, now: DateTime<Utc>) -> serde_json::Value {
    let mut meta = serde_json::json!({
        "environment": ctx.environment.as_str(),
        "actor": ctx.actor.user.as_str(),
        "actor_name": ctx.actor_name,
        "actor_admin": ctx.actor.admin,
        "correlation_id": ctx.correlation_id,
        "causation_id": ctx.correlation_id,
        "at": now,
    });
    if let Some(traceparent) = &ctx.traceparent {
        meta["traceparent"] = traceparent.as_str().into();
    }
    meta
}

pub(crate) fn new_events<E: DomainEvent>(
    events: &[E],
    ctx: &Ctx,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    appreg_commands::new_events(events, &metadata(ctx, now), now)
}

/// Appends events decided outside an aggregate command (environments, users) to a stream.
pub async fn append_events<E: DomainEvent>(
    state: &AppState,
    ctx: &Ctx,
    stream_id: String,
    stream_type: &str,
    expected_version: i64,
    events: &[E],
) -> Result<Appended, AppendError> {
    let request = AppendRequest {
        stream_id,
        stream_type: stream_type.into(),
        expected_version,
        events: new_events(events, ctx, now()),
        claims: vec![],
        releases: vec![],
    };
    state.commands().append(request).await
}

/// `outcome`: `ok` or the error's stable code.
fn record(command: &'static str, started: Instant, outcome: &'static str) {
    metrics::counter!("appreg_commands_total", "command" => command, "outcome" => outcome)
        .increment(1);
    metrics::histogram!("appreg_command_duration_seconds", "command" => command, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// The outcome of an application command: the state after it, and the append (none when the
/// decision produced no event).
pub struct Executed {
    pub app: Application,
    pub appended: Option<Appended>,
}

/// Runs an application command (`new_stream`: the id was just generated). `decide` sees the
/// current state (None: no such application in the caller's environment) and returns the events
/// to append. Authorisation is part of the decision, so it is re-checked on every try.
// A refusal is the caller's answer (logged at debug); failures are logged where they become 5xx.
#[tracing::instrument(skip_all, fields(command, application_id = %id, correlation_id = %ctx.correlation_id), err(level = "debug", Display))]
pub async fn execute_app<F>(
    state: &AppState,
    ctx: &Ctx,
    command: &'static str,
    id: ApplicationId,
    new_stream: bool,
    mut decide: F,
) -> Result<Executed, ApiError>
where
    F: FnMut(Option<&Application>) -> Result<Vec<ApplicationEvent>, ApiError>,
{
    tracing::Span::current().record("command", command);
    let started = Instant::now();
    let start = if new_stream {
        Start::New
    } else {
        Start::Current
    };
    let env = &ctx.environment;
    let result = state
        .commands()
        .execute::<ApplicationState, ApiError, _>(
            &id.stream_id(),
            start,
            &metadata(ctx, now()),
            |current| decide(current.0.as_ref().filter(|a| a.environment == *env)),
        )
        .await
        .map_err(ApiError::from)
        .and_then(|executed| {
            let app = executed
                .state
                .0
                .as_ref()
                .filter(|a| a.environment == *env)
                .cloned()
                .ok_or_else(|| {
                    ApiError::not_found("application.not_found", "no such application")
                })?;
            Ok(Executed {
                app,
                appended: executed.appended,
            })
        });
    record(
        command,
        started,
        match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        },
    );
    result
}

/// Updates the environment's client registration settings.
pub async fn execute_settings(
    state: &AppState,
    ctx: &Ctx,
    new: ClientRegistrationSettings,
) -> Result<(ClientRegistrationSettings, Option<Appended>), ApiError> {
    let started = Instant::now();
    let env = ctx.environment.as_str();
    let result = state
        .commands()
        .execute::<ClientRegistrationSettings, ApiError, _>(
            &ClientRegistrationSettings::stream_id(env),
            Start::Current,
            &metadata(ctx, now()),
            |current| Ok(current.decide_update(new)?),
        )
        .await
        .map_err(ApiError::from)
        .map(|executed| {
            if executed.appended.is_some() {
                state
                    .read()
                    .remember_settings(env, *executed.state, executed.version);
            }
            (*executed.state, executed.appended)
        });
    record(
        "UpdateClientRegistrationSettings",
        started,
        match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        },
    );
    result
}
