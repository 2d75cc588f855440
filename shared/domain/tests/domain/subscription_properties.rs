//! Property tests of subscriptions, keys and notification settings: random command sequences,
//! archives and restores, with the process manager's steps interleaved or run at once, keep the
//! invariants of DESIGN §1:
//!
//! - at most one open subscription per (application, plan);
//! - no valid key on a subscription that is not ACCEPTED or PAUSED (a closed, rejected or
//!   reopened one has every key revoked), and, once the archive's steps are done, none at all on
//!   an archived application;
//! - once a restore's steps are done, what its archive ended is open again (unless its plan got a
//!   new subscription meanwhile), and so is what an earlier archive ended when its restore was
//!   overtaken by a new archive before its steps ran;
//!
//! and every decision is the one an independent statement of the rules expects.

use crate::support::*;
use appreg_domain::application::claim_changes;
use appreg_domain::subscription::{MAX_KEYS, MAX_SUBSCRIPTIONS};
use appreg_domain::*;
use proptest::prelude::*;
use proptest::sample::{subsequence, Index};
use std::collections::{HashSet, VecDeque};
use SubscriptionStatus::*;

const CASES: u32 = 256;

/// The plans of the catalogue: every security and validation, a keyless and a closed one.
fn plans() -> Vec<Plan> {
    let mut plans = subscribable_plans();
    plans.push(keyless());
    plans.push(closed_plan(
        "p-closed",
        PlanSecurity::ApiKey,
        PlanValidation::Auto,
    ));
    plans
}

const USERS: [&str; 3] = ["alice", "olivia", "ursula"];

#[derive(Debug, Clone)]
enum Cmd {
    Subscribe(usize),
    Accept(Index),
    Reject(Index, bool),
    Pause(Index),
    Resume(Index),
    Close(Index),
    /// Renew with a grace of this many seconds (events are a second apart).
    Renew(Index, u8),
    Revoke(Index, Index),
    Notify(usize, Vec<Hook>, bool),
    SetClientId(bool),
    /// Archive; `true`: the process manager runs to the end at once.
    Archive(bool),
    Restore(bool),
    /// One step of the oldest process manager still running.
    Step,
}

