//! The client's life at its provider (Dynamic Client Registration, `dcr.rs`): the saga's answers
//! to a registration request, retries, secret renewals, client updates, deletion at the archive
//! and re-registration at the restore.

use crate::support::*;
use appreg_domain::application::{
    ClientOperationFailed, ClientOperationKind, ClientSecretRenewalRequested, ClientSecretRenewed,
    DcrClientDeleted, DcrClientRegistered, DcrClientUpdateRequested, DcrClientUpdated,
    DcrRegistrationFailed, DcrRegistrationRequested, OperationState, OrphanClientDetected,
    RegistrationReason,
};
use appreg_domain::dcr::{
    IssuedClient, ProviderFailure, MAX_ERROR, MAX_ERROR_DESCRIPTION, UNKNOWN_ERROR,
};
use appreg_domain::*;
use proptest::prelude::*;
use ApplicationType::*;

const PROVIDER: &str = "corp-idp";
const FINGERPRINT: &str = "sha256:ba7816bf8f01cfea";

// --- Fixtures ----------------------------------------------------------------------------

fn issued(client_id: &str) -> IssuedClient {
    IssuedClient {
        provider_id: PROVIDER.into(),
        client_id: cid(client_id),
        client_secret_fingerprint: Some(FINGERPRINT.into()),
        client_secret_expires_at: Some(t(86_400)),
    }
}

fn registered(request_version: i64, client_id: &str) -> ApplicationEvent {
    let i = issued(client_id);
    ApplicationEvent::DcrClientRegistered(DcrClientRegistered {
        request_version,
        provider_id: i.provider_id,
        client_id: i.client_id,
        client_secret_fingerprint: i.client_secret_fingerprint,
        client_secret_expires_at: i.client_secret_expires_at,
    })
}

fn failure(error: &str) -> ProviderFailure {
    ProviderFailure {
        error: error.into(),
        error_description: Some("the provider said no".into()),
    }
}

fn registration_failed(request_version: i64, error: &str) -> ApplicationEvent {
    ApplicationEvent::DcrRegistrationFailed(DcrRegistrationFailed {
        request_version,
        provider_id: Some(PROVIDER.into()),
        error: error.into(),
        error_description: Some("the provider said no".into()),
    })
}

fn requested(attempt: u32, reason: RegistrationReason) -> ApplicationEvent {
    ApplicationEvent::DcrRegistrationRequested(DcrRegistrationRequested {
        provider_id: None,
        attempt,
        reason,
    })
}

fn renewal_requested() -> ApplicationEvent {
    ApplicationEvent::ClientSecretRenewalRequested(ClientSecretRenewalRequested {})
}

/// A web application created at versions 1–2: its registration request is version 2.
fn registering() -> Vec<ApplicationEvent> {
    created(Web)
}

/// … registered with client `kc-1` at version 3.
fn registered_app() -> Vec<ApplicationEvent> {
    let mut events = registering();
    events.push(registered(2, "kc-1"));
    events
}

/// … its registration refused at version 3.
fn failed_app() -> Vec<ApplicationEvent> {
    let mut events = registering();
    events.push(registration_failed(2, "invalid_redirect_uri"));
    events
}

fn registration(app: &Application) -> &Registration {
    app.registration.as_ref().expect("no registration")
}

// --- The saga's answer to a registration request ------------------------------------------

#[test]
fn the_sagas_answer_registers_the_client() {
    let then = given(registering())
        .when_app(|a| a.register_dcr_client(2, issued("kc-1")))
        .then([registered(2, "kc-1")]);
    let app = then.state();
    assert_eq!(app.client_id, Some(cid("kc-1")));
    let r = registration(app);
    assert_eq!(r.state, RegistrationState::Registered);
    assert_eq!(r.provider_id.as_deref(), Some(PROVIDER));
    assert_eq!(r.client_secret_fingerprint.as_deref(), Some(FINGERPRINT));
    assert_eq!(r.client_secret_expires_at, Some(t(86_400)));
    assert_eq!((r.request_version, r.attempt), (2, 1));
    // The issued client_id is unique among the environment's active applications.
    assert_eq!(app.client_id_claim(), Some(claim("DEFAULT", "kc-1")));
    assert_eq!(then.claims(), (vec![claim("DEFAULT", "kc-1")], vec![]));
}

