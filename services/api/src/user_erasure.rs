//! `/v1/users/{user}`: erasing a user (GDPR art. 17) by crypto-shredding, and what is known of
//! a user across the organisation. Organisation administrators only (the user may read their
//! own record).
//!
//! An erasure destroys the user's data key (so every name and e-mail address of theirs sealed
//! in the log, its backups and NATS replays is unreadable), then, through the one command path,
//! appends `UserErased` to the user's stream in each environment they were seen in (the read
//! model drops their name and e-mail) and deletes their notification settings in each
//! application they are a member of. Every step is idempotent: a repeated or interrupted
//! erasure is completed by calling it again. What this module must never do: write a personal
//! value anywhere, or tell a non-administrator whether a user exists.

use crate::commands::{append_events, execute_app, USER_STREAM};
use crate::consistency::with_token;
use crate::environments::org_caller;
use crate::error::{ApiError, Problem};
use crate::extract::authenticate;
use crate::state::AppState;
use appreg_auth::Principal;
use appreg_domain::environment::{erase_user, user_stream};
use appreg_domain::{EnvironmentId, UserId};
use appreg_eventstore::{AppendError, Appended};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Outside any environment: no first visit is recorded here.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(erase))
        .routes(routes!(get_user))
}

/// What the organisation knows of a user (never their name or e-mail).
#[derive(Debug, Serialize, ToSchema)]
pub struct UserRecord {
    pub id: String,
    /// The environments the user was seen in.
    pub environments: Vec<String>,
    /// When the user was erased (RFC 3339), or null.
    pub erased_at: Option<String>,
}

/// Applications read per page when looking for the user's notification settings.
const PAGE: i64 = 200;
/// Appends retried after a concurrent write to the user's stream.
const RETRIES: usize = 5;

fn not_found(user: &str) -> ApiError {
    ApiError::not_found("user.not_found", format!("no user {user:?}"))
}

/// The caller (401 without a valid token) and the user of the path.
async fn caller(
    parts: &Parts,
    state: &AppState,
    user: &str,
) -> Result<(Principal, UserId, UserId), ApiError> {
    let principal = authenticate(parts, state).await?;
    let caller = UserId::parse(&principal.subject).map_err(|(_, m)| {
        ApiError::Unauthenticated(format!("the token's subject is not usable: {m}"))
    })?;
    let admin = state.is_org_admin(&principal);
    let subject = UserId::parse(user).ok();
    if !admin && subject.as_ref() != Some(&caller) {
        return Err(ApiError::Forbidden {
            code: "permission.organisation_admin_only",
            message: "only an organisation administrator may do this".into(),
        });
    }
    let subject = subject.ok_or_else(|| not_found(user))?;
    Ok((principal, caller, subject))
}

/// The environments whose event log holds a stream of `user` (the log, not the read model:
/// an erasure must not miss a first visit the projector has not reached yet).
async fn environments_of(state: &AppState, user: &UserId) -> Result<Vec<EnvironmentId>, ApiError> {
    let mut out = Vec::new();
    for (id, _) in state.read().environments().await? {
        let Ok(env) = EnvironmentId::parse(&id) else {
            continue;
        };
        let stream = user_stream(&env, user);
        if !state.store().read_stream(&stream, 0, 1).await?.is_empty() {
            out.push(env);
        }
    }
    Ok(out)
}

