//! Sealing and opening secrets with AES-256-GCM.
//!
//! Layout of one sealed value, under key `K` and a fresh random 96-bit nonce `N`:
//!
//! ```text
//! ciphertext = AES-256-GCM(K, N, aad = "appreg-secrets/v1/" || key_id,
//!                          plaintext = owner_tag || secret)       (GCM tag appended)
//! owner_tag  = SHA-256("appreg-secrets/v1/owner\0" || caller_aad)[..16]
//! ```
//!
//! The caller's associated data (the owner, e.g. `application/<id>/client_secret`) is
//! authenticated inside the ciphertext rather than as GCM associated data so that opening can tell
//! "this value was altered" ([`VaultError::Tampered`]: GCM authentication fails) from "this
//! authentic value belongs to another owner" ([`VaultError::WrongAad`]: the owner tag differs,
//! compared in constant time). Either way nothing is returned. The key id and format version are
//! GCM associated data, so they cannot be swapped either.
//!
//! Random nonces: keep well under 2^32 seals per key (NIST SP 800-38D); rotate keys long before.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{SealedParseError, VaultError};
use crate::key::{is_valid_key_id, Keyring, MasterKey};

const VERSION: &str = "v1";
const GCM_AAD_PREFIX: &[u8] = b"appreg-secrets/v1/";
const OWNER_TAG_DOMAIN: &[u8] = b"appreg-secrets/v1/owner\0";
const OWNER_TAG_LEN: usize = 16;
const GCM_TAG_LEN: usize = 16;

/// A sealed secret: which key, the nonce, and the ciphertext (with its authentication tag).
/// Not secret itself; stored as the compact string `v1.<key_id>.<b64url nonce>.<b64url ct>`
/// (`Display` / `FromStr`, and serde as that string).
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    key_id: String,
    nonce: [u8; NONCE_LEN],
    ciphertext: Vec<u8>,
}

impl Sealed {
    /// The id of the master key this value was sealed with.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The 96-bit nonce.
    pub fn nonce(&self) -> &[u8; NONCE_LEN] {
        &self.nonce
    }

    /// The ciphertext, authentication tag included.
    pub fn ciphertext(&self) -> &[u8] {
        &self.ciphertext
    }

    /// The compact string form, `v1.<key_id>.<nonce>.<ciphertext>` (base64url, no padding).
    pub fn to_compact(&self) -> String {
        self.to_string()
    }

    /// Parses the compact string form.
    pub fn parse(s: &str) -> Result<Self, SealedParseError> {
        let mut parts = s.split('.');
        if parts.next() != Some(VERSION) {
            return Err(SealedParseError::UnsupportedVersion);
        }
        let (Some(key_id), Some(nonce), Some(ct), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(SealedParseError::Malformed);
        };
        if !is_valid_key_id(key_id) {
            return Err(SealedParseError::InvalidKeyId);
        }
        let nonce: [u8; NONCE_LEN] = URL_SAFE_NO_PAD
            .decode(nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or(SealedParseError::InvalidNonce)?;
        let ciphertext = URL_SAFE_NO_PAD
            .decode(ct)
            .map_err(|_| SealedParseError::InvalidCiphertext)?;
        if ciphertext.len() < OWNER_TAG_LEN + GCM_TAG_LEN {
            return Err(SealedParseError::InvalidCiphertext);
        }
        Ok(Self {
            key_id: key_id.to_owned(),
            nonce,
            ciphertext,
        })
    }
}

impl fmt::Display for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{VERSION}.{}.{}.{}",
            self.key_id,
            URL_SAFE_NO_PAD.encode(self.nonce),
            URL_SAFE_NO_PAD.encode(&self.ciphertext)
        )
    }
}

impl FromStr for Sealed {
    type Err = SealedParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("ciphertext_len", &self.ciphertext.len())
            .finish_non_exhaustive()
    }
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

fn owner_tag(aad: &[u8]) -> [u8; OWNER_TAG_LEN] {
    let digest = Sha256::new()
        .chain_update(OWNER_TAG_DOMAIN)
        .chain_update(aad)
        .finalize();
    let mut tag = [0u8; OWNER_TAG_LEN];
    tag.copy_from_slice(&digest[..OWNER_TAG_LEN]);
    tag
}

fn gcm_aad(key_id: &str) -> Vec<u8> {
    [GCM_AAD_PREFIX, key_id.as_bytes()].concat()
}

#[allow(clippy::expect_used)] // invariant: a MasterKey holds exactly 32 bytes
fn aead_key(key: &MasterKey) -> LessSafeKey {
    // A 32-byte key is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.bytes()).expect("32-byte AES-256 key"))
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Keyring {
    /// Seals `plaintext` with the current key and a fresh random nonce, bound to `aad` (the
    /// owner, e.g. `b"application/<id>/client_secret"`): it opens only with the same `aad`.
    #[allow(clippy::expect_used)] // invariant: sealing fails only for plaintexts over ~64 GiB
    pub fn seal(&self, plaintext: &SecretString, aad: &[u8]) -> Sealed {
        let key = self.current();
        let mut nonce = [0u8; NONCE_LEN];
        // The thread's CSPRNG (seeded, and reseeded, from the OS): a nonce a seal, without a
        // system call each.
        rand::thread_rng().fill_bytes(&mut nonce);

        let secret = plaintext.expose_secret().as_bytes();
        let mut buffer = Vec::with_capacity(OWNER_TAG_LEN + secret.len() + GCM_TAG_LEN);
        buffer.extend_from_slice(&owner_tag(aad));
        buffer.extend_from_slice(secret);
        // Fails only for plaintexts of more than ~64 GiB.
        aead_key(key)
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(gcm_aad(key.id())),
                &mut buffer,
            )
            .expect("AES-GCM plaintext length within limits");
        Sealed {
            key_id: key.id().to_owned(),
            nonce,
            ciphertext: buffer,
        }
    }

    /// Opens a sealed value with the key of its key id, checking it was sealed for `aad`.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<SecretString, VaultError> {
        let key = self
            .get(&sealed.key_id)
            .ok_or_else(|| VaultError::UnknownKeyId(sealed.key_id.clone()))?;
        let mut buffer = sealed.ciphertext.clone();
        let result = open_buffer(key, sealed, aad, &mut buffer);
        buffer.zeroize();
        result
    }

    /// Whether `sealed` was sealed with another key than the current one (re-seal it before the
    /// old key is retired).
    pub fn needs_reseal(&self, sealed: &Sealed) -> bool {
        sealed.key_id != self.current().id()
    }
}

fn open_buffer(
    key: &MasterKey,
    sealed: &Sealed,
    aad: &[u8],
    buffer: &mut [u8],
) -> Result<SecretString, VaultError> {
    let plain = aead_key(key)
        .open_in_place(
            Nonce::assume_unique_for_key(sealed.nonce),
            Aad::from(gcm_aad(&sealed.key_id)),
            buffer,
        )
        .map_err(|_| VaultError::Tampered)?;
    if plain.len() < OWNER_TAG_LEN {
        return Err(VaultError::Tampered);
    }
    let (tag, secret) = plain.split_at(OWNER_TAG_LEN);
    if !constant_time_eq(tag, &owner_tag(aad)) {
        return Err(VaultError::WrongAad);
    }
    let text = std::str::from_utf8(secret).map_err(|_| VaultError::InvalidPlaintext)?;
    Ok(SecretString::from(text))
}
