//! `/client-registration-providers`: the DCR providers of an environment (administrators only).
//!
//! Creating or updating a provider validates it live (its discovery document answers and names a
//! registration endpoint; in CLIENT_CREDENTIALS mode a token is obtained), else 422 with the
//! reason. Its secrets (client secret, initial access token) are write-only: sealed in the vault
//! under `provider/<env>/<id>`, never returned, never in an event (which carries fingerprints).
//! A provider that applications still use cannot be deleted (409).
//!
//! Where a stored secret may go: a PUT that changes the discovery endpoint, the token mode or the
//! client id must give the secret again (422 naming it), so a stored secret never reaches a
//! server chosen after it was given. The token, registration and renewal endpoints must share
//! the discovery endpoint's origin (422 `provider.endpoint.cross_origin`) unless the provider
//! allows other origins (`allow_cross_origin_endpoints`), which only an organisation
//! administrator may give, for one discovery and one renewal endpoint (403 otherwise).

mod orphans;
mod parse;

use crate::commands::{load_registry, metadata, now};
use crate::consistency::{fresh_read_model, with_token};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_commands::{Loaded, Start};
use appreg_dcr_client::provider::{check_renewal_origin, ProviderError, ProviderSettings};
use appreg_dcr_client::settings::settings_from;
use appreg_dcr_client::vault::{provider_owner, secret_kind};
use appreg_domain::provider::{
    HttpMethod, InitialAccessTokenMode, Provider, ProviderDefinition, ProviderEvent,
    ProviderRegistry,
};
use appreg_domain::EnvironmentId;
use appreg_eventstore::Appended;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(list, create)))
        .routes(first_visit.on(routes!(get, update, delete)))
        .routes(first_visit.on(routes!(orphans::list)))
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TokenType {
    ClientCredentials,
    InitialAccessToken,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenewDoc {
    pub enabled: bool,
    /// URL template with `{client_id}` and `{registration_endpoint}`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// `POST` (default), `PUT` or `PATCH`.
    #[serde(default)]
    pub method: Option<String>,
}

/// `POST` / `PUT` body. Secrets are write-only: on `PUT`, an absent secret keeps the stored one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderBody {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub discovery_endpoint: String,
    pub initial_access_token_type: TokenType,
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only)]
    pub client_secret: Option<SecretString>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub software_id: Option<String>,
    #[serde(default)]
    #[schema(value_type = Option<String>, write_only)]
    pub initial_access_token: Option<SecretString>,
    #[serde(default)]
    pub renew_client_secret: Option<RenewDoc>,
    #[serde(default)]
    pub delete_client_on_archive: bool,
    #[serde(default)]
    pub default: bool,
    /// Allow the token, registration and renewal endpoints on another origin than the discovery
    /// endpoint. Only an organisation administrator may set it (or change the discovery or the
    /// renewal endpoint of a provider that has it); an environment administrator may keep it.
    #[serde(default)]
    pub allow_cross_origin_endpoints: bool,
}

/// A provider as administrators see it (never a secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub discovery_endpoint: String,
    pub initial_access_token_type: TokenType,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub software_id: Option<String>,
    pub renew_client_secret: RenewDoc,
    pub delete_client_on_archive: bool,
    pub default: bool,
    pub allow_cross_origin_endpoints: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderList {
    pub items: Vec<ProviderView>,
}

impl From<&Provider> for ProviderView {
    fn from(p: &Provider) -> Self {
        let (token_type, client_id, scopes) = match &p.mode {
            InitialAccessTokenMode::ClientCredentials {
                client_id, scopes, ..
            } => (
                TokenType::ClientCredentials,
                Some(client_id.clone()),
                scopes.clone(),
            ),
            InitialAccessTokenMode::InitialAccessToken { .. } => {
                (TokenType::InitialAccessToken, None, vec![])
            }
        };
        ProviderView {
            id: p.id.clone(),
            name: p.name.clone(),
            description: p.description.clone(),
            discovery_endpoint: p.discovery_endpoint.as_str().to_string(),
            initial_access_token_type: token_type,
            client_id,
            scopes,
            software_id: p.software_id.clone(),
            renew_client_secret: RenewDoc {
                enabled: p.renew_client_secret.enabled,
                endpoint: p.renew_client_secret.endpoint.clone(),
                method: Some(
                    match p.renew_client_secret.method {
                        HttpMethod::Post => "POST",
                        HttpMethod::Put => "PUT",
                        HttpMethod::Patch => "PATCH",
                    }
                    .into(),
                ),
            },
            delete_client_on_archive: p.delete_client_on_archive,
            default: p.default,
            allow_cross_origin_endpoints: p.allow_cross_origin_endpoints,
        }
    }
}

fn admin_only(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.actor.admin {
        Ok(())
    } else {
        Err(ApiError::Forbidden {
            code: "permission.admin_only",
            message: "only an environment administrator manages client registration providers"
                .into(),
        })
    }
}

