//! Races on one application's members: concurrent transfers, removals, role changes and
//! additions are settled by optimistic concurrency (each command is decided again on the latest
//! version after a conflict), so there is exactly one primary owner after every round — and at
//! every version of the log, which the test folds itself (without the domain's `evolve`, which
//! would hide a second primary owner).

use crate::helpers::{Resp, TestApp};
use crate::on_both;
use futures::future::join_all;
use serde_json::{json, Value};
use std::collections::BTreeMap;

const PO: &str = "PRIMARY_OWNER";
const USERS: [&str; 3] = ["ana", "ben", "cy"];

/// A small deterministic generator (xorshift64), so that a failing round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Folds a history's membership events, checking at every version that each event was decided
/// on the state before it and that there is exactly one primary owner.
fn fold_members(items: &[Value]) -> BTreeMap<String, String> {
    let mut members: BTreeMap<String, String> = BTreeMap::new();
    let s = |v: &Value| v.as_str().unwrap().to_string();
    for item in items {
        let d = &item["data"];
        let at = format!("version {}: {item}", item["version"]);
        let current_po = members
            .iter()
            .find(|(_, r)| *r == PO)
            .map(|(u, _)| u.clone());
        match item["type"].as_str().unwrap() {
            "ApplicationCreated" => {
                assert!(members.is_empty(), "{at}");
                members.insert(s(&d["primary_owner"]), PO.into());
            }
            "MemberAdded" => {
                let (user, role) = (s(&d["user"]), s(&d["role"]));
                assert!(!members.contains_key(&user), "{at}: added twice");
                assert_ne!(role, PO, "{at}");
                members.insert(user, role);
            }
            "MemberRoleChanged" => {
                let (user, from, to) = (s(&d["user"]), s(&d["from"]), s(&d["to"]));
                assert_eq!(members.get(&user), Some(&from), "{at}: from");
                assert!(from != PO && to != PO && from != to, "{at}");
                members.insert(user, to);
            }
            "MemberRemoved" => {
                let (user, role) = (s(&d["user"]), s(&d["role"]));
                assert_eq!(members.get(&user), Some(&role), "{at}: role");
                assert_ne!(role, PO, "{at}: the primary owner was removed");
                members.remove(&user);
            }
            "PrimaryOwnershipTransferred" => {
                let (from, to, former) = (s(&d["from"]), s(&d["to"]), s(&d["former_owner_role"]));
                assert_eq!(current_po.as_deref(), Some(from.as_str()), "{at}: from");
                assert!(from != to && former != PO, "{at}");
                members.insert(from, former);
                members.insert(to, PO.into());
            }
            other => panic!("{at}: unexpected {other}"),
        }
        let owners = members.values().filter(|r| *r == PO).count();
        assert_eq!(owners, 1, "{at}: {owners} primary owners in {members:?}");
    }
    members
}

/// `user → role` of a member list.
fn roles(r: &Resp) -> BTreeMap<String, String> {
    r.assert_status(200);
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Transfer,
    Remove,
    ChangeRole,
    Add,
}

/// Every answer a racing member command may give: a success or a refusal decided on the state
/// it met, or an optimistic-concurrency conflict once its retries are spent. Never a 5xx.
fn allowed(kind: Kind, r: &Resp) -> bool {
    let ok = match kind {
        Kind::Transfer | Kind::ChangeRole => 200,
        Kind::Remove => 204,
        Kind::Add => 201,
    };
    r.status == ok
        || matches!(
            (r.status, r.code()),
            (403, "permission.denied")
                | (404, "application.not_found" | "member.not_found")
                | (
                    409,
                    "member.primary_owner"
                        | "member.exists"
                        | "member.already_primary_owner"
                        | "concurrency.conflict"
                )
        )
}

