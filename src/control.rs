//! Stop files and lock holders (pgBackRest's control): a stop file in the lock path keeps the
//! commands that write to the repository — `backup`, `archive-push`, `stanza-create`,
//! `stanza-upgrade` — from starting on this host (exit 62), for maintenance and before
//! `stanza-delete`, which requires it. `archive-get`, `restore` and `info` still run: a
//! recovery must not be stopped by it. Without a stanza the file stops every stanza. The `stop`
//! and `start` commands are in `commands::control`.

use std::path::{Path, PathBuf};

use crate::error::{CliError, CliResult, ErrorCode};

/// The stop file of `stanza` (or of all stanzas) in lock directory `locks`.
pub fn stop_file_in(locks: &Path, stanza: Option<&str>) -> PathBuf {
    locks.join(format!("{}.stop", stanza.unwrap_or("all")))
}

/// "stanza db" or "all stanzas", for messages.
pub fn what(stanza: Option<&str>) -> String {
    stanza.map_or_else(|| "all stanzas".to_string(), |s| format!("stanza {s}"))
}

/// Refuses (exit 62) while lock directory `locks` holds a stop file for `stanza` or for all.
pub fn check_not_stopped_in(locks: &Path, stanza: Option<&str>) -> CliResult<()> {
    for scope in stanza.map(Some).into_iter().chain([None]) {
        let file = stop_file_in(locks, scope);
        if file.exists() {
            return Err(CliError::new(ErrorCode::Stop, format!("stop file exists for {}", what(scope)))
                .hint(format!("{} was made by the stop command; run start to allow commands again", file.display())));
        }
    }
    Ok(())
}

/// Records this process as the holder of a lock file it has just locked (its pid, for
/// `stop --force`).
pub fn record_holder(file: &std::fs::File) {
    use std::os::unix::fs::FileExt;
    if file.set_len(0).is_ok() {
        let _ = file.write_all_at(format!("{}\n", std::process::id()).as_bytes(), 0);
    }
}
