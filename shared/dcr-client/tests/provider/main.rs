//! The provider client against a real OpenID Connect provider (npm `oidc-provider`, started
//! per test by `appreg_test_support::oidc`), in both initial-access-token modes.

mod crate_gaps;
mod outbound;
mod pkce;

use appreg_dcr_client::provider::{
    ClientMetadata, InitialAccessTokenMode, ProviderClient, ProviderError, ProviderSettings,
    RegisteredClient, RegistrationHandle,
};
use appreg_domain::{ApplicationType, GrantType, RedirectUri};
use appreg_test_support::oidc::{Fault, Mode, OidcProvider};
use secrecy::{ExposeSecret, SecretString};

fn client() -> ProviderClient {
    ProviderClient::new().unwrap()
}

fn uris(list: &[&str]) -> Vec<RedirectUri> {
    list.iter()
        .map(|u| RedirectUri::parse(u).unwrap())
        .collect()
}

fn metadata(t: ApplicationType, grants: &[GrantType], redirect: &[&str]) -> ClientMetadata {
    ClientMetadata::for_application(t, grants, &uris(redirect), "Test app", None, None, None)
        .unwrap()
}

fn secret(c: &RegisteredClient) -> String {
    c.client_secret
        .as_ref()
        .expect("a confidential client has a secret")
        .expose_secret()
        .to_string()
}