#[test]
fn every_oauth_type_can_be_registered() {
    for ty in OAUTH_TYPES {
        let then = given(created(ty))
            .when_app(|a| a.register_dcr_client(2, issued("kc-1")))
            .then([registered(2, "kc-1")]);
        assert_eq!(then.state().client_id, Some(cid("kc-1")), "{ty:?}");
    }
}

#[test]
fn the_same_answer_again_decides_nothing() {
    given(registered_app())
        .when_app(|a| a.register_dcr_client(2, issued("kc-1")))
        .then_nothing();
}

#[test]
fn another_client_for_an_answered_request_is_refused() {
    // The saga then deletes the second client (or records an orphan).
    given(registered_app())
        .when_app(|a| a.register_dcr_client(2, issued("kc-2")))
        .then_error("application.registration.stale_request");
}

#[test]
fn an_answer_for_an_older_request_is_refused() {
    // Refused at 3, retried at 4: the answers to request 2 are stale.
    let mut events = failed_app();
    events.push(requested(2, RegistrationReason::Retry));
    let g = given(events);
    assert_eq!(registration(g.state()).request_version, 4);
    g.clone()
        .when_app(|a| a.register_dcr_client(2, issued("kc-1")))
        .then_error("application.registration.stale_request");
    g.clone()
        .when_app(|a| a.fail_dcr_registration(2, None, failure("x")))
        .then_error("application.registration.stale_request");
    // A version the application never requested is no better.
    g.clone()
        .when_app(|a| a.register_dcr_client(5, issued("kc-1")))
        .then_error("application.registration.stale_request");
    g.when_app(|a| a.register_dcr_client(4, issued("kc-1")))
        .then([registered(4, "kc-1")]);
}

#[test]
fn an_answer_for_an_archived_application_is_refused() {
    let mut events = registering();
    events.push(archived(Some(alice())));
    given(events)
        .when_app(|a| a.register_dcr_client(2, issued("kc-1")))
        .then_error("application.archived");
}

#[test]
fn a_refusal_records_the_providers_error() {
    let then = given(registering())
        .when_app(|a| {
            a.fail_dcr_registration(2, Some(PROVIDER.into()), failure("invalid_redirect_uri"))
        })
        .then([registration_failed(2, "invalid_redirect_uri")]);
    let app = then.state();
    let r = registration(app);
    assert_eq!(r.state, RegistrationState::RegistrationFailed);
    assert_eq!(r.error.as_deref(), Some("invalid_redirect_uri"));
    assert_eq!(r.error_description.as_deref(), Some("the provider said no"));
    assert_eq!(app.client_id, None);
    assert_eq!(app.client_id_claim(), None);
    // The same refusal again (a redelivery) decides nothing.
    given(failed_app())
        .when_app(|a| a.fail_dcr_registration(2, Some(PROVIDER.into()), failure("x")))
        .then_nothing();
    // A refusal of an answered request is stale.
    given(registered_app())
        .when_app(|a| a.fail_dcr_registration(2, None, failure("x")))
        .then_error("application.registration.stale_request");
}

#[test]
fn a_providers_error_is_recorded_bounded() {
    let long = ProviderFailure {
        error: "é".repeat(MAX_ERROR + 1),
        error_description: Some("d".repeat(MAX_ERROR_DESCRIPTION + 10)),
    };
    let then = given(registering())
        .when_app(|a| a.fail_dcr_registration(2, None, long))
        .then_ok();
    let [ApplicationEvent::DcrRegistrationFailed(e)] = then.events.as_slice() else {
        panic!("{:?}", then.events);
    };
    assert_eq!(e.error, "é".repeat(MAX_ERROR));
    assert_eq!(
        e.error_description.as_deref().map(|d| d.chars().count()),
        Some(MAX_ERROR_DESCRIPTION)
    );
    let empty = ProviderFailure {
        error: String::new(),
        error_description: None,
    };
    let then = given(registering())
        .when_app(|a| a.fail_dcr_registration(2, None, empty))
        .then_ok();
    let [ApplicationEvent::DcrRegistrationFailed(e)] = then.events.as_slice() else {
        panic!("{:?}", then.events);
    };
    assert_eq!(
        (e.error.as_str(), e.error_description.as_deref()),
        (UNKNOWN_ERROR, None)
    );
}

