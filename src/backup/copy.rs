//! The copy pipeline of a backup: `process-max` worker threads read files, check page checksums
//! and seal blobs (compress, encrypt, hash); one pack writer streams the blobs into pack objects
//! with bounded uploads. Every queue is bounded, so memory depends on the number of workers and
//! the part size, never on the size of the database.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use pgstrata_repo_format::layout::StanzaLayout;
use pgstrata_repo_format::meta::{DirEntry, FileData, FileEntry, LinkEntry, PageDigests, PartRef};
use pgstrata_repo_format::pg::{BLCKSZ, Lsn};
use pgstrata_repo_format::{BackupLabel, BlobSettings, DataKey, Sha256Digest};
use pgstrata_storage::{RepoStore, Upload};

use super::part::{self, PageSpec, PartDone, PartSpec};
use super::prior::{Decision, PriorFiles, feed};
use super::resume::{Journal, Resume, ResumedFiles};
use super::walk::{Item, SourceFile, Walker};
use crate::chain::References;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::LeaseWatch;
use crate::manifest::ManifestStream;
use crate::remote::data::RemoteCluster;
use crate::termination::Termination;

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
    /// The cluster is on a database host (`pg1-host`): files are read through its server.
    pub remote: Option<Arc<RemoteCluster>>,
    /// With `backup-standby`: the standby that replicated files are read from.
    pub standby: Option<StandbySource>,
    /// The bytes the copy expects to read (the databases' size at the start; 0: unknown), and
    /// where its progress is published (the lease: `info`).
    pub expected_bytes: u64,
    pub progress: Option<crate::lease::ProgressShare>,
}

/// The standby a backup reads replicated files from: its data directory, and its database
/// host's server when it has one (`pgN-host`).
#[derive(Clone, Debug)]
pub struct StandbySource {
    pub data: std::path::PathBuf,
    pub remote: Option<Arc<RemoteCluster>>,
}

impl StandbySource {
    /// Where the standby holds `path` (a manifest path), when the file is one pgBackRest reads
    /// from a standby: relation files, `global`, the commit log and multixacts, tablespaces —
    /// what replication writes — but never `pg_control`, which must be the primary's.
    pub fn route(&self, path: &str) -> Option<std::path::PathBuf> {
        if path == "pg_data/global/pg_control" {
            return None;
        }
        let replicated = ["pg_data/base/", "pg_data/global/", "pg_data/pg_xact/", "pg_data/pg_multixact/"]
            .iter()
            .any(|dir| path.starts_with(dir));
        if replicated {
            return Some(self.data.join(path.strip_prefix("pg_data/")?));
        }
        path.starts_with("pg_tblspc/").then(|| self.data.join(path))
    }
}

/// What was stored for one file.
#[derive(Clone, Debug, Default)]
pub struct CopiedFile {
    /// Bytes read (a file may change size while it is copied).
    pub size: u64,
    /// Of the file as read.
    pub sha256: Sha256Digest,
    pub chunks: Vec<Sha256Digest>,
    pub page_errors: Vec<u32>,
    pub parts: Vec<PartRef>,
    /// Copied by pages: the page numbers stored in `parts`, and the digests of the parts' frames.
    pub stored_pages: Vec<u32>,
    pub page_chunks: Vec<Sha256Digest>,
    /// A main fork: the digest of each whole page read.
    pub page_digests: Vec<u64>,
    /// Read whole and found the same as the prior's copy (`SourceFile::same_as`).
    pub same: bool,
    /// Removed before it could be read (a dropped table): left out of the backup.
    pub vanished: bool,
}

/// Totals of a copy.
#[derive(Clone, Debug, Default)]
pub struct CopyTotals {
    pub packs: u32,
    pub stored_bytes: u64,
    /// Packs named by the files recorded in the journal.
    pub used: std::collections::BTreeSet<u32>,
}

/// The prior backup of a diff or incr, whose files the copy references where unchanged.
#[derive(Debug)]
pub struct Prior<'a> {
    /// When it started (unix seconds, and its start LSN).
    pub started: i64,
    pub since: Lsn,
    /// Times and LSNs are not trusted (`--delta`, a timeline change): compare content.
    pub by_content: bool,
    pub manifest: ManifestStream<'a>,
    /// The backups it references, where the data of its references is.
    pub refs: References<'a>,
    /// What changed since it started, from the WAL summaries, when they vouch for it.
    pub changes: Option<Arc<super::summary::Changes>>,
}

/// Writes pack objects `pack/<n>` one after another, and the checkpoints of the files whose
/// data is in complete packs (see [`super::resume`]).
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
    journal: Option<Journal>,
    lease: Option<LeaseWatch>,
}

impl PackWriter {
    pub fn new(store: RepoStore, layout: StanzaLayout, label: BackupLabel, pack_size: u64, first_pack: u32) -> Self {
        let (current, offset, total, journal, lease) = (None, 0, 0, None, None);
        Self { store, layout, label, pack_size, current, pack: first_pack, offset, total, journal, lease }
    }

    /// Writes no new pack or checkpoint once `lease` is lost: a writer that took it over may be
    /// resuming this very backup.
    pub fn under_lease(self, lease: LeaseWatch) -> Self {
        Self { lease: Some(lease), ..self }
    }

