//! `backup`: a full, diff or incr backup of a running cluster, taken in parallel into packs
//! while the files are walked (a diff or incr references what did not change since its prior,
//! see [`prior`]), with the manifest written last and the catalog updated after it. Memory does
//! not grow with the number of files: the walk, the prior's manifest, the copy and the manifest
//! all stream.

pub mod copy;
pub mod part;
pub mod plan;
pub mod prior;
pub mod resume;
pub mod server;
pub mod spool;
pub mod summary;
pub mod unlisted;
pub mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgstrata_repo_format::layout::{archive_id, copy_of, parse_wal_object};
use pgstrata_repo_format::meta::{
    BackupCatalog, BackupSettings, CatalogEntry, FileData, FileEntry, Ownership, ReadFrom, Target,
};
use pgstrata_repo_format::pg::{ControlFile, Lsn, WalFileName};
use pgstrata_repo_format::{BackupLabel, BackupType, BlobEncoder, BlobSettings};

use crate::chain::References;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::Lease;
use crate::manifest::ManifestStream;
use crate::postgres::{ClusterTarget, remote_cluster};
use crate::progress::human;
use crate::repo::CatalogVersion;
use crate::repo::{Repo, RepoTarget, open_repo_writing};
use crate::runtime::unix_now;
use crate::termination::Termination;
use copy::{CopyCount, CopySettings, PackWriter, Prior, copy_tree};
use plan::{BackupPlan, Stored, WalRange};
use resume::{Journal, Resumable, Resume};
use server::{BackupServer, Started, Stopped};
use spool::ManifestSpool;
use unlisted::{remove_backup_dir, remove_unlisted_backups, unlisted_backups};
use walk::Walker;

/// Target plaintext per blob and stored size per pack.
const PART_SIZE: usize = 8 << 20;
pub const PACK_SIZE: u64 = 64 << 20;

/// `backup-standby`: whether replicated files are read from a standby.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StandbyMode {
    /// From the primary only.
    No,
    /// From a standby, which must answer.
    Required,
    /// From a standby when one answers, else the primary (with a warning).
    Preferred,
}

/// What `backup` was asked for, resolved once by a front end: the engine reads no option.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    pub stanza: String,
    /// The repository written (`--repo`, repo1 by default).
    pub repo: RepoTarget,
    /// `--type` (incr by default; the first backup of a stanza becomes a full).
    pub requested: BackupType,
    /// The configured clusters (`pg1`..`pgN`), in index order.
    pub clusters: Vec<ClusterTarget>,
    pub standby: StandbyMode,
    /// `online`: a backup of a running cluster (pgstrata takes no other).
    pub online: bool,
    pub start_fast: bool,
    /// `delta`: a diff or incr compares files by content, not by size and time.
    pub delta: bool,
    /// `resume`: a failed backup's stored files are kept for the next one.
    pub resume: bool,
    /// How blobs are written, and what the manifest records of it (`compress-type` and
    /// `compress-level` as given).
    pub blob: BlobSettings,
    pub compress_type: String,
    pub compress_level: Option<i32>,
    /// `process-max`.
    pub workers: usize,
    /// `checksum-page`: page checksums are checked where the cluster has them.
    pub checksum_page: bool,
    /// `archive-check` and how long to wait (`archive-timeout`).
    pub archive_check: bool,
    /// `archive-copy`: the WAL from start to stop stored in the backup too.
    pub archive_copy: bool,
    pub archive_timeout: Duration,
    /// `repoN-bundle-size`: stored bytes per pack.
    pub pack_size: u64,
    /// `--keep`, and the `--annotation`s (key=value; empty values left out).
    pub keep: bool,
    pub annotations: std::collections::BTreeMap<String, String>,
    /// `lock-path` (the stanza's backup lock, stop files) and `lease-time`.
    pub lock_path: PathBuf,
    pub lease_time: Duration,
    /// `expire-auto`: how the repository is expired after the backup.
    pub expire: Option<crate::expire::RepoExpiry>,
    /// `--exclude`: paths relative to the data directory left out (`dir/`: its contents).
    pub exclude: Vec<String>,
}

