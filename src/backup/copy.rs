//! The copy pipeline of a backup: `process-max` worker threads read files, check page checksums
//! and seal blobs (compress, encrypt, hash); one pack writer streams the blobs into pack objects
//! with bounded uploads. Every queue is bounded, so memory depends on the number of workers and
//! the part size, never on the size of the database.

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use pgstrata_repo_format::layout::StanzaLayout;
use pgstrata_repo_format::meta::PartRef;
use pgstrata_repo_format::pg::{BLCKSZ, Lsn, PageVerdict, verify_page};
use pgstrata_repo_format::{BackupLabel, BlobEncoder, BlobSettings, DataKey, Sha256Digest};
use pgstrata_storage::{RepoStore, Upload};

use super::walk::SourceFile;
use crate::error::{CliError, CliResult, ErrorCode};

/// How a backup copies.
#[derive(Clone, Debug)]
pub struct CopySettings {
    pub workers: usize,
    pub blob: BlobSettings,
    pub key: Option<DataKey>,
    /// Plaintext per blob (a multiple of the frame size); bounds a worker's buffer.
    pub part_size: usize,
    /// A pack is closed once it reaches this many stored bytes.
    pub pack_size: u64,
    /// Verify page checksums of relation files.
    pub checksum_pages: bool,
    /// Pages with an LSN at or past this are being changed during the backup: not verified.
    pub start_lsn: Lsn,
}

/// What was stored for one file.
#[derive(Clone, Debug, Default)]
pub struct CopiedFile {
    /// Bytes read (a file may change size while it is copied).
    pub size: u64,
    pub sha256: Sha256Digest,
    pub chunks: Vec<Sha256Digest>,
    pub page_errors: Vec<u32>,
    pub parts: Vec<PartRef>,
    /// Removed before it could be read (a dropped table): left out of the backup.
    pub vanished: bool,
}

/// Totals of a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyTotals {
    pub packs: u32,
    pub stored_bytes: u64,
}

struct Sealed {
    file: usize,
    part: usize,
    bytes: Vec<u8>,
    plain_len: u64,
}

/// Writes pack objects `pack/<n>` one after another.
#[derive(Debug)]
pub struct PackWriter {
    store: RepoStore,
    layout: StanzaLayout,
    label: BackupLabel,
    pack_size: u64,
    current: Option<Upload>,
    pack: u32,
    offset: u64,
    total: u64,
}

impl PackWriter {
    pub fn new(store: RepoStore, layout: StanzaLayout, label: BackupLabel, pack_size: u64, first_pack: u32) -> Self {
        Self { store, layout, label, pack_size, current: None, pack: first_pack, offset: 0, total: 0 }
    }

    /// Appends one blob; returns where it is.
    pub async fn append(&mut self, bytes: &[u8], plain_len: u64) -> CliResult<PartRef> {
        if self.current.is_some() && self.offset + bytes.len() as u64 > self.pack_size {
            self.close().await?;
        }
        if self.current.is_none() {
            self.current = Some(self.store.upload(&self.layout.pack(&self.label, self.pack)).await?);
            self.offset = 0;
        }
        let Some(upload) = self.current.as_mut() else {
            return Err(CliError::new(ErrorCode::RepoInvalid, "pack upload not open"));
        };
        upload.write(bytes).await?;
        let part = PartRef { pack: self.pack, offset: self.offset, len: bytes.len() as u64, plain_len };
        self.offset += bytes.len() as u64;
        self.total += bytes.len() as u64;
        Ok(part)
    }

    async fn close(&mut self) -> CliResult<()> {
        if let Some(upload) = self.current.take() {
            upload.finish().await?;
            self.pack += 1;
        }
        Ok(())
    }

    /// Finishes the open pack; returns the number of packs written so far and stored bytes.
    pub async fn finish(mut self) -> CliResult<CopyTotals> {
        self.close().await?;
        Ok(CopyTotals { packs: self.pack, stored_bytes: self.total })
    }

