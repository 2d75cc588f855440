//! `/applications/{id}/notifications`: the members' notification settings of an application.

use crate::commands::{execute_app, load_app};
use crate::consistency::with_token;
use crate::dto::{app_not_found as not_found, parse_app_id, too_long};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_domain::subscription::{parse_email, Hook, MAX_EMAIL};
use appreg_domain::{Application, FieldErrors, Operation, Permission};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(first_visit.on(routes!(get_notifications, put_notifications)))
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
pub struct NotificationView {
    pub user: String,
    pub hooks: Vec<String>,
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationView>,
}

/// The settings with their addresses opened (a setting whose member was erased is left out:
/// the erasure deletes it).
async fn notification_list(
    state: &AppState,
    app: &Application,
) -> Result<NotificationList, ApiError> {
    let mut items = Vec::with_capacity(app.notifications.len());
    for (user, n) in &app.notifications {
        let stored = n.email.as_str();
        let Ok(Some(email)) =
            crate::personal::open(state, user.as_str(), crate::personal::EMAIL, Some(stored))
                .await?
        else {
            continue;
        };
        items.push(NotificationView {
            user: user.to_string(),
            hooks: n.hooks.iter().map(|h| h.as_str().to_string()).collect(),
            email,
        });
    }
    Ok(NotificationList { items })
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
    Ok(Json(notification_list(&state, &app).await?))
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
            if too_long(
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
    // Sealed with the caller's data key; without hooks the address is not kept at all.
    let email = match email {
        Some(e) if !hooks.is_empty() => {
            Some(crate::personal::seal(&state, &ctx.actor.user, crate::personal::EMAIL, &e).await?)
        }
        _ => None,
    };
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
        Json(notification_list(&state, &executed.app).await?).into_response(),
        executed.appended.as_ref(),
    ))
}
