//! `restore`: rebuild a data directory (and its tablespaces) from a backup, verify every file's
//! checksum, and write the recovery settings so PostgreSQL replays WAL from the archive.
//!
//! The steps, each in its own module: [`target`] picks the backup for the recovery target;
//! [`guard`] decides what may be done to the directories (and refuses before anything is
//! touched); [`plan`] places every manifest path on this host; [`tree`] makes directories and
//! links and, for `--delta`, removes what the backup lacks; [`files`] restores the files,
//! `process-max` at a time, each crash-safely; [`recovery`] writes the settings PostgreSQL
//! reads. A marker file in the data directory stays until the restore has completed, so an
//! interrupted restore can be finished with `--delta`.

use std::path::Path;
use std::sync::Arc;

use pgstrata_repo_format::layout::copy_of;
use pgstrata_repo_format::meta::{CatalogEntry, ManifestEntry, ManifestHeader, read_manifest};
use pgstrata_repo_format::{Sha256Digest, decode_blob};

use crate::config::Config;
use crate::durable;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::postgres::pg_path;
use crate::repo::{Repo, open_repo, stanza_name};

mod files;
mod guard;
mod owner;
mod plan;
mod recovery;
mod target;
mod tree;

pub use guard::Existing;
pub use plan::RestorePlan;
pub use recovery::restore_command;
pub use target::{Goal, Recovery, TimelineChoice};

pub fn run(config: &Config) -> CliResult<()> {
    let stanza = stanza_name(config)?;
    let data = pg_path(config)?;
    let workers = usize::try_from(config.int("process-max").unwrap_or(1)).unwrap_or(1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(workers.max(2) * 2)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ErrorCode::Service, format!("unable to start the I/O runtime: {e}")))?;
    rt.block_on(restore(config, &stanza, &data, workers))
}

async fn restore(config: &Config, stanza: &str, data: &Path, workers: usize) -> CliResult<()> {
    let repo = open_repo(config, config.repo_index(), stanza).await?;
    let catalog = repo.load_catalog().await?;
    let recovery = Recovery::from_config(config)?;
    let backup = target::choose_backup(&repo, &catalog, &recovery, config.get("set")).await?;
    let existing = guard::check_data_dir(data, config.bool("delta") || config.bool("force"))?;
    let preserved = (recovery.goal == Goal::Preserve).then(|| recovery::RecoveryState::read(data));
    tracing::info!("repo{}: restore backup set {}", repo.index, backup.label);
    let (header, entries) = load_manifest(&repo, &backup).await?;
    let plan = RestorePlan::new(&header, &entries, data, config.list("tablespace-map"), config.list("link-map"))?;
    let tree = tree::RestoreTree::new(&plan, entries)?;
    guard::check_tablespaces(&plan, &tree.tablespace_dirs, existing)?;

    // From here on the directories change: the marker says a restore is under way.
    std::fs::create_dir_all(data).map_err(|e| owner::io(data, "create", e))?;
    durable::write(&data.join(guard::MARKER), backup.label.to_string().as_bytes(), 0o600)?;
    let as_root = owner::am_root();
    tree.build(&plan, as_root)?;
    if existing == Existing::Delta {
        tree.remove_extras(&plan)?;
    }
    let options = files::FileOptions {
        delta: existing == Existing::Delta,
        as_root,
        frame_size: header.settings.frame_size.max(1),
        workers,
    };
    let dirs: Vec<_> = tree.dirs.iter().map(|(d, _)| d.clone()).chain(plan.roots.values().cloned()).collect();
    let summary = files::restore_files(Arc::new(repo), &backup.label, tree.files, options).await?;
    files::sync_dirs(dirs.iter().map(|d| d.as_path()))?;
    if existing == Existing::Delta {
        tracing::info!("delta restore: {} files were already up to date", summary.unchanged);
    }
    recovery::rewrite_tablespace_map(&plan, data)?;
    recovery::write_recovery(config, stanza, data, &recovery, preserved)?;
    let marker = data.join(guard::MARKER);
    std::fs::remove_file(&marker).map_err(|e| owner::io(&marker, "remove", e))?;
    durable::sync_dir(data)?;
    tracing::info!("restore size = {}, backup set {}", crate::backup::human(summary.bytes), backup.label);
    Ok(())
}

async fn load_manifest(repo: &Repo, backup: &CatalogEntry) -> CliResult<(ManifestHeader, Vec<ManifestEntry>)> {
    let key = repo.layout.manifest(&backup.label);
    let mut errors = Vec::new();
    for k in [key.clone(), copy_of(&key)] {
        let attempt = async {
            let sealed = repo.store.get(&k).await?;
            let plain = decode_blob(&sealed, &k, repo.key.as_ref())?;
            if Sha256Digest::of(&plain) != backup.manifest_sha256 {
                return Err(CliError::new(ErrorCode::Format, format!("{k} does not match the catalog's checksum")));
            }
            Ok(read_manifest(&plain, &k)?)
        };
        match attempt.await {
            Ok(m) => return Ok(m),
            Err(e) if e.code == ErrorCode::Crypto => return Err(e),
            Err(e) => errors.push(e.message),
        }
    }
    Err(CliError::new(
        ErrorCode::Format,
        format!("unable to read the manifest of {}: {}", backup.label, errors.join("; ")),
    ))
}
