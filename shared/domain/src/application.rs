//! The Application aggregate: create, update, archive, restore, and the rules of DESIGN §1 that
//! concern them (types and grant types, redirect URIs, the `client_id` claim, transitions).

use crate::error::{DomainError, FieldErrors};
use crate::permissions::{allows, Actor, Operation, Permission, Role};
use crate::settings::ClientRegistrationSettings;
use crate::subscription as sub;
use crate::values::*;
use crate::{decode_tagged, tagged_data, DecodeError, DomainEvent, UniqueClaim};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// At most this many redirect URIs per application.
pub const MAX_REDIRECT_URIS: usize = 20;
/// Bounds of the free-text fields.
pub const MAX_DESCRIPTION: usize = 4000;
pub const MAX_DOMAIN: usize = 255;
pub const MAX_PROVIDER_ID: usize = 100;
/// The application fields a provider holds in a client's metadata (`client_name`,
/// `redirect_uris`, `grant_types`, `client_uri`, `logo_uri`).
const PROVIDER_FIELDS: &[&str] = &[
    "name",
    "redirect_uris",
    "grant_types",
    "client_uri",
    "logo_uri",
];
/// At most this many members per application.
pub const MAX_MEMBERS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ApplicationStatus {
    Active,
    Archived,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RegistrationState {
    Registering,
    Registered,
    RegistrationFailed,
}

/// The state of an OAuth application's client at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub state: RegistrationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// Stream version of the current `DcrRegistrationRequested`: the saga's answer names it, so
    /// an answer to an older request is refused.
    #[serde(default)]
    pub request_version: i64,
    /// 1 for the first request, one more per retry or re-registration.
    #[serde(default)]
    pub attempt: u32,
    /// The provider that issued the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Fingerprint of the current client secret (the secret itself is in the vault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<DateTime<Utc>>,
    /// The client was deleted at the provider (archive with `delete_client_on_archive`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub client_deleted: bool,
    /// The last operation on the registered client (update, secret renewal) and its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<ClientOperation>,
}

/// An operation on a registered client at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOperation {
    pub kind: ClientOperationKind,
    pub state: OperationState,
    /// Stream version of the request event.
    pub request_version: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientOperationKind {
    Update,
    RenewSecret,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationState {
    Pending,
    Done,
    Failed,
}

/// OAuth settings of an OAuth application; `response_types` are computed from `grant_types`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthSettings {
    pub redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    pub response_types: Vec<ResponseType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<HttpUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<HttpUrl>,
}

/// Configuration the rules depend on, passed in by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    pub settings: ClientRegistrationSettings,
    /// Accept `http` redirect URIs on non-loopback hosts (off by default; for test portals).
    pub allow_http_redirect_uris: bool,
}

/// A field of an update: keep the current value, clear it, or set a new one.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Patch<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T: Clone> Patch<T> {
    fn apply(&self, current: &Option<T>) -> Option<T> {
        match self {
            Patch::Keep => current.clone(),
            Patch::Clear => None,
            Patch::Set(v) => Some(v.clone()),
        }
    }
    fn is_keep(&self) -> bool {
        matches!(self, Patch::Keep)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateApplication {
    pub id: ApplicationId,
    pub environment: EnvironmentId,
    pub name: ApplicationName,
    pub description: Option<BoundedText>,
    pub domain: Option<BoundedText>,
    pub app_type: ApplicationType,
    pub client_id: Option<ClientId>,
    pub redirect_uris: Vec<RedirectUri>,
    pub grant_types: Vec<GrantType>,
    pub client_uri: Option<HttpUrl>,
    pub logo_uri: Option<HttpUrl>,
    pub provider_id: Option<String>,
    /// The creator, who becomes primary owner.
    pub owner: UserId,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpdateApplication {
    pub name: Option<ApplicationName>,
    pub description: Patch<BoundedText>,
    pub domain: Patch<BoundedText>,
    pub client_id: Patch<ClientId>,
    pub redirect_uris: Option<Vec<RedirectUri>>,
    pub grant_types: Option<Vec<GrantType>>,
    pub client_uri: Patch<HttpUrl>,
    pub logo_uri: Patch<HttpUrl>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationCreated {
    pub id: ApplicationId,
    pub environment: EnvironmentId,
    pub name: ApplicationName,
    pub description: Option<BoundedText>,
    pub domain: Option<BoundedText>,
    #[serde(rename = "type")]
    pub app_type: ApplicationType,
    pub client_id: Option<ClientId>,
    pub oauth: Option<OAuthSettings>,
    pub provider_id: Option<String>,
    pub primary_owner: UserId,
}

/// Schema version 2: v1 (`{provider_id}`) could only mean the first request, made at creation;
/// the saga needs to tell a retry or a re-registration after a restore from it (idempotency is
/// per request, back-off per attempt), hence `attempt` and `reason`. Stored v1 payloads are
/// upcast on read to `attempt: 1, reason: CREATED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrRegistrationRequested {
    pub provider_id: Option<String>,
    /// 1 for the application's first request, then one more per request.
    pub attempt: u32,
    pub reason: RegistrationReason,
}

/// Why a client registration was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RegistrationReason {
    /// The application was created.
    Created,
    /// A failed registration was retried (`_retry_registration`).
    Retry,
    /// The application was restored after its client had been deleted at the archive.
    Restored,
}

/// The current schema version of `DcrRegistrationRequested` payloads.
pub const DCR_REGISTRATION_REQUESTED_VERSION: i32 = 2;

/// Upcasts a `DcrRegistrationRequested` v1 payload to v2 (pure; never rewrites the store).
fn upcast_dcr_registration_requested_v1(mut data: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(map) = &mut data {
        map.entry("attempt").or_insert(serde_json::json!(1));
        map.entry("reason").or_insert(serde_json::json!("CREATED"));
    }
    data
}

/// The saga obtained a client for the request at `request_version`. The secret and the
/// registration access token are in the vault; only the secret's fingerprint is here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrClientRegistered {
    pub request_version: i64,
    pub provider_id: String,
    pub client_id: ClientId,
    pub client_secret_fingerprint: Option<String>,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
}

