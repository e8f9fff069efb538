//! Walking PGDATA (and tablespaces) into what a backup copies, with pgBackRest's and
//! pg_basebackup's exclusions. Pure decisions (`excluded`, `relation_info`) are unit-tested.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{DirEntry, LinkEntry, Ownership, Target};

use crate::accounts::Names;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::remote::data::RemoteCluster;
use crate::remote::wire::{Found, FoundKind};

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
    /// A segment of a relation's main fork: every change of its pages is WAL-logged and stamps
    /// them, so a diff or incr can store only the changed pages (not so the FSM and VM forks).
    pub main_fork: bool,
    /// Set by the copy for a changed main-fork file with a prior copy: how to store its pages.
    pub pages: Option<std::sync::Arc<super::prior::PageBase>>,
    /// Set by the copy when times are not trusted: the entry referencing the prior's copy, used
    /// if what is read turns out to be the same.
    pub same_as: Option<std::sync::Arc<pgstrata_repo_format::meta::FileEntry>>,
    /// Read from the standby (`backup-standby`): `fs_path` is then the standby's copy.
    pub from_standby: bool,
}

/// What the walk finds, one at a time, in manifest order (strictly increasing paths).
#[derive(Clone, Debug)]
pub enum Item {
    Dir(DirEntry),
    Link(LinkEntry),
    File(SourceFile),
    /// A file unchanged since the prior backup: its entry, referencing the prior's copy. Not
    /// found by the walk itself: the copy turns a [`Item::File`] into this (see `super::prior`).
    Unchanged(Box<pgstrata_repo_format::meta::FileEntry>),
    /// A file an interrupted attempt of this backup stored, unchanged since: its entry (see
    /// `super::resume`).
    Resumed(Box<pgstrata_repo_format::meta::FileEntry>),
    /// The place of a file the backup writes at its end (`backup_label`, `tablespace_map`).
    Slot(String),
}

impl Item {
    pub fn path(&self) -> &str {
        match self {
            Self::Dir(d) => &d.path,
            Self::Link(l) => &l.path,
            Self::File(f) => &f.path,
            Self::Unchanged(e) | Self::Resumed(e) => &e.path,
            Self::Slot(p) => p,
        }
    }
}

/// Files of PGDATA's top level written from `pg_backup_stop`'s answer, not copied.
pub const STOP_FILES: &[&str] = &["backup_label", "tablespace_map"];

fn io_err(path: &Path, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", path.display()))
}

/// What a directory listing holds for one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The entry itself (file, directory, link), examined when reached.
    Entry,
    /// The contents of a directory (or of a linked directory), sorted as `name/`.
    Subtree,
    /// A reserved place ([`Item::Slot`]).
    Slot,
}

/// One directory being walked: its names in one string, and the order to visit them in.
/// Sorting a directory's subtree as `name/` makes a depth-first walk produce exactly the byte
/// order of whole paths (`1`, `1.5`, `1/2`), which the manifest requires.
struct Frame {
    dir: PathBuf,
    /// Manifest root of the target: `pg_data` or `pg_tblspc/<oid>`.
    prefix: String,
    /// Path inside the target (`base/5`), empty at its top.
    rel: String,
    names: String,
    order: Vec<(u32, u32, Kind)>,
    next: usize,
    /// Relfilenodes with an init fork (unlogged relations): only the init fork is copied.
    unlogged: HashSet<String>,
    /// What a remote listing said of each name not yet visited (empty for a local walk).
    found: HashMap<String, Found>,
}

/// One name of a directory listing: local, or as a database host's server listed it.
enum Listed {
    Local(std::fs::DirEntry),
    Found(Found),
}

/// One entry, examined: locally, or as listed by a database host's server.
enum Examined {
    Local(std::fs::Metadata),
    Found(Found),
}

impl Examined {
    fn is_symlink(&self) -> bool {
        match self {
            Self::Local(m) => m.file_type().is_symlink(),
            Self::Found(f) => f.kind == FoundKind::Link,
        }
    }

    fn is_dir(&self) -> bool {
        match self {
            Self::Local(m) => m.is_dir(),
            Self::Found(f) => f.kind == FoundKind::Dir,
        }
    }

    fn is_file(&self) -> bool {
        match self {
            Self::Local(m) => m.is_file(),
            Self::Found(f) => f.kind == FoundKind::File,
        }
    }

