//! What a relay's message claims, and the event its body describes. The projector trusts
//! neither before the event store confirms them ([`crate::fold`]); it never folds a body.

use appreg_eventstore::{LogPosition, StoredEvent};
use appreg_worker::envelope::{self, Envelope};

/// Why a message cannot become an event (it was not published by a relay).
#[derive(Debug, thiserror::Error)]
pub enum BadMessage {
    #[error("message without an Appreg-Position header")]
    NoPosition,
    #[error("message without a Nats-Msg-Id header")]
    NoEventId,
    #[error("message body is not an event envelope: {0}")]
    Body(serde_json::Error),
}

/// What a message claims: the event id and log position of the event it carries. The projector
/// trusts neither before the event store confirms them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub position: LogPosition,
    pub event_id: String,
}

/// The claim of a relay message's headers.
pub fn claim(headers: Option<&async_nats::HeaderMap>) -> Result<Claim, BadMessage> {
    let position = envelope::position(headers).ok_or(BadMessage::NoPosition)?;
    let event_id = headers
        .and_then(|h| h.get(envelope::MSG_ID_HEADER))
        .map(|v| v.as_str().to_string())
        .ok_or(BadMessage::NoEventId)?;
    Ok(Claim { position, event_id })
}

/// The event a relay message's body describes (for outside subscribers and tools; the projector
/// itself folds the store's events, never a message body).
pub fn decode(
    headers: Option<&async_nats::HeaderMap>,
    payload: &[u8],
) -> Result<StoredEvent, BadMessage> {
    let position = envelope::position(headers).ok_or(BadMessage::NoPosition)?;
    let e: Envelope = serde_json::from_slice(payload).map_err(BadMessage::Body)?;
    Ok(StoredEvent {
        position,
        event_id: e.event_id,
        stream_id: e.stream_id,
        stream_type: e.stream_type,
        version: e.version,
        event_type: e.event_type,
        schema_version: e.schema_version,
        data: e.data,
        metadata: e.metadata,
        recorded_at: e.at,
    })
}
