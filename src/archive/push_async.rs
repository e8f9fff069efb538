//! Asynchronous `archive-push` (`archive-async=y`).
//!
//! The foreground (PostgreSQL's `archive_command`) only waits for `<wal>.ok` in the spool. A
//! worker (`archive-push:async`, one per stanza, held by a lock) pushes every file PostgreSQL
//! has marked `.ready` in `pg_wal/archive_status`, `process-max` at a time, and writes `.ok`
//! only once the file is durable in every repository; a failure becomes `<wal>.error`, which the
//! waiting foreground call for that file reports (and consumes, so the worker tries again). A
//! failure found when a call starts is an earlier attempt's: removed, not reported.
//!
//! A crash anywhere is safe: an object is visible only whole (`put_new`), `.ok` is written after
//! it, the kernel drops the lock of a dead worker and the next call starts another.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use pgstrata_repo_format::pg::WalFileName;

use super::ArchiveRequest;
use super::spool::{
    Spool, backoff, decode_error, encode_error, hold_worker_lock, spawn_worker, worker_lock_path, worker_running,
    worker_stderr,
};
use super::{open_all, push_file};
use crate::error::{CliError, CliResult, ErrorCode};

const GLOBAL_ERROR: &str = "global.error";

/// The `archive_command` side: returns once the worker acknowledged `name`.
pub fn foreground(request: &ArchiveRequest, path: &Path, name: &WalFileName) -> CliResult<()> {
    let stanza = &request.stanza;
    let spool = Spool::open(&request.spool_path, stanza, "out")?;
    let (ok, error) = (format!("{name}.ok"), format!("{name}.error"));
    let lock = worker_lock_path(&request.lock_path, stanza, "archive-push");
    let wal_dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let wal_dir = wal_dir.to_str().ok_or_else(|| {
        CliError::new(ErrorCode::OptionInvalidValue, format!("WAL path {} is not UTF-8", wal_dir.display()))
    })?;
    let timeout = request.timeout;
    let start = Instant::now();
    let mut spawned: Option<Instant> = None;
    let mut worker: Option<std::process::Child> = None;
    let stderr_file = spool.path(".archive-push-worker.stderr");
    // A failure recorded before this call is stale: the condition may be gone (a repository
    // made writable again) while a lingering worker still holds the last attempt's answer. It
    // goes, so the worker tries again, and only what is reported after this call started is.
    for file in [error.as_str(), GLOBAL_ERROR] {
        spool.remove(file);
    }
    for round in 0u32.. {
        if let Some(note) = spool.read(&ok) {
            if !note.is_empty() {
                tracing::warn!("{}", String::from_utf8_lossy(&note));
            }
            tracing::info!("pushed WAL file {name} to the archive asynchronously");
            return Ok(());
        }
        for file in [error.as_str(), GLOBAL_ERROR] {
            if let Some(e) = spool.read(file) {
                // Consumed: the worker tries this file again, and the next call reports anew.
                spool.remove(file);
                return Err(decode_error(&e));
            }
        }
        // A worker we started that died before acknowledging: say why at once, rather than
        // waiting out archive-timeout (results it wrote before dying were checked above).
        if let Some(status) = worker.as_mut().and_then(|w| w.try_wait().ok().flatten()) {
            worker = None;
            if !status.success() && spool.read(&ok).is_none() && spool.read(&error).is_none() {
                return Err(CliError::new(
                    ErrorCode::Service,
                    format!(
                        "the archive-push worker exited ({status}) before pushing WAL file {name}: {}",
                        worker_stderr(&stderr_file)
                    ),
                )
                .hint(format!("its log is {stanza}-archive-push-async.log in log-path")));
            }
        }
        if spawned.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) && !worker_running(&lock)? {
            worker = Some(spawn_worker(&request.worker_args, "archive-push:async", &[wal_dir], &stderr_file)?);
            spawned = Some(Instant::now());
        }
        if start.elapsed() > timeout {
            return Err(CliError::new(
                ErrorCode::ArchiveTimeout,
                format!(
                    "unable to push WAL file {name} to the archive asynchronously after {} second(s)",
                    timeout.as_secs()
                ),
            )
            .hint(format!("check the worker's log {stanza}-archive-push-async.log in log-path")));
        }
        std::thread::sleep(backoff(round));
    }
    unreachable!("the loop returns")
}

