//! Authorisation: the permission matrix of DESIGN §1, administrators, non-members, archived
//! applications.

use crate::support::*;
use appreg_domain::permissions::{allows, grants};
use appreg_domain::*;
use Operation::*;
use Permission::*;

/// DESIGN §1, "Members and permissions", written out independently of the implementation.
fn design_matrix(role: Role, permission: Permission) -> &'static str {
    match (role, permission) {
        (Role::PrimaryOwner, Definition) => "CRUD",
        (Role::PrimaryOwner, Member) => "CRUD",
        (Role::PrimaryOwner, Subscription) => "CRUD",
        (Role::PrimaryOwner, Notification) => "CRUD",
        (Role::PrimaryOwner, Metadata) => "CRUD",
        (Role::Owner, Definition) => "CRU",
        (Role::Owner, Member) => "CRUD",
        (Role::Owner, Subscription) => "CRUD",
        (Role::Owner, Notification) => "CRUD",
        (Role::Owner, Metadata) => "CRUD",
        (Role::User, Definition) => "R",
        (Role::User, Member) => "R",
        (Role::User, Subscription) => "CR",
        (Role::User, Notification) => "",
        (Role::User, Metadata) => "R",
    }
}

const ROLES: [Role; 3] = [Role::PrimaryOwner, Role::Owner, Role::User];

/// An active web application owned by alice, with olivia as OWNER and ursula as USER.
fn team_app() -> Given {
    given(created(ApplicationType::Web))
        .with_member("olivia", Role::Owner)
        .with_member("ursula", Role::User)
}

fn member_named(role: Role) -> &'static str {
    match role {
        Role::PrimaryOwner => "alice",
        Role::Owner => "olivia",
        Role::User => "ursula",
    }
}

#[test]
fn the_matrix_is_the_one_of_the_design() {
    for role in ROLES {
        for p in Permission::ALL {
            assert_eq!(grants(role, p), design_matrix(role, p), "{role:?} {p:?}");
            for op in Operation::ALL {
                assert_eq!(
                    allows(role, p, op),
                    design_matrix(role, p).contains(op.letter()),
                    "{role:?} {p:?} {op:?}"
                );
            }
        }
    }
}

#[test]
fn members_are_authorised_by_the_matrix() {
    let app = team_app();
    let app = app.state();
    for role in ROLES {
        let actor = member(member_named(role));
        for p in Permission::ALL {
            for op in Operation::ALL {
                let result = app.authorize(&actor, p, op);
                if design_matrix(role, p).contains(op.letter()) {
                    assert_eq!(result, Ok(()), "{role:?} {p:?} {op:?}");
                } else {
                    let e = result.unwrap_err();
                    assert_eq!(e.code(), "permission.denied", "{role:?} {p:?} {op:?}");
                    assert_eq!(
                        e,
                        DomainError::Forbidden(format!("{}[{}]", p.as_str(), op.letter()))
                    );
                }
            }
        }
    }
}

#[test]
fn an_owner_cannot_delete_the_definition() {
    let app = team_app();
    let olivia = member("olivia");
    assert_eq!(
        app.state().authorize(&olivia, Definition, Delete),
        Err(DomainError::Forbidden("DEFINITION[D]".into()))
    );
    for op in [Create, Read, Update] {
        assert_eq!(app.state().authorize(&olivia, Definition, op), Ok(()));
    }
    assert_eq!(
        app.state().authorize(&member("alice"), Definition, Delete),
        Ok(())
    );
}

#[test]
fn a_user_reads_and_subscribes() {
    let app = team_app();
    let ursula = member("ursula");
    let s = app.state();
    assert_eq!(s.authorize(&ursula, Definition, Read), Ok(()));
    assert_eq!(s.authorize(&ursula, Subscription, Create), Ok(()));
    assert_eq!(s.authorize(&ursula, Metadata, Read), Ok(()));
    assert_eq!(s.authorize(&ursula, Member, Read), Ok(()));
    for (p, op) in [
        (Definition, Update),
        (Definition, Delete),
        (Subscription, Update),
        (Subscription, Delete),
        (Notification, Read),
        (Member, Create),
        (Metadata, Update),
    ] {
        assert_eq!(
            s.authorize(&ursula, p, op).unwrap_err().code(),
            "permission.denied"
        );
    }
}

