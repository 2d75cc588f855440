//! Webhook endpoints: where `appreg notifier` delivers an environment's or one application's
//! events, signed per the Standard Webhooks specification (API.md "Webhooks and e-mail"). One
//! stream per environment (`webhooks-<env>`) holds every endpoint of it, environment-wide and per
//! application, so the limits are decided on one aggregate and the notifier folds one stream to
//! know where an event goes.
//!
//! The signing secret never enters an event: the caller generates it, seals it in the vault and
//! passes its fingerprint. Nothing here reads a clock or draws a random number.

use crate::error::{DomainError, FieldErrors};
use crate::values::{has_authority, has_bad_chars};
use crate::{decode_tagged, tagged_data, DecodeError, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The stream type of the webhook streams.
pub const WEBHOOK_STREAM: &str = "webhooks";
/// At most this many endpoints per environment (environment-wide and per application together).
pub const MAX_WEBHOOKS: usize = 500;
/// At most this many endpoints per application.
pub const MAX_APPLICATION_WEBHOOKS: usize = 10;
/// The longest URL, in bytes.
pub const MAX_URL: usize = 2048;
pub const MAX_DESCRIPTION: usize = 1000;
/// The longest event-type filter (there are fewer event types than this).
pub const MAX_EVENT_TYPES: usize = 100;

/// Why an endpoint was disabled by appreg rather than by a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DisabledReason {
    /// The receiver answered 410 Gone: it asked not to be called again.
    Gone,
}

/// An endpoint's URL: `https` (`http` only on a loopback host, and only when the caller's policy
/// allows it), a host, no user information, no fragment, at most [`MAX_URL`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WebhookUrl(String);

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

