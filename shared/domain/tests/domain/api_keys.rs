//! API keys of API_KEY plan subscriptions: issued on acceptance, renewed with a grace period,
//! revoked at once (and by a close), and the gateway's question `ApiKey::valid_at`.

use crate::support::*;
use appreg_domain::subscription::MAX_KEYS;
use appreg_domain::*;
use chrono::Duration;
use SubscriptionStatus::*;

const S1: &str = "sub-1";

fn hour() -> Duration {
    Duration::hours(1)
}

/// S1, an AUTO API_KEY subscription, accepted with key-1 at version 4.
fn accepted_with_key() -> Vec<ApplicationEvent> {
    let p = api_key_auto();
    and(
        app_with_client_id(),
        [
            sub_created(S1, &p),
            sub_accepted(S1),
            key_issued(S1, &key(1)),
        ],
    )
}

fn with_status(status: SubscriptionStatus) -> Vec<ApplicationEvent> {
    let p = api_key_manual();
    let mut events = and(app_with_client_id(), [sub_created(S1, &p)]);
    let accepted = [sub_accepted(S1), key_issued(S1, &key(1))];
    match status {
        Pending => {}
        Rejected => events.push(sub_rejected(S1, None, None)),
        Accepted => events.extend(accepted),
        Paused => events.extend(and(accepted.to_vec(), [sub_paused(S1)])),
        Closed => events.extend(and(
            accepted.to_vec(),
            [sub_closed(S1, None), key_revoked(S1, "key-1", None)],
        )),
    }
    events
}

// --- ApiKey::valid_at ----------------------------------------------------------------------

#[test]
fn a_key_is_valid_until_it_expires_or_is_revoked() {
    let k = ApiKey {
        id: "k".into(),
        prefix: "apk_".into(),
        hash: "0".repeat(64),
        created_at: t(0),
        expires_at: None,
        revoked_at: None,
    };
    assert!(k.valid_at(t(0)) && k.valid_at(t(i64::from(u32::MAX))));
    let expiring = ApiKey {
        expires_at: Some(t(10)),
        ..k.clone()
    };
    assert!(expiring.valid_at(t(9)));
    assert!(!expiring.valid_at(t(10)), "the end is exclusive");
    assert!(!expiring.valid_at(t(11)));
    let revoked = ApiKey {
        revoked_at: Some(t(5)),
        ..k.clone()
    };
    // Revoked is revoked: the gateway asks now, not at some past instant.
    assert!(!revoked.valid_at(t(0)) && !revoked.valid_at(t(6)));
    let both = ApiKey {
        revoked_at: Some(t(5)),
        expires_at: Some(t(10)),
        ..k
    };
    assert!(!both.valid_at(t(7)));
}

// --- Issue -------------------------------------------------------------------------------

#[test]
fn a_key_is_issued_when_an_api_key_subscription_is_accepted() {
    let then = given(with_status(Pending))
        .when_app(|a| a.accept_subscription(S1, &key(9)))
        .then([sub_accepted(S1), key_issued(S1, &key(9))]);
    let k = api_key(then.state(), S1, "key-9");
    assert_eq!(k.prefix, key(9).prefix);
    assert_eq!(k.hash, key(9).hash);
    assert_eq!(k.created_at, t(then.version));
    assert!(k.valid_at(t(then.version)));
    // The store indexes the new key's hash (and nothing else) for the gateway's look-up.
    assert_eq!(then.claims(), (vec![key_claim(&key(9))], vec![]));
}

// --- Renew -------------------------------------------------------------------------------

#[test]
fn renewing_keeps_the_old_key_for_the_grace_period_and_issues_a_new_one() {
    let now = t(100);
    let then = given(accepted_with_key())
        .when_app(|a| a.renew_api_key(S1, &key(2), now, hour()))
        .then([
            key_renewed(S1, "key-1", now + hour()),
            key_issued(S1, &key(2)),
        ]);
    let app = then.state();
    let old = api_key(app, S1, "key-1");
    let new = api_key(app, S1, "key-2");
    assert_eq!(old.expires_at, Some(now + hour()));
    assert_eq!((new.expires_at, new.revoked_at), (None, None));
    // Inside the grace period both are valid…
    for at in [
        now,
        now + Duration::minutes(30),
        now + hour() - Duration::seconds(1),
    ] {
        assert!(old.valid_at(at) && new.valid_at(at), "{at}");
    }
    // … after it only the new one.
    for at in [now + hour(), now + Duration::days(30)] {
        assert!(!old.valid_at(at) && new.valid_at(at), "{at}");
    }
    assert_eq!(sub(app, S1).status, Accepted);
    assert_eq!(then.claims(), (vec![key_claim(&key(2))], vec![]));
}

