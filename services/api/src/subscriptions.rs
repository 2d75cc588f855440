//! Subscriptions of an application to API plans, their API keys, the gateway's key check and
//! the members' notification settings. Subscriptions live in the application's stream, so every
//! command here is an application command (optimistic concurrency on the application).
//!
//! `/subscriptions/{sid}` and `POST /api-keys/_verify` find the application through the event
//! store's claims (a subscription id, a key's SHA-256), which are written in the same
//! transaction as the events: a key revoked a moment ago is refused at once, whatever the read
//! models' lag. Key values are generated here, sealed in the vault before the events that name
//! them are appended, and never logged.

use crate::commands::{execute_app, load_app, Executed};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::routes::{not_found, parse_app_id, with_token};
use crate::state::AppState;
use appreg_domain::subscription::{
    parse_email, Hook, NewApiKey, Subscription, SubscriptionStatus, API_KEY_SCOPE, MAX_EMAIL,
    MAX_REASON, SUBSCRIPTION_SCOPE,
};
use appreg_domain::{
    Application, ApplicationId, ApplicationStatus, DomainError, FieldErrors, Operation, Permission,
};
use appreg_eventstore::Claim;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::{IntoParams, ToSchema};

/// Keys are `apk_` and 43 characters of base64url (32 random bytes); the prefix shown to those
/// who may not see a key is its first 12 characters.
const KEY_PREFIX: &str = "apk_";
const SHOWN_PREFIX: usize = 12;
const MAX_KEY_INPUT: usize = 256;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageParams {
    /// From 1.
    #[param(minimum = 1, maximum = 1_000_000, nullable = false)]
    pub page: Option<i64>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub size: Option<i64>,
}

/// Validated paging parameters.
pub(crate) fn paging(
    params: Result<Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<(i64, i64), ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let page = params.page.unwrap_or(1);
    let size = params.size.unwrap_or(20);
    let mut errors = FieldErrors::new();
    if !(1..=1_000_000).contains(&page) {
        errors.add("page", "page.invalid", "page starts at 1");
    }
    if !(1..=100).contains(&size) {
        errors.add("size", "size.invalid", "size is between 1 and 100");
    }
    errors.into_result()?;
    Ok((page, size))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    #[schema(value_type = String, required = true)]
    pub plan_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Shown to the application's members (at most 1,000 characters, no control characters but
    /// line feeds).
    #[schema(
        max_length = 1000,
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*(?:[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x09\x0B-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?)?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// At most 256 bytes.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 256)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// SUBSCRIPTION_ACCEPTED, SUBSCRIPTION_REJECTED, SUBSCRIPTION_CLOSED, SUBSCRIPTION_PAUSED,
    /// SUBSCRIPTION_RESUMED, API_KEY_EXPIRING; empty: no notification.
    #[schema(value_type = Option<Vec<crate::apidoc::HookName>>, inline, max_items = 12)]
    pub hooks: Option<Vec<String>>,
    /// Where to send them (required with hooks): `local@domain.tld`, at most 254 bytes.
    #[schema(
        max_length = 254,
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@]+@[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@.][^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@]*\.[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@.][\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    /// The whole key: only for members with SUBSCRIPTION[U], and only while it is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub application_id: String,
    pub api_id: String,
    pub plan_id: String,
    /// KEYLESS, API_KEY, JWT or OAUTH2 (the plan's, at subscription time).
    pub security: String,
    /// PENDING, ACCEPTED, REJECTED, PAUSED or CLOSED.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub api_keys: Vec<ApiKeyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub items: Vec<SubscriptionView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
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

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub user: String,
    pub hooks: Vec<String>,
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationView>,
}

/// The vault owner of an application's API keys (one secret per key id).
pub fn key_owner(id: ApplicationId) -> String {
    appreg_secrets::store::api_key_owner(id.0)
}

/// A new key: its value (for the vault) and what the events record of it.
fn generate_key() -> (NewApiKey, SecretString) {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let value = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let key = NewApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        prefix: value[..SHOWN_PREFIX].to_string(),
        hash: appreg_secrets::lookup_hash(&SecretString::from(value.clone())),
    };
    (key, SecretString::from(value))
}

