//! `info` and `verify` from their options.

use pgstrata_repo_format::BackupLabel;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::info::{InfoOutput, InfoRequest};
use crate::verify::VerifyRequest;

use super::repos::{repo_targets, stanza_name};

pub fn info(config: &Config) -> CliResult<InfoRequest> {
    Ok(InfoRequest {
        stanza: config.get("stanza").map(str::to_string),
        repos: repo_targets(config),
        set: config.get("set").map(str::to_string),
        output: match config.get("output") {
            Some("json") => InfoOutput::Json,
            Some("prometheus") => InfoOutput::Prometheus,
            _ => InfoOutput::Text,
        },
        flavor: config.flavor,
    })
}

pub fn verify(config: &Config) -> CliResult<VerifyRequest> {
    let set =
        match config.get("set") {
            Some(s) => Some(s.parse::<BackupLabel>().map_err(|e| {
                CliError::new(ErrorCode::OptionInvalidValue, format!("'{s}' is not a backup label: {e}"))
            })?),
            None => None,
        };
    Ok(VerifyRequest {
        stanza: stanza_name(config)?,
        repos: repo_targets(config),
        set,
        workers: super::process_max(config),
        json: config.get("output") == Some("json"),
    })
}
