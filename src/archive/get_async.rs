//! Asynchronous `archive-get` with prefetch (`archive-async=y`, `archive-get-queue-max`).
//!
//! The foreground (PostgreSQL's `restore_command`) serves a segment from the queue in
//! `<spool>/archive/<stanza>/in` with a rename when it is there; otherwise it fetches it itself.
//! Either way it records the next segment in `in/want` and makes sure a worker
//! (`archive-get:async`, one per stanza) is prefetching from there: the following segments of the
//! same timeline, `process-max` at a time, verified, decrypted and decompressed, as many as
//! `archive-get-queue-max` allows.
//!
//! Queue entries are served only for the exact file name asked for, and only when their header
//! names the system identifier of the cluster being recovered and the segment's own position;
//! entries behind the requested segment or on another timeline are deleted by the worker.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pgstrata_repo_format::pg::{ControlFile, WalFileName, WalPageHeader};

use super::ArchiveRequest;
use super::spool::{Spool, hold_worker_lock, spawn_worker, worker_lock_path, worker_running};
use super::{fetch_any, open_readable, write_file};
use crate::error::{CliError, CliResult, ErrorCode};
use crate::wal::HeadCheck;

const WANT: &str = "want";

/// The cluster being recovered: `pg1-path`, else the working directory PostgreSQL gives its
/// `restore_command` (the data directory).
pub(super) fn cluster_control(request: &ArchiveRequest) -> Option<ControlFile> {
    let dir = request.pg_path.clone().unwrap_or_else(|| PathBuf::from("."));
    crate::postgres::read_control(&dir).ok()
}

/// Whether queued WAL (its first bytes and length) is the segment asked for, of this cluster.
fn entry_is_valid(head: &[u8], len: u64, name: &WalFileName, control: &ControlFile) -> bool {
    let size = u64::from(control.wal_segment_size);
    let Ok(header) = WalPageHeader::parse(head, &name.to_string()) else { return false };
    header.system_identifier == control.system_identifier
        && len == size
        && name.start_lsn(size).is_ok_and(|start| start == header.page_addr)
}

/// The first 8 KiB and the length of a queue entry, if it is there.
fn peek(entry: &Path) -> Option<(Vec<u8>, u64)> {
    use std::io::Read;
    let f = std::fs::File::open(entry).ok()?;
    let len = f.metadata().ok()?.len();
    let mut head = Vec::with_capacity(8192);
    f.take(8192).read_to_end(&mut head).ok()?;
    Some((head, len))
}

/// Moves a queue entry into place: a rename on the same filesystem, else a copy. `false` when
/// the entry went away meanwhile (the worker pruned it).
fn move_into(entry: &Path, dest: &Path) -> CliResult<bool> {
    match std::fs::rename(entry, dest) {
        Ok(()) => return Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(_) => {}
    }
    let data = match std::fs::read(entry) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", entry.display()))),
    };
    write_file(dest, &data, false)?;
    let _ = std::fs::remove_file(entry);
    Ok(true)
}

/// Points the worker at `next` and starts one unless it runs. The segment asked for is already
/// in place, so a failure here only costs prefetching: a warning, not an error that would abort
/// recovery.
fn prefetch_from(request: &ArchiveRequest, spool: &Spool, next: &WalFileName) {
    let started = spool.write(WANT, next.to_string().as_bytes()).and_then(|()| {
        if worker_running(&worker_lock_path(&request.lock_path, &request.stanza, "archive-get"))? {
            Ok(())
        } else {
            // Prefetch is an optimisation: a worker that dies only costs speed (fetches go
            // direct), and its stderr stays in the spool for whoever looks.
            spawn_worker(&request.worker_args, "archive-get:async", &[], &spool.path(".archive-get-worker.stderr"))
                .map(drop)
        }
    });
    if let Err(e) = started {
        tracing::warn!("archive-get prefetch not started: {e}");
    }
}

