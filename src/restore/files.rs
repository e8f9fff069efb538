//! Restoring regular files, one job per file: `process-max` jobs run at once, and a job holds
//! its one output file open only while it runs, so open descriptors depend on the worker count,
//! never on the number of files.
//!
//! Small files that lie back to back in a pack are restored in batches, their stored bytes read
//! with one ranged request; a large file is a job of its own, its parts fetched ahead in
//! parallel, each decoded and written frame by frame at its offset (a part in flight holds one
//! frame of plaintext, not eight). Every file is checked frame by frame against the
//! manifest's chunk digests and given its time, mode and owner through its open descriptor.
//! Into an empty directory a file is written straight under its name (the restore's marker and
//! the held-back `pg_control` make the whole restore the unit of crash safety, and a second
//! directory operation per file would double the cost of many small files); with `--delta`, a
//! file that differs from the one in place is written under a temporary name and renamed over
//! it. The restore syncs each filesystem it wrote once, at the end, before it completes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pgstrata_repo_format::meta::{FileData, FileEntry, PageDigests, PartRef};
use pgstrata_repo_format::pg::BLCKSZ;
use pgstrata_repo_format::{BackupLabel, BlobDecoder, Sha256Digest, decode_blob_with_summary};

use crate::anchor::{Anchors, Parent};
use crate::durable;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::pages::Paged;
use crate::progress::Progress;
use crate::repo::Repo;
use crate::restore::owner::{self, apply_owner_to, io};
use crate::restore::shared_file::SharedFile;
use rustix::fs::OFlags;

/// What the file jobs need besides the file.
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// The directories every file is reached from, never through a link.
    pub anchors: Arc<Anchors>,
    pub delta: bool,
    /// With `delta`: how a file in place is found to be right already.
    pub compare: Compare,
    pub as_root: bool,
    pub frame_size: u64,
    pub workers: usize,
}

/// How a restore into a directory holding a cluster finds a file in place already right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compare {
    /// By its chunk digests (`--delta`).
    Content,
    /// By its size and modification time alone (`--delta --force`, pgBackRest's shortcut: fast,
    /// and wrong where a file changed without its size or time changing); a file that fails it
    /// is compared by content.
    SizeAndTime,
    /// Never: every file is rewritten (`--force` alone).
    Never,
}

impl Compare {
    /// pgBackRest's meaning of `--delta` and `--force`.
    pub fn chosen(delta: bool, force: bool) -> Self {
        match (delta, force) {
            (true, true) => Self::SizeAndTime,
            (false, true) => Self::Never,
            _ => Self::Content,
        }
    }

    /// Whether the file at `at` is taken as right without reading it, or is not to be kept.
    fn settled(self, at: &Parent, entry: &FileEntry) -> Option<bool> {
        match self {
            Self::Content => None,
            Self::Never => Some(false),
            Self::SizeAndTime => {
                let st = at.kind().ok()??;
                let regular = rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile;
                (regular && u64::try_from(st.st_size).ok() == Some(entry.size) && st.st_mtime == entry.mtime)
                    .then_some(true)
            }
        }
    }
}

/// One file to restore and where it goes.
#[derive(Debug)]
pub struct FileJob {
    /// The manifest's entry, its data as stored in `from` (a reference already resolved).
    pub entry: FileEntry,
    pub local: PathBuf,
    /// The backup whose packs hold the data.
    pub from: BackupLabel,
    /// A page-level file: where each of its pages is.
    pub paged: Option<Box<Paged>>,
    /// A file of a database left out of a selective restore: written as an empty sparse file
    /// of its size, nothing read from the repository.
    pub zeroed: bool,
}

/// What the file jobs did.
#[derive(Debug, Default)]
pub struct FilesSummary {
    pub restored: usize,
    /// Delta: already identical in place.
    pub unchanged: usize,
    /// Size of every file of the backup (restored or unchanged).
    pub bytes: u64,
    /// Bytes written (delta: what differed).
    pub rewritten: u64,
}

impl FilesSummary {
    /// What a delta restore kept and rewrote.
    pub fn report_delta(&self) {
        tracing::info!(
            "delta restore: {} files were already up to date, {} rewritten: {} written of {}",
            self.unchanged,
            self.restored,
            crate::progress::human(self.rewritten),
            crate::progress::human(self.bytes)
        );
    }
}

/// A part of a file: where it is stored, the offset it restores to, its first chunk digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartJob {
    pub part: PartRef,
    pub offset: u64,
    pub first_chunk: usize,
}