/// The provider refused the request at `request_version` (its `error` and
/// `error_description`), or it stayed unreachable after the saga's retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrRegistrationFailed {
    pub request_version: i64,
    pub provider_id: Option<String>,
    pub error: String,
    pub error_description: Option<String>,
}

/// A client exists at a provider that no application holds (the saga obtained it but could not
/// record it, and the provider offers no deletion): for operators to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrphanClientDetected {
    pub provider_id: String,
    pub client_id: String,
    pub reason: String,
}

/// OAuth settings changed: the registered client is to be updated at the provider (RFC 7592).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrClientUpdateRequested {
    pub changed: Vec<String>,
}

/// The provider accepted the update requested at `request_version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrClientUpdated {
    pub request_version: i64,
}

/// A requested operation on the client failed at the provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientOperationFailed {
    pub request_version: i64,
    pub error: String,
    pub error_description: Option<String>,
}

/// A new client secret was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretRenewalRequested {}

/// The provider issued a new secret (in the vault; its fingerprint here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSecretRenewed {
    pub request_version: i64,
    pub client_secret_fingerprint: String,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
}

/// The client was deleted at the provider (archive with `delete_client_on_archive`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrClientDeleted {
    pub provider_id: String,
    pub client_id: ClientId,
}

/// The application's definition after the update, and which fields changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationUpdated {
    pub name: ApplicationName,
    pub description: Option<BoundedText>,
    pub domain: Option<BoundedText>,
    pub client_id: Option<ClientId>,
    pub oauth: Option<OAuthSettings>,
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationArchived {
    /// The primary owner whose link the archive dropped.
    pub former_primary_owner: Option<UserId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationRestored {
    /// The restoring administrator, now primary owner.
    pub primary_owner: UserId,
}

/// A member was added with a role (OWNER or USER).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAdded {
    pub user: UserId,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRoleChanged {
    pub user: UserId,
    pub from: Role,
    pub to: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub user: UserId,
    pub role: Role,
}

/// `to` became primary owner; the former one (if any) now has `former_owner_role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrimaryOwnershipTransferred {
    pub from: Option<UserId>,
    pub to: UserId,
    pub former_owner_role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum ApplicationEvent {
    ApplicationCreated(ApplicationCreated),
    DcrRegistrationRequested(DcrRegistrationRequested),
    ApplicationUpdated(ApplicationUpdated),
    ApplicationArchived(ApplicationArchived),
    ApplicationRestored(ApplicationRestored),
    MemberAdded(MemberAdded),
    MemberRoleChanged(MemberRoleChanged),
    MemberRemoved(MemberRemoved),
    PrimaryOwnershipTransferred(PrimaryOwnershipTransferred),
    DcrClientRegistered(DcrClientRegistered),
    DcrRegistrationFailed(DcrRegistrationFailed),
    OrphanClientDetected(OrphanClientDetected),
    DcrClientUpdateRequested(DcrClientUpdateRequested),
    DcrClientUpdated(DcrClientUpdated),
    DcrClientUpdateFailed(ClientOperationFailed),
    ClientSecretRenewalRequested(ClientSecretRenewalRequested),
    ClientSecretRenewed(ClientSecretRenewed),
    ClientSecretRenewalFailed(ClientOperationFailed),
    DcrClientDeleted(DcrClientDeleted),
    SubscriptionCreated(sub::SubscriptionCreated),
    SubscriptionAccepted(sub::SubscriptionAccepted),
    SubscriptionRejected(sub::SubscriptionRejected),
    SubscriptionPaused(sub::SubscriptionPaused),
    SubscriptionResumed(sub::SubscriptionResumed),
    SubscriptionClosed(sub::SubscriptionClosed),
    SubscriptionReopened(sub::SubscriptionReopened),
    ApiKeyIssued(sub::ApiKeyIssued),
    ApiKeyRenewed(sub::ApiKeyRenewed),
    ApiKeyRevoked(sub::ApiKeyRevoked),
    NotificationSettingsUpdated(sub::NotificationSettingsUpdated),
    NotificationSettingsDeleted(sub::NotificationSettingsDeleted),
}

const EVENT_TYPES: &[&str] = &[
    "ApplicationCreated",
    "DcrRegistrationRequested",
    "ApplicationUpdated",
    "ApplicationArchived",
    "ApplicationRestored",
    "MemberAdded",
    "MemberRoleChanged",
    "MemberRemoved",
    "PrimaryOwnershipTransferred",
    "DcrClientRegistered",
    "DcrRegistrationFailed",
    "OrphanClientDetected",
    "DcrClientUpdateRequested",
    "DcrClientUpdated",
    "DcrClientUpdateFailed",
    "ClientSecretRenewalRequested",
    "ClientSecretRenewed",
    "ClientSecretRenewalFailed",
    "DcrClientDeleted",
    "SubscriptionCreated",
    "SubscriptionAccepted",
    "SubscriptionRejected",
    "SubscriptionPaused",
    "SubscriptionResumed",
    "SubscriptionClosed",
    "SubscriptionReopened",
    "ApiKeyIssued",
    "ApiKeyRenewed",
    "ApiKeyRevoked",
    "NotificationSettingsUpdated",
    "NotificationSettingsDeleted",
];

impl DomainEvent for ApplicationEvent {
    fn event_type(&self) -> &'static str {
        match self {
            ApplicationEvent::ApplicationCreated(_) => "ApplicationCreated",
            ApplicationEvent::DcrRegistrationRequested(_) => "DcrRegistrationRequested",
            ApplicationEvent::ApplicationUpdated(_) => "ApplicationUpdated",
            ApplicationEvent::ApplicationArchived(_) => "ApplicationArchived",
            ApplicationEvent::ApplicationRestored(_) => "ApplicationRestored",
            ApplicationEvent::MemberAdded(_) => "MemberAdded",
            ApplicationEvent::MemberRoleChanged(_) => "MemberRoleChanged",
            ApplicationEvent::MemberRemoved(_) => "MemberRemoved",
            ApplicationEvent::PrimaryOwnershipTransferred(_) => "PrimaryOwnershipTransferred",
            ApplicationEvent::DcrClientRegistered(_) => "DcrClientRegistered",
            ApplicationEvent::DcrRegistrationFailed(_) => "DcrRegistrationFailed",
            ApplicationEvent::OrphanClientDetected(_) => "OrphanClientDetected",
            ApplicationEvent::DcrClientUpdateRequested(_) => "DcrClientUpdateRequested",
            ApplicationEvent::DcrClientUpdated(_) => "DcrClientUpdated",
            ApplicationEvent::DcrClientUpdateFailed(_) => "DcrClientUpdateFailed",
            ApplicationEvent::ClientSecretRenewalRequested(_) => "ClientSecretRenewalRequested",
            ApplicationEvent::ClientSecretRenewed(_) => "ClientSecretRenewed",
            ApplicationEvent::ClientSecretRenewalFailed(_) => "ClientSecretRenewalFailed",
            ApplicationEvent::DcrClientDeleted(_) => "DcrClientDeleted",
            ApplicationEvent::SubscriptionCreated(_) => "SubscriptionCreated",
            ApplicationEvent::SubscriptionAccepted(_) => "SubscriptionAccepted",
            ApplicationEvent::SubscriptionRejected(_) => "SubscriptionRejected",
            ApplicationEvent::SubscriptionPaused(_) => "SubscriptionPaused",
            ApplicationEvent::SubscriptionResumed(_) => "SubscriptionResumed",
            ApplicationEvent::SubscriptionClosed(_) => "SubscriptionClosed",
            ApplicationEvent::SubscriptionReopened(_) => "SubscriptionReopened",
            ApplicationEvent::ApiKeyIssued(_) => "ApiKeyIssued",
            ApplicationEvent::ApiKeyRenewed(_) => "ApiKeyRenewed",
            ApplicationEvent::ApiKeyRevoked(_) => "ApiKeyRevoked",
            ApplicationEvent::NotificationSettingsUpdated(_) => "NotificationSettingsUpdated",
            ApplicationEvent::NotificationSettingsDeleted(_) => "NotificationSettingsDeleted",
        }
    }
    fn schema_version(&self) -> i32 {
        match self {
            ApplicationEvent::DcrRegistrationRequested(_) => DCR_REGISTRATION_REQUESTED_VERSION,
            _ => 1,
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
            ("DcrRegistrationRequested", 1) => {
                let data = upcast_dcr_registration_requested_v1(data);
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("DcrRegistrationRequested", DCR_REGISTRATION_REQUESTED_VERSION) => {
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("DcrRegistrationRequested", other) => Err(DecodeError::UnsupportedVersion(
                event_type.to_string(),
                other,
            )),
            _ => decode_tagged(event_type, schema_version, EVENT_TYPES, data),
        }
    }
}

impl ApplicationEvent {
    /// [`DomainEvent::decode`] from the payload's JSON text (one JSON value, as the event
    /// store's `jsonb` prints it), without building a `serde_json::Value` first when the payload
    /// is in the current shape: the same event, or the same error, as `decode` of the parsed
    /// text. A replay of the whole log decodes this way.
    pub fn decode_json(
        event_type: &str,
        schema_version: i32,
        data: &str,
    ) -> Result<Self, DecodeError> {
        let current = match (event_type, schema_version) {
            ("DcrRegistrationRequested", DCR_REGISTRATION_REQUESTED_VERSION) => true,
            ("DcrRegistrationRequested", _) => false,
            (_, version) => version == 1,
        };
        if current {
            if let Some(event) = crate::decode_tagged_json(event_type, EVENT_TYPES, data) {
                return Ok(event);
            }
        }
        let value: serde_json::Value = serde_json::from_str(data)
            .map_err(|e| DecodeError::Malformed(event_type.to_string(), e))?;
        Self::decode(event_type, schema_version, value)
    }
}

/// The aggregate's state, folded from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    pub id: ApplicationId,
    pub environment: EnvironmentId,
    pub name: ApplicationName,
    pub description: Option<BoundedText>,
    pub domain: Option<BoundedText>,
    #[serde(rename = "type")]
    pub app_type: ApplicationType,
    pub status: ApplicationStatus,
    pub client_id: Option<ClientId>,
    pub oauth: Option<OAuthSettings>,
    pub provider_id: Option<String>,
    pub registration: Option<Registration>,
    /// Members and their roles; the primary owner is among them (none while archived).
    pub members: BTreeMap<UserId, Role>,
    /// Subscriptions to API plans, open and ended, in the order they were made.
    #[serde(default)]
    pub subscriptions: Vec<sub::Subscription>,
    /// Each member's notification settings (deleted by an archive).
    #[serde(default)]
    pub notifications: BTreeMap<UserId, sub::NotificationSetting>,
    /// The stream version of the last archive (what a restore undoes) and of the last restore.
    #[serde(default)]
    pub archived_version: Option<i64>,
    #[serde(default)]
    pub restored_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

/// Checks the OAuth settings for a type and returns them normalised (deduplicated, defaults
/// applied, response types computed). Collects every problem into `errors`.
pub fn check_oauth_settings(
    app_type: ApplicationType,
    redirect_uris: &[RedirectUri],
    grant_types: &[GrantType],
    client_uri: Option<&HttpUrl>,
    logo_uri: Option<&HttpUrl>,
    policy: &Policy,
    errors: &mut FieldErrors,
) -> Option<OAuthSettings> {
    if !app_type.is_oauth() {
        if !redirect_uris.is_empty() {
            errors.add(
                "redirect_uris",
                "redirect_uris.not_applicable",
                "simple applications have no redirect URIs",
            );
        }
        if !grant_types.is_empty() {
            errors.add(
                "grant_types",
                "grant_types.not_applicable",
                "simple applications have no grant types",
            );
        }
        if client_uri.is_some() {
            errors.add(
                "client_uri",
                "client_uri.not_applicable",
                "client_uri is for OAuth applications only",
            );
        }
        if logo_uri.is_some() {
            errors.add(
                "logo_uri",
                "logo_uri.not_applicable",
                "logo_uri is for OAuth applications only",
            );
        }
        return None;
    }
    let before = errors.0.len();

    // Redirect URIs.
    let mut uris: Vec<RedirectUri> = Vec::new();
    if app_type.requires_redirect_uris() {
        if redirect_uris.is_empty() {
            errors.add(
                "redirect_uris",
                "redirect_uris.required",
                format!(
                    "applications of type {} need at least one redirect URI",
                    app_type.as_str()
                ),
            );
        } else if redirect_uris.len() > MAX_REDIRECT_URIS {
            errors.add(
                "redirect_uris",
                "redirect_uris.too_many",
                format!("at most {MAX_REDIRECT_URIS} redirect URIs"),
            );
        }
        for (i, uri) in redirect_uris.iter().enumerate() {
            let field = format!("redirect_uris[{i}]");
            match uri.scheme().as_str() {
                "https" => {}
                "http" if uri.is_loopback() || policy.allow_http_redirect_uris => {}
                "http" => errors.add(
                    field,
                    "redirect_uri.insecure",
                    format!(
                        "{:?}: http is only allowed for loopback hosts; use https",
                        uri.as_str()
                    ),
                ),
                other if app_type == ApplicationType::Native => {
                    // RFC 8252 §7.1: private-use URI schemes for native apps.
                    let _ = other;
                }
                other => errors.add(
                    field,
                    "redirect_uri.scheme",
                    format!("the scheme {other:?} is only allowed for native applications"),
                ),
            }
            if !uris.contains(uri) {
                uris.push(uri.clone());
            }
        }
    } else if !redirect_uris.is_empty() {
        errors.add(
            "redirect_uris",
            "redirect_uris.not_applicable",
            format!(
                "applications of type {} have no redirect URIs",
                app_type.as_str()
            ),
        );
    }

    // Grant types: defaults when none, each allowed, every mandatory one present.
    let mut grants: Vec<GrantType> = if grant_types.is_empty() {
        app_type.default_grant_types().to_vec()
    } else {
        grant_types.to_vec()
    };
    grants.sort();
    grants.dedup();
    let allowed = app_type.allowed_grant_types();
    for g in &grants {
        if !allowed.contains(g) {
            errors.add(
                "grant_types",
                "grant_type.not_allowed",
                format!(
                    "grant type {} is not allowed for type {} (allowed: {})",
                    g.as_str(),
                    app_type.as_str(),
                    allowed
                        .iter()
                        .map(GrantType::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }
    for m in app_type.mandatory_grant_types() {
        if !grants.contains(m) {
            errors.add(
                "grant_types",
                "grant_type.mandatory_missing",
                format!(
                    "grant type {} is mandatory for type {}",
                    m.as_str(),
                    app_type.as_str()
                ),
            );
        }
    }
    if errors.0.len() > before {
        return None;
    }
    Some(OAuthSettings {
        response_types: ResponseType::for_grants(&grants),
        redirect_uris: uris,
        grant_types: grants,
        client_uri: client_uri.cloned(),
        logo_uri: logo_uri.cloned(),
    })
}

impl Application {
    /// Decide a creation. The creator becomes primary owner; an OAuth application also asks for
    /// its client (`DcrRegistrationRequested`).
    pub fn create(
        cmd: CreateApplication,
        policy: &Policy,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        let mut errors = FieldErrors::new();
        if let Err((code, message)) = policy.settings.can_create(cmd.app_type) {
            errors.add("type", code, message);
        }
        if cmd.app_type.is_oauth() && cmd.client_id.is_some() {
            errors.add(
                "client_id",
                "client_id.not_applicable",
                "the client_id of an OAuth application is issued by the provider",
            );
        }
        if !cmd.app_type.is_oauth() && cmd.provider_id.is_some() {
            errors.add(
                "provider_id",
                "provider_id.not_applicable",
                "simple applications use no provider",
            );
        }
        if cmd
            .provider_id
            .as_ref()
            .is_some_and(|p| p.is_empty() || p.len() > MAX_PROVIDER_ID)
        {
            errors.add(
                "provider_id",
                "provider_id.invalid",
                format!("a provider id has 1 to {MAX_PROVIDER_ID} characters"),
            );
        }
        let oauth = check_oauth_settings(
            cmd.app_type,
            &cmd.redirect_uris,
            &cmd.grant_types,
            cmd.client_uri.as_ref(),
            cmd.logo_uri.as_ref(),
            policy,
            &mut errors,
        );
        errors.into_result()?;
        let is_oauth = cmd.app_type.is_oauth();
        let mut events = vec![ApplicationEvent::ApplicationCreated(ApplicationCreated {
            id: cmd.id,
            environment: cmd.environment,
            name: cmd.name,
            description: cmd.description,
            domain: cmd.domain,
            app_type: cmd.app_type,
            client_id: cmd.client_id,
            oauth,
            provider_id: cmd.provider_id.clone(),
            primary_owner: cmd.owner,
        })];
        if is_oauth {
            events.push(ApplicationEvent::DcrRegistrationRequested(
                DcrRegistrationRequested {
                    provider_id: cmd.provider_id,
                    attempt: 1,
                    reason: RegistrationReason::Created,
                },
            ));
        }
        Ok(events)
    }

    /// The role a user holds, if any.
    pub fn role_of(&self, user: &UserId) -> Option<Role> {
        self.members.get(user).copied()
    }

    pub fn primary_owner(&self) -> Option<&UserId> {
        self.members
            .iter()
            .find(|(_, r)| **r == Role::PrimaryOwner)
            .map(|(u, _)| u)
    }

    /// Authorise an operation: administrators may do everything; an archived application is
    /// visible to administrators only; a non-member gets `NotFound` (the application's existence
    /// is not revealed), a member without the permission `Forbidden`.
    pub fn authorize(
        &self,
        actor: &Actor,
        permission: Permission,
        op: Operation,
    ) -> Result<(), DomainError> {
        if actor.admin {
            return Ok(());
        }
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::NotFound);
        }
        match self.role_of(&actor.user) {
            None => Err(DomainError::NotFound),
            Some(role) if allows(role, permission, op) => Ok(()),
            Some(_) => Err(DomainError::Forbidden(format!(
                "{}[{}]",
                permission.as_str(),
                op.letter()
            ))),
        }
    }

    /// Decide an update of the definition. Nothing changes → no event.
    pub fn update(
        &self,
        cmd: UpdateApplication,
        policy: &Policy,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        let mut errors = FieldErrors::new();
        if self.app_type.is_oauth() && !cmd.client_id.is_keep() {
            errors.add(
                "client_id",
                "client_id.not_applicable",
                "the client_id of an OAuth application is issued by the provider",
            );
        }
        let current = self.oauth.clone();
        let oauth = if self.app_type.is_oauth() {
            let cur = current.clone().unwrap_or(OAuthSettings {
                redirect_uris: vec![],
                grant_types: vec![],
                response_types: vec![],
                client_uri: None,
                logo_uri: None,
            });
            let uris = cmd
                .redirect_uris
                .clone()
                .unwrap_or(cur.redirect_uris.clone());
            let grants = cmd.grant_types.clone().unwrap_or(cur.grant_types.clone());
            let client_uri = cmd.client_uri.apply(&cur.client_uri);
            let logo_uri = cmd.logo_uri.apply(&cur.logo_uri);
            check_oauth_settings(
                self.app_type,
                &uris,
                &grants,
                client_uri.as_ref(),
                logo_uri.as_ref(),
                policy,
                &mut errors,
            )
        } else {
            check_oauth_settings(
                self.app_type,
                cmd.redirect_uris.as_deref().unwrap_or(&[]),
                cmd.grant_types.as_deref().unwrap_or(&[]),
                match &cmd.client_uri {
                    Patch::Set(u) => Some(u),
                    _ => None,
                },
                match &cmd.logo_uri {
                    Patch::Set(u) => Some(u),
                    _ => None,
                },
                policy,
                &mut errors,
            )
        };
        errors.into_result()?;

        let name = cmd.name.unwrap_or_else(|| self.name.clone());
        let description = cmd.description.apply(&self.description);
        let domain = cmd.domain.apply(&self.domain);
        let client_id = cmd.client_id.apply(&self.client_id);
        let mut changed = Vec::new();
        if name != self.name {
            changed.push("name");
        }
        if description != self.description {
            changed.push("description");
        }
        if domain != self.domain {
            changed.push("domain");
        }
        if client_id != self.client_id {
            changed.push("client_id");
        }
        if let (Some(new), Some(old)) = (&oauth, &current) {
            if new.redirect_uris != old.redirect_uris {
                changed.push("redirect_uris");
            }
            if new.grant_types != old.grant_types {
                changed.push("grant_types");
            }
            if new.client_uri != old.client_uri {
                changed.push("client_uri");
            }
            if new.logo_uri != old.logo_uri {
                changed.push("logo_uri");
            }
        }
        if changed.is_empty() {
            return Ok(vec![]);
        }
        // What the provider holds of a registered client follows the application (RFC 7592).
        let for_provider: Vec<String> = changed
            .iter()
            .filter(|c| PROVIDER_FIELDS.contains(c))
            .map(|c| c.to_string())
            .collect();
        let registered = self
            .registration
            .as_ref()
            .is_some_and(|r| r.state == RegistrationState::Registered && !r.client_deleted);
        let mut events = vec![ApplicationEvent::ApplicationUpdated(ApplicationUpdated {
            name,
            description,
            domain,
            client_id,
            oauth,
            changed: changed.into_iter().map(String::from).collect(),
        })];
        if registered && !for_provider.is_empty() {
            // A client update would supersede a pending secret renewal, whose answer (a secret
            // already issued) would then be refused as stale.
            let renewing = self
                .registration
                .as_ref()
                .and_then(|r| r.operation.as_ref())
                .is_some_and(|o| {
                    o.kind == ClientOperationKind::RenewSecret && o.state == OperationState::Pending
                });
            if renewing {
                return Err(DomainError::OperationPending);
            }
            events.push(ApplicationEvent::DcrClientUpdateRequested(
                DcrClientUpdateRequested {
                    changed: for_provider,
                },
            ));
        }
        Ok(events)
    }

    /// Decide an archive: the primary-owner link is dropped.
    pub fn archive(&self) -> Result<Vec<ApplicationEvent>, DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(vec![ApplicationEvent::ApplicationArchived(
            ApplicationArchived {
                former_primary_owner: self.primary_owner().cloned(),
            },
        )])
    }

    /// Decide a restore, by an administrator, who becomes primary owner.
    pub fn restore(&self, actor: &Actor) -> Result<Vec<ApplicationEvent>, DomainError> {
        if !actor.admin {
            return Err(DomainError::AdminOnly);
        }
        if self.status == ApplicationStatus::Active {
            return Err(DomainError::NotArchived);
        }
        let mut events = vec![ApplicationEvent::ApplicationRestored(ApplicationRestored {
            primary_owner: actor.user.clone(),
        })];
        // A client deleted at the archive is registered anew; so is one whose request was still
        // unanswered at the archive (the saga's answer is refused while archived, so the old
        // request would never be answered).
        if let Some(r) = self
            .registration
            .as_ref()
            .filter(|r| r.client_deleted || r.state == RegistrationState::Registering)
        {
            events.push(ApplicationEvent::DcrRegistrationRequested(
                DcrRegistrationRequested {
                    provider_id: self.provider_id.clone(),
                    attempt: r.attempt.saturating_add(1),
                    reason: RegistrationReason::Restored,
                },
            ));
        }
        Ok(events)
    }

    fn active(&self) -> Result<(), DomainError> {
        if self.status == ApplicationStatus::Archived {
            return Err(DomainError::Archived);
        }
        Ok(())
    }

    /// Decide adding a member. The primary owner is only ever set by a transfer.
    pub fn add_member(
        &self,
        user: UserId,
        role: Role,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        if role == Role::PrimaryOwner {
            return Err(role_error());
        }
        if self.members.contains_key(&user) {
            return Err(DomainError::MemberExists);
        }
        if self.members.len() >= MAX_MEMBERS {
            return Err(DomainError::TooManyMembers);
        }
        Ok(vec![ApplicationEvent::MemberAdded(MemberAdded {
            user,
            role,
        })])
    }

    /// Decide changing a member's role; the same role again changes nothing.
    pub fn change_member_role(
        &self,
        user: UserId,
        role: Role,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        if role == Role::PrimaryOwner {
            return Err(role_error());
        }
        let from = self.role_of(&user).ok_or(DomainError::MemberNotFound)?;
        if from == Role::PrimaryOwner {
            return Err(DomainError::PrimaryOwnerImmutable);
        }
        if from == role {
            return Ok(vec![]);
        }
        Ok(vec![ApplicationEvent::MemberRoleChanged(
            MemberRoleChanged {
                user,
                from,
                to: role,
            },
        )])
    }

    /// Decide removing a member; the primary owner cannot be removed.
    pub fn remove_member(&self, user: UserId) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        let role = self.role_of(&user).ok_or(DomainError::MemberNotFound)?;
        if role == Role::PrimaryOwner {
            return Err(DomainError::PrimaryOwnerImmutable);
        }
        Ok(vec![ApplicationEvent::MemberRemoved(MemberRemoved {
            user,
            role,
        })])
    }

    /// Decide a transfer of primary ownership, by the primary owner or an administrator. The new
    /// primary owner may or may not be a member yet; the former one keeps `former_owner_role`.
    pub fn transfer_ownership(
        &self,
        actor: &Actor,
        to: UserId,
        former_owner_role: Role,
    ) -> Result<Vec<ApplicationEvent>, DomainError> {
        self.active()?;
        let from = self.primary_owner().cloned();
        if !actor.admin && from.as_ref() != Some(&actor.user) {
            return Err(DomainError::Forbidden("PRIMARY_OWNER".into()));
        }
        if former_owner_role == Role::PrimaryOwner {
            let mut e = FieldErrors::new();
            e.add(
                "former_owner_role",
                "role.invalid",
                "the former primary owner becomes OWNER or USER",
            );
            return Err(DomainError::Invalid(e));
        }
        if from.as_ref() == Some(&to) {
            return Err(DomainError::AlreadyPrimaryOwner);
        }
        Ok(vec![ApplicationEvent::PrimaryOwnershipTransferred(
            PrimaryOwnershipTransferred {
                from,
                to,
                former_owner_role,
            },
        )])
    }

    /// Fold one event. `None` before the first event; an event that cannot apply to the state is
    /// ignored (the log is the truth; decide never produces such a sequence).
    pub fn evolve(
        state: Option<Application>,
        event: &ApplicationEvent,
        at: DateTime<Utc>,
        version: i64,
    ) -> Option<Application> {
        let mut app = match (state, event) {
            (None, ApplicationEvent::ApplicationCreated(e)) => {
                let mut members = BTreeMap::new();
                members.insert(e.primary_owner.clone(), Role::PrimaryOwner);
                return Some(Application {
                    id: e.id,
                    environment: e.environment.clone(),
                    name: e.name.clone(),
                    description: e.description.clone(),
                    domain: e.domain.clone(),
                    app_type: e.app_type,
                    status: ApplicationStatus::Active,
                    client_id: e.client_id.clone(),
                    oauth: e.oauth.clone(),
                    provider_id: e.provider_id.clone(),
                    registration: None,
                    members,
                    subscriptions: vec![],
                    notifications: BTreeMap::new(),
                    archived_version: None,
                    restored_version: None,
                    created_at: at,
                    updated_at: at,
                    version,
                });
            }
            (None, _) => return None,
            (Some(app), _) => app,
        };
        match event {
            ApplicationEvent::ApplicationCreated(_) => {}
            ApplicationEvent::DcrRegistrationRequested(e) => {
                app.registration = Some(Registration {
                    state: RegistrationState::Registering,
                    error: None,
                    error_description: None,
                    request_version: version,
                    attempt: e.attempt,
                    provider_id: None,
                    client_secret_fingerprint: None,
                    client_secret_expires_at: None,
                    client_deleted: false,
                    operation: None,
                });
                app.client_id = None;
            }
            ApplicationEvent::DcrClientRegistered(e) => {
                if let Some(r) = app.registration.as_mut() {
                    r.state = RegistrationState::Registered;
                    r.provider_id = Some(e.provider_id.clone());
                    r.client_secret_fingerprint = e.client_secret_fingerprint.clone();
                    r.client_secret_expires_at = e.client_secret_expires_at;
                    r.error = None;
                    r.error_description = None;
                }
                app.client_id = Some(e.client_id.clone());
            }
            ApplicationEvent::DcrRegistrationFailed(e) => {
                if let Some(r) = app.registration.as_mut() {
                    r.state = RegistrationState::RegistrationFailed;
                    r.error = Some(e.error.clone());
                    r.error_description = e.error_description.clone();
                }
            }
            ApplicationEvent::OrphanClientDetected(_) => {}
            ApplicationEvent::DcrClientUpdateRequested(_) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::Update,
                    OperationState::Pending,
                    version,
                    None,
                );
            }
            ApplicationEvent::DcrClientUpdated(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::Update,
                    OperationState::Done,
                    e.request_version,
                    None,
                );
            }
            ApplicationEvent::DcrClientUpdateFailed(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::Update,
                    OperationState::Failed,
                    e.request_version,
                    Some(e),
                );
            }
            ApplicationEvent::ClientSecretRenewalRequested(_) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::RenewSecret,
                    OperationState::Pending,
                    version,
                    None,
                );
            }
            ApplicationEvent::ClientSecretRenewed(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::RenewSecret,
                    OperationState::Done,
                    e.request_version,
                    None,
                );
                if let Some(r) = app.registration.as_mut() {
                    r.client_secret_fingerprint = Some(e.client_secret_fingerprint.clone());
                    r.client_secret_expires_at = e.client_secret_expires_at;
                }
            }
            ApplicationEvent::ClientSecretRenewalFailed(e) => {
                set_operation(
                    &mut app,
                    ClientOperationKind::RenewSecret,
                    OperationState::Failed,
                    e.request_version,
                    Some(e),
                );
            }
            ApplicationEvent::DcrClientDeleted(_) => {
                if let Some(r) = app.registration.as_mut() {
                    r.client_deleted = true;
                    r.client_secret_fingerprint = None;
                    r.client_secret_expires_at = None;
                }
                app.client_id = None;
            }
            ApplicationEvent::ApplicationUpdated(e) => {
                app.name = e.name.clone();
                app.description = e.description.clone();
                app.domain = e.domain.clone();
                app.client_id = e.client_id.clone();
                app.oauth = e.oauth.clone();
            }
            ApplicationEvent::ApplicationArchived(_) => {
                app.status = ApplicationStatus::Archived;
                app.archived_version = Some(version);
                app.members.retain(|_, r| *r != Role::PrimaryOwner);
            }
            ApplicationEvent::ApplicationRestored(e) => {
                app.status = ApplicationStatus::Active;
                app.restored_version = Some(version);
                app.members.retain(|_, r| *r != Role::PrimaryOwner);
                app.members
                    .insert(e.primary_owner.clone(), Role::PrimaryOwner);
            }
            ApplicationEvent::MemberAdded(e) => {
                app.members.insert(e.user.clone(), e.role);
            }
            ApplicationEvent::MemberRoleChanged(e) => {
                app.members.insert(e.user.clone(), e.to);
            }
            ApplicationEvent::MemberRemoved(e) => {
                app.members.remove(&e.user);
                // A former member is told nothing more.
                app.notifications.remove(&e.user);
            }
            ApplicationEvent::PrimaryOwnershipTransferred(e) => {
                if let Some(former) = &e.from {
                    app.members.insert(former.clone(), e.former_owner_role);
                }
                app.members.retain(|_, r| *r != Role::PrimaryOwner);
                app.members.insert(e.to.clone(), Role::PrimaryOwner);
            }
            other => sub::evolve(&mut app, other, at),
        }
        app.updated_at = at;
        app.version = version;
        Some(app)
    }

    /// The claim this state holds: its client_id, while ACTIVE.
    pub fn client_id_claim(&self) -> Option<UniqueClaim> {
        match (&self.status, &self.client_id) {
            (ApplicationStatus::Active, Some(cid)) => Some(UniqueClaim {
                scope: format!("client_id/{}", self.environment),
                value: cid.as_str().to_string(),
            }),
            _ => None,
        }
    }
}