    fn check_lease(&self) -> CliResult<()> {
        self.lease.as_ref().map_or(Ok(()), LeaseWatch::check)
    }

    /// Checkpoints into `journal` as packs are completed.
    pub fn with_journal(self, journal: Journal) -> Self {
        Self { journal: Some(journal), ..self }
    }

    /// A file is finished: its entry goes into the next checkpoint. With many recorded, the
    /// open pack is completed early, so that the checkpoint is written and memory stays bounded.
    pub async fn record(&mut self, entry: &FileEntry) -> CliResult<()> {
        let Some(journal) = self.journal.as_mut() else { return Ok(()) };
        journal.record(entry)?;
        if journal.is_full() {
            self.close().await?;
            self.checkpoint().await?;
        }
        Ok(())
    }

    /// A file stored but not checkpointed: its packs are kept (see [`Journal::keep_packs`]).
    pub fn keep_packs(&mut self, entry: &FileEntry) {
        if let Some(journal) = self.journal.as_mut() {
            journal.keep_packs(entry);
        }
    }

    async fn checkpoint(&mut self) -> CliResult<()> {
        self.check_lease()?;
        match self.journal.as_mut() {
            Some(journal) => journal.checkpoint(&self.store, &self.layout).await,
            None => Ok(()),
        }
    }

    /// Appends one blob; returns where it is.
    pub async fn append(&mut self, bytes: &[u8], plain_len: u64) -> CliResult<PartRef> {
        if self.current.is_some() && self.offset + bytes.len() as u64 > self.pack_size {
            self.close().await?;
            self.checkpoint().await?;
        }
        if self.current.is_none() {
            self.check_lease()?;
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
            let size = upload.finish().await?;
            if let Some(journal) = self.journal.as_mut() {
                journal.completed(self.pack, size);
            }
            self.pack += 1;
        }
        Ok(())
    }

    /// Finishes the open pack (and checkpoints: the manifest is yet to be written); returns one
    /// past the last pack number, the bytes stored, and the packs the recorded files name.
    pub async fn finish(mut self) -> CliResult<CopyTotals> {
        self.close().await?;
        self.checkpoint().await?;
        let used = self.journal.map(|j| j.referenced().clone()).unwrap_or_default();
        Ok(CopyTotals { packs: self.pack, stored_bytes: self.total, used })
    }

    /// Abandons the open pack (nothing half-written becomes visible).
    pub async fn abort(mut self) {
        if let Some(upload) = self.current.take() {
            let _ = upload.abort().await;
        }
    }
}

/// One part of one file: what a worker does.
#[derive(Clone, Debug)]
struct PartJob {
    seq: u64,
    part: usize,
    offset: u64,
    len: usize,
    file: Arc<SourceFile>,
}

/// A worker's answer for one part: the sealed blob (none when nothing was read) and what it holds.
struct Sealed {
    seq: u64,
    part: usize,
    len: usize,
    bytes: Option<Vec<u8>>,
    done: CliResult<PartDone>,
}

/// The part of `f` at `offset`, `len` bytes long, as a backup with `settings` copies it.
fn part_spec(f: &SourceFile, offset: u64, len: usize, settings: &CopySettings) -> PartSpec {
    let frame = settings.blob.frame_size.max(1) as u64;
    let first_page = usize::try_from(offset / BLCKSZ as u64).unwrap_or(usize::MAX);
    let first_chunk = usize::try_from(offset / frame).unwrap_or(usize::MAX);
    let pages = f.pages.as_ref().map(|base| {
        let pages_in = len.div_ceil(BLCKSZ);
        let chunks_in = (len as u64).div_ceil(frame) as usize;
        PageSpec {
            prior_pages: base.prior_pages,
            since: base.since.0,
            page_digests: base.page_digests.as_ref().map(|d| window(d, first_page, pages_in)),
            chunks: base.chunks.as_ref().map(|c| window(c, first_chunk, chunks_in)),
            read: base.read.as_ref().map(|read| {
                // Sorted: the part's pages are one stretch of it, found by halving (a 1 GiB
                // segment has 128 parts and up to 131 072 pages to read).
                let (from, to) = (first_page as u64, first_page.saturating_add(pages_in) as u64);
                let (lo, hi) =
                    (read.partition_point(|p| u64::from(*p) < from), read.partition_point(|p| u64::from(*p) < to));
                (
                    read[lo..hi].to_vec(),
                    base.known.as_ref().map(|k| window(k, first_page, pages_in)).unwrap_or_default(),
                )
            }),
        }
    });
    PartSpec {
        path: f.fs_path.clone(),
        offset,
        len,
        blob: settings.blob,
        check_from_block: f.first_block.filter(|_| settings.checksum_pages),
        start_lsn: settings.start_lsn.0,
        main_fork: f.main_fork,
        pages,
        same_as: f.same_as.as_ref().filter(|_| offset == 0).map(|e| (e.size, e.sha256)),
    }
}

/// The `n` items of `all` from `from` on (fewer at its end).
fn window<T: Copy>(all: &[T], from: usize, n: usize) -> Vec<T> {
    all.iter().skip(from).take(n).copied().collect()
}

