//! Events as stored and published: type name, schema version, payload, decode.

use crate::support::*;
use appreg_domain::application::ApplicationUpdated;
use appreg_domain::*;
use serde_json::json;

fn every_application_event() -> Vec<ApplicationEvent> {
    let web = Application::create(
        CreateApplication {
            description: Some(text("d")),
            domain: Some(text("app.example")),
            redirect_uris: uris(&["https://app.example/cb", "http://localhost:8080/cb"]),
            grant_types: vec![AC, IMPLICIT, RT],
            client_uri: Some(url("https://app.example")),
            logo_uri: Some(url("https://app.example/logo.png")),
            provider_id: Some("idp".into()),
            ..create_cmd(ApplicationType::Web)
        },
        &policy(),
    )
    .unwrap();
    let simple = Application::create(create_simple_with_client_id("cid-1"), &policy()).unwrap();
    let mut all = web;
    all.extend(simple);
    all.extend([
        dcr_requested(None),
        updated(ApplicationUpdated {
            name: name("n"),
            description: None,
            domain: Some(text("x")),
            client_id: Some(cid("cid-2")),
            oauth: None,
            changed: vec!["client_id".into(), "domain".into()],
        }),
        updated(ApplicationUpdated {
            name: name("n"),
            description: Some(text("d")),
            domain: None,
            client_id: None,
            oauth: Some(oauth(&["myapp://cb"], &[AC, PASSWORD])),
            changed: vec!["redirect_uris".into()],
        }),
        archived(Some(alice())),
        archived(None),
        restored(user("root")),
    ]);
    all
}

#[test]
fn every_application_event_round_trips() {
    let events = every_application_event();
    let mut types: Vec<&str> = events.iter().map(|e| e.event_type()).collect();
    types.sort();
    types.dedup();
    assert_eq!(
        types,
        [
            "ApplicationArchived",
            "ApplicationCreated",
            "ApplicationRestored",
            "ApplicationUpdated",
            "DcrRegistrationRequested"
        ]
    );
    for e in events {
        let current = if e.event_type() == "DcrRegistrationRequested" {
            2
        } else {
            1
        };
        assert_eq!(e.schema_version(), current);
        let data = e.data();
        assert!(data.is_object(), "{e:?}: {data}");
        // The payload carries no type tag of its own: that is the envelope's job.
        let decoded = ApplicationEvent::decode(e.event_type(), e.schema_version(), data.clone())
            .unwrap_or_else(|err| panic!("{e:?}: {err}"));
        assert_eq!(decoded, e);
        // And again through text, as it travels.
        let text = serde_json::to_string(&data).unwrap();
        let again =
            ApplicationEvent::decode(e.event_type(), 1, serde_json::from_str(&text).unwrap());
        assert_eq!(again.unwrap(), e);
    }
}

#[test]
fn the_event_type_names_the_variant() {
    for e in every_application_event() {
        let tagged = serde_json::to_value(&e).unwrap();
        assert_eq!(tagged["type"], e.event_type());
        assert_eq!(tagged["data"], e.data());
    }
}

#[test]
fn payloads_are_a_stable_contract() {
    let cmd = CreateApplication {
        client_id: Some(cid("c1")),
        ..create_cmd(ApplicationType::Simple)
    };
    let created = &Application::create(cmd, &policy()).unwrap()[0];
    assert_eq!(
        created.data(),
        json!({
            "id": APP.0.to_string(),
            "environment": "DEFAULT",
            "name": "Weather",
            "description": null,
            "domain": null,
            "type": "simple",
            "client_id": "c1",
            "oauth": null,
            "provider_id": null,
            "primary_owner": "alice",
        })
    );
    let web = &created_web()[0];
    assert_eq!(
        web.data()["oauth"],
        json!({
            "redirect_uris": ["https://app.example/callback"],
            "grant_types": ["authorization_code", "implicit"],
            "response_types": ["code", "token", "id_token"],
        })
    );
    assert_eq!(
        dcr_requested(Some("idp")).data(),
        json!({ "provider_id": "idp", "attempt": 1, "reason": "CREATED" })
    );
    assert_eq!(
        archived(Some(alice())).data(),
        json!({ "former_primary_owner": "alice" })
    );
    assert_eq!(
        restored(user("root")).data(),
        json!({ "primary_owner": "root" })
    );
}

