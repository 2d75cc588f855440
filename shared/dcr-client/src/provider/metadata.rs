//! OpenID Connect Dynamic Client Registration metadata for an appreg application.

use appreg_domain::{ApplicationType, GrantType, HttpUrl, RedirectUri};
use serde::{Deserialize, Serialize};

use super::ProviderError;

/// OpenID Connect `application_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OidcApplicationType {
    Web,
    Native,
}

/// The `token_endpoint_auth_method` appreg registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenEndpointAuthMethod {
    /// Public client (browser SPA, native app; PKCE).
    None,
    ClientSecretBasic,
}

/// RFC 7591 / OpenID Connect registration metadata, exactly as sent to the provider (appreg's
/// own type names never appear in it). `response_types` is always sent, `[]` included: a
/// provider defaults a missing one to `["code"]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub application_type: OidcApplicationType,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirect_uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
}

/// The OpenID Connect response types a set of grants needs: authorization_code → `code`;
/// implicit → `id_token token` and `id_token` (a lone `token` is not an OpenID Connect response
/// type and strict providers reject it); other grants none.
pub fn response_types_for(grants: &[GrantType]) -> Vec<String> {
    let mut out = Vec::new();
    if grants.contains(&GrantType::AuthorizationCode) {
        out.push("code".to_string());
    }
    if grants.contains(&GrantType::Implicit) {
        out.push("id_token token".to_string());
        out.push("id_token".to_string());
    }
    out
}

impl ClientMetadata {
    /// The registration metadata of an OAuth application.
    ///
    /// `grant_types` empty means the type's defaults. Grants the type does not allow, missing
    /// redirect URIs for browser/web/native, redirect URIs for backend_to_backend and the
    /// `simple` type are [`ProviderError::Invalid`] (the domain already rejects them; this is a
    /// second line of defence, nothing is silently dropped). Grants are sent deduplicated in a
    /// fixed order; a `refresh_token` grant only goes with `authorization_code`.
    pub fn for_application(
        app_type: ApplicationType,
        grant_types: &[GrantType],
        redirect_uris: &[RedirectUri],
        client_name: &str,
        software_id: Option<&str>,
        client_uri: Option<&HttpUrl>,
        logo_uri: Option<&HttpUrl>,
    ) -> Result<Self, ProviderError> {
        let (application_type, auth_method) = match app_type {
            ApplicationType::Simple => {
                return Err(ProviderError::Invalid(
                    "a simple application has no OAuth client to register".into(),
                ))
            }
            ApplicationType::Browser => (OidcApplicationType::Web, TokenEndpointAuthMethod::None),
            ApplicationType::Web | ApplicationType::BackendToBackend => (
                OidcApplicationType::Web,
                TokenEndpointAuthMethod::ClientSecretBasic,
            ),
            // RFC 8252 §8.4: a native app cannot keep a secret; it is a public client and uses
            // PKCE (§8.1).
            ApplicationType::Native => (OidcApplicationType::Native, TokenEndpointAuthMethod::None),
        };
        let requested = if grant_types.is_empty() {
            app_type.default_grant_types()
        } else {
            grant_types
        };
        let allowed = app_type.allowed_grant_types();
        if let Some(bad) = requested.iter().find(|g| !allowed.contains(g)) {
            return Err(ProviderError::Invalid(format!(
                "the grant type {} is not allowed for this application type",
                bad.as_str()
            )));
        }
        if requested.contains(&GrantType::RefreshToken)
            && !requested.contains(&GrantType::AuthorizationCode)
        {
            return Err(ProviderError::Invalid(
                "the refresh_token grant needs the authorization_code grant".into(),
            ));
        }
        let grants: Vec<GrantType> = GrantType::ALL
            .into_iter()
            .filter(|g| requested.contains(g))
            .collect();

        let mut uris: Vec<String> = Vec::new();
        for u in redirect_uris {
            if !uris.iter().any(|x| x == u.as_str()) {
                uris.push(u.as_str().to_string());
            }
        }
        if app_type.requires_redirect_uris() && uris.is_empty() {
            return Err(ProviderError::Invalid(
                "this application type needs at least one redirect URI".into(),
            ));
        }
        if !app_type.requires_redirect_uris() && !uris.is_empty() {
            return Err(ProviderError::Invalid(
                "a backend_to_backend application has no redirect URIs".into(),
            ));
        }

        let non_empty = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Ok(ClientMetadata {
            application_type,
            token_endpoint_auth_method: auth_method,
            response_types: response_types_for(&grants),
            grant_types: grants.iter().map(|g| g.as_str().to_string()).collect(),
            redirect_uris: uris,
            client_name: non_empty(Some(client_name)),
            software_id: non_empty(software_id),
            client_uri: client_uri.map(|u| u.as_str().to_string()),
            logo_uri: logo_uri.map(|u| u.as_str().to_string()),
        })
    }

    /// The metadata as a JSON object.
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn uri(s: &str) -> RedirectUri {
        RedirectUri::parse(s).unwrap()
    }

