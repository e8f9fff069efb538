//! Resume: what a backup that died (killed, its storage gone, its Job deleted by a deadline)
//! had stored is reused by the next backup of the same type and prior, not copied again.
//!
//! While it copies, a backup writes a checkpoint each time a pack is complete (and every
//! [`MAX_PENDING`] files): the entries of the files finished since the previous checkpoint,
//! every part of which is in a complete pack. Entries reach the manifest in path order, so an
//! attempt's checkpoints, in sequence, are one path-ordered list, read alongside the walk as the
//! prior's manifest is. The next backup adopts the dead one's label when its attempt matches
//! (type, prior, database, storage settings), references every checkpointed file whose size and
//! time are unchanged and older than the attempt's start (as an incremental references its
//! prior's files), and writes its own packs after the dead one's. A checkpointed part is used
//! only when its pack is listed with at least the bytes the part needs. At the end the
//! checkpoints and every pack no entry names are removed. The dead backup was never in the
//! catalog, so it is never listed as a backup.

use std::collections::{BTreeSet, HashMap};

use bytes::Bytes;
use pgstrata_repo_format::layout::{StanzaLayout, parse_checkpoint, parse_pack};
use pgstrata_repo_format::meta::{
    BackupSettings, CheckpointHeader, CheckpointWriter, FileData, FileEntry, PackObject, ResumeAttempt, read_checkpoint,
};
use pgstrata_repo_format::{BackupLabel, BlobSettings, DataKey, decode_blob, encode_blob};
use pgstrata_storage::RepoStore;
use pgstrata_storage::upload::JOURNAL_SUFFIX;

use super::plan::BackupPlan;
use super::prior::Sorted;
use super::walk::SourceFile;
use crate::error::CliResult;
use crate::repo::Repo;

/// Entries, and bytes of their text, held before a checkpoint is forced (the open pack is
/// completed early): what bounds the memory of checkpoints when many files (or files with many
/// pages, highly compressible) fit in one pack.
pub const MAX_PENDING: u64 = 8192;
pub const MAX_PENDING_BYTES: usize = 8 << 20;

/// The files a backup in progress has finished, on their way into checkpoints.
#[derive(Debug)]
pub struct Journal {
    attempt: ResumeAttempt,
    blob: BlobSettings,
    key: Option<DataKey>,
    files: CheckpointWriter,
    packs: Vec<PackObject>,
    seq: u32,
    /// Packs of this backup that recorded entries name (resumed ones included).
    referenced: BTreeSet<u32>,
}

impl Journal {
    pub fn new(attempt: ResumeAttempt, blob: BlobSettings, key: Option<DataKey>) -> Self {
        Self {
            attempt,
            blob,
            key,
            files: CheckpointWriter::default(),
            packs: Vec::new(),
            seq: 0,
            referenced: BTreeSet::new(),
        }
    }

    /// Records a finished file whose data this backup stores (in a pack, or as pages mapped to
    /// older backups); files that only reference older backups need no checkpoint.
    pub fn record(&mut self, entry: &FileEntry) -> CliResult<()> {
        let parts = match &entry.data {
            FileData::Stored { parts } | FileData::Pages { parts, .. } => parts,
            FileData::Empty | FileData::Same { .. } => return Ok(()),
        };
        self.referenced.extend(parts.iter().map(|p| p.pack));
        Ok(self.files.push(entry)?)
    }

    /// Keeps the packs of a stored file that is not checkpointed (`backup_label` and
    /// `tablespace_map`: written at the end, out of path order, and never reused).
    pub fn keep_packs(&mut self, entry: &FileEntry) {
        if let FileData::Stored { parts } | FileData::Pages { parts, .. } = &entry.data {
            self.referenced.extend(parts.iter().map(|p| p.pack));
        }
    }

    pub fn is_full(&self) -> bool {
        self.files.entries() >= MAX_PENDING || self.files.len() >= MAX_PENDING_BYTES
    }

    /// A pack is complete (`size` stored bytes).
    pub fn completed(&mut self, pack: u32, size: u64) {
        self.packs.push(PackObject { pack, size });
    }

    /// Writes what was recorded since the last checkpoint. Every part it names must be in a
    /// complete pack: the caller checkpoints right after completing the open pack, or with
    /// none open.
    pub async fn checkpoint(&mut self, store: &RepoStore, layout: &StanzaLayout) -> CliResult<()> {
        if self.files.is_empty() {
            return Ok(());
        }
        let header = CheckpointHeader { attempt: self.attempt.clone(), packs: std::mem::take(&mut self.packs) };
        let text = self.files.finish(&header)?;
        let sealed = encode_blob(&text, self.blob, self.key.as_ref())?.0;
        let key = layout.checkpoint(&self.attempt.label, self.attempt.first_pack, self.seq);
        store.put(&key, Bytes::from(sealed)).await?;
        self.seq += 1;
        Ok(())
    }

