//! Subscriptions to API plans (DESIGN §1 "Subscriptions, plans, API keys"): who may subscribe to
//! what, at most one open subscription per plan, and the transitions
//! `PENDING → ACCEPTED | REJECTED`, `ACCEPTED ⇄ PAUSED`, `ACCEPTED | PAUSED → CLOSED`.

use crate::support::*;
use appreg_domain::application::DcrClientRegistered;
use appreg_domain::subscription::{MAX_REASON, MAX_SUBSCRIPTIONS, WITHDRAWN_REASON};
use appreg_domain::*;
use SubscriptionStatus::*;

const S1: &str = "sub-1";
const S2: &str = "sub-2";

// --- Subscribing -------------------------------------------------------------------------

#[test]
fn an_auto_api_key_plan_is_accepted_at_once_with_a_key() {
    let p = api_key_auto();
    let then = given(app_with_client_id())
        .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
        .then([
            sub_created(S1, &p),
            sub_accepted(S1),
            key_issued(S1, &key(1)),
        ]);
    let s = sub(then.state(), S1);
    assert_eq!(s.status, Accepted);
    assert_eq!((s.api_id.as_str(), s.plan_id.as_str()), (API, "p-key-auto"));
    assert_eq!(
        (s.security, s.validation),
        (PlanSecurity::ApiKey, PlanValidation::Auto)
    );
    assert_eq!(s.reason, None);
    assert_eq!(s.ended_by_archive, None);
    // Created at the first event of the decision, last changed at its last.
    assert_eq!((s.created_at, s.updated_at), (t(2), t(4)));
    let [k] = s.api_keys.as_slice() else {
        panic!("one key expected: {:?}", s.api_keys)
    };
    assert_eq!(
        (k.id.as_str(), k.prefix.as_str(), k.hash.as_str()),
        ("key-1", key(1).prefix.as_str(), key(1).hash.as_str())
    );
    assert_eq!(
        (k.created_at, k.expires_at, k.revoked_at),
        (t(4), None, None)
    );
    assert!(k.valid_at(t(4)) && k.valid_at(t(1_000_000)));
}

#[test]
fn an_auto_jwt_or_oauth2_plan_is_accepted_at_once_without_a_key() {
    for p in [jwt_auto(), oauth2_auto()] {
        let then = given(app_with_client_id())
            .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
            .then([sub_created(S1, &p), sub_accepted(S1)]);
        let s = sub(then.state(), S1);
        assert_eq!(s.status, Accepted, "{p:?}");
        assert!(s.api_keys.is_empty(), "{p:?}");
    }
}

#[test]
fn a_manual_plan_waits_pending_without_a_key() {
    for p in [api_key_manual(), jwt_manual(), oauth2_manual()] {
        let then = given(app_with_client_id())
            .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
            .then([sub_created(S1, &p)]);
        let s = sub(then.state(), S1);
        assert_eq!(s.status, Pending, "{p:?}");
        assert!(s.api_keys.is_empty(), "{p:?}");
        assert_eq!(s.created_at, t(2));
    }
}

#[test]
fn a_keyless_plan_cannot_be_subscribed_to() {
    for validation in [PlanValidation::Auto, PlanValidation::Manual] {
        let p = plan("p-free", PlanSecurity::Keyless, validation);
        for app in [app_with_client_id(), app_without_client_id()] {
            given(app)
                .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
                .then_error("subscription.plan_keyless");
        }
    }
    // Keyless says more than closed.
    let closed = closed_plan("p-free", PlanSecurity::Keyless, PlanValidation::Auto);
    given(app_with_client_id())
        .when_app(|a| a.subscribe(S1.into(), &closed, &key(1)))
        .then_error("subscription.plan_keyless");
}

