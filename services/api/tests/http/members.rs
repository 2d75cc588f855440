//! Members (`/applications/{id}/members`): add, change a role, remove, transfer the primary
//! ownership; profiles that fill in on a user's first request; members of archived and restored
//! applications; and every membership change in the history, with its actor.

use crate::helpers::{Resp, TestApp};
use crate::on_both;
use appreg_domain::permissions::{grants, Permission, Role};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `user → role` of a member list.
fn roles(r: &Resp) -> BTreeMap<String, String> {
    r.assert_status(200);
    r.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a member list: {}", r.body))
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap().to_string(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(u, r)| (u.to_string(), r.to_string()))
        .collect()
}

/// The list's entry for `user`.
fn member<'a>(r: &'a Resp, user: &str) -> &'a Value {
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == user)
        .unwrap_or_else(|| panic!("{user} is not listed: {}", r.body))
}

/// Asserts that an application view shows `role` and the matrix's permissions for it.
#[track_caller]
fn assert_role_and_permissions(r: &Resp, role: Role) {
    r.assert_status(200);
    assert_eq!(r.body["role"], role.as_str(), "{}", r.body);
    for p in Permission::ALL {
        assert_eq!(
            r.body["permissions"][p.as_str()],
            grants(role, p),
            "{role:?} {p:?}: {}",
            r.body
        );
    }
}

async fn add_members(app: TestApp) {
    let paula = app.token("paula", false);
    let id = app.create_simple(&paula, "Shared", None).await;
    let members = format!("applications/{id}/members");
    let mut count = app.event_count().await;

    // The creator is the only member: the primary owner, with the profile of her token.
    let r = app.get(&members, &paula).await;
    r.assert_status(200);
    assert_eq!(
        r.body["items"],
        json!([{"user": "paula", "name": "paula name", "email": null, "role": "PRIMARY_OWNER"}])
    );

    // An OWNER, who has never signed in: known by subject, no profile yet.
    let r = app
        .post(&members, &paula, json!({"user": "owen", "role": "OWNER"}))
        .await;
    r.assert_status(201);
    assert_eq!(
        r.body,
        json!({"user": "owen", "name": null, "email": null, "role": "OWNER"})
    );
    assert!(r.header("x-consistency-token").is_some());
    count = app.assert_appended(count, 1, "add owen").await;
    // Without a role: USER.
    let r = app.post(&members, &paula, json!({"user": "ursula"})).await;
    r.assert_status(201);
    assert_eq!(r.body["role"], "USER");
    count = app.assert_appended(count, 1, "add ursula").await;
    assert_eq!(
        roles(&app.get(&members, &paula).await),
        map(&[
            ("owen", "OWNER"),
            ("paula", "PRIMARY_OWNER"),
            ("ursula", "USER")
        ])
    );

    // Refused: nothing appended.
    app.post(
        &members,
        &paula,
        json!({"user": "x", "role": "PRIMARY_OWNER"}),
    )
    .await
    .assert_invalid(&[("role", "role.primary_owner")]);
    for bad in ["ADMIN", "owner", ""] {
        app.post(&members, &paula, json!({"user": "x", "role": bad}))
            .await
            .assert_invalid(&[("role", "role.invalid")]);
    }
    let r = app
        .post(&members, &paula, json!({"user": "owen", "role": "USER"}))
        .await;
    r.assert_problem(409, "member.exists");
    // The primary owner cannot be added a second time either.
    app.post(&members, &paula, json!({"user": "paula"}))
        .await
        .assert_problem(409, "member.exists");
    app.post(&members, &paula, json!({"role": "USER"}))
        .await
        .assert_invalid(&[("user", "field.required")]);
    app.post(&members, &paula, json!({"user": ""}))
        .await
        .assert_invalid(&[("user", "user.invalid")]);
    app.post(&members, &paula, json!({"user": "x".repeat(256)}))
        .await
        .assert_invalid(&[("user", "user.invalid")]);
    app.post(&members, &paula, json!({"user": 7}))
        .await
        .assert_problem(422, "validation.failed");
    app.post(&members, &paula, json!({"user": "x", "rank": "OWNER"}))
        .await
        .assert_problem(422, "validation.failed");
    // A USER may not add members (MEMBER[C]); an OWNER may.
    let ursula = app.token("ursula", false);
    app.post(&members, &ursula, json!({"user": "x"}))
        .await
        .assert_problem(403, "permission.denied");
    app.assert_unchanged(count, "refused additions").await;
    let owen = app.token("owen", false);
    app.post(&members, &owen, json!({"user": "olivia", "role": "OWNER"}))
        .await
        .assert_status(201);
    app.assert_appended(count, 1, "an owner adds a member")
        .await;

    // Each member's view of the application carries their role and the matrix's permissions.
    let path = format!("applications/{id}");
    assert_role_and_permissions(&app.get(&path, &paula).await, Role::PrimaryOwner);
    assert_role_and_permissions(&app.get(&path, &owen).await, Role::Owner);
    assert_role_and_permissions(&app.get(&path, &ursula).await, Role::User);
    // ... and in their lists.
    let list = app.get("applications", &ursula).await;
    assert_eq!(list.body["total"], 1);
    assert_eq!(list.body["items"][0]["role"], "USER");
    assert_eq!(list.body["items"][0]["permissions"]["DEFINITION"], "R");
    assert_eq!(list.body["items"][0]["permissions"]["NOTIFICATION"], "");
    app.stop().await;
}

