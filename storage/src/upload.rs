//! Streaming uploads ([`Upload`]) and the record that lets a killed process's upload be aborted.
//!
//! An S3 or GCS multipart upload that is neither completed nor aborted stays in the bucket,
//! invisible to listings and billed, until a lifecycle rule removes it. A process killed with
//! SIGKILL cannot abort its own, and no one else can without its id (object_store does not list
//! open uploads). So where the store names its uploads, the id is first written next to the key
//! ([`journal_key`]); whoever later removes the key's prefix finds the record and aborts the upload
//! ([`RepoStore::delete_prefix`](crate::RepoStore::delete_prefix)).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::{MultipartId, MultipartUpload, PutPayload, PutResult, UploadPart, WriteMultipart};

use crate::error::Result;
use crate::store::RepoStore;

/// What follows a key to name the record of its open upload.
pub const JOURNAL_SUFFIX: &str = ".multipart";

/// The key of the record of `key`'s open upload.
pub fn journal_key(key: &str) -> String {
    format!("{key}{JOURNAL_SUFFIX}")
}

/// A streaming upload in progress. Memory stays below about `part_size x (in_flight + 1)`.
pub struct Upload {
    writer: WriteMultipart,
    store: RepoStore,
    key: String,
    /// The record of this upload's id, removed when the upload ends.
    journal: Option<String>,
    parts_in_flight: usize,
    written: u64,
    /// Unix seconds.
    started: i64,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("key", &self.key).field("written", &self.written).finish()
    }
}

impl Upload {
    pub(crate) fn new(
        inner: Box<dyn MultipartUpload>,
        store: RepoStore,
        key: &str,
        journal: Option<String>,
        (part_size, parts_in_flight): (usize, usize),
        started: i64,
    ) -> Self {
        Self {
            writer: WriteMultipart::new_with_chunk_size(inner, part_size),
            store,
            key: key.to_string(),
            journal,
            parts_in_flight,
            written: 0,
            started,
        }
    }

    /// Adds bytes, waiting while too many parts are in flight.
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.writer
            .wait_for_capacity(self.parts_in_flight)
            .await
            .map_err(|e| self.store.error("upload", &self.key, e, 1))?;
        self.writer.write(data);
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Completes the upload; returns its size.
    ///
    /// A commit whose answer was lost may have landed: the HTTP client then repeats it, and
    /// the repeat fails (Azure's block list names blocks that are no longer uncommitted). When
    /// the commit fails, an object of exactly the bytes written, written since the upload
    /// started, means it did land (uploads go to keys only this writer writes: packs and
    /// manifests of its own backup), and the upload succeeded.
    pub async fn finish(self) -> Result<u64> {
        let Self { writer, store, key, journal, written, started, .. } = self;
        if let Err(e) = writer.finish().await {
            let error = store.error("complete upload of", &key, e, 1);
            match store.head(&key).await {
                Ok(Some(info)) if info.size == written && info.last_modified >= started - 60 => {
                    tracing::debug!(key, "the upload landed though its completion failed: {error}");
                }
                _ => return Err(error),
            }
        }
        if let Some(journal) = journal {
            store.delete(&journal).await?;
        }
        Ok(written)
    }

    /// Abandons the upload; nothing becomes visible. The record of the upload goes only once
    /// the abort succeeded, so that a later cleanup can try again.
    pub async fn abort(self) -> Result<()> {
        let Self { writer, store, key, journal, .. } = self;
        writer.abort().await.map_err(|e| store.error("abort upload of", &key, e, 1))?;
        if let Some(journal) = journal {
            store.delete(&journal).await?;
        }
        Ok(())
    }
}

/// A multipart upload known by its id, driven through [`MultipartStore`]: what `put_multipart`
/// gives, except that the id was ours to record first.
pub(crate) struct NamedUpload {
    store: Arc<dyn MultipartStore>,
    path: Path,
    id: MultipartId,
    next_part: usize,
    parts: Arc<Mutex<Vec<(usize, PartId)>>>,
}

impl std::fmt::Debug for NamedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedUpload").field("path", &self.path).field("parts", &self.next_part).finish()
    }
}

impl NamedUpload {
    pub(crate) fn new(store: Arc<dyn MultipartStore>, path: Path, id: MultipartId) -> Self {
        Self { store, path, id, next_part: 0, parts: Arc::default() }
    }
}

#[async_trait]
impl MultipartUpload for NamedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let idx = self.next_part;
        self.next_part += 1;
        let (store, path, id, parts) = (self.store.clone(), self.path.clone(), self.id.clone(), self.parts.clone());
        Box::pin(async move {
            let part = store.put_part(&path, &id, idx, data).await?;
            parts.lock().map_err(|_| poisoned())?.push((idx, part));
            Ok(())
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let mut parts = std::mem::take(&mut *self.parts.lock().map_err(|_| poisoned())?);
        if parts.len() != self.next_part {
            return Err(object_store::Error::Generic {
                store: "multipart",
                source: format!("{} of {} parts were uploaded", parts.len(), self.next_part).into(),
            });
        }
        parts.sort_by_key(|(idx, _)| *idx);
        let parts = parts.into_iter().map(|(_, part)| part).collect();
        self.store.complete_multipart(&self.path, &self.id, parts).await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.store.abort_multipart(&self.path, &self.id).await
    }
}

fn poisoned() -> object_store::Error {
    object_store::Error::Generic { store: "multipart", source: "a part upload panicked".into() }
}
