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
//! - [`inspect`]: `info` and `verify`.
//! - [`stanza`]: `stanza-create`, `-upgrade`, `-delete` and `annotate`.
//! - [`restore`]: `restore` (the target, maps, selection and recovery settings).

pub mod archive;
pub mod backup;
pub mod clusters;
pub mod expire;
pub mod inspect;
pub mod repos;
pub mod restore;
pub mod stanza;

use crate::config::Config;

/// How the command logs: `log-level-*`, `log-path` (the file `<stanza>-<command>.log`),
/// `log-timestamp`; `with_file` false for commands that keep no log (`version`, `help`).
pub fn log_settings(config: &Config, with_file: bool) -> crate::log::LogSettings {
    use crate::log::LogLevel;
    let file_level =
        if with_file { LogLevel::parse(config.get("log-level-file").unwrap_or("off")) } else { LogLevel::Off };
    let file = config.get("log-path").map(|dir| {
        std::path::Path::new(dir).join(format!(
            "{}-{}.log",
            config.get("stanza").unwrap_or("all"),
            config.command.name.replace(':', "-")
        ))
    });
    crate::log::LogSettings {
        console: LogLevel::parse(config.get("log-level-console").unwrap_or("warn")),
        stderr: LogLevel::parse(config.get("log-level-stderr").unwrap_or("warn")),
        file_level,
        file,
        timestamp: config.bool("log-timestamp"),
        walg: config.flavor == crate::config::Flavor::WalG,
    }
}

/// `lock-path`: this host's lock and stop files.
pub fn lock_path(config: &Config) -> std::path::PathBuf {
    std::path::PathBuf::from(config.get("lock-path").unwrap_or("/tmp/pgstrata"))
}

/// `lease-time`: how long a repository's writer lease lasts unrenewed.
pub fn lease_time(config: &Config) -> std::time::Duration {
    config.duration("lease-time").unwrap_or(crate::lease::LEASE_TIME).max(crate::lease::MIN_LEASE_TIME)
}

/// `process-max`: threads and jobs a command may run at once.
pub fn process_max(config: &Config) -> usize {
    config.int("process-max").and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(1)
}