#[test]
fn a_renewal_without_grace_ends_the_old_key_at_once() {
    let now = t(100);
    let then = given(accepted_with_key())
        .when_app(|a| a.renew_api_key(S1, &key(2), now, Duration::zero()))
        .then([key_renewed(S1, "key-1", now), key_issued(S1, &key(2))]);
    assert!(!api_key(then.state(), S1, "key-1").valid_at(now));
    assert!(api_key(then.state(), S1, "key-2").valid_at(now));
}

#[test]
fn a_second_renewal_never_extends_an_earlier_end() {
    let now = t(100);
    let first = and(
        accepted_with_key(),
        [
            key_renewed(S1, "key-1", now + hour()),
            key_issued(S1, &key(2)),
        ],
    );
    // Half an hour later, another hour of grace: key-1 keeps its end, key-2 gets one.
    let later = now + Duration::minutes(30);
    let then = given(first.clone())
        .when_app(|a| a.renew_api_key(S1, &key(3), later, hour()))
        .then([
            key_renewed(S1, "key-2", later + hour()),
            key_issued(S1, &key(3)),
        ]);
    let app = then.state();
    assert_eq!(api_key(app, S1, "key-1").expires_at, Some(now + hour()));
    assert_eq!(api_key(app, S1, "key-2").expires_at, Some(later + hour()));
    assert!(api_key(app, S1, "key-1").valid_at(later));
    assert!(!api_key(app, S1, "key-1").valid_at(now + hour()));
    assert!(api_key(app, S1, "key-3").valid_at(now + Duration::days(1)));
    // A shorter grace brings every valid key's end forward to it.
    let then = given(first)
        .when_app(|a| a.renew_api_key(S1, &key(3), later, Duration::minutes(5)))
        .then([
            key_renewed(S1, "key-1", later + Duration::minutes(5)),
            key_renewed(S1, "key-2", later + Duration::minutes(5)),
            key_issued(S1, &key(3)),
        ]);
    assert!(!api_key(then.state(), S1, "key-1").valid_at(later + Duration::minutes(5)));
}

#[test]
fn expired_and_revoked_keys_are_not_renewed() {
    let events = and(
        accepted_with_key(),
        [
            key_renewed(S1, "key-1", t(50)),
            key_issued(S1, &key(2)),
            key_revoked(S1, "key-2", None),
            key_issued(S1, &key(3)),
        ],
    );
    let now = t(100);
    given(events)
        .when_app(|a| a.renew_api_key(S1, &key(4), now, hour()))
        .then([
            key_renewed(S1, "key-3", now + hour()),
            key_issued(S1, &key(4)),
        ]);
}

#[test]
fn a_paused_subscription_can_get_a_new_key() {
    let now = t(100);
    let then = given(with_status(Paused))
        .when_app(|a| a.renew_api_key(S1, &key(2), now, hour()))
        .then([
            key_renewed(S1, "key-1", now + hour()),
            key_issued(S1, &key(2)),
        ]);
    assert_eq!(sub(then.state(), S1).status, Paused);
}

#[test]
fn only_an_accepted_or_paused_subscription_can_get_a_new_key() {
    for status in [Pending, Rejected, Closed] {
        let e = given(with_status(status))
            .when_app(|a| a.renew_api_key(S1, &key(2), t(100), hour()))
            .then_error("subscription.transition");
        assert_eq!(
            e.to_string(),
            format!(
                "a {} subscription cannot be given a new key",
                status.as_str()
            )
        );
    }
}

#[test]
fn jwt_and_oauth2_subscriptions_have_no_key_to_renew() {
    for p in [jwt_auto(), oauth2_auto(), jwt_manual()] {
        let mut events = and(app_with_client_id(), [sub_created(S1, &p)]);
        if p.validation == PlanValidation::Auto {
            events.push(sub_accepted(S1));
        }
        given(events)
            .when_app(|a| a.renew_api_key(S1, &key(2), t(100), hour()))
            .then_error("subscription.not_api_key");
    }
}

