//! The prior backup's files, read alongside the walk. Both are in manifest order (strictly
//! increasing paths), so one pass over each pairs them up: memory stays at a few manifest
//! frames whatever the number of files.
//!
//! A file whose size and modification time are those the prior recorded, and whose time is
//! from before the prior started, has not changed since the prior copied it (a write after
//! the prior started would have given it a later time). It is referenced, not read: not even
//! opened. The reference names the backup that stores the bytes, never one that references
//! them in turn, so a restore looks up one manifest per file, not a chain.
//!
//! A changed segment of a relation's main fork is read page by page, and only the pages that
//! changed since the prior started are stored; the others map to where the prior's page map
//! says they are (see [`crate::pages`]).

use std::sync::Arc;

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::meta::{FileData, FileEntry, ManifestEntry, PageRun};
use pgstrata_repo_format::pg::{BLCKSZ, Lsn};

use super::walk::SourceFile;
use crate::chain::References;
use crate::error::CliResult;
use crate::manifest::ManifestStream;
use crate::pages::{holder_map, page_count};

/// A file of the prior, its data resolved to the backup that holds it.
#[derive(Debug)]
pub struct PriorFile {
    /// As the prior's manifest has it.
    pub entry: FileEntry,
    /// The backup whose packs hold the data, and its data (stored whole, or as pages).
    pub holder: BackupLabel,
    pub data: FileData,
}

/// How the copy of a changed main-fork file stores its pages.
#[derive(Debug)]
pub struct PageBase {
    /// Pages the prior had; pages past them are new.
    pub prior_pages: u32,
    /// When the prior started: pages stamped since changed.
    pub since: Lsn,
    /// Where every page of the prior is.
    pub map: Vec<PageRun>,
    /// By content, not LSN (`--delta`, a timeline change): the digests of the pages of the file
    /// as the prior read it; a page that differs is stored, the others mapped. Or, where the
    /// prior has no page digests, its chunk digests: the pages of a chunk that differs are stored.
    pub page_digests: Option<Vec<u64>>,
    pub chunks: Option<Vec<pgstrata_repo_format::Sha256Digest>>,
    /// From the WAL summaries: the only pages to read (sorted); every other page is the prior's,
    /// with the digest `known` (the prior's page digests) records.
    pub read: Option<Vec<u32>>,
    pub known: Option<Vec<u64>>,
    /// The entry referencing the prior's copy whole: used when no page needs storing and the
    /// size is the prior's.
    pub reference: Arc<FileEntry>,
}

/// What the copy does with a file.
#[derive(Debug)]
pub enum Decision {
    /// Unchanged since the prior: this entry, referencing the prior's copy.
    Unchanged(Box<FileEntry>),
    /// Changed: store the pages that changed since the prior, map the others.
    Pages(Arc<PageBase>),
    /// Read it, and reference the prior's copy with this entry if the content is the same
    /// (`--delta`, a timeline change: times are not trusted); otherwise store it whole.
    Compare(Arc<FileEntry>),
    /// Read and store it whole.
    Read,
}

/// Entries in path order, received from a feeding task and looked up by the walk thread in
/// path order: one pass over each, whatever the number of files.
#[derive(Debug)]
pub struct Sorted<T> {
    rx: tokio::sync::mpsc::Receiver<CliResult<T>>,
    next: Option<T>,
    ended: bool,
}

/// What a [`Sorted`] entry is looked up by.
pub trait Pathed {
    fn path(&self) -> &str;
}

impl Pathed for PriorFile {
    fn path(&self) -> &str {
        &self.entry.path
    }
}

impl Pathed for FileEntry {
    fn path(&self) -> &str {
        &self.path
    }
}

/// Entries read ahead of the walk.
const AHEAD: usize = 256;

impl<T: Pathed> Sorted<T> {
    /// The receiving end, and the sending end for the feeding task.
    pub fn channel() -> (tokio::sync::mpsc::Sender<CliResult<T>>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        (tx, Self { rx, next: None, ended: false })
    }

    /// The entry of `path`, if there is one; entries before it are passed over (gone from the
    /// cluster). Calls must come in path order. Blocks (the walk thread).
    pub fn take(&mut self, path: &str) -> CliResult<Option<T>> {
        loop {
            if self.next.is_none() && !self.ended {
                match self.rx.blocking_recv() {
                    Some(Ok(entry)) => self.next = Some(entry),
                    Some(Err(e)) => return Err(e),
                    None => self.ended = true,
                }
            }
            match &self.next {
                Some(e) if e.path().as_bytes() < path.as_bytes() => self.next = None,
                Some(e) if e.path() == path => return Ok(self.next.take()),
                _ => return Ok(None),
            }
        }
    }

