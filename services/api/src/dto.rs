//! The JSON bodies of the HTTP contract (API.md), and their conversion into domain commands at
//! the edge: every invalid field is reported at once.

use appreg_domain::application::{check_oauth_settings, MAX_DESCRIPTION, MAX_DOMAIN};
use appreg_domain::permissions::grants;
use appreg_domain::{
    Actor, Application, ApplicationId, ApplicationName, ApplicationType, BoundedText, ClientId,
    CreateApplication, EnvironmentId, FieldErrors, GrantType, HttpUrl, Patch, Permission, Policy,
    RedirectUri, UpdateApplication,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// `POST /applications`
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApplicationRequest {
    /// 1–200 characters after trimming (surrounding whitespace is not counted), no control
    /// characters.
    #[schema(value_type = String, required = true, pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
    pub name: Option<String>,
    #[schema(max_length = 4000)]
    pub description: Option<String>,
    #[schema(max_length = 255)]
    pub domain: Option<String>,
    /// simple, browser, web, native or backend_to_backend.
    #[serde(rename = "type")]
    #[schema(value_type = crate::apidoc::ApplicationTypeName, inline, required = true)]
    pub app_type: Option<String>,
    /// Simple applications only: a self-chosen client_id, unique among active applications;
    /// no whitespace or control characters.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F]+$"
    )]
    pub client_id: Option<String>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    pub client_uri: Option<String>,
    pub logo_uri: Option<String>,
    /// The DCR provider to register with (default: the environment's default provider).
    pub provider_id: Option<String>,
}

/// `PUT /applications/{id}`: omitted fields keep their value, `null` clears a nullable one.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateApplicationRequest {
    /// Not nullable: `null` is refused, not ignored. 1–200 characters after trimming, no control
    /// characters.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = String, required = false, pattern = r"^[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F](?:[^\x00-\x1F\x7F-\x9F]*[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F])?[\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]*$")]
    pub name: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 4000)]
    pub description: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, max_length = 255)]
    pub domain: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 255, pattern = r"^[^\t\n\x0B\x0C\r \x85\xA0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\x00-\x1F\x7F-\x9F]+$")]
    pub client_id: Option<Option<String>>,
    pub redirect_uris: Option<Vec<String>>,
    pub grant_types: Option<Vec<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub client_uri: Option<Option<String>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    pub logo_uri: Option<Option<String>>,
}

/// Distinguishes an absent field (`None`) from `null` (`Some(None)`).
fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

