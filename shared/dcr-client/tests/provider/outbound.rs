//! Where the client sends credentials, and how it reads what comes back (issue #20, items 1
//! and 5), against loopback servers that record every request
//! (`appreg_test_support::recorder`): what the DCR saga does with a provider whose discovery
//! document points elsewhere, answers without end, or is not HTTP at all.

use appreg_dcr_client::provider::{
    ClientMetadata, ClientOptions, InitialAccessTokenMode, ProviderClient, ProviderError,
    ProviderSettings, RenewMethod, RenewSettings,
};
use appreg_domain::ApplicationType;
use appreg_test_support::recorder::{discovery_document, Recorder, Reply};
use secrecy::SecretString;
use serde_json::json;
use std::time::{Duration, Instant};

const SECRET: &str = "dcr-admin-secret-0123";
const IAT: &str = "initial-access-token-0123";

fn client_credentials(discovery: String) -> ProviderSettings {
    ProviderSettings {
        discovery_endpoint: discovery,
        initial_access_token: InitialAccessTokenMode::ClientCredentials {
            client_id: "dcr-admin".into(),
            client_secret: SecretString::from(SECRET),
            scopes: vec!["dcr".into()],
        },
        software_id: None,
        renew_client_secret: RenewSettings::default(),
        allow_cross_origin_endpoints: false,
    }
}

fn fixed_token(discovery: String) -> ProviderSettings {
    ProviderSettings {
        initial_access_token: InitialAccessTokenMode::InitialAccessToken {
            token: SecretString::from(IAT),
        },
        ..client_credentials(discovery)
    }
}

fn metadata() -> ClientMetadata {
    ClientMetadata::for_application(
        ApplicationType::BackendToBackend,
        &[],
        &[],
        "Test app",
        None,
        None,
        None,
    )
    .unwrap()
}

/// The saga's registration never sends the admin client's secret or the initial access token to
/// an endpoint off the discovery document's origin.
#[tokio::test]
async fn credentials_never_leave_the_discovery_origin() {
    let elsewhere = Recorder::idp(None, None).await;
    let tokens_elsewhere = Recorder::idp(Some(elsewhere.base()), None).await;
    let registrations_elsewhere = Recorder::idp(None, Some(elsewhere.base())).await;
    let pc = ProviderClient::new().unwrap();

    let e = pc
        .register(
            &client_credentials(tokens_elsewhere.discovery_url()),
            &metadata(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::CrossOrigin(_)), "{e:?}");
    assert!(!e.is_retryable());
    let e = pc
        .register(
            &fixed_token(registrations_elsewhere.discovery_url()),
            &metadata(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::CrossOrigin(_)), "{e:?}");
    let e = pc
        .validate(&fixed_token(registrations_elsewhere.discovery_url()))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::CrossOrigin(_)), "{e:?}");

    // A renewal endpoint on another origin is not called with the registration access token.
    let good = Recorder::idp(None, None).await;
    let mut settings = fixed_token(good.discovery_url());
    settings.renew_client_secret = RenewSettings {
        enabled: true,
        endpoint_template: format!("{}/{{client_id}}/renew", elsewhere.base()),
        method: RenewMethod::Post,
    };
    let e = pc
        .renew_secret(&settings, "c1", &SecretString::from("registration-token"))
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::CrossOrigin(_)), "{e:?}");
    assert!(
        elsewhere.requests().is_empty(),
        "{:?}",
        elsewhere.requests()
    );
}

/// An answer without end is cut at the cap (1 MiB for a discovery document or a registration,
/// 64 KiB for a token), never read whole.
#[tokio::test]
async fn endless_answers_are_cut_at_the_cap() {
    let pc = ProviderClient::new().unwrap();
    let endless = Recorder::start(|_, _| Reply::Endless).await;
    let started = Instant::now();
    let e = pc
        .validate(&fixed_token(format!(
            "{}/.well-known/openid-configuration",
            endless.base()
        )))
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(
        endless.bytes_sent() < 64 * 1024 * 1024,
        "{}",
        endless.bytes_sent()
    );

    // The registration and the token answers of a provider that otherwise behaves.
    for endless_path in ["/reg", "/token"] {
        let idp = Recorder::start(move |base, req| {
            if req.path == endless_path {
                return Reply::Endless;
            }
            match req.path.as_str() {
                "/.well-known/openid-configuration" => Reply::Json(
                    200,
                    discovery_document(base, &format!("{base}/token"), &format!("{base}/reg")),
                ),
                "/token" => Reply::Json(
                    200,
                    json!({"access_token": "t", "token_type": "Bearer", "expires_in": 300}),
                ),
                _ => Reply::Json(404, json!({})),
            }
        })
        .await;
        let started = Instant::now();
        let e = pc
            .register(&client_credentials(idp.discovery_url()), &metadata())
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{endless_path}: {e}"
        );
        assert!(
            idp.bytes_sent() < 64 * 1024 * 1024,
            "{endless_path}: {}",
            idp.bytes_sent()
        );
    }
}

