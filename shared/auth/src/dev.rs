//! Development tokens: an Ed25519 key kept in the data directory, with which `appreg token`
//! signs and which `appreg dev` (or an api with `auth.dev = true`) trusts. Every development
//! token carries the development audience ([`DEV_AUDIENCE`]), which the development
//! authenticator requires like any other audience.

use crate::AuthError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::KeyPair;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The issuer of development tokens.
pub const DEV_ISSUER: &str = "appreg-dev";
/// The audience of development tokens (`aud`), required by the development authenticator.
pub const DEV_AUDIENCE: &str = "appreg-dev";
pub(crate) const DEV_KID: &str = "appreg-dev-1";
const DEV_KEY_FILE: &str = "dev-signing-key.pk8";

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

impl DevClaims {
    /// The claims of a development token for `sub` holding `roles`, issued now by
    /// [`DEV_ISSUER`] and valid for `ttl_seconds`; no name, e-mail or administered environment.
    pub fn issue(sub: impl Into<String>, roles: Vec<String>, ttl_seconds: i64) -> DevClaims {
        let now = chrono::Utc::now().timestamp();
        DevClaims {
            iss: DEV_ISSUER.into(),
            sub: sub.into(),
            iat: now,
            exp: now + ttl_seconds,
            name: None,
            email: None,
            roles,
            admin_environments: Vec::new(),
        }
    }
}

/// The development signing key (Ed25519, PKCS#8 in `DIR/dev-signing-key.pk8`).
pub struct DevKey {
    pub(crate) pkcs8: Vec<u8>,
    pub(crate) public: Vec<u8>,
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

    /// Signs a token for `claims`, for the development audience ([`DEV_AUDIENCE`]).
    pub fn sign(&self, claims: &DevClaims) -> Result<String, AuthError> {
        /// The claims as signed: `aud` is always the development audience.
        #[derive(Serialize)]
        struct Signed<'a> {
            #[serde(flatten)]
            claims: &'a DevClaims,
            aud: &'static str,
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(DEV_KID.into());
        let signed = Signed {
            claims,
            aud: DEV_AUDIENCE,
        };
        jsonwebtoken::encode(&header, &signed, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// The public key as a JWK (`OKP`, `Ed25519`).
    #[allow(clippy::expect_used)] // invariant: a constant JWK shape with a base64url key
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
