//! The provider client builds and reads its OpenID Connect messages with the `openidconnect`
//! crate (issue 16, item 3). These tests name where the crate and appreg's providers meet: what
//! the real provider answers is what the crate reads; where the crate refuses an answer appreg
//! must accept, our own parser reads it; and what the crate's HTTP client (ours) adds to the
//! requests: the `Idempotency-Key`, the tokens, the retry after a 401.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use appreg_dcr_client::provider::RenewSettings;
use appreg_test_support::recorder::{discovery_document, Recorder, Reply};
use openidconnect::core::CoreClientRegistrationResponse;
use serde_json::{json, Value};

use super::*;

fn fixed(discovery: String) -> ProviderSettings {
    ProviderSettings {
        discovery_endpoint: discovery,
        initial_access_token: InitialAccessTokenMode::InitialAccessToken {
            token: SecretString::from("fixed-initial-token"),
        },
        software_id: Some("tpl-1".into()),
        renew_client_secret: RenewSettings::default(),
        allow_cross_origin_endpoints: false,
    }
}

fn admin(discovery: String) -> ProviderSettings {
    ProviderSettings {
        initial_access_token: InitialAccessTokenMode::ClientCredentials {
            client_id: "dcr-admin".into(),
            client_secret: SecretString::from("dcr-admin-secret-0123"),
            scopes: vec!["dcr".into()],
        },
        ..fixed(discovery)
    }
}

