//! What a copy worker does with one part of one file: read it, check its pages, take its
//! digests and seal what is to be stored into one blob. A [`PartSpec`] says everything the work
//! needs as plain data, so the same [`seal_part`] runs where the data is: in the backup's own
//! workers for a local cluster, and in the database host's server for `pg1-host`, which
//! answers the compressed, unencrypted blob and the [`PartDone`] (the repository host encrypts
//! it with [`pgstrata_repo_format::seal_compressed`], without decompressing it).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::PageDigests;
use pgstrata_repo_format::pg::{BLCKSZ, Lsn, PageVerdict, verify_page};
use pgstrata_repo_format::{BlobEncoder, BlobSettings, DataKey, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::pages::must_store;

/// Plaintext read and sealed at a time (two frames of the default size).
const READ_PIECE: usize = 2 << 20;

/// A part at least this long is read front to back: the kernel is told so.
const SEQUENTIAL: u64 = 1 << 20;

/// One part of one file to read and seal.
#[derive(Clone, Debug)]
pub struct PartSpec {
    pub path: PathBuf,
    pub offset: u64,
    /// Bytes to read; fewer at the end of the file.
    pub len: usize,
    pub blob: BlobSettings,
    /// A relation segment with page checks: the first block number of the segment.
    pub check_from_block: Option<u32>,
    /// Pages with an LSN at or past this are being changed during the backup: not checked.
    pub start_lsn: u64,
    /// A main fork: the digest of each page read is reported.
    pub main_fork: bool,
    /// Changed since the prior backup: only the changed pages are stored.
    pub pages: Option<PageSpec>,
    /// Times are not trusted: the whole file's size and digest as the prior stored it, so that
    /// a file read the same is referenced rather than stored.
    pub same_as: Option<(u64, Sha256Digest)>,
}

/// Which pages of a part a diff or incr stores (see `super::prior::PageBase`).
#[derive(Clone, Debug)]
pub struct PageSpec {
    pub prior_pages: u32,
    /// Pages stamped at or past this changed since the prior started.
    pub since: u64,
    /// By content: the prior's page digests, from the part's first page on.
    pub page_digests: Option<Vec<u64>>,
    /// By content where the prior has no page digests: its frame digests, from the part's first
    /// frame on.
    pub chunks: Option<Vec<Sha256Digest>>,
    /// From the WAL summaries: the only pages of the part to read (file page numbers, sorted),
    /// and the prior's digest of each page of the part (for those not read).
    pub read: Option<(Vec<u32>, Vec<u64>)>,
}

/// What sealing one part found and stored.
#[derive(Debug, Default)]
pub struct PartDone {
    /// Bytes read.
    pub plain_len: u64,
    /// Bytes sealed into the part's blob (all read, or the stored pages).
    pub stored_len: u64,
    pub chunks: Vec<Sha256Digest>,
    pub page_errors: Vec<u32>,
    /// By pages: the pages stored, and the digests of the blob's frames.
    pub stored_pages: Vec<u32>,
    pub page_chunks: Vec<Sha256Digest>,
    /// A main fork: the digest of each whole page read.
    pub page_digests: Vec<u64>,
    /// The whole file read, and it is the same as the prior's copy (nothing sealed).
    pub same: bool,
    pub vanished: bool,
}

impl From<&PartSpec> for crate::remote::wire::PartRequest {
    fn from(s: &PartSpec) -> Self {
        Self {
            path: s.path.clone(),
            offset: s.offset,
            len: s.len,
            blob: s.blob,
            check_from_block: s.check_from_block,
            start_lsn: s.start_lsn,
            main_fork: s.main_fork,
            pages: s.pages.as_ref().map(|p| crate::remote::wire::PageRequest {
                prior_pages: p.prior_pages,
                since: p.since,
                page_digests: p.page_digests.clone(),
                chunks: p.chunks.clone(),
            }),
            same_as: s.same_as,
        }
    }
}

impl From<crate::remote::wire::PartRequest> for PartSpec {
    fn from(r: crate::remote::wire::PartRequest) -> Self {
        Self {
            path: r.path,
            offset: r.offset,
            len: r.len,
            blob: r.blob,
            check_from_block: r.check_from_block,
            start_lsn: r.start_lsn,
            main_fork: r.main_fork,
            pages: r.pages.map(|p| PageSpec {
                prior_pages: p.prior_pages,
                since: p.since,
                page_digests: p.page_digests,
                chunks: p.chunks,
                read: None,
            }),
            same_as: r.same_as,
        }
    }
}

impl From<PartDone> for crate::remote::wire::PartAnswer {
    fn from(d: PartDone) -> Self {
        Self {
            plain_len: d.plain_len,
            stored_len: d.stored_len,
            chunks: d.chunks,
            page_errors: d.page_errors,
            stored_pages: d.stored_pages,
            page_chunks: d.page_chunks,
            page_digests: d.page_digests,
            same: d.same,
            vanished: d.vanished,
        }
    }
}

impl From<crate::remote::wire::PartAnswer> for PartDone {
    fn from(a: crate::remote::wire::PartAnswer) -> Self {
        Self {
            plain_len: a.plain_len,
            stored_len: a.stored_len,
            chunks: a.chunks,
            page_errors: a.page_errors,
            stored_pages: a.stored_pages,
            page_chunks: a.page_chunks,
            page_digests: a.page_digests,
            same: a.same,
            vanished: a.vanished,
        }
    }
}

/// A sealed part: its blob (none when nothing is stored) and what was found.
pub type SealedPart = (Option<Vec<u8>>, PartDone);

/// Reads and seals the part `spec` names from this host's file system: the sealed blob (none
/// when nothing is to be stored) and what was found. Encrypted when `key` is given.
pub fn seal_part(spec: &PartSpec, key: Option<&DataKey>, buf: &mut Vec<u8>) -> CliResult<SealedPart> {
    let file = match std::fs::File::open(&spec.path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, PartDone { vanished: true, ..Default::default() }));
        }
        Err(e) => {
            return Err(CliError::new(ErrorCode::FileRead, format!("unable to open {}: {e}", spec.path.display())));
        }
    };
    if spec.len as u64 >= SEQUENTIAL {
        // Read front to back: twice the kernel's read-ahead.
        let _ = rustix::fs::fadvise(
            &file,
            spec.offset,
            std::num::NonZeroU64::new(spec.len as u64),
            rustix::fs::Advice::Sequential,
        );
    }
    let mut enc = BlobEncoder::new(spec.blob, key)?.without_plain_digest();
    let mut sealed = Vec::new();
    if let Some((read, known)) = spec.pages.as_ref().and_then(|p| p.read.as_ref()) {
        let done = seal_pages(spec, &file, (read, known), (&mut enc, &mut sealed), buf)?;
        return Ok(finish_pages(enc, sealed, done));
    }
    let mut done = PartDone::default();
    let frame = spec.blob.frame_size.max(1);
    // By pages: the file's own frame digests are taken from what is read, the blob's from what
    // it seals.
    let mut by_pages = spec.pages.as_ref().map(|pages| (pages, FrameDigests::new(frame)));
    // Read and sealed a piece at a time: a worker's buffer is a piece, not a part.
    // By content: a frame at a time, so that each is compared with the prior's before its pages
    // are stored or mapped.
    let by_frame = spec.pages.as_ref().is_some_and(|p| p.chunks.is_some()) && frame.is_multiple_of(BLCKSZ);
    let piece = if by_frame { frame } else { READ_PIECE };
    let (first_page, first_chunk) = (spec.offset / BLCKSZ as u64, spec.offset / frame as u64);
    while done.plain_len < spec.len as u64 {
        let offset = spec.offset + done.plain_len;
        let want = (spec.len - done.plain_len as usize).min(piece);
        buf.resize(want, 0);
        let n = read_at_full(&file, buf, offset)
            .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", spec.path.display())))?;
        let data = &buf[..n];
        if let Some(first_block) = spec.check_from_block {
            let start_lsn = Lsn(spec.start_lsn);
            let reread = |again: &mut [u8], at: u64| file.read_exact_at(again, at);
            check_pages(reread, data, offset, first_block, start_lsn, &mut done.page_errors);
        }
        let digests_at = done.page_digests.len();
        if spec.main_fork {
            done.page_digests.extend(data.chunks_exact(BLCKSZ).map(PageDigests::of));
        }
        match &mut by_pages {
            Some((pages, digests)) => {
                digests.update(data);
                let first = offset / BLCKSZ as u64;
                // By content, a frame that is not whole pages cannot be compared: stored.
                let chunk = offset / frame as u64 - first_chunk;
                let prior_chunk = pages.chunks.as_ref().map(|c| usize::try_from(chunk).ok().and_then(|i| c.get(i)));
                let differs = prior_chunk.map(|c| !by_frame || c != Some(&Sha256Digest::of(data)));
                for (i, page) in data.chunks(BLCKSZ).enumerate() {
                    let page_no = u32::try_from(first + i as u64).unwrap_or(u32::MAX);
                    let store = match (&pages.page_digests, differs) {
                        // By content, page by page: what the prior read is not what is read now.
                        (Some(prior), _) => {
                            let now = done.page_digests.get(digests_at + i);
                            let at = usize::try_from(first + i as u64 - first_page).unwrap_or(usize::MAX);
                            now.is_none() || prior.get(at) != now
                        }
                        (None, Some(differs)) => differs || page_no >= pages.prior_pages,
                        (None, None) => must_store(page, page_no, pages.prior_pages, Lsn(pages.since)),
                    };
                    if store {
                        enc.write(page, &mut sealed);
                        done.stored_len += page.len() as u64;
                        done.stored_pages.push(page_no);
                    }
                }
            }
            None => {
                enc.write(data, &mut sealed);
                done.stored_len += n as u64;
            }
        }
        done.plain_len += n as u64;
        if n < want {
            break;
        }
    }
    if let Some((_, digests)) = by_pages {
        done.chunks = digests.finish();
    }
    if done.stored_len == 0 {
        return Ok((None, done));
    }
    let summary = enc.finish(&mut sealed);
    if spec.pages.is_some() {
        done.page_chunks = summary.chunk_sha256;
    } else {
        done.chunks = summary.chunk_sha256;
    }
    // The whole file in this part, and the same as the prior's copy: referenced, not stored.
    if let Some((size, sha256)) = spec.same_as
        && spec.offset == 0
        && done.plain_len == size
        && pgstrata_repo_format::digest::file_digest(&done.chunks) == sha256
    {
        done.same = true;
        return Ok((None, done));
    }
    Ok((Some(sealed), done))
}

