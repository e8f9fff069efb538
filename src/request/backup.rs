//! `backup` from its options.

use std::time::Duration;

use pgstrata_repo_format::BackupType;

use crate::backup::{BackupRequest, PACK_SIZE, StandbyMode};
use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};

use super::repos::{blob_settings, chosen_repo, stanza_name};

/// `archive-timeout`'s default.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);

pub fn backup(config: &Config) -> CliResult<BackupRequest> {
    let repo = chosen_repo(config);
    let index = repo.index;
    let annotations = crate::config::annotations(config)?.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let standby = match config.get("backup-standby").unwrap_or("n") {
        "y" => StandbyMode::Required,
        "prefer" => StandbyMode::Preferred,
        "n" => StandbyMode::No,
        other => {
            return Err(CliError::new(
                ErrorCode::OptionInvalidValue,
                format!("'{other}' is not valid for 'backup-standby' option (y, n or prefer)"),
            ));
        }
    };
    let exclude = config
        .list("exclude")
        .iter()
        .map(|e| {
            let plain = !e.is_empty()
                && !e.starts_with('/')
                && e.trim_end_matches('/').split('/').all(|c| !c.is_empty() && c != "." && c != "..");
            if plain {
                Ok(e.clone())
            } else {
                Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{e}' is not valid for 'exclude' option: give a path relative to the data directory"),
                ))
            }
        })
        .collect::<CliResult<Vec<_>>>()?;
    let archive_copy = config.bool("archive-copy");
    if archive_copy && !config.bool("archive-check") {
        return Err(CliError::new(
            ErrorCode::OptionInvalid,
            "option 'archive-copy' not valid without option 'archive-check'",
        )
        .hint("archive-copy reads the WAL it stores from the archive: leave archive-check on"));
    }
    Ok(BackupRequest {
        exclude,
        stanza: stanza_name(config)?,
        requested: config.get("type").unwrap_or("incr").parse::<BackupType>()?,
        clusters: super::clusters::clusters(config)?,
        standby,
        online: config.bool("online"),
        start_fast: config.bool("start-fast"),
        delta: config.bool("delta"),
        resume: config.bool("resume"),
        blob: blob_settings(config)?,
        compress_type: config.get("compress-type").unwrap_or("zst").to_string(),
        compress_level: config.int("compress-level").and_then(|v| i32::try_from(v).ok()),
        workers: super::process_max(config),
        checksum_page: config.get("checksum-page") != Some("n"),
        archive_check: config.bool("archive-check"),
        archive_copy,
        archive_timeout: config.duration("archive-timeout").unwrap_or(ARCHIVE_TIMEOUT),
        pack_size: config.size(&format!("repo{index}-bundle-size")).unwrap_or(PACK_SIZE),
        keep: config.bool("keep"),
        annotations,
        lock_path: crate::request::lock_path(config),
        lease_time: crate::request::lease_time(config),
        expire: if config.bool("expire-auto") { Some(super::expire::repo_expiry(config, index)?) } else { None },
        repo,
    })
}