/// Runs an application command that may issue `key`: the key is sealed in the vault before the
/// append (a key is never valid without its stored value), and removed again if the decision
/// did not issue it or the command failed.
async fn execute_with_key<F>(
    state: &AppState,
    ctx: &Ctx,
    command: &'static str,
    id: ApplicationId,
    key: Option<(&NewApiKey, &SecretString)>,
    decide: F,
) -> Result<Executed, ApiError>
where
    F: FnMut(Option<&Application>) -> Result<Vec<appreg_domain::ApplicationEvent>, ApiError>,
{
    let owner = key_owner(id);
    if let Some((key, value)) = key {
        state.vault().put(&owner, &key.id, value).await?;
    }
    let result = execute_app(state, ctx, command, id, false, decide).await;
    if let Some((key, _)) = key {
        let issued = result.as_ref().is_ok_and(|x| {
            x.appended.is_some()
                && x.app
                    .subscriptions
                    .iter()
                    .any(|s| s.api_keys.iter().any(|k| k.id == key.id))
        });
        if !issued {
            if let Err(e) = state.vault().delete(&owner, &key.id).await {
                tracing::warn!(error = %e, "an unused API key could not be removed from the vault");
            }
        }
    }
    result
}

/// The application holding a subscription (by its claim), if it is in the caller's environment.
async fn subscription_app(state: &AppState, sid: &str) -> Result<ApplicationId, ApiError> {
    let missing = || ApiError::from(DomainError::SubscriptionNotFound);
    if sid.is_empty() || sid.len() > 100 {
        return Err(missing());
    }
    let holder = state
        .store()
        .claim_holder(&Claim {
            scope: SUBSCRIPTION_SCOPE.into(),
            value: sid.to_string(),
        })
        .await?
        .ok_or_else(missing)?;
    holder
        .strip_prefix("application-")
        .and_then(|u| uuid::Uuid::parse_str(u).ok())
        .map(ApplicationId)
        .ok_or_else(missing)
}

/// An application-not-found from a subscription route is a subscription-not-found.
fn as_subscription_error(e: ApiError) -> ApiError {
    match e {
        ApiError::NotFound {
            code: "application.not_found",
            ..
        } => DomainError::SubscriptionNotFound.into(),
        other => other,
    }
}

async fn subscription_view(
    state: &AppState,
    ctx: &Ctx,
    app: &Application,
    sub: &Subscription,
) -> Result<SubscriptionView, ApiError> {
    let full = app
        .authorize(&ctx.actor, Permission::Subscription, Operation::Update)
        .is_ok();
    let now = Utc::now();
    let mut keys = Vec::with_capacity(sub.api_keys.len());
    for k in &sub.api_keys {
        let key = if full && k.valid_at(now) && app.status == ApplicationStatus::Active {
            state
                .vault()
                .get(&key_owner(app.id), &k.id)
                .await?
                .map(|v| v.expose_secret().to_string())
        } else {
            None
        };
        keys.push(ApiKeyView {
            id: k.id.clone(),
            key,
            prefix: k.prefix.clone(),
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
        });
    }
    Ok(SubscriptionView {
        id: sub.id.clone(),
        application_id: app.id.0.to_string(),
        api_id: sub.api_id.clone(),
        plan_id: sub.plan_id.clone(),
        security: serde_json::to_value(sub.security)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        status: sub.status.as_str().to_string(),
        reason: sub.reason.clone(),
        created_at: sub.created_at,
        updated_at: sub.updated_at,
        api_keys: keys,
    })
}

/// A response carrying key values is never cached.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn respond(
    state: &AppState,
    ctx: &Ctx,
    executed: &Executed,
    sid: &str,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let sub = executed
        .app
        .subscription(sid)
        .ok_or_else(|| ApiError::from(DomainError::SubscriptionNotFound))?;
    let view = subscription_view(state, ctx, &executed.app, sub).await?;
    Ok(with_token(
        no_store((status, Json(view)).into_response()),
        executed.appended.as_ref(),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionListParams {
    /// Only the subscriptions in this status.
    #[param(value_type = Option<crate::apidoc::SubscriptionStatusName>, inline, nullable = false)]
    pub status: Option<String>,
    /// From 1.
    #[param(minimum = 1, maximum = 1_000_000, nullable = false)]
    pub page: Option<i64>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub size: Option<i64>,
}

/// The application's subscriptions, oldest first (SUBSCRIPTION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/subscriptions", tag = "subscriptions", operation_id = "list_subscriptions",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), SubscriptionListParams),
    responses((status = 200, body = SubscriptionList), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<SubscriptionListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let (page, size) = paging(Ok(Query(PageParams {
        page: params.page,
        size: params.size,
    })))?;
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => Some(
            [
                SubscriptionStatus::Pending,
                SubscriptionStatus::Accepted,
                SubscriptionStatus::Rejected,
                SubscriptionStatus::Paused,
                SubscriptionStatus::Closed,
            ]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "status.invalid",
                    "status is PENDING, ACCEPTED, REJECTED, PAUSED or CLOSED",
                )
            })?,
        ),
    };
    let id = parse_app_id(&id)?;
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(not_found)?;
    app.authorize(&ctx.actor, Permission::Subscription, Operation::Read)?;
    let matching: Vec<&Subscription> = app
        .subscriptions
        .iter()
        .filter(|s| status.is_none_or(|st| s.status == st))
        .collect();
    let mut items = Vec::new();
    for sub in matching
        .iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
    {
        items.push(subscription_view(&state, &ctx, &app, sub).await?);
    }
    Ok(no_store(
        Json(SubscriptionList {
            items,
            page,
            size,
            total: matching.len() as i64,
        })
        .into_response(),
    ))
}

