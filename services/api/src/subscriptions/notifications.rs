//! The members' notification settings of an application.

use super::*;

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
