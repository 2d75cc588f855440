//! What a published event looks like on NATS: the envelope JSON body and the headers.
//!
//! The envelope is a public contract (API.md "NATS", JSON Schema in `proto-schemas/`): add
//! fields freely, never rename or remove one. The headers are
//!
//! | header | value |
//! |---|---|
//! | `Nats-Msg-Id` | the event id (JetStream de-duplicates on it within the duplicate window) |
//! | `Nats-Expected-Last-Sequence` | the stream sequence the relay expects before this message |
//! | `Appreg-Position` | the event's log position `tx.pos`: where the relay resumes from |
//! | `traceparent` | the W3C trace context of the command, when its metadata has one |

use crate::subject::event_subject;
use appreg_eventstore::{LogPosition, StoredEvent};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The header carrying the log position of the event in a message.
pub const POSITION_HEADER: &str = "Appreg-Position";
/// The header JetStream de-duplicates on.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The body of every event message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub stream_id: String,
    pub stream_type: String,
    /// 1-based version of the event inside its stream.
    pub version: i64,
    /// The event type (`ApplicationCreated`…).
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: i32,
    /// When the event was recorded.
    pub at: DateTime<Utc>,
    /// environment, actor, correlation_id, causation_id, traceparent…
    pub metadata: serde_json::Value,
    pub data: serde_json::Value,
}

impl Envelope {
    pub fn new(event: &StoredEvent) -> Self {
        Envelope {
            event_id: event.event_id,
            stream_id: event.stream_id.clone(),
            stream_type: event.stream_type.clone(),
            version: event.version,
            event_type: event.event_type.clone(),
            schema_version: event.schema_version,
            at: event.recorded_at,
            metadata: event.metadata.clone(),
            data: event.data.clone(),
        }
    }
}

/// The environment of an event (from its metadata; empty if it has none).
pub fn environment(event: &StoredEvent) -> &str {
    event
        .metadata
        .get("environment")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
}

/// The subject of `event` under `prefix`.
pub fn subject(prefix: &str, event: &StoredEvent) -> String {
    event_subject(
        prefix,
        environment(event),
        &event.stream_type,
        &event.stream_id,
        &event.event_type,
    )
}

/// The headers of `event`'s message (without the expected-sequence header, which depends on the
/// stream).
pub fn headers(event: &StoredEvent) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(MSG_ID_HEADER, event.event_id.to_string().as_str());
    headers.insert(POSITION_HEADER, event.position.to_string().as_str());
    if let Some(traceparent) = event
        .metadata
        .get("traceparent")
        .and_then(serde_json::Value::as_str)
        .filter(|t| is_header_safe(t))
    {
        headers.insert(TRACEPARENT_HEADER, traceparent);
    }
    headers
}

/// Header values must not break the NATS header block.
fn is_header_safe(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b != b'\r' && b != b'\n')
}

/// The body of `event`'s message.
pub fn body(event: &StoredEvent) -> Result<Bytes, serde_json::Error> {
    serde_json::to_vec(&Envelope::new(event)).map(Bytes::from)
}

/// The log position a message carries, if any.
pub fn position(headers: Option<&HeaderMap>) -> Option<LogPosition> {
    headers?
        .get(POSITION_HEADER)
        .and_then(|value| value.as_str().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(metadata: serde_json::Value) -> StoredEvent {
        StoredEvent {
            position: LogPosition { tx: 812, pos: 4 },
            event_id: Uuid::now_v7(),
            stream_id: "user-DEFAULT/alice@example.com".into(),
            stream_type: "user".into(),
            version: 3,
            event_type: "UserSeen".into(),
            schema_version: 1,
            data: serde_json::json!({"a": 1}),
            metadata,
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn envelope_fields() {
        let e = event(serde_json::json!({"environment": "DEFAULT", "actor": "alice"}));
        let json: serde_json::Value = serde_json::from_slice(&body(&e).unwrap()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys.len(),
            9,
            "event_id, stream_id, stream_type, version, type, schema_version, at, metadata, data"
        );
        assert_eq!(json["type"], "UserSeen");
        assert_eq!(json["version"], 3);
        assert_eq!(json["event_id"], e.event_id.to_string());
        let back: Envelope = serde_json::from_value(json).unwrap();
        assert_eq!(back, Envelope::new(&e));
        assert_eq!(
            subject("appreg", &e),
            "appreg.DEFAULT.user.user-DEFAULT/alice@example%2Ecom.UserSeen"
        );
    }

    #[test]
    fn headers_carry_id_position_and_traceparent() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = event(serde_json::json!({"environment": "DEFAULT", "traceparent": tp}));
        let h = headers(&e);
        assert_eq!(
            h.get(MSG_ID_HEADER).unwrap().as_str(),
            e.event_id.to_string()
        );
        assert_eq!(h.get(TRACEPARENT_HEADER).unwrap().as_str(), tp);
        assert_eq!(position(Some(&h)), Some(LogPosition { tx: 812, pos: 4 }));

        let e = event(serde_json::json!({}));
        let h = headers(&e);
        assert!(h.get(TRACEPARENT_HEADER).is_none());
        assert_eq!(environment(&e), "");
        assert_eq!(
            subject("p", &e),
            "p.%.user.user-DEFAULT/alice@example%2Ecom.UserSeen"
        );
        assert_eq!(position(None), None);
    }
}
