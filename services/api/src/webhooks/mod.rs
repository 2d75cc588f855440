//! `/webhooks` (environment administrators) and `/applications/{id}/webhooks` (DEFINITION[U]):
//! the endpoints `appreg notifier` delivers events to. Both kinds live in one stream per
//! environment (`appreg_domain::webhook`); a route reaches only the endpoints of its scope, so an
//! application's endpoint is not found under `/webhooks/{wid}`, nor another application's, nor
//! another environment's.
//!
//! The signing secret (`whsec_` + base64 of 32 random bytes) is drawn here, sealed in the vault
//! before the endpoint is appended, answered once by the POST (`Cache-Control: no-store`) and
//! never again; the events carry its fingerprint. The delivery log is in [`deliveries`].

mod deliveries;

use crate::commands::load_app;
use crate::consistency::with_token;
use crate::dto::{app_not_found, parse_app_id};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_commands::Start;
use appreg_domain::webhook::{
    DisabledReason, RawWebhook, Webhook, WebhookDefinition, WebhookEvent, WebhookRegistry,
    WebhookScope,
};
use appreg_domain::{DomainError, Operation, Permission};
use appreg_eventstore::Appended;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(list_environment, create_environment)))
        .routes(first_visit.on(routes!(
            get_environment,
            put_environment,
            delete_environment
        )))
        .routes(first_visit.on(routes!(list_application, create_application)))
        .routes(first_visit.on(routes!(
            get_application,
            put_application,
            delete_application
        )))
        .routes(first_visit.on(routes!(deliveries::list_environment)))
        .routes(first_visit.on(routes!(deliveries::retry_environment)))
        .routes(first_visit.on(routes!(deliveries::list_application)))
        .routes(first_visit.on(routes!(deliveries::retry_application)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `https://…` (`http` only on a loopback host, and only where `api.allow_http_webhooks`
    /// is on: `appreg dev`), no user information, no fragment, at most 2,048 bytes.
    #[schema(value_type = String, required = true, max_length = 2048)]
    pub url: Option<String>,
    /// The event types to deliver (empty or absent: all); an application's endpoint takes only
    /// application event types.
    #[schema(max_items = 100)]
    pub event_types: Option<Vec<String>>,
    /// Default true.
    pub enabled: Option<bool>,
    /// At most 1,000 characters, no control characters.
    #[schema(max_length = 1000)]
    pub description: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    /// The application whose events it receives; null: every event of the environment.
    pub application_id: Option<String>,
    pub url: String,
    /// Empty: all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    /// `GONE` when appreg disabled it because the receiver answered 410.
    pub disabled_reason: Option<String>,
    /// The fingerprint of its signing secret (`sha256:` + 16 hex digits).
    pub secret_fingerprint: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedWebhook {
    #[serde(flatten)]
    pub webhook: WebhookView,
    /// The signing secret (`whsec_…`), shown this once: keep it in the receiver.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookList {
    pub items: Vec<WebhookView>,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        WebhookView {
            id: w.id.clone(),
            application_id: w.application_id.clone(),
            url: w.url.as_str().to_string(),
            event_types: w.event_types.clone(),
            enabled: w.enabled,
            description: w.description.clone(),
            disabled_reason: w.disabled_reason.map(|r| match r {
                DisabledReason::Gone => "GONE".to_string(),
            }),
            secret_fingerprint: w.secret_fingerprint.clone(),
        }
    }
}

/// The vault's owner and kind of an endpoint's signing secret.
pub(crate) fn secret_slot(id: &str) -> (String, &'static str) {
    appreg_secrets::store::webhook_secret_slot(id)
}

/// A new signing secret, in the Standard Webhooks form: `whsec_` + base64 of 32 random bytes.
fn generate_secret() -> SecretString {
    use base64::Engine as _;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    SecretString::from(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The scope a request addresses, once the caller may manage it: an environment's endpoints
/// need its administrator; an application's need DEFINITION[U] on it (an application the caller
/// may not see, or of another environment, is not found).
pub(crate) async fn scope(
    state: &AppState,
    ctx: &Ctx,
    application: Option<&str>,
) -> Result<WebhookScope, ApiError> {
    let Some(raw) = application else {
        return if ctx.actor.admin {
            Ok(WebhookScope::Environment)
        } else {
            Err(DomainError::AdminOnly.into())
        };
    };
    let id = parse_app_id(raw)?;
    let (app, _) = load_app(state, ctx, id).await?;
    let app = app.ok_or_else(app_not_found)?;
    app.authorize(&ctx.actor, Permission::Definition, Operation::Update)?;
    Ok(WebhookScope::Application(id.to_string()))
}

/// The environment's endpoints, from the command path.
pub(crate) async fn load_webhooks(
    state: &AppState,
    ctx: &Ctx,
) -> Result<WebhookRegistry, ApiError> {
    let loaded = state
        .commands()
        .load::<WebhookRegistry>(&WebhookRegistry::stream_id(ctx.environment.as_str()))
        .await
        .map_err(|e| ApiError::from(e.widen()))?;
    Ok(WebhookRegistry::clone(&loaded.state))
}

/// Runs a webhook command through the command path.
async fn execute(
    state: &AppState,
    ctx: &Ctx,
    mut decide: impl FnMut(&WebhookRegistry) -> Result<Vec<WebhookEvent>, DomainError>,
) -> Result<(WebhookRegistry, Option<Appended>), ApiError> {
    let executed = state
        .commands()
        .execute::<WebhookRegistry, ApiError, _>(
            &WebhookRegistry::stream_id(ctx.environment.as_str()),
            Start::Current,
            &crate::commands::metadata(ctx, crate::commands::now()),
            |r| Ok(decide(r)?),
        )
        .await?;
    Ok((WebhookRegistry::clone(&executed.state), executed.appended))
}

fn definition(
    state: &AppState,
    scope: &WebhookScope,
    body: &WebhookRequest,
) -> Result<WebhookDefinition, ApiError> {
    let event_types = body.event_types.clone().unwrap_or_default();
    let definition = WebhookDefinition::parse(
        RawWebhook {
            url: body.url.as_deref(),
            event_types: &event_types,
            enabled: body.enabled.unwrap_or(true),
            description: body.description.as_deref(),
        },
        scope,
        state.allows_http_webhooks(),
    )?;
    // A host the notifier would not call (a name that resolves to one is refused when
    // delivering): refused now, so the endpoint's owner learns it at once.
    if !state.allows_private_outbound()
        && url::Url::parse(definition.url.as_str())
            .map_or(true, |u| appreg_outbound::refused_host(&u))
    {
        return Err(ApiError::invalid(
            "url",
            "webhook.url.private_address",
            "the URL's host is a loopback, private or otherwise non-public address, which this deployment does not call",
        ));
    }
    Ok(definition)
}

async fn list(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
) -> Result<Json<WebhookList>, ApiError> {
    let scope = scope(state, ctx, app).await?;
    let registry = load_webhooks(state, ctx).await?;
    Ok(Json(WebhookList {
        items: registry.of(&scope).map(WebhookView::from).collect(),
    }))
}

async fn create(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    body: WebhookRequest,
) -> Result<Response, ApiError> {
    let scope = scope(state, ctx, app).await?;
    let definition = definition(state, &scope, &body)?;
    let id = uuid::Uuid::now_v7().to_string();
    let secret = generate_secret();
    let (owner, kind) = secret_slot(&id);
    // Sealed before the append: an endpoint never exists without its secret.
    let fingerprint = state.vault().put(&owner, kind, &secret).await?;
    let result = execute(state, ctx, |r| {
        r.create(id.clone(), &scope, definition.clone(), fingerprint.clone())
    })
    .await;
    let (registry, appended) = match result {
        Ok(done) => done,
        Err(e) => {
            if let Err(error) = state.vault().delete(&owner, kind).await {
                tracing::warn!(%error, "the secret of an endpoint not created could not be removed from the vault");
            }
            return Err(e);
        }
    };
    let webhook = registry
        .get(&id, &scope)
        .ok_or_else(|| ApiError::internal("the new webhook is missing"))?;
    let mut response = (
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: WebhookView::from(webhook),
            secret: secret.expose_secret().to_string(),
        }),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(with_token(response, appended.as_ref()))
}

async fn get_one(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    wid: &str,
) -> Result<Json<WebhookView>, ApiError> {
    let scope = scope(state, ctx, app).await?;
    let registry = load_webhooks(state, ctx).await?;
    let webhook = registry
        .get(wid, &scope)
        .ok_or(DomainError::WebhookNotFound)?;
    Ok(Json(WebhookView::from(webhook)))
}

async fn put_one(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    wid: &str,
    body: WebhookRequest,
) -> Result<Response, ApiError> {
    let scope = scope(state, ctx, app).await?;
    // An endpoint of another scope is not found before the body is judged.
    if load_webhooks(state, ctx).await?.get(wid, &scope).is_none() {
        return Err(DomainError::WebhookNotFound.into());
    }
    let definition = definition(state, &scope, &body)?;
    let (registry, appended) =
        execute(state, ctx, |r| r.update(wid, &scope, definition.clone())).await?;
    let webhook = registry
        .get(wid, &scope)
        .ok_or(DomainError::WebhookNotFound)?;
    Ok(with_token(
        Json(WebhookView::from(webhook)).into_response(),
        appended.as_ref(),
    ))
}

async fn delete_one(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    wid: &str,
) -> Result<Response, ApiError> {
    let scope = scope(state, ctx, app).await?;
    let (_, appended) = execute(state, ctx, |r| r.delete(wid, &scope)).await?;
    let (owner, kind) = secret_slot(wid);
    if let Err(error) = state.vault().delete(&owner, kind).await {
        tracing::warn!(%error, "the secret of a deleted endpoint could not be removed from the vault");
    }
    Ok(with_token(
        StatusCode::NO_CONTENT.into_response(),
        appended.as_ref(),
    ))
}

/// The environment's endpoints (its administrators).
#[utoipa::path(get, path = "/v1/environments/{env}/webhooks", tag = "webhooks", operation_id = "list_webhooks",
    params(("env" = String, Path)),
    responses((status = 200, body = WebhookList), (status = 403, body = Problem)))]
pub async fn list_environment(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Json<WebhookList>, ApiError> {
    list(&state, &ctx, None).await
}

/// Add an endpoint receiving the environment's events (its administrators); the answer carries
/// the signing secret, once.
#[utoipa::path(post, path = "/v1/environments/{env}/webhooks", tag = "webhooks", operation_id = "create_webhook",
    params(("env" = String, Path)), request_body = WebhookRequest,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_environment(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<WebhookRequest>,
) -> Result<Response, ApiError> {
    create(&state, &ctx, None, body).await
}

/// One endpoint of the environment (its administrators).
#[utoipa::path(get, path = "/v1/environments/{env}/webhooks/{wid}", tag = "webhooks", operation_id = "get_webhook",
    params(("env" = String, Path), ("wid" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_environment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, wid)): Path<(String, String)>,
) -> Result<Json<WebhookView>, ApiError> {
    get_one(&state, &ctx, None, &wid).await
}

/// Replace an endpoint's definition (its administrators); the secret stays.
#[utoipa::path(put, path = "/v1/environments/{env}/webhooks/{wid}", tag = "webhooks", operation_id = "update_webhook",
    params(("env" = String, Path), ("wid" = String, Path)), request_body = WebhookRequest,
    responses((status = 200, body = WebhookView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_environment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, wid)): Path<(String, String)>,
    JsonBody(body): JsonBody<WebhookRequest>,
) -> Result<Response, ApiError> {
    put_one(&state, &ctx, None, &wid, body).await
}

