//! `expire`: removes the backups and the archived WAL past a repository's retention, after every
//! backup (`expire-auto`) or on its own (`--set`, `--dry-run`). What goes is an [`ExpirePlan`];
//! carrying it out is ordered so a kill at any moment loses nothing and a rerun finishes the
//! job: under the repository's lease, the catalog without the expired backups is written first
//! (no reader is left pointing at a removed object), then their directories go, then the WAL.
//! A rerun removes the directories a killed run left (unlisted, without checkpoints) and
//! computes the same WAL to remove.

pub mod plan;

use std::path::PathBuf;
use std::time::Duration;

use pgstrata_repo_format::{BackupLabel, BlobSettings};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::Lease;
use crate::repo::{Repo, RepoTarget, open_repo_writing};
pub use plan::{Choice, DirVerdict, ExpirePlan, Retention, WalPosition};

/// How one repository is expired: its retention and how its catalog is written.
#[derive(Clone, Debug)]
pub struct RepoExpiry {
    pub retention: Retention,
    /// `repoN-retention-history`: days an expired backup's manifest is kept (0: none).
    pub history_days: i64,
    /// `--dry-run`: say what would go, remove nothing.
    pub dry_run: bool,
    pub blob: BlobSettings,
}

/// What `expire` was asked for, resolved once by a front end.
#[derive(Clone, Debug)]
pub struct ExpireRequest {
    pub stanza: String,
    /// Each repository with its retention (`--repo`, else every one configured).
    pub repos: Vec<(RepoTarget, RepoExpiry)>,
    pub choice: Choice,
    /// `--repo` was given: `--set` must be in that repository.
    pub repo_given: bool,
    /// `lock-path` (stop files) and `lease-time`.
    pub lock_path: PathBuf,
    pub lease_time: Duration,
}

/// Parses `--set` for expire.
pub fn set_choice(label: Option<&str>) -> CliResult<Choice> {
    match label {
        Some(label) => Ok(Choice::Set(label.parse::<BackupLabel>().map_err(|e| {
            CliError::new(ErrorCode::OptionInvalidValue, format!("'{label}' is not a backup label: {e}"))
        })?)),
        None => Ok(Choice::Retention),
    }
}

/// Expires what the request's choice names on each of its repositories, each under its lease.
pub fn run(request: &ExpireRequest) -> CliResult<()> {
    let choice = &request.choice;
    crate::control::check_not_stopped_in(&request.lock_path, Some(&request.stanza))?;
    crate::runtime::runtime()?.block_on(async {
        let mut failed = None;
        let mut found = false;
        for (target, expiry) in &request.repos {
            let index = target.index;
            let repo = open_repo_writing(target, &request.stanza).await?;
            if let Choice::Set(label) = choice
                && !request.repo_given
                && !repo.load_catalog().await?.backups.iter().any(|b| &b.label == label)
                && !crate::pgbackrest::backup_info(repo.pgbackrest(), &request.stanza)
                    .await?
                    .is_some_and(|info| info.backups.iter().any(|b| b.label == label.as_str()))
            {
                continue;
            }
            found = true;
            let lease = Lease::acquire(&repo.store, &repo.layout, index, "expire", request.lease_time).await?;
            let done = expire(expiry, &repo, &lease, choice).await;
            lease.release().await;
            if let Err(e) = done {
                tracing::error!("expire of {}: {}", repo.name(), e.message);
                failed = Some(e);
            }
        }
        if !found && let Choice::Set(label) = choice {
            return Err(CliError::new(
                ErrorCode::BackupSetInvalid,
                format!("backup set {label} does not exist in any repository"),
            )
            .hint("run info to see the backups in the repository"));
        }
        failed.map_or(Ok(()), Err)
    })
}

