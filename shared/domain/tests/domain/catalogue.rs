//! The catalogue (`catalogue-<env>`): APIs and their plans, created and closed by administrators.

use crate::support::API;
use appreg_domain::catalogue::*;
use appreg_domain::{DecodeError, DomainError, DomainEvent};
use serde_json::json;

fn fold(events: &[CatalogueEvent]) -> Catalogue {
    let mut c = Catalogue::default();
    for e in events {
        c.evolve(e);
    }
    c
}

/// Decides with `f` against `c`, which must succeed, and folds the events into `c`.
#[track_caller]
fn run(
    c: &mut Catalogue,
    f: impl FnOnce(&Catalogue) -> Result<Vec<CatalogueEvent>, DomainError>,
) -> Vec<CatalogueEvent> {
    let events = f(c).unwrap_or_else(|e| panic!("{}: {e:?}", e.code()));
    for e in &events {
        c.evolve(e);
    }
    events
}

#[track_caller]
fn field_errors(result: Result<Vec<CatalogueEvent>, DomainError>) -> Vec<(String, &'static str)> {
    match result {
        Err(DomainError::Invalid(errors)) => {
            let mut got: Vec<_> = errors.0.iter().map(|f| (f.field.clone(), f.code)).collect();
            got.sort();
            got
        }
        other => panic!("expected field errors, got {other:?}"),
    }
}

fn api_created(id: &str, name: &str, description: Option<&str>) -> CatalogueEvent {
    CatalogueEvent::ApiCreated(ApiCreated {
        id: id.into(),
        name: name.into(),
        description: description.map(String::from),
    })
}

fn definition(name: &str, security: PlanSecurity, validation: PlanValidation) -> PlanDefinition {
    PlanDefinition {
        name: name.into(),
        security,
        validation,
    }
}

fn plan_created(api: &str, id: &str, security: PlanSecurity) -> CatalogueEvent {
    CatalogueEvent::PlanCreated(PlanCreated {
        plan: Plan {
            id: id.into(),
            api_id: api.into(),
            name: format!("Plan {id}"),
            security,
            validation: PlanValidation::Manual,
            status: PlanStatus::Published,
        },
    })
}

/// An API with one plan of each security.
fn weather() -> Catalogue {
    fold(&[
        api_created(API, "Weather", None),
        plan_created(API, "p-free", PlanSecurity::Keyless),
        plan_created(API, "p-key", PlanSecurity::ApiKey),
        plan_created(API, "p-jwt", PlanSecurity::Jwt),
        plan_created(API, "p-oauth2", PlanSecurity::Oauth2),
    ])
}

#[test]
fn the_catalogue_stream() {
    assert_eq!(Catalogue::stream_id("DEFAULT"), "catalogue-DEFAULT");
    assert_eq!(CATALOGUE_STREAM, "catalogue");
}

// --- APIs --------------------------------------------------------------------------------

#[test]
fn creating_an_api() {
    let mut c = Catalogue::default();
    let events = run(&mut c, |c| {
        c.create_api("api-1".into(), "  Weather API ", Some("  Forecasts\u{a0}"))
    });
    assert_eq!(
        events,
        [api_created("api-1", "Weather API", Some("Forecasts"))]
    );
    let api = c.api("api-1").unwrap();
    assert_eq!(api.name, "Weather API");
    assert_eq!(api.description.as_deref(), Some("Forecasts"));
    assert!(api.plans.is_empty());
}

#[test]
fn an_empty_description_is_none() {
    for d in [None, Some(""), Some("   ")] {
        let events = Catalogue::default()
            .create_api("api-1".into(), "Weather", d)
            .unwrap();
        assert_eq!(events, [api_created("api-1", "Weather", None)], "{d:?}");
    }
}

#[test]
fn api_names_and_descriptions_are_checked() {
    let c = Catalogue::default();
    let longest = "é".repeat(MAX_NAME);
    assert!(c.create_api("a".into(), &longest, None).is_ok());
    let longest_description = "d".repeat(MAX_DESCRIPTION);
    assert!(c
        .create_api("a".into(), "n", Some(&longest_description))
        .is_ok());
    for name in [
        String::new(),
        "   ".into(),
        "é".repeat(MAX_NAME + 1),
        "a\u{7}b".into(),
    ] {
        assert_eq!(
            field_errors(c.create_api("a".into(), &name, None)),
            [("name".to_string(), "text.invalid")],
            "{name:?}"
        );
    }
    for d in ["d".repeat(MAX_DESCRIPTION + 1), "line\nbreak".into()] {
        assert_eq!(
            field_errors(c.create_api("a".into(), "n", Some(&d))),
            [("description".to_string(), "text.invalid")]
        );
    }
    // Every problem at once.
    assert_eq!(
        field_errors(c.create_api("a".into(), "", Some("\u{0}"))),
        [
            ("description".to_string(), "text.invalid"),
            ("name".to_string(), "text.invalid")
        ]
    );
}

