//! The shape of the restored directories: which directories and links the manifest has, which
//! files are restored where, and — for `--delta` — what is in place that the backup does not
//! have. Directories and links are made before any file; extras are removed inside the guards
//! (in a tablespace location, only inside this cluster's own directory).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{ManifestEntry, Ownership};

use crate::error::CliResult;
use crate::restore::files::FileJob;
use crate::restore::guard::MARKER;
use crate::restore::owner::{apply_owner, io};
use crate::restore::plan::RestorePlan;

/// Every path of the backup, placed on this host.
#[derive(Debug, Default)]
pub struct RestoreTree {
    /// Directories to create, with their recorded owner.
    pub dirs: Vec<(PathBuf, Ownership)>,
    /// Symbolic links to make: local path, destination.
    pub links: Vec<(PathBuf, PathBuf)>,
    pub files: Vec<FileJob>,
    /// Every local path the backup has (what `--delta` keeps).
    wanted: HashSet<PathBuf>,
    /// This cluster's own directory in each tablespace location: (root, `PG_<major>_<catalog>`).
    pub tablespace_dirs: Vec<(String, String)>,
}

impl RestoreTree {
    pub fn new(plan: &RestorePlan, entries: Vec<ManifestEntry>) -> CliResult<Self> {
        let mut tree = Self::default();
        let data = plan.data().to_path_buf();
        tree.wanted.insert(data.join(MARKER));
        for (link, dest) in &plan.links {
            tree.links.push((data.join(link.trim_start_matches("pg_data/")), dest.clone()));
        }
        for e in entries {
            match e {
                ManifestEntry::Dir(d) => {
                    for (root, _) in plan.tablespaces() {
                        if let Some(child) = d.path.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
                            && !child.contains('/')
                        {
                            tree.tablespace_dirs.push((root.to_string(), child.to_string()));
                        }
                    }
                    let local = plan.local(&d.path)?;
                    if !plan.links.contains_key(&d.path) {
                        tree.wanted.insert(local.clone());
                        tree.dirs.push((local, d.owner));
                    }
                }
                ManifestEntry::Link(l) if l.path.starts_with("pg_data/pg_tblspc/") => {
                    let ts_root = l.path.trim_start_matches("pg_data/");
                    let dest = plan.roots.get(ts_root).cloned().unwrap_or_else(|| PathBuf::from(&l.destination));
                    let local = data.join(ts_root);
                    tree.wanted.insert(local.clone());
                    tree.links.push((local, dest));
                }
                ManifestEntry::Link(l) => {
                    tree.wanted.insert(data.join(l.path.trim_start_matches("pg_data/")));
                }
                ManifestEntry::File(f) => {
                    let local = plan.local(&f.path)?;
                    tree.wanted.insert(local.clone());
                    tree.files.push(FileJob { entry: f, local });
                }
            }
        }
        Ok(tree)
    }

    /// Creates the roots, directories and links.
    pub fn build(&self, plan: &RestorePlan, as_root: bool) -> CliResult<()> {
        for root in plan.roots.values() {
            std::fs::create_dir_all(root).map_err(|e| io(root, "create", e))?;
        }
        for (local, dest) in &self.links {
            std::fs::create_dir_all(dest).map_err(|e| io(dest, "create", e))?;
            replace_with_symlink(local, dest)?;
        }
        for (local, owner) in &self.dirs {
            std::fs::create_dir_all(local).map_err(|e| io(local, "create", e))?;
            apply_owner(local, owner, as_root, true)?;
        }
        Ok(())
    }

    /// Delta: removes what the backup does not have. In the data directory everything is
    /// examined; in a tablespace location only what the backup has there (this cluster's own
    /// directory), never another cluster's; link destinations are not descended into.
    pub fn remove_extras(&self, plan: &RestorePlan) -> CliResult<()> {
        let stop: HashSet<PathBuf> = plan.roots.values().chain(plan.links.values()).cloned().collect();
        for (name, root) in &plan.roots {
            self.visit(root, &stop, name != "pg_data")?;
        }
        Ok(())
    }

    fn visit(&self, dir: &Path, stop: &HashSet<PathBuf>, keep_unknown: bool) -> CliResult<()> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(dir, "read", e)),
        };
        for entry in rd {
            let p = entry.map_err(|e| io(dir, "read", e))?.path();
            if stop.contains(&p) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, "read", e))?;
            if self.wanted.contains(&p) {
                if meta.is_dir() {
                    self.visit(&p, stop, false)?;
                }
            } else if !keep_unknown {
                let r = if meta.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                r.map_err(|e| io(&p, "remove", e))?;
            }
        }
        Ok(())
    }
}

fn replace_with_symlink(local: &Path, dest: &Path) -> CliResult<()> {
    if let Ok(existing) = std::fs::read_link(local) {
        if existing == dest {
            return Ok(());
        }
        std::fs::remove_file(local).map_err(|e| io(local, "remove", e))?;
    } else if local.is_dir() {
        std::fs::remove_dir_all(local).map_err(|e| io(local, "remove", e))?;
    } else if local.exists() {
        std::fs::remove_file(local).map_err(|e| io(local, "remove", e))?;
    }
    if let Some(parent) = local.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, "create", e))?;
    }
    std::os::unix::fs::symlink(dest, local).map_err(|e| io(local, "create link", e))
}
