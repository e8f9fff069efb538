//! Keys: the random data key of a stanza and its passphrase-wrapped record.
//!
//! Every encrypted frame in a stanza is sealed with one random 256-bit [`DataKey`]. The key is
//! stored only wrapped: AES-256-GCM under a key-encryption key derived from the passphrase
//! (`repo1-cipher-pass`) with argon2id, whose parameters and salt are recorded in the
//! [`WrappedKey`] so they can be raised later without breaking old stanzas. Unwrapping with the
//! wrong passphrase fails the GCM tag check of a record that is otherwise intact (the record sits
//! inside checksummed metadata), so it is reported as [`FormatError::WrongPassphrase`].

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit, Tag};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::error::{FormatError, Result};

/// Length of the per-stanza data key.
pub const KEY_LEN: usize = 32;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
pub const TAG_LEN: usize = 16;

/// Fills `buf` from the operating system's random source.
pub fn random_bytes(buf: &mut [u8]) {
    // The OS random source failing is not recoverable and not a data error.
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("operating system random source failed");
}

/// The random key that seals every encrypted frame of a stanza.
#[derive(Clone)]
pub struct DataKey {
    bytes: [u8; KEY_LEN],
    id: KeyId,
    cipher: Aes256Gcm,
}

/// A short public fingerprint of a data key, written in object headers so that an object sealed
/// under another key is reported as such instead of as corruption.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyId(#[serde(with = "crate::hex::array")] pub [u8; 8]);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut bytes = [0u8; KEY_LEN];
        random_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// A key from known bytes (tests and fixtures).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"pgstrata key id v1\0");
        hasher.update(bytes);
        let digest: [u8; 32] = hasher.finalize().into();
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        let cipher = Aes256Gcm::new(&Key::<Aes256Gcm>::from(bytes));
        Self { bytes, id: KeyId(id), cipher }
    }

    /// The key's public fingerprint.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// Encrypts `buf` in place; returns the tag.
    pub(crate) fn seal(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let nonce = Nonce::from(*nonce);
        // AES-GCM only fails for messages over 64 GiB; frames are capped far below that.
        #[allow(clippy::expect_used)]
        let tag =
            self.cipher.encrypt_inout_detached(&nonce, aad, buf.into()).expect("frame exceeds AES-GCM message limit");
        tag.into()
    }

    /// Decrypts `buf` in place; false when the tag does not verify.
    pub(crate) fn open(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool {
        let nonce = Nonce::from(*nonce);
        let tag = Tag::<Aes256Gcm>::from(*tag);
        self.cipher.decrypt_inout_detached(&nonce, aad, buf.into(), &tag).is_ok()
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        write!(f, "DataKey({})", self.id)
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.bytes = [0u8; KEY_LEN];
    }
}

/// argon2id cost parameters, recorded with every wrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// The defaults for new stanzas: 7 MiB, 5 passes, 1 lane — of the argon2id settings OWASP's
    /// password storage guidance gives as equally strong (19 MiB x 2, 12 MiB x 3, 9 MiB x 4,
    /// 7 MiB x 5), the one with the least memory. `archive-push` and `archive-get` run once per
    /// WAL segment and derive the key once each: its memory is part of every call's peak (19 MiB
    /// made an encrypted `archive-get` 31 MiB), its time a part of every call's budget (about the
    /// same for each of those settings). Stanzas made before keep the parameters they record.
    pub const DEFAULT: Self = Self { m_cost: 7 * 1024, t_cost: 5, p_cost: 1 };

    /// Cheap parameters for tests and fixtures only.
    pub const TEST: Self = Self { m_cost: 64, t_cost: 1, p_cost: 1 };

    /// The most a repository may ask for: parameters are read from the repository, and a
    /// damaged or hostile stanza info must not make every `archive-get` allocate gigabytes or
    /// spin for minutes. 1 GiB, 16 passes, 16 lanes.
    pub const MAX: Self = Self { m_cost: 1 << 20, t_cost: 16, p_cost: 16 };

    fn check(self) -> Result<()> {
        let max = Self::MAX;
        if self.m_cost > max.m_cost || self.t_cost > max.t_cost || self.p_cost > max.p_cost {
            return Err(FormatError::invalid(
                "key derivation parameters",
                format!(
                    "memory {} KiB, {} passes, {} lanes exceed the limits ({} KiB, {}, {})",
                    self.m_cost, self.t_cost, self.p_cost, max.m_cost, max.t_cost, max.p_cost
                ),
            ));
        }
        Ok(())
    }
}

