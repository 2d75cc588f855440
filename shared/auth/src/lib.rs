//! Authentication of bearer tokens (JWT).
//!
//! Production trusts an external issuer: its JWKS is fetched, cached and refreshed when a token
//! names an unknown key. Development (`appreg dev`) trusts an Ed25519 key kept in the data
//! directory, with which `appreg token` signs. This module never logs a token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::KeyPair;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// The issuer of development tokens.
pub const DEV_ISSUER: &str = "appreg-dev";
const DEV_KID: &str = "appreg-dev-1";
const DEV_KEY_FILE: &str = "dev-signing-key.pk8";

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

/// Claims of tokens that appreg signs in development.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DevClaims {
    pub iss: String,
    pub sub: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub roles: Vec<String>,
    /// Environments this user administers (`*`: all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_environments: Vec<String>,
}

/// The development signing key (Ed25519, PKCS#8 in `DIR/dev-signing-key.pk8`).
pub struct DevKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl DevKey {
    /// Loads the key of `dir`, creating it (mode 0600) on first use.
    pub fn load_or_create(dir: &Path) -> Result<DevKey, AuthError> {
        let path = dir.join(DEV_KEY_FILE);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(|e| AuthError::KeyFile(e.to_string()))?;
                let rng = ring::rand::SystemRandom::new();
                let doc = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(|_| AuthError::KeyFile("key generation failed".into()))?;
                // Written whole under a name of its own, then linked into place: processes
                // starting together on one directory all end up with the one key that won,
                // and none reads a half-written file.
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or_default();
                let tmp = dir.join(format!(".{DEV_KEY_FILE}.{}.{nanos}", std::process::id()));
                write_private(&tmp, doc.as_ref())?;
                let linked = std::fs::hard_link(&tmp, &path);
                let _ = std::fs::remove_file(&tmp);
                match linked {
                    Ok(()) => doc.as_ref().to_vec(),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(&path)
                        .map_err(|e| AuthError::KeyFile(format!("{}: {e}", path.display())))?,
                    Err(e) => return Err(AuthError::KeyFile(format!("{}: {e}", path.display()))),
                }
            }
            Err(e) => return Err(AuthError::KeyFile(format!("{}: {e}", path.display()))),
        };
        Self::from_pkcs8(pkcs8)
    }

    pub fn from_pkcs8(pkcs8: Vec<u8>) -> Result<DevKey, AuthError> {
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|_| AuthError::KeyFile("not an Ed25519 PKCS#8 key".into()))?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(DevKey { pkcs8, public })
    }

    /// Signs a token for `claims`.
    pub fn sign(&self, claims: &DevClaims) -> Result<String, AuthError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(DEV_KID.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// The public key as a JWK (`OKP`, `Ed25519`).
    pub fn jwk(&self) -> Jwk {
        let json = serde_json::json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": DEV_KID,
            "x": URL_SAFE_NO_PAD.encode(&self.public),
        });
        serde_json::from_value(json).expect("valid JWK")
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), AuthError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| AuthError::KeyFile(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .map_err(|e| AuthError::KeyFile(e.to_string()))
}

/// Where the verification keys come from.
enum KeySource {
    Static,
    Remote {
        url: String,
        client: reqwest::Client,
    },
}

struct Cache {
    keys: JwkSet,
    fetched: Option<Instant>,
}

/// Verifies bearer tokens.
pub struct Authenticator {
    /// Tokens already verified, until they expire: a signature is checked once per token, not
    /// once per request. Bounded; emptied when full.
    verified: std::sync::Mutex<std::collections::HashMap<String, (Principal, i64)>>,
    source: KeySource,
    cache: RwLock<Cache>,
    issuer: String,
    audience: Option<String>,
    role_claim: String,
}

/// Clock skew tolerated on `exp`, in seconds.
const LEEWAY: u64 = 30;
/// At most this many verified tokens are remembered.
const VERIFIED_MAX: usize = 10_000;

/// A remote JWKS is refetched at most this often when a token names an unknown key.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// And at least this often, so rotated keys are picked up.
const MAX_AGE: Duration = Duration::from_secs(3600);

impl Authenticator {
    /// Trusts the development key.
    pub fn dev(key: &DevKey, role_claim: &str) -> Arc<Authenticator> {
        let keys = JwkSet {
            keys: vec![key.jwk()],
        };
        Arc::new(Authenticator {
            verified: Default::default(),
            source: KeySource::Static,
            cache: RwLock::new(Cache {
                keys,
                fetched: Some(Instant::now()),
            }),
            issuer: DEV_ISSUER.into(),
            audience: None,
            role_claim: role_claim.into(),
        })
    }