/// The parts of a file with their offsets, checked against its recorded size and frame size.
pub fn part_jobs(entry: &FileEntry, frame_size: u64) -> CliResult<Vec<PartJob>> {
    let parts = match &entry.data {
        FileData::Empty => return Ok(Vec::new()),
        FileData::Stored { parts } => parts,
        FileData::Same { .. } | FileData::Pages { .. } => {
            return Err(CliError::new(
                ErrorCode::NotImplemented,
                format!("{}: incremental data needs a newer pgstrata", entry.path),
            ));
        }
    };
    let frame_size = frame_size.max(1);
    let mut jobs = Vec::with_capacity(parts.len());
    let mut offset = 0u64;
    for part in parts {
        if !offset.is_multiple_of(frame_size) {
            return Err(CliError::new(ErrorCode::Format, format!("{}: a part starts inside a frame", entry.path)));
        }
        let first_chunk = usize::try_from(offset / frame_size).unwrap_or(usize::MAX);
        jobs.push(PartJob { part: *part, offset, first_chunk });
        offset = offset.saturating_add(part.plain_len);
    }
    if offset != entry.size {
        return Err(CliError::new(
            ErrorCode::Format,
            format!("{}: parts add up to {offset} bytes, the manifest says {}", entry.path, entry.size),
        ));
    }
    Ok(jobs)
}

/// Runs the file jobs as they come (streamed from the manifest), small files gathered into
/// batches read with one ranged request, `workers` x 2 batches or large files at a time (their
/// decoding and writing run on at most `process-max` x 2 blocking threads); `total` bytes are
/// expected (for progress). Nothing is fsynced here: the caller syncs the filesystems once
/// every file is in place.
pub async fn restore_files(
    repo: &Repo,
    jobs: impl futures::Stream<Item = CliResult<FileJob>>,
    total: u64,
    options: FileOptions,
) -> CliResult<FilesSummary> {
    let progress = Arc::new(Mutex::new(Progress::new("restore", total)));
    let workers = options.workers;
    let results = batches(jobs)
        .map(|batch| {
            let progress = Arc::clone(&progress);
            let options = options.clone();
            async move {
                let mut batch = batch?;
                if batch.iter().all(|j| j.zeroed) {
                    return write_sparse(batch, options, &progress).await;
                }
                if batch.len() == 1 && !is_small(&batch[0].entry) {
                    let job = batch.pop().ok_or_else(|| CliError::new(ErrorCode::Format, "empty batch"))?;
                    restore_file(repo, job, options, &progress).await.map(|o| vec![o])
                } else {
                    restore_batch(repo, batch, options, &progress).await
                }
            }
        })
        .buffer_unordered(workers.max(1) * 2);
    futures::pin_mut!(results);
    let mut summary = FilesSummary::default();
    while let Some(r) = results.next().await {
        for outcome in r? {
            match outcome {
                Outcome::Unchanged(bytes) => {
                    summary.unchanged += 1;
                    summary.bytes += bytes;
                }
                Outcome::Written { size, rewritten } => {
                    summary.restored += 1;
                    summary.bytes += size;
                    summary.rewritten += rewritten;
                }
            }
        }
    }
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    Ok(summary)
}

/// Stored bytes of a part read as part of a batch, and of a batch's one request.
const SMALL_PART: u64 = 1 << 20;
const BATCH_BYTES: u64 = 2 << 20;
const BATCH_FILES: usize = 256;

/// The one stored part of a small file (`None` for an empty file): small stored and small
/// decoded (a batch holds one file's plaintext at a time).
fn small_part(entry: &FileEntry) -> Option<PartRef> {
    match &entry.data {
        FileData::Stored { parts }
            if parts.len() == 1 && parts[0].len <= SMALL_PART && parts[0].plain_len <= SMALL_PART =>
        {
            Some(parts[0])
        }
        _ => None,
    }
}

/// Empty, or stored in one small part: restored within a batch.
fn is_small(entry: &FileEntry) -> bool {
    matches!(entry.data, FileData::Empty) || small_part(entry).is_some()
}

/// Whether `next` can join a batch whose stored bytes so far are `range` (pack, start, end).
fn joins(batch: &[FileJob], range: Option<(u32, u64, u64)>, next: &FileJob) -> bool {
    let first = batch.first();
    if first.is_some_and(|f| f.zeroed) != next.zeroed {
        return false;
    }
    if next.zeroed {
        return batch.len() < BATCH_FILES;
    }
    if batch.len() >= BATCH_FILES
        || !is_small(&next.entry)
        || first.is_some_and(|f| !is_small(&f.entry) || f.from != next.from)
    {
        return false;
    }
    match (range, small_part(&next.entry)) {
        (Some((pack, start, end)), Some(p)) => {
            p.pack == pack && p.offset == end && p.offset.saturating_add(p.len).saturating_sub(start) <= BATCH_BYTES
        }
        _ => true,
    }
}

/// Gathers consecutive small files whose parts lie back to back in one pack (a backup writes
/// them so, in path order) into batches; every other file is a batch of its own.
fn batches(
    jobs: impl futures::Stream<Item = CliResult<FileJob>>,
) -> impl futures::Stream<Item = CliResult<Vec<FileJob>>> {
    let jobs = Box::pin(jobs);
    futures::stream::unfold((jobs, None::<FileJob>, false), |(mut jobs, carry, ended)| async move {
        let mut batch: Vec<FileJob> = Vec::new();
        let mut range: Option<(u32, u64, u64)> = None;
        let push = |batch: &mut Vec<FileJob>, range: &mut Option<(u32, u64, u64)>, job: FileJob| {
            if let Some(p) = small_part(&job.entry) {
                *range = Some(match *range {
                    Some((pack, start, _)) => (pack, start, p.offset.saturating_add(p.len)),
                    None => (p.pack, p.offset, p.offset.saturating_add(p.len)),
                });
            }
            batch.push(job);
        };
        if let Some(job) = carry {
            push(&mut batch, &mut range, job);
        }
        if ended {
            return (!batch.is_empty()).then_some((Ok(batch), (jobs, None, true)));
        }
        loop {
            match jobs.next().await {
                Some(Ok(job)) if batch.is_empty() || joins(&batch, range, &job) => {
                    push(&mut batch, &mut range, job);
                }
                Some(Ok(job)) => return Some((Ok(batch), (jobs, Some(job), false))),
                Some(Err(e)) => return Some((Err(e), (jobs, None, true))),
                None => return (!batch.is_empty()).then_some((Ok(batch), (jobs, None, true))),
            }
        }
    })
}

