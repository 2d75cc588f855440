//! Environments (tenants) and the users first seen in them. Every object lives in exactly one
//! environment; `DEFAULT` exists without an event.

use crate::error::{DomainError, FieldErrors};
use crate::personal::{upcast_plain_fields, Personal};
use crate::values::{EnvironmentId, UserId};
use crate::{decode_tagged, tagged_data, DecodeError, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The stream of an environment.
pub fn environment_stream(id: &EnvironmentId) -> String {
    format!("environment-{id}")
}

/// The stream of a user in an environment.
pub fn user_stream(env: &EnvironmentId, user: &UserId) -> String {
    format!("user-{env}/{user}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentCreated {
    pub id: EnvironmentId,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum EnvironmentEvent {
    EnvironmentCreated(EnvironmentCreated),
}

impl DomainEvent for EnvironmentEvent {
    fn event_type(&self) -> &'static str {
        "EnvironmentCreated"
    }
    fn data(&self) -> serde_json::Value {
        tagged_data(self)
    }
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        decode_tagged(event_type, schema_version, &["EnvironmentCreated"], data)
    }
}

/// Decide creating an environment; `exists` is whether its stream has events.
pub fn create_environment(
    id: EnvironmentId,
    name: &str,
    exists: bool,
) -> Result<Vec<EnvironmentEvent>, DomainError> {
    let name = name.trim();
    let mut e = FieldErrors::new();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        e.add(
            "name",
            "name.invalid",
            "an environment name has 1 to 100 characters, no control characters",
        );
    }
    e.into_result()?;
    if exists || id.as_str() == EnvironmentId::DEFAULT {
        return Err(DomainError::EnvironmentExists);
    }
    Ok(vec![EnvironmentEvent::EnvironmentCreated(
        EnvironmentCreated {
            id,
            name: name.to_string(),
        },
    )])
}

/// A user's first authenticated request in an environment, with the profile of their token,
/// sealed with the user's data key ([`Personal`]). `default_application` is the id the user's
/// default application gets (decided once, here, so creating it can be retried without ever
/// making two).
///
/// Schema version 2; version 1 carried the name and e-mail in plaintext (upcast to
/// [`Personal::Plain`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFirstSeen {
    pub user: UserId,
    pub name: Option<Personal>,
    pub email: Option<Personal>,
    pub admin: bool,
    pub default_application: Option<Uuid>,
}

/// The user was erased (GDPR art. 17): their data key is destroyed, so every personal value
/// sealed with it is unreadable; the subject id stays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserErased {
    pub user: UserId,
}

/// The current schema version of `UserFirstSeen` payloads.
pub const USER_FIRST_SEEN_VERSION: i32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    UserFirstSeen(UserFirstSeen),
    UserErased(UserErased),
}

pub(crate) const USER_EVENT_TYPES: &[&str] = &["UserFirstSeen", "UserErased"];

impl DomainEvent for UserEvent {
    fn event_type(&self) -> &'static str {
        match self {
            UserEvent::UserFirstSeen(_) => "UserFirstSeen",
            UserEvent::UserErased(_) => "UserErased",
        }
    }
    fn schema_version(&self) -> i32 {
        match self {
            UserEvent::UserFirstSeen(_) => USER_FIRST_SEEN_VERSION,
            UserEvent::UserErased(_) => 1,
        }
    }
    fn data(&self) -> serde_json::Value {
        tagged_data(self)
    }
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        match (event_type, schema_version) {
            ("UserFirstSeen", 1) => decode_tagged(
                event_type,
                1,
                USER_EVENT_TYPES,
                upcast_plain_fields(data, &["name", "email"]),
            ),
            ("UserFirstSeen", USER_FIRST_SEEN_VERSION) => {
                decode_tagged(event_type, 1, USER_EVENT_TYPES, data)
            }
            ("UserFirstSeen", other) => Err(DecodeError::UnsupportedVersion(
                event_type.to_string(),
                other,
            )),
            _ => decode_tagged(event_type, schema_version, USER_EVENT_TYPES, data),
        }
    }
}

impl UserEvent {
    /// The user the event is about.
    pub fn user(&self) -> &UserId {
        match self {
            UserEvent::UserFirstSeen(e) => &e.user,
            UserEvent::UserErased(e) => &e.user,
        }
    }
}

