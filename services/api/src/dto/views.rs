//! The response bodies several resources share: an application as a caller sees it (with its
//! registration, its operations and its owner) and one event of its history.

use super::*;

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistrationView {
    /// REGISTERING, REGISTERED or REGISTRATION_FAILED.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// The provider that issued the client.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_id: Option<String>,
    /// Fingerprint (`sha256:…`) of the current client secret; the secret is at `/credentials`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_fingerprint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret_expires_at: Option<DateTime<Utc>>,
    /// The last operation on the client at the provider (an update or a secret renewal) and
    /// its outcome; a failure stays visible (Gravitee swallows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<OperationView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OperationView {
    /// UPDATE or RENEW_SECRET.
    pub kind: String,
    /// PENDING, DONE or FAILED.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
}

fn upper<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OwnerView {
    pub id: String,
    pub name: Option<String>,
}

/// An application as a caller sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationView {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub domain: Option<String>,
    #[serde(rename = "type")]
    pub app_type: String,
    /// ACTIVE or ARCHIVED.
    pub status: String,
    pub client_id: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    pub provider_id: Option<String>,
    pub registration: Option<RegistrationView>,
    /// The primary owner (none while archived).
    pub owner: Option<OwnerView>,
    /// The caller's role, if a member.
    pub role: Option<String>,
    /// What the caller may do, per permission: a subset of "CRUD".
    pub permissions: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl ApplicationView {
    pub fn new(app: &Application, caller: &Actor) -> ApplicationView {
        let role = app.role_of(&caller.user);
        let permissions = Permission::ALL
            .iter()
            .map(|p| {
                let g = if caller.admin {
                    "CRUD"
                } else {
                    role.map(|r| grants(r, *p)).unwrap_or("")
                };
                (p.as_str().to_string(), g.to_string())
            })
            .collect();
        let oauth = app.oauth.as_ref();
        ApplicationView {
            id: app.id.0,
            name: app.name.as_str().to_string(),
            description: app.description.as_ref().map(|d| d.as_str().to_string()),
            domain: app.domain.as_ref().map(|d| d.as_str().to_string()),
            app_type: app.app_type.as_str().to_string(),
            status: serde_json::to_value(app.status)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            client_id: app.client_id.as_ref().map(|c| c.as_str().to_string()),
            redirect_uris: oauth
                .map(|o| {
                    o.redirect_uris
                        .iter()
                        .map(|u| u.as_str().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            grant_types: oauth
                .map(|o| {
                    o.grant_types
                        .iter()
                        .map(|g| g.as_str().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            response_types: oauth
                .map(|o| {
                    o.response_types
                        .iter()
                        .map(|r| r.as_str().to_string())
                        .collect()
                })
                .unwrap_or_default(),
            client_uri: oauth
                .and_then(|o| o.client_uri.as_ref())
                .map(|u| u.as_str().to_string()),
            logo_uri: oauth
                .and_then(|o| o.logo_uri.as_ref())
                .map(|u| u.as_str().to_string()),
            provider_id: app.provider_id.clone(),
            registration: app.registration.as_ref().map(|r| RegistrationView {
                state: serde_json::to_value(r.state)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                error: r.error.clone(),
                error_description: r.error_description.clone(),
                provider_id: r.provider_id.clone(),
                client_secret_fingerprint: r.client_secret_fingerprint.clone(),
                client_secret_expires_at: r.client_secret_expires_at,
                operation: r.operation.as_ref().map(|o| OperationView {
                    kind: upper(&o.kind),
                    state: upper(&o.state),
                    error: o.error.clone(),
                    error_description: o.error_description.clone(),
                }),
            }),
            owner: app.primary_owner().map(|u| OwnerView {
                id: u.as_str().to_string(),
                name: None,
            }),
            role: role.map(|r| r.as_str().to_string()),
            permissions,
            created_at: app.created_at,
            updated_at: app.updated_at,
            version: app.version,
        }
    }
}

/// One event of an application's history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub version: i64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    #[schema(value_type = Object)]
    pub data: serde_json::Value,
}

impl HistoryEntry {
    pub fn from_event(e: &appreg_eventstore::StoredEvent) -> HistoryEntry {
        let meta = |k: &str| {
            e.metadata
                .get(k)
                .and_then(|v| v.as_str())
                .map(str::to_string)
        };
        HistoryEntry {
            version: e.version,
            event_type: e.event_type.clone(),
            at: e.recorded_at,
            actor: meta("actor"),
            correlation_id: meta("correlation_id"),
            causation_id: meta("causation_id"),
            data: current_data(e),
        }
    }
}

/// An application event's payload in its current schema version (older stored versions are
/// upcast, as every reader of the log does); other payloads as stored.
fn current_data(e: &appreg_eventstore::StoredEvent) -> serde_json::Value {
    use appreg_domain::DomainEvent;
    if e.stream_type != appreg_readmodel::APPLICATION_STREAM {
        return e.data.clone();
    }
    match appreg_readmodel::decode_app(e) {
        Ok(event) => event.data(),
        Err(_) => e.data.clone(),
    }
}