/// Subscribe the application to a plan (SUBSCRIPTION[C]). An AUTO plan is accepted at once,
/// with a key for an API_KEY plan.
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/subscriptions", tag = "subscriptions", operation_id = "subscribe",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)), request_body = SubscribeRequest,
    responses((status = 201, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn subscribe(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SubscribeRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let plan_id = body
        .plan_id
        .ok_or_else(|| ApiError::invalid("plan_id", "field.required", "plan_id is required"))?;
    let (catalogue, _) = crate::catalogue::load_catalogue(&state, ctx.environment.as_str()).await?;
    let plan = catalogue
        .plan(&plan_id)
        .cloned()
        .ok_or(DomainError::PlanNotFound)?;
    let sid = uuid::Uuid::now_v7().to_string();
    let (key, value) = generate_key();
    let may_issue = plan.security == appreg_domain::catalogue::PlanSecurity::ApiKey
        && plan.validation == appreg_domain::catalogue::PlanValidation::Auto;
    let executed = execute_with_key(
        &state,
        &ctx,
        "Subscribe",
        id,
        may_issue.then_some((&key, &value)),
        |current| {
            let app = current.ok_or_else(not_found)?;
            app.authorize(&ctx.actor, Permission::Subscription, Operation::Create)?;
            Ok(app.subscribe(sid.clone(), &plan, &key)?)
        },
    )
    .await?;
    respond(&state, &ctx, &executed, &sid, StatusCode::CREATED).await
}

/// A subscription (SUBSCRIPTION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/subscriptions/{sid}", tag = "subscriptions", operation_id = "get_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = subscription_app(&state, &sid).await?;
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(|| ApiError::from(DomainError::SubscriptionNotFound))?;
    app.authorize(&ctx.actor, Permission::Subscription, Operation::Read)
        .map_err(|e| as_subscription_error(e.into()))?;
    let sub = app
        .subscription(&sid)
        .ok_or(DomainError::SubscriptionNotFound)?;
    let view = subscription_view(&state, &ctx, &app, sub).await?;
    Ok(no_store(Json(view).into_response()))
}

/// What a subscription command may do, and who may.
#[derive(Clone, Copy)]
enum Transition {
    Accept,
    Reject,
    Pause,
    Resume,
    Close,
    RenewKey,
}

async fn transition(
    state: &AppState,
    ctx: &Ctx,
    sid: &str,
    what: Transition,
    reason: Option<String>,
) -> Result<Response, ApiError> {
    let id = subscription_app(state, sid).await?;
    let issues = matches!(what, Transition::Accept | Transition::RenewKey);
    let (key, value) = generate_key();
    let grace = state.api_key_grace();
    let name = match what {
        Transition::Accept => "AcceptSubscription",
        Transition::Reject => "RejectSubscription",
        Transition::Pause => "PauseSubscription",
        Transition::Resume => "ResumeSubscription",
        Transition::Close => "CloseSubscription",
        Transition::RenewKey => "RenewApiKey",
    };
    let executed = execute_with_key(
        state,
        ctx,
        name,
        id,
        issues.then_some((&key, &value)),
        |current| {
            let app = current.ok_or_else(|| ApiError::from(DomainError::SubscriptionNotFound))?;
            // Whoever cannot see the application cannot see its subscriptions.
            app.authorize(&ctx.actor, Permission::Subscription, Operation::Read)
                .map_err(|e| as_subscription_error(e.into()))?;
            match what {
                Transition::Accept
                | Transition::Reject
                | Transition::Pause
                | Transition::Resume => {
                    if !ctx.actor.admin {
                        return Err(DomainError::AdminOnly.into());
                    }
                }
                Transition::Close => {
                    app.authorize(&ctx.actor, Permission::Subscription, Operation::Delete)?
                }
                Transition::RenewKey => {
                    app.authorize(&ctx.actor, Permission::Subscription, Operation::Update)?
                }
            }
            Ok(match what {
                Transition::Accept => app.accept_subscription(sid, &key)?,
                Transition::Reject => app.reject_subscription(sid, reason.as_deref())?,
                Transition::Pause => app.pause_subscription(sid)?,
                Transition::Resume => app.resume_subscription(sid)?,
                Transition::Close => app.close_subscription(sid)?,
                Transition::RenewKey => {
                    app.renew_api_key(sid, &key, crate::commands::now(), grace)?
                }
            })
        },
    )
    .await
    .map_err(as_subscription_error)?;
    respond(state, ctx, &executed, sid, StatusCode::OK).await
}

/// Accept a pending subscription (administrators); an API_KEY plan's key is issued.
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_accept", tag = "subscriptions", operation_id = "accept_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn accept(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Accept, None).await
}

