//! The appreg domain: applications, their OAuth settings and the environment's client
//! registration settings, as pure functions.
//!
//! Commands are decided against the current state (`decide`), producing events; state is
//! rebuilt by folding events (`evolve`). This crate must never do I/O: no HTTP, no database, no
//! clock, no randomness — ids and times are passed in by the caller, so every rule can be
//! tested given/when/then.

pub mod application;
pub mod catalogue;
pub mod codes;
pub mod dcr;
pub mod environment;
pub mod error;
pub mod orphans;
pub mod permissions;
pub mod personal;
pub mod provider;
pub mod settings;
pub mod subscription;
pub mod values;
pub mod webhook;

pub use application::{
    Application, ApplicationEvent, ApplicationStatus, CreateApplication, OAuthSettings, Patch,
    Policy, Registration, RegistrationState, UpdateApplication,
};
pub use codes::{error_code, ErrorCode, ERROR_CODES};
pub use error::{DomainError, FieldError, FieldErrors};
pub use permissions::{Actor, Operation, Permission, Role};
pub use personal::Personal;
pub use settings::{AllowedTypes, ClientRegistrationSettings, SettingsEvent};
pub use values::*;

/// Every event type of appreg, whatever its stream (what a webhook's filter may name).
pub fn event_types() -> Vec<&'static str> {
    let mut all = application::EVENT_TYPES.to_vec();
    all.extend(["ClientRegistrationSettingsUpdated", "EnvironmentCreated"]);
    all.extend(environment::USER_EVENT_TYPES);
    all.extend(provider::EVENT_TYPES);
    all.extend(catalogue::EVENT_TYPES);
    all.extend(webhook::EVENT_TYPES);
    all
}

/// A uniqueness claim the event store must hold atomically with the events that need it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UniqueClaim {
    pub scope: String,
    pub value: String,
}

/// An event type and the schema version its payload is written in.
pub trait DomainEvent: Sized {
    /// The event's name, past tense (`ApplicationCreated`).
    fn event_type(&self) -> &'static str;
    /// Schema version of the payload `data()` produces.
    fn schema_version(&self) -> i32 {
        1
    }
    /// The payload, without the type tag.
    fn data(&self) -> serde_json::Value;
    /// Decodes a stored payload, upcasting older schema versions.
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self, DecodeError>;
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0}")]
    UnknownType(String),
    #[error("unsupported schema version {1} of {0}")]
    UnsupportedVersion(String, i32),
    #[error("malformed {0}: {1}")]
    Malformed(String, serde_json::Error),
}

/// Encodes an adjacently tagged enum variant's payload (`{"type":..,"data":..}` → `data`).
pub(crate) fn tagged_data<T: serde::Serialize>(event: &T) -> serde_json::Value {
    match serde_json::to_value(event) {
        Ok(serde_json::Value::Object(mut map)) => map.remove("data").unwrap_or_default(),
        _ => serde_json::Value::Null,
    }
}

/// Decodes a payload into an adjacently tagged enum, for schema version 1 events (or a payload
/// its type's `decode` already upcast to the current shape, passed as version 1). Every other
/// version is refused as unsupported: an event type whose payload changes gets a new schema file
/// and an upcaster in its `DomainEvent::decode` that turns the older payload into the current one
/// before calling this (proto-schemas/README.md, "Adding a schema version").
pub(crate) fn decode_tagged<T: serde::de::DeserializeOwned>(
    event_type: &str,
    schema_version: i32,
    known: &[&str],
    data: serde_json::Value,
) -> Result<T, DecodeError> {
    if !known.contains(&event_type) {
        return Err(DecodeError::UnknownType(event_type.to_string()));
    }
    if schema_version != 1 {
        return Err(DecodeError::UnsupportedVersion(
            event_type.to_string(),
            schema_version,
        ));
    }
    serde_json::from_value(serde_json::json!({ "type": event_type, "data": data }))
        .map_err(|e| DecodeError::Malformed(event_type.to_string(), e))
}

/// [`decode_tagged`] from the payload's JSON text instead of a parsed `serde_json::Value`:
/// the document `{"type": …, "data": …}` is parsed straight into `T` (the tag first, so serde
/// does not buffer the payload), the same derive as from a `Value`. `data` must be one JSON
/// value (as PostgreSQL's `jsonb` prints it). `None` when it does not decode: the caller then
/// decodes through [`decode_tagged`] for the canonical error (its messages carry no position).
pub(crate) fn decode_tagged_json<T: serde::de::DeserializeOwned>(
    event_type: &str,
    known: &[&str],
    data: &str,
) -> Option<T> {
    // Known types are plain identifiers: nothing in them needs escaping.
    if !known.contains(&event_type) {
        return None;
    }
    let mut doc = String::with_capacity(event_type.len() + data.len() + 20);
    doc.push_str("{\"type\":\"");
    doc.push_str(event_type);
    doc.push_str("\",\"data\":");
    doc.push_str(data);
    doc.push('}');
    serde_json::from_str(&doc).ok()
}
