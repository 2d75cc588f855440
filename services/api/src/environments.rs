//! `/v1/environments`: organisation administrators create environments; callers list the ones
//! they may see (an administrator of one environment is nobody in another).

use crate::commands::{append_events, ENVIRONMENT_STREAM};
use crate::consistency::{fresh_read_model, with_token};
use crate::error::{ApiError, Problem};
use crate::extract::{authenticate, JsonBody, RequestId};
use crate::state::AppState;
use appreg_auth::Principal;
use appreg_domain::environment::{create_environment, environment_stream};
use appreg_domain::{Actor, EnvironmentId, UserId};
use axum::extract::{FromRequest, Request, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Outside any environment: no first visit is recorded here (the caller is no user of one).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list, create))
}

/// The longest environment name (the domain's rule, counted on the trimmed name).
const MAX_NAME: usize = 100;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnvironmentRequest {
    /// 1–64 characters among A-Z, a-z, 0-9, `_` and `-`.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub id: String,
    /// 1–100 characters (trimmed), no control characters.
    #[schema(
        max_length = 100,
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentView {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvironmentList {
    pub items: Vec<EnvironmentView>,
}

/// The caller of a route outside any environment, as a context for appending events.
pub(crate) async fn org_caller(
    parts: &Parts,
    state: &AppState,
    principal: Principal,
    user: UserId,
    env: &EnvironmentId,
) -> Result<crate::extract::Ctx, ApiError> {
    let admin = state.is_org_admin(&principal);
    let correlation_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let actor_name = crate::extract::sealed_actor_name(state, &principal, &user).await?;
    Ok(crate::extract::Ctx {
        actor: Actor { user, admin },
        principal,
        environment: env.clone(),
        correlation_id,
        traceparent: crate::extract::request_traceparent(parts),
        actor_name,
    })
}

/// Create an environment (organisation administrators).
#[utoipa::path(post, path = "/v1/environments", tag = "environments", operation_id = "create_environment",
    request_body = CreateEnvironmentRequest,
    responses((status = 201, body = EnvironmentView), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    // The caller first: without a valid token 401, without the role 403, whatever the body.
    let (parts, body) = request.into_parts();
    let principal = authenticate(&parts, &state).await?;
    let user = UserId::parse(&principal.subject).map_err(|(_, m)| {
        ApiError::Unauthenticated(format!("the token's subject is not usable: {m}"))
    })?;
    if !state.is_org_admin(&principal) {
        return Err(ApiError::Forbidden {
            code: "permission.admin_only",
            message: "only an organisation administrator may create environments".into(),
        });
    }
    let JsonBody(body) = JsonBody::<CreateEnvironmentRequest>::from_request(
        Request::from_parts(parts.clone(), body),
        &state,
    )
    .await?;
    let id =
        EnvironmentId::parse(&body.id).map_err(|(code, m)| ApiError::invalid("id", code, m))?;
    let mut errors = appreg_domain::FieldErrors::new();
    crate::dto::too_long(&mut errors, "name", "name.invalid", &body.name, MAX_NAME);
    errors.into_result()?;
    let ctx = org_caller(&parts, &state, principal, user, &id).await?;
    let exists = state.environment_exists(&id).await?;
    let events = create_environment(id.clone(), &body.name, exists)?;
    let appended = append_events(
        &state,
        &ctx,
        environment_stream(&id),
        ENVIRONMENT_STREAM,
        0,
        &events,
    )
    .await
    .map_err(|e| match e {
        appreg_eventstore::AppendError::VersionConflict { .. } => {
            ApiError::from(appreg_domain::DomainError::EnvironmentExists)
        }
        other => other.into(),
    })?;
    state.mark_environment(&id).await;
    let view = EnvironmentView {
        id: id.to_string(),
        name: body.name.trim().to_string(),
    };
    Ok(with_token(
        (StatusCode::CREATED, Json(view)).into_response(),
        Some(&appended),
    ))
}

/// The environments the caller administers (organisation administrators: all), and `DEFAULT`.
#[utoipa::path(get, path = "/v1/environments", tag = "environments", operation_id = "list_environments",
    responses((status = 200, body = EnvironmentList), (status = 401, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Json<EnvironmentList>, ApiError> {
    let principal = authenticate(&parts, &state).await?;
    // An environment is listed as soon as its creation has been answered.
    fresh_read_model(&state, &parts.headers).await?;
    let all = state.read().environments().await?;
    let items = all
        .into_iter()
        .filter(|(id, _)| {
            id == EnvironmentId::DEFAULT
                || EnvironmentId::parse(id).is_ok_and(|env| state.is_admin_of(&principal, &env))
        })
        .map(|(id, name)| EnvironmentView { id, name })
        .collect();
    Ok(Json(EnvironmentList { items }))
}
