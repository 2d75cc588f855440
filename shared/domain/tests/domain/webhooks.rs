//! Webhook endpoints (`webhooks-<env>`): environment-wide and per application, their URLs and
//! filters, limits, and the receiver's 410 that disables one.

use appreg_domain::webhook::*;
use appreg_domain::{DomainError, DomainEvent};

const APP: &str = "0190f0c8-6d1a-7c7e-8a51-00000000000a";
const OTHER_APP: &str = "0190f0c8-6d1a-7c7e-8a51-00000000000b";

fn app() -> WebhookScope {
    WebhookScope::Application(APP.into())
}

fn raw<'a>(url: &'a str, event_types: &'a [String]) -> RawWebhook<'a> {
    RawWebhook {
        url: Some(url),
        event_types,
        enabled: true,
        description: None,
    }
}

#[track_caller]
fn definition(url: &str, event_types: &[&str], scope: &WebhookScope) -> WebhookDefinition {
    let types: Vec<String> = event_types.iter().map(|s| s.to_string()).collect();
    WebhookDefinition::parse(raw(url, &types), scope, false).unwrap()
}

/// The (field, code) pairs of a refused definition.
#[track_caller]
fn refused(
    raw: RawWebhook<'_>,
    scope: &WebhookScope,
    allow_http: bool,
) -> Vec<(String, &'static str)> {
    match WebhookDefinition::parse(raw, scope, allow_http) {
        Err(DomainError::Invalid(errors)) => {
            errors.0.iter().map(|f| (f.field.clone(), f.code)).collect()
        }
        other => panic!("expected field errors, got {other:?}"),
    }
}

/// Decides with `f` against `r`, which must succeed, and folds the events into `r`.
#[track_caller]
fn run(
    r: &mut WebhookRegistry,
    f: impl FnOnce(&WebhookRegistry) -> Result<Vec<WebhookEvent>, DomainError>,
) -> Vec<WebhookEvent> {
    let events = f(r).unwrap_or_else(|e| panic!("{}: {e:?}", e.code()));
    for e in &events {
        r.evolve(e);
    }
    events
}

#[test]
fn urls_must_be_https_without_userinfo_and_at_most_2048_bytes() {
    let none: Vec<String> = vec![];
    let env = WebhookScope::Environment;
    let code = |url: &str, allow_http: bool| -> Vec<(String, &'static str)> {
        refused(raw(url, &none), &env, allow_http)
    };
    assert_eq!(
        code("http://hooks.example/in", false),
        [("url".into(), "webhook.url.not_https")]
    );
    // Loopback http only where allowed, and only on loopback.
    assert_eq!(
        code("http://127.0.0.1:9000/in", false),
        [("url".into(), "webhook.url.not_https")]
    );
    assert_eq!(
        code("http://hooks.example/in", true),
        [("url".into(), "webhook.url.not_https")]
    );
    assert!(WebhookDefinition::parse(raw("http://127.0.0.1:9000/in", &none), &env, true).is_ok());
    assert!(WebhookDefinition::parse(raw("http://[::1]:9000/in", &none), &env, true).is_ok());
    assert!(WebhookDefinition::parse(raw("http://localhost:9000/in", &none), &env, true).is_ok());
    for userinfo in [
        "https://user:pw@hooks.example/in",
        "https://user@hooks.example/in",
        "https://:pw@hooks.example/in",
        "https://@hooks.example/in",
    ] {
        assert_eq!(
            code(userinfo, false),
            [("url".into(), "webhook.url.userinfo")],
            "{userinfo}"
        );
    }
    // An @ in the path is no user information.
    assert!(WebhookDefinition::parse(raw("https://hooks.example/a@b", &none), &env, false).is_ok());
    for bad in [
        "hooks.example/in",
        "https:hooks.example",
        "https:///in",
        "ftp://hooks.example/in",
        "https://hooks.example/in#frag",
        "https://hooks.example/ in",
        "",
    ] {
        assert_eq!(
            code(bad, true),
            [("url".into(), "webhook.url.invalid")],
            "{bad:?}"
        );
    }
    let base = "https://hooks.example/";
    let longest = format!("{base}{}", "a".repeat(2048 - base.len()));
    assert!(WebhookDefinition::parse(raw(&longest, &none), &env, false).is_ok());
    let too_long = format!("{longest}a");
    assert_eq!(
        code(&too_long, false),
        [("url".into(), "webhook.url.too_long")]
    );
}

