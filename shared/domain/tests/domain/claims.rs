//! The `client_id` uniqueness claim (`claim_changes`): what the store must take and release
//! atomically with the events.

use crate::support::*;
use appreg_domain::application::claim_changes;
use appreg_domain::*;
use ApplicationType::*;

fn none() -> (Vec<UniqueClaim>, Vec<UniqueClaim>) {
    (vec![], vec![])
}

fn with_client_id(value: &str) -> Vec<ApplicationEvent> {
    Application::create(create_simple_with_client_id(value), &policy()).unwrap()
}

#[test]
fn creating_with_a_client_id_claims_it() {
    let then = given([])
        .when(create(create_simple_with_client_id("weather")))
        .then_ok();
    assert_eq!(then.claims(), (vec![claim("DEFAULT", "weather")], vec![]));
    assert_eq!(
        then.state().client_id_claim(),
        Some(claim("DEFAULT", "weather"))
    );
}

#[test]
fn the_claim_is_scoped_by_environment() {
    let cmd = CreateApplication {
        environment: EnvironmentId::parse("acme").unwrap(),
        ..create_simple_with_client_id("weather")
    };
    let then = given([]).when(create(cmd)).then_ok();
    assert_eq!(
        then.claims(),
        (
            vec![UniqueClaim {
                scope: "client_id/acme".into(),
                value: "weather".into(),
            }],
            vec![]
        )
    );
}

#[test]
fn creating_without_a_client_id_claims_nothing() {
    for t in ApplicationType::ALL {
        let then = given([]).when(create(create_cmd(t))).then_ok();
        assert_eq!(then.claims(), none(), "{t:?}");
        assert_eq!(then.state().client_id_claim(), None);
    }
}

#[test]
fn archiving_releases_the_claim() {
    let then = given(with_client_id("weather")).when(archive()).then_ok();
    assert_eq!(then.claims(), (vec![], vec![claim("DEFAULT", "weather")]));
    assert_eq!(then.state().client_id_claim(), None);
    // The archived application keeps its client_id, it just does not hold it.
    assert_eq!(then.state().client_id, Some(cid("weather")));
}

#[test]
fn restoring_claims_it_again() {
    let mut events = with_client_id("weather");
    events.push(archived(Some(alice())));
    let then = given(events).when(restore_by(admin("root"))).then_ok();
    assert_eq!(then.claims(), (vec![claim("DEFAULT", "weather")], vec![]));
}

#[test]
fn changing_the_client_id_releases_the_old_and_claims_the_new() {
    let then = given(with_client_id("old"))
        .when(update(UpdateApplication {
            client_id: Patch::Set(cid("new")),
            ..Default::default()
        }))
        .then_ok();
    assert_eq!(
        then.claims(),
        (vec![claim("DEFAULT", "new")], vec![claim("DEFAULT", "old")])
    );
}

#[test]
fn setting_a_first_client_id_claims_it() {
    let then = given(created(Simple))
        .when(update(UpdateApplication {
            client_id: Patch::Set(cid("first")),
            ..Default::default()
        }))
        .then_ok();
    assert_eq!(then.claims(), (vec![claim("DEFAULT", "first")], vec![]));
}

#[test]
fn clearing_the_client_id_releases_it() {
    let then = given(with_client_id("gone"))
        .when(update(UpdateApplication {
            client_id: Patch::Clear,
            ..Default::default()
        }))
        .then_ok();
    assert_eq!(then.claims(), (vec![], vec![claim("DEFAULT", "gone")]));
}

#[test]
fn an_update_that_keeps_the_client_id_changes_no_claim() {
    let then = given(with_client_id("weather"))
        .when(update(UpdateApplication {
            name: Some(name("Renamed")),
            ..Default::default()
        }))
        .then_ok();
    assert_eq!(then.events.len(), 1);
    assert_eq!(then.claims(), none());
    let then = given(with_client_id("weather"))
        .when(update(UpdateApplication::default()))
        .then_nothing();
    assert_eq!(then.claims(), none());
}

#[test]
fn oauth_applications_claim_nothing_through_their_lifecycle() {
    for t in OAUTH_TYPES {
        let mut log = vec![];
        let then = given([]).when(create(create_cmd(t))).then_ok();
        assert_eq!(then.claims(), none());
        log.extend(then.events);
        let then = given(log.clone()).when(archive()).then_ok();
        assert_eq!(then.claims(), none());
        log.extend(then.events);
        let then = given(log.clone()).when(restore_by(admin("root"))).then_ok();
        assert_eq!(then.claims(), none(), "{t:?}");
    }
}

#[test]
fn no_state_no_claim() {
    assert_eq!(claim_changes(None, None), none());
    let app = given(with_client_id("x")).state().clone();
    assert_eq!(claim_changes(Some(&app), Some(&app)), none());
    assert_eq!(
        claim_changes(None, Some(&app)),
        (vec![claim("DEFAULT", "x")], vec![])
    );
    assert_eq!(
        claim_changes(Some(&app), None),
        (vec![], vec![claim("DEFAULT", "x")])
    );
}
