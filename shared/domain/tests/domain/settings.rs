//! Client registration settings: which types may be created, and whether DCR is on.

use crate::support::*;
use appreg_domain::*;

fn settings(dcr_enabled: bool, allowed_types: AllowedTypes) -> ClientRegistrationSettings {
    ClientRegistrationSettings {
        allowed_types,
        dcr_enabled,
    }
}

fn only(t: ApplicationType, on: bool) -> AllowedTypes {
    let mut a = AllowedTypes::default();
    match t {
        ApplicationType::Simple => a.simple = on,
        ApplicationType::Browser => a.browser = on,
        ApplicationType::Web => a.web = on,
        ApplicationType::Native => a.native = on,
        ApplicationType::BackendToBackend => a.backend_to_backend = on,
    }
    a
}

fn policy_with(s: ClientRegistrationSettings) -> Policy {
    Policy {
        settings: s,
        allow_http_redirect_uris: false,
    }
}

#[test]
fn a_new_environment_allows_every_type_and_has_dcr_off() {
    let s = ClientRegistrationSettings::default();
    assert!(!s.dcr_enabled);
    for t in ApplicationType::ALL {
        assert!(s.allowed_types.allows(t), "{t:?}");
    }
    assert_eq!(Policy::default().settings, s);
    assert!(!Policy::default().allow_http_redirect_uris);
}

#[test]
fn settings_live_in_one_stream_per_environment() {
    assert_eq!(
        ClientRegistrationSettings::stream_id("DEFAULT"),
        "settings-DEFAULT"
    );
    assert_eq!(
        ClientRegistrationSettings::stream_id("acme"),
        "settings-acme"
    );
}

#[test]
fn allowed_types_flag_each_type() {
    for t in ApplicationType::ALL {
        let a = only(t, false);
        for u in ApplicationType::ALL {
            assert_eq!(a.allows(u), u != t, "{t:?} off, {u:?}");
        }
    }
}

#[test]
fn simple_is_allowed_without_dcr_unlike_gravitee() {
    let s = ClientRegistrationSettings::default();
    assert_eq!(s.can_create(ApplicationType::Simple), Ok(()));
    given([])
        .with_policy(Policy::default())
        .when(create(create_cmd(ApplicationType::Simple)))
        .then_ok();
}

#[test]
fn simple_is_refused_when_disabled_whatever_dcr_says() {
    for dcr in [false, true] {
        let s = settings(dcr, only(ApplicationType::Simple, false));
        assert_eq!(
            s.can_create(ApplicationType::Simple).unwrap_err().0,
            "type.not_allowed"
        );
        given([])
            .with_policy(policy_with(s))
            .when(create(create_cmd(ApplicationType::Simple)))
            .then_field_errors(&[("type", "type.not_allowed")]);
    }
}

#[test]
fn oauth_types_are_refused_when_dcr_is_off() {
    for t in OAUTH_TYPES {
        let s = ClientRegistrationSettings::default();
        assert_eq!(s.can_create(t).unwrap_err().0, "type.dcr_disabled", "{t:?}");
        given([])
            .with_policy(Policy::default())
            .when(create(create_cmd(t)))
            .then_field_errors(&[("type", "type.dcr_disabled")]);
    }
}

#[test]
fn oauth_types_are_refused_when_disabled_even_with_dcr_on() {
    for t in OAUTH_TYPES {
        let s = settings(true, only(t, false));
        assert_eq!(s.can_create(t).unwrap_err().0, "type.not_allowed", "{t:?}");
        given([])
            .with_policy(policy_with(s))
            .when(create(create_cmd(t)))
            .then_field_errors(&[("type", "type.not_allowed")]);
        // The other types are unaffected.
        for u in ApplicationType::ALL.into_iter().filter(|u| *u != t) {
            assert_eq!(s.can_create(u), Ok(()), "{t:?} off, {u:?}");
        }
    }
}

#[test]
fn a_disabled_type_is_reported_before_dcr_being_off() {
    for t in OAUTH_TYPES {
        let s = settings(false, only(t, false));
        assert_eq!(s.can_create(t).unwrap_err().0, "type.not_allowed", "{t:?}");
    }
}

#[test]
fn oauth_types_are_allowed_with_dcr_on() {
    let s = settings(true, AllowedTypes::default());
    for t in ApplicationType::ALL {
        assert_eq!(s.can_create(t), Ok(()), "{t:?}");
    }
}

#[test]
fn decide_update_without_change_produces_no_event() {
    let s = settings(true, only(ApplicationType::Native, false));
    assert_eq!(s.decide_update(s), Ok(vec![]));
    let d = ClientRegistrationSettings::default();
    assert_eq!(
        d.decide_update(ClientRegistrationSettings::default()),
        Ok(vec![])
    );
}

#[test]
fn decide_update_produces_one_event_per_change() {
    let before = ClientRegistrationSettings::default();
    let cases = [
        settings(true, AllowedTypes::default()),
        settings(false, only(ApplicationType::Simple, false)),
        settings(false, only(ApplicationType::BackendToBackend, false)),
        settings(
            true,
            AllowedTypes {
                simple: false,
                browser: false,
                web: false,
                native: false,
                backend_to_backend: false,
            },
        ),
    ];
    for after in cases {
        assert_eq!(
            before.decide_update(after),
            Ok(vec![SettingsEvent::ClientRegistrationSettingsUpdated(
                after
            )]),
            "{after:?}"
        );
    }
}

#[test]
fn evolve_replaces_the_settings() {
    let mut s = ClientRegistrationSettings::default();
    let new = settings(true, only(ApplicationType::Browser, false));
    for e in s.decide_update(new).unwrap() {
        s.evolve(&e);
    }
    assert_eq!(s, new);
    assert_eq!(s.decide_update(new), Ok(vec![]));
    // Back to the defaults.
    let back = s
        .decide_update(ClientRegistrationSettings::default())
        .unwrap();
    for e in &back {
        s.evolve(e);
    }
    assert_eq!(s, ClientRegistrationSettings::default());
}

#[test]
fn a_settings_change_applies_to_the_next_creation() {
    let mut s = ClientRegistrationSettings::default();
    given([])
        .with_policy(policy_with(s))
        .when(create(create_cmd(ApplicationType::Web)))
        .then_field_errors(&[("type", "type.dcr_disabled")]);
    for e in s
        .decide_update(settings(true, AllowedTypes::default()))
        .unwrap()
    {
        s.evolve(&e);
    }
    given([])
        .with_policy(policy_with(s))
        .when(create(create_cmd(ApplicationType::Web)))
        .then_ok();
}

#[test]
fn existing_applications_are_updated_even_when_their_type_is_disabled_later() {
    // Settings gate creation only: an application created before keeps working.
    let s = settings(false, AllowedTypes::default());
    let then = given(created(ApplicationType::Web))
        .with_policy(policy_with(s))
        .when(update(UpdateApplication {
            name: Some(name("Renamed")),
            ..Default::default()
        }))
        .then_ok();
    assert_eq!(then.state().name, name("Renamed"));
}