/// Restores a batch of small files: (delta: those that differ from the file in place) one
/// ranged request for their stored bytes, then, on one blocking thread, each file decoded,
/// checked against the manifest, written under its temporary name and renamed into place.
async fn restore_batch(
    repo: &Repo,
    batch: Vec<FileJob>,
    options: FileOptions,
    progress: &Mutex<Progress>,
) -> CliResult<Vec<Outcome>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let batch = if options.delta {
        let frame = usize::try_from(options.frame_size).unwrap_or(1 << 20);
        let (as_root, compare, anchors) = (options.as_root, options.compare, Arc::clone(&options.anchors));
        let (changed, unchanged) = blocking(move || {
            let mut changed = Vec::new();
            let mut unchanged = Vec::new();
            for job in batch {
                let at = place(&anchors, &job.local)?;
                let right = compare.settled(&at, &job.entry).unwrap_or_else(|| {
                    open_in_place(&at, OFlags::RDONLY)
                        .and_then(|f| in_place(f, &job.entry, frame))
                        .is_some_and(|p| p.same)
                });
                if right {
                    keep_in_place(&at, &job.local, &job.entry, as_root)?;
                    unchanged.push(job.entry.size);
                } else {
                    changed.push(job);
                }
            }
            Ok((changed, unchanged))
        })
        .await?;
        for size in unchanged {
            outcomes.push(Outcome::Unchanged(size));
            if let Ok(mut p) = progress.lock() {
                p.add(size);
            }
        }
        changed
    } else {
        batch
    };
    let parts: Vec<PartRef> = batch.iter().filter_map(|j| small_part(&j.entry)).collect();
    let (stored, start, key) = match (parts.first(), parts.last(), batch.first()) {
        (Some(first), Some(last), Some(job)) => {
            let key = repo.layout.pack(&job.from, first.pack);
            (repo.store.get_range(&key, first.offset..last.offset.saturating_add(last.len)).await?, first.offset, key)
        }
        _ => (bytes::Bytes::new(), 0, String::new()),
    };
    let k = repo.key.clone();
    let options = options.clone();
    let written = blocking(move || {
        let mut written = Vec::with_capacity(batch.len());
        for job in batch {
            let plain = match small_part(&job.entry) {
                Some(p) => {
                    let at = usize::try_from(p.offset - start).unwrap_or(usize::MAX);
                    let len = usize::try_from(p.len).unwrap_or(usize::MAX);
                    let sealed = stored.get(at..at.saturating_add(len)).ok_or_else(|| {
                        CliError::new(
                            ErrorCode::Format,
                            format!("{key}: the stored bytes of {} are missing", job.entry.path),
                        )
                    })?;
                    decode_part(&key, &job.entry, PartJob { part: p, offset: 0, first_chunk: 0 }, sealed, k.as_ref())?
                }
                None => Vec::new(),
            };
            if plain.len() as u64 != job.entry.size {
                return Err(CliError::new(
                    ErrorCode::Format,
                    format!("{}: {} bytes stored, the manifest says {}", job.entry.path, plain.len(), job.entry.size),
                ));
            }
            write_whole(&job, &plain, &options)?;
            written.push(job.entry.size);
        }
        Ok(written)
    })
    .await?;
    for size in written {
        if let Ok(mut p) = progress.lock() {
            p.add(size);
        }
        outcomes.push(Outcome::Written { size, rewritten: size });
    }
    Ok(outcomes)
}

/// Writes the files of a left-out database as empty sparse files of their recorded size, with
/// their owner, mode and time (see [`select`](super::select)).
async fn write_sparse(
    batch: Vec<FileJob>,
    options: FileOptions,
    progress: &Mutex<Progress>,
) -> CliResult<Vec<Outcome>> {
    let sizes = blocking(move || {
        let mut sizes = Vec::with_capacity(batch.len());
        for job in batch {
            let at = place(&options.anchors, &job.local)?;
            let out = output_at(&at, options.delta)?;
            let result = (|| {
                let f = create_output(&out, &job.local, job.entry.owner.mode)?;
                f.file.set_len(job.entry.size).map_err(|e| io(&job.local, "size", e))?;
                finish_file(f, (&out, &at), &job.local, &job.entry, options.as_root)
            })();
            if result.is_err() {
                let _ = out.remove_name(&out.name);
            }
            result?;
            sizes.push(job.entry.size);
        }
        Ok(sizes)
    })
    .await?;
    Ok(sizes
        .into_iter()
        .map(|size| {
            if let Ok(mut p) = progress.lock() {
                p.add(size);
            }
            Outcome::Written { size, rewritten: 0 }
        })
        .collect())
}

