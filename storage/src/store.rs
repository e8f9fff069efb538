//! [`RepoStore`]: the one storage contract every backend meets.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{Result, StorageError, describe};
use crate::retry::{RetryPolicy, is_transient, retried_by_http_client};
use crate::staged::Staged;
use crate::upload::{JOURNAL_SUFFIX, NamedUpload, Upload, journal_key};

/// Default part size of streaming uploads: above S3's 5 MiB minimum.
pub const DEFAULT_PART_SIZE: usize = 8 << 20;
/// Default number of parts of one upload in flight at once.
pub const DEFAULT_PARTS_IN_FLIGHT: usize = 4;

/// The key of `path` relative to a repository root at `prefix` in its store.
pub fn key_under(prefix: &str, path: &Path) -> String {
    let full = path.as_ref();
    if prefix.is_empty() {
        full.to_string()
    } else {
        full.strip_prefix(prefix).map(|k| k.trim_start_matches('/')).unwrap_or(full).to_string()
    }
}

/// The version of an object a conditional update compares (`object_store`'s own type).
pub type ObjectVersion = object_store::UpdateVersion;

/// What a listing or `head` says about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root.
    pub key: String,
    pub size: u64,
    /// Unix seconds.
    pub last_modified: i64,
}

/// A repository's storage: keys relative to the repository root, one behaviour on every backend.
///
/// - `put` is atomic: a reader sees the old object or the whole new one, never part of it.
/// - `put_new` is create-only: of concurrent creators exactly one succeeds, the others get
///   [`StorageError::AlreadyExists`]; the primitive for WAL archiving and locks.
/// - `delete` of a missing object succeeds.
/// - `upload` streams a large object in parts with bounded memory; nothing is visible until
///   `finish` returns.
///
/// Transient failures are retried in one layer (see [`crate::retry`]): the HTTP client's
/// per-request loop on the object stores, this type's own for what no HTTP client retried.
#[derive(Clone)]
pub struct RepoStore {
    inner: Arc<dyn ObjectStore>,
    /// The same store's multipart API, where it can name (and so later abort) an upload.
    multipart: Option<Arc<dyn MultipartStore>>,
    prefix: String,
    store: String,
    retry: RetryPolicy,
    part_size: usize,
    parts_in_flight: usize,
    /// The repository directory when the store is the local filesystem.
    local_root: Option<std::path::PathBuf>,
    /// Tags every object written gets (`repoN-storage-tag`; S3 and Azure).
    tags: object_store::TagSet,
}

impl std::fmt::Debug for RepoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoStore")
            .field("store", &self.store)
            .field("named_uploads", &self.multipart.is_some())
            .finish()
    }
}

/// Whether `whole` is exactly `pieces` one after another.
fn is_concatenation(whole: &[u8], pieces: &[Bytes]) -> bool {
    let mut rest = whole;
    pieces.iter().all(|p| match rest.strip_prefix(p.as_ref()) {
        Some(r) => {
            rest = r;
            true
        }
        None => false,
    }) && rest.is_empty()
}