#[test]
fn a_closed_plan_cannot_be_subscribed_to() {
    for p in subscribable_plans() {
        let closed = Plan {
            status: PlanStatus::Closed,
            ..p
        };
        given(app_with_client_id())
            .when_app(|a| a.subscribe(S1.into(), &closed, &key(1)))
            .then_error("subscription.plan_closed");
    }
}

#[test]
fn an_archived_application_cannot_subscribe() {
    let mut plans = subscribable_plans();
    plans.push(keyless());
    plans.push(closed_plan(
        "p-x",
        PlanSecurity::ApiKey,
        PlanValidation::Auto,
    ));
    for p in plans {
        given(and(app_with_client_id(), [archived(Some(alice()))]))
            .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
            .then_error("application.archived");
    }
}

#[test]
fn jwt_and_oauth2_plans_need_a_client_id() {
    for p in [jwt_auto(), jwt_manual(), oauth2_auto(), oauth2_manual()] {
        given(app_without_client_id())
            .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
            .then_error("subscription.client_id_required");
    }
    // An API_KEY plan does not.
    for p in [api_key_auto(), api_key_manual()] {
        given(app_without_client_id())
            .when_app(|a| a.subscribe(S1.into(), &p, &key(1)))
            .then_ok();
    }
}

#[test]
fn an_oauth_application_subscribes_to_jwt_plans_once_its_client_is_registered() {
    // Registering: no client_id yet.
    given(created(ApplicationType::Web))
        .when_app(|a| a.subscribe(S1.into(), &jwt_manual(), &key(1)))
        .then_error("subscription.client_id_required");
    let registered = ApplicationEvent::DcrClientRegistered(DcrClientRegistered {
        request_version: 2,
        provider_id: "idp".into(),
        client_id: cid("kc-1"),
        client_secret_fingerprint: None,
        client_secret_expires_at: None,
    });
    given(and(created(ApplicationType::Web), [registered]))
        .when_app(|a| a.subscribe(S1.into(), &jwt_manual(), &key(1)))
        .then([sub_created(S1, &jwt_manual())]);
}

#[test]
fn a_second_open_subscription_to_a_plan_is_refused() {
    let p = api_key_manual();
    let pending = and(app_with_client_id(), [sub_created(S1, &p)]);
    let accepted = and(pending.clone(), [sub_accepted(S1), key_issued(S1, &key(1))]);
    let paused = and(accepted.clone(), [sub_paused(S1)]);
    for (status, events) in [(Pending, pending), (Accepted, accepted), (Paused, paused)] {
        let given = given(events);
        assert_eq!(sub(given.state(), S1).status, status);
        given
            .when_app(|a| a.subscribe(S2.into(), &p, &key(2)))
            .then_error("subscription.exists");
    }
}

#[test]
fn an_open_subscription_to_another_plan_is_no_obstacle() {
    let mut events = app_with_client_id();
    for (n, p) in subscribable_plans().iter().enumerate() {
        let then = given(events.clone())
            .when_app(|a| a.subscribe(format!("sub-{n}"), p, &key(n as u32)))
            .then_ok();
        events.extend(then.events);
    }
    let app = given(events).state().clone();
    assert_eq!(app.subscriptions.len(), 6);
    for p in subscribable_plans() {
        assert_eq!(open_for(&app, &p.id), 1);
    }
}

#[test]
fn a_plan_can_be_subscribed_to_again_after_a_rejection_or_a_close() {
    let p = api_key_manual();
    let rejected = and(
        app_with_client_id(),
        [sub_created(S1, &p), sub_rejected(S1, None, None)],
    );
    let closed = and(
        app_with_client_id(),
        [
            sub_created(S1, &p),
            sub_accepted(S1),
            key_issued(S1, &key(1)),
            sub_closed(S1, None),
            key_revoked(S1, "key-1", None),
        ],
    );
    for events in [rejected, closed] {
        let then = given(events)
            .when_app(|a| a.subscribe(S2.into(), &p, &key(2)))
            .then([sub_created(S2, &p)]);
        let app = then.state();
        assert_eq!(app.subscriptions.len(), 2);
        assert!(!sub(app, S1).status.is_open());
        assert_eq!(sub(app, S2).status, Pending);
        assert_eq!(open_for(app, &p.id), 1);
    }
}