/// The directory a file goes in, reached without following a link, and its name.
pub(super) fn place(anchors: &Anchors, local: &Path) -> CliResult<Parent> {
    anchors.parent(local).map_err(|e| io(local, "reach", e))
}

/// Where a file is written: straight under its name into an empty directory, under a temporary
/// name beside it when it replaces a file in place (`--delta`).
pub(super) fn output_at(at: &Parent, delta: bool) -> CliResult<Parent> {
    if !delta {
        return at.sibling(at.name.clone()).map_err(|e| io(Path::new(&at.name), "open", e));
    }
    at.sibling(durable::temp_file_name(&at.name)).map_err(|e| io(Path::new(&at.name), "open", e))
}

/// A file restore created and holds open.
pub(super) struct Output {
    pub(super) file: std::fs::File,
    /// The file was created with its recorded mode, and the umask took nothing from it: no
    /// separate change of mode needed (one metadata update per file fewer).
    mode_exact: bool,
}

/// Creates the output file of a job (truncating a leftover of an interrupted attempt; never
/// through a link at the name).
pub(super) fn create_output(out: &Parent, local: &Path, mode: u32) -> CliResult<Output> {
    let create = OFlags::WRONLY | OFlags::CREATE;
    match out.open(create | OFlags::EXCL, mode & 0o777) {
        Ok(file) => Ok(Output { file, mode_exact: owner::created_with(mode) }),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = out.open(create | OFlags::TRUNC, mode & 0o777).map_err(|e| io(local, "create", e))?;
            Ok(Output { file: regular(file, local)?, mode_exact: false })
        }
        Err(e) => Err(io(local, "create", e)),
    }
}

/// A file opened for writing must be a regular file (not a device or pipe planted there).
fn regular(file: std::fs::File, local: &Path) -> CliResult<std::fs::File> {
    let meta = file.metadata().map_err(|e| io(local, "read", e))?;
    if !meta.is_file() {
        return Err(CliError::new(
            ErrorCode::FileRead,
            format!("{} is not a regular file: remove it and restore again", local.display()),
        ));
    }
    Ok(file)
}

/// Writes a whole small file with its mode, time and owner (see [`output_at`]).
fn write_whole(job: &FileJob, plain: &[u8], options: &FileOptions) -> CliResult<()> {
    use std::io::Write;
    let at = place(&options.anchors, &job.local)?;
    let out = output_at(&at, options.delta)?;
    let result = (|| {
        let mut f = create_output(&out, &job.local, job.entry.owner.mode)?;
        f.file.write_all(plain).map_err(|e| io(&job.local, "write", e))?;
        finish_file(f, (&out, &at), &job.local, &job.entry, options.as_root)
    })();
    if result.is_err() {
        let _ = out.remove_name(&out.name);
    }
    result
}

/// Sets a written file's owner, mode and time through its descriptor and, when it was written
/// under a temporary name, renames it into place within the directory it was reached in (the
/// filesystems are synced once at the end of the restore, before it reports success).
pub(super) fn finish_file(
    output: Output,
    (out, at): (&Parent, &Parent),
    local: &Path,
    entry: &FileEntry,
    as_root: bool,
) -> CliResult<()> {
    let Output { file, mode_exact } = output;
    apply_owner_to(&file, local, &entry.owner, as_root, mode_exact)?;
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(entry.mtime).unwrap_or(0));
    file.set_modified(mtime).map_err(|e| io(local, "set the time of", e))?;
    drop(file);
    if out.name != at.name {
        at.rename_from(&out.name).map_err(|e| io(local, "rename into", e))?;
    }
    Ok(())
}

/// A file found right in place keeps its bytes and gets its recorded owner and mode, through
/// a descriptor (never through a link).
pub(super) fn keep_in_place(at: &Parent, local: &Path, entry: &FileEntry, as_root: bool) -> CliResult<()> {
    let file = open_in_place(at, OFlags::RDONLY).ok_or_else(|| {
        CliError::new(ErrorCode::FileRead, format!("unable to open {}: it changed during the restore", local.display()))
    })?;
    apply_owner_to(&file, local, &entry.owner, as_root, false)
}

enum Outcome {
    Unchanged(u64),
    /// Written: the file's size, and the bytes written (less than the size where a delta
    /// restore kept chunks already right in place).
    Written {
        size: u64,
        rewritten: u64,
    },
}