/// Checks what a database host says it read and sealed against what was asked and the blob it
/// sent (`shape`: its frames' plain bytes and count, [`pgstrata_repo_format::compressed_shape`]),
/// before any of it goes into a manifest.
pub fn check_received(spec: &PartSpec, done: &PartDone, shape: Option<(u64, usize)>) -> CliResult<()> {
    let page = BLCKSZ as u64;
    let by_pages = spec.pages.is_some();
    let problem = if done.plain_len > spec.len as u64 {
        Some(format!("read {} bytes of a part of {}", done.plain_len, spec.len))
    } else if done.stored_len > done.plain_len {
        Some(format!("stored {} bytes of {} read", done.stored_len, done.plain_len))
    } else if done.page_digests.len() as u64 != if spec.main_fork { done.plain_len / page } else { 0 } {
        Some(format!("{} page digests for {} bytes", done.page_digests.len(), done.plain_len))
    } else if done.page_errors.len() as u64 > done.plain_len.div_ceil(page) {
        Some(format!("{} damaged pages in {} bytes", done.page_errors.len(), done.plain_len))
    } else if by_pages && done.stored_pages.len() as u64 * page != done.stored_len {
        Some(format!("{} pages stored in {} bytes", done.stored_pages.len(), done.stored_len))
    } else {
        let digests = if by_pages { done.page_chunks.len() } else { done.chunks.len() };
        match shape {
            Some((plain, frames)) if plain != done.stored_len || frames != digests => Some(format!(
                "its blob holds {plain} bytes in {frames} frames, it says {} bytes and {digests} digests",
                done.stored_len
            )),
            None if done.stored_len > 0 && !done.same => Some(format!("{} bytes stored but no blob", done.stored_len)),
            _ => None,
        }
    };
    match problem {
        None => Ok(()),
        Some(why) => Err(CliError::new(
            ErrorCode::Protocol,
            format!("the database host's account of {} at {} is inconsistent: {why}", spec.path.display(), spec.offset),
        )),
    }
}