    fn len(&self) -> u64 {
        match self {
            Self::Local(m) => m.len(),
            Self::Found(f) => f.size,
        }
    }

    fn mtime(&self) -> i64 {
        match self {
            Self::Local(m) => m.mtime(),
            Self::Found(f) => f.mtime,
        }
    }
}

/// The owner as the database host named it.
fn found_owner(f: &Found) -> Ownership {
    Ownership { mode: f.mode, user: f.user.clone(), group: f.group.clone() }
}

impl Frame {
    fn name(&self, at: (u32, u32, Kind)) -> &str {
        &self.names[at.0 as usize..at.1 as usize]
    }

    fn child_rel(&self, name: &str) -> String {
        if self.rel.is_empty() { name.to_string() } else { format!("{}/{name}", self.rel) }
    }
}

/// A streaming walk of the data directory and every tablespace linked from `pg_tblspc`: one
/// directory listing per level is held, never the whole tree, so memory does not grow with
/// the number of files.
pub struct Walker {
    names: Names,
    relseg_blocks: u32,
    stack: Vec<Frame>,
    /// Tablespaces found in `pg_data/pg_tblspc`, walked after `pg_data` (their paths sort after it).
    tablespaces: BTreeMap<u32, PathBuf>,
    targets: Vec<Target>,
    /// The root entry of the next target, emitted before its frame is pushed.
    root: Option<(String, PathBuf)>,
    data_owner: Option<Ownership>,
    /// The cluster is on a database host (`pg1-host`): listed and examined through its server.
    remote: Option<std::sync::Arc<RemoteCluster>>,
    /// `--exclude`: paths relative to the data directory left out of the backup.
    exclude: Vec<String>,
}

impl std::fmt::Debug for Walker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Walker").field("depth", &self.stack.len()).field("targets", &self.targets.len()).finish()
    }
}

impl Walker {
    pub fn new(pg_data: &Path, relseg_blocks: u32) -> Self {
        let targets = vec![Target {
            name: "pg_data".into(),
            path: pg_data.display().to_string(),
            tablespace_oid: None,
            tablespace_name: None,
        }];
        Self {
            names: Names::load(),
            relseg_blocks,
            stack: Vec::new(),
            tablespaces: BTreeMap::new(),
            targets,
            root: Some(("pg_data".into(), pg_data.to_path_buf())),
            data_owner: None,
            remote: None,
            exclude: Vec::new(),
        }
    }

    /// Leaves out what `--exclude` names, as pgBackRest does: `dir/` leaves out what is in
    /// `dir` (the directory itself is kept), `name` leaves out `name` and, when it is a
    /// directory, all it holds.
    pub fn excluding(mut self, exclude: &[String]) -> Self {
        self.exclude = exclude.to_vec();
        self
    }

    /// Walks the cluster of a database host instead of a local one.
    pub fn on(mut self, remote: Option<std::sync::Arc<RemoteCluster>>) -> Self {
        self.remote = remote;
        self
    }

    /// The data directory and the tablespaces found (complete once the walk has ended).
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Owner of the data directory (once the walk has started).
    pub fn data_owner(&self) -> Ownership {
        self.data_owner.clone().unwrap_or(Ownership { mode: 0o700, user: None, group: None })
    }

    /// The next item in path order; `None` at the end.
    pub fn next_item(&mut self) -> CliResult<Option<Item>> {
        loop {
            if let Some((prefix, dir)) = self.root.take() {
                let owner = match &self.remote {
                    Some(remote) => found_owner(&remote.stat(&dir).map_err(|e| io_err(&dir, e))?),
                    None => self.names.owner(&std::fs::metadata(&dir).map_err(|e| io_err(&dir, e))?),
                };
                let entry = DirEntry { path: prefix.clone(), owner };
                if self.data_owner.is_none() {
                    self.data_owner = Some(entry.owner.clone());
                }
                let frame = self.list(dir, prefix, String::new())?;
                self.stack.push(frame);
                return Ok(Some(Item::Dir(entry)));
            }
            let Some(frame) = self.stack.last_mut() else {
                // pg_data is done: the tablespaces, in oid order (`pg_tblspc/<oid>` sorts so).
                let Some((oid, dest)) = self.tablespaces.pop_first() else { return Ok(None) };
                let name = format!("pg_tblspc/{oid}");
                self.targets.push(Target {
                    name: name.clone(),
                    path: dest.display().to_string(),
                    tablespace_oid: Some(oid),
                    tablespace_name: None,
                });
                self.root = Some((name, dest));
                continue;
            };
            let Some(&at) = frame.order.get(frame.next) else {
                self.stack.pop();
                continue;
            };
            frame.next += 1;
            let name = frame.name(at).to_string();
            let child_rel = frame.child_rel(&name);
            let path = frame.dir.join(&name);
            let prefix = frame.prefix.clone();
            match at.2 {
                Kind::Slot => return Ok(Some(Item::Slot(format!("{prefix}/{child_rel}")))),
                Kind::Subtree => match self.list(path, prefix, child_rel) {
                    Ok(frame) => self.stack.push(frame),
                    // Removed since listed (a dropped database): nothing to copy.
                    Err(e) if e.code == ErrorCode::FileMissing => {}
                    Err(e) => return Err(e),
                },
                Kind::Entry => {
                    if let Some(item) = self.entry(&name, path, &prefix, child_rel)? {
                        return Ok(Some(item));
                    }
                }
            }
        }
    }