    /// Receives the rest to the end (a feed that verifies what it read ends with an error when
    /// the verification fails).
    pub fn finish(mut self) -> CliResult<()> {
        while !self.ended {
            match self.rx.blocking_recv() {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => self.ended = true,
            }
        }
        Ok(())
    }
}

/// The prior backup's files as the walk thread sees them: received from [`feed`].
#[derive(Debug)]
pub struct PriorFiles {
    files: Sorted<PriorFile>,
    /// When the prior started (unix seconds, and its start LSN).
    started: i64,
    since: Lsn,
    /// Compare by content, never by size and time.
    by_content: bool,
    /// What changed since the prior started, from the WAL summaries.
    changes: Option<Arc<super::summary::Changes>>,
}

impl PriorFiles {
    /// The receiving end, and the sending end for [`feed`].
    pub fn channel(
        started: i64,
        since: Lsn,
        by_content: bool,
        changes: Option<Arc<super::summary::Changes>>,
    ) -> (tokio::sync::mpsc::Sender<CliResult<PriorFile>>, Self) {
        let (tx, files) = Sorted::channel();
        (tx, Self { files, started, since, by_content, changes })
    }

    /// What to do with `f`. Calls must come in manifest order. Blocks (the walk thread).
    pub fn decide(&mut self, f: &SourceFile) -> CliResult<Decision> {
        Ok(match self.files.take(&f.path)? {
            Some(prior) => match self.changes.as_deref().filter(|_| !self.by_content) {
                Some(changes) => decide_by_summary(prior, changes, self.started, self.since, f),
                None => decide(prior, self.started, self.since, self.by_content, f),
            },
            None => Decision::Read,
        })
    }

    /// Reads the prior's manifest to its end, so that its checksum is verified even where the
    /// walk ended first.
    pub fn finish(self) -> CliResult<()> {
        self.files.finish()
    }
}

/// What to do with `f`, given the prior's copy of the same path (the prior started at
/// `started`, LSN `since`; `by_content`: times and LSNs are not trusted).
pub fn decide(prior: PriorFile, started: i64, since: Lsn, by_content: bool, f: &SourceFile) -> Decision {
    let PriorFile { mut entry, holder, data } = prior;
    let prior_digests = std::mem::take(&mut entry.page_digests.0);
    if f.size == 0 || matches!(data, FileData::Empty) {
        return Decision::Read;
    }
    let map = holder_map(&holder, &data, entry.size);
    let (prior_size, prior_mtime) = (entry.size, entry.mtime);
    let unchanged = prior_size == f.size && prior_mtime == f.mtime && f.mtime < started;
    let reference = Arc::new(reference_to(entry, holder, &data, f));
    let whole_pages = |size: u64| size.is_multiple_of(BLCKSZ as u64);
    if f.main_fork
        && whole_pages(prior_size)
        && whole_pages(f.size)
        && (by_content || !unchanged)
        && let Some(map) = map
    {
        let prior_pages = page_count(prior_size);
        let by_page = by_content && prior_digests.len() == prior_pages as usize;
        let chunks = (by_content && !by_page).then(|| reference.chunks.clone());
        let page_digests = by_page.then_some(prior_digests);
        return Decision::Pages(Arc::new(PageBase {
            prior_pages,
            since,
            map,
            page_digests,
            chunks,
            read: None,
            known: None,
            reference,
        }));
    }
    match (by_content, unchanged) {
        (false, true) => Decision::Unchanged(Box::new(FileEntry::clone(&reference))),
        (true, _) if reference.size == f.size => Decision::Compare(reference),
        _ => Decision::Read,
    }
}

/// The entry of `f` referencing the prior's copy (`entry`, held by `holder` as `data`).
fn reference_to(entry: FileEntry, holder: BackupLabel, data: &FileData, f: &SourceFile) -> FileEntry {
    FileEntry {
        path: entry.path,
        size: entry.size,
        mtime: f.mtime,
        owner: f.owner.clone(),
        sha256: entry.sha256,
        chunks: entry.chunks,
        data: FileData::Same { stored: data.stored(), backup: holder },
        page_errors: entry.page_errors,
        // Not repeated in a reference: a restore takes them from the holder's entry.
        page_digests: Default::default(),
    }
}

