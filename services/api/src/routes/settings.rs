//! The environment's client registration settings.

use super::*;

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
