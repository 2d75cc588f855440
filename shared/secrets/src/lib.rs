//! The secrets vault of appreg (DESIGN.md §2 "Secrets"): client secrets and API keys are stored
//! sealed with AES-256-GCM under a rotatable master [`Keyring`], bound to their owner by
//! associated data, and referred to in events only by a [`fingerprint`].
//!
//! ```
//! use appreg_secrets::{Keyring, MasterKey, Sealed};
//! use secrecy::{ExposeSecret, SecretString};
//!
//! let keyring = Keyring::new(MasterKey::generate("k1", &mut rand::rngs::OsRng).unwrap(), vec![]).unwrap();
//! let secret = SecretString::from("s3cr3t");
//! let sealed = keyring.seal(&secret, b"application/42/client_secret");
//! let stored = sealed.to_compact(); // "v1.k1.<nonce>.<ciphertext>"
//! let opened = keyring.open(&stored.parse::<Sealed>().unwrap(), b"application/42/client_secret").unwrap();
//! assert_eq!(opened.expose_secret(), "s3cr3t");
//! assert!(keyring.open(&sealed, b"application/43/client_secret").is_err());
//! ```
//!
//! The sealing is pure (no I/O but the operating system's random numbers); [`store`] keeps sealed
//! values in the vault table of the event store's database.

mod error;
mod key;
pub mod personal;
mod reseal;
pub mod store;
mod vault;

pub use error::{KeyError, SealedParseError, VaultError};
pub use key::{is_valid_key_id, Keyring, MasterKey, KEY_LEN};
pub use personal::{PersonalError, PersonalKeys};
pub use reseal::ResealSummary;
pub use store::{SecretStore, VaultStoreError};
pub use vault::Sealed;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

fn sha256_hex(secret: &SecretString) -> String {
    let digest = Sha256::digest(secret.expose_secret().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A short, non-reversible identification of a secret, safe to put in events and logs:
/// `sha256:` followed by the first 16 hex characters (64 bits) of its SHA-256.
pub fn fingerprint(secret: &SecretString) -> String {
    let hex = sha256_hex(secret);
    format!("sha256:{}", &hex[..16])
}

/// The full lowercase hex SHA-256 of a secret, for looking API keys up by value (the key itself is
/// high-entropy random, so an unsalted hash is a safe index).
pub fn lookup_hash(secret: &SecretString) -> String {
    sha256_hex(secret)
}

#[cfg(test)]
mod tests;
