//! An application's subscriptions through archive and restore (DESIGN §1 "Archive"/"Restore"):
//! the process manager's steps (`next_archive_step`, `next_restore_step`) run until they have
//! nothing left to do; a restore reopens exactly what its archive ended; steps of an archive or
//! restore that was overtaken do nothing; and the uniqueness claims the store takes on the way.

use crate::support::*;
use appreg_domain::application::claim_changes;
use appreg_domain::catalogue::{Catalogue, CatalogueEvent, PlanDefinition};
use appreg_domain::*;
use std::collections::HashSet;
use SubscriptionStatus::*;

/// The archive version an archive step's event names.
#[track_caller]
fn archive_version_of(e: &ApplicationEvent) -> Option<i64> {
    match e {
        ApplicationEvent::SubscriptionClosed(e) => e.archive_version,
        ApplicationEvent::SubscriptionRejected(e) => e.archive_version,
        ApplicationEvent::ApiKeyRevoked(e) => e.archive_version,
        ApplicationEvent::NotificationSettingsDeleted(e) => e.archive_version,
        other => panic!("not an archive step's event: {other:?}"),
    }
}

fn status(app: &Application, id: &str) -> SubscriptionStatus {
    sub(app, id).status
}

/// No key of `app` is valid at `at`.
fn no_valid_key(app: &Application, at: chrono::DateTime<chrono::Utc>) -> bool {
    app.subscriptions
        .iter()
        .flat_map(|s| &s.api_keys)
        .all(|k| !k.valid_at(at))
}

/// Every plan has at most one open subscription.
fn one_open_per_plan(app: &Application) -> bool {
    app.subscriptions
        .iter()
        .all(|s| open_for(app, &s.plan_id) <= 1)
}

/// The claims of every decision of a story, taken once each.
#[derive(Default)]
struct Claims(HashSet<UniqueClaim>);

impl Claims {
    /// Decides `f` on the story and records the claims it takes; returns the events.
    #[track_caller]
    fn run(
        &mut self,
        s: &mut Story,
        f: impl FnOnce(&Application) -> Result<Vec<ApplicationEvent>, DomainError>,
    ) -> (Vec<ApplicationEvent>, Vec<UniqueClaim>) {
        let before = s.state.clone();
        let events = s.run(f);
        (events, self.take(before.as_ref(), s.app()))
    }

    #[track_caller]
    fn take(&mut self, before: Option<&Application>, after: &Application) -> Vec<UniqueClaim> {
        let (claim, release) = claim_changes(before, Some(after));
        for c in &claim {
            assert!(self.0.insert(c.clone()), "{c:?} claimed twice");
        }
        for r in &release {
            assert!(self.0.remove(r), "{r:?} released but not held");
        }
        claim
    }
}

/// Decides a catalogue command, which must succeed, and folds its events.
fn admin_decides(
    c: &mut Catalogue,
    f: impl FnOnce(&Catalogue) -> Result<Vec<CatalogueEvent>, DomainError>,
) {
    for e in f(c).unwrap() {
        c.evolve(&e);
    }
}