    /// Examines one entry of the directory on top of the stack.
    fn entry(&mut self, name: &str, path: PathBuf, prefix: &str, child_rel: String) -> CliResult<Option<Item>> {
        let meta = match self.stack.last_mut().and_then(|f| f.found.remove(name)) {
            Some(found) => Examined::Found(found),
            None if self.remote.is_some() => return Ok(None),
            None => match std::fs::symlink_metadata(&path) {
                Ok(m) => Examined::Local(m),
                // Removed since listed (a dropped table, a recycled WAL file): nothing to copy.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&path, e)),
            },
        };
        let manifest_path = format!("{prefix}/{child_rel}");
        let owner = match &meta {
            Examined::Local(m) => self.names.owner(m),
            Examined::Found(f) => found_owner(f),
        };
        if meta.is_symlink() {
            let dest = match &meta {
                Examined::Local(_) => std::fs::read_link(&path).map_err(|e| io_err(&path, e))?,
                Examined::Found(f) => PathBuf::from(f.link.clone().unwrap_or_default()),
            };
            if let Some(oid) = tablespace_oid(prefix, &child_rel) {
                self.tablespaces.insert(oid, dest.clone());
            }
            return Ok(Some(Item::Link(LinkEntry {
                path: manifest_path,
                destination: dest.display().to_string(),
                owner,
            })));
        }
        if meta.is_dir() {
            return Ok(Some(Item::Dir(DirEntry { path: manifest_path, owner })));
        }
        if !meta.is_file() {
            return Ok(None);
        }
        let Some(frame) = self.stack.last() else { return Ok(None) };
        let relation = relation_info(name);
        if let Some((node, fork, _)) = relation
            && frame.unlogged.contains(node)
            && fork != Some("init")
        {
            return Ok(None);
        }
        let rel = frame.rel.as_str();
        let in_relation_dir = if prefix == "pg_data" {
            rel == "global" || (rel.starts_with("base/") && rel.matches('/').count() == 1)
        } else {
            // <tablespace>/PG_<ver>_<catalog>/<db oid>/
            rel.matches('/').count() == 1
        };
        let first_block = match relation {
            Some((_, _, seg)) if in_relation_dir => Some(seg.saturating_mul(self.relseg_blocks)),
            _ => None,
        };
        let main_fork = first_block.is_some() && relation.is_some_and(|(_, fork, _)| fork.is_none());
        Ok(Some(Item::File(SourceFile {
            path: manifest_path,
            fs_path: path,
            size: meta.len(),
            mtime: meta.mtime(),
            owner,
            first_block,
            main_fork,
            pages: None,
            same_as: None,
            from_standby: false,
        })))
    }

