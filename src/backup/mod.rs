//! `backup`: a full backup of a running cluster, taken in parallel into packs, with the manifest
//! written last and the catalog updated after it.

pub mod copy;
pub mod walk;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pgstrata_repo_format::layout::{archive_id, copy_of, parse_wal_object};
use pgstrata_repo_format::meta::{
    BackupCatalog, BackupSettings, CatalogEntry, FileData, FileEntry, ManifestEntry, ManifestHeader, ManifestWriter,
    Ownership,
};
use pgstrata_repo_format::pg::{Lsn, TimelineId, WalFileName};
use pgstrata_repo_format::{BackupLabel, BackupType, BlobEncoder, encode_blob};

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::Lease;
use crate::postgres::{connect, identify, pg_path, read_control};
use crate::repo::{Repo, blob_settings, open_repo, stanza_name};
use copy::{CopySettings, PackWriter, copy_files};

/// Target plaintext per blob and stored size per pack.
const PART_SIZE: usize = 8 << 20;
const PACK_SIZE: u64 = 64 << 20;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(0)).unwrap_or(0)
}

/// An exclusive lock held for the life of the command: `<lock-path>/<stanza>-<kind>.lock`.
#[derive(Debug)]
pub struct CommandLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

/// Takes the stanza's `kind` lock, or fails with `LockAcquire` when another process holds it.
pub fn acquire_lock(config: &Config, stanza: &str, kind: &str) -> CliResult<CommandLock> {
    let dir = PathBuf::from(config.get("lock-path").unwrap_or("/tmp/pgstrata"));
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::new(ErrorCode::LockAcquire, format!("unable to create lock path {}: {e}", dir.display()))
    })?;
    let path = dir.join(format!("{stanza}-{kind}.lock"));
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|e| {
        CliError::new(ErrorCode::LockAcquire, format!("unable to open lock file {}: {e}", path.display()))
    })?;
    match file.try_lock() {
        Ok(()) => Ok(CommandLock { _file: file, path }),
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

fn query_err(what: &str, e: tokio_postgres::Error) -> CliError {
    CliError::new(ErrorCode::DbQuery, format!("unable to {what}: {e}"))
}

pub fn run(config: &Config) -> CliResult<()> {
    let stanza = stanza_name(config)?;
    let requested = config.get("type").unwrap_or("incr");
    let requested: BackupType = requested.parse()?;
    let _lock = acquire_lock(config, &stanza, "backup")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ErrorCode::Service, format!("unable to start the I/O runtime: {e}")))?;
    rt.block_on(backup(config, &stanza, requested))
}

/// Under the repository's lease: removes what dead backups left, takes the backup, and on
/// failure removes what this one wrote (nothing of a failed backup stays in the repository).
async fn backup(config: &Config, stanza: &str, requested: BackupType) -> CliResult<()> {
    let repo = open_repo(config, config.repo_index(), stanza).await?;
    let lease =
        Lease::acquire(&repo.store, &repo.layout, repo.index, "backup", crate::lease::lease_time(config)).await?;
    let result = async {
        let catalog = repo.load_catalog().await?;
        remove_unlisted_backups(&repo, &catalog).await?;
        let taken = take_backup(config, &repo, &lease, catalog.clone(), requested).await;
        // Only while the lease is ours: after a takeover, the unlisted backup is the new holder's.
        if taken.is_err() && lease.check().is_ok() {
            // Best effort: the next backup removes whatever this leaves.
            if let Err(e) = remove_unlisted_backups(&repo, &catalog).await {
                tracing::warn!("unable to remove the objects of the failed backup: {}", e.message);
            }
        }
        taken
    }
    .await;
    lease.release().await;
    result
}

/// Removes every backup directory the catalog does not list: the objects of a backup that
/// failed or was killed before its manifest and catalog entry were written. Only the lease
/// holder calls this, so no live backup is writing there.
async fn remove_unlisted_backups(repo: &Repo, catalog: &BackupCatalog) -> CliResult<()> {
    let backup_root = format!("{}backup", repo.layout.root());
    for dir in repo.store.list_dirs(&backup_root).await? {
        if catalog.backups.iter().any(|b| b.label.to_string() == dir) {
            continue;
        }
        let removed = repo.store.delete_prefix(&format!("{backup_root}/{dir}/")).await?;
        tracing::warn!("removed {removed} objects of the unfinished backup {dir}");
    }
    Ok(())
}

