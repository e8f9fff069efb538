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

/// Sets the recorded mode (when `follow`: not on a link) and, as root, the recorded owner.
pub fn apply_owner(path: &Path, owner: &Ownership, as_root: bool, follow: bool) -> CliResult<()> {
    if follow {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(owner.mode))
            .map_err(|e| io(path, "set permissions of", e))?;
    }
    if as_root {
        let (uid, gid) = uid_gid(owner);
        let r =
            if follow { std::os::unix::fs::chown(path, uid, gid) } else { std::os::unix::fs::lchown(path, uid, gid) };
        r.map_err(|e| io(path, "set the owner of", e))?;
    }
    Ok(())
}

/// Sets the recorded owner (as root) and mode of a file restore has open, through its
/// descriptor (no path lookup; the owner first, as a change of owner clears set-id bits).
pub fn apply_owner_to(file: &std::fs::File, path: &Path, owner: &Ownership, as_root: bool) -> CliResult<()> {
    if as_root {
        let (uid, gid) = uid_gid(owner);
        std::os::unix::fs::fchown(file, uid, gid).map_err(|e| io(path, "set the owner of", e))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(owner.mode)).map_err(|e| io(path, "set permissions of", e))
}

/// Gives a file restore wrote itself (settings, signal files) the data directory's owner.
pub fn own_like_data_dir(path: &Path, data: &Path) -> CliResult<()> {
    use std::os::unix::fs::MetadataExt;
    if !am_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(data).map_err(|e| io(data, "read", e))?;
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid())).map_err(|e| io(path, "set the owner of", e))
}

pub fn am_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}