/// Seals a batch of parts: here, or by the database host's server (`pg1-host`) in one request,
/// its compressed blobs then encrypted here (the key never leaves the repository side).
fn seal_jobs(jobs: Vec<PartJob>, settings: &CopySettings, buf: &mut Vec<u8>) -> Vec<Sealed> {
    let specs: Vec<PartSpec> = jobs.iter().map(|j| part_spec(&j.file, j.offset, j.len, settings)).collect();
    let key = settings.key.as_ref();
    // Each part is read where its file is: on the primary, or (backup-standby) the standby.
    let remote_of = |job: &PartJob| match &settings.standby {
        Some(standby) if job.file.from_standby => standby.remote.as_ref(),
        _ => settings.remote.as_ref(),
    };
    let mut results: Vec<Option<CliResult<part::SealedPart>>> = (0..jobs.len()).map(|_| None).collect();
    let mut groups: Vec<(Option<&Arc<RemoteCluster>>, Vec<usize>)> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let remote = remote_of(job);
        match groups.iter_mut().find(|(r, _)| r.map(Arc::as_ptr) == remote.map(Arc::as_ptr)) {
            Some((_, members)) => members.push(i),
            None => groups.push((remote, vec![i])),
        }
    }
    for (remote, members) in &groups {
        let sealed: Vec<CliResult<part::SealedPart>> = match remote {
            None => members.iter().map(|&i| part::seal_part(&specs[i], key, buf)).collect(),
            Some(remote) => {
                let asked: Vec<crate::remote::wire::PartRequest> =
                    members.iter().map(|&i| (&specs[i]).into()).collect();
                remote
                    .seal_parts(&asked)
                    .into_iter()
                    .map(|r| r.map(|(blob, answer)| (blob, part::PartDone::from(answer))))
                    .collect()
            }
        };
        for (&i, result) in members.iter().zip(sealed) {
            results[i] = Some(result);
        }
    }
    let results = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(CliError::new(ErrorCode::Service, "a part was not sealed by any source"))));
    let seal_here = |(blob, done): part::SealedPart, spec: &PartSpec, remote: bool| -> CliResult<_> {
        if !remote {
            return Ok((blob, done));
        }
        let what = spec.path.display().to_string();
        let shape = blob.as_deref().map(|b| pgstrata_repo_format::compressed_shape(b, &what)).transpose()?;
        part::check_received(spec, &done, shape)?;
        Ok((blob.map(|b| pgstrata_repo_format::seal_compressed(b, &what, key)).transpose()?, done))
    };
    jobs.into_iter()
        .zip(results)
        .zip(&specs)
        .map(|((job, result), spec)| {
            let remote = remote_of(&job).is_some();
            let (bytes, done) = match result.and_then(|r| seal_here(r, spec, remote)) {
                Ok((bytes, done)) => (bytes, Ok(done)),
                Err(e) => (None, Err(e)),
            };
            Sealed { seq: job.seq, part: job.part, len: job.len, bytes, done }
        })
        .collect()
}

/// What the last part of a file reads beyond the size it had when examined (it may be growing;
/// what it grows by after the backup started is rewritten by WAL replay anyway).
const GROWTH: u64 = 1 << 20;

/// The part jobs of a file of `size` bytes. The last part reads what is there, up to `GROWTH`
/// more than expected (and never more than a part), so a small file needs a small buffer.
fn part_jobs(seq: u64, file: &Arc<SourceFile>, part_size: usize) -> impl Iterator<Item = PartJob> + use<> {
    let parts = file.size.div_ceil(part_size as u64);
    let (size, file) = (file.size, Arc::clone(file));
    (0..parts).map(move |part| {
        let offset = part * part_size as u64;
        let rest = size - offset;
        let expected = if part + 1 == parts { rest.saturating_add(GROWTH) } else { rest };
        let len = usize::try_from(expected).unwrap_or(part_size).min(part_size);
        PartJob { seq, part: usize::try_from(part).unwrap_or(usize::MAX), offset, len, file: Arc::clone(&file) }
    })
}

/// A counting semaphore the dispatcher thread waits on and the (async) collector releases
/// without blocking; closed when the copy stops early.
#[derive(Debug, Default)]
struct Window {
    state: Mutex<(usize, bool)>,
    freed: Condvar,
}

impl Window {
    fn new(permits: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::new((permits, false)), freed: Condvar::new() })
    }

    /// Takes a permit; false once closed.
    fn acquire(&self) -> bool {
        let Ok(mut state) = self.state.lock() else { return false };
        while state.0 == 0 && !state.1 {
            state = match self.freed.wait(state) {
                Ok(s) => s,
                Err(_) => return false,
            };
        }
        if state.1 {
            return false;
        }
        state.0 -= 1;
        true
    }

    /// Takes a permit if one is free now (`Some(false)`: none free; `None`: closed).
    fn try_acquire(&self) -> Option<bool> {
        let mut state = self.state.lock().ok()?;
        if state.1 {
            return None;
        }
        if state.0 == 0 {
            return Some(false);
        }
        state.0 -= 1;
        Some(true)
    }

    fn release(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.0 += 1;
        }
        self.freed.notify_one();
    }

    fn close(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.1 = true;
        }
        self.freed.notify_all();
    }
}

