//! CreateApplication: events per type, grant types, redirect URIs, client_id, field errors.

use crate::support::*;
use appreg_domain::application::MAX_REDIRECT_URIS;
use appreg_domain::*;
use ApplicationType::*;

fn with_grants(t: ApplicationType, grants: &[GrantType]) -> CreateApplication {
    CreateApplication {
        grant_types: grants.to_vec(),
        ..create_cmd(t)
    }
}

fn with_uris(t: ApplicationType, list: &[&str]) -> CreateApplication {
    CreateApplication {
        redirect_uris: uris(list),
        ..create_cmd(t)
    }
}

fn http_everywhere() -> Policy {
    Policy {
        allow_http_redirect_uris: true,
        ..policy()
    }
}

// --- Events per type ---------------------------------------------------------------------

#[test]
fn simple_creation_emits_application_created_only() {
    let cmd = CreateApplication {
        description: Some(text("Forecasts")),
        domain: Some(text("weather.example")),
        client_id: Some(cid("weather-client")),
        ..create_cmd(Simple)
    };
    let then = given([]).when(create(cmd.clone())).then([
        appreg_domain::ApplicationEvent::ApplicationCreated(
            appreg_domain::application::ApplicationCreated {
                id: APP,
                environment: env(),
                name: name("Weather"),
                description: Some(text("Forecasts")),
                domain: Some(text("weather.example")),
                app_type: Simple,
                client_id: Some(cid("weather-client")),
                oauth: None,
                provider_id: None,
                primary_owner: alice(),
            },
        ),
    ]);
    let app = then.state();
    assert_eq!(app.id, APP);
    assert_eq!(app.environment, env());
    assert_eq!(app.app_type, Simple);
    assert_eq!(app.status, ApplicationStatus::Active);
    assert_eq!(app.client_id, Some(cid("weather-client")));
    assert_eq!(app.oauth, None);
    assert_eq!(app.registration, None);
    assert_eq!(app.description, Some(text("Forecasts")));
    assert_eq!(app.domain, Some(text("weather.example")));
    assert_eq!(app.version, 1);
    assert_eq!(app.created_at, t(1));
    assert_eq!(app.updated_at, t(1));
}

#[test]
fn the_creator_becomes_the_only_member_and_primary_owner() {
    for t in ApplicationType::ALL {
        let then = given([]).when(create(create_cmd(t))).then_ok();
        let app = then.state();
        assert_eq!(app.members.len(), 1, "{t:?}");
        assert_eq!(app.role_of(&alice()), Some(Role::PrimaryOwner), "{t:?}");
        assert_eq!(app.primary_owner(), Some(&alice()), "{t:?}");
        assert_eq!(app.role_of(&user("bob")), None);
    }
}

#[test]
fn oauth_creation_also_requests_a_dcr_client() {
    let expected_oauth = |t: ApplicationType| match t {
        BackendToBackend => oauth(&[], &[CC]),
        _ => oauth(&["https://app.example/callback"], &[AC]),
    };
    for ty in OAUTH_TYPES {
        let cmd = create_cmd(ty);
        let then = given([]).when(create(cmd.clone())).then([
            created_from(&cmd, Some(expected_oauth(ty))),
            dcr_requested(None),
        ]);
        let app = then.state();
        assert_eq!(app.version, 2, "{ty:?}");
        assert_eq!(app.created_at, t(1));
        assert_eq!(app.updated_at, t(2));
        assert_eq!(app.client_id, None);
        assert_eq!(
            app.registration,
            Some(Registration {
                state: RegistrationState::Registering,
                error: None,
                error_description: None,
                request_version: 2,
                attempt: 1,
                provider_id: None,
                client_secret_fingerprint: None,
                client_secret_expires_at: None,
                client_deleted: false,
                operation: None,
            }),
            "{ty:?}"
        );
    }
}

#[test]
fn the_dcr_request_names_the_chosen_provider() {
    let cmd = CreateApplication {
        provider_id: Some("corporate-idp".into()),
        ..create_cmd(Web)
    };
    let then = given([]).when(create(cmd.clone())).then_ok();
    assert_eq!(then.events[1], dcr_requested(Some("corporate-idp")));
    assert_eq!(then.state().provider_id.as_deref(), Some("corporate-idp"));
}