async fn concurrent_transfers_removals_and_role_changes(app: TestApp) {
    let admin = app.token("root", true);
    let tokens: BTreeMap<&str, String> = USERS.iter().map(|u| (*u, app.token(u, false))).collect();
    let id = app.create_simple(&tokens["ana"], "Contested", None).await;
    let path = format!("applications/{id}");
    let members = format!("{path}/members");
    for user in ["ben", "cy"] {
        app.post(
            &members,
            &tokens["ana"],
            json!({"user": user, "role": "OWNER"}),
        )
        .await
        .assert_status(201);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut successes: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut primary = "ana".to_string();
    let mut current = roles(&app.get(&members, &admin).await);
    let roles_of = ["OWNER", "USER"];

    for round in 0..30 {
        // Ten commands: three transfers (half of them by the current primary owner, the others
        // by anyone, an administrator included), three removals, two role changes and two
        // additions, by members or an administrator.
        let mut ops: Vec<(Kind, String, reqwest::RequestBuilder)> = Vec::new();
        let who = |rng: &mut Rng, primary: &str| -> (String, String) {
            let by = match rng.next() % 4 {
                0 => primary.to_string(),
                1 => "root".to_string(),
                _ => rng.pick(&USERS).to_string(),
            };
            let token = if by == "root" {
                admin.clone()
            } else {
                tokens[by.as_str()].clone()
            };
            (by, token)
        };
        for i in 0..3 {
            let (by, token) = if i == 0 {
                (primary.clone(), tokens[primary.as_str()].clone())
            } else {
                who(&mut rng, &primary)
            };
            let to = rng.pick(&USERS);
            let former = rng.pick(&roles_of);
            let request = app
                .request(
                    reqwest::Method::POST,
                    &format!("{members}/_transfer_ownership"),
                    Some(&token),
                )
                .json(&json!({"user": to, "former_owner_role": former}));
            ops.push((Kind::Transfer, format!("{by}: transfer to {to}"), request));
        }
        for _ in 0..3 {
            let (by, token) = who(&mut rng, &primary);
            let user = rng.pick(&USERS);
            let request = app.request(
                reqwest::Method::DELETE,
                &format!("{members}/{user}"),
                Some(&token),
            );
            ops.push((Kind::Remove, format!("{by}: remove {user}"), request));
        }
        for _ in 0..2 {
            let (by, token) = who(&mut rng, &primary);
            let user = rng.pick(&USERS);
            let role = rng.pick(&roles_of);
            let request = app
                .request(
                    reqwest::Method::PUT,
                    &format!("{members}/{user}"),
                    Some(&token),
                )
                .json(&json!({"role": role}));
            ops.push((Kind::ChangeRole, format!("{by}: {user} → {role}"), request));
        }
        // The additions name someone who was not a member when the round began, when there is
        // one, so that they race with the transfers (which make a newcomer primary owner) and
        // with each other rather than mostly meeting `member.exists`.
        let absent: Vec<&str> = USERS
            .iter()
            .copied()
            .filter(|u| !current.contains_key(*u))
            .collect();
        for _ in 0..2 {
            let user = if absent.is_empty() {
                rng.pick(&USERS)
            } else {
                rng.pick(&absent)
            };
            let role = rng.pick(&roles_of);
            let request = app
                .request(reqwest::Method::POST, &members, Some(&admin))
                .json(&json!({"user": user, "role": role}));
            ops.push((Kind::Add, format!("root: add {user} as {role}"), request));
        }
        let (kinds, requests): (Vec<_>, Vec<_>) = ops
            .into_iter()
            .map(|(kind, what, request)| ((kind, what), app.send(request)))
            .unzip();
        let answers = join_all(requests).await;
        for ((kind, what), r) in kinds.iter().zip(&answers) {
            assert!(
                allowed(*kind, r),
                "round {round}, {what}: {} {}",
                r.status,
                r.body
            );
            if r.status < 300 {
                *successes.entry(*kind).or_default() += 1;
            }
        }

        // Exactly one primary owner: in the members, in the application, at every version of
        // the history — and the members are what the history says.
        let listed = roles(&app.get(&members, &admin).await);
        let owners: Vec<&String> = listed
            .iter()
            .filter(|(_, r)| *r == PO)
            .map(|(u, _)| u)
            .collect();
        assert_eq!(owners.len(), 1, "round {round}: {listed:?}");
        primary = owners[0].clone();
        let view = app.get(&path, &admin).await;
        assert_eq!(view.body["owner"]["id"], primary.as_str(), "round {round}");
        let history = app.get(&format!("{path}/history"), &admin).await;
        history.assert_status(200);
        let folded = fold_members(history.body["items"].as_array().unwrap());
        assert_eq!(folded, listed, "round {round}");
        let primary_view = app.get(&path, &tokens[primary.as_str()]).await;
        assert_eq!(primary_view.body["role"], PO, "round {round}");
        current = listed;
    }
    // The rounds did race: every kind of command succeeded many times.
    for kind in [Kind::Transfer, Kind::Remove, Kind::ChangeRole, Kind::Add] {
        assert!(
            successes.get(&kind).copied().unwrap_or(0) >= 5,
            "too few successful {kind:?}: {successes:?}"
        );
    }
    app.stop().await;
}

async fn one_of_concurrent_transfers_wins(app: TestApp) {
    // The primary owner gives the application to five people at once, keeping USER: the first
    // transfer decided wins; every other one, decided again after the conflict, finds that she
    // no longer has MEMBER[U]. Only the winner appends, so no command runs out of retries.
    let paula = app.token("paula", false);
    let id = app.create_simple(&paula, "Wanted", None).await;
    let members = format!("applications/{id}/members");
    let heirs = ["h1", "h2", "h3", "h4", "h5"];
    for round in 0..5 {
        let before = app.event_count().await;
        let transfer = format!("{members}/_transfer_ownership");
        let transfers = heirs.iter().map(|h| {
            app.post(
                &transfer,
                &paula,
                json!({"user": h, "former_owner_role": "USER"}),
            )
        });
        let answers = join_all(transfers).await;
        let winners: Vec<usize> = (0..heirs.len())
            .filter(|i| answers[*i].status == 200)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "round {round}: {:?}",
            answers
                .iter()
                .map(|r| (r.status, r.code().to_string()))
                .collect::<Vec<_>>()
        );
        for (i, r) in answers.iter().enumerate() {
            if i != winners[0] {
                r.assert_problem(403, "permission.denied");
            }
        }
        app.assert_appended(before, 1, "one transfer").await;
        let winner = heirs[winners[0]];
        let listed = roles(&app.get(&members, &paula).await);
        assert_eq!(listed.get(winner).map(String::as_str), Some(PO));
        assert_eq!(listed.get("paula").map(String::as_str), Some("USER"));
        assert_eq!(listed.values().filter(|r| *r == PO).count(), 1);
        // The winner hands it back, for the next round.
        app.post(
            &format!("{members}/_transfer_ownership"),
            &app.token(winner, false),
            json!({"user": "paula", "former_owner_role": "USER"}),
        )
        .await
        .assert_status(200);
    }
    app.stop().await;
}

