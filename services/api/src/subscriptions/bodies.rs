//! The request and response bodies of the subscription, key and notification endpoints, and
//! the paging parameters (shared with the catalogue).

use super::*;

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
    let page = params.page.unwrap_or(1);
    let size = params.size.unwrap_or(20);
    let mut errors = FieldErrors::new();
    if !(1..=1_000_000).contains(&page) {
        errors.add("page", "page.invalid", "page starts at 1");
    }
    if !(1..=100).contains(&size) {
        errors.add("size", "size.invalid", "size is between 1 and 100");
    }
    errors.into_result()?;
    Ok((page, size))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    #[schema(value_type = String, required = true)]
    pub plan_id: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Shown to the application's members (at most 1,000 characters, no control characters but
    /// line feeds).
    #[schema(
        max_length = 1000,
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*(?:[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x09\x0B-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?)?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// At most 256 bytes.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 256)]
    pub key: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationRequest {
    /// SUBSCRIPTION_ACCEPTED, SUBSCRIPTION_REJECTED, SUBSCRIPTION_CLOSED, SUBSCRIPTION_PAUSED,
    /// SUBSCRIPTION_RESUMED, API_KEY_EXPIRING; empty: no notification.
    #[schema(value_type = Option<Vec<crate::apidoc::HookName>>, inline, max_items = 12)]
    pub hooks: Option<Vec<String>>,
    /// Where to send them (required with hooks): `local@domain.tld`, at most 254 bytes.
    #[schema(
        max_length = 254,
        pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@]+@[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@.][^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@]*\.[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F@.][\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$"
    )]
    pub email: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    /// The whole key: only for members with SUBSCRIPTION[U], and only while it is valid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionView {
    pub id: String,
    pub application_id: String,
    pub api_id: String,
    pub plan_id: String,
    /// KEYLESS, API_KEY, JWT or OAUTH2 (the plan's, at subscription time).
    pub security: String,
    /// PENDING, ACCEPTED, REJECTED, PAUSED or CLOSED.
    pub status: String,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub api_keys: Vec<ApiKeyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub items: Vec<SubscriptionView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// Whether a gateway should accept the key now.
    pub valid: bool,
    pub subscription_id: Option<String>,
    pub application_id: Option<String>,
    pub api_id: Option<String>,
    pub plan_id: Option<String>,
    /// The end of a renewed key's grace period.
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationView {
    pub user: String,
    pub hooks: Vec<String>,
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NotificationList {
    pub items: Vec<NotificationView>,
}