// --- Retry ---------------------------------------------------------------------------------

#[test]
fn a_failed_registration_is_retried_with_a_new_request() {
    let then = given(failed_app())
        .when_app(|a| a.retry_registration())
        .then([requested(2, RegistrationReason::Retry)]);
    assert_eq!(then.events[0].schema_version(), 2);
    let r = registration(then.state());
    assert_eq!(r.state, RegistrationState::Registering);
    assert_eq!((r.request_version, r.attempt), (4, 2));
    assert_eq!(
        (r.error.as_deref(), r.error_description.as_deref()),
        (None, None)
    );
    // Failed again: the next retry is attempt 3.
    let mut events = failed_app();
    events.push(requested(2, RegistrationReason::Retry));
    events.push(registration_failed(4, "temporarily_unavailable"));
    given(events)
        .when_app(|a| a.retry_registration())
        .then([requested(3, RegistrationReason::Retry)]);
}

#[test]
fn the_retry_names_the_applications_provider() {
    let cmd = CreateApplication {
        provider_id: Some(PROVIDER.into()),
        ..create_cmd(Native)
    };
    let mut events = Application::create(cmd, &policy()).unwrap();
    events.push(registration_failed(2, "x"));
    given(events).when_app(|a| a.retry_registration()).then([
        ApplicationEvent::DcrRegistrationRequested(DcrRegistrationRequested {
            provider_id: Some(PROVIDER.into()),
            attempt: 2,
            reason: RegistrationReason::Retry,
        }),
    ]);
}

#[test]
fn only_a_failed_registration_is_retried() {
    for events in [registering(), registered_app()] {
        given(events)
            .when_app(|a| a.retry_registration())
            .then_error("application.registration.not_failed");
    }
    let mut events = failed_app();
    events.push(archived(Some(alice())));
    given(events)
        .when_app(|a| a.retry_registration())
        .then_error("application.archived");
}

#[test]
fn a_simple_application_has_no_client_to_register() {
    let simple = || given(created(Simple));
    simple()
        .when_app(|a| a.retry_registration())
        .then_error("application.not_oauth");
    simple()
        .when_app(|a| a.request_secret_renewal())
        .then_error("application.not_oauth");
    simple()
        .when_app(|a| a.register_dcr_client(1, issued("kc-1")))
        .then_error("application.not_oauth");
    simple()
        .when_app(|a| a.fail_dcr_registration(1, None, failure("x")))
        .then_error("application.not_oauth");
    simple()
        .when_app(|a| a.complete_client_update(1))
        .then_error("application.not_oauth");
    simple()
        .when_app(|a| a.record_client_deleted())
        .then_error("application.not_oauth");
}

// --- Secret renewal ------------------------------------------------------------------------

#[test]
fn only_a_registered_client_gets_a_new_secret() {
    for events in [registering(), failed_app()] {
        given(events)
            .when_app(|a| a.request_secret_renewal())
            .then_error("application.registration.not_registered");
    }
    let mut events = registered_app();
    events.push(archived(Some(alice())));
    given(events)
        .when_app(|a| a.request_secret_renewal())
        .then_error("application.archived");
}

