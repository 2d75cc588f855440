//! The one permission matrix (DESIGN §1), used by every command and query.

use crate::values::UserId;
use serde::{Deserialize, Serialize};

/// A member's role on an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    PrimaryOwner,
    Owner,
    User,
}

impl Role {
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::PrimaryOwner => "PRIMARY_OWNER",
            Role::Owner => "OWNER",
            Role::User => "USER",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Permission {
    Definition,
    Member,
    Subscription,
    Notification,
    Metadata,
}

impl Permission {
    pub const ALL: [Permission; 5] = [
        Permission::Definition,
        Permission::Member,
        Permission::Subscription,
        Permission::Notification,
        Permission::Metadata,
    ];
    pub fn as_str(&self) -> &'static str {
        match self {
            Permission::Definition => "DEFINITION",
            Permission::Member => "MEMBER",
            Permission::Subscription => "SUBSCRIPTION",
            Permission::Notification => "NOTIFICATION",
            Permission::Metadata => "METADATA",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Operation {
    #[serde(rename = "C")]
    Create,
    #[serde(rename = "R")]
    Read,
    #[serde(rename = "U")]
    Update,
    #[serde(rename = "D")]
    Delete,
}

impl Operation {
    pub const ALL: [Operation; 4] = [
        Operation::Create,
        Operation::Read,
        Operation::Update,
        Operation::Delete,
    ];
    pub fn letter(&self) -> char {
        match self {
            Operation::Create => 'C',
            Operation::Read => 'R',
            Operation::Update => 'U',
            Operation::Delete => 'D',
        }
    }
}

/// The operations a role has on a permission, as a `CRUD` subset string.
pub fn grants(role: Role, permission: Permission) -> &'static str {
    use Permission::*;
    match (role, permission) {
        (Role::PrimaryOwner, _) => "CRUD",
        (Role::Owner, Definition) => "CRU",
        (Role::Owner, _) => "CRUD",
        (Role::User, Definition | Member | Metadata) => "R",
        (Role::User, Subscription) => "CR",
        (Role::User, Notification) => "",
    }
}

/// Whether `role` may do `operation` on `permission`.
pub fn allows(role: Role, permission: Permission, operation: Operation) -> bool {
    grants(role, permission).contains(operation.letter())
}

/// Who is acting: a user, and whether they administer the environment of the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user: UserId,
    pub admin: bool,
}

/// Whether `actor`, whose role in the application is `role` (None: not a member), may read an
/// application event of type `event_type`: administrators of the environment read every one, a
/// member what their role may read (a USER member no notification settings). The one rule of
/// `GET /events`, of an application's history, and of what an application's webhook receives.
pub fn may_read_app_event(actor: &Actor, role: Option<Role>, event_type: &str) -> bool {
    actor.admin || role.is_some_and(|role| role_may_read(role, event_type))
}

/// Whether a member of role `role` may read an application event of type `event_type`.
pub fn role_may_read(role: Role, event_type: &str) -> bool {
    allows(role, read_permission(event_type), Operation::Read)
}

/// The permission a member needs to read an application event (every role reads the
/// definition, members and subscriptions; notification settings — e-mail addresses and hook
/// URLs — only roles with NOTIFICATION[R]).
pub fn read_permission(event_type: &str) -> Permission {
    match event_type {
        "NotificationSettingsUpdated" | "NotificationSettingsDeleted" => Permission::Notification,
        t if t.starts_with("Subscription") || t.starts_with("ApiKey") => Permission::Subscription,
        t if t.starts_with("Member") || t == "PrimaryOwnershipTransferred" => Permission::Member,
        _ => Permission::Definition,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_can_do_everything_but_delete_the_definition() {
        for p in Permission::ALL {
            for op in Operation::ALL {
                let expected = !(p == Permission::Definition && op == Operation::Delete);
                assert_eq!(allows(Role::Owner, p, op), expected, "{p:?} {op:?}");
            }
        }
    }

    #[test]
    fn primary_owner_can_do_everything() {
        for p in Permission::ALL {
            for op in Operation::ALL {
                assert!(allows(Role::PrimaryOwner, p, op));
            }
        }
    }

    #[test]
    fn user_reads_and_creates_subscriptions_only() {
        assert!(allows(Role::User, Permission::Definition, Operation::Read));
        assert!(!allows(
            Role::User,
            Permission::Definition,
            Operation::Update
        ));
        assert!(allows(
            Role::User,
            Permission::Subscription,
            Operation::Create
        ));
        assert!(!allows(
            Role::User,
            Permission::Subscription,
            Operation::Delete
        ));
        assert!(!allows(
            Role::User,
            Permission::Notification,
            Operation::Read
        ));
        assert!(!allows(Role::User, Permission::Member, Operation::Create));
    }
}