/// Asks the kernel to start reading a small part now: the walk (or a server's batch) runs ahead
/// of the sealing, which then finds it in memory. Read on demand, one small file after another,
/// the workers spent a good part of a many-file backup waiting for the disk. Advice only: a file
/// that cannot be opened here is dealt with when it is sealed.
pub fn read_ahead(path: &Path, len: u64) {
    if len < SEQUENTIAL
        && let Ok(f) = std::fs::File::open(path)
    {
        let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::WillNeed);
    }
}

/// The summary case of [`seal_part`]: reads only the pages `read` names (runs of consecutive
/// pages at a time), stores each, and takes every other page's digest from `known` (the
/// prior's). The file's own frame digests are not known (not every byte is read): a delta
/// restore compares such a file by its page digests.
fn seal_pages(
    spec: &PartSpec,
    file: &std::fs::File,
    (read, known): (&[u32], &[u64]),
    (enc, sealed): (&mut BlobEncoder, &mut Vec<u8>),
    buf: &mut Vec<u8>,
) -> CliResult<PartDone> {
    let page = BLCKSZ as u64;
    let first = spec.offset / page;
    let mut done = PartDone::default();
    let fail =
        |e: std::io::Error| CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", spec.path.display()));
    // A part's length is at most what it reads: the file ends where it ends now.
    let file_len = file.metadata().map_err(fail)?.len();
    let part_end = (spec.offset + spec.len as u64).min(file_len);
    let pages = part_end.saturating_sub(spec.offset) / page;
    // Pages the prior has no digest of (the file grew since it was listed) are read too.
    let read: Vec<u32> = read
        .iter()
        .copied()
        .filter(|p| u64::from(*p) < first + pages)
        .chain((first + known.len() as u64..first + pages).filter_map(|p| u32::try_from(p).ok()))
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    let mut i = 0;
    let mut next = 0u64;
    let mut short = None;
    while i < read.len() {
        // A run of consecutive pages, at most a read piece long.
        let start = u64::from(read[i]);
        let mut end = start + 1;
        while i + 1 < read.len() && u64::from(read[i + 1]) == end && ((end - start + 1) * page) as usize <= READ_PIECE {
            end += 1;
            i += 1;
        }
        i += 1;
        // The digests of the pages not read before this run: the prior's.
        for p in next.max(first)..start {
            done.page_digests.push(known.get((p - first) as usize).copied().unwrap_or(0));
        }
        buf.resize(((end - start) * page) as usize, 0);
        let n = read_at_full(file, buf, start * page).map_err(fail)?;
        let data = &buf[..n - n % BLCKSZ];
        if let Some(first_block) = spec.check_from_block {
            let reread = |again: &mut [u8], at: u64| file.read_exact_at(again, at);
            check_pages(reread, data, start * page, first_block, Lsn(spec.start_lsn), &mut done.page_errors);
        }
        for (k, p) in data.chunks(BLCKSZ).enumerate() {
            enc.write(p, sealed);
            done.stored_len += page;
            done.stored_pages.push(u32::try_from(start + k as u64).unwrap_or(u32::MAX));
            done.page_digests.push(PageDigests::of(p));
        }
        next = end;
        if n < buf.len() {
            // The file shrank while being read: it ends here (WAL replay restores the rest).
            short = Some(start * page + data.len() as u64);
            break;
        }
    }
    let end_page = first + pages;
    if short.is_none() {
        for p in next.max(first)..end_page {
            done.page_digests.push(known.get((p - first) as usize).copied().unwrap_or(0));
        }
    }
    done.plain_len = short.map_or(pages * page, |at| at - spec.offset);
    done.page_digests.truncate(usize::try_from(done.plain_len / page).unwrap_or(usize::MAX));
    Ok(done)
}