#[test]
fn a_renewal_is_requested_then_completed() {
    let then = given(registered_app())
        .when_app(|a| a.request_secret_renewal())
        .then([renewal_requested()]);
    let op = registration(then.state()).operation.clone().unwrap();
    assert_eq!(
        (op.kind, op.state, op.request_version),
        (ClientOperationKind::RenewSecret, OperationState::Pending, 4)
    );

    let mut events = registered_app();
    events.push(renewal_requested());
    let then = given(events.clone())
        .when_app(|a| a.complete_secret_renewal(4, "sha256:0123456789abcdef".into(), None))
        .then([ApplicationEvent::ClientSecretRenewed(ClientSecretRenewed {
            request_version: 4,
            client_secret_fingerprint: "sha256:0123456789abcdef".into(),
            client_secret_expires_at: None,
        })]);
    let app = then.state();
    let r = registration(app);
    assert_eq!(
        r.client_secret_fingerprint.as_deref(),
        Some("sha256:0123456789abcdef")
    );
    assert_eq!(r.client_secret_expires_at, None);
    assert_eq!(r.operation.as_ref().unwrap().state, OperationState::Done);
    // The client is the same.
    assert_eq!(app.client_id, Some(cid("kc-1")));
    assert_eq!(then.claims(), (vec![], vec![]));

    // A redelivered answer decides nothing; an answer to another request is stale.
    events.push(then.events[0].clone());
    given(events.clone())
        .when_app(|a| a.complete_secret_renewal(4, "sha256:0123456789abcdef".into(), None))
        .then_nothing();
    given(events.clone())
        .when_app(|a| a.fail_secret_renewal(4, failure("x")))
        .then_nothing();
    given(events)
        .when_app(|a| a.complete_secret_renewal(3, "sha256:0123456789abcdef".into(), None))
        .then_error("application.registration.stale_request");
}

#[test]
fn a_refused_renewal_keeps_the_secret() {
    let mut events = registered_app();
    events.push(renewal_requested());
    let then = given(events)
        .when_app(|a| a.fail_secret_renewal(4, failure("invalid_client")))
        .then([ApplicationEvent::ClientSecretRenewalFailed(
            ClientOperationFailed {
                request_version: 4,
                error: "invalid_client".into(),
                error_description: Some("the provider said no".into()),
            },
        )]);
    let r = registration(then.state());
    assert_eq!(r.client_secret_fingerprint.as_deref(), Some(FINGERPRINT));
    let op = r.operation.as_ref().unwrap();
    assert_eq!(op.state, OperationState::Failed);
    assert_eq!(op.error.as_deref(), Some("invalid_client"));
    // A new renewal may be asked for after a refusal.
    let mut events = registered_app();
    events.push(renewal_requested());
    events.extend(then.events.clone());
    given(events)
        .when_app(|a| a.request_secret_renewal())
        .then([renewal_requested()]);
}

#[test]
fn no_renewal_while_an_operation_is_pending() {
    let mut events = registered_app();
    events.push(renewal_requested());
    given(events)
        .when_app(|a| a.request_secret_renewal())
        .then_error("application.registration.pending");
    let mut events = registered_app();
    events.push(ApplicationEvent::DcrClientUpdateRequested(
        DcrClientUpdateRequested {
            changed: vec!["redirect_uris".into()],
        },
    ));
    given(events)
        .when_app(|a| a.request_secret_renewal())
        .then_error("application.registration.pending");
}

/// An update of what the provider holds while a secret renewal is pending would supersede the
/// renewal, whose answer (a new secret already issued) would then be refused as stale.
#[test]
fn no_client_update_while_a_renewal_is_pending() {
    let mut events = registered_app();
    events.push(renewal_requested());
    given(events.clone())
        .when(update(update_uris()))
        .then_error("application.registration.pending");
    // What the provider does not hold may change.
    let then = given(events.clone())
        .when(update(UpdateApplication {
            description: Patch::Set(text("new")),
            ..Default::default()
        }))
        .then_ok();
    then.updated();
    events.extend(then.events.clone());
    // …and the renewal's answer is still the current one.
    given(events)
        .when_app(|a| a.complete_secret_renewal(4, FINGERPRINT.into(), None))
        .then_ok();
}

#[test]
fn a_new_client_update_supersedes_a_pending_one() {
    let mut events = registered_app();
    events.push(ApplicationEvent::DcrClientUpdateRequested(
        DcrClientUpdateRequested {
            changed: vec!["redirect_uris".into()],
        },
    ));
    let then = given(events.clone()).when(update(update_uris())).then_ok();
    assert_eq!(then.events.len(), 2, "{:#?}", then.events);
    events.extend(then.events);
    given(events)
        .when_app(|a| a.complete_client_update(4))
        .then_error("application.registration.stale_request");
}

