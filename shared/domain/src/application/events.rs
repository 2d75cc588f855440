//! The Application aggregate's events, their wire names and their upcasting.

use super::*;

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

/// A registration attempt of the request at `request_version` whose outcome is unknown: it was
/// (or may have been) sent and its answer was lost (a 5xx, a timeout or a reset after sending).
/// The provider may have created a client nobody knows of: a suspected orphan, open until a
/// [`DcrAttemptSuspicionsCleared`] proves otherwise. No secret: the key is the request event's id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrAttemptOutcomeUnknown {
    pub request_version: i64,
    pub provider_id: String,
    /// The `Idempotency-Key` the attempt sent (the same for every attempt of a request).
    pub idempotency_key: String,
    /// 1 for the request's first call of the provider, one more per retry.
    pub attempt: u32,
    /// The `client_name` the attempt sent: what to look for at the provider.
    pub client_name: ApplicationName,
    /// When the attempt was sent and when it ended without an answer: a client the provider
    /// created for it was created in this window.
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// What went wrong, short (no secret).
    pub error: String,
}

/// The open suspicions of the request at `request_version` are cleared: the provider was proven
/// to have created no client for them but `client_id`, the one the application holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrAttemptSuspicionsCleared {
    pub request_version: i64,
    pub provider_id: String,
    /// The attempts whose suspicion is cleared.
    pub attempts: Vec<u32>,
    /// The one client they created.
    pub client_id: ClientId,
    pub proof: SuspicionProof,
}

/// How suspected orphans were cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SuspicionProof {
    /// The registration sent once more with the same `Idempotency-Key` was answered with the
    /// client_id obtained: the provider honours the key, so every attempt of the request created
    /// that very client.
    IdempotentReplay,
}

/// OAuth settings changed: the registered client is to be updated at the provider (RFC 7592).
///
/// Schema version 2 adds `token_endpoint_auth_method` to what `changed` may name: a native
/// application registered before appreg made native apps public clients (RFC 8252) is moved to
/// `token_endpoint_auth_method: none` by an update. The shape is v1's; v1 payloads decode as is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrClientUpdateRequested {
    pub changed: Vec<String>,
}

/// What `changed` names when a confidential client becomes a public one.
pub const CHANGED_AUTH_METHOD: &str = "token_endpoint_auth_method";

/// The current schema version of `DcrClientUpdateRequested` payloads.
pub const DCR_CLIENT_UPDATE_REQUESTED_VERSION: i32 = 2;

/// The provider accepted the update requested at `request_version`.
///
/// Schema version 2 adds `client_secret_removed`: the provider now holds the client as a public
/// one, and its secret was deleted from the vault (the application has no client secret any
/// more). Stored v1 payloads are upcast on read to `client_secret_removed: false`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DcrClientUpdated {
    pub request_version: i64,
    pub client_secret_removed: bool,
}

/// The current schema version of `DcrClientUpdated` payloads.
pub const DCR_CLIENT_UPDATED_VERSION: i32 = 2;

/// Upcasts a `DcrClientUpdated` v1 payload to v2 (pure; never rewrites the store).
fn upcast_dcr_client_updated_v1(mut data: serde_json::Value) -> serde_json::Value {
    if let serde_json::Value::Object(map) = &mut data {
        map.entry("client_secret_removed")
            .or_insert(serde_json::json!(false));
    }
    data
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
    DcrAttemptOutcomeUnknown(DcrAttemptOutcomeUnknown),
    DcrAttemptSuspicionsCleared(DcrAttemptSuspicionsCleared),
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

pub(crate) const EVENT_TYPES: &[&str] = &[
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
    "DcrAttemptOutcomeUnknown",
    "DcrAttemptSuspicionsCleared",
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
            ApplicationEvent::DcrAttemptOutcomeUnknown(_) => "DcrAttemptOutcomeUnknown",
            ApplicationEvent::DcrAttemptSuspicionsCleared(_) => "DcrAttemptSuspicionsCleared",
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
            ApplicationEvent::DcrClientUpdateRequested(_) => DCR_CLIENT_UPDATE_REQUESTED_VERSION,
            ApplicationEvent::DcrClientUpdated(_) => DCR_CLIENT_UPDATED_VERSION,
            ApplicationEvent::NotificationSettingsUpdated(_) => {
                sub::NOTIFICATION_SETTINGS_UPDATED_VERSION
            }
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
            ("DcrClientUpdateRequested", 1 | DCR_CLIENT_UPDATE_REQUESTED_VERSION) => {
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("DcrClientUpdated", 1) => {
                let data = upcast_dcr_client_updated_v1(data);
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("DcrClientUpdated", DCR_CLIENT_UPDATED_VERSION) => {
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("DcrClientUpdateRequested" | "DcrClientUpdated", other) => Err(
                DecodeError::UnsupportedVersion(event_type.to_string(), other),
            ),
            ("NotificationSettingsUpdated", 1) => {
                let data = crate::personal::upcast_plain_fields(data, &["email"]);
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("NotificationSettingsUpdated", sub::NOTIFICATION_SETTINGS_UPDATED_VERSION) => {
                decode_tagged(event_type, 1, EVENT_TYPES, data)
            }
            ("NotificationSettingsUpdated", other) => Err(DecodeError::UnsupportedVersion(
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
            ("DcrClientUpdateRequested", DCR_CLIENT_UPDATE_REQUESTED_VERSION) => true,
            ("DcrClientUpdated", DCR_CLIENT_UPDATED_VERSION) => true,
            ("DcrClientUpdateRequested" | "DcrClientUpdated", _) => false,
            ("NotificationSettingsUpdated", version) => {
                version == sub::NOTIFICATION_SETTINGS_UPDATED_VERSION
            }
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