    pub fn referenced(&self) -> &BTreeSet<u32> {
        &self.referenced
    }
}

/// The dead backup a backup resumes, and its repository.
#[derive(Debug)]
pub struct Resume<'a> {
    pub repo: &'a Repo,
    pub from: Resumable,
}

/// A dead backup's last attempt that wrote checkpoints.
#[derive(Debug)]
pub struct Resumable {
    pub attempt: ResumeAttempt,
    /// Its checkpoints, in sequence.
    keys: Vec<String>,
    /// Complete packs of the backup (any attempt) and their sizes.
    packs: HashMap<u32, u64>,
    /// The first pack number no attempt has used.
    pub next_pack: u32,
}

impl Resumable {
    /// What the dead backup `label` left: `None` when it wrote no checkpoint.
    pub async fn find(repo: &Repo, label: &BackupLabel) -> CliResult<Option<Self>> {
        let listed = repo.store.list_all(&repo.layout.backup_dir(label)).await?;
        let mut packs = HashMap::new();
        let mut next_pack = 0;
        let mut checkpoints = Vec::new();
        for o in &listed {
            if let Some(pack) = parse_pack(o.key.strip_suffix(JOURNAL_SUFFIX).unwrap_or(&o.key)) {
                next_pack = next_pack.max(pack + 1);
                if !o.key.ends_with(JOURNAL_SUFFIX) {
                    packs.insert(pack, o.size);
                }
            } else if let Some((first, seq)) = parse_checkpoint(&o.key) {
                checkpoints.push((first, seq, o.key.clone()));
            }
        }
        let Some(last) = checkpoints.iter().map(|(first, ..)| *first).max() else { return Ok(None) };
        checkpoints.retain(|(first, ..)| *first == last);
        checkpoints.sort();
        let keys: Vec<String> = checkpoints.into_iter().map(|(.., key)| key).collect();
        let Some(first) = keys.first() else { return Ok(None) };
        let (header, _) = read(repo, first).await?;
        Ok(Some(Self { attempt: header.attempt, keys, packs, next_pack }))
    }

    /// Sends the checkpointed entries, in order, whose parts are all in complete packs. A
    /// checkpoint that cannot be read ends the list (what it had is copied again).
    pub async fn feed(self, repo: &Repo, tx: tokio::sync::mpsc::Sender<CliResult<FileEntry>>) {
        let mut last: Option<String> = None;
        for key in &self.keys {
            let files = match read(repo, key).await {
                Ok((header, files)) if header.attempt == self.attempt && self.intact(&header.packs) => files,
                Ok(_) => {
                    tracing::warn!(
                        "{key} belongs to another attempt, or a pack it names is not as it was: the files after it are copied again"
                    );
                    return;
                }
                Err(e) => {
                    tracing::warn!("unable to read {key} ({}): the files after it are copied again", e.message);
                    return;
                }
            };
            for entry in files {
                if last.as_deref().is_some_and(|l| entry.path.as_str() <= l) {
                    tracing::warn!("{key}: {} is out of order: the files after it are copied again", entry.path);
                    return;
                }
                last = Some(entry.path.clone());
                if self.complete(&entry) && tx.send(Ok(entry)).await.is_err() {
                    return;
                }
            }
        }
    }

    /// The packs a checkpoint recorded as completed are listed with the sizes they had.
    fn intact(&self, packs: &[PackObject]) -> bool {
        packs.iter().all(|p| self.packs.get(&p.pack) == Some(&p.size))
    }

    /// Every part of `entry` is within a complete pack.
    fn complete(&self, entry: &FileEntry) -> bool {
        let parts = match &entry.data {
            FileData::Stored { parts } | FileData::Pages { parts, .. } => parts,
            FileData::Empty | FileData::Same { .. } => return false,
        };
        parts.iter().all(|p| {
            self.packs.get(&p.pack).is_some_and(|&size| p.offset.checked_add(p.len).is_some_and(|end| end <= size))
        })
    }
}

/// A checkpoint, opened and checked.
async fn read(repo: &Repo, key: &str) -> CliResult<(CheckpointHeader, Vec<FileEntry>)> {
    let sealed = repo.store.get(key).await?;
    let text = decode_blob(&sealed, key, repo.key.as_ref())?;
    Ok(read_checkpoint(&text, key)?)
}

