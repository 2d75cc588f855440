//! Who may read which application event: the one rule of `GET /events` and of an
//! application's history.

use appreg_domain::permissions::{self, Actor, Operation, Permission, Role};

/// Whether `actor`, whose role in the application is `role` (None: not a member), may read an
/// application event of type `event_type`: administrators of the environment read every one, a
/// member what their role may read (a USER member no notification settings). The one rule of
/// `GET /events` and of an application's history.
pub fn may_read_app_event(actor: &Actor, role: Option<Role>, event_type: &str) -> bool {
    actor.admin
        || role.is_some_and(|role| {
            permissions::allows(role, read_permission(event_type), Operation::Read)
        })
}

/// The permission a member needs to read an application event (every role reads the
/// definition, members and subscriptions; notification settings — e-mail addresses and hook
/// URLs — only roles with NOTIFICATION[R]).
fn read_permission(event_type: &str) -> Permission {
    match event_type {
        "NotificationSettingsUpdated" | "NotificationSettingsDeleted" => Permission::Notification,
        t if t.starts_with("Subscription") || t.starts_with("ApiKey") => Permission::Subscription,
        t if t.starts_with("Member") || t == "PrimaryOwnershipTransferred" => Permission::Member,
        _ => Permission::Definition,
    }
}
