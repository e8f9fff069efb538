//! # pgstrata-repo-format
//!
//! Every byte pgstrata puts in a repository, and nothing else: no I/O, no async runtime, so all
//! of it is unit-testable and fuzzable.
//!
//! - [`frame`]: blobs of ~1 MiB frames, compressed (zstd, lz4, or raw when that is smaller) and
//!   encrypted (AES-256-GCM, frame bound to blob and position) or checksummed. [`BlobEncoder`]
//!   returns a [`BlobSummary`]; [`BlobDecoder`] is feed/poll.
//! - [`crypto`]: the per-stanza [`DataKey`] and its argon2id-wrapped record [`WrappedKey`].
//! - [`pg`]: PostgreSQL's types — [`pg::Lsn`], [`pg::TimelineId`], [`pg::WalFileName`], page
//!   header and checksum, `pg_control`, the WAL long page header (13 to 18).
//! - [`layout`]: every object key, in one module.
//! - [`meta`]: the versioned stanza info, backup catalog (checksummed envelopes) and the
//!   streaming JSON-lines backup manifest.
//! - [`label`]: backup labels and types.
//!
//! `docs/repo-format.md` is the normative description of these bytes; `fixtures/format/v1` holds
//! golden objects every build must keep decoding.

/// Implements serde for a type through its `Display` and `FromStr` (JSON strings like `0/2000028`).
macro_rules! serde_as_text {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                text.parse().map_err(<D::Error as serde::de::Error>::custom)
            }
        }
    };
}

pub mod crypto;
pub mod digest;
pub mod error;
pub mod frame;
pub mod hex;
pub mod label;
pub mod layout;
pub mod meta;
pub mod pg;
pub mod pgbackrest;

pub use crypto::{DataKey, KdfParams, KeyId, WrappedKey};
pub use digest::Sha256Digest;
pub use error::{FormatError, Result};
pub use frame::{
    BlobDecoder, BlobEncoder, BlobSettings, BlobSummary, Compression, DecodeSummary, FrameSealerHandle, ParallelBlob,
    compressed_shape, decode_blob, decode_blob_parallel, decode_blob_with_summary, encode_blob, seal_compressed,
};
pub use label::{BackupLabel, BackupType};