#[test]
fn a_renewal_answer_without_a_request_is_stale() {
    given(registered_app())
        .when_app(|a| a.complete_secret_renewal(3, FINGERPRINT.into(), None))
        .then_error("application.registration.stale_request");
    // Nor does an update's answer complete a renewal.
    let mut events = registered_app();
    events.push(renewal_requested());
    given(events)
        .when_app(|a| a.complete_client_update(4))
        .then_error("application.registration.stale_request");
}

// --- Client update -------------------------------------------------------------------------

fn update_uris() -> UpdateApplication {
    UpdateApplication {
        redirect_uris: Some(uris(&["https://new.example/cb"])),
        ..Default::default()
    }
}

#[test]
fn an_oauth_change_of_a_registered_app_updates_the_client() {
    let then = given(registered_app())
        .when(update(UpdateApplication {
            description: Patch::Set(text("new")),
            ..update_uris()
        }))
        .then_ok();
    let [ApplicationEvent::ApplicationUpdated(u), ApplicationEvent::DcrClientUpdateRequested(r)] =
        then.events.as_slice()
    else {
        panic!("{:#?}", then.events);
    };
    assert_eq!(u.changed, vec!["description", "redirect_uris"]);
    // The issued client_id stays the application's.
    assert_eq!(u.client_id, Some(cid("kc-1")));
    assert_eq!(r.changed, vec!["redirect_uris"]);
    let app = then.state();
    assert_eq!(app.client_id, Some(cid("kc-1")));
    assert_eq!(then.claims(), (vec![], vec![]));
    let op = registration(app).operation.clone().unwrap();
    assert_eq!(
        (op.kind, op.state, op.request_version),
        (ClientOperationKind::Update, OperationState::Pending, 5)
    );
}

#[test]
fn every_field_the_provider_holds_is_sent() {
    let then = given(registered_app())
        .when(update(UpdateApplication {
            name: Some(name("Renamed")),
            grant_types: Some(vec![AC, RT]),
            client_uri: Patch::Set(url("https://app.example")),
            logo_uri: Patch::Set(url("https://app.example/logo.png")),
            domain: Patch::Set(text("app.example")),
            ..update_uris()
        }))
        .then_ok();
    assert_eq!(
        then.events[1],
        ApplicationEvent::DcrClientUpdateRequested(DcrClientUpdateRequested {
            changed: [
                "name",
                "redirect_uris",
                "grant_types",
                "client_uri",
                "logo_uri"
            ]
            .map(String::from)
            .to_vec(),
        })
    );
}

#[test]
fn a_change_the_provider_does_not_hold_is_not_sent() {
    for cmd in [
        UpdateApplication {
            description: Patch::Set(text("only the description")),
            ..Default::default()
        },
        UpdateApplication {
            domain: Patch::Set(text("app.example")),
            ..Default::default()
        },
    ] {
        let then = given(registered_app()).when(update(cmd)).then_ok();
        then.updated();
        assert_eq!(registration(then.state()).operation, None);
    }
}

#[test]
fn an_unregistered_client_is_not_updated() {
    for events in [registering(), failed_app()] {
        let then = given(events).when(update(update_uris())).then_ok();
        assert_eq!(then.updated().changed, vec!["redirect_uris"]);
    }
}

