//! Environments (tenants) and the users first seen in them. Every object lives in exactly one
//! environment; `DEFAULT` exists without an event.

use crate::error::{DomainError, FieldErrors};
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

/// A user's first authenticated request in an environment, with the profile of their token.
/// `default_application` is the id the user's default application gets (decided once, here, so
/// creating it can be retried without ever making two).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserFirstSeen {
    pub user: UserId,
    pub name: Option<String>,
    pub email: Option<String>,
    pub admin: bool,
    pub default_application: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum UserEvent {
    UserFirstSeen(UserFirstSeen),
}

impl DomainEvent for UserEvent {
    fn event_type(&self) -> &'static str {
        "UserFirstSeen"
    }
    fn data(&self) -> serde_json::Value {
        tagged_data(self)
    }
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self, DecodeError> {
        decode_tagged(event_type, schema_version, &["UserFirstSeen"], data)
    }
}

/// Decide a first sighting: a non-administrator gets a default application when the flag is on.
pub fn first_seen(
    user: UserId,
    name: Option<String>,
    email: Option<String>,
    admin: bool,
    default_application_enabled: bool,
    new_application_id: Uuid,
) -> UserEvent {
    let clip = |s: Option<String>| s.map(|v| v.chars().take(200).collect::<String>());
    UserEvent::UserFirstSeen(UserFirstSeen {
        user,
        name: clip(name),
        email: clip(email),
        admin,
        default_application: (default_application_enabled && !admin).then_some(new_application_id),
    })
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
        };
        assert_eq!(given(false, true), Some(id));
        assert_eq!(given(true, true), None);
        assert_eq!(given(false, false), None);
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
            Some("Alice".into()),
            None,
            false,
            true,
            Uuid::from_u128(1),
        );
        assert_eq!(UserEvent::decode(e.event_type(), 1, e.data()).unwrap(), e);
        let c = create_environment(EnvironmentId::parse("x").unwrap(), "X", false)
            .unwrap()
            .remove(0);
        assert_eq!(
            EnvironmentEvent::decode(c.event_type(), 1, c.data()).unwrap(),
            c
        );
    }
}
