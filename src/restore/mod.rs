//! `restore`: rebuild a data directory (and its tablespaces) from a backup, verify every file's
//! checksum, and write the recovery settings so PostgreSQL replays WAL from the archive.
//!
//! The steps, each in its own module: [`target`] picks the backup for the recovery target;
//! [`guard`] decides what may be done to the directories (and refuses before anything is
//! touched); [`plan`] places every manifest path on this host; [`tree`] makes directories and
//! links and, for `--delta`, removes what the backup lacks; [`crate::chain`] finds the data of the
//! files a diff or incr references in the backups that store them; [`files`] restores the
//! files, small ones in batches, and every filesystem written is synced before the restore
//! completes; [`recovery`] writes the settings PostgreSQL
//! reads. A marker file in the data directory stays until the restore has completed, so an
//! interrupted restore can be finished with `--delta`; `global/pg_control` is restored under
//! another name and put in place last, so PostgreSQL refuses to start an unfinished restore.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry, ManifestEntry, ManifestHeader};
use pgstrata_repo_format::pgbackrest::BackupInfo;

use crate::anchor::Anchors;
use crate::durable;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::manifest::ManifestStream;
use crate::repo::{Repo, open_repo};

mod files;
mod guard;
pub(crate) mod owner;
mod paged;
mod pgbackrest;
mod plan;
mod recovery;
mod select;
mod shared_file;
mod target;
mod tree;

pub use guard::Existing;
pub use plan::{Placement, RestorePlan};
pub use target::{Goal, Recovery, TimelineChoice};

/// What `restore` was asked for, resolved once from the options (defaults applied here).
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    pub stanza: String,
    /// `--repo`, else every repository configured, searched in order for the backup.
    pub repos: Vec<crate::repo::RepoTarget>,
    /// The data directory (`pg1-path`).
    pub data: PathBuf,
    /// `--set`: this backup; otherwise the one the recovery target calls for.
    pub set: Option<String>,
    pub delta: bool,
    pub force: bool,
    /// `process-max`.
    pub workers: usize,
    pub recovery: Recovery,
    pub placement: Placement,
    /// `--db-include` / `--db-exclude`: a selective restore.
    pub db_include: Vec<String>,
    pub db_exclude: Vec<String>,
    /// `--recovery-option` (`key=value`), written after the target settings.
    pub recovery_options: Vec<(String, String)>,
    /// `--archive-mode=off`.
    pub archive_mode_off: bool,
    /// The `restore_command` PostgreSQL gets (naming this executable, its configuration and
    /// the stanza).
    pub restore_command: String,
    /// The data directory was given on the command line (a copy beside the original, often).
    pub data_from_command_line: bool,
}

/// Restores as `request` asks.
pub fn run(request: &RestoreRequest) -> CliResult<()> {
    let rt = crate::runtime::pool(2, Some(request.workers.max(2) * 2))?;
    rt.block_on(restore(request))
}

async fn restore(request: &RestoreRequest) -> CliResult<()> {
    // As pgBackRest does: the repositories in order, the first with a backup for the target
    // (or the `--set`) restores; one that cannot be read is passed over with a warning.
    let mut first_error = None;
    let several = request.repos.len() > 1;
    for target in &request.repos {
        let chosen = match choose_in(request, target).await {
            Ok(chosen) => chosen,
            Err(e) if several => {
                tracing::warn!("repo{}: {}", target.index, e.message);
                first_error.get_or_insert(e);
                continue;
            }
            Err(e) => return Err(e),
        };
        let Chosen { repo, catalog, foreign, backup } = chosen;
        if several {
            tracing::info!("repo{}: restore backup set {}", repo.index, backup.label);
        }
        let label = backup.label.to_string();
        return match foreign.filter(|info| info.backups.iter().any(|b| b.label == label)) {
            Some(info) => restore_pgbackrest(request, &repo, &info, &backup).await,
            None => restore_own(request, &repo, &catalog, &backup).await,
        };
    }
    Err(first_error.unwrap_or_else(|| {
        CliError::new(ErrorCode::OptionInvalidValue, "no repository is configured").hint("set repo1-path")
    }))
}

