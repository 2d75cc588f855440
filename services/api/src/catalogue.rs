//! `/apis` and `/apis/{api}/plans`: the environment's minimal catalogue (administrators write,
//! everyone reads). One stream per environment; small enough to fold on every request.

use crate::commands::load_catalogue;
use crate::consistency::with_token;
use crate::dto::{paging, too_long, PageParams};
use crate::error::{ApiError, Problem};
use crate::extract::{Ctx, JsonBody};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_commands::Start;
use appreg_domain::catalogue::{
    Catalogue, CatalogueApi, CatalogueEvent, Plan, PlanDefinition, PlanSecurity, PlanValidation,
    MAX_DESCRIPTION, MAX_NAME,
};
use appreg_domain::{DomainError, FieldErrors};
use appreg_eventstore::Appended;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(first_visit.on(routes!(list_apis, create_api)))
        .routes(first_visit.on(routes!(list_plans, create_plan)))
        .routes(first_visit.on(routes!(close_plan)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiRequest {
    /// 1–200 characters (trimmed), no control characters.
    #[schema(value_type = String, required = true, max_length = 200, pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
    pub name: Option<String>,
    /// At most 4,000 characters, no control characters.
    #[schema(
        max_length = 4000,
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*(?:[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?)?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePlanRequest {
    /// 1–200 characters (trimmed), no control characters.
    #[schema(value_type = String, required = true, max_length = 200, pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
    pub name: Option<String>,
    /// KEYLESS, API_KEY, JWT or OAUTH2.
    #[schema(value_type = crate::apidoc::PlanSecurityName, inline, required = true)]
    pub security: Option<String>,
    /// AUTO or MANUAL.
    #[schema(value_type = crate::apidoc::PlanValidationName, inline, required = true)]
    pub validation: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanView {
    pub id: String,
    pub api_id: String,
    pub name: String,
    /// KEYLESS, API_KEY, JWT or OAUTH2.
    pub security: String,
    /// AUTO or MANUAL.
    pub validation: String,
    /// PUBLISHED or CLOSED.
    pub status: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiView {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub plans: Vec<PlanView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiList {
    pub items: Vec<ApiView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PlanList {
    pub items: Vec<PlanView>,
}

fn enum_str<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

impl From<&Plan> for PlanView {
    fn from(p: &Plan) -> Self {
        PlanView {
            id: p.id.clone(),
            api_id: p.api_id.clone(),
            name: p.name.clone(),
            security: enum_str(&p.security),
            validation: enum_str(&p.validation),
            status: enum_str(&p.status),
        }
    }
}

impl From<&CatalogueApi> for ApiView {
    fn from(a: &CatalogueApi) -> Self {
        ApiView {
            id: a.id.clone(),
            name: a.name.clone(),
            description: a.description.clone(),
            plans: a.plans.iter().map(PlanView::from).collect(),
        }
    }
}

fn admin_only(ctx: &Ctx) -> Result<(), ApiError> {
    if ctx.actor.admin {
        Ok(())
    } else {
        Err(DomainError::AdminOnly.into())
    }
}

/// Runs a catalogue command (administrators) through the command path.
async fn execute_catalogue(
    state: &AppState,
    ctx: &Ctx,
    mut decide: impl FnMut(&Catalogue) -> Result<Vec<CatalogueEvent>, DomainError>,
) -> Result<(Catalogue, Option<Appended>), ApiError> {
    admin_only(ctx)?;
    let executed = state
        .commands()
        .execute::<Catalogue, ApiError, _>(
            &Catalogue::stream_id(ctx.environment.as_str()),
            Start::Current,
            &crate::commands::metadata(ctx, crate::commands::now()),
            |c| Ok(decide(c)?),
        )
        .await?;
    Ok((Catalogue::clone(&executed.state), executed.appended))
}

fn required(errors: &mut FieldErrors, field: &str, value: Option<&str>) -> Option<String> {
    match value {
        Some(v) => Some(v.to_string()),
        None => {
            errors.add(field, "field.required", format!("{field} is required"));
            None
        }
    }
}

/// The environment's APIs and their plans (everyone).
#[utoipa::path(get, path = "/v1/environments/{env}/apis", tag = "catalogue",
    params(("env" = String, Path), PageParams),
    responses((status = 200, body = ApiList), (status = 422, body = Problem)))]
pub async fn list_apis(
    State(state): State<AppState>,
    ctx: Ctx,
    params: Result<axum::extract::Query<PageParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ApiList>, ApiError> {
    let (page, size) = paging(params)?;
    let (catalogue, _) = load_catalogue(&state, ctx.environment.as_str()).await?;
    let items = catalogue
        .apis
        .iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
        .map(ApiView::from)
        .collect();
    Ok(Json(ApiList {
        items,
        page,
        size,
        total: catalogue.apis.len() as i64,
    }))
}

/// Add an API to the catalogue (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/apis", tag = "catalogue",
    params(("env" = String, Path)), request_body = CreateApiRequest,
    responses((status = 201, body = ApiView), (status = 403, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_api(
    State(state): State<AppState>,
    ctx: Ctx,
    JsonBody(body): JsonBody<CreateApiRequest>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let mut errors = FieldErrors::new();
    let name = required(&mut errors, "name", body.name.as_deref());
    if let Some(name) = &name {
        too_long(&mut errors, "name", "text.invalid", name, MAX_NAME);
    }
    if let Some(description) = &body.description {
        too_long(
            &mut errors,
            "description",
            "text.invalid",
            description,
            MAX_DESCRIPTION,
        );
    }
    errors.into_result()?;
    let id = uuid::Uuid::now_v7().to_string();
    let (catalogue, appended) = execute_catalogue(&state, &ctx, |c| {
        c.create_api(
            id.clone(),
            name.as_deref().unwrap_or_default(),
            body.description.as_deref(),
        )
    })
    .await?;
    let api = catalogue
        .api(&id)
        .ok_or_else(|| ApiError::internal("the new API is missing"))?;
    Ok(with_token(
        (StatusCode::CREATED, Json(ApiView::from(api))).into_response(),
        appended.as_ref(),
    ))
}

/// An API's plans (everyone).
#[utoipa::path(get, path = "/v1/environments/{env}/apis/{api}/plans", tag = "catalogue",
    params(("env" = String, Path), ("api" = String, Path)),
    responses((status = 200, body = PlanList), (status = 404, body = Problem)))]
pub async fn list_plans(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, api)): Path<(String, String)>,
) -> Result<Json<PlanList>, ApiError> {
    let (catalogue, _) = load_catalogue(&state, ctx.environment.as_str()).await?;
    let api = catalogue.api(&api).ok_or(DomainError::ApiNotFound)?;
    Ok(Json(PlanList {
        items: api.plans.iter().map(PlanView::from).collect(),
    }))
}

/// Add a plan to an API (administrators); it is PUBLISHED at once.
#[utoipa::path(post, path = "/v1/environments/{env}/apis/{api}/plans", tag = "catalogue",
    params(("env" = String, Path), ("api" = String, Path)), request_body = CreatePlanRequest,
    responses((status = 201, body = PlanView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_plan(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, api)): Path<(String, String)>,
    JsonBody(body): JsonBody<CreatePlanRequest>,
) -> Result<Response, ApiError> {
    admin_only(&ctx)?;
    let mut errors = FieldErrors::new();
    let name = required(&mut errors, "name", body.name.as_deref());
    if let Some(name) = &name {
        too_long(&mut errors, "name", "text.invalid", name, MAX_NAME);
    }
    let security = required(&mut errors, "security", body.security.as_deref())
        .and_then(|s| errors.take("security", PlanSecurity::parse(&s)));
    let validation = required(&mut errors, "validation", body.validation.as_deref())
        .and_then(|s| errors.take("validation", PlanValidation::parse(&s)));
    errors.into_result()?;
    let (Some(name), Some(security), Some(validation)) = (name, security, validation) else {
        return Err(ApiError::internal("validated fields missing"));
    };
    let id = uuid::Uuid::now_v7().to_string();
    let definition = PlanDefinition {
        name,
        security,
        validation,
    };
    let (catalogue, appended) = execute_catalogue(&state, &ctx, |c| {
        c.create_plan(&api, id.clone(), definition.clone())
    })
    .await?;
    let plan = catalogue
        .plan(&id)
        .ok_or_else(|| ApiError::internal("the new plan is missing"))?;
    Ok(with_token(
        (StatusCode::CREATED, Json(PlanView::from(plan))).into_response(),
        appended.as_ref(),
    ))
}

/// Close a plan (administrators): no new subscription; existing ones stay.
#[utoipa::path(post, path = "/v1/environments/{env}/apis/{api}/plans/{plan}/_close", tag = "catalogue",
    params(("env" = String, Path), ("api" = String, Path), ("plan" = String, Path)),
    responses((status = 200, body = PlanView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn close_plan(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, api, plan)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let (catalogue, appended) =
        execute_catalogue(&state, &ctx, |c| c.close_plan(&api, &plan)).await?;
    let plan = catalogue.plan(&plan).ok_or(DomainError::PlanNotFound)?;
    Ok(with_token(
        Json(PlanView::from(plan)).into_response(),
        appended.as_ref(),
    ))
}
