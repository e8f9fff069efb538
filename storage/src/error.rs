//! Storage errors by meaning, each naming the object and the store.

use thiserror::Error;

/// A failed storage operation. `store` is a human description such as `s3://bucket/prefix`.
#[derive(Debug, Error)]
pub enum StorageError {
    /// The object does not exist.
    #[error("{key} not found in {store}")]
    NotFound { store: String, key: String },

    /// A create-only write found the object already there.
    #[error("{key} already exists in {store}")]
    AlreadyExists { store: String, key: String },

    /// A conditional write found the object changed since the version it was read at.
    #[error("{key} in {store} changed since it was read")]
    Changed { store: String, key: String },

    /// The credentials were refused or lack permission.
    #[error(
        "access to {key} in {store} denied: {detail}\nHINT: check the repository credentials and their permissions"
    )]
    PermissionDenied { store: String, key: String, detail: String },

    /// The store kept failing with errors worth retrying until the retry budget ran out.
    #[error("unable to {op} {key} in {store} after {attempts} attempts: {detail}\nHINT: is the storage reachable?")]
    Unavailable { store: String, op: &'static str, key: String, attempts: u32, detail: String },

    /// The storage configuration is incomplete or wrong.
    #[error("invalid storage configuration: {0}")]
    Config(String),

    /// Any other failure.
    #[error("unable to {op} {key} in {store}: {detail}")]
    Other { store: String, op: &'static str, key: String, detail: String },
}

impl StorageError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    pub fn is_changed(&self) -> bool {
        matches!(self, Self::Changed { .. })
    }

    pub fn is_already_exists(&self) -> bool {
        matches!(self, Self::AlreadyExists { .. })
    }
}

/// Shorthand.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Renders an object_store error with its sources, one `: ` apart, without repeating text.
pub fn describe(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let piece = s.to_string();
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = s.source();
    }
    text
}
