//! Restoring a backup pgBackRest made (issue 25): its manifest is read as pgBackRest writes it
//! and placed by the same plan as pgstrata's own backups (directories, links, tablespaces,
//! `--tablespace-map`, `--link-map`, `--db-include`, `--delta`: a file in place whose SHA-1 is
//! the manifest's stays), then each file is read by [`crate::pgbackrest::files::Reader`] —
//! decrypted, decompressed, its block map followed, its size and SHA-1 checked — straight into
//! its output file, `process-max` files at a time.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt;
use pgstrata_repo_format::meta::{
    BackupSettings, DirEntry, FileData, FileEntry, LinkEntry, ManifestEntry, ManifestHeader, Ownership, Target,
};
use pgstrata_repo_format::pgbackrest::manifest::{self as pgb, Manifest};
use pgstrata_repo_format::pgbackrest::stream::Sha1Writer;
use pgstrata_repo_format::pgbackrest::{lsn_of, timeline_of};
use pgstrata_repo_format::{BackupLabel, BackupType, Sha256Digest};
use pgstrata_storage::RepoStore;
use rustix::fs::OFlags;

use super::files::{
    FileOptions, FilesSummary, blocking, create_output, finish_file, keep_in_place, open_in_place, output_at, place,
};
use super::owner::io;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::pgbackrest::files::{READ, Reader, Span};

fn owner(o: &pgb::Owner) -> Ownership {
    Ownership { mode: o.mode, user: o.user.clone(), group: o.group.clone() }
}

fn corrupt(m: &Manifest, why: String) -> CliError {
    CliError::new(ErrorCode::Format, format!("pgBackRest's manifest of {}: {why}", m.label))
}

/// The manifest as pgstrata's restore plan reads one: a header and every entry in path order.
pub fn convert(m: &Manifest, db_id: u32) -> CliResult<(ManifestHeader, Vec<ManifestEntry>)> {
    let label: BackupLabel = m.label.parse()?;
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
        timeline: timeline_of(m.archive_start.as_deref()),
        lsn_start: lsn_of(m.lsn_start.as_deref()),
        lsn_stop: lsn_of(m.lsn_stop.as_deref()),
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
    // pgBackRest lists `pg_tblspc`, the parent of the tablespace targets, as a path of its own:
    // it is no directory of the restore (`pg_data/pg_tblspc` is).
    entries.extend(
        m.paths
            .iter()
            .filter(|p| p.name != "pg_tblspc")
            .map(|p| ManifestEntry::Dir(DirEntry { path: p.name.clone(), owner: owner(&p.owner) })),
    );
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
    reader: Reader,
    options: FileOptions,
}

enum Outcome {
    Unchanged(u64),
    Written(u64),
}

/// Files restored together: those lying back to back in one bundle (read with one request of
/// at most [`READ`] bytes), or one file alone.
struct Batch {
    span: Option<Span>,
    jobs: Vec<Job>,
}

/// Bytes written to a restored file at a time.
const WRITE: usize = 64 << 10;

/// Most files in one batch.
const BATCH_FILES: usize = 256;

/// The jobs in batches: bundled files in bundle order (as pgBackRest restores them), grouped
/// where they lie back to back; every other file alone.
fn batches(reader: &Reader, jobs: Vec<Job>) -> Vec<Batch> {
    let mut keyed: Vec<(Option<Span>, Job)> = jobs
        .into_iter()
        .map(|job| {
            let span =
                (!job.zeroed).then(|| reader.bundled(&job.file)).flatten().filter(|(_, r)| r.end - r.start <= READ);
            (span, job)
        })
        .collect();
    keyed.sort_by(|(a, _), (b, _)| match (a, b) {
        (Some((ka, ra)), Some((kb, rb))) => (ka, ra.start).cmp(&(kb, rb.start)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let mut out: Vec<Batch> = Vec::new();
    for (span, job) in keyed {
        if let (Some((key, range)), Some(Batch { span: Some((last_key, last)), jobs })) = (&span, out.last_mut())
            && last_key == key
            && last.end == range.start
            && range.end - last.start <= READ
            && jobs.len() < BATCH_FILES
        {
            last.end = range.end;
            jobs.push(job);
            continue;
        }
        out.push(Batch { span, jobs: vec![job] });
    }
    out
}

/// Restores the files, `process-max` batches at a time.
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
    let shared = Arc::new(Shared { reader: Reader::new(store, stanza, manifest), options });
    let batches = batches(&shared.reader, jobs);
    let results = futures::stream::iter(batches)
        .map(|batch| {
            let shared = Arc::clone(&shared);
            let progress = Arc::clone(&progress);
            async move {
                let stored = match &batch.span {
                    Some((key, range)) => Some((range.start, store.get_range(key, range.clone()).await?)),
                    None => None,
                };
                let outcomes = blocking(move || {
                    let mut outcomes = Vec::with_capacity(batch.jobs.len());
                    for job in &batch.jobs {
                        let given = match &stored {
                            Some((start, bytes)) => {
                                let from = (job.file.bundle_offset - start) as usize;
                                bytes.get(from..from + job.file.size_repo as usize)
                            }
                            None => None,
                        };
                        outcomes.push(restore_file(&shared, job, given)?);
                        if let Ok(mut p) = progress.lock() {
                            p.add(job.file.size);
                        }
                    }
                    Ok(outcomes)
                })
                .await?;
                Ok::<_, CliError>(outcomes)
            }
        })
        .buffer_unordered(workers);
    futures::pin_mut!(results);
    let mut summary = FilesSummary::default();
    while let Some(r) = results.next().await {
        for outcome in r? {
            match outcome {
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
    }
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    Ok(summary)
}

/// Restores one file; `given`: its stored bytes, read with its batch.
fn restore_file(shared: &Shared, job: &Job, given: Option<&[u8]>) -> CliResult<Outcome> {
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
            // Writes of 64 KiB: measured here, 1 MiB writes made the kernel's copy into the page
            // cache several times slower once it held a previous restore's pages (scale 100:
            // 6.2 s against 2.4 s).
            // Streamed: written back and dropped from the page cache as the file goes.
            let mut buffered =
                std::io::BufWriter::with_capacity(WRITE, crate::durable::Streamed::new(&mut output.file));
            match given {
                Some(stored) => shared.reader.read_given(&job.file, stored, &mut buffered)?,
                None => shared.reader.read(&job.file, &mut buffered)?,
            }
            buffered.flush().map_err(|e| io(&job.local, "write", e))?;
        }
        finish_file(output, (&out, &at), &job.local, &entry, options.as_root)
    })();
    if result.is_err() {
        let _ = out.remove_name(&out.name);
    }
    result.map(|()| Outcome::Written(job.file.size))
}