#[test]
fn the_sagas_answers_to_an_update() {
    let mut events = registered_app();
    events.extend(
        given(registered_app())
            .when(update(update_uris()))
            .then_ok()
            .events,
    );
    // Request at version 5.
    let then = given(events.clone())
        .when_app(|a| a.complete_client_update(5))
        .then([ApplicationEvent::DcrClientUpdated(DcrClientUpdated {
            request_version: 5,
            client_secret_removed: false,
        })]);
    assert_eq!(
        registration(then.state()).operation.as_ref().unwrap().state,
        OperationState::Done
    );
    let then = given(events.clone())
        .when_app(|a| a.fail_client_update(5, failure("invalid_redirect_uri")))
        .then([ApplicationEvent::DcrClientUpdateFailed(
            ClientOperationFailed {
                request_version: 5,
                error: "invalid_redirect_uri".into(),
                error_description: Some("the provider said no".into()),
            },
        )]);
    let op = registration(then.state()).operation.clone().unwrap();
    assert_eq!(
        (op.state, op.error.as_deref()),
        (OperationState::Failed, Some("invalid_redirect_uri"))
    );
    given(events)
        .when_app(|a| a.complete_client_update(4))
        .then_error("application.registration.stale_request");
}

// --- Archive, deletion at the provider, restore -------------------------------------------

#[test]
fn the_client_deleted_at_the_archive_is_registered_again_at_the_restore() {
    let mut events = registered_app();
    events.push(archived(Some(alice())));
    let then = given(events.clone())
        .when_app(|a| a.record_client_deleted())
        .then([ApplicationEvent::DcrClientDeleted(DcrClientDeleted {
            provider_id: PROVIDER.into(),
            client_id: cid("kc-1"),
        })]);
    let app = then.state();
    assert_eq!(app.client_id, None);
    assert!(registration(app).client_deleted);
    assert_eq!(registration(app).client_secret_fingerprint, None);
    events.extend(then.events.clone());
    // Recorded twice: nothing more.
    given(events.clone())
        .when_app(|a| a.record_client_deleted())
        .then_nothing();

    let then = given(events).when(restore_by(admin("root"))).then([
        restored(user("root")),
        requested(2, RegistrationReason::Restored),
    ]);
    let app = then.state();
    assert_eq!(app.status, ApplicationStatus::Active);
    assert_eq!(app.client_id, None);
    assert_eq!(app.client_id_claim(), None);
    let r = registration(app);
    assert_eq!(r.state, RegistrationState::Registering);
    assert!(!r.client_deleted);
    assert_eq!((r.attempt, r.request_version), (2, then.version));
    assert_eq!(then.claims(), (vec![], vec![]));
}

#[test]
fn a_client_kept_at_the_archive_is_kept_at_the_restore() {
    let mut events = registered_app();
    events.push(archived(Some(alice())));
    let then = given(events)
        .when(restore_by(admin("root")))
        .then([restored(user("root"))]);
    let app = then.state();
    assert_eq!(app.client_id, Some(cid("kc-1")));
    assert_eq!(registration(app).state, RegistrationState::Registered);
    // Its client_id is claimed again.
    assert_eq!(then.claims(), (vec![claim("DEFAULT", "kc-1")], vec![]));
}

/// Archived while registering: the saga's client is refused (it deletes it), so nothing would
/// ever answer the old request; the restore asks again.
#[test]
fn an_application_archived_while_registering_registers_anew_at_the_restore() {
    let mut events = registering();
    events.push(archived(Some(alice())));
    let then = given(events).when(restore_by(admin("root"))).then([
        restored(user("root")),
        requested(2, RegistrationReason::Restored),
    ]);
    let r = registration(then.state());
    assert_eq!(
        (r.state, r.request_version),
        (RegistrationState::Registering, 5)
    );
    // A late answer to the first request is stale.
    let mut events = registering();
    events.push(archived(Some(alice())));
    events.extend(then.events.clone());
    given(events)
        .when_app(|a| a.register_dcr_client(2, issued("kc-1")))
        .then_error("application.registration.stale_request");
}

#[test]
fn a_failed_registration_stays_failed_at_the_restore() {
    let mut events = failed_app();
    events.push(archived(Some(alice())));
    given(events)
        .when(restore_by(admin("root")))
        .then([restored(user("root"))]);
}

#[test]
fn no_client_no_deletion() {
    for mut events in [registering(), failed_app()] {
        events.push(archived(Some(alice())));
        given(events)
            .when_app(|a| a.record_client_deleted())
            .then_error("application.registration.not_registered");
    }
}

