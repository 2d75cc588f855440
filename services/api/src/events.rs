//! `GET /v1/environments/{env}/events`: the lifecycle events the caller may see, as
//! Server-Sent Events. Each SSE event carries the log position as its `id`, the event type as
//! its `event` and the envelope JSON ([`Envelope`], the body the relay publishes on NATS) as its
//! `data`.
//!
//! Every connection follows the log with its own [`LogTailer`], from the `Last-Event-ID`
//! header's position (resuming: exactly the events after it, none lost, none twice) or, without
//! it, from the last committed event (only new events). What one caller can cost is bounded:
//! - open streams are limited per user and in all ([`crate::streams`]): more are answered 429
//!   (`events.too_many_streams`, with `Retry-After`);
//! - a resume point more than `sse_max_replay_events` events back is answered 410
//!   (`events.replay_too_old`: reload the state, then open a stream without `Last-Event-ID`),
//!   never replayed;
//! - the applications' states the role filter needs come from the command path's one bounded
//!   cache, shared by every connection and request (none kept per connection).
//!
//! Filtering:
//! - only events of the path's environment (`metadata.environment`);
//! - application events: administrators of the environment, and current members of the
//!   application (membership as of the event or later) whose role may read the event's
//!   permission group (notification settings need NOTIFICATION[R], which a USER member lacks);
//! - client registration settings events: everyone in the environment;
//! - `UserFirstSeen`: that user and administrators;
//! - everything else (`EnvironmentCreated`…): administrators.
//!
//! Heartbeats are SSE comments every `sse_heartbeat_ms` without an event. The stream ends when
//! the server shuts down or the caller's token expires (the client reconnects with
//! `Last-Event-ID`).

use crate::commands::{APPLICATION_STREAM, SETTINGS_STREAM, USER_STREAM};
use crate::error::{ApiError, Problem};
use crate::extract::Ctx;
use crate::state::AppState;
use crate::streams::{StreamPermit, StreamRefusal};
use crate::users::FirstVisit;
use crate::visibility::may_read_app_event;
use appreg_commands::ApplicationState;
use appreg_domain::environment::UserEvent;
use appreg_domain::permissions::Role;
use appreg_domain::DomainEvent;
use appreg_eventstore::{LogPosition, LogTailer, StoredEvent};
use appreg_worker::Envelope;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

pub fn router(first_visit: &FirstVisit) -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(crate::tickets::accepted_on(
        first_visit.state(),
        first_visit.on(routes!(events)),
    ))
}

/// Events read from the log per step of one connection.
const BATCH: i64 = 500;
/// Least time between two reads of a caught-up connection.
const GATHER: Duration = Duration::from_millis(5);
/// `Retry-After` of a stream refused by the limits, in seconds.
const RETRY_AFTER_SECONDS: u64 = 5;

/// Subscribe to the lifecycle events the caller may see (Server-Sent Events).
#[utoipa::path(get, path = "/v1/environments/{env}/events", tag = "events",
    params(("env" = String, Path, description = "environment id"),
        ("ticket" = Option<String>, Query, nullable = false, description = "a ticket of `POST /events/_ticket` (single use), instead of the Authorization header (for `EventSource`)"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, pattern = "^[0-9]{1,18}\\.[0-9]{1,18}$", description = "resume after this event id (a log position `tx.pos`)")),
    responses((status = 200, content_type = "text/event-stream",
            description = "`id:` the log position, `event:` the event type, `data:` the envelope JSON; heartbeats are comments"),
        (status = 401, body = Problem, description = "no valid token, or a ticket that is expired, used, unknown or another environment's (`auth.ticket_invalid`)"), (status = 404, body = Problem),
        (status = 410, body = Problem, description = "`Last-Event-ID` is more than `sse_max_replay_events` events back: reload the state, then open a stream without it"),
        (status = 422, body = Problem),
        (status = 429, body = Problem, description = "too many open streams (per user or in all); `Retry-After` says when to try again")))]
pub async fn events(
    State(state): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<LogPosition>().ok())
                .filter(|p| p.tx >= 0 && p.pos >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Last-Event-ID",
                        "last_event_id.invalid",
                        "not an event id of this stream",
                    )
                })?,
        ),
        None => None,
    };
    let permit = open_stream(&state, &ctx)?;
    let last = state.store().last_committed().await?;
    let from = match resume {
        Some(from) => {
            // Positions are one sequence for the whole log: the distance is (at most) the
            // number of events a resume would replay.
            let behind = last.pos.saturating_sub(from.pos);
            let max = state.sse_max_replay_events();
            if behind > max {
                tracing::info!(%from, %last, behind, max, "an event stream's resume point is too far back");
                return Err(ApiError::Gone {
                    code: "events.replay_too_old",
                    message: format!(
                        "a stream resumes at most {max} events back, and this id is {behind} back: reload the state, then open a stream without Last-Event-ID"
                    ),
                });
            }
            from
        }
        None => last,
    };
    let expires = ctx
        .principal
        .claims
        .get("exp")
        .and_then(serde_json::Value::as_i64)
        .map(|exp| {
            let left = exp.saturating_sub(chrono::Utc::now().timestamp()).max(0);
            tokio::time::Instant::now() + Duration::from_secs(left as u64)
        });
    let heartbeat = state.sse_heartbeat();
    let conn = Connection {
        tailer: LogTailer::new(state.store().clone(), from, BATCH).with_min_interval(GATHER),
        state,
        ctx,
        pending: VecDeque::new(),
        expires,
        _permit: permit,
    };
    let stream = futures::stream::unfold(conn, |mut conn| async move {
        conn.next().await.map(|event| (Ok(event), conn))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(heartbeat)))
}

