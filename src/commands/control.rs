//! `stop` and `start`: make and remove the stop file of a stanza (or of all stanzas) in this
//! host's lock path; `stop --force` also terminates the processes holding the stanza's locks.

use std::path::PathBuf;

use pgstrata_repo_format::layout::StanzaLayout;

use crate::config::Config;
use crate::control::what;
use crate::error::{CliError, CliResult, ErrorCode};

/// The directory of this host's lock and stop files (`lock-path`).
pub fn lock_path(config: &Config) -> PathBuf {
    crate::request::lock_path(config)
}

/// `<lock-path>/<stanza>.stop`, or `<lock-path>/all.stop` for every stanza.
pub fn stop_file(config: &Config, stanza: Option<&str>) -> PathBuf {
    crate::control::stop_file_in(&lock_path(config), stanza)
}

/// Refuses (exit 62) while a stop file exists for the configured stanza or for all stanzas.
pub fn check_not_stopped(config: &Config) -> CliResult<()> {
    crate::control::check_not_stopped_in(&lock_path(config), config.get("stanza"))
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
