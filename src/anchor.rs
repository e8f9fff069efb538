//! Paths reached without following links. Restore runs as root in Jobs and writes into
//! directories that another user (`postgres`) owns and can change at any moment: a path looked up
//! by name could pass through a link planted there and land anywhere on the host. An [`Anchors`]
//! holds a descriptor for each directory restore was given (the data directory, tablespace
//! locations, the destinations of the links the backup records); every other path is reached from
//! one of them one component at a time with `O_NOFOLLOW`, and every write, chown, chmod, rename
//! and remove is done relative to the directory so reached (`openat`, `renameat`, `unlinkat`,
//! `fchown` on the opened file). A link in the way is an error, never followed; the caller
//! replaces links the backup does not record before it writes (see `restore::tree`).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The directories a restore may write into, each opened once by the path it was given (those
/// paths are trusted: the caller's own configuration or the backup's recorded links).
#[derive(Debug, Default)]
pub struct Anchors {
    /// Longest path first, so a root inside another one wins.
    roots: Vec<(PathBuf, OwnedFd)>,
}

/// The directory holding a path, reached without following a link, and the path's last name.
#[derive(Debug)]
pub struct Parent {
    dir: OwnedFd,
    pub name: OsString,
}

impl AsFd for Parent {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// Opens the directory `name` inside `dir`, refusing a link.
pub fn open_dir_at(dir: impl AsFd, name: impl AsRef<OsStr>) -> std::io::Result<OwnedFd> {
    let (dir, name) = (dir.as_fd(), name.as_ref());
    rustix::fs::openat(dir, name, dir_flags(), Mode::empty()).map_err(|e| {
        // A link opened with O_DIRECTORY | O_NOFOLLOW gives ENOTDIR: say which it is.
        let link = e == rustix::io::Errno::NOTDIR
            && rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Symlink);
        refused(name, if link { rustix::io::Errno::LOOP } else { e })
    })
}

/// A link in the way reads as what it is (`ELOOP`/`ENOTDIR` say little to a user).
fn refused(name: &OsStr, e: rustix::io::Errno) -> std::io::Error {
    if e == rustix::io::Errno::LOOP {
        return std::io::Error::other(format!(
            "{} is a link where a directory or file is expected: not followed",
            name.to_string_lossy()
        ));
    }
    e.into()
}

impl Anchors {
    /// Opens each directory (it must exist).
    pub fn open<'a>(dirs: impl IntoIterator<Item = &'a Path>) -> std::io::Result<Self> {
        let mut roots = Vec::new();
        for dir in dirs {
            let fd = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| std::io::Error::other(format!("unable to open {}: {e}", dir.display())))?;
            roots.push((dir.to_path_buf(), fd));
        }
        roots.sort_by_key(|(p, _)| std::cmp::Reverse(p.as_os_str().len()));
        Ok(Self { roots })
    }

    /// The root `path` lies in and the rest of it.
    fn split<'p>(&self, path: &'p Path) -> std::io::Result<(BorrowedFd<'_>, &'p Path)> {
        self.roots
            .iter()
            .find_map(|(root, fd)| path.strip_prefix(root).ok().map(|rest| (fd.as_fd(), rest)))
            .ok_or_else(|| std::io::Error::other(format!("{} is outside every restored directory", path.display())))
    }

    /// The directory holding `path`, reached from its root without following a link.
    pub fn parent(&self, path: &Path) -> std::io::Result<Parent> {
        let (root, rest) = self.split(path)?;
        let mut names = Vec::new();
        for c in rest.components() {
            match c {
                Component::Normal(n) => names.push(n),
                _ => return Err(std::io::Error::other(format!("{} is not a plain path", path.display()))),
            }
        }
        let Some(name) = names.pop() else {
            return Err(std::io::Error::other(format!("{} is a restored directory itself", path.display())));
        };
        let mut dir = match names.split_first() {
            None => root.try_clone_to_owned()?,
            Some((first, _)) => open_dir_at(root, first)?,
        };
        for n in names.iter().skip(1) {
            dir = open_dir_at(&dir, n)?;
        }
        Ok(Parent { dir, name: name.to_os_string() })
    }

    /// The root `path`'s descriptor (a directory given by the caller).
    pub fn root(&self, path: &Path) -> Option<BorrowedFd<'_>> {
        self.roots.iter().find(|(r, _)| r == path).map(|(_, fd)| fd.as_fd())
    }
}

