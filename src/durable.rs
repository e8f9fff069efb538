//! Crash-safe local files: a file becomes visible under its name only once its bytes are on
//! disk, and the rename that makes it visible is itself made durable by syncing the directory.
//! Every sync error is an error: a file whose fsync failed is not known to be on disk.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult, ErrorCode};

fn io(path: &Path, what: &str, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to {what} {}: {e}", path.display()))
}

/// The temporary name a file is written under before it is renamed into place: a hidden
/// sibling on the same filesystem (a delta restore removes leftovers: the backup lacks them).
fn temp_name(path: &Path) -> PathBuf {
    path.with_file_name(temp_file_name(path.file_name().unwrap_or(std::ffi::OsStr::new("file"))))
}

/// [`temp_name`] of a bare file name.
pub fn temp_file_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(".pgstrata.tmp");
    tmp
}

/// Syncs a directory, so that renames and creations inside it survive a crash.
pub fn sync_dir(dir: &Path) -> CliResult<()> {
    let d = File::open(dir).map_err(|e| io(dir, "open directory", e))?;
    d.sync_all().map_err(|e| io(dir, "sync directory", e))
}

/// Syncs every filesystem that holds one of `paths` (`syncfs`, once per filesystem): all data
/// and metadata written there, files and directories, is on disk when this returns. A restore
/// writes tens of thousands of files; one sync per filesystem at the end costs a fraction of
/// one fsync per file, and the restore is not complete (its marker stays) until it succeeded.
/// Since Linux 5.8 `syncfs` reports write-back errors of the filesystem.
pub fn sync_filesystems<'a>(paths: impl IntoIterator<Item = &'a Path>) -> CliResult<()> {
    use std::os::unix::fs::MetadataExt;
    let mut done = Vec::new();
    for path in paths {
        let d = File::open(path).map_err(|e| io(path, "open", e))?;
        let dev = d.metadata().map_err(|e| io(path, "read", e))?.dev();
        if done.contains(&dev) {
            continue;
        }
        rustix::fs::syncfs(&d).map_err(|e| io(path, "sync the filesystem of", e.into()))?;
        done.push(dev);
    }
    Ok(())
}

/// Starts writing `len` bytes of `file` from `from` back to disk, without waiting (Linux's
/// `POSIX_FADV_DONTNEED` starts write-back of dirty pages, then drops the clean ones): what a
/// restore wrote goes to disk while it decodes the rest, instead of all at the final
/// [`sync_filesystems`]. Only a hint: whatever it does not do, the final sync does.
pub fn start_writeback(file: &File, from: u64, len: u64) {
    let _ = rustix::fs::fadvise(file, from, std::num::NonZeroU64::new(len), rustix::fs::Advice::DontNeed);
}

/// Drops the pages of `file` before `upto` from the page cache once they are on disk (the same
/// hint: pages still dirty or under write-back stay, and go to disk as they would). A restore
/// writes each large file front to back, so what lies well behind the part being written was
/// handed to write-back parts ago: dropping it leaves less for the kernel to reclaim (in a pod,
/// page cache counts against its memory limit) and lets the next writes reuse
/// pages that were just freed instead of taking fresh ones from the kernel, which in a virtual
/// machine whose free memory is reported back to the host (virtio-balloon free page reporting)
/// costs a fault on the host per page. Measured at scale 100 (1.5 GB) on such a VM with its
/// free memory fragmented: restores took 2.0–5.6 s without this, 1.2–1.5 s with it.
pub fn drop_behind(file: &File, upto: u64) {
    if upto > 0 {
        let _ = rustix::fs::fadvise(file, 0, std::num::NonZeroU64::new(upto), rustix::fs::Advice::DontNeed);
    }
}

/// A file written front to back whose pages go to disk as it is written and leave the page
/// cache a while after ([`start_writeback`] every [`STRIDE`](Self::STRIDE) bytes, then
/// [`drop_behind`] what lies [`LAG`](Self::LAG) bytes behind).
#[derive(Debug)]
pub struct Streamed<'a> {
    file: &'a mut File,
    at: u64,
    marked: u64,
}

impl<'a> Streamed<'a> {
    const STRIDE: u64 = 8 << 20;
    const LAG: u64 = 32 << 20;

    pub fn new(file: &'a mut File) -> Self {
        Self { file, at: 0, marked: 0 }
    }
}

impl std::io::Write for Streamed<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.at += n as u64;
        if self.at - self.marked >= Self::STRIDE {
            start_writeback(self.file, self.marked, self.at - self.marked);
            drop_behind(self.file, self.marked.saturating_sub(Self::LAG));
            self.marked = self.at;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Renames `from` to `to` and syncs the directory holding `to`.
fn rename(from: &Path, to: &Path) -> CliResult<()> {
    std::fs::rename(from, to).map_err(|e| io(to, "rename into", e))?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Writes a whole small file crash-safely: temporary name, write, fsync, rename, directory sync.
/// The mode of an existing file is kept; a new file gets `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> CliResult<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = temp_name(path);
    let mode = std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(mode);
    let result = (|| {
        // Created new and never through a link: a leftover (or something planted) at the
        // temporary name is removed first (unlink removes a link itself, not its target).
        let _ = std::fs::remove_file(&tmp);
        let mut f = create_new(&tmp, mode)?;
        f.write_all(bytes).map_err(|e| io(&tmp, "write", e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| io(&tmp, "set permissions of", e))?;
        f.sync_all().map_err(|e| io(&tmp, "sync", e))?;
        drop(f);
        rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a new file, failing when anything (a link included) is at the name.
fn create_new(path: &Path, mode: u32) -> CliResult<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o777)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
        .map_err(|e| io(path, "create", e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn write_replaces_atomically_and_keeps_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("pgstrata-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("postgresql.auto.conf");
        write(&p, b"one\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one\n");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"two\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two\n");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o640);
        assert!(!temp_name(&p).exists());
        // A directory that does not exist is an error naming it, not a panic.
        let e = write(&dir.join("missing/x"), b"", 0o600).unwrap_err();
        assert!(e.message.contains("missing"), "{}", e.message);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