async fn take_backup(
    config: &Config,
    repo: &Repo,
    lease: &Lease,
    mut catalog: BackupCatalog,
    requested: BackupType,
) -> CliResult<()> {
    if requested != BackupType::Full {
        if catalog.backups.is_empty() {
            tracing::warn!("no prior backup exists, {} backup has been changed to full", requested.as_str());
        } else {
            return Err(CliError::new(
                ErrorCode::NotImplemented,
                format!("{} backups are not available in this version yet", requested.as_str()),
            )
            .hint("run with --type=full"));
        }
    }
    let data = pg_path(config)?;
    let control = read_control(&data)?;
    let db = repo.current_db()?.clone();
    if db.system_id != control.system_identifier || db.pg_version != control.pg_version {
        return Err(CliError::new(
            ErrorCode::DbMismatch,
            format!(
                "the cluster in {} (PostgreSQL {}, system id {}) is not the stanza's database (PostgreSQL {}, system id {})",
                data.display(),
                control.pg_version,
                control.system_identifier,
                db.pg_version,
                db.system_id
            ),
        )
        .hint("after pg_upgrade, run stanza-upgrade"));
    }
    let client = connect(config).await?;
    let server = identify(&client).await?;
    if server.system_identifier != control.system_identifier {
        return Err(CliError::new(ErrorCode::DbMismatch, "the server on pg1 is not the cluster in pg1-path"));
    }
    let v15 = server.version_num >= 150_000;

    let mut start_time = unix_now();
    let mut label = BackupLabel::full(start_time);
    while catalog.backups.iter().any(|b| b.label == label) {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        start_time = unix_now();
        label = BackupLabel::full(start_time);
    }
    let fast = config.bool("start-fast");
    tracing::info!(
        "execute {} backup start: backup begins after the {} checkpoint completes",
        if v15 { "pg_backup_start" } else { "pg_start_backup" },
        if fast { "requested immediate" } else { "next regular" }
    );
    let start_sql = if v15 {
        "select lsn::text, (select timeline_id from pg_control_checkpoint())::int4 from pg_backup_start($1, $2) as lsn"
    } else {
        "select lsn::text, (select timeline_id from pg_control_checkpoint())::int4 from pg_start_backup($1, $2, false) as lsn"
    };
    let row = client
        .query_one(start_sql, &[&format!("pgstrata backup {label}"), &fast])
        .await
        .map_err(|e| query_err("start the backup", e))?;
    let start_lsn: Lsn = row.get::<_, String>(0).parse()?;
    let timeline = TimelineId(u32::try_from(row.get::<_, i32>(1)).unwrap_or(1));
    let seg_size = u64::from(control.wal_segment_size);
    let wal_start = WalFileName::for_lsn(timeline, start_lsn, seg_size)?;
    tracing::info!("backup start archive = {wal_start}, lsn = {start_lsn}");

    // Walk and copy.
    let relseg = control.relseg_size.max(1);
    let mut tree = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || walk::walk(&data, relseg))
            .await
            .map_err(|e| CliError::new(ErrorCode::FileRead, format!("walk failed: {e}")))??
    };
    let settings = blob_settings(config)?;
    let workers = usize::try_from(config.int("process-max").unwrap_or(1)).unwrap_or(1).max(1);
    let copy_settings = CopySettings {
        workers,
        blob: settings,
        key: repo.key.clone(),
        part_size: PART_SIZE.div_ceil(settings.frame_size) * settings.frame_size,
        pack_size: PACK_SIZE,
        checksum_pages: control.data_checksum_version > 0,
        start_lsn,
    };
    let files = Arc::new(std::mem::take(&mut tree.files));
    tracing::info!("copying {} files with {workers} workers", files.len());
    let mut packs = PackWriter::new(repo.store.clone(), repo.layout.clone(), label.clone(), PACK_SIZE, 0);
    let copied = match copy_files(&mut packs, Arc::clone(&files), copy_settings).await {
        Ok(c) => c,
        Err(e) => {
            packs.abort().await;
            return Err(e);
        }
    };

    // Stop the backup without the server waiting for WAL archiving (it would wait without
    // limit when archiving is broken); our own archive check below is bounded by
    // archive-timeout. Store backup_label and tablespace_map from the stop.
    let stop_sql = if v15 {
        "select lsn::text, labelfile, spcmapfile from pg_backup_stop(false)"
    } else {
        "select lsn::text, labelfile, spcmapfile from pg_stop_backup(false, false)"
    };
    let row = client.query_one(stop_sql, &[]).await.map_err(|e| query_err("stop the backup", e))?;
    let stop_lsn: Lsn = row.get::<_, String>(0).parse()?;
    let label_file: String = row.get(1);
    let spcmap: Option<String> = row.get(2);
    let stop_time = unix_now();
    let wal_stop = WalFileName::for_lsn(timeline, stop_lsn, seg_size)?;
    tracing::info!("backup stop archive = {wal_stop}, lsn = {stop_lsn}");

    let mut entries: Vec<ManifestEntry> = Vec::with_capacity(tree.dirs.len() + tree.links.len() + files.len() + 2);
    entries.extend(tree.dirs.iter().cloned().map(ManifestEntry::Dir));
    entries.extend(tree.links.iter().cloned().map(ManifestEntry::Link));
    let mut size = 0u64;
    let mut page_error_files = 0usize;
    for (f, c) in files.iter().zip(copied) {
        if c.vanished {
            continue;
        }
        size += c.size;
        if !c.page_errors.is_empty() {
            page_error_files += 1;
            tracing::warn!("invalid page checksums found in {}: pages {:?}", f.path, c.page_errors);
        }
        let data = if c.size == 0 { FileData::Empty } else { FileData::Stored { parts: c.parts } };
        entries.push(ManifestEntry::File(FileEntry {
            path: f.path.clone(),
            size: c.size,
            mtime: f.mtime,
            owner: f.owner.clone(),
            sha256: c.sha256,
            chunks: c.chunks,
            data,
            page_errors: c.page_errors,
        }));
    }
    let owner = tree.dirs.first().map(|d| Ownership { mode: 0o600, ..d.owner.clone() }).unwrap_or(Ownership {
        mode: 0o600,
        user: None,
        group: None,
    });
    let mut extra = vec![("pg_data/backup_label", label_file.into_bytes())];
    if let Some(map) = spcmap.filter(|m| !m.is_empty()) {
        extra.push(("pg_data/tablespace_map", map.into_bytes()));
    }
    for (path, content) in extra {
        let mut enc = BlobEncoder::new(settings, repo.key.as_ref())?;
        let mut sealed = Vec::new();
        enc.write(&content, &mut sealed);
        let summary = enc.finish(&mut sealed);
        let part = packs.append(&sealed, content.len() as u64).await?;
        size += content.len() as u64;
        entries.push(ManifestEntry::File(FileEntry {
            path: path.to_string(),
            size: content.len() as u64,
            mtime: stop_time,
            owner: owner.clone(),
            sha256: pgstrata_repo_format::digest::file_digest(&summary.chunk_sha256),
            chunks: summary.chunk_sha256,
            data: FileData::Stored { parts: vec![part] },
            page_errors: vec![],
        }));
    }
    let totals = packs.finish().await?;
    entries.sort_by(|a, b| a.path().cmp(b.path()));

    if config.bool("archive-check") {
        let timeout = config.duration("archive-timeout").unwrap_or(Duration::from_secs(60));
        wait_for_archive(repo, &wal_start, &wal_stop, seg_size, timeout).await?;
    }

    let header = ManifestHeader {
        label: label.clone(),
        backup_type: BackupType::Full,
        prior: None,
        references: vec![],
        pg_version: control.pg_version,
        system_id: control.system_identifier,
        db_id: db.id,
        timeline,
        lsn_start: start_lsn,
        lsn_stop: stop_lsn,
        wal_start: wal_start.to_string(),
        wal_stop: wal_stop.to_string(),
        timestamp_start: start_time,
        timestamp_stop: stop_time,
        settings: BackupSettings {
            compress_type: config.get("compress-type").unwrap_or("zst").to_string(),
            compress_level: config.int("compress-level").and_then(|v| i32::try_from(v).ok()),
            cipher: if repo.key.is_some() { "aes-256-gcm" } else { "none" }.to_string(),
            frame_size: settings.frame_size as u64,
            checksum_page: control.data_checksum_version > 0,
        },
        targets: tree.targets.clone(),
        packs: totals.packs,
    };
    // The commit: manifest, then catalog, only while we still hold the lease.
    lease.check()?;
    let mut manifest = Vec::new();
    let mut writer = ManifestWriter::new(&header, &mut manifest)?;
    for e in &entries {
        writer.push(e, &mut manifest)?;
    }
    let manifest_sha256 = writer.finish(&mut manifest)?;
    let (sealed, _) = encode_blob(&manifest, settings, repo.key.as_ref())?;
    let manifest_key = repo.layout.manifest(&label);
    let sealed = Bytes::from(sealed);
    repo.store.put(&manifest_key, sealed.clone()).await?;
    repo.store.put(&copy_of(&manifest_key), sealed.clone()).await?;

    let repo_size = totals.stored_bytes + sealed.len() as u64;
    catalog.backups.push(CatalogEntry {
        label: label.clone(),
        backup_type: BackupType::Full,
        prior: None,
        references: vec![],
        db_id: db.id,
        timeline,
        timestamp_start: start_time,
        timestamp_stop: stop_time,
        lsn_start: start_lsn,
        lsn_stop: stop_lsn,
        wal_start: wal_start.to_string(),
        wal_stop: wal_stop.to_string(),
        size,
        delta: size,
        repo_size,
        repo_delta: repo_size,
        error: page_error_files > 0,
        pgstrata_version: env!("CARGO_PKG_VERSION").to_string(),
        manifest_sha256,
    });
    lease.check()?;
    repo.save_catalog(&catalog, settings).await?;
    tracing::info!("new backup label = {label}");
    tracing::info!(
        "full backup size = {}, file total = {}, repository size = {}",
        human(size),
        files.len(),
        human(repo_size)
    );
    if page_error_files > 0 {
        tracing::warn!("{page_error_files} files have invalid page checksums; the backup is marked with error=true");
    }
    Ok(())
}

/// `22.5MB`-style sizes, as pgBackRest prints them.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1}GB", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1}MB", b / 1e6)
    } else if b >= 1e3 {
        format!("{:.1}KB", b / 1e3)
    } else {
        format!("{bytes}B")
    }
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
