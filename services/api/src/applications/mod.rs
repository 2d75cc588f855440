//! `/applications`: the application types, create, list, get (also as of a past point),
//! update, archive, restore; `client` the OAuth client's actions (retry the registration, renew
//! the secret, read the credentials); `history` the audit trail.
//!
//! Layout: `requests` the request bodies and their conversion into domain commands, `views` the
//! response bodies of these endpoints (the application view itself is shared: `crate::dto`).

use crate::commands::{current_settings, execute_app, fold_app, load_app, read_all};
use crate::consistency::{fresh_read_model, with_token};
use crate::dto::{app_not_found as not_found, parse_app_id, view, ApplicationView};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::readmodel;
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_domain::{Application, ApplicationId, ApplicationType, Operation, Permission};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

mod client;
mod history;
mod requests;
mod views;

pub use requests::*;
pub use views::*;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(application_types)))
        .routes(first_visit.on(routes!(list_applications, create_application)))
        .routes(first_visit.on(routes!(
            get_application,
            update_application,
            archive_application
        )))
        .routes(first_visit.on(routes!(restore_application)))
        .routes(first_visit.on(routes!(history::history)))
        .routes(first_visit.on(routes!(client::retry_registration)))
        .routes(first_visit.on(routes!(client::renew_secret)))
        .routes(first_visit.on(routes!(client::credentials)))
}

/// The application types that can be created now, with their grant types.
#[utoipa::path(get, path = "/v1/environments/{env}/application-types", tag = "applications",
    params(("env" = String, Path, description = "environment id")),
    responses((status = 200, body = ApplicationTypeList)))]
pub async fn application_types(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Json<ApplicationTypeList>, ApiError> {
    let settings = current_settings(&state, ctx.environment.as_str()).await?;
    let items = ApplicationType::ALL
        .into_iter()
        .filter(|t| settings.can_create(*t).is_ok())
        .map(ApplicationTypeView::new)
        .collect();
    Ok(Json(ApplicationTypeList { items }))
}

/// Create an application. Simple: 201; OAuth types: 202, registration REGISTERING.
#[utoipa::path(post, path = "/v1/environments/{env}/applications", tag = "applications",
    params(("env" = String, Path, description = "environment id")),
    request_body = CreateApplicationRequest,
    responses((status = 201, body = ApplicationView), (status = 202, body = ApplicationView),
        (status = 400, body = Problem), (status = 409, body = Problem), (status = 413, body = Problem), (status = 422, body = Problem)))]
pub async fn create_application(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<CreateApplicationRequest>,
) -> Result<Response, ApiError> {
    let settings = current_settings(&state, ctx.environment.as_str()).await?;
    let policy = state.policy(settings);
    let id = ApplicationId(Uuid::now_v7());
    let command = body
        .into_command(id, ctx.environment.clone(), &ctx.actor, &policy)
        .map_err(ApiError::Invalid)?;
    if command.app_type.is_oauth() && settings.dcr_enabled {
        // An OAuth type needs a provider to register with: the one named, or the default.
        let exists = crate::commands::provider_exists(
            &state,
            &ctx.environment,
            command.provider_id.as_deref(),
        )
        .await?;
        if !exists {
            return Err(ApiError::invalid(
                "provider_id",
                "provider.not_found",
                match &command.provider_id {
                    Some(p) => format!("no client registration provider {p:?} in this environment"),
                    None => "the environment has no client registration provider yet; an administrator adds one".into(),
                },
            ));
        }
    }
    let executed = execute_app(&state, &ctx, "CreateApplication", id, true, |current| {
        if current.is_some() {
            return Err(ApiError::Conflict {
                code: "application.exists",
                message: "the application exists".into(),
            });
        }
        Ok(Application::create(command.clone(), &policy)?)
    })
    .await?;
    let status = if executed.app.app_type.is_oauth() {
        StatusCode::ACCEPTED
    } else {
        StatusCode::CREATED
    };
    let mut response = (status, Json(view(&state, &ctx, &executed.app).await?)).into_response();
    let location = format!("/v1/environments/{}/applications/{}", ctx.environment, id);
    if let Ok(v) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(with_token(response, executed.appended.as_ref()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// ACTIVE (default) or ARCHIVED (administrators only).
    #[param(value_type = Option<crate::apidoc::ApplicationStatus>, inline, nullable = false)]
    pub status: Option<String>,
    /// 1-based page number.
    #[param(minimum = 1, maximum = 1_000_000, nullable = false)]
    pub page: Option<i64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub size: Option<i64>,
    /// Only applications whose name starts with this (case-insensitive), at most 200
    /// characters, no control characters.
    #[param(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        nullable = false
    )]
    pub q: Option<String>,
    /// Only applications of this type.
    #[serde(rename = "type")]
    #[param(value_type = Option<crate::apidoc::ApplicationTypeName>, inline, nullable = false)]
    pub app_type: Option<String>,
    /// The order: `created_at` (default, oldest first), `-created_at` (newest first) or `name`;
    /// ties by id.
    #[param(value_type = Option<crate::apidoc::ListSort>, inline, nullable = false)]
    pub sort: Option<String>,
}

