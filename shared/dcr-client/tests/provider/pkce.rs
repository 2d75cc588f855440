//! Issue 16, item 2: browser and native apps are public clients and must use PKCE with S256
//! (RFC 8252 §8.1). A provider whose discovery document lists its PKCE methods without S256 is
//! refused before anything is sent; one that lists S256 (the real oidc-provider) or lists none
//! registers them.

use appreg_test_support::recorder::{discovery_document, Recorder, Reply};
use serde_json::json;

use super::*;

/// A provider with a fixed initial access token whose discovery document lists `methods` (or
/// no `code_challenge_methods_supported` at all), and whose registration endpoint creates a
/// public client.
async fn provider(methods: Option<serde_json::Value>) -> Recorder {
    Recorder::start(move |base, req| match req.path.as_str() {
        "/.well-known/openid-configuration" => {
            let mut doc =
                discovery_document(base, &format!("{base}/token"), &format!("{base}/reg"));
            match &methods {
                Some(m) => doc["code_challenge_methods_supported"] = m.clone(),
                None => {
                    doc.as_object_mut()
                        .unwrap()
                        .remove("code_challenge_methods_supported");
                }
            }
            Reply::Json(200, doc)
        }
        "/reg" => Reply::Json(
            201,
            json!({"client_id": "public-1", "token_endpoint_auth_method": "none",
                   "grant_types": ["authorization_code"], "response_types": ["code"],
                   "redirect_uris": ["com.example.app:/cb"], "application_type": "native"}),
        ),
        _ => Reply::Json(404, json!({"error": "not_found"})),
    })
    .await
}

fn settings(idp: &Recorder) -> ProviderSettings {
    ProviderSettings {
        discovery_endpoint: idp.discovery_url(),
        initial_access_token: InitialAccessTokenMode::InitialAccessToken {
            token: SecretString::from("fixed-initial-token"),
        },
        software_id: None,
        renew_client_secret: Default::default(),
        allow_cross_origin_endpoints: false,
    }
}

fn registrations(idp: &Recorder) -> usize {
    idp.requests().iter().filter(|r| r.path == "/reg").count()
}

#[tokio::test]
async fn a_public_client_is_refused_by_a_provider_without_s256() {
    let idp = provider(Some(json!(["plain"]))).await;
    for (t, uri) in [
        (ApplicationType::Native, "com.example.app:/cb"),
        (ApplicationType::Browser, "https://spa.example/cb"),
    ] {
        let e = client()
            .register(&settings(&idp), &metadata(t, &[], &[uri]))
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported(_)), "{t:?}: {e:?}");
        assert!(e.to_string().contains("S256"), "{e}");
        assert!(e.to_string().contains("plain"), "{e}");
    }
    assert_eq!(registrations(&idp), 0, "nothing was sent");
    // A confidential client does not need PKCE from appreg's side.
    let b2b = metadata(ApplicationType::BackendToBackend, &[], &[]);
    let _ = client().register(&settings(&idp), &b2b).await;
    assert_eq!(registrations(&idp), 1);
}

#[tokio::test]
async fn a_public_client_registers_where_s256_is_listed_or_nothing_is() {
    for methods in [Some(json!(["plain", "S256"])), None] {
        let idp = provider(methods.clone()).await;
        let native = metadata(ApplicationType::Native, &[], &["com.example.app:/cb"]);
        let reg = client()
            .register(&settings(&idp), &native)
            .await
            .unwrap_or_else(|e| panic!("{methods:?}: {e}"));
        assert_eq!(reg.client_id, "public-1");
        assert!(reg.client_secret.is_none());
        assert_eq!(registrations(&idp), 1);
    }
}

/// The real provider lists S256 (and requires PKCE of public clients).
#[tokio::test]
async fn the_real_provider_lists_s256() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let doc: serde_json::Value = reqwest::get(idp.discovery_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
}