#[test]
fn an_administrator_may_do_everything() {
    let active = team_app();
    let mut events = created(ApplicationType::Simple);
    events.push(archived(Some(alice())));
    let archived_app = given(events);
    for app in [active.state(), archived_app.state()] {
        // An admin needs no membership, and neither does a member who is also admin.
        for actor in [admin("root"), admin("ursula")] {
            for p in Permission::ALL {
                for op in Operation::ALL {
                    assert_eq!(
                        app.authorize(&actor, p, op),
                        Ok(()),
                        "{actor:?} {p:?} {op:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_non_member_does_not_see_the_application() {
    let app = team_app();
    for p in Permission::ALL {
        for op in Operation::ALL {
            assert_eq!(
                app.state().authorize(&member("mallory"), p, op),
                Err(DomainError::NotFound),
                "{p:?} {op:?}"
            );
        }
    }
}

#[test]
fn an_archived_application_is_hidden_from_members() {
    let mut events = created(ApplicationType::Web);
    events.push(archived(Some(alice())));
    let app = given(events)
        .with_member("olivia", Role::Owner)
        .with_member("ursula", Role::User);
    for who in ["alice", "olivia", "ursula", "mallory"] {
        for p in Permission::ALL {
            for op in Operation::ALL {
                let e = app.state().authorize(&member(who), p, op).unwrap_err();
                assert_eq!(e.code(), "application.not_found", "{who} {p:?} {op:?}");
            }
        }
    }
}

#[test]
fn after_restore_the_restoring_admin_is_authorised_as_primary_owner() {
    let mut events = created(ApplicationType::Web);
    events.push(archived(Some(alice())));
    events.push(restored(user("root")));
    let app = given(events);
    // Even without the admin flag, as a member.
    for p in Permission::ALL {
        for op in Operation::ALL {
            assert_eq!(app.state().authorize(&member("root"), p, op), Ok(()));
        }
    }
    assert_eq!(
        app.state().authorize(&member("alice"), Definition, Read),
        Err(DomainError::NotFound)
    );
}

#[test]
fn role_and_permission_names() {
    assert_eq!(Role::PrimaryOwner.as_str(), "PRIMARY_OWNER");
    assert_eq!(Role::Owner.as_str(), "OWNER");
    assert_eq!(Role::User.as_str(), "USER");
    let names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "DEFINITION",
            "MEMBER",
            "SUBSCRIPTION",
            "NOTIFICATION",
            "METADATA"
        ]
    );
    let letters: String = Operation::ALL.iter().map(|o| o.letter()).collect();
    assert_eq!(letters, "CRUD");
    assert_eq!(
        serde_json::to_value(Role::PrimaryOwner).unwrap(),
        "PRIMARY_OWNER"
    );
    assert_eq!(serde_json::to_value(Delete).unwrap(), "D");
}

#[test]
fn an_owner_or_the_primary_owner_transfers_ownership_a_user_cannot() {
    // MEMBER[U], as in Gravitee: the primary owner and an OWNER may; a USER and a stranger not.
    for (by, to) in [
        ("alice", "olivia"),
        ("olivia", "olivia"),
        ("olivia", "ursula"),
    ] {
        let then = team_app()
            .when_app(|a| a.transfer_ownership(&member(by), user(to), Role::Owner))
            .then([ApplicationEvent::PrimaryOwnershipTransferred(
                appreg_domain::application::PrimaryOwnershipTransferred {
                    from: Some(alice()),
                    to: user(to),
                    former_owner_role: Role::Owner,
                },
            )]);
        assert_eq!(then.state().primary_owner(), Some(&user(to)));
        assert_eq!(then.state().role_of(&alice()), Some(Role::Owner));
    }
    let e = team_app()
        .when_app(|a| a.transfer_ownership(&member("ursula"), user("ursula"), Role::User))
        .then_error("permission.denied");
    assert_eq!(e, DomainError::Forbidden("MEMBER[U]".into()));
    team_app()
        .when_app(|a| a.transfer_ownership(&member("mallory"), user("mallory"), Role::User))
        .then_error("application.not_found");
}