#[test]
fn provider_id_rules() {
    given([])
        .when(create(CreateApplication {
            provider_id: Some("idp".into()),
            ..create_cmd(Simple)
        }))
        .then_field_errors(&[("provider_id", "provider_id.not_applicable")]);
    given([])
        .when(create(CreateApplication {
            provider_id: Some(String::new()),
            ..create_cmd(Native)
        }))
        .then_field_errors(&[("provider_id", "provider_id.invalid")]);
    given([])
        .when(create(CreateApplication {
            provider_id: Some("p".repeat(101)),
            ..create_cmd(Native)
        }))
        .then_field_errors(&[("provider_id", "provider_id.invalid")]);
    given([])
        .when(create(CreateApplication {
            provider_id: Some("p".repeat(100)),
            ..create_cmd(Native)
        }))
        .then_ok();
}

#[test]
fn client_and_logo_uris_are_kept_for_oauth_types() {
    for t in OAUTH_TYPES {
        let cmd = CreateApplication {
            client_uri: Some(url("https://app.example")),
            logo_uri: Some(url("https://app.example/logo.png")),
            ..create_cmd(t)
        };
        let then = given([]).when(create(cmd)).then_ok();
        let o = then.state().oauth.clone().unwrap();
        assert_eq!(o.client_uri, Some(url("https://app.example")), "{t:?}");
        assert_eq!(
            o.logo_uri,
            Some(url("https://app.example/logo.png")),
            "{t:?}"
        );
    }
}

#[test]
fn simple_applications_have_no_oauth_settings() {
    given([])
        .when(create(CreateApplication {
            redirect_uris: uris(&["https://app.example/cb"]),
            grant_types: vec![AC],
            client_uri: Some(url("https://app.example")),
            logo_uri: Some(url("https://app.example/logo.png")),
            ..create_cmd(Simple)
        }))
        .then_field_errors(&[
            ("redirect_uris", "redirect_uris.not_applicable"),
            ("grant_types", "grant_types.not_applicable"),
            ("client_uri", "client_uri.not_applicable"),
            ("logo_uri", "logo_uri.not_applicable"),
        ]);
}

// --- Grant types -------------------------------------------------------------------------

#[test]
fn default_grants_apply_when_none_are_given() {
    for t in OAUTH_TYPES {
        let then = given([]).when(create(create_cmd(t))).then_ok();
        let o = then.state().oauth.clone().unwrap();
        assert_eq!(o.grant_types, t.default_grant_types(), "{t:?}");
        assert_eq!(
            o.response_types,
            ResponseType::for_grants(t.default_grant_types())
        );
    }
}

#[test]
fn every_allowed_grant_set_with_the_mandatory_ones_is_accepted() {
    for t in OAUTH_TYPES {
        let allowed = t.allowed_grant_types();
        // Every non-empty subset of the allowed grants that contains the mandatory ones.
        for mask in 1u32..(1 << allowed.len()) {
            let grants: Vec<GrantType> = allowed
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, g)| *g)
                .collect();
            let has_mandatory = t.mandatory_grant_types().iter().all(|m| grants.contains(m));
            let when = given([]).when(create(with_grants(t, &grants)));
            if has_mandatory {
                let then = when.then_ok();
                let o = then.state().oauth.clone().unwrap();
                let mut sorted = grants.clone();
                sorted.sort();
                assert_eq!(o.grant_types, sorted, "{t:?}");
                assert_eq!(o.response_types, ResponseType::for_grants(&grants));
            } else {
                when.then_field_errors(&[("grant_types", "grant_type.mandatory_missing")]);
            }
        }
    }
}

#[test]
fn grants_outside_the_allowed_ones_are_refused_for_every_type() {
    for t in OAUTH_TYPES {
        for g in GrantType::ALL {
            if t.allowed_grant_types().contains(&g) {
                continue;
            }
            // With the mandatory grants present, the disallowed one is the only problem.
            let mut grants = t.mandatory_grant_types().to_vec();
            grants.push(g);
            given([])
                .when(create(with_grants(t, &grants)))
                .then_field_errors(&[("grant_types", "grant_type.not_allowed")]);
        }
    }
}

#[test]
fn browser_accepts_implicit_and_authorization_code() {
    for grants in [&[AC][..], &[IMPLICIT], &[AC, IMPLICIT]] {
        given([])
            .when(create(with_grants(Browser, grants)))
            .then_ok();
    }
    for g in [RT, PASSWORD, CC] {
        given([])
            .when(create(with_grants(Browser, &[AC, g])))
            .then_field_errors(&[("grant_types", "grant_type.not_allowed")]);
    }
}

