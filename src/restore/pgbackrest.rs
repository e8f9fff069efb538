//! Restoring a backup pgBackRest made (issue 25): its manifest is read as pgBackRest writes it
//! and placed by the same plan as pgstrata's own backups (directories, links, tablespaces,
//! `--tablespace-map`, `--link-map`, `--db-include`, `--delta`), then each file is read from
//! where pgBackRest stored it — its own object (`<label>/<path>.gz`), a bundle
//! (`<label>/bundle/<id>` at an offset), or block-incremental super blocks (`.pgbi`, or in
//! bundles, named by the file's block map) in the backups its map names — decrypted with the
//! manifest's passphrase, decompressed, and checked against the SHA-1 the manifest records
//! before the restore can complete. Memory per file job is one read buffer (4 MiB), or one
//! super block and one block map for a block-incremental file, whatever the file's size.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use pgstrata_repo_format::meta::{
    BackupSettings, DirEntry, FileData, FileEntry, LinkEntry, ManifestEntry, ManifestHeader, Ownership, Target,
};
use pgstrata_repo_format::pg::{Lsn, TimelineId};
use pgstrata_repo_format::pgbackrest::blockmap;
use pgstrata_repo_format::pgbackrest::manifest::{self as pgb, Manifest};
use pgstrata_repo_format::pgbackrest::stream::{Decoder, Sha1Writer, decode_all};
use pgstrata_repo_format::{BackupLabel, BackupType, Sha256Digest};
use pgstrata_storage::RepoStore;
use rustix::fs::OFlags;

use super::files::{
    FileOptions, FilesSummary, blocking, create_output, finish_file, keep_in_place, open_in_place, output_at, place,
};
use super::owner::io;
use crate::error::{CliError, CliResult, ErrorCode};

/// Bytes of stored data read at a time.
const READ: u64 = 4 << 20;
/// The largest block map or super block read (pgBackRest's block sizes are at most a few MiB).
const MAX_PIECE: u64 = 64 << 20;

fn owner(o: &pgb::Owner) -> Ownership {
    Ownership { mode: o.mode, user: o.user.clone(), group: o.group.clone() }
}

fn corrupt(m: &Manifest, why: String) -> CliError {
    CliError::new(ErrorCode::Format, format!("pgBackRest's manifest of {}: {why}", m.label))
}

/// The manifest as pgstrata's restore plan reads one: a header and every entry in path order.
pub fn convert(m: &Manifest, db_id: u32) -> CliResult<(ManifestHeader, Vec<ManifestEntry>)> {
    let label: BackupLabel = m.label.parse()?;
    let lsn = |l: &Option<String>| l.as_deref().and_then(|l| l.parse().ok()).unwrap_or(Lsn(0));
    let timeline = m.archive_start.as_deref().and_then(|w| w.get(..8)).and_then(|t| u32::from_str_radix(t, 16).ok());
    let targets = m
        .targets
        .iter()
        .filter(|t| t.name == "pg_data" || t.tablespace_id.is_some())
        .map(|t| Target {
            name: t.name.clone(),
            path: t.path.clone(),
            tablespace_oid: t.tablespace_id,
            tablespace_name: t.tablespace_name.clone(),
        })
        .collect();
    let header = ManifestHeader {
        label,
        backup_type: m.backup_type.parse::<BackupType>()?,
        prior: m.prior.as_deref().map(str::parse).transpose()?,
        references: Vec::new(),
        pg_version: m.pg_version.parse().map_err(|_| corrupt(m, format!("db-version '{}'", m.pg_version)))?,
        system_id: m.system_id,
        db_id,
        timeline: TimelineId(timeline.unwrap_or(1)),
        lsn_start: lsn(&m.lsn_start),
        lsn_stop: lsn(&m.lsn_stop),
        wal_start: m.archive_start.clone().unwrap_or_default(),
        wal_stop: m.archive_stop.clone().unwrap_or_default(),
        timestamp_start: m.timestamp_start,
        timestamp_stop: m.timestamp_stop,
        settings: BackupSettings {
            compress_type: m.compress_type.clone(),
            compress_level: None,
            cipher: if m.cipher_pass.is_some() { "aes-256-cbc".into() } else { "none".into() },
            frame_size: 1,
            checksum_page: false,
        },
        targets,
        packs: 0,
        databases: m
            .databases
            .iter()
            .map(|(name, oid)| pgstrata_repo_format::meta::DatabaseRef { name: name.clone(), oid: *oid })
            .collect(),
        read_from: Vec::new(),
        wal_copy: Vec::new(),
    };
    let mut entries: Vec<ManifestEntry> = Vec::with_capacity(m.paths.len() + m.links.len() + m.files.len());
    entries
        .extend(m.paths.iter().map(|p| ManifestEntry::Dir(DirEntry { path: p.name.clone(), owner: owner(&p.owner) })));
    entries.extend(m.links.iter().map(|l| {
        ManifestEntry::Link(LinkEntry {
            path: l.name.clone(),
            destination: l.destination.clone(),
            owner: owner(&l.owner),
        })
    }));
    entries.extend(m.files.iter().map(|f| ManifestEntry::File(file_entry(f))));
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    Ok((header, entries))
}