#[test]
fn apis_are_limited() {
    let events: Vec<_> = (0..MAX_APIS)
        .map(|n| api_created(&format!("api-{n}"), "A", None))
        .collect();
    let mut almost = fold(&events[..MAX_APIS - 1]);
    run(&mut almost, |c| c.create_api("last".into(), "Last", None));
    assert_eq!(almost.apis.len(), MAX_APIS);
    let e = almost.create_api("over".into(), "Over", None).unwrap_err();
    assert_eq!(e.code(), "catalogue.limit");
    // An invalid command says so first.
    assert!(matches!(
        almost.create_api("over".into(), "", None),
        Err(DomainError::Invalid(_))
    ));
}

// --- Plans -------------------------------------------------------------------------------

#[test]
fn adding_a_plan_to_an_api() {
    let mut c = fold(&[api_created(API, "Weather", None)]);
    for (n, security) in [
        PlanSecurity::Keyless,
        PlanSecurity::ApiKey,
        PlanSecurity::Jwt,
        PlanSecurity::Oauth2,
    ]
    .into_iter()
    .enumerate()
    {
        for validation in [PlanValidation::Auto, PlanValidation::Manual] {
            let id = format!("p-{n}-{validation:?}");
            let events = run(&mut c, |c| {
                c.create_plan(API, id.clone(), definition(" Gold ", security, validation))
            });
            let want = Plan {
                id: id.clone(),
                api_id: API.into(),
                name: "Gold".into(),
                security,
                validation,
                status: PlanStatus::Published,
            };
            assert_eq!(
                events,
                [CatalogueEvent::PlanCreated(PlanCreated {
                    plan: want.clone()
                })]
            );
            assert_eq!(c.plan(&id), Some(&want));
        }
    }
    assert_eq!(c.api(API).unwrap().plans.len(), 8);
}

#[test]
fn a_plan_needs_an_existing_api_and_a_name() {
    let c = weather();
    let e = c
        .create_plan(
            "nope",
            "p".into(),
            definition("Gold", PlanSecurity::ApiKey, PlanValidation::Auto),
        )
        .unwrap_err();
    assert_eq!(e.code(), "api.not_found");
    for name in ["", " \t ", "a\u{1b}"] {
        assert_eq!(
            field_errors(c.create_plan(
                API,
                "p".into(),
                definition(name, PlanSecurity::ApiKey, PlanValidation::Auto)
            )),
            [("name".to_string(), "text.invalid")]
        );
    }
}

#[test]
fn plans_are_limited_per_api() {
    let mut events = vec![
        api_created(API, "Weather", None),
        api_created("other", "Other", None),
    ];
    for n in 0..MAX_PLANS {
        events.push(plan_created(API, &format!("p-{n}"), PlanSecurity::ApiKey));
    }
    let c = fold(&events);
    let gold = || definition("Gold", PlanSecurity::ApiKey, PlanValidation::Auto);
    let e = c.create_plan(API, "one-more".into(), gold()).unwrap_err();
    assert_eq!(e.code(), "catalogue.limit");
    // Another API has its own.
    assert!(c.create_plan("other", "one-more".into(), gold()).is_ok());
}

#[test]
fn plans_are_found_whatever_their_api() {
    let c = fold(&[
        api_created("a", "A", None),
        api_created("b", "B", None),
        plan_created("a", "pa", PlanSecurity::ApiKey),
        plan_created("b", "pb", PlanSecurity::Jwt),
    ]);
    assert_eq!(c.plan("pb").unwrap().api_id, "b");
    assert_eq!(c.plan("pa").unwrap().api_id, "a");
    assert_eq!(c.plan("nope"), None);
    assert_eq!(c.api("nope"), None);
}

#[test]
fn closing_a_plan() {
    let mut c = weather();
    let events = run(&mut c, |c| c.close_plan(API, "p-key"));
    assert_eq!(
        events,
        [CatalogueEvent::PlanClosed(PlanClosed {
            api_id: API.into(),
            plan_id: "p-key".into(),
        })]
    );
    assert_eq!(c.plan("p-key").unwrap().status, PlanStatus::Closed);
    // The other plans stay published; the closed one stays listed.
    for id in ["p-free", "p-jwt", "p-oauth2"] {
        assert_eq!(c.plan(id).unwrap().status, PlanStatus::Published);
    }
    assert_eq!(c.api(API).unwrap().plans.len(), 4);
    // Closing it again changes nothing.
    assert_eq!(c.close_plan(API, "p-key"), Ok(vec![]));
}

