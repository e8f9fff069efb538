//! `verify`: reads every object of every backup (or `--set`) and of the WAL archive and checks it
//! against its digests — each manifest (both copies) against the catalog, every stored part's
//! frames against the manifest's chunk digests (AES-GCM authenticates them first in an
//! encrypted stanza), every reference to a backup that holds the file, every WAL object against
//! the digest in its name — and that the WAL each backup needs to reach consistency is there,
//! the archive is continuous on each timeline after the newest backup, and every timeline after
//! the first has its history file. Reports each problem with the object it is in, as text or
//! JSON, and (unlike pgBackRest's) exits non-zero when there is any.
//!
//! Memory: parts are read in ranged batches of at most 8 MiB, `process-max` x 2 at a time;
//! manifests are streamed. The archive check keeps one number per archived segment.

use std::collections::{BTreeMap, BTreeSet};

use pgstrata_repo_format::digest::Sha256Stream;
use pgstrata_repo_format::frame::decode_blob_with_summary;
use pgstrata_repo_format::layout::{copy_of, is_wal_claim, parse_wal_object};
use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry, FileData, FileEntry, ManifestEntry, PartRef};
use pgstrata_repo_format::pg::{TimelineId, WalFileKind, WalFileName};
use pgstrata_repo_format::{BackupLabel, BlobDecoder, DataKey, Sha256Digest};
use serde::Serialize;
use tokio::task::JoinSet;

use crate::chain::References;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::manifest::ManifestStream;
use crate::repo::RepoTarget;
use crate::repo::{Repo, open_repo};

/// Problems kept per report (the rest are counted).
const MAX_PROBLEMS: usize = 1000;
/// Largest ranged read of a batch of parts.
const BATCH_BYTES: u64 = 8 << 20;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Problems {
    pub list: Vec<Problem>,
    /// Problems beyond the first [`MAX_PROBLEMS`].
    pub more: u64,
}

impl Problems {
    fn add(&mut self, object: impl Into<String>, problem: impl Into<String>) {
        let p = Problem { object: object.into(), problem: problem.into() };
        // The same problem (a missing pack named by every batch of it) is reported once.
        if self.list.contains(&p) {
            return;
        }
        if self.list.len() >= MAX_PROBLEMS {
            self.more += 1;
            return;
        }
        self.list.push(p);
    }

