//! `/applications/{id}/members`: list, add, change a role, remove, transfer primary ownership.
//! Every command is checked against the permission matrix (MEMBER C/R/U/D) and decided by the
//! aggregate, so concurrent changes are settled by optimistic concurrency.

use crate::commands::{execute_app, load_app};
use crate::consistency::with_token;
use crate::dto::ApplicationView;
use crate::dto::{app_not_found as not_found, parse_app_id, view};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_domain::{Application, Operation, Permission, Role, UserId};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(list, add)))
        .routes(first_visit.on(routes!(change_role, remove)))
        .routes(first_visit.on(routes!(transfer)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The user's id (the `sub` of their tokens); they may not have signed in yet. At most 255
    /// bytes of UTF-8.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    pub user: Option<String>,
    /// OWNER or USER (default USER).
    #[schema(value_type = Option<crate::apidoc::MemberRole>, inline)]
    pub role: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeRoleRequest {
    /// OWNER or USER.
    #[schema(value_type = crate::apidoc::MemberRole, inline, required = true)]
    pub role: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferOwnershipRequest {
    /// The new primary owner. At most 255 bytes of UTF-8.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 255, pattern = r"^[^\x00-\x1F\x7F-\x9F]+$")]
    pub user: Option<String>,
    /// The former primary owner's new role: OWNER or USER (default USER).
    #[schema(value_type = Option<crate::apidoc::MemberRole>, inline)]
    pub former_owner_role: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user: String,
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub items: Vec<MemberView>,
}

fn parse_user(field: &str, raw: Option<&str>) -> Result<UserId, ApiError> {
    let raw = raw.ok_or_else(|| {
        ApiError::invalid(field, "field.required", format!("{field} is required"))
    })?;
    UserId::parse(raw).map_err(|(code, m)| ApiError::invalid(field, code, m))
}

fn parse_role(field: &str, raw: Option<&str>, default: Option<Role>) -> Result<Role, ApiError> {
    match (raw, default) {
        (None, Some(d)) => Ok(d),
        (None, None) => Err(ApiError::invalid(
            field,
            "field.required",
            format!("{field} is required"),
        )),
        (Some("OWNER"), _) => Ok(Role::Owner),
        (Some("USER"), _) => Ok(Role::User),
        (Some("PRIMARY_OWNER"), _) => Err(ApiError::invalid(
            field,
            "role.primary_owner",
            "PRIMARY_OWNER is given by _transfer_ownership only; use OWNER or USER",
        )),
        (Some(other), _) => Err(ApiError::invalid(
            field,
            "role.invalid",
            format!("unknown role {other:?}; expected OWNER or USER"),
        )),
    }
}

async fn member_view(
    state: &AppState,
    ctx: &Ctx,
    user: &UserId,
    role: Role,
) -> Result<MemberView, ApiError> {
    let (name, email) =
        crate::personal::profile(state, ctx.environment.as_str(), user.as_str()).await?;
    Ok(MemberView {
        user: user.to_string(),
        name,
        email,
        role: role.as_str().to_string(),
    })
}

async fn member_list(
    state: &AppState,
    ctx: &Ctx,
    app: &Application,
) -> Result<MemberList, ApiError> {
    let mut items = Vec::with_capacity(app.members.len());
    for (user, role) in &app.members {
        items.push(member_view(state, ctx, user, *role).await?);
    }
    Ok(MemberList { items })
}

/// The application's members (MEMBER[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/members", tag = "members", operation_id = "list_members",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = MemberList), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<MemberList>, ApiError> {
    let id = parse_app_id(&id)?;
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(not_found)?;
    app.authorize(&ctx.actor, Permission::Member, Operation::Read)?;
    Ok(Json(member_list(&state, &ctx, &app).await?))
}

/// Add a member (MEMBER[C]).
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/members", tag = "members", operation_id = "add_member",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)), request_body = AddMemberRequest,
    responses((status = 201, body = MemberView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn add(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<AddMemberRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let user = parse_user("user", body.user.as_deref())?;
    let role = parse_role("role", body.role.as_deref(), Some(Role::User))?;
    let executed = execute_app(&state, &ctx, "AddMember", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Member, Operation::Create)?;
        Ok(app.add_member(user.clone(), role)?)
    })
    .await?;
    let view = member_view(&state, &ctx, &user, role).await?;
    Ok(with_token(
        (StatusCode::CREATED, Json(view)).into_response(),
        executed.appended.as_ref(),
    ))
}

/// Change a member's role (MEMBER[U]).
#[utoipa::path(put, path = "/v1/environments/{env}/applications/{id}/members/{user}", tag = "members", operation_id = "change_member_role",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("user" = String, Path)), request_body = ChangeRoleRequest,
    responses((status = 200, body = MemberView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn change_role(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, user)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<ChangeRoleRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let user = UserId::parse(&user)
        .map_err(|_| ApiError::from(appreg_domain::DomainError::MemberNotFound))?;
    let role = parse_role("role", body.role.as_deref(), None)?;
    let executed = execute_app(&state, &ctx, "ChangeMemberRole", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Member, Operation::Update)?;
        Ok(app.change_member_role(user.clone(), role)?)
    })
    .await?;
    let view = member_view(&state, &ctx, &user, role).await?;
    Ok(with_token(
        Json(view).into_response(),
        executed.appended.as_ref(),
    ))
}

/// Remove a member (MEMBER[D]); the primary owner cannot be removed.
#[utoipa::path(delete, path = "/v1/environments/{env}/applications/{id}/members/{user}", tag = "members", operation_id = "remove_member",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("user" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn remove(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, user)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let user = UserId::parse(&user)
        .map_err(|_| ApiError::from(appreg_domain::DomainError::MemberNotFound))?;
    let executed = execute_app(&state, &ctx, "RemoveMember", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Member, Operation::Delete)?;
        Ok(app.remove_member(user.clone())?)
    })
    .await?;
    Ok(with_token(
        StatusCode::NO_CONTENT.into_response(),
        executed.appended.as_ref(),
    ))
}

/// Transfer primary ownership (MEMBER[U]: the primary owner or an OWNER; or an administrator).
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/members/_transfer_ownership", tag = "members", operation_id = "transfer_ownership",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)), request_body = TransferOwnershipRequest,
    responses((status = 200, body = ApplicationView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn transfer(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<TransferOwnershipRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let user = parse_user("user", body.user.as_deref())?;
    let former = parse_role(
        "former_owner_role",
        body.former_owner_role.as_deref(),
        Some(Role::User),
    )?;
    let executed = execute_app(&state, &ctx, "TransferOwnership", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Member, Operation::Update)?;
        Ok(app.transfer_ownership(&ctx.actor, user.clone(), former)?)
    })
    .await?;
    let view = view(&state, &ctx, &executed.app).await?;
    Ok(with_token(
        Json(view).into_response(),
        executed.appended.as_ref(),
    ))
}
