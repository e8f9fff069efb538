//! The backups a diff or incr references, read alongside its own manifest (by restore, and by
//! the next backup for its prior's references). A file the backup did not copy names the backup
//! that stores it, and the runs of a page-level file name the backups that store its pages
//! (references are resolved when the backup is taken, never chained), so each file needs one
//! lookup per holder, and since every manifest is in path order, one pass over each referenced
//! manifest serves a whole restore: memory stays at a few frames per referenced backup,
//! whatever the number of files.

use std::collections::BTreeMap;

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::meta::{BackupCatalog, FileData, FileEntry, ManifestEntry};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::manifest::ManifestStream;
use crate::pages::{PageSource, Paged, holder_map};
use crate::repo::Repo;

/// Open cursors over the referenced backups' manifests.
#[derive(Debug)]
pub struct References<'a> {
    repo: &'a Repo,
    catalog: &'a BackupCatalog,
    /// The backup being restored (for messages).
    restoring: BackupLabel,
    cursors: BTreeMap<BackupLabel, Cursor<'a>>,
}

#[derive(Debug)]
struct Cursor<'a> {
    stream: ManifestStream<'a>,
    /// The entry read last (asked for again when several holders' lookups meet at one path).
    next: Option<FileEntry>,
}

impl<'a> References<'a> {
    pub fn new(repo: &'a Repo, catalog: &'a BackupCatalog, restoring: BackupLabel) -> Self {
        Self { repo, catalog, restoring, cursors: BTreeMap::new() }
    }

    /// `entry` with its data as stored: for a reference, the data of the backup holding the
    /// bytes, checked to be the same file. Returns it with the backup whose packs hold it.
    pub async fn resolve(&mut self, mut entry: FileEntry) -> CliResult<(FileEntry, BackupLabel)> {
        let FileData::Same { backup, .. } = &entry.data else { return Ok((entry, self.restoring.clone())) };
        let backup = backup.clone();
        let stored = self.stored(&backup, &entry.path).await?;
        if stored.size != entry.size || stored.sha256 != entry.sha256 {
            return Err(self.broken(&backup, &entry.path, "records different content"));
        }
        if matches!(stored.data, FileData::Same { .. }) {
            return Err(self.broken(&backup, &entry.path, "references it in turn"));
        }
        entry.data = stored.data;
        // A reference does not repeat the page digests; its holder's are of the same content.
        if entry.page_digests.is_empty() {
            entry.page_digests = stored.page_digests;
        }
        Ok((entry, backup))
    }

    /// For a page-level file (`entry`, its data held by `holder`): the stored bytes of every
    /// backup its runs name. `None` for a file that is not page-level.
    pub async fn page_sources(&mut self, entry: &FileEntry, holder: &BackupLabel) -> CliResult<Option<Paged>> {
        let FileData::Pages { parts, chunks, runs } = &entry.data else { return Ok(None) };
        let mut sources = BTreeMap::new();
        sources.insert(holder.clone(), PageSource { parts: parts.clone(), chunks: chunks.clone() });
        for backup in runs.iter().filter_map(|r| r.backup.as_ref()) {
            if sources.contains_key(backup) {
                continue;
            }
            let stored = self.stored(backup, &entry.path).await?;
            let source = match stored.data {
                FileData::Stored { parts } => PageSource { parts, chunks: stored.chunks },
                FileData::Pages { parts, chunks, .. } => PageSource { parts, chunks },
                FileData::Empty | FileData::Same { .. } => {
                    return Err(self.broken(backup, &entry.path, "does not store its pages"));
                }
            };
            sources.insert(backup.clone(), source);
        }
        // Every run naming its holder.
        let runs = holder_map(holder, &entry.data, entry.size).unwrap_or_default();
        Ok(Some(Paged { runs, sources }))
    }

    /// The entry of `path` in `backup`; paths are asked for in increasing order (the same path
    /// may be asked for again).
    pub async fn stored(&mut self, backup: &BackupLabel, path: &str) -> CliResult<FileEntry> {
        if !self.cursors.contains_key(backup) {
            let Some(listed) = self.catalog.backups.iter().find(|b| &b.label == backup) else {
                return Err(CliError::new(
                    ErrorCode::FileMissing,
                    format!("backup {} references backup {backup}, which is not in the catalog", self.restoring),
                ));
            };
            let stream = ManifestStream::open(self.repo, listed).await?;
            self.cursors.insert(backup.clone(), Cursor { stream, next: None });
        }
        let Some(cursor) = self.cursors.get_mut(backup) else { return Err(self.broken(backup, path, "has no file")) };
        loop {
            if cursor.next.is_none() {
                match cursor.stream.next().await? {
                    Some(ManifestEntry::File(f)) => cursor.next = Some(f),
                    Some(_) => continue,
                    None => break,
                }
            }
            match &cursor.next {
                Some(f) if f.path.as_bytes() < path.as_bytes() => cursor.next = None,
                Some(f) if f.path == path => return Ok(f.clone()),
                _ => break,
            }
        }
        Err(self.broken(backup, path, "has no such file"))
    }

    /// Reads every referenced manifest to its end, so that each is verified against the
    /// catalog's checksum whole.
    pub async fn finish(self) -> CliResult<()> {
        for (_, mut cursor) in self.cursors {
            while cursor.stream.next().await?.is_some() {}
        }
        Ok(())
    }

    fn broken(&self, backup: &BackupLabel, path: &str, what: &str) -> CliError {
        CliError::new(
            ErrorCode::Format,
            format!("backup {} references {path} in backup {backup}, which {what}", self.restoring),
        )
        .hint("run verify; a backup whose references are broken cannot be restored")
    }
}
