//! Subscriptions of an application to API plans, and the issue of their API keys. Subscriptions
//! live in the application's stream, so every command here is an application command
//! (optimistic concurrency on the application).
//!
//! `/subscriptions/{sid}` and `POST /api-keys/_verify` find the application through the event
//! store's claims (a subscription id, a key's SHA-256), which are written in the same
//! transaction as the events: a key revoked a moment ago is refused at once, whatever the read
//! models' lag. Key values are generated here, sealed in the vault before the events that name
//! them are appended, and never logged.
//!
//! Layout: this file holds the key generation and the helpers the endpoints share (among
//! them `transition`, the status changes and key renewal, which `crate::api_keys` uses too);
//! `bodies` the request and response bodies, `handlers` the subscription endpoints, `queue`
//! the environment's queue of pending subscriptions.

use crate::commands::load_catalogue;
use crate::commands::{execute_app, load_app, Executed};
use crate::consistency::with_token;
use crate::dto::{app_not_found as not_found, paging, parse_app_id, too_long, PageParams};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_domain::subscription::{
    NewApiKey, Subscription, SubscriptionStatus, MAX_REASON, SUBSCRIPTION_SCOPE,
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
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// Keys are `apk_` and 43 characters of base64url (32 random bytes); the prefix shown to those
/// who may not see a key is its first 12 characters.
const KEY_PREFIX: &str = "apk_";
const SHOWN_PREFIX: usize = 12;

mod bodies;
mod handlers;
mod queue;

pub use bodies::*;
use handlers::*;
use queue::*;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(list, subscribe)))
        .routes(first_visit.on(routes!(get)))
        .routes(first_visit.on(routes!(queue)))
        .routes(first_visit.on(routes!(accept)))
        .routes(first_visit.on(routes!(reject)))
        .routes(first_visit.on(routes!(pause)))
        .routes(first_visit.on(routes!(resume)))
        .routes(first_visit.on(routes!(close)))
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
pub(crate) async fn subscription_app(
    state: &AppState,
    sid: &str,
) -> Result<ApplicationId, ApiError> {
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
pub(crate) fn as_subscription_error(e: ApiError) -> ApiError {
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
pub(crate) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

pub(crate) async fn respond(
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

/// What a subscription command may do, and who may.
#[derive(Clone, Copy)]
pub(crate) enum Transition {
    Accept,
    Reject,
    Pause,
    Resume,
    Close,
    RenewKey,
}

pub(crate) async fn transition(
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
