//! Restoring regular files, one job per file: `process-max` jobs run at once, and a job holds
//! its one output file open only while it runs, so open descriptors depend on the worker count,
//! never on the number of files.
//!
//! A job (delta: compares the file in place first and keeps it when identical) writes under a
//! temporary name, fetches and decodes the file's parts ahead in parallel but writes them in
//! order, checks every frame against the manifest's chunk digests, fsyncs, sets time, mode and
//! owner, and renames the file into place. Directories are synced once all files are in place.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pgstrata_repo_format::meta::{FileData, FileEntry, PartRef};
use pgstrata_repo_format::{BackupLabel, Sha256Digest, decode_blob_with_summary};

use crate::durable;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::restore::owner::{apply_owner, io};

/// What the file jobs need besides the file.
#[derive(Clone, Copy, Debug)]
pub struct FileOptions {
    pub delta: bool,
    pub as_root: bool,
    pub frame_size: u64,
    pub workers: usize,
}

/// One file to restore and where it goes.
#[derive(Debug)]
pub struct FileJob {
    pub entry: FileEntry,
    pub local: PathBuf,
}

/// What the file jobs did.
#[derive(Debug, Default)]
pub struct FilesSummary {
    pub restored: usize,
    /// Delta: already identical in place.
    pub unchanged: usize,
    /// Size of every file of the backup (restored or unchanged).
    pub bytes: u64,
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

/// Runs the file jobs as they come (streamed from the manifest), `workers` at a time;
/// `total` bytes are expected (for progress).
pub async fn restore_files(
    repo: &Repo,
    label: &BackupLabel,
    jobs: impl futures::Stream<Item = CliResult<FileJob>>,
    total: u64,
    options: FileOptions,
) -> CliResult<FilesSummary> {
    let progress = Arc::new(Mutex::new(Progress::new("restore", total)));
    let results = jobs
        .map(|job| {
            let progress = Arc::clone(&progress);
            async move { restore_file(repo, label, job?, options, &progress).await }
        })
        .buffer_unordered(options.workers.max(1));
    futures::pin_mut!(results);
    let mut summary = FilesSummary::default();
    while let Some(r) = results.next().await {
        match r? {
            Outcome::Unchanged(bytes) => {
                summary.unchanged += 1;
                summary.bytes += bytes;
            }
            Outcome::Written(bytes) => {
                summary.restored += 1;
                summary.bytes += bytes;
            }
        }
    }
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    Ok(summary)
}

enum Outcome {
    Unchanged(u64),
    Written(u64),
}

async fn restore_file(
    repo: &Repo,
    label: &BackupLabel,
    job: FileJob,
    options: FileOptions,
    progress: &Mutex<Progress>,
) -> CliResult<Outcome> {
    let parts = part_jobs(&job.entry, options.frame_size)?;
    let entry = Arc::new(job.entry);
    let local = job.local;
    if options.delta {
        let (p, frame) = (local.clone(), usize::try_from(options.frame_size).unwrap_or(1 << 20));
        let current = blocking(move || Ok(local_digest(&p, frame))).await?;
        if current == Some((entry.size, entry.sha256)) {
            apply_owner(&local, &entry.owner, options.as_root, true)?;
            if let Ok(mut p) = progress.lock() {
                p.add(entry.size);
            }
            return Ok(Outcome::Unchanged(entry.size));
        }
    }
    let tmp = durable::temp_name(&local);
    let file = {
        let (tmp, size) = (tmp.clone(), entry.size);
        Arc::new(
            blocking(move || {
                let f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, "create", e))?;
                f.set_len(size).map_err(|e| io(&tmp, "size", e))?;
                Ok(f)
            })
            .await?,
        )
    };
    let written = write_parts(repo, label, &entry, &file, &tmp, parts, options.workers, progress).await;
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let file =
        Arc::try_unwrap(file).map_err(|_| CliError::new(ErrorCode::Format, "a restored file is still in use"))?;
    let (size, as_root) = (entry.size, options.as_root);
    blocking(move || {
        file.sync_all().map_err(|e| io(&tmp, "sync", e))?;
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(entry.mtime).unwrap_or(0));
        file.set_modified(mtime).map_err(|e| io(&tmp, "set the time of", e))?;
        drop(file);
        apply_owner(&tmp, &entry.owner, as_root, true)?;
        // The directory is synced once for all its files, after every job (sync_dirs).
        std::fs::rename(&tmp, &local).map_err(|e| io(&local, "rename into", e))
    })
    .await?;
    Ok(Outcome::Written(size))
}