/// The seed story, on the aggregate: a simple application with a client_id subscribes to four
/// plans (API_KEY AUTO, JWT MANUAL, OAUTH2 MANUAL, and a fourth whose subscription the user
/// closes), the JWT one is accepted (and paused), the key renewed; archived, the process manager
/// runs; restored, it runs again; the subscriptions are accepted again.
#[test]
fn the_seed_story() {
    let mut claims = Claims::default();
    let mut s = Story::new(app_with_client_id());
    claims.take(None, s.app());

    // The catalogue, as an administrator sets it up.
    let mut catalogue = Catalogue::default();
    admin_decides(&mut catalogue, |c| {
        c.create_api(API.into(), "Weather", None)
    });
    for (id, security, validation) in [
        ("p-key", PlanSecurity::ApiKey, PlanValidation::Auto),
        ("p-jwt", PlanSecurity::Jwt, PlanValidation::Manual),
        ("p-oauth2", PlanSecurity::Oauth2, PlanValidation::Manual),
        ("p-old", PlanSecurity::ApiKey, PlanValidation::Manual),
    ] {
        admin_decides(&mut catalogue, |c| {
            c.create_plan(
                API,
                id.into(),
                PlanDefinition {
                    name: id.into(),
                    security,
                    validation,
                },
            )
        });
    }
    let plan = |id: &str| catalogue.plan(id).unwrap().clone();

    // Four subscriptions.
    let (events, claimed) = claims.run(&mut s, |a| {
        a.subscribe("s-key".into(), &plan("p-key"), &key(1))
    });
    assert_eq!(
        events,
        [
            sub_created("s-key", &plan("p-key")),
            sub_accepted("s-key"),
            key_issued("s-key", &key(1))
        ]
    );
    assert_eq!(claimed, [subscription_claim("s-key"), key_claim(&key(1))]);
    for (id, p) in [
        ("s-jwt", "p-jwt"),
        ("s-oauth2", "p-oauth2"),
        ("s-old", "p-old"),
    ] {
        let (events, claimed) = claims.run(&mut s, |a| a.subscribe(id.into(), &plan(p), &key(99)));
        assert_eq!(events, [sub_created(id, &plan(p))]);
        assert_eq!(claimed, [subscription_claim(id)]);
    }
    // The fourth is accepted, then closed by the user before the archive.
    let (_, claimed) = claims.run(&mut s, |a| a.accept_subscription("s-old", &key(2)));
    assert_eq!(claimed, [key_claim(&key(2))]);
    let (events, claimed) = claims.run(&mut s, |a| a.close_subscription("s-old"));
    assert_eq!(
        events,
        [
            sub_closed("s-old", None),
            key_revoked("s-old", "key-2", None)
        ]
    );
    assert!(claimed.is_empty());
    // The JWT one is accepted (no key) and paused.
    let (events, _) = claims.run(&mut s, |a| a.accept_subscription("s-jwt", &key(98)));
    assert_eq!(events, [sub_accepted("s-jwt")]);
    claims.run(&mut s, |a| a.pause_subscription("s-jwt"));
    // Alice wants to hear about closes.
    claims.run(&mut s, |a| {
        a.update_notifications(
            alice(),
            hooks(&[Hook::SubscriptionClosed]),
            Some(sealed("alice@example.org")),
        )
    });
    // The key is renewed: key-1 in its grace period, key-3 new.
    let now = t(s.version);
    let (_, claimed) = claims.run(&mut s, |a| {
        a.renew_api_key("s-key", &key(3), now, chrono::Duration::days(7))
    });
    assert_eq!(claimed, [key_claim(&key(3))]);
    let app = s.app();
    assert_eq!(
        ["s-key", "s-jwt", "s-oauth2", "s-old"].map(|id| status(app, id)),
        [Accepted, Paused, Pending, Closed]
    );
    assert!(
        api_key(app, "s-key", "key-1").valid_at(now)
            && api_key(app, "s-key", "key-3").valid_at(now)
    );

    // Archive: the client_id claim is released; the process manager ends every open
    // subscription, one per step, then deletes the notification settings.
    let (events, _) = claims.run(&mut s, |a| a.archive());
    assert_eq!(events, [archived(Some(alice()))]);
    let a = s.version;
    assert_eq!(s.app().archived_version, Some(a));
    assert!(!claims.0.contains(&claim("DEFAULT", "weather-cid")));
    let before = s.state.clone();
    let steps = s.run_steps(|app| app.next_archive_step(a));
    assert_eq!(
        steps,
        [
            vec![
                sub_closed("s-key", Some(a)),
                key_revoked("s-key", "key-1", Some(a)),
                key_revoked("s-key", "key-3", Some(a)),
            ],
            vec![sub_closed("s-jwt", Some(a))],
            vec![sub_rejected("s-oauth2", Some(ARCHIVED_REASON), Some(a))],
            vec![notifications_deleted(Some(a))],
        ]
    );
    for e in steps.iter().flatten() {
        assert_eq!(archive_version_of(e), Some(a), "{e:?}");
    }
    // The steps claim nothing.
    assert!(claims.take(before.as_ref(), s.app()).is_empty());
    let app = s.app().clone();
    assert_eq!(app.status, ApplicationStatus::Archived);
    assert_eq!(
        ["s-key", "s-jwt", "s-oauth2", "s-old"].map(|id| status(&app, id)),
        [Closed, Closed, Rejected, Closed]
    );
    assert_eq!(
        ["s-key", "s-jwt", "s-oauth2", "s-old"].map(|id| sub(&app, id).ended_by_archive),
        [Some(a), Some(a), Some(a), None]
    );
    assert_eq!(
        sub(&app, "s-oauth2").reason.as_deref(),
        Some(ARCHIVED_REASON)
    );
    assert!(app
        .subscriptions
        .iter()
        .flat_map(|s| &s.api_keys)
        .all(|k| k.revoked_at.is_some()));
    assert!(no_valid_key(&app, t(s.version)));
    assert!(app.notifications.is_empty());
    // Done is done.
    assert_eq!(app.next_archive_step(a), None);

    // Restore: the client_id is claimed again; exactly what the archive ended is PENDING again.
    let (events, claimed) = claims.run(&mut s, |a| a.restore(&admin("root")));
    assert_eq!(events, [restored(user("root"))]);
    assert_eq!(claimed, [claim("DEFAULT", "weather-cid")]);
    let r = s.version;
    assert_eq!(s.app().next_archive_step(a), None, "the archive is over");
    let before = s.state.clone();
    let steps = s.run_steps(|app| app.next_restore_step(r));
    assert_eq!(
        steps,
        [
            vec![sub_reopened("s-key", r)],
            vec![sub_reopened("s-jwt", r)],
            vec![sub_reopened("s-oauth2", r)],
        ]
    );
    assert!(claims.take(before.as_ref(), s.app()).is_empty());
    let app = s.app().clone();
    assert_eq!(
        ["s-key", "s-jwt", "s-oauth2", "s-old"].map(|id| status(&app, id)),
        [Pending, Pending, Pending, Closed]
    );
    for id in ["s-key", "s-jwt", "s-oauth2", "s-old"] {
        assert_eq!(sub(&app, id).ended_by_archive, None);
        assert_eq!(sub(&app, id).reason, None);
    }
    // Revoked keys stay revoked.
    assert!(app
        .subscriptions
        .iter()
        .flat_map(|s| &s.api_keys)
        .all(|k| k.revoked_at.is_some()));
    assert!(app.notifications.is_empty());
    assert_eq!(app.next_restore_step(r), None);

    // Accepted again: a new key, the old ones still revoked.
    let (events, claimed) = claims.run(&mut s, |a| a.accept_subscription("s-key", &key(4)));
    assert_eq!(
        events,
        [sub_accepted("s-key"), key_issued("s-key", &key(4))]
    );
    assert_eq!(claimed, [key_claim(&key(4))]);
    let (events, _) = claims.run(&mut s, |a| a.accept_subscription("s-jwt", &key(97)));
    assert_eq!(events, [sub_accepted("s-jwt")]);
    let app = s.app();
    let valid: Vec<&str> = sub(app, "s-key")
        .api_keys
        .iter()
        .filter(|k| k.valid_at(t(s.version)))
        .map(|k| k.id.as_str())
        .collect();
    assert_eq!(valid, ["key-4"]);
    assert!(one_open_per_plan(app));
    // The user-closed subscription's plan can be subscribed to anew.
    claims.run(&mut s, |a| {
        a.subscribe("s-old-2".into(), &plan("p-old"), &key(5))
    });

    // The claims held are the client_id, every subscription id and every key hash, once.
    let mut expected: HashSet<UniqueClaim> = s.app().index_claims(None).into_iter().collect();
    expected.insert(claim("DEFAULT", "weather-cid"));
    assert_eq!(claims.0, expected);
    assert_eq!(expected.len(), 1 + 5 + 4);

    // The log, stored and read back, rebuilds the same state.
    let replayed: Vec<ApplicationEvent> = s
        .log
        .iter()
        .map(|e| ApplicationEvent::decode(e.event_type(), e.schema_version(), e.data()).unwrap())
        .collect();
    assert_eq!(replayed, s.log);
    assert_eq!(fold(None, 0, &replayed).0.as_ref(), Some(s.app()));
}