/// Expires one repository under `lease` (held by the caller: `expire`, or `backup` after a
/// successful backup).
pub async fn expire(expiry: &RepoExpiry, repo: &Repo, lease: &Lease, choice: &Choice) -> CliResult<()> {
    let dry = expiry.dry_run;
    let say = if dry { "[DRY-RUN] " } else { "" };
    let (catalog, read) = repo.load_catalog_for_update().await?;
    // pgBackRest's backups in the same repository count alike (a repository taken over from
    // pgBackRest): one retention over both.
    let access = repo.pgbackrest();
    let mut foreign = crate::pgbackrest::backup_info(access, repo.layout.stanza()).await?;
    let mut merged = catalog.clone();
    if let Some(info) = &foreign {
        crate::pgbackrest::merge_catalog(&mut merged, info, &repo.info);
    }
    let is_foreign = |label: &BackupLabel| {
        foreign.as_ref().is_some_and(|f| f.backups.iter().any(|b| b.label == label.as_str()))
            && !catalog.backups.iter().any(|b| &b.label == label)
    };
    let plan = ExpirePlan::new(&merged, &expiry.retention, choice, repo.index, crate::runtime::unix_now())?;
    plan.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let (foreign_expired, own_expired): (Vec<_>, Vec<_>) = plan.expired.iter().partition(|b| is_foreign(&b.label));
    if !plan.expired.is_empty() {
        let labels: Vec<String> =
            plan.expired.iter().map(|b| format!("{} ({})", b.label, b.backup_type.as_str())).collect();
        tracing::info!("{say}repo{}: expire backup set {}", repo.index, labels.join(", "));
        if !dry && !own_expired.is_empty() {
            lease.check()?;
            let mut retained = plan.retained.clone();
            retained.backups.retain(|b| !is_foreign(&b.label));
            repo.save_catalog(&retained, expiry.blob, &read).await?;
        }
    }
    // pgBackRest's backups as pgBackRest's expire removes them: backup.info (and its copy)
    // written without them first, then their directories.
    if !dry
        && !foreign_expired.is_empty()
        && let Some(info) = foreign.as_mut()
    {
        // pgBackRest may still run on another pod (a rolling change): a backup.info it wrote
        // since the plan was made is not overwritten with an older list (its new backup would
        // become an orphan pgBackRest's own expire removes). The next expire plans again.
        let now = crate::pgbackrest::backup_info(access, repo.layout.stanza()).await?;
        if now.as_ref().map(|n| &n.file) != Some(&info.file) {
            return Err(CliError::new(
                ErrorCode::LockAcquire,
                format!(
                    "repo{}: pgBackRest's backup.info changed while expire ran; nothing of it was expired",
                    repo.index
                ),
            )
            .hint("is pgBackRest still running on another host? run expire again"));
        }
        for b in &foreign_expired {
            info.remove_backup(b.label.as_str());
        }
        lease.check()?;
        crate::pgbackrest::save_backup_info(access, repo.layout.stanza(), info).await?;
        for b in &foreign_expired {
            lease.check()?;
            let removed = repo.store.delete_prefix(&format!("backup/{}/{}/", repo.layout.stanza(), b.label)).await?;
            tracing::info!("repo{}: removed pgBackRest's backup {} ({removed} objects)", repo.index, b.label);
        }
    }
    let history_days = expiry.history_days;
    if !dry {
        for b in &own_expired {
            lease.check()?;
            if history_days > 0 {
                keep_history(repo, &b.label).await;
            }
            let removed = repo.store.delete_prefix(&repo.layout.backup_dir(&b.label)).await?;
            tracing::info!("repo{}: removed backup {} ({removed} objects)", repo.index, b.label);
        }
        // What an earlier, killed expire (or a backup that died before its first checkpoint) left.
        lease.check()?;
        crate::backup::unlisted::remove_unlisted_backups(repo, &plan.retained, true).await?;
        prune_history(repo, history_days).await?;
    }
    expire_wal(repo, lease, &plan, dry, &format!("{}archive", repo.layout.root())).await?;
    expire_wal(repo, lease, &plan, dry, &format!("archive/{}", repo.layout.stanza())).await?;
    Ok(())
}

/// Keeps an expired backup's manifest (`history/<label>.manifest`), pgBackRest's backup history.
async fn keep_history(repo: &Repo, label: &BackupLabel) {
    let (from, to) = (repo.layout.manifest(label), repo.layout.history(label));
    if let Err(e) = repo.store.copy(&from, &to).await {
        tracing::warn!("unable to keep the manifest of backup {label} in {to}: {e}");
    }
}

