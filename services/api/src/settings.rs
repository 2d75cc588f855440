//! `/settings/client-registration`: the environment's client registration settings (everyone
//! reads, administrators write).

use crate::commands::{execute_settings, load_settings};
use crate::consistency::with_token;
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(first_visit.on(routes!(get_settings, put_settings)))
}

/// `GET/PUT /settings/client-registration`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedTypesDoc {
    pub simple: bool,
    pub browser: bool,
    pub web: bool,
    pub native: bool,
    pub backend_to_backend: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistrationSettingsDoc {
    pub allowed_types: AllowedTypesDoc,
    pub dcr_enabled: bool,
}

impl From<appreg_domain::ClientRegistrationSettings> for ClientRegistrationSettingsDoc {
    fn from(s: appreg_domain::ClientRegistrationSettings) -> Self {
        let a = s.allowed_types;
        ClientRegistrationSettingsDoc {
            allowed_types: AllowedTypesDoc {
                simple: a.simple,
                browser: a.browser,
                web: a.web,
                native: a.native,
                backend_to_backend: a.backend_to_backend,
            },
            dcr_enabled: s.dcr_enabled,
        }
    }
}

impl From<ClientRegistrationSettingsDoc> for appreg_domain::ClientRegistrationSettings {
    fn from(d: ClientRegistrationSettingsDoc) -> Self {
        let a = d.allowed_types;
        appreg_domain::ClientRegistrationSettings {
            allowed_types: appreg_domain::AllowedTypes {
                simple: a.simple,
                browser: a.browser,
                web: a.web,
                native: a.native,
                backend_to_backend: a.backend_to_backend,
            },
            dcr_enabled: d.dcr_enabled,
        }
    }
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
