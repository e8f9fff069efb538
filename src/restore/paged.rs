//! Writing a page-level file: its pages come from the parts of several backups (the runs say
//! which). Each part that holds any of its pages is fetched once, decoded frame by frame, each
//! frame checked against the digest its backup recorded, and the pages it holds are written
//! at their places in the file. Parts are fetched `ahead` at a time; a part in flight holds its
//! stored bytes and one frame of plaintext.
//!
//! The file as written is not compared with the file's recorded digest: that digest is of the
//! file as the backup read it, and a page that did not change since the prior (its LSN says
//! so) may still differ from the prior's copy in hint bits, which PostgreSQL sets without
//! WAL when neither checksums nor `wal_log_hints` are on. Every byte written has been checked
//! against the digest of the frame it was stored in.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use pgstrata_repo_format::meta::FileEntry;
use pgstrata_repo_format::pg::BLCKSZ;
use pgstrata_repo_format::{BackupLabel, BlobDecoder};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::pages::{Paged, first_chunks, locate, page_count};
use crate::progress::Progress;
use crate::repo::Repo;
use crate::restore::files::{FileOptions, Keep, blocking, run_writes};
use crate::restore::owner::io;
use crate::restore::shared_file::SharedFile;

/// A stretch of a part's plaintext and where it goes in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Piece {
    /// Offset in the part's plaintext.
    at: u64,
    /// Offset in the file.
    to: u64,
    len: u64,
}

/// What to take from one part of one backup.
#[derive(Debug)]
struct PartWork {
    backup: BackupLabel,
    part: usize,
    pieces: Vec<Piece>,
}

/// The parts a page-level file of `size` bytes needs, each with the pieces it supplies (sorted,
/// neighbours merged), leaving out the pages of chunks `keep` says are right in place (a delta
/// restore; chunks of `frame_size` bytes). Fails when the runs do not cover the file's pages
/// exactly, or name a page its backup does not store.
fn plan(entry: &FileEntry, paged: &Paged, keep: Option<&Keep>) -> CliResult<Vec<PartWork>> {
    let broken = |what: String| CliError::new(ErrorCode::Format, format!("{}: {what}", entry.path));
    let pages = page_count(entry.size);
    let mut work: BTreeMap<(BackupLabel, usize), Vec<Piece>> = BTreeMap::new();
    let mut next = 0u32;
    for run in &paged.runs {
        if run.first != next {
            return Err(broken(format!("the page map skips or repeats page {next}")));
        }
        // Checked before the run is walked: a damaged map must not loop over 4 billion pages.
        next = match run.first.checked_add(run.count) {
            Some(end) if end <= pages && run.at.checked_add(run.count).is_some() => end,
            _ => {
                return Err(broken(format!(
                    "a page run ({} pages from {}) goes past the file's {pages} pages",
                    run.count, run.first
                )));
            }
        };
        let backup = run.backup.as_ref().ok_or_else(|| broken("a page run names no backup".into()))?;
        let source = paged.sources.get(backup).ok_or_else(|| broken(format!("no stored bytes of backup {backup}")))?;
        for k in 0..run.count {
            let page = (u64::from(run.first) + u64::from(k)) * BLCKSZ as u64;
            let len = (BLCKSZ as u64).min(entry.size.saturating_sub(page));
            if keep.is_some_and(|keep| keep.covers(page, len)) {
                continue;
            }
            let index = run.at.saturating_add(k);
            let (part, at) = locate(&source.parts, index)
                .ok_or_else(|| broken(format!("backup {backup} stores no page {index}")))?;
            let pieces = work.entry((backup.clone(), part)).or_default();
            match pieces.last_mut() {
                Some(last) if last.at + last.len == at && last.to + last.len == page => last.len += len,
                _ => pieces.push(Piece { at, to: page, len }),
            }
        }
    }
    if next != pages {
        return Err(broken(format!("the page map covers {next} pages, the file has {pages}")));
    }
    Ok(work.into_iter().map(|((backup, part), pieces)| PartWork { backup, part, pieces }).collect())
}

/// Writes the pages of `entry` into `file` (already sized), but those of chunks `keep` says
/// are right in place; returns the bytes written.
#[allow(clippy::too_many_arguments)]
pub async fn write_paged(
    repo: &Repo,
    entry: &Arc<FileEntry>,
    paged: &Paged,
    keep: Option<&Keep>,
    file: &Arc<SharedFile>,
    out: &Path,
    options: &FileOptions,
    progress: &Mutex<Progress>,
) -> CliResult<u64> {
    let frame_size = options.frame_size;
    let work = plan(entry, paged, keep)?;
    let writes = work.into_iter().map(|w| {
        let (entry, file, out) = (Arc::clone(entry), Arc::clone(file), out.to_path_buf());
        async move {
            let source = paged
                .sources
                .get(&w.backup)
                .ok_or_else(|| CliError::new(ErrorCode::Format, format!("{}: no source {}", entry.path, w.backup)))?;
            let part = *source.parts.get(w.part).ok_or_else(|| {
                CliError::new(ErrorCode::Format, format!("{}: backup {} has no part {}", entry.path, w.backup, w.part))
            })?;
            let first_chunk = first_chunks(&source.parts, frame_size).get(w.part).copied().unwrap_or(usize::MAX);
            let digests = source.chunks.get(first_chunk..).unwrap_or_default().to_vec();
            let key = repo.layout.pack(&w.backup, part.pack);
            let sealed = repo.store.get_range(&key, part.offset..part.offset.saturating_add(part.len)).await?;
            let data_key = repo.key.clone();
            blocking(move || write_pieces(&key, &entry, &sealed, data_key.as_ref(), &digests, &w.pieces, &file, &out))
                .await
        }
    });
    run_writes(writes, options.workers, progress).await
}

