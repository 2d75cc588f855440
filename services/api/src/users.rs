//! Users: recorded on their first authenticated request in an environment (`UserFirstSeen`, with
//! the token's profile), and given a default application — exactly once, also under concurrent
//! first requests, because the user stream's first version can be appended only once and the
//! default application's id is decided in that event.
//!
//! The first visit is recorded by a route layer ([`FirstVisit`]) on the routes of an
//! environment, before their handlers run, not by the authentication extractor: the layer
//! authenticates the caller (the handler's [`Ctx`] is the one it made) and records the visit of
//! every caller but a gateway. It is on the methods of a route only, so a request answered 405
//! records nothing. Reads record it too, as the extractor did: a new user's first list already
//! shows their default application, and member lists show their profile from then on.

use crate::commands::{append_events, current_settings, execute_app, USER_STREAM};
use crate::error::ApiError;
use crate::extract::Ctx;
use crate::personal::{seal_opt, EMAIL, NAME};
use crate::state::AppState;
use appreg_domain::environment::{first_seen, user_stream, UserEvent, DEFAULT_APPLICATION_NAME};
use appreg_domain::{
    Application, ApplicationId, ApplicationName, ApplicationType, CreateApplication, DomainEvent,
};
use appreg_eventstore::AppendError;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use utoipa_axum::router::UtoipaMethodRouter;

/// Where a user's first visit is recorded: the routes a resource hands to [`FirstVisit::on`].
#[derive(Clone)]
pub struct FirstVisit(Option<AppState>);

impl FirstVisit {
    /// Records first visits in `state`'s event store.
    pub fn recorded(state: &AppState) -> Self {
        FirstVisit(Some(state.clone()))
    }

    /// For the OpenAPI document alone, which no layer changes: records nothing.
    pub fn document_only() -> Self {
        FirstVisit(None)
    }

    /// The state visits are recorded in (None: the document alone).
    pub fn state(&self) -> Option<&AppState> {
        self.0.as_ref()
    }

    /// `routes` with the caller's first visit recorded before their handlers run.
    pub fn on(&self, routes: UtoipaMethodRouter<AppState>) -> UtoipaMethodRouter<AppState> {
        let (schemas, paths, methods) = routes;
        match &self.0 {
            // `MethodRouter::route_layer`: the methods' handlers only, not the 405 fallback.
            Some(state) => (
                schemas,
                paths,
                methods.route_layer(middleware::from_fn_with_state(state.clone(), record)),
            ),
            None => (schemas, paths, methods),
        }
    }
}

/// The layer: authenticates the caller (their [`Ctx`], or its rejection), records their first
/// visit unless they are a gateway (a machine checking API keys: no first visit, no default
/// application), and hands the [`Ctx`] to the handler.
async fn record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    // Opened with an event-stream ticket (`tickets`): its caller's visit was recorded when the
    // ticket was issued.
    if parts.extensions.get::<Ctx>().is_some() {
        return Ok(next.run(Request::from_parts(parts, body)).await);
    }
    let ctx = Ctx::from_request_parts(&mut parts, &state).await?;
    if !state.is_gateway(&ctx.principal) {
        ensure_user(&state, &ctx).await?;
    }
    parts.extensions.insert(ctx);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// Records the caller's first request in the environment, if this is it, and creates their
/// default application when that event asks for one.
async fn ensure_user(state: &AppState, ctx: &Ctx) -> Result<(), ApiError> {
    if state.user_seen(&ctx.environment, &ctx.actor.user) {
        return Ok(());
    }
    let stream = user_stream(&ctx.environment, &ctx.actor.user);
    let mut events = state.store().read_stream(&stream, 0, 1).await?;
    if events.is_empty() {
        let user = &ctx.actor.user;
        let name = seal_opt(state, user, NAME, ctx.principal.name.as_deref()).await?;
        let email = seal_opt(state, user, EMAIL, ctx.principal.email.as_deref()).await?;
        let event = first_seen(
            ctx.actor.user.clone(),
            name,
            email,
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
    let seen = UserEvent::decode(&first.event_type, first.schema_version, first.data.clone())
        .map_err(|e| ApiError::internal(format!("event {}: {e}", first.event_id)))?;
    if let UserEvent::UserFirstSeen(seen) = seen {
        if let Some(id) = seen.default_application {
            create_default_application(state, ctx, ApplicationId(id)).await?;
        }
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