fn rejected(e: &ProviderError) -> (u16, &str) {
    match e {
        ProviderError::Rejected { status, error, .. } => (*status, error.as_str()),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

struct Case {
    app_type: ApplicationType,
    grants: &'static [GrantType],
    redirect_uris: &'static [&'static str],
}

const CASES: [Case; 4] = [
    Case {
        app_type: ApplicationType::Browser,
        grants: &[GrantType::AuthorizationCode],
        redirect_uris: &["https://spa.example/cb"],
    },
    Case {
        app_type: ApplicationType::Web,
        grants: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: &["https://web.example/cb", "https://web.example/cb2"],
    },
    Case {
        app_type: ApplicationType::Native,
        grants: &[GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: &["com.example.app:/cb", "http://127.0.0.1/cb"],
    },
    Case {
        app_type: ApplicationType::BackendToBackend,
        grants: &[GrantType::ClientCredentials],
        redirect_uris: &[],
    },
];

/// Every OAuth type registers; the provider holds the right metadata; the credentials work.
async fn every_type_registers(mode: Mode) {
    let idp = OidcProvider::start(mode);
    let settings = idp.settings();
    let pc = client();
    for case in &CASES {
        let meta = metadata(case.app_type, case.grants, case.redirect_uris);
        let reg = pc
            .register(&settings, &meta)
            .await
            .unwrap_or_else(|e| panic!("{:?}: {e}", case.app_type));
        let what = format!("{:?}", case.app_type);
        assert!(idp.clients().await.contains(&reg.client_id), "{what}");

        // What the provider holds, read back with RFC 7592 GET.
        let read = pc.read(&settings, &reg.handle()).await.unwrap();
        let grants: Vec<String> = case.grants.iter().map(|g| g.as_str().to_string()).collect();
        assert_eq!(read.strings("grant_types"), grants, "{what}");
        assert_eq!(reg.strings("grant_types"), grants, "{what}");
        assert_eq!(read.strings("redirect_uris"), case.redirect_uris, "{what}");
        assert_eq!(read.metadata["client_name"], "Test app", "{what}");
        let expected_app_type = if case.app_type == ApplicationType::Native {
            "native"
        } else {
            "web"
        };
        assert_eq!(read.metadata["application_type"], expected_app_type);
        assert!(!read.metadata.contains_key("client_secret"));
        assert!(reg.registration_access_token.is_some(), "{what}");
        assert_eq!(
            reg.registration_client_uri.as_deref(),
            Some(format!("{}/reg/{}", idp.issuer(), reg.client_id).as_str())
        );
        // No secret in Debug.
        if let Some(s) = &reg.client_secret {
            assert!(!format!("{reg:?}").contains(s.expose_secret()));
        }

        match case.app_type {
            ApplicationType::Browser | ApplicationType::Native => {
                // A SPA and a native app (RFC 8252 §8.4) are public clients: no secret, and
                // the provider requires PKCE of them (oidc-provider: S256, required for public
                // clients).
                assert!(reg.client_secret.is_none(), "{what} is a public client");
                assert_eq!(
                    read.metadata["token_endpoint_auth_method"], "none",
                    "{what}"
                );
                assert_eq!(read.strings("response_types"), ["code"]);
            }
            ApplicationType::BackendToBackend => {
                assert_eq!(read.strings("response_types"), Vec::<String>::new());
                let token = idp.token(&reg.client_id, &secret(&reg), None).await;
                assert!(token.is_ok(), "{what}: {token:?}");
                let bad = idp.token(&reg.client_id, "wrong", None).await.unwrap_err();
                assert_eq!(rejected(&bad), (401, "invalid_client"), "{what}");
            }
            _ => {
                assert_eq!(
                    read.metadata["token_endpoint_auth_method"],
                    "client_secret_basic"
                );
                assert_eq!(read.strings("response_types"), ["code"]);
                // The secret authenticates: the grant, not the client, is refused
                // (oidc-provider answers `invalid_request`, others `unauthorized_client`).
                let e = idp
                    .token(&reg.client_id, &secret(&reg), None)
                    .await
                    .unwrap_err();
                assert_eq!(rejected(&e).0, 400, "{what}: {e}");
                assert_ne!(rejected(&e).1, "invalid_client", "{what}: {e}");
                assert!(
                    e.to_string().contains("grant type is not allowed"),
                    "{what}: {e}"
                );
                let bad = idp.token(&reg.client_id, "wrong", None).await.unwrap_err();
                assert_eq!(rejected(&bad), (401, "invalid_client"), "{what}");
            }
        }
    }
    assert_eq!(idp.clients().await.len(), CASES.len());
}

#[tokio::test]
async fn every_type_registers_with_a_fixed_initial_access_token() {
    every_type_registers(Mode::fixed_token()).await;
}

#[tokio::test]
async fn every_type_registers_with_a_client_credentials_token() {
    every_type_registers(Mode::client_credentials()).await;
}

#[tokio::test]
async fn software_id_and_uris_are_sent() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let mut settings = idp.settings();
    settings.software_id = Some("portal-template".into());
    let client_uri = appreg_domain::HttpUrl::parse("https://app.example").unwrap();
    let meta = ClientMetadata::for_application(
        ApplicationType::BackendToBackend,
        &[],
        &[],
        "B2B",
        None,
        Some(&client_uri),
        None,
    )
    .unwrap();
    let reg = client().register(&settings, &meta).await.unwrap();
    assert_eq!(reg.metadata["client_uri"], "https://app.example");
    assert_eq!(reg.metadata["client_name"], "B2B");
}

#[tokio::test]
async fn the_client_credentials_token_is_cached() {
    let idp = OidcProvider::start(Mode::client_credentials());
    let settings = idp.settings();
    let pc = client();
    let a = pc.initial_access_token(&settings).await.unwrap();
    let b = pc.initial_access_token(&settings).await.unwrap();
    assert_eq!(a.expose_secret(), b.expose_secret());
    // A second client does not share the cache.
    let c = client().initial_access_token(&settings).await.unwrap();
    assert_ne!(a.expose_secret(), c.expose_secret());
    let d = pc.discover(&settings).await.unwrap();
    assert_eq!(d.issuer, idp.issuer());
    assert_eq!(d.registration_endpoint, idp.registration_endpoint());
    assert_eq!(d.token_endpoint, Some(format!("{}/token", idp.issuer())));
}

// ----- validate -------------------------------------------------------------------------------

#[tokio::test]
async fn validate_accepts_both_modes() {
    for mode in [Mode::fixed_token(), Mode::client_credentials()] {
        let idp = OidcProvider::start(mode);
        client().validate(&idp.settings()).await.unwrap();
    }
}

#[tokio::test]
async fn validate_fails_clearly_for_a_bad_discovery_url() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let pc = client();

    let mut settings = idp.settings();
    settings.discovery_endpoint = format!("{}/no/such/discovery", idp.issuer());
    let not_found = pc.validate(&settings).await.unwrap_err();
    assert!(
        matches!(not_found, ProviderError::Invalid(_)),
        "{not_found:?}"
    );
    assert!(
        not_found
            .to_string()
            .contains("no usable OpenID Connect discovery document"),
        "{not_found}"
    );

    // Nothing listens there: the same answer as a 404 (no port scanning through errors).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    settings.discovery_endpoint =
        format!("http://127.0.0.1:{port}/.well-known/openid-configuration");
    let e = pc.validate(&settings).await.unwrap_err();
    assert_eq!(e, not_found);

    settings.discovery_endpoint = "not a url".into();
    let e = pc.validate(&settings).await.unwrap_err();
    assert!(e.to_string().contains("not an absolute http(s) URL"), "{e}");

    // A document without a registration endpoint: the provider's JWKS is JSON but no discovery.
    settings.discovery_endpoint = format!("{}/jwks", idp.issuer());
    let e = pc.validate(&settings).await.unwrap_err();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
}

