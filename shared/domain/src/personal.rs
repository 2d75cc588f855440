//! Personal data in events (DESIGN.md "Personal data"): names and e-mail addresses are carried
//! sealed with their subject's data key, which the edge holds (the vault); this crate never sees
//! a key or a plaintext it did not get. Why the domain carries the sealed value rather than the
//! plaintext: every copy the system keeps of the domain's state (the command path's snapshots
//! and cache, the read model's documents) then holds only ciphertext, which an erasure makes
//! unreadable; and sealing is deterministic per subject and field, so deciding still compares
//! values ("the same address again changes nothing").
//!
//! Events written before sealing (schema version 1 of `UserFirstSeen` and
//! `NotificationSettingsUpdated`) carry plaintext: their upcasters read it as [`Personal::Plain`]
//! until `appreg migrate` rewrites them sealed.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The field names values are sealed under (part of the sealed data: never change them): a
/// user's name (profiles, `actor_name`) and e-mail address (profiles, notification settings).
pub const FIELD_NAME: &str = "name";
pub const FIELD_EMAIL: &str = "email";

/// The prefix of a sealed value (`pd1.<base64url>`), as the vault writes it.
pub const SEALED_PREFIX: &str = "pd1.";

/// A personal value as the domain holds it: opaque.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Personal {
    /// Sealed with the subject's data key: `pd1.<base64url>`.
    Sealed(String),
    /// Plaintext of an event recorded before sealing (schema version 1).
    Plain(String),
}

impl Personal {
    /// A sealed value as the vault wrote it; `None` when it does not have a sealed value's form.
    pub fn sealed(text: String) -> Option<Personal> {
        is_sealed(&text).then_some(Personal::Sealed(text))
    }

    /// The sealed text, or the legacy plaintext.
    pub fn as_str(&self) -> &str {
        match self {
            Personal::Sealed(s) | Personal::Plain(s) => s,
        }
    }

    /// Whether this is the plaintext of an event recorded before sealing.
    pub fn is_plain(&self) -> bool {
        matches!(self, Personal::Plain(_))
    }
}

/// Whether `text` has the form of a sealed value.
pub fn is_sealed(text: &str) -> bool {
    text.strip_prefix(SEALED_PREFIX).is_some_and(|b| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

impl std::fmt::Debug for Personal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Personal::Sealed(s) => write!(f, "Sealed({} bytes)", s.len()),
            Personal::Plain(_) => f.write_str("Plain([REDACTED])"),
        }
    }
}

/// Sealed: the text itself; plain (only in state documents, never in a current event):
/// `{"plain": text}`, so the two never mix up.
impl Serialize for Personal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Personal::Sealed(s) => serializer.serialize_str(s),
            Personal::Plain(s) => {
                use serde::ser::SerializeMap;
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("plain", s)?;
                map.end()
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Wire {
    Sealed(String),
    Plain { plain: String },
}

impl<'de> Deserialize<'de> for Personal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Wire::deserialize(deserializer)? {
            Wire::Sealed(s) if is_sealed(&s) => Ok(Personal::Sealed(s)),
            Wire::Sealed(_) => Err(serde::de::Error::custom(
                "a personal value must be sealed (pd1.<base64url>)",
            )),
            Wire::Plain { plain } => Ok(Personal::Plain(plain)),
        }
    }
}

/// Upcasts the plaintext personal fields of a schema version 1 payload: each string of
/// `fields` becomes `{"plain": …}` (pure; the store is rewritten only by `appreg migrate`).
pub(crate) fn upcast_plain_fields(
    mut data: serde_json::Value,
    fields: &[&str],
) -> serde_json::Value {
    if let serde_json::Value::Object(map) = &mut data {
        for field in fields {
            if let Some(v) = map.get_mut(*field) {
                if let serde_json::Value::String(s) = v {
                    *v = serde_json::json!({ "plain": std::mem::take(s) });
                }
            }
        }
    }
    data
}

/// The personal fields of an event's payload, by event type: (key in the payload, field it is
/// sealed under), each sealed with the key of the payload's `user`.
pub fn payload_fields(event_type: &str) -> &'static [(&'static str, &'static str)] {
    match event_type {
        "UserFirstSeen" => &[("name", FIELD_NAME), ("email", FIELD_EMAIL)],
        "NotificationSettingsUpdated" => &[("email", FIELD_EMAIL)],
        _ => &[],
    }
}

/// The personal fields of every event's metadata, sealed with the key of its `actor`.
pub const METADATA_FIELDS: &[(&str, &str)] = &[("actor_name", FIELD_NAME)];

/// The subject of an event's personal payload fields (its `user`), when it has any.
pub fn payload_subject<'a>(event_type: &str, data: &'a serde_json::Value) -> Option<&'a str> {
    if payload_fields(event_type).is_empty() {
        return None;
    }
    data.get("user").and_then(serde_json::Value::as_str)
}

/// `object` (an event's payload or metadata) as readers see it once the subject of its personal
/// `fields` is erased: each field present becomes null and the object gets `erased: true`.
/// Nothing changes when none of the fields is present.
pub fn mark_erased(object: &mut serde_json::Value, fields: &[(&str, &str)]) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let mut any = false;
    for (key, _) in fields {
        if let Some(slot) = map.get_mut(*key) {
            *slot = serde_json::Value::Null;
            any = true;
        }
    }
    if any {
        map.insert("erased".into(), serde_json::Value::Bool(true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_and_plain_values_round_trip_without_mixing_up() {
        let sealed = Personal::sealed("pd1.abc-_9".into()).unwrap();
        assert_eq!(serde_json::to_value(&sealed).unwrap(), "pd1.abc-_9");
        let plain = Personal::Plain("pd1.looks-sealed".into());
        let json = serde_json::to_value(&plain).unwrap();
        assert_eq!(json, serde_json::json!({"plain": "pd1.looks-sealed"}));
        assert_eq!(serde_json::from_value::<Personal>(json).unwrap(), plain);
        assert!(serde_json::from_value::<Personal>("Alice".into()).is_err());
        assert!(Personal::sealed("Alice".into()).is_none());
        assert!(!format!("{plain:?}").contains("looks"));
    }

    #[test]
    fn version_1_strings_are_read_as_plaintext() {
        let v1 = serde_json::json!({"name": "pd1.x", "email": null, "user": "u"});
        let up = upcast_plain_fields(v1, &["name", "email"]);
        assert_eq!(
            up,
            serde_json::json!({"name": {"plain": "pd1.x"}, "email": null, "user": "u"})
        );
    }

    #[test]
    fn an_erased_subjects_fields_become_null_and_the_object_says_so() {
        let mut data = serde_json::json!({"user": "u", "name": "pd1.a", "email": null});
        mark_erased(&mut data, payload_fields("UserFirstSeen"));
        assert_eq!(
            data,
            serde_json::json!({"user": "u", "name": null, "email": null, "erased": true})
        );
        let mut metadata = serde_json::json!({"actor": "u", "environment": "dev"});
        mark_erased(&mut metadata, METADATA_FIELDS);
        assert_eq!(
            metadata,
            serde_json::json!({"actor": "u", "environment": "dev"})
        );
        assert_eq!(payload_subject("UserFirstSeen", &data), Some("u"));
        assert_eq!(payload_subject("ApplicationCreated", &data), None);
    }
}