impl Parent {
    /// Opens the file itself: `flags` plus `O_NOFOLLOW` (a link is refused).
    pub fn open(&self, flags: OFlags, mode: u32) -> std::io::Result<File> {
        let fd = rustix::fs::openat(
            self,
            &self.name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| refused(&self.name, e))?;
        Ok(File::from(fd))
    }

    /// What is at the name, the name itself if it is a link; `None` when nothing is.
    pub fn kind(&self) -> std::io::Result<Option<rustix::fs::Stat>> {
        match rustix::fs::statat(self, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes what is at the name: a file or a link itself, or a directory with everything in
    /// it (never following a link inside). Nothing there is fine.
    pub fn remove(&self) -> std::io::Result<()> {
        remove_at(self, &self.name)
    }

    /// Renames `from` (a name in the same directory) to this name, replacing what is there (a
    /// link is replaced, not followed; a directory is removed first).
    pub fn rename_from(&self, from: &OsStr) -> std::io::Result<()> {
        match rustix::fs::renameat(self, from, self, &self.name) {
            Err(rustix::io::Errno::ISDIR | rustix::io::Errno::NOTEMPTY | rustix::io::Errno::EXIST) => {
                self.remove()?;
                rustix::fs::renameat(self, from, self, &self.name).map_err(Into::into)
            }
            r => r.map_err(Into::into),
        }
    }

    /// Removes `name` (a file or link in the same directory), if there.
    pub fn remove_name(&self, name: &OsStr) -> std::io::Result<()> {
        match rustix::fs::unlinkat(self, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The directory itself, for a sync of its entries.
    pub fn sync(&self) -> std::io::Result<()> {
        rustix::fs::fsync(self).map_err(Into::into)
    }

    /// This path's name in the same directory under another name.
    pub fn sibling(&self, name: OsString) -> std::io::Result<Self> {
        Ok(Self { dir: self.dir.try_clone()?, name })
    }

    /// Makes the name a real directory: a link or file there is removed first, an existing
    /// directory kept. Returns it opened (for its owner and mode).
    pub fn make_dir(&self, mode: u32) -> std::io::Result<File> {
        match self.kind()? {
            Some(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {}
            Some(_) => {
                self.remove()?;
                rustix::fs::mkdirat(self, &self.name, Mode::from_bits_truncate(mode))?;
            }
            None => match rustix::fs::mkdirat(self, &self.name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => return Err(e.into()),
            },
        }
        Ok(File::from(open_dir_at(self, &self.name)?))
    }

    /// Makes the name a link to `dest`: kept when it already is one, else what is there is
    /// removed (not followed) and the link made.
    pub fn make_link(&self, dest: &Path) -> std::io::Result<()> {
        if let Ok(existing) = rustix::fs::readlinkat(self, &self.name, Vec::new())
            && existing.as_bytes() == dest.as_os_str().as_bytes()
        {
            return Ok(());
        }
        self.remove()?;
        rustix::fs::symlinkat(dest, self, &self.name).map_err(Into::into)
    }
}

/// Levels of a directory tree [`remove_at`] descends, at most: one directory descriptor is open
/// per level, and a planted tree can be arbitrarily deep (PostgreSQL's are a few levels).
const MAX_DEPTH: usize = 64;

/// Removes `name` inside `dir`: a file or link itself, or a directory tree, descending only
/// through directories opened with `O_NOFOLLOW` (a link inside is removed, its target untouched).
/// A tree deeper than [`MAX_DEPTH`] is an error, left for a person to look at.
pub fn remove_at(dir: impl AsFd, name: &OsStr) -> std::io::Result<()> {
    remove_below(dir.as_fd(), name, 0)
}

fn remove_below(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> std::io::Result<()> {
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(rustix::io::Errno::ISDIR) | Err(rustix::io::Errno::PERM) => {}
        Err(e) => return Err(e.into()),
    }
    if depth >= MAX_DEPTH {
        return Err(std::io::Error::other(format!(
            "{} holds directories more than {MAX_DEPTH} levels deep: not removed",
            name.to_string_lossy()
        )));
    }
    let sub = open_dir_at(dir, name)?;
    for entry in rustix::fs::Dir::read_from(&sub)? {
        let entry = entry?;
        let n = OsStr::from_bytes(entry.file_name().to_bytes());
        if n == "." || n == ".." {
            continue;
        }
        remove_below(sub.as_fd(), n, depth + 1)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The names in a directory opened by descriptor, with what each is (not following links).
pub fn entries(dir: impl AsFd) -> std::io::Result<Vec<(OsString, FileType)>> {
    let dir = dir.as_fd();
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = OsStr::from_bytes(entry.file_name().to_bytes());
        if n == "." || n == ".." {
            continue;
        }
        let kind = match entry.file_type() {
            FileType::Unknown => {
                FileType::from_raw_mode(rustix::fs::statat(dir, n, AtFlags::SYMLINK_NOFOLLOW)?.st_mode)
            }
            k => k,
        };
        out.push((n.to_os_string(), kind));
    }
    Ok(out)
}

/// `options` made to refuse a link at the file's name (`O_NOFOLLOW`): for the files pgstrata
/// opens as root in directories others may write to (logs, locks, the spool, stop files).
pub fn no_follow(options: &mut std::fs::OpenOptions) -> &mut std::fs::OpenOptions {
    use std::os::unix::fs::OpenOptionsExt;
    options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
}

/// Opens a file to create it, never through a link at its name: `O_CREAT | O_NOFOLLOW`, and
/// created new with `mode` (a leftover at the name is removed first when `replace`). For files
/// pgstrata writes as root into directories others may write to (logs, locks, spool).
pub fn create_nofollow(path: &Path, mode: u32, append: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.create(true).mode(mode);
    if append {
        o.append(true);
    } else {
        o.write(true).truncate(true);
    }
    no_follow(&mut o).open(path).map_err(|e| {
        if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            std::io::Error::other(format!("{} is a link: not followed", path.display()))
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_link_on_the_way_is_refused_and_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let (root, outside) = (dir.path().join("root"), dir.path().join("outside"));
        std::fs::create_dir_all(root.join("base")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("base/1")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), root.join("base/file")).unwrap();
        let anchors = Anchors::open([root.as_path()]).unwrap();

        // Through a directory link: refused.
        let err = anchors.parent(&root.join("base/1/victim")).unwrap_err();
        assert!(err.to_string().contains("is a link"), "{err}");
        // A file link: not opened for writing...
        let p = anchors.parent(&root.join("base/file")).unwrap();
        assert!(p.open(OFlags::WRONLY, 0).is_err());
        // ...replaced by a directory, its target untouched.
        let d = anchors.parent(&root.join("base/1")).unwrap();
        d.make_dir(0o700).unwrap();
        assert!(std::fs::symlink_metadata(root.join("base/1")).unwrap().is_dir());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        // A tree holding a link is removed without touching the link's target.
        std::os::unix::fs::symlink(&outside, root.join("base/1/in")).unwrap();
        anchors.parent(&root.join("base")).unwrap().remove().unwrap();
        // A planted tree deeper than the bound is refused, not walked down without end.
        let deep: PathBuf = (0..MAX_DEPTH + 1).fold(root.join("deep"), |p, i| p.join(i.to_string()));
        std::fs::create_dir_all(&deep).unwrap();
        assert!(anchors.parent(&root.join("deep")).unwrap().remove().is_err());
        assert!(root.join("deep").exists());
        assert!(!root.join("base").exists());
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"keep");
        // Outside every root: refused.
        assert!(anchors.parent(&outside.join("victim")).is_err());
    }

    #[test]
    fn create_nofollow_refuses_a_planted_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("target"), b"keep").unwrap();
        std::os::unix::fs::symlink(dir.path().join("target"), dir.path().join("log")).unwrap();
        assert!(create_nofollow(&dir.path().join("log"), 0o640, true).is_err());
        assert_eq!(std::fs::read(dir.path().join("target")).unwrap(), b"keep");
    }
}