/// Why the dead backup's `attempt` cannot be resumed by the backup `plan` with `settings`
/// (`delta`: files are compared by content, times not trusted); `None` when it can.
pub fn refusal(attempt: &ResumeAttempt, plan: &BackupPlan, settings: &BackupSettings, delta: bool) -> Option<String> {
    let prior = plan.prior.as_ref().map(|p| &p.label);
    let name = |l: Option<&BackupLabel>| l.map_or_else(|| "none".to_string(), ToString::to_string);
    if attempt.backup_type != plan.backup_type {
        Some(format!(
            "new backup type '{}' does not match its type '{}'",
            plan.backup_type.as_str(),
            attempt.backup_type.as_str()
        ))
    } else if attempt.prior.as_ref() != prior {
        Some(format!("new prior backup '{}' does not match its prior '{}'", name(prior), name(attempt.prior.as_ref())))
    } else if attempt.db_id != plan.db_id {
        Some(format!("the stanza was upgraded (database {} -> {})", attempt.db_id, plan.db_id))
    } else if attempt.settings != *settings {
        Some("compression, encryption or buffer-size changed since it ran".to_string())
    } else if delta {
        Some("files are compared by content (--delta, or a timeline change), times are not trusted".to_string())
    } else {
        None
    }
}

/// The dead backup's checkpointed files as the walk thread sees them.
#[derive(Debug)]
pub struct ResumedFiles {
    files: Sorted<FileEntry>,
    /// When the attempt that wrote them started.
    started: i64,
}

impl ResumedFiles {
    pub fn channel(started: i64) -> (tokio::sync::mpsc::Sender<CliResult<FileEntry>>, Self) {
        let (tx, files) = Sorted::channel();
        (tx, Self { files, started })
    }

    /// The checkpointed entry of `f` when it can stand for `f`: the same size and time, a time
    /// from before the attempt started (what the attempt read is what is there now). Calls
    /// must come in path order. Blocks (the walk thread).
    pub fn reuse(&mut self, f: &SourceFile) -> CliResult<Option<FileEntry>> {
        let started = self.started;
        Ok(self
            .files
            .take(&f.path)?
            .filter(|e| e.size == f.size && e.mtime == f.mtime && f.mtime < started)
            .map(|e| FileEntry { owner: f.owner.clone(), ..e }))
    }
}

