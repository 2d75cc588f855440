//! The permission table: every endpoint under `/v1/environments/{env}` called by every kind of
//! caller, each on a fresh application, with the expected answer computed from the matrix the
//! code uses (`appreg_domain::permissions::allows`) and the administrator rules — never from a
//! hand-written copy of it.
//!
//! The issue's summary — "an owner can do everything but archive; a user reads, and creates and
//! reads subscriptions" — is what the matrix says: the subscription endpoints
//! (`/applications/{id}/subscriptions`, SUBSCRIPTION[C/R]) and the notification settings
//! (NOTIFICATION[R/U]) are rows of the table too (`{plan}` in a body is a MANUAL plan of ENV).
//! Transferring the primary ownership
//! also needs to *be* the primary owner (or an administrator), so an OWNER, who has MEMBER[U],
//! is refused it as well.

use crate::helpers::{Resp, TestApp};
use crate::on_both;
use appreg_auth::DevClaims;
use appreg_domain::permissions::{allows, grants, Operation, Permission, Role};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// The environment under test, and the one administered by the "other" administrator.
const ENV: &str = "team";
const OTHER: &str = "other";
/// What the token's role claim must hold for an organisation administrator (the default config).
const ADMIN_ROLE: &str = "ADMIN";

/// Every kind of caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    PrimaryOwner,
    Owner,
    User,
    NonMember,
    /// Administrator of ENV only (`admin_environments: [ENV]`).
    EnvAdmin,
    /// Administrator of OTHER only: nobody in ENV.
    OtherEnvAdmin,
    /// Organisation administrator (the administrator role): administrator of every environment.
    OrgAdmin,
}

const CALLERS: [Caller; 7] = [
    Caller::PrimaryOwner,
    Caller::Owner,
    Caller::User,
    Caller::NonMember,
    Caller::EnvAdmin,
    Caller::OtherEnvAdmin,
    Caller::OrgAdmin,
];

impl Caller {
    fn sub(self) -> &'static str {
        match self {
            Caller::PrimaryOwner => "paula",
            Caller::Owner => "owen",
            Caller::User => "ursula",
            Caller::NonMember => "nina",
            Caller::EnvAdmin => "ada",
            Caller::OtherEnvAdmin => "oscar",
            Caller::OrgAdmin => "olga",
        }
    }

    fn claims(self, app: &TestApp) -> DevClaims {
        let mut claims = app.claims(self.sub(), self == Caller::OrgAdmin);
        match self {
            Caller::EnvAdmin => claims.admin_environments = vec![ENV.into()],
            Caller::OtherEnvAdmin => claims.admin_environments = vec![OTHER.into()],
            _ => {}
        }
        claims
    }

    /// The role the setup gives the caller on every fresh application.
    fn role(self) -> Option<Role> {
        match self {
            Caller::PrimaryOwner => Some(Role::PrimaryOwner),
            Caller::Owner => Some(Role::Owner),
            Caller::User => Some(Role::User),
            _ => None,
        }
    }
}

/// The administrator rule (DESIGN §1, API.md): the administrator role, or ENV (or `*`) among
/// the environments the token's claim names. Computed from the token's claims.
fn administers(claims: &DevClaims, env: &str) -> bool {
    claims.roles.iter().any(|r| r == ADMIN_ROLE)
        || claims
            .admin_environments
            .iter()
            .any(|e| e == env || e == "*")
}

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone authenticated in an existing environment.
    Anyone,
    /// Administrators of the environment only (not about an application).
    AdminOnly,
    /// `permission[operation]` on the application: administrators may do everything, a member
    /// what the matrix grants their role (else 403), a non-member nothing (404).
    App(Permission, Operation),
    /// Administrators only, on an application the caller can see (DEFINITION[R]); `archived`:
    /// the application is archived first (by an administrator), which hides it from members.
    Restore { archived: bool },
}