/// Delete an endpoint and its secret (its administrators).
#[utoipa::path(delete, path = "/v1/environments/{env}/webhooks/{wid}", tag = "webhooks", operation_id = "delete_webhook",
    params(("env" = String, Path), ("wid" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_environment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, wid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    delete_one(&state, &ctx, None, &wid).await
}

/// An application's endpoints (DEFINITION[U]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/webhooks", tag = "webhooks", operation_id = "list_application_webhooks",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = WebhookList), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn list_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<WebhookList>, ApiError> {
    list(&state, &ctx, Some(&id)).await
}

/// Add an endpoint receiving one application's events, those its members' roles may all read
/// (DEFINITION[U]); the answer carries the signing secret, once.
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/webhooks", tag = "webhooks", operation_id = "create_application_webhook",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)), request_body = WebhookRequest,
    responses((status = 201, body = CreatedWebhook), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<WebhookRequest>,
) -> Result<Response, ApiError> {
    create(&state, &ctx, Some(&id), body).await
}

/// One endpoint of an application (DEFINITION[U]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/webhooks/{wid}", tag = "webhooks", operation_id = "get_application_webhook",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("wid" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, wid)): Path<(String, String, String)>,
) -> Result<Json<WebhookView>, ApiError> {
    get_one(&state, &ctx, Some(&id), &wid).await
}

/// Replace an application endpoint's definition (DEFINITION[U]); the secret stays.
#[utoipa::path(put, path = "/v1/environments/{env}/applications/{id}/webhooks/{wid}", tag = "webhooks", operation_id = "update_application_webhook",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("wid" = String, Path)), request_body = WebhookRequest,
    responses((status = 200, body = WebhookView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn put_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, wid)): Path<(String, String, String)>,
    JsonBody(body): JsonBody<WebhookRequest>,
) -> Result<Response, ApiError> {
    put_one(&state, &ctx, Some(&id), &wid, body).await
}

/// Delete an application's endpoint and its secret (DEFINITION[U]).
#[utoipa::path(delete, path = "/v1/environments/{env}/applications/{id}/webhooks/{wid}", tag = "webhooks", operation_id = "delete_application_webhook",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("wid" = String, Path)),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn delete_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, wid)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    delete_one(&state, &ctx, Some(&id), &wid).await
}