/// After the backup is complete: removes its checkpoints and the packs that interrupted
/// attempts left and no entry names (`used`: the packs the manifest names). Only packs below
/// `first_pack` (this attempt's first) are candidates: what this attempt wrote is never removed.
pub async fn clean_up(repo: &Repo, label: &BackupLabel, used: &BTreeSet<u32>, first_pack: u32) -> CliResult<()> {
    repo.store.delete_prefix(&repo.layout.checkpoint_dir(label)).await?;
    if first_pack == 0 {
        return Ok(());
    }
    let listed = repo.store.list_all(&format!("{}pack/", repo.layout.backup_dir(label))).await?;
    let mut removed = 0u64;
    for o in listed {
        if let Some(pack) = parse_pack(o.key.strip_suffix(JOURNAL_SUFFIX).unwrap_or(&o.key))
            && pack < first_pack
            && !used.contains(&pack)
        {
            removed += repo.store.delete_prefix(&o.key).await?;
        }
    }
    if removed > 0 {
        tracing::info!("removed {removed} objects the interrupted attempts left unused");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use pgstrata_repo_format::BackupType;
    use pgstrata_repo_format::meta::{CatalogEntry, Ownership, PartRef};
    use pgstrata_repo_format::pg::{Lsn, TimelineId};

    const STARTED: i64 = 1_800_000_000;

    fn label(text: &str) -> BackupLabel {
        text.parse().unwrap()
    }

    fn settings() -> BackupSettings {
        BackupSettings {
            compress_type: "zst".into(),
            compress_level: None,
            cipher: "none".into(),
            frame_size: 1 << 20,
            checksum_page: true,
        }
    }

    fn prior_entry(l: &BackupLabel) -> CatalogEntry {
        CatalogEntry {
            label: l.clone(),
            backup_type: BackupType::Full,
            prior: None,
            references: vec![],
            db_id: 1,
            timeline: TimelineId(1),
            timestamp_start: STARTED - 100,
            timestamp_stop: STARTED - 90,
            lsn_start: Lsn(1),
            lsn_stop: Lsn(2),
            wal_start: String::new(),
            wal_stop: String::new(),
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            error: false,
            pgstrata_version: String::new(),
            manifest_sha256: pgstrata_repo_format::Sha256Digest::of(b""),
            keep: false,
            annotation: Default::default(),
        }
    }

    fn incr_plan(prior: &BackupLabel) -> BackupPlan {
        BackupPlan {
            label: label("20270115-080000F_20270116-080000I"),
            backup_type: BackupType::Incr,
            db_id: 1,
            prior: Some(prior_entry(prior)),
            delta: false,
            warnings: vec![],
        }
    }

    fn attempt(prior: Option<BackupLabel>, kind: BackupType) -> ResumeAttempt {
        ResumeAttempt {
            label: label("20270115-080000F_20270116-070000I"),
            backup_type: kind,
            prior,
            db_id: 1,
            timestamp_start: STARTED,
            settings: settings(),
            first_pack: 0,
        }
    }

    #[test]
    fn only_a_backup_of_the_same_type_prior_database_and_settings_is_resumed() {
        let full = label("20270115-080000F");
        let plan = incr_plan(&full);
        assert_eq!(refusal(&attempt(Some(full.clone()), BackupType::Incr), &plan, &settings(), false), None);
        let diff = refusal(&attempt(Some(full.clone()), BackupType::Diff), &plan, &settings(), false).unwrap();
        assert!(diff.contains("type 'incr' does not match its type 'diff'"), "{diff}");
        let other = refusal(&attempt(Some(label("20270101-080000F")), BackupType::Incr), &plan, &settings(), false);
        assert!(other.unwrap().contains("does not match its prior '20270101-080000F'"));
        let upgraded = ResumeAttempt { db_id: 2, ..attempt(Some(full.clone()), BackupType::Incr) };
        assert!(refusal(&upgraded, &plan, &settings(), false).unwrap().contains("upgraded"));
        let lz4 = BackupSettings { compress_type: "lz4".into(), ..settings() };
        assert!(refusal(&attempt(Some(full.clone()), BackupType::Incr), &plan, &lz4, false).is_some());
        assert!(refusal(&attempt(Some(full), BackupType::Incr), &plan, &settings(), true).unwrap().contains("content"));
    }

    fn source(path: &str, size: u64, mtime: i64) -> SourceFile {
        SourceFile {
            path: path.into(),
            fs_path: path.into(),
            size,
            mtime,
            owner: Ownership { mode: 0o640, user: None, group: None },
            first_block: None,
            main_fork: false,
            pages: None,
            same_as: None,
            from_standby: false,
        }
    }

    fn entry(path: &str, size: u64, mtime: i64, pack: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            size,
            mtime,
            owner: Ownership { mode: 0o600, user: None, group: None },
            sha256: pgstrata_repo_format::Sha256Digest::of(path.as_bytes()),
            chunks: vec![],
            data: FileData::Stored { parts: vec![PartRef { pack, offset: 0, len: 10, plain_len: size }] },
            page_errors: vec![],
            page_digests: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_checkpointed_file_is_reused_only_when_unchanged_since_before_the_attempt() {
        let (tx, mut files) = ResumedFiles::channel(STARTED);
        for e in [entry("pg_data/a", 5, STARTED - 9, 0), entry("pg_data/b", 5, STARTED - 9, 0)] {
            tx.send(Ok(e)).await.unwrap();
        }
        tx.send(Ok(entry("pg_data/c", 5, STARTED, 1))).await.unwrap();
        tx.send(Ok(entry("pg_data/d", 5, STARTED - 9, 1))).await.unwrap();
        drop(tx);
        let reused = tokio::task::spawn_blocking(move || {
            let walk = [
                source("pg_data/a", 5, STARTED - 9),
                // Grown since.
                source("pg_data/b", 6, STARTED - 9),
                // Changed while the attempt ran: what it read may be older.
                source("pg_data/c", 5, STARTED),
                source("pg_data/c2", 5, STARTED - 9),
                source("pg_data/d", 5, STARTED - 9),
            ];
            walk.iter().map(|f| files.reuse(f).unwrap().map(|e| (e.path, e.owner.mode))).collect::<Vec<_>>()
        })
        .await
        .unwrap();
        let some = |p: &str| Some((p.to_string(), 0o640));
        assert_eq!(reused, [some("pg_data/a"), None, None, None, some("pg_data/d")]);
    }

    #[test]
    fn a_part_beyond_its_listed_pack_is_not_reused() {
        let resumable = Resumable {
            attempt: attempt(None, BackupType::Full),
            keys: vec![],
            packs: HashMap::from([(0, 10), (1, 5)]),
            next_pack: 3,
        };
        assert!(resumable.complete(&entry("pg_data/a", 5, 0, 0)));
        assert!(!resumable.complete(&entry("pg_data/a", 5, 0, 1)), "pack 1 is shorter than the part");
        assert!(!resumable.complete(&entry("pg_data/a", 5, 0, 2)), "pack 2 is not complete");
        assert!(resumable.intact(&[PackObject { pack: 0, size: 10 }, PackObject { pack: 1, size: 5 }]));
        assert!(!resumable.intact(&[PackObject { pack: 1, size: 6 }]), "pack 1 changed size");
        assert!(!resumable.intact(&[PackObject { pack: 2, size: 1 }]), "pack 2 is gone");
    }
}