impl WebhookUrl {
    /// Parses an endpoint URL; `allow_loopback_http` admits `http` on a loopback host (the
    /// development mode, or the `api.allow_http_webhooks` setting).
    pub fn parse(s: &str, allow_loopback_http: bool) -> Result<Self, (&'static str, String)> {
        if s.len() > MAX_URL {
            return Err((
                "webhook.url.too_long",
                format!("the URL is {} bytes long; at most {MAX_URL}", s.len()),
            ));
        }
        let bad = || {
            (
                "webhook.url.invalid",
                "not an absolute https URL with a host".to_string(),
            )
        };
        if has_bad_chars(s) {
            return Err(bad());
        }
        let url = url::Url::parse(s).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().unwrap_or("").is_empty()
            || !has_authority(s, url.scheme())
        {
            return Err(bad());
        }
        let authority = s
            .split_once("://")
            .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or(""))
            .unwrap_or("");
        if !url.username().is_empty() || url.password().is_some() || authority.contains('@') {
            return Err((
                "webhook.url.userinfo",
                "the URL must not carry user information (user:password@)".to_string(),
            ));
        }
        if url.fragment().is_some() {
            return Err((
                "webhook.url.invalid",
                "the URL must not have a fragment".to_string(),
            ));
        }
        if url.scheme() == "http" && !(allow_loopback_http && is_loopback(&url)) {
            return Err((
                "webhook.url.not_https",
                if allow_loopback_http {
                    "the URL must be https (http only on a loopback host)".to_string()
                } else {
                    "the URL must be https".to_string()
                },
            ));
        }
        Ok(WebhookUrl(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An endpoint as the events record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    /// The application whose events it receives; `None`: every event of the environment.
    pub application_id: Option<String>,
    pub url: WebhookUrl,
    /// The event types it receives, sorted; empty: all.
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    /// The fingerprint of its signing secret (the secret is in the vault).
    pub secret_fingerprint: String,
    /// Set when appreg disabled it (cleared by an update that enables it again).
    pub disabled_reason: Option<DisabledReason>,
    /// When it was created (set by [`WebhookRegistry::evolve_at`]): it receives the events
    /// recorded from then on.
    #[serde(default)]
    pub created_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl Webhook {
    /// Whether it receives events of this type (its filter; disabled endpoints receive nothing).
    pub fn wants(&self, event_type: &str) -> bool {
        self.enabled
            && (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
    }
}

/// Which endpoints a request addresses: the environment-wide ones, or one application's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookScope {
    Environment,
    Application(String),
}

impl WebhookScope {
    fn application_id(&self) -> Option<&str> {
        match self {
            WebhookScope::Environment => None,
            WebhookScope::Application(id) => Some(id),
        }
    }
}

/// What a caller submits for an endpoint (parsed at the edge with [`WebhookDefinition::parse`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDefinition {
    pub url: WebhookUrl,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
}

/// A submitted endpoint, before parsing.
#[derive(Debug, Clone, Copy)]
pub struct RawWebhook<'a> {
    pub url: Option<&'a str>,
    pub event_types: &'a [String],
    pub enabled: bool,
    pub description: Option<&'a str>,
}

impl WebhookDefinition {
    /// Parses a submitted endpoint for `scope`: an application's endpoint may name only
    /// application event types, an environment's any event type of appreg. Every invalid field
    /// is reported, by name (`event_types[2]`).
    pub fn parse(
        raw: RawWebhook<'_>,
        scope: &WebhookScope,
        allow_loopback_http: bool,
    ) -> Result<Self, DomainError> {
        let mut errors = FieldErrors::new();
        let url = match raw.url {
            Some(u) => errors.take("url", WebhookUrl::parse(u, allow_loopback_http)),
            None => {
                errors.add("url", "field.required", "url is required");
                None
            }
        };
        if raw.event_types.len() > MAX_EVENT_TYPES {
            errors.add(
                "event_types",
                "webhook.event_types.limit",
                format!("at most {MAX_EVENT_TYPES} event types"),
            );
        }
        let known: Vec<&str> = match scope {
            WebhookScope::Environment => crate::event_types(),
            WebhookScope::Application(_) => crate::application::EVENT_TYPES.to_vec(),
        };
        let mut event_types = BTreeSet::new();
        for (i, t) in raw.event_types.iter().enumerate().take(MAX_EVENT_TYPES) {
            if known.contains(&t.as_str()) {
                event_types.insert(t.clone());
            } else {
                errors.add(
                    format!("event_types[{i}]"),
                    "webhook.event_type.unknown",
                    match scope {
                        WebhookScope::Environment => "not an event type of appreg",
                        WebhookScope::Application(_) => "not an event type of an application",
                    },
                );
            }
        }
        let description = match raw.description.map(str::trim) {
            Some(d) if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) => {
                errors.add(
                    "description",
                    "text.invalid",
                    format!("description must be at most {MAX_DESCRIPTION} characters, without control characters"),
                );
                None
            }
            Some("") | None => None,
            Some(d) => Some(d.to_string()),
        };
        errors.into_result()?;
        let url = url.ok_or_else(|| DomainError::Invalid(FieldErrors::new()))?;
        Ok(WebhookDefinition {
            url,
            event_types: event_types.into_iter().collect(),
            enabled: raw.enabled,
            description,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookCreated {
    pub id: String,
    pub application_id: Option<String>,
    pub url: WebhookUrl,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
    pub secret_fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookUpdated {
    pub id: String,
    pub url: WebhookUrl,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDeleted {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDisabled {
    pub id: String,
    pub reason: DisabledReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum WebhookEvent {
    WebhookCreated(WebhookCreated),
    WebhookUpdated(WebhookUpdated),
    WebhookDeleted(WebhookDeleted),
    WebhookDisabled(WebhookDisabled),
}

pub(crate) const EVENT_TYPES: &[&str] = &[
    "WebhookCreated",
    "WebhookUpdated",
    "WebhookDeleted",
    "WebhookDisabled",
];

impl DomainEvent for WebhookEvent {
    fn event_type(&self) -> &'static str {
        match self {
            WebhookEvent::WebhookCreated(_) => "WebhookCreated",
            WebhookEvent::WebhookUpdated(_) => "WebhookUpdated",
            WebhookEvent::WebhookDeleted(_) => "WebhookDeleted",
            WebhookEvent::WebhookDisabled(_) => "WebhookDisabled",
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
        decode_tagged(event_type, schema_version, EVENT_TYPES, data)
    }
}

/// An environment's endpoints, folded from its stream, by id (UUIDv7: creation order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRegistry {
    pub webhooks: BTreeMap<String, Webhook>,
}

impl WebhookRegistry {
    pub fn stream_id(env: &str) -> String {
        format!("webhooks-{env}")
    }

    /// The endpoint `id` if `scope` addresses it (another scope's endpoint is not found).
    pub fn get(&self, id: &str, scope: &WebhookScope) -> Option<&Webhook> {
        self.webhooks
            .get(id)
            .filter(|w| w.application_id.as_deref() == scope.application_id())
    }

    /// The endpoints of `scope`, oldest first.
    pub fn of(&self, scope: &WebhookScope) -> impl Iterator<Item = &Webhook> {
        let app = scope.application_id().map(str::to_string);
        self.webhooks
            .values()
            .filter(move |w| w.application_id == app)
    }

    /// Decide creating an endpoint (its id and its secret's fingerprint from the caller).
    pub fn create(
        &self,
        id: String,
        scope: &WebhookScope,
        definition: WebhookDefinition,
        secret_fingerprint: String,
    ) -> Result<Vec<WebhookEvent>, DomainError> {
        if self.webhooks.len() >= MAX_WEBHOOKS
            || (matches!(scope, WebhookScope::Application(_))
                && self.of(scope).count() >= MAX_APPLICATION_WEBHOOKS)
        {
            return Err(DomainError::TooManyWebhooks);
        }
        Ok(vec![WebhookEvent::WebhookCreated(WebhookCreated {
            id,
            application_id: scope.application_id().map(str::to_string),
            url: definition.url,
            event_types: definition.event_types,
            enabled: definition.enabled,
            description: definition.description,
            secret_fingerprint,
        })])
    }

    /// Decide replacing an endpoint's definition. Nothing changes → no event.
    pub fn update(
        &self,
        id: &str,
        scope: &WebhookScope,
        definition: WebhookDefinition,
    ) -> Result<Vec<WebhookEvent>, DomainError> {
        let current = self.get(id, scope).ok_or(DomainError::WebhookNotFound)?;
        if current.url == definition.url
            && current.event_types == definition.event_types
            && current.enabled == definition.enabled
            && current.description == definition.description
        {
            return Ok(vec![]);
        }
        Ok(vec![WebhookEvent::WebhookUpdated(WebhookUpdated {
            id: id.to_string(),
            url: definition.url,
            event_types: definition.event_types,
            enabled: definition.enabled,
            description: definition.description,
        })])
    }

    /// Decide deleting an endpoint.
    pub fn delete(&self, id: &str, scope: &WebhookScope) -> Result<Vec<WebhookEvent>, DomainError> {
        self.get(id, scope).ok_or(DomainError::WebhookNotFound)?;
        Ok(vec![WebhookEvent::WebhookDeleted(WebhookDeleted {
            id: id.to_string(),
        })])
    }

    /// Decide disabling an endpoint whose receiver asked for it (410 Gone). An endpoint already
    /// disabled, or gone, changes nothing.
    pub fn disable(
        &self,
        id: &str,
        reason: DisabledReason,
    ) -> Result<Vec<WebhookEvent>, DomainError> {
        match self.webhooks.get(id) {
            Some(w) if w.enabled => Ok(vec![WebhookEvent::WebhookDisabled(WebhookDisabled {
                id: id.to_string(),
                reason,
            })]),
            _ => Ok(vec![]),
        }
    }

    /// [`Self::evolve`], recording when an endpoint was created (`at`: the event's time).
    pub fn evolve_at(&mut self, event: &WebhookEvent, at: chrono::DateTime<chrono::Utc>) {
        self.evolve(event);
        if let WebhookEvent::WebhookCreated(e) = event {
            if let Some(w) = self.webhooks.get_mut(&e.id) {
                w.created_at.get_or_insert(at);
            }
        }
    }

    pub fn evolve(&mut self, event: &WebhookEvent) {
        match event {
            WebhookEvent::WebhookCreated(e) => {
                self.webhooks.entry(e.id.clone()).or_insert(Webhook {
                    id: e.id.clone(),
                    application_id: e.application_id.clone(),
                    url: e.url.clone(),
                    event_types: e.event_types.clone(),
                    enabled: e.enabled,
                    description: e.description.clone(),
                    secret_fingerprint: e.secret_fingerprint.clone(),
                    disabled_reason: None,
                    created_at: None,
                });
            }
            WebhookEvent::WebhookUpdated(e) => {
                if let Some(w) = self.webhooks.get_mut(&e.id) {
                    w.url = e.url.clone();
                    w.event_types = e.event_types.clone();
                    w.enabled = e.enabled;
                    w.description = e.description.clone();
                    w.disabled_reason = None;
                }
            }
            WebhookEvent::WebhookDeleted(e) => {
                self.webhooks.remove(&e.id);
            }
            WebhookEvent::WebhookDisabled(e) => {
                if let Some(w) = self.webhooks.get_mut(&e.id) {
                    w.enabled = false;
                    w.disabled_reason = Some(e.reason);
                }
            }
        }
    }
}