/// Items the walk produced and the copy has not yet handed to the manifest, oldest first.
struct Pending {
    item: Item,
    parts: usize,
    done: Vec<(usize, usize, PartDone, Option<PartRef>)>,
}

/// Where finished items go, in path order (the manifest spool).
pub trait ItemSink {
    fn dir(&mut self, entry: DirEntry) -> CliResult<()>;
    fn link(&mut self, entry: LinkEntry) -> CliResult<()>;
    /// A file this backup stores (copied now, or by an attempt it resumes).
    fn file(&mut self, entry: FileEntry) -> CliResult<()>;
    /// A file referenced, not copied (unchanged since the prior backup).
    fn unchanged(&mut self, entry: FileEntry) -> CliResult<()>;
    fn slot(&mut self, path: &str) -> CliResult<()>;
}

/// Totals of a copy.
#[derive(Clone, Copy, Debug, Default)]
pub struct CopyCount {
    pub files: u64,
    pub bytes: u64,
    /// Of these, referenced (unchanged since the prior): files, bytes (with the pages of files
    /// copied by pages that were not stored), and the prior's stored bytes for the files.
    pub unchanged_files: u64,
    pub unchanged_bytes: u64,
    pub unchanged_stored: u64,
    /// Of these, stored by an interrupted attempt of this backup and reused: files, bytes,
    /// and their stored bytes.
    pub resumed_files: u64,
    pub resumed_bytes: u64,
    pub resumed_stored: u64,
    /// Files read and their bytes, on the primary and (backup-standby) on the standby: the
    /// read load each host carried.
    pub read_primary: (u64, u64),
    pub read_standby: (u64, u64),
}

impl CopyCount {
    /// A file referenced, unchanged since the prior.
    fn referenced(&mut self, entry: &FileEntry) {
        self.files += 1;
        self.bytes += entry.size;
        self.unchanged_files += 1;
        self.unchanged_bytes += entry.size;
        self.unchanged_stored += entry.data.stored();
    }

    /// A file an interrupted attempt stored, reused.
    fn resumed(&mut self, entry: &FileEntry) {
        self.files += 1;
        self.bytes += entry.size;
        self.resumed_files += 1;
        self.resumed_bytes += entry.size;
        self.resumed_stored += entry.data.stored();
    }
}

/// Copies what `walker` finds into packs, streaming: a dispatcher thread walks and splits files
/// into part jobs, `workers` threads read and seal parts, this task appends blobs to packs and
/// hands each item, in path order, to `sink`. At most `window` items are between the walk and
/// the sink, so memory depends on the workers and the window, never on the number of files.
/// Returns the walker (its targets are complete) and the totals.
pub async fn copy_tree(
    walker: Walker,
    prior: Option<Prior<'_>>,
    resumed: Option<Resume<'_>>,
    writer: &mut PackWriter,
    settings: CopySettings,
    sink: &mut impl ItemSink,
    term: Termination,
) -> CliResult<(Walker, CopyCount)> {
    const WINDOW: usize = 1024;
    let window = Window::new(WINDOW);
    let (prior_feed, prior_files) = match prior {
        Some(p) => {
            let (tx, files) = PriorFiles::channel(p.started, p.since, p.by_content, p.changes);
            (Some(feed(p.manifest, p.refs, tx)), Some(files))
        }
        None => (None, None),
    };
    let (resume_feed, resumed_files) = match resumed {
        Some(r) => {
            let (tx, files) = ResumedFiles::channel(r.from.attempt.timestamp_start);
            (Some(r.from.feed(r.repo, tx)), Some(files))
        }
        None => (None, None),
    };
    let (item_tx, mut item_rx) = tokio::sync::mpsc::unbounded_channel::<CliResult<Vec<(Item, usize)>>>();
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Vec<PartJob>>(settings.workers * 2);
    let (sealed_tx, mut sealed_rx) = tokio::sync::mpsc::channel::<Vec<Sealed>>(settings.workers * 2);
    let spawn_err = |e: std::io::Error| CliError::new(ErrorCode::Service, format!("unable to start a thread: {e}"));

    let dispatcher = {
        let (window, part_size, local) = (Arc::clone(&window), settings.part_size, settings.remote.is_none());
        let standby = settings.standby.clone();
        std::thread::Builder::new()
            .name("pgstrata-walk".into())
            .spawn(move || {
                let known = Known { prior: prior_files, resumed: resumed_files, standby };
                dispatch(walker, known, &window, (part_size, local), &item_tx, &job_tx)
            })
            .map_err(spawn_err)?
    };
    let job_rx = Arc::new(Mutex::new(job_rx));
    let mut threads = Vec::new();
    for w in 0..settings.workers {
        let (job_rx, tx, settings) = (Arc::clone(&job_rx), sealed_tx.clone(), settings.clone());
        let spawned = std::thread::Builder::new().name(format!("pgstrata-copy-{w}")).spawn(move || {
            let mut buf = Vec::new();
            loop {
                let job = match job_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => break,
                };
                let Ok(jobs) = job else { break };
                if tx.blocking_send(seal_jobs(jobs, &settings, &mut buf)).is_err() {
                    break;
                }
            }
        });
        threads.push(spawned.map_err(spawn_err)?);
    }
    drop(sealed_tx);
    // Only the workers hold the job queue now: once they have all stopped, a dispatcher
    // waiting to queue a job is told so instead of waiting forever.
    drop(job_rx);

    let mut progress = match settings.expected_bytes {
        0 => crate::progress::Progress::open_ended("backup"),
        expected => crate::progress::Progress::new("backup", expected),
    }
    .shared(settings.progress.clone());
    let collected = async {
        let result = collect(writer, sink, &window, &mut item_rx, &mut sealed_rx, &mut progress, term).await;
        // Whatever waits on the collector learns that it stopped: the dispatcher (window), the
        // workers (their answers), and through them the prior's feed.
        window.close();
        drop(item_rx);
        drop(sealed_rx);
        result
    };
    let feeding = async {
        if let Some(feeding) = prior_feed {
            feeding.await;
        }
    };
    let resuming = async {
        if let Some(feeding) = resume_feed {
            feeding.await;
        }
    };
    let (result, (), ()) = tokio::join!(collected, feeding, resuming);
    progress.finish();
    for t in threads {
        let _ = tokio::task::spawn_blocking(move || t.join()).await;
    }
    let walker = tokio::task::spawn_blocking(move || dispatcher.join())
        .await
        .map_err(|e| CliError::new(ErrorCode::Service, format!("walk failed: {e}")))?
        .map_err(|_| CliError::new(ErrorCode::Service, "the walk thread panicked"))?;
    let count = result?;
    Ok((walker, count))
}