async fn profiles_fill_in_on_first_request(app: TestApp) {
    let paula = app.token("paula", false);
    let id = app.create_simple(&paula, "Shared", None).await;
    let members = format!("applications/{id}/members");
    app.post(&members, &paula, json!({"user": "owen", "role": "OWNER"}))
        .await
        .assert_status(201);
    let listed = app.get(&members, &paula).await;
    assert_eq!(
        member(&listed, "owen"),
        &json!({"user": "owen", "name": null, "email": null, "role": "OWNER"})
    );

    // Owen's first request, in this environment (any request: here the application types).
    let mut claims = app.claims("owen", false);
    claims.name = Some("Owen Owner".into());
    claims.email = Some("owen@example.com".into());
    let owen = app.sign(claims);
    app.get("application-types", &owen).await.assert_status(200);
    // Right after it, his profile shows, to every reader.
    let listed = app.get(&members, &paula).await;
    assert_eq!(
        member(&listed, "owen"),
        &json!({"user": "owen", "name": "Owen Owner", "email": "owen@example.com", "role": "OWNER"})
    );
    let listed = app.get(&members, &owen).await;
    assert_eq!(member(&listed, "owen")["name"], "Owen Owner");

    // The same for many users in a row: each one's profile shows as soon as their first
    // request has been answered (no waiting, no retry).
    for i in 0..40 {
        let user = format!("late-{i}");
        app.post(&members, &paula, json!({"user": user}))
            .await
            .assert_status(201);
        let mut claims = app.claims(&user, false);
        claims.email = Some(format!("{user}@example.com"));
        app.get("applications", &app.sign(claims))
            .await
            .assert_status(200);
        let listed = app.get(&members, &paula).await;
        assert_eq!(
            member(&listed, &user),
            &json!({"user": user, "name": format!("{user} name"), "email": format!("{user}@example.com"), "role": "USER"}),
            "{user}"
        );
    }

    // A first request in another environment is another first request: the profile is per
    // environment.
    app.create_environment("team").await;
    let r = app
        .post(
            "/v1/environments/team/applications",
            &paula,
            json!({"name": "Team's", "type": "simple"}),
        )
        .await;
    r.assert_status(201);
    let team_app = r.body["id"].as_str().unwrap().to_string();
    let team_members = format!("/v1/environments/team/applications/{team_app}/members");
    let r = app
        .post(&team_members, &paula, json!({"user": "owen"}))
        .await;
    r.assert_status(201);
    assert_eq!(
        r.body["name"],
        Value::Null,
        "owen has not been seen in team yet"
    );
    let mut claims = app.claims("owen", false);
    claims.name = Some("Owen in team".into());
    app.get("/v1/environments/team/applications", &app.sign(claims))
        .await
        .assert_status(200);
    let listed = app.get(&team_members, &paula).await;
    assert_eq!(member(&listed, "owen")["name"], "Owen in team");
    assert_eq!(member(&listed, "owen")["email"], Value::Null);
    // DEFAULT keeps the profile of owen's first request there.
    let listed = app.get(&members, &paula).await;
    assert_eq!(member(&listed, "owen")["name"], "Owen Owner");

    // The application's owner shows with the name of the primary owner's token.
    let r = app.get(&format!("applications/{id}"), &owen).await;
    assert_eq!(
        r.body["owner"],
        json!({"id": "paula", "name": "paula name"})
    );
    app.stop().await;
}