async fn restore_file(
    repo: &Repo,
    job: FileJob,
    options: FileOptions,
    progress: &Mutex<Progress>,
) -> CliResult<Outcome> {
    let parts = if job.paged.is_some() { Vec::new() } else { part_jobs(&job.entry, options.frame_size)? };
    let entry = Arc::new(job.entry);
    let (local, label, paged) = (job.local, job.from, job.paged);
    let at = Arc::new(place(&options.anchors, &local)?);
    // Delta: a file partly right in place is rewritten in place, chunk by chunk, where it
    // differs (the restore's marker and held-back pg_control make the restore, not the file,
    // the unit of crash safety); a file with nothing right is written anew.
    let mut kept: Option<Arc<Keep>> = None;
    let settled = if options.delta { options.compare.settled(&at, &entry) } else { Some(false) };
    if settled == Some(true) {
        keep_in_place(&at, &local, &entry, options.as_root)?;
        if let Ok(mut p) = progress.lock() {
            p.add(entry.size);
        }
        return Ok(Outcome::Unchanged(entry.size));
    }
    if settled.is_none() {
        let (a, e, frame) =
            (Arc::clone(&at), Arc::clone(&entry), usize::try_from(options.frame_size).unwrap_or(1 << 20));
        let current =
            blocking(move || Ok(open_in_place(&a, OFlags::RDONLY).and_then(|f| in_place(f, &e, frame)))).await?;
        if let Some(current) = current {
            if current.same {
                keep_in_place(&at, &local, &entry, options.as_root)?;
                if let Ok(mut p) = progress.lock() {
                    p.add(entry.size);
                }
                return Ok(Outcome::Unchanged(entry.size));
            }
            kept = current.keep.any().then(|| Arc::new(current.keep));
        }
    }
    let out = Arc::new(if kept.is_some() {
        at.sibling(at.name.clone()).map_err(|e| io(&local, "open", e))?
    } else {
        output_at(&at, options.delta)?
    });
    let (o, l, size, mode, in_place) = (Arc::clone(&out), local.clone(), entry.size, entry.owner.mode, kept.is_some());
    let Output { file, mode_exact } = blocking(move || {
        let o = if in_place {
            let file = open_in_place(&o, OFlags::WRONLY).ok_or_else(|| {
                CliError::new(
                    ErrorCode::FileRead,
                    format!("unable to open {}: it changed during the restore", l.display()),
                )
            })?;
            Output { file, mode_exact: false }
        } else {
            create_output(&o, &l, mode)?
        };
        o.file.set_len(size).map_err(|e| io(&l, "size", e))?;
        Ok(o)
    })
    .await?;
    let parts = match &kept {
        Some(keep) => parts.into_iter().filter(|j| !keep.covers(j.offset, j.part.plain_len)).collect(),
        None => parts,
    };
    let file = Arc::new(SharedFile::new(file));
    let written = match &paged {
        Some(paged) => {
            super::paged::write_paged(repo, &entry, paged, kept.as_deref(), &file, &local, &options, progress).await
        }
        None => {
            write_parts(repo, &label, &entry, (&file, &local), parts, kept.clone(), options.workers, progress).await
        }
    };
    let rewritten = match written {
        Ok(bytes) => bytes,
        Err(e) => {
            drop(file);
            if !in_place {
                let _ = out.remove_name(&out.name);
            }
            return Err(e);
        }
    };
    if let (Some(_), Ok(mut p)) = (&kept, progress.lock()) {
        p.add(entry.size - rewritten.min(entry.size));
    }
    let file = Arc::try_unwrap(file)
        .map_err(|_| CliError::new(ErrorCode::Format, "a restored file is still in use"))?
        .into_file();
    let (size, as_root) = (entry.size, options.as_root);
    blocking(move || finish_file(Output { file, mode_exact }, (&out, &at), &local, &entry, as_root)).await?;
    Ok(Outcome::Written { size, rewritten })
}

/// Opens the regular file in place (a delta restore), never through a link and without
/// blocking on a pipe planted there; `None` when there is none.
pub(super) fn open_in_place(at: &Parent, flags: OFlags) -> Option<std::fs::File> {
    let file = at.open(flags | OFlags::NONBLOCK, 0).ok()?;
    let meta = file.metadata().ok()?;
    meta.is_file().then_some(file)
}

/// What a delta restore found right in place, in pieces of `unit` bytes: pages (of a file
/// whose page digests the manifest has) or chunks of the frame size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keep {
    unit: u64,
    kept: Vec<bool>,
}

impl Keep {
    pub fn new(unit: u64, kept: Vec<bool>) -> Self {
        Self { unit: unit.max(1), kept }
    }

    fn any(&self) -> bool {
        self.kept.iter().any(|k| *k)
    }

    fn is_kept(&self, piece: u64) -> bool {
        usize::try_from(piece).ok().and_then(|i| self.kept.get(i)).copied().unwrap_or(false)
    }

    /// Whether every byte of `len` bytes at `start` is right in place.
    pub fn covers(&self, start: u64, len: u64) -> bool {
        len == 0 || (start / self.unit..=(start + len - 1) / self.unit).all(|i| self.is_kept(i))
    }

    /// The stretches of `len` bytes at `start` that are not right in place, neighbours merged.
    pub fn missing(&self, start: u64, len: u64) -> Vec<(u64, u64)> {
        let (end, mut out) = (start + len, Vec::<(u64, u64)>::new());
        let mut piece = start / self.unit;
        while piece * self.unit < end {
            let (from, to) = ((piece * self.unit).max(start), ((piece + 1) * self.unit).min(end));
            if !self.is_kept(piece) {
                match out.last_mut() {
                    Some(last) if last.0 + last.1 == from => last.1 += to - from,
                    _ => out.push((from, to - from)),
                }
            }
            piece += 1;
        }
        out
    }
}

