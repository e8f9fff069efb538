//! `annotate --set=LABEL [--annotation=key=value]... [--keep|--no-keep]`: changes a backup's
//! annotations (pgBackRest 2.41's command; an empty value removes the key) and its keep mark,
//! which `expire` honours. Under the repository's lease, in every repository holding the set
//! (or `--repo`).

use std::collections::BTreeMap;
use std::time::Duration;

use pgstrata_repo_format::{BackupLabel, BlobSettings};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::Lease;
use crate::repo::{RepoTarget, open_repo};

/// What `annotate` was asked for, resolved once by a front end.
#[derive(Clone, Debug)]
pub struct AnnotateRequest {
    pub stanza: String,
    pub repos: Vec<RepoTarget>,
    /// `--set`.
    pub label: BackupLabel,
    /// `--annotation key=value` (an empty value removes the key).
    pub changes: BTreeMap<String, String>,
    /// `--keep` / `--no-keep`, when given.
    pub keep: Option<bool>,
    pub blob: BlobSettings,
    pub lease_time: Duration,
}

pub fn run(request: &AnnotateRequest) -> CliResult<()> {
    let (stanza, label, changes, keep) = (&request.stanza, &request.label, &request.changes, request.keep);
    if changes.is_empty() && keep.is_none() {
        return Err(CliError::new(
            ErrorCode::ParamRequired,
            "annotate needs --annotation=key=value, --keep or --no-keep",
        ));
    }
    crate::runtime::runtime()?.block_on(async {
        let mut found = false;
        for target in &request.repos {
            let index = target.index;
            let repo = open_repo(target, stanza).await?;
            if !repo.load_catalog().await?.backups.iter().any(|b| &b.label == label) {
                continue;
            }
            let lease = Lease::acquire(&repo.store, &repo.layout, index, "annotate", request.lease_time).await?;
            let saved = async {
                let (mut catalog, read) = repo.load_catalog_for_update().await?;
                let Some(entry) = catalog.backups.iter_mut().find(|b| &b.label == label) else { return Ok(()) };
                for (k, v) in changes {
                    if v.is_empty() {
                        entry.annotation.remove(k);
                    } else {
                        entry.annotation.insert(k.clone(), v.clone());
                    }
                }
                if let Some(keep) = keep {
                    entry.keep = keep;
                }
                lease.check()?;
                repo.save_catalog(&catalog, request.blob, &read).await.map(drop)
            }
            .await;
            lease.release().await;
            saved?;
            found = true;
            tracing::info!("repo{index}: backup set {label} annotated");
        }
        if found {
            Ok(())
        } else {
            Err(CliError::new(ErrorCode::BackupSetInvalid, format!("backup set {label} does not exist"))
                .hint("run info to see the backups in the repository"))
        }
    })
}
