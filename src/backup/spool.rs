//! The manifest of a backup in progress. Its header (stop LSN, pack count, tablespaces) is known
//! only at the end, but its entries are known file by file as the copy finishes them: they are
//! spooled, compressed, to an anonymous temporary file and streamed into the repository behind
//! the header at the end. Memory stays the same whatever the number of files.

use std::io::{Read, Seek, Write};

use pgstrata_repo_format::meta::{
    DirEntry, FileEntry, LinkEntry, ManifestBody, ManifestEntry, ManifestHeader, ManifestWriter,
};
use pgstrata_repo_format::{BlobDecoder, BlobEncoder, BlobSettings, Compression, DataKey, Sha256Digest};
use pgstrata_storage::{RepoStore, Upload};

use super::copy::ItemSink;
use crate::error::{CliError, CliResult, ErrorCode};

/// Bytes gathered before they are written on (spool file, repository uploads).
const FLUSH: usize = 1 << 20;

fn spool_err(e: impl std::fmt::Display) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to use the manifest spool file: {e}"))
}

/// Entries between two reserved places.
#[derive(Debug)]
struct Segment {
    /// Offset in the spooled text where the segment ends.
    end: u64,
    entries: u64,
    /// The reserved place that follows it.
    slot: String,
}

/// Finished entries, in path order, on their way to the manifest.
#[derive(Debug)]
pub struct ManifestSpool {
    file: std::fs::File,
    enc: BlobEncoder,
    body: ManifestBody,
    line: Vec<u8>,
    sealed: Vec<u8>,
    text_len: u64,
    segments: Vec<Segment>,
    /// Entries since the last reserved place.
    entries: u64,
    pub page_error_files: u64,
}

impl ManifestSpool {
    /// A spool in the temporary directory (`TMPDIR`); the file has no name and goes with the process.
    pub fn new() -> CliResult<Self> {
        let file = tempfile::tempfile().map_err(spool_err)?;
        let settings = BlobSettings { compression: Compression::Zstd(1), frame_size: FLUSH };
        Ok(Self {
            file,
            enc: BlobEncoder::new(settings, None)?.without_plain_digest(),
            body: ManifestBody::new(),
            line: Vec::new(),
            sealed: Vec::new(),
            text_len: 0,
            segments: Vec::new(),
            entries: 0,
            page_error_files: 0,
        })
    }

    fn push(&mut self, entry: &ManifestEntry) -> CliResult<()> {
        self.line.clear();
        self.body.push(entry, &mut self.line)?;
        self.text_len += self.line.len() as u64;
        self.entries += 1;
        self.enc.write(&self.line, &mut self.sealed);
        if self.sealed.len() >= FLUSH {
            self.file.write_all(&self.sealed).map_err(spool_err)?;
            self.sealed.clear();
        }
        Ok(())
    }

