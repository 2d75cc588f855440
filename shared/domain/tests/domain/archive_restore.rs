//! ArchiveApplication and RestoreApplication.

use crate::support::*;
use appreg_domain::*;
use ApplicationType::*;

/// What the restore of `archived_app(t)` by `admin` decides: an OAuth application archived
/// before its client was registered asks for it again (the saga's answer is refused while the
/// application is archived).
fn restore_events(t: ApplicationType, admin: &str) -> Vec<ApplicationEvent> {
    let mut events = vec![restored(user(admin))];
    if t.is_oauth() {
        events.push(ApplicationEvent::DcrRegistrationRequested(
            appreg_domain::application::DcrRegistrationRequested {
                provider_id: None,
                attempt: 2,
                reason: appreg_domain::application::RegistrationReason::Restored,
            },
        ));
    }
    events
}

fn archived_app(t: ApplicationType) -> Vec<ApplicationEvent> {
    let mut events = created(t);
    events.push(archived(Some(alice())));
    events
}

// --- Archive -----------------------------------------------------------------------------

#[test]
fn archiving_an_active_application() {
    for ty in ApplicationType::ALL {
        let then = given(created(ty))
            .when(archive())
            .then([archived(Some(alice()))]);
        let app = then.state();
        assert_eq!(app.status, ApplicationStatus::Archived, "{ty:?}");
        assert_eq!(app.primary_owner(), None, "{ty:?}");
        assert_eq!(app.role_of(&alice()), None, "{ty:?}");
        assert!(primary_owners(app).is_empty());
        assert_eq!(app.version, then.before.as_ref().unwrap().version + 1);
        assert_eq!(app.updated_at, t(app.version));
    }
}

#[test]
fn archiving_drops_only_the_primary_owner_link() {
    let then = given(created(Web))
        .with_member("olivia", Role::Owner)
        .with_member("ursula", Role::User)
        .when(archive())
        .then([archived(Some(alice()))]);
    let app = then.state();
    assert_eq!(app.role_of(&user("olivia")), Some(Role::Owner));
    assert_eq!(app.role_of(&user("ursula")), Some(Role::User));
    assert_eq!(app.members.len(), 2);
    // The definition is kept as it was.
    let before = then.before.as_ref().unwrap();
    assert_eq!(app.name, before.name);
    assert_eq!(app.oauth, before.oauth);
    assert_eq!(app.registration, before.registration);
    assert_eq!(app.created_at, before.created_at);
}

#[test]
fn archiving_names_the_current_primary_owner() {
    // After a restore, the restoring admin is the one whose link the next archive drops.
    let mut events = archived_app(Simple);
    events.push(restored(user("root")));
    given(events)
        .when(archive())
        .then([archived(Some(user("root")))]);
}

#[test]
fn archiving_an_archived_application_is_refused() {
    for t in ApplicationType::ALL {
        given(archived_app(t))
            .when(archive())
            .then_error("application.archived");
    }
}

// --- Restore -----------------------------------------------------------------------------

#[test]
fn only_an_administrator_may_restore() {
    for t in ApplicationType::ALL {
        // Not even the former primary owner.
        given(archived_app(t))
            .when(restore_by(member("alice")))
            .then_error("permission.admin_only");
        given(archived_app(t))
            .with_member("olivia", Role::Owner)
            .when(restore_by(member("olivia")))
            .then_error("permission.admin_only");
    }
}

#[test]
fn the_admin_check_comes_first() {
    // A non-admin learns nothing about the status.
    given(created(Simple))
        .when(restore_by(member("alice")))
        .then_error("permission.admin_only");
}

#[test]
fn restoring_an_active_application_is_refused() {
    for t in ApplicationType::ALL {
        given(created(t))
            .when(restore_by(admin("root")))
            .then_error("application.not_archived");
    }
}

#[test]
fn an_administrator_restores_and_becomes_primary_owner() {
    for t in ApplicationType::ALL {
        let then = given(archived_app(t))
            .when(restore_by(admin("root")))
            .then(restore_events(t, "root"));
        let app = then.state();
        assert_eq!(app.status, ApplicationStatus::Active, "{t:?}");
        assert_eq!(app.primary_owner(), Some(&user("root")), "{t:?}");
        assert_eq!(primary_owners(app), [user("root")]);
        // The former primary owner does not come back.
        assert_eq!(app.role_of(&alice()), None, "{t:?}");
        assert_eq!(app.app_type, t);
    }
}

#[test]
fn a_restoring_admin_who_is_a_member_is_promoted() {
    let then = given(archived_app(Browser))
        .with_member("olivia", Role::Owner)
        .with_member("ursula", Role::User)
        .when(restore_by(admin("olivia")))
        .then(restore_events(Browser, "olivia"));
    let app = then.state();
    assert_eq!(app.role_of(&user("olivia")), Some(Role::PrimaryOwner));
    assert_eq!(app.role_of(&user("ursula")), Some(Role::User));
    assert_eq!(app.members.len(), 2);
    assert_eq!(primary_owners(app), [user("olivia")]);
}

#[test]
fn archive_and_restore_can_repeat() {
    let mut log = created(Web);
    for (i, admin_name) in ["root", "ops", "root"].into_iter().enumerate() {
        let attempt = i as u32 + 2;
        let then = given(log.clone()).when(archive()).then_ok();
        log.extend(then.events);
        let then = given(log.clone())
            .when(restore_by(admin(admin_name)))
            .then([
                restored(user(admin_name)),
                ApplicationEvent::DcrRegistrationRequested(
                    appreg_domain::application::DcrRegistrationRequested {
                        provider_id: None,
                        attempt,
                        reason: appreg_domain::application::RegistrationReason::Restored,
                    },
                ),
            ]);
        log.extend(then.events);
        let app = given(log.clone()).state().clone();
        assert_eq!(app.status, ApplicationStatus::Active);
        assert_eq!(primary_owners(&app), [user(admin_name)]);
        assert_eq!(app.version, 2 + 3 * (i as i64 + 1));
        assert_eq!(app.registration.as_ref().unwrap().attempt, attempt);
    }
}

#[test]
fn a_restored_application_can_be_updated_again() {
    let mut events = archived_app(Simple);
    events.push(restored(user("root")));
    let then = given(events)
        .when(update(UpdateApplication {
            name: Some(name("Back")),
            ..Default::default()
        }))
        .then_ok();
    assert_eq!(then.state().name, name("Back"));
}

#[test]
fn commands_on_a_missing_application() {
    // The harness' view of an empty stream: there is nothing to act on.
    given([])
        .when(archive())
        .then_error("application.not_found");
    given([])
        .when(restore_by(admin("root")))
        .then_error("application.not_found");
}

#[test]
fn evolve_ignores_events_before_creation() {
    for e in [archived(None), restored(user("root")), dcr_requested(None)] {
        assert_eq!(Application::evolve(None, &e, t(1), 1), None);
    }
}
