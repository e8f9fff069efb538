//! Reading a stanza's WAL archive: finding and fetching files, timelines and their histories,
//! and the newest segment of a timeline. Shared by `archive-get`, `restore` (choosing a backup
//! for a target), `check` and `info`.

use pgstrata_repo_format::layout::parse_wal_object;
use pgstrata_repo_format::pg::{Lsn, TimelineHistory, TimelineId, WalFileKind, WalFileName};
use pgstrata_repo_format::{Sha256Digest, decode_blob_parallel};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::pgbackrest::archive as foreign;
use crate::repo::Repo;

/// The copies of `name` in an archive, as (key, digest of the plaintext).
pub async fn copies(repo: &Repo, archive: &str, name: &WalFileName) -> CliResult<Vec<(String, Sha256Digest)>> {
    Ok(listed(repo, archive, name).await?.into_iter().map(|(key, sha, _)| (key, sha)).collect())
}

/// [`copies`] with each object's stored size.
async fn listed(repo: &Repo, archive: &str, name: &WalFileName) -> CliResult<Vec<(String, Sha256Digest, u64)>> {
    let prefix = repo.layout.wal_prefix(archive, name);
    // One flat listing: a history file sits at the top of the archive, above every segment.
    let found = repo.store.list_files(&prefix).await?;
    Ok(found
        .into_iter()
        .filter_map(|o| {
            let (n, sha) = parse_wal_object(&o.key)?;
            (n == *name).then_some((o.key, sha, o.size))
        })
        .collect())
}

/// The key of `name` in the archive and the digest it carries; several copies must agree.
async fn the_copy(repo: &Repo, archive: &str, name: &WalFileName) -> CliResult<Option<(String, Sha256Digest)>> {
    let found = listed(repo, archive, name).await?;
    let Some((_, sha, _)) = found.first() else { return Ok(None) };
    if found.iter().any(|(_, s, _)| s != sha) {
        return Err(CliError::new(
            ErrorCode::ArchiveDuplicate,
            format!("WAL file {name} exists in the {} archive with different contents", repo.name()),
        ));
    }
    // Stored objects are read whole from an object store: more than the largest WAL file and
    // its frames' overhead is not one.
    match found.into_iter().next() {
        Some((key, _, size)) if size > MAX_WAL_FILE + MAX_WAL_FILE / 64 => {
            Err(CliError::new(ErrorCode::Format, format!("{key} is {size} bytes: larger than any WAL file stored")))
        }
        other => Ok(other.map(|(key, sha, _)| (key, sha))),
    }
}

/// The largest file of a WAL archive: PostgreSQL's largest segment size (1 GiB).
const MAX_WAL_FILE: u64 = 1 << 30;

/// Fetches `name`, decrypted, decompressed and checked against the digest its key carries, its
/// frames opened on up to `threads` threads. `None` when the archive does not have it.
pub async fn fetch(repo: &Repo, archive: &str, name: &WalFileName, threads: usize) -> CliResult<Option<Vec<u8>>> {
    let Some((key, sha)) = the_copy(repo, archive, name).await? else { return Ok(None) };
    let stored = repo.store.get(&key).await?;
    // Off the runtime's threads, the frames opened in parallel (a segment is 16 of them).
    let data_key = repo.key.clone();
    tokio::task::spawn_blocking(move || {
        let (plain, _) = decode_blob_parallel(&stored, &key, data_key.as_ref(), threads, MAX_WAL_FILE)?;
        if Sha256Digest::of(&plain) != sha {
            return Err(CliError::new(ErrorCode::Format, format!("{key}: content does not match its checksum")));
        }
        Ok(Some(plain))
    })
    .await
    .map_err(|e| CliError::new(ErrorCode::Service, format!("the decoding task failed: {e}")))?
}

/// What a fetched WAL file's first bytes (up to 8 KiB: the first page header) and its length
/// must pass before it is put in place (that it is the segment asked for, of this cluster).
pub type HeadCheck = std::sync::Arc<dyn Fn(&[u8], u64) -> CliResult<()> + Send + Sync>;

