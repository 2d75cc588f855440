//! The API key endpoints: renew and revoke a subscription's key, and the gateway's key check
//! (`_verify`). Keys live in their subscription (`crate::subscriptions`, which issues them).

use crate::commands::{execute_app, load_app};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::subscriptions::{
    as_subscription_error, key_owner, no_store, respond, subscription_app, transition,
    SubscriptionView, Transition,
};
use crate::users::FirstVisit;
use appreg_domain::subscription::{SubscriptionStatus, API_KEY_SCOPE};
use appreg_domain::{ApplicationId, ApplicationStatus, DomainError, Operation, Permission};
use appreg_eventstore::Claim;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The longest key `_verify` reads.
const MAX_KEY_INPUT: usize = 256;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(renew_key)))
        .routes(first_visit.on(routes!(revoke_key)))
        .routes(first_visit.on(routes!(verify)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// At most 256 bytes.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 256)]
    pub key: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether a gateway should accept the key now.
    pub valid: bool,
    pub subscription_id: Option<String>,
    pub application_id: Option<String>,
    pub api_id: Option<String>,
    pub plan_id: Option<String>,
    /// The end of a renewed key's grace period.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Renew a subscription's key (SUBSCRIPTION[U]): a new key; the current ones stay valid for the
/// configured grace period (`api_key_grace_seconds`, default 2 hours).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/api-keys/_renew", tag = "subscriptions", operation_id = "renew_api_key",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn renew_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::RenewKey, None).await
}

/// Revoke a key at once (SUBSCRIPTION[U]).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/api-keys/{key}/_revoke", tag = "subscriptions", operation_id = "revoke_api_key",
    params(("env" = String, Path), ("sid" = String, Path), ("key" = String, Path, description = "the key's id")),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke_key(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid, key_id)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let id = subscription_app(&state, &sid).await?;
    let executed = execute_app(&state, &ctx, "RevokeApiKey", id, false, |current| {
        let app = current.ok_or_else(|| ApiError::from(DomainError::SubscriptionNotFound))?;
        app.authorize(&ctx.actor, Permission::Subscription, Operation::Read)
            .map_err(|e| as_subscription_error(e.into()))?;
        app.authorize(&ctx.actor, Permission::Subscription, Operation::Update)?;
        Ok(app.revoke_api_key(&sid, &key_id)?)
    })
    .await
    .map_err(as_subscription_error)?;
    if executed.appended.is_some() {
        // The value of a revoked key is of no use to anyone: purge it.
        if let Err(e) = state.vault().delete(&key_owner(id), &key_id).await {
            tracing::warn!(error = %e, "a revoked key could not be purged from the vault");
        }
    }
    respond(&state, &ctx, &executed, &sid, StatusCode::OK).await
}

/// Whether a gateway should accept an API key now, and for what (administrators and the
/// configured gateway role). An unknown key is `valid: false`, never an error.
#[utoipa::path(post, path = "/v1/environments/{env}/api-keys/_verify", tag = "subscriptions", operation_id = "verify_api_key",
    params(("env" = String, Path)), request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn verify(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<VerifyRequest>,
) -> Result<Response, ApiError> {
    if !ctx.actor.admin && !state.is_gateway(&ctx.principal) {
        return Err(ApiError::Forbidden {
            code: "permission.gateway_only",
            message: "only administrators and gateways may verify API keys".into(),
        });
    }
    let key = body
        .key
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::invalid("key", "field.required", "key is required"))?;
    if key.len() > MAX_KEY_INPUT {
        return Err(ApiError::invalid(
            "key",
            "api_key.invalid",
            format!("a key has at most {MAX_KEY_INPUT} characters"),
        ));
    }
    let hash = appreg_secrets::lookup_hash(&SecretString::from(key));
    let mut answer = VerifyResponse {
        valid: false,
        subscription_id: None,
        application_id: None,
        api_id: None,
        plan_id: None,
        expires_at: None,
    };
    let holder = state
        .store()
        .claim_holder(&Claim {
            scope: API_KEY_SCOPE.into(),
            value: hash.clone(),
        })
        .await?;
    let id = holder
        .as_deref()
        .and_then(|h| h.strip_prefix("application-"))
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .map(ApplicationId);
    if let Some(id) = id {
        if let (Some(app), _) = load_app(&state, &ctx, id).await? {
            let now = Utc::now();
            for sub in &app.subscriptions {
                if let Some(k) = sub.api_keys.iter().find(|k| k.hash == hash) {
                    answer = VerifyResponse {
                        valid: app.status == ApplicationStatus::Active
                            && sub.status == SubscriptionStatus::Accepted
                            && k.valid_at(now),
                        subscription_id: Some(sub.id.clone()),
                        application_id: Some(app.id.0.to_string()),
                        api_id: Some(sub.api_id.clone()),
                        plan_id: Some(sub.plan_id.clone()),
                        expires_at: k.expires_at,
                    };
                }
            }
        }
    }
    metrics::counter!("appreg_api_key_verifications_total", "valid" => answer.valid.to_string())
        .increment(1);
    Ok(no_store(Json(answer).into_response()))
}
