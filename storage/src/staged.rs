//! A new object on the local filesystem written as its bytes come, before its key is known: a
//! WAL file's key carries the digest of its content, which is known only once the last byte is
//! read, and holding the sealed file until then would cost its whole size in memory.
//!
//! The bytes go to a staging file in the object's directory (`<name>#<n>`: never listed, and
//! removed by [`RepoStore::discard_unfinished`](crate::RepoStore::discard_unfinished) if a
//! killed process leaves it); [`Staged::commit_new`] syncs it and links it under its key,
//! create-only (`link(2)` fails when the key exists), then syncs the directory. Dropped without
//! a commit, the staging file is removed.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Result, StorageError};

/// The largest single write (one large write into the page cache is many times slower).
const WRITE: usize = 64 << 10;

/// See the module documentation.
#[derive(Debug)]
pub struct Staged {
    file: Option<std::fs::File>,
    path: PathBuf,
    dir: PathBuf,
    store: String,
    dir_key: String,
}

impl Staged {
    /// Creates the staging file `<name>#<random>` in `dir` (made if missing).
    pub(crate) fn create(dir: PathBuf, name: &str, store: String, dir_key: String) -> Result<Self> {
        use std::os::unix::fs::OpenOptionsExt;
        let fail = |op: &'static str, e: std::io::Error, at: &std::path::Path| StorageError::Other {
            store: store.clone(),
            op,
            key: dir_key.clone(),
            detail: format!("{}: {e}", at.display()),
        };
        std::fs::create_dir_all(&dir).map_err(|e| fail("create directory", e, &dir))?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix)
            .map_err(|e| fail("name staging file", std::io::Error::other(e.to_string()), &dir))?;
        let path = dir.join(format!("{name}#{}", u64::from_le_bytes(suffix) | 1));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&path)
            .map_err(|e| fail("create staging file", e, &path))?;
        Ok(Self { file: Some(file), path, dir, store, dir_key })
    }

    fn error(&self, op: &'static str, e: &std::io::Error) -> StorageError {
        StorageError::Other {
            store: self.store.clone(),
            op,
            key: self.dir_key.clone(),
            detail: format!("{}: {e}", self.path.display()),
        }
    }

    /// Appends `data`.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let written = data.chunks(WRITE).try_for_each(|c| file.write_all(c));
        written.map_err(|e| self.error("write staging file", &e))
    }

    /// Makes the staged bytes the object `name` of the staging directory, only if no object has
    /// that name yet ([`StorageError::AlreadyExists`] otherwise, and nothing changes). Durable
    /// when it returns: the file and the directory are synced. Blocking.
    pub fn commit_new(mut self, name: &str) -> Result<()> {
        if name.is_empty() || name.contains(['/', '#']) || name == ".." {
            return Err(self.error("commit", &std::io::Error::other(format!("invalid object name {name:?}"))));
        }
        let file = self.file.take();
        if let Some(file) = file {
            file.sync_all().map_err(|e| self.error("sync staging file", &e))?;
        }
        let target = self.dir.join(name);
        match std::fs::hard_link(&self.path, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(StorageError::AlreadyExists {
                    store: self.store.clone(),
                    key: format!("{}{name}", self.dir_key),
                });
            }
            Err(e) => return Err(self.error("link staged object", &e)),
        }
        let _ = std::fs::remove_file(&self.path);
        let synced = std::fs::File::open(&self.dir).and_then(|d| d.sync_all());
        synced.map_err(|e| self.error("sync directory", &e))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // Committed or not, the staging name goes (after a commit, the object has its own link).
        let _ = std::fs::remove_file(&self.path);
    }
}