/// Fetches `name` straight into the file `dest`: decoded frame by frame through small reused
/// buffers, written under a temporary name beside `dest`, each byte hashed once against the
/// SHA-256 its key carries, and renamed into place only when the digest (and `check`) passed —
/// a damaged object leaves nothing at `dest`. Not synced, as pgBackRest leaves what it writes
/// for `restore_command`: PostgreSQL asks again for a segment it lost in a crash. `false` when
/// the archive does not have it. `sync`: the file's data is synced before the rename (a
/// queue entry another process takes as whole after a crash).
pub async fn fetch_to(
    repo: &Repo,
    archive: &str,
    name: &WalFileName,
    dest: &std::path::Path,
    check: Option<HeadCheck>,
    sync: bool,
) -> CliResult<bool> {
    let Some((key, sha)) = the_copy(repo, archive, name).await? else { return Ok(false) };
    let source = match repo.store.local_file(&key) {
        Some(path) => Source::File(path),
        None => Source::Bytes(repo.store.get(&key).await?),
    };
    let (data_key, dest) = (repo.key.clone(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || decode_to_file(source, &key, data_key.as_ref(), sha, &dest, check, sync))
        .await
        .map_err(|e| CliError::new(ErrorCode::Service, format!("the decoding task failed: {e}")))??;
    Ok(true)
}

/// Where a stored object is read from.
enum Source {
    /// A posix repository's file, read on the decoding thread.
    File(std::path::PathBuf),
    Bytes(bytes::Bytes),
}

/// Writes of at most this many bytes: one large write into the page cache was many times
/// slower on the machines measured (the kernel's copy into a large folio dominated the profile).
pub const WRITE: usize = 64 << 10;

/// The temporary name a file is written under beside `dest` before its rename.
pub fn temporary_beside(dest: &std::path::Path) -> std::path::PathBuf {
    let file = dest.file_name().and_then(|n| n.to_str()).unwrap_or("wal");
    dest.with_file_name(format!(".{file}.{}.tmp", std::process::id()))
}

fn decode_to_file(
    source: Source,
    key: &str,
    data_key: Option<&pgstrata_repo_format::DataKey>,
    sha: Sha256Digest,
    dest: &std::path::Path,
    check: Option<HeadCheck>,
    sync: bool,
) -> CliResult<()> {
    use std::io::Write;
    let tmp = temporary_beside(dest);
    let fail =
        |e: std::io::Error| CliError::new(ErrorCode::FileRead, format!("unable to write {}: {e}", tmp.display()));
    // Never through a link planted at the temporary name (removed first: unlink removes the
    // link itself).
    let _ = std::fs::remove_file(&tmp);
    let mut out = crate::anchor::create_nofollow(&tmp, 0o600, false).map_err(fail)?;
    // Two stages on two threads, as fast as the slower one: this thread hashes and writes
    // what the other reads and decodes, frame by frame, through `FRAMES` buffers passed back
    // and forth (memory: that many frames, whatever the file's size).
    const FRAMES: usize = 3;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(FRAMES);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(FRAMES);
    for _ in 0..FRAMES {
        let _ = free_tx.send(Vec::new());
    }
    let written = std::thread::scope(|scope| {
        let decoding = scope.spawn(move || decode_frames(source, key, data_key, &free_rx, &full_tx));
        let mut hash = pgstrata_repo_format::digest::Sha256Stream::default();
        let (mut head, mut total) = (Vec::new(), 0u64);
        let mut written = Ok(());
        for plain in full_rx.iter() {
            let step = (|| {
                total = total.checked_add(plain.len() as u64).filter(|t| *t <= MAX_WAL_FILE).ok_or_else(|| {
                    CliError::new(ErrorCode::Format, format!("{key}: decodes to more than any WAL file holds"))
                })?;
                hash.update(&plain);
                if head.len() < 8192 {
                    head.extend_from_slice(&plain[..plain.len().min(8192 - head.len())]);
                }
                plain.chunks(WRITE).try_for_each(|c| out.write_all(c)).map_err(fail)
            })();
            if let Err(e) = step {
                written = Err(e);
                break;
            }
            // The decoder may have finished: a buffer it no longer takes is dropped.
            let _ = free_tx.send(plain);
        }
        // Stops the decoder when this side failed (its next send fails).
        drop(full_rx);
        drop(free_tx);
        let decoded = decoding
            .join()
            .map_err(|_| CliError::new(ErrorCode::Service, format!("{key}: the decoding thread panicked")))?;
        written?;
        decoded?;
        if hash.finish() != sha {
            return Err(CliError::new(ErrorCode::Format, format!("{key}: content does not match its checksum")));
        }
        if let Some(check) = check {
            check(&head, total)?;
        }
        if sync {
            out.sync_data().map_err(fail)?;
        }
        Ok(())
    });
    drop(out);
    match written.and_then(|()| std::fs::rename(&tmp, dest).map_err(fail)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Reads and decodes a blob, sending each frame's plaintext in a buffer taken from `free`:
/// the first stage of [`decode_to_file`]. Ends quietly when the other stage stopped taking.
fn decode_frames(
    source: Source,
    key: &str,
    data_key: Option<&pgstrata_repo_format::DataKey>,
    free: &std::sync::mpsc::Receiver<Vec<u8>>,
    full: &std::sync::mpsc::SyncSender<Vec<u8>>,
) -> CliResult<()> {
    use std::io::Read;
    let mut decoder = pgstrata_repo_format::BlobDecoder::new(key, data_key).without_chunk_digests();
    // A buffer taken when the decoder wanted more input, kept for its next frame.
    let mut spare: Option<Vec<u8>> = None;
    // `false`: the other stage is gone (it reports why).
    let mut take = |decoder: &mut pgstrata_repo_format::BlobDecoder| -> CliResult<bool> {
        loop {
            let mut plain = match spare.take() {
                Some(p) => p,
                None => match free.recv() {
                    Ok(p) => p,
                    Err(_) => return Ok(false),
                },
            };
            if !decoder.poll_into(&mut plain)? {
                spare = Some(plain);
                return Ok(true);
            }
            if full.send(plain).is_err() {
                return Ok(false);
            }
        }
    };
    match source {
        Source::Bytes(bytes) => {
            for piece in bytes.chunks(4 * WRITE) {
                decoder.feed(piece);
                if !take(&mut decoder)? {
                    return Ok(());
                }
            }
        }
        Source::File(path) => {
            let read_fail = |e: std::io::Error| {
                CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", path.display()))
            };
            let mut file = std::fs::File::open(&path).map_err(read_fail)?;
            let mut buf = vec![0u8; 4 * WRITE];
            loop {
                let n = file.read(&mut buf).map_err(read_fail)?;
                if n == 0 {
                    break;
                }
                decoder.feed(&buf[..n]);
                if !take(&mut decoder)? {
                    return Ok(());
                }
            }
        }
    }
    decoder.finish()?;
    Ok(())
}

/// The history of `timeline` from the archive; timeline 1 has none and needs none.
pub async fn history(repo: &Repo, archive: &str, timeline: TimelineId) -> CliResult<TimelineHistory> {
    if timeline.0 <= 1 {
        return Ok(TimelineHistory::first());
    }
    let name = WalFileName::history(timeline);
    let text = match fetch(repo, archive, &name, 1).await? {
        Some(text) => Some(text),
        // A stanza taken over from pgBackRest: its archive holds the histories made before.
        None => match foreign::fetch_in(repo.pgbackrest(), repo.layout.stanza(), archive, &name).await? {
            foreign::Found::Segment(text) => Some(text),
            foreign::Found::NoArchive | foreign::Found::Missing => None,
        },
    };
    let text = text.ok_or_else(|| {
        CliError::new(
            ErrorCode::FileMissing,
            format!("timeline {timeline} has no history file ({name}) in the {} archive", repo.name()),
        )
        .hint("history files are archived at promotion; was archive_command working then?")
    })?;
    // A history the archive holds that does not parse is damaged repository content (29), not
    // a bad option.
    TimelineHistory::parse(timeline, &text, &name.to_string())
        .map_err(|e| CliError::new(ErrorCode::Format, e.to_string()))
}

/// The timeline PostgreSQL's `recovery_target_timeline = 'latest'` would pick from this archive
/// (pgstrata's and pgBackRest's of the same id): the highest one with a history file (timeline
/// 1 needs none).
pub async fn latest_timeline(repo: &Repo, archive: &str) -> CliResult<TimelineId> {
    let dir = repo.layout.archive_dir(archive);
    let foreign = foreign::latest_timeline(repo.pgbackrest(), repo.layout.stanza(), archive).await?;
    let mut latest = foreign.unwrap_or(TimelineId(1));
    for o in repo.store.list_files(&dir).await? {
        if let Some((n, _)) = parse_wal_object(&o.key)
            && n.kind == WalFileKind::History
        {
            latest = latest.max(n.timeline);
        }
    }
    Ok(latest)
}

/// The newest whole segment of `timeline` in the archive (pgstrata's or pgBackRest's of the
/// same id), with the Unix time it was stored.
pub async fn newest_segment(repo: &Repo, archive: &str, timeline: TimelineId) -> CliResult<Option<(WalFileName, i64)>> {
    let own = |key: &str| parse_wal_object(key).map(|(n, _)| n).filter(|n| n.kind == WalFileKind::Segment);
    let ours = newest_in(&repo.store, &repo.layout.archive_dir(archive), timeline, own).await?;
    let theirs_root = format!("archive/{}/{archive}/", repo.layout.stanza());
    let theirs = newest_in(&repo.store, &theirs_root, timeline, foreign::segment_of).await?;
    Ok(ours.into_iter().chain(theirs).max_by_key(|(n, at)| (n.log, n.seg, *at)))
}

/// The newest segment of `timeline` under an archive's `root` (one directory per timeline and
/// log), each key named by `name_of`, with the Unix time it was stored.
async fn newest_in(
    store: &pgstrata_storage::RepoStore,
    root: &str,
    timeline: TimelineId,
    name_of: impl Fn(&str) -> Option<WalFileName>,
) -> CliResult<Option<(WalFileName, i64)>> {
    let tli = format!("{:08X}", timeline.0);
    let logs: Vec<String> = store.list_dirs(root).await?.into_iter().filter(|d| d.starts_with(&tli)).collect();
    // Newest log directory first; an empty one (possible on a local repository) falls through.
    for log in logs.iter().rev() {
        let newest = store
            .list_files(&format!("{root}{log}/"))
            .await?
            .into_iter()
            .filter_map(|o| Some((name_of(&o.key)?, o.last_modified)))
            .max_by_key(|(n, _)| (n.log, n.seg));
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

/// The WAL segment size a backup's start LSN and first segment name agree on.
pub fn segment_size_of(timeline: TimelineId, lsn_start: Lsn, wal_start: &str) -> u64 {
    (20..=30)
        .map(|bits| 1u64 << bits)
        .find(|size| WalFileName::for_lsn(timeline, lsn_start, *size).is_ok_and(|n| n.to_string() == wal_start))
        .unwrap_or(16 << 20)
}
