//! UpdateApplication: archived refused, no change → no event, `changed`, Patch semantics, and
//! the OAuth settings re-validated as on creation.

use crate::support::*;
use appreg_domain::application::ApplicationUpdated;
use appreg_domain::*;
use ApplicationType::*;

fn upd() -> UpdateApplication {
    UpdateApplication::default()
}

/// A simple application with a description, a domain and a client_id.
fn full_simple() -> Vec<ApplicationEvent> {
    let cmd = CreateApplication {
        description: Some(text("Forecasts")),
        domain: Some(text("weather.example")),
        client_id: Some(cid("weather")),
        ..create_cmd(Simple)
    };
    Application::create(cmd, &policy()).unwrap()
}

/// A web application with two redirect URIs, two grants, a client_uri and a logo_uri.
fn full_web() -> Vec<ApplicationEvent> {
    let cmd = CreateApplication {
        redirect_uris: uris(&["https://app.example/a", "https://app.example/b"]),
        grant_types: vec![AC, RT],
        client_uri: Some(url("https://app.example")),
        logo_uri: Some(url("https://app.example/logo.png")),
        ..create_cmd(Web)
    };
    Application::create(cmd, &policy()).unwrap()
}

// --- Archived, no change -----------------------------------------------------------------

#[test]
fn an_archived_application_cannot_be_updated() {
    for t in ApplicationType::ALL {
        let mut events = created(t);
        events.push(archived(Some(alice())));
        given(events)
            .when(update(UpdateApplication {
                name: Some(name("New")),
                ..upd()
            }))
            .then_error("application.archived");
        // Even an empty update.
        let mut events = created(t);
        events.push(archived(Some(alice())));
        given(events)
            .when(update(upd()))
            .then_error("application.archived");
    }
}

#[test]
fn an_empty_update_changes_nothing() {
    for t in ApplicationType::ALL {
        given(created(t)).when(update(upd())).then_nothing();
    }
    given(full_simple()).when(update(upd())).then_nothing();
    given(full_web()).when(update(upd())).then_nothing();
}

#[test]
fn setting_the_current_values_changes_nothing() {
    given(full_simple())
        .when(update(UpdateApplication {
            name: Some(name("  Weather  ")),
            description: Patch::Set(text("Forecasts")),
            domain: Patch::Set(text("weather.example")),
            client_id: Patch::Set(cid("weather")),
            ..upd()
        }))
        .then_nothing();
    given(full_web())
        .when(update(UpdateApplication {
            name: Some(name("Weather")),
            redirect_uris: Some(uris(&["https://app.example/a", "https://app.example/b"])),
            // Same set, other order, a duplicate: normalised to the current value.
            grant_types: Some(vec![RT, AC, RT]),
            client_uri: Patch::Set(url("https://app.example")),
            logo_uri: Patch::Set(url("https://app.example/logo.png")),
            ..upd()
        }))
        .then_nothing();
    // Duplicated redirect URIs collapse to the current list.
    given(full_web())
        .when(update(UpdateApplication {
            redirect_uris: Some(uris(&[
                "https://app.example/a",
                "https://app.example/b",
                "https://app.example/a",
            ])),
            ..upd()
        }))
        .then_nothing();
}

#[test]
fn clearing_what_is_already_empty_changes_nothing() {
    given(created(Simple))
        .when(update(UpdateApplication {
            description: Patch::Clear,
            domain: Patch::Clear,
            client_id: Patch::Clear,
            ..upd()
        }))
        .then_nothing();
    given(created(BackendToBackend))
        .when(update(UpdateApplication {
            client_uri: Patch::Clear,
            logo_uri: Patch::Clear,
            redirect_uris: Some(vec![]),
            ..upd()
        }))
        .then_nothing();
}

// --- What changed ------------------------------------------------------------------------

#[test]
fn a_simple_update_lists_what_changed_and_carries_the_new_definition() {
    given(full_simple())
        .when(update(UpdateApplication {
            name: Some(name("Weather 2")),
            domain: Patch::Set(text("meteo.example")),
            ..upd()
        }))
        .then([updated(ApplicationUpdated {
            name: name("Weather 2"),
            description: Some(text("Forecasts")),
            domain: Some(text("meteo.example")),
            client_id: Some(cid("weather")),
            oauth: None,
            changed: vec!["name".into(), "domain".into()],
        })]);
}

