//! `stanza-create`, `stanza-upgrade`, `stanza-delete` and `annotate` from their options.

use pgstrata_repo_format::BackupLabel;

use crate::annotate::AnnotateRequest;
use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::stanza::StanzaRequest;

use super::repos::{blob_settings, repo_targets, stanza_name};

/// A stanza command; `clusters_needed`: create and upgrade read the cluster (delete only looks
/// for `pg1-path`'s `postmaster.pid` when one is configured).
pub fn stanza(config: &Config, clusters_needed: bool) -> CliResult<StanzaRequest> {
    let clusters = match super::clusters::clusters(config) {
        Ok(c) => c,
        Err(_) if !clusters_needed => Vec::new(),
        Err(e) => return Err(e),
    };
    Ok(StanzaRequest {
        stanza: stanza_name(config)?,
        repos: repo_targets(config),
        clusters,
        online: config.bool("online"),
        blob: blob_settings(config)?,
        lock_path: super::lock_path(config),
        lease_time: super::lease_time(config),
        force: config.bool("force"),
    })
}

pub fn annotate(config: &Config) -> CliResult<AnnotateRequest> {
    let label: BackupLabel = config
        .require("set")?
        .parse()
        .map_err(|e| CliError::new(ErrorCode::OptionInvalidValue, format!("--set is not a backup label: {e}")))?;
    Ok(AnnotateRequest {
        stanza: stanza_name(config)?,
        repos: repo_targets(config),
        label,
        changes: crate::config::annotations(config)?,
        keep: config.get("keep").map(|v| v == "y"),
        blob: blob_settings(config)?,
        lease_time: super::lease_time(config),
    })
}