/// [`decide`] with the WAL summaries: a main-fork segment of whole pages whose prior copy has
/// a page map and a digest for every page is read only where the summaries say it changed (or
/// grew, or was truncated), and referenced whole when nothing changed at the prior's size —
/// whatever its time says (a change no WAL record made, hint bits, is not worth a copy).
/// Anything else is decided as without summaries.
fn decide_by_summary(
    prior: PriorFile,
    changes: &super::summary::Changes,
    started: i64,
    since: Lsn,
    f: &SourceFile,
) -> Decision {
    use super::summary::ToRead;
    let whole_pages = |size: u64| size > 0 && size.is_multiple_of(BLCKSZ as u64);
    let prior_pages = page_count(prior.entry.size);
    let usable = f.main_fork
        && whole_pages(f.size)
        && whole_pages(prior.entry.size)
        && prior.entry.page_digests.0.len() == prior_pages as usize
        && !matches!(prior.data, FileData::Empty);
    let first_block = f.first_block.unwrap_or(0);
    let read = match usable.then(|| changes.to_read(&f.path, first_block, page_count(f.size), prior_pages)) {
        Some(ToRead::Pages(read)) => read,
        _ => return decide(prior, started, since, false, f),
    };
    let Some(map) = holder_map(&prior.holder, &prior.data, prior.entry.size) else {
        return decide(prior, started, since, false, f);
    };
    let PriorFile { mut entry, holder, data } = prior;
    let known = std::mem::take(&mut entry.page_digests.0);
    let reference = Arc::new(reference_to(entry, holder, &data, f));
    if read.is_empty() && f.size == reference.size {
        return Decision::Unchanged(Box::new(FileEntry::clone(&reference)));
    }
    Decision::Pages(Arc::new(PageBase {
        prior_pages,
        since,
        map,
        page_digests: None,
        chunks: None,
        read: Some(read),
        known: Some(known),
        reference,
    }))
}

