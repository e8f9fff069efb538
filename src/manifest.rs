//! A backup's manifest read as a stream: ranged reads of the stored object, decoded frame by
//! frame, parsed line by line. Memory stays at a few frames whatever the number of files, so
//! restore reads the manifest twice (directories and links first, then files) instead of
//! holding it, and a dependent backup reads its prior's alongside its own walk. The whole text
//! is checked against the catalog's checksum at the end of each pass; restore writes nothing
//! before the first pass has ended.

use pgstrata_repo_format::digest::Sha256Stream;
use pgstrata_repo_format::layout::copy_of;
use pgstrata_repo_format::meta::{CatalogEntry, ManifestEntry, ManifestHeader, ManifestReader};
use pgstrata_repo_format::{BlobDecoder, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::repo::Repo;

/// Bytes of the stored manifest fetched per request.
const READ_SIZE: u64 = 4 << 20;

/// One pass over a stored manifest.
pub struct ManifestStream<'a> {
    repo: &'a Repo,
    key: String,
    size: u64,
    offset: u64,
    blob: BlobDecoder,
    reader: ManifestReader,
    text: Sha256Stream,
    expected: Sha256Digest,
    header: Option<ManifestHeader>,
    /// The first entry, read while looking for the header.
    pending: Option<ManifestEntry>,
    ended: bool,
}

impl std::fmt::Debug for ManifestStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestStream").field("key", &self.key).field("offset", &self.offset).finish()
    }
}

impl<'a> ManifestStream<'a> {
    /// Starts reading the manifest of `backup` (its spare copy when the main one cannot be
    /// read); the header is read before this returns.
    pub async fn open(repo: &'a Repo, backup: &CatalogEntry) -> CliResult<Self> {
        let key = repo.layout.manifest(&backup.label);
        let mut errors = Vec::new();
        for k in [key.clone(), copy_of(&key)] {
            match Self::open_key(repo, k, backup.manifest_sha256).await {
                Ok(m) => return Ok(m),
                Err(e) if e.code == ErrorCode::Crypto => return Err(e),
                Err(e) => errors.push(e.message),
            }
        }
        Err(CliError::new(
            ErrorCode::Format,
            format!("unable to read the manifest of {}: {}", backup.label, errors.join("; ")),
        ))
    }

    /// The same manifest again from the start (the key that worked for the first pass).
    pub async fn reopen(&self) -> CliResult<ManifestStream<'a>> {
        Self::open_key(self.repo, self.key.clone(), self.expected).await
    }

    pub(crate) async fn open_key(repo: &'a Repo, key: String, expected: Sha256Digest) -> CliResult<Self> {
        let size = repo
            .store
            .head(&key)
            .await?
            .ok_or_else(|| CliError::new(ErrorCode::FileMissing, format!("{key} is missing")))?
            .size;
        let blob = BlobDecoder::new(key.clone(), repo.key.as_ref());
        let reader = ManifestReader::new(key.clone());
        let mut m = Self {
            repo,
            key,
            size,
            offset: 0,
            blob,
            reader,
            text: Sha256Stream::default(),
            expected,
            header: None,
            pending: None,
            ended: false,
        };
        m.pending = m.next().await?;
        if m.header.is_none() {
            return Err(CliError::new(ErrorCode::Format, format!("{}: no header", m.key)));
        }
        Ok(m)
    }

    pub fn header(&self) -> CliResult<&ManifestHeader> {
        self.header.as_ref().ok_or_else(|| CliError::new(ErrorCode::Format, format!("{}: no header", self.key)))
    }

    /// The next entry; `None` at the end, once the whole text matched the catalog's checksum.
    pub async fn next(&mut self) -> CliResult<Option<ManifestEntry>> {
        if let Some(first) = self.pending.take() {
            return Ok(Some(first));
        }
        loop {
            if self.ended {
                return Ok(None);
            }
            let entry = self.reader.poll()?;
            if self.header.is_none() {
                self.header = self.reader.header().cloned();
            }
            if entry.is_some() {
                return Ok(entry);
            }
            if let Some(plain) = self.blob.poll()? {
                self.text.update(&plain);
                self.reader.feed(&plain);
                continue;
            }
            if self.blob.is_done() || self.offset >= self.size {
                self.finish_pass()?;
                return Ok(None);
            }
            let end = (self.offset + READ_SIZE).min(self.size);
            let bytes = self.repo.store.get_range(&self.key, self.offset..end).await?;
            self.offset = end;
            self.blob.feed(&bytes);
        }
    }

    fn finish_pass(&mut self) -> CliResult<()> {
        self.ended = true;
        let blob = std::mem::replace(&mut self.blob, BlobDecoder::new(self.key.clone(), None));
        blob.finish()?;
        let reader = std::mem::replace(&mut self.reader, ManifestReader::new(self.key.clone()));
        reader.finish()?;
        if std::mem::take(&mut self.text).finish() != self.expected {
            return Err(CliError::new(
                ErrorCode::Format,
                format!("{} does not match the catalog's checksum", self.key),
            ));
        }
        Ok(())
    }
}
