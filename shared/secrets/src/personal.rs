//! Personal data (DESIGN.md "Personal data"): every user has a data key in the vault, and the
//! personal fields of events (names, e-mail addresses) are sealed with their subject's key.
//! Erasing a user destroys the key (crypto-shredding): the immutable log, its backups and NATS
//! replays keep ciphertext nobody can open, and the subject id.
//!
//! - A data key is 32 random bytes, stored as a vault row (owner `personal/<user>`, kind
//!   `data_key`) sealed under the master keyring like every secret, so master-key rotation and
//!   [`SecretStore::reseal`] cover it. It is created on first use ([`PersonalKeys::sealing_key`])
//!   with an insert that never replaces a key another process made first.
//! - A sealed value is `pd1.<base64url(nonce || AES-256-GCM ciphertext and tag)>`, bound to
//!   `<user>/<field>` as associated data. The nonce is synthetic: the first 96 bits of
//!   HMAC-SHA256 under a key derived from the data key, over the associated data and the
//!   plaintext. Sealing is deterministic (the same value of the same user's field seals to the
//!   same text, which the pure domain compares) and a nonce repeats only with its plaintext.
//! - Unwrapped keys are cached in memory, bounded ([`CACHE_CAPACITY`] users, each for at most
//!   [`CACHE_TTL`]): the hot create path seals the actor's name without a database round trip.
//!   An erasure evicts the key here at once; another process holding it forgets it within
//!   [`CACHE_TTL`].
//! - An erasure is recorded in `personal_erasures` (subject, time): the key row is deleted in
//!   the same transaction.

use crate::store::{SecretStore, VaultStoreError};
use crate::vault::constant_time_eq;
use appreg_eventstore::Database;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use lru::LruCache;
use rand::rngs::OsRng;
use rand::RngCore;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretString};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The prefix of a sealed personal value (and its format version).
pub const SEALED_PREFIX: &str = "pd1.";
/// Users whose unwrapped data key the cache holds at most.
pub const CACHE_CAPACITY: usize = 10_000;
/// How long a cached key is used before the vault is asked again.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
const KIND: &str = "data_key";
const GCM_TAG_LEN: usize = 16;

/// The vault owner of a user's data key. A key of stored data: never change it.
pub fn data_key_owner(user: &str) -> String {
    format!("personal/{user}")
}

/// Why a personal value could not be sealed or opened. Never carries a value or a key.
#[derive(Debug, thiserror::Error)]
pub enum PersonalError {
    #[error(transparent)]
    Vault(#[from] VaultStoreError),
    #[error("the data key of a user is malformed in the vault")]
    MalformedKey,
    #[error("a sealed personal value is malformed")]
    Malformed,
    #[error("a sealed personal value does not open with its subject's key (altered, or another subject's)")]
    Tampered,
}

/// One user's unwrapped data key: the AEAD key and the key of its synthetic nonces.
pub struct DataKey {
    aead: LessSafeKey,
    nonce_key: hmac::Key,
    /// The last value sealed with it: a caller's name is sealed into every request's metadata,
    /// and sealing is deterministic, so the same value again is answered from here. Goes with
    /// the key (an erasure evicts both).
    last: Mutex<Option<Memo>>,
}

/// A value sealed with a key, and what it sealed to.
struct Memo {
    user: String,
    field: String,
    plaintext: String,
    sealed: String,
}

impl Drop for Memo {
    fn drop(&mut self) {
        self.plaintext.zeroize();
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey([REDACTED])")
    }
}

fn aad(user: &str, field: &str) -> Vec<u8> {
    format!("appreg-personal/v1/{user}/{field}").into_bytes()
}

impl DataKey {
    /// A key from its 32 bytes (`None` for another length).
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let aead = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).ok()?);
        // The nonce key is derived, so the AEAD key itself is never used for anything else.
        let derive = hmac::Key::new(hmac::HMAC_SHA256, bytes);
        let nonce_key = hmac::Key::new(
            hmac::HMAC_SHA256,
            hmac::sign(&derive, b"appreg-personal/v1/nonce-key").as_ref(),
        );
        Some(DataKey {
            aead,
            nonce_key,
            last: Mutex::new(None),
        })
    }

    /// `plaintext`, sealed for `user`'s `field`: `pd1.<base64url>`.
    pub fn seal(&self, user: &str, field: &str, plaintext: &str) -> Result<String, PersonalError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = last.as_ref() {
            if m.user == user && m.field == field && m.plaintext == plaintext {
                return Ok(m.sealed.clone());
            }
        }
        let sealed = self.seal_now(user, field, plaintext)?;
        *last = Some(Memo {
            user: user.to_string(),
            field: field.to_string(),
            plaintext: plaintext.to_string(),
            sealed: sealed.clone(),
        });
        Ok(sealed)
    }

    fn seal_now(&self, user: &str, field: &str, plaintext: &str) -> Result<String, PersonalError> {
        let aad = aad(user, field);
        let mut ctx = hmac::Context::with_key(&self.nonce_key);
        ctx.update(&(aad.len() as u64).to_be_bytes());
        ctx.update(&aad);
        ctx.update(plaintext.as_bytes());
        let tag = ctx.sign();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&tag.as_ref()[..NONCE_LEN]);
        let mut buffer = Vec::with_capacity(NONCE_LEN + plaintext.len() + GCM_TAG_LEN);
        buffer.extend_from_slice(plaintext.as_bytes());
        self.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buffer,
            )
            .map_err(|_| PersonalError::Malformed)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buffer.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buffer);
        buffer.zeroize();
        Ok(format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(out)))
    }

    /// Opens a value sealed for `user`'s `field`.
    pub fn open(&self, user: &str, field: &str, sealed: &str) -> Result<String, PersonalError> {
        let body = sealed
            .strip_prefix(SEALED_PREFIX)
            .ok_or(PersonalError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| PersonalError::Malformed)?;
        if bytes.len() < NONCE_LEN + GCM_TAG_LEN {
            return Err(PersonalError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| PersonalError::Malformed)?;
        let mut buffer = ciphertext.to_vec();
        let aad = aad(user, field);
        let result = match self.aead.open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(&aad),
            &mut buffer,
        ) {
            Ok(plain) => std::str::from_utf8(plain)
                .map(str::to_string)
                .map_err(|_| PersonalError::Tampered),
            Err(_) => Err(PersonalError::Tampered),
        };
        buffer.zeroize();
        // The synthetic nonce must be the one of this plaintext: a value whose nonce was
        // swapped does not open even if GCM accepted it.
        if let Ok(plain) = &result {
            let again = self.seal_now(user, field, plain)?;
            if !constant_time_eq(again.as_bytes(), sealed.as_bytes()) {
                return Err(PersonalError::Tampered);
            }
        }
        result
    }
}