struct Endpoint {
    name: &'static str,
    method: Method,
    /// Relative to `/v1/environments/{ENV}/`; `{id}` is the fresh application.
    path: &'static str,
    /// The JSON body; none for a GET or DELETE, and for the settings PUT, whose body flips
    /// `dcr_enabled` (`settings_flip`) so that every allowed call changes something.
    body: Option<Value>,
    access: Access,
    /// The status of an allowed call.
    ok: u16,
    /// Events an allowed call appends (user streams excluded).
    appends: usize,
}

fn endpoints() -> Vec<Endpoint> {
    use Operation::*;
    use Permission::*;
    let e = |name, method, path, body, access, ok, appends| Endpoint {
        name,
        method,
        path,
        body,
        access,
        ok,
        appends,
    };
    vec![
        e(
            "GET settings",
            Method::GET,
            "settings/client-registration",
            None,
            Access::Anyone,
            200,
            0,
        ),
        e(
            "PUT settings",
            Method::PUT,
            "settings/client-registration",
            // The body flips `dcr_enabled` (see `settings_flip`), so that every allowed call
            // changes something.
            None,
            Access::AdminOnly,
            200,
            1,
        ),
        e(
            "GET application-types",
            Method::GET,
            "application-types",
            None,
            Access::Anyone,
            200,
            0,
        ),
        e(
            "GET applications",
            Method::GET,
            "applications",
            None,
            Access::Anyone,
            200,
            0,
        ),
        e(
            "POST applications",
            Method::POST,
            "applications",
            Some(json!({"name": "Created", "type": "simple"})),
            Access::Anyone,
            201,
            1,
        ),
        e(
            "GET application",
            Method::GET,
            "applications/{id}",
            None,
            Access::App(Definition, Read),
            200,
            0,
        ),
        e(
            "GET application ?version=",
            Method::GET,
            "applications/{id}?version=1",
            None,
            Access::App(Definition, Read),
            200,
            0,
        ),
        e(
            "GET application ?as_of=",
            Method::GET,
            "applications/{id}?as_of=2999-01-01T00:00:00Z",
            None,
            Access::App(Definition, Read),
            200,
            0,
        ),
        e(
            "PUT application",
            Method::PUT,
            "applications/{id}",
            Some(json!({"name": "Renamed"})),
            Access::App(Definition, Update),
            200,
            1,
        ),
        e(
            "DELETE application (archive)",
            Method::DELETE,
            "applications/{id}",
            None,
            Access::App(Definition, Delete),
            204,
            1,
        ),
        e(
            "POST _restore (active)",
            Method::POST,
            "applications/{id}/_restore",
            Some(json!({})),
            Access::Restore { archived: false },
            // Allowed but not applicable: 409 application.not_archived (see `expected`).
            409,
            0,
        ),
        e(
            "POST _restore (archived)",
            Method::POST,
            "applications/{id}/_restore",
            Some(json!({})),
            Access::Restore { archived: true },
            200,
            1,
        ),
        e(
            "GET history",
            Method::GET,
            "applications/{id}/history",
            None,
            Access::App(Definition, Read),
            200,
            0,
        ),
        e(
            "GET members",
            Method::GET,
            "applications/{id}/members",
            None,
            Access::App(Member, Read),
            200,
            0,
        ),
        e(
            "POST members",
            Method::POST,
            "applications/{id}/members",
            Some(json!({"user": "newbie", "role": "USER"})),
            Access::App(Member, Create),
            201,
            1,
        ),
        e(
            "PUT members/{user}",
            Method::PUT,
            "applications/{id}/members/tess",
            Some(json!({"role": "OWNER"})),
            Access::App(Member, Update),
            200,
            1,
        ),
        e(
            "DELETE members/{user}",
            Method::DELETE,
            "applications/{id}/members/tess",
            None,
            Access::App(Member, Delete),
            204,
            1,
        ),
        e(
            "POST members/_transfer_ownership",
            Method::POST,
            "applications/{id}/members/_transfer_ownership",
            Some(json!({"user": "tess", "former_owner_role": "OWNER"})),
            // MEMBER[U]: the primary owner or an OWNER (as in Gravitee), or an administrator.
            Access::App(Member, Update),
            200,
            1,
        ),
        e(
            "GET apis",
            Method::GET,
            "apis",
            None,
            Access::Anyone,
            200,
            0,
        ),
        e(
            "POST apis",
            Method::POST,
            "apis",
            Some(json!({"name": "Another API"})),
            Access::AdminOnly,
            201,
            1,
        ),
        e(
            "GET subscriptions",
            Method::GET,
            "applications/{id}/subscriptions",
            None,
            Access::App(Subscription, Read),
            200,
            0,
        ),
        e(
            "POST subscriptions",
            Method::POST,
            "applications/{id}/subscriptions",
            Some(json!({"plan_id": "{plan}"})),
            Access::App(Subscription, Create),
            201,
            1,
        ),
        e(
            "GET notifications",
            Method::GET,
            "applications/{id}/notifications",
            None,
            Access::App(Notification, Read),
            200,
            0,
        ),
        e(
            "PUT notifications",
            Method::PUT,
            "applications/{id}/notifications",
            Some(json!({"hooks": ["SUBSCRIPTION_CLOSED"], "email": "someone@example.org"})),
            Access::App(Notification, Update),
            200,
            1,
        ),
    ]
}