#[test]
fn an_oauth_update_lists_what_changed_in_a_stable_order() {
    let then = given(full_web())
        .when(update(UpdateApplication {
            logo_uri: Patch::Clear,
            grant_types: Some(vec![AC, IMPLICIT]),
            redirect_uris: Some(uris(&["https://app.example/c"])),
            description: Patch::Set(text("d")),
            name: Some(name("W")),
            domain: Patch::Set(text("w.example")),
            client_uri: Patch::Set(url("https://w.example")),
            ..upd()
        }))
        .then_ok();
    assert_eq!(
        then.updated().changed,
        [
            "name",
            "description",
            "domain",
            "redirect_uris",
            "grant_types",
            "client_uri",
            "logo_uri"
        ]
    );
    let o = then.state().oauth.clone().unwrap();
    assert_eq!(o.redirect_uris, uris(&["https://app.example/c"]));
    assert_eq!(o.grant_types, [AC, IMPLICIT]);
    assert_eq!(
        o.response_types,
        [
            ResponseType::Code,
            ResponseType::Token,
            ResponseType::IdToken
        ]
    );
    assert_eq!(o.client_uri, Some(url("https://w.example")));
    assert_eq!(o.logo_uri, None);
    assert_eq!(then.updated().oauth.as_ref(), Some(&o));
}

#[test]
fn only_the_changed_fields_are_listed() {
    let cases: Vec<(UpdateApplication, &str)> = vec![
        (
            UpdateApplication {
                name: Some(name("N")),
                ..upd()
            },
            "name",
        ),
        (
            UpdateApplication {
                description: Patch::Clear,
                ..upd()
            },
            "description",
        ),
        (
            UpdateApplication {
                domain: Patch::Set(text("x.example")),
                ..upd()
            },
            "domain",
        ),
        (
            UpdateApplication {
                client_id: Patch::Set(cid("other")),
                ..upd()
            },
            "client_id",
        ),
    ];
    for (cmd, field) in cases {
        let then = given(full_simple()).when(update(cmd)).then_ok();
        assert_eq!(then.updated().changed, [field]);
    }
    let cases: Vec<(UpdateApplication, &str)> = vec![
        (
            UpdateApplication {
                redirect_uris: Some(uris(&["https://app.example/b", "https://app.example/a"])),
                ..upd()
            },
            "redirect_uris",
        ),
        (
            UpdateApplication {
                grant_types: Some(vec![AC]),
                ..upd()
            },
            "grant_types",
        ),
        (
            UpdateApplication {
                client_uri: Patch::Clear,
                ..upd()
            },
            "client_uri",
        ),
        (
            UpdateApplication {
                logo_uri: Patch::Set(url("https://cdn.example/logo.svg")),
                ..upd()
            },
            "logo_uri",
        ),
    ];
    for (cmd, field) in cases {
        let then = given(full_web()).when(update(cmd)).then_ok();
        assert_eq!(then.updated().changed, [field]);
    }
}

#[test]
fn evolving_an_update_replaces_the_definition() {
    let then = given(full_simple())
        .when(update(UpdateApplication {
            name: Some(name("Renamed")),
            description: Patch::Clear,
            ..upd()
        }))
        .then_ok();
    let app = then.state();
    assert_eq!(app.name, name("Renamed"));
    assert_eq!(app.description, None);
    assert_eq!(app.domain, Some(text("weather.example")));
    assert_eq!(app.client_id, Some(cid("weather")));
    assert_eq!(app.version, 2);
    assert_eq!(app.created_at, t(1));
    assert_eq!(app.updated_at, t(2));
    assert_eq!(app.status, ApplicationStatus::Active);
    assert_eq!(app.members, then.before.as_ref().unwrap().members);
}

#[test]
fn updating_twice_with_the_same_command_changes_nothing_the_second_time() {
    let cmd = UpdateApplication {
        name: Some(name("Again")),
        redirect_uris: Some(uris(&["https://app.example/z"])),
        grant_types: Some(vec![AC, IMPLICIT, RT]),
        ..upd()
    };
    let first = given(full_web()).when(update(cmd.clone())).then_ok();
    assert_eq!(first.events.len(), 1);
    let mut log = full_web();
    log.extend(first.events);
    given(log).when(update(cmd)).then_nothing();
}

// --- client_id ---------------------------------------------------------------------------