#[tokio::test]
async fn validate_fails_clearly_for_wrong_admin_credentials() {
    let idp = OidcProvider::start(Mode::client_credentials());
    let mut settings = idp.settings();
    let wrong = "definitely-the-wrong-secret";
    if let InitialAccessTokenMode::ClientCredentials { client_secret, .. } =
        &mut settings.initial_access_token
    {
        *client_secret = SecretString::from(wrong);
    }
    let e = client().validate(&settings).await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ProviderError::Invalid(_)), "{e:?}");
    assert!(text.contains("invalid_client"), "{text}");
    assert!(text.contains("token endpoint"), "{text}");
    assert!(!text.contains(wrong) && !format!("{e:?}").contains(wrong));

    // And a registration with them is refused, not retried forever.
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    let e = client().register(&settings, &meta).await.unwrap_err();
    assert_eq!(rejected(&e), (401, "invalid_client"));
}

#[tokio::test]
async fn a_wrong_fixed_token_is_rejected_at_registration() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let settings = ProviderSettings {
        initial_access_token: InitialAccessTokenMode::InitialAccessToken {
            token: SecretString::from("not-the-token"),
        },
        ..idp.settings()
    };
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    let e = client().register(&settings, &meta).await.unwrap_err();
    assert_eq!(rejected(&e), (401, "invalid_token"));
    assert!(!e.is_retryable());
    assert!(!e.to_string().contains("not-the-token"));
    assert!(idp.clients().await.is_empty());
}

// ----- RFC 7592 -------------------------------------------------------------------------------

#[tokio::test]
async fn update_reaches_the_provider_and_rotates_the_token() {
    for mode in [Mode::fixed_token(), Mode::client_credentials()] {
        let idp = OidcProvider::start(mode);
        let settings = idp.settings();
        let pc = client();
        let reg = pc
            .register(
                &settings,
                &metadata(ApplicationType::Web, &[], &["https://web.example/cb"]),
            )
            .await
            .unwrap();
        let old = reg.handle();

        let changed = ClientMetadata::for_application(
            ApplicationType::Web,
            &[GrantType::AuthorizationCode, GrantType::RefreshToken],
            &uris(&["https://web.example/new"]),
            "Renamed",
            None,
            None,
            None,
        )
        .unwrap();
        let updated = pc.update(&settings, &old, &changed).await.unwrap();
        assert_eq!(updated.client_id, reg.client_id);
        assert_eq!(updated.metadata["client_name"], "Renamed");
        assert_eq!(
            updated.strings("redirect_uris"),
            ["https://web.example/new"]
        );
        assert_eq!(
            updated.strings("grant_types"),
            ["authorization_code", "refresh_token"]
        );
        let new_token = updated.registration_access_token.clone().unwrap();
        assert_ne!(
            new_token.expose_secret(),
            old.registration_access_token
                .as_ref()
                .unwrap()
                .expose_secret()
        );
        // The secret is kept.
        assert_eq!(secret(&updated), secret(&reg));

        // The old token is refused, the new one works.
        let e = pc.read(&settings, &old).await.unwrap_err();
        assert_eq!(rejected(&e).0, 401);
        let e = pc.update(&settings, &old, &changed).await.unwrap_err();
        assert_eq!(rejected(&e).0, 401);
        let read = pc.read(&settings, &updated.handle()).await.unwrap();
        assert_eq!(read.metadata["client_name"], "Renamed");
    }
}

