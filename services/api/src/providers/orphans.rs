//! `GET /client-registration-providers/{id}/suspected-orphans`: the DCR registration attempts
//! whose outcome is unknown (their answer was lost after they were sent), for an administrator
//! to look for at the provider. Read from the read model (`rm_suspected_orphans`).

use super::{admin_only, not_found};
use crate::commands::load_registry;
use crate::consistency::fresh_read_model;
use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_readmodel::orphans::SuspectedOrphan;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OrphanParams {
    /// `OPEN` (default): suspicions not cleared; `ALL`: cleared ones too.
    #[param(value_type = Option<OrphanStatusName>, inline, nullable = false)]
    pub status: Option<String>,
    /// 1-based page number.
    #[param(minimum = 1, maximum = 1_000_000, nullable = false)]
    pub page: Option<i64>,
    /// Page size, 1–100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub size: Option<i64>,
}

/// Which suspected orphans to list.
#[derive(ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum OrphanStatusName {
    Open,
    All,
}

/// A registration attempt whose outcome is unknown: the provider may hold a client created for
/// it that no application knows of. No secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuspectedOrphanView {
    pub application_id: String,
    /// Stream version of the application's registration request.
    pub request_version: i64,
    /// Which call of the provider for that request (1 for the first).
    pub attempt: i64,
    /// The `Idempotency-Key` the attempt sent.
    pub idempotency_key: String,
    /// The `client_name` it sent: what to look for at the provider.
    pub client_name: String,
    /// When it was sent and when it ended without an answer (RFC 3339): a client the provider
    /// created for it was created in between.
    pub started_at: String,
    pub ended_at: String,
    /// What went wrong.
    pub error: String,
    /// `OPEN`, or `CLEARED` (proven to be the application's own client).
    pub status: String,
    /// For a cleared suspicion: the client it was proven to be.
    pub cleared_client_id: Option<String>,
}

impl From<SuspectedOrphan> for SuspectedOrphanView {
    fn from(o: SuspectedOrphan) -> Self {
        SuspectedOrphanView {
            application_id: o.application_id,
            request_version: o.request_version,
            attempt: o.attempt,
            idempotency_key: o.idempotency_key,
            client_name: o.client_name,
            started_at: o.started_at,
            ended_at: o.ended_at,
            error: o.error,
            status: o.status,
            cleared_client_id: o.cleared_client_id,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SuspectedOrphanPage {
    pub provider_id: String,
    pub items: Vec<SuspectedOrphanView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

/// A provider's suspected orphans (environment administrators), oldest attempt first.
#[utoipa::path(get, path = "/v1/environments/{env}/client-registration-providers/{id}/suspected-orphans", tag = "providers", operation_id = "list_suspected_orphans",
    params(("env" = String, Path, description = "environment id"), ("id" = String, Path, description = "provider id"), OrphanParams),
    responses((status = 200, body = SuspectedOrphanPage), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<OrphanParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SuspectedOrphanPage>, ApiError> {
    admin_only(&ctx)?;
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let mut errors = appreg_domain::FieldErrors::new();
    let status = params.status.as_deref().unwrap_or("OPEN");
    if status != "OPEN" && status != "ALL" {
        errors.add("status", "status.invalid", "status is OPEN or ALL");
    }
    let (page, size) = crate::dto::page_and_size(params.page, params.size, &mut errors);
    errors.into_result()?;
    let (registry, _) = load_registry(&state, &ctx.environment).await?;
    if !registry.providers.contains_key(&id) {
        return Err(not_found());
    }
    fresh_read_model(&state, &headers).await?;
    let (rows, total) = state
        .read()
        .suspected_orphans(
            ctx.environment.as_str(),
            &id,
            status == "ALL",
            size,
            (page - 1) * size,
        )
        .await?;
    Ok(Json(SuspectedOrphanPage {
        provider_id: id,
        items: rows.into_iter().map(SuspectedOrphanView::from).collect(),
        page,
        size,
        total,
    }))
}
