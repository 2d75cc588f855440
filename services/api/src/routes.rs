//! HTTP handlers of `/v1/environments/{env}/…` (API.md). Handlers are thin: parse at the edge,
//! run a command through `commands`, render a view.

use crate::commands::{
    current_settings, execute_app, execute_settings, fold_app, load_settings, read_all,
};
use crate::dto::*;
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use appreg_domain::{Application, ApplicationId, ApplicationType, Operation, Permission};
use appreg_eventstore::{Appended, LogPosition};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

pub static CONSISTENCY_TOKEN: HeaderName = HeaderName::from_static("x-consistency-token");

pub(crate) fn with_token(mut response: Response, appended: Option<&Appended>) -> Response {
    if let Some(a) = appended {
        if let Ok(v) = HeaderValue::from_str(&a.position.to_string()) {
            response.headers_mut().insert(CONSISTENCY_TOKEN.clone(), v);
        }
    }
    response
}

/// Waits until the read model includes the caller's last write (`X-Consistency-Token`), or,
/// without a token, everything committed before the request and every write this process
/// acknowledged: a list never misses a write the caller has seen acknowledged (through another
/// api instance, send the token).
pub(crate) async fn fresh_read_model(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let target = match headers.get(&CONSISTENCY_TOKEN) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<LogPosition>().ok())
            .ok_or_else(|| {
                ApiError::invalid(
                    "X-Consistency-Token",
                    "consistency_token.invalid",
                    "not a token this api issued",
                )
            })?,
        None => state.store().last_committed().await?,
    };
    if state.read().position() >= target
        || state
            .read()
            .wait_for(target, state.consistency_wait())
            .await
    {
        Ok(())
    } else {
        Err(ApiError::Unavailable(
            "the read models are behind; retry shortly".into(),
        ))
    }
}

pub(crate) fn parse_app_id(raw: &str) -> Result<ApplicationId, ApiError> {
    Uuid::parse_str(raw)
        .map(ApplicationId)
        .map_err(|_| ApiError::not_found("application.not_found", "no such application"))
}

/// The caller's view of an application, with the primary owner's name.
pub(crate) async fn view(
    state: &AppState,
    ctx: &Ctx,
    app: &Application,
) -> Result<ApplicationView, ApiError> {
    let mut view = ApplicationView::new(app, &ctx.actor);
    if let Some(owner) = view.owner.as_mut() {
        owner.name = if owner.id == ctx.actor.user.as_str() {
            // The caller's own name is in their token: no read needed.
            ctx.principal.name.clone()
        } else {
            state
                .read()
                .user_profile(ctx.environment.as_str(), &owner.id)
                .await?
                .and_then(|(name, _)| name)
        };
    }
    Ok(view)
}

pub(crate) fn not_found() -> ApiError {
    ApiError::not_found("application.not_found", "no such application")
}