/// The validated filter of a list of applications (422 naming each bad field).
fn list_filter<'a>(
    params: &'a ListParams,
    errors: &mut appreg_domain::FieldErrors,
) -> readmodel::AppFilter<'a> {
    if params
        .q
        .as_deref()
        .is_some_and(|q| q.chars().count() > 200 || q.chars().any(char::is_control))
    {
        errors.add(
            "q",
            "q.invalid",
            "q has at most 200 characters, no control characters",
        );
    }
    let app_type = params.app_type.as_deref();
    if app_type.is_some_and(|t| ApplicationType::parse(t).is_err()) {
        errors.add(
            "type",
            "type.invalid",
            "type is one of simple, browser, web, native, backend_to_backend",
        );
    }
    let sort = match params.sort.as_deref() {
        None | Some("created_at") => readmodel::AppSort::CreatedAt,
        Some("-created_at") => readmodel::AppSort::CreatedAtDesc,
        Some("name") => readmodel::AppSort::Name,
        Some(_) => {
            errors.add(
                "sort",
                "sort.invalid",
                "sort is name, created_at or -created_at",
            );
            readmodel::AppSort::CreatedAt
        }
    };
    readmodel::AppFilter {
        name_prefix: params.q.as_deref().filter(|q| !q.is_empty()),
        app_type,
        sort,
    }
}