pub fn foreground(request: &ArchiveRequest, name: &WalFileName, dest: &Path) -> CliResult<()> {
    let Some(control) = cluster_control(request) else {
        tracing::debug!("no pg_control to check queued WAL against: fetching {name} directly");
        return super::get_sync(request, name, dest);
    };
    let spool = match Spool::open(&request.spool_path, &request.stanza, "in") {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("archive-get queue unusable, fetching {name} directly: {e}");
            return super::get_sync(request, name, dest);
        }
    };
    let entry = spool.path(&name.to_string());
    let next = name.next(u64::from(control.wal_segment_size))?;
    if let Some((head, len)) = peek(&entry) {
        if !entry_is_valid(&head, len, name, &control) {
            tracing::warn!("queued {name} is not this cluster's segment: removed, fetching it again");
            spool.remove(&name.to_string());
        } else if move_into(&entry, dest)? {
            prefetch_from(request, &spool, &next);
            tracing::info!("found {name} in the archive-get queue");
            return Ok(());
        }
    }
    super::get_sync(request, name, dest)?;
    prefetch_from(request, &spool, &next);
    Ok(())
}

/// The `archive-get:async` worker: keeps the queue filled from `want` on.
pub fn worker(request: &ArchiveRequest) -> CliResult<()> {
    let Some(_lock) = hold_worker_lock(&worker_lock_path(&request.lock_path, &request.stanza, "archive-get"))? else {
        return Ok(());
    };
    let Some(control) = cluster_control(request) else {
        return Err(CliError::new(ErrorCode::FileMissing, "archive-get worker: no pg_control to check WAL against"));
    };
    let spool = Spool::open(&request.spool_path, &request.stanza, "in")?;
    spool.clean_temporaries();
    let segment_size = u64::from(control.wal_segment_size);
    let depth = usize::try_from(request.get_queue_max / segment_size.max(1)).unwrap_or(1).max(1);
    let workers = request.workers;
    let rt = crate::runtime::pool(2, None)?;
    rt.block_on(async {
        let repos = open_readable(request).await?;
        // Segments found missing, and when: not asked again for a moment (a standby waiting for
        // new WAL would otherwise poll the repository in a loop).
        let mut missing: Option<(WalFileName, Instant)> = None;
        let mut idle = 0;
        while idle < 40 {
            let Some(want) = spool
                .read(WANT)
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.trim().parse::<WalFileName>().ok())
            else {
                return Ok(());
            };
            let want_no = want.segment_number(segment_size)?;
            // Prune what PostgreSQL has gone past or will never ask for.
            let mut queued = Vec::new();
            for n in spool.names() {
                let Ok(q) = n.parse::<WalFileName>() else { continue };
                let no = q.segment_number(segment_size).unwrap_or(0);
                if q.timeline != want.timeline || no < want_no || no >= want_no + depth as u64 {
                    spool.remove(&n);
                } else {
                    queued.push(no);
                }
            }
            let mut todo = Vec::new();
            for no in want_no..want_no + depth as u64 {
                if queued.contains(&no) {
                    continue;
                }
                let n = WalFileName::segment(want.timeline, no, segment_size)?;
                if missing.is_some_and(|(m, at)| {
                    no >= m.segment_number(segment_size).unwrap_or(0)
                        && m.timeline == n.timeline
                        && at.elapsed() < Duration::from_secs(2)
                }) {
                    break;
                }
                todo.push(n);
            }
            if todo.is_empty() {
                idle += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            idle = 0;
            let (repos, control_ref, spool_ref) = (&repos, &control, &spool);
            let mut fetched = futures::stream::iter(todo.into_iter().map(|n| async move {
                // Queued whole, synced (the foreground takes an entry as it finds it, also after
                // a crash), and only when it is this cluster's segment.
                let control = *control_ref;
                let check: HeadCheck = std::sync::Arc::new(move |head, len| {
                    if entry_is_valid(head, len, &n, &control) {
                        Ok(())
                    } else {
                        Err(CliError::new(
                            ErrorCode::ArchiveMismatch,
                            format!("archived {n} does not belong to this cluster: not queued"),
                        ))
                    }
                });
                let dest = spool_ref.path(&n.to_string());
                (n, fetch_any(repos, &n, Some(control_ref), &dest, (Some(&check), true)).await)
            }))
            .buffered(workers);
            while let Some((n, result)) = fetched.next().await {
                match result {
                    Ok(Some(_)) => {}
                    Err(e) if e.code == ErrorCode::ArchiveMismatch => {
                        tracing::warn!("{}", e.message);
                        break;
                    }
                    Ok(None) => {
                        missing = Some((n, Instant::now()));
                        break;
                    }
                    Err(e) => {
                        // The foreground fetches it itself and reports the error there.
                        tracing::warn!("prefetch of {n} failed: {e}");
                        missing = Some((n, Instant::now()));
                        break;
                    }
                }
            }
        }
        Ok(())
    })
}
