//! The prior backup's files, read alongside the walk. Both are in manifest order (strictly
//! increasing paths), so one pass over each pairs them up: memory stays at a few manifest
//! frames whatever the number of files.
//!
//! A file whose size and modification time are those the prior recorded, and whose time is
//! from before the prior started, has not changed since the prior copied it (a write after
//! the prior started would have given it a later time). It is referenced, not read: not even
//! opened. The reference names the backup that stores the bytes, never one that references
//! them in turn, so a restore looks up one manifest per file, not a chain.

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::meta::{FileData, FileEntry, ManifestEntry};

use super::walk::SourceFile;
use crate::error::CliResult;
use crate::manifest::ManifestStream;

/// The prior backup's file entries as the walk thread sees them: received from [`feed`].
#[derive(Debug)]
pub struct PriorFiles {
    rx: tokio::sync::mpsc::Receiver<CliResult<FileEntry>>,
    next: Option<FileEntry>,
    ended: bool,
    label: BackupLabel,
    /// When the prior started (unix seconds).
    started: i64,
}

/// Entries read ahead of the walk.
const AHEAD: usize = 256;

impl PriorFiles {
    /// The receiving end, and the sending end for [`feed`].
    pub fn channel(label: BackupLabel, started: i64) -> (tokio::sync::mpsc::Sender<CliResult<FileEntry>>, Self) {
        let (tx, rx) = tokio::sync::mpsc::channel(AHEAD);
        (tx, Self { rx, next: None, ended: false, label, started })
    }

    /// The entry that references the prior's copy of `f` when `f` is unchanged since; `None`
    /// when it must be read. Calls must come in manifest order. Blocks (the walk thread).
    pub fn unchanged(&mut self, f: &SourceFile) -> CliResult<Option<FileEntry>> {
        loop {
            if self.next.is_none() && !self.ended {
                match self.rx.blocking_recv() {
                    Some(Ok(entry)) => self.next = Some(entry),
                    Some(Err(e)) => return Err(e),
                    None => self.ended = true,
                }
            }
            match &self.next {
                // Gone from the cluster since the prior.
                Some(entry) if entry.path.as_bytes() < f.path.as_bytes() => self.next = None,
                Some(entry) if entry.path == f.path => {
                    return Ok(self.next.take().and_then(|prior| reference(prior, &self.label, self.started, f)));
                }
                _ => return Ok(None),
            }
        }
    }

    /// Reads the prior's manifest to its end, so that its checksum is verified even where the
    /// walk ended first.
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

/// The entry of `f` as a reference to `prior` (the prior backup `label`'s entry for the same
/// path), or `None` when `f` may have changed since the prior started at `started`.
pub fn reference(prior: FileEntry, label: &BackupLabel, started: i64, f: &SourceFile) -> Option<FileEntry> {
    let unchanged = f.size > 0 && prior.size == f.size && prior.mtime == f.mtime && f.mtime < started;
    if !unchanged {
        return None;
    }
    let stored = prior.data.stored();
    let holder = match prior.data {
        FileData::Empty => return None,
        FileData::Same { backup, .. } => backup,
        FileData::Stored { .. } | FileData::Pages { .. } => label.clone(),
    };
    Some(FileEntry {
        path: prior.path,
        size: prior.size,
        mtime: f.mtime,
        owner: f.owner.clone(),
        sha256: prior.sha256,
        chunks: prior.chunks,
        data: FileData::Same { backup: holder, stored },
        page_errors: prior.page_errors,
    })
}

/// Sends the file entries of the prior's manifest, in order, until the manifest ends (verified),
/// an error (sent on), or the receiver is gone.
pub async fn feed(mut manifest: ManifestStream<'_>, tx: tokio::sync::mpsc::Sender<CliResult<FileEntry>>) {
    loop {
        let entry = match manifest.next().await {
            Ok(Some(ManifestEntry::File(file))) => Ok(file),
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let failed = entry.is_err();
        if tx.send(entry).await.is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use pgstrata_repo_format::Sha256Digest;
    use pgstrata_repo_format::meta::{Ownership, PartRef};

    const STARTED: i64 = 1_800_000_000;

    fn owner() -> Ownership {
        Ownership { mode: 0o600, user: Some("postgres".into()), group: Some("postgres".into()) }
    }

    fn source(path: &str, size: u64, mtime: i64) -> SourceFile {
        SourceFile { path: path.into(), fs_path: path.into(), size, mtime, owner: owner(), first_block: None }
    }

    fn prior(path: &str, size: u64, mtime: i64, data: FileData) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mtime,
            owner: owner(),
            sha256: Sha256Digest::of(path.as_bytes()),
            chunks: vec![Sha256Digest::of(b"chunk")],
            data,
            page_errors: vec![],
        }
    }

    fn stored() -> FileData {
        FileData::Stored { parts: vec![PartRef { pack: 0, offset: 0, len: 10, plain_len: 8192 }] }
    }

    fn label(text: &str) -> BackupLabel {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_file_with_the_recorded_size_and_an_older_time_is_referenced() {
        let l = label("20270115-080000F");
        let p = || prior("pg_data/base/5/1259", 8192, STARTED - 10, stored());
        let same = reference(p(), &l, STARTED, &source("pg_data/base/5/1259", 8192, STARTED - 10)).unwrap();
        assert_eq!(same.data, FileData::Same { backup: l.clone(), stored: 10 });
        assert_eq!((same.sha256, same.chunks.len()), (p().sha256, 1));
        // Grown, touched, or changed while (or after) the prior ran: read.
        assert!(reference(p(), &l, STARTED, &source("pg_data/base/5/1259", 16384, STARTED - 10)).is_none());
        assert!(reference(p(), &l, STARTED, &source("pg_data/base/5/1259", 8192, STARTED - 9)).is_none());
        let during = prior("pg_data/base/5/1259", 8192, STARTED, stored());
        assert!(reference(during, &l, STARTED, &source("pg_data/base/5/1259", 8192, STARTED)).is_none());
    }

    #[test]
    fn a_reference_names_the_backup_that_stores_the_bytes() {
        let (full, incr) = (label("20270115-080000F"), label("20270115-080000F_20270116-080000I"));
        let referenced =
            prior("pg_data/PG_VERSION", 3, STARTED - 100, FileData::Same { backup: full.clone(), stored: 7 });
        let entry = reference(referenced, &incr, STARTED, &source("pg_data/PG_VERSION", 3, STARTED - 100)).unwrap();
        assert_eq!(entry.data, FileData::Same { backup: full, stored: 7 });
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn the_walk_and_the_prior_are_paired_in_one_pass() {
        let l = label("20270115-080000F");
        let (tx, mut files) = PriorFiles::channel(l.clone(), STARTED);
        let old = STARTED - 50;
        for path in ["pg_data/a", "pg_data/b-dropped", "pg_data/c", "pg_data/e"] {
            tx.send(Ok(prior(path, 100, old, stored()))).await.unwrap();
        }
        drop(tx);
        let found = tokio::task::spawn_blocking(move || {
            let walk =
                [source("pg_data/a", 100, old), source("pg_data/c", 100, old + 1), source("pg_data/d-new", 100, old)];
            let found: Vec<bool> = walk.iter().map(|f| files.unchanged(f).unwrap().is_some()).collect();
            files.finish().unwrap();
            found
        })
        .await
        .unwrap();
        assert_eq!(found, [true, false, false]);
    }
}
