//! The api's one error type. Every failure leaves as RFC 9457 `application/problem+json` with a
//! stable `code`; internal details are logged here with `tracing` and never returned.

use appreg_domain::{DomainError, FieldError, FieldErrors};
use appreg_eventstore::{AppendError, StoreError};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthenticated(String),
    /// An event-stream ticket that opens nothing: expired, used, unknown or another
    /// environment's (the answer never says which).
    #[error("the ticket is not valid")]
    TicketInvalid,
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// What was asked for existed once and is no longer served (410).
    #[error("{message}")]
    Gone { code: &'static str, message: String },
    /// A limit on what one caller (or all) may hold at once: 429 with `Retry-After`.
    #[error("{message}")]
    TooManyRequests {
        code: &'static str,
        message: String,
        retry_after_seconds: u64,
    },
    /// Well-formed input the current state cannot act on (422 with its own code).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("invalid input")]
    Invalid(FieldErrors),
    #[error("{0}")]
    Unavailable(String),
    /// A failure that is not the caller's: logged with its cause, answered 500 without it.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`urn:appreg:problem:<code>`).
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable, machine-readable error code.
    pub code: String,
    /// For validation errors: every invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<FieldErrorDoc>)]
    pub errors: Vec<FieldError>,
}

/// One invalid field.
#[derive(Debug, Serialize, ToSchema)]
pub struct FieldErrorDoc {
    pub field: String,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        let mut e = FieldErrors::new();
        e.add(field, code, message);
        ApiError::Invalid(e)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::NotFound {
            code,
            message: message.into(),
        }
    }

    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(error.into())
    }

    /// The stable code of the error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthenticated(_) => "auth.unauthenticated",
            ApiError::TicketInvalid => "auth.ticket_invalid",
            ApiError::Forbidden { code, .. }
            | ApiError::NotFound { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Gone { code, .. }
            | ApiError::TooManyRequests { code, .. }
            | ApiError::Unprocessable { code, .. } => code,
            ApiError::MalformedJson(_) => "request.malformed_json",
            ApiError::MethodNotAllowed => "request.method_not_allowed",
            ApiError::UnsupportedMediaType => "request.unsupported_media_type",
            ApiError::PayloadTooLarge(_) => "request.too_large",
            ApiError::Invalid(_) => "validation.failed",
            ApiError::Unavailable(_) => "service.unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    /// (status, stable code, title): the status and title from the one table of codes
    /// ([`appreg_domain::ERROR_CODES`]); a code missing from it is an internal error.
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        let code = self.code();
        match appreg_domain::error_code(code) {
            Some(row) => (
                StatusCode::from_u16(row.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                code,
                row.title,
            ),
            None => {
                tracing::error!(code, "an error code missing from the table of codes");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                )
            }
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let code = e.code();
        match e {
            DomainError::Invalid(errors) => ApiError::Invalid(errors),
            DomainError::NotFound => ApiError::not_found(code, "no such application"),
            DomainError::Forbidden(p) => ApiError::Forbidden {
                code,
                message: format!("this needs the permission {p} on the application"),
            },
            DomainError::AdminOnly => ApiError::Forbidden {
                code,
                message: e.to_string(),
            },
            DomainError::MemberNotFound
            | DomainError::ProviderNotFound
            | DomainError::ApiNotFound
            | DomainError::PlanNotFound
            | DomainError::SubscriptionNotFound
            | DomainError::ApiKeyNotFound
            | DomainError::WebhookNotFound => ApiError::not_found(code, e.to_string()),
            DomainError::PlanKeyless
            | DomainError::ClientIdRequired
            | DomainError::NotApiKeyPlan => ApiError::Unprocessable {
                code,
                message: e.to_string(),
            },
            DomainError::Archived
            | DomainError::NotArchived
            | DomainError::MemberExists
            | DomainError::PrimaryOwnerImmutable
            | DomainError::AlreadyPrimaryOwner
            | DomainError::EnvironmentExists
            | DomainError::TooManyMembers
            | DomainError::NotOAuth
            | DomainError::NotRegistered
            | DomainError::RegistrationNotFailed
            | DomainError::StaleRequest
            | DomainError::OperationPending
            | DomainError::TooManyProviders
            | DomainError::ProviderInUse
            | DomainError::ProviderIsDefault
            | DomainError::CatalogueLimit
            | DomainError::PlanClosed
            | DomainError::SubscriptionExists
            | DomainError::TooManySubscriptions
            | DomainError::SubscriptionTransition(_)
            | DomainError::TooManyApiKeys
            | DomainError::TooManyWebhooks => ApiError::Conflict {
                code,
                message: e.to_string(),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => {
                tracing::error!(error = %e, "event store unavailable");
                ApiError::Unavailable("the database is unavailable, try again later".into())
            }
            _ => ApiError::internal(e),
        }
    }
}

impl From<appreg_secrets::VaultStoreError> for ApiError {
    fn from(e: appreg_secrets::VaultStoreError) -> Self {
        match e {
            // The database is down: 503, like the event store's.
            appreg_secrets::VaultStoreError::Store(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<appreg_readmodel::ReadModelError> for ApiError {
    fn from(e: appreg_readmodel::ReadModelError) -> Self {
        match e {
            appreg_readmodel::ReadModelError::Store(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

impl From<AppendError> for ApiError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::ClaimTaken { scope, value } if scope.starts_with("client_id/") => ApiError::Conflict {
                code: "application.client_id.exists",
                message: format!("an active application of this environment already uses the client_id {value:?}"),
            },
            AppendError::ClaimTaken { scope, .. } => ApiError::Conflict {
                code: "claim.taken",
                message: format!("a unique value ({scope}) is already taken"),
            },
            AppendError::VersionConflict { .. } => ApiError::Conflict {
                code: "concurrency.conflict",
                message: "the application was changed concurrently; retry".into(),
            },
            AppendError::Empty => ApiError::internal("empty append"),
            AppendError::DuplicateStream { .. } => ApiError::internal("stream twice in one batch"),
            AppendError::Backend(e) => e.into(),
        }
    }
}

impl From<appreg_commands::CommandError<ApiError>> for ApiError {
    fn from(e: appreg_commands::CommandError<ApiError>) -> Self {
        use appreg_commands::CommandError;
        match e {
            CommandError::Rejected(e) => e,
            CommandError::ClaimTaken { scope, value } => {
                AppendError::ClaimTaken { scope, value }.into()
            }
            CommandError::Conflict { .. } => ApiError::Conflict {
                code: "concurrency.conflict",
                message: "the application was changed concurrently; retry".into(),
            },
            CommandError::Corrupt { .. } => ApiError::internal(e),
            CommandError::Store(e) => e.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, title) = self.parts();
        let retry_after = match &self {
            ApiError::TooManyRequests {
                retry_after_seconds,
                ..
            } => Some(*retry_after_seconds),
            _ => None,
        };
        let (detail, errors) = match self {
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    "an internal error occurred; it has been logged".to_string(),
                    vec![],
                )
            }
            ApiError::Invalid(errors) => {
                let n = errors.0.len();
                (
                    format!("{n} invalid field{}", if n == 1 { "" } else { "s" }),
                    errors.0,
                )
            }
            other => (other.to_string(), vec![]),
        };
        let problem = Problem {
            problem_type: format!("urn:appreg:problem:{code}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            code: code.into(),
            errors,
        };
        let mut response = (status, axum::Json(problem)).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(seconds) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The status an error's variant stands for.
    fn class(e: &ApiError) -> u16 {
        match e {
            ApiError::Unauthenticated(_) | ApiError::TicketInvalid => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } => 404,
            ApiError::Conflict { .. } => 409,
            ApiError::Gone { .. } => 410,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Unprocessable { .. } | ApiError::Invalid(_) => 422,
            ApiError::MalformedJson(_) => 400,
            ApiError::MethodNotAllowed => 405,
            ApiError::UnsupportedMediaType => 415,
            ApiError::PayloadTooLarge(_) => 413,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    #[test]
    fn every_domain_error_has_a_row_agreeing_with_its_variant() {
        use DomainError::*;
        let all = [
            Invalid(FieldErrors::new()),
            Archived,
            NotArchived,
            NotFound,
            Forbidden("x".into()),
            AdminOnly,
            MemberExists,
            MemberNotFound,
            PrimaryOwnerImmutable,
            AlreadyPrimaryOwner,
            EnvironmentExists,
            TooManyMembers,
            NotOAuth,
            NotRegistered,
            RegistrationNotFailed,
            StaleRequest,
            OperationPending,
            TooManyProviders,
            ProviderNotFound,
            ProviderInUse,
            ProviderIsDefault,
            ApiNotFound,
            PlanNotFound,
            CatalogueLimit,
            PlanKeyless,
            PlanClosed,
            ClientIdRequired,
            SubscriptionExists,
            TooManySubscriptions,
            SubscriptionNotFound,
            SubscriptionTransition("x".into()),
            NotApiKeyPlan,
            ApiKeyNotFound,
            TooManyApiKeys,
            WebhookNotFound,
            TooManyWebhooks,
        ];
        for e in all {
            let code = e.code();
            let api = ApiError::from(e);
            let row = appreg_domain::error_code(code)
                .unwrap_or_else(|| panic!("{code} not in the table"));
            assert_eq!(row.status, class(&api), "{code}");
            assert_eq!(api.status().as_u16(), row.status, "{code}");
        }
    }

    #[test]
    fn every_code_the_api_names_has_a_row_agreeing_with_its_variant() {
        let fixed = [
            ApiError::Unauthenticated("x".into()),
            ApiError::TicketInvalid,
            ApiError::MalformedJson("x".into()),
            ApiError::MethodNotAllowed,
            ApiError::UnsupportedMediaType,
            ApiError::PayloadTooLarge(1),
            ApiError::Invalid(FieldErrors::new()),
            ApiError::Unavailable("x".into()),
            ApiError::Internal("x".into()),
        ];
        for e in &fixed {
            let row = appreg_domain::error_code(e.code()).unwrap_or_else(|| panic!("{}", e.code()));
            assert_eq!(row.status, class(e), "{}", e.code());
        }
        // The codes written in the api's sources: `Variant { code: "…"` and `not_found("…"`.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap_or_default();
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            for (variant, status) in [
                ("Forbidden {", 403),
                ("NotFound {", 404),
                ("Conflict {", 409),
                ("Gone {", 410),
                ("TooManyRequests {", 429),
                ("Unprocessable {", 422),
                ("not_found(", 404),
            ] {
                for (i, _) in text.match_indices(variant) {
                    let rest = text[i + variant.len()..].trim_start();
                    let Some(rest) = rest.strip_prefix("code: \"").or(rest.strip_prefix('"'))
                    else {
                        continue; // a code passed in, not written here
                    };
                    let code = &rest[..rest.find('"').unwrap_or(0)];
                    let row = appreg_domain::error_code(code)
                        .unwrap_or_else(|| panic!("{code:?} ({variant}) not in the table"));
                    assert_eq!(row.status, status, "{code}");
                    found += 1;
                }
            }
        }
        assert!(found >= 10, "the scan found the api's codes ({found})");
    }
}