    /// Trusts `issuer`, whose keys are published at `jwks_url`.
    pub fn remote(
        issuer: &str,
        jwks_url: &str,
        audience: Option<String>,
        role_claim: &str,
    ) -> Arc<Authenticator> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("http client");
        Arc::new(Authenticator {
            verified: Default::default(),
            source: KeySource::Remote {
                url: jwks_url.into(),
                client,
            },
            cache: RwLock::new(Cache {
                keys: JwkSet { keys: vec![] },
                fetched: None,
            }),
            issuer: issuer.into(),
            audience,
            role_claim: role_claim.into(),
        })
    }

    async fn refresh(&self, force: bool) -> Result<(), AuthError> {
        let KeySource::Remote { url, client } = &self.source else {
            return Ok(());
        };
        let mut cache = self.cache.write().await;
        let fresh = cache.fetched.is_some_and(|t| t.elapsed() < MIN_REFRESH);
        let stale = cache.fetched.is_none_or(|t| t.elapsed() > MAX_AGE);
        if fresh || (!force && !stale) {
            return Ok(());
        }
        let response = client
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| AuthError::KeysUnavailable(e.without_url().to_string()))?;
        let keys: JwkSet = response
            .json()
            .await
            .map_err(|e| AuthError::KeysUnavailable(e.without_url().to_string()))?;
        cache.keys = keys;
        cache.fetched = Some(Instant::now());
        Ok(())
    }

    async fn find_key(&self, kid: Option<&str>) -> Option<Jwk> {
        let cache = self.cache.read().await;
        cache
            .keys
            .keys
            .iter()
            .find(|k| kid.is_none() || k.common.key_id.as_deref() == kid)
            .cloned()
    }

    /// Checks signature, issuer, audience, expiry (30 s leeway) and returns the caller.
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

    async fn verify(&self, token: &str) -> Result<(Principal, i64), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        self.refresh(false).await?;
        let kid = header.kid.as_deref();
        let jwk = match self.find_key(kid).await {
            Some(k) => k,
            None => {
                self.refresh(true).await?;
                self.find_key(kid)
                    .await
                    .ok_or_else(|| AuthError::Invalid("unknown signing key".into()))?
            }
        };
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
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "sub", "iss"]);
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
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

    #[test]
    fn key_file_is_created_once() {
        let dir = std::env::temp_dir().join(format!("appreg-auth-{}", std::process::id()));
        let a = DevKey::load_or_create(&dir).unwrap();
        let b = DevKey::load_or_create(&dir).unwrap();
        assert_eq!(a.public, b.public);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn processes_starting_together_share_one_key() {
        // Several apis started at once on one data directory (the fault suite does): each
        // gets the key that won, none fails on the file the others created.
        for round in 0..20 {
            let dir = std::env::temp_dir()
                .join(format!("appreg-auth-race-{}-{round}", std::process::id()));
            let keys: Vec<Vec<u8>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| DevKey::load_or_create(&dir).unwrap().public))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key");
            let files = std::fs::read_dir(&dir).unwrap().count();
            assert_eq!(files, 1, "no temporary file left");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Serves `body` as JSON to every HTTP request on a random loopback port; counts requests.
    async fn serve_json(body: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                    body.len(),
                    body
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        (url, hits)
    }

    #[tokio::test]
    async fn remote_issuer_keys_are_fetched_and_checked() {
        let k = key();
        let jwks = serde_json::to_string(&JwkSet {
            keys: vec![k.jwk()],
        })
        .unwrap();
        let (url, hits) = serve_json(jwks).await;
        let auth = Authenticator::remote(
            "https://issuer.test",
            &url,
            Some("appreg".into()),
            "realm.roles",
        );
        let now = chrono::Utc::now().timestamp();
        let sign = |iss: &str, aud: &str| {
            let claims = serde_json::json!({
                "iss": iss, "sub": "carol", "aud": aud, "iat": now, "exp": now + 60,
                "realm": {"roles": ["ADMIN", "USER"]},
            });
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(DEV_KID.into());
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&k.pkcs8)).unwrap()
        };
        let p = auth
            .authenticate(&sign("https://issuer.test", "appreg"))
            .await
            .unwrap();
        assert_eq!(p.subject, "carol");
        assert_eq!(p.roles, vec!["ADMIN".to_string(), "USER".to_string()]);
        // Wrong issuer, wrong audience: refused.
        assert!(auth
            .authenticate(&sign("https://other.test", "appreg"))
            .await
            .is_err());
        assert!(auth
            .authenticate(&sign("https://issuer.test", "other"))
            .await
            .is_err());
        // The JWKS was fetched once and cached.
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn unreachable_issuer_is_unavailable_not_invalid() {
        let k = key();
        let auth = Authenticator::remote(
            "https://issuer.test",
            "http://127.0.0.1:9/jwks",
            None,
            "roles",
        );
        let token = k.sign(&claims(60)).unwrap();
        assert!(matches!(
            auth.authenticate(&token).await,
            Err(AuthError::KeysUnavailable(_))
        ));
    }
}
