//! Walking PGDATA (and tablespaces) into what a backup copies, with pgBackRest's and
//! pg_basebackup's exclusions. Pure decisions (`excluded`, `relation_info`) are unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{DirEntry, LinkEntry, Ownership, Target};

use crate::error::{CliError, CliResult, ErrorCode};

/// Directories whose contents are never copied (the directory itself is).
const EMPTY_DIRS: &[&str] =
    &["pg_wal", "pg_dynshmem", "pg_notify", "pg_replslot", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"];

/// Files at the top of PGDATA that are never copied.
const SKIP_TOP_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "backup_label.old",
    "tablespace_map",
    "recovery.signal",
    "standby.signal",
    "recovery.conf",
    "postgresql.auto.conf.tmp",
    "current_logfiles",
    "current_logfiles.tmp",
];

/// True when `rel` (a path inside PGDATA, `/`-separated) is not copied.
pub fn excluded(rel: &str, name: &str, is_dir: bool) -> bool {
    if name.starts_with("pgsql_tmp") || name == "pg_internal.init" {
        return true;
    }
    if !rel.contains('/') && !is_dir && SKIP_TOP_FILES.contains(&rel) {
        return true;
    }
    // Contents of the emptied directories.
    if let Some((top, _)) = rel.split_once('/')
        && EMPTY_DIRS.contains(&top)
    {
        return true;
    }
    false
}

/// A relation file name: `<relfilenode>[_fork][.segment]`. Returns the relfilenode, fork and
/// segment number.
pub fn relation_info(name: &str) -> Option<(&str, Option<&str>, u32)> {
    let (base, seg) = match name.split_once('.') {
        Some((b, s)) => (b, s.parse().ok()?),
        None => (name, 0),
    };
    let (node, fork) = match base.split_once('_') {
        Some((n, f)) if ["fsm", "vm", "init"].contains(&f) => (n, Some(f)),
        Some(_) => return None,
        None => (base, None),
    };
    (!node.is_empty() && node.bytes().all(|b| b.is_ascii_digit())).then_some((node, fork, seg))
}

/// One file to copy.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path in the manifest (`pg_data/base/5/1259`, `pg_tblspc/16400/PG_15_.../5/16401`).
    pub path: String,
    pub fs_path: PathBuf,
    pub size: u64,
    pub mtime: i64,
    pub owner: Ownership,
    /// For relation files: the first block number of this segment file.
    pub first_block: Option<u32>,
}

/// Everything a backup copies, paths sorted.
#[derive(Clone, Debug, Default)]
pub struct SourceTree {
    pub targets: Vec<Target>,
    pub dirs: Vec<DirEntry>,
    pub links: Vec<LinkEntry>,
    pub files: Vec<SourceFile>,
}

/// Maps uids and gids to names from /etc/passwd and /etc/group.
#[derive(Default)]
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn load() -> Self {
        let read = |path: &str| -> HashMap<u32, String> {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let id = f.nth(1)?.parse().ok()?;
                    Some((id, name.to_string()))
                })
                .collect()
        };
        Self { users: read("/etc/passwd"), groups: read("/etc/group") }
    }

    fn owner(&self, meta: &std::fs::Metadata) -> Ownership {
        Ownership {
            mode: meta.mode() & 0o7777,
            user: self.users.get(&meta.uid()).cloned(),
            group: self.groups.get(&meta.gid()).cloned(),
        }
    }
}

fn io_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", path.display()))
}

/// Walks the data directory and every tablespace linked from `pg_tblspc`.
pub fn walk(pg_data: &Path, relseg_blocks: u32) -> CliResult<SourceTree> {
    let names = Names::load();
    let mut tree = SourceTree::default();
    tree.targets.push(Target {
        name: "pg_data".into(),
        path: pg_data.display().to_string(),
        tablespace_oid: None,
        tablespace_name: None,
    });
    let meta = std::fs::metadata(pg_data).map_err(|e| io_err(pg_data, e))?;
    tree.dirs.push(DirEntry { path: "pg_data".into(), owner: names.owner(&meta) });
    let mut tablespaces = BTreeMap::new();
    walk_dir(pg_data, "pg_data", "", &names, relseg_blocks, &mut tree, &mut tablespaces)?;
    for (oid, dest) in tablespaces {
        let name = format!("pg_tblspc/{oid}");
        tree.targets.push(Target {
            name: name.clone(),
            path: dest.display().to_string(),
            tablespace_oid: oid.parse().ok(),
            tablespace_name: None,
        });
        let meta = std::fs::metadata(&dest).map_err(|e| io_err(&dest, e))?;
        tree.dirs.push(DirEntry { path: name.clone(), owner: names.owner(&meta) });
        let mut none = BTreeMap::new();
        walk_dir(&dest, &name, "", &names, relseg_blocks, &mut tree, &mut none)?;
    }
    tree.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    tree.links.sort_by(|a, b| a.path.cmp(&b.path));
    tree.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(tree)
}

