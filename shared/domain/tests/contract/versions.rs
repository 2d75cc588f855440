//! Schema versions on read: what `DomainEvent::decode` accepts and the schema files must agree.
//!
//! Every event type is at schema version 1 but `DcrRegistrationRequested`, `DcrClientUpdateRequested`,
//! `DcrClientUpdated`, `ProviderCreated` and `ProviderUpdated`, at version 2: their stored v1
//! payloads are upcast on read. These tests pin what the decoder does (the current
//! version decodes as is, v1 of a v2 type is upcast, any other version is refused as
//! unsupported rather than misread) and that every version it accepts has a schema file, which
//! the payload it reads validates against. proto-schemas/README.md describes how a version is
//! added.

use crate::corpus::{corpus, Sample};
use crate::schema_root;
use appreg_domain::application::ApplicationEvent;
use appreg_domain::catalogue::CatalogueEvent;
use appreg_domain::environment::{EnvironmentEvent, UserEvent};
use appreg_domain::provider::ProviderEvent;
use appreg_domain::webhook::WebhookEvent;
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
        "providers" => with::<ProviderEvent>(s, schema_version),
        "catalogue" => with::<CatalogueEvent>(s, schema_version),
        "webhooks" => with::<WebhookEvent>(s, schema_version),
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
fn the_current_version_decodes_to_itself() {
    for s in one_of_each() {
        assert_eq!(
            decode(&s, s.schema_version).unwrap(),
            s.data,
            "{}",
            s.event_type
        );
    }
}

/// A `DcrRegistrationRequested` stored in schema version 1 (as every one before version 2 was)
/// is read as the current type: the first request, made at creation. The v1 payload is valid
/// against v1.json, the upcast one against v2.json.
#[test]
fn a_stored_v1_dcr_registration_requested_is_upcast_on_read() {
    use appreg_domain::application::{DcrRegistrationRequested, RegistrationReason};
    for provider in [serde_json::json!("corp-idp"), serde_json::Value::Null] {
        let v1 = serde_json::json!({ "provider_id": provider });
        assert!(crate::validator("events/DcrRegistrationRequested/v1.json").is_valid(&v1));
        let event = ApplicationEvent::decode("DcrRegistrationRequested", 1, v1).unwrap();
        assert_eq!(
            event,
            ApplicationEvent::DcrRegistrationRequested(DcrRegistrationRequested {
                provider_id: provider.as_str().map(String::from),
                attempt: 1,
                reason: RegistrationReason::Created,
            })
        );
        assert_eq!(event.schema_version(), 2);
        let current = event.data();
        assert!(crate::validator("events/DcrRegistrationRequested/v2.json").is_valid(&current));
        // The upcast payload is the current one: decoding it as v2 gives the same event.
        assert_eq!(
            ApplicationEvent::decode("DcrRegistrationRequested", 2, current).unwrap(),
            event
        );
    }
}

/// `DcrClientUpdateRequested` v1 payloads are v2 payloads (v2 only widened `changed`);
/// `DcrClientUpdated` v1 is read with `client_secret_removed: false`.
#[test]
fn stored_v1_client_update_events_are_read_as_v2() {
    use appreg_domain::application::{DcrClientUpdateRequested, DcrClientUpdated};
    let requested = serde_json::json!({ "changed": ["name", "redirect_uris"] });
    assert!(crate::validator("events/DcrClientUpdateRequested/v1.json").is_valid(&requested));
    let event = ApplicationEvent::decode("DcrClientUpdateRequested", 1, requested).unwrap();
    assert_eq!(
        event,
        ApplicationEvent::DcrClientUpdateRequested(DcrClientUpdateRequested {
            changed: vec!["name".into(), "redirect_uris".into()],
        })
    );
    assert_eq!(event.schema_version(), 2);
    assert!(crate::validator("events/DcrClientUpdateRequested/v2.json").is_valid(&event.data()));
    // v1 could not name the auth method; v2 can.
    let public = serde_json::json!({ "changed": ["token_endpoint_auth_method"] });
    assert!(!crate::validator("events/DcrClientUpdateRequested/v1.json").is_valid(&public));
    assert!(crate::validator("events/DcrClientUpdateRequested/v2.json").is_valid(&public));

    let updated = serde_json::json!({ "request_version": 7 });
    assert!(crate::validator("events/DcrClientUpdated/v1.json").is_valid(&updated));
    let event = ApplicationEvent::decode("DcrClientUpdated", 1, updated).unwrap();
    assert_eq!(
        event,
        ApplicationEvent::DcrClientUpdated(DcrClientUpdated {
            request_version: 7,
            client_secret_removed: false,
        })
    );
    assert_eq!(event.schema_version(), 2);
    let current = event.data();
    assert!(crate::validator("events/DcrClientUpdated/v2.json").is_valid(&current));
    assert_eq!(
        ApplicationEvent::decode("DcrClientUpdated", 2, current).unwrap(),
        event
    );
}

