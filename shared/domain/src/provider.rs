//! Client registration providers (DCR providers): the OpenID Connect providers an environment's
//! OAuth applications get their clients from. Several per environment, one of them the default
//! (Gravitee allows one). One stream per environment (`providers-<env>`) holds them all, so
//! "exactly one default" and "names are unique" are decided on one aggregate.
//!
//! Secrets of a provider (its client secret in CLIENT_CREDENTIALS mode, its initial access token)
//! never enter an event: the caller stores them in the vault and passes their fingerprints.

use crate::error::{DomainError, FieldErrors};
use crate::values::HttpUrl;
use crate::{decode_tagged, tagged_data, DecodeError, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many providers per environment.
pub const MAX_PROVIDERS: usize = 50;

/// How the initial access token of a registration is obtained.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "initial_access_token_type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InitialAccessTokenMode {
    /// A client_credentials grant with this client and these scopes (its secret in the vault).
    ClientCredentials {
        client_id: String,
        scopes: Vec<String>,
        client_secret_fingerprint: String,
    },
    /// A fixed token given by the provider's administrator (in the vault).
    InitialAccessToken { token_fingerprint: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Post,
    Put,
    Patch,
}

/// Secret renewal at the provider (no RFC defines it): an endpoint template with `{client_id}`
/// and `{registration_endpoint}`, called with the registration access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewClientSecret {
    pub enabled: bool,
    pub endpoint: Option<String>,
    pub method: HttpMethod,
}

/// A provider as the events record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provider {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub discovery_endpoint: HttpUrl,
    pub mode: InitialAccessTokenMode,
    pub software_id: Option<String>,
    pub renew_client_secret: RenewClientSecret,
    pub delete_client_on_archive: bool,
    pub default: bool,
    /// Whether the provider's token, registration and renewal endpoints may be on another
    /// origin than its discovery endpoint (which only an organisation administrator may allow:
    /// the edge checks who asks). False in schema version 1 payloads, which predate it.
    #[serde(default)]
    pub allow_cross_origin_endpoints: bool,
}

/// What an administrator submits (validated at the edge; secrets already in the vault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderDefinition {
    pub name: String,
    pub description: Option<String>,
    pub discovery_endpoint: HttpUrl,
    pub mode: InitialAccessTokenMode,
    pub software_id: Option<String>,
    pub renew_client_secret: RenewClientSecret,
    pub delete_client_on_archive: bool,
    pub default: bool,
    pub allow_cross_origin_endpoints: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCreated {
    pub provider: Provider,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderUpdated {
    pub provider: Provider,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderDeleted {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ProviderEvent {
    ProviderCreated(ProviderCreated),
    ProviderUpdated(ProviderUpdated),
    ProviderDeleted(ProviderDeleted),
}

pub(crate) const EVENT_TYPES: &[&str] = &["ProviderCreated", "ProviderUpdated", "ProviderDeleted"];

/// The schema version of `ProviderCreated` and `ProviderUpdated`: 2 since the provider gained
/// `allow_cross_origin_endpoints` (a v1 payload is read with it false).
pub const PROVIDER_SCHEMA_VERSION: i32 = 2;

impl DomainEvent for ProviderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ProviderEvent::ProviderCreated(_) => "ProviderCreated",
            ProviderEvent::ProviderUpdated(_) => "ProviderUpdated",
            ProviderEvent::ProviderDeleted(_) => "ProviderDeleted",
        }
    }
    fn schema_version(&self) -> i32 {
        match self {
            ProviderEvent::ProviderCreated(_) | ProviderEvent::ProviderUpdated(_) => {
                PROVIDER_SCHEMA_VERSION
            }
            ProviderEvent::ProviderDeleted(_) => 1,
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
            // v1 → v2: the provider gains `allow_cross_origin_endpoints`, false.
            ("ProviderCreated" | "ProviderUpdated", 1) => {
                decode_tagged(event_type, 1, EVENT_TYPES, upcast_provider_v1(data))
            }
            ("ProviderCreated" | "ProviderUpdated", PROVIDER_SCHEMA_VERSION) => {
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("ProviderCreated" | "ProviderUpdated", other) => Err(DecodeError::UnsupportedVersion(
                event_type.to_string(),
                other,
            )),
            _ => decode_tagged(event_type, schema_version, EVENT_TYPES, data),
        }
    }
}

/// A v1 `ProviderCreated` / `ProviderUpdated` payload in the v2 shape (pure).
fn upcast_provider_v1(mut data: serde_json::Value) -> serde_json::Value {
    if let Some(p) = data.get_mut("provider").and_then(|p| p.as_object_mut()) {
        p.entry("allow_cross_origin_endpoints")
            .or_insert(serde_json::Value::Bool(false));
    }
    data
}

/// An environment's providers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRegistry {
    pub providers: BTreeMap<String, Provider>,
}

impl ProviderRegistry {
    /// The stream holding an environment's providers.
    pub fn stream_id(environment: &str) -> String {
        format!("providers-{environment}")
    }

    /// The provider with this id, or the default one.
    pub fn resolve(&self, id: Option<&str>) -> Option<&Provider> {
        match id {
            Some(id) => self.providers.get(id),
            None => self.providers.values().find(|p| p.default),
        }
    }