    /// Lists one directory into a frame: exclusions applied, visiting order decided.
    fn list(&self, dir: PathBuf, prefix: String, rel: String) -> CliResult<Frame> {
        let removed = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::NotFound && !rel.is_empty() {
                CliError::new(ErrorCode::FileMissing, format!("{} was removed", dir.display()))
            } else {
                io_err(&dir, e)
            }
        };
        // Local entries are taken one at a time as the directory is read (only names are kept);
        // a remote listing arrives whole.
        let listing: Box<dyn Iterator<Item = std::io::Result<Listed>>> = match &self.remote {
            Some(remote) => Box::new(remote.list(&dir).map_err(removed)?.into_iter().map(|f| Ok(Listed::Found(f)))),
            None => Box::new(std::fs::read_dir(&dir).map_err(removed)?.map(|e| e.map(Listed::Local))),
        };
        let is_pg_data = prefix == "pg_data";
        let exclude = &self.exclude;
        let user_excluded = |rel: &str| {
            exclude.iter().any(|e| match e.strip_suffix('/') {
                Some(dir) => rel.strip_prefix(dir).is_some_and(|r| r.starts_with('/')),
                None => rel == e || rel.strip_prefix(e.as_str()).is_some_and(|r| r.starts_with('/')),
            })
        };
        let mut frame = Frame {
            dir,
            prefix,
            rel,
            names: String::new(),
            order: Vec::new(),
            next: 0,
            unlogged: HashSet::new(),
            found: HashMap::new(),
        };
        let add = |frame: &mut Frame, name: &str, kind: Kind| {
            let start = u32::try_from(frame.names.len()).unwrap_or(u32::MAX);
            frame.names.push_str(name);
            let end = u32::try_from(frame.names.len()).unwrap_or(u32::MAX);
            frame.order.push((start, end, kind));
        };
        for entry in listing {
            let entry = entry.map_err(|e| io_err(&frame.dir, e))?;
            let (name, is_dir, is_symlink) = match &entry {
                Listed::Local(entry) => {
                    // A name that is not UTF-8 cannot be recorded exactly in the manifest;
                    // renaming it would restore a different cluster, so the backup stops.
                    let name = entry.file_name().into_string().map_err(|raw| {
                        CliError::new(
                            ErrorCode::FileRead,
                            format!(
                                "unable to back up {}: the file name {raw:?} is not valid UTF-8",
                                frame.dir.display()
                            ),
                        )
                        .hint("rename or remove that file; PostgreSQL itself never creates such names")
                    })?;
                    let Ok(file_type) = entry.file_type() else { continue };
                    (name, file_type.is_dir(), file_type.is_symlink())
                }
                Listed::Found(f) => (f.name.clone(), f.kind == FoundKind::Dir, f.kind == FoundKind::Link),
            };
            let child_rel = frame.child_rel(&name);
            if is_pg_data
                && (excluded(&child_rel, &name, is_dir)
                    || (frame.rel.is_empty() && STOP_FILES.contains(&name.as_str()))
                    || user_excluded(&child_rel))
            {
                continue;
            }
            if !is_pg_data && (name.starts_with("pgsql_tmp") || name == "pg_internal.init") {
                continue;
            }
            if let Some((node, Some("init"), _)) = relation_info(&name) {
                frame.unlogged.insert(node.to_string());
            }
            add(&mut frame, &name, Kind::Entry);
            // Contents of directories, and of linked directories inside PGDATA (restored through
            // the link) other than tablespaces and the emptied directories.
            let walk_into = if is_dir {
                !(is_pg_data && EMPTY_DIRS.contains(&child_rel.as_str()))
            } else {
                is_symlink
                    && is_pg_data
                    && tablespace_oid(&frame.prefix, &child_rel).is_none()
                    && !EMPTY_DIRS.contains(&child_rel.as_str())
                    && match &entry {
                        Listed::Local(entry) => std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()),
                        Listed::Found(f) => f.link_dir,
                    }
            };
            if walk_into {
                add(&mut frame, &name, Kind::Subtree);
            }
            if let Listed::Found(f) = entry {
                frame.found.insert(name, f);
            }
        }
        if is_pg_data && frame.rel.is_empty() {
            for name in STOP_FILES {
                add(&mut frame, name, Kind::Slot);
            }
        }
        let names = std::mem::take(&mut frame.names);
        let key = |at: &(u32, u32, Kind)| {
            let name = &names.as_bytes()[at.0 as usize..at.1 as usize];
            name.iter().copied().chain((at.2 == Kind::Subtree).then_some(b'/'))
        };
        frame.order.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        frame.order.shrink_to_fit();
        frame.names = names;
        frame.names.shrink_to_fit();
        Ok(frame)
    }
}