/// Restored before the saga recorded the deletion: an active application keeps its client.
#[test]
fn an_active_application_keeps_its_client() {
    given(registered_app())
        .when_app(|a| a.record_client_deleted())
        .then_error("application.not_archived");
}

#[test]
fn an_orphan_is_recorded_as_given() {
    let app = given(registered_app()).state().clone();
    assert_eq!(
        app.record_orphan(PROVIDER.into(), "kc-9".into(), "stale answer".into()),
        vec![ApplicationEvent::OrphanClientDetected(
            OrphanClientDetected {
                provider_id: PROVIDER.into(),
                client_id: "kc-9".into(),
                reason: "stale answer".into(),
            }
        )]
    );
    // Folding it changes nothing about the application's own client.
    let (after, _) = fold(
        Some(app.clone()),
        app.version,
        &app.record_orphan(PROVIDER.into(), "kc-9".into(), "r".into()),
    );
    let after = after.unwrap();
    assert_eq!(after.client_id, app.client_id);
    assert_eq!(after.registration, app.registration);
}

// --- Property: stale answers never change the client --------------------------------------

/// One thing that may happen to a registering web application.
#[derive(Debug, Clone)]
enum Step {
    /// The saga answers with a client, for the current request (`None`) or the `n`-th request
    /// of the past (or a version never requested).
    Register(Option<usize>, u8),
    Fail(Option<usize>),
    Retry,
    Archive,
    DeleteClient,
    Restore,
    Renew,
}

fn arb_steps() -> impl Strategy<Value = Vec<Step>> {
    let version = prop_oneof![Just(None), (0usize..6).prop_map(Some)];
    let step = prop_oneof![
        3 => (version.clone(), 0u8..3).prop_map(|(v, c)| Step::Register(v, c)),
        2 => version.prop_map(Step::Fail),
        2 => Just(Step::Retry),
        1 => Just(Step::Archive),
        1 => Just(Step::DeleteClient),
        1 => Just(Step::Restore),
        1 => Just(Step::Renew),
    ];
    proptest::collection::vec(step, 0..25)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever answers arrive, late or repeated: the application's client_id is the one of the
    /// last `DcrClientRegistered` accepted since its current request, and only answers to the
    /// current request are accepted.
    #[test]
    fn stale_answers_never_change_the_client(steps in arb_steps()) {
        let (mut state, mut version) = fold(None, 0, &created(Web));
        let mut requests = vec![2i64];
        let mut expected: Option<ClientId> = None;
        for step in steps {
            let app = state.clone().unwrap();
            let current = registration(&app).request_version;
            let pick = |v: Option<usize>| match v {
                None => current,
                Some(i) => requests.get(i).copied().unwrap_or(1_000 + i as i64),
            };
            let result = match &step {
                Step::Register(v, c) => {
                    app.register_dcr_client(pick(*v), issued(&format!("kc-{c}")))
                }
                Step::Fail(v) => app.fail_dcr_registration(pick(*v), None, failure("x")),
                Step::Retry => app.retry_registration(),
                Step::Archive => app.archive(),
                Step::DeleteClient => app.record_client_deleted(),
                Step::Restore => app.restore(&admin("root")),
                Step::Renew => app.request_secret_renewal(),
            };
            let Ok(events) = result else { continue };
            for e in &events {
                match e {
                    ApplicationEvent::DcrClientRegistered(r) => {
                        prop_assert_eq!(r.request_version, current, "{:?}", step);
                        expected = Some(r.client_id.clone());
                    }
                    ApplicationEvent::DcrRegistrationFailed(r) => {
                        prop_assert_eq!(r.request_version, current, "{:?}", step);
                    }
                    ApplicationEvent::DcrRegistrationRequested(_) => {
                        requests.push(version + 1);
                        expected = None;
                    }
                    ApplicationEvent::DcrClientDeleted(_) => expected = None,
                    _ => {}
                }
                (state, version) = fold(state, version, std::slice::from_ref(e));
            }
            let app = state.as_ref().unwrap();
            prop_assert_eq!(&app.client_id, &expected, "after {:?}", step);
            let r = registration(app);
            prop_assert_eq!(r.request_version, *requests.last().unwrap());
            prop_assert_eq!(
                r.state == RegistrationState::Registered && !r.client_deleted,
                app.client_id.is_some()
            );
        }
    }
}