    fn check(&self, def: &ProviderDefinition, except: Option<&str>) -> Result<(), DomainError> {
        let mut errors = FieldErrors::new();
        let name = def.name.trim();
        if name.chars().count() < 3 || name.chars().count() > 200 {
            errors.add(
                "name",
                "name.length",
                "a provider's name has 3 to 200 characters",
            );
        } else if self.providers.values().any(|p| {
            // Case-insensitive for every script, not only ASCII ("Élysée" = "élysée").
            Some(p.id.as_str()) != except && p.name.to_lowercase() == name.to_lowercase()
        }) {
            errors.add(
                "name",
                "provider.name.exists",
                "another provider has this name",
            );
        }
        if def
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 4000)
        {
            errors.add("description", "text.too_long", "at most 4000 characters");
        }
        if let InitialAccessTokenMode::ClientCredentials {
            client_id, scopes, ..
        } = &def.mode
        {
            if client_id.trim().is_empty() || client_id.len() > 255 {
                errors.add("client_id", "client_id.invalid", "1 to 255 characters");
            }
            if scopes.len() > 50
                || scopes
                    .iter()
                    .any(|s| s.is_empty() || s.len() > 200 || s.contains(char::is_whitespace))
            {
                errors.add(
                    "scopes",
                    "scopes.invalid",
                    "at most 50 scopes without spaces",
                );
            }
        }
        if def
            .software_id
            .as_ref()
            .is_some_and(|s| s.is_empty() || s.len() > 255)
        {
            errors.add("software_id", "software_id.invalid", "1 to 255 characters");
        }
        let renew = &def.renew_client_secret;
        match (&renew.endpoint, renew.enabled) {
            (None, true) => errors.add(
                "renew_client_secret.endpoint",
                "renew.endpoint.required",
                "an endpoint template is needed when renewal is enabled",
            ),
            (Some(t), _) => {
                let sample = t
                    .replace("{client_id}", "c")
                    .replace("{registration_endpoint}", "https://idp.example/reg");
                if t.len() > 2000
                    || !(sample.starts_with("https://") || sample.starts_with("http://"))
                    || HttpUrl::parse(&sample).is_err()
                {
                    errors.add(
                        "renew_client_secret.endpoint",
                        "renew.endpoint.invalid",
                        "an absolute http(s) URL template ({client_id}, {registration_endpoint})",
                    );
                }
            }
            (None, false) => {}
        }
        errors.into_result()
    }

    /// Decide a new provider. The first one of an environment is its default.
    pub fn create(
        &self,
        id: String,
        def: ProviderDefinition,
    ) -> Result<Vec<ProviderEvent>, DomainError> {
        if self.providers.len() >= MAX_PROVIDERS {
            return Err(DomainError::TooManyProviders);
        }
        self.check(&def, None)?;
        let default = def.default || self.providers.is_empty();
        Ok(vec![ProviderEvent::ProviderCreated(ProviderCreated {
            provider: provider(id, def, default),
        })])
    }

    /// Decide a replacement of a provider's definition. The default cannot be unset directly
    /// (make another provider the default).
    pub fn update(
        &self,
        id: &str,
        def: ProviderDefinition,
    ) -> Result<Vec<ProviderEvent>, DomainError> {
        let Some(current) = self.providers.get(id) else {
            return Err(DomainError::ProviderNotFound);
        };
        self.check(&def, Some(id))?;
        if current.default && !def.default {
            let mut e = FieldErrors::new();
            e.add(
                "default",
                "provider.default.required",
                "make another provider the default instead",
            );
            return Err(DomainError::Invalid(e));
        }
        let default = def.default || current.default;
        let next = provider(id.to_string(), def, default);
        if &next == current {
            return Ok(vec![]);
        }
        Ok(vec![ProviderEvent::ProviderUpdated(ProviderUpdated {
            provider: next,
        })])
    }

    /// Decide a deletion; `in_use` says whether applications still use the provider.
    pub fn delete(&self, id: &str, in_use: bool) -> Result<Vec<ProviderEvent>, DomainError> {
        let Some(p) = self.providers.get(id) else {
            return Err(DomainError::ProviderNotFound);
        };
        if in_use {
            return Err(DomainError::ProviderInUse);
        }
        if p.default && self.providers.len() > 1 {
            return Err(DomainError::ProviderIsDefault);
        }
        Ok(vec![ProviderEvent::ProviderDeleted(ProviderDeleted {
            id: id.to_string(),
        })])
    }

    /// Fold one event.
    pub fn evolve(&mut self, event: &ProviderEvent) {
        match event {
            ProviderEvent::ProviderCreated(ProviderCreated { provider })
            | ProviderEvent::ProviderUpdated(ProviderUpdated { provider }) => {
                if provider.default {
                    for p in self.providers.values_mut() {
                        p.default = false;
                    }
                }
                self.providers.insert(provider.id.clone(), provider.clone());
            }
            ProviderEvent::ProviderDeleted(ProviderDeleted { id }) => {
                self.providers.remove(id);
            }
        }
    }
}

fn provider(id: String, def: ProviderDefinition, default: bool) -> Provider {
    Provider {
        id,
        name: def.name.trim().to_string(),
        description: def.description,
        discovery_endpoint: def.discovery_endpoint,
        mode: def.mode,
        software_id: def.software_id,
        renew_client_secret: def.renew_client_secret,
        delete_client_on_archive: def.delete_client_on_archive,
        default,
        allow_cross_origin_endpoints: def.allow_cross_origin_endpoints,
    }
}