#[test]
fn an_unknown_event_type_is_refused_by_its_place_in_the_filter() {
    let types: Vec<String> = ["ApplicationCreated", "Nope", "PlanCreated", "MemberAdded"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // An application's endpoint takes application events only.
    assert_eq!(
        refused(raw("https://h.example/", &types), &app(), false),
        [
            ("event_types[1]".into(), "webhook.event_type.unknown"),
            ("event_types[2]".into(), "webhook.event_type.unknown")
        ]
    );
    // The environment's takes every event type of appreg.
    assert_eq!(
        refused(
            raw("https://h.example/", &types),
            &WebhookScope::Environment,
            false
        ),
        [("event_types[1]".into(), "webhook.event_type.unknown")]
    );
    // Every error at once, the URL's among them.
    let none = vec!["x".to_string()];
    let errors = refused(
        RawWebhook {
            url: None,
            event_types: &none,
            enabled: true,
            description: Some("a\u{7}b"),
        },
        &WebhookScope::Environment,
        false,
    );
    assert_eq!(
        errors,
        [
            ("url".into(), "field.required"),
            ("event_types[0]".into(), "webhook.event_type.unknown"),
            ("description".into(), "text.invalid")
        ]
    );
    // The filter is kept sorted and without repeats; the description trimmed.
    let dup: Vec<String> = ["MemberAdded", "ApplicationCreated", "MemberAdded"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let d = WebhookDefinition::parse(
        RawWebhook {
            url: Some("https://h.example/"),
            event_types: &dup,
            enabled: false,
            description: Some("  ops  "),
        },
        &app(),
        false,
    )
    .unwrap();
    assert_eq!(d.event_types, ["ApplicationCreated", "MemberAdded"]);
    assert_eq!(d.description.as_deref(), Some("ops"));
    assert!(!d.enabled);
}

#[test]
fn given_endpoints_of_both_scopes_each_scope_sees_only_its_own() {
    let mut r = WebhookRegistry::default();
    let env = WebhookScope::Environment;
    run(&mut r, |r| {
        r.create(
            "w1".into(),
            &env,
            definition("https://a.example/", &[], &env),
            "sha256:0000000000000001".into(),
        )
    });
    let events = run(&mut r, |r| {
        r.create(
            "w2".into(),
            &app(),
            definition("https://b.example/", &["MemberAdded"], &app()),
            "sha256:0000000000000002".into(),
        )
    });
    assert_eq!(events[0].event_type(), "WebhookCreated");
    assert!(r.get("w1", &env).is_some());
    assert!(
        r.get("w2", &env).is_none(),
        "an application's endpoint is not the environment's"
    );
    assert!(r.get("w1", &app()).is_none());
    assert!(r
        .get("w2", &WebhookScope::Application(OTHER_APP.into()))
        .is_none());
    assert_eq!(
        r.of(&app()).map(|w| w.id.as_str()).collect::<Vec<_>>(),
        ["w2"]
    );
    // Another scope's endpoint is not found for an update or a delete either.
    assert_eq!(
        r.update("w2", &env, definition("https://c.example/", &[], &env)),
        Err(DomainError::WebhookNotFound)
    );
    assert_eq!(r.delete("w1", &app()), Err(DomainError::WebhookNotFound));
    // The filter: only the named types, and nothing once disabled.
    let w2 = r.get("w2", &app()).unwrap();
    assert!(w2.wants("MemberAdded") && !w2.wants("ApplicationUpdated"));
    assert!(r.get("w1", &env).unwrap().wants("PlanCreated"));
}

#[test]
fn an_update_that_changes_nothing_appends_nothing_and_a_delete_forgets() {
    let mut r = WebhookRegistry::default();
    let env = WebhookScope::Environment;
    let d = definition("https://a.example/", &["PlanCreated"], &env);
    run(&mut r, |r| {
        r.create(
            "w1".into(),
            &env,
            d.clone(),
            "sha256:0000000000000001".into(),
        )
    });
    assert_eq!(r.update("w1", &env, d.clone()), Ok(vec![]));
    let changed = definition("https://a.example/v2", &[], &env);
    let events = run(&mut r, |r| r.update("w1", &env, changed.clone()));
    assert_eq!(events[0].event_type(), "WebhookUpdated");
    let w = r.get("w1", &env).unwrap();
    assert_eq!(w.url.as_str(), "https://a.example/v2");
    assert!(w.event_types.is_empty());
    assert_eq!(
        w.secret_fingerprint, "sha256:0000000000000001",
        "an update keeps the secret"
    );
    run(&mut r, |r| r.delete("w1", &env));
    assert!(r.webhooks.is_empty());
    assert_eq!(r.delete("w1", &env), Err(DomainError::WebhookNotFound));
}

#[test]
fn a_410_disables_an_endpoint_once_and_enabling_it_again_clears_the_reason() {
    let mut r = WebhookRegistry::default();
    let env = WebhookScope::Environment;
    let d = definition("https://a.example/", &[], &env);
    run(&mut r, |r| {
        r.create(
            "w1".into(),
            &env,
            d.clone(),
            "sha256:0000000000000001".into(),
        )
    });
    let events = run(&mut r, |r| r.disable("w1", DisabledReason::Gone));
    assert_eq!(events[0].event_type(), "WebhookDisabled");
    let w = r.get("w1", &env).unwrap();
    assert!(!w.enabled && !w.wants("PlanCreated"));
    assert_eq!(w.disabled_reason, Some(DisabledReason::Gone));
    assert_eq!(r.disable("w1", DisabledReason::Gone), Ok(vec![]), "once");
    assert_eq!(r.disable("nope", DisabledReason::Gone), Ok(vec![]));
    run(&mut r, |r| r.update("w1", &env, d.clone()));
    let w = r.get("w1", &env).unwrap();
    assert!(w.enabled && w.disabled_reason.is_none());
}

#[test]
fn an_application_has_at_most_10_endpoints() {
    let mut r = WebhookRegistry::default();
    for n in 0..MAX_APPLICATION_WEBHOOKS {
        run(&mut r, |r| {
            r.create(
                format!("w{n}"),
                &app(),
                definition("https://a.example/", &[], &app()),
                "sha256:0000000000000001".into(),
            )
        });
    }
    assert_eq!(
        r.create(
            "more".into(),
            &app(),
            definition("https://a.example/", &[], &app()),
            "sha256:0000000000000001".into()
        ),
        Err(DomainError::TooManyWebhooks)
    );
    // Another application's endpoints are counted on their own.
    let other = WebhookScope::Application(OTHER_APP.into());
    assert!(r
        .create(
            "more".into(),
            &other,
            definition("https://a.example/", &[], &other),
            "sha256:0000000000000001".into()
        )
        .is_ok());
}

#[test]
fn events_round_trip_and_unknown_versions_are_refused() {
    let mut r = WebhookRegistry::default();
    let env = WebhookScope::Environment;
    let mut all = run(&mut r, |r| {
        r.create(
            "w1".into(),
            &env,
            definition("https://a.example/", &["PlanCreated"], &env),
            "sha256:0000000000000001".into(),
        )
    });
    all.extend(run(&mut r, |r| r.disable("w1", DisabledReason::Gone)));
    all.extend(run(&mut r, |r| r.delete("w1", &env)));
    for e in all {
        let back = WebhookEvent::decode(e.event_type(), 1, e.data()).unwrap();
        assert_eq!(back, e);
        assert!(WebhookEvent::decode(e.event_type(), 2, e.data()).is_err());
    }
}