#[test]
fn subscriptions_are_limited_open_or_ended() {
    let p = api_key_manual();
    let mut events = app_with_client_id();
    for n in 0..MAX_SUBSCRIPTIONS - 1 {
        let id = format!("old-{n}");
        // Ended ones count too: one plan, subscribed and rejected again and again.
        events.extend([sub_created(&id, &p), sub_rejected(&id, None, None)]);
    }
    let then = given(events.clone())
        .when_app(|a| a.subscribe("last".into(), &p, &key(1)))
        .then_ok();
    assert_eq!(then.state().subscriptions.len(), MAX_SUBSCRIPTIONS);
    events.extend(then.events);
    for q in [p, api_key_auto()] {
        given(events.clone())
            .when_app(|a| a.subscribe("one-too-many".into(), &q, &key(2)))
            .then_error(if q.id == "p-key-manual" {
                // The open one says more.
                "subscription.exists"
            } else {
                "subscription.limit"
            });
    }
}

#[test]
fn the_refusals_come_in_a_fixed_order() {
    // archived > keyless > closed plan > client_id > already subscribed.
    let archived_app = and(app_without_client_id(), [archived(Some(alice()))]);
    let closed_jwt = closed_plan("p-jwt-manual", PlanSecurity::Jwt, PlanValidation::Manual);
    given(archived_app)
        .when_app(|a| a.subscribe(S2.into(), &keyless(), &key(1)))
        .then_error("application.archived");
    given(app_without_client_id())
        .when_app(|a| a.subscribe(S2.into(), &closed_jwt, &key(1)))
        .then_error("subscription.plan_closed");
    // Subscribed while the app had a client_id, which was cleared since.
    let cleared = updated(appreg_domain::application::ApplicationUpdated {
        name: name("Weather"),
        description: None,
        domain: None,
        client_id: None,
        oauth: None,
        changed: vec!["client_id".into()],
    });
    given(and(
        app_with_client_id(),
        [sub_created(S1, &jwt_manual()), cleared],
    ))
    .when_app(|a| a.subscribe(S2.into(), &jwt_manual(), &key(1)))
    .then_error("subscription.client_id_required");
}

#[test]
fn commands_on_an_unknown_subscription() {
    let g = || {
        given(and(
            app_with_client_id(),
            [sub_created(S1, &api_key_manual())],
        ))
    };
    g().when_app(|a| a.accept_subscription("nope", &key(1)))
        .then_error("subscription.not_found");
    g().when_app(|a| a.reject_subscription("nope", None))
        .then_error("subscription.not_found");
    g().when_app(|a| a.pause_subscription("nope"))
        .then_error("subscription.not_found");
    g().when_app(|a| a.resume_subscription("nope"))
        .then_error("subscription.not_found");
    g().when_app(|a| a.close_subscription("nope"))
        .then_error("subscription.not_found");
    g().when_app(|a| a.renew_api_key("nope", &key(2), t(10), chrono::Duration::hours(1)))
        .then_error("subscription.not_found");
    g().when_app(|a| a.revoke_api_key("nope", "key-1"))
        .then_error("subscription.not_found");
}

// --- Transitions -------------------------------------------------------------------------

