//! The shape of the restored directories: which directories and links the manifest has, and
//! — for `--delta` — what is in place that the backup does not have. Directories and links are made before any file; extras are removed inside the guards
//! (in a tablespace location, only inside this cluster's own directory).

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{ManifestEntry, Ownership};

use crate::anchor::{self, Anchors};
use crate::error::CliResult;
use crate::restore::guard::MARKER;
use crate::restore::owner::{apply_owner_to, io};
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
    /// Links restored as directories (not `--link-all`, not in `--link-map`): the link, and
    /// whether the backup has anything below it.
    demoted: Vec<(pgstrata_repo_format::meta::LinkEntry, bool)>,
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
        for (link, below) in &mut self.demoted {
            if entry.path().strip_prefix(link.path.as_str()).is_some_and(|r| r.starts_with('/')) {
                *below = true;
            }
        }
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
                let local = data.join(l.path.trim_start_matches("pg_data/"));
                self.want(&local);
                if !plan.add_link(l) {
                    // A directory in its place, owned as the data directory is.
                    let owner = Ownership { mode: 0o700, ..l.owner.clone() };
                    self.dirs.push((local, owner));
                    self.demoted.push((l.clone(), false));
                }
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

    /// After the first pass: each link restored as a directory is reported as pgBackRest
    /// reports it; one with nothing below it in the backup (a file link: its target's content
    /// is not stored) stays a link, since an empty directory cannot stand in for a file.
    pub fn settle_links(&mut self, plan: &mut RestorePlan) {
        for (link, below) in std::mem::take(&mut self.demoted) {
            let name = link.path.trim_start_matches("pg_data/");
            if below || name == "pg_wal" {
                tracing::warn!(
                    "contents of directory link '{name}' will be restored in a directory at the same location \
                     (--link-all or --link-map={name}=PATH restores it as a link)"
                );
                continue;
            }
            let local = plan.data().join(name);
            self.dirs.retain(|(d, _)| d != &local);
            tracing::warn!(
                "link '{name}' has no contents in the backup and is restored as a link to {}",
                link.destination
            );
            plan.keep_link(&link);
        }
    }

    /// Creates the roots and link destinations (directories given by the caller or recorded by
    /// the backup, trusted as given), opens them as the [`Anchors`] every later write goes
    /// through, then makes the directories and links of the backup below them: a link the
    /// backup does not record where it has a directory is removed and a real directory made,
    /// never followed.
    pub fn build(&self, plan: &RestorePlan, as_root: bool) -> CliResult<Anchors> {
        let data = plan.data();
        let links: Vec<(PathBuf, PathBuf)> = plan
            .links
            .iter()
            .map(|(link, dest)| (data.join(link.trim_start_matches("pg_data/")), dest.clone()))
            .chain(self.tablespace_links.iter().cloned())
            .collect();
        let tops: Vec<&Path> =
            plan.roots.values().map(PathBuf::as_path).chain(links.iter().map(|(_, d)| d.as_path())).collect();
        for top in &tops {
            std::fs::create_dir_all(top).map_err(|e| io(top, "create", e))?;
        }
        let anchors = Anchors::open(tops.iter().copied()).map_err(|e| io(data, "open", e))?;
        // Parents before children, whatever order the manifest listed them in.
        let mut dirs: Vec<&(PathBuf, Ownership)> = self.dirs.iter().collect();
        dirs.sort_by_key(|(p, _)| p.components().count());
        for (local, owner) in dirs {
            let dir = match anchors.root(local) {
                Some(fd) => std::fs::File::from(fd.try_clone_to_owned().map_err(|e| io(local, "open", e))?),
                None => anchors.parent(local).and_then(|p| p.make_dir(0o700)).map_err(|e| io(local, "create", e))?,
            };
            apply_owner_to(&dir, local, owner, as_root, false)?;
        }
        for (local, dest) in &links {
            anchors.parent(local).and_then(|p| p.make_link(dest)).map_err(|e| io(local, "create link", e))?;
        }
        Ok(anchors)
    }

    /// Delta: removes what the backup does not have. In the data directory everything is
    /// examined; in a tablespace location only what the backup has there (this cluster's own
    /// directory), never another cluster's; link destinations are not descended into, nor is
    /// any link (a link the backup lacks is removed itself).
    pub fn remove_extras(&self, plan: &RestorePlan, anchors: &Anchors) -> CliResult<()> {
        let stop: HashSet<PathBuf> = plan.roots.values().chain(plan.links.values()).cloned().collect();
        for (name, root) in &plan.roots {
            if let Some(fd) = anchors.root(root) {
                self.visit(fd, root, &stop, name != "pg_data")?;
            }
        }
        Ok(())
    }

    fn visit(&self, dir: BorrowedFd<'_>, path: &Path, stop: &HashSet<PathBuf>, keep_unknown: bool) -> CliResult<()> {
        for (name, kind) in anchor::entries(dir).map_err(|e| io(path, "read", e))? {
            let p = path.join(&name);
            if stop.contains(&p) {
                continue;
            }
            if self.is_wanted(&p) {
                if kind == rustix::fs::FileType::Directory {
                    let sub = anchor::open_dir_at(dir, &name).map_err(|e| io(&p, "open", e))?;
                    self.visit(sub.as_fd(), &p, stop, false)?;
                }
            } else if !keep_unknown {
                anchor::remove_at(dir, &name).map_err(|e| io(&p, "remove", e))?;
            }
        }
        Ok(())
    }
}