/// An application with an accepted API_KEY subscription (key-1), a pending JWT one and a
/// notification setting.
fn subscribed() -> Story {
    let mut s = Story::new(app_with_client_id());
    s.run(|a| a.subscribe("s-key".into(), &api_key_auto(), &key(1)));
    s.run(|a| a.subscribe("s-jwt".into(), &jwt_manual(), &key(0)));
    s.run(|a| {
        a.update_notifications(
            alice(),
            hooks(&[Hook::ApiKeyExpiring]),
            Some(sealed("a@example.org")),
        )
    });
    s
}

#[test]
fn the_archive_steps_are_stale_once_restored() {
    // Restored before the process manager did anything: nothing was ended, nothing reopens.
    let mut s = subscribed();
    s.run(|a| a.archive());
    let a = s.version;
    s.run(|a| a.restore(&admin("root")));
    let r = s.version;
    assert_eq!(s.app().next_archive_step(a), None);
    assert_eq!(s.app().next_restore_step(r), None);
    let app = s.app();
    assert_eq!(status(app, "s-key"), Accepted);
    assert_eq!(status(app, "s-jwt"), Pending);
    assert!(api_key(app, "s-key", "key-1").valid_at(t(s.version)));
    assert_eq!(app.notifications.len(), 1);

    // Restored halfway: what was ended is reopened, the rest was never touched.
    let mut s = subscribed();
    s.run(|a| a.archive());
    let a = s.version;
    let step = s.app().next_archive_step(a).unwrap();
    s.apply(step);
    assert_eq!(status(s.app(), "s-key"), Closed);
    s.run(|a| a.restore(&admin("root")));
    let r = s.version;
    assert_eq!(s.app().next_archive_step(a), None);
    let steps = s.run_steps(|app| app.next_restore_step(r));
    assert_eq!(steps, [vec![sub_reopened("s-key", r)]]);
    let app = s.app();
    assert_eq!(status(app, "s-key"), Pending);
    assert_eq!(status(app, "s-jwt"), Pending);
    assert_eq!(sub(app, "s-jwt").ended_by_archive, None);
    assert_eq!(app.notifications.len(), 1);
    assert!(no_valid_key(app, t(s.version)));
}

