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

mod decide;
mod events;
mod evolve;
mod oauth;

pub use events::*;
pub use oauth::check_oauth_settings;

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

/// A registration attempt whose outcome is unknown, not yet cleared (`DcrAttemptOutcomeUnknown`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuspectedOrphan {
    pub request_version: i64,
    pub attempt: u32,
    pub provider_id: String,
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
    /// Registration attempts whose outcome is unknown and not yet cleared: suspected orphans.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suspected_orphans: Vec<SuspectedOrphan>,
    /// The stream version of the last archive (what a restore undoes) and of the last restore.
    #[serde(default)]
    pub archived_version: Option<i64>,
    #[serde(default)]
    pub restored_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl Application {
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