/// The `archive-push:async` worker.
pub fn worker(request: &ArchiveRequest) -> CliResult<()> {
    let wal_dir =
        PathBuf::from(request.params.first().ok_or_else(|| {
            CliError::new(ErrorCode::ParamRequired, "archive-push:async requires the pg_wal directory")
        })?);
    let Some(_lock) = hold_worker_lock(&worker_lock_path(&request.lock_path, &request.stanza, "archive-push"))? else {
        tracing::debug!("another archive-push worker is running");
        return Ok(());
    };
    let spool = Spool::open(&request.spool_path, &request.stanza, "out")?;
    spool.clean_temporaries();
    // Errors of an earlier worker are retried by this one.
    for n in spool.names() {
        if n.ends_with(".error") {
            spool.remove(&n);
        }
    }
    let result = run(request, &wal_dir, &spool);
    if let Err(e) = &result {
        tracing::error!("archive-push worker: {e}");
        let _ = spool.write(GLOBAL_ERROR, &encode_error(e));
    }
    result
}

/// Files PostgreSQL marked ready, oldest first.
fn ready_files(status: &Path) -> CliResult<Vec<String>> {
    let rd = std::fs::read_dir(status).map_err(|e| {
        CliError::new(ErrorCode::FileRead, format!("unable to list {}: {e}", status.display()))
            .hint("archive-push with archive-async=y must be run by PostgreSQL's archive_command")
    })?;
    let mut out: Vec<String> =
        rd.filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".ready").map(str::to_string)).collect();
    out.sort();
    Ok(out)
}

fn run(request: &ArchiveRequest, wal_dir: &Path, spool: &Spool) -> CliResult<()> {
    let (workers, settings, queue_max) = (request.workers, request.blob, request.push_queue_max);
    let status = wal_dir.join("archive_status");
    let rt = crate::runtime::pool(2, Some(workers))?;
    rt.block_on(async {
        let repos = open_all(request).await?;
        let mut idle = 0;
        // Lingering a little after the queue empties saves a process start per segment when
        // PostgreSQL writes steadily.
        while idle < 20 {
            let ready = ready_files(&status)?;
            let wanted: HashSet<&str> = ready.iter().map(String::as_str).collect();
            let mut acked = HashSet::new();
            for n in spool.names() {
                let stem = n.strip_suffix(".ok").or_else(|| n.strip_suffix(".error"));
                match stem {
                    // PostgreSQL is done with it (or never will be): the acknowledgement goes.
                    Some(s) if !wanted.contains(s) => spool.remove(&n),
                    Some(s) => {
                        acked.insert(s.to_string());
                    }
                    None => {}
                }
            }
            let todo: Vec<String> = ready.iter().filter(|r| !acked.contains(*r)).take(workers * 32).cloned().collect();
            if todo.is_empty() {
                idle += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            idle = 0;
            if let Some(max) = queue_max {
                let backlog: u64 =
                    ready.iter().filter_map(|r| std::fs::metadata(wal_dir.join(r)).ok()).map(|m| m.len()).sum();
                if backlog > max {
                    let note = format!(
                        "dropped WAL file(s) {}..{} without archiving them: {backlog} bytes wait in pg_wal, more than \
                         archive-push-queue-max ({max}). POINT-IN-TIME RECOVERY IS BROKEN until the next backup",
                        ready.first().map_or("", String::as_str),
                        ready.last().map_or("", String::as_str)
                    );
                    tracing::error!("{note}");
                    for r in &ready {
                        if !acked.contains(r) {
                            spool.write(&format!("{r}.ok"), note.as_bytes())?;
                        }
                    }
                    continue;
                }
            }
            let repos = &repos;
            let mut results = futures::stream::iter(todo.into_iter().map(|file| async move {
                let outcome = async {
                    let name: WalFileName = file.parse()?;
                    push_file(repos, settings, &name, &wal_dir.join(&file), 1).await
                }
                .await;
                (file, outcome)
            }))
            // One more in flight than workers: a segment waiting on storage leaves its CPU to
            // the next one.
            .buffer_unordered(workers + 1);
            while let Some((file, outcome)) = results.next().await {
                match outcome {
                    Ok(()) => spool.write(&format!("{file}.ok"), b"")?,
                    Err(e) => {
                        tracing::error!("unable to push WAL file {file}: {e}");
                        spool.write(&format!("{file}.error"), &encode_error(&e))?;
                    }
                }
            }
        }
        Ok(())
    })
}
