//! Modes and owners of restored paths, as the manifest recorded them. Owners are set only when
//! restore runs as root (otherwise every file belongs to the user running it, as PostgreSQL
//! needs).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use pgstrata_repo_format::meta::Ownership;

use crate::error::CliResult;
use crate::error::{CliError, ErrorCode};

pub fn io(path: &Path, what: &str, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to {what} {}: {e}", path.display()))
}

/// User and group names to ids, read once from /etc/passwd and /etc/group.
fn ids() -> &'static (HashMap<String, u32>, HashMap<String, u32>) {
    static IDS: OnceLock<(HashMap<String, u32>, HashMap<String, u32>)> = OnceLock::new();
    IDS.get_or_init(|| {
        use crate::accounts::{Db, entries};
        (entries(Db::Users).into_iter().collect(), entries(Db::Groups).into_iter().collect())
    })
}

fn uid_gid(owner: &Ownership) -> (Option<u32>, Option<u32>) {
    let (users, groups) = ids();
    (owner.user.as_ref().and_then(|u| users.get(u).copied()), owner.group.as_ref().and_then(|g| groups.get(g).copied()))
}

/// Sets the recorded owner (as root) and mode of a file restore has open, through its
/// descriptor (no path lookup; the owner first, as a change of owner clears set-id bits). The
/// mode is left alone when the file was created with it exactly (`mode_exact`, see
/// [`created_with`]).
pub fn apply_owner_to(
    file: &std::fs::File,
    path: &Path,
    owner: &Ownership,
    as_root: bool,
    mode_exact: bool,
) -> CliResult<()> {
    if as_root {
        let (uid, gid) = uid_gid(owner);
        std::os::unix::fs::fchown(file, uid, gid).map_err(|e| io(path, "set the owner of", e))?;
    }
    if mode_exact {
        return Ok(());
    }
    file.set_permissions(std::fs::Permissions::from_mode(owner.mode)).map_err(|e| io(path, "set permissions of", e))
}

/// Whether a file just created with `mode & 0o777` has exactly `mode`: no set-id or sticky
/// bits asked for, and the process's umask takes none of its bits (PostgreSQL's 0600/0640
/// under the usual 0022 or 0077). Unknown umask: no.
pub fn created_with(mode: u32) -> bool {
    static UMASK: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    // Read where no thread's file creation can race with it (unlike setting and restoring it).
    let umask = UMASK.get_or_init(|| {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find_map(|l| l.strip_prefix("Umask:"))?;
        u32::from_str_radix(line.trim(), 8).ok()
    });
    umask.is_some_and(|u| mode & !0o777 == 0 && mode & u == 0)
}

/// Gives a file restore wrote itself (settings, signal files) the data directory's owner.
pub fn own_like_data_dir(path: &Path, data: &Path) -> CliResult<()> {
    use std::os::unix::fs::MetadataExt;
    if !am_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(data).map_err(|e| io(data, "read", e))?;
    // Through a descriptor opened without following a link (one planted at the name is refused).
    let file = crate::anchor::create_nofollow(path, 0o600, true).map_err(|e| io(path, "open", e))?;
    std::os::unix::fs::fchown(&file, Some(meta.uid()), Some(meta.gid())).map_err(|e| io(path, "set the owner of", e))
}

pub fn am_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