#[test]
fn a_simple_application_changes_its_client_id() {
    let then = given(created(Simple))
        .when(update(UpdateApplication {
            client_id: Patch::Set(cid("first")),
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.updated().changed, ["client_id"]);
    assert_eq!(then.updated().client_id, Some(cid("first")));
    assert_eq!(then.state().client_id, Some(cid("first")));

    let then = given(full_simple())
        .when(update(UpdateApplication {
            client_id: Patch::Set(cid("second")),
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.state().client_id, Some(cid("second")));

    let then = given(full_simple())
        .when(update(UpdateApplication {
            client_id: Patch::Clear,
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.updated().changed, ["client_id"]);
    assert_eq!(then.state().client_id, None);
}

#[test]
fn an_oauth_application_cannot_set_or_clear_a_client_id() {
    for t in OAUTH_TYPES {
        for patch in [Patch::Set(cid("chosen")), Patch::Clear] {
            given(created(t))
                .when(update(UpdateApplication {
                    client_id: patch,
                    ..upd()
                }))
                .then_field_errors(&[("client_id", "client_id.not_applicable")]);
        }
    }
}

// --- Patch semantics ---------------------------------------------------------------------

#[test]
fn patch_keep_clear_and_set() {
    // Keep.
    given(full_simple())
        .when(update(UpdateApplication {
            description: Patch::Keep,
            domain: Patch::Keep,
            client_id: Patch::Keep,
            ..upd()
        }))
        .then_nothing();
    // Clear.
    let then = given(full_simple())
        .when(update(UpdateApplication {
            description: Patch::Clear,
            domain: Patch::Clear,
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.updated().changed, ["description", "domain"]);
    assert_eq!(
        (
            then.state().description.clone(),
            then.state().domain.clone()
        ),
        (None, None)
    );
    assert_eq!(then.state().client_id, Some(cid("weather")), "kept");
    // Set.
    let then = given(created(Simple))
        .when(update(UpdateApplication {
            description: Patch::Set(text("new")),
            domain: Patch::Set(text("new.example")),
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.state().description, Some(text("new")));
    assert_eq!(then.state().domain, Some(text("new.example")));
    // The default is Keep.
    assert_eq!(Patch::<BoundedText>::default(), Patch::Keep);
}

#[test]
fn patch_semantics_of_client_and_logo_uris() {
    given(full_web())
        .when(update(UpdateApplication {
            client_uri: Patch::Keep,
            logo_uri: Patch::Keep,
            ..upd()
        }))
        .then_nothing();
    let then = given(full_web())
        .when(update(UpdateApplication {
            client_uri: Patch::Clear,
            logo_uri: Patch::Set(url("https://cdn.example/l.png")),
            ..upd()
        }))
        .then_ok();
    let o = then.state().oauth.clone().unwrap();
    assert_eq!(o.client_uri, None);
    assert_eq!(o.logo_uri, Some(url("https://cdn.example/l.png")));
    assert_eq!(
        o.redirect_uris,
        uris(&["https://app.example/a", "https://app.example/b"])
    );
    assert_eq!(o.grant_types, [AC, RT]);
}

#[test]
fn none_keeps_redirect_uris_and_grants() {
    let then = given(full_web())
        .when(update(UpdateApplication {
            name: Some(name("Only the name")),
            redirect_uris: None,
            grant_types: None,
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.updated().changed, ["name"]);
    let o = then.state().oauth.clone().unwrap();
    assert_eq!(o.redirect_uris.len(), 2);
    assert_eq!(o.grant_types, [AC, RT]);
}

#[test]
fn an_empty_grant_list_means_the_defaults() {
    let then = given(full_web())
        .when(update(UpdateApplication {
            grant_types: Some(vec![]),
            ..upd()
        }))
        .then_ok();
    assert_eq!(
        then.state().oauth.as_ref().unwrap().grant_types,
        Web.default_grant_types()
    );
}

// --- OAuth settings re-validated ---------------------------------------------------------

#[test]
fn removing_a_mandatory_grant_is_refused() {
    given(full_web())
        .when(update(UpdateApplication {
            grant_types: Some(vec![RT]),
            ..upd()
        }))
        .then_field_errors(&[("grant_types", "grant_type.mandatory_missing")]);
    given(created(Native))
        .when(update(UpdateApplication {
            grant_types: Some(vec![PASSWORD, IMPLICIT]),
            ..upd()
        }))
        .then_field_errors(&[("grant_types", "grant_type.mandatory_missing")]);
}

#[test]
fn a_disallowed_grant_is_refused_on_update() {
    for t in OAUTH_TYPES {
        for g in GrantType::ALL {
            if t.allowed_grant_types().contains(&g) {
                continue;
            }
            let mut grants = t.mandatory_grant_types().to_vec();
            grants.push(g);
            given(created(t))
                .when(update(UpdateApplication {
                    grant_types: Some(grants),
                    ..upd()
                }))
                .then_field_errors(&[("grant_types", "grant_type.not_allowed")]);
        }
    }
}

#[test]
fn redirect_uris_are_revalidated_on_update() {
    for t in [Browser, Web, Native] {
        given(created(t))
            .when(update(UpdateApplication {
                redirect_uris: Some(vec![]),
                ..upd()
            }))
            .then_field_errors(&[("redirect_uris", "redirect_uris.required")]);
        given(created(t))
            .when(update(UpdateApplication {
                redirect_uris: Some(uris(&["http://app.example/cb"])),
                ..upd()
            }))
            .then_field_errors(&[("redirect_uris[0]", "redirect_uri.insecure")]);
        given(created(t))
            .with_policy(Policy {
                allow_http_redirect_uris: true,
                ..policy()
            })
            .when(update(UpdateApplication {
                redirect_uris: Some(uris(&["http://app.example/cb"])),
                ..upd()
            }))
            .then_ok();
        let many: Vec<String> = (0..21)
            .map(|i| format!("https://app.example/{i}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        given(created(t))
            .when(update(UpdateApplication {
                redirect_uris: Some(uris(&many)),
                ..upd()
            }))
            .then_field_errors(&[("redirect_uris", "redirect_uris.too_many")]);
    }
    given(created(Web))
        .when(update(UpdateApplication {
            redirect_uris: Some(uris(&["myapp://cb"])),
            ..upd()
        }))
        .then_field_errors(&[("redirect_uris[0]", "redirect_uri.scheme")]);
    given(created(Native))
        .when(update(UpdateApplication {
            redirect_uris: Some(uris(&["myapp://cb"])),
            ..upd()
        }))
        .then_ok();
    given(created(BackendToBackend))
        .when(update(UpdateApplication {
            redirect_uris: Some(uris(&["https://app.example/cb"])),
            ..upd()
        }))
        .then_field_errors(&[("redirect_uris", "redirect_uris.not_applicable")]);
}

#[test]
fn existing_http_redirect_uris_are_rechecked_under_the_current_policy() {
    // Created while http was allowed everywhere; the policy is stricter now.
    let lenient = Policy {
        allow_http_redirect_uris: true,
        ..policy()
    };
    let cmd = CreateApplication {
        redirect_uris: uris(&["http://app.example/cb"]),
        ..create_cmd(Web)
    };
    let events = Application::create(cmd, &lenient).unwrap();
    given(events.clone())
        .when(update(UpdateApplication {
            name: Some(name("Renamed")),
            ..upd()
        }))
        .then_field_errors(&[("redirect_uris[0]", "redirect_uri.insecure")]);
    given(events)
        .with_policy(lenient)
        .when(update(UpdateApplication {
            name: Some(name("Renamed")),
            ..upd()
        }))
        .then_ok();
}

#[test]
fn simple_applications_refuse_oauth_fields_on_update() {
    given(created(Simple))
        .when(update(UpdateApplication {
            redirect_uris: Some(uris(&["https://app.example/cb"])),
            grant_types: Some(vec![AC]),
            client_uri: Patch::Set(url("https://app.example")),
            logo_uri: Patch::Set(url("https://app.example/logo.png")),
            ..upd()
        }))
        .then_field_errors(&[
            ("redirect_uris", "redirect_uris.not_applicable"),
            ("grant_types", "grant_types.not_applicable"),
            ("client_uri", "client_uri.not_applicable"),
            ("logo_uri", "logo_uri.not_applicable"),
        ]);
    // Empty lists and clearing are harmless.
    given(created(Simple))
        .when(update(UpdateApplication {
            redirect_uris: Some(vec![]),
            grant_types: Some(vec![]),
            client_uri: Patch::Clear,
            logo_uri: Patch::Clear,
            ..upd()
        }))
        .then_nothing();
}

#[test]
fn every_invalid_field_of_an_update_is_reported_at_once() {
    given(full_web())
        .when(update(UpdateApplication {
            client_id: Patch::Set(cid("x")),
            redirect_uris: Some(uris(&["http://app.example/cb", "myapp://cb"])),
            grant_types: Some(vec![CC]),
            ..upd()
        }))
        .then_field_errors(&[
            ("client_id", "client_id.not_applicable"),
            ("redirect_uris[0]", "redirect_uri.insecure"),
            ("redirect_uris[1]", "redirect_uri.scheme"),
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.mandatory_missing"),
        ]);
}

#[test]
fn updates_keep_the_type_and_registration() {
    let mut events = created(Native);
    let then = given(events.clone())
        .when(update(UpdateApplication {
            grant_types: Some(vec![AC, PASSWORD]),
            ..upd()
        }))
        .then_ok();
    assert_eq!(then.state().app_type, Native);
    assert_eq!(
        then.state().registration.as_ref().map(|r| r.state),
        Some(RegistrationState::Registering)
    );
    events.extend(then.events);
    assert_eq!(given(events).state().version, 3);
}
