//! The environment's queue of subscriptions awaiting a decision, for the administrators who
//! accept or reject them: `GET /subscriptions?status=PENDING`, read from the read models.

use super::*;
use crate::consistency::fresh_read_model;
use axum::http::HeaderMap;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct QueueParams {
    /// `PENDING` (required): the subscriptions awaiting an administrator's decision.
    #[param(value_type = crate::apidoc::QueueStatusName, inline, required = true)]
    pub status: Option<String>,
    /// From 1.
    #[param(minimum = 1, maximum = 1_000_000, nullable = false)]
    pub page: Option<i64>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub size: Option<i64>,
}

/// A subscription in the queue, with its application's name.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueuedSubscription {
    #[serde(flatten)]
    pub subscription: SubscriptionView,
    pub application_name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionQueue {
    pub items: Vec<QueuedSubscription>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// The environment's PENDING subscriptions of active applications, oldest request first
/// (environment administrators). Sees every write the caller saw acknowledged (send
/// `X-Consistency-Token` when writing through another api instance).
#[utoipa::path(get, path = "/v1/environments/{env}/subscriptions", tag = "subscriptions", operation_id = "list_pending_subscriptions",
    params(("env" = String, Path), QueueParams),
    responses((status = 200, body = SubscriptionQueue), (status = 403, body = Problem), (status = 422, body = Problem), (status = 503, body = Problem)))]
pub async fn queue(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    params: Result<Query<QueueParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let mut errors = FieldErrors::new();
    if params.status.as_deref() != Some(SubscriptionStatus::Pending.as_str()) {
        errors.add(
            "status",
            "status.invalid",
            "status is required and is PENDING: the queue of subscriptions awaiting a decision \
             (an application's subscriptions in any status: GET /applications/{id}/subscriptions)",
        );
    }
    let (page, size) = crate::dto::page_and_size(params.page, params.size, &mut errors);
    errors.into_result()?;
    if !ctx.actor.admin {
        return Err(ApiError::Forbidden {
            code: "permission.admin_only",
            message: "only an environment administrator may list the pending subscriptions".into(),
        });
    }
    fresh_read_model(&state, &headers).await?;
    let (rows, total) = state
        .read()
        .pending_subscriptions(ctx.environment.as_str(), size, (page - 1) * size)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for (app, sub) in &rows {
        items.push(QueuedSubscription {
            subscription: subscription_view(&state, &ctx, app, sub).await?,
            application_name: app.name.as_str().to_string(),
        });
    }
    Ok(no_store(
        Json(SubscriptionQueue {
            items,
            page,
            size,
            total,
        })
        .into_response(),
    ))
}
