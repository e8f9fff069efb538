//! The identity of this process, handed down to the processes it starts (async workers, the
//! `restore_command` PostgreSQL runs): the executable *as it was invoked* — a symlink named
//! `pgbackrest` stays `pgbackrest`, so the child picks the same front end, environment
//! variables and configuration paths as its parent. `current_exe()` would resolve the link.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::error::{CliError, CliResult, ErrorCode};

static ARGV0: OnceLock<String> = OnceLock::new();

/// What this process creates is never readable or writable by others, nor writable by the
/// group, whatever umask it inherited (a shell's 022 included): directories at most 0750, files
/// 0640, as pgBackRest creates them. Called once at start, before any thread. Restored files
/// get the modes their backup recorded, set explicitly.
pub fn restrict_umask() {
    use rustix::fs::Mode;
    let inherited = rustix::process::umask(Mode::from_bits_truncate(0o027));
    rustix::process::umask(inherited | Mode::from_bits_truncate(0o027));
}

/// Records argv[0]; called once at start.
pub fn remember_argv0(argv0: &str) {
    let _ = ARGV0.set(argv0.to_string());
}

/// The path that runs this program under the name it was invoked by: argv[0] made absolute
/// (found on `PATH` when it has no slash), never resolved through symlinks.
pub fn invoked_exe() -> CliResult<PathBuf> {
    let cwd = std::env::current_dir().ok();
    let path = std::env::var_os("PATH");
    if let Some(found) = ARGV0.get().and_then(|a| resolve_argv0(a, cwd.as_deref(), path.as_deref())) {
        return Ok(found);
    }
    std::env::current_exe()
        .map_err(|e| CliError::new(ErrorCode::Service, format!("unable to find our own executable: {e}")))
}

/// argv[0] as a path to run: with a slash, relative to `cwd`; without, the first executable of
/// that name on `path`. `None` when it cannot be found (the caller falls back).
pub fn resolve_argv0(argv0: &str, cwd: Option<&Path>, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if argv0.is_empty() {
        return None;
    }
    if argv0.contains('/') {
        let p = Path::new(argv0);
        let abs = if p.is_absolute() { p.to_path_buf() } else { cwd?.join(p) };
        return is_exe(&abs).then_some(abs);
    }
    std::env::split_paths(path?).map(|dir| dir.join(argv0)).find(|p| p.is_absolute() && is_exe(p))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn argv0_is_kept_as_invoked() {
        let dir = std::env::temp_dir().join(format!("pgstrata-argv0-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let real = dir.join("pgstrata");
        std::fs::write(&real, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let link = dir.join("bin/pgbackrest");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), &dir.join("bin")]).unwrap();
        // Found on PATH: the link, not its target.
        assert_eq!(resolve_argv0("pgbackrest", None, Some(&path)), Some(link.clone()));
        // Relative with a slash: made absolute against the working directory.
        assert_eq!(resolve_argv0("bin/pgbackrest", Some(&dir), None), Some(link.clone()));
        assert_eq!(resolve_argv0(link.to_str().unwrap(), None, None), Some(link.clone()));
        assert_eq!(resolve_argv0("wal-g", None, Some(&path)), None);
        assert_eq!(resolve_argv0("", None, Some(&path)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
