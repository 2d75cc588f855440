//! Suspected orphans (`orphans.rs`): registration attempts whose outcome is unknown, recorded
//! while the request is being handled, cleared only by a proof.

use crate::support::*;
use appreg_domain::application::{
    DcrAttemptOutcomeUnknown, DcrAttemptSuspicionsCleared, DcrClientRegistered,
    DcrRegistrationFailed, RegistrationReason, SuspectedOrphan, SuspicionProof,
};
use appreg_domain::orphans::MAX_ATTEMPT_ERROR;
use appreg_domain::*;
use ApplicationType::*;

const PROVIDER: &str = "corp-idp";
const KEY: &str = "0190f0c8-6d1a-7c7e-8a51-0a2c7e6b1d2f";

/// Attempt `n` of the request at version 2 (the fixture's first request), lost.
fn lost(n: u32) -> DcrAttemptOutcomeUnknown {
    DcrAttemptOutcomeUnknown {
        request_version: 2,
        provider_id: PROVIDER.into(),
        idempotency_key: KEY.into(),
        attempt: n,
        client_name: name("Web app"),
        started_at: t(10 * i64::from(n)),
        ended_at: t(10 * i64::from(n) + 5),
        error: "registration: HTTP 500 server_error".into(),
    }
}

fn unknown(n: u32) -> ApplicationEvent {
    ApplicationEvent::DcrAttemptOutcomeUnknown(lost(n))
}

fn registered(request_version: i64, client_id: &str) -> ApplicationEvent {
    ApplicationEvent::DcrClientRegistered(DcrClientRegistered {
        request_version,
        provider_id: PROVIDER.into(),
        client_id: cid(client_id),
        client_secret_fingerprint: None,
        client_secret_expires_at: None,
    })
}

fn cleared(attempts: &[u32], client_id: &str) -> ApplicationEvent {
    ApplicationEvent::DcrAttemptSuspicionsCleared(DcrAttemptSuspicionsCleared {
        request_version: 2,
        provider_id: PROVIDER.into(),
        attempts: attempts.to_vec(),
        client_id: cid(client_id),
        proof: SuspicionProof::IdempotentReplay,
    })
}

fn open(app: &Application) -> Vec<(i64, u32)> {
    app.suspected_orphans
        .iter()
        .map(|s| (s.request_version, s.attempt))
        .collect()
}

#[test]
fn an_attempt_whose_answer_was_lost_is_a_suspected_orphan() {
    let then = given(created(Web))
        .when_app(|a| a.record_unknown_attempt(lost(1)))
        .then([unknown(1)]);
    assert_eq!(
        then.state().suspected_orphans,
        vec![SuspectedOrphan {
            request_version: 2,
            attempt: 1,
            provider_id: PROVIDER.into()
        }]
    );
    // Still registering: the saga tries again.
    assert_eq!(
        then.state().registration.as_ref().map(|r| r.state),
        Some(RegistrationState::Registering)
    );
    // The same attempt again (a redelivery) decides nothing; the next one is recorded.
    let mut events = created(Web);
    events.push(unknown(1));
    given(events.clone())
        .when_app(|a| a.record_unknown_attempt(lost(1)))
        .then_nothing();
    let then = given(events)
        .when_app(|a| a.record_unknown_attempt(lost(2)))
        .then([unknown(2)]);
    assert_eq!(open(then.state()), vec![(2, 1), (2, 2)]);
}

#[test]
fn only_the_current_registering_request_records_attempts() {
    // Answered (registered or failed) or superseded: the saga no longer acts on it.
    let mut reg = created(Web);
    reg.push(registered(2, "kc-1"));
    given(reg)
        .when_app(|a| a.record_unknown_attempt(lost(1)))
        .then_error("application.registration.stale_request");
    let mut failed = created(Web);
    failed.push(ApplicationEvent::DcrRegistrationFailed(
        DcrRegistrationFailed {
            request_version: 2,
            provider_id: Some(PROVIDER.into()),
            error: "provider_unavailable".into(),
            error_description: None,
        },
    ));
    given(failed.clone())
        .when_app(|a| a.record_unknown_attempt(lost(1)))
        .then_error("application.registration.stale_request");
    failed.push(ApplicationEvent::DcrRegistrationRequested(
        appreg_domain::application::DcrRegistrationRequested {
            provider_id: None,
            attempt: 2,
            reason: RegistrationReason::Retry,
        },
    ));
    given(failed.clone())
        .when_app(|a| a.record_unknown_attempt(lost(1)))
        .then_error("application.registration.stale_request");
    given(failed)
        .when_app(|a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                request_version: 4,
                ..lost(1)
            })
        })
        .then_ok();
    // A simple application has no registration at all.
    given(created(Simple))
        .when_app(|a| a.record_unknown_attempt(lost(1)))
        .then_error("application.not_oauth");
}

