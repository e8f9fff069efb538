//! The one error type of the format crate: every way bytes can fail to be what we expect.

use thiserror::Error;

/// A failure to encode or decode repository bytes.
///
/// Variants are split by what the caller should do about them: a wrong passphrase is the user's
/// to fix, a key mismatch means the object is damaged or belongs to another repository, corruption and
/// truncation mean the object is damaged, and an unknown version means this build is too old.
#[derive(Debug, Error)]
pub enum FormatError {
    /// The passphrase does not unwrap the stanza's data key.
    #[error("wrong passphrase: it does not unlock the repository key")]
    WrongPassphrase,

    /// The object was encrypted, but no key was supplied to read it.
    #[error("{what} is encrypted and no passphrase was given (set repo1-cipher-pass)")]
    KeyRequired { what: String },

    /// The object was sealed with a different data key than the one supplied. The supplied key
    /// was unwrapped by the passphrase, so the passphrase is right: the object is damaged or was
    /// put there from another repository.
    #[error("{what} is corrupt or not this repository's: sealed under key id {found}, the repository's is {expected}")]
    KeyMismatch { what: String, found: String, expected: String },

    /// The bytes do not start like an object of the expected kind.
    #[error("{what} is not a pgstrata object: {detail}")]
    NotAnObject { what: String, detail: String },

    /// A version number this build does not know.
    #[error("{what} has format version {found}; this build reads versions up to {supported}")]
    UnsupportedVersion { what: String, found: u32, supported: u32 },

    /// Well-formed, but describes something this build does not handle (a PostgreSQL built
    /// with another page size, say).
    #[error("{what}: {detail}")]
    Unsupported { what: String, detail: String },

    /// The bytes were altered, reordered or damaged: a checksum or authentication tag failed.
    #[error("{what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },

    /// The object ends before its last frame.
    #[error("{what} is truncated: {detail}")]
    Truncated { what: String, detail: String },

    /// A value that cannot be encoded or a parameter out of range.
    #[error("invalid {what}: {detail}")]
    Invalid { what: String, detail: String },
}

impl FormatError {
    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Corrupt { what: what.into(), detail: detail.into() }
    }

    pub(crate) fn truncated(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Truncated { what: what.into(), detail: detail.into() }
    }

    pub(crate) fn invalid(what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::Invalid { what: what.into(), detail: detail.into() }
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = FormatError> = std::result::Result<T, E>;