fn created_web() -> Vec<ApplicationEvent> {
    Application::create(
        CreateApplication {
            grant_types: vec![IMPLICIT, AC],
            ..create_cmd(ApplicationType::Web)
        },
        &policy(),
    )
    .unwrap()
}

#[test]
fn decoding_an_unknown_type_fails() {
    for name in [
        "ApplicationDeleted",
        "",
        "applicationcreated",
        "ClientRegistrationSettingsUpdated",
    ] {
        let err = ApplicationEvent::decode(name, 1, json!({})).unwrap_err();
        assert!(
            matches!(&err, DecodeError::UnknownType(t) if t == name),
            "{err:?}"
        );
    }
    let err = SettingsEvent::decode("ApplicationCreated", 1, json!({})).unwrap_err();
    assert!(matches!(err, DecodeError::UnknownType(_)), "{err:?}");
}

#[test]
fn decoding_an_unsupported_schema_version_fails() {
    let e = restored(user("root"));
    for v in [0, 2, 99, -1] {
        let err = ApplicationEvent::decode(e.event_type(), v, e.data()).unwrap_err();
        assert!(
            matches!(&err, DecodeError::UnsupportedVersion(t, got) if t == "ApplicationRestored" && *got == v),
            "{err:?}"
        );
    }
    let s = SettingsEvent::ClientRegistrationSettingsUpdated(ClientRegistrationSettings::default());
    let err = SettingsEvent::decode(s.event_type(), 2, s.data()).unwrap_err();
    assert!(
        matches!(err, DecodeError::UnsupportedVersion(_, 2)),
        "{err:?}"
    );
}

#[test]
fn decoding_a_malformed_payload_fails() {
    for (t, data) in [
        ("ApplicationRestored", json!({})),
        ("ApplicationRestored", json!({ "primary_owner": 42 })),
        ("ApplicationCreated", json!({ "id": "not-a-uuid" })),
        ("ApplicationArchived", json!("text")),
    ] {
        let err = ApplicationEvent::decode(t, 1, data).unwrap_err();
        assert!(
            matches!(&err, DecodeError::Malformed(got, _) if got == t),
            "{err:?}"
        );
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn settings_events_round_trip() {
    let s = SettingsEvent::ClientRegistrationSettingsUpdated(ClientRegistrationSettings {
        allowed_types: AllowedTypes {
            simple: true,
            browser: false,
            web: true,
            native: false,
            backend_to_backend: true,
        },
        dcr_enabled: true,
    });
    assert_eq!(s.event_type(), "ClientRegistrationSettingsUpdated");
    assert_eq!(s.schema_version(), 1);
    assert_eq!(
        s.data(),
        json!({
            "allowed_types": {
                "simple": true,
                "browser": false,
                "web": true,
                "native": false,
                "backend_to_backend": true,
            },
            "dcr_enabled": true,
        })
    );
    assert_eq!(
        SettingsEvent::decode(s.event_type(), 1, s.data()).unwrap(),
        s
    );
}

#[test]
fn a_replayed_log_rebuilds_the_same_state() {
    // Encode every event, decode it back and fold: the same state as folding the originals.
    let mut log = created_web();
    log.push(archived(Some(alice())));
    log.push(restored(user("root")));
    let direct = given(log.clone()).state().clone();
    let replayed: Vec<ApplicationEvent> = log
        .iter()
        .map(|e| ApplicationEvent::decode(e.event_type(), e.schema_version(), e.data()).unwrap())
        .collect();
    assert_eq!(given(replayed).state(), &direct);
    // The state itself serialises (snapshots).
    let snap = serde_json::to_value(&direct).unwrap();
    assert_eq!(snap["status"], "ACTIVE");
    assert_eq!(snap["type"], "web");
    assert_eq!(snap["members"]["root"], "PRIMARY_OWNER");
    let back: Application = serde_json::from_value(snap).unwrap();
    assert_eq!(back, direct);
}
