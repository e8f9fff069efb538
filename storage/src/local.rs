//! The local filesystem with conditional updates. `object_store`'s `LocalFileSystem` has no
//! `PutMode::Update` (S3, GCS and Azure do: `If-Match`, `ifGenerationMatch`); a repository's
//! catalog is rewritten only on condition that it is still the version its writer read (a writer
//! paused past its lease must not overwrite what the next one wrote), so the local store gets one
//! of ours: under an exclusive lock on a sidecar file (`<key>#0`, `flock`, released when its
//! holder dies; names ending in `#<digits>` are never listed, like `LocalFileSystem`'s own
//! staging files), the current file's version is compared with the
//! one asked for, and the new content, written and synced under a temporary name, is renamed over
//! it. A version is `LocalFileSystem`'s e-tag (inode, time, size), so what `get` reports is what
//! the update compares. Everything else is `LocalFileSystem`'s.

use std::fmt;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// `LocalFileSystem` rooted at `root`, plus `PutMode::Update`.
pub struct LocalStore {
    inner: Arc<LocalFileSystem>,
    root: std::path::PathBuf,
}

impl LocalStore {
    pub fn new(inner: LocalFileSystem, root: std::path::PathBuf) -> Self {
        Self { inner: Arc::new(inner), root }
    }

    fn file(&self, location: &Path) -> std::path::PathBuf {
        location.parts().fold(self.root.clone(), |p, part| p.join(part.as_ref()))
    }
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.root.display())
    }
}

impl fmt::Display for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalStore({})", self.root.display())
    }
}

/// `LocalFileSystem`'s e-tag of a file: inode, modification time in microseconds, size.
fn version_of(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .unwrap_or_default()
        .as_micros();
    format!("\"{:x}-{:x}-{:x}\"", meta.ino(), mtime, meta.len())
}

/// The largest single write of a put.
const WRITE: usize = 64 << 10;

fn generic(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic { store: "LocalStore", source: Box::new(e) }
}

/// The exclusive lock of one file's updates: a sidecar locked with `flock`, removed by its holder
/// when done (so nothing stays beside the object). A waiter whose locked file was removed
/// meanwhile opens the new one and waits again.
struct Lock {
    path: std::path::PathBuf,
    _file: std::fs::File,
}

impl Lock {
    fn take(path: &std::path::Path) -> object_store::Result<Self> {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o640)
                .open(path)
                .map_err(generic)?;
            file.lock().map_err(generic)?;
            let held = file.metadata().map_err(generic)?.ino();
            if std::fs::metadata(path).is_ok_and(|m| m.ino() == held) {
                return Ok(Self { path: path.to_path_buf(), _file: file });
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // Removed while still locked: a waiter finds it gone and takes a new one.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Replaces `file` with `data` if its version is still `expected`; returns the new version.
fn update(file: &std::path::Path, data: &[u8], expected: Option<&str>) -> object_store::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let lock_path = dir.join(format!("{name}#0"));
    let _lock = Lock::take(&lock_path)?;
    let current = match std::fs::metadata(file) {
        Ok(m) => Some(version_of(&m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(generic(e)),
    };
    if current.as_deref() != expected {
        return Err(object_store::Error::Precondition {
            path: file.display().to_string(),
            source: format!("version {current:?}, expected {expected:?}").into(),
        });
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| generic(std::io::Error::other(e.to_string())))?;
    let tmp = dir.join(format!("{name}#{}", u64::from_le_bytes(suffix) | 1));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(&tmp)?;
        data.chunks(WRITE).try_for_each(|c| f.write_all(c))?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(dir)?.sync_all()?;
        std::fs::metadata(file)
    })();
    match written {
        Ok(meta) => Ok(version_of(&meta)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(generic(e))
        }
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let PutMode::Update(version) = &opts.mode else {
            // Written a piece at a time (the pieces share the payload's memory): one large write
            // into the page cache was many times slower (the kernel's copy into a large folio).
            let pieces: PutPayload = payload
                .iter()
                .flat_map(|b| (0..b.len()).step_by(WRITE).map(move |at| b.slice(at..(at + WRITE).min(b.len()))))
                .collect();
            return self.inner.put_opts(location, pieces, opts).await;
        };
        let (file, expected) = (self.file(location), version.e_tag.clone());
        let data: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        let e_tag =
            tokio::task::spawn_blocking(move || update(&file, &data, expected.as_deref())).await.map_err(generic)??;
        Ok(PutResult { e_tag: Some(e_tag), version: None, extensions: Default::default() })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