const WRITE_CHUNK: usize = 256 << 10;

/// Fetches and decodes the parts of one file (up to `ahead` at once) and writes them in order
/// (concurrent writes to one file contend on its inode lock).
#[allow(clippy::too_many_arguments)]
async fn write_parts(
    repo: &Repo,
    label: &BackupLabel,
    entry: &Arc<FileEntry>,
    file: &Arc<std::fs::File>,
    tmp: &Path,
    parts: Vec<PartJob>,
    ahead: usize,
    progress: &Mutex<Progress>,
) -> CliResult<()> {
    let mut decoded = futures::stream::iter(parts.into_iter().map(|job| {
        let entry = Arc::clone(entry);
        async move { fetch_part(repo, label, entry, job).await.map(|plain| (plain, job.offset)) }
    }))
    .buffered(ahead.max(1));
    while let Some(next) = decoded.next().await {
        let (plain, offset) = next?;
        if let Ok(mut p) = progress.lock() {
            p.add(plain.len() as u64);
        }
        let (file, tmp) = (Arc::clone(file), tmp.to_path_buf());
        blocking(move || {
            // Modest writes: one huge write holds the inode lock and page-cache state for long.
            for (i, piece) in plain.chunks(WRITE_CHUNK).enumerate() {
                let at = offset + (i * WRITE_CHUNK) as u64;
                std::os::unix::fs::FileExt::write_all_at(&*file, piece, at).map_err(|e| io(&tmp, "write", e))?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}

/// Fetches one part and decodes it, checking every frame against the manifest.
async fn fetch_part(repo: &Repo, label: &BackupLabel, entry: Arc<FileEntry>, job: PartJob) -> CliResult<Vec<u8>> {
    let key = repo.layout.pack(label, job.part.pack);
    let bytes = repo.store.get_range(&key, job.part.offset..job.part.offset + job.part.len).await?;
    let k = repo.key.clone();
    blocking(move || {
        let what = format!("{key} (part of {})", entry.path);
        let (plain, summary) = decode_blob_with_summary(&bytes, &what, k.as_ref())?;
        let expected = entry.chunks.get(job.first_chunk..job.first_chunk + summary.chunk_sha256.len());
        if plain.len() as u64 != job.part.plain_len || expected != Some(summary.chunk_sha256.as_slice()) {
            return Err(CliError::new(
                ErrorCode::Format,
                format!(
                    "{}: restored bytes at offset {} do not match the manifest's checksums",
                    entry.path, job.offset
                ),
            ));
        }
        Ok(plain)
    })
    .await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> CliResult<T> + Send + 'static) -> CliResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CliError::new(ErrorCode::Format, format!("restore task failed: {e}")))?
}

/// Size and manifest digest (hash list of chunk digests) of a local file; `None` when it cannot
/// be read (it is then rewritten).
fn local_digest(path: &Path, frame_size: usize) -> Option<(u64, Sha256Digest)> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; frame_size.max(1)];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match std::io::Read::read(&mut f, &mut buf[n..]).ok()? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        size += n as u64;
        chunks.push(Sha256Digest::of(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    Some((size, pgstrata_repo_format::digest::file_digest(&chunks)))
}

/// Syncs each restored directory once its files are in place (renames become durable).
pub fn sync_dirs<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> CliResult<()> {
    for dir in dirs {
        durable::sync_dir(dir)?;
    }
    Ok(())
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
        }
    }

    fn part(plain_len: u64) -> PartRef {
        PartRef { pack: 0, offset: 0, len: 1, plain_len }
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