fn parse_list<T>(
    errors: &mut FieldErrors,
    field: &str,
    items: &[String],
    parse: impl Fn(&str) -> Result<T, (&'static str, String)>,
) -> Option<Vec<T>> {
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    if items.len() > 100 {
        errors.add(field, "list.too_long", "at most 100 items");
        return None;
    }
    for (i, item) in items.iter().enumerate() {
        match parse(item) {
            Ok(v) => out.push(v),
            Err((code, message)) => {
                ok = false;
                errors.add(format!("{field}[{i}]"), code, message);
            }
        }
    }
    ok.then_some(out)
}

/// Whether `value` has more than `max` characters as sent, reported on `field` with the code the
/// domain gives the field. The domain counts a trimmed value; the document's `maxLength` counts
/// what is sent, and the edge holds to it, so that a value the document refuses is refused.
pub(crate) fn too_long(
    errors: &mut FieldErrors,
    field: &str,
    code: &'static str,
    value: &str,
    max: usize,
) -> bool {
    let long = value.chars().count() > max;
    if long {
        errors.add(field, code, format!("{field} has at most {max} characters"));
    }
    long
}

fn text(errors: &mut FieldErrors, field: &str, value: &str, max: usize) -> Option<BoundedText> {
    errors.take(field, BoundedText::parse(value, max))
}

impl CreateApplicationRequest {
    /// Parses the body into a command; every problem is collected.
    pub fn into_command(
        self,
        id: ApplicationId,
        environment: EnvironmentId,
        owner: &Actor,
        policy: &Policy,
    ) -> Result<CreateApplication, FieldErrors> {
        let mut e = FieldErrors::new();
        let name = match &self.name {
            None => {
                e.add("name", "name.required", "the name is required");
                None
            }
            Some(n) => e.take("name", ApplicationName::parse(n)),
        };
        let app_type = match &self.app_type {
            None => {
                e.add("type", "type.required", "the type is required");
                None
            }
            Some(t) => e.take("type", ApplicationType::parse(t)),
        };
        let description = self
            .description
            .as_deref()
            .and_then(|d| text(&mut e, "description", d, MAX_DESCRIPTION));
        let domain = self
            .domain
            .as_deref()
            .and_then(|d| text(&mut e, "domain", d, MAX_DOMAIN));
        let client_id = self
            .client_id
            .as_deref()
            .and_then(|c| e.take("client_id", ClientId::parse(c)));
        let redirect_uris = parse_list(
            &mut e,
            "redirect_uris",
            self.redirect_uris.as_deref().unwrap_or(&[]),
            RedirectUri::parse,
        );
        let grant_types = parse_list(
            &mut e,
            "grant_types",
            self.grant_types.as_deref().unwrap_or(&[]),
            GrantType::parse,
        );
        let client_uri = self
            .client_uri
            .as_deref()
            .and_then(|u| e.take("client_uri", HttpUrl::parse(u)));
        let logo_uri = self
            .logo_uri
            .as_deref()
            .and_then(|u| e.take("logo_uri", HttpUrl::parse(u)));
        // The type-dependent rules, for what parsed, so one answer lists every problem.
        if let (Some(t), Some(uris), Some(grants)) = (app_type, &redirect_uris, &grant_types) {
            if !e.is_empty() {
                check_oauth_settings(
                    t,
                    uris,
                    grants,
                    client_uri.as_ref(),
                    logo_uri.as_ref(),
                    policy,
                    &mut e,
                );
                if let Err((code, message)) = policy.settings.can_create(t) {
                    e.add("type", code, message);
                }
            }
        }
        match (name, app_type, redirect_uris, grant_types) {
            (Some(name), Some(app_type), Some(redirect_uris), Some(grant_types))
                if e.is_empty() =>
            {
                Ok(CreateApplication {
                    id,
                    environment,
                    name,
                    description,
                    domain,
                    app_type,
                    client_id,
                    redirect_uris,
                    grant_types,
                    client_uri,
                    logo_uri,
                    provider_id: self.provider_id,
                    owner: owner.user.clone(),
                })
            }
            _ => Err(e),
        }
    }
}

fn patch<T>(
    e: &mut FieldErrors,
    field: &str,
    value: Option<Option<String>>,
    parse: impl Fn(&str) -> Result<T, (&'static str, String)>,
) -> Patch<T> {
    match value {
        None => Patch::Keep,
        Some(None) => Patch::Clear,
        Some(Some(v)) => e
            .take(field, parse(&v))
            .map(Patch::Set)
            .unwrap_or(Patch::Keep),
    }
}

impl UpdateApplicationRequest {
    pub fn into_command(self) -> Result<UpdateApplication, FieldErrors> {
        let mut e = FieldErrors::new();
        let name = match self.name {
            None => None,
            Some(None) => {
                e.add("name", "name.required", "the name cannot be removed");
                None
            }
            Some(Some(n)) => e.take("name", ApplicationName::parse(&n)),
        };
        let description = patch(&mut e, "description", self.description, |s| {
            BoundedText::parse(s, MAX_DESCRIPTION)
        });
        let domain = patch(&mut e, "domain", self.domain, |s| {
            BoundedText::parse(s, MAX_DOMAIN)
        });
        let client_id = patch(&mut e, "client_id", self.client_id, ClientId::parse);
        let redirect_uris = self
            .redirect_uris
            .map(|u| parse_list(&mut e, "redirect_uris", &u, RedirectUri::parse));
        let grant_types = self
            .grant_types
            .map(|g| parse_list(&mut e, "grant_types", &g, GrantType::parse));
        let client_uri = patch(&mut e, "client_uri", self.client_uri, HttpUrl::parse);
        let logo_uri = patch(&mut e, "logo_uri", self.logo_uri, HttpUrl::parse);
        if !e.is_empty() {
            return Err(e);
        }
        Ok(UpdateApplication {
            name,
            description,
            domain,
            client_id,
            redirect_uris: redirect_uris.flatten(),
            grant_types: grant_types.flatten(),
            client_uri,
            logo_uri,
        })
    }
}

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

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationPage {
    pub items: Vec<ApplicationView>,
    pub page: i64,
    pub size: i64,
    pub total: i64,
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

/// `GET /applications/{id}/credentials`.
#[derive(Serialize, ToSchema)]
pub struct CredentialsView {
    pub client_id: Option<String>,
    /// Absent for public clients (browser applications).
    pub client_secret: Option<String>,
    pub client_secret_expires_at: Option<DateTime<Utc>>,
}

/// A page of an application's history, oldest first: the events after `after_version` the
/// caller may read.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryPage {
    /// The page's events the caller's role may read (fewer than `limit` when some were not).
    pub items: Vec<HistoryEntry>,
    /// The last version this page examined: pass it as `after_version` for the next page. Null
    /// when nothing follows. Always present.
    #[schema(required = true)]
    pub next_after_version: Option<i64>,
}

/// `GET/PUT /settings/client-registration`
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllowedTypesDoc {
    pub simple: bool,
    pub browser: bool,
    pub web: bool,
    pub native: bool,
    pub backend_to_backend: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientRegistrationSettingsDoc {
    pub allowed_types: AllowedTypesDoc,
    pub dcr_enabled: bool,
}

impl From<appreg_domain::ClientRegistrationSettings> for ClientRegistrationSettingsDoc {
    fn from(s: appreg_domain::ClientRegistrationSettings) -> Self {
        let a = s.allowed_types;
        ClientRegistrationSettingsDoc {
            allowed_types: AllowedTypesDoc {
                simple: a.simple,
                browser: a.browser,
                web: a.web,
                native: a.native,
                backend_to_backend: a.backend_to_backend,
            },
            dcr_enabled: s.dcr_enabled,
        }
    }
}

impl From<ClientRegistrationSettingsDoc> for appreg_domain::ClientRegistrationSettings {
    fn from(d: ClientRegistrationSettingsDoc) -> Self {
        let a = d.allowed_types;
        appreg_domain::ClientRegistrationSettings {
            allowed_types: appreg_domain::AllowedTypes {
                simple: a.simple,
                browser: a.browser,
                web: a.web,
                native: a.native,
                backend_to_backend: a.backend_to_backend,
            },
            dcr_enabled: d.dcr_enabled,
        }
    }
}

/// `GET /application-types`: one enabled type.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationTypeView {
    #[serde(rename = "type")]
    pub app_type: String,
    pub allowed_grant_types: Vec<String>,
    pub default_grant_types: Vec<String>,
    pub mandatory_grant_types: Vec<String>,
    pub requires_redirect_uris: bool,
}

impl ApplicationTypeView {
    pub fn new(t: ApplicationType) -> Self {
        let names = |g: &[GrantType]| g.iter().map(|g| g.as_str().to_string()).collect();
        ApplicationTypeView {
            app_type: t.as_str().to_string(),
            allowed_grant_types: names(t.allowed_grant_types()),
            default_grant_types: names(t.default_grant_types()),
            mandatory_grant_types: names(t.mandatory_grant_types()),
            requires_redirect_uris: t.requires_redirect_uris(),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApplicationTypeList {
    pub items: Vec<ApplicationTypeView>,
}
