//! The application endpoints: types, create, list, get, update, archive, restore, and the
//! client actions (retry the registration, renew the secret, read the credentials).

use super::*;

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