/// A file found in place by a delta restore: whether it is the backup's file, and which
/// pieces of it are.
#[derive(Debug)]
struct InPlace {
    same: bool,
    keep: Keep,
}

/// Compares the file at `path` with `entry`: page by page when the manifest has the digests
/// of its pages, else by chunks of `frame_size`. `None` when it cannot be read.
fn in_place(mut f: std::fs::File, entry: &FileEntry, frame_size: usize) -> Option<InPlace> {
    let by_pages = !entry.page_digests.is_empty();
    let unit = if by_pages { BLCKSZ } else { frame_size.max(1) };
    // Read front to back: twice the kernel's read-ahead (a cold 1 GiB segment was read 4x
    // faster on the test VM's virtio disk).
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::Sequential);
    let (mut size, mut found) = (0u64, Vec::new());
    let mut chunks = Vec::new();
    let mut buf = vec![0u8; if by_pages { READ_PAGES } else { unit }];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match std::io::Read::read(&mut f, &mut buf[n..]).ok()? {
                0 => break,
                k => n += k,
            }
        }
        for piece in buf[..n].chunks(unit) {
            let i = found.len();
            found.push(if by_pages {
                entry.page_digests.0.get(i) == Some(&PageDigests::of(piece))
            } else {
                let digest = Sha256Digest::of(piece);
                let same = entry.chunks.get(i) == Some(&digest);
                chunks.push(digest);
                same
            });
        }
        size += n as u64;
        if n < buf.len() {
            break;
        }
    }
    let same = size == entry.size
        && if by_pages {
            found.iter().all(|k| *k)
        } else {
            pgstrata_repo_format::digest::file_digest(&chunks) == entry.sha256
        };
    Some(InPlace { same, keep: Keep::new(unit as u64, found) })
}

/// Bytes read at a time when comparing a file page by page.
const READ_PAGES: usize = 1 << 20;

/// How far behind the part just written the file's pages are dropped from the page cache: the
/// parts written meanwhile (`process-max` at a time, 8 MiB each) have had time to go to disk.
const DROP_LAG: u64 = 32 << 20;

/// Stored bytes handed to a part's decoder at a time.
const FEED: usize = 256 << 10;

/// Fetches the parts of one file (up to `ahead` at once) and writes each, frame by frame, at
/// its place in the file: a part in flight holds its stored bytes and one frame of plaintext,
/// not the part's whole plaintext.
#[allow(clippy::too_many_arguments)]
async fn write_parts(
    repo: &Repo,
    label: &BackupLabel,
    entry: &Arc<FileEntry>,
    (file, out): (&Arc<SharedFile>, &Path),
    parts: Vec<PartJob>,
    keep: Option<Arc<Keep>>,
    ahead: usize,
    progress: &Mutex<Progress>,
) -> CliResult<u64> {
    let writes = parts.into_iter().map(|job| {
        let (entry, file, out, keep) = (Arc::clone(entry), Arc::clone(file), out.to_path_buf(), keep.clone());
        async move {
            let key = repo.layout.pack(label, job.part.pack);
            let sealed =
                repo.store.get_range(&key, job.part.offset..job.part.offset.saturating_add(job.part.len)).await?;
            let k = repo.key.clone();
            blocking(move || write_part(&key, &entry, job, (&sealed, k.as_ref()), keep.as_deref(), (&file, &out))).await
        }
    });
    run_writes(writes, ahead, progress).await
}

/// Runs writes of parts `ahead` at a time, adding the bytes each wrote to the progress;
/// returns the bytes written.
pub(super) async fn run_writes(
    writes: impl Iterator<Item = impl std::future::Future<Output = CliResult<u64>>>,
    ahead: usize,
    progress: &Mutex<Progress>,
) -> CliResult<u64> {
    let mut written = futures::stream::iter(writes).buffer_unordered(ahead.max(1));
    let mut total = 0;
    while let Some(bytes) = written.next().await {
        let bytes = bytes?;
        total += bytes;
        if let Ok(mut p) = progress.lock() {
            p.add(bytes);
        }
    }
    Ok(total)
}

