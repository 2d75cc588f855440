//! `GET /v1/environments/{env}/audit`: every event of an environment, oldest first, page by
//! page, for its administrators: the envelopes `GET /events` sends as its data, narrowed by
//! actor, event type, stream type and time. Read from the event log through its index on
//! (environment, log order), so a page costs the same however long the log (a narrow filter
//! may scan more of the environment's events to fill a page).
//!
//! What this module must never do: answer another environment's events, answer anyone but an
//! administrator of the environment, or an unbounded page.

use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_domain::FieldErrors;
use appreg_eventstore::{LogFilter, LogPosition};
use appreg_worker::Envelope;
use axum::extract::{Query, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(first_visit.on(routes!(audit)))
}

/// Events per page by default, and at most.
pub const AUDIT_LIMIT_DEFAULT: i64 = 100;
pub const AUDIT_LIMIT_MAX: i64 = 1000;
/// Longest actor, event type and stream type filter.
const MAX_NAME: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    /// Only the events this user caused (`metadata.actor`).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        nullable = false
    )]
    pub actor: Option<String>,
    /// Only events of this type (`ApplicationCreated`…).
    #[serde(rename = "type")]
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        nullable = false
    )]
    pub event_type: Option<String>,
    /// Only events of this stream type (`application`, `settings`, `user`…).
    #[param(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\x00-\\x1F\\x7F-\\x9F]*$",
        nullable = false
    )]
    pub stream_type: Option<String>,
    /// Only events recorded at or after this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>, nullable = false)]
    pub from: Option<String>,
    /// Only events recorded before this time (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>, nullable = false)]
    pub to: Option<String>,
    /// Only events after this log position (`tx.pos`, a page's `next_after` or an event id of
    /// `GET /events`).
    #[param(pattern = "^[0-9]{1,18}\\.[0-9]{1,18}$", nullable = false)]
    pub after: Option<String>,
    /// Events per page, 1–1000 (default 100).
    #[param(value_type = Option<i64>, minimum = 1, maximum = 1000, nullable = false)]
    pub limit: Option<String>,
}

/// The body of every event (as `GET /events` sends it as `data`).
#[derive(ToSchema)]
#[allow(dead_code)] // the document's shape of `appreg_worker::Envelope`
pub struct EventEnvelope {
    event_id: uuid::Uuid,
    stream_id: String,
    stream_type: String,
    /// 1-based version of the event inside its stream.
    version: i64,
    /// The event type.
    #[schema(rename = "type")]
    event_type: String,
    schema_version: i32,
    /// When the event was recorded.
    at: DateTime<Utc>,
    /// environment, actor, correlation_id, causation_id, traceparent…
    metadata: serde_json::Value,
    data: serde_json::Value,
}

/// A page of an environment's events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    #[schema(value_type = Vec<EventEnvelope>)]
    pub items: Vec<Envelope>,
    /// The position of this page's last event: pass it as `after` for the next page. Null when
    /// nothing follows yet. Always present.
    #[schema(required = true)]
    pub next_after: Option<String>,
}

/// A filter on a name (actor, type, stream type): 1 to 200 characters, no control characters.
fn name(errors: &mut FieldErrors, field: &str, value: Option<&str>) -> Option<String> {
    let v = value?;
    if v.is_empty() || v.chars().count() > MAX_NAME || v.chars().any(char::is_control) {
        errors.add(
            field,
            "filter.invalid",
            format!("{field} has 1 to {MAX_NAME} characters, no control characters"),
        );
        return None;
    }
    Some(v.to_string())
}

fn time(errors: &mut FieldErrors, field: &str, value: Option<&str>) -> Option<DateTime<Utc>> {
    let v = value?;
    match DateTime::parse_from_rfc3339(v) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(_) => {
            errors.add(
                field,
                "time.invalid",
                format!("{field} is an RFC 3339 time"),
            );
            None
        }
    }
}

impl AuditParams {
    /// (filter, after, limit) of `env`, or a 422 naming each bad field.
    fn parse(&self, env: &str) -> Result<(LogFilter, LogPosition, i64), ApiError> {
        let mut errors = FieldErrors::new();
        let filter = LogFilter {
            environment: env.to_string(),
            actor: name(&mut errors, "actor", self.actor.as_deref()),
            event_type: name(&mut errors, "type", self.event_type.as_deref()),
            stream_type: name(&mut errors, "stream_type", self.stream_type.as_deref()),
            from: time(&mut errors, "from", self.from.as_deref()),
            to: time(&mut errors, "to", self.to.as_deref()),
        };
        let after = match self.after.as_deref() {
            None => LogPosition::START,
            Some(s) => match s.parse::<LogPosition>() {
                Ok(p) if p.tx >= 0 && p.pos >= 0 => p,
                _ => {
                    errors.add("after", "after.invalid", "after is a log position `tx.pos`");
                    LogPosition::START
                }
            },
        };
        let limit = crate::dto::limit_param(
            &mut errors,
            self.limit.as_deref(),
            AUDIT_LIMIT_DEFAULT,
            AUDIT_LIMIT_MAX,
        );
        errors.into_result()?;
        Ok((filter, after, limit))
    }
}

/// Every event of the environment, oldest first, filtered (administrators of the environment).
#[utoipa::path(get, path = "/v1/environments/{env}/audit", tag = "events",
    params(("env" = String, Path, description = "environment id"), AuditParams),
    responses((status = 200, body = AuditPage), (status = 403, body = Problem), (status = 422, body = Problem)))]
pub async fn audit(
    State(state): State<AppState>,
    ctx: Ctx,
    params: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::invalid("query", "query.invalid", e.body_text()))?;
    let (filter, after, limit) = params.parse(ctx.environment.as_str())?;
    if !ctx.actor.admin {
        return Err(ApiError::Forbidden {
            code: "permission.admin_only",
            message: "only an administrator of the environment may read its audit log".into(),
        });
    }
    // One more than the page, to tell whether anything follows it.
    let mut events = state
        .store()
        .read_environment_log(after, &filter, limit + 1)
        .await?;
    let more = events.len() as i64 > limit;
    events.truncate(limit as usize);
    let next_after = if more {
        events.last().map(|e| e.position.to_string())
    } else {
        None
    };
    // Personal fields opened for the administrator (or `erased: true`).
    let events = crate::personal::reveal_all(&state, &events).await?;
    Ok(Json(AuditPage {
        items: events.iter().map(Envelope::new).collect(),
        next_after,
    }))
}
