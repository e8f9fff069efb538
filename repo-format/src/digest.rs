//! SHA-256 digests as a value type, stored in JSON as lower-case hex.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Digest of `data` in one call.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> crate::Result<Self> {
        crate::hex::decode_array(text).map(Self)
    }

    /// 64 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        crate::hex::encode(&self.0)
    }
}

/// SHA-256 over data fed in pieces (a manifest read as it streams in).
#[derive(Clone, Default)]
pub struct Sha256Stream(Sha256);

impl fmt::Debug for Sha256Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sha256Stream")
    }
}

impl Sha256Stream {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Sha256Digest {
        Sha256Digest(self.0.finalize().into())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

impl Serialize for Sha256Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).map_err(D::Error::custom)
    }
}

/// A file's digest as manifests record it: SHA-256 over the concatenated SHA-256 digests of its
/// frame-sized chunks (a hash list). It is as strong as a digest of the plaintext, and parts of
/// a large file can be hashed on different threads and combined in order.
pub fn file_digest(chunks: &[Sha256Digest]) -> Sha256Digest {
    let mut h = Sha256::new();
    for c in chunks {
        h.update(c.0);
    }
    Sha256Digest(h.finalize().into())
}

/// Chunk digests and file digest of data held in memory, for a frame size.
pub fn digests_of(data: &[u8], frame_size: usize) -> (Vec<Sha256Digest>, Sha256Digest) {
    let chunks: Vec<Sha256Digest> = data.chunks(frame_size.max(1)).map(Sha256Digest::of).collect();
    let file = file_digest(&chunks);
    (chunks, file)
}

/// An incremental SHA-256 that also counts the bytes it saw.
#[derive(Clone, Default, Debug)]
pub struct CountingHasher {
    hasher: Sha256,
    len: u64,
}

impl CountingHasher {
    pub fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.len += data.len() as u64;
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn finish(self) -> (u64, Sha256Digest) {
        (self.len, Sha256Digest(self.hasher.finalize().into()))
    }
}
