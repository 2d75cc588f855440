//! Schema versions on read: what `DomainEvent::decode` accepts and the schema files must agree.
//!
//! Every event type is at schema version 1 today and no older payload was ever stored, so there
//! is no upcaster yet; these tests pin what the decoder does now (v1 decodes, any other version
//! is refused as unsupported rather than misread) and that every version it accepts has a
//! schema file. proto-schemas/README.md describes how a v2 and its upcaster are added.

use crate::corpus::{corpus, Sample};
use crate::schema_root;
use appreg_domain::application::ApplicationEvent;
use appreg_domain::environment::{EnvironmentEvent, UserEvent};
use appreg_domain::{DecodeError, DomainEvent, SettingsEvent};

/// Decodes a payload with the decoder of the sample's stream type, as version `schema_version`.
fn decode(s: &Sample, schema_version: i32) -> Result<serde_json::Value, DecodeError> {
    fn with<E: DomainEvent>(s: &Sample, v: i32) -> Result<serde_json::Value, DecodeError> {
        E::decode(s.event_type, v, s.data.clone()).map(|e| e.data())
    }
    match s.stream_type {
        "application" => with::<ApplicationEvent>(s, schema_version),
        "settings" => with::<SettingsEvent>(s, schema_version),
        "environment" => with::<EnvironmentEvent>(s, schema_version),
        "user" => with::<UserEvent>(s, schema_version),
        other => panic!("unknown stream type {other}"),
    }
}

/// One sample of each event type.
fn one_of_each() -> Vec<Sample> {
    let mut seen = std::collections::BTreeSet::new();
    corpus()
        .into_iter()
        .filter(|s| seen.insert(s.event_type))
        .collect()
}

#[test]
fn a_v1_payload_stored_as_version_1_decodes_to_the_current_type() {
    for s in one_of_each() {
        assert_eq!(s.schema_version, 1, "{}", s.event_type);
        assert_eq!(decode(&s, 1).unwrap(), s.data, "{}", s.event_type);
    }
}

#[test]
fn versions_the_decoder_does_not_know_are_refused() {
    for s in one_of_each() {
        for v in [0, 2, -1, i32::MAX] {
            match decode(&s, v) {
                Err(DecodeError::UnsupportedVersion(t, n)) => {
                    assert_eq!((t.as_str(), n), (s.event_type, v));
                }
                other => panic!(
                    "{} v{v}: expected UnsupportedVersion, got {other:?}",
                    s.event_type
                ),
            }
        }
    }
}

#[test]
fn every_version_the_decoder_reads_has_a_schema_file_and_back() {
    for s in one_of_each() {
        let dir = schema_root().join("events").join(s.event_type);
        for v in 1..=16 {
            let file = dir.join(format!("v{v}.json"));
            let readable = !matches!(decode(&s, v), Err(DecodeError::UnsupportedVersion(..)));
            assert_eq!(
                readable,
                file.exists(),
                "{} v{v}: the decoder {} it but its schema file {}",
                s.event_type,
                if readable { "reads" } else { "refuses" },
                if file.exists() {
                    "exists"
                } else {
                    "is missing"
                },
            );
        }
    }
}

#[test]
fn the_version_written_today_is_the_newest_schema() {
    for s in one_of_each() {
        let dir = schema_root().join("events").join(s.event_type);
        let next = dir.join(format!("v{}.json", s.schema_version + 1));
        assert!(
            dir.join(format!("v{}.json", s.schema_version)).exists() && !next.exists(),
            "{}: events are written as v{}, but the newest schema differs",
            s.event_type,
            s.schema_version
        );
    }
}