/// `rel` is the path inside the target (`base/5`), `prefix` the manifest root (`pg_data`).
fn walk_dir(
    dir: &Path,
    prefix: &str,
    rel: &str,
    names: &Names,
    relseg_blocks: u32,
    tree: &mut SourceTree,
    tablespaces: &mut BTreeMap<String, PathBuf>,
) -> CliResult<()> {
    let mut entries: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        // A name that is not UTF-8 cannot be recorded exactly in the manifest; renaming it
        // would restore a different cluster, so the backup stops and names it.
        let name = entry.file_name().into_string().map_err(|raw| {
            CliError::new(
                ErrorCode::FileRead,
                format!("unable to back up {}: the file name {raw:?} is not valid UTF-8", dir.display()),
            )
            .hint("rename or remove that file; PostgreSQL itself never creates such names")
        })?;
        entries.push((name, entry.path()));
    }
    // Unlogged relations: a relfilenode with an init fork keeps only the init fork.
    let unlogged: HashSet<String> = entries
        .iter()
        .filter_map(|(n, _)| {
            relation_info(n).filter(|(_, fork, _)| *fork == Some("init")).map(|(node, _, _)| node.to_string())
        })
        .collect();
    let is_pg_data = prefix == "pg_data";
    for (name, path) in entries {
        let child_rel = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            // Removed since listed (a dropped table, a recycled WAL file): nothing to copy.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&path, e)),
        };
        let manifest_path = format!("{prefix}/{child_rel}");
        if is_pg_data && excluded(&child_rel, &name, meta.is_dir()) {
            continue;
        }
        if !is_pg_data && (name.starts_with("pgsql_tmp") || name == "pg_internal.init") {
            continue;
        }
        if meta.file_type().is_symlink() {
            let dest = std::fs::read_link(&path).map_err(|e| io_err(&path, e))?;
            tree.links.push(LinkEntry {
                path: manifest_path,
                destination: dest.display().to_string(),
                owner: names.owner(&meta),
            });
            if is_pg_data && rel == "pg_tblspc" {
                tablespaces.insert(name, dest);
            } else if is_pg_data
                && !EMPTY_DIRS.contains(&child_rel.as_str())
                && std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
            {
                // A linked directory's contents are part of PGDATA (restored through the link).
                walk_dir(&path, prefix, &child_rel, names, relseg_blocks, tree, tablespaces)?;
            }
            continue;
        }
        if meta.is_dir() {
            tree.dirs.push(DirEntry { path: manifest_path, owner: names.owner(&meta) });
            walk_dir(&path, prefix, &child_rel, names, relseg_blocks, tree, tablespaces)?;
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        let relation = relation_info(&name);
        if let Some((node, fork, _)) = relation
            && unlogged.contains(node)
            && fork != Some("init")
        {
            continue;
        }
        let in_relation_dir = if is_pg_data {
            rel == "global" || (rel.starts_with("base/") && rel.matches('/').count() == 1)
        } else {
            // <tablespace>/PG_<ver>_<catalog>/<db oid>/
            rel.matches('/').count() == 1
        };
        let first_block = match relation {
            Some((_, _, seg)) if in_relation_dir => Some(seg.saturating_mul(relseg_blocks)),
            _ => None,
        };
        tree.files.push(SourceFile {
            path: manifest_path,
            fs_path: path,
            size: meta.len(),
            mtime: meta.mtime(),
            owner: names.owner(&meta),
            first_block,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusions_follow_pg_basebackup() {
        assert!(excluded("postmaster.pid", "postmaster.pid", false));
        assert!(excluded("pg_wal/000000010000000000000001", "000000010000000000000001", false));
        assert!(!excluded("pg_wal", "pg_wal", true));
        assert!(excluded("pg_replslot/slot1", "slot1", true));
        assert!(excluded("base/5/pgsql_tmp", "pgsql_tmp", true));
        assert!(excluded("global/pg_internal.init", "pg_internal.init", false));
        assert!(!excluded("base/5/1259", "1259", false));
        assert!(!excluded("postgresql.auto.conf", "postgresql.auto.conf", false));
        assert!(!excluded("global/pg_control", "pg_control", false));
    }

    #[test]
    fn relation_names() {
        assert_eq!(relation_info("16384"), Some(("16384", None, 0)));
        assert_eq!(relation_info("16384.2"), Some(("16384", None, 2)));
        assert_eq!(relation_info("16384_fsm"), Some(("16384", Some("fsm"), 0)));
        assert_eq!(relation_info("16384_init"), Some(("16384", Some("init"), 0)));
        assert_eq!(relation_info("16384_vm.1"), Some(("16384", Some("vm"), 1)));
        assert_eq!(relation_info("pg_filenode.map"), None);
        assert_eq!(relation_info("16384_xyz"), None);
        assert_eq!(relation_info("PG_VERSION"), None);
    }
}
