//! Development tokens for tests and benchmarks, signed with a key generated for the run.

use appreg_auth::{DevClaims, DevKey};

/// A fresh development signing key (Ed25519) and its PKCS#8 document (to start a second
/// instance that trusts the same key).
pub fn fresh_key() -> (DevKey, Vec<u8>) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .expect("an Ed25519 key")
        .as_ref()
        .to_vec();
    (
        DevKey::from_pkcs8(pkcs8.clone()).expect("the key just generated"),
        pkcs8,
    )
}

/// The claims of a token for `sub` named "`sub` name", with the administrator role (`ADMIN`)
/// when `admin`, valid for `ttl_seconds`.
pub fn claims(sub: &str, admin: bool, ttl_seconds: i64) -> DevClaims {
    let roles = if admin { vec!["ADMIN".into()] } else { vec![] };
    DevClaims {
        name: Some(format!("{sub} name")),
        ..DevClaims::issue(sub, roles, ttl_seconds)
    }
}

/// A token of `key` for [`claims`].
pub fn token(key: &DevKey, sub: &str, admin: bool, ttl_seconds: i64) -> String {
    sign(key, &claims(sub, admin, ttl_seconds))
}

/// `claims` signed by `key`.
pub fn sign(key: &DevKey, claims: &DevClaims) -> String {
    key.sign(claims).expect("a development token")
}
