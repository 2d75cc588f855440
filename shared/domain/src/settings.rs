//! Client registration settings: one per environment, changed by its administrators only.
//! Which application types may be created, and whether Dynamic Client Registration is on.

use crate::error::DomainError;
use crate::values::ApplicationType;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedTypes {
    pub simple: bool,
    pub browser: bool,
    pub web: bool,
    pub native: bool,
    pub backend_to_backend: bool,
}

impl Default for AllowedTypes {
    fn default() -> Self {
        Self {
            simple: true,
            browser: true,
            web: true,
            native: true,
            backend_to_backend: true,
        }
    }
}

impl AllowedTypes {
    pub fn allows(&self, t: ApplicationType) -> bool {
        match t {
            ApplicationType::Simple => self.simple,
            ApplicationType::Browser => self.browser,
            ApplicationType::Web => self.web,
            ApplicationType::Native => self.native,
            ApplicationType::BackendToBackend => self.backend_to_backend,
        }
    }
}

/// The settings; `Default` is what a new environment has: every type on, DCR off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ClientRegistrationSettings {
    pub allowed_types: AllowedTypes,
    pub dcr_enabled: bool,
}

impl ClientRegistrationSettings {
    /// The stream that holds an environment's settings.
    pub fn stream_id(environment: &str) -> String {
        format!("settings-{environment}")
    }

    /// Whether a type can be created now. Unlike Gravitee, `simple` is honoured whether or not
    /// DCR is on; OAuth types additionally need DCR.
    pub fn can_create(&self, t: ApplicationType) -> Result<(), (&'static str, String)> {
        if !self.allowed_types.allows(t) {
            return Err((
                "type.not_allowed",
                format!(
                    "applications of type {} are not allowed in this environment",
                    t.as_str()
                ),
            ));
        }
        if t.is_oauth() && !self.dcr_enabled {
            return Err((
                "type.dcr_disabled",
                format!(
                    "type {} needs Dynamic Client Registration, which is disabled in this environment",
                    t.as_str()
                ),
            ));
        }
        Ok(())
    }

    /// Decide an update: an event if anything changes, none otherwise.
    pub fn decide_update(
        &self,
        new: ClientRegistrationSettings,
    ) -> Result<Vec<SettingsEvent>, DomainError> {
        if *self == new {
            return Ok(vec![]);
        }
        Ok(vec![SettingsEvent::ClientRegistrationSettingsUpdated(new)])
    }

    pub fn evolve(&mut self, event: &SettingsEvent) {
        match event {
            SettingsEvent::ClientRegistrationSettingsUpdated(s) => *self = *s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum SettingsEvent {
    ClientRegistrationSettingsUpdated(ClientRegistrationSettings),
}

impl crate::DomainEvent for SettingsEvent {
    fn event_type(&self) -> &'static str {
        match self {
            SettingsEvent::ClientRegistrationSettingsUpdated(_) => {
                "ClientRegistrationSettingsUpdated"
            }
        }
    }
    fn data(&self) -> serde_json::Value {
        crate::tagged_data(self)
    }
    fn decode(
        event_type: &str,
        schema_version: i32,
        data: serde_json::Value,
    ) -> Result<Self, crate::DecodeError> {
        crate::decode_tagged(
            event_type,
            schema_version,
            &["ClientRegistrationSettingsUpdated"],
            data,
        )
    }
}