fn file_entry(f: &pgb::FileEntry) -> FileEntry {
    FileEntry {
        path: f.name.clone(),
        size: f.size,
        mtime: f.timestamp,
        owner: owner(&f.owner),
        sha256: Sha256Digest([0; 32]),
        chunks: Vec::new(),
        data: FileData::Empty,
        page_errors: Vec::new(),
        page_digests: Default::default(),
    }
}

/// One file to restore, where it goes, and whether a selective restore leaves it empty.
#[derive(Debug)]
pub struct Job {
    pub file: pgb::FileEntry,
    pub local: PathBuf,
    pub zeroed: bool,
}

/// What every file job shares.
struct Shared {
    store: RepoStore,
    stanza: String,
    manifest: Manifest,
    options: FileOptions,
    handle: tokio::runtime::Handle,
}

enum Outcome {
    Unchanged(u64),
    Written(u64),
}

/// Restores the files, `process-max` at a time.
pub async fn restore_files(
    store: &RepoStore,
    stanza: &str,
    manifest: Manifest,
    jobs: Vec<Job>,
    options: FileOptions,
) -> CliResult<FilesSummary> {
    let total: u64 = jobs.iter().map(|j| j.file.size).sum();
    let progress = Arc::new(std::sync::Mutex::new(crate::progress::Progress::new("restore", total)));
    let workers = options.workers.max(1);
    let shared = Arc::new(Shared {
        store: store.clone(),
        stanza: stanza.to_string(),
        manifest,
        options,
        handle: tokio::runtime::Handle::current(),
    });
    let results = futures::stream::iter(jobs)
        .map(|job| {
            let shared = Arc::clone(&shared);
            let progress = Arc::clone(&progress);
            async move {
                let size = job.file.size;
                let outcome = blocking(move || restore_file(&shared, &job)).await?;
                if let Ok(mut p) = progress.lock() {
                    p.add(size);
                }
                Ok::<_, CliError>(outcome)
            }
        })
        .buffer_unordered(workers);
    futures::pin_mut!(results);
    let mut summary = FilesSummary::default();
    while let Some(r) = results.next().await {
        match r? {
            Outcome::Unchanged(size) => {
                summary.unchanged += 1;
                summary.bytes += size;
            }
            Outcome::Written(size) => {
                summary.restored += 1;
                summary.bytes += size;
                summary.rewritten += size;
            }
        }
    }
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    Ok(summary)
}

fn restore_file(shared: &Shared, job: &Job) -> CliResult<Outcome> {
    let options = &shared.options;
    let entry = file_entry(&job.file);
    let at = place(&options.anchors, &job.local)?;
    if options.delta
        && !job.zeroed
        && job.file.size > 0
        && let Some(mut file) = open_in_place(&at, OFlags::RDONLY)
        && file.metadata().map(|m| m.len()).ok() == Some(job.file.size)
    {
        let mut hash = Sha1Writer::new(std::io::sink());
        std::io::copy(&mut file, &mut hash).map_err(|e| io(&job.local, "read", e))?;
        let (_, sha1, _) = hash.finish();
        if job.file.checksum.as_deref() == Some(sha1.as_str()) {
            keep_in_place(&at, &job.local, &entry, options.as_root)?;
            return Ok(Outcome::Unchanged(job.file.size));
        }
    }
    let out = output_at(&at, options.delta)?;
    let result = (|| {
        let mut output = create_output(&out, &job.local, entry.owner.mode)?;
        if job.zeroed || job.file.size == 0 {
            output.file.set_len(job.file.size).map_err(|e| io(&job.local, "size", e))?;
        } else {
            let (sha1, len) = match job.file.block_incr {
                Some(bi) => write_blocks(shared, &job.file, bi, &mut output.file, &job.local)?,
                None => write_stored(shared, &job.file, &mut output.file, &job.local)?,
            };
            check(&shared.manifest, &job.file, &sha1, len)?;
        }
        finish_file(output, (&out, &at), &job.local, &entry, options.as_root)
    })();
    if result.is_err() {
        let _ = out.remove_name(&out.name);
    }
    result.map(|()| Outcome::Written(job.file.size))
}

fn check(m: &Manifest, file: &pgb::FileEntry, sha1: &str, len: u64) -> CliResult<()> {
    if len != file.size {
        return Err(corrupt(m, format!("{} restored to {len} bytes, the manifest says {}", file.name, file.size)));
    }
    match &file.checksum {
        Some(expected) if expected != sha1 => {
            Err(corrupt(m, format!("{}: the restored file's SHA-1 is {sha1}, the manifest says {expected}", file.name)))
        }
        _ => Ok(()),
    }
}