/// The backup a repository has for the request, with what restoring it needs.
struct Chosen {
    repo: Repo,
    catalog: BackupCatalog,
    /// pgBackRest's `backup.info` in the same repository.
    foreign: Option<BackupInfo>,
    backup: CatalogEntry,
}

async fn choose_in(request: &RestoreRequest, target: &crate::repo::RepoTarget) -> CliResult<Chosen> {
    let stanza = &request.stanza;
    let repo = open_repo(target, stanza).await?;
    let mut catalog = repo.load_catalog().await?;
    // pgBackRest's backups in the same repository (a repository taken over from pgBackRest)
    // are candidates alike: the recovery target picks among both.
    let foreign = crate::pgbackrest::backup_info(repo.pgbackrest(), stanza).await?;
    if let Some(info) = &foreign {
        crate::pgbackrest::merge_catalog(&mut catalog, info, &repo.info);
    }
    let backup = target::choose_backup(&repo, &catalog, &request.recovery, request.set.as_deref()).await?;
    Ok(Chosen { repo, catalog, foreign, backup })
}

/// What the restore found and planned before anything is written.
struct Prepared {
    existing: Existing,
    delta: bool,
    preserved: Option<recovery::RecoveryState>,
    plan: RestorePlan,
    selection: select::Selection,
    tree: tree::RestoreTree,
}

/// Checks the directories and plans where everything goes, from the manifest's header.
fn prepare(request: &RestoreRequest, header: &ManifestHeader) -> CliResult<Prepared> {
    let data = request.data.as_path();
    let existing = guard::check_data_dir(data, request.delta || request.force)?;
    let delta = existing == Existing::Delta;
    let preserved = (request.recovery.goal == Goal::Preserve).then(|| recovery::RecoveryState::read(data));
    let plan = RestorePlan::new(header, data, &request.placement)?;
    let selection = select::Selection::new(header, &request.db_include, &request.db_exclude)?;
    if !selection.zeroed.is_empty() {
        let names: Vec<String> = header
            .databases
            .iter()
            .filter(|d| selection.zeroed.contains(&d.oid))
            .map(|d| format!("{} ({})", d.name, d.oid))
            .collect();
        tracing::info!(
            "selective restore: databases {} restored as empty sparse files (drop them once the cluster is up)",
            names.join(", ")
        );
    }
    let tree = tree::RestoreTree::new(&plan, delta);
    Ok(Prepared { existing, delta, preserved, plan, selection, tree })
}

/// Once every entry is in the tree: the last checks, then the directories change — the marker,
/// the control file withdrawn (delta), directories and links made, extras removed (delta).
fn begin(p: &mut Prepared, data: &Path, label: &str) -> CliResult<(ControlFile, std::sync::Arc<Anchors>)> {
    p.tree.settle_links(&mut p.plan);
    p.plan.check_link_map()?;
    guard::check_tablespaces(&p.plan, &p.tree.tablespace_dirs, p.existing)?;
    std::fs::create_dir_all(data).map_err(|e| owner::io(data, "create", e))?;
    durable::write(&data.join(guard::MARKER), label.as_bytes(), 0o600)?;
    let control = ControlFile::new(data);
    if p.delta {
        control.withdraw(data)?;
    }
    // From here on every path is reached from these directories without following a link.
    let anchors = std::sync::Arc::new(p.tree.build(&p.plan, owner::am_root())?);
    if p.delta {
        p.tree.remove_extras(&p.plan, &anchors)?;
    }
    Ok((control, anchors))
}