/// The expected answer: a status, and the problem code of a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expected {
    status: u16,
    code: Option<&'static str>,
}

const HIDDEN: Expected = Expected {
    status: 404,
    code: Some("application.not_found"),
};
const DENIED: Expected = Expected {
    status: 403,
    code: Some("permission.denied"),
};
const ADMIN_ONLY: Expected = Expected {
    status: 403,
    code: Some("permission.admin_only"),
};

/// From the matrix and the administrator rules, what `endpoint` answers a caller who
/// administers the environment (`admin`) or holds `role` on the application.
fn expected(endpoint: &Endpoint, admin: bool, role: Option<Role>) -> Expected {
    let ok = Expected {
        status: endpoint.ok,
        code: None,
    };
    match endpoint.access {
        Access::Anyone => ok,
        Access::AdminOnly if admin => ok,
        Access::AdminOnly => ADMIN_ONLY,
        Access::App(..) if admin => ok,
        Access::App(permission, operation) => match role {
            None => HIDDEN,
            Some(r) if allows(r, permission, operation) => ok,
            Some(_) => DENIED,
        },
        Access::Restore { archived: false } if admin => Expected {
            status: 409,
            code: Some("application.not_archived"),
        },
        Access::Restore { archived: false } => match role {
            Some(r) if allows(r, Permission::Definition, Operation::Read) => ADMIN_ONLY,
            _ => HIDDEN,
        },
        Access::Restore { archived: true } if admin => ok,
        // An archived application is hidden from everyone but administrators.
        Access::Restore { archived: true } => HIDDEN,
    }
}

fn env_path(path: &str) -> String {
    format!("/v1/environments/{ENV}/{path}")
}

/// The settings of ENV with `dcr_enabled` flipped.
async fn settings_flip(app: &TestApp, token: &str) -> Value {
    let r = app
        .get(&env_path("settings/client-registration"), token)
        .await;
    r.assert_status(200);
    let mut body = r.body;
    body["dcr_enabled"] = Value::Bool(!body["dcr_enabled"].as_bool().unwrap());
    body
}

/// A fresh application of ENV: created by the primary owner, who adds the OWNER, the USER and
/// `tess` (USER, the target of the member commands).
async fn fresh_application(app: &TestApp, tokens: &BTreeMap<&str, String>) -> String {
    let po = &tokens[Caller::PrimaryOwner.sub()];
    let id = app.create_simple_in(ENV, po, "Table").await;
    let members = env_path(&format!("applications/{id}/members"));
    for (user, role) in [
        (Caller::Owner.sub(), "OWNER"),
        (Caller::User.sub(), "USER"),
        ("tess", "USER"),
    ] {
        app.post(&members, po, json!({"user": user, "role": role}))
            .await
            .assert_status(201);
    }
    id
}