// --- Native applications become public clients (RFC 8252 §8.4) -----------------------------

/// A native application registered (at version 3) as a confidential client, with a secret.
fn confidential_native() -> Vec<ApplicationEvent> {
    let mut events = created(Native);
    events.push(registered(2, "native-1"));
    events
}

fn to_public() -> ApplicationEvent {
    ApplicationEvent::DcrClientUpdateRequested(DcrClientUpdateRequested {
        changed: vec!["token_endpoint_auth_method".into()],
    })
}

#[test]
fn a_confidential_native_client_is_moved_to_a_public_one() {
    let then = given(confidential_native())
        .when_app(|a| a.request_public_client())
        .then([to_public()]);
    let op = registration(then.state()).operation.clone().unwrap();
    assert_eq!(
        (op.kind, op.state, op.request_version),
        (ClientOperationKind::Update, OperationState::Pending, 4)
    );
    let mut events = confidential_native();
    events.push(to_public());
    let then = given(events.clone())
        .when_app(|a| a.complete_client_update_as_public(4))
        .then([ApplicationEvent::DcrClientUpdated(DcrClientUpdated {
            request_version: 4,
            client_secret_removed: true,
        })]);
    let r = registration(then.state());
    assert_eq!(r.client_secret_fingerprint, None, "the secret is gone");
    assert_eq!(r.client_secret_expires_at, None);
    assert_eq!(r.operation.as_ref().unwrap().state, OperationState::Done);
    assert_eq!(then.state().client_id, Some(cid("native-1")), "same client");
    // Done once: a public client is not moved again.
    events.extend(then.events.clone());
    given(events)
        .when_app(|a| a.request_public_client())
        .then_nothing();
}

#[test]
fn only_registered_confidential_native_clients_are_moved() {
    // Another type keeps its client as it is.
    given(registered_app())
        .when_app(|a| a.request_public_client())
        .then_nothing();
    // A native client that holds no secret is public already.
    let mut events = created(Native);
    events.push(ApplicationEvent::DcrClientRegistered(DcrClientRegistered {
        request_version: 2,
        provider_id: PROVIDER.into(),
        client_id: cid("native-2"),
        client_secret_fingerprint: None,
        client_secret_expires_at: None,
    }));
    given(events)
        .when_app(|a| a.request_public_client())
        .then_nothing();
    // Still registering, or refused: nothing to move.
    given(created(Native))
        .when_app(|a| a.request_public_client())
        .then_nothing();
    let mut events = created(Native);
    events.push(registration_failed(2, "invalid_redirect_uri"));
    given(events)
        .when_app(|a| a.request_public_client())
        .then_nothing();
}

#[test]
fn a_native_client_is_moved_after_the_operation_in_progress() {
    let mut events = confidential_native();
    events.push(renewal_requested());
    given(events)
        .when_app(|a| a.request_public_client())
        .then_error("application.registration.pending");
}

#[test]
fn a_public_answer_without_a_secret_to_remove_says_so() {
    // An update of a client that never had a secret (a browser app) answered as public.
    let mut events = created(Browser);
    events.push(ApplicationEvent::DcrClientRegistered(DcrClientRegistered {
        request_version: 2,
        provider_id: PROVIDER.into(),
        client_id: cid("spa-1"),
        client_secret_fingerprint: None,
        client_secret_expires_at: None,
    }));
    events.push(ApplicationEvent::DcrClientUpdateRequested(
        DcrClientUpdateRequested {
            changed: vec!["redirect_uris".into()],
        },
    ));
    given(events)
        .when_app(|a| a.complete_client_update_as_public(4))
        .then([ApplicationEvent::DcrClientUpdated(DcrClientUpdated {
            request_version: 4,
            client_secret_removed: false,
        })]);
    // And a stale answer is refused as for any update.
    given(confidential_native())
        .when_app(|a| a.complete_client_update_as_public(4))
        .then_error("application.registration.stale_request");
}