    fn meta(t: ApplicationType, grants: &[GrantType], uris: &[&str]) -> serde_json::Value {
        let uris: Vec<RedirectUri> = uris.iter().map(|u| uri(u)).collect();
        serde_json::to_value(
            ClientMetadata::for_application(t, grants, &uris, "App", None, None, None).unwrap(),
        )
        .unwrap()
    }

    use GrantType::*;

    #[test]
    fn browser_is_a_public_web_client() {
        assert_eq!(
            meta(ApplicationType::Browser, &[], &["https://spa.example/cb"]),
            json!({
                "application_type": "web",
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "redirect_uris": ["https://spa.example/cb"],
                "client_name": "App",
            })
        );
        assert_eq!(
            meta(
                ApplicationType::Browser,
                &[Implicit, AuthorizationCode],
                &["https://spa.example/cb"]
            )["response_types"],
            json!(["code", "id_token token", "id_token"])
        );
    }

    #[test]
    fn web_is_a_confidential_web_client() {
        let m = meta(
            ApplicationType::Web,
            &[RefreshToken, AuthorizationCode, AuthorizationCode],
            &["https://app.example/cb", "https://app.example/cb"],
        );
        assert_eq!(m["application_type"], "web");
        assert_eq!(m["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!(
            m["grant_types"],
            json!(["authorization_code", "refresh_token"])
        );
        assert_eq!(m["response_types"], json!(["code"]));
        assert_eq!(m["redirect_uris"], json!(["https://app.example/cb"]));
        let m = meta(
            ApplicationType::Web,
            &[AuthorizationCode, Implicit],
            &["https://app.example/cb"],
        );
        assert_eq!(m["grant_types"], json!(["authorization_code", "implicit"]));
        assert_eq!(
            m["response_types"],
            json!(["code", "id_token token", "id_token"])
        );
    }

    #[test]
    fn native_is_a_public_native_client() {
        let m = meta(
            ApplicationType::Native,
            &[AuthorizationCode, Password, RefreshToken],
            &["com.example.app:/cb"],
        );
        assert_eq!(m["application_type"], "native");
        assert_eq!(m["token_endpoint_auth_method"], "none");
        assert_eq!(
            m["grant_types"],
            json!(["authorization_code", "refresh_token", "password"])
        );
        assert_eq!(m["response_types"], json!(["code"]));
    }

    #[test]
    fn backend_to_backend_has_no_response_types_nor_redirect_uris() {
        let m = meta(ApplicationType::BackendToBackend, &[], &[]);
        assert_eq!(
            m,
            json!({
                "application_type": "web",
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["client_credentials"],
                "response_types": [],
                "client_name": "App",
            })
        );
        // response_types is sent even when empty
        assert!(m.as_object().unwrap().contains_key("response_types"));
    }

    #[test]
    fn appreg_type_names_are_never_sent() {
        for t in [
            ApplicationType::Browser,
            ApplicationType::Web,
            ApplicationType::Native,
            ApplicationType::BackendToBackend,
        ] {
            let uris: &[&str] = if t.requires_redirect_uris() {
                &["com.example.app:/cb"]
            } else {
                &[]
            };
            let text = meta(t, &[], uris).to_string();
            for name in ["browser", "backend_to_backend", "simple", "\"spa\""] {
                assert!(!text.contains(name), "{text} contains {name}");
            }
        }
    }

    #[test]
    fn optional_fields() {
        let client_uri = HttpUrl::parse("https://app.example").unwrap();
        let logo = HttpUrl::parse("https://app.example/logo.png").unwrap();
        let m = ClientMetadata::for_application(
            ApplicationType::BackendToBackend,
            &[ClientCredentials],
            &[],
            "  ",
            Some("portal-template"),
            Some(&client_uri),
            Some(&logo),
        )
        .unwrap();
        let v = serde_json::to_value(&m).unwrap();
        assert!(v.get("client_name").is_none());
        assert_eq!(v["software_id"], "portal-template");
        assert_eq!(v["client_uri"], "https://app.example");
        assert_eq!(v["logo_uri"], "https://app.example/logo.png");
    }

    #[test]
    fn invalid_combinations_are_refused() {
        let cb = [uri("https://app.example/cb")];
        let bad = |t, g: &[GrantType], u: &[RedirectUri]| {
            matches!(
                ClientMetadata::for_application(t, g, u, "x", None, None, None),
                Err(ProviderError::Invalid(_))
            )
        };
        assert!(bad(ApplicationType::Simple, &[], &[]));
        assert!(bad(ApplicationType::Browser, &[RefreshToken], &cb));
        assert!(bad(ApplicationType::Browser, &[], &[]));
        assert!(bad(ApplicationType::Web, &[ClientCredentials], &cb));
        assert!(bad(ApplicationType::Web, &[RefreshToken], &cb));
        assert!(bad(ApplicationType::BackendToBackend, &[], &cb));
        assert!(bad(ApplicationType::BackendToBackend, &[Implicit], &[]));
    }
}
