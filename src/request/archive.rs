//! `archive-push` and `archive-get` (and their workers) from their options.

use std::path::PathBuf;
use std::time::Duration;

use crate::archive::ArchiveRequest;
use crate::config::Config;
use crate::error::CliResult;

use super::repos::{blob_settings, repo_targets, stanza_name};

/// How long an asynchronous push waits for its worker by default (`archive-timeout`).
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `archive-get-queue-max`'s default.
const GET_QUEUE_MAX: u64 = 128 << 20;

pub fn archive(config: &Config) -> CliResult<ArchiveRequest> {
    // archive-get writes no object: a compression setting it cannot use must not stop recovery.
    let blob = match blob_settings(config) {
        Err(_) if config.command.name.starts_with("archive-get") => pgstrata_repo_format::BlobSettings::default(),
        other => other?,
    };
    Ok(ArchiveRequest {
        stanza: stanza_name(config)?,
        repos: repo_targets(config),
        blob,
        workers: super::process_max(config),
        asynchronous: config.bool("archive-async"),
        spool_path: PathBuf::from(config.get("spool-path").unwrap_or("/var/spool/pgstrata")),
        lock_path: crate::request::lock_path(config),
        timeout: config.duration("archive-timeout").unwrap_or(ARCHIVE_TIMEOUT),
        push_queue_max: config.size("archive-push-queue-max"),
        get_queue_max: config.size("archive-get-queue-max").unwrap_or(GET_QUEUE_MAX),
        pg_path: config.get("pg1-path").map(PathBuf::from),
        pg_paths: config
            .pg_indexes_set()
            .into_iter()
            .filter_map(|n| config.get(&format!("pg{n}-path")).map(str::to_string))
            .collect(),
        // Under WAL-G's name a worker takes its settings from the environment it inherits, as
        // the verb that starts it does: its command line is the command alone.
        worker_args: if config.flavor == crate::config::Flavor::WalG { Vec::new() } else { config.command_line_args() },
        params: config.params.clone(),
    })
}
