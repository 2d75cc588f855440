//! Authentication of bearer tokens (JWT).
//!
//! Production trusts an external issuer for one audience: its JWKS is fetched and kept
//! ([`jwks`]: single flight, a rate limit on unknown keys, stale-if-error). Development (`appreg dev`) trusts an Ed25519 key kept in the data
//! directory, with which `appreg token` signs ([`dev`]). This module never logs a token.

mod dev;
mod jwks;

pub use dev::{DevClaims, DevKey, DEV_AUDIENCE, DEV_ISSUER};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use jwks::{Keys, RemoteKeys};
use std::sync::Arc;
use std::time::Duration;

/// An external issuer that appreg trusts, and how its keys (JWKS) are kept.
#[derive(Debug, Clone)]
pub struct RemoteIssuer {
    /// Expected `iss`.
    pub issuer: String,
    /// Where the issuer publishes its signing keys.
    pub jwks_url: String,
    /// Expected `aud`: required, so that tokens the issuer made for other clients are refused.
    pub audience: String,
    /// The claim (a dotted path) listing the caller's roles.
    pub role_claim: String,
    pub jwks: JwksSettings,
}

/// How the keys of a [`RemoteIssuer`] are fetched and kept.
#[derive(Debug, Clone)]
pub struct JwksSettings {
    /// Keys older than this are refreshed.
    pub max_age: Duration,
    /// A token naming an unknown key makes the keys be fetched again at most this often.
    pub unknown_kid_interval: Duration,
    /// When refreshes fail, the last keys fetched stay in use this long past `max_age`.
    pub stale_if_error: Duration,
    /// Least time between a failed fetch and the next try.
    pub retry_interval: Duration,
    /// Longest wait for the JWKS endpoint's answer.
    pub timeout: Duration,
}

impl Default for JwksSettings {
    fn default() -> Self {
        JwksSettings {
            max_age: Duration::from_secs(3600),
            unknown_kid_interval: Duration::from_secs(30),
            stale_if_error: Duration::from_secs(6 * 3600),
            retry_interval: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub name: Option<String>,
    pub email: Option<String>,
    /// Roles found in the configured role claim.
    pub roles: Vec<String>,
    /// Every claim of the token, for claims the caller interprets (e.g. administered environments).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Principal {
    /// The strings of a claim found by a dotted path: an array of strings, or a space-separated
    /// string.
    pub fn strings(&self, path: &str) -> Vec<String> {
        match lookup(&self.claims, path) {
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => {
                s.split_whitespace().map(str::to_string).collect()
            }
            _ => vec![],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("the token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token issuer's keys cannot be fetched: {0}")]
    KeysUnavailable(String),
    #[error("key file: {0}")]
    KeyFile(String),
}

/// What the JWKS cache did so far (also exported as metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JwksStats {
    /// Fetches of the JWKS (successful or not).
    pub fetches: u64,
    /// Fetches that failed.
    pub failures: u64,
    /// Verifications with keys older than `max_age` (a refresh in flight or failing).
    pub stale_uses: u64,
}

/// Verifies bearer tokens.
pub struct Authenticator {
    /// Tokens already verified, until they expire: a signature is checked once per token, not
    /// once per request. Bounded; emptied when full.
    verified: std::sync::Mutex<std::collections::HashMap<String, (Principal, i64)>>,
    keys: Keys,
    issuer: String,
    audience: String,
    role_claim: String,
}

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
const LEEWAY: u64 = 30;
/// At most this many verified tokens are remembered.
const VERIFIED_MAX: usize = 10_000;

impl Authenticator {
    /// Trusts the development key, for the development audience.
    pub fn dev(key: &DevKey, role_claim: &str) -> Arc<Authenticator> {
        Arc::new(Authenticator {
            verified: Default::default(),
            keys: Keys::Static(JwkSet {
                keys: vec![key.jwk()],
            }),
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            role_claim: role_claim.into(),
        })
    }

    /// Trusts `remote.issuer`, whose keys are published at `remote.jwks_url`, for tokens of
    /// `remote.audience`.
    pub fn remote(remote: RemoteIssuer) -> Result<Arc<Authenticator>, AuthError> {
        if remote.audience.trim().is_empty() {
            return Err(AuthError::Invalid(
                "an external issuer's tokens need an expected audience".into(),
            ));
        }
        Ok(Arc::new(Authenticator {
            verified: Default::default(),
            keys: Keys::Remote(RemoteKeys::new(remote.jwks_url, remote.jwks)?),
            issuer: remote.issuer,
            audience: remote.audience,
            role_claim: remote.role_claim,
        }))
    }

    /// What the JWKS cache did so far (zeros for the development key).
    pub fn jwks_stats(&self) -> JwksStats {
        self.keys.stats()
    }

    /// Checks signature, issuer, audience, expiry and not-before (30 s leeway) and returns the
    /// caller.
    pub async fn authenticate(&self, token: &str) -> Result<Principal, AuthError> {
        let now = chrono::Utc::now().timestamp();
        if let Some((principal, exp)) = self.verified_lock().get(token) {
            if now <= exp + LEEWAY as i64 {
                return Ok(principal.clone());
            }
        }
        let (principal, exp) = self.verify(token).await?;
        let mut verified = self.verified_lock();
        if verified.len() >= VERIFIED_MAX {
            verified.clear();
        }
        verified.insert(token.to_string(), (principal.clone(), exp));
        Ok(principal)
    }

    fn verified_lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Principal, i64)>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Refuses, before any key is looked up (and perhaps fetched), a token whose unverified
    /// claims could not pass the checks anyway: another issuer, or expired.
    fn precheck(&self, token: &str) -> Result<(), AuthError> {
        use base64::Engine;
        let payload = token
            .split('.')
            .nth(1)
            .and_then(|p| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|bytes| {
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&bytes).ok()
            })
            .ok_or_else(|| AuthError::Invalid("the token's claims are not readable".into()))?;
        if payload.get("iss").and_then(|v| v.as_str()) != Some(self.issuer.as_str()) {
            return Err(AuthError::Invalid("unexpected issuer".into()));
        }
        let now = chrono::Utc::now().timestamp();
        match payload.get("exp").and_then(|v| v.as_i64()) {
            Some(exp) if exp.saturating_add(LEEWAY as i64) < now => Err(AuthError::Expired),
            Some(_) => Ok(()),
            None => Err(AuthError::Invalid("the token has no expiry".into())),
        }
    }