/// Erase a user: their name and e-mail become unreadable everywhere (organisation administrators).
#[utoipa::path(post, path = "/v1/users/{user}/_erase", tag = "users", operation_id = "erase_user",
    params(("user" = String, Path, description = "the user (their token's subject)")),
    responses((status = 202, body = UserRecord), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn erase(
    State(state): State<AppState>,
    Path(user): Path<String>,
    parts: Parts,
) -> Result<Response, ApiError> {
    let (principal, caller, subject) = caller(&parts, &state, &user).await?;
    if !state.is_org_admin(&principal) {
        return Err(ApiError::Forbidden {
            code: "permission.organisation_admin_only",
            message: "only an organisation administrator may erase a user".into(),
        });
    }
    let environments = environments_of(&state, &subject).await?;
    let personal = state.personal();
    let known = !environments.is_empty()
        || personal
            .has_key(subject.as_str())
            .await
            .map_err(ApiError::internal)?
        || personal
            .erased_at(subject.as_str())
            .await
            .map_err(ApiError::internal)?
            .is_some();
    if !known {
        return Err(not_found(&user));
    }
    // The key first: from here on nothing of theirs opens, whatever happens next.
    let erased_at = personal
        .erase(subject.as_str())
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(user = %subject, "user erased: data key destroyed");
    let mut last: Option<Appended> = None;
    for env in &environments {
        let ctx = org_caller(&parts, &state, principal.clone(), caller.clone(), env).await?;
        if let Some(appended) = append_erased(&state, &ctx, &subject).await? {
            last = Some(appended);
        }
        if let Some(appended) = delete_notification_settings(&state, &ctx, &subject).await? {
            last = Some(appended);
        }
    }
    let record = UserRecord {
        id: subject.to_string(),
        environments: environments.iter().map(ToString::to_string).collect(),
        erased_at: Some(erased_at),
    };
    Ok(with_token(
        (StatusCode::ACCEPTED, Json(record)).into_response(),
        last.as_ref(),
    ))
}

/// Appends `UserErased` to the user's stream of `ctx`'s environment unless it ends with one.
async fn append_erased(
    state: &AppState,
    ctx: &crate::extract::Ctx,
    user: &UserId,
) -> Result<Option<Appended>, ApiError> {
    let stream = user_stream(&ctx.environment, user);
    for _ in 0..RETRIES {
        let events = crate::commands::read_all(state.store().as_ref(), &stream).await?;
        let version = events.last().map_or(0, |e| e.version);
        let erased = events.last().is_some_and(|e| e.event_type == "UserErased");
        let decided = erase_user(user.clone(), erased);
        if decided.is_empty() {
            return Ok(None);
        }
        match append_events(state, ctx, stream.clone(), USER_STREAM, version, &decided).await {
            Ok(appended) => return Ok(Some(appended)),
            Err(AppendError::VersionConflict { .. }) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::internal(
        "the user's stream kept changing during the erasure",
    ))
}

/// Deletes the user's notification settings in every application of the environment they are
/// a member of (the read model finds them; the command path decides on the current state).
async fn delete_notification_settings(
    state: &AppState,
    ctx: &crate::extract::Ctx,
    user: &UserId,
) -> Result<Option<Appended>, ApiError> {
    let mut last = None;
    let mut offset = 0;
    loop {
        let (apps, _) = state
            .read()
            .list(
                ctx.environment.as_str(),
                Some(user.as_str()),
                "ACTIVE",
                PAGE,
                offset,
            )
            .await?;
        let n = apps.len() as i64;
        for app in apps.iter().filter(|a| a.notifications.contains_key(user)) {
            let executed = execute_app(
                state,
                ctx,
                "DeleteErasedUserNotificationSettings",
                app.id,
                false,
                |current| match current {
                    Some(app) if app.notifications.contains_key(user) => {
                        Ok(app.update_notifications(user.clone(), Default::default(), None)?)
                    }
                    _ => Ok(vec![]),
                },
            )
            .await?;
            if executed.appended.is_some() {
                last = executed.appended;
            }
        }
        if n < PAGE {
            return Ok(last);
        }
        offset += PAGE;
    }
}

/// What the organisation knows of a user: the environments they were seen in and when they
/// were erased (organisation administrators, and the user themself).
#[utoipa::path(get, path = "/v1/users/{user}", tag = "users", operation_id = "get_user",
    params(("user" = String, Path, description = "the user (their token's subject)")),
    responses((status = 200, body = UserRecord), (status = 401, body = Problem), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_user(
    State(state): State<AppState>,
    Path(user): Path<String>,
    parts: Parts,
) -> Result<Json<UserRecord>, ApiError> {
    let (_, _, subject) = caller(&parts, &state, &user).await?;
    crate::consistency::fresh_read_model(&state, &parts.headers).await?;
    let environments = state.read().user_environments(subject.as_str()).await?;
    let erased_at = state
        .personal()
        .erased_at(subject.as_str())
        .await
        .map_err(ApiError::internal)?;
    let has_key = state
        .personal()
        .has_key(subject.as_str())
        .await
        .map_err(ApiError::internal)?;
    if environments.is_empty() && erased_at.is_none() && !has_key {
        return Err(not_found(&user));
    }
    Ok(Json(UserRecord {
        id: subject.to_string(),
        environments,
        erased_at,
    }))
}