fn unwrap_key(stored: &SecretString) -> Result<Arc<DataKey>, PersonalError> {
    let mut bytes = STANDARD
        .decode(stored.expose_secret())
        .map_err(|_| PersonalError::MalformedKey)?;
    let key = DataKey::from_bytes(&bytes);
    bytes.zeroize();
    Ok(Arc::new(key.ok_or(PersonalError::MalformedKey)?))
}

/// Whether `text` has the form of a sealed personal value (it may still not open).
pub fn is_sealed(text: &str) -> bool {
    text.strip_prefix(SEALED_PREFIX).is_some_and(|b| {
        !b.is_empty()
            && b.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    })
}

struct Cached {
    key: Arc<DataKey>,
    at: Instant,
}

/// Users' data keys: in the vault, with a bounded in-memory cache in front.
#[derive(Clone)]
pub struct PersonalKeys {
    vault: SecretStore,
    cache: Arc<Mutex<LruCache<String, Cached>>>,
}

impl std::fmt::Debug for PersonalKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonalKeys").finish_non_exhaustive()
    }
}

macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Database::Postgres($pool) => $body,
            Database::Sqlite($pool) => $body,
        }
    };
}

impl PersonalKeys {
    pub fn new(vault: SecretStore) -> Self {
        let capacity = NonZeroUsize::new(CACHE_CAPACITY).unwrap_or(NonZeroUsize::MIN);
        PersonalKeys {
            vault,
            cache: Arc::new(Mutex::new(LruCache::new(capacity))),
        }
    }

