//! # pgstrata-storage
//!
//! Moving opaque objects under keys, with one contract on every backend: the local filesystem
//! (a mounted volume; written to a temporary name, fsynced, renamed, directory fsynced), S3,
//! Google Cloud Storage and Azure Blob, all through the `object_store` crate. It knows nothing of
//! the repository format; keys are plain strings relative to the repository root.
//!
//! - [`StorageConfig`] says which store and how to reach it (pgBackRest's `repoN-*` options map
//!   onto it one to one); [`StorageConfig::open`] gives a [`RepoStore`].
//! - [`RepoStore`] is the contract: atomic `put`, create-only `put_new` (first writer wins),
//!   `get`, ranged `get_range`, `head`, streaming `list`, `delete` (missing is fine), and a
//!   streaming [`Upload`] with bounded memory (on S3 and GCS recorded, so that an upload a
//!   killed process left open is aborted by the next [`RepoStore::delete_prefix`]).
//! - [`retry`]: backoff with jitter on retryable failures only, within a total time.
//! - [`fault`]: a fault-injecting wrapper for tests.
//! - [`conformance`]: the suite every backend must pass; the tests run it against each one.

pub mod config;
pub mod conformance;
pub mod error;
pub mod fault;
pub mod local;
pub mod retry;
pub mod staged;
pub mod store;
pub mod upload;

pub use config::{
    AzureAuth, AzureConfig, GcsAuth, GcsConfig, GivenStore, ObjectOptions, S3Config, S3Sse, Secret, StorageConfig,
    StorageTls, UriStyle,
};
pub use error::{Result, StorageError};
pub use retry::RetryPolicy;
pub use staged::Staged;
pub use store::{ObjectInfo, RepoStore};
pub use upload::Upload;