/// Parts of small files go to the workers, and items to the collector, in batches: one
/// hand-over between threads per batch, not per file (at 150 000 small files, waking threads
/// per file cost more CPU than compressing them). A part of a large file is a batch of its own.
const BATCH_JOBS: usize = 64;
const BATCH_BYTES: u64 = 1 << 20;
const BATCH_ITEMS: usize = 256;

/// What the dispatcher has gathered and not yet handed on.
#[derive(Default)]
struct Batch {
    items: Vec<(Item, usize)>,
    jobs: Vec<PartJob>,
    bytes: u64,
}

impl Batch {
    fn is_full(&self) -> bool {
        self.jobs.len() >= BATCH_JOBS || self.bytes >= BATCH_BYTES || self.items.len() >= BATCH_ITEMS
    }

    /// Hands on the items, then their jobs (an item always reaches the collector before its
    /// jobs reach a worker); false once the other side has stopped.
    fn flush(
        &mut self,
        items: &tokio::sync::mpsc::UnboundedSender<CliResult<Vec<(Item, usize)>>>,
        jobs: &std::sync::mpsc::SyncSender<Vec<PartJob>>,
    ) -> bool {
        if !self.items.is_empty() && items.send(Ok(std::mem::take(&mut self.items))).is_err() {
            return false;
        }
        self.bytes = 0;
        self.jobs.is_empty() || jobs.send(std::mem::take(&mut self.jobs)).is_ok()
    }
}

/// What the walk looks files up in: the prior backup's manifest, the checkpoints of the
/// interrupted attempt being resumed.
struct Known {
    prior: Option<PriorFiles>,
    resumed: Option<ResumedFiles>,
    /// With `backup-standby`: where replicated files are read instead.
    standby: Option<StandbySource>,
}

impl Known {
    /// What the copy does with `f`: reuse the resumed attempt's copy, reference the prior's, or
    /// read it (whole, by pages, or to compare). Blocks (the walk thread).
    fn file(&mut self, mut f: SourceFile) -> CliResult<Item> {
        if let Some(at) = self.standby.as_ref().and_then(|s| s.route(&f.path)) {
            f.fs_path = at;
            f.from_standby = true;
        }
        if let Some(entry) = self.resumed.as_mut().map(|r| r.reuse(&f)).transpose()?.flatten() {
            return Ok(Item::Resumed(Box::new(entry)));
        }
        let Some(prior) = self.prior.as_mut() else { return Ok(Item::File(f)) };
        Ok(match prior.decide(&f)? {
            Decision::Unchanged(entry) => Item::Unchanged(entry),
            Decision::Pages(base) => {
                f.pages = Some(base);
                Item::File(f)
            }
            Decision::Compare(entry) => {
                f.same_as = Some(entry);
                Item::File(f)
            }
            Decision::Read => Item::File(f),
        })
    }
}