/// After the files: everything synced, the recovery settings written, `pg_control` put in
/// place, the marker removed.
fn complete(
    request: &RestoreRequest,
    p: Prepared,
    (control, anchors): (ControlFile, std::sync::Arc<Anchors>),
    summary: files::FilesSummary,
    label: &str,
) -> CliResult<()> {
    let data = request.data.as_path();
    // Every file and directory written, on disk, before the restore can count as done.
    durable::sync_filesystems(std::iter::once(data).chain(p.plan.roots.values().map(PathBuf::as_path)))?;
    if p.delta {
        summary.report_delta();
    }
    recovery::rewrite_tablespace_map(&p.plan, data)?;
    recovery::write_recovery(request, p.preserved)?;
    control.put_in_place(&anchors)?;
    let marker = data.join(guard::MARKER);
    std::fs::remove_file(&marker).map_err(|e| owner::io(&marker, "remove", e))?;
    durable::sync_dir(data)?;
    tracing::info!("restore size = {}, backup set {label}", crate::progress::human(summary.bytes));
    Ok(())
}

fn file_options(
    p: &Prepared,
    request: &RestoreRequest,
    anchors: &std::sync::Arc<Anchors>,
    frame_size: u64,
) -> files::FileOptions {
    files::FileOptions {
        anchors: std::sync::Arc::clone(anchors),
        delta: p.delta,
        compare: files::Compare::chosen(request.delta, request.force),
        as_root: owner::am_root(),
        frame_size,
        workers: request.workers,
    }
}

/// Restores one of pgstrata's own backups.
async fn restore_own(
    request: &RestoreRequest,
    repo: &Repo,
    catalog: &BackupCatalog,
    backup: &CatalogEntry,
) -> CliResult<()> {
    tracing::info!("repo{}: restore backup set {}", repo.index, backup.label);
    // First pass over the manifest: where everything goes, directories and links; checked
    // whole (paths, checksum) before anything is written.
    let mut manifest = ManifestStream::open(repo, backup).await?;
    let header = manifest.header()?.clone();
    let mut p = prepare(request, &header)?;
    while let Some(entry) = manifest.next().await? {
        p.tree.add(&mut p.plan, &entry)?;
    }
    // archive-copy: the WAL the backup stored, written into pg_wal after the other files.
    for entry in &header.wal_copy {
        p.tree.add(&mut p.plan, &ManifestEntry::File(entry.clone()))?;
    }
    let label = backup.label.to_string();
    let (control, anchors) = begin(&mut p, &request.data, &label)?;
    // Second pass: the files, streamed into the jobs.
    let options = file_options(&p, request, &anchors, header.settings.frame_size.max(1));
    let refs = crate::chain::References::new(repo, catalog, backup.label.clone());
    let wal_copy = header.wal_copy.iter().map(|entry| {
        Ok(files::FileJob {
            local: p.plan.local(&entry.path)?,
            entry: entry.clone(),
            from: backup.label.clone(),
            paged: None,
            zeroed: false,
        })
    });
    let wal_copy: Vec<CliResult<files::FileJob>> = wal_copy.collect();
    let jobs = file_jobs(manifest.reopen().await?, refs, (&p.plan, &p.selection, &backup.label), &control)
        .chain(futures::stream::iter(wal_copy));
    let summary = files::restore_files(repo, jobs, p.tree.bytes, options).await?;
    complete(request, p, (control, anchors), summary, &label)
}

/// Restores a backup pgBackRest made, from its manifest and files.
async fn restore_pgbackrest(
    request: &RestoreRequest,
    repo: &Repo,
    info: &BackupInfo,
    backup: &CatalogEntry,
) -> CliResult<()> {
    let label = backup.label.to_string();
    tracing::info!("repo{}: restore backup set {label} (made by pgBackRest)", repo.index);
    let access = repo.pgbackrest();
    let mut manifest = crate::pgbackrest::manifest(access, &request.stanza, info, &label).await?;
    let (header, entries) = pgbackrest::convert(&manifest, backup.db_id)?;
    let mut p = prepare(request, &header)?;
    for entry in entries {
        p.tree.add(&mut p.plan, &entry)?;
    }
    let (control, anchors) = begin(&mut p, &request.data, &label)?;
    let mut jobs = Vec::with_capacity(manifest.files.len());
    for file in std::mem::take(&mut manifest.files) {
        let local = control.place(&file.name, p.plan.local(&file.name)?);
        jobs.push(pgbackrest::Job { zeroed: p.selection.zeroes(&file.name), file, local });
    }
    let options = file_options(&p, request, &anchors, 1);
    let summary = pgbackrest::restore_files(&repo.store, &request.stanza, manifest, jobs, options).await?;
    complete(request, p, (control, anchors), summary, &label)
}