/// Reject a pending subscription, with an optional reason (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_reject", tag = "subscriptions", operation_id = "reject_subscription",
    params(("env" = String, Path), ("sid" = String, Path)), request_body(content = RejectRequest, description = "optional"),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn reject(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none, or `{reason}`.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        crate::extract::parse_json::<RejectRequest>(&body)?.reason
    };
    let mut errors = FieldErrors::new();
    if let Some(reason) = &reason {
        crate::dto::too_long(
            &mut errors,
            "reason",
            "subscription.reason.invalid",
            reason,
            MAX_REASON,
        );
    }
    errors.into_result()?;
    transition(&state, &ctx, &sid, Transition::Reject, reason).await
}

/// Pause an accepted subscription (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_pause", tag = "subscriptions", operation_id = "pause_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn pause(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Pause, None).await
}

/// Resume a paused subscription (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_resume", tag = "subscriptions", operation_id = "resume_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resume(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Resume, None).await
}

/// Close an accepted or paused subscription (SUBSCRIPTION[D] or administrators); its keys are
/// revoked.
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_close", tag = "subscriptions", operation_id = "close_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn close(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Close, None).await
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

fn notification_list(app: &Application) -> NotificationList {
    NotificationList {
        items: app
            .notifications
            .iter()
            .map(|(user, n)| NotificationView {
                user: user.to_string(),
                hooks: n.hooks.iter().map(|h| h.as_str().to_string()).collect(),
                email: n.email.clone(),
            })
            .collect(),
    }
}

/// The members' notification settings (NOTIFICATION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/notifications", tag = "notifications",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)),
    responses((status = 200, body = NotificationList), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get_notifications(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
) -> Result<Json<NotificationList>, ApiError> {
    let id = parse_app_id(&id)?;
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(not_found)?;
    app.authorize(&ctx.actor, Permission::Notification, Operation::Read)?;
    Ok(Json(notification_list(&app)))
}

/// Set the caller's notification settings (NOTIFICATION[U]); no hooks removes them.
#[utoipa::path(put, path = "/v1/environments/{env}/applications/{id}/notifications", tag = "notifications",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)), request_body = NotificationRequest,
    responses((status = 200, body = NotificationList), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn put_notifications(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<NotificationRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let mut errors = FieldErrors::new();
    let raw = body.hooks.unwrap_or_default();
    if raw.len() > Hook::ALL.len() * 2 {
        errors.add("hooks", "notification.hooks.limit", "too many hooks");
    }
    let mut hooks = BTreeSet::new();
    for (i, h) in raw.iter().enumerate() {
        if let Some(h) = errors.take(&format!("hooks[{i}]"), Hook::parse(h)) {
            hooks.insert(h);
        }
    }
    let email = match body.email {
        Some(e)
            if crate::dto::too_long(
                &mut errors,
                "email",
                "notification.email.invalid",
                &e,
                MAX_EMAIL,
            ) =>
        {
            None
        }
        Some(e) => errors.take("email", parse_email(&e)),
        None => None,
    };
    errors.into_result()?;
    let executed = execute_app(
        &state,
        &ctx,
        "UpdateNotificationSettings",
        id,
        false,
        |current| {
            let app = current.ok_or_else(not_found)?;
            app.authorize(&ctx.actor, Permission::Notification, Operation::Update)?;
            Ok(app.update_notifications(ctx.actor.user.clone(), hooks.clone(), email.clone())?)
        },
    )
    .await?;
    Ok(with_token(
        Json(notification_list(&executed.app)).into_response(),
        executed.appended.as_ref(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hashed() {
        let (a, va) = generate_key();
        let (b, vb) = generate_key();
        assert_ne!(va.expose_secret(), vb.expose_secret());
        assert_eq!(va.expose_secret().len(), KEY_PREFIX.len() + 43);
        assert!(va.expose_secret().starts_with(&a.prefix));
        assert_eq!(a.hash.len(), 64);
        assert_ne!(a.hash, b.hash);
        assert!(!a.hash.contains(va.expose_secret()));
    }
}