async fn change_roles(app: TestApp) {
    let paula = app.token("paula", false);
    let owen = app.token("owen", false);
    let ursula = app.token("ursula", false);
    let id = app.create_simple(&paula, "Shared", None).await;
    let members = format!("applications/{id}/members");
    for (user, role) in [("owen", "OWNER"), ("ursula", "USER")] {
        app.post(&members, &paula, json!({"user": user, "role": role}))
            .await
            .assert_status(201);
    }
    let mut count = app.event_count().await;

    // The same role again: 200, nothing appended, no consistency token.
    let r = app
        .put(
            &format!("{members}/ursula"),
            &paula,
            json!({"role": "USER"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(
        r.body,
        json!({"user": "ursula", "name": null, "email": null, "role": "USER"})
    );
    assert!(r.header("x-consistency-token").is_none());
    app.assert_unchanged(count, "same role").await;
    // A real change.
    let r = app
        .put(
            &format!("{members}/ursula"),
            &paula,
            json!({"role": "OWNER"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["role"], "OWNER");
    assert!(r.header("x-consistency-token").is_some());
    count = app.assert_appended(count, 1, "USER → OWNER").await;
    assert_role_and_permissions(
        &app.get(&format!("applications/{id}"), &ursula).await,
        Role::Owner,
    );
    // An OWNER changes roles too (MEMBER[U]).
    app.put(&format!("{members}/ursula"), &owen, json!({"role": "USER"}))
        .await
        .assert_status(200);
    count = app
        .assert_appended(count, 1, "OWNER → USER by an owner")
        .await;

    // Refused.
    app.put(
        &format!("{members}/nobody"),
        &paula,
        json!({"role": "USER"}),
    )
    .await
    .assert_problem(404, "member.not_found");
    app.put(
        &format!("{members}/paula"),
        &paula,
        json!({"role": "OWNER"}),
    )
    .await
    .assert_problem(409, "member.primary_owner");
    app.put(&format!("{members}/paula"), &owen, json!({"role": "USER"}))
        .await
        .assert_problem(409, "member.primary_owner");
    app.put(
        &format!("{members}/ursula"),
        &paula,
        json!({"role": "PRIMARY_OWNER"}),
    )
    .await
    .assert_invalid(&[("role", "role.primary_owner")]);
    app.put(&format!("{members}/ursula"), &paula, json!({"role": "GOD"}))
        .await
        .assert_invalid(&[("role", "role.invalid")]);
    app.put(&format!("{members}/ursula"), &paula, json!({}))
        .await
        .assert_invalid(&[("role", "field.required")]);
    app.put(&format!("{members}/owen"), &ursula, json!({"role": "USER"}))
        .await
        .assert_problem(403, "permission.denied");
    app.assert_unchanged(count, "refused role changes").await;
    assert_eq!(
        roles(&app.get(&members, &owen).await),
        map(&[
            ("owen", "OWNER"),
            ("paula", "PRIMARY_OWNER"),
            ("ursula", "USER")
        ])
    );
    app.stop().await;
}

async fn remove_members(app: TestApp) {
    let paula = app.token("paula", false);
    let owen = app.token("owen", false);
    let ursula = app.token("ursula", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&paula, "Shared", None).await;
    let members = format!("applications/{id}/members");
    for (user, role) in [("owen", "OWNER"), ("ursula", "USER"), ("uma", "USER")] {
        app.post(&members, &paula, json!({"user": user, "role": role}))
            .await
            .assert_status(201);
    }
    let mut count = app.event_count().await;

    // The primary owner cannot be removed, by anyone.
    for token in [&paula, &owen, &admin] {
        app.delete(&format!("{members}/paula"), token)
            .await
            .assert_problem(409, "member.primary_owner");
    }
    app.delete(&format!("{members}/nobody"), &paula)
        .await
        .assert_problem(404, "member.not_found");
    app.delete(&format!("{members}/owen"), &ursula)
        .await
        .assert_problem(403, "permission.denied");
    app.assert_unchanged(count, "refused removals").await;

    // An OWNER removes a USER; the removed user sees the application no more.
    let r = app.delete(&format!("{members}/ursula"), &owen).await;
    r.assert_status(204);
    assert!(r.header("x-consistency-token").is_some());
    count = app.assert_appended(count, 1, "remove ursula").await;
    app.get(&format!("applications/{id}"), &ursula)
        .await
        .assert_problem(404, "application.not_found");
    app.get(&members, &ursula)
        .await
        .assert_problem(404, "application.not_found");
    assert_eq!(app.get("applications", &ursula).await.body["total"], 0);
    // Removing her again: not a member.
    app.delete(&format!("{members}/ursula"), &owen)
        .await
        .assert_problem(404, "member.not_found");
    // An administrator removes anyone but the primary owner.
    app.delete(&format!("{members}/uma"), &admin)
        .await
        .assert_status(204);
    count = app.assert_appended(count, 1, "remove uma").await;
    // The primary owner removes an owner.
    app.delete(&format!("{members}/owen"), &paula)
        .await
        .assert_status(204);
    app.assert_appended(count, 1, "remove owen").await;
    assert_eq!(
        roles(&app.get(&members, &paula).await),
        map(&[("paula", "PRIMARY_OWNER")])
    );
    app.stop().await;
}

async fn transfer_ownership(app: TestApp) {
    let paula = app.token("paula", false);
    let owen = app.token("owen", false);
    let ursula = app.token("ursula", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&paula, "Shared", None).await;
    let path = format!("applications/{id}");
    let members = format!("{path}/members");
    let transfer = format!("{members}/_transfer_ownership");
    for (user, role) in [("owen", "OWNER"), ("ursula", "USER")] {
        app.post(&members, &paula, json!({"user": user, "role": role}))
            .await
            .assert_status(201);
    }
    let mut count = app.event_count().await;

    // Refused: a USER (no MEMBER[U]), a transfer to oneself, PRIMARY_OWNER for the former one,
    // no user.
    app.post(&transfer, &ursula, json!({"user": "ursula"}))
        .await
        .assert_problem(403, "permission.denied");
    app.post(&transfer, &paula, json!({"user": "paula"}))
        .await
        .assert_problem(409, "member.already_primary_owner");
    app.post(
        &transfer,
        &paula,
        json!({"user": "owen", "former_owner_role": "PRIMARY_OWNER"}),
    )
    .await
    .assert_invalid(&[("former_owner_role", "role.primary_owner")]);
    app.post(
        &transfer,
        &paula,
        json!({"user": "owen", "former_owner_role": "ADMIN"}),
    )
    .await
    .assert_invalid(&[("former_owner_role", "role.invalid")]);
    app.post(&transfer, &paula, json!({}))
        .await
        .assert_invalid(&[("user", "field.required")]);
    app.post(&transfer, &paula, json!({"user": ""}))
        .await
        .assert_invalid(&[("user", "user.invalid")]);
    app.post(&transfer, &paula, json!({"user": "owen", "role": "USER"}))
        .await
        .assert_problem(422, "validation.failed");
    app.assert_unchanged(count, "refused transfers").await;

    // To an OWNER; the former primary owner gets USER (the default). The answer is the caller's
    // view of the application.
    let r = app.post(&transfer, &paula, json!({"user": "owen"})).await;
    assert!(r.header("x-consistency-token").is_some());
    assert_role_and_permissions(&r, Role::User);
    assert_eq!(r.body["owner"]["id"], "owen");
    count = app.assert_appended(count, 1, "paula → owen").await;
    assert_eq!(
        roles(&app.get(&members, &owen).await),
        map(&[
            ("owen", "PRIMARY_OWNER"),
            ("paula", "USER"),
            ("ursula", "USER")
        ])
    );
    assert_role_and_permissions(&app.get(&path, &owen).await, Role::PrimaryOwner);
    assert_role_and_permissions(&app.get(&path, &paula).await, Role::User);
    // Paula may not give it away again, nor archive.
    app.post(&transfer, &paula, json!({"user": "paula"}))
        .await
        .assert_problem(403, "permission.denied");
    app.delete(&path, &paula)
        .await
        .assert_problem(403, "permission.denied");
    app.assert_unchanged(count, "refused after the transfer")
        .await;

    // To a user who is not a member yet (and has never signed in); the former one keeps OWNER.
    let r = app
        .post(
            &transfer,
            &owen,
            json!({"user": "newcomer", "former_owner_role": "OWNER"}),
        )
        .await;
    assert_role_and_permissions(&r, Role::Owner);
    assert_eq!(r.body["owner"], json!({"id": "newcomer", "name": null}));
    count = app.assert_appended(count, 1, "owen → newcomer").await;
    assert_eq!(
        roles(&app.get(&members, &owen).await),
        map(&[
            ("newcomer", "PRIMARY_OWNER"),
            ("owen", "OWNER"),
            ("paula", "USER"),
            ("ursula", "USER")
        ])
    );
    let newcomer = app.token("newcomer", false);
    assert_role_and_permissions(&app.get(&path, &newcomer).await, Role::PrimaryOwner);

    // An administrator transfers without being a member, and stays none.
    let r = app
        .post(
            &transfer,
            &admin,
            json!({"user": "paula", "former_owner_role": "USER"}),
        )
        .await;
    r.assert_status(200);
    assert_eq!(r.body["role"], Value::Null);
    assert_eq!(r.body["owner"]["id"], "paula");
    app.assert_appended(count, 1, "admin: newcomer → paula")
        .await;
    assert_eq!(
        roles(&app.get(&members, &admin).await),
        map(&[
            ("newcomer", "USER"),
            ("owen", "OWNER"),
            ("paula", "PRIMARY_OWNER"),
            ("ursula", "USER")
        ])
    );

    // An OWNER (MEMBER[U], as in Gravitee; the seed gives an owner every right but delete)
    // transfers too — here to himself; the former primary owner keeps OWNER.
    let r = app
        .post(
            &transfer,
            &owen,
            json!({"user": "owen", "former_owner_role": "OWNER"}),
        )
        .await;
    r.assert_status(200);
    assert_role_and_permissions(&r, Role::PrimaryOwner);
    assert_eq!(
        roles(&app.get(&members, &admin).await),
        map(&[
            ("newcomer", "USER"),
            ("owen", "PRIMARY_OWNER"),
            ("paula", "OWNER"),
            ("ursula", "USER")
        ])
    );
    app.stop().await;
}

async fn members_of_archived_and_restored_applications(app: TestApp) {
    let paula = app.token("paula", false);
    let owen = app.token("owen", false);
    let ursula = app.token("ursula", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&paula, "Shared", None).await;
    let path = format!("applications/{id}");
    let members = format!("{path}/members");
    for (user, role) in [("owen", "OWNER"), ("ursula", "USER")] {
        app.post(&members, &paula, json!({"user": user, "role": role}))
            .await
            .assert_status(201);
    }
    // An OWNER may not archive (DEFINITION[D]); the primary owner may.
    app.delete(&path, &owen)
        .await
        .assert_problem(403, "permission.denied");
    let r = app.delete(&path, &paula).await;
    r.assert_status(204);
    let token = r.header("x-consistency-token").unwrap();
    let mut count = app.event_count().await;

    // Hidden from its members: 404 everywhere, and not in their lists.
    for (token_of, who) in [(&paula, "paula"), (&owen, "owen"), (&ursula, "ursula")] {
        app.get(&path, token_of)
            .await
            .assert_problem(404, "application.not_found");
        app.get(&members, token_of)
            .await
            .assert_problem(404, "application.not_found");
        app.post(&members, token_of, json!({"user": "x"}))
            .await
            .assert_problem(404, "application.not_found");
        app.put(
            &format!("{members}/ursula"),
            token_of,
            json!({"role": "OWNER"}),
        )
        .await
        .assert_problem(404, "application.not_found");
        app.delete(&format!("{members}/ursula"), token_of)
            .await
            .assert_problem(404, "application.not_found");
        app.post(
            &format!("{members}/_transfer_ownership"),
            token_of,
            json!({"user": "owen"}),
        )
        .await
        .assert_problem(404, "application.not_found");
        let list = app
            .send(
                app.client
                    .get(app.url("applications"))
                    .bearer_auth(token_of)
                    .header("x-consistency-token", &token),
            )
            .await;
        list.assert_status(200);
        assert_eq!(list.body["total"], 0, "{who}: {}", list.body);
    }
    // An administrator sees the members the archive kept (the primary-owner link is dropped),
    // and may not change them while archived.
    assert_eq!(
        roles(&app.get(&members, &admin).await),
        map(&[("owen", "OWNER"), ("ursula", "USER")])
    );
    app.post(&members, &admin, json!({"user": "x"}))
        .await
        .assert_problem(409, "application.archived");
    app.put(
        &format!("{members}/ursula"),
        &admin,
        json!({"role": "OWNER"}),
    )
    .await
    .assert_problem(409, "application.archived");
    app.delete(&format!("{members}/ursula"), &admin)
        .await
        .assert_problem(409, "application.archived");
    app.post(
        &format!("{members}/_transfer_ownership"),
        &admin,
        json!({"user": "owen"}),
    )
    .await
    .assert_problem(409, "application.archived");
    app.assert_unchanged(count, "member commands on an archived application")
        .await;

    // Restore: the restoring administrator becomes primary owner; the other members get their
    // roles back (Gravitee loses them). The former primary owner is no longer a member: the
    // archive dropped the primary-owner link (DESIGN §1, Archive), and restore does not bring it
    // back — making the restoring administrator the one accountable primary owner. The
    // administrator may then transfer the ownership back (below).
    let r = app
        .post(&format!("{path}/_restore"), &admin, json!({}))
        .await;
    r.assert_status(200);
    assert_role_and_permissions(&r, Role::PrimaryOwner);
    assert_eq!(r.body["owner"]["id"], "root");
    count = app.assert_appended(count, 1, "restore").await;
    assert_eq!(
        roles(&app.get(&members, &admin).await),
        map(&[
            ("owen", "OWNER"),
            ("root", "PRIMARY_OWNER"),
            ("ursula", "USER")
        ])
    );
    assert_role_and_permissions(&app.get(&path, &owen).await, Role::Owner);
    assert_role_and_permissions(&app.get(&path, &ursula).await, Role::User);
    let listed = app.get("applications", &owen).await;
    assert_eq!(listed.body["total"], 1);
    assert_eq!(listed.body["items"][0]["id"], id.as_str());
    assert_eq!(listed.body["items"][0]["role"], "OWNER");
    app.get(&path, &paula)
        .await
        .assert_problem(404, "application.not_found");
    assert_eq!(app.get("applications", &paula).await.body["total"], 0);

    // Members can be managed again; the administrator hands the application back.
    app.post(
        &format!("{members}/_transfer_ownership"),
        &admin,
        json!({"user": "paula", "former_owner_role": "USER"}),
    )
    .await
    .assert_status(200);
    app.assert_appended(count, 1, "transfer back").await;
    assert_role_and_permissions(&app.get(&path, &paula).await, Role::PrimaryOwner);
    assert_eq!(
        roles(&app.get(&members, &paula).await),
        map(&[
            ("owen", "OWNER"),
            ("paula", "PRIMARY_OWNER"),
            ("root", "USER"),
            ("ursula", "USER")
        ])
    );
    app.stop().await;
}

async fn membership_changes_in_history(app: TestApp) {
    let paula = app.token("paula", false);
    let owen = app.token("owen", false);
    let admin = app.token("root", true);
    let id = app.create_simple(&paula, "Audited", None).await;
    let path = format!("applications/{id}");
    let members = format!("{path}/members");
    let transfer = format!("{members}/_transfer_ownership");

    app.post(&members, &paula, json!({"user": "owen", "role": "OWNER"}))
        .await
        .assert_status(201);
    app.post(&members, &owen, json!({"user": "ursula"}))
        .await
        .assert_status(201);
    // A no-op and refusals leave no trace.
    app.put(&format!("{members}/ursula"), &owen, json!({"role": "USER"}))
        .await
        .assert_status(200);
    app.delete(&format!("{members}/paula"), &owen)
        .await
        .assert_problem(409, "member.primary_owner");
    app.put(
        &format!("{members}/ursula"),
        &owen,
        json!({"role": "OWNER"}),
    )
    .await
    .assert_status(200);
    app.delete(&format!("{members}/ursula"), &admin)
        .await
        .assert_status(204);
    app.post(
        &transfer,
        &paula,
        json!({"user": "owen", "former_owner_role": "OWNER"}),
    )
    .await
    .assert_status(200);
    app.post(&transfer, &admin, json!({"user": "ursula"}))
        .await
        .assert_status(200);

    let ursula = app.token("ursula", false);
    let r = app.get(&format!("{path}/history"), &ursula).await;
    r.assert_status(200);
    let items = r.body["items"].as_array().unwrap();
    let expected = [
        ("ApplicationCreated", "paula", Value::Null),
        (
            "MemberAdded",
            "paula",
            json!({"user": "owen", "role": "OWNER"}),
        ),
        (
            "MemberAdded",
            "owen",
            json!({"user": "ursula", "role": "USER"}),
        ),
        (
            "MemberRoleChanged",
            "owen",
            json!({"user": "ursula", "from": "USER", "to": "OWNER"}),
        ),
        (
            "MemberRemoved",
            "root",
            json!({"user": "ursula", "role": "OWNER"}),
        ),
        (
            "PrimaryOwnershipTransferred",
            "paula",
            json!({"from": "paula", "to": "owen", "former_owner_role": "OWNER"}),
        ),
        (
            "PrimaryOwnershipTransferred",
            "root",
            json!({"from": "owen", "to": "ursula", "former_owner_role": "USER"}),
        ),
    ];
    assert_eq!(items.len(), expected.len(), "{}", r.body);
    let mut correlations = std::collections::BTreeSet::new();
    for (i, (item, (kind, actor, data))) in items.iter().zip(&expected).enumerate() {
        assert_eq!(item["version"], i + 1, "{item}");
        assert_eq!(item["type"], *kind, "{item}");
        assert_eq!(item["actor"], *actor, "{item}");
        if !data.is_null() {
            assert_eq!(item["data"], *data, "{item}");
        }
        assert!(correlations.insert(item["correlation_id"].as_str().unwrap().to_string()));
    }
    // The stored events say whether the actor acted as an administrator.
    let events = app.stream(&format!("application-{id}")).await;
    let as_admin: Vec<bool> = events
        .iter()
        .map(|e| e.metadata["actor_admin"].as_bool().unwrap())
        .collect();
    assert_eq!(as_admin, [false, false, false, false, true, false, true]);
    // Time travel over membership: at version 6, owen was primary owner and ursula gone.
    let r = app.get_query(&path, &admin, &[("version", "6")]).await;
    r.assert_status(200);
    assert_eq!(r.body["owner"]["id"], "owen");
    app.stop().await;
}

async fn subjects_with_special_characters(app: TestApp) {
    // Issuers' subjects are opaque strings (`auth0|123`, e-mail addresses, URLs): members are
    // addressed by the percent-encoded subject in the path.
    let paula = app.token("paula", false);
    let id = app.create_simple(&paula, "Shared", None).await;
    let members = format!("applications/{id}/members");
    let subjects = [
        (
            "auth0|5f7c8ec7c33c6c004bbafe82",
            "auth0%7C5f7c8ec7c33c6c004bbafe82",
        ),
        ("jane.doe@example.com", "jane.doe%40example.com"),
        (
            "https://idp.example/users/42",
            "https%3A%2F%2Fidp.example%2Fusers%2F42",
        ),
        ("name with spaces", "name%20with%20spaces"),
        ("ünïcødé", "%C3%BCn%C3%AFc%C3%B8d%C3%A9"),
    ];
    for (subject, encoded) in subjects {
        let r = app.post(&members, &paula, json!({"user": subject})).await;
        r.assert_status(201);
        assert_eq!(r.body["user"], subject);
        let r = app
            .put(
                &format!("{members}/{encoded}"),
                &paula,
                json!({"role": "OWNER"}),
            )
            .await;
        r.assert_status(200);
        assert_eq!(r.body["user"], subject);
        assert_eq!(r.body["role"], "OWNER");
        // The member signs in with that subject and sees the application.
        let token = app.token(subject, false);
        let r = app.get(&format!("applications/{id}"), &token).await;
        assert_eq!(r.body["role"], "OWNER", "{subject}: {}", r.body);
        let listed = app.get(&members, &paula).await;
        assert_eq!(member(&listed, subject)["name"], format!("{subject} name"));
    }
    let (subject, encoded) = subjects[2];
    app.post(
        &format!("{members}/_transfer_ownership"),
        &paula,
        json!({"user": subject, "former_owner_role": "OWNER"}),
    )
    .await
    .assert_status(200);
    let new_owner = app.token(subject, false);
    for (_, encoded_other) in subjects.iter().filter(|(s, _)| *s != subject) {
        app.delete(&format!("{members}/{encoded_other}"), &new_owner)
            .await
            .assert_status(204);
        app.delete(&format!("{members}/{encoded_other}"), &new_owner)
            .await
            .assert_problem(404, "member.not_found");
    }
    app.delete(&format!("{members}/{encoded}"), &paula)
        .await
        .assert_problem(409, "member.primary_owner");
    assert_eq!(
        roles(&app.get(&members, &paula).await),
        map(&[(subject, "PRIMARY_OWNER"), ("paula", "OWNER")])
    );
    app.stop().await;
}

on_both!(
    subjects_with_special_characters,
    add_members,
    profiles_fill_in_on_first_request,
    change_roles,
    remove_members,
    transfer_ownership,
    members_of_archived_and_restored_applications,
    membership_changes_in_history,
);
