//! Tokens of an external issuer, checked against its JWKS served by a real HTTP server on
//! loopback: the claims every token must carry (`aud`, `nbf`), key selection, and the key
//! cache under a slow, failing or abused JWKS endpoint.

mod cache;
mod server;
mod tokens;

use appreg_auth::{Authenticator, JwksSettings, RemoteIssuer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use std::sync::Arc;

pub const ISSUER: &str = "https://issuer.test";
pub const AUDIENCE: &str = "appreg";

/// An Ed25519 signing key of the test issuer, published under `kid`.
pub struct Key {
    pub kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl Key {
    pub fn new(kid: &str) -> Key {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(doc.as_ref()).unwrap();
        Key {
            kid: kid.into(),
            pkcs8: doc.as_ref().to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        }
    }

    pub fn jwk(&self) -> serde_json::Value {
        use base64::Engine;
        serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public),
        })
    }

    /// Signs `claims` with this key; `kid`: the header's key id (None: no `kid`).
    pub fn sign_as(&self, kid: Option<&str>, claims: &serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = kid.map(str::to_string);
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }

    /// A valid token of `sub`, naming this key.
    pub fn token(&self, sub: &str) -> String {
        self.sign_as(Some(&self.kid), &claims(sub))
    }
}

/// Valid claims of `sub` for the test issuer and audience, for 10 minutes.
pub fn claims(sub: &str) -> serde_json::Value {
    let now = chrono::Utc::now().timestamp();
    serde_json::json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 600,
        "roles": ["USER"],
    })
}

/// The JWKS document publishing `keys`.
pub fn jwks(keys: &[&Key]) -> String {
    serde_json::json!({ "keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>() }).to_string()
}

/// An authenticator trusting the test issuer, whose keys are at `url`.
pub fn authenticator(url: &str, jwks: JwksSettings) -> Arc<Authenticator> {
    Authenticator::remote(RemoteIssuer {
        issuer: ISSUER.into(),
        jwks_url: url.into(),
        audience: AUDIENCE.into(),
        role_claim: "roles".into(),
        jwks,
    })
    .unwrap()
}
