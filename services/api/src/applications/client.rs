//! The OAuth client of an application: retry a failed registration, renew the secret, read the
//! credentials.

use super::CredentialsView;
use crate::commands::{execute_app, load_app, load_registry, Executed};
use crate::consistency::with_token;
use crate::dto::{app_not_found as not_found, parse_app_id, view, ApplicationView};
use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_domain::{Operation, Permission};
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

/// `202` with the application: the saga does the rest.
async fn accepted(state: &AppState, ctx: &Ctx, executed: &Executed) -> Result<Response, ApiError> {
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
    let (registry, _) = load_registry(&state, &ctx.environment).await?;
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
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(not_found)?;
    app.authorize(&ctx.actor, Permission::Definition, Operation::Update)?;
    let registration = app
        .registration
        .as_ref()
        .filter(|r| r.state == appreg_domain::RegistrationState::Registered && !r.client_deleted);
    let Some(registration) = registration else {
        return Err(appreg_domain::DomainError::NotRegistered.into());
    };
    // A public client (browser, native) has no secret; one that had a secret and became public
    // has had it deleted, and whatever the vault might still hold is never shown.
    let secret = match registration.client_secret_fingerprint {
        Some(_) => {
            state
                .vault()
                .get(&appreg_dcr_client::vault::secret_owner(id), "client_secret")
                .await?
        }
        None => None,
    };
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