fn object_key(shared: &Shared, relative: &str) -> String {
    format!("backup/{}/{relative}", shared.stanza)
}

fn get(shared: &Shared, key: &str, range: std::ops::Range<u64>) -> CliResult<bytes::Bytes> {
    Ok(shared.handle.block_on(shared.store.get_range(key, range))?)
}

/// A file stored whole or in a bundle: decrypted and decompressed as it streams in.
fn write_stored(
    shared: &Shared,
    file: &pgb::FileEntry,
    out: &mut std::fs::File,
    local: &Path,
) -> CliResult<(String, u64)> {
    let m = &shared.manifest;
    let key = object_key(shared, &m.file_object(file));
    let bundled = file.bundle_id.is_some_and(|b| b != 0);
    let raw = bundled && m.bundle_raw;
    let start = if bundled { file.bundle_offset } else { 0 };
    let end =
        start.checked_add(file.size_repo).ok_or_else(|| corrupt(m, format!("{}: repo-size overflows", file.name)))?;
    let writer = Sha1Writer::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut decoder = Decoder::new(m.cipher_pass.as_deref().map(str::as_bytes), raw, &m.compress_type, writer)?;
    let mut at = start;
    while at < end {
        let next = end.min(at.saturating_add(READ));
        let bytes = get(shared, &key, at..next)?;
        decoder.update(&bytes, &key)?;
        at = next;
    }
    let writer = decoder.finish(&key)?;
    let (mut buffered, sha1, len) = writer.finish();
    buffered.flush().map_err(|e| io(local, "write", e))?;
    Ok((sha1, len))
}

/// A block-incremental file: its map read from the end of its stored bytes, then each block
/// taken from the super block the map names (in this backup or an earlier one), in file order.
fn write_blocks(
    shared: &Shared,
    file: &pgb::FileEntry,
    bi: pgb::BlockIncr,
    out: &mut std::fs::File,
    local: &Path,
) -> CliResult<(String, u64)> {
    let m = &shared.manifest;
    let pass = m.cipher_pass.as_deref().map(str::as_bytes);
    let bad = |why: &str| corrupt(m, format!("{}: {why}", file.name));
    if bi.size == 0 || bi.size > MAX_PIECE || bi.map_size > MAX_PIECE || bi.map_size > file.size_repo {
        return Err(bad("block size or map size out of range"));
    }
    let key = object_key(shared, &m.file_object(file));
    let start = if file.bundle_id.is_some_and(|b| b != 0) { file.bundle_offset } else { 0 };
    let map_at = start.checked_add(file.size_repo - bi.map_size).ok_or_else(|| bad("map offset overflows"))?;
    let stored_map = get(shared, &key, map_at..map_at + bi.map_size)?;
    let map = decode_all(&stored_map, pass, true, "none", MAX_PIECE as usize, &key)?;
    let blocks = file.size.div_ceil(bi.size);
    let checksum_size = usize::try_from(bi.checksum_size).map_err(|_| bad("checksum size"))?;
    let items = blockmap::read(&map, bi.size, checksum_size, blocks)?;
    if items.len() as u64 != blocks {
        return Err(bad(&format!("its block map names {} blocks, the file has {blocks}", items.len())));
    }
    let mut writer = Sha1Writer::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut current: Option<((u32, u64, u64), Vec<u8>)> = None;
    for (i, item) in items.iter().enumerate() {
        let id = (item.reference, item.bundle_id, item.offset);
        if current.as_ref().map(|(k, _)| *k) != Some(id) {
            let label = m.references.get(item.reference as usize).ok_or_else(|| {
                bad(&format!("its block map names reference {} of {}", item.reference, m.references.len()))
            })?;
            if item.size > MAX_PIECE || item.super_block_size > MAX_PIECE {
                return Err(bad("a super block is larger than any pgBackRest writes"));
            }
            let object = object_key(shared, &Manifest::block_object(label, &file.name, item.bundle_id));
            let end = item.offset.checked_add(item.size).ok_or_else(|| bad("super block offset overflows"))?;
            let stored = get(shared, &object, item.offset..end)?;
            let plain = decode_all(&stored, pass, true, &m.compress_type, item.super_block_size as usize, &object)?;
            current = Some((id, plain));
        }
        let Some((_, plain)) = &current else { continue };
        let offset = (i as u64) * bi.size;
        let want = bi.size.min(file.size - offset) as usize;
        let from = usize::try_from(item.block.saturating_mul(bi.size)).map_err(|_| bad("block number"))?;
        let block = plain.get(from..from.saturating_add(want)).ok_or_else(|| {
            bad(&format!("block {} of a super block of {} bytes is not there", item.block, plain.len()))
        })?;
        writer.write_all(block).map_err(|e| io(local, "write", e))?;
    }
    let (mut buffered, sha1, len) = writer.finish();
    buffered.flush().map_err(|e| io(local, "write", e))?;
    Ok((sha1, len))
}