    /// Writes the manifest: the header, the spooled entries with `late` (the files of the
    /// reserved places, those that exist) in their places, and the end line, sealed as one blob
    /// into `keys[0]` and then copied to `keys[1]` (its spare). Returns the SHA-256 of the
    /// manifest text and its stored size.
    pub async fn publish(
        self,
        store: &RepoStore,
        keys: [&str; 2],
        header: &ManifestHeader,
        mut late: Vec<FileEntry>,
        blob: BlobSettings,
        key: Option<&DataKey>,
    ) -> CliResult<(Sha256Digest, u64)> {
        let Self { mut file, enc, mut sealed, text_len, mut segments, entries, .. } = self;
        enc.finish(&mut sealed);
        file.write_all(&sealed).map_err(spool_err)?;
        file.rewind().map_err(spool_err)?;
        segments.push(Segment { end: text_len, entries, slot: String::new() });

        let mut out = ManifestOut {
            upload: store.upload(keys[0]).await?,
            enc: Some(BlobEncoder::new(blob, key)?),
            text: Vec::new(),
            sealed: Vec::new(),
        };
        let result = async {
            let mut writer = ManifestWriter::new(header, &mut out.text)?;
            let mut decoder = BlobDecoder::new("the manifest spool", None);
            let (mut at, mut segment) = (0u64, 0usize);
            let mut input = vec![0u8; FLUSH];
            loop {
                let n = file.read(&mut input).map_err(spool_err)?;
                decoder.feed(&input[..n]);
                while let Some(text) = decoder.poll()? {
                    let mut rest = text.as_slice();
                    while !rest.is_empty() || segments.get(segment).is_some_and(|s| s.end == at) {
                        let Some(seg) = segments.get(segment) else {
                            return Err(spool_err("more text than was spooled"));
                        };
                        let take = usize::try_from(seg.end - at).unwrap_or(usize::MAX).min(rest.len());
                        let (now, later) = rest.split_at(take);
                        at += take as u64;
                        rest = later;
                        let ends = at == seg.end;
                        writer.splice(now, if ends { seg.entries } else { 0 }, &mut out.text);
                        if ends {
                            if let Some(i) = late.iter().position(|f| f.path == seg.slot) {
                                writer.push(&ManifestEntry::File(late.swap_remove(i)), &mut out.text)?;
                            }
                            segment += 1;
                        }
                        out.flush(false).await?;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            decoder.finish()?;
            if segment != segments.len() || at != text_len {
                return Err(spool_err("the spooled text ended early"));
            }
            if let Some(f) = late.first() {
                return Err(spool_err(format!("{} has no reserved place", f.path)));
            }
            let sha256 = writer.finish(&mut out.text)?;
            out.flush(true).await?;
            Ok(sha256)
        }
        .await;
        match result {
            Ok(sha256) => {
                let stored = out.upload.finish().await?;
                store.copy(keys[0], keys[1]).await?;
                Ok((sha256, stored))
            }
            Err(e) => {
                let _ = out.upload.abort().await;
                Err(e)
            }
        }
    }
}

/// The manifest being sealed and uploaded (then copied to its spare key).
struct ManifestOut {
    upload: Upload,
    /// Taken when the blob is finished.
    enc: Option<BlobEncoder>,
    text: Vec<u8>,
    sealed: Vec<u8>,
}

impl ManifestOut {
    async fn flush(&mut self, last: bool) -> CliResult<()> {
        if (self.text.len() >= FLUSH || last)
            && let Some(enc) = self.enc.as_mut()
        {
            enc.write(&self.text, &mut self.sealed);
            self.text.clear();
        }
        if last && let Some(enc) = self.enc.take() {
            enc.finish(&mut self.sealed);
        }
        if self.sealed.len() >= FLUSH || last {
            self.upload.write(&self.sealed).await?;
            self.sealed.clear();
        }
        Ok(())
    }
}

impl ItemSink for ManifestSpool {
    fn dir(&mut self, entry: DirEntry) -> CliResult<()> {
        self.push(&ManifestEntry::Dir(entry))
    }

    fn link(&mut self, entry: LinkEntry) -> CliResult<()> {
        self.push(&ManifestEntry::Link(entry))
    }

    fn file(&mut self, entry: FileEntry) -> CliResult<()> {
        if !entry.page_errors.is_empty() {
            self.page_error_files += 1;
            tracing::warn!("invalid page checksums found in {}: pages {:?}", entry.path, entry.page_errors);
        }
        self.push(&ManifestEntry::File(entry))
    }

    fn unchanged(&mut self, entry: FileEntry) -> CliResult<()> {
        if !entry.page_errors.is_empty() {
            self.page_error_files += 1;
        }
        self.push(&ManifestEntry::File(entry))
    }

    fn slot(&mut self, path: &str) -> CliResult<()> {
        self.body.reserve(path)?;
        self.segments.push(Segment { end: self.text_len, entries: self.entries, slot: path.to_string() });
        self.entries = 0;
        Ok(())
    }
}