/// The id of the newest application the caller's list shows (lists are oldest first).
async fn newest_listed(app: &TestApp, token: &str) -> Option<String> {
    let first = app.get(&env_path("applications?size=1"), token).await;
    first.assert_status(200);
    let total = first.body["total"].as_i64().unwrap();
    if total == 0 {
        return None;
    }
    let last = app
        .get(
            &env_path(&format!("applications?size=1&page={total}")),
            token,
        )
        .await;
    last.assert_status(200);
    last.body["items"][0]["id"].as_str().map(String::from)
}

/// Checks what an allowed read shows the caller: their role and permissions, from the matrix.
fn check_view(r: &Resp, what: &str, admin: bool, role: Option<Role>) {
    let want_role = role.map_or(Value::Null, |r| Value::from(r.as_str()));
    assert_eq!(r.body["role"], want_role, "{what}: role; body {}", r.body);
    for p in Permission::ALL {
        let want = if admin {
            "CRUD"
        } else {
            role.map_or("", |r| grants(r, p))
        };
        assert_eq!(
            r.body["permissions"][p.as_str()],
            want,
            "{what}: permissions[{}]",
            p.as_str()
        );
    }
}

async fn every_endpoint_as_every_caller(app: TestApp) {
    app.create_environment_http(ENV).await;
    app.create_environment_http(OTHER).await;
    let root = app.token("root", true);
    let claims: BTreeMap<&str, DevClaims> =
        CALLERS.iter().map(|c| (c.sub(), c.claims(&app))).collect();
    let tokens: BTreeMap<&str, String> = claims
        .iter()
        .map(|(sub, c)| (*sub, app.sign(c.clone())))
        .collect();
    // The kinds of answer the table saw, to make sure it tests denials as well as grants.
    let mut seen: BTreeMap<u16, usize> = BTreeMap::new();
    let mut cases = 0;
    // A plan to subscribe to: an API_KEY plan with MANUAL validation (one event per subscribe).
    let api = app
        .post(&env_path("apis"), &root, json!({"name": "Table API"}))
        .await;
    api.assert_status(201);
    let plan = app
        .post(
            &env_path(&format!("apis/{}/plans", api.body["id"].as_str().unwrap())),
            &root,
            json!({"name": "manual", "security": "API_KEY", "validation": "MANUAL"}),
        )
        .await;
    plan.assert_status(201);
    let plan = plan.body["id"].as_str().unwrap().to_string();

    for endpoint in endpoints() {
        for caller in CALLERS {
            let what = format!("{} as {caller:?}", endpoint.name);
            let token = &tokens[caller.sub()];
            let admin = administers(&claims[caller.sub()], ENV);
            let role = caller.role();
            let id = fresh_application(&app, &tokens).await;
            if let Access::Restore { archived: true } = endpoint.access {
                app.delete(&env_path(&format!("applications/{id}")), &root)
                    .await
                    .assert_status(204);
            }
            let want = expected(&endpoint, admin, role);
            let before = app.event_count().await;

            let url = app.url(&env_path(&endpoint.path.replace("{id}", &id)));
            let mut request = app
                .client
                .request(endpoint.method.clone(), url)
                .bearer_auth(token);
            if let Some(body) = &endpoint.body {
                let body: Value =
                    serde_json::from_str(&body.to_string().replace("{plan}", &plan)).unwrap();
                request = request.json(&body);
            } else if endpoint.method == Method::PUT {
                request = request.json(&settings_flip(&app, &root).await);
            }
            let r = app.send(request).await;
            assert_eq!(r.status, want.status, "{what}: body {}", r.body);
            match want.code {
                Some(code) => {
                    r.assert_problem(want.status, code);
                }
                None => assert!(
                    r.body.get("code").is_none(),
                    "{what}: not a problem; body {}",
                    r.body
                ),
            }
            let appended = if want.code.is_none() {
                endpoint.appends
            } else {
                0
            };
            app.assert_appended(before, appended, &what).await;
            *seen.entry(r.status).or_default() += 1;
            cases += 1;

            // What an allowed call shows.
            if want.code.is_none() {
                match endpoint.name {
                    "GET application" | "GET application ?as_of=" => {
                        check_view(&r, &what, admin, role);
                        assert_eq!(r.body["id"], id.as_str());
                    }
                    "GET application ?version=" => {
                        assert_eq!(r.body["version"], 1, "{what}");
                        assert_eq!(r.body["name"], "Table", "{what}");
                    }
                    "GET applications" => {
                        // The fresh application is the newest of the environment: the last
                        // item the caller sees iff they are a member or an administrator.
                        let newest = newest_listed(&app, token).await;
                        assert_eq!(
                            newest.as_deref() == Some(id.as_str()),
                            admin || role.is_some(),
                            "{what}: listed? {newest:?}"
                        );
                    }
                    "GET members" => {
                        let roles: BTreeMap<String, String> = r.body["items"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|m| {
                                (
                                    m["user"].as_str().unwrap().to_string(),
                                    m["role"].as_str().unwrap().to_string(),
                                )
                            })
                            .collect();
                        let want: BTreeMap<String, String> = [
                            ("owen", "OWNER"),
                            ("paula", "PRIMARY_OWNER"),
                            ("tess", "USER"),
                            ("ursula", "USER"),
                        ]
                        .iter()
                        .map(|(u, r)| (u.to_string(), r.to_string()))
                        .collect();
                        assert_eq!(roles, want, "{what}");
                    }
                    "POST _restore (archived)" => {
                        // The restoring administrator is the primary owner now.
                        assert_eq!(r.body["role"], "PRIMARY_OWNER", "{what}");
                        assert_eq!(r.body["owner"]["id"], caller.sub(), "{what}");
                    }
                    "POST members/_transfer_ownership" => {
                        assert_eq!(r.body["owner"]["id"], "tess", "{what}");
                    }
                    _ => {}
                }
            }
        }
    }
    assert_eq!(cases, endpoints().len() * CALLERS.len());
    for status in [200, 201, 204, 403, 404, 409] {
        assert!(
            seen.get(&status).copied().unwrap_or(0) > 0,
            "the table saw no {status}: {seen:?}"
        );
    }
    app.stop().await;
}