#[tokio::test]
async fn delete_removes_the_client() {
    let idp = OidcProvider::start(Mode::client_credentials());
    let settings = idp.settings();
    let pc = client();
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    let keep = pc.register(&settings, &meta).await.unwrap();
    let reg = pc.register(&settings, &meta).await.unwrap();
    assert_eq!(idp.clients().await.len(), 2);

    pc.delete(&settings, &reg.handle()).await.unwrap();
    assert_eq!(idp.clients().await, vec![keep.client_id.clone()]);
    let e = idp
        .token(&reg.client_id, &secret(&reg), None)
        .await
        .unwrap_err();
    assert_eq!(rejected(&e), (401, "invalid_client"));
    // Deleting again: the token died with the client.
    let e = pc.delete(&settings, &reg.handle()).await.unwrap_err();
    assert_eq!(rejected(&e).0, 401);

    // No registration_client_uri: unsupported.
    let handle = RegistrationHandle {
        registration_client_uri: None,
        ..keep.handle()
    };
    let e = pc.delete(&settings, &handle).await.unwrap_err();
    assert!(matches!(e, ProviderError::Unsupported(_)), "{e:?}");
    assert_eq!(idp.clients().await.len(), 1);
}

#[tokio::test]
async fn renew_makes_the_old_secret_fail_and_the_new_work() {
    for mode in [Mode::fixed_token(), Mode::client_credentials()] {
        let idp = OidcProvider::start(mode);
        let settings = idp.settings();
        let pc = client();
        let reg = pc
            .register(
                &settings,
                &metadata(ApplicationType::BackendToBackend, &[], &[]),
            )
            .await
            .unwrap();
        let old = secret(&reg);
        let rat = reg.registration_access_token.clone().unwrap();

        let renewed = pc
            .renew_secret(&settings, &reg.client_id, &rat)
            .await
            .unwrap();
        let new = renewed.client_secret.expose_secret().to_string();
        assert_ne!(new, old);
        assert!(!format!("{renewed:?}").contains(&new));
        let e = idp.token(&reg.client_id, &old, None).await.unwrap_err();
        assert_eq!(rejected(&e), (401, "invalid_client"));
        idp.token(&reg.client_id, &new, None).await.unwrap();

        // A wrong token is refused; a disabled renewal is unsupported.
        let e = pc
            .renew_secret(&settings, &reg.client_id, &SecretString::from("nope-nope"))
            .await
            .unwrap_err();
        assert_eq!(rejected(&e), (401, "invalid_token"));
        let mut disabled = settings.clone();
        disabled.renew_client_secret.enabled = false;
        let e = pc
            .renew_secret(&disabled, &reg.client_id, &rat)
            .await
            .unwrap_err();
        assert!(matches!(e, ProviderError::Unsupported(_)), "{e:?}");
    }
}

// ----- faults ---------------------------------------------------------------------------------

#[tokio::test]
async fn a_503_is_transient_and_creates_nothing() {
    let idp = OidcProvider::start(Mode::client_credentials());
    let settings = idp.settings();
    let pc = client();
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    idp.faults(&[Fault::Status(503)]).await;
    let e = pc.register(&settings, &meta).await.unwrap_err();
    // A 5xx: the provider may have acted on it (here it did not), so the outcome is unknown.
    assert!(matches!(e, ProviderError::OutcomeUnknown(_)), "{e:?}");
    assert!(e.is_retryable() && e.outcome_unknown());
    assert!(e.to_string().contains("503"), "{e}");
    assert!(idp.clients().await.is_empty());
    // The retry succeeds.
    pc.register(&settings, &meta).await.unwrap();
    assert_eq!(idp.clients().await.len(), 1);
}

