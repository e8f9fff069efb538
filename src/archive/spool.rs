//! The spool: `<spool-path>/archive/<stanza>/out` holds the push worker's acknowledgements
//! (`<wal>.ok`, `<wal>.error`, `global.error`), `.../in` the WAL the get worker fetched ahead.
//! Every file appears whole: written under a temporary name, then renamed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::error::{CliError, CliResult, ErrorCode};

pub struct Spool {
    pub dir: PathBuf,
}

fn io(path: &Path, what: &str, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to {what} {}: {e}", path.display()))
        .hint("check spool-path: it must be writable by the PostgreSQL user")
}

impl Spool {
    /// Opens (creating) the `out` or `in` queue of a stanza.
    pub fn open(base: &Path, stanza: &str, queue: &str) -> CliResult<Self> {
        let dir = base.join("archive").join(stanza).join(queue);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "create the spool directory", e))?;
        Ok(Self { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `name` whole: a temporary name (created without following a link planted there),
    /// then a rename. For markers: one lost in a crash costs a retry.
    pub fn write(&self, name: &str, data: &[u8]) -> CliResult<()> {
        use std::io::Write;
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let dest = self.dir.join(name);
        let _ = std::fs::remove_file(&tmp);
        let mut f = crate::anchor::create_nofollow(&tmp, 0o640, false).map_err(|e| io(&tmp, "create", e))?;
        f.write_all(data).map_err(|e| io(&tmp, "write", e))?;
        std::fs::rename(&tmp, &dest).map_err(|e| io(&dest, "rename into", e))
    }

    /// Reads `name` if it exists.
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    pub fn remove(&self, name: &str) {
        let _ = std::fs::remove_file(self.dir.join(name));
    }

    /// Names of the files in the queue (temporary files excluded).
    pub fn names(&self) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).filter(|n| !n.starts_with('.')).collect()
    }

    /// Removes temporary files a killed process left.
    pub fn clean_temporaries(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else { return };
        for e in rd.flatten() {
            if e.file_name().to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// An error a worker hands to the foreground: `<exit code>\n<message>`.
pub fn encode_error(e: &CliError) -> Vec<u8> {
    format!("{}\n{}", e.code as i32, e.message).into_bytes()
}

pub fn decode_error(bytes: &[u8]) -> CliError {
    let text = String::from_utf8_lossy(bytes);
    let (code, message) = text.split_once('\n').unwrap_or(("", &text));
    let code = ErrorCode::from_number(code.trim().parse().unwrap_or(-1)).unwrap_or(ErrorCode::Service);
    CliError::new(code, message.to_string())
}

/// Path of a worker's lock file.
pub fn worker_lock_path(locks: &Path, stanza: &str, kind: &str) -> PathBuf {
    locks.join(format!("{stanza}-{kind}-async.lock"))
}

/// Takes a worker's lock without waiting: `None` when another worker holds it.
pub fn try_worker_lock(path: &Path) -> CliResult<Option<std::fs::File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, "create the lock directory", e))?;
    }
    let f = crate::anchor::no_follow(std::fs::OpenOptions::new().create(true).truncate(false).write(true))
        .open(path)
        .map_err(|e| io(path, "open the lock file", e))?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(io(path, "lock", e)),
    }
}

/// Takes a worker's lock for the worker's life, recording its pid (`stop --force` signals it);
/// `None` when another worker holds it.
pub fn hold_worker_lock(path: &Path) -> CliResult<Option<std::fs::File>> {
    let lock = try_worker_lock(path)?;
    if let Some(f) = &lock {
        crate::control::record_holder(f);
    }
    Ok(lock)
}

/// Whether a worker holds the lock now; an unusable lock path is an error (no worker could run).
pub fn worker_running(path: &Path) -> CliResult<bool> {
    // Probing takes the lock for an instant; a worker starting in that instant exits and the
    // caller's next probe starts another.
    Ok(try_worker_lock(path)?.is_none())
}

/// Starts a detached worker (`archive-push:async` / `archive-get:async`) with `options` (this
/// process's, as given on its command line), in its own process group so PostgreSQL's signals to the archiver do not reach it.
/// It runs under the name we were invoked by (a `pgbackrest` symlink stays `pgbackrest`) and
/// inherits our environment, so it reads the same configuration. Its stderr goes to
/// `stderr_file`, so that a worker dying before it could report anything still says why.
pub fn spawn_worker(
    options: &[String],
    command: &str,
    params: &[&str],
    stderr_file: &Path,
) -> CliResult<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let exe = crate::process::invoked_exe()?;
    let stderr = crate::anchor::create_nofollow(stderr_file, 0o640, false).map_err(|e| io(stderr_file, "create", e))?;
    Command::new(&exe)
        .args(options)
        .arg(command)
        .args(params)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .map_err(|e| {
            CliError::new(ErrorCode::Service, format!("unable to start the {command} worker ({}): {e}", exe.display()))
        })
}

/// What a dead worker wrote to stderr (its last lines), for the foreground to report.
pub fn worker_stderr(stderr_file: &Path) -> String {
    let text = std::fs::read_to_string(stderr_file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" / ");
    if tail.is_empty() { "it wrote nothing to stderr".to_string() } else { tail }
}

/// Polling interval of a foreground waiting on its worker: short at first.
pub fn backoff(round: u32) -> Duration {
    Duration::from_millis(match round {
        0..=20 => 2,
        21..=100 => 10,
        _ => 50,
    })
}