/// An exclusive lock held for the life of the command: `<lock-path>/<stanza>-<kind>.lock`.
#[derive(Debug)]
pub struct CommandLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// Takes the stanza's `kind` lock, or fails with `LockAcquire` when another process holds it.
pub fn acquire_lock(locks: &std::path::Path, stanza: &str, kind: &str) -> CliResult<CommandLock> {
    let dir = locks.to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::new(ErrorCode::LockAcquire, format!("unable to create lock path {}: {e}", dir.display()))
    })?;
    let path = dir.join(format!("{stanza}-{kind}.lock"));
    let file = crate::anchor::no_follow(std::fs::OpenOptions::new().create(true).truncate(false).write(true))
        .open(&path)
        .map_err(|e| {
            CliError::new(ErrorCode::LockAcquire, format!("unable to open lock file {}: {e}", path.display()))
        })?;
    match file.try_lock() {
        Ok(()) => {
            crate::control::record_holder(&file);
            Ok(CommandLock { _file: file, path })
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(CliError::new(
            ErrorCode::LockAcquire,
            format!(
                "unable to acquire the {kind} lock of stanza '{stanza}' ({}): another {kind} is running",
                path.display()
            ),
        )
        .hint("wait for it to finish; only one backup of a stanza runs at a time")),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(CliError::new(ErrorCode::LockAcquire, format!("unable to lock {}: {e}", path.display())))
        }
    }
}

/// Takes the backup `request` asks for.
pub fn run(request: &BackupRequest) -> CliResult<()> {
    crate::control::check_not_stopped_in(&request.lock_path, Some(&request.stanza))?;
    let _lock = acquire_lock(&request.lock_path, &request.stanza, "backup")?;
    let rt = crate::runtime::pool(2, None)?;
    rt.block_on(backup(request))
}

/// Under the repository's lease: removes what dead backups left, takes the backup, and on
/// failure removes what this one wrote (nothing of a failed backup stays in the repository).
async fn backup(request: &BackupRequest) -> CliResult<()> {
    let term = Termination::listen()?;
    let (primary, standby) = &choose_clusters(request).await?;
    let repo = open_repo_writing(&request.repo, &request.stanza).await?;
    let lease = Lease::acquire(&repo.store, &repo.layout, repo.index, "backup", request.lease_time).await?;
    let work = async {
        let (catalog, read) = repo.load_catalog_for_update().await?;
        let sources = Sources { primary, standby: standby.as_ref() };
        let taken = take_backup(request, &repo, &lease, (catalog.clone(), read), sources, term.clone()).await;
        // Only while the lease is ours: after a takeover, the unlisted backup is the new holder's.
        if let Err(e) = &taken
            && lease.check().is_ok()
        {
            // What a failed backup checkpointed stays for the next one to resume, unless it was
            // told to stop (a signal) or not to. Best effort: the next backup removes the rest.
            let resumable = request.resume && e.code != ErrorCode::Term;
            if let Err(e) = remove_unlisted_backups(&repo, &catalog, resumable).await {
                tracing::warn!("unable to remove the objects of the failed backup: {}", e.message);
            }
        }
        match (taken, &request.expire) {
            (Ok(label), Some(expiry)) => {
                crate::expire::expire(expiry, &repo, &lease, &crate::expire::Choice::Retention).await.map_err(|e| {
                    CliError { message: format!("backup {label} completed, but expire failed: {}", e.message), ..e }
                })
            }
            (other, _) => other.map(|_| ()),
        }
    };
    // A signal stops the copy at once (its upload aborted, its objects removed); outside the
    // copy (a checkpoint, the archive check) the backup is given up after a short grace.
    let result = tokio::select! {
        r = work => r,
        _ = after_grace(term.clone()) => Err(Termination::error()),
    };
    lease.release().await;
    result
}