/// Seals what [`seal_pages`] stored: the blob (none when nothing was stored) and its frames'
/// digests.
fn finish_pages(enc: BlobEncoder, mut sealed: Vec<u8>, mut done: PartDone) -> SealedPart {
    if done.stored_len == 0 {
        return (None, done);
    }
    let summary = enc.finish(&mut sealed);
    done.page_chunks = summary.chunk_sha256;
    (Some(sealed), done)
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
fn check_pages(
    reread: impl Fn(&mut [u8], u64) -> std::io::Result<()>,
    buf: &[u8],
    offset: u64,
    first_block: u32,
    start_lsn: Lsn,
    errors: &mut Vec<u32>,
) {
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
            if reread(&mut again, at).is_err() || bad(&again) {
                errors.push(page_no);
            }
        }
    }
}

/// SHA-256 of each `frame_size` chunk of data fed in pieces.
struct FrameDigests {
    frame_size: usize,
    current: pgstrata_repo_format::digest::Sha256Stream,
    filled: usize,
    done: Vec<Sha256Digest>,
}

impl FrameDigests {
    fn new(frame_size: usize) -> Self {
        Self { frame_size: frame_size.max(1), current: Default::default(), filled: 0, done: Vec::new() }
    }

    fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let take = (self.frame_size - self.filled).min(data.len());
            self.current.update(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled == self.frame_size {
                self.done.push(std::mem::take(&mut self.current).finish());
                self.filled = 0;
            }
        }
    }

    fn finish(mut self) -> Vec<Sha256Digest> {
        if self.filled > 0 {
            self.done.push(self.current.finish());
        }
        self.done
    }
}