impl RepoStore {
    /// Wraps an object_store with a key prefix (`repoN-path` inside a bucket; may be empty).
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str, store: String, retry: RetryPolicy) -> Self {
        let prefix = prefix.trim_matches('/').to_string();
        Self {
            inner,
            multipart: None,
            prefix,
            store,
            retry,
            part_size: DEFAULT_PART_SIZE,
            parts_in_flight: DEFAULT_PARTS_IN_FLIGHT,
            local_root: None,
            tags: object_store::TagSet::default(),
        }
    }

    /// Marks the store as the local filesystem at `root`, so [`delete_prefix`](Self::delete_prefix)
    /// also removes what no listing shows there: directories and the staging files of uploads
    /// that a killed process never finished.
    pub fn with_local_root(mut self, root: std::path::PathBuf) -> Self {
        self.local_root = Some(root);
        self
    }

    /// Gives the store's multipart API (the same store as `inner`), so that uploads are
    /// recorded and an upload a killed process left open can be aborted later.
    pub fn with_multipart(mut self, multipart: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(multipart);
        self
    }

    /// Sets the part size and parallelism of streaming uploads (memory: about size x (n + 1)).
    pub fn with_upload_parts(mut self, part_size: usize, in_flight: usize) -> Self {
        self.part_size = part_size.max(1);
        self.parts_in_flight = in_flight.max(1);
        self
    }

    /// Tags every object written from now on (`key=value` pairs).
    pub fn with_tags(mut self, tags: &[(String, String)]) -> Self {
        let mut set = object_store::TagSet::default();
        for (k, v) in tags {
            set.push(k, v);
        }
        self.tags = set;
        self
    }

    /// The options of a write in `mode`, with this store's tags.
    fn put_options(&self, mode: PutMode) -> PutOptions {
        PutOptions { mode, tags: self.tags.clone(), ..Default::default() }
    }

    /// The same store under a further key prefix (tests use one per run).
    pub fn scoped(&self, sub: &str) -> Self {
        let sub = sub.trim_matches('/');
        let prefix = if self.prefix.is_empty() { sub.to_string() } else { format!("{}/{sub}", self.prefix) };
        Self { prefix, store: format!("{}/{sub}", self.store.trim_end_matches('/')), ..self.clone() }
    }

    /// The object store underneath and the key prefix of this repository in it, for serving
    /// the repository to another host (which brings its own retries and uploads).
    pub fn object_store(&self) -> (Arc<dyn ObjectStore>, &str) {
        (self.inner.clone(), &self.prefix)
    }

    /// Description for messages (`s3://bucket/prefix`).
    pub fn describe(&self) -> &str {
        &self.store
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    fn path(&self, key: &str) -> Path {
        if self.prefix.is_empty() { Path::from(key) } else { Path::from(format!("{}/{key}", self.prefix)) }
    }

    fn key_of(&self, path: &Path) -> String {
        key_under(&self.prefix, path)
    }

    pub(crate) fn error(&self, op: &'static str, key: &str, err: object_store::Error, attempts: u32) -> StorageError {
        let store = self.store.clone();
        let key = key.to_string();
        match err {
            object_store::Error::NotFound { .. } => StorageError::NotFound { store, key },
            object_store::Error::AlreadyExists { .. } => StorageError::AlreadyExists { store, key },
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
                StorageError::PermissionDenied { store, key, detail: describe(&err) }
            }
            other if is_transient(&other) => {
                StorageError::Unavailable { store, op, key, attempts, detail: describe(&other) }
            }
            other => StorageError::Other { store, op, key, detail: describe(&other) },
        }
    }

    /// Runs `f` until it succeeds, fails for good, or the retry budget is spent.
    async fn retrying<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = std::result::Result<T, object_store::Error>>,
    {
        self.retrying_as(op, key, Some(true), f).await
    }

    /// [`retrying`](Self::retrying) for a request the HTTP client treats as idempotent or not;
    /// `None`: one it may not retry at all (retried here whatever failed in transit).
    async fn retrying_as<T, F, Fut>(&self, op: &'static str, key: &str, idempotent: Option<bool>, mut f: F) -> Result<T>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = std::result::Result<T, object_store::Error>>,
    {
        let start = Instant::now();
        let mut attempt = 1;
        loop {
            match f(attempt).await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    // An HTTP request was already retried by the HTTP client, within the same
                    // policy: one retry layer, one bounded total time.
                    let give_up = !is_transient(&e)
                        || idempotent.is_some_and(|i| retried_by_http_client(&e, i))
                        || attempt >= self.retry.max_attempts
                        || start.elapsed() >= self.retry.total_timeout;
                    if give_up {
                        return Err(self.error(op, key, e, attempt));
                    }
                    let wait = self.retry.backoff(attempt);
                    tracing::debug!(op, key, attempt, ?wait, error = %e, "retrying storage operation");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Writes (or replaces) an object atomically.
    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key);
        self.retrying("write", key, |_| {
            let payload = PutPayload::from(data.clone());
            let path = path.clone();
            async move { self.inner.put_opts(&path, payload, self.put_options(PutMode::Overwrite)).await.map(|_| ()) }
        })
        .await
    }

    /// Copies an object to another key (server-side on the object stores), replacing it.
    pub async fn copy(&self, from: &str, to: &str) -> Result<()> {
        let (src, dst) = (self.path(from), self.path(to));
        self.retrying("copy", from, |_| self.inner.copy(&src, &dst)).await
    }

    /// Writes an object only if it does not exist yet.
    ///
    /// When the object turns out to exist, it is read back: an attempt may have landed with its
    /// answer lost and been retried (here or inside the HTTP client), so identical bytes mean our
    /// own write, and the call succeeds; anything else is [`StorageError::AlreadyExists`].
    pub async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        self.put_new_pieces(key, vec![data]).await
    }

    /// [`put_new`](Self::put_new) of the concatenation of `pieces`, never copied into one
    /// buffer (a sealed WAL file is its frames, sealed apart).
    pub async fn put_new_pieces(&self, key: &str, pieces: Vec<Bytes>) -> Result<()> {
        let path = self.path(key);
        let result = self
            .retrying_as("create", key, Some(false), |_| {
                let payload: PutPayload = pieces.iter().cloned().collect();
                let path = path.clone();
                async move {
                    let opts = self.put_options(PutMode::Create);
                    match self.inner.put_opts(&path, payload, opts).await {
                        Ok(_) => Ok(false),
                        // Maybe our own earlier attempt: this layer's, or one the HTTP client
                        // retried after a lost answer (it does not tell). Decided by reading back.
                        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => {
                            Ok(true)
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        if result {
            // Found after an ambiguous failure: ours if the bytes are the same. Gone again by
            // the time it is read: someone else's, removed meanwhile (a lease generation its
            // next holder retired), which is what a create-only write reports.
            let existing = match self.get(key).await {
                Err(StorageError::NotFound { .. }) => {
                    return Err(StorageError::AlreadyExists { store: self.store.clone(), key: key.to_string() });
                }
                other => other?,
            };
            if !is_concatenation(&existing, &pieces) {
                return Err(StorageError::AlreadyExists { store: self.store.clone(), key: key.to_string() });
            }
        }
        Ok(())
    }

    /// Reads a whole object.
    pub async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key);
        self.retrying("read", key, |_| {
            let path = path.clone();
            async move { self.inner.get(&path).await?.bytes().await }
        })
        .await
    }

    /// Reads a whole object and its version (what [`put_if`](Self::put_if) compares: the
    /// e-tag, and the generation where the store has one, as GCS does).
    pub async fn get_versioned(&self, key: &str) -> Result<(Bytes, ObjectVersion)> {
        let path = self.path(key);
        self.retrying("read", key, |_| {
            let path = path.clone();
            async move {
                let got = self.inner.get(&path).await?;
                let version = ObjectVersion { e_tag: got.meta.e_tag.clone(), version: got.meta.version.clone() };
                Ok((got.bytes().await?, version))
            }
        })
        .await
    }

    /// Replaces an object only if it is still at `version` (from
    /// [`get_versioned`](Self::get_versioned)); else [`StorageError::Changed`]. Returns the new
    /// version. S3, GCS and Azure compare on the server; the local filesystem under a lock (see
    /// [`crate::local`]).
    pub async fn put_if(&self, key: &str, data: Bytes, version: ObjectVersion) -> Result<ObjectVersion> {
        let path = self.path(key);
        let result = self
            .retrying_as("update", key, Some(false), |_| {
                let payload = PutPayload::from(data.clone());
                let path = path.clone();
                let mode = PutMode::Update(version.clone());
                async move {
                    match self.inner.put_opts(&path, payload, self.put_options(mode)).await {
                        Ok(done) => Ok(Ok(ObjectVersion { e_tag: done.e_tag, version: done.version })),
                        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
                            Ok(Err(()))
                        }
                        Err(e) => Err(e),
                    }
                }
            })
            .await?;
        match result {
            Ok(v) => Ok(v),
            // Maybe our own write, whose answer was lost and whose retry then found it: the
            // same bytes in place are ours (as `put_new` decides).
            Err(()) => match self.get_versioned(key).await {
                Ok((now, v)) if now == data => Ok(v),
                _ => Err(StorageError::Changed { store: self.store.clone(), key: key.to_string() }),
            },
        }
    }

    /// Reads `range` of an object; a range past the end is an error.
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = self.path(key);
        let want = range.end.saturating_sub(range.start);
        let bytes = self
            .retrying("read", key, |_| {
                let path = path.clone();
                let range = range.clone();
                async move { self.inner.get_range(&path, range).await }
            })
            .await?;
        if bytes.len() as u64 != want {
            return Err(StorageError::Other {
                store: self.store.clone(),
                op: "read",
                key: key.to_string(),
                detail: format!("asked for {want} bytes at {}, got {}", range.start, bytes.len()),
            });
        }
        Ok(bytes)
    }

    /// Size and time of an object; `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>> {
        let path = self.path(key);
        match self.retrying("stat", key, |_| self.inner.head(&path)).await {
            Ok(meta) => Ok(Some(ObjectInfo {
                key: key.to_string(),
                size: meta.size,
                last_modified: meta.last_modified.timestamp(),
            })),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Streams every object whose key starts with `prefix` (a plain string prefix, not only a
    /// directory), in no particular order.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo>> {
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let dir_path = if dir.is_empty() && self.prefix.is_empty() { None } else { Some(self.path(dir)) };
        let stream = self.inner.list(dir_path.as_ref());
        let this = self.clone();
        let want = prefix.to_string();
        stream
            .filter_map(move |item| {
                let out = match item {
                    Ok(meta) => {
                        let key = this.key_of(&meta.location);
                        key.starts_with(&want).then(|| {
                            Ok(ObjectInfo { key, size: meta.size, last_modified: meta.last_modified.timestamp() })
                        })
                    }
                    Err(object_store::Error::NotFound { .. }) => None,
                    Err(e) => Some(Err(this.error("list", &want, e, 1))),
                };
                futures::future::ready(out)
            })
            .boxed()
    }

    /// Collects a listing, sorted by key.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let mut out: Vec<ObjectInfo> = Vec::new();
        let mut stream = self.list(prefix);
        while let Some(item) = stream.next().await {
            out.push(item?);
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// One delimiter listing of the "directory" `dir` (no trailing `/`); `None` when missing.
    async fn list_one_level(&self, dir: &str, what: &str) -> Result<Option<object_store::ListResult>> {
        let path = if dir.is_empty() && self.prefix.is_empty() { None } else { Some(self.path(dir)) };
        let result = self
            .retrying("list", what, |_| {
                let path = path.clone();
                async move { self.inner.list_with_delimiter(path.as_ref()).await }
            })
            .await;
        match result {
            Ok(l) => Ok(Some(l)),
            Err(StorageError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The immediate "sub-directories" of `dir` (keys up to the next `/`), without listing
    /// everything below them.
    pub async fn list_dirs(&self, dir: &str) -> Result<Vec<String>> {
        let dir = dir.trim_end_matches('/');
        let Some(listed) = self.list_one_level(dir, dir).await? else { return Ok(Vec::new()) };
        let mut out: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| self.key_of(p).rsplit('/').next().map(str::to_string))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The objects directly in the "directory" of `prefix` whose keys start with `prefix`,
    /// without descending below it (one delimiter listing), sorted by key. Cheap where `list`
    /// would walk a whole tree, e.g. looking up a history file at the top of a WAL archive.
    pub async fn list_files(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let dir = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        if let Some(path) = (!dir.is_empty()).then(|| self.local_dir(&format!("{dir}/"))).flatten() {
            let (this, wanted, dir) = (self.clone(), prefix.to_string(), dir.to_string());
            let listed = tokio::task::spawn_blocking(move || this.list_local(&path, &dir, &wanted)).await;
            return listed.map_err(|e| StorageError::Other {
                store: self.store.clone(),
                op: "list",
                key: prefix.to_string(),
                detail: e.to_string(),
            })?;
        }
        let Some(listed) = self.list_one_level(dir, prefix).await? else { return Ok(Vec::new()) };
        let mut out: Vec<ObjectInfo> = listed
            .objects
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.key_of(&m.location),
                size: m.size,
                last_modified: m.last_modified.timestamp(),
            })
            .filter(|o| o.key.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        // S3's delete goes out as a POST of a one-key bulk delete, which the HTTP client does not
        // retry: a delete is idempotent (a missing object is success), so it is retried here.
        match self.retrying_as("delete", key, None, |_| self.inner.delete(&path)).await {
            Ok(()) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes many objects with the store's bulk delete (S3's DeleteObjects, 1 000 keys a
    /// request; concurrent single deletes where a store has no bulk call), in batches so memory
    /// stays bounded. A key the bulk call did not confirm is deleted again on its own, with
    /// retries; a missing object is not an error. Returns how many keys were given.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u64> {
        const BATCH: usize = 1000;
        for batch in keys.chunks(BATCH) {
            let paths: Vec<Path> = batch.iter().map(|k| self.path(k)).collect();
            let input = futures::stream::iter(paths.into_iter().map(Ok)).boxed();
            let mut confirmed = std::collections::HashSet::with_capacity(batch.len());
            let mut out = self.inner.delete_stream(input);
            while let Some(item) = out.next().await {
                if let Ok(path) = item {
                    confirmed.insert(self.key_of(&path));
                }
            }
            drop(out);
            for key in batch.iter().filter(|k| !confirmed.contains(*k)) {
                self.delete(key).await?;
            }
        }
        Ok(keys.len() as u64)
    }

    /// Deletes every object under `prefix`; returns how many. Uploads recorded there as open
    /// (their process died) are aborted first. On the local filesystem a prefix ending in `/`
    /// is a directory, removed whole with what no listing shows (empty directories, staging
    /// files of unfinished uploads).
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let listed = self.list_all(prefix).await?;
        for journal in listed.iter().filter(|o| o.key.ends_with(JOURNAL_SUFFIX)) {
            self.abort_recorded(&journal.key).await?;
        }
        let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
        let n = self.delete_many(&keys).await?;
        if let Some(dir) = self.local_dir(prefix) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.local_error("remove directory", prefix, &dir, &e)),
            }
        }
        Ok(n)
    }

    /// Ends the uploads a killed process left unfinished directly in the directory `dir` (with
    /// a trailing `/`), keeping every complete object: recorded uploads are aborted (and their
    /// records removed); on the local filesystem the staging files (`<key>#<n>`) are removed.
    /// Returns how many were ended.
    pub async fn discard_unfinished(&self, dir: &str) -> Result<u64> {
        let mut n = 0;
        for journal in self.list_files(dir).await?.iter().filter(|o| o.key.ends_with(JOURNAL_SUFFIX)) {
            self.abort_recorded(&journal.key).await?;
            self.delete(&journal.key).await?;
            n += 1;
        }
        if let Some(path) = self.local_dir(dir) {
            let entries = match std::fs::read_dir(&path) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(n),
                Err(e) => return Err(self.local_error("list directory", dir, &path, &e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.local_error("list directory", dir, &path, &e))?;
                if entry.file_name().to_string_lossy().contains('#') {
                    std::fs::remove_file(entry.path())
                        .map_err(|e| self.local_error("remove staging file", dir, &entry.path(), &e))?;
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// [`list_files`](Self::list_files) on the local filesystem: the directory's names are read
    /// and only those starting as asked are looked at. The store's own listing looks at every
    /// entry (twice): a WAL directory holds up to 256 segments and their claims, and each
    /// `archive-get` lists one. Same answer: regular files (links followed), staging files
    /// (`<name>#<digits>`) left out, sorted by key.
    fn list_local(&self, path: &std::path::Path, dir: &str, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let start = &prefix[dir.len() + 1..];
        let entries = match std::fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.local_error("list", prefix, path, &e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| self.local_error("list", prefix, path, &e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str().filter(|n| n.starts_with(start) && !is_staging(n)) else { continue };
            let meta = match std::fs::metadata(entry.path()) {
                Ok(meta) if meta.is_file() => meta,
                Ok(_) => continue,
                // Removed since the directory was read (an expire): not listed.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.local_error("list", prefix, &entry.path(), &e)),
            };
            let last_modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            out.push(ObjectInfo { key: format!("{dir}/{name}"), size: meta.len(), last_modified });
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// On the local filesystem, the file of an object (a key without `..` or empty parts): for
    /// a reader on a blocking thread of its own, which reads it directly instead of going
    /// through the runtime for every range.
    pub fn local_file(&self, key: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        (!key.split('/').any(|c| c == ".." || c.is_empty())).then(|| root.join(self.path(key).as_ref()))
    }

    /// On the local filesystem, a new object in the directory `dir` (a prefix ending in `/`)
    /// written before its name is known (see [`Staged`]); elsewhere `None`, and the caller
    /// writes it whole with [`put_new_pieces`](Self::put_new_pieces). `name` only labels the
    /// staging file. Blocking.
    pub fn stage_new(&self, dir: &str, name: &str) -> Result<Option<Staged>> {
        let Some(path) = self.local_dir(dir) else { return Ok(None) };
        if name.contains(['/', '#']) {
            return Err(StorageError::Config(format!("invalid staging name {name:?}")));
        }
        Staged::create(path, name, self.store.clone(), dir.to_string()).map(Some)
    }

    /// On the local filesystem, the directory of a prefix ending in `/`.
    fn local_dir(&self, prefix: &str) -> Option<std::path::PathBuf> {
        let root = self.local_root.as_ref()?;
        (prefix.ends_with('/') && !prefix.split('/').any(|c| c == ".."))
            .then(|| root.join(self.path(prefix.trim_end_matches('/')).as_ref()))
    }

    fn local_error(&self, op: &'static str, key: &str, path: &std::path::Path, e: &std::io::Error) -> StorageError {
        StorageError::Other {
            store: self.store.clone(),
            op,
            key: key.to_string(),
            detail: format!("{}: {e}", path.display()),
        }
    }

    /// Starts a streaming upload; the object appears only when [`Upload::finish`] succeeds.
    ///
    /// Where the store names its uploads (S3, GCS: [`with_multipart`](Self::with_multipart)),
    /// the upload's id is recorded next to the key first (see [`crate::upload`]), so that an
    /// upload whose process was killed is aborted by whoever removes the prefix later. Elsewhere
    /// nothing needs it: the local filesystem's staging files go with their directory, and Azure
    /// drops uncommitted blocks after 7 days.
    pub async fn upload(&self, key: &str) -> Result<Upload> {
        let path = self.path(key);
        let started = unix_now();
        let parts = (self.part_size, self.parts_in_flight);
        let Some(named) = &self.multipart else {
            let opts = || object_store::PutMultipartOptions { tags: self.tags.clone(), ..Default::default() };
            let inner = self.retrying("start upload of", key, |_| self.inner.put_multipart_opts(&path, opts())).await?;
            return Ok(Upload::new(inner, self.clone(), key, None, parts, started));
        };
        let opts = || object_store::PutMultipartOptions { tags: self.tags.clone(), ..Default::default() };
        let id = self.retrying("start upload of", key, |_| named.create_multipart_opts(&path, opts())).await?;
        let journal = journal_key(key);
        if let Err(e) = self.put(&journal, Bytes::from(id.clone())).await {
            let _ = named.abort_multipart(&path, &id).await;
            return Err(e);
        }
        let inner = Box::new(NamedUpload::new(named.clone(), path, id));
        Ok(Upload::new(inner, self.clone(), key, Some(journal), parts, started))
    }

    /// Aborts the upload recorded under `journal` (a key ending in [`JOURNAL_SUFFIX`]); an
    /// upload that already ended is fine.
    async fn abort_recorded(&self, journal: &str) -> Result<()> {
        let (Some(named), Some(key)) = (&self.multipart, journal.strip_suffix(JOURNAL_SUFFIX)) else { return Ok(()) };
        let id = match self.get(journal).await {
            Ok(id) => String::from_utf8_lossy(&id).into_owned(),
            Err(StorageError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        let path = self.path(key);
        match self.retrying("abort upload of", key, |_| named.abort_multipart(&path, &id)).await {
            Ok(()) | Err(StorageError::NotFound { .. }) => {
                tracing::debug!(key, "aborted an upload left open by a process that ended without it");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// `LocalFileSystem`'s staging files: a name ending in `#` and digits.
fn is_staging(name: &str) -> bool {
    name.split_once('#').is_some_and(|(_, s)| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_back_object_is_ours_only_when_it_is_the_pieces_in_order() {
        let pieces = [Bytes::from_static(b"head"), Bytes::from_static(b"frame1"), Bytes::from_static(b"f2")];
        assert!(is_concatenation(b"headframe1f2", &pieces));
        assert!(!is_concatenation(b"headframe1f2x", &pieces));
        assert!(!is_concatenation(b"headframe1", &pieces));
        assert!(!is_concatenation(b"frame1headf2", &pieces));
        assert!(is_concatenation(b"", &[]));
    }
}