/// The clusters of a backup: the primary as pg1 (found among several pgN), and with
/// `backup-standby` a standby to read replicated files from — `y` requires one, `prefer` falls
/// back to the primary with a warning, as pgBackRest does.
async fn choose_clusters(request: &BackupRequest) -> CliResult<(ClusterTarget, Option<ClusterTarget>)> {
    if request.standby == StandbyMode::No {
        return Ok((crate::postgres::primary_first(&request.clusters).await?, None));
    }
    if !request.online {
        tracing::warn!(
            "option backup-standby is enabled but backup is offline - backups will be performed from the primary"
        );
        let first = request
            .clusters
            .first()
            .cloned()
            .ok_or_else(|| CliError::new(ErrorCode::OptionRequired, "backup command requires option: pg1-path"))?;
        return Ok((first, None));
    }
    let found =
        crate::postgres::primary_and_standby(&request.clusters, request.standby == StandbyMode::Required).await?;
    if found.standby.is_none() {
        tracing::warn!("unable to find a standby to perform the backup, using primary instead");
    }
    Ok((found.primary, found.standby))
}

/// Where a backup reads: the primary, and the standby when backing up from one.
struct Sources<'a> {
    primary: &'a ClusterTarget,
    standby: Option<&'a ClusterTarget>,
}

async fn after_grace(mut term: Termination) {
    term.requested().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
}

/// Before a backup: the unfinished backup it can resume (adopting its label), with every
/// other unlisted backup removed. pgBackRest's rules: the same type and prior, and `resume`.
async fn resume_or_clear(
    repo: &Repo,
    catalog: &BackupCatalog,
    plan: &mut BackupPlan,
    settings: &BackupSettings,
    resume: bool,
    by_content: bool,
) -> CliResult<Option<Resumable>> {
    let mut found = None;
    for dir in unlisted_backups(repo, catalog).await?.into_iter().rev() {
        let label = dir.parse::<BackupLabel>().ok();
        let resumable = match &label {
            Some(label) if found.is_none() && resume => Resumable::find(repo, label).await.unwrap_or_else(|e| {
                tracing::warn!("backup {dir} cannot be resumed: {}", e.message);
                None
            }),
            _ => None,
        };
        match resumable.map(|r| (resume::refusal(&r.attempt, plan, settings, by_content), r)) {
            Some((None, r)) => found = Some(r),
            Some((Some(why), _)) => {
                tracing::warn!("backup {dir} cannot be resumed: {why}");
                remove_backup_dir(repo, &dir).await?;
            }
            None => remove_backup_dir(repo, &dir).await?,
        }
    }
    if let Some(r) = &found {
        tracing::info!("resuming backup {}: what it stored and what did not change since is reused", r.attempt.label);
        plan.label = r.attempt.label.clone();
        // The upload the dead attempt had open is ended (its pack number is not used again), and
        // a manifest it was writing when it died (a staging file beside the manifest's key).
        let dir = repo.layout.backup_dir(&plan.label);
        repo.store.discard_unfinished(&format!("{dir}pack/")).await?;
        repo.store.discard_unfinished(&dir).await?;
    }
    Ok(found)
}