#[test]
fn mandatory_grants_are_enforced() {
    given([])
        .when(create(with_grants(Web, &[RT])))
        .then_field_errors(&[("grant_types", "grant_type.mandatory_missing")]);
    given([])
        .when(create(with_grants(Web, &[IMPLICIT, RT])))
        .then_field_errors(&[("grant_types", "grant_type.mandatory_missing")]);
    given([])
        .when(create(with_grants(Native, &[PASSWORD])))
        .then_field_errors(&[("grant_types", "grant_type.mandatory_missing")]);
    given([])
        .when(create(with_grants(BackendToBackend, &[AC])))
        .then_field_errors(&[
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.mandatory_missing"),
        ]);
}

#[test]
fn each_disallowed_grant_is_reported() {
    given([])
        .when(create(with_grants(
            BackendToBackend,
            &[CC, AC, IMPLICIT, PASSWORD],
        )))
        .then_field_errors(&[
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.not_allowed"),
        ]);
}

#[test]
fn duplicate_grants_are_merged_and_sorted() {
    let then = given([])
        .when(create(with_grants(Native, &[RT, AC, RT, IMPLICIT, AC])))
        .then_ok();
    let o = then.state().oauth.clone().unwrap();
    assert_eq!(o.grant_types, [AC, IMPLICIT, RT]);
    assert_eq!(
        o.response_types,
        [
            ResponseType::Code,
            ResponseType::Token,
            ResponseType::IdToken
        ]
    );
}

#[test]
fn response_types_follow_the_grants() {
    let cases: [(ApplicationType, &[GrantType], &[ResponseType]); 5] = [
        (Web, &[AC], &[ResponseType::Code]),
        (
            Browser,
            &[IMPLICIT],
            &[ResponseType::Token, ResponseType::IdToken],
        ),
        (
            Browser,
            &[AC, IMPLICIT],
            &[
                ResponseType::Code,
                ResponseType::Token,
                ResponseType::IdToken,
            ],
        ),
        (BackendToBackend, &[CC], &[]),
        (Native, &[AC, PASSWORD, RT], &[ResponseType::Code]),
    ];
    for (t, grants, expected) in cases {
        let then = given([]).when(create(with_grants(t, grants))).then_ok();
        assert_eq!(
            then.state().oauth.as_ref().unwrap().response_types,
            expected,
            "{t:?} {grants:?}"
        );
    }
}

// --- Redirect URIs -----------------------------------------------------------------------

#[test]
fn redirect_uris_are_required_for_browser_web_and_native() {
    for t in [Browser, Web, Native] {
        given([])
            .when(create(with_uris(t, &[])))
            .then_field_errors(&[("redirect_uris", "redirect_uris.required")]);
    }
}

#[test]
fn redirect_uris_are_not_applicable_to_backend_to_backend_and_simple() {
    for t in [BackendToBackend, Simple] {
        given([])
            .when(create(with_uris(t, &["https://app.example/cb"])))
            .then_field_errors(&[("redirect_uris", "redirect_uris.not_applicable")]);
    }
}

#[test]
fn http_redirect_uris_only_for_loopback_hosts() {
    for t in [Browser, Web, Native] {
        for ok in [
            "http://localhost/cb",
            "http://localhost:8080/cb",
            "http://127.0.0.1:3000/cb",
            "http://[::1]:3000/cb",
        ] {
            given([]).when(create(with_uris(t, &[ok]))).then_ok();
        }
        let errors = given([])
            .when(create(with_uris(
                t,
                &["https://app.example/cb", "http://app.example/cb"],
            )))
            .then_field_errors(&[("redirect_uris[1]", "redirect_uri.insecure")]);
        assert!(errors.0[0].message.contains("http://app.example/cb"));
    }
}

#[test]
fn http_redirect_uris_anywhere_when_the_policy_allows_it() {
    for t in [Browser, Web, Native] {
        given([])
            .with_policy(http_everywhere())
            .when(create(with_uris(t, &["http://app.example/cb"])))
            .then_ok();
    }
}

#[test]
fn custom_schemes_only_for_native() {
    let custom = ["com.example.app:/oauth2redirect", "myapp://callback"];
    given([]).when(create(with_uris(Native, &custom))).then_ok();
    for t in [Browser, Web] {
        given([])
            .when(create(with_uris(t, &custom)))
            .then_field_errors(&[
                ("redirect_uris[0]", "redirect_uri.scheme"),
                ("redirect_uris[1]", "redirect_uri.scheme"),
            ]);
        // Even when http is allowed everywhere.
        given([])
            .with_policy(http_everywhere())
            .when(create(with_uris(t, &custom[..1])))
            .then_field_errors(&[("redirect_uris[0]", "redirect_uri.scheme")]);
    }
}