fn arb_cmd() -> impl Strategy<Value = Cmd> {
    prop_oneof![
        6 => (0..plans().len()).prop_map(Cmd::Subscribe),
        4 => any::<Index>().prop_map(Cmd::Accept),
        2 => (any::<Index>(), any::<bool>()).prop_map(|(i, r)| Cmd::Reject(i, r)),
        2 => any::<Index>().prop_map(Cmd::Pause),
        2 => any::<Index>().prop_map(Cmd::Resume),
        2 => any::<Index>().prop_map(Cmd::Close),
        3 => (any::<Index>(), 0u8..4).prop_map(|(i, g)| Cmd::Renew(i, g)),
        2 => (any::<Index>(), any::<Index>()).prop_map(|(i, k)| Cmd::Revoke(i, k)),
        1 => (0..USERS.len(), subsequence(Hook::ALL.to_vec(), 0..=2), prop::bool::weighted(0.8))
            .prop_map(|(u, h, e)| Cmd::Notify(u, h, e)),
        1 => any::<bool>().prop_map(Cmd::SetClientId),
        2 => any::<bool>().prop_map(Cmd::Archive),
        2 => any::<bool>().prop_map(Cmd::Restore),
        4 => Just(Cmd::Step),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pm {
    Archive(i64),
    Restore(i64),
}

/// The application, its log, the claims the store holds, and the process managers running.
struct World {
    state: Option<Application>,
    version: i64,
    log: Vec<ApplicationEvent>,
    held: HashSet<UniqueClaim>,
    pms: VecDeque<Pm>,
    next_sub: u32,
    next_key: u32,
}

impl World {
    fn app(&self) -> &Application {
        self.state.as_ref().unwrap()
    }

    fn new_key(&mut self) -> NewApiKey {
        self.next_key += 1;
        key(self.next_key)
    }

    /// The subscription `i` picks, if there is any.
    fn pick(&self, i: &Index) -> Option<Subscription> {
        let subs = &self.app().subscriptions;
        (!subs.is_empty()).then(|| subs[i.index(subs.len())].clone())
    }

    /// Folds `events`, checks the claims and the invariants.
    fn apply(&mut self, events: Vec<ApplicationEvent>) -> Result<(), TestCaseError> {
        let before = self.state.clone();
        let (after, v) = fold(before.clone(), self.version, &events);
        let (claim, release) = claim_changes(before.as_ref(), after.as_ref());
        for r in release {
            prop_assert!(self.held.remove(&r), "released {r:?}, which was not held");
        }
        for c in claim {
            prop_assert!(self.held.insert(c.clone()), "claimed {c:?} twice");
        }
        self.state = after;
        self.version = v;
        self.log.extend(events);
        check_invariants(self.app(), self.version, &self.held, self.pms.is_empty())
    }

    /// One step of the oldest process manager; it is done when it has nothing left to do.
    fn step(&mut self) -> Result<(), TestCaseError> {
        let Some(pm) = self.pms.front().copied() else {
            return Ok(());
        };
        let next = match pm {
            Pm::Archive(v) => self.app().next_archive_step(v),
            Pm::Restore(v) => self.app().next_restore_step(v),
        };
        match next {
            None => {
                self.pms.pop_front();
                if let Pm::Restore(r) = pm {
                    check_restore_done(self.app(), r)?;
                }
                check_invariants(self.app(), self.version, &self.held, self.pms.is_empty())
            }
            Some(events) => {
                prop_assert!(!events.is_empty());
                if let Pm::Archive(v) = pm {
                    for e in &events {
                        let named = match e {
                            ApplicationEvent::SubscriptionClosed(e) => e.archive_version,
                            ApplicationEvent::SubscriptionRejected(e) => e.archive_version,
                            ApplicationEvent::ApiKeyRevoked(e) => e.archive_version,
                            ApplicationEvent::NotificationSettingsDeleted(e) => e.archive_version,
                            other => {
                                return Err(TestCaseError::fail(format!(
                                    "an archive step decided {other:?}"
                                )))
                            }
                        };
                        prop_assert_eq!(named, Some(v));
                    }
                } else {
                    prop_assert!(events
                        .iter()
                        .all(|e| matches!(e, ApplicationEvent::SubscriptionReopened(_))));
                }
                self.apply(events)
            }
        }
    }

    fn drain(&mut self) -> Result<(), TestCaseError> {
        let mut n = 0;
        while !self.pms.is_empty() {
            self.step()?;
            n += 1;
            prop_assert!(n < 10_000, "the process managers never finish");
        }
        Ok(())
    }
}

/// The invariants of one state; `settled`: no process manager is running.
fn check_invariants(
    app: &Application,
    version: i64,
    held: &HashSet<UniqueClaim>,
    settled: bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(app.version, version);
    prop_assert_eq!(app.updated_at, t(version));
    let now = t(version);
    let mut key_ids = HashSet::new();
    for s in &app.subscriptions {
        let open = app
            .subscriptions
            .iter()
            .filter(|o| o.plan_id == s.plan_id && o.status.is_open())
            .count();
        prop_assert!(open <= 1, "{open} open subscriptions to {}", s.plan_id);
        prop_assert!(s.security != PlanSecurity::Keyless);
        if s.security != PlanSecurity::ApiKey {
            prop_assert!(s.api_keys.is_empty(), "{s:?}");
        }
        if !matches!(s.status, Accepted | Paused) {
            for k in &s.api_keys {
                prop_assert!(k.revoked_at.is_some(), "unrevoked key on {s:?}");
                prop_assert!(!k.valid_at(now));
            }
        }
        if s.ended_by_archive.is_some() {
            prop_assert!(matches!(s.status, Closed | Rejected), "{s:?}");
        }
        for k in &s.api_keys {
            prop_assert!(key_ids.insert(k.id.clone()), "key {} twice", k.id);
        }
    }
    prop_assert!(app.subscriptions.len() <= MAX_SUBSCRIPTIONS);
    // The store holds exactly the claims the state implies.
    let mut expected: HashSet<UniqueClaim> = app.index_claims(None).into_iter().collect();
    expected.extend(app.client_id_claim());
    prop_assert_eq!(held, &expected);
    if !settled {
        return Ok(());
    }
    // Once the archive's steps are done, nothing is left open, valid or notified.
    if app.status == ApplicationStatus::Archived {
        prop_assert!(app.subscriptions.iter().all(|s| !s.status.is_open()));
        prop_assert!(app
            .subscriptions
            .iter()
            .flat_map(|s| &s.api_keys)
            .all(|k| k.revoked_at.is_some()));
        prop_assert!(app.notifications.is_empty());
    }
    Ok(())
}

/// When the steps of the restore at `r` are done (and it is the application's last restore):
/// every subscription an archive ended is open again, unless a later subscription to its plan
/// superseded it. A restore undoes its archive, and any earlier one whose restore was overtaken.
fn check_restore_done(app: &Application, r: i64) -> Result<(), TestCaseError> {
    if app.status != ApplicationStatus::Active || app.restored_version != Some(r) {
        return Ok(());
    }
    let a = app.archived_version.expect("restored without an archive");
    prop_assert!(r > a);
    for (i, s) in app.subscriptions.iter().enumerate() {
        if s.ended_by_archive.is_some() {
            let superseded = app.subscriptions[i + 1..]
                .iter()
                .any(|o| o.plan_id == s.plan_id);
            prop_assert!(superseded, "{} ended by an archive, not reopened", s.id);
        }
    }
    Ok(())
}

/// The outcome the rules dictate for `cmd`: `Err(code)` or `Ok(())`.
fn expected(world: &World, cmd: &Cmd, plans: &[Plan]) -> Result<(), &'static str> {
    let app = world.app();
    let archived = app.status == ApplicationStatus::Archived;
    let no_client_id = app.client_id.is_none();
    let sub = |i: &Index| world.pick(i);
    let transition = Err("subscription.transition");
    match cmd {
        Cmd::Subscribe(p) => {
            let p = &plans[*p];
            if archived {
                Err("application.archived")
            } else if p.security == PlanSecurity::Keyless {
                Err("subscription.plan_keyless")
            } else if p.status == PlanStatus::Closed {
                Err("subscription.plan_closed")
            } else if p.security.needs_client_id() && no_client_id {
                Err("subscription.client_id_required")
            } else if open_for(app, &p.id) > 0 {
                Err("subscription.exists")
            } else if app.subscriptions.len() >= MAX_SUBSCRIPTIONS {
                Err("subscription.limit")
            } else {
                Ok(())
            }
        }
        Cmd::Accept(i) => match sub(i) {
            None => Err("subscription.not_found"),
            Some(_) if archived => Err("application.archived"),
            Some(s) if s.status != Pending => transition,
            Some(s) if s.security.needs_client_id() && no_client_id => {
                Err("subscription.client_id_required")
            }
            Some(_) => Ok(()),
        },
        Cmd::Reject(i, _) => match sub(i) {
            None => Err("subscription.not_found"),
            Some(s) if s.status != Pending => transition,
            Some(_) => Ok(()),
        },
        Cmd::Pause(i) => match sub(i) {
            None => Err("subscription.not_found"),
            Some(s) if s.status != Accepted => transition,
            Some(_) if archived => Err("application.archived"),
            Some(_) => Ok(()),
        },
        Cmd::Resume(i) => match sub(i) {
            None => Err("subscription.not_found"),
            Some(s) if s.status != Paused => transition,
            Some(_) if archived => Err("application.archived"),
            Some(_) => Ok(()),
        },
        Cmd::Close(i) => match sub(i) {
            None => Err("subscription.not_found"),
            // PENDING is withdrawn (rejected); ACCEPTED and PAUSED are closed.
            Some(s) if !matches!(s.status, Pending | Accepted | Paused) => transition,
            Some(_) => Ok(()),
        },
        Cmd::Renew(i, _) => match sub(i) {
            None => Err("subscription.not_found"),
            Some(_) if archived => Err("application.archived"),
            Some(s) if s.security != PlanSecurity::ApiKey => Err("subscription.not_api_key"),
            Some(s) if !matches!(s.status, Accepted | Paused) => transition,
            Some(s) if s.api_keys.len() >= MAX_KEYS => Err("api_key.limit"),
            Some(_) => Ok(()),
        },
        Cmd::Revoke(i, _) => match sub(i) {
            None => Err("subscription.not_found"),
            Some(s) if s.api_keys.is_empty() => Err("api_key.not_found"),
            Some(_) => Ok(()),
        },
        Cmd::Notify(_, hooks, email) => {
            if archived {
                Err("application.archived")
            } else if !hooks.is_empty() && !email {
                Err("validation.failed")
            } else {
                Ok(())
            }
        }
        Cmd::SetClientId(_) if archived => Err("application.archived"),
        Cmd::SetClientId(_) => Ok(()),
        Cmd::Archive(_) if archived => Err("application.archived"),
        Cmd::Archive(_) => Ok(()),
        Cmd::Restore(_) if !archived => Err("application.not_archived"),
        Cmd::Restore(_) => Ok(()),
        Cmd::Step => Ok(()),
    }
}

/// Decides `cmd`, checks the outcome against the rules, applies it.
fn run(world: &mut World, cmd: Cmd, plans: &[Plan]) -> Result<(), TestCaseError> {
    if let Cmd::Step = cmd {
        return world.step();
    }
    let want = expected(world, &cmd, plans);
    let now = t(world.version);
    let app = world.app().clone();
    let sub_id = |world: &World, i: &Index| {
        world
            .pick(i)
            .map(|s| s.id)
            .unwrap_or_else(|| "nope".to_string())
    };
    let result = match &cmd {
        Cmd::Subscribe(p) => {
            world.next_sub += 1;
            let k = world.new_key();
            app.subscribe(format!("s-{}", world.next_sub), &plans[*p], &k)
        }
        Cmd::Accept(i) => {
            let id = sub_id(world, i);
            let k = world.new_key();
            app.accept_subscription(&id, &k)
        }
        Cmd::Reject(i, reason) => {
            app.reject_subscription(&sub_id(world, i), reason.then_some("  not now  "))
        }
        Cmd::Pause(i) => app.pause_subscription(&sub_id(world, i)),
        Cmd::Resume(i) => app.resume_subscription(&sub_id(world, i)),
        Cmd::Close(i) => app.close_subscription(&sub_id(world, i)),
        Cmd::Renew(i, grace) => {
            let id = sub_id(world, i);
            let k = world.new_key();
            app.renew_api_key(&id, &k, now, chrono::Duration::seconds(i64::from(*grace)))
        }
        Cmd::Revoke(i, k) => {
            let key_id = world
                .pick(i)
                .filter(|s| !s.api_keys.is_empty())
                .map(|s| s.api_keys[k.index(s.api_keys.len())].id.clone())
                .unwrap_or_else(|| "nope".to_string());
            app.revoke_api_key(&sub_id(world, i), &key_id)
        }
        Cmd::Notify(u, hooks, email) => app.update_notifications(
            user(USERS[*u]),
            hooks.iter().copied().collect(),
            email.then(|| sealed(&format!("{}@example.org", USERS[*u]))),
        ),
        Cmd::SetClientId(set) => app.update(
            UpdateApplication {
                client_id: if *set {
                    Patch::Set(cid("weather-cid"))
                } else {
                    Patch::Clear
                },
                ..Default::default()
            },
            &policy(),
        ),
        Cmd::Archive(_) => app.archive(),
        Cmd::Restore(_) => app.restore(&admin("root")),
        Cmd::Step => unreachable!(),
    };
    prop_assert_eq!(
        result.as_ref().map(|_| ()).map_err(DomainError::code),
        want,
        "{:?} on {:#?}",
        cmd,
        app.subscriptions
    );
    let Ok(events) = result else {
        return Ok(());
    };
    // What a success decides.
    match &cmd {
        Cmd::Subscribe(p) => {
            let p = &plans[*p];
            let n = match (p.validation, p.security) {
                (PlanValidation::Manual, _) => 1,
                (PlanValidation::Auto, PlanSecurity::ApiKey) => 3,
                (PlanValidation::Auto, _) => 2,
            };
            prop_assert_eq!(events.len(), n);
        }
        Cmd::Revoke(i, k) => {
            let s = world.pick(i).unwrap();
            let revoked = s.api_keys[k.index(s.api_keys.len())].revoked_at.is_some();
            prop_assert_eq!(events.len(), usize::from(!revoked));
        }
        _ => {}
    }
    // The process manager reacts to the archive or restore event (at the next version).
    let first = world.version + 1;
    let drain = match cmd {
        Cmd::Archive(drain) => {
            world.pms.push_back(Pm::Archive(first));
            drain
        }
        Cmd::Restore(drain) => {
            world.pms.push_back(Pm::Restore(first));
            drain
        }
        _ => false,
    };
    world.apply(events)?;
    if drain {
        world.drain()?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn random_subscription_commands_keep_the_invariants(
        with_client_id in any::<bool>(),
        commands in prop::collection::vec(arb_cmd(), 0..48),
    ) {
        let plans = plans();
        let created = if with_client_id { app_with_client_id() } else { app_without_client_id() };
        let mut world = World {
            state: None,
            version: 0,
            log: vec![],
            held: HashSet::new(),
            pms: VecDeque::new(),
            next_sub: 0,
            next_key: 0,
        };
        world.apply(created)?;
        for cmd in commands {
            run(&mut world, cmd, &plans)?;
        }
        world.drain()?;
        check_invariants(world.app(), world.version, &world.held, true)?;

        // The log, stored and read back, rebuilds the same state.
        let replayed: Vec<ApplicationEvent> = world
            .log
            .iter()
            .map(|e| ApplicationEvent::decode(e.event_type(), e.schema_version(), e.data()).unwrap())
            .collect();
        prop_assert_eq!(&replayed, &world.log);
        let (rebuilt, v) = fold(None, 0, &replayed);
        prop_assert_eq!(v, world.version);
        prop_assert_eq!(rebuilt, world.state);
    }
}

/// The archive's steps, run to the end, on any mix of subscriptions: nothing valid is left.
#[test]
fn a_fully_run_archive_leaves_no_valid_key_whatever_the_statuses() {
    let mut s = Story::new(app_with_client_id());
    for (n, p) in subscribable_plans().iter().enumerate() {
        let id = format!("s-{n}");
        s.run(|a| a.subscribe(id.clone(), p, &key(n as u32)));
    }
    s.run(|a| a.pause_subscription("s-0"));
    s.run(|a| a.accept_subscription("s-1", &key(10)));
    s.run(|a| a.reject_subscription("s-3", None));
    let (a, _) = s.archive_fully();
    let app = s.app();
    assert!(app.subscriptions.iter().all(|s| !s.status.is_open()));
    assert!(app
        .subscriptions
        .iter()
        .flat_map(|s| &s.api_keys)
        .all(|k| !k.valid_at(t(s.version))));
    // Ended by the archive: all but the one rejected before.
    let ended: Vec<&str> = app
        .subscriptions
        .iter()
        .filter(|s| s.ended_by_archive == Some(a))
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(ended, ["s-0", "s-1", "s-2", "s-4", "s-5"]);
}