/// Decide a first sighting: a non-administrator gets a default application when the flag is on.
/// `name` and `email` come sealed from the edge (the edge clips them to 200 characters first).
pub fn first_seen(
    user: UserId,
    name: Option<Personal>,
    email: Option<Personal>,
    admin: bool,
    default_application_enabled: bool,
    new_application_id: Uuid,
) -> UserEvent {
    UserEvent::UserFirstSeen(UserFirstSeen {
        user,
        name,
        email,
        admin,
        default_application: (default_application_enabled && !admin).then_some(new_application_id),
    })
}

/// Decide an erasure: `UserErased` unless the user's stream already ends with one (`erased`).
pub fn erase_user(user: UserId, erased: bool) -> Vec<UserEvent> {
    if erased {
        return vec![];
    }
    vec![UserEvent::UserErased(UserErased { user })]
}

/// A profile value clipped as the token's profile is kept: at most 200 characters.
pub fn clip_profile(value: &str) -> String {
    value.chars().take(200).collect()
}

/// The name of a user's default application.
pub const DEFAULT_APPLICATION_NAME: &str = "Default application";

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn a_new_user_gets_a_default_application_unless_admin_or_disabled() {
        let id = Uuid::from_u128(7);
        let given = |admin, enabled| match first_seen(user(), None, None, admin, enabled, id) {
            UserEvent::UserFirstSeen(e) => e.default_application,
            UserEvent::UserErased(_) => unreachable!(),
        };
        assert_eq!(given(false, true), Some(id));
        assert_eq!(given(true, true), None);
        assert_eq!(given(false, false), None);
    }

    #[test]
    fn given_a_version_1_sighting_when_read_then_its_profile_is_legacy_plaintext() {
        let v1 = serde_json::json!({"user": "alice", "name": "Alice", "email": "a@example.org",
            "admin": false, "default_application": null});
        let UserEvent::UserFirstSeen(e) = UserEvent::decode("UserFirstSeen", 1, v1).unwrap() else {
            panic!("not a sighting")
        };
        assert_eq!(e.name, Some(Personal::Plain("Alice".into())));
        assert_eq!(e.email, Some(Personal::Plain("a@example.org".into())));
        // Version 2 refuses plaintext: what is current is sealed.
        let v2 = serde_json::json!({"user": "alice", "name": "Alice", "email": null,
            "admin": false, "default_application": null});
        assert!(UserEvent::decode("UserFirstSeen", 2, v2).is_err());
        assert!(UserEvent::decode("UserFirstSeen", 3, serde_json::json!({})).is_err());
    }

    #[test]
    fn given_an_erased_user_when_erased_again_then_nothing_happens() {
        assert_eq!(erase_user(user(), true), vec![]);
        assert_eq!(
            erase_user(user(), false),
            vec![UserEvent::UserErased(UserErased { user: user() })]
        );
    }

    #[test]
    fn environments_are_created_once_with_a_name() {
        let id = EnvironmentId::parse("prod").unwrap();
        assert!(create_environment(id.clone(), "Production", false).is_ok());
        assert_eq!(
            create_environment(id.clone(), "Production", true),
            Err(DomainError::EnvironmentExists)
        );
        assert_eq!(
            create_environment(EnvironmentId::default_env(), "Default", false),
            Err(DomainError::EnvironmentExists)
        );
        assert!(matches!(
            create_environment(id, "  ", false),
            Err(DomainError::Invalid(_))
        ));
    }

    #[test]
    fn events_round_trip() {
        let e = first_seen(
            user(),
            Personal::sealed("pd1.c2VhbGVk".into()),
            None,
            false,
            true,
            Uuid::from_u128(1),
        );
        assert_eq!(e.schema_version(), 2);
        assert_eq!(UserEvent::decode(e.event_type(), 2, e.data()).unwrap(), e);
        let erased = erase_user(user(), false).remove(0);
        assert_eq!(
            UserEvent::decode(erased.event_type(), 1, erased.data()).unwrap(),
            erased
        );
        let c = create_environment(EnvironmentId::parse("x").unwrap(), "X", false)
            .unwrap()
            .remove(0);
        assert_eq!(
            EnvironmentEvent::decode(c.event_type(), 1, c.data()).unwrap(),
            c
        );
    }
}
