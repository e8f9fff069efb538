//! Sealing a WAL file while it is read: the reader hands each frame to a sealing thread (round
//! robin) and to a digest thread, so reading, compression, encryption and the SHA-256 the
//! object's key carries all overlap. Memory is a few frames plus the file's sealed form.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use pgstrata_repo_format::digest::CountingHasher;
use pgstrata_repo_format::{BlobSettings, DataKey, ParallelBlob, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};

/// A sealed WAL file.
pub struct Sealed {
    /// The blob: its header, then each frame as sealed.
    pub blob: Vec<bytes::Bytes>,
    pub sha256: Sha256Digest,
    /// The file's length and its first bytes (up to 8 KiB), for the header check.
    pub len: u64,
    pub head: Vec<u8>,
}

/// Frames queued for each thread.
const IN_FLIGHT: usize = 2;

fn read_error(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileMissing, format!("unable to read WAL file {}: {e}", path.display()))
}

fn panicked() -> CliError {
    CliError::new(ErrorCode::Service, "a sealing thread panicked")
}

/// Reads and seals `path` on `threads` sealing threads plus a digest thread.
pub fn seal_file(path: &Path, settings: BlobSettings, key: Option<&DataKey>, threads: usize) -> CliResult<Sealed> {
    let mut file = std::fs::File::open(path).map_err(|e| read_error(path, e))?;
    let len = file.metadata().map_err(|e| read_error(path, e))?.len();
    let blob = ParallelBlob::new(settings, key)?;
    let count =
        usize::try_from(blob.frame_count(len)).map_err(|_| read_error(path, std::io::Error::other("too large")))?;
    let frame = blob.frame_size();
    let threads = threads.clamp(1, count);
    std::thread::scope(|scope| {
        // Bounded: the reader waits for the slower of the digest and the sealers, so at most a
        // few frames are in memory besides the sealed output (not the whole file).
        let (digest_tx, digest_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(IN_FLIGHT);
        let digest = scope.spawn(move || {
            let mut h = CountingHasher::default();
            for f in digest_rx {
                h.update(&f);
            }
            h.finish()
        });
        let mut senders = Vec::with_capacity(threads);
        let mut sealers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<(usize, Arc<Vec<u8>>)>(IN_FLIGHT);
            senders.push(tx);
            let blob = &blob;
            sealers.push(scope.spawn(move || -> CliResult<Vec<(usize, Vec<u8>)>> {
                let mut sealer = blob.sealer()?;
                let mut out = Vec::new();
                for (index, plain) in rx {
                    let mut sealed = Vec::with_capacity(plain.len() / 2 + 64);
                    sealer.seal(index as u64, &plain, index + 1 == count, &mut sealed);
                    out.push((index, sealed));
                }
                Ok(out)
            }));
        }
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
            let _ = digest_tx.send(Arc::clone(&buf));
            let _ = senders[index % threads].send((index, buf));
        }
        drop(digest_tx);
        drop(senders);
        let mut frames: Vec<(usize, Vec<u8>)> = Vec::with_capacity(count);
        for s in sealers {
            frames.extend(s.join().map_err(|_| panicked())??);
        }
        let (hashed, sha256) = digest.join().map_err(|_| panicked())?;
        if let Some(e) = failure {
            return Err(e);
        }
        if hashed != len || frames.len() != count {
            return Err(read_error(path, std::io::Error::other("the file changed while it was read")));
        }
        frames.sort_unstable_by_key(|(i, _)| *i);
        let pieces = std::iter::once(bytes::Bytes::from(blob.header_bytes().to_vec()))
            .chain(frames.into_iter().map(|(_, f)| bytes::Bytes::from(f)))
            .collect();
        Ok(Sealed { blob: pieces, sha256, len, head })
    })
}