/// One backup, carried out as planned: start, copy (streamed into packs and the manifest
/// spool), stop, the files from the stop, the archive check, then the commit — manifest, then
/// catalog — only while the lease is still ours.
async fn take_backup(
    request: &BackupRequest,
    repo: &Repo,
    lease: &Lease,
    (mut catalog, read): (BackupCatalog, CatalogVersion),
    sources: Sources<'_>,
    term: Termination,
) -> CliResult<BackupLabel> {
    let primary = sources.primary;
    let data = primary.data.clone();
    let remote = remote_cluster(primary)?;
    let control = crate::postgres::control(primary, remote.as_deref()).await?;
    let mut plan = BackupPlan::new(&catalog, repo.current_db()?, &control, request.requested, unix_now())?;
    plan.warnings.iter().for_each(|w| tracing::warn!("{w}"));
    let prior = open_prior(repo, &catalog, &plan, request.delta).await?;
    // A chain keeps its full's frame size: chunk digests are per frame.
    let mut blob = request.blob;
    if let Some(p) = &prior {
        blob.frame_size = usize::try_from(p.manifest.header()?.settings.frame_size).unwrap_or(blob.frame_size);
    }
    let stored_as = backup_settings(request, repo, &control, blob);
    let by_content = prior.as_ref().is_some_and(|p| p.by_content);
    let resumed = resume_or_clear(repo, &catalog, &mut plan, &stored_as, request.resume, by_content).await?;
    let server = BackupServer::connect(primary, &control).await?;
    let timestamp_start = unix_now();
    let started = server.start(&plan.label, request.start_fast).await?;
    let mut prior = prior;
    if let (Some(p), Some(entry)) = (prior.as_mut(), plan.prior.as_ref()) {
        let elsewhere = remote.is_some() || sources.standby.is_some();
        // pg_checksums rewrites every page without WAL: the summaries know nothing of it.
        let checksums_changed = p.manifest.header()?.settings.checksum_page != (control.data_checksum_version > 0);
        let trust = (p.by_content, elsewhere, checksums_changed);
        p.changes = summary_changes(&server, entry, &started, trust).await?;
    }
    let (databases, tablespace_names) = (server.databases().await?, server.tablespace_names().await?);

    let mut settings = copy_settings(request, repo, &control, started.lsn, blob, remote.clone());
    // What the copy will read, for its progress: the last backup's size when the stanza has one
    // of this database (free), else what PostgreSQL says its databases weigh.
    settings.expected_bytes = match catalog.backups.last().filter(|b| b.db_id == plan.db_id) {
        Some(last) => last.size,
        None => server.cluster_size().await.unwrap_or(0),
    };
    settings.progress = Some(lease.progress());
    if let Some(standby) = sources.standby {
        server::standby_ready(standby, &control, &started, request.archive_timeout).await?;
        settings.standby = Some(copy::StandbySource { data: standby.data.clone(), remote: remote_cluster(standby)? });
        tracing::info!("replicated files are read from the standby pg{}, the rest from the primary", standby.index);
    }
    let first_pack = resumed.as_ref().map_or(0, |r| r.next_pack);
    let attempt = plan.attempt(timestamp_start, stored_as.clone(), first_pack);
    let pack_size = request.pack_size;
    let mut packs = PackWriter::new(repo.store.clone(), repo.layout.clone(), plan.label.clone(), pack_size, first_pack)
        .with_journal(Journal::new(attempt, blob, repo.key.clone()))
        .under_lease(lease.watch());
    let resumed = resumed.map(|from| Resume { repo, from });
    let mut spool = ManifestSpool::new()?;
    if !request.exclude.is_empty() {
        tracing::warn!(
            "excluded from the backup by --exclude: {} — a restore of it lacks them",
            request.exclude.join(", ")
        );
    }
    let walker = Walker::new(&data, control.relseg_size.max(1)).on(remote).excluding(&request.exclude);
    tracing::info!("copying with {} workers", settings.workers);
    let copied = async {
        let (walker, copied) =
            copy_tree(walker, prior, resumed, &mut packs, settings.clone(), &mut spool, term).await?;
        let stopped = server.stop(started.timeline).await?;
        let late = store_stop_files(&mut packs, &stopped, walker.data_owner(), &settings).await?;
        let wal_copy = if request.archive_copy {
            wait_for_archive(repo, &started.wal, &stopped.wal, server.seg_size(), request.archive_timeout).await?;
            let segments = (&started.wal, &stopped.wal, server.seg_size());
            store_wal_copy(repo, &mut packs, segments, walker.data_owner(), &settings).await?
        } else {
            Vec::new()
        };
        Ok::<_, CliError>((walker, copied, stopped, late, wal_copy))
    }
    .await;
    let (walker, copied, stopped, late, wal_copy) = match copied {
        Ok(c) => c,
        Err(e) => {
            packs.abort().await;
            return Err(e);
        }
    };
    let totals = packs.finish().await?;
    if request.archive_check && !request.archive_copy {
        wait_for_archive(repo, &started.wal, &stopped.wal, server.seg_size(), request.archive_timeout).await?;
    }
    let wal = wal_range(&started, &stopped, timestamp_start);
    let mut header =
        plan.header(&control, &wal, stored_as, named(walker.targets(), &tablespace_names), totals.packs, databases);
    header.read_from = read_from(&sources, &copied);
    header.wal_copy = wal_copy;
    let page_error_files = spool.page_error_files;
    let size = copied.bytes + late.iter().map(|f| f.size).sum::<u64>();
    let file_total = copied.files + late.len() as u64;

    lease.check()?;
    let manifest_key = repo.layout.manifest(&plan.label);
    let (manifest_sha256, manifest_len) = spool
        .publish(&repo.store, [&manifest_key, &copy_of(&manifest_key)], &header, late, settings.blob, repo.key.as_ref())
        .await?;
    let repo_delta = totals.stored_bytes + copied.resumed_stored + manifest_len;
    let stored = Stored {
        size,
        delta: size - copied.unchanged_bytes,
        repo_size: repo_delta + copied.unchanged_stored,
        repo_delta,
        packs: totals.packs,
        page_error_files,
    };
    let mut entry = plan.catalog_entry(&wal, stored, manifest_sha256);
    entry.keep = request.keep;
    entry.annotation = request.annotations.clone();
    catalog.backups.push(entry);
    lease.check()?;
    repo.save_catalog(&catalog, settings.blob, &read).await?;
    report(&plan, &stored, file_total, &copied);
    // The backup is complete: what is left is clutter, removed by the next backup if not now.
    if let Err(e) = resume::clean_up(repo, &plan.label, &totals.used, first_pack).await {
        tracing::warn!("unable to remove the checkpoints of backup {}: {}", plan.label, e.message);
    }
    Ok(plan.label)
}

