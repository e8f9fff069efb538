//! The request layer: what the options (a command line, configuration files, the environment)
//! say, resolved once into the typed values the engine takes. Front ends call it; the engine
//! never reads an option.
//!
//! - [`repos`]: each repository's storage and cipher ([`crate::repo::RepoTarget`]), the blob
//!   settings new objects are written with, the stanza name, and the endpoints of other hosts.
//! - [`clusters`]: each cluster's data directory and server ([`crate::postgres::ClusterTarget`]).
//! - [`archive`]: `archive-push`, `archive-get` and their workers.
//! - [`backup`]: `backup` (the clusters, the repository, how to copy and what to record).
//! - [`expire`]: `expire` (each repository's retention).
//! - [`restore`]: `restore` (the target, maps, selection and recovery settings).

pub mod archive;
pub mod backup;
pub mod clusters;
pub mod expire;
pub mod repos;
pub mod restore;

use crate::config::Config;

/// `process-max`: threads and jobs a command may run at once.
pub fn process_max(config: &Config) -> usize {
    config.int("process-max").and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(1)
}