/// Decodes one part frame by frame, checks each frame against `digests` (the part's frame
/// digests, in order), and writes the pieces that fall in it.
#[allow(clippy::too_many_arguments)]
fn write_pieces(
    key: &str,
    entry: &FileEntry,
    sealed: &[u8],
    data_key: Option<&pgstrata_repo_format::DataKey>,
    digests: &[pgstrata_repo_format::Sha256Digest],
    pieces: &[Piece],
    file: &SharedFile,
    out: &Path,
) -> CliResult<u64> {
    let mismatch = || {
        CliError::new(
            ErrorCode::Format,
            format!("{key}: the stored pages of {} do not match the manifest's checksums", entry.path),
        )
    };
    let mut decoder = BlobDecoder::new(format!("{key} (pages of {})", entry.path), data_key);
    let (mut frame_start, mut written) = (0u64, 0u64);
    decoder.feed(sealed);
    while let Some(plain) = decoder.poll()? {
        if plain.is_empty() {
            continue;
        }
        if digests.get(decoder.chunks().len() - 1) != decoder.chunks().last() {
            return Err(mismatch());
        }
        let frame_end = frame_start + plain.len() as u64;
        let mut slices = Vec::new();
        for piece in pieces.iter().filter(|p| p.at < frame_end && p.at + p.len > frame_start) {
            let from = piece.at.max(frame_start);
            let to = (piece.at + piece.len).min(frame_end);
            let slice = plain
                .get(
                    usize::try_from(from - frame_start).unwrap_or(usize::MAX)
                        ..usize::try_from(to - frame_start).unwrap_or(0),
                )
                .ok_or_else(mismatch)?;
            slices.push((slice, piece.to + (from - piece.at)));
        }
        // The frame's pieces in one turn at the file.
        written += file.write_all_at(slices).map_err(|e| io(out, "write", e))?;
        frame_start = frame_end;
    }
    decoder.finish()?;
    let wanted: u64 = pieces.iter().map(|p| p.len).sum();
    if written != wanted {
        return Err(mismatch());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::pages::PageSource;
    use pgstrata_repo_format::Sha256Digest;
    use pgstrata_repo_format::meta::{FileData, Ownership, PageRun, PartRef};

    fn part(plain_len: u64) -> PartRef {
        PartRef { pack: 0, offset: 0, len: 1, plain_len }
    }

    #[test]
    fn each_part_is_read_once_for_all_its_pages() {
        let (full, incr): (BackupLabel, BackupLabel) =
            ("20270115-080000F".parse().unwrap(), "20270115-080000F_20270116-080000I".parse().unwrap());
        let size = 5 * 8192;
        let entry = FileEntry {
            path: "pg_data/base/5/16384".into(),
            size,
            mtime: 0,
            owner: Ownership { mode: 0o600, user: None, group: None },
            sha256: Sha256Digest::of(b""),
            chunks: vec![],
            data: FileData::Empty,
            page_errors: vec![],
            page_digests: Default::default(),
        };
        let run = |first, count, b: &BackupLabel, at| PageRun { first, count, backup: Some(b.clone()), at };
        let paged = || {
            let mut sources = BTreeMap::new();
            sources.insert(full.clone(), PageSource { parts: vec![part(3 * 8192), part(2 * 8192)], chunks: vec![] });
            sources.insert(incr.clone(), PageSource { parts: vec![part(2 * 8192)], chunks: vec![] });
            Paged { runs: vec![run(0, 1, &full, 0), run(1, 2, &incr, 0), run(3, 2, &full, 3)], sources }
        };
        let work = plan(&entry, &paged(), None).unwrap();
        let summary: Vec<(String, usize, Vec<Piece>)> =
            work.into_iter().map(|w| (w.backup.to_string(), w.part, w.pieces)).collect();
        assert_eq!(
            summary,
            [
                (full.to_string(), 0, vec![Piece { at: 0, to: 0, len: 8192 }]),
                (full.to_string(), 1, vec![Piece { at: 0, to: 3 * 8192, len: 2 * 8192 }]),
                (incr.to_string(), 0, vec![Piece { at: 0, to: 8192, len: 2 * 8192 }]),
            ]
        );
        // A delta restore keeping the first chunk (two pages, here) fetches only the rest.
        let kept = plan(&entry, &paged(), Some(&Keep::new(2 * 8192, vec![true, false, false]))).unwrap();
        let pieces: Vec<Piece> = kept.into_iter().flat_map(|w| w.pieces).collect();
        assert_eq!(pieces, [Piece { at: 0, to: 3 * 8192, len: 2 * 8192 }, Piece { at: 8192, to: 2 * 8192, len: 8192 }]);
        // A map that does not cover the file is refused.
        let short = Paged { runs: vec![run(0, 1, &full, 0)], sources: paged().sources };
        assert!(plan(&entry, &short, None).unwrap_err().message.contains("covers 1 pages"));
        // Runs from a damaged or hostile manifest: past the file, wrapping, or with an index that
        // wraps — refused at once, before any page is walked (a count of 4 billion would loop).
        for runs in [
            vec![run(0, u32::MAX, &full, 0)],
            vec![run(0, 1, &full, 0), run(1, u32::MAX, &full, 0)],
            vec![run(0, 5, &full, u32::MAX - 1)],
        ] {
            let bad = Paged { runs, sources: paged().sources };
            let e = plan(&entry, &bad, None).unwrap_err();
            assert!(e.message.contains("goes past"), "{}", e.message);
        }
    }
}