/// A provider whose registration endpoint answers `reg(n)` to its n-th request (from 1), and
/// whose token endpoint issues `token-<n>`.
async fn provider(reg: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Recorder {
    let regs = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(AtomicUsize::new(0));
    Recorder::start(move |base, req| match req.path.as_str() {
        "/.well-known/openid-configuration" => Reply::Json(
            200,
            discovery_document(base, &format!("{base}/token"), &format!("{base}/reg")),
        ),
        "/token" => {
            let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
            Reply::Json(
                200,
                json!({"access_token": format!("token-{n}"), "token_type": "Bearer", "expires_in": 300}),
            )
        }
        "/reg" => reg(regs.fetch_add(1, Ordering::SeqCst) + 1),
        _ => Reply::Json(404, json!({"error": "not_found"})),
    })
    .await
}

fn b2b() -> ClientMetadata {
    metadata(ApplicationType::BackendToBackend, &[], &[])
}

/// What the real provider answers to each type's registration is read by the crate's types (so
/// appreg's own parser is not what reads it): `response_types: []` and all.
#[tokio::test]
async fn the_crate_reads_every_registration_of_the_real_provider() {
    let idp = OidcProvider::start(Mode::fixed_token());
    for case in &CASES {
        let meta = metadata(case.app_type, case.grants, case.redirect_uris);
        let reg = client().register(&idp.settings(), &meta).await.unwrap();
        let mut answer = reg.metadata.clone();
        if let Some(s) = &reg.client_secret {
            answer.insert("client_secret".into(), s.expose_secret().into());
        }
        let typed: CoreClientRegistrationResponse = serde_json::from_value(Value::Object(answer))
            .unwrap_or_else(|e| {
                panic!(
                    "{:?}: the crate cannot read {:?}: {e}",
                    case.app_type, reg.metadata
                )
            });
        assert_eq!(typed.client_id().as_str(), reg.client_id);
        assert_eq!(
            reg.metadata["response_types"],
            json!(meta.response_types),
            "{:?}",
            case.app_type
        );
    }
}

/// RFC 7591 §3.2.1 says 201; some providers answer 200. The crate refuses it, our parser reads
/// it: the client exists at the provider and must not be lost.
#[tokio::test]
async fn a_registration_answered_200_is_read_by_our_parser() {
    let idp = provider(|_| {
        Reply::Json(
            200,
            json!({"client_id": "c-200", "client_secret": "secret-200", "redirect_uris": [], "client_secret_expires_at": 0}),
        )
    })
    .await;
    let reg = client()
        .register(&fixed(idp.discovery_url()), &b2b())
        .await
        .unwrap();
    assert_eq!(reg.client_id, "c-200");
    assert_eq!(secret(&reg), "secret-200");
    assert_eq!(reg.client_secret_expires_at, Some(0));
}

/// A 201 the crate's types cannot read (here: no `redirect_uris`, which the crate requires, and
/// an expiry it cannot parse) is still the client the provider created: our parser reads it.
#[tokio::test]
async fn a_registration_answer_the_crate_refuses_still_yields_the_client() {
    let answer = json!({
        "client_id": "c-odd", "client_secret": "secret-odd",
        "client_secret_expires_at": "never", "grant_types": ["client_credentials"],
    });
    assert!(serde_json::from_value::<CoreClientRegistrationResponse>(answer.clone()).is_err());
    let idp = provider(move |_| Reply::Json(201, answer.clone())).await;
    let reg = client()
        .register(&fixed(idp.discovery_url()), &b2b())
        .await
        .unwrap();
    assert_eq!(reg.client_id, "c-odd");
    assert_eq!(secret(&reg), "secret-odd");
    assert_eq!(reg.client_secret_expires_at, None);
    assert_eq!(reg.metadata["client_secret_expires_at"], "never");
}

/// The crate's request goes out through our client: with the `Idempotency-Key`, the initial
/// access token as bearer, the metadata as JSON (`response_types: []`, `software_id`); the
/// token request is a `client_credentials` grant with `client_secret_basic`.
#[tokio::test]
async fn the_registration_request_carries_the_key_and_the_token() {
    let idp = provider(|n| {
        Reply::Json(
            201,
            json!({"client_id": format!("c-{n}"), "redirect_uris": [], "client_secret": "s"}),
        )
    })
    .await;
    let reg = client()
        .register_idempotent(
            &admin(idp.discovery_url()),
            &b2b(),
            Some("request-0123456789"),
        )
        .await
        .unwrap();
    assert_eq!(reg.client_id, "c-1");
    let requests = idp.requests();
    let token = requests.iter().find(|r| r.path == "/token").unwrap();
    assert_eq!(token.method, "POST");
    let form = String::from_utf8_lossy(&token.body).to_string();
    assert!(form.contains("grant_type=client_credentials"), "{form}");
    assert!(form.contains("scope=dcr"), "{form}");
    assert!(!form.contains("dcr-admin-secret"), "{form}");
    let reg_req = requests.iter().find(|r| r.path == "/reg").unwrap();
    assert_eq!(
        reg_req.header("idempotency-key"),
        Some("request-0123456789")
    );
    assert_eq!(reg_req.header("authorization"), Some("Bearer token-1"));
    assert!(reg_req
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let body: Value = serde_json::from_slice(&reg_req.body).unwrap();
    assert_eq!(body["response_types"], json!([]));
    assert_eq!(body["grant_types"], json!(["client_credentials"]));
    assert_eq!(body["token_endpoint_auth_method"], "client_secret_basic");
    assert_eq!(body["software_id"], "tpl-1");
    assert!(idp
        .authorizations()
        .contains(&"dcr-admin:dcr-admin-secret-0123".to_string()));
    // Without a key, no header.
    client()
        .register(&fixed(idp.discovery_url()), &b2b())
        .await
        .unwrap();
    let last = idp
        .requests()
        .into_iter()
        .rfind(|r| r.path == "/reg")
        .unwrap();
    assert_eq!(last.header("idempotency-key"), None);
}

/// In client-credentials mode a 401 from the registration endpoint (the token expired or was
/// revoked early) is retried once, with a fresh token; a fixed token is not retried.
#[tokio::test]
async fn a_401_is_retried_once_with_a_fresh_token() {
    let reject_first = |n: usize| {
        if n == 1 {
            Reply::Json(401, json!({"error": "invalid_token"}))
        } else {
            Reply::Json(
                201,
                json!({"client_id": format!("c-{n}"), "redirect_uris": []}),
            )
        }
    };
    let idp = provider(reject_first).await;
    let reg = client()
        .register(&admin(idp.discovery_url()), &b2b())
        .await
        .unwrap();
    assert_eq!(reg.client_id, "c-2");
    let bearers: Vec<_> = idp
        .requests()
        .iter()
        .filter(|r| r.path == "/reg")
        .filter_map(|r| r.header("authorization").map(str::to_string))
        .collect();
    assert_eq!(bearers, ["Bearer token-1", "Bearer token-2"]);

    let idp = provider(|_| Reply::Json(401, json!({"error": "invalid_token"}))).await;
    let e = client()
        .register(&fixed(idp.discovery_url()), &b2b())
        .await
        .unwrap_err();
    assert_eq!(rejected(&e), (401, "invalid_token"));
    assert_eq!(
        idp.requests().iter().filter(|r| r.path == "/reg").count(),
        1
    );
    // Client credentials: one retry, not more.
    let e = client()
        .register(&admin(idp.discovery_url()), &b2b())
        .await
        .unwrap_err();
    assert_eq!(rejected(&e), (401, "invalid_token"));
    assert_eq!(
        idp.requests().iter().filter(|r| r.path == "/reg").count(),
        3
    );
}

/// `oauth2` form-encodes the admin client's id and secret in the Basic header (RFC 6749 §2.3.1,
/// a space as `+`); the real provider decodes them back, reserved characters and all.
#[tokio::test]
async fn admin_credentials_with_reserved_characters_obtain_a_token() {
    let idp = OidcProvider::start(Mode::ClientCredentials {
        admin_client_id: "dcr admin:1+%".into(),
        admin_client_secret: "s3cret +&%:/= value".into(),
    });
    let pc = client();
    pc.validate(&idp.settings()).await.unwrap();
    let reg = pc.register(&idp.settings(), &b2b()).await.unwrap();
    assert!(idp.clients().await.contains(&reg.client_id));
}

/// A discovery document that is not a complete OpenID Connect document (here: an OAuth 2.0
/// authorization server's, without `jwks_uri`, `subject_types_supported`, …) or whose issuer is
/// not the discovery endpoint's is refused: the crate's provider metadata decides.
#[tokio::test]
async fn discovery_needs_a_complete_document_of_its_issuer() {
    let partial = Recorder::start(|base, _| {
        Reply::Json(
            200,
            json!({"issuer": base, "token_endpoint": format!("{base}/token"), "registration_endpoint": format!("{base}/reg")}),
        )
    })
    .await;
    let e = client()
        .discover(&fixed(partial.discovery_url()))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
    let mixed_up = Recorder::start(|_, _| {
        Reply::Json(
            200,
            discovery_document(
                "https://other.example",
                "https://other.example/token",
                "https://other.example/reg",
            ),
        )
    })
    .await;
    let e = client()
        .discover(&fixed(mixed_up.discovery_url()))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("issuer"), "{e}");
}