/// The caller's applications (administrators: all of the environment), optionally narrowed by
/// name prefix and type and ordered by name or creation.
#[utoipa::path(get, path = "/v1/environments/{env}/applications", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ListParams),
    responses((status = 200, body = ApplicationPage), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn list_applications(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ApplicationPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let mut errors = appreg_domain::FieldErrors::new();
    let status = params.status.as_deref().unwrap_or("ACTIVE");
    if status != "ACTIVE" && status != "ARCHIVED" {
        errors.add("status", "status.invalid", "status is ACTIVE or ARCHIVED");
    }
    let (page, size) = crate::dto::page_and_size(params.page, params.size, &mut errors);
    let filter = list_filter(&params, &mut errors);
    errors.into_result()?;
    if status == "ARCHIVED" && !ctx.actor.admin {
        return Err(ApiError::Forbidden {
            code: "permission.admin_only",
            message: "only an environment administrator may list archived applications".into(),
        });
    }
    fresh_read_model(&state, &headers).await?;
    let member = (!ctx.actor.admin).then(|| ctx.actor.user.as_str());
    let (apps, total) = state
        .read()
        .list_filtered(
            ctx.environment.as_str(),
            member,
            status,
            &filter,
            size,
            (page - 1) * size,
        )
        .await?;
    let mut names: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut items = Vec::with_capacity(apps.len());
    for app in &apps {
        let mut item = ApplicationView::new(app, &ctx.actor);
        if let Some(owner) = item.owner.as_mut() {
            if !names.contains_key(&owner.id) {
                let (name, _) =
                    crate::personal::profile(&state, ctx.environment.as_str(), &owner.id).await?;
                names.insert(owner.id.clone(), name);
            }
            owner.name = names[&owner.id].clone();
        }
        items.push(item);
    }
    Ok(Json(ApplicationPage {
        items,
        page,
        size,
        total,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AsOfParams {
    /// The state at this time (RFC 3339), rebuilt from the log. Not with `version`.
    #[param(value_type = Option<DateTime<Utc>>, nullable = false)]
    pub as_of: Option<String>,
    /// The state at this version (from 1), rebuilt from the log. Not with `as_of`.
    #[param(minimum = 1, nullable = false)]
    pub version: Option<i64>,
}

/// An application; with `as_of` or `version`, its state at that point, with its members and
/// subscriptions then.
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id"), AsOfParams),
    responses((status = 200, body = ApplicationAtView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn get_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<AsOfParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ApplicationAtView>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let id = parse_app_id(&id)?;
    let (current, _) = load_app(&state, &ctx, id).await?;
    let current = current.ok_or_else(not_found)?;
    current.authorize(&ctx.actor, Permission::Definition, Operation::Read)?;
    // A past state is rebuilt from the log; the current one comes from the command path.
    let past = params.as_of.is_some() || params.version.is_some();
    let events = if past {
        read_all(state.store().as_ref(), &id.stream_id()).await?
    } else {
        Vec::new()
    };
    let app = match (params.as_of, params.version) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "as_of",
                "query.exclusive",
                "give as_of or version, not both",
            ));
        }
        (Some(as_of), None) => {
            let at: DateTime<Utc> = DateTime::parse_from_rfc3339(&as_of)
                .map_err(|_| {
                    ApiError::invalid("as_of", "as_of.invalid", "as_of is an RFC 3339 time")
                })?
                .with_timezone(&Utc);
            fold_app(&events, |e| e.recorded_at <= at)?.ok_or_else(|| {
                ApiError::not_found(
                    "application.not_found",
                    "the application did not exist at that time",
                )
            })?
        }
        (None, Some(v)) => {
            if v < 1 || v > current.version {
                return Err(ApiError::not_found(
                    "application.version_not_found",
                    format!("the application has versions 1 to {}", current.version),
                ));
            }
            fold_app(&events, |e| e.version <= v)?.ok_or_else(not_found)?
        }
        (None, None) => {
            return Ok(Json(ApplicationAtView {
                application: view(&state, &ctx, &current).await?,
                members: None,
                subscriptions: None,
            }));
        }
    };
    let application = view(&state, &ctx, &app).await?;
    Ok(Json(ApplicationAtView::past(
        application,
        &app,
        &current,
        &ctx.actor,
    )))
}

/// Update an application's definition (DEFINITION[U]).
#[utoipa::path(put, path = "/v1/environments/{env}/applications/{id}", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id")),
    request_body = UpdateApplicationRequest,
    responses((status = 200, body = ApplicationView), (status = 403, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn update_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<UpdateApplicationRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let command = body.into_command().map_err(ApiError::Invalid)?;
    let settings = current_settings(&state, ctx.environment.as_str()).await?;
    let policy = state.policy(settings);
    let executed = execute_app(&state, &ctx, "UpdateApplication", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Definition, Operation::Update)?;
        Ok(app.update(command.clone(), &policy)?)
    })
    .await?;
    let response = Json(view(&state, &ctx, &executed.app).await?).into_response();
    Ok(with_token(response, executed.appended.as_ref()))
}

/// Archive an application (DEFINITION[D]: the primary owner, or an administrator).
#[utoipa::path(delete, path = "/v1/environments/{env}/applications/{id}", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn archive_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let executed = execute_app(&state, &ctx, "ArchiveApplication", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Definition, Operation::Delete)?;
        Ok(app.archive()?)
    })
    .await?;
    Ok(with_token(
        StatusCode::NO_CONTENT.into_response(),
        executed.appended.as_ref(),
    ))
}

/// Restore an archived application (administrators); the restoring admin becomes primary owner.
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/_restore", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id")),
    responses((status = 200, body = ApplicationView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn restore_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let executed = execute_app(&state, &ctx, "RestoreApplication", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Definition, Operation::Read)?;
        Ok(app.restore(&ctx.actor)?)
    })
    .await?;
    let response = Json(view(&state, &ctx, &executed.app).await?).into_response();
    Ok(with_token(response, executed.appended.as_ref()))
}
