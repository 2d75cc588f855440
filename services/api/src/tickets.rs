//! Event-stream tickets: a browser's `EventSource` cannot send an `Authorization` header, so
//! `POST /v1/environments/{env}/events/_ticket` (authenticated as usual) hands out a ticket, and
//! `GET /v1/environments/{env}/events?ticket=…` opens the stream with it instead.
//!
//! A ticket is 256 random bits from the operating system's generator, base64url. It opens one
//! stream, once, within `sse_ticket_ttl_ms` (at most a minute), for the caller it was issued to
//! (the same subject, the same administrator rights, until the same token expiry) on the
//! environment it was issued in. Only its SHA-256 is stored, in the api's own table
//! (`api_sse_tickets`, shared by every replica); it is consumed by one conditional `UPDATE … WHERE
//! used_at IS NULL AND expires_at > now RETURNING …`, so two replicas cannot both accept it.
//! Expired rows are deleted when tickets are issued.
//!
//! What this module must never do: log a ticket, accept one on another route than the event
//! stream (the layer is on that route only: tokens never go in URLs elsewhere), or say why a
//! ticket was refused (expired, used, unknown and another environment's are one answer).

use crate::error::ApiError;
use crate::extract::{request_traceparent, Ctx, RequestId};
use crate::state::AppState;
use crate::users::FirstVisit;
use appreg_auth::Principal;
use appreg_domain::{Actor, EnvironmentId, UserId};
use appreg_eventstore::Database;
use axum::extract::{FromRequestParts, Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Json;
use base64::Engine;
use serde::Serialize;
use sha2::Digest;
use std::collections::HashMap;
use utoipa::ToSchema;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(first_visit.on(routes!(issue_ticket)))
}

/// `routes` (the event stream's) also opened by a `ticket` query parameter: a layer outside
/// the first visit's, which hands the ticket's caller on as the request's [`Ctx`].
pub fn accepted_on(
    state: Option<&AppState>,
    routes: UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    let (schemas, paths, methods) = routes;
    match state {
        Some(state) => (
            schemas,
            paths,
            methods.route_layer(middleware::from_fn_with_state(state.clone(), accept)),
        ),
        None => (schemas, paths, methods),
    }
}

/// `POST /events/_ticket`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketView {
    /// Opens `GET /v1/environments/{env}/events?ticket=…` once. A secret: never log it.
    pub ticket: String,
    /// Seconds the ticket stays valid (rounded up).
    pub expires_in: u64,
}

macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn digest(ticket: &str) -> String {
    sha2::Sha256::digest(ticket.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A ticket for the caller's event stream in this environment (single use, short-lived).
#[utoipa::path(post, path = "/v1/environments/{env}/events/_ticket", tag = "events",
    params(("env" = String, Path, description = "environment id")),
    responses((status = 200, body = TicketView,
        description = "a single-use ticket for `GET /events?ticket=…`, bound to the caller and this environment")))]
pub async fn issue_ticket(
    State(state): State<AppState>,
    ctx: Ctx,
) -> Result<Json<TicketView>, ApiError> {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let ticket = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let ttl = state.sse_ticket_ttl();
    let now = now_ms();
    let expires_at = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let token_exp = ctx
        .principal
        .claims
        .get("exp")
        .and_then(serde_json::Value::as_i64);
    let hash = digest(&ticket);
    let db = state.read().database();
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM api_sse_tickets WHERE expires_at <= $1")
            .bind(now)
            .execute(pool)
            .await
            .map_err(store_err)?;
        sqlx::query(
            "INSERT INTO api_sse_tickets (hash, environment, subject, name, admin, token_exp, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&hash)
        .bind(ctx.environment.as_str())
        .bind(&ctx.principal.subject)
        .bind(&ctx.actor_name)
        .bind(i64::from(ctx.actor.admin))
        .bind(token_exp)
        .bind(expires_at)
        .execute(pool)
        .await
        .map_err(store_err)?;
    });
    tracing::info!(user = %ctx.actor.user, "an event-stream ticket is issued");
    Ok(Json(TicketView {
        ticket,
        expires_in: ttl.as_millis().div_ceil(1000) as u64,
    }))
}

fn store_err(e: sqlx::Error) -> ApiError {
    appreg_eventstore::StoreError::from(e).into()
}

/// The `ticket` query parameter, if any.
fn ticket_param(query: Option<&str>) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
}

/// The layer: a request with a `ticket` is the ticket's caller's, or 401; one without goes on
/// to the usual authentication.
async fn accept(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(ticket) = ticket_param(request.uri().query()) else {
        return Ok(next.run(request).await);
    };
    let (mut parts, body) = request.into_parts();
    let env = Path::<HashMap<String, String>>::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|Path(p)| p.get("env").cloned())
        .ok_or(ApiError::TicketInvalid)?;
    let ctx = redeem(&state, &ticket, &env, &parts).await?;
    parts.extensions.insert(ctx);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// Consumes `ticket` for the stream of `env`: its caller, or 401 (expired, used, unknown, or
/// issued in another environment: one answer).
async fn redeem(
    state: &AppState,
    ticket: &str,
    env: &str,
    parts: &axum::http::request::Parts,
) -> Result<Ctx, ApiError> {
    type Row = (String, String, Option<String>, i64, Option<i64>);
    let hash = digest(ticket);
    let now = now_ms();
    let db = state.read().database();
    let row: Option<Row> = on_pool!(db, pool => sqlx::query_as(
        "UPDATE api_sse_tickets SET used_at = $1 \
         WHERE hash = $2 AND used_at IS NULL AND expires_at > $1 \
         RETURNING environment, subject, name, admin, token_exp",
    )
    .bind(now)
    .bind(&hash)
    .fetch_optional(pool)
    .await
    .map_err(store_err)?);
    let Some((environment, subject, name, admin, token_exp)) = row else {
        tracing::info!("an event-stream ticket is refused");
        return Err(ApiError::TicketInvalid);
    };
    if environment != env {
        tracing::info!("an event-stream ticket of another environment is refused");
        return Err(ApiError::TicketInvalid);
    }
    let environment = EnvironmentId::parse(&environment).map_err(|_| ApiError::TicketInvalid)?;
    let user = UserId::parse(&subject).map_err(|_| ApiError::TicketInvalid)?;
    let mut claims = serde_json::Map::new();
    if let Some(exp) = token_exp {
        claims.insert("exp".into(), exp.into());
    }
    Ok(Ctx {
        principal: Principal {
            subject,
            // The ticket keeps the caller's name sealed only (the metadata's `actor_name`).
            name: None,
            email: None,
            roles: vec![],
            claims,
        },
        actor: Actor {
            user,
            admin: admin != 0,
        },
        environment,
        correlation_id: parts
            .extensions
            .get::<RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
        traceparent: request_traceparent(parts),
        actor_name: name,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_ticket_parameter_is_found_and_decoded() {
        assert_eq!(
            super::ticket_param(Some("a=1&ticket=abc%2Dd")).as_deref(),
            Some("abc-d")
        );
        assert_eq!(super::ticket_param(Some("tickets=x")), None);
        assert_eq!(super::ticket_param(None), None);
        assert_eq!(super::digest("x").len(), 64);
    }
}