/// A data key wrapped under a passphrase: the record stored in the stanza info.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrappedKey {
    /// Always `argon2id` in this version.
    pub kdf: String,
    pub params: KdfParams,
    #[serde(with = "crate::hex::array")]
    pub salt: [u8; 16],
    #[serde(with = "crate::hex::array")]
    pub nonce: [u8; NONCE_LEN],
    /// The data key encrypted, followed by the GCM tag.
    #[serde(with = "crate::hex::array")]
    pub sealed: [u8; KEY_LEN + TAG_LEN],
    /// Fingerprint of the wrapped data key, checked after unwrapping.
    pub key_id: KeyId,
}

const WRAP_AAD: &[u8] = b"pgstrata wrapped data key v1";

fn derive_kek(passphrase: &[u8], salt: &[u8; 16], params: KdfParams) -> Result<DataKey> {
    if passphrase.is_empty() {
        return Err(FormatError::invalid("passphrase", "it is empty"));
    }
    params.check()?;
    let argon_params = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(KEY_LEN))
        .map_err(|e| FormatError::invalid("key derivation parameters", e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, argon_params);
    let mut kek = [0u8; KEY_LEN];
    argon
        .hash_password_into(passphrase, salt, &mut kek)
        .map_err(|e| FormatError::invalid("key derivation", e.to_string()))?;
    Ok(DataKey::from_bytes(kek))
}

impl WrappedKey {
    /// Wraps `key` under `passphrase`.
    pub fn wrap(key: &DataKey, passphrase: &[u8], params: KdfParams) -> Result<Self> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        let kek = derive_kek(passphrase, &salt, params)?;
        let mut buf = key.bytes;
        let tag = kek.seal(&nonce, WRAP_AAD, &mut buf);
        let mut sealed = [0u8; KEY_LEN + TAG_LEN];
        sealed[..KEY_LEN].copy_from_slice(&buf);
        sealed[KEY_LEN..].copy_from_slice(&tag);
        Ok(Self { kdf: "argon2id".to_string(), params, salt, nonce, sealed, key_id: key.id() })
    }

    /// Recovers the data key; [`FormatError::WrongPassphrase`] when the passphrase is not the one
    /// it was wrapped with.
    pub fn unwrap_key(&self, passphrase: &[u8]) -> Result<DataKey> {
        if self.kdf != "argon2id" {
            return Err(FormatError::invalid("wrapped key", format!("unknown key derivation {:?}", self.kdf)));
        }
        let kek = derive_kek(passphrase, &self.salt, self.params)?;
        let mut buf = [0u8; KEY_LEN];
        buf.copy_from_slice(&self.sealed[..KEY_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&self.sealed[KEY_LEN..]);
        if !kek.open(&self.nonce, WRAP_AAD, &mut buf, &tag) {
            return Err(FormatError::WrongPassphrase);
        }
        let key = DataKey::from_bytes(buf);
        if key.id() != self.key_id {
            return Err(FormatError::corrupt("wrapped key", "unwrapped key does not match its recorded id"));
        }
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_then_unwrap_gives_the_same_key() {
        let key = DataKey::generate();
        let wrapped = WrappedKey::wrap(&key, b"correct horse", KdfParams::TEST).expect("wrap");
        let back = wrapped.unwrap_key(b"correct horse").expect("unwrap");
        assert_eq!(back.id(), key.id());
        assert_eq!(back.bytes, key.bytes);
    }

    #[test]
    fn wrong_passphrase_is_reported_as_such() {
        let key = DataKey::generate();
        let wrapped = WrappedKey::wrap(&key, b"correct horse", KdfParams::TEST).expect("wrap");
        let err = wrapped.unwrap_key(b"battery staple").expect_err("must fail");
        assert!(matches!(err, FormatError::WrongPassphrase), "{err}");
        assert!(err.to_string().contains("wrong passphrase"));
    }

    #[test]
    fn empty_passphrase_is_refused() {
        let key = DataKey::generate();
        assert!(WrappedKey::wrap(&key, b"", KdfParams::TEST).is_err());
        // Parameters read from a repository are capped before any memory is allocated.
        let mut hostile = WrappedKey::wrap(&key, b"correct horse", KdfParams::TEST).expect("wrap");
        hostile.params.m_cost = u32::MAX;
        let e = hostile.unwrap_key(b"correct horse").expect_err("capped");
        assert!(e.to_string().contains("exceed the limits"), "{e}");
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = DataKey::from_bytes([0xab; KEY_LEN]);
        assert!(!format!("{key:?}").contains("abab"));
    }
}
