//! The request bodies of the application endpoints and their conversion into domain commands
//! (every invalid field reported at once).

use appreg_domain::application::{check_oauth_settings, MAX_DESCRIPTION, MAX_DOMAIN};
use appreg_domain::{
    Actor, ApplicationId, ApplicationName, ApplicationType, BoundedText, ClientId,
    CreateApplication, EnvironmentId, FieldErrors, GrantType, HttpUrl, Patch, Policy, RedirectUri,
    UpdateApplication,
};
use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

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