/// Decodes one stored part frame by frame, checks each frame against the manifest's chunk
/// digest before it is written, writes it at its offset (but what `keep` says is right in
/// place), and checks the part's length. Returns the bytes written.
fn write_part(
    key: &str,
    entry: &FileEntry,
    job: PartJob,
    (sealed, data_key): (&[u8], Option<&pgstrata_repo_format::DataKey>),
    keep: Option<&Keep>,
    (file, out): (&SharedFile, &Path),
) -> CliResult<u64> {
    let mut decoder = BlobDecoder::new(format!("{key} (part of {})", entry.path), data_key);
    let (mut at, mut written) = (job.offset, 0u64);
    // One frame buffer for the part, reused.
    let mut plain = Vec::new();
    for piece in sealed.chunks(FEED) {
        decoder.feed(piece);
        while decoder.poll_into(&mut plain)? {
            if plain.is_empty() {
                continue;
            }
            let chunk = job.first_chunk + decoder.chunks().len() - 1;
            if entry.chunks.get(chunk) != decoder.chunks().last() {
                return Err(mismatch(entry, job));
            }
            let stretches = match keep {
                Some(keep) => keep.missing(at, plain.len() as u64),
                None => vec![(at, plain.len() as u64)],
            };
            let slices = stretches.into_iter().map(|(from, len)| {
                let start = usize::try_from(from - at).unwrap_or(usize::MAX);
                let stretch = plain.get(start..start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)));
                (stretch.unwrap_or_default(), from)
            });
            written += file.write_all_at(slices).map_err(|e| io(out, "write", e))?;
            at += plain.len() as u64;
        }
    }
    let summary = decoder.finish()?;
    if summary.plain_len != job.part.plain_len {
        return Err(mismatch(entry, job));
    }
    crate::durable::start_writeback(file.file(), job.offset, job.part.plain_len);
    crate::durable::drop_behind(file.file(), job.offset.saturating_sub(DROP_LAG));
    Ok(written)
}

/// Decodes one stored part, checking its length and every frame against the manifest.
fn decode_part(
    key: &str,
    entry: &FileEntry,
    job: PartJob,
    sealed: &[u8],
    data_key: Option<&pgstrata_repo_format::DataKey>,
) -> CliResult<Vec<u8>> {
    let what = format!("{key} (part of {})", entry.path);
    let (plain, summary) = decode_blob_with_summary(sealed, &what, data_key)?;
    let expected = entry.chunks.get(job.first_chunk..job.first_chunk + summary.chunk_sha256.len());
    if plain.len() as u64 != job.part.plain_len || expected != Some(summary.chunk_sha256.as_slice()) {
        return Err(mismatch(entry, job));
    }
    Ok(plain)
}

/// A part whose decoded bytes are not what the manifest recorded.
fn mismatch(entry: &FileEntry, job: PartJob) -> CliError {
    CliError::new(
        ErrorCode::Format,
        format!("{}: restored bytes at offset {} do not match the manifest's checksums", entry.path, job.offset),
    )
}

pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> CliResult<T> + Send + 'static) -> CliResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::new(ErrorCode::Format, format!("restore task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pgstrata_repo_format::meta::Ownership;

    fn entry(size: u64, parts: Vec<PartRef>) -> FileEntry {
        FileEntry {
            path: "pg_data/base/1/1259".into(),
            size,
            mtime: 0,
            owner: Ownership { mode: 0o600, user: None, group: None },
            sha256: Sha256Digest::of(b""),
            chunks: vec![],
            data: if parts.is_empty() { FileData::Empty } else { FileData::Stored { parts } },
            page_errors: vec![],
            page_digests: Default::default(),
        }
    }

    fn part(plain_len: u64) -> PartRef {
        PartRef { pack: 0, offset: 0, len: 1, plain_len }
    }

    fn job(name: &str, size: u64, parts: Vec<PartRef>) -> FileJob {
        FileJob {
            entry: FileEntry { path: name.into(), ..entry(size, parts) },
            local: PathBuf::from(name),
            from: "20270115-080000F".parse().unwrap(),
            paged: None,
            zeroed: false,
        }
    }

    #[test]
    fn small_files_back_to_back_in_a_pack_are_batched() {
        let at = |pack, offset, len| PartRef { pack, offset, len, plain_len: len * 3 };
        let jobs = vec![
            job("a", 30, vec![at(0, 0, 10)]),
            job("b", 0, vec![]),
            job("c", 60, vec![at(0, 10, 20)]),
            // A gap: not the next bytes of the pack.
            job("d", 30, vec![at(0, 40, 10)]),
            // Another pack.
            job("e", 30, vec![at(1, 0, 10)]),
            // Large: alone.
            job("f", 6 << 20, vec![at(1, 10, 2 << 20)]),
            job("g", 30, vec![at(1, (2 << 20) + 10, 10)]),
        ];
        let stream = futures::stream::iter(jobs.into_iter().map(Ok));
        let got: Vec<Vec<String>> = futures::executor::block_on(
            batches(stream).map(|b| b.unwrap().into_iter().map(|j| j.entry.path).collect()).collect(),
        );
        assert_eq!(got, [vec!["a", "b", "c"], vec!["d"], vec!["e"], vec!["f"], vec!["g"]]);
    }

    #[test]
    fn a_part_is_written_frame_by_frame_and_checked_before_each_write() {
        use pgstrata_repo_format::{BlobEncoder, BlobSettings};
        let frame = 64 << 10;
        let plain: Vec<u8> = (0..(frame * 3 + 1000)).map(|i| (i % 251) as u8).collect();
        let settings = BlobSettings { frame_size: frame, ..BlobSettings::default() };
        let mut enc = BlobEncoder::new(settings, None).unwrap();
        let mut sealed = Vec::new();
        enc.write(&plain, &mut sealed);
        let summary = enc.finish(&mut sealed);
        let offset = 8 * frame as u64;
        let part = PartRef { pack: 0, offset: 0, len: sealed.len() as u64, plain_len: plain.len() as u64 };
        let job = PartJob { part, offset, first_chunk: 8 };
        let mut e = entry(offset + plain.len() as u64, vec![part]);
        e.chunks = [vec![Sha256Digest::of(b"earlier"); 8], summary.chunk_sha256.clone()].concat();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("16384");
        let file = SharedFile::new(std::fs::File::create(&out).unwrap());
        assert_eq!(write_part("pack/0", &e, job, (&sealed, None), None, (&file, &out)).unwrap(), plain.len() as u64);
        assert_eq!(std::fs::read(&out).unwrap()[offset as usize..], plain[..]);

        // Delta: what is right in place is not written again.
        let in_place = std::fs::read(&out).unwrap();
        let mut damaged = in_place.clone();
        let page = offset as usize + frame + 3 * 8192;
        damaged[page..page + 8192].fill(0xee);
        damaged[offset as usize + 10] ^= 1;
        std::fs::write(&out, &damaged).unwrap();
        let mut kept: Vec<bool> = in_place.chunks(8192).zip(damaged.chunks(8192)).map(|(a, b)| a == b).collect();
        kept.push(false);
        let keep = Keep::new(8192, kept);
        let file = SharedFile::new(std::fs::OpenOptions::new().write(true).open(&out).unwrap());
        let written = write_part("pack/0", &e, job, (&sealed, None), Some(&keep), (&file, &out)).unwrap();
        assert_eq!(written, 2 * 8192, "only the two damaged pages are written");
        assert_eq!(std::fs::read(&out).unwrap(), in_place);

        // A frame whose digest is not the manifest's is refused before it is written.
        let mut wrong = e.clone();
        wrong.chunks[9] = Sha256Digest::of(b"other");
        let fresh = SharedFile::new(std::fs::File::create(dir.path().join("fresh")).unwrap());
        let err = write_part("pack/0", &wrong, job, (&sealed, None), None, (&fresh, &out)).unwrap_err();
        assert!(err.message.contains("do not match"), "{}", err.message);
        assert_eq!(fresh.file().metadata().unwrap().len(), frame as u64 * 9, "only the frame before it was written");
        // Cut short: an error, never a short file taken as whole.
        let err = write_part("pack/0", &e, job, (&sealed[..sealed.len() - 10], None), None, (&file, &out)).unwrap_err();
        assert!(!err.message.is_empty());
    }

    #[test]
    fn keep_names_what_is_right_in_place_and_what_is_not() {
        let keep = Keep::new(10, vec![true, false, false, true, false]);
        assert!(keep.covers(0, 10) && keep.covers(32, 8) && keep.covers(5, 0));
        assert!(!keep.covers(5, 10) && !keep.covers(40, 1) && !keep.covers(50, 1), "past the end is not kept");
        assert_eq!(keep.missing(5, 40), [(10, 20), (40, 5)]);
        assert_eq!(keep.missing(0, 10), []);
        assert_eq!(keep.missing(45, 20), [(45, 20)]);
    }

    #[test]
    fn a_file_in_place_is_compared_page_by_page_when_its_pages_have_digests() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16384");
        let content: Vec<u8> = (0..4 * 8192).map(|i| (i / 8192) as u8 + (i % 7) as u8).collect();
        std::fs::write(&path, &content).unwrap();
        let mut e = entry(content.len() as u64, vec![]);
        e.page_digests = PageDigests(content.chunks(8192).map(PageDigests::of).collect());
        let found = in_place(std::fs::File::open(&path).unwrap(), &e, 1 << 20).unwrap();
        assert!(found.same && found.keep == Keep::new(8192, vec![true; 4]));
        let mut changed = content.clone();
        changed[2 * 8192 + 100] ^= 0xff;
        std::fs::write(&path, &changed).unwrap();
        let found = in_place(std::fs::File::open(&path).unwrap(), &e, 1 << 20).unwrap();
        assert!(!found.same && found.keep == Keep::new(8192, vec![true, true, false, true]));
        // Grown: the extra page is not the backup's; the file is not the same.
        std::fs::write(&path, [content.as_slice(), &[0u8; 8192]].concat()).unwrap();
        let found = in_place(std::fs::File::open(&path).unwrap(), &e, 1 << 20).unwrap();
        assert!(!found.same && found.keep == Keep::new(8192, vec![true, true, true, true, false]));
    }

    #[test]
    fn parts_line_up_with_frames_and_size() {
        let jobs = part_jobs(&entry(10 << 20, vec![part(8 << 20), part(2 << 20)]), 1 << 20).unwrap();
        assert_eq!(jobs.iter().map(|j| (j.offset, j.first_chunk)).collect::<Vec<_>>(), [(0, 0), (8 << 20, 8)]);
        assert!(part_jobs(&entry(0, vec![]), 1 << 20).unwrap().is_empty());
        let e = part_jobs(&entry(11 << 20, vec![part(8 << 20), part(2 << 20)]), 1 << 20).unwrap_err();
        assert!(e.message.contains("parts add up to"), "{}", e.message);
        let e = part_jobs(&entry(3 << 20, vec![part(1 << 19), part(5 << 19)]), 1 << 20).unwrap_err();
        assert!(e.message.contains("inside a frame"), "{}", e.message);
    }
}
