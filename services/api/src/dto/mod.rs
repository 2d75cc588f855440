//! What the resources share at the edge: the application view (applications, members, the
//! CLI), history entries, the paging parameters (catalogue, subscriptions), the length rule of
//! text fields, and the application id of a path.
//!
//! Layout: `views` the shared response bodies; this file the helpers.

use crate::error::ApiError;
use crate::extract::Ctx;
use crate::state::AppState;
use appreg_domain::permissions::grants;
use appreg_domain::{Actor, Application, ApplicationId, FieldErrors, Permission};
use axum::extract::Query;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

mod views;

pub use views::*;

/// Whether `value` has more than `max` characters as sent, reported on `field` with the code the
/// domain gives the field. The domain counts a trimmed value; the document's `maxLength` counts
/// what is sent, and the edge holds to it, so that a value the document refuses is refused.
pub(crate) fn too_long(
    errors: &mut FieldErrors,
    field: &str,
    code: &'static str,
    value: &str,
    max: usize,
) -> bool {
    let long = value.chars().count() > max;
    if long {
        errors.add(field, code, format!("{field} has at most {max} characters"));
    }
    long
}

/// The application id of a path: one that is not a UUID names no application (404).
pub(crate) fn parse_app_id(raw: &str) -> Result<ApplicationId, ApiError> {
    Uuid::parse_str(raw)
        .map(ApplicationId)
        .map_err(|_| app_not_found())
}

pub(crate) fn app_not_found() -> ApiError {
    ApiError::not_found("application.not_found", "no such application")
}

/// The caller's view of an application, with the primary owner's name.
pub(crate) async fn view(
    state: &AppState,
    ctx: &Ctx,
    app: &Application,
) -> Result<ApplicationView, ApiError> {
    let mut view = ApplicationView::new(app, &ctx.actor);
    if let Some(owner) = view.owner.as_mut() {
        owner.name = if owner.id == ctx.actor.user.as_str() {
            // The caller's own name is in their token: no read needed.
            ctx.principal.name.clone()
        } else {
            crate::personal::profile(state, ctx.environment.as_str(), &owner.id)
                .await?
                .0
        };
    }
    Ok(view)
}

/// A `limit` query parameter: `default` when absent, else 1 to `max`; anything else is added to
/// `errors` (naming `limit`) and `default` returned.
pub(crate) fn limit_param(
    errors: &mut FieldErrors,
    raw: Option<&str>,
    default: i64,
    max: i64,
) -> i64 {
    match raw.map(str::parse::<i64>) {
        None => default,
        Some(Ok(l)) if (1..=max).contains(&l) => l,
        Some(_) => {
            errors.add(
                "limit",
                "limit.invalid",
                format!("limit is between 1 and {max}"),
            );
            default
        }
    }
}

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
    let mut errors = FieldErrors::new();
    let paged = page_and_size(params.page, params.size, &mut errors);
    errors.into_result()?;
    Ok(paged)
}

/// `page` (default 1, at most 1,000,000) and `size` (default 20, 1 to 100), each error added to
/// `errors` under its field.
pub(crate) fn page_and_size(
    page: Option<i64>,
    size: Option<i64>,
    errors: &mut FieldErrors,
) -> (i64, i64) {
    let page = page.unwrap_or(1);
    let size = size.unwrap_or(20);
    if !(1..=1_000_000).contains(&page) {
        errors.add("page", "page.invalid", "page starts at 1");
    }
    if !(1..=100).contains(&size) {
        errors.add("size", "size.invalid", "size is between 1 and 100");
    }
    (page, size)
}