#[test]
fn native_apps_still_need_loopback_for_http() {
    given([])
        .when(create(with_uris(
            Native,
            &["myapp://cb", "http://app.example/cb"],
        )))
        .then_field_errors(&[("redirect_uris[1]", "redirect_uri.insecure")]);
}

#[test]
fn duplicate_redirect_uris_are_removed_keeping_the_order() {
    let then = given([])
        .when(create(with_uris(
            Web,
            &[
                "https://b.example/cb",
                "https://a.example/cb",
                "https://b.example/cb",
                "https://a.example/cb",
                "https://c.example/cb",
            ],
        )))
        .then_ok();
    assert_eq!(
        then.state().oauth.as_ref().unwrap().redirect_uris,
        uris(&[
            "https://b.example/cb",
            "https://a.example/cb",
            "https://c.example/cb"
        ])
    );
}

fn distinct_uris(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("https://app.example/cb/{i}"))
        .collect()
}

#[test]
fn at_most_20_redirect_uris() {
    assert_eq!(MAX_REDIRECT_URIS, 20);
    let twenty = distinct_uris(20);
    let twenty: Vec<&str> = twenty.iter().map(String::as_str).collect();
    let then = given([]).when(create(with_uris(Web, &twenty))).then_ok();
    assert_eq!(then.state().oauth.as_ref().unwrap().redirect_uris.len(), 20);

    let many = distinct_uris(21);
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    for t in [Browser, Web, Native] {
        given([])
            .when(create(with_uris(t, &many)))
            .then_field_errors(&[("redirect_uris", "redirect_uris.too_many")]);
    }
}

// --- client_id ---------------------------------------------------------------------------

#[test]
fn simple_applications_may_choose_a_client_id() {
    let then = given([])
        .when(create(create_simple_with_client_id("my-client")))
        .then_ok();
    assert_eq!(then.state().client_id, Some(cid("my-client")));
    let then = given([]).when(create(create_cmd(Simple))).then_ok();
    assert_eq!(then.state().client_id, None);
}

#[test]
fn client_id_is_not_applicable_to_oauth_types() {
    for t in OAUTH_TYPES {
        given([])
            .when(create(CreateApplication {
                client_id: Some(cid("chosen")),
                ..create_cmd(t)
            }))
            .then_field_errors(&[("client_id", "client_id.not_applicable")]);
    }
}

// --- Every problem at once ---------------------------------------------------------------

#[test]
fn every_invalid_field_is_reported_at_once() {
    // Three problems: a client_id on an OAuth type, no redirect URI, a disallowed grant.
    given([])
        .when(create(CreateApplication {
            client_id: Some(cid("chosen")),
            redirect_uris: vec![],
            grant_types: vec![PASSWORD],
            ..create_cmd(Browser)
        }))
        .then_field_errors(&[
            ("client_id", "client_id.not_applicable"),
            ("redirect_uris", "redirect_uris.required"),
            ("grant_types", "grant_type.not_allowed"),
        ]);
}

#[test]
fn settings_and_field_problems_are_reported_together() {
    given([])
        .with_policy(Policy::default())
        .when(create(CreateApplication {
            client_id: Some(cid("chosen")),
            redirect_uris: uris(&["http://app.example/cb", "myapp://cb"]),
            grant_types: vec![RT, CC],
            provider_id: Some(String::new()),
            ..create_cmd(Web)
        }))
        .then_field_errors(&[
            ("type", "type.dcr_disabled"),
            ("client_id", "client_id.not_applicable"),
            ("provider_id", "provider_id.invalid"),
            ("redirect_uris[0]", "redirect_uri.insecure"),
            ("redirect_uris[1]", "redirect_uri.scheme"),
            ("grant_types", "grant_type.not_allowed"),
            ("grant_types", "grant_type.mandatory_missing"),
        ]);
}

#[test]
fn a_refused_creation_has_no_event() {
    let when = given([]).when(create(with_uris(Web, &[])));
    assert!(when.result.is_err());
}

#[test]
fn created_in_another_environment() {
    let acme = EnvironmentId::parse("acme").unwrap();
    let then = given([])
        .when(create(CreateApplication {
            environment: acme.clone(),
            ..create_cmd(Simple)
        }))
        .then_ok();
    assert_eq!(then.state().environment, acme);
}
