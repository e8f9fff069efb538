//! The shape of the restored directories: which directories and links the manifest has, and
//! — for `--delta` — what is in place that the backup does not have. Directories and links are made before any file; extras are removed inside the guards
//! (in a tablespace location, only inside this cluster's own directory).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{ManifestEntry, Ownership};

use crate::error::CliResult;
use crate::restore::guard::MARKER;
use crate::restore::owner::{apply_owner, io};
use crate::restore::plan::{RestorePlan, check_manifest_path};

/// The directories and links of the backup, placed on this host, gathered in the first pass
/// over the manifest (files are restored in the second and not held here).
#[derive(Debug, Default)]
pub struct RestoreTree {
    /// Directories to create, with their recorded owner.
    pub dirs: Vec<(PathBuf, Ownership)>,
    /// Tablespace links to make in `pg_tblspc`: local path, destination.
    tablespace_links: Vec<(PathBuf, PathBuf)>,
    /// This cluster's own directory in each tablespace location: (root, `PG_<major>_<catalog>`).
    pub tablespace_dirs: Vec<(String, String)>,
    /// `--delta`: a 64-bit hash of every local path the backup has (8 bytes a path, not the
    /// path itself; a collision could only keep an extra file, never remove a wanted one).
    wanted: Option<HashSet<u64>>,
    pub files: u64,
    pub bytes: u64,
}

fn path_hash(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    xxhash_rust::xxh3::xxh3_64(p.as_os_str().as_bytes())
}

impl RestoreTree {
    pub fn new(plan: &RestorePlan, delta: bool) -> Self {
        let mut tree = Self { wanted: delta.then(HashSet::new), ..Self::default() };
        tree.want(&plan.data().join(MARKER));
        tree
    }

    fn want(&mut self, p: &Path) {
        if let Some(w) = &mut self.wanted {
            w.insert(path_hash(p));
        }
    }

    fn is_wanted(&self, p: &Path) -> bool {
        self.wanted.as_ref().is_some_and(|w| w.contains(&path_hash(p)))
    }

    /// Takes in one manifest entry (first pass); `plan` learns the links.
    pub fn add(&mut self, plan: &mut RestorePlan, entry: &ManifestEntry) -> CliResult<()> {
        check_manifest_path(entry.path())?;
        let data = plan.data().to_path_buf();
        match entry {
            ManifestEntry::Dir(d) => {
                for (root, _) in plan.tablespaces() {
                    if let Some(child) = d.path.strip_prefix(root).and_then(|r| r.strip_prefix('/'))
                        && !child.contains('/')
                    {
                        self.tablespace_dirs.push((root.to_string(), child.to_string()));
                    }
                }
                let local = plan.local(&d.path)?;
                if !plan.links.contains_key(&d.path) {
                    self.want(&local);
                    self.dirs.push((local, d.owner.clone()));
                }
            }
            ManifestEntry::Link(l) if l.path.starts_with("pg_data/pg_tblspc/") => {
                let ts_root = l.path.trim_start_matches("pg_data/");
                let dest = plan.roots.get(ts_root).cloned().unwrap_or_else(|| PathBuf::from(&l.destination));
                let local = data.join(ts_root);
                self.want(&local);
                self.tablespace_links.push((local, dest));
            }
            ManifestEntry::Link(l) => {
                plan.add_link(l);
                self.want(&data.join(l.path.trim_start_matches("pg_data/")));
            }
            ManifestEntry::File(f) => {
                let local = plan.local(&f.path)?;
                self.want(&local);
                self.files += 1;
                self.bytes += f.size;
            }
        }
        Ok(())
    }

    /// Creates the roots, directories and links.
    pub fn build(&self, plan: &RestorePlan, as_root: bool) -> CliResult<()> {
        for root in plan.roots.values() {
            std::fs::create_dir_all(root).map_err(|e| io(root, "create", e))?;
        }
        let data = plan.data();
        let links =
            plan.links.iter().map(|(link, dest)| (data.join(link.trim_start_matches("pg_data/")), dest.clone()));
        for (local, dest) in links.chain(self.tablespace_links.iter().cloned()) {
            std::fs::create_dir_all(&dest).map_err(|e| io(&dest, "create", e))?;
            replace_with_symlink(&local, &dest)?;
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
            if self.is_wanted(&p) {
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