/// The table's rule for the OWNER, spelled out: everything on an application but archiving
/// (transferring primary ownership included); the USER only reads.
async fn owner_and_user_in_words(app: TestApp) {
    for p in Permission::ALL {
        for op in Operation::ALL {
            let archive = p == Permission::Definition && op == Operation::Delete;
            assert_eq!(allows(Role::Owner, p, op), !archive, "OWNER {p:?} {op:?}");
        }
    }
    let user_may = |p: Permission, op: Operation| allows(Role::User, p, op);
    assert!(user_may(Permission::Subscription, Operation::Create));
    assert!(user_may(Permission::Subscription, Operation::Read));
    for p in [
        Permission::Definition,
        Permission::Member,
        Permission::Metadata,
    ] {
        assert!(user_may(p, Operation::Read));
        for op in [Operation::Create, Operation::Update, Operation::Delete] {
            assert!(!user_may(p, op), "USER {p:?} {op:?}");
        }
    }
    // The api applies it: an owner archives nothing, the primary owner does.
    let paula = app.token("paula", false);
    let owen = app.token("owen", false);
    let id = app.create_simple(&paula, "Owned", None).await;
    app.post(
        &format!("applications/{id}/members"),
        &paula,
        json!({"user": "owen", "role": "OWNER"}),
    )
    .await
    .assert_status(201);
    let path = format!("applications/{id}");
    app.put(&path, &owen, json!({"description": "by the owner"}))
        .await
        .assert_status(200);
    let r = app.delete(&path, &owen).await;
    r.assert_problem(403, "permission.denied");
    assert!(r.detail().contains("DEFINITION[D]"), "{}", r.body);
    app.delete(&path, &paula).await.assert_status(204);
    app.stop().await;
}

on_both!(every_endpoint_as_every_caller, owner_and_user_in_words);
