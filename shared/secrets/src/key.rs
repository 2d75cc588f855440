//! Master keys and the keyring.

use std::fmt;
use std::str::FromStr;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use rand::{CryptoRng, RngCore};
use secrecy::zeroize::Zeroize;
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::error::KeyError;

/// Length of a master key: AES-256.
pub const KEY_LEN: usize = 32;
const MAX_KEY_ID_LEN: usize = 64;

/// Standard base64 alphabet, padding optional.
const KEY_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether `id` is a valid key id: 1 to 64 characters of `A-Z a-z 0-9 _ -` (so it can stand
/// between the dots of a sealed string and before the colon of a key configuration).
pub fn is_valid_key_id(id: &str) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// One AES-256 master key and its id. The key bytes are zeroed on drop and never printed.
pub struct MasterKey {
    id: String,
    key: SecretBox<[u8; KEY_LEN]>,
}

impl MasterKey {
    /// A key from its id and bytes.
    pub fn new(id: impl Into<String>, key: SecretBox<[u8; KEY_LEN]>) -> Result<Self, KeyError> {
        let id = id.into();
        if !is_valid_key_id(&id) {
            return Err(KeyError::InvalidKeyId);
        }
        Ok(Self { id, key })
    }

    /// A fresh random key.
    pub fn generate<R: RngCore + CryptoRng>(
        id: impl Into<String>,
        rng: &mut R,
    ) -> Result<Self, KeyError> {
        let key = SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| rng.fill_bytes(k));
        Self::new(id, key)
    }

    /// Parses the configuration form `"<key-id>:<base64 of 32 bytes>"`.
    pub fn parse(config: &str) -> Result<Self, KeyError> {
        let (id, material) = config.split_once(':').ok_or(KeyError::MissingSeparator)?;
        if !is_valid_key_id(id) {
            return Err(KeyError::InvalidKeyId);
        }
        let mut bytes = KEY_B64
            .decode(material.trim())
            .map_err(|_| KeyError::InvalidBase64)?;
        if bytes.len() != KEY_LEN {
            let len = bytes.len();
            bytes.zeroize();
            return Err(KeyError::WrongLength(len));
        }
        let key = SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| k.copy_from_slice(&bytes));
        bytes.zeroize();
        Self::new(id, key)
    }

    /// The configuration form `"<key-id>:<base64>"`, e.g. to print a generated key once.
    pub fn to_config_string(&self) -> SecretString {
        let mut material = KEY_B64.encode(self.key.expose_secret());
        let config = format!("{}:{material}", self.id);
        material.zeroize();
        SecretString::from(config)
    }

    /// The key id (not secret).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        self.key.expose_secret()
    }
}

impl FromStr for MasterKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("key", &"[REDACTED]")
            .finish()
    }
}

/// The master keys the vault knows: `current` seals, every key (current and previous) opens.
///
/// Rotation: configure a new current key and move the old one to `previous`; values sealed with
/// it still open, new seals use the new key, and [`Keyring::needs_reseal`] tells which stored
/// values to re-seal before the old key can be dropped.
pub struct Keyring {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl Keyring {
    /// A keyring; key ids must be unique.
    pub fn new(current: MasterKey, previous: Vec<MasterKey>) -> Result<Self, KeyError> {
        let mut seen: Vec<&str> = vec![current.id()];
        for key in &previous {
            if seen.contains(&key.id()) {
                return Err(KeyError::DuplicateKeyId(key.id().to_owned()));
            }
            seen.push(key.id());
        }
        Ok(Self { current, previous })
    }

    /// A keyring from configuration strings (see [`MasterKey::parse`]).
    pub fn parse<'a>(
        current: &str,
        previous: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, KeyError> {
        let current = MasterKey::parse(current)?;
        let previous = previous
            .into_iter()
            .map(MasterKey::parse)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(current, previous)
    }

    /// Makes `new_current` the sealing key; the old current key becomes the first previous key.
    pub fn rotate(self, new_current: MasterKey) -> Result<Self, KeyError> {
        let Self {
            current,
            mut previous,
        } = self;
        previous.insert(0, current);
        Self::new(new_current, previous)
    }

    /// The key new values are sealed with.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// Keys kept only to open older values.
    pub fn previous(&self) -> &[MasterKey] {
        &self.previous
    }

    /// The key with this id, if known.
    pub fn get(&self, key_id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id() == key_id)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current)
            .field("previous", &self.previous)
            .finish()
    }
}