/// A refused port, a port that answers something else than HTTP and an HTTP answer that is no
/// discovery document give the same error: nothing to scan ports with.
#[tokio::test]
async fn failures_look_alike() {
    let pc = ProviderClient::new().unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let not_http = Recorder::start(|_, _| Reply::Raw(b"SSH-2.0-OpenSSH_9.2\r\n".to_vec())).await;
    let closes = Recorder::start(|_, _| Reply::Raw(vec![])).await;
    let garbage = Recorder::start(|_, _| Reply::Json(200, json!("garbage"))).await;
    let status = Recorder::start(|_, _| Reply::Json(500, json!({"error": "server_error"}))).await;
    let mut texts = vec![];
    for port in [
        closed,
        not_http.port(),
        closes.port(),
        garbage.port(),
        status.port(),
    ] {
        let settings = fixed_token(format!(
            "http://127.0.0.1:{port}/.well-known/openid-configuration"
        ));
        let e = pc.validate(&settings).await.unwrap_err();
        texts.push(e.to_string());
    }
    for t in &texts[1..] {
        assert_eq!(t, &texts[0], "{texts:#?}");
    }
    assert!(!texts[0].contains("refused") && !texts[0].contains(&closed.to_string()));
}

/// With `allow_private = false`, loopback hosts (a literal IPv4 or IPv6 address, or a name that
/// resolves to one) are refused before anything is sent; by default they are called.
#[tokio::test]
async fn private_addresses_are_refused_when_configured() {
    let idp = Recorder::idp(None, None).await;
    let strict = ProviderClient::with_options(ClientOptions {
        allow_private: false,
        ..ClientOptions::default()
    })
    .unwrap();
    for host in ["127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]"] {
        let settings = fixed_token(format!(
            "http://{host}:{}/.well-known/openid-configuration",
            idp.port()
        ));
        let e = strict.validate(&settings).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::PrivateAddress(_)),
            "{host}: {e:?}"
        );
        let e = strict.register(&settings, &metadata()).await.unwrap_err();
        assert!(
            matches!(e, ProviderError::PrivateAddress(_)),
            "{host}: {e:?}"
        );
        assert!(!e.is_retryable());
    }
    assert!(idp.requests().is_empty(), "{:?}", idp.requests());
    ProviderClient::new()
        .unwrap()
        .validate(&fixed_token(idp.discovery_url()))
        .await
        .unwrap();
}

/// A client's registration access token was issued by the provider that registered it: after the
/// provider record moves to another discovery endpoint, a secret renewal through
/// `{registration_endpoint}` must not carry that token to the new server.
#[tokio::test]
async fn a_registration_token_never_follows_a_moved_provider() {
    let first = Recorder::idp(None, None).await;
    let moved_to = Recorder::idp(None, None).await;
    let pc = ProviderClient::new().unwrap();
    let renewing = |discovery: String| ProviderSettings {
        renew_client_secret: RenewSettings {
            enabled: true,
            endpoint_template: "{registration_endpoint}/{client_id}/renew".into(),
            method: RenewMethod::Post,
        },
        ..fixed_token(discovery)
    };
    let registered = pc
        .register(&renewing(first.discovery_url()), &metadata())
        .await
        .unwrap();
    let handle = registered.handle();
    // Where it was issued, the token works.
    pc.renew_secret_at(&renewing(first.discovery_url()), &handle)
        .await
        .unwrap();
    let e = pc
        .renew_secret_at(&renewing(moved_to.discovery_url()), &handle)
        .await
        .unwrap_err();
    assert!(matches!(e, ProviderError::CrossOrigin(_)), "{e:?}");
    for a in moved_to.authorizations() {
        assert!(!a.contains("recorded-registration-token"), "{a}");
    }
}