#[test]
fn an_archived_application_gets_no_new_key() {
    given(and(accepted_with_key(), [archived(Some(alice()))]))
        .when_app(|a| a.renew_api_key(S1, &key(2), t(100), hour()))
        .then_error("application.archived");
}

#[test]
fn keys_per_subscription_are_limited() {
    let mut events = accepted_with_key();
    for n in 2..MAX_KEYS as u32 {
        events.extend([
            key_revoked(S1, &format!("key-{}", n - 1), None),
            key_issued(S1, &key(n)),
        ]);
    }
    let app = given(events.clone()).state().clone();
    assert_eq!(sub(&app, S1).api_keys.len(), MAX_KEYS - 1);
    let then = given(events)
        .when_app(|a| a.renew_api_key(S1, &key(100), t(1_000), hour()))
        .then_ok();
    assert_eq!(sub(then.state(), S1).api_keys.len(), MAX_KEYS);
    let full = then.after.clone();
    let e = Given {
        state: full,
        version: then.version,
        policy: policy(),
    }
    .when_app(|a| a.renew_api_key(S1, &key(101), t(2_000), hour()))
    .then_error("api_key.limit");
    assert_eq!(e, DomainError::TooManyApiKeys);
}

// --- Revoke ------------------------------------------------------------------------------

#[test]
fn revoking_a_key_is_immediate() {
    let then = given(accepted_with_key())
        .when_app(|a| a.revoke_api_key(S1, "key-1"))
        .then([key_revoked(S1, "key-1", None)]);
    let app = then.state();
    let k = api_key(app, S1, "key-1");
    assert_eq!(k.revoked_at, Some(t(then.version)));
    assert!(!k.valid_at(t(then.version)));
    // The subscription stays as it was (a new key comes with a renewal).
    assert_eq!(sub(app, S1).status, Accepted);
    // Nothing to claim or release: the hash stays indexed, to answer "revoked".
    assert_eq!(then.claims(), (vec![], vec![]));
}

#[test]
fn revoking_is_idempotent() {
    let revoked = and(accepted_with_key(), [key_revoked(S1, "key-1", None)]);
    let then = given(revoked.clone())
        .when_app(|a| a.revoke_api_key(S1, "key-1"))
        .then_nothing();
    // The first revocation's time stands.
    assert_eq!(api_key(then.state(), S1, "key-1").revoked_at, Some(t(5)));
    // Even a second ApiKeyRevoked in the log keeps it.
    let (state, _) = fold(None, 0, &and(revoked, [key_revoked(S1, "key-1", None)]));
    assert_eq!(api_key(&state.unwrap(), S1, "key-1").revoked_at, Some(t(5)));
    // The closed subscription's keys are revoked already.
    given(with_status(Closed))
        .when_app(|a| a.revoke_api_key(S1, "key-1"))
        .then_nothing();
}

#[test]
fn a_key_in_its_grace_period_or_expired_can_be_revoked() {
    let events = and(
        accepted_with_key(),
        [key_renewed(S1, "key-1", t(1_000)), key_issued(S1, &key(2))],
    );
    let then = given(events)
        .when_app(|a| a.revoke_api_key(S1, "key-1"))
        .then([key_revoked(S1, "key-1", None)]);
    let app = then.state();
    assert!(!api_key(app, S1, "key-1").valid_at(t(then.version)));
    assert!(api_key(app, S1, "key-2").valid_at(t(then.version)));
    let expired = and(accepted_with_key(), [key_renewed(S1, "key-1", t(4))]);
    given(expired)
        .when_app(|a| a.revoke_api_key(S1, "key-1"))
        .then([key_revoked(S1, "key-1", None)]);
}

#[test]
fn revoking_an_unknown_key() {
    given(accepted_with_key())
        .when_app(|a| a.revoke_api_key(S1, "key-2"))
        .then_error("api_key.not_found");
    // A key of another subscription is not found through this one.
    let events = and(
        accepted_with_key(),
        [sub_created("sub-2", &api_key_manual())],
    );
    given(events)
        .when_app(|a| a.revoke_api_key("sub-2", "key-1"))
        .then_error("api_key.not_found");
}

#[test]
fn revoking_takes_access_away_even_on_an_archived_application() {
    given(and(accepted_with_key(), [archived(Some(alice()))]))
        .when_app(|a| a.revoke_api_key(S1, "key-1"))
        .then([key_revoked(S1, "key-1", None)]);
}