/// A place among the open streams for the caller, or the 429 that says why not.
fn open_stream(state: &AppState, ctx: &Ctx) -> Result<StreamPermit, ApiError> {
    state
        .streams()
        .acquire(&ctx.principal.subject)
        .map_err(|refusal| {
            let message = match refusal {
                StreamRefusal::PerUser { limit } => format!(
                    "at most {limit} event streams of one user are open at once: close one, or retry later"
                ),
                StreamRefusal::Total { limit } => format!(
                    "the server has its most event streams open ({limit}): retry later"
                ),
            };
            tracing::info!(user = %ctx.actor.user, ?refusal, "an event stream is refused");
            ApiError::TooManyRequests {
                code: "events.too_many_streams",
                message,
                retry_after_seconds: RETRY_AFTER_SECONDS,
            }
        })
}

struct Connection {
    tailer: LogTailer,
    state: AppState,
    ctx: Ctx,
    pending: VecDeque<Event>,
    expires: Option<tokio::time::Instant>,
    /// The stream's place among the open streams, given back when the stream is dropped.
    _permit: StreamPermit,
}

impl Connection {
    /// The next SSE event to send; None ends the stream.
    async fn next(&mut self) -> Option<Event> {
        let closing = self.state.closing().clone();
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            let expiry = async {
                match self.expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let batch = tokio::select! {
                biased;
                _ = closing.cancelled() => return None,
                _ = expiry => return None,
                batch = self.tailer.next_batch() => batch,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "an event stream cannot read the log; ending it");
                    // The client reconnects with Last-Event-ID: nothing is lost.
                    return None;
                }
            };
            for e in &batch {
                let event = match self.visible(e).await {
                    // Personal fields opened for this reader (or `erased: true`).
                    Ok(true) => match crate::personal::reveal(&self.state, e).await {
                        Ok(e) => sse_event(&e).map(Some).map_err(ApiError::internal),
                        Err(err) => Err(err),
                    },
                    Ok(false) => Ok(None),
                    Err(err) => Err(err),
                };
                match event {
                    Ok(Some(event)) => self.pending.push_back(event),
                    Ok(None) => {}
                    Err(err) => {
                        // Send what came before this event, then end: the client reconnects
                        // with the last id it received, so this event is not skipped.
                        tracing::warn!(error = %err, event_id = %e.event_id, "an event stream cannot go on; ending it");
                        self.expires = Some(tokio::time::Instant::now());
                        break;
                    }
                }
            }
        }
    }

    /// Whether the caller may see `e`.
    async fn visible(&mut self, e: &StoredEvent) -> Result<bool, ApiError> {
        let env = e
            .metadata
            .get("environment")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("");
        if env != self.ctx.environment.as_str() {
            return Ok(false);
        }
        let admin = self.ctx.actor.admin;
        match e.stream_type.as_str() {
            APPLICATION_STREAM => {
                // An administrator's role is not needed (nor looked up).
                let role = if admin {
                    None
                } else {
                    self.role_of_caller(e).await?
                };
                Ok(may_read_app_event(&self.ctx.actor, role, &e.event_type))
            }
            // The settings and the catalogue are everyone's to read.
            SETTINGS_STREAM | appreg_domain::catalogue::CATALOGUE_STREAM => Ok(true),
            USER_STREAM => {
                if admin {
                    return Ok(true);
                }
                Ok(
                    match UserEvent::decode(&e.event_type, e.schema_version, e.data.clone()) {
                        Ok(u) => u.user() == &self.ctx.actor.user,
                        Err(_) => false,
                    },
                )
            }
            _ => Ok(admin),
        }
    }

    /// The caller's role in `e`'s application, as of `e` or later (None: not a member): the
    /// state in the command path's cache when it is that recent, else a load (which caches it
    /// for every other connection and request).
    async fn role_of_caller(&mut self, e: &StoredEvent) -> Result<Option<Role>, ApiError> {
        if e.stream_id
            .strip_prefix("application-")
            .is_none_or(|s| Uuid::parse_str(s).is_err())
        {
            return Ok(None);
        }
        let commands = self.state.commands();
        let app = match commands.cache().get::<ApplicationState>(&e.stream_id) {
            Some((app, version)) if version >= e.version => app,
            _ => {
                commands
                    .load::<ApplicationState>(&e.stream_id)
                    .await
                    .map_err(|e| ApiError::from(e.widen()))?
                    .state
            }
        };
        Ok(app
            .0
            .as_ref()
            .filter(|a| a.environment == self.ctx.environment)
            .and_then(|a| a.role_of(&self.ctx.actor.user)))
    }
}

fn sse_event(e: &StoredEvent) -> Result<Event, serde_json::Error> {
    Ok(Event::default()
        .id(e.position.to_string())
        .event(sanitize(&e.event_type))
        .data(serde_json::to_string(&Envelope::new(e))?))
}

/// An SSE field value must not contain a line break.
fn sanitize(s: &str) -> String {
    s.chars().filter(|c| *c != '\n' && *c != '\r').collect()
}
