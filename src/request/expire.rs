//! `expire` from its options: each repository's retention, the choice of what goes.

use crate::config::Config;
use crate::error::CliResult;
use crate::expire::plan::FullRetention;
use crate::expire::{Choice, ExpireRequest, RepoExpiry, Retention, set_choice};

use super::repos::{blob_settings, repo_indexes, repo_target, stanza_name};

/// `retention-history`'s default, in days.
const HISTORY_DAYS: i64 = 365;

pub fn expire(config: &Config) -> CliResult<ExpireRequest> {
    expire_choice(config, set_choice(config.get("set"))?)
}

/// An expire of what `choice` names (the WAL-G front end's `delete` chooses by itself).
pub fn expire_choice(config: &Config, choice: Choice) -> CliResult<ExpireRequest> {
    Ok(ExpireRequest {
        stanza: stanza_name(config)?,
        repos: repo_indexes(config)
            .into_iter()
            .map(|i| Ok((repo_target(config, i), repo_expiry(config, i)?)))
            .collect::<CliResult<_>>()?,
        choice,
        repo_given: config.get("repo").is_some(),
        lock_path: crate::request::lock_path(config),
        lease_time: crate::request::lease_time(config),
    })
}

/// How repository `index` is expired: `repoN-retention-*`, `--dry-run`.
pub fn repo_expiry(config: &Config, index: u32) -> CliResult<RepoExpiry> {
    Ok(RepoExpiry {
        retention: retention(config, index)?,
        history_days: config.int(&format!("repo{index}-retention-history")).unwrap_or(HISTORY_DAYS),
        dry_run: config.bool("dry-run"),
        blob: blob_settings(config)?,
    })
}

/// `repoN-retention-full` (count or days by `-full-type`), `-diff`, `-archive`, `-archive-type`.
fn retention(config: &Config, index: u32) -> CliResult<Retention> {
    let int = |name: &str| config.int(&format!("repo{index}-{name}")).and_then(|v| u64::try_from(v).ok());
    let by_time = config.get(&format!("repo{index}-retention-full-type")) == Some("time");
    let archive_type = config.get(&format!("repo{index}-retention-archive-type")).unwrap_or("full").parse()?;
    Ok(Retention {
        full: int("retention-full").map(|n| if by_time { FullRetention::Days(n) } else { FullRetention::Count(n) }),
        diff: int("retention-diff"),
        archive: int("retention-archive"),
        archive_type,
    })
}