/// What changed since the prior backup started, from PostgreSQL's WAL summaries, when they can
/// vouch for it (see [`summary`]); `None` (and an INFO line saying why) reads changed relation
/// files whole, as on PostgreSQL before 17.
async fn summary_changes(
    server: &BackupServer,
    prior: &CatalogEntry,
    started: &Started,
    (by_content, elsewhere, checksums_changed): (bool, bool, bool),
) -> CliResult<Option<Arc<summary::Changes>>> {
    let why = if by_content {
        "files are compared by content".to_string()
    } else if elsewhere {
        "files are read from a standby or through pgN-host".to_string()
    } else if checksums_changed {
        "data checksums were turned on or off since the prior backup (pg_checksums writes no WAL)".to_string()
    } else if prior.timeline != started.timeline {
        format!("the prior backup is on timeline {}, this one on {}", prior.timeline.0, started.timeline.0)
    } else {
        match server.summary_changes(started.timeline, (prior.lsn_start, started.lsn)).await? {
            Ok(changes) => {
                tracing::info!(
                    "incremental from WAL summaries ({}..{}): {} relations changed, {} blocks; only those, new \
                     and truncated pages of changed relation files are read",
                    prior.lsn_start,
                    started.lsn,
                    changes.relations(),
                    changes.blocks()
                );
                return Ok(Some(Arc::new(changes)));
            }
            Err(why) => why,
        }
    };
    tracing::info!("incremental from file times and page LSNs (WAL summaries not used: {why})");
    Ok(None)
}

/// The files and bytes the copy read on each host, logged and recorded in the manifest: with a
/// standby, what it took off the primary shows here.
fn read_from(sources: &Sources<'_>, copied: &CopyCount) -> Vec<ReadFrom> {
    let on = |role: &str, c: &ClusterTarget, (files, bytes): (u64, u64)| -> ReadFrom {
        let host = c.host.as_ref().map(|(h, _)| h.clone());
        let path = c.data.display().to_string();
        tracing::info!(
            "read {files} files ({}) from the {role} {}{path}",
            human(bytes),
            host.as_deref().map(|h| format!("{h}:")).unwrap_or_default()
        );
        ReadFrom { role: role.to_string(), host, path, files, bytes }
    };
    let mut out = vec![on("primary", sources.primary, copied.read_primary)];
    if let Some(standby) = sources.standby {
        out.push(on("standby", standby, copied.read_standby));
    }
    out
}

fn wal_range(started: &Started, stopped: &Stopped, timestamp_start: i64) -> WalRange {
    WalRange {
        timeline: started.timeline,
        lsn_start: started.lsn,
        lsn_stop: stopped.lsn,
        wal_start: started.wal.to_string(),
        wal_stop: stopped.wal.to_string(),
        timestamp_start,
        timestamp_stop: unix_now(),
    }
}

