//! The one table of stable error codes: each code a caller of appreg can receive, with the HTTP
//! status and the title its problem document carries. The edge (the api's error type) looks the
//! status and title up here; nothing else decides them. A new code is a new row.

/// A stable error code, its HTTP status and its title.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode {
    pub code: &'static str,
    pub status: u16,
    pub title: &'static str,
}

const fn row(code: &'static str, status: u16, title: &'static str) -> ErrorCode {
    ErrorCode {
        code,
        status,
        title,
    }
}

/// Every code, grouped by status.
pub const ERROR_CODES: &[ErrorCode] = &[
    row("request.malformed_json", 400, "Malformed JSON"),
    row("auth.unauthenticated", 401, "Unauthenticated"),
    row("auth.ticket_invalid", 401, "Unauthenticated"),
    row("cors.origin_denied", 403, "Forbidden"),
    row("permission.denied", 403, "Forbidden"),
    row("permission.admin_only", 403, "Forbidden"),
    row("permission.organisation_admin_only", 403, "Forbidden"),
    row("permission.gateway_only", 403, "Forbidden"),
    row("application.not_found", 404, "Not found"),
    row("application.version_not_found", 404, "Not found"),
    row("environment.not_found", 404, "Not found"),
    row("route.not_found", 404, "Not found"),
    row("member.not_found", 404, "Not found"),
    row("user.not_found", 404, "Not found"),
    row("provider.not_found", 404, "Not found"),
    row("api.not_found", 404, "Not found"),
    row("plan.not_found", 404, "Not found"),
    row("subscription.not_found", 404, "Not found"),
    row("api_key.not_found", 404, "Not found"),
    row("webhook.not_found", 404, "Not found"),
    row("delivery.not_found", 404, "Not found"),
    row("request.method_not_allowed", 405, "Method not allowed"),
    row("events.replay_too_old", 410, "Gone"),
    row("application.exists", 409, "Conflict"),
    row("application.client_id.exists", 409, "Conflict"),
    row("application.archived", 409, "Conflict"),
    row("application.not_archived", 409, "Conflict"),
    row("application.not_oauth", 409, "Conflict"),
    row("application.registration.not_registered", 409, "Conflict"),
    row("application.registration.not_failed", 409, "Conflict"),
    row("application.registration.stale_request", 409, "Conflict"),
    row("application.registration.pending", 409, "Conflict"),
    row("claim.taken", 409, "Conflict"),
    row("concurrency.conflict", 409, "Conflict"),
    row("environment.exists", 409, "Conflict"),
    row("member.exists", 409, "Conflict"),
    row("member.primary_owner", 409, "Conflict"),
    row("member.already_primary_owner", 409, "Conflict"),
    row("member.limit", 409, "Conflict"),
    row("provider.limit", 409, "Conflict"),
    row("provider.in_use", 409, "Conflict"),
    row("provider.is_default", 409, "Conflict"),
    row("provider.concurrent_change", 409, "Conflict"),
    row("provider.renewal_disabled", 409, "Conflict"),
    row("catalogue.limit", 409, "Conflict"),
    row("subscription.plan_closed", 409, "Conflict"),
    row("subscription.exists", 409, "Conflict"),
    row("subscription.limit", 409, "Conflict"),
    row("subscription.transition", 409, "Conflict"),
    row("api_key.limit", 409, "Conflict"),
    row("webhook.limit", 409, "Conflict"),
    row("request.too_large", 413, "Payload too large"),
    row(
        "request.unsupported_media_type",
        415,
        "Unsupported media type",
    ),
    row("validation.failed", 422, "Invalid input"),
    row("subscription.plan_keyless", 422, "Unprocessable"),
    row("subscription.client_id_required", 422, "Unprocessable"),
    row("subscription.not_api_key", 422, "Unprocessable"),
    row("events.too_many_streams", 429, "Too many requests"),
    row("internal", 500, "Internal error"),
    row("service.unavailable", 503, "Service unavailable"),
];

/// The row of `code`, if it is one.
pub fn error_code(code: &str) -> Option<&'static ErrorCode> {
    ERROR_CODES.iter().find(|c| c.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for c in ERROR_CODES {
            assert!(seen.insert(c.code), "{} twice", c.code);
            assert!((400..600).contains(&c.status), "{}", c.code);
            assert!(!c.title.is_empty());
            assert!(c
                .code
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch == '_' || ch == '.'));
        }
    }
}