    fn cached(&self, user: &str) -> Option<Arc<DataKey>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match cache.get(user) {
            Some(c) if c.at.elapsed() < CACHE_TTL => Some(c.key.clone()),
            Some(_) => {
                cache.pop(user);
                None
            }
            None => None,
        }
    }

    fn remember(&self, user: &str, key: Arc<DataKey>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.put(
            user.to_string(),
            Cached {
                key,
                at: Instant::now(),
            },
        );
    }

    fn forget(&self, user: &str) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.pop(user);
    }

    /// `user`'s key, if they have one (none: never sealed anything, or erased).
    pub async fn opening_key(&self, user: &str) -> Result<Option<Arc<DataKey>>, PersonalError> {
        if let Some(key) = self.cached(user) {
            return Ok(Some(key));
        }
        let Some(stored) = self.vault.get(&data_key_owner(user), KIND).await? else {
            return Ok(None);
        };
        let key = unwrap_key(&stored)?;
        self.remember(user, key.clone());
        Ok(Some(key))
    }

    /// Loads the keys of `users` not cached yet in one read (for a reader about to open many
    /// users' values).
    pub async fn preload(&self, users: &[&str]) -> Result<(), PersonalError> {
        let owners: Vec<String> = users
            .iter()
            .filter(|u| self.cached(u).is_none())
            .map(|u| data_key_owner(u))
            .collect();
        for chunk in owners.chunks(500) {
            let rows: Vec<(String, String)> = with_pool!(self.vault.db(), pool => {
                let mut q = sqlx::QueryBuilder::new(
                    "SELECT owner, sealed FROM vault_secrets WHERE kind = ",
                );
                q.push_bind(KIND).push(" AND owner IN (");
                let mut list = q.separated(", ");
                for owner in chunk {
                    list.push_bind(owner);
                }
                q.push(")");
                q.build_query_as().fetch_all(pool).await
            })
            .map_err(VaultStoreError::from)?;
            for (owner, sealed) in rows {
                let stored = self.vault.open_text(&owner, KIND, &sealed)?;
                if let Some(user) = owner.strip_prefix("personal/") {
                    self.remember(user, unwrap_key(&stored)?);
                }
            }
        }
        Ok(())
    }

    /// `user`'s key, made now if they have none (also after an erasure: what they give from
    /// then on is sealed under a new key).
    pub async fn sealing_key(&self, user: &str) -> Result<Arc<DataKey>, PersonalError> {
        if let Some(key) = self.opening_key(user).await? {
            return Ok(key);
        }
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let text = SecretString::from(STANDARD.encode(bytes));
        bytes.zeroize();
        let owner = data_key_owner(user);
        let (sealed, fingerprint) = self.vault.seal(&owner, KIND, &text);
        let now = chrono::Utc::now().to_rfc3339();
        // Never replaces a key: when another process made one first, theirs is the key.
        with_pool!(self.vault.db(), pool => sqlx::query(
            "INSERT INTO vault_secrets (owner, kind, sealed, fingerprint, updated_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (owner, kind) DO NOTHING",
        )
        .bind(&owner)
        .bind(KIND)
        .bind(&sealed)
        .bind(&fingerprint)
        .bind(&now)
        .execute(pool)
        .await
        .map(|_| ()))
        .map_err(VaultStoreError::from)?;
        self.opening_key(user)
            .await?
            .ok_or(PersonalError::MalformedKey)
    }

    /// Seals `value` for `user`'s `field` (making their key if needed).
    pub async fn seal(
        &self,
        user: &str,
        field: &str,
        value: &str,
    ) -> Result<String, PersonalError> {
        self.sealing_key(user).await?.seal(user, field, value)
    }

    /// Opens a value sealed for `user`'s `field`: `None` when the key is gone (erased).
    pub async fn open(
        &self,
        user: &str,
        field: &str,
        sealed: &str,
    ) -> Result<Option<String>, PersonalError> {
        match self.opening_key(user).await? {
            Some(key) => key.open(user, field, sealed).map(Some),
            None => Ok(None),
        }
    }

    /// Erases `user`: destroys their key and records when (once; the first time stays).
    /// Returns when the user was erased.
    pub async fn erase(&self, user: &str) -> Result<String, PersonalError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let owner = data_key_owner(user);
        with_pool!(self.vault.db(), pool => async {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO personal_erasures (subject, erased_at) VALUES ($1, $2) \
                 ON CONFLICT (subject) DO NOTHING",
            )
            .bind(user)
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM vault_secrets WHERE owner = $1 AND kind = $2")
                .bind(&owner)
                .bind(KIND)
                .execute(&mut *tx)
                .await?;
            tx.commit().await
        }
        .await)
        .map_err(VaultStoreError::from)?;
        self.forget(user);
        Ok(self.erased_at(user).await?.unwrap_or(now))
    }

    /// When `user` was erased, if they were.
    pub async fn erased_at(&self, user: &str) -> Result<Option<String>, PersonalError> {
        Ok(with_pool!(self.vault.db(), pool => sqlx::query_scalar(
            "SELECT erased_at FROM personal_erasures WHERE subject = $1",
        )
        .bind(user)
        .fetch_optional(pool)
        .await)
        .map_err(VaultStoreError::from)?)
    }

    /// Whether `user` has a data key in the vault.
    pub async fn has_key(&self, user: &str) -> Result<bool, PersonalError> {
        Ok(self.opening_key(user).await?.is_some())
    }
}

#[cfg(test)]
#[path = "personal_tests.rs"]
mod tests;