fn role_error() -> DomainError {
    let mut e = FieldErrors::new();
    e.add(
        "role",
        "role.primary_owner",
        "PRIMARY_OWNER is given by _transfer_ownership only; use OWNER or USER",
    );
    DomainError::Invalid(e)
}

fn set_operation(
    app: &mut Application,
    kind: ClientOperationKind,
    state: OperationState,
    request_version: i64,
    failure: Option<&ClientOperationFailed>,
) {
    if let Some(r) = app.registration.as_mut() {
        r.operation = Some(ClientOperation {
            kind,
            state,
            request_version,
            error: failure.map(|f| f.error.clone()),
            error_description: failure.and_then(|f| f.error_description.clone()),
        });
    }
}

/// The claims to take and to release when a stream moves from `before` to `after`.
pub fn claim_changes(
    before: Option<&Application>,
    after: Option<&Application>,
) -> (Vec<UniqueClaim>, Vec<UniqueClaim>) {
    let old = before.and_then(Application::client_id_claim);
    let new = after.and_then(Application::client_id_claim);
    let index = after.map(|a| a.index_claims(before)).unwrap_or_default();
    if old == new {
        return (index, vec![]);
    }
    (
        new.into_iter().chain(index).collect(),
        old.into_iter().collect(),
    )
}
