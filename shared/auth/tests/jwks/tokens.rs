//! The checks every token of an external issuer goes through: signature, issuer, audience
//! (required: a token for another client of the same issuer, or for none, is refused), expiry
//! and not-before (both with 30 s of leeway), and the choice of its key.

use crate::server::{JwksServer, Mode};
use crate::{authenticator, claims, jwks, Key, AUDIENCE};
use appreg_auth::{AuthError, JwksSettings};

#[tokio::test]
async fn remote_issuer_keys_are_fetched_and_checked() {
    let k = Key::new("k1");
    let server = JwksServer::start(Mode::Serve(jwks(&[&k]))).await;
    let auth = authenticator(&server.url, JwksSettings::default());
    let p = auth.authenticate(&k.token("carol")).await.unwrap();
    assert_eq!(p.subject, "carol");
    assert_eq!(p.roles, vec!["USER".to_string()]);
    let mut other_issuer = claims("carol");
    other_issuer["iss"] = "https://other.test".into();
    assert!(auth
        .authenticate(&k.sign_as(Some("k1"), &other_issuer))
        .await
        .is_err());
    // The key set was fetched once and kept.
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn a_token_for_another_audience_or_none_is_refused() {
    let k = Key::new("k1");
    let server = JwksServer::start(Mode::Serve(jwks(&[&k]))).await;
    let auth = authenticator(&server.url, JwksSettings::default());
    let mut other = claims("dave");
    other["aud"] = "another-client".into();
    assert!(matches!(
        auth.authenticate(&k.sign_as(Some("k1"), &other)).await,
        Err(AuthError::Invalid(_))
    ));
    let mut none = claims("dave");
    none.as_object_mut().unwrap().remove("aud");
    assert!(
        matches!(
            auth.authenticate(&k.sign_as(Some("k1"), &none)).await,
            Err(AuthError::Invalid(_))
        ),
        "a token without aud is refused"
    );
    // An audience list that names appreg is accepted.
    let mut list = claims("dave");
    list["aud"] = serde_json::json!(["another-client", AUDIENCE]);
    assert!(auth
        .authenticate(&k.sign_as(Some("k1"), &list))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let k = Key::new("k1");
    let server = JwksServer::start(Mode::Serve(jwks(&[&k]))).await;
    let auth = authenticator(&server.url, JwksSettings::default());
    let now = chrono::Utc::now().timestamp();
    let mut later = claims("erin");
    later["nbf"] = (now + 600).into();
    assert!(
        auth.authenticate(&k.sign_as(Some("k1"), &later))
            .await
            .is_err(),
        "nbf ten minutes ahead"
    );
    // Within the leeway (clocks drift): accepted.
    let mut soon = claims("erin");
    soon["nbf"] = (now + 10).into();
    assert!(auth
        .authenticate(&k.sign_as(Some("k1"), &soon))
        .await
        .is_ok());
}

#[tokio::test]
async fn a_token_without_kid_needs_a_key_set_of_exactly_one_key() {
    let (a, b) = (Key::new("a"), Key::new("b"));
    let server = JwksServer::start(Mode::Serve(jwks(&[&a, &b]))).await;
    let auth = authenticator(&server.url, JwksSettings::default());
    // Two keys: which one a token without kid means is a guess; it is refused, even when the
    // guess (the first key) would be right.
    assert!(
        matches!(
            auth.authenticate(&a.sign_as(None, &claims("frank"))).await,
            Err(AuthError::Invalid(_))
        ),
        "no kid, two keys"
    );
    assert!(auth
        .authenticate(&b.sign_as(None, &claims("frank")))
        .await
        .is_err());
    // With kids, both keys work.
    assert!(auth.authenticate(&a.token("frank")).await.is_ok());
    assert!(auth.authenticate(&b.token("frank")).await.is_ok());

    // One key: a token without kid can only mean it.
    let single = JwksServer::start(Mode::Serve(jwks(&[&a]))).await;
    let auth = authenticator(&single.url, JwksSettings::default());
    assert!(auth
        .authenticate(&a.sign_as(None, &claims("frank")))
        .await
        .is_ok());
    assert!(auth
        .authenticate(&b.sign_as(None, &claims("frank")))
        .await
        .is_err());
}

#[tokio::test]
async fn an_unreachable_issuer_is_unavailable_not_invalid() {
    let k = Key::new("k1");
    let auth = authenticator("http://127.0.0.1:9/jwks", JwksSettings::default());
    assert!(matches!(
        auth.authenticate(&k.token("gina")).await,
        Err(AuthError::KeysUnavailable(_))
    ));
}