#[test]
fn the_restore_steps_are_stale_once_archived_again() {
    let mut s = subscribed();
    let (a1, _) = s.archive_fully();
    s.run(|a| a.restore(&admin("root")));
    let r1 = s.version;
    let (a2, _) = s.archive_fully();
    assert_eq!(s.app().next_restore_step(r1), None);
    assert_eq!(s.app().next_archive_step(a1), None);
    assert_eq!(s.app().next_archive_step(a2), None);
    // And a second restore's steps are its own: the first one's version stays stale.
    s.run(|a| a.restore(&admin("ops")));
    let r2 = s.version;
    assert_eq!(s.app().next_restore_step(r1), None);
    assert_eq!(s.app().next_archive_step(a2), None);
    assert_eq!(s.app().restored_version, Some(r2));
    assert_eq!(s.app().archived_version, Some(a2));
}

#[test]
fn a_restore_overtaken_by_a_new_archive_is_undone_by_the_next_restore() {
    let mut s = subscribed();
    let (a1, _) = s.archive_fully();
    s.run(|a| a.restore(&admin("root")));
    let r1 = s.version;
    // Archived again before the restore's process manager ran: nothing is open to end…
    let (a2, steps) = s.archive_fully();
    assert!(steps.is_empty());
    assert_eq!(s.app().next_restore_step(r1), None);
    assert_eq!(sub(s.app(), "s-key").ended_by_archive, Some(a1));
    assert!(a2 > a1);
    // … and the next restore reopens what the first archive ended: both archives are undone.
    let (r2, steps) = s.restore_fully();
    assert_eq!(
        steps,
        [
            vec![sub_reopened("s-key", r2)],
            vec![sub_reopened("s-jwt", r2)]
        ]
    );
    assert_eq!(status(s.app(), "s-key"), Pending);
    assert!(no_valid_key(s.app(), t(s.version)));
}