async fn transfer_races_removal_of_the_heir(app: TestApp) {
    // A transfer to owen and owen's removal, at once: either the removal comes first (and the
    // transfer, to a non-member, still makes him primary owner) or the transfer does (and the
    // removal of the primary owner is refused). Owen is primary owner either way.
    let admin = app.token("root", true);
    let paula = app.token("paula", false);
    for round in 0..10 {
        let id = app.create_simple(&paula, "Heir", None).await;
        let members = format!("applications/{id}/members");
        app.post(&members, &paula, json!({"user": "owen", "role": "OWNER"}))
            .await
            .assert_status(201);
        let (transfer_path, owen) = (
            format!("{members}/_transfer_ownership"),
            format!("{members}/owen"),
        );
        let (transfer, removal, demotion) = tokio::join!(
            app.post(&transfer_path, &paula, json!({"user": "owen"})),
            app.delete(&owen, &admin),
            app.put(&owen, &admin, json!({"role": "USER"})),
        );
        transfer.assert_status(200);
        assert!(
            removal.status == 204
                || (removal.status == 409 && removal.code() == "member.primary_owner"),
            "round {round}: removal {} {}",
            removal.status,
            removal.body
        );
        assert!(
            demotion.status == 200
                || (demotion.status == 404 && demotion.code() == "member.not_found")
                || (demotion.status == 409 && demotion.code() == "member.primary_owner"),
            "round {round}: demotion {} {}",
            demotion.status,
            demotion.body
        );
        let listed = roles(&app.get(&members, &admin).await);
        assert_eq!(
            listed.get("owen").map(String::as_str),
            Some(PO),
            "round {round}"
        );
        assert_eq!(listed.get("paula").map(String::as_str), Some("USER"));
        let history = app.get(&format!("applications/{id}/history"), &admin).await;
        assert_eq!(
            fold_members(history.body["items"].as_array().unwrap()),
            listed
        );
    }
    app.stop().await;
}

on_both!(
    concurrent_transfers_removals_and_role_changes,
    one_of_concurrent_transfers_wins,
    transfer_races_removal_of_the_heir,
);
