//! Command execution: load the aggregate from its stream, decide, append with the expected
//! version and the uniqueness claims the new state needs, retry a bounded number of times on a
//! concurrent change. Authorisation is part of the decision, so it is re-checked on every try.

use crate::error::ApiError;
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_domain::application::claim_changes;
use appreg_domain::{
    Application, ApplicationEvent, ApplicationId, ClientRegistrationSettings, DomainEvent,
    SettingsEvent, UniqueClaim,
};
use appreg_eventstore::{
    AppendError, AppendRequest, Appended, Claim, EventStore, NewEvent, StoredEvent,
};
use chrono::{DateTime, Utc};
use std::time::Instant;

pub use appreg_readmodel::{APPLICATION_STREAM, ENVIRONMENT_STREAM, SETTINGS_STREAM, USER_STREAM};
const PAGE: i64 = 1000;

/// Every event of a stream, in version order.
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

/// Folds stored events into the application state, stopping where `keep` says no.
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

/// Loads an application of the caller's environment; another environment's is `None`.
pub async fn load_app(
    state: &AppState,
    ctx: &Ctx,
    id: ApplicationId,
) -> Result<(Option<Application>, i64), ApiError> {
    let events = read_all(state.store().as_ref(), &id.stream_id()).await?;
    let version = events.last().map(|e| e.version).unwrap_or(0);
    let app = fold_app(&events, |_| true)?.filter(|a| a.environment == ctx.environment);
    Ok((app, version))
}

/// The environment's client registration settings and the stream's version.
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
    let events = read_all(
        state.store().as_ref(),
        &ClientRegistrationSettings::stream_id(env),
    )
    .await?;
    let mut settings = ClientRegistrationSettings::default();
    for e in &events {
        let ev = SettingsEvent::decode(&e.event_type, e.schema_version, e.data.clone())
            .map_err(|err| ApiError::internal(format!("event {}: {err}", e.event_id)))?;
        settings.evolve(&ev);
    }
    Ok((settings, events.last().map(|e| e.version).unwrap_or(0)))
}

/// The time of a command, at the precision the event store keeps (microseconds).
pub(crate) fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// The metadata every event carries.
pub fn metadata(ctx: &Ctx, now: DateTime<Utc>) -> serde_json::Value {
    let mut meta = serde_json::json!({
        "environment": ctx.environment.as_str(),
        "actor": ctx.actor.user.as_str(),
        "actor_name": ctx.principal.name,
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
    appreg_dcr_saga::apps::new_events(events, &metadata(ctx, now), now)
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
    state.store().append(request).await
}

fn to_claims(claims: Vec<UniqueClaim>) -> Vec<Claim> {
    claims
        .into_iter()
        .map(|c| Claim {
            scope: c.scope,
            value: c.value,
        })
        .collect()
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

/// Runs an application command (`new_stream`: the id was just generated). `decide` sees the current state (None: no such application in
/// the caller's environment) and returns the events to append.
#[tracing::instrument(skip_all, fields(command, application_id = %id, correlation_id = %ctx.correlation_id), err(Display))]
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
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        let (before, version) = if new_stream && attempt == 1 {
            // A freshly generated id has no events: skip the read; the append's expected
            // version 0 still guards it.
            (None, 0)
        } else {
            load_app(state, ctx, id).await?
        };
        let events = match decide(before.as_ref()) {
            Ok(events) => events,
            Err(e) => break Err(e),
        };
        if events.is_empty() {
            break match before {
                Some(app) => Ok(Executed {
                    app,
                    appended: None,
                }),
                None => Err(ApiError::not_found(
                    "application.not_found",
                    "no such application",
                )),
            };
        }
        let now = now();
        let mut after = before.clone();
        for (i, e) in events.iter().enumerate() {
            after = Application::evolve(after, e, now, version + 1 + i as i64);
        }
        let (claims, releases) = claim_changes(before.as_ref(), after.as_ref());
        let request = AppendRequest {
            stream_id: id.stream_id(),
            stream_type: APPLICATION_STREAM.into(),
            expected_version: version,
            events: new_events(&events, ctx, now),
            claims: to_claims(claims),
            releases: to_claims(releases),
        };
        match state.store().append(request).await {
            Ok(appended) => {
                break Ok(Executed {
                    app: after.ok_or_else(|| ApiError::internal("no state after append"))?,
                    appended: Some(appended),
                });
            }
            Err(AppendError::VersionConflict { .. }) if attempt < state.retries() => {
                tracing::debug!(attempt, "version conflict, retrying");
                continue;
            }
            Err(e) => break Err(ApiError::from(e)),
        }
    };
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
    let mut attempt = 0;
    let result = loop {
        attempt += 1;
        let (current, version) = load_settings(state, ctx.environment.as_str()).await?;
        let events = current.decide_update(new)?;
        if events.is_empty() {
            break Ok((current, None));
        }
        let now = now();
        let request = AppendRequest {
            stream_id: ClientRegistrationSettings::stream_id(ctx.environment.as_str()),
            stream_type: SETTINGS_STREAM.into(),
            expected_version: version,
            events: new_events(&events, ctx, now),
            claims: vec![],
            releases: vec![],
        };
        match state.store().append(request).await {
            Ok(appended) => {
                state
                    .read()
                    .remember_settings(ctx.environment.as_str(), new, appended.version);
                break Ok((new, Some(appended)));
            }
            Err(AppendError::VersionConflict { .. }) if attempt < state.retries() => continue,
            Err(e) => break Err(ApiError::from(e)),
        }
    };
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
