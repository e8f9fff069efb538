//! `stop` and `start` (pgBackRest's control commands): a stop file in the lock path keeps the
//! commands that write to the repository — `backup`, `archive-push`, `stanza-create`,
//! `stanza-upgrade` — from starting on this host (exit 62), for maintenance and before
//! `stanza-delete`, which requires it. `archive-get`, `restore` and `info` still run: a
//! recovery must not be stopped by it. Without `--stanza` the file stops every stanza.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use pgstrata_repo_format::layout::StanzaLayout;

/// The directory of this host's lock and stop files (`lock-path`).
pub fn lock_path(config: &Config) -> PathBuf {
    PathBuf::from(config.get("lock-path").unwrap_or("/tmp/pgstrata"))
}

/// `<lock-path>/<stanza>.stop`, or `<lock-path>/all.stop` for every stanza.
pub fn stop_file(config: &Config, stanza: Option<&str>) -> PathBuf {
    stop_file_in(&lock_path(config), stanza)
}

/// The stop file of `stanza` (or of all stanzas) in lock directory `locks`.
pub fn stop_file_in(locks: &std::path::Path, stanza: Option<&str>) -> PathBuf {
    locks.join(format!("{}.stop", stanza.unwrap_or("all")))
}

fn what(stanza: Option<&str>) -> String {
    stanza.map_or_else(|| "all stanzas".to_string(), |s| format!("stanza {s}"))
}

/// Refuses (exit 62) while a stop file exists for the configured stanza or for all stanzas.
pub fn check_not_stopped(config: &Config) -> CliResult<()> {
    check_not_stopped_in(&lock_path(config), config.get("stanza"))
}

/// Refuses (exit 62) while lock directory `locks` holds a stop file for `stanza` or for all.
pub fn check_not_stopped_in(locks: &std::path::Path, stanza: Option<&str>) -> CliResult<()> {
    for scope in stanza.map(Some).into_iter().chain([None]) {
        let file = stop_file_in(locks, scope);
        if file.exists() {
            return Err(CliError::new(ErrorCode::Stop, format!("stop file exists for {}", what(scope)))
                .hint(format!("{} was made by the stop command; run start to allow commands again", file.display())));
        }
    }
    Ok(())
}

fn scope(config: &Config) -> CliResult<Option<&str>> {
    let stanza = config.get("stanza");
    if let Some(name) = stanza {
        StanzaLayout::new(name)?;
    }
    Ok(stanza)
}

pub fn stop(config: &Config) -> CliResult<()> {
    let stanza = scope(config)?;
    let file = stop_file(config, stanza);
    if file.exists() {
        tracing::warn!("stop file already exists for {}", what(stanza));
        return Ok(());
    }
    let dir = lock_path(config);
    std::fs::create_dir_all(&dir).map_err(|e| {
        CliError::new(ErrorCode::LockAcquire, format!("unable to create lock path {}: {e}", dir.display()))
    })?;
    {
        use std::os::unix::fs::OpenOptionsExt;
        crate::anchor::no_follow(std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o640))
            .open(&file)
            .map_err(|e| {
                CliError::new(ErrorCode::FileRead, format!("unable to create stop file {}: {e}", file.display()))
            })?;
    }
    if config.bool("force") {
        terminate_holders(config, stanza);
    }
    tracing::info!("stopped {}: {} exists", what(stanza), file.display());
    Ok(())
}

pub fn start(config: &Config) -> CliResult<()> {
    let stanza = scope(config)?;
    let file = stop_file(config, stanza);
    match std::fs::remove_file(&file) {
        Ok(()) => {
            tracing::info!("started {}", what(stanza));
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!("stop file does not exist for {}", what(stanza));
            Ok(())
        }
        Err(e) => Err(CliError::new(ErrorCode::FileRead, format!("unable to remove {}: {e}", file.display()))),
    }
}

/// Records this process as the holder of a lock file it has just locked (its pid, for
/// `stop --force`).
pub fn record_holder(file: &std::fs::File) {
    use std::os::unix::fs::FileExt;
    if file.set_len(0).is_ok() {
        let _ = file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0);
    }
}

/// `stop --force`: SIGTERM to every process holding one of the stanza's lock files (every
/// stanza's without `--stanza`). A lock file nobody holds is left alone.
fn terminate_holders(config: &Config, stanza: Option<&str>) {
    let dir = lock_path(config);
    let Ok(entries) = std::fs::read_dir(&dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = stanza.is_none_or(|s| name.starts_with(&format!("{s}-")));
        if !ours || !name.ends_with(".lock") {
            continue;
        }
        let path = entry.path();
        let Ok(file) = std::fs::File::open(&path) else { continue };
        if file.try_lock().is_ok() {
            continue;
        }
        let pid = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<i32>().ok());
        let Some(pid) = pid.and_then(rustix::process::Pid::from_raw) else {
            tracing::warn!("{} is held by a process that did not record its pid", path.display());
            continue;
        };
        match rustix::process::kill_process(pid, rustix::process::Signal::TERM) {
            Ok(()) => tracing::info!("sent term signal to process {} ({name})", pid.as_raw_nonzero()),
            Err(e) => tracing::warn!("unable to send term signal to process {}: {e}", pid.as_raw_nonzero()),
        }
    }
}
