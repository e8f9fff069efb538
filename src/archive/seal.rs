//! Sealing a WAL file while it is read: the reader hands each frame to a sealing thread (round
//! robin) and to a digest thread, and a writer thread hands the sealed frames, in order, to where
//! the object goes (a staging file on the local filesystem, else memory until the key is known:
//! the key carries the SHA-256 of the whole file). Reading, compression, encryption, the digest
//! and the write all overlap; memory is a few frames (plus, for an object store, the sealed file).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use pgstrata_repo_format::digest::CountingHasher;
use pgstrata_repo_format::{BlobSettings, DataKey, ParallelBlob, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};

/// What a sealed WAL file is besides its bytes (which went to the sink).
pub struct Sealed {
    pub sha256: Sha256Digest,
    /// The file's length and its first bytes (up to 8 KiB), for the header check.
    pub len: u64,
    pub head: Vec<u8>,
}

/// Where the sealed bytes go, in order: the blob's header, then each frame.
pub type Sink<'a> = dyn FnMut(Vec<u8>) -> CliResult<()> + Send + 'a;

/// Frames queued for each thread: one waiting while one is worked on, so the reader is never
/// more than a frame ahead of the slowest thread.
const IN_FLIGHT: usize = 1;

fn read_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileMissing, format!("unable to read WAL file {}: {e}", path.display()))
}

fn panicked() -> CliError {
    CliError::new(ErrorCode::Service, "a sealing thread panicked")
}

/// Reads and seals `path` on `threads` sealing threads plus a digest thread, handing the sealed
/// bytes to `sink` in order.
pub fn seal_file(
    path: &Path,
    settings: BlobSettings,
    key: Option<&DataKey>,
    threads: usize,
    sink: &mut Sink<'_>,
) -> CliResult<Sealed> {
    let mut file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let len = file.metadata().map_err(|e| read_error(path, e))?.len();
    let blob = ParallelBlob::new(settings, key)?;
    let count =
        usize::try_from(blob.frame_count(len)).map_err(|_| read_error(path, std::io::Error::other("too large")))?;
    let frame = blob.frame_size();
    let threads = threads.clamp(1, count);
    sink(blob.header_bytes().to_vec())?;
    std::thread::scope(|scope| {
        // Bounded: the reader waits for the slower of the digest and the sealers, and the
        // sealers for the writer, so a few frames are in memory, never the whole file.
        let (digest_tx, digest_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT);
        let digest = scope.spawn(move || {
            let mut h = CountingHasher::default();
            for f in digest_rx {
                h.update(&f);
            }
            h.finish()
        });
        let (sealed_tx, sealed_rx) = mpsc::sync_channel::<(usize, Vec<u8>)>(threads);
        let writer = scope.spawn(move || -> CliResult<usize> {
            // Frames come from the sealers in any order; each is written as soon as those
            // before it are. The reader's round robin keeps the waiting ones to a few.
            let mut waiting = BTreeMap::new();
            let mut next = 0;
            for (index, sealed) in sealed_rx {
                waiting.insert(index, sealed);
                while let Some(sealed) = waiting.remove(&next) {
                    sink(sealed)?;
                    next += 1;
                }
            }
            Ok(next)
        });
        let mut senders = Vec::with_capacity(threads);
        let mut sealers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<(usize, Arc<Vec<u8>>)>(IN_FLIGHT);
            senders.push(tx);
            let (blob, sealed_tx) = (&blob, sealed_tx.clone());
            sealers.push(scope.spawn(move || -> CliResult<()> {
                let mut sealer = blob.sealer()?;
                for (index, plain) in rx {
                    let mut sealed = Vec::with_capacity(plain.len() / 2 + 64);
                    sealer.seal(index as u64, &plain, index + 1 == count, &mut sealed);
                    drop(plain);
                    // A closed channel means the writer failed; that failure is reported below.
                    if sealed_tx.send((index, sealed)).is_err() {
                        break;
                    }
                }
                Ok(())
            }));
        }
        drop(sealed_tx);
        let mut head = Vec::new();
        let mut failure = None;
        let mut remaining = len;
        for index in 0..count {
            let want = usize::try_from(remaining.min(frame as u64)).unwrap_or(frame);
            let mut buf = vec![0u8; want];
            if let Err(e) = file.read_exact(&mut buf) {
                failure = Some(read_error(path, e));
                break;
            }
            remaining -= want as u64;
            if index == 0 {
                head = buf[..want.min(8192)].to_vec();
            }
            let buf = Arc::new(buf);
            // A closed channel means its thread failed; that failure is reported below.
            if digest_tx.send(Arc::clone(&buf)).is_err() || senders[index % threads].send((index, buf)).is_err() {
                break;
            }
        }
        drop(digest_tx);
        drop(senders);
        for s in sealers {
            s.join().map_err(|_| panicked())??;
        }
        let written = writer.join().map_err(|_| panicked())??;
        let (hashed, sha256) = digest.join().map_err(|_| panicked())?;
        if let Some(e) = failure {
            return Err(e);
        }
        if hashed != len || written != count {
            return Err(read_error(path, std::io::Error::other("the file changed while it was read")));
        }
        Ok(Sealed { sha256, len, head })
    })
}
