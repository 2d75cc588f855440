//! An endpoint's delivery log and manual retry: `GET …/webhooks/{wid}/deliveries` and
//! `POST …/deliveries/{did}/_retry`, for whoever manages the endpoint (the environment's
//! administrators, or DEFINITION[U] on its application). The rows are the notifier's
//! (`appreg_notify::deliveries`); a retry only schedules one, the notifier sends it.

use super::{load_webhooks, scope};
use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_domain::DomainError;
use appreg_eventstore::StoreError;
use appreg_notify::deliveries::{self, Delivery};
use axum::extract::{Path, Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

const LIMIT_DEFAULT: i64 = 50;
const LIMIT_MAX: i64 = 100;
/// The longest delivery id looked up (they are `msg_` + 32 hex digits).
const MAX_ID: usize = 64;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    /// Only the deliveries after this one (its id: a page's `next_after`).
    #[param(max_length = 64, nullable = false)]
    pub after: Option<String>,
    /// 1–100 (default 50).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, nullable = false)]
    pub limit: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// The `webhook-id` the receiver saw (the same on every attempt).
    pub id: String,
    pub event_id: String,
    pub event_type: String,
    /// Attempts made so far.
    pub attempt: i32,
    /// PENDING, DELIVERED or FAILED.
    pub status: String,
    /// The receiver's last answer (null: none, or it did not answer in time).
    pub response_status: Option<i32>,
    /// Its first 1,024 bytes.
    pub response_body: Option<String>,
    /// When the delivery last changed.
    pub at: DateTime<Utc>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// The next attempt, while PENDING.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<DeliveryView>,
    /// The `after` of the next page; null when this one is not full.
    pub next_after: Option<String>,
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        DeliveryView {
            next_attempt_at: (d.status == "PENDING").then(|| time(d.next_attempt_at)),
            id: d.id,
            event_id: d.event_id,
            event_type: d.event_type,
            attempt: d.attempt,
            status: d.status,
            response_status: d.response_status,
            response_body: d.response_body,
            at: time(d.updated_at),
            created_at: time(d.created_at),
        }
    }
}

fn database(e: sqlx::Error) -> ApiError {
    StoreError::Database(e).into()
}

/// The endpoint `wid` of the request's scope, once the caller may manage it.
async fn endpoint(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    wid: &str,
) -> Result<(), ApiError> {
    let scope = scope(state, ctx, app).await?;
    let registry = load_webhooks(state, ctx).await?;
    registry
        .get(wid, &scope)
        .map(|_| ())
        .ok_or_else(|| DomainError::WebhookNotFound.into())
}

async fn page(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    wid: &str,
    params: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let mut errors = appreg_domain::FieldErrors::new();
    let limit = crate::dto::limit_param(
        &mut errors,
        params.limit.as_deref(),
        LIMIT_DEFAULT,
        LIMIT_MAX,
    );
    if params.after.as_ref().is_some_and(|a| a.len() > MAX_ID) {
        errors.add("after", "after.invalid", "after is a delivery id");
    }
    errors.into_result()?;
    endpoint(state, ctx, app, wid).await?;
    let db = state.read().database();
    let items = deliveries::list(db, wid, params.after.as_deref(), limit)
        .await
        .map_err(database)?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|d| d.id.clone()))
        .flatten();
    Ok(Json(DeliveryPage {
        items: items.into_iter().map(DeliveryView::from).collect(),
        next_after,
    }))
}

async fn retry(
    state: &AppState,
    ctx: &Ctx,
    app: Option<&str>,
    wid: &str,
    did: &str,
) -> Result<Json<DeliveryView>, ApiError> {
    endpoint(state, ctx, app, wid).await?;
    let missing = || ApiError::not_found("delivery.not_found", "no such delivery");
    if did.len() > MAX_ID {
        return Err(missing());
    }
    let db = state.read().database();
    let now = chrono::Utc::now().timestamp_millis();
    if !deliveries::retry(db, wid, did, now)
        .await
        .map_err(database)?
    {
        return Err(missing());
    }
    let delivery = deliveries::get(db, wid, did)
        .await
        .map_err(database)?
        .ok_or_else(missing)?;
    Ok(Json(DeliveryView::from(delivery)))
}

/// An environment endpoint's deliveries, oldest first (its administrators).
#[utoipa::path(get, path = "/v1/environments/{env}/webhooks/{wid}/deliveries", tag = "webhooks", operation_id = "list_webhook_deliveries",
    params(("env" = String, Path), ("wid" = String, Path), DeliveryParams),
    responses((status = 200, body = DeliveryPage), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list_environment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, wid)): Path<(String, String)>,
    params: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    page(&state, &ctx, None, &wid, params).await
}

/// Send a delivery again, now (its administrators): PENDING until the notifier's next attempt.
#[utoipa::path(post, path = "/v1/environments/{env}/webhooks/{wid}/deliveries/{did}/_retry", tag = "webhooks", operation_id = "retry_webhook_delivery",
    params(("env" = String, Path), ("wid" = String, Path), ("did" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn retry_environment(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, wid, did)): Path<(String, String, String)>,
) -> Result<Json<DeliveryView>, ApiError> {
    retry(&state, &ctx, None, &wid, &did).await
}

/// An application endpoint's deliveries, oldest first (DEFINITION[U]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/webhooks/{wid}/deliveries", tag = "webhooks", operation_id = "list_application_webhook_deliveries",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("wid" = String, Path), DeliveryParams),
    responses((status = 200, body = DeliveryPage), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, wid)): Path<(String, String, String)>,
    params: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeliveryPage>, ApiError> {
    page(&state, &ctx, Some(&id), &wid, params).await
}

/// Send an application endpoint's delivery again, now (DEFINITION[U]).
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/webhooks/{wid}/deliveries/{did}/_retry", tag = "webhooks", operation_id = "retry_application_webhook_delivery",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), ("wid" = String, Path), ("did" = String, Path)),
    responses((status = 200, body = DeliveryView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn retry_application(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id, wid, did)): Path<(String, String, String, String)>,
) -> Result<Json<DeliveryView>, ApiError> {
    retry(&state, &ctx, Some(&id), &wid, &did).await
}
