//! Error types. No message, `Display` or `Debug`, ever includes key material, plaintext or
//! ciphertext; at most a key id, which is not secret.

use thiserror::Error;

/// A master key or keyring could not be built from its configuration.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KeyError {
    /// The configuration string is not `<key-id>:<base64 of 32 bytes>`.
    #[error("a master key must be written \"<key-id>:<base64 of 32 bytes>\"")]
    MissingSeparator,
    /// The key id is empty, too long or has characters other than `A-Z a-z 0-9 _ -`.
    #[error("invalid master key id: 1 to 64 characters of A-Z, a-z, 0-9, '_' and '-'")]
    InvalidKeyId,
    /// The key material is not base64.
    #[error("master key material is not valid base64")]
    InvalidBase64,
    /// The key material does not decode to 32 bytes.
    #[error("master key material must be 32 bytes, found {0}")]
    WrongLength(usize),
    /// Two keys of a keyring share an id.
    #[error("key id {0:?} appears more than once in the keyring")]
    DuplicateKeyId(String),
}

/// A compact sealed string (`v1.<key_id>.<nonce>.<ciphertext>`) could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealedParseError {
    /// The string does not start with a known format version (`v1.`).
    #[error("unsupported sealed-secret format version")]
    UnsupportedVersion,
    /// Not four dot-separated parts.
    #[error("malformed sealed secret: expected v1.<key_id>.<nonce>.<ciphertext>")]
    Malformed,
    /// The key id part is not a valid key id.
    #[error("malformed sealed secret: invalid key id")]
    InvalidKeyId,
    /// The nonce part is not base64url of 12 bytes.
    #[error("malformed sealed secret: invalid nonce")]
    InvalidNonce,
    /// The ciphertext part is not base64url, or too short to hold the authentication tags.
    #[error("malformed sealed secret: invalid ciphertext")]
    InvalidCiphertext,
}

/// A sealed secret could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VaultError {
    /// The keyring has no key with the sealed value's key id (rotated out too early?).
    #[error("no master key with id {0:?} in the keyring")]
    UnknownKeyId(String),
    /// Authentication failed: the ciphertext, nonce or key id was altered, or the key known under
    /// this id is not the one the value was sealed with.
    #[error("sealed secret failed authentication (tampered or corrupt)")]
    Tampered,
    /// The value is authentic but was sealed for another owner (different associated data).
    #[error("sealed secret belongs to another owner (associated data mismatch)")]
    WrongAad,
    /// The value is authentic but its plaintext is not UTF-8 (not sealed by this library).
    #[error("sealed secret holds no valid UTF-8 text")]
    InvalidPlaintext,
}