/// The dispatcher: walks, takes a window permit per item, hands items to the collector and
/// their part jobs to the workers, in batches. It never waits for a permit while holding
/// jobs the collector may be waiting for. A walk error is sent to the collector, which stops
/// the copy.
fn dispatch(
    mut walker: Walker,
    mut known: Known,
    window: &Window,
    (part_size, local): (usize, bool),
    items: &tokio::sync::mpsc::UnboundedSender<CliResult<Vec<(Item, usize)>>>,
    jobs: &std::sync::mpsc::SyncSender<Vec<PartJob>>,
) -> Walker {
    let mut seq = 0u64;
    let mut batch = Batch::default();
    loop {
        let found = walker.next_item().and_then(|item| match item {
            Some(Item::File(f)) => known.file(f).map(Some),
            item => Ok(item),
        });
        let item = match found {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(e) => {
                if batch.flush(items, jobs) {
                    let _ = items.send(Err(e));
                }
                return walker;
            }
        };
        let permit = match window.try_acquire() {
            Some(true) => true,
            Some(false) => batch.flush(items, jobs) && window.acquire(),
            None => false,
        };
        if !permit {
            return walker;
        }
        let file = match &item {
            Item::File(f) if f.size > 0 => Some(Arc::new(f.clone())),
            _ => None,
        };
        let parts =
            file.as_ref().map_or(0, |f| usize::try_from(f.size.div_ceil(part_size as u64)).unwrap_or(usize::MAX));
        batch.items.push((item, parts));
        for job in file.iter().flat_map(|f| part_jobs(seq, f, part_size)) {
            let expected = (job.file.size - job.offset).min(part_size as u64);
            if expected < BATCH_BYTES {
                let here = if job.file.from_standby {
                    known.standby.as_ref().is_some_and(|s| s.remote.is_none())
                } else {
                    local
                };
                if here {
                    part::read_ahead(&job.file.fs_path, expected);
                }
                batch.bytes += expected;
                batch.jobs.push(job);
            } else if !batch.flush(items, jobs) || jobs.send(vec![job]).is_err() {
                return walker;
            }
        }
        if batch.is_full() && !batch.flush(items, jobs) {
            return walker;
        }
        seq += 1;
    }
    // The rest of the prior's manifest is read too: its checksum covers all of it.
    if let Some(Err(e)) = known.prior.map(PriorFiles::finish) {
        if batch.flush(items, jobs) {
            let _ = items.send(Err(e));
        }
        return walker;
    }
    batch.flush(items, jobs);
    walker
}

