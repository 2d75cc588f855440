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
    let items = search(&state, ctx.environment.as_str(), q, limit)
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

/// Users of the environment examined for a name match at most (names are sealed in the read
/// model, so the match is made here, on opened names).
pub const USERS_SCAN_MAX: i64 = 5000;
const SCAN_PAGE: i64 = 500;

type Found = (String, Option<String>, Option<String>);

/// The users whose id (any of the environment's, through the index) or name (among the first
/// [`USERS_SCAN_MAX`] by id) starts with `q`, case aside, by name then id, at most `limit`;
/// their profile opened.
async fn search(state: &AppState, env: &str, q: &str, limit: i64) -> Result<Vec<Found>, ApiError> {
    let prefix = q.to_lowercase();
    let mut found: std::collections::BTreeMap<String, Found> = Default::default();
    let open = |id: String, name: Option<String>, email: Option<String>| async move {
        use crate::personal::{open, EMAIL, NAME};
        let name = open(state, &id, NAME, name.as_deref())
            .await?
            .unwrap_or(None);
        let email = open(state, &id, EMAIL, email.as_deref())
            .await?
            .unwrap_or(None);
        Ok::<Found, ApiError>((id, name, email))
    };
    for (id, name, email) in state.read().find_users(env, q, limit).await? {
        if id.to_lowercase().starts_with(&prefix) {
            let row = open(id.clone(), name, email).await?;
            found.insert(id, row);
        }
    }
    let mut after = String::new();
    let mut scanned = 0;
    while scanned < USERS_SCAN_MAX {
        let page = state.read().users_after(env, &after, SCAN_PAGE).await?;
        let n = page.len() as i64;
        // Their keys in one read (the cache keeps them).
        let ids: Vec<&str> = page.iter().map(|(id, _, _)| id.as_str()).collect();
        state
            .personal()
            .preload(&ids)
            .await
            .map_err(ApiError::internal)?;
        scanned += n;
        for (id, name, email) in page {
            after.clone_from(&id);
            if found.contains_key(&id) {
                continue;
            }
            let row = open(id.clone(), name, email).await?;
            if id.to_lowercase().starts_with(&prefix)
                || row
                    .1
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase().starts_with(&prefix))
            {
                found.insert(id, row);
            }
        }
        if n < SCAN_PAGE {
            break;
        }
    }
    let mut items: Vec<Found> = found.into_values().collect();
    items.sort_by_key(|(id, name, _)| (name.as_deref().unwrap_or(id).to_lowercase(), id.clone()));
    items.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(items)
}