    async fn verify(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        self.precheck(token)?;
        let jwk = self.keys.key_for(header.kid.as_deref()).await?;
        let key = DecodingKey::from_jwk(&jwk).map_err(|e| AuthError::Invalid(e.to_string()))?;
        let alg = match jwk.common.key_algorithm {
            Some(a) => a.to_string().parse().unwrap_or(header.alg),
            None => header.alg,
        };
        if header.alg != alg {
            return Err(AuthError::Invalid(
                "algorithm does not match the key".into(),
            ));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
            token,
            &key,
            &validation,
        )
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
            _ => AuthError::Invalid(e.to_string()),
        })?;
        let claims = data.claims;
        let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let subject = text("sub")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Invalid("empty sub".into()))?;
        let exp = claims.get("exp").and_then(|v| v.as_i64()).unwrap_or(0);
        let mut principal = Principal {
            subject,
            name: text("name"),
            email: text("email"),
            roles: vec![],
            claims,
        };
        principal.roles = principal.strings(&self.role_claim);
        Ok((principal, exp))
    }
}

/// Finds a claim by a dotted path (`realm_access.roles`).
fn lookup<'a>(
    claims: &'a serde_json::Map<String, serde_json::Value>,
    path: &str,
) -> Option<&'a serde_json::Value> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for p in parts {
        value = value.get(p)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};

    fn claims(exp_offset: i64) -> DevClaims {
        let now = chrono::Utc::now().timestamp();
        DevClaims {
            iss: DEV_ISSUER.into(),
            sub: "alice".into(),
            iat: now,
            exp: now + exp_offset,
            name: Some("Alice".into()),
            email: None,
            roles: vec!["ADMIN".into()],
            admin_environments: vec![],
        }
    }

    fn key() -> DevKey {
        let rng = ring::rand::SystemRandom::new();
        let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        DevKey::from_pkcs8(doc.as_ref().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn dev_token_round_trip() {
        let k = key();
        let auth = Authenticator::dev(&k, "roles");
        let p = auth
            .authenticate(&k.sign(&claims(60)).unwrap())
            .await
            .unwrap();
        assert_eq!(p.subject, "alice");
        assert_eq!(p.name.as_deref(), Some("Alice"));
        assert_eq!(p.roles, vec!["ADMIN".to_string()]);
    }

    #[tokio::test]
    async fn expired_and_forged_tokens_are_refused() {
        let k = key();
        let auth = Authenticator::dev(&k, "roles");
        let expired = k.sign(&claims(-120)).unwrap();
        assert!(matches!(
            auth.authenticate(&expired).await,
            Err(AuthError::Expired)
        ));
        let other = key();
        let forged = other.sign(&claims(60)).unwrap();
        assert!(matches!(
            auth.authenticate(&forged).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(auth.authenticate("not.a.token").await.is_err());
    }

    #[tokio::test]
    async fn a_dev_token_without_the_dev_audience_is_refused() {
        // Signed by the trusted key, but for no audience (as `appreg token` did before the
        // development audience) or for another one.
        let k = key();
        let auth = Authenticator::dev(&k, "roles");
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(dev::DEV_KID.into());
        let sign = |claims: &serde_json::Value| {
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&k.pkcs8)).unwrap()
        };
        let mut claims = serde_json::to_value(claims(60)).unwrap();
        let no_audience = sign(&claims);
        assert!(
            matches!(
                auth.authenticate(&no_audience).await,
                Err(AuthError::Invalid(_))
            ),
            "a token without aud is refused"
        );
        claims["aud"] = "someone-else".into();
        assert!(auth.authenticate(&sign(&claims)).await.is_err());
        claims["aud"] = DEV_AUDIENCE.into();
        assert!(auth.authenticate(&sign(&claims)).await.is_ok());
    }
}