/// Allowing endpoints on other origins is an organisation administrator's decision, for one
/// discovery endpoint and one renewal endpoint: others may only keep it where it was given.
fn may_allow_cross_origin(
    state: &AppState,
    ctx: &Ctx,
    def: &ProviderDefinition,
    current: Option<&Provider>,
) -> Result<(), ApiError> {
    let kept = current.is_some_and(|p| {
        p.allow_cross_origin_endpoints
            && p.discovery_endpoint == def.discovery_endpoint
            && p.renew_client_secret.endpoint == def.renew_client_secret.endpoint
    });
    if !def.allow_cross_origin_endpoints || kept || state.is_org_admin(&ctx.principal) {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        code: "permission.organisation_admin_only",
        message: "only an organisation administrator may allow a provider's endpoints on another origin than its discovery endpoint".into(),
    })
}

fn not_found() -> ApiError {
    ApiError::not_found("provider.not_found", "no such client registration provider")
}

/// The settings the provider client needs, with the secret given now or kept in the vault.
async fn settings(
    state: &AppState,
    env: &EnvironmentId,
    id: &str,
    def: &ProviderDefinition,
    given: Option<&SecretString>,
) -> Result<ProviderSettings, ApiError> {
    let kind = secret_kind(&def.mode);
    let secret = match given {
        Some(s) => s.clone(),
        None => state
            .vault()
            .get(&provider_owner(env.as_str(), id), kind)
            .await?
            .ok_or_else(|| {
                ApiError::internal(format!("provider {id}: {kind} missing from the vault"))
            })?,
    };
    Ok(settings_from(
        &def.discovery_endpoint,
        &def.mode,
        secret,
        def.software_id.as_deref(),
        &def.renew_client_secret,
        def.allow_cross_origin_endpoints,
    ))
}

/// Seals a secret given with a definition into the vault (write-only).
/// Validates the provider (environment, id, definition) live with its secret (the one given, else
/// the vault's) when `live`, then keeps a given secret in the vault.
async fn validate_and_keep(
    state: &AppState,
    (env, id, def): (&EnvironmentId, &str, &ProviderDefinition),
    secret: Option<&SecretString>,
    live: bool,
) -> Result<(), ApiError> {
    if live {
        let settings = settings(state, env, id, def, secret).await?;
        validate(state, &settings).await?;
    }
    keep_secret(state, env, id, def, secret).await
}

async fn keep_secret(
    state: &AppState,
    env: &EnvironmentId,
    id: &str,
    def: &ProviderDefinition,
    secret: Option<&SecretString>,
) -> Result<(), ApiError> {
    if let Some(secret) = secret {
        state
            .vault()
            .put(
                &provider_owner(env.as_str(), id),
                secret_kind(&def.mode),
                secret,
            )
            .await?;
    }
    Ok(())
}

/// Live validation: 422 with the provider's reason.
/// Live validation: 422 with the provider's reason (one reason for every way a discovery
/// endpoint can fail to answer, so this is no port scanner). The renewal endpoint's origin is
/// checked first, without a request.
async fn validate(state: &AppState, settings: &ProviderSettings) -> Result<(), ApiError> {
    if let Err(e) = check_renewal_origin(settings) {
        return Err(ApiError::invalid(
            "renew_client_secret.endpoint",
            "provider.endpoint.cross_origin",
            e.to_string(),
        ));
    }
    state.provider_client().forget_discovery(settings);
    state
        .provider_client()
        .validate(settings)
        .await
        .map_err(|e| {
            tracing::info!(error = %e, "provider validation failed");
            match e {
                ProviderError::CrossOrigin(_) => ApiError::invalid(
                    "discovery_endpoint",
                    "provider.endpoint.cross_origin",
                    e.to_string(),
                ),
                ProviderError::PrivateAddress(_) => ApiError::invalid(
                    "discovery_endpoint",
                    "provider.endpoint.private_address",
                    "the provider's endpoints are on a loopback, private or otherwise non-public address, which this deployment does not call",
                ),
                e => ApiError::invalid(
                    "discovery_endpoint",
                    "provider.validation_failed",
                    e.to_string(),
                ),
            }
        })
}

/// Appends provider events decided (and validated live) on `registry` at `version`, through the
/// command path. Not decided again after a concurrent change: the live validation was of this
/// decision, so a lost race is a 409 the administrator retries.
async fn append(
    state: &AppState,
    ctx: &Ctx,
    registry: &ProviderRegistry,
    version: i64,
    events: &[ProviderEvent],
) -> Result<Appended, ApiError> {
    let mut decided = Some(events.to_vec());
    let executed = state
        .commands()
        .execute::<ProviderRegistry, ApiError, _>(
            &ProviderRegistry::stream_id(ctx.environment.as_str()),
            Start::Loaded(Loaded {
                state: Arc::new(registry.clone()),
                version,
            }),
            &metadata(ctx, now()),
            |_| {
                decided.take().ok_or_else(|| ApiError::Conflict {
                    code: "provider.concurrent_change",
                    message: "the providers changed meanwhile; try again".into(),
                })
            },
        )
        .await;
    state.remember_registry(&ctx.environment, None);
    executed?
        .appended
        .ok_or_else(|| ApiError::internal("provider command appended nothing"))
}