/// What pgBackRest says at the end of a backup.
fn report(plan: &BackupPlan, stored: &Stored, file_total: u64, copied: &CopyCount) {
    tracing::info!("new backup label = {}", plan.label);
    tracing::info!(
        "{} backup size = {}, file total = {file_total}, repository size = {}",
        plan.backup_type.as_str(),
        human(stored.delta),
        human(stored.repo_delta)
    );
    if let Some(prior) = &plan.prior {
        tracing::info!(
            "prior {}: {} files unchanged and referenced; {} of {} not copied",
            prior.label,
            copied.unchanged_files,
            human(stored.size - stored.delta),
            human(stored.size)
        );
    }
    if copied.resumed_files > 0 {
        tracing::info!(
            "resumed: {} files ({}, {} stored) reused from the interrupted attempt, not copied again",
            copied.resumed_files,
            human(copied.resumed_bytes),
            human(copied.resumed_stored)
        );
    }
    if stored.page_error_files > 0 {
        tracing::warn!(
            "{} files have invalid page checksums; the backup is marked with error=true",
            stored.page_error_files
        );
    }
}

/// The walk's targets with the names of their tablespaces.
fn named(targets: &[Target], names: &std::collections::HashMap<u32, String>) -> Vec<Target> {
    let name = |t: &Target| t.tablespace_oid.and_then(|oid| names.get(&oid).cloned());
    targets
        .iter()
        .map(|t| Target { tablespace_name: t.tablespace_name.clone().or_else(|| name(t)), ..t.clone() })
        .collect()
}

/// The prior's manifest, for the copy to reference what did not change (by size and time, or
/// by content with `--delta` or after a timeline change); `None` for a full.
async fn open_prior<'a>(
    repo: &'a Repo,
    catalog: &'a BackupCatalog,
    plan: &BackupPlan,
    delta: bool,
) -> CliResult<Option<Prior<'a>>> {
    let Some(p) = &plan.prior else { return Ok(None) };
    let by_content = delta || plan.delta;
    if by_content {
        tracing::info!("delta: every file is read and compared with prior backup {} by content", p.label);
    } else {
        tracing::info!(
            "prior backup {}: unchanged files are referenced, changed relation files copied by page",
            p.label
        );
    }
    let manifest = ManifestStream::open(repo, p).await?;
    let refs = References::new(repo, catalog, p.label.clone());
    Ok(Some(Prior { started: p.timestamp_start, since: p.lsn_start, by_content, manifest, refs, changes: None }))
}

fn copy_settings(
    request: &BackupRequest,
    repo: &Repo,
    control: &ControlFile,
    start_lsn: Lsn,
    blob: BlobSettings,
    remote: Option<std::sync::Arc<crate::remote::data::RemoteCluster>>,
) -> CopySettings {
    CopySettings {
        workers: request.workers,
        blob,
        key: repo.key.clone(),
        part_size: PART_SIZE.div_ceil(blob.frame_size) * blob.frame_size,
        pack_size: PACK_SIZE,
        checksum_pages: control.data_checksum_version > 0 && request.checksum_page,
        start_lsn,
        remote,
        standby: None,
        expected_bytes: 0,
        progress: None,
    }
}

fn backup_settings(request: &BackupRequest, repo: &Repo, control: &ControlFile, blob: BlobSettings) -> BackupSettings {
    BackupSettings {
        compress_type: request.compress_type.clone(),
        compress_level: request.compress_level,
        cipher: if repo.key.is_some() { "aes-256-gcm" } else { "none" }.to_string(),
        frame_size: blob.frame_size as u64,
        checksum_page: control.data_checksum_version > 0,
    }
}

