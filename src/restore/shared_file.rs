//! A restored file that the parts of one large file are written into from several threads.
//!
//! The kernel takes a file's inode lock for each buffered write, so two threads writing one
//! file take turns anyway; but a thread that finds it held spins while the holder copies into
//! the page cache (`rwsem_spin_on_owner`: 17 % of the CPU profile of a slow restore, where the
//! copies were slow), burning the CPU the other parts' decoding needs. Here the turns are taken
//! in user space: a waiting thread sleeps, and a turn is a whole frame's writes.

use std::os::unix::fs::FileExt;
use std::sync::Mutex;

/// See the module documentation.
#[derive(Debug)]
pub struct SharedFile {
    file: std::fs::File,
    writing: Mutex<()>,
}

/// The largest single write: one huge write holds the inode lock and page-cache state for long.
const WRITE_CHUNK: usize = 256 << 10;

impl SharedFile {
    pub fn new(file: std::fs::File) -> Self {
        Self { file, writing: Mutex::new(()) }
    }

    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    pub fn into_file(self) -> std::fs::File {
        self.file
    }

    /// Writes `stretches` (each a slice and the offset it goes to), one writer of the file at a
    /// time.
    pub fn write_all_at<'a>(&self, stretches: impl IntoIterator<Item = (&'a [u8], u64)>) -> std::io::Result<u64> {
        // A poisoned lock only means another writer panicked; the file is still fine to write.
        let _turn = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut written = 0u64;
        for (data, offset) in stretches {
            for (i, piece) in data.chunks(WRITE_CHUNK).enumerate() {
                self.file.write_all_at(piece, offset + (i * WRITE_CHUNK) as u64)?;
                written += piece.len() as u64;
            }
        }
        Ok(written)
    }
}