/// `global/pg_control`, restored under another name and put in place when everything else is:
/// without it PostgreSQL will not start, so an unfinished restore cannot be started by mistake
/// (pgBackRest does the same).
struct ControlFile {
    path: PathBuf,
    held: PathBuf,
}

impl ControlFile {
    const MANIFEST_PATH: &str = "pg_data/global/pg_control";

    fn new(data: &Path) -> Self {
        let path = data.join("global/pg_control");
        Self { held: path.with_file_name("pg_control.pgstrata-restore"), path }
    }

    /// Where a manifest file is written: the held name for `pg_control`.
    fn place(&self, manifest_path: &str, local: PathBuf) -> PathBuf {
        if manifest_path == Self::MANIFEST_PATH { self.held.clone() } else { local }
    }

    /// Delta: the control file in place goes before any other file changes (and the removal
    /// is made durable), so the directory cannot be started half restored. Reached without
    /// following a link: a `global` that is a link is no cluster's directory (the restore
    /// replaces it with a real one).
    fn withdraw(&self, data: &Path) -> CliResult<()> {
        let anchors = Anchors::open([data]).map_err(|e| owner::io(data, "open", e))?;
        let Ok(at) = anchors.parent(&self.path) else { return Ok(()) };
        match at.kind() {
            Ok(Some(st)) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile => {
                at.remove_name(&at.name).and_then(|()| at.sync()).map_err(|e| owner::io(&self.path, "remove", e))
            }
            _ => Ok(()),
        }
    }

    /// The last step that makes the directory startable.
    fn put_in_place(&self, anchors: &Anchors) -> CliResult<()> {
        let at = anchors.parent(&self.path).map_err(|e| owner::io(&self.path, "reach", e))?;
        let held = self.held.file_name().unwrap_or_default();
        if !matches!(at.sibling(held.to_os_string()).and_then(|h| h.kind()), Ok(Some(_))) {
            return Err(CliError::new(
                ErrorCode::Format,
                format!("the backup has no {}: the restored directory cannot be started", Self::MANIFEST_PATH),
            ));
        }
        at.rename_from(held).and_then(|()| at.sync()).map_err(|e| owner::io(&self.path, "rename into", e))
    }
}

/// The files of a manifest pass, placed by the plan and their references resolved, as a stream
/// of jobs.
fn file_jobs<'a>(
    manifest: ManifestStream<'a>,
    refs: crate::chain::References<'a>,
    (plan, selection, label): (&'a RestorePlan, &'a select::Selection, &'a pgstrata_repo_format::BackupLabel),
    control: &'a ControlFile,
) -> impl futures::Stream<Item = CliResult<files::FileJob>> + 'a {
    futures::stream::unfold(Some((manifest, refs)), move |state| async move {
        let (mut m, mut refs) = state?;
        loop {
            match m.next().await {
                Ok(Some(ManifestEntry::File(entry))) => {
                    let job = async {
                        let local = plan.local(&entry.path)?;
                        let local = control.place(&entry.path, local);
                        if selection.zeroes(&entry.path) {
                            return Ok(files::FileJob { local, entry, from: label.clone(), paged: None, zeroed: true });
                        }
                        let (entry, from) = refs.resolve(entry).await?;
                        let paged = refs.page_sources(&entry, &from).await?.map(Box::new);
                        Ok(files::FileJob { local, entry, from, paged, zeroed: false })
                    }
                    .await;
                    // An error ends the stream.
                    let next = job.is_ok().then_some((m, refs));
                    return Some((job, next));
                }
                Ok(Some(_)) => continue,
                Ok(None) => return refs.finish().await.err().map(|e| (Err(e), None)),
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
}