/// Removes kept manifests of backups that started more than `days` ago.
async fn prune_history(repo: &Repo, days: i64) -> CliResult<()> {
    let cutoff = crate::runtime::unix_now().saturating_sub(days.saturating_mul(86_400));
    let old: Vec<String> = repo
        .store
        .list_files(&repo.layout.history_dir())
        .await?
        .into_iter()
        .map(|o| o.key)
        .filter(|key| {
            let name = key.rsplit('/').next().unwrap_or("");
            let label = name.strip_suffix(".manifest").and_then(|l| l.parse::<BackupLabel>().ok());
            label.and_then(|l| l.started_at()).is_some_and(|t| t < cutoff)
        })
        .collect();
    if !old.is_empty() {
        repo.store.delete_many(&old).await?;
        tracing::info!("repo{}: removed {} kept manifests older than {days} days", repo.index, old.len());
    }
    Ok(())
}

/// Removes the archived WAL the plan no longer needs, directory by directory (memory bounded by
/// one `<timeline><log>` directory's listing). History files stay.
async fn expire_wal(repo: &Repo, lease: &Lease, plan: &ExpirePlan, dry: bool, archive_root: &str) -> CliResult<()> {
    let say = if dry { "[DRY-RUN] " } else { "" };
    let Some((_, from, boundary)) = &plan.wal_from else { return Ok(()) };
    let kept = match boundary {
        Some(label) => format!("WAL kept from {from}, backup {label}, and each retained backup's own range"),
        None => "no backup left to keep WAL from but those marked keep, whose own ranges stay".to_string(),
    };
    for archive_id in repo.store.list_dirs(archive_root).await? {
        let Some(db_id) = archive_id.rsplit_once('-').and_then(|(_, id)| id.parse::<u32>().ok()) else {
            tracing::warn!("repo{}: {archive_root}/{archive_id} is not an archive id; left alone", repo.index);
            continue;
        };
        let dir_root = format!("{archive_root}/{archive_id}/");
        let mut removed = Removed::default();
        for dir in repo.store.list_dirs(&dir_root).await? {
            let prefix = format!("{dir_root}{dir}/");
            let verdict = if dir.len() == 16 && dir.bytes().all(|c| c.is_ascii_hexdigit()) {
                plan.dir_verdict(db_id, &dir)
            } else {
                DirVerdict::KeepAll
            };
            let doomed: Vec<String> = match verdict {
                DirVerdict::KeepAll => continue,
                DirVerdict::RemoveAll | DirVerdict::Each => repo
                    .store
                    .list_files(&prefix)
                    .await?
                    .into_iter()
                    .map(|o| o.key)
                    .filter(|key| {
                        let segment = key.rsplit('/').next().and_then(|name| name.get(..24)).unwrap_or("");
                        verdict == DirVerdict::RemoveAll || !plan.keeps(WalPosition { db_id, segment })
                    })
                    .collect(),
            };
            if doomed.is_empty() {
                continue;
            }
            removed.note(&doomed);
            if !dry {
                lease.check()?;
                if verdict == DirVerdict::RemoveAll {
                    repo.store.delete_prefix(&prefix).await?;
                } else {
                    repo.store.delete_many(&doomed).await?;
                }
            }
        }
        match (removed.first, removed.last) {
            (Some(first), Some(last)) => tracing::info!(
                "{say}repo{}: remove archive {archive_id}: {} files from {first} to {last} ({kept})",
                repo.index,
                removed.count
            ),
            _ => tracing::info!("{say}repo{}: no archive to remove in {archive_id}", repo.index),
        }
    }
    Ok(())
}

/// What was removed from one archive id, for the log.
#[derive(Default)]
struct Removed {
    count: u64,
    first: Option<String>,
    last: Option<String>,
}

impl Removed {
    fn note(&mut self, keys: &[String]) {
        let name = |k: &String| k.rsplit('/').next().and_then(|n| n.get(..24)).map(str::to_string);
        self.count += keys.len() as u64;
        let (lo, hi) = (keys.iter().filter_map(name).min(), keys.iter().filter_map(name).max());
        self.first = match (self.first.take(), lo) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last = match (self.last.take(), hi) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}