#[test]
fn every_restore_reopens_what_its_own_archive_ended() {
    let mut s = subscribed();
    for cycle in 0..3 {
        // s-key accepted (its latest key valid), s-jwt pending, at the start of each cycle.
        let unrevoked: Vec<String> = sub(s.app(), "s-key")
            .api_keys
            .iter()
            .filter(|k| k.revoked_at.is_none())
            .map(|k| k.id.clone())
            .collect();
        assert_eq!(unrevoked.len(), 1);
        let (a, steps) = s.archive_fully();
        let mut first = vec![sub_closed("s-key", Some(a))];
        first.extend(unrevoked.iter().map(|id| key_revoked("s-key", id, Some(a))));
        assert_eq!(
            steps,
            [
                first,
                vec![sub_rejected("s-jwt", Some(ARCHIVED_REASON), Some(a))],
                vec![notifications_deleted(Some(a))],
            ],
            "cycle {cycle}"
        );
        let (r, steps) = s.restore_fully();
        assert_eq!(
            steps,
            [
                vec![sub_reopened("s-key", r)],
                vec![sub_reopened("s-jwt", r)]
            ],
            "cycle {cycle}"
        );
        assert!(no_valid_key(s.app(), t(s.version)));
        s.run(|a| a.accept_subscription("s-key", &key(10 + cycle)));
        s.run(|a| {
            a.update_notifications(
                alice(),
                hooks(&[Hook::ApiKeyExpiring]),
                Some(sealed("a@example.org")),
            )
        });
        let app = s.app();
        assert_eq!(sub(app, "s-key").api_keys.len(), 2 + cycle as usize);
        assert!(api_key(app, "s-key", &format!("key-{}", 10 + cycle)).valid_at(t(s.version)));
    }
}

#[test]
fn a_subscription_recreated_before_the_restore_step_is_not_reopened() {
    let mut s = subscribed();
    let (a, _) = s.archive_fully();
    s.run(|a| a.restore(&admin("root")));
    let r = s.version;
    // Before the process manager gets to it, the user subscribes to both plans again.
    s.run(|a| a.subscribe("s-key-2".into(), &api_key_auto(), &key(2)));
    s.run(|a| a.subscribe("s-jwt-2".into(), &jwt_manual(), &key(0)));
    assert_eq!(
        s.run_steps(|app| app.next_restore_step(r)),
        Vec::<Vec<_>>::new()
    );
    let app = s.app();
    assert_eq!(status(app, "s-key"), Closed);
    assert_eq!(status(app, "s-jwt"), Rejected);
    // They stay as the archive left them.
    assert_eq!(sub(app, "s-key").ended_by_archive, Some(a));
    assert!(one_open_per_plan(app));
    assert_eq!(open_for(app, "p-key-auto"), 1);
    assert_eq!(open_for(app, "p-jwt-manual"), 1);

    // Recreated, and closed again, before the step: the newer subscription superseded the old
    // one, which stays as the archive left it.
    let mut s = subscribed();
    s.archive_fully();
    s.run(|a| a.restore(&admin("root")));
    let r = s.version;
    s.run(|a| a.subscribe("s-key-2".into(), &api_key_auto(), &key(2)));
    s.run(|a| a.close_subscription("s-key-2"));
    let steps = s.run_steps(|app| app.next_restore_step(r));
    assert_eq!(steps, [vec![sub_reopened("s-jwt", r)]]);
    assert_eq!(status(s.app(), "s-key"), Closed);
    assert_eq!(open_for(s.app(), "p-key-auto"), 0);
    // A later archive and restore do not bring it back either.
    s.archive_fully();
    let (r, steps) = s.restore_fully();
    assert_eq!(steps, [vec![sub_reopened("s-jwt", r)]]);
    assert_eq!(status(s.app(), "s-key"), Closed);

    // Only one of them recreated: the other is reopened.
    let mut s = subscribed();
    s.archive_fully();
    s.run(|a| a.restore(&admin("root")));
    let r = s.version;
    s.run(|a| a.subscribe("s-jwt-2".into(), &jwt_manual(), &key(0)));
    let steps = s.run_steps(|app| app.next_restore_step(r));
    assert_eq!(steps, [vec![sub_reopened("s-key", r)]]);
    assert!(one_open_per_plan(s.app()));
}

#[test]
fn the_archive_revokes_keys_an_older_log_left_valid_on_an_ended_subscription() {
    // A subscription closed without revoking its key (no decision does that today).
    let p = api_key_manual();
    let mut s = Story::new(and(
        app_with_client_id(),
        [
            sub_created("s-1", &p),
            sub_accepted("s-1"),
            key_issued("s-1", &key(1)),
            sub_closed("s-1", None),
        ],
    ));
    let (a, steps) = s.archive_fully();
    assert_eq!(steps, [vec![key_revoked("s-1", "key-1", Some(a))]]);
    // Not ended by the archive: the restore does not reopen it.
    assert_eq!(sub(s.app(), "s-1").ended_by_archive, None);
    let (_, steps) = s.restore_fully();
    assert!(steps.is_empty());
    assert_eq!(status(s.app(), "s-1"), Closed);
}

