//! An application's history: its audit trail, page by page.

use super::HistoryPage;
use crate::commands::load_app;
use crate::dto::{app_not_found as not_found, parse_app_id, HistoryEntry};
use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use crate::visibility::may_read_app_event;
use appreg_domain::{Operation, Permission};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Deserialize;
use utoipa::IntoParams;

/// Events read per history page by default, and at most.
pub const HISTORY_LIMIT_DEFAULT: i64 = 100;
pub const HISTORY_LIMIT_MAX: i64 = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Only the events after this version (default 0: from the first); a page's
    /// `next_after_version` gives the next page.
    #[param(value_type = Option<i64>, minimum = 0, nullable = false)]
    pub after_version: Option<String>,
    /// Events examined per page, 1–1000 (default 100). Events the caller may not read are
    /// skipped, so a page may hold fewer.
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<String>,
}

impl HistoryParams {
    /// (after_version, limit), or a 422 naming each bad field.
    fn parse(&self) -> Result<(i64, i64), ApiError> {
        let mut errors = appreg_domain::FieldErrors::new();
        let after = match self.after_version.as_deref().map(str::parse::<i64>) {
            None => 0,
            Some(Ok(v)) if v >= 0 => v,
            Some(_) => {
                errors.add(
                    "after_version",
                    "after_version.invalid",
                    "after_version is a version, 0 or more",
                );
                0
            }
        };
        let limit = crate::dto::limit_param(
            &mut errors,
            self.limit.as_deref(),
            HISTORY_LIMIT_DEFAULT,
            HISTORY_LIMIT_MAX,
        );
        errors.into_result()?;
        Ok((after, limit))
    }
}

/// A page of an application's events, oldest first (DEFINITION[R]): those after `after_version`
/// among the next `limit`, filtered like `GET /events` (a member reads what their role may read:
/// notification settings need NOTIFICATION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/history", tag = "applications",
    params(("env" = String, Path, description = "environment id"), ("id" = Uuid, Path, description = "application id"), HistoryParams),
    responses((status = 200, body = HistoryPage), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn history(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<HistoryPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let (after_version, limit) = params.parse()?;
    let id = parse_app_id(&id)?;
    let (current, _) = load_app(&state, &ctx, id).await?;
    let current = current.ok_or_else(not_found)?;
    current.authorize(&ctx.actor, Permission::Definition, Operation::Read)?;
    let role = current.role_of(&ctx.actor.user);
    // One more than the page, to tell whether anything follows it.
    let mut events = state
        .store()
        .read_stream(&id.stream_id(), after_version, limit + 1)
        .await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_after_version = if more {
        events.last().map(|e| e.version)
    } else {
        None
    };
    let mut items: Vec<HistoryEntry> = events
        .iter()
        .filter(|e| may_read_app_event(&ctx.actor, role, &e.event_type))
        .map(HistoryEntry::from_event)
        .collect();
    // Personal fields opened for this reader (or `erased: true`).
    for item in &mut items {
        crate::personal::reveal_payload(&state, &item.event_type, &mut item.data).await?;
    }
    Ok(Json(HistoryPage {
        items,
        next_after_version,
    }))
}