/// `ProviderCreated` / `ProviderUpdated` stored in schema version 1 (before providers had
/// `allow_cross_origin_endpoints`) are read with it false; the v1 payload is valid against
/// v1.json, the upcast one against v2.json.
#[test]
fn a_stored_v1_provider_event_is_upcast_on_read() {
    let samples: Vec<Sample> = corpus()
        .into_iter()
        .filter(|s| matches!(s.event_type, "ProviderCreated" | "ProviderUpdated"))
        .collect();
    assert!(samples.len() >= 4);
    for s in samples {
        let mut v1 = s.data.clone();
        v1["provider"]
            .as_object_mut()
            .unwrap()
            .remove("allow_cross_origin_endpoints");
        let file = format!("events/{}/v1.json", s.event_type);
        assert!(crate::validator(&file).is_valid(&v1), "{}", s.case);
        let event = ProviderEvent::decode(s.event_type, 1, v1).unwrap();
        assert_eq!(event.schema_version(), 2);
        let current = event.data();
        assert_eq!(current["provider"]["allow_cross_origin_endpoints"], false);
        let file = format!("events/{}/v2.json", s.event_type);
        assert!(crate::validator(&file).is_valid(&current), "{}", s.case);
        assert_eq!(
            ProviderEvent::decode(s.event_type, 2, current).unwrap(),
            event
        );
    }
}

#[test]
fn versions_the_decoder_does_not_know_are_refused() {
    for s in one_of_each() {
        let unknown = [0, s.schema_version + 1, -1, i32::MAX];
        for v in unknown {
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

/// `ApplicationEvent::decode_json` (a rebuild's decoder, from the payload's text) gives what
/// `decode` gives from the parsed payload — the same event, or an error with the same message —
/// for every application sample at every version, and for broken payloads.
#[test]
fn decoding_the_text_equals_decoding_the_value() {
    let same = |event_type: &str, v: i32, data: &serde_json::Value| {
        let text = data.to_string();
        let from_value = ApplicationEvent::decode(event_type, v, data.clone());
        let from_text = ApplicationEvent::decode_json(event_type, v, &text);
        match (&from_value, &from_text) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{event_type} v{v} {text}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{event_type} v{v}"),
            _ => panic!("{event_type} v{v} {text}: {from_value:?} but {from_text:?}"),
        }
    };
    let mut samples = 0;
    for s in corpus()
        .into_iter()
        .filter(|s| s.stream_type == "application")
    {
        samples += 1;
        for v in [0, 1, 2, s.schema_version, s.schema_version + 1] {
            same(s.event_type, v, &s.data);
        }
        same("NoSuchEvent", 1, &s.data);
        // Broken payloads: each field missing, then each field of the wrong type.
        if let serde_json::Value::Object(map) = &s.data {
            for key in map.keys() {
                let mut missing = map.clone();
                missing.remove(key);
                same(s.event_type, s.schema_version, &missing.into());
                let mut wrong = map.clone();
                wrong.insert(key.clone(), serde_json::json!([{ "x": 1 }]));
                same(s.event_type, s.schema_version, &wrong.into());
            }
        }
        for data in [
            serde_json::Value::Null,
            serde_json::json!(7),
            serde_json::json!("text"),
        ] {
            same(s.event_type, s.schema_version, &data);
        }
    }
    assert!(samples > 20, "the corpus has application events");
    // A stored v1 DcrRegistrationRequested is upcast on this path too.
    same(
        "DcrRegistrationRequested",
        1,
        &serde_json::json!({ "provider_id": "corp-idp" }),
    );
}