#[tokio::test]
async fn a_reset_connection_is_transient() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let settings = idp.settings();
    let pc = client();
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    idp.faults(&[Fault::Reset]).await;
    let e = pc.register(&settings, &meta).await.unwrap_err();
    // Reset after the request was sent: its outcome is unknown.
    assert!(matches!(e, ProviderError::OutcomeUnknown(_)), "{e:?}");
    assert!(e.is_retryable());
    assert!(idp.clients().await.is_empty());
    pc.register(&settings, &meta).await.unwrap();
}

#[tokio::test]
async fn a_slow_provider_times_out_as_transient() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let settings = idp.settings();
    let pc = ProviderClient::with_timeouts(
        std::time::Duration::from_secs(2),
        std::time::Duration::from_millis(500),
    )
    .unwrap();
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    idp.faults(&[Fault::Delay(std::time::Duration::from_millis(2000))])
        .await;
    let e = pc.register(&settings, &meta).await.unwrap_err();
    // Timed out after sending: the outcome is unknown.
    assert!(matches!(e, ProviderError::OutcomeUnknown(_)), "{e:?}");
    // What happened (a timeout) is in tracing; the error says the same as for any other cause.
    assert!(e.to_string().contains("no usable answer"), "{e}");
}

#[tokio::test]
async fn created_then_500_is_transient_but_the_client_exists() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let settings = idp.settings();
    idp.faults(&[Fault::CreatedThen500]).await;
    let meta = metadata(ApplicationType::BackendToBackend, &[], &[]);
    let e = client().register(&settings, &meta).await.unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    // The saga cannot know the orphan's client_id: a retry registers a second client.
    assert_eq!(idp.clients().await.len(), 1);
}

#[tokio::test]
async fn invalid_metadata_is_rejected_with_the_providers_error() {
    let idp = OidcProvider::start(Mode::client_credentials());
    let settings = idp.settings();
    let pc = client();
    // A native client with an http redirect URI on a non-loopback host.
    let meta = metadata(ApplicationType::Native, &[], &["http://app.example/cb"]);
    let e = pc.register(&settings, &meta).await.unwrap_err();
    let ProviderError::Rejected {
        status,
        error,
        error_description,
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(*status, 400);
    assert_eq!(error, "invalid_redirect_uri");
    assert!(
        error_description
            .as_deref()
            .unwrap_or("")
            .contains("loopback"),
        "{error_description:?}"
    );
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("invalid_redirect_uri"), "{e}");
    assert!(idp.clients().await.is_empty());
    // An injected permanent status is a rejection too.
    idp.faults(&[Fault::Status(400)]).await;
    let good = metadata(ApplicationType::BackendToBackend, &[], &[]);
    let e = pc.register(&settings, &good).await.unwrap_err();
    assert_eq!(rejected(&e), (400, "server_error"));
    idp.clear_faults().await;
    pc.register(&settings, &good).await.unwrap();
}

/// Implicit clients register with the OpenID Connect response types `id_token token` and
/// `id_token` (the harness enables every response type; a lone `token` would be refused);
/// oidc-provider knows no `password` grant, which it reports as a rejection the saga shows.
#[tokio::test]
async fn implicit_registers_and_password_is_rejected_by_the_test_provider() {
    let idp = OidcProvider::start(Mode::fixed_token());
    let settings = idp.settings();
    let pc = client();
    let implicit = metadata(
        ApplicationType::Web,
        &[GrantType::AuthorizationCode, GrantType::Implicit],
        &["https://web.example/cb"],
    );
    let registered = pc.register(&settings, &implicit).await.unwrap();
    let mut types = registered.strings("response_types");
    types.sort();
    assert_eq!(types, ["code", "id_token", "id_token token"]);

    let password = metadata(
        ApplicationType::Native,
        &[GrantType::AuthorizationCode, GrantType::Password],
        &["com.example.app:/cb"],
    );
    let e = pc.register(&settings, &password).await.unwrap_err();
    assert_eq!(rejected(&e), (400, "invalid_client_metadata"), "{e}");
    assert!(e.to_string().contains("grant_types"), "{e}");
    assert_eq!(idp.clients().await, [registered.client_id]);
}