/// Stores `backup_label` and `tablespace_map` from the stop: the entries for their reserved
/// places in the manifest.
async fn store_stop_files(
    packs: &mut PackWriter,
    stopped: &Stopped,
    data_owner: Ownership,
    settings: &CopySettings,
) -> CliResult<Vec<FileEntry>> {
    let mut files = vec![("pg_data/backup_label", stopped.backup_label.as_bytes())];
    if let Some(map) = &stopped.tablespace_map {
        files.push(("pg_data/tablespace_map", map.as_bytes()));
    }
    let mut entries = Vec::new();
    for (path, content) in files {
        let owner = Ownership { mode: 0o600, ..data_owner.clone() };
        entries.push(store_whole(packs, path.to_string(), content, owner, settings).await?);
    }
    Ok(entries)
}

/// Stores one sealed file of this backup (not checkpointed: out of path order, never reused;
/// its pack is kept) and its entry.
async fn store_whole(
    packs: &mut PackWriter,
    path: String,
    content: &[u8],
    owner: Ownership,
    settings: &CopySettings,
) -> CliResult<FileEntry> {
    let mut enc = BlobEncoder::new(settings.blob, settings.key.as_ref())?;
    let mut sealed = Vec::new();
    enc.write(content, &mut sealed);
    let summary = enc.finish(&mut sealed);
    let part = packs.append(&sealed, content.len() as u64).await?;
    let entry = FileEntry {
        path,
        size: content.len() as u64,
        mtime: unix_now(),
        owner,
        sha256: pgstrata_repo_format::digest::file_digest(&summary.chunk_sha256),
        chunks: summary.chunk_sha256,
        data: FileData::Stored { parts: vec![part] },
        page_errors: vec![],
        page_digests: Default::default(),
    };
    packs.keep_packs(&entry);
    Ok(entry)
}

/// `archive-copy`: the segments from `start` to `stop`, read back from the archive (verified
/// there) and stored in this backup as `pg_data/pg_wal/<segment>`, one at a time.
async fn store_wal_copy(
    repo: &Repo,
    packs: &mut PackWriter,
    (start, stop, seg): (&WalFileName, &WalFileName, u64),
    data_owner: Ownership,
    settings: &CopySettings,
) -> CliResult<Vec<FileEntry>> {
    let db = repo.current_db()?;
    let archive = archive_id(db.pg_version, db.id);
    let mut entries = Vec::new();
    let mut name = *start;
    loop {
        let plain = crate::wal::fetch(repo, &archive, &name, settings.workers).await?.ok_or_else(|| {
            CliError::new(
                ErrorCode::ArchiveTimeout,
                format!("WAL segment {name} left the archive before it was copied"),
            )
        })?;
        let owner = Ownership { mode: 0o600, ..data_owner.clone() };
        entries.push(store_whole(packs, format!("pg_data/pg_wal/{name}"), &plain, owner, settings).await?);
        if name.segment_number(seg)? >= stop.segment_number(seg)? {
            break;
        }
        name = name.next(seg)?;
    }
    tracing::info!("archive-copy: segment(s) {start}:{stop} stored in the backup");
    Ok(entries)
}

/// Waits until every segment from `start` to `stop` is in the archive.
async fn wait_for_archive(
    repo: &Repo,
    start: &WalFileName,
    stop: &WalFileName,
    seg: u64,
    timeout: Duration,
) -> CliResult<()> {
    let db = repo.current_db()?;
    let archive = archive_id(db.pg_version, db.id);
    let mut needed = Vec::new();
    let mut s = *start;
    loop {
        needed.push(s);
        if s.segment_number(seg)? >= stop.segment_number(seg)? {
            break;
        }
        s = s.next(seg)?;
    }
    let began = Instant::now();
    for name in needed {
        loop {
            let prefix = repo.layout.wal_prefix(&archive, &name);
            let found = repo.store.list_files(&prefix).await?;
            if found.iter().any(|o| parse_wal_object(&o.key).is_some_and(|(n, _)| n == name)) {
                break;
            }
            if began.elapsed() > timeout {
                return Err(CliError::new(
                    ErrorCode::ArchiveTimeout,
                    format!("WAL segment {name} was not archived before the {}s timeout", timeout.as_secs()),
                )
                .hint("check that archive_command is set to pgstrata archive-push for this stanza and that it succeeds")
                .hint("check the PostgreSQL log for archiver errors"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tracing::info!("check archive for segment(s) {start}:{stop}: all archived");
    Ok(())
}
