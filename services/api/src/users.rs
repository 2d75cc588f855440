//! Users: recorded on their first authenticated request in an environment (`UserFirstSeen`, with
//! the token's profile), and given a default application — exactly once, also under concurrent
//! first requests, because the user stream's first version can be appended only once and the
//! default application's id is decided in that event.

use crate::commands::{append_events, current_settings, execute_app, USER_STREAM};
use crate::error::ApiError;
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_domain::environment::{first_seen, user_stream, UserEvent, DEFAULT_APPLICATION_NAME};
use appreg_domain::{
    Application, ApplicationId, ApplicationName, ApplicationType, CreateApplication, DomainEvent,
};
use appreg_eventstore::AppendError;

/// Records the caller's first request in the environment, if this is it, and creates their
/// default application when that event asks for one.
pub async fn ensure_user(state: &AppState, ctx: &Ctx) -> Result<(), ApiError> {
    if state.user_seen(&ctx.environment, &ctx.actor.user) {
        return Ok(());
    }
    let stream = user_stream(&ctx.environment, &ctx.actor.user);
    let mut events = state.store().read_stream(&stream, 0, 1).await?;
    if events.is_empty() {
        let event = first_seen(
            ctx.actor.user.clone(),
            ctx.principal.name.clone(),
            ctx.principal.email.clone(),
            ctx.actor.admin,
            state.default_application(),
            uuid::Uuid::now_v7(),
        );
        match append_events(state, ctx, stream.clone(), USER_STREAM, 0, &[event]).await {
            // Another request recorded it first: theirs is the one that counts.
            Ok(_) | Err(AppendError::VersionConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        events = state.store().read_stream(&stream, 0, 1).await?;
    }
    let first = events
        .first()
        .ok_or_else(|| ApiError::internal("the user stream is empty after its first append"))?;
    let UserEvent::UserFirstSeen(seen) =
        UserEvent::decode(&first.event_type, first.schema_version, first.data.clone())
            .map_err(|e| ApiError::internal(format!("event {}: {e}", first.event_id)))?;
    if let Some(id) = seen.default_application {
        create_default_application(state, ctx, ApplicationId(id)).await?;
    }
    // Member lists and owners show the profile from the read model: once the first request is
    // answered, every reader sees it (bounded wait; the profile shows later if it times out).
    if state.read().position() < first.position {
        state
            .read()
            .wait_for(first.position, state.consistency_wait())
            .await;
    }
    state.mark_user_seen(&ctx.environment, &ctx.actor.user);
    Ok(())
}

/// Creates the default application with the id the first-seen event chose; a no-op when it
/// exists (another request or process made it). Not made when simple applications are disabled.
async fn create_default_application(
    state: &AppState,
    ctx: &Ctx,
    id: ApplicationId,
) -> Result<(), ApiError> {
    let settings = current_settings(state, ctx.environment.as_str()).await?;
    if !settings.allowed_types.simple {
        tracing::info!(user = %ctx.actor.user, "simple applications are disabled: no default application");
        return Ok(());
    }
    let policy = state.policy(settings);
    let command = CreateApplication {
        id,
        environment: ctx.environment.clone(),
        name: ApplicationName::parse(DEFAULT_APPLICATION_NAME)
            .map_err(|(_, m)| ApiError::internal(m))?,
        description: None,
        domain: None,
        app_type: ApplicationType::Simple,
        client_id: None,
        redirect_uris: vec![],
        grant_types: vec![],
        client_uri: None,
        logo_uri: None,
        provider_id: None,
        owner: ctx.actor.user.clone(),
    };
    execute_app(
        state,
        ctx,
        "CreateDefaultApplication",
        id,
        false,
        |current| match current {
            Some(_) => Ok(vec![]),
            None => Ok(Application::create(command.clone(), &policy)?),
        },
    )
    .await?;
    Ok(())
}