/// Subscription S1 to `p` in `status`, with a key when `p` is an API_KEY plan and the
/// subscription was accepted.
fn in_status(p: &Plan, status: SubscriptionStatus) -> Vec<ApplicationEvent> {
    let mut events = app_with_client_id();
    events.push(sub_created(S1, p));
    let accept = |events: &mut Vec<ApplicationEvent>| {
        events.push(sub_accepted(S1));
        if p.security == PlanSecurity::ApiKey {
            events.push(key_issued(S1, &key(1)));
        }
    };
    match status {
        Pending => {}
        Rejected => events.push(sub_rejected(S1, Some("no"), None)),
        Accepted => accept(&mut events),
        Paused => {
            accept(&mut events);
            events.push(sub_paused(S1));
        }
        Closed => {
            accept(&mut events);
            events.push(sub_closed(S1, None));
            if p.security == PlanSecurity::ApiKey {
                events.push(key_revoked(S1, "key-1", None));
            }
        }
    }
    let app = given(events.clone()).state().clone();
    assert_eq!(sub(&app, S1).status, status);
    events
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Accept,
    Reject,
    Pause,
    Resume,
    Close,
}

impl Act {
    const ALL: [Act; 5] = [
        Act::Accept,
        Act::Reject,
        Act::Pause,
        Act::Resume,
        Act::Close,
    ];

    fn decide(self, a: &Application) -> Result<Vec<ApplicationEvent>, DomainError> {
        match self {
            Act::Accept => a.accept_subscription(S1, &key(2)),
            Act::Reject => a.reject_subscription(S1, None),
            Act::Pause => a.pause_subscription(S1),
            Act::Resume => a.resume_subscription(S1),
            Act::Close => a.close_subscription(S1),
        }
    }

    fn past(self) -> &'static str {
        match self {
            Act::Accept => "accepted",
            Act::Reject => "rejected",
            Act::Pause => "paused",
            Act::Resume => "resumed",
            Act::Close => "closed",
        }
    }
}

/// DESIGN §1's transitions, restated: where `act` takes a subscription in `from`.
fn legal(from: SubscriptionStatus, act: Act) -> Option<SubscriptionStatus> {
    match (from, act) {
        (Pending, Act::Accept) => Some(Accepted),
        (Pending, Act::Reject) => Some(Rejected),
        (Accepted, Act::Pause) => Some(Paused),
        (Paused, Act::Resume) => Some(Accepted),
        (Accepted | Paused, Act::Close) => Some(Closed),
        // A consumer withdraws a request that nobody validated yet.
        (Pending, Act::Close) => Some(Rejected),
        _ => None,
    }
}

