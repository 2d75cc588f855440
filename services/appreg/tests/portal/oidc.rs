//! The portal's production sign-in: `appreg api` (PostgreSQL, the tokens of an external issuer)
//! with the portal on; the real OpenID Connect provider of `tests/oidc-provider` as that issuer
//! (its access tokens JWTs for the api's audience); the portal a public client registered there.
//! Chromium signs in through the provider's login and consent pages (authorization code with
//! PKCE), lands in the portal without the code in its address, and the api accepts the token.

use super::*;
use appreg_test_support::oidc::Options;
use secrecy::ExposeSecret;

/// The api's audience: a resource indicator (RFC 8707) at the provider.
const AUDIENCE: &str = "https://appreg.test/api";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn production_sign_in_with_openid_connect_and_pkce() {
    chromium();
    let provider = OidcProvider::start_with_env(
        Mode::fixed_token(),
        Options::default(),
        &[("PORTAL_AUDIENCE", AUDIENCE)],
    );
    let Mode::InitialAccessToken(initial_access_token) = provider.mode().clone() else {
        unreachable!("fixed-token mode")
    };
    // The redirect URI is registered before the api starts: its port is chosen first.
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client_id, database_url) = runtime.block_on(async {
        let registered = reqwest::Client::new()
            .post(provider.registration_endpoint())
            .bearer_auth(&initial_access_token)
            .json(&json!({
                "client_name": "appreg developer portal",
                "redirect_uris": [format!("{base}/")],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(
            registered.status(),
            201,
            "the portal's client is registered"
        );
        let client: serde_json::Value = registered.json().await.unwrap();
        (
            client["client_id"].as_str().unwrap().to_string(),
            appreg_test_support::postgres::fresh_postgres_url().await,
        )
    });
    let master_key = appreg_secrets::MasterKey::generate("portal", &mut rand::rngs::OsRng)
        .unwrap()
        .to_config_string();
    let listen = format!("127.0.0.1:{port}");
    let issuer = provider.issuer().to_string();
    let jwks = format!("{issuer}/jwks");
    let (_api, url) = start_appreg(
        &["api"],
        &[
            ("APPREG_API__LISTEN", listen.as_str()),
            ("APPREG_DATABASE_URL", database_url.as_str()),
            ("APPREG_SECRETS_MASTER_KEY", master_key.expose_secret()),
            ("APPREG_AUTH__ISSUER", issuer.as_str()),
            ("APPREG_AUTH__JWKS_URL", jwks.as_str()),
            ("APPREG_AUTH__AUDIENCE", AUDIENCE),
            ("APPREG_API__PORTAL_ENABLED", "true"),
            ("APPREG_API__PORTAL_OIDC_CLIENT_ID", client_id.as_str()),
            ("APPREG_API__PORTAL_OIDC_SCOPES", "openid"),
        ],
    );
    assert_eq!(url, base);
    let out = out_dir("oidc-sign-in");
    run_browser(json!({"scenario": "oidc_sign_in", "base": base}), &out);
}