/// The collector: appends sealed parts to packs and hands finished items to the sink in order.
async fn collect(
    writer: &mut PackWriter,
    sink: &mut impl ItemSink,
    window: &Window,
    items: &mut tokio::sync::mpsc::UnboundedReceiver<CliResult<Vec<(Item, usize)>>>,
    sealed: &mut tokio::sync::mpsc::Receiver<Vec<Sealed>>,
    progress: &mut crate::progress::Progress,
    mut term: Termination,
) -> CliResult<CopyCount> {
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut first_seq = 0u64;
    let mut count = CopyCount::default();
    let (mut walk_done, mut workers_done) = (false, false);
    // Ends when the walk has ended and every item is handed on, or the workers have gone (then
    // unfinished items are an error). A walk error always arrives before the walk ends.
    while !(walk_done && (pending.is_empty() || workers_done)) {
        let receive = |got: Option<CliResult<Vec<(Item, usize)>>>, pending: &mut VecDeque<Pending>| match got {
            Some(Ok(batch)) => {
                pending.extend(batch.into_iter().map(|(item, parts)| Pending { item, parts, done: Vec::new() }));
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        };
        tokio::select! {
            _ = term.requested() => return Err(Termination::error()),
            got = items.recv(), if !walk_done => walk_done = !receive(got, &mut pending)?,
            got = sealed.recv(), if !workers_done => {
                let Some(answers) = got else {
                    workers_done = true;
                    continue;
                };
                for part in answers {
                    let index =
                        part.seq.checked_sub(first_seq).and_then(|i| usize::try_from(i).ok()).unwrap_or(usize::MAX);
                    // The item was sent before its jobs: if this answer overtook it, it is queued.
                    while pending.len() <= index && !walk_done {
                        walk_done = !receive(items.try_recv().ok(), &mut pending)?;
                    }
                    let done = part.done?;
                    let r = match part.bytes {
                        Some(bytes) => {
                            progress.add(done.plain_len);
                            Some(writer.append(&bytes, done.stored_len).await?)
                        }
                        None => None,
                    };
                    let Some(p) = pending.get_mut(index) else {
                        return Err(CliError::new(ErrorCode::Service, "a copied part belongs to no file"));
                    };
                    p.done.push((part.part, part.len, done, r));
                }
            }
            else => break,
        }
        while pending.front().is_some_and(|p| p.done.len() == p.parts) {
            let Some(p) = pending.pop_front() else { break };
            first_seq += 1;
            window.release();
            match p.item {
                Item::Dir(d) => sink.dir(d)?,
                Item::Link(l) => sink.link(l)?,
                Item::Slot(path) => sink.slot(&path)?,
                Item::Resumed(entry) => {
                    count.resumed(&entry);
                    writer.record(&entry).await?;
                    sink.file(*entry)?;
                }
                Item::Unchanged(entry) => {
                    count.referenced(&entry);
                    sink.unchanged(*entry)?;
                }
                Item::File(f) => {
                    let copied = assemble(p.done);
                    progress.add_file();
                    if !copied.vanished {
                        let read = if f.from_standby { &mut count.read_standby } else { &mut count.read_primary };
                        read.0 += 1;
                        // By the WAL summaries only the stored pages were read.
                        read.1 += match f.pages.as_ref().filter(|b| b.read.is_some()) {
                            Some(_) => copied.stored_pages.len() as u64 * BLCKSZ as u64,
                            None => copied.size,
                        };
                    }
                    // Read, and the prior's copy serves whole: the content compared the same,
                    // or by pages nothing needed storing at the prior's size.
                    let same = match (&f.same_as, &f.pages) {
                        (Some(entry), _) if copied.same => Some(entry),
                        (_, Some(base)) if copied.stored_pages.is_empty() && copied.size == base.reference.size => {
                            Some(&base.reference)
                        }
                        _ => None,
                    };
                    if let (false, Some(entry)) = (copied.vanished, same) {
                        count.referenced(entry);
                        sink.unchanged(FileEntry::clone(entry))?;
                    } else if !copied.vanished {
                        count.files += 1;
                        count.bytes += copied.size;
                        if f.pages.is_some() {
                            let stored = copied.stored_pages.len() as u64 * BLCKSZ as u64;
                            count.unchanged_bytes += copied.size.saturating_sub(stored);
                        }
                        let entry = file_entry(&f, copied)?;
                        writer.record(&entry).await?;
                        sink.file(entry)?;
                    }
                }
            }
        }
    }
    if !pending.is_empty() {
        return Err(CliError::new(
            ErrorCode::Service,
            format!("the copy stopped with {} items unfinished (a worker stopped)", pending.len()),
        ));
    }
    Ok(count)
}

/// The manifest entry of a file this backup read: stored whole, or (a changed main fork) the
/// pages stored and the runs mapping every page to where it is.
fn file_entry(f: &SourceFile, c: CopiedFile) -> CliResult<FileEntry> {
    let data = match &f.pages {
        _ if c.size == 0 => FileData::Empty,
        None => FileData::Stored { parts: c.parts },
        Some(base) => {
            let runs =
                crate::pages::runs(&c.stored_pages, crate::pages::page_count(c.size), &base.map).ok_or_else(|| {
                    CliError::new(ErrorCode::Service, format!("{}: a page is neither stored nor in the prior", f.path))
                })?;
            FileData::Pages { parts: c.parts, chunks: c.page_chunks, runs }
        }
    };
    Ok(FileEntry {
        path: f.path.clone(),
        size: c.size,
        mtime: f.mtime,
        owner: f.owner.clone(),
        sha256: c.sha256,
        chunks: c.chunks,
        data,
        page_errors: c.page_errors,
        // Only of whole pages, each read: what a delta restore can compare page by page.
        page_digests: if c.page_digests.len() as u64 * BLCKSZ as u64 == c.size {
            PageDigests(c.page_digests)
        } else {
            PageDigests::default()
        },
    })
}

/// One file from its parts (in any order): a part shorter than asked means the file was
/// truncated while being copied, and it ends there (WAL replay restores what changed after
/// the backup started).
fn assemble(mut parts: Vec<(usize, usize, PartDone, Option<PartRef>)>) -> CopiedFile {
    parts.sort_by_key(|(part, ..)| *part);
    let mut out = CopiedFile::default();
    if parts.first().is_some_and(|(_, _, d, _)| d.vanished) {
        out.vanished = true;
    }
    out.same = parts.len() == 1 && parts.first().is_some_and(|(_, _, d, _)| d.same);
    for (_, len, d, r) in parts {
        if d.plain_len == 0 {
            break;
        }
        out.size += d.plain_len;
        out.chunks.extend(d.chunks);
        out.page_errors.extend(d.page_errors);
        out.parts.extend(r);
        out.stored_pages.extend(d.stored_pages);
        out.page_chunks.extend(d.page_chunks);
        out.page_digests.extend(d.page_digests);
        if (d.plain_len as usize) < len {
            break;
        }
    }
    out.sha256 = pgstrata_repo_format::digest::file_digest(&out.chunks);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_standby_serves_what_replication_writes_but_pg_control() {
        let standby = StandbySource { data: "/standby".into(), remote: None };
        for (path, at) in [
            ("pg_data/base/5/1259", Some("/standby/base/5/1259")),
            ("pg_data/global/1262", Some("/standby/global/1262")),
            ("pg_data/pg_xact/0000", Some("/standby/pg_xact/0000")),
            ("pg_data/pg_multixact/offsets/0000", Some("/standby/pg_multixact/offsets/0000")),
            ("pg_tblspc/16400/PG_15_202209061/5/16401", Some("/standby/pg_tblspc/16400/PG_15_202209061/5/16401")),
            ("pg_data/global/pg_control", None),
            ("pg_data/postgresql.conf", None),
            ("pg_data/pg_commit_ts/0000", None),
            ("pg_data/pg_logical/replorigin_checkpoint", None),
            ("pg_data/base_backup_extra", None),
        ] {
            assert_eq!(standby.route(path), at.map(std::path::PathBuf::from), "{path}");
        }
    }
    use pgstrata_repo_format::BlobSettings;
    use pgstrata_storage::RetryPolicy;
    use pgstrata_storage::fault::{FaultKind, FaultOp, FaultPlan, FaultyStore};

    /// Records what reaches the manifest, in order.
    #[derive(Default)]
    struct Paths(Vec<String>, u64);

    impl ItemSink for Paths {
        fn dir(&mut self, entry: DirEntry) -> CliResult<()> {
            self.0.push(entry.path);
            Ok(())
        }
        fn link(&mut self, entry: LinkEntry) -> CliResult<()> {
            self.0.push(entry.path);
            Ok(())
        }
        fn file(&mut self, entry: FileEntry) -> CliResult<()> {
            self.0.push(entry.path);
            self.1 += entry.size;
            Ok(())
        }
        fn unchanged(&mut self, entry: FileEntry) -> CliResult<()> {
            self.0.push(entry.path);
            Ok(())
        }
        fn slot(&mut self, path: &str) -> CliResult<()> {
            self.0.push(path.to_string());
            Ok(())
        }
    }

    fn tree(files: usize, size: impl Fn(usize) -> usize) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..files {
            let sub = dir.path().join(format!("d{}", i % 7));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join(format!("f{i}")), vec![(i % 251) as u8; size(i)]).unwrap();
        }
        dir
    }

    fn copy(dir: &std::path::Path, plan: Arc<FaultPlan>) -> (CliResult<CopyCount>, Paths) {
        let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = RepoStore::new(Arc::new(FaultyStore::new(inner, plan)), "", "memory".into(), RetryPolicy::none());
        let layout = StanzaLayout::new("db").unwrap();
        let label = BackupLabel::full(1_800_000_000);
        let mut packs = PackWriter::new(store, layout, label, 1 << 20, 0);
        let settings = CopySettings {
            workers: 2,
            blob: BlobSettings::default(),
            key: None,
            part_size: 1 << 20,
            pack_size: 1 << 20,
            checksum_pages: false,
            start_lsn: Lsn(0),
            remote: None,
            standby: None,
            expected_bytes: 0,
            progress: None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let mut sink = Paths::default();
        let result = rt.block_on(async {
            let copy =
                copy_tree(Walker::new(dir, 131_072), None, None, &mut packs, settings, &mut sink, Termination::never());
            let r = tokio::time::timeout(std::time::Duration::from_secs(30), copy).await.expect("the copy hung");
            match r {
                Ok((_, count)) => packs.finish().await.map(|_| count),
                Err(e) => Err(e),
            }
        });
        (result, sink)
    }

    #[tokio::test]
    async fn no_pack_is_started_once_the_lease_is_lost() {
        let inner: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let store = RepoStore::new(inner, "", "memory".into(), RetryPolicy::none());
        let (layout, label) = (StanzaLayout::new("db").unwrap(), BackupLabel::full(1_800_000_000));
        let writer = || PackWriter::new(store.clone(), layout.clone(), label.clone(), 16, 0);
        let mut held = writer().under_lease(LeaseWatch::detached(false));
        held.append(b"0123456789", 10).await.unwrap();
        held.finish().await.unwrap();
        let mut lost = writer().under_lease(LeaseWatch::detached(true));
        let err = lost.append(b"0123456789", 10).await.unwrap_err();
        assert!(err.message.contains("lost the lease"), "{}", err.message);
        assert_eq!(store.list_all("").await.unwrap().len(), 1, "only the first writer's pack exists");
    }

    #[test]
    fn every_file_reaches_the_manifest_in_path_order() {
        let dir = tree(3000, |i| 3000 + i % 5000);
        let (result, sink) = copy(dir.path(), FaultPlan::new());
        let count = result.expect("copy");
        assert_eq!(count.files, 3000);
        let expected: u64 = (0..3000u64).map(|i| 3000 + i % 5000).sum();
        assert_eq!((count.bytes, sink.1), (expected, expected));
        let mut sorted = sink.0.clone();
        sorted.sort();
        assert_eq!(sink.0, sorted, "entries out of path order");
    }

    #[test]
    fn batches_of_small_files_and_lone_large_parts_keep_path_order() {
        // Empty, small and multi-part files mixed, more items than the window holds: small files
        // travel in batches, large parts alone, and every entry still arrives in order.
        let size = |i: usize| match i % 40 {
            0 | 20 => 0,
            1 => (3 << 19) + i,
            _ => 100 + i,
        };
        let dir = tree(1200, size);
        let (result, sink) = copy(dir.path(), FaultPlan::new());
        let count = result.expect("copy");
        let expected: u64 = (0..1200).map(|i| size(i) as u64).sum();
        assert_eq!((count.files, count.bytes, sink.1), (1200, expected, expected));
        let mut sorted = sink.0.clone();
        sorted.sort();
        assert_eq!(sink.0, sorted, "entries out of path order");
    }

    #[test]
    fn a_store_failure_stops_the_copy_and_nothing_hangs() {
        // Files of several parts: the walk is often waiting to queue the rest of a file's parts.
        let dir = tree(12, |_| 4 << 20);
        let plan = FaultPlan::new();
        // The first pack cannot be started: by then the walk waits to queue jobs for busy workers.
        plan.fail_op(FaultOp::StartUpload, 1, FaultKind::Permanent);
        let (result, _) = copy(dir.path(), plan.clone());
        assert!(result.is_err(), "a failed pack upload went unnoticed");
        assert!(plan.injected() > 0);
    }
}