#[test]
fn every_transition_is_legal_exactly_when_the_design_says_so() {
    let statuses = [Pending, Accepted, Rejected, Paused, Closed];
    for p in subscribable_plans() {
        for from in statuses {
            for act in Act::ALL {
                let when = given(in_status(&p, from)).when_app(|a| act.decide(a));
                match legal(from, act) {
                    Some(to) => {
                        let then = when.then_ok();
                        let s = sub(then.state(), S1);
                        assert_eq!(s.status, to, "{from:?} {act:?} {p:?}");
                        assert_eq!(s.updated_at, t(then.version));
                        let before = sub(then.before.as_ref().unwrap(), S1);
                        assert_eq!(s.created_at, before.created_at);
                    }
                    None => {
                        let e = when.then_error("subscription.transition");
                        assert_eq!(
                            e.to_string(),
                            format!("a {} subscription cannot be {}", from.as_str(), act.past()),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn accepting_a_pending_subscription() {
    let then = given(in_status(&api_key_manual(), Pending))
        .when_app(|a| a.accept_subscription(S1, &key(7)))
        .then([sub_accepted(S1), key_issued(S1, &key(7))]);
    let s = sub(then.state(), S1);
    assert_eq!(s.api_keys.len(), 1);
    assert!(api_key(then.state(), S1, "key-7").valid_at(t(100)));
    for p in [jwt_manual(), oauth2_manual()] {
        let then = given(in_status(&p, Pending))
            .when_app(|a| a.accept_subscription(S1, &key(7)))
            .then([sub_accepted(S1)]);
        assert!(sub(then.state(), S1).api_keys.is_empty());
    }
}

#[test]
fn a_jwt_subscription_is_not_accepted_once_the_client_id_is_gone() {
    let cleared = updated(appreg_domain::application::ApplicationUpdated {
        name: name("Weather"),
        description: None,
        domain: None,
        client_id: None,
        oauth: None,
        changed: vec!["client_id".into()],
    });
    for p in [jwt_manual(), oauth2_manual()] {
        given(and(in_status(&p, Pending), [cleared.clone()]))
            .when_app(|a| a.accept_subscription(S1, &key(2)))
            .then_error("subscription.client_id_required");
    }
}

#[test]
fn closing_a_pending_subscription_withdraws_it() {
    for p in [api_key_manual(), jwt_manual(), oauth2_manual()] {
        let then = given(in_status(&p, Pending))
            .when_app(|a| a.close_subscription(S1))
            .then([sub_rejected(S1, Some("withdrawn"), None)]);
        let s = sub(then.state(), S1);
        assert_eq!(s.status, Rejected);
        assert_eq!(s.reason.as_deref(), Some(WITHDRAWN_REASON));
        assert!(s.api_keys.is_empty());
    }
}

#[test]
fn rejecting_with_a_reason() {
    let then = given(in_status(&api_key_manual(), Pending))
        .when_app(|a| a.reject_subscription(S1, Some("  not for production\nsorry  ")))
        .then([sub_rejected(S1, Some("not for production\nsorry"), None)]);
    let s = sub(then.state(), S1);
    assert_eq!(s.reason.as_deref(), Some("not for production\nsorry"));
    assert_eq!(s.ended_by_archive, None);
    // No reason, or only blanks: none recorded.
    for reason in [None, Some(""), Some("  \n ")] {
        given(in_status(&api_key_manual(), Pending))
            .when_app(|a| a.reject_subscription(S1, reason))
            .then([sub_rejected(S1, None, None)]);
    }
    // The longest reason, multi-byte.
    let longest = "é".repeat(MAX_REASON);
    given(in_status(&api_key_manual(), Pending))
        .when_app(|a| a.reject_subscription(S1, Some(&longest)))
        .then([sub_rejected(S1, Some(&longest), None)]);
}

#[test]
fn a_bad_reason_is_refused() {
    let too_long = "r".repeat(MAX_REASON + 1);
    for reason in [too_long.as_str(), "tab\tinside", "bell\u{7}", "nul\0"] {
        given(in_status(&api_key_manual(), Pending))
            .when_app(|a| a.reject_subscription(S1, Some(reason)))
            .then_field_errors(&[("reason", "subscription.reason.invalid")]);
    }
    // Checked before the transition.
    given(in_status(&api_key_manual(), Closed))
        .when_app(|a| a.reject_subscription(S1, Some(&too_long)))
        .then_field_errors(&[("reason", "subscription.reason.invalid")]);
}

#[test]
fn pausing_and_resuming_keep_the_keys() {
    let then = given(in_status(&api_key_auto(), Accepted))
        .when_app(|a| a.pause_subscription(S1))
        .then([sub_paused(S1)]);
    let k = api_key(then.state(), S1, "key-1");
    assert_eq!((k.revoked_at, k.expires_at), (None, None));
    let then = given(in_status(&api_key_auto(), Paused))
        .when_app(|a| a.resume_subscription(S1))
        .then([sub_resumed(S1)]);
    assert_eq!(sub(then.state(), S1).status, Accepted);
    assert!(api_key(then.state(), S1, "key-1").valid_at(t(100)));
}

#[test]
fn closing_revokes_the_subscriptions_keys() {
    for from in [Accepted, Paused] {
        let then = given(in_status(&api_key_auto(), from))
            .when_app(|a| a.close_subscription(S1))
            .then([sub_closed(S1, None), key_revoked(S1, "key-1", None)]);
        let s = sub(then.state(), S1);
        assert_eq!(s.status, Closed);
        assert_eq!(s.ended_by_archive, None);
        let k = api_key(then.state(), S1, "key-1");
        assert_eq!(k.revoked_at, Some(t(then.version)));
        assert!(!k.valid_at(t(then.version)));
    }
    // A JWT subscription has no key to revoke.
    given(in_status(&jwt_auto(), Accepted))
        .when_app(|a| a.close_subscription(S1))
        .then([sub_closed(S1, None)]);
}

#[test]
fn closing_revokes_every_key_not_yet_revoked_including_those_in_their_grace_period() {
    let events = and(
        in_status(&api_key_auto(), Accepted),
        [
            // key-1 renewed (in its grace period), key-2 issued then revoked, key-3 current.
            key_renewed(S1, "key-1", t(1_000)),
            key_issued(S1, &key(2)),
            key_revoked(S1, "key-2", None),
            key_issued(S1, &key(3)),
        ],
    );
    let then = given(events).when_app(|a| a.close_subscription(S1)).then([
        sub_closed(S1, None),
        key_revoked(S1, "key-1", None),
        key_revoked(S1, "key-3", None),
    ]);
    let app = then.state();
    assert!(sub(app, S1).api_keys.iter().all(|k| k.revoked_at.is_some()));
    // key-2 keeps the time it was revoked at.
    assert_eq!(api_key(app, S1, "key-2").revoked_at, Some(t(7)));
}

#[test]
fn the_archived_application_refuses_accept_and_resume() {
    given(and(
        in_status(&api_key_manual(), Pending),
        [archived(Some(alice()))],
    ))
    .when_app(|a| a.accept_subscription(S1, &key(2)))
    .then_error("application.archived");
    given(and(
        in_status(&api_key_auto(), Paused),
        [archived(Some(alice()))],
    ))
    .when_app(|a| a.resume_subscription(S1))
    .then_error("application.archived");
    // What only ends access stays possible while the process manager has not got to it.
    given(and(
        in_status(&api_key_auto(), Accepted),
        [archived(Some(alice()))],
    ))
    .when_app(|a| a.close_subscription(S1))
    .then([sub_closed(S1, None), key_revoked(S1, "key-1", None)]);
    given(and(
        in_status(&api_key_manual(), Pending),
        [archived(Some(alice()))],
    ))
    .when_app(|a| a.reject_subscription(S1, None))
    .then([sub_rejected(S1, None, None)]);
}

#[test]
fn subscription_events_before_the_application_or_for_an_unknown_subscription_change_nothing() {
    for e in [
        sub_created(S1, &api_key_auto()),
        sub_accepted(S1),
        key_issued(S1, &key(1)),
    ] {
        assert_eq!(Application::evolve(None, &e, t(1), 1), None);
    }
    let app = given(app_with_client_id()).state().clone();
    for e in [
        sub_accepted("nope"),
        sub_closed("nope", None),
        sub_reopened("nope", 3),
        key_issued("nope", &key(1)),
        key_revoked("nope", "key-1", None),
        key_renewed("nope", "key-1", t(5)),
    ] {
        let after = Application::evolve(Some(app.clone()), &e, t(2), 2).unwrap();
        assert_eq!(after.subscriptions, app.subscriptions, "{e:?}");
        assert_eq!(after.version, 2);
    }
}

#[test]
fn an_archived_application_s_subscriptions_are_neither_paused_nor_resumed() {
    let p = jwt_auto();
    let accepted = and(
        app_with_client_id(),
        [
            sub_created(S1, &p),
            sub_accepted(S1),
            archived(Some(alice())),
        ],
    );
    given(accepted)
        .when_app(|a| a.pause_subscription(S1))
        .then_error("application.archived");
    let paused = and(
        app_with_client_id(),
        [
            sub_created(S1, &p),
            sub_accepted(S1),
            sub_paused(S1),
            archived(Some(alice())),
        ],
    );
    given(paused)
        .when_app(|a| a.resume_subscription(S1))
        .then_error("application.archived");
}