#[test]
fn an_archive_of_an_application_without_subscriptions_has_nothing_to_do() {
    let mut s = Story::new(app_with_client_id());
    let (_, steps) = s.archive_fully();
    assert!(steps.is_empty());
    let (_, steps) = s.restore_fully();
    assert!(steps.is_empty());
}

#[test]
fn the_next_step_is_a_function_of_the_state() {
    let mut s = subscribed();
    s.run(|a| a.archive());
    let a = s.version;
    let app = s.app().clone();
    // Asked twice (a process manager restarted before it appended), the same step.
    assert_eq!(app.next_archive_step(a), app.next_archive_step(a));
    let first = app.next_archive_step(a).unwrap();
    s.apply(first.clone());
    // Once appended, never again.
    let second = s.app().next_archive_step(a).unwrap();
    assert_ne!(second, first);
    assert!(second.iter().all(|e| !first.contains(e)));
    // Steps of archives that never were do nothing.
    for other in [0, a - 1, a + 1] {
        assert_eq!(s.app().next_archive_step(other), None);
        assert_eq!(s.app().next_restore_step(other), None);
    }
    // An active application never had an archive: nothing for a restore step either.
    let fresh = Story::new(app_with_client_id());
    assert_eq!(fresh.app().next_archive_step(1), None);
    assert_eq!(fresh.app().next_restore_step(1), None);
}

#[test]
fn index_claims_are_new_subscription_ids_and_new_key_hashes_only() {
    let mut s = Story::new(app_with_client_id());
    let created = s.app().clone();
    // Creation: the client_id only.
    assert_eq!(
        claim_changes(None, Some(&created)),
        (vec![claim("DEFAULT", "weather-cid")], vec![])
    );
    assert!(created.index_claims(None).is_empty());
    s.run(|a| a.subscribe("s-1".into(), &api_key_auto(), &key(1)));
    s.run(|a| a.subscribe("s-2".into(), &api_key_manual(), &key(0)));
    let two = s.app().clone();
    assert_eq!(
        two.index_claims(Some(&created)),
        [
            subscription_claim("s-1"),
            key_claim(&key(1)),
            subscription_claim("s-2")
        ]
    );
    // Nothing new, nothing claimed.
    assert!(two.index_claims(Some(&two)).is_empty());
    s.run(|a| a.renew_api_key("s-1", &key(2), t(10), chrono::Duration::hours(1)));
    s.run(|a| a.accept_subscription("s-2", &key(3)));
    s.run(|a| a.revoke_api_key("s-1", "key-1"));
    s.run(|a| a.close_subscription("s-2"));
    let after = s.app().clone();
    assert_eq!(
        after.index_claims(Some(&two)),
        [key_claim(&key(2)), key_claim(&key(3))]
    );
    // Without a previous state, everything the state holds.
    assert_eq!(
        after.index_claims(None),
        [
            subscription_claim("s-1"),
            key_claim(&key(1)),
            key_claim(&key(2)),
            subscription_claim("s-2"),
            key_claim(&key(3)),
        ]
    );
    // A client_id change and a subscription in one move: both claimed, the old id released.
    let renamed = Application {
        client_id: Some(cid("other-cid")),
        ..after.clone()
    };
    assert_eq!(
        claim_changes(Some(&two), Some(&renamed)),
        (
            vec![
                claim("DEFAULT", "other-cid"),
                key_claim(&key(2)),
                key_claim(&key(3))
            ],
            vec![claim("DEFAULT", "weather-cid")]
        )
    );
    // The archive releases the client_id and claims nothing; the restore takes it back.
    let mut s2 = s.clone();
    let before = s2.app().clone();
    s2.run(|a| a.archive());
    assert_eq!(
        claim_changes(Some(&before), s2.state.as_ref()),
        (vec![], vec![claim("DEFAULT", "weather-cid")])
    );
}