/// List the environment's providers.
#[utoipa::path(get, path = "/v1/environments/{env}/client-registration-providers", tag = "providers", operation_id = "list_providers",
    params(("env" = String, Path, description = "environment id")),
    responses((status = 200, body = ProviderList), (status = 403, body = Problem)))]
pub async fn list(State(state): State<AppState>, ctx: Ctx) -> Result<Json<ProviderList>, ApiError> {
    admin_only(&ctx)?;
    let (registry, _) = load_registry(&state, &ctx.environment).await?;
    Ok(Json(ProviderList {
        items: registry
            .providers
            .values()
            .map(ProviderView::from)
            .collect(),
    }))
}

/// Read a provider.
#[utoipa::path(get, path = "/v1/environments/{env}/client-registration-providers/{id}", tag = "providers", operation_id = "get_provider",
    params(("env" = String, Path, description = "environment id"), ("id" = String, Path, description = "provider id")),
    responses((status = 200, body = ProviderView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<ProviderView>, ApiError> {
    admin_only(&ctx)?;
    let (registry, _) = load_registry(&state, &ctx.environment).await?;
    let p = registry.providers.get(&id).ok_or_else(not_found)?;
    Ok(Json(p.into()))
}

/// Create a provider, validated live.
#[utoipa::path(post, path = "/v1/environments/{env}/client-registration-providers", tag = "providers", operation_id = "create_provider",
    params(("env" = String, Path, description = "environment id")),
    request_body = ProviderBody,
    responses((status = 201, body = ProviderView), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<ProviderBody>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let parsed = parse::parse(&state, body, None)?;
    may_allow_cross_origin(&state, &ctx, &parsed.definition, None)?;
    let id = uuid::Uuid::now_v7().to_string();
    let (registry, version) = load_registry(&state, &ctx.environment).await?;
    // The rules first (cheap), then the provider itself.
    let events = registry.create(id.clone(), parsed.definition.clone())?;
    let provider = (&ctx.environment, id.as_str(), &parsed.definition);
    validate_and_keep(&state, provider, parsed.secret.as_ref(), true).await?;
    let appended = append(&state, &ctx, &registry, version, &events).await?;
    let mut after = registry;
    for e in &events {
        after.evolve(e);
    }
    let view = ProviderView::from(after.providers.get(&id).ok_or_else(not_found)?);
    Ok(with_token(
        (StatusCode::CREATED, Json(view)).into_response(),
        Some(&appended),
    ))
}

/// Replace a provider's definition, validated live (absent secrets are kept).
#[utoipa::path(put, path = "/v1/environments/{env}/client-registration-providers/{id}", tag = "providers", operation_id = "update_provider",
    params(("env" = String, Path, description = "environment id"), ("id" = String, Path, description = "provider id")),
    request_body = ProviderBody,
    responses((status = 200, body = ProviderView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn update(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<ProviderBody>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let (registry, version) = load_registry(&state, &ctx.environment).await?;
    let current = registry.providers.get(&id).ok_or_else(not_found)?;
    let parsed = parse::parse(&state, body, Some(current))?;
    may_allow_cross_origin(&state, &ctx, &parsed.definition, Some(current))?;
    let events = registry.update(&id, parsed.definition.clone())?;
    // Validated live when the definition or the secret changes.
    let live = !events.is_empty() || parsed.secret.is_some();
    let provider = (&ctx.environment, id.as_str(), &parsed.definition);
    validate_and_keep(&state, provider, parsed.secret.as_ref(), live).await?;
    let appended = if events.is_empty() {
        None
    } else {
        Some(append(&state, &ctx, &registry, version, &events).await?)
    };
    let mut after = registry.clone();
    for e in &events {
        after.evolve(e);
    }
    let view = ProviderView::from(after.providers.get(&id).ok_or_else(not_found)?);
    Ok(with_token(Json(view).into_response(), appended.as_ref()))
}

/// Delete a provider no application uses.
#[utoipa::path(delete, path = "/v1/environments/{env}/client-registration-providers/{id}", tag = "providers", operation_id = "delete_provider",
    params(("env" = String, Path, description = "environment id"), ("id" = String, Path, description = "provider id")),
    responses((status = 204), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: axum::http::HeaderMap,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    // The read model must include every application committed before this request.
    fresh_read_model(&state, &headers).await?;
    let (registry, version) = load_registry(&state, &ctx.environment).await?;
    if !registry.providers.contains_key(&id) {
        return Err(not_found());
    }
    let in_use = state
        .read()
        .uses_provider(ctx.environment.as_str(), &id)
        .await?;
    let events = registry.delete(&id, in_use)?;
    let appended = append(&state, &ctx, &registry, version, &events).await?;
    state
        .vault()
        .delete_owner(&provider_owner(ctx.environment.as_str(), &id))
        .await
        .map_err(ApiError::internal)?;
    Ok(with_token(
        StatusCode::NO_CONTENT.into_response(),
        Some(&appended),
    ))
}