    fn count(&self) -> u64 {
        self.list.len() as u64 + self.more
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Checked {
    pub files: u64,
    pub parts: u64,
    /// Plaintext bytes read and checked.
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct BackupReport {
    pub label: BackupLabel,
    pub checked: Checked,
    pub problems: Problems,
}

#[derive(Debug, Serialize)]
pub struct TimelineRange {
    pub timeline: u32,
    pub min: String,
    pub max: String,
    pub segments: u64,
}

#[derive(Debug, Serialize)]
pub struct ArchiveReport {
    pub id: String,
    pub objects: u64,
    pub timelines: Vec<TimelineRange>,
    pub problems: Problems,
}

#[derive(Debug, Serialize)]
pub struct RepoReport {
    pub stanza: String,
    pub repo: u32,
    pub status: &'static str,
    pub problems: Problems,
    pub backups: Vec<BackupReport>,
    pub archive: Vec<ArchiveReport>,
}

impl RepoReport {
    fn count(&self) -> u64 {
        self.problems.count()
            + self.backups.iter().map(|b| b.problems.count()).sum::<u64>()
            + self.archive.iter().map(|a| a.problems.count()).sum::<u64>()
    }
}

/// What `verify` was asked for, resolved once by a front end.
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    pub stanza: String,
    pub repos: Vec<RepoTarget>,
    /// `--set`: that backup with what it references and its WAL range.
    pub set: Option<BackupLabel>,
    /// `process-max`.
    pub workers: usize,
    /// `--output=json`.
    pub json: bool,
}

/// Verifies what `request` names; exit 103 when anything is wrong.
pub fn run(request: &VerifyRequest) -> CliResult<()> {
    let (stanza, set, workers) = (&request.stanza, request.set.clone(), request.workers);
    let rt = crate::runtime::pool(2, Some(workers * 2))?;
    let reports = rt.block_on(async {
        let mut reports = Vec::new();
        for target in &request.repos {
            let repo = open_repo(target, stanza).await?;
            let access = repo.pgbackrest();
            let foreign = crate::pgbackrest::backup_info(access, stanza).await?;
            let theirs = |label: &BackupLabel| {
                foreign.as_ref().is_some_and(|f| f.backups.iter().any(|b| b.label == label.as_str()))
            };
            let mut report = match &set {
                // One of pgBackRest's backups: only it.
                Some(label) if theirs(label) => RepoReport {
                    stanza: stanza.clone(),
                    repo: repo.index,
                    status: "ok",
                    problems: Problems::default(),
                    backups: Vec::new(),
                    archive: Vec::new(),
                },
                _ => verify_repo(&repo, set.as_ref(), workers).await?,
            };
            if let Some(info) = &foreign
                && set.as_ref().is_none_or(theirs)
            {
                report.backups.extend(verify_pgbackrest(access, &repo, info, set.as_ref(), workers).await?);
                if report.count() > 0 {
                    report.status = "error";
                }
            }
            record(&repo, "verify", report.count(), serde_json::json!({"backups": report.backups.len(), "set": set}))
                .await;
            reports.push(report);
        }
        Ok::<_, CliError>(reports)
    })?;
    if request.json {
        println!("{}", serde_json::to_string_pretty(&reports).unwrap_or_default());
    } else {
        print!("{}", text(&reports));
    }
    let total: u64 = reports.iter().map(RepoReport::count).sum();
    if total > 0 {
        return Err(CliError::new(
            ErrorCode::RepoInvalid,
            format!("verify found {total} problems in stanza '{stanza}'"),
        )
        .hint("a backup with a problem may not restore; take a new full backup and look into the storage"));
    }
    Ok(())
}

/// Verifies pgBackRest's backups in the repository (all, or `set`): every file of each is read
/// as a restore reads it and checked against the size and SHA-1 its manifest records.
async fn verify_pgbackrest(
    access: crate::pgbackrest::Access<'_>,
    repo: &Repo,
    info: &pgstrata_repo_format::pgbackrest::BackupInfo,
    set: Option<&BackupLabel>,
    workers: usize,
) -> CliResult<Vec<BackupReport>> {
    use futures::StreamExt;
    let stanza = repo.layout.stanza();
    let mut reports = Vec::new();
    for b in info.backups.iter().filter(|b| set.is_none_or(|s| s.as_str() == b.label)) {
        let Ok(label) = b.label.parse::<BackupLabel>() else { continue };
        tracing::info!("verifying pgBackRest's backup {label}");
        let mut problems = Problems::default();
        let mut checked = Checked::default();
        match crate::pgbackrest::manifest(access, stanza, info, &b.label).await {
            Err(e) => problems.add(format!("backup/{stanza}/{label}/backup.manifest"), e.message),
            Ok(mut manifest) => {
                let files = std::mem::take(&mut manifest.files);
                let reader = std::sync::Arc::new(crate::pgbackrest::files::Reader::new(&repo.store, stanza, manifest));
                let results = futures::stream::iter(files)
                    .map(|file| {
                        let reader = std::sync::Arc::clone(&reader);
                        async move {
                            let (name, size) = (file.name.clone(), file.size);
                            let read = tokio::task::spawn_blocking(move || reader.read(&file, &mut std::io::sink()))
                                .await
                                .map_err(|e| CliError::new(ErrorCode::Format, format!("verify task: {e}")))
                                .and_then(|r| r);
                            (name, size, read)
                        }
                    })
                    .buffer_unordered(workers.max(1));
                futures::pin_mut!(results);
                while let Some((name, size, read)) = results.next().await {
                    match read {
                        Ok(()) => {
                            checked.files += 1;
                            checked.bytes += size;
                        }
                        Err(e) => problems.add(name, e.message),
                    }
                }
            }
        }
        reports.push(BackupReport { label, checked, problems });
    }
    Ok(reports)
}

/// Records the result of a check in the repository (`report/<name>.json`), for `info
/// --output=prometheus`; a failure to record is a warning, not the check's failure.
pub async fn record(repo: &Repo, name: &str, problems: u64, mut detail: serde_json::Value) {
    detail["time"] = serde_json::json!(crate::runtime::unix_now());
    detail["status"] = serde_json::json!(if problems == 0 { "ok" } else { "error" });
    detail["problems"] = serde_json::json!(problems);
    let key = repo.layout.report(&format!("{name}.json"));
    if let Err(e) = repo.store.put(&key, bytes::Bytes::from(detail.to_string())).await {
        tracing::warn!("unable to record the {name} result in {key}: {e}");
    }
}

/// Verifies one repository: every backup (or `set`), then the archive.
pub async fn verify_repo(repo: &Repo, set: Option<&BackupLabel>, workers: usize) -> CliResult<RepoReport> {
    let mut problems = Problems::default();
    let catalog = repo.load_catalog().await?;
    let chosen: Vec<&CatalogEntry> = catalog.backups.iter().filter(|b| set.is_none_or(|s| &b.label == s)).collect();
    if let Some(s) = set
        && chosen.is_empty()
    {
        return Err(CliError::new(ErrorCode::BackupSetInvalid, format!("backup set {s} is not in {}", repo.name())));
    }
    for b in catalog.backups.iter() {
        for r in b.references.iter().chain(b.prior.iter()) {
            if !catalog.backups.iter().any(|x| &x.label == r) {
                problems.add(
                    repo.layout.backup_catalog(),
                    format!("backup {} depends on {r}, which is not listed", b.label),
                );
            }
        }
    }
    let mut backups = Vec::new();
    for b in chosen {
        tracing::info!("verifying backup {}", b.label);
        backups.push(verify_backup(repo, &catalog, b, set.is_some(), workers).await);
    }
    // One set: only the WAL it needs.
    let archive = verify_archive(repo, &catalog, set, workers).await?;
    let mut report = RepoReport {
        stanza: repo.layout.stanza().to_string(),
        repo: repo.index,
        status: "ok",
        problems,
        backups,
        archive,
    };
    if report.count() > 0 {
        report.status = "error";
    }
    Ok(report)
}

/// One part to check: where it is and the frame digests it must have.
struct PartCheck {
    path: String,
    part: PartRef,
    chunks: Vec<Sha256Digest>,
}

/// Consecutive parts of one pack, read with one ranged request.
struct Batch {
    key: String,
    start: u64,
    end: u64,
    parts: Vec<PartCheck>,
}

async fn verify_backup(
    repo: &Repo,
    catalog: &BackupCatalog,
    b: &CatalogEntry,
    whole_chain: bool,
    workers: usize,
) -> BackupReport {
    let mut report =
        BackupReport { label: b.label.clone(), checked: Checked::default(), problems: Problems::default() };
    let manifest_key = repo.layout.manifest(&b.label);
    for key in [manifest_key.clone(), copy_of(&manifest_key)] {
        if let Err(e) = drain_manifest(repo, &key, b.manifest_sha256).await {
            report.problems.add(&key, e.message);
        }
    }
    let mut stream = match ManifestStream::open(repo, b).await {
        Ok(s) => s,
        Err(e) => {
            report.problems.add(&manifest_key, e.message);
            return report;
        }
    };
    let frame_size = stream.header().map(|h| h.settings.frame_size).unwrap_or(1 << 20).max(1);
    // archive-copy: the WAL stored in the backup, checked as its files are.
    let mut wal_copy = stream.header().map(|h| h.wal_copy.clone()).unwrap_or_default().into_iter();
    let mut refs = References::new(repo, catalog, b.label.clone());
    let mut tasks: JoinSet<(Checked, Vec<Problem>)> = JoinSet::new();
    let mut batch: Option<Batch> = None;
    loop {
        let entry = match stream.next().await {
            Ok(Some(ManifestEntry::File(f))) => f,
            Ok(Some(_)) => continue,
            Ok(None) => match wal_copy.next() {
                Some(f) => f,
                None => break,
            },
            Err(e) => {
                report.problems.add(&manifest_key, e.message);
                break;
            }
        };
        report.checked.files += 1;
        let (entry, holder) = match &entry.data {
            FileData::Same { .. } => match refs.resolve(entry).await {
                Ok(resolved) if whole_chain => resolved,
                Ok(_) => continue,
                Err(e) => {
                    report.problems.add(&manifest_key, e.message);
                    continue;
                }
            },
            _ => (entry, b.label.clone()),
        };
        if let Err(e) = refs.page_sources(&entry, &holder).await {
            report.problems.add(&manifest_key, e.message);
        }
        for check in part_checks(&entry, frame_size) {
            let key = repo.layout.pack(&holder, check.part.pack);
            let end = check.part.offset.saturating_add(check.part.len);
            match &mut batch {
                Some(bt) if bt.key == key && bt.end == check.part.offset && end - bt.start <= BATCH_BYTES => {
                    bt.end = end;
                    bt.parts.push(check);
                }
                _ => {
                    let full = batch.replace(Batch { key, start: check.part.offset, end, parts: vec![check] });
                    if let Some(full) = full {
                        spawn_batch(&mut tasks, repo, full, workers, &mut report).await;
                    }
                }
            }
        }
    }
    if let Some(full) = batch.take() {
        spawn_batch(&mut tasks, repo, full, workers, &mut report).await;
    }
    while let Some(done) = tasks.join_next().await {
        absorb(done, &mut report);
    }
    if let Err(e) = refs.finish().await {
        report.problems.add(&manifest_key, e.message);
    }
    report
}

/// Streams one manifest object whole: decodes it, checks its structure and the catalog's digest.
async fn drain_manifest(repo: &Repo, key: &str, expected: Sha256Digest) -> CliResult<()> {
    let mut stream = ManifestStream::open_key(repo, key.to_string(), expected).await?;
    while stream.next().await?.is_some() {}
    Ok(())
}

/// The stored parts of a file this backup holds, each with its expected frame digests.
fn part_checks(entry: &FileEntry, frame_size: u64) -> Vec<PartCheck> {
    let (parts, chunks) = match &entry.data {
        FileData::Stored { parts } => (parts, &entry.chunks),
        FileData::Pages { parts, chunks, .. } => (parts, chunks),
        FileData::Empty | FileData::Same { .. } => return Vec::new(),
    };
    let mut at = 0usize;
    parts
        .iter()
        .map(|p| {
            let n = usize::try_from(p.plain_len.div_ceil(frame_size)).unwrap_or(usize::MAX);
            let expected = chunks.get(at..at.saturating_add(n)).map(<[_]>::to_vec).unwrap_or_default();
            at = at.saturating_add(n);
            PartCheck { path: entry.path.clone(), part: *p, chunks: expected }
        })
        .collect()
}

async fn spawn_batch(
    tasks: &mut JoinSet<(Checked, Vec<Problem>)>,
    repo: &Repo,
    batch: Batch,
    workers: usize,
    report: &mut BackupReport,
) {
    while tasks.len() >= workers * 2 {
        match tasks.join_next().await {
            Some(done) => absorb(done, report),
            None => break,
        }
    }
    let store = repo.store.clone();
    let key = repo.key.clone();
    tasks.spawn(async move { check_batch(store, batch, key).await });
}

fn absorb(done: Result<(Checked, Vec<Problem>), tokio::task::JoinError>, report: &mut BackupReport) {
    match done {
        Ok((checked, problems)) => {
            report.checked.parts += checked.parts;
            report.checked.bytes += checked.bytes;
            for p in problems {
                report.problems.add(p.object, p.problem);
            }
        }
        Err(e) => report.problems.add(report.label.to_string(), format!("a verify task failed: {e}")),
    }
}

/// Reads a batch with one ranged request and checks each part's frames.
async fn check_batch(
    store: pgstrata_storage::RepoStore,
    batch: Batch,
    key: Option<DataKey>,
) -> (Checked, Vec<Problem>) {
    let mut checked = Checked::default();
    let bytes = match store.get_range(&batch.key, batch.start..batch.end).await {
        Ok(b) if b.len() as u64 == batch.end - batch.start => b,
        Ok(b) => {
            let problem =
                format!("is {} bytes short of what the manifest names", batch.end - batch.start - b.len() as u64);
            return (checked, vec![Problem { object: batch.key, problem }]);
        }
        Err(e) if e.is_not_found() => {
            return (checked, vec![Problem { object: batch.key, problem: "is missing".into() }]);
        }
        Err(e) => return (checked, vec![Problem { object: batch.key, problem: e.to_string() }]),
    };
    let task = tokio::task::spawn_blocking(move || {
        let mut problems = Vec::new();
        for p in &batch.parts {
            let from = usize::try_from(p.part.offset - batch.start).unwrap_or(usize::MAX);
            let to = from.saturating_add(usize::try_from(p.part.len).unwrap_or(usize::MAX));
            let what = format!("{} (part of {} at {})", batch.key, p.path, p.part.offset);
            let verdict = match bytes.get(from..to).map(|s| decode_blob_with_summary(s, &what, key.as_ref())) {
                None => Some("lies outside the bytes read".to_string()),
                Some(Err(e)) => Some(e.to_string()),
                Some(Ok((plain, summary))) => {
                    checked.parts += 1;
                    checked.bytes += plain.len() as u64;
                    if plain.len() as u64 != p.part.plain_len {
                        Some(format!("{}: {} bytes where the manifest says {}", p.path, plain.len(), p.part.plain_len))
                    } else if summary.chunk_sha256 != p.chunks {
                        Some(format!(
                            "{}: the bytes at {} do not match the manifest's checksums",
                            p.path, p.part.offset
                        ))
                    } else {
                        None
                    }
                }
            };
            if let Some(problem) = verdict {
                problems.push(Problem { object: batch.key.clone(), problem });
            }
        }
        (checked, problems)
    });
    task.await.unwrap_or_else(|e| (Checked::default(), vec![Problem { object: String::new(), problem: e.to_string() }]))
}

/// The archive of each database: every object read and checked, each backup's start..stop
/// present, the archive continuous on each timeline from the newest backup on, and a history
/// file for every timeline after the first. With `set`, only the WAL that backup needs.
async fn verify_archive(
    repo: &Repo,
    catalog: &BackupCatalog,
    set: Option<&BackupLabel>,
    workers: usize,
) -> CliResult<Vec<ArchiveReport>> {
    let root = format!("{}archive", repo.layout.root());
    let mut out = Vec::new();
    for id in repo.store.list_dirs(&root).await? {
        let Some(db_id) = id.rsplit_once('-').and_then(|(_, d)| d.parse::<u32>().ok()) else { continue };
        let backups: Vec<&CatalogEntry> =
            catalog.backups.iter().filter(|b| b.db_id == db_id && set.is_none_or(|s| &b.label == s)).collect();
        if set.is_some() && backups.is_empty() {
            continue;
        }
        let seg_size = backups
            .first()
            .map(|b| crate::wal::segment_size_of(b.timeline, b.lsn_start, &b.wal_start))
            .unwrap_or(16 << 20);
        let mut report =
            ArchiveReport { id: id.clone(), objects: 0, timelines: Vec::new(), problems: Problems::default() };
        let dir = repo.layout.archive_dir(&id);
        let mut present: BTreeMap<u32, BTreeSet<u64>> = BTreeMap::new();
        let mut histories = BTreeSet::new();
        let mut tasks: JoinSet<Option<Problem>> = JoinSet::new();
        let mut keys: Vec<(String, u64)> =
            repo.store.list_files(&dir).await?.into_iter().map(|o| (o.key, o.size)).collect();
        for log_dir in repo.store.list_dirs(&dir).await? {
            let listed = repo.store.list_files(&format!("{dir}{log_dir}/")).await?;
            keys.extend(listed.into_iter().map(|o| (o.key, o.size)));
            for (key, size) in keys.drain(..) {
                let Some((name, digest)) = parse_wal_object(&key) else {
                    if !key.contains('#') && !key.ends_with(".upload") && !is_wal_claim(&key) {
                        report.problems.add(&key, "is not a WAL object name");
                    }
                    continue;
                };
                match name.kind {
                    WalFileKind::History => {
                        histories.insert(name.timeline.0);
                    }
                    WalFileKind::Segment => {
                        if let Ok(n) = name.segment_number(seg_size) {
                            present.entry(name.timeline.0).or_default().insert(n);
                        }
                    }
                    _ => {}
                }
                if let Some(s) = set
                    && !needed_by_set(&backups, s, &name, seg_size)
                {
                    continue;
                }
                report.objects += 1;
                while tasks.len() >= workers * 2 {
                    if let Some(Ok(Some(p))) = tasks.join_next().await {
                        report.problems.add(p.object, p.problem);
                    }
                }
                let (store, data_key) = (repo.store.clone(), repo.key.clone());
                let expected_len = matches!(name.kind, WalFileKind::Segment).then_some(seg_size);
                let object = WalObject { key, size, digest, expected_len };
                tasks.spawn(async move { check_wal(store, object, data_key).await });
            }
        }
        while let Some(done) = tasks.join_next().await {
            if let Ok(Some(p)) = done {
                report.problems.add(p.object, p.problem);
            }
        }
        continuity(&mut report, repo, &id, &backups, &present, &histories, seg_size, set.is_none());
        out.push(report);
    }
    Ok(out)
}

/// Whether `name` is in the start..stop range of the one backup verified.
fn needed_by_set(backups: &[&CatalogEntry], set: &BackupLabel, name: &WalFileName, seg_size: u64) -> bool {
    backups.iter().filter(|b| &b.label == set).any(|b| {
        let n = name.segment_number(seg_size).ok();
        let bounds = |s: &str| s.parse::<WalFileName>().ok().and_then(|w| w.segment_number(seg_size).ok());
        match (n, bounds(&b.wal_start), bounds(&b.wal_stop)) {
            (Some(n), Some(lo), Some(hi)) => name.timeline == b.timeline && lo <= n && n <= hi,
            _ => name.kind == WalFileKind::History,
        }
    })
}

/// One archived object to check: its key and stored size, the digest its name gives, and the
/// plaintext length a whole segment has.
struct WalObject {
    key: String,
    size: u64,
    digest: Sha256Digest,
    expected_len: Option<u64>,
}

/// Reads a WAL object in 1 MiB ranges through a streaming decoder (memory: a range and a frame,
/// not the segment), hashing the plaintext as it comes; decoding runs off the reactor.
async fn check_wal(
    store: pgstrata_storage::RepoStore,
    object: WalObject,
    data_key: Option<DataKey>,
) -> Option<Problem> {
    const READ: u64 = 1 << 20;
    let problem = |problem: String| Some(Problem { object: object.key.clone(), problem });
    let mut decoder = BlobDecoder::new(object.key.clone(), data_key.as_ref());
    let mut digest = Sha256Stream::default();
    let mut plain_len = 0u64;
    let mut offset = 0u64;
    loop {
        let step = tokio::task::block_in_place(|| -> pgstrata_repo_format::Result<bool> {
            while let Some(plain) = decoder.poll()? {
                digest.update(&plain);
                plain_len += plain.len() as u64;
            }
            Ok(decoder.is_done())
        });
        match step {
            Err(e) => return problem(e.to_string()),
            Ok(true) => break,
            Ok(false) if offset >= object.size => break,
            Ok(false) => {}
        }
        let end = (offset + READ).min(object.size);
        match store.get_range(&object.key, offset..end).await {
            Ok(bytes) => decoder.feed(&bytes),
            Err(e) => return problem(e.to_string()),
        }
        offset = end;
    }
    if let Err(e) = decoder.finish() {
        return problem(e.to_string());
    }
    if digest.finish() != object.digest {
        return problem("content does not match the digest in its name".into());
    }
    match object.expected_len {
        Some(n) if plain_len != n => problem(format!("is {plain_len} bytes, not a whole segment")),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn continuity(
    report: &mut ArchiveReport,
    repo: &Repo,
    id: &str,
    backups: &[&CatalogEntry],
    present: &BTreeMap<u32, BTreeSet<u64>>,
    histories: &BTreeSet<u32>,
    seg_size: u64,
    whole_archive: bool,
) {
    let name_of = |tli: u32, n: u64| {
        WalFileName::segment(TimelineId(tli), n, seg_size)
            .map(|w| w.to_string())
            .unwrap_or_else(|_| format!("{tli:08X}/{n}"))
    };
    let key_of = |tli: u32, n: u64| {
        let name = name_of(tli, n);
        format!("{}{}/{name}", repo.layout.archive_dir(id), name.get(..16).unwrap_or(""))
    };
    let number = |s: &str| s.parse::<WalFileName>().ok().and_then(|w| w.segment_number(seg_size).ok());
    // Each backup's own range.
    for b in backups {
        let (Some(lo), Some(hi)) = (number(&b.wal_start), number(&b.wal_stop)) else {
            report.problems.add(
                repo.layout.backup_catalog(),
                format!("backup {}: WAL range {}..{} unreadable", b.label, b.wal_start, b.wal_stop),
            );
            continue;
        };
        let on = present.get(&b.timeline.0);
        for n in lo..=hi {
            if !on.is_some_and(|s| s.contains(&n)) {
                report.problems.add(
                    key_of(b.timeline.0, n),
                    format!("is missing: backup {} needs it to reach consistency", b.label),
                );
            }
        }
    }
    // History files of the timelines in use.
    let timelines: BTreeSet<u32> = present.keys().copied().chain(backups.iter().map(|b| b.timeline.0)).collect();
    for t in timelines.iter().filter(|t| **t > 1) {
        if !histories.contains(t) {
            report.problems.add(
                format!("{}{t:08X}.history", repo.layout.archive_dir(id)),
                format!("is missing: timeline {t} has WAL or backups but no history file"),
            );
        }
    }
    // Continuity on each timeline, from the newest backup on it (or its first segment).
    for (tli, segs) in present {
        let (Some(&min), Some(&max)) = (segs.first(), segs.last()) else { continue };
        report.timelines.push(TimelineRange {
            timeline: *tli,
            min: name_of(*tli, min),
            max: name_of(*tli, max),
            segments: segs.len() as u64,
        });
        if !whole_archive {
            continue;
        }
        let newest = backups.iter().filter(|b| b.timeline.0 == *tli).filter_map(|b| number(&b.wal_start)).max();
        let from = newest.unwrap_or(min).max(min);
        let mut prev = None;
        for &n in segs.range(from..) {
            if let Some(p) = prev
                && n > p + 1
            {
                let what = if n == p + 2 {
                    "is missing".to_string()
                } else {
                    format!("is missing, and {} segments after it", n - p - 2)
                };
                report.problems.add(
                    key_of(*tli, p + 1),
                    format!("{what}: recovery along timeline {tli} stops at {}", name_of(*tli, p)),
                );
            }
            prev = Some(n);
        }
    }
}

/// The text report.
fn text(reports: &[RepoReport]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!("stanza: {}\n    repo{}: {} ({} problems)\n", r.stanza, r.repo, r.status, r.count()));
        let list = |out: &mut String, p: &Problems| {
            for x in &p.list {
                out.push_str(&format!("            {}: {}\n", x.object, x.problem));
            }
            if p.more > 0 {
                out.push_str(&format!("            ... and {} more\n", p.more));
            }
        };
        list(&mut out, &r.problems);
        for b in &r.backups {
            let status = if b.problems.count() == 0 { "ok" } else { "error" };
            out.push_str(&format!(
                "        backup {}: {status} ({} files, {} parts, {} checked)\n",
                b.label,
                b.checked.files,
                b.checked.parts,
                crate::progress::human(b.checked.bytes)
            ));
            list(&mut out, &b.problems);
        }
        for a in &r.archive {
            let status = if a.problems.count() == 0 { "ok" } else { "error" };
            let ranges: Vec<String> = a.timelines.iter().map(|t| format!("{}..{}", t.min, t.max)).collect();
            out.push_str(&format!(
                "        archive {}: {status} ({} objects; {})\n",
                a.id,
                a.objects,
                ranges.join(", ")
            ));
            list(&mut out, &a.problems);
        }
    }
    out
}