#[test]
fn an_attempt_is_recorded_valid_and_bounded() {
    given(created(Web))
        .when_app(|a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                attempt: 0,
                idempotency_key: String::new(),
                provider_id: String::new(),
                ended_at: t(0),
                started_at: t(1),
                ..lost(1)
            })
        })
        .then_field_errors(&[
            ("attempt", "attempt.invalid"),
            ("idempotency_key", "idempotency_key.invalid"),
            ("provider_id", "provider_id.invalid"),
            ("ended_at", "ended_at.before_start"),
        ]);
    given(created(Web))
        .when_app(|a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                idempotency_key: "k".repeat(201),
                ..lost(1)
            })
        })
        .then_field_errors(&[("idempotency_key", "idempotency_key.invalid")]);
    // The error text is kept to MAX_ATTEMPT_ERROR characters; none at all is `unknown_error`.
    let then = given(created(Web))
        .when_app(|a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                error: "é".repeat(MAX_ATTEMPT_ERROR + 7),
                ..lost(1)
            })
        })
        .then_ok();
    let ApplicationEvent::DcrAttemptOutcomeUnknown(e) = &then.events[0] else {
        panic!("{:?}", then.events)
    };
    assert_eq!(e.error, "é".repeat(MAX_ATTEMPT_ERROR));
    let then = given(created(Web))
        .when_app(|a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                error: String::new(),
                ..lost(1)
            })
        })
        .then_ok();
    let ApplicationEvent::DcrAttemptOutcomeUnknown(e) = &then.events[0] else {
        panic!("{:?}", then.events)
    };
    assert_eq!(e.error, "unknown_error");
    // An instant attempt (started and ended at once) is fine.
    given(created(Web))
        .when_app(|a| {
            a.record_unknown_attempt(DcrAttemptOutcomeUnknown {
                ended_at: t(10),
                ..lost(1)
            })
        })
        .then([ApplicationEvent::DcrAttemptOutcomeUnknown(
            DcrAttemptOutcomeUnknown {
                ended_at: t(10),
                ..lost(1)
            },
        )]);
}

#[test]
fn a_proof_clears_every_open_suspicion_of_the_request() {
    let mut events = created(Web);
    events.extend([unknown(1), unknown(2), registered(2, "kc-1")]);
    let g = given(events);
    assert_eq!(open(g.state()), vec![(2, 1), (2, 2)]);
    // Registered with suspicions open: they stay until proven.
    let then = g
        .clone()
        .when_app(|a| a.clear_suspicions(2, cid("kc-1"), SuspicionProof::IdempotentReplay))
        .then([cleared(&[1, 2], "kc-1")]);
    assert!(then.state().suspected_orphans.is_empty());
    // Cleared: clearing again decides nothing.
    let mut events = created(Web);
    events.extend([
        unknown(1),
        unknown(2),
        registered(2, "kc-1"),
        cleared(&[1, 2], "kc-1"),
    ]);
    given(events)
        .when_app(|a| a.clear_suspicions(2, cid("kc-1"), SuspicionProof::IdempotentReplay))
        .then_nothing();
    // Another request's suspicions are not touched; a request without any decides nothing.
    g.when_app(|a| a.clear_suspicions(7, cid("kc-1"), SuspicionProof::IdempotentReplay))
        .then_nothing();
}

#[test]
fn suspicions_of_a_failed_request_stay_open_across_a_retry() {
    let mut events = created(Web);
    events.extend([
        unknown(1),
        ApplicationEvent::DcrRegistrationFailed(DcrRegistrationFailed {
            request_version: 2,
            provider_id: Some(PROVIDER.into()),
            error: "provider_unavailable".into(),
            error_description: None,
        }),
    ]);
    let g = given(events);
    assert_eq!(open(g.state()), vec![(2, 1)]);
    let then = g.when_app(|a| a.retry_registration()).then_ok();
    assert_eq!(open(then.state()), vec![(2, 1)]);
    assert_eq!(
        then.state().open_suspicions(2),
        Some((PROVIDER.into(), vec![1]))
    );
    assert_eq!(then.state().open_suspicions(4), None);
}

#[test]
fn a_cleared_event_closes_only_the_attempts_it_names() {
    // The log is the truth: an attempt recorded after a proof stays open.
    let mut events = created(Web);
    events.extend([unknown(1), unknown(2), cleared(&[1], "kc-1")]);
    let g = given(events);
    assert_eq!(open(g.state()), vec![(2, 2)]);
}