    /// Abandons the open pack (nothing half-written becomes visible).
    pub async fn abort(mut self) {
        if let Some(upload) = self.current.take() {
            let _ = upload.abort().await;
        }
    }
}

/// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the file.
fn read_at_full(file: &std::fs::File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Checks the whole pages of `buf` (file offset `offset`); returns page numbers (within the
/// file) that fail twice. A page changed since the backup started is skipped: WAL replay will
/// rewrite it.
fn check_pages(file: &std::fs::File, buf: &[u8], offset: u64, first_block: u32, start_lsn: Lsn, errors: &mut Vec<u32>) {
    for (i, page) in buf.chunks_exact(BLCKSZ).enumerate() {
        let Ok(page) = <&[u8; BLCKSZ]>::try_from(page) else { continue };
        let page_no = u32::try_from(offset / BLCKSZ as u64).unwrap_or(u32::MAX).saturating_add(i as u32);
        let blkno = first_block.saturating_add(page_no);
        let bad = |p: &[u8; BLCKSZ]| match verify_page(p, blkno, true) {
            PageVerdict::New | PageVerdict::Valid(_) => false,
            PageVerdict::ChecksumMismatch { .. } | PageVerdict::BadHeader => {
                pgstrata_repo_format::pg::PageHeader::parse(p).lsn < start_lsn
            }
        };
        if bad(page) {
            // Maybe torn by a concurrent write: read it again before reporting.
            let mut again = [0u8; BLCKSZ];
            let at = offset + (i * BLCKSZ) as u64;
            if file.read_exact_at(&mut again, at).is_err() || bad(&again) {
                errors.push(page_no);
            }
        }
    }
}

/// One part of one file: what a worker does.
#[derive(Clone, Copy, Debug)]
struct PartJob {
    file: usize,
    part: usize,
    offset: u64,
    len: usize,
}

/// What a worker reports for one part.
#[derive(Debug, Default)]
struct PartDone {
    plain_len: u64,
    chunks: Vec<Sha256Digest>,
    page_errors: Vec<u32>,
    vanished: bool,
}

fn copy_part(
    f: &SourceFile,
    job: PartJob,
    settings: &CopySettings,
    buf: &mut Vec<u8>,
    tx: &tokio::sync::mpsc::Sender<Sealed>,
) -> CliResult<PartDone> {
    let file = match std::fs::File::open(&f.fs_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(PartDone { vanished: true, ..Default::default() });
        }
        Err(e) => {
            return Err(CliError::new(ErrorCode::FileRead, format!("unable to open {}: {e}", f.fs_path.display())));
        }
    };
    buf.resize(job.len, 0);
    let n = read_at_full(&file, buf, job.offset)
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", f.fs_path.display())))?;
    let mut done = PartDone { plain_len: n as u64, ..Default::default() };
    if n == 0 {
        return Ok(done);
    }
    let data = &buf[..n];
    if settings.checksum_pages
        && let Some(first_block) = f.first_block
    {
        check_pages(&file, data, job.offset, first_block, settings.start_lsn, &mut done.page_errors);
    }
    let mut enc = BlobEncoder::new(settings.blob, settings.key.as_ref())?.without_plain_digest();
    let mut sealed = Vec::with_capacity(n / 2 + 64);
    enc.write(data, &mut sealed);
    let summary = enc.finish(&mut sealed);
    done.chunks = summary.chunk_sha256;
    tx.blocking_send(Sealed { file: job.file, part: job.part, bytes: sealed, plain_len: n as u64 })
        .map_err(|_| CliError::new(ErrorCode::RepoInvalid, "the pack writer stopped"))?;
    Ok(done)
}

/// Splits files into part jobs, biggest files first so the tail of the backup stays parallel.
fn plan_jobs(files: &[SourceFile], part_size: usize) -> Vec<PartJob> {
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by(|a, b| files[*b].size.cmp(&files[*a].size));
    let mut jobs = Vec::new();
    for file in order {
        let size = files[file].size;
        if size == 0 {
            continue;
        }
        let parts = size.div_ceil(part_size as u64);
        for part in 0..parts {
            let offset = part * part_size as u64;
            // The last part reads whatever is there (the file may have grown since the walk).
            let len = if part + 1 == parts {
                part_size
            } else {
                part_size.min(usize::try_from(size - offset).unwrap_or(part_size))
            };
            jobs.push(PartJob { file, part: usize::try_from(part).unwrap_or(usize::MAX), offset, len });
        }
    }
    jobs
}

/// Copies `files` into packs; returns what was stored for each file (same order as `files`).
/// Parts of one file are copied by different workers; a file's digest is the hash list of its
/// chunk digests, so no worker needs another's bytes.
pub async fn copy_files(
    writer: &mut PackWriter,
    files: Arc<Vec<SourceFile>>,
    settings: CopySettings,
) -> CliResult<Vec<CopiedFile>> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Sealed>(settings.workers * 2);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(PartJob, CliResult<PartDone>)>();
    let jobs = Arc::new(plan_jobs(&files, settings.part_size));
    let next = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for w in 0..settings.workers {
        let (files, jobs, next, tx, done_tx, settings) =
            (Arc::clone(&files), Arc::clone(&jobs), Arc::clone(&next), tx.clone(), done_tx.clone(), settings.clone());
        let spawned = std::thread::Builder::new().name(format!("pgstrata-copy-{w}")).spawn(move || {
            let mut buf = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&job) = jobs.get(i) else { break };
                let result = copy_part(&files[job.file], job, &settings, &mut buf, &tx);
                let failed = result.is_err();
                if done_tx.send((job, result)).is_err() || failed {
                    break;
                }
            }
        });
        threads.push(
            spawned.map_err(|e| CliError::new(ErrorCode::RepoInvalid, format!("unable to start a worker: {e}")))?,
        );
    }
    drop(tx);
    drop(done_tx);
    let mut refs: Vec<Vec<(usize, PartRef)>> = vec![Vec::new(); files.len()];
    let mut failure = None;
    let mut progress = crate::progress::Progress::new("backup", files.iter().map(|f| f.size).sum());
    while let Some(sealed) = rx.recv().await {
        progress.add(sealed.plain_len);
        match writer.append(&sealed.bytes, sealed.plain_len).await {
            Ok(r) => refs[sealed.file].push((sealed.part, r)),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(rx);
    progress.finish();
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let mut parts: Vec<Vec<(PartJob, PartDone)>> = (0..files.len()).map(|_| Vec::new()).collect();
    let mut seen = 0usize;
    for (job, result) in done_rx.try_iter() {
        seen += 1;
        parts[job.file].push((job, result?));
    }
    if seen != jobs.len() {
        return Err(CliError::new(
            ErrorCode::RepoInvalid,
            format!("only {seen} of {} parts were copied (a worker stopped)", jobs.len()),
        ));
    }
    let mut results = Vec::with_capacity(files.len());
    for (index, mut done) in parts.into_iter().enumerate() {
        done.sort_by_key(|(job, _)| job.part);
        let mut file_refs = std::mem::take(&mut refs[index]);
        file_refs.sort_by_key(|(n, _)| *n);
        let mut out = CopiedFile::default();
        if done.first().is_some_and(|(_, d)| d.vanished) {
            out.vanished = true;
        }
        for (job, d) in done {
            if d.plain_len == 0 {
                break;
            }
            out.size += d.plain_len;
            out.chunks.extend(d.chunks);
            out.page_errors.extend(d.page_errors);
            if let Some((_, r)) = file_refs.iter().find(|(n, _)| *n == job.part) {
                out.parts.push(*r);
            }
            // A short part means the file was truncated while being copied: it ends here (WAL
            // replay restores whatever changed after the backup started).
            if (d.plain_len as usize) < job.len {
                break;
            }
        }
        out.sha256 = pgstrata_repo_format::digest::file_digest(&out.chunks);
        results.push(out);
    }
    Ok(results)
}