/// The oid of a tablespace link `pg_data/pg_tblspc/<oid>` (PostgreSQL names them by number).
fn tablespace_oid(prefix: &str, child_rel: &str) -> Option<u32> {
    let name = child_rel.strip_prefix("pg_tblspc/")?;
    (prefix == "pg_data" && !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()))
        .then(|| name.parse().ok())
        .flatten()
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

    fn walk_all(dir: &Path) -> (Vec<String>, Vec<Target>) {
        let mut w = Walker::new(dir, 131_072);
        let mut paths = Vec::new();
        while let Some(item) = w.next_item().expect("walk") {
            paths.push(item.path().to_string());
        }
        (paths, w.targets().to_vec())
    }

    #[test]
    fn the_walk_yields_whole_paths_in_byte_order_with_exclusions_and_slots() {
        let root = tempfile::tempdir().expect("tempdir");
        let pg = root.path().join("pg");
        let ts = root.path().join("ts");
        for d in ["base/1", "base/10", "pg_wal/archive_status", "pg_tblspc", "global"] {
            std::fs::create_dir_all(pg.join(d)).expect("mkdir");
        }
        std::fs::create_dir_all(ts.join("PG_15_1/5")).expect("mkdir");
        for f in [
            "PG_VERSION",
            "base/1.5",
            "base/1/2",
            "base/1/16384",
            "base/1/16384_init",
            "base/1/16385",
            "base/1/16385.1",
            "base/10/3",
            "pg_wal/000000010000000000000001",
            "postmaster.pid",
            "backup_label",
            "global/pg_internal.init",
        ] {
            std::fs::write(pg.join(f), b"x").expect("write");
        }
        std::fs::write(ts.join("PG_15_1/5/16400"), b"y").expect("write");
        std::os::unix::fs::symlink(&ts, pg.join("pg_tblspc/16400")).expect("link");
        let (paths, targets) = walk_all(&pg);
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paths, sorted, "strictly increasing");
        assert_eq!(
            paths,
            [
                "pg_data",
                "pg_data/PG_VERSION",
                "pg_data/backup_label",
                "pg_data/base",
                "pg_data/base/1",
                "pg_data/base/1.5",
                "pg_data/base/1/16384_init",
                "pg_data/base/1/16385",
                "pg_data/base/1/16385.1",
                "pg_data/base/1/2",
                "pg_data/base/10",
                "pg_data/base/10/3",
                "pg_data/global",
                "pg_data/pg_tblspc",
                "pg_data/pg_tblspc/16400",
                "pg_data/pg_wal",
                "pg_data/tablespace_map",
                "pg_tblspc/16400",
                "pg_tblspc/16400/PG_15_1",
                "pg_tblspc/16400/PG_15_1/5",
                "pg_tblspc/16400/PG_15_1/5/16400",
            ]
        );
        assert_eq!(targets.len(), 2);
        assert_eq!(targets[1].name, "pg_tblspc/16400");
        assert_eq!(targets[1].tablespace_oid, Some(16400));
    }

    #[test]
    fn exclude_leaves_out_what_it_names_as_pgbackrest_does() {
        let root = tempfile::tempdir().expect("tempdir");
        let pg = root.path().join("pg");
        for d in ["base/1", "junk/deep", "junkyard", "keepdir"] {
            std::fs::create_dir_all(pg.join(d)).expect("mkdir");
        }
        for f in ["PG_VERSION", "base/1/2", "junk/a", "junk/deep/b", "junkyard/c", "keepdir/d", "notes.txt"] {
            std::fs::write(pg.join(f), b"x").expect("write");
        }
        let walk = |exclude: &[&str]| {
            let exclude: Vec<String> = exclude.iter().map(|e| e.to_string()).collect();
            let mut w = Walker::new(&pg, 131_072).excluding(&exclude);
            let mut paths = Vec::new();
            while let Some(item) = w.next_item().expect("walk") {
                paths.push(item.path().trim_start_matches("pg_data/").to_string());
            }
            paths
        };
        let all = walk(&[]);
        assert!(all.iter().any(|p| p == "junk/deep/b") && all.iter().any(|p| p == "notes.txt"));
        // A name: it and all it holds; not a name that only starts the same.
        let paths = walk(&["junk", "notes.txt"]);
        assert!(!paths.iter().any(|p| p == "junk" || p.starts_with("junk/") || p == "notes.txt"), "{paths:?}");
        assert!(paths.iter().any(|p| p == "junkyard/c"), "{paths:?}");
        // `dir/`: what it holds, the directory kept.
        let paths = walk(&["keepdir/"]);
        assert!(paths.iter().any(|p| p == "keepdir") && !paths.iter().any(|p| p == "keepdir/d"), "{paths:?}");
        assert!(paths.iter().any(|p| p == "base/1/2"));
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