/// Sends the file entries of the prior's manifest, in order, each with the data of the backup
/// holding it (looked up in `refs`, the prior's references), until the manifest ends
/// (verified), an error (sent on), or the receiver is gone.
pub async fn feed(
    mut manifest: ManifestStream<'_>,
    mut refs: References<'_>,
    tx: tokio::sync::mpsc::Sender<CliResult<PriorFile>>,
) {
    loop {
        let file = match manifest.next().await {
            Ok(Some(ManifestEntry::File(file))) => file,
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        // The entry as the prior has it, with the page digests of the holder's (a reference has none).
        let resolved = refs.resolve(file.clone()).await.map(|(stored, holder)| PriorFile {
            entry: FileEntry { page_digests: stored.page_digests, ..file },
            holder,
            data: stored.data,
        });
        let failed = resolved.is_err();
        if tx.send(resolved).await.is_err() || failed {
            return;
        }
    }
    if let Err(e) = refs.finish().await {
        let _ = tx.send(Err(e)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use pgstrata_repo_format::Sha256Digest;
    use pgstrata_repo_format::meta::{Ownership, PartRef};

    const STARTED: i64 = 1_800_000_000;
    const SINCE: Lsn = Lsn(0x1_0000_0000);

    fn owner() -> Ownership {
        Ownership { mode: 0o600, user: Some("postgres".into()), group: Some("postgres".into()) }
    }

    fn source(path: &str, size: u64, mtime: i64, main_fork: bool) -> SourceFile {
        SourceFile {
            path: path.into(),
            fs_path: path.into(),
            size,
            mtime,
            owner: owner(),
            first_block: main_fork.then_some(0),
            main_fork,
            pages: None,
            same_as: None,
            from_standby: false,
        }
    }

    fn stored(size: u64) -> FileData {
        FileData::Stored { parts: vec![PartRef { pack: 0, offset: 0, len: 10, plain_len: size }] }
    }

    fn prior(path: &str, size: u64, mtime: i64, holder: &BackupLabel, data: FileData) -> PriorFile {
        let entry = FileEntry {
            path: path.into(),
            size,
            mtime,
            owner: owner(),
            sha256: Sha256Digest::of(path.as_bytes()),
            chunks: vec![Sha256Digest::of(b"chunk")],
            data: data.clone(),
            page_errors: vec![],
            page_digests: Default::default(),
        };
        PriorFile { entry, holder: holder.clone(), data }
    }

    fn label(text: &str) -> BackupLabel {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_file_with_the_recorded_size_and_an_older_time_is_referenced() {
        let l = label("20270115-080000F");
        let p = || prior("pg_data/PG_VERSION", 3, STARTED - 10, &l, stored(3));
        let Decision::Unchanged(same) =
            decide(p(), STARTED, SINCE, false, &source("pg_data/PG_VERSION", 3, STARTED - 10, false))
        else {
            panic!("not referenced")
        };
        assert_eq!(same.data, FileData::Same { backup: l.clone(), stored: 10 });
        assert_eq!((same.sha256, same.chunks.len()), (p().entry.sha256, 1));
        // Grown, touched, or changed while (or after) the prior ran: read.
        for f in
            [source("pg_data/PG_VERSION", 4, STARTED - 10, false), source("pg_data/PG_VERSION", 3, STARTED - 9, false)]
        {
            assert!(matches!(decide(p(), STARTED, SINCE, false, &f), Decision::Read));
        }
        let during = prior("pg_data/PG_VERSION", 3, STARTED, &l, stored(3));
        assert!(matches!(
            decide(during, STARTED, SINCE, false, &source("pg_data/PG_VERSION", 3, STARTED, false)),
            Decision::Read
        ));
    }

    #[test]
    fn a_changed_main_fork_is_copied_by_pages_other_files_whole() {
        let l = label("20270115-080000F");
        let p = || prior("pg_data/base/5/16384", 3 * 8192, STARTED - 10, &l, stored(3 * 8192));
        let changed = source("pg_data/base/5/16384", 4 * 8192, STARTED + 5, true);
        let Decision::Pages(base) = decide(p(), STARTED, SINCE, false, &changed) else { panic!("not by pages") };
        assert_eq!((base.prior_pages, base.since), (3, SINCE));
        assert_eq!(base.map, [PageRun { first: 0, count: 3, backup: Some(l.clone()), at: 0 }]);
        // An FSM or VM fork, or a file of odd size: whole.
        let fsm = source("pg_data/base/5/16384", 4 * 8192, STARTED + 5, false);
        assert!(matches!(decide(p(), STARTED, SINCE, false, &fsm), Decision::Read));
        let odd = source("pg_data/base/5/16384", 8192 + 1, STARTED + 5, true);
        assert!(matches!(decide(p(), STARTED, SINCE, false, &odd), Decision::Read));
    }

    #[test]
    fn by_content_every_file_is_read_and_compared() {
        let l = label("20270115-080000F");
        let p = || prior("pg_data/PG_VERSION", 3, STARTED - 10, &l, stored(3));
        // Size and time as recorded, but not trusted: read, and referenced if the content is.
        let f = source("pg_data/PG_VERSION", 3, STARTED - 10, false);
        let Decision::Compare(reference) = decide(p(), STARTED, SINCE, true, &f) else { panic!("not compared") };
        assert_eq!(reference.data, FileData::Same { backup: l.clone(), stored: 10 });
        // Another size cannot be the same content.
        let grown = source("pg_data/PG_VERSION", 4, STARTED - 10, false);
        assert!(matches!(decide(p(), STARTED, SINCE, true, &grown), Decision::Read));
        // A main fork: by pages, against the chunk digests of the prior's copy.
        let rel = || prior("pg_data/base/5/16384", 2 * 8192, STARTED - 10, &l, stored(2 * 8192));
        let f = source("pg_data/base/5/16384", 2 * 8192, STARTED - 10, true);
        let Decision::Pages(base) = decide(rel(), STARTED, SINCE, true, &f) else { panic!("not by pages") };
        assert_eq!(base.chunks.as_deref(), Some(rel().entry.chunks.as_slice()));
        assert!(base.page_digests.is_none());
        // With the prior's page digests: page by page.
        let mut with_pages = rel();
        with_pages.entry.page_digests = pgstrata_repo_format::meta::PageDigests(vec![7, 8]);
        let Decision::Pages(base) = decide(with_pages, STARTED, SINCE, true, &f) else { panic!("not by pages") };
        assert_eq!((base.page_digests.as_deref(), base.chunks.is_none()), (Some([7, 8].as_slice()), true));
        assert_eq!(base.reference.data, FileData::Same { backup: l, stored: 10 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_walk_and_the_prior_are_paired_in_one_pass() {
        let l = label("20270115-080000F");
        let (tx, mut files) = PriorFiles::channel(STARTED, SINCE, false, None);
        let old = STARTED - 50;
        for path in ["pg_data/a", "pg_data/b-dropped", "pg_data/c", "pg_data/e"] {
            tx.send(Ok(prior(path, 100, old, &l, stored(100)))).await.unwrap();
        }
        drop(tx);
        let found = tokio::task::spawn_blocking(move || {
            let walk = [
                source("pg_data/a", 100, old, false),
                source("pg_data/c", 100, old + 1, false),
                source("pg_data/d-new", 100, old, false),
            ];
            let found: Vec<bool> =
                walk.iter().map(|f| matches!(files.decide(f).unwrap(), Decision::Unchanged(_))).collect();
            files.finish().unwrap();
            found
        })
        .await
        .unwrap();
        assert_eq!(found, [true, false, false]);
    }
}
