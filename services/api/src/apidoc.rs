//! What every operation of the OpenAPI document shares, added in one place rather than in each
//! annotation: the bearer scheme, the problem responses that the extractors and middleware can
//! answer to any request (401, 404 for an unknown environment, 400/413/415/422 for a body, 422
//! for query and header parameters, 503), and the `application/problem+json` media type of every
//! problem. Schemathesis (services/api/tests/fuzz) holds the document to what the api answers.
//! Nothing here may describe a behaviour the api does not have.
//!
//! The `pattern`s of request fields (literals in the annotations: utoipa takes no constants)
//! spell the domain's text rules in the regex dialect that JSON Schema, Python and Rust share:
//! `[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]` is Unicode
//! White_Space (what `str::trim` removes and `char::is_whitespace` tests), `\x00-\x1F\x7F-\x9F`
//! is `char::is_control`. "Trimmed, 1 to N characters, no control characters" is: whitespace,
//! then a character that is neither, then any non-control characters ending in one that is
//! neither, then whitespace.

use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr, Response, ResponseBuilder};

/// The media type of every error (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Operations anyone may call, without a token.
const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Declares the `bearer` security scheme (JWT).
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Adds the problem responses every operation can give, and gives every problem its media type.
pub struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let public = PUBLIC_PATHS.contains(&path.as_str());
            for operation in operations(item) {
                if public {
                    // No security requirement: the document's global `bearer` does not apply.
                    operation.security = Some(vec![]);
                } else {
                    add(operation, 401, "Missing, malformed or invalid bearer token");
                    add(
                        operation,
                        503,
                        "A dependency (database, token issuer, read models) is unavailable; \
                         retry after `Retry-After` seconds",
                    );
                }
                if path.starts_with("/v1/environments/{env}") {
                    add(
                        operation,
                        404,
                        "No such environment (or object), or one the caller may not see",
                    );
                }
                if operation.request_body.is_some() {
                    add(operation, 400, "The body is not valid JSON");
                    add(
                        operation,
                        413,
                        "The body is larger than the configured limit",
                    );
                    add(operation, 415, "The body is not `application/json`");
                    add(
                        operation,
                        422,
                        "Invalid input: `errors` names every invalid field",
                    );
                }
                let has_parameters =
                    operation.parameters.iter().flatten().any(|p| {
                        matches!(p.parameter_in, ParameterIn::Query | ParameterIn::Header)
                    });
                if has_parameters {
                    add(
                        operation,
                        422,
                        "Invalid parameters: `errors` names each one",
                    );
                }
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        problem_media_type(response);
                    }
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds a problem response with `status`, unless the operation documents that status already.
fn add(operation: &mut Operation, status: u16, description: &str) {
    operation
        .responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| {
            RefOr::T(
                ResponseBuilder::new()
                    .description(description)
                    .content(
                        PROBLEM_JSON,
                        Content::new(Some(Ref::from_schema_name("Problem"))),
                    )
                    .build(),
            )
        });
}

/// A response whose body is a `Problem` is `application/problem+json`, not `application/json`.
fn problem_media_type(response: &mut Response) {
    let is_problem = |content: &Content| matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/Problem");
    if !response
        .content
        .iter()
        .any(|(media, c)| media == "application/json" && is_problem(c))
    {
        return;
    }
    for (media, content) in std::mem::take(&mut response.content) {
        let media = if media == "application/json" && is_problem(&content) {
            PROBLEM_JSON.to_string()
        } else {
            media
        };
        response.content.insert(media, content);
    }
}

// ----- enumerations the handlers take as strings (documentation only) -------------------------

/// An application's status.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum ApplicationStatus {
    Active,
    Archived,
}

/// The order of a list of applications.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum ListSort {
    #[schema(rename = "created_at")]
    CreatedAt,
    #[schema(rename = "-created_at")]
    CreatedAtDesc,
    #[schema(rename = "name")]
    Name,
}

/// A subscription's status.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum SubscriptionStatusName {
    Pending,
    Accepted,
    Rejected,
    Paused,
    Closed,
}

/// The status the environment's queue of subscriptions takes (`GET /subscriptions`).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum QueueStatusName {
    Pending,
}

/// A member's role, as given (PRIMARY_OWNER only by a transfer of ownership).
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum MemberRole {
    Owner,
    User,
}

/// The five application types.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum ApplicationTypeName {
    Simple,
    Browser,
    Web,
    Native,
    BackendToBackend,
}

/// How a plan secures its API.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum PlanSecurityName {
    Keyless,
    ApiKey,
    Jwt,
    Oauth2,
}

/// How a plan's subscriptions are accepted.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum PlanValidationName {
    Auto,
    Manual,
}

/// A notification hook.
#[derive(utoipa::ToSchema)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(dead_code)]
pub enum HookName {
    SubscriptionAccepted,
    SubscriptionRejected,
    SubscriptionClosed,
    SubscriptionPaused,
    SubscriptionResumed,
    ApiKeyExpiring,
}