/// Read the environment's client registration settings.
#[utoipa::path(get, path = "/v1/environments/{env}/settings/client-registration", tag = "settings",
    params(("env" = String, Path, description = "environment id")),
    responses((status = 200, body = ClientRegistrationSettingsDoc), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get_settings(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Json<ClientRegistrationSettingsDoc>, ApiError> {
    let (settings, _) = load_settings(&state, ctx.environment.as_str()).await?;
    Ok(Json(settings.into()))
}

/// Replace the environment's client registration settings (administrators).
#[utoipa::path(put, path = "/v1/environments/{env}/settings/client-registration", tag = "settings",
    params(("env" = String, Path, description = "environment id")),
    request_body = ClientRegistrationSettingsDoc,
    responses((status = 200, body = ClientRegistrationSettingsDoc), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn put_settings(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<ClientRegistrationSettingsDoc>,
) -> Result<Response, ApiError> {
    if !ctx.actor.admin {
        return Err(ApiError::Forbidden {
            code: "permission.admin_only",
            message: "only an environment administrator may change the settings".into(),
        });
    }
    let (settings, appended) = execute_settings(&state, &ctx, body.into()).await?;
    Ok(with_token(
        Json(ClientRegistrationSettingsDoc::from(settings)).into_response(),
        appended.as_ref(),
    ))
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
        let exists = crate::providers::provider_exists(
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
}

/// The caller's applications (administrators: all of the environment).
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
    let page = params.page.unwrap_or(1);
    let size = params.size.unwrap_or(20);
    if !(1..=1_000_000).contains(&page) {
        errors.add("page", "page.invalid", "page starts at 1");
    }
    if !(1..=100).contains(&size) {
        errors.add("size", "size.invalid", "size is between 1 and 100");
    }
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
        .list(
            ctx.environment.as_str(),
            member,
            status,
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
                let profile = state
                    .read()
                    .user_profile(ctx.environment.as_str(), &owner.id)
                    .await?;
                names.insert(owner.id.clone(), profile.and_then(|(name, _)| name));
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

/// An application; with `as_of` or `version`, its state at that point.
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id"), AsOfParams),
    responses((status = 200, body = ApplicationView), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn get_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<AsOfParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ApplicationView>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let id = parse_app_id(&id)?;
    let (current, _) = crate::commands::load_app(&state, &ctx, id).await?;
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
        (None, None) => current,
    };
    Ok(Json(view(&state, &ctx, &app).await?))
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

/// `202` with the application: the saga does the rest.
async fn accepted(
    state: &AppState,
    ctx: &Ctx,
    executed: &crate::commands::Executed,
) -> Result<Response, ApiError> {
    let response = (
        StatusCode::ACCEPTED,
        Json(view(state, ctx, &executed.app).await?),
    )
        .into_response();
    Ok(with_token(response, executed.appended.as_ref()))
}

/// Retry a failed client registration (DEFINITION[U]): a new request goes to the saga.
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/_retry_registration", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id")),
    responses((status = 202, body = ApplicationView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn retry_registration(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let executed = execute_app(&state, &ctx, "RetryDcrRegistration", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Definition, Operation::Update)?;
        Ok(app.retry_registration()?)
    })
    .await?;
    accepted(&state, &ctx, &executed).await
}

/// Renew the client secret at the provider (DEFINITION[U]): refused (409) for archived, simple or
/// not-yet-registered applications and when the provider has renewal off.
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/_renew_secret", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id")),
    responses((status = 202, body = ApplicationView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn renew_secret(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let (registry, _) = crate::providers::load_registry(&state, &ctx.environment).await?;
    let executed = execute_app(&state, &ctx, "RenewClientSecret", id, false, |current| {
        let app = current.ok_or_else(not_found)?;
        app.authorize(&ctx.actor, Permission::Definition, Operation::Update)?;
        let events = app.request_secret_renewal()?;
        let issuer = app
            .registration
            .as_ref()
            .and_then(|r| r.provider_id.as_deref())
            .and_then(|p| registry.providers.get(p));
        if !issuer.is_some_and(|p| p.renew_client_secret.enabled) {
            return Err(ApiError::Conflict {
                code: "provider.renewal_disabled",
                message: "the application's provider does not renew client secrets".into(),
            });
        }
        Ok(events)
    })
    .await?;
    accepted(&state, &ctx, &executed).await
}

/// An OAuth application's credentials (DEFINITION[U] only): the client secret is read from the
/// vault. The only response that ever carries a secret.
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/credentials", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id")),
    responses((status = 200, body = CredentialsView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn credentials(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    use secrecy::ExposeSecret;
    let id = parse_app_id(&id)?;
    let (app, _) = crate::commands::load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(not_found)?;
    app.authorize(&ctx.actor, Permission::Definition, Operation::Update)?;
    let registration = app
        .registration
        .as_ref()
        .filter(|r| r.state == appreg_domain::RegistrationState::Registered && !r.client_deleted);
    let Some(registration) = registration else {
        return Err(appreg_domain::DomainError::NotRegistered.into());
    };
    let secret = state
        .vault()
        .get(&appreg_dcr_client::vault::secret_owner(id), "client_secret")
        .await?;
    let body = CredentialsView {
        client_id: app.client_id.as_ref().map(|c| c.as_str().to_string()),
        client_secret: secret.as_ref().map(|s| s.expose_secret().to_string()),
        client_secret_expires_at: registration.client_secret_expires_at,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Events read per history page by default, and at most.
pub const HISTORY_LIMIT_DEFAULT: i64 = 100;
pub const HISTORY_LIMIT_MAX: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Only the events after this version (default 0: from the first); a page's
    /// `next_after_version` gives the next page.
    #[param(value_type = Option<i64>, minimum = 0, nullable = false)]
    pub after_version: Option<String>,
    /// Events examined per page, 1–1000 (default 100). Events the caller may not read are
    /// skipped, so a page may hold fewer.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<String>,
}

impl HistoryParams {
    /// (after_version, limit), or a 422 naming each bad field.
    fn parse(&self) -> Result<(i64, i64), ApiError> {
        let mut errors = appreg_domain::FieldErrors::new();
        let after = match self.after_version.as_deref().map(str::parse::<i64>) {
            None => 0,
            Some(Ok(v)) if v >= 0 => v,
            Some(_) => {
                errors.add(
                    "after_version",
                    "after_version.invalid",
                    "after_version is a version, 0 or more",
                );
                0
            }
        };
        let limit = match self.limit.as_deref().map(str::parse::<i64>) {
            None => HISTORY_LIMIT_DEFAULT,
            Some(Ok(l)) if (1..=HISTORY_LIMIT_MAX).contains(&l) => l,
            Some(_) => {
                errors.add(
                    "limit",
                    "limit.invalid",
                    format!("limit is between 1 and {HISTORY_LIMIT_MAX}"),
                );
                HISTORY_LIMIT_DEFAULT
            }
        };
        errors.into_result()?;
        Ok((after, limit))
    }
}

/// A page of an application's events, oldest first (DEFINITION[R]): those after `after_version`
/// among the next `limit`, filtered like `GET /events` (a member reads what their role may read:
/// notification settings need NOTIFICATION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/history", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id"), HistoryParams),
    responses((status = 200, body = HistoryPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn history(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let (after_version, limit) = params.parse()?;
    let id = parse_app_id(&id)?;
    let (current, _) = crate::commands::load_app(&state, &ctx, id).await?;
    let current = current.ok_or_else(not_found)?;
    current.authorize(&ctx.actor, Permission::Definition, Operation::Read)?;
    let role = current.role_of(&ctx.actor.user);
    // One more than the page, to tell whether anything follows it.
    let mut events = state
        .store()
        .read_stream(&id.stream_id(), after_version, limit + 1)
        .await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_after_version = if more {
        events.last().map(|e| e.version)
    } else {
        None
    };
    let items = events
        .iter()
        .filter(|e| crate::events::may_read_app_event(&ctx.actor, role, &e.event_type))
        .map(HistoryEntry::from_event)
        .collect();
    Ok(Json(HistoryPage {
        items,
        next_after_version,
    }))
}

/// Liveness: 503 once a background task kept dying and was given up (restart the process).
#[utoipa::path(get, path = "/healthz", tag = "system", responses((status = 200, description = "alive"), (status = 503, body = Problem)))]
pub async fn healthz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    let dead = state.supervisor().not_alive();
    if !dead.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "not alive: {}",
            dead.join("; ")
        )));
    }
    Ok("ok")
}

/// Readiness: every background task runs, the database answers and the read model is not far
/// behind.
#[utoipa::path(get, path = "/readyz", tag = "system", responses((status = 200, description = "ready"), (status = 503, body = Problem)))]
pub async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    // A background task (the projector, the lag gauges) is dead: not ready until restarted.
    let dead = state.supervisor().not_ready();
    if !dead.is_empty() {
        return Err(ApiError::Unavailable(format!(
            "not ready: {}",
            dead.join("; ")
        )));
    }
    let lag = match tokio::time::timeout(TIMEOUT, state.projection_lag()).await {
        Ok(Ok(lag)) => lag,
        Ok(Err(error)) => {
            tracing::warn!(%error, "readyz: the database does not answer");
            return Err(ApiError::Unavailable(
                "not ready: the database is unreachable".into(),
            ));
        }
        Err(_) => {
            return Err(ApiError::Unavailable(format!(
                "not ready: the database did not answer within {} ms",
                TIMEOUT.as_millis()
            )))
        }
    };
    let bound = state.readyz_max_lag();
    if lag.seconds > bound.as_secs_f64() {
        return Err(ApiError::Unavailable(format!(
            "not ready: the read model {:?} is {} event(s) and {:.1} s behind the event log \
             (readyz_max_lag_ms = {})",
            crate::readmodel::PROJECTION,
            lag.events,
            lag.seconds,
            bound.as_millis()
        )));
    }
    Ok("ready")
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "system", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use appreg_eventstore::testing::{
        fresh_postgres_url, DEFAULT_TEST_DATABASE_URL, TEST_DATABASE_URL_ENV,
    };
    use appreg_eventstore::{AppendRequest, Database, NewEvent};
    use sqlx::Connection;

    async fn state(url: &str, max_lag_ms: u64) -> (AppState, Database) {
        let mut config = appreg_config::Config::defaults();
        config.readyz_max_lag_ms = max_lag_ms;
        config.secrets_master_key = Some(
            appreg_secrets::MasterKey::generate("test", &mut rand::rngs::OsRng)
                .unwrap()
                .to_config_string(),
        );
        let db = Database::connect(url, 4).await.unwrap();
        crate::migrate(&db).await.unwrap();
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let key = appreg_auth::DevKey::from_pkcs8(pkcs8.as_ref().to_vec()).unwrap();
        let auth = appreg_auth::Authenticator::dev(&key, &config.auth.role_claim);
        (AppState::new(&config, &db, auth).await.unwrap(), db)
    }

    /// An event recorded `age` ago that no projector applies (none runs here).
    async fn unapplied_event(state: &AppState, age: chrono::Duration) {
        let at = crate::commands::now() - age;
        state
            .store()
            .append(AppendRequest {
                stream_id: "environment-LAGGING".into(),
                stream_type: "environment".into(),
                expected_version: 0,
                events: vec![NewEvent {
                    event_id: Uuid::now_v7(),
                    event_type: "EnvironmentCreated".into(),
                    schema_version: 1,
                    data: serde_json::json!({ "id": "LAGGING", "name": "lagging" }),
                    metadata: serde_json::json!({
                        "environment": "LAGGING", "actor": "test", "correlation_id": "test",
                        "causation_id": "test", "at": at,
                    }),
                    recorded_at: at,
                }],
                claims: vec![],
                releases: vec![],
            })
            .await
            .unwrap();
    }

    async fn problem(result: Result<&'static str, ApiError>) -> (u16, serde_json::Value) {
        let response = match result {
            Ok(body) => body.into_response(),
            Err(e) => e.into_response(),
        };
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Ready while the database answers and the read model is within the bound; 503 saying why
    /// when the read model is behind, and when the database is gone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readyz_fails_when_the_read_model_lags_or_the_database_is_gone() {
        let url = fresh_postgres_url().await;
        let (state, db) = state(&url, 5000).await;
        assert_eq!(problem(readyz(State(state.clone())).await).await.0, 200);

        // The first event the read model has not applied is 10 s old: behind the 5 s bound.
        unapplied_event(&state, chrono::Duration::seconds(10)).await;
        let lag = state.projection_lag().await.unwrap();
        assert_eq!(lag.events, 1);
        assert!(lag.seconds >= 9.0, "{lag:?}");
        let (status, body) = problem(readyz(State(state.clone())).await).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "service.unavailable");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("1 event(s)"), "{detail}");
        assert!(detail.contains("behind the event log"), "{detail}");
        assert!(detail.contains("readyz_max_lag_ms = 5000"), "{detail}");

        // Applied: ready again.
        let events = state
            .store()
            .read_stream("environment-LAGGING", 0, 10)
            .await
            .unwrap();
        state.read().apply(&events).await.unwrap();
        assert_eq!(state.projection_lag().await.unwrap().events, 0);
        assert_eq!(problem(readyz(State(state.clone())).await).await.0, 200);

        // The database is dropped (its connections terminated): 503, the database named.
        let admin_url = std::env::var(TEST_DATABASE_URL_ENV)
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string());
        let name = url
            .rsplit('/')
            .next()
            .unwrap()
            .split('?')
            .next()
            .unwrap()
            .to_string();
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
            .execute(&mut admin)
            .await
            .unwrap();
        let (status, body) = problem(readyz(State(state.clone())).await).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["code"], "service.unavailable");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains("database"), "{detail}");
        db.close().await;
    }
}
