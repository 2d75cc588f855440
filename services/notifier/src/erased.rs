//! What a webhook receives of an erased user (DESIGN.md "Personal data"): like `GET /events`,
//! the personal fields whose subject is erased are null and their object says `erased: true`
//! (the payload's for `UserFirstSeen` and `NotificationSettingsUpdated`, the metadata's for the
//! `actor_name` of an event the user caused); a `UserErased` payload says `erased: true`. The
//! notifier never opens a sealed value: otherwise a receiver gets the sealed text, as NATS
//! consumers do, and reads names through the api.
//!
//! A subject is erased when their data key is gone ([`PersonalKeys::has_key`], cached in memory
//! for up to a minute: an erasure reaches the payloads recorded from then on). A user who signs
//! in again after an erasure gets a new key, under which their earlier values do not open; an
//! event sealed under the old key and recorded after that new key was made still shows the
//! sealed text (it opens for nobody).

use appreg_domain::personal::METADATA_FIELDS;
use appreg_domain::personal::{is_sealed, mark_erased, payload_fields, payload_subject};
use appreg_eventstore::StoredEvent;
use appreg_secrets::{PersonalError, PersonalKeys};
use appreg_worker::Envelope;
use serde_json::Value;

/// Whether one of `fields` of `object` holds a sealed value.
fn holds_sealed(object: &Value, fields: &[(&str, &str)]) -> bool {
    fields.iter().any(|(key, _)| {
        object
            .get(*key)
            .and_then(Value::as_str)
            .is_some_and(is_sealed)
    })
}

/// The envelope a receiver gets for `e`.
pub(crate) async fn envelope_of(
    keys: &PersonalKeys,
    e: &StoredEvent,
) -> Result<Envelope, PersonalError> {
    let mut envelope = Envelope::new(e);
    if let Some(actor) = envelope.metadata.get("actor").and_then(Value::as_str) {
        if holds_sealed(&envelope.metadata, METADATA_FIELDS) && !keys.has_key(actor).await? {
            mark_erased(&mut envelope.metadata, METADATA_FIELDS);
        }
    }
    if e.event_type == "UserErased" {
        if let Some(map) = envelope.data.as_object_mut() {
            map.insert("erased".into(), Value::Bool(true));
        }
    } else if let Some(subject) = payload_subject(&e.event_type, &envelope.data) {
        let fields = payload_fields(&e.event_type);
        if holds_sealed(&envelope.data, fields) && !keys.has_key(subject).await? {
            mark_erased(&mut envelope.data, fields);
        }
    }
    Ok(envelope)
}
