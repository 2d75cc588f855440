//! The subscription endpoints: list, subscribe, get, and the status transitions (accept,
//! reject, pause, resume, close).

use super::*;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionListParams {
    /// Only the subscriptions in this status.
    #[param(value_type = Option<crate::apidoc::SubscriptionStatusName>, inline, nullable = false)]
    pub status: Option<String>,
    /// From 1.
    #[param(minimum = 1, maximum = 1_000_000, nullable = false)]
    pub page: Option<i64>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub size: Option<i64>,
}

/// The application's subscriptions, oldest first (SUBSCRIPTION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/applications/{id}/subscriptions", tag = "subscriptions", operation_id = "list_subscriptions",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path), SubscriptionListParams),
    responses((status = 200, body = SubscriptionList), (status = 403, body = Problem), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    params: Result<Query<SubscriptionListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let (page, size) = paging(Ok(Query(PageParams {
        page: params.page,
        size: params.size,
    })))?;
    let status = match params.status.as_deref() {
        None => None,
        Some(s) => Some(
            [
                SubscriptionStatus::Pending,
                SubscriptionStatus::Accepted,
                SubscriptionStatus::Rejected,
                SubscriptionStatus::Paused,
                SubscriptionStatus::Closed,
            ]
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| {
                ApiError::invalid(
                    "status",
                    "status.invalid",
                    "status is PENDING, ACCEPTED, REJECTED, PAUSED or CLOSED",
                )
            })?,
        ),
    };
    let id = parse_app_id(&id)?;
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(not_found)?;
    app.authorize(&ctx.actor, Permission::Subscription, Operation::Read)?;
    let matching: Vec<&Subscription> = app
        .subscriptions
        .iter()
        .filter(|s| status.is_none_or(|st| s.status == st))
        .collect();
    let mut items = Vec::new();
    for sub in matching
        .iter()
        .skip(((page - 1) * size) as usize)
        .take(size as usize)
    {
        items.push(subscription_view(&state, &ctx, &app, sub).await?);
    }
    Ok(no_store(
        Json(SubscriptionList {
            items,
            page,
            size,
            total: matching.len() as i64,
        })
        .into_response(),
    ))
}

/// Subscribe the application to a plan (SUBSCRIPTION[C]). An AUTO plan is accepted at once,
/// with a key for an API_KEY plan.
#[utoipa::path(post, path = "/v1/environments/{env}/applications/{id}/subscriptions", tag = "subscriptions", operation_id = "subscribe",
    params(("env" = String, Path), ("id" = uuid::Uuid, Path)), request_body = SubscribeRequest,
    responses((status = 201, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn subscribe(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, id)): Path<(String, String)>,
    JsonBody(body): JsonBody<SubscribeRequest>,
) -> Result<Response, ApiError> {
    let id = parse_app_id(&id)?;
    let plan_id = body
        .plan_id
        .ok_or_else(|| ApiError::invalid("plan_id", "field.required", "plan_id is required"))?;
    let (catalogue, _) = load_catalogue(&state, ctx.environment.as_str()).await?;
    let plan = catalogue
        .plan(&plan_id)
        .cloned()
        .ok_or(DomainError::PlanNotFound)?;
    let sid = uuid::Uuid::now_v7().to_string();
    let (key, value) = generate_key();
    let may_issue = plan.security == appreg_domain::catalogue::PlanSecurity::ApiKey
        && plan.validation == appreg_domain::catalogue::PlanValidation::Auto;
    let executed = execute_with_key(
        &state,
        &ctx,
        "Subscribe",
        id,
        may_issue.then_some((&key, &value)),
        |current| {
            let app = current.ok_or_else(not_found)?;
            app.authorize(&ctx.actor, Permission::Subscription, Operation::Create)?;
            Ok(app.subscribe(sid.clone(), &plan, &key)?)
        },
    )
    .await?;
    respond(&state, &ctx, &executed, &sid, StatusCode::CREATED).await
}

/// A subscription (SUBSCRIPTION[R]).
#[utoipa::path(get, path = "/v1/environments/{env}/subscriptions/{sid}", tag = "subscriptions", operation_id = "get_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = subscription_app(&state, &sid).await?;
    let (app, _) = load_app(&state, &ctx, id).await?;
    let app = app.ok_or_else(|| ApiError::from(DomainError::SubscriptionNotFound))?;
    app.authorize(&ctx.actor, Permission::Subscription, Operation::Read)
        .map_err(|e| as_subscription_error(e.into()))?;
    let sub = app
        .subscription(&sid)
        .ok_or(DomainError::SubscriptionNotFound)?;
    let view = subscription_view(&state, &ctx, &app, sub).await?;
    Ok(no_store(Json(view).into_response()))
}

/// Accept a pending subscription (administrators); an API_KEY plan's key is issued.
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_accept", tag = "subscriptions", operation_id = "accept_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn accept(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Accept, None).await
}

/// Reject a pending subscription, with an optional reason (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_reject", tag = "subscriptions", operation_id = "reject_subscription",
    params(("env" = String, Path), ("sid" = String, Path)), request_body(content = RejectRequest, description = "optional"),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn reject(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    // The body is optional: none, or `{reason}`.
    let reason = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        crate::extract::parse_json::<RejectRequest>(&body)?.reason
    };
    let mut errors = FieldErrors::new();
    if let Some(reason) = &reason {
        too_long(
            &mut errors,
            "reason",
            "subscription.reason.invalid",
            reason,
            MAX_REASON,
        );
    }
    errors.into_result()?;
    transition(&state, &ctx, &sid, Transition::Reject, reason).await
}

/// Pause an accepted subscription (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_pause", tag = "subscriptions", operation_id = "pause_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn pause(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Pause, None).await
}

/// Resume a paused subscription (administrators).
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_resume", tag = "subscriptions", operation_id = "resume_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn resume(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Resume, None).await
}

/// Close an accepted or paused subscription (SUBSCRIPTION[D] or administrators); its keys are
/// revoked.
#[utoipa::path(post, path = "/v1/environments/{env}/subscriptions/{sid}/_close", tag = "subscriptions", operation_id = "close_subscription",
    params(("env" = String, Path), ("sid" = String, Path)),
    responses((status = 200, body = SubscriptionView), (status = 403, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn close(
    State(state): State<AppState>,
    ctx: Ctx,
    Path((_, sid)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    transition(&state, &ctx, &sid, Transition::Close, None).await
}
