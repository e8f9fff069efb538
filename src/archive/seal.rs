//! Sealing a WAL file while it is read: the reader hands each frame to a sealing thread (round
//! robin) and to a digest thread, and a writer thread hands the sealed frames, in order, to where
//! the object goes (a staging file on the local filesystem, else memory until the key is known:
//! the key carries the SHA-256 of the whole file). Reading, compression, encryption, the digest
//! and the write all overlap; memory is a few frames (plus, for an object store, the sealed file).

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

/// Frames queued for each thread: none (a hand-over): the reader holds the next frame while
/// each thread works on one, so about `threads + 1` frames are in memory.
const IN_FLIGHT: usize = 0;

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
        // Frame `i` is sealed by thread `i % threads`, and the writer takes the frames in order
        // from each thread's channel in turn: a thread ahead of the others waits with one
        // finished frame, never more.
        let mut senders = Vec::with_capacity(threads);
        let mut outputs = Vec::with_capacity(threads);
        let mut sealers = Vec::with_capacity(threads);
        for _ in 0..threads {
            let (tx, rx) = mpsc::sync_channel::<(usize, Arc<Vec<u8>>)>(IN_FLIGHT);
            let (out_tx, out_rx) = mpsc::sync_channel::<Vec<u8>>(0);
            senders.push(tx);
            outputs.push(out_rx);
            let blob = &blob;
            sealers.push(scope.spawn(move || -> CliResult<()> {
                let mut sealer = blob.sealer()?;
                // Sealed into one buffer of the thread's, then sent at its size.
                let mut scratch = Vec::new();
                for (index, plain) in rx {
                    scratch.clear();
                    sealer.seal(index as u64, &plain, index + 1 == count, &mut scratch);
                    drop(plain);
                    // A closed channel means the writer failed; that failure is reported below.
                    if out_tx.send(scratch.as_slice().to_vec()).is_err() {
                        break;
                    }
                }
                Ok(())
            }));
        }
        let writer = scope.spawn(move || -> CliResult<usize> {
            for index in 0..count {
                // A closed channel means the reader or a sealer stopped; reported below.
                let Ok(sealed) = outputs[index % threads].recv() else { return Ok(index) };
                sink(sealed)?;
            }
            Ok(count)
        });
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
