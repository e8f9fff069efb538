//! Backup directories the catalog does not list — backups that failed or were killed before
//! their manifest and catalog entry were written — found and removed (the next backup of the
//! same type may resume one that left checkpoints). Used by backup and by expire.

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::meta::BackupCatalog;

use crate::error::CliResult;
use crate::repo::Repo;

/// The labels of the backup directories the catalog does not list: backups that failed or
/// were killed before their manifest and catalog entry were written.
pub(crate) async fn unlisted_backups(repo: &Repo, catalog: &BackupCatalog) -> CliResult<Vec<String>> {
    let backup_root = format!("{}backup", repo.layout.root());
    let dirs = repo.store.list_dirs(&backup_root).await?;
    Ok(dirs.into_iter().filter(|d| !catalog.backups.iter().any(|b| b.label.to_string() == *d)).collect())
}

pub(crate) async fn remove_backup_dir(repo: &Repo, dir: &str) -> CliResult<()> {
    let removed = repo.store.delete_prefix(&format!("{}backup/{dir}/", repo.layout.root())).await?;
    tracing::warn!("removed {removed} objects of the unfinished backup {dir}");
    Ok(())
}

/// Removes the unlisted backups, but (`keep_resumable`) those that wrote checkpoints. Only the
/// lease holder calls this, so no live backup is writing there.
pub(crate) async fn remove_unlisted_backups(
    repo: &Repo,
    catalog: &BackupCatalog,
    keep_resumable: bool,
) -> CliResult<()> {
    for dir in unlisted_backups(repo, catalog).await? {
        let checkpoints = match dir.parse::<BackupLabel>() {
            Ok(label) if keep_resumable => repo.store.list_files(&repo.layout.checkpoint_dir(&label)).await?.len(),
            _ => 0,
        };
        if checkpoints > 0 {
            tracing::info!(
                "backup {dir} stopped with {checkpoints} checkpoints: the next backup of its type resumes it"
            );
        } else {
            remove_backup_dir(repo, &dir).await?;
        }
    }
    Ok(())
}