#[test]
fn closing_an_unknown_plan() {
    let c = fold(&[
        api_created(API, "Weather", None),
        api_created("other", "Other", None),
        plan_created("other", "p-other", PlanSecurity::ApiKey),
    ]);
    assert_eq!(
        c.close_plan("nope", "p-other").unwrap_err().code(),
        "api.not_found"
    );
    assert_eq!(
        c.close_plan(API, "nope").unwrap_err().code(),
        "plan.not_found"
    );
    // A plan is closed through its own API only.
    assert_eq!(
        c.close_plan(API, "p-other").unwrap_err().code(),
        "plan.not_found"
    );
}

#[test]
fn evolve_ignores_what_cannot_apply() {
    let c = weather();
    let mut after = c.clone();
    for e in [
        // A second ApiCreated for an existing id.
        api_created(API, "Renamed", Some("x")),
        plan_created("nope", "p-orphan", PlanSecurity::ApiKey),
        CatalogueEvent::PlanClosed(PlanClosed {
            api_id: "nope".into(),
            plan_id: "p-key".into(),
        }),
        CatalogueEvent::PlanClosed(PlanClosed {
            api_id: API.into(),
            plan_id: "nope".into(),
        }),
    ] {
        after.evolve(&e);
    }
    assert_eq!(after, c);
}

// --- Parsing and events ------------------------------------------------------------------

#[test]
fn securities_and_validations_parse_from_their_names() {
    for (s, v) in [
        ("KEYLESS", PlanSecurity::Keyless),
        ("API_KEY", PlanSecurity::ApiKey),
        ("JWT", PlanSecurity::Jwt),
        ("OAUTH2", PlanSecurity::Oauth2),
    ] {
        assert_eq!(PlanSecurity::parse(s), Ok(v));
        assert_eq!(serde_json::to_value(v).unwrap(), s);
        assert_eq!(v.needs_client_id(), s == "JWT" || s == "OAUTH2");
    }
    for (s, v) in [
        ("AUTO", PlanValidation::Auto),
        ("MANUAL", PlanValidation::Manual),
    ] {
        assert_eq!(PlanValidation::parse(s), Ok(v));
        assert_eq!(serde_json::to_value(v).unwrap(), s);
    }
    for bad in ["", "api_key", "OAUTH", "BASIC"] {
        assert_eq!(
            PlanSecurity::parse(bad).unwrap_err().0,
            "plan.security.invalid"
        );
    }
    for bad in ["", "auto", "MANUALLY"] {
        assert_eq!(
            PlanValidation::parse(bad).unwrap_err().0,
            "plan.validation.invalid"
        );
    }
}

#[test]
fn catalogue_events_are_a_stable_contract() {
    let events = [
        (
            api_created("api-1", "Weather", Some("Forecasts")),
            json!({"id": "api-1", "name": "Weather", "description": "Forecasts"}),
        ),
        (
            plan_created("api-1", "p-1", PlanSecurity::Oauth2),
            json!({"plan": {
                "id": "p-1",
                "api_id": "api-1",
                "name": "Plan p-1",
                "security": "OAUTH2",
                "validation": "MANUAL",
                "status": "PUBLISHED",
            }}),
        ),
        (
            CatalogueEvent::PlanClosed(PlanClosed {
                api_id: "api-1".into(),
                plan_id: "p-1".into(),
            }),
            json!({"api_id": "api-1", "plan_id": "p-1"}),
        ),
    ];
    for (e, data) in events {
        assert_eq!(e.schema_version(), 1);
        assert_eq!(e.data(), data, "{e:?}");
        let tagged = serde_json::to_value(&e).unwrap();
        assert_eq!(tagged["type"], e.event_type());
        assert_eq!(
            CatalogueEvent::decode(e.event_type(), 1, data.clone()).unwrap(),
            e
        );
        assert!(matches!(
            CatalogueEvent::decode(e.event_type(), 2, data.clone()),
            Err(DecodeError::UnsupportedVersion(_, 2))
        ));
    }
    assert!(matches!(
        CatalogueEvent::decode("ApplicationCreated", 1, json!({})),
        Err(DecodeError::UnknownType(_))
    ));
    assert!(matches!(
        CatalogueEvent::decode("PlanClosed", 1, json!({"api_id": "a"})),
        Err(DecodeError::Malformed(..))
    ));
}
