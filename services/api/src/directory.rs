//! `GET /v1/environments/{env}/users`: the users seen in an environment (their first visit,
//! `UserFirstSeen`, with their token's profile), found by id or name prefix, for picking
//! members. Any user of the environment may search; e-mail addresses are shown to its
//! administrators only. What this module must never do: answer another environment's users,
//! or an unbounded list.

use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use crate::users::FirstVisit;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(first_visit.on(routes!(find_users)))
}

/// Users returned by default, and at most.
pub const USERS_LIMIT_DEFAULT: i64 = 20;
pub const USERS_LIMIT_MAX: i64 = 100;
/// Longest prefix searched for.
const MAX_Q: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UserSearchParams {
    /// Users whose id or name starts with this (case-insensitive), at most 200 characters.
    /// Absent or empty: the first users by name. No control characters.
    #[param(
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        nullable = false
    )]
    pub q: Option<String>,
    /// Users returned, 1–100 (default 20).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 100, nullable = false)]
    pub limit: Option<String>,
}

/// One user seen in the environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserSummary {
    pub id: String,
    pub name: Option<String>,
    /// Only for administrators of the environment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// By name, then id.
    pub items: Vec<UserSummary>,
}

/// Users seen in this environment whose id or name starts with `q` (e-mail for administrators).
#[utoipa::path(get, path = "/v1/environments/{env}/users", tag = "users",
    params(("env" = String, Path, description = "environment id"), UserSearchParams),
    responses((status = 200, body = UserList), (status = 422, body = Problem)))]
pub async fn find_users(
    State(state): State<AppState>,
    ctx: Ctx,
    params: Result<Query<UserSearchParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<UserList>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let mut errors = appreg_domain::FieldErrors::new();
    let q = params.q.as_deref().unwrap_or("");
    if q.chars().count() > MAX_Q || q.chars().any(char::is_control) {
        errors.add(
            "q",
            "q.invalid",
            format!("q has at most {MAX_Q} characters, no control characters"),
        );
    }
    let limit = crate::dto::limit_param(
        &mut errors,
        params.limit.as_deref(),
        USERS_LIMIT_DEFAULT,
        USERS_LIMIT_MAX,
    );
    errors.into_result()?;
    let admin = ctx.actor.admin;
    let items = state
        .read()
        .find_users(ctx.environment.as_str(), q, limit)
        .await?
        .into_iter()
        .map(|(id, name, email)| UserSummary {
            id,
            name,
            email: email.filter(|_| admin),
        })
        .collect();
    Ok(Json(UserList { items }))
}
