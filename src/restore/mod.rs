//! `restore`: rebuild a data directory (and its tablespaces) from a backup, verify every file's
//! checksum, and write the recovery settings so PostgreSQL replays WAL from the archive.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use pgstrata_repo_format::layout::copy_of;
use pgstrata_repo_format::meta::{
    CatalogEntry, FileData, FileEntry, ManifestEntry, ManifestHeader, Ownership, read_manifest,
};
use pgstrata_repo_format::{BackupLabel, Sha256Digest, decode_blob, decode_blob_with_summary};

use crate::config::{Config, Source};
use crate::error::{CliError, CliResult, ErrorCode};
use crate::postgres::pg_path;
use crate::repo::{Repo, open_repo, stanza_name};

mod target;

pub use target::{Goal, Recovery, TimelineChoice};

/// Where each manifest root goes on this host.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Manifest root (`pg_data`, `pg_tblspc/16400`) to local directory.
    pub roots: BTreeMap<String, PathBuf>,
    /// Link path in the manifest to its (possibly remapped) destination.
    pub links: BTreeMap<String, PathBuf>,
}

impl RestorePlan {
    /// The local path of a manifest path.
    pub fn local(&self, path: &str) -> Option<PathBuf> {
        // Longest root first: pg_tblspc/16400 before pg_data.
        for (root, dir) in self.roots.iter().rev() {
            if path == root {
                return Some(dir.clone());
            }
            if let Some(rest) = path.strip_prefix(root.as_str()).and_then(|r| r.strip_prefix('/')) {
                // Inside a remapped link (pg_data/pg_wal -> elsewhere)?
                for (link, dest) in &self.links {
                    if let Some(inner) = path.strip_prefix(link.as_str()).and_then(|r| r.strip_prefix('/')) {
                        return Some(dest.join(inner));
                    }
                }
                return Some(dir.join(rest));
            }
        }
        None
    }
}

/// `name=path` pairs of `--tablespace-map` / `--link-map`.
fn parse_map(values: &[String], option: &str) -> CliResult<BTreeMap<String, PathBuf>> {
    values
        .iter()
        .map(|v| {
            let (k, p) = v.split_once('=').ok_or_else(|| {
                CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{v}' is not valid for '{option}' option: use name=path"),
                )
            })?;
            let path = PathBuf::from(p);
            if !path.is_absolute() {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{v}': the path of '{option}' must be absolute"),
                ));
            }
            Ok((k.to_string(), path))
        })
        .collect()
}

/// Decides where the data directory, tablespaces and links go.
pub fn plan(
    header: &ManifestHeader,
    entries: &[ManifestEntry],
    data: &Path,
    config: &Config,
) -> CliResult<RestorePlan> {
    let ts_map = parse_map(config.list("tablespace-map"), "tablespace-map")?;
    let link_map = parse_map(config.list("link-map"), "link-map")?;
    let mut plan = RestorePlan::default();
    plan.roots.insert("pg_data".into(), data.to_path_buf());
    for t in &header.targets {
        if t.name == "pg_data" {
            continue;
        }
        let oid = t.tablespace_oid.map(|o| o.to_string()).unwrap_or_default();
        let mapped = ts_map.get(&oid).or_else(|| t.tablespace_name.as_ref().and_then(|n| ts_map.get(n)));
        plan.roots.insert(t.name.clone(), mapped.cloned().unwrap_or_else(|| PathBuf::from(&t.path)));
    }
    for e in entries {
        if let ManifestEntry::Link(l) = e {
            if l.path.starts_with("pg_data/pg_tblspc/") {
                continue;
            }
            let name = l.path.trim_start_matches("pg_data/");
            let dest = link_map.get(name).cloned().unwrap_or_else(|| PathBuf::from(&l.destination));
            plan.links.insert(l.path.clone(), dest);
        }
    }
    for key in link_map.keys() {
        if !plan.links.contains_key(&format!("pg_data/{key}")) {
            // A link the backup did not have (pg_wal on another volume, as operators do).
            if key == "pg_wal" {
                plan.links.insert("pg_data/pg_wal".into(), link_map[key].clone());
            } else {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("link-map: the backup has no link '{key}'"),
                ));
            }
        }
    }
    Ok(plan)
}

fn is_running(data: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data.join("postmaster.pid")) else { return false };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<u32>().ok()) else { return false };
    Path::new(&format!("/proc/{pid}")).exists()
}

fn io(path: &Path, what: &str, e: std::io::Error) -> CliError {
    CliError::new(ErrorCode::FileRead, format!("unable to {what} {}: {e}", path.display()))
}

fn uid_gid(owner: &Ownership) -> (Option<u32>, Option<u32>) {
    let lookup = |file: &str, name: &Option<String>| -> Option<u32> {
        let name = name.as_ref()?;
        std::fs::read_to_string(file).ok()?.lines().find_map(|l| {
            let mut f = l.split(':');
            (f.next()? == name).then(|| f.nth(1)?.parse().ok())?
        })
    };
    (lookup("/etc/passwd", &owner.user), lookup("/etc/group", &owner.group))
}

fn apply_owner(path: &Path, owner: &Ownership, as_root: bool, follow: bool) -> CliResult<()> {
    if follow {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(owner.mode))
            .map_err(|e| io(path, "set permissions of", e))?;
    }
    if as_root {
        let (uid, gid) = uid_gid(owner);
        let r =
            if follow { std::os::unix::fs::chown(path, uid, gid) } else { std::os::unix::fs::lchown(path, uid, gid) };
        r.map_err(|e| io(path, "set the owner of", e))?;
    }
    Ok(())
}

fn am_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

pub fn run(config: &Config) -> CliResult<()> {
    let stanza = stanza_name(config)?;
    let data = pg_path(config)?;
    let workers = usize::try_from(config.int("process-max").unwrap_or(1)).unwrap_or(1).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(workers.max(2))
        .enable_all()
        .build()
        .map_err(|e| CliError::new(ErrorCode::Service, format!("unable to start the I/O runtime: {e}")))?;
    rt.block_on(restore(config, &stanza, &data, workers))
}

async fn load_manifest(repo: &Repo, backup: &CatalogEntry) -> CliResult<(ManifestHeader, Vec<ManifestEntry>)> {
    let key = repo.layout.manifest(&backup.label);
    let mut errors = Vec::new();
    for k in [key.clone(), copy_of(&key)] {
        let attempt = async {
            let sealed = repo.store.get(&k).await?;
            let plain = decode_blob(&sealed, &k, repo.key.as_ref())?;
            if Sha256Digest::of(&plain) != backup.manifest_sha256 {
                return Err(CliError::new(ErrorCode::Format, format!("{k} does not match the catalog's checksum")));
            }
            Ok(read_manifest(&plain, &k)?)
        };
        match attempt.await {
            Ok(m) => return Ok(m),
            Err(e) if e.code == ErrorCode::Crypto => return Err(e),
            Err(e) => errors.push(e.message),
        }
    }
    Err(CliError::new(
        ErrorCode::Format,
        format!("unable to read the manifest of {}: {}", backup.label, errors.join("; ")),
    ))
}

async fn restore(config: &Config, stanza: &str, data: &Path, workers: usize) -> CliResult<()> {
    let repo = open_repo(config, config.repo_index(), stanza).await?;
    let catalog = repo.load_catalog().await?;
    let recovery = Recovery::from_config(config)?;
    let backup = target::choose_backup(&repo, &catalog, &recovery, config.get("set")).await?;
    if is_running(data) {
        return Err(CliError::new(
            ErrorCode::PgRunning,
            format!("unable to restore while PostgreSQL is running in {}", data.display()),
        )
        .hint("stop PostgreSQL first; if it is not running, remove the stale postmaster.pid"));
    }
    let delta = config.bool("delta") || config.bool("force");
    let preserved = (recovery.goal == Goal::Preserve).then(|| RecoveryState::read(data));
    let non_empty = std::fs::read_dir(data).map(|mut d| d.next().is_some()).unwrap_or(false);
    if non_empty && !delta {
        return Err(CliError::new(
            ErrorCode::PathNotEmpty,
            format!("unable to restore to {}: the directory is not empty", data.display()),
        )
        .hint(
            "use --delta to restore over an existing cluster (only what differs is rewritten), or an empty directory",
        ));
    }
    tracing::info!("repo{}: restore backup set {}", repo.index, backup.label);
    let (header, entries) = load_manifest(&repo, &backup).await?;
    let plan = plan(&header, &entries, data, config)?;
    let as_root = am_root();

    // Directories and links first.
    std::fs::create_dir_all(data).map_err(|e| io(data, "create", e))?;
    for root in plan.roots.values() {
        std::fs::create_dir_all(root).map_err(|e| io(root, "create", e))?;
    }
    for (link, dest) in &plan.links {
        std::fs::create_dir_all(dest).map_err(|e| io(dest, "create", e))?;
        if let Some(local) = plan.roots.get("pg_data").map(|d| d.join(link.trim_start_matches("pg_data/"))) {
            replace_with_symlink(&local, dest)?;
        }
    }
    let mut wanted: HashSet<PathBuf> = HashSet::new();
    for e in &entries {
        match e {
            ManifestEntry::Dir(d) => {
                let Some(local) = plan.local(&d.path) else { continue };
                if plan.links.contains_key(&d.path) {
                    continue;
                }
                std::fs::create_dir_all(&local).map_err(|err| io(&local, "create", err))?;
                apply_owner(&local, &d.owner, as_root, true)?;
                wanted.insert(local);
            }
            ManifestEntry::Link(l) if l.path.starts_with("pg_data/pg_tblspc/") => {
                let oid = l.path.trim_start_matches("pg_data/pg_tblspc/");
                let dest = plan
                    .roots
                    .get(&format!("pg_tblspc/{oid}"))
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(&l.destination));
                let local = data.join(l.path.trim_start_matches("pg_data/"));
                replace_with_symlink(&local, &dest)?;
                wanted.insert(local);
            }
            ManifestEntry::Link(l) => {
                wanted.insert(data.join(l.path.trim_start_matches("pg_data/")));
            }
            ManifestEntry::File(f) => {
                if let Some(local) = plan.local(&f.path) {
                    wanted.insert(local);
                }
            }
        }
    }
    if delta {
        remove_extras(&plan, &wanted)?;
    }

    // Files: delta check and creation per file, then every part of every file fetched, decoded,
    // verified against the manifest's chunk digests and written at its offset, in parallel.
    let files: Vec<FileEntry> = entries
        .into_iter()
        .filter_map(|e| match e {
            ManifestEntry::File(f) => Some(f),
            _ => None,
        })
        .collect();
    let total: u64 = files.iter().map(|f| f.size).sum();
    let frame_size = header.settings.frame_size.max(1);
    let repo = std::sync::Arc::new(repo);
    let plan = std::sync::Arc::new(plan);
    let checks: Vec<CliResult<Option<OpenFile>>> = futures::stream::iter(files.into_iter().map(|f| {
        let plan = std::sync::Arc::clone(&plan);
        let frame = usize::try_from(frame_size).unwrap_or(1 << 20);
        async move { prepare_file(&plan, f, delta, as_root, frame).await }
    }))
    .buffer_unordered(workers)
    .collect()
    .await;
    let mut open_files = Vec::new();
    let mut skipped = 0usize;
    for c in checks {
        match c? {
            Some(f) => open_files.push(std::sync::Arc::new(f)),
            None => skipped += 1,
        }
    }
    let mut per_file = Vec::new();
    for f in &open_files {
        let parts = match &f.entry.data {
            FileData::Empty => continue,
            FileData::Stored { parts } => parts.clone(),
            FileData::Same { .. } | FileData::Pages { .. } => {
                return Err(CliError::new(
                    ErrorCode::NotImplemented,
                    format!("{}: incremental data needs a newer pgstrata", f.entry.path),
                ));
            }
        };
        let mut jobs = Vec::with_capacity(parts.len());
        let mut offset = 0u64;
        for part in parts {
            if !offset.is_multiple_of(frame_size) {
                return Err(CliError::new(
                    ErrorCode::Format,
                    format!("{}: a part starts inside a frame", f.entry.path),
                ));
            }
            jobs.push((part, offset, usize::try_from(offset / frame_size).unwrap_or(usize::MAX)));
            offset += part.plain_len;
        }
        if offset != f.entry.size {
            return Err(CliError::new(
                ErrorCode::Format,
                format!("{}: parts add up to {offset} bytes, the manifest says {}", f.entry.path, f.entry.size),
            ));
        }
        per_file.push((std::sync::Arc::clone(f), jobs));
    }
    let progress = std::sync::Arc::new(std::sync::Mutex::new(crate::progress::Progress::new(
        "restore",
        per_file.iter().map(|(f, _)| f.entry.size).sum(),
    )));
    // Files in parallel; within a file, parts are fetched and decoded ahead in parallel but
    // written in order by one writer (concurrent writes to one file contend on its inode lock).
    let results: Vec<CliResult<()>> = futures::stream::iter(per_file.into_iter().map(|(file, jobs)| {
        let repo = std::sync::Arc::clone(&repo);
        let label = backup.label.clone();
        let progress = std::sync::Arc::clone(&progress);
        async move { restore_file_parts(&repo, &label, file, jobs, workers, &progress).await }
    }))
    .buffer_unordered(workers)
    .collect()
    .await;
    if let Ok(mut p) = progress.lock() {
        p.finish();
    }
    for r in results {
        r?;
    }
    for f in open_files {
        let f = std::sync::Arc::try_unwrap(f)
            .map_err(|_| CliError::new(ErrorCode::RepoInvalid, "a restored file is still in use"))?;
        f.finish(as_root)?;
    }
    if delta {
        tracing::info!("delta restore: {skipped} files were already up to date");
    }
    rewrite_tablespace_map(&plan, data)?;
    write_recovery(config, stanza, data, &recovery, preserved)?;
    sync_dir(data);
    tracing::info!("restore size = {}, backup set {}", crate::backup::human(total), backup.label);
    Ok(())
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

/// Delta: removes what the backup does not have (inside every restored root).
fn remove_extras(plan: &RestorePlan, wanted: &HashSet<PathBuf>) -> CliResult<()> {
    fn visit(dir: &Path, wanted: &HashSet<PathBuf>, roots: &HashSet<PathBuf>) -> CliResult<()> {
        let Ok(rd) = std::fs::read_dir(dir) else { return Ok(()) };
        for entry in rd.flatten() {
            let p = entry.path();
            if roots.contains(&p) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).map_err(|e| io(&p, "read", e))?;
            if !wanted.contains(&p) {
                let r = if meta.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                r.map_err(|e| io(&p, "remove", e))?;
            } else if meta.is_dir() {
                visit(&p, wanted, roots)?;
            }
        }
        Ok(())
    }
    let roots: HashSet<PathBuf> = plan.roots.values().cloned().chain(plan.links.values().cloned()).collect();
    for root in plan.roots.values() {
        visit(root, wanted, &roots)?;
    }
    Ok(())
}

/// Size and manifest digest (hash list of chunk digests) of a local file.
fn local_digest(path: &Path, frame_size: usize) -> Option<(u64, Sha256Digest)> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut chunks = Vec::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; frame_size.max(1)];
    loop {
        let mut n = 0;
        while n < buf.len() {
            match std::io::Read::read(&mut f, &mut buf[n..]).ok()? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        size += n as u64;
        chunks.push(Sha256Digest::of(&buf[..n]));
        if n < buf.len() {
            break;
        }
    }
    Some((size, pgstrata_repo_format::digest::file_digest(&chunks)))
}

/// A file being restored: written under a temporary name, renamed when complete.
struct OpenFile {
    entry: FileEntry,
    local: PathBuf,
    tmp: PathBuf,
    file: std::fs::File,
}

impl OpenFile {
    /// Syncs, sets time, mode and owner, and moves the file into place.
    fn finish(self, as_root: bool) -> CliResult<()> {
        self.file.sync_all().map_err(|e| io(&self.tmp, "sync", e))?;
        let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(self.entry.mtime).unwrap_or(0));
        let _ = self.file.set_modified(mtime);
        drop(self.file);
        apply_owner(&self.tmp, &self.entry.owner, as_root, true)?;
        std::fs::rename(&self.tmp, &self.local).map_err(|e| io(&self.local, "rename into", e))
    }
}

/// Delta check, then the temporary file at its final size; `None` when delta found the file
/// already identical.
async fn prepare_file(
    plan: &RestorePlan,
    f: FileEntry,
    delta: bool,
    as_root: bool,
    frame_size: usize,
) -> CliResult<Option<OpenFile>> {
    let Some(local) = plan.local(&f.path) else {
        return Err(CliError::new(ErrorCode::Format, format!("manifest path {} is outside every target", f.path)));
    };
    if delta {
        let p = local.clone();
        let current = tokio::task::spawn_blocking(move || local_digest(&p, frame_size)).await.ok().flatten();
        if current == Some((f.size, f.sha256)) {
            apply_owner(&local, &f.owner, as_root, true)?;
            return Ok(None);
        }
    }
    let tmp =
        local.with_file_name(format!(".{}.pgstrata", local.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let file = std::fs::File::create(&tmp).map_err(|e| io(&tmp, "create", e))?;
    file.set_len(f.size).map_err(|e| io(&tmp, "size", e))?;
    Ok(Some(OpenFile { entry: f, local, tmp, file }))
}

const WRITE_CHUNK: usize = 256 << 10;

/// Fetches and decodes the parts of one file (up to `ahead` at once), checks every frame
/// against the manifest's chunk digests, and writes them in order.
async fn restore_file_parts(
    repo: &Repo,
    label: &BackupLabel,
    file: std::sync::Arc<OpenFile>,
    jobs: Vec<(pgstrata_repo_format::meta::PartRef, u64, usize)>,
    ahead: usize,
    progress: &std::sync::Mutex<crate::progress::Progress>,
) -> CliResult<()> {
    let mut decoded = futures::stream::iter(jobs.into_iter().map(|(part, offset, chunk)| {
        let file = std::sync::Arc::clone(&file);
        async move { fetch_part(repo, label, file, part, offset, chunk).await.map(|plain| (plain, offset)) }
    }))
    .buffered(ahead.max(1));
    while let Some(next) = decoded.next().await {
        let (plain, offset) = next?;
        if let Ok(mut p) = progress.lock() {
            p.add(plain.len() as u64);
        }
        let file = std::sync::Arc::clone(&file);
        tokio::task::spawn_blocking(move || {
            // Modest writes: one huge write holds the inode lock and page-cache state for long.
            for (i, piece) in plain.chunks(WRITE_CHUNK).enumerate() {
                let at = offset + (i * WRITE_CHUNK) as u64;
                std::os::unix::fs::FileExt::write_all_at(&file.file, piece, at)
                    .map_err(|e| io(&file.tmp, "write", e))?;
            }
            Ok::<(), CliError>(())
        })
        .await
        .map_err(|e| CliError::new(ErrorCode::Format, format!("restore task failed: {e}")))??;
    }
    Ok(())
}

/// Fetches one part and decodes it, checking every frame against the manifest.
async fn fetch_part(
    repo: &Repo,
    label: &BackupLabel,
    file: std::sync::Arc<OpenFile>,
    part: pgstrata_repo_format::meta::PartRef,
    offset: u64,
    first_chunk: usize,
) -> CliResult<Vec<u8>> {
    let key = repo.layout.pack(label, part.pack);
    let bytes = repo.store.get_range(&key, part.offset..part.offset + part.len).await?;
    let k = repo.key.clone();
    tokio::task::spawn_blocking(move || {
        let what = format!("{key} (part of {})", file.entry.path);
        let (plain, summary) = decode_blob_with_summary(&bytes, &what, k.as_ref())?;
        let expected = file.entry.chunks.get(first_chunk..first_chunk + summary.chunk_sha256.len());
        if plain.len() as u64 != part.plain_len || expected != Some(summary.chunk_sha256.as_slice()) {
            return Err(CliError::new(
                ErrorCode::Format,
                format!("{}: restored bytes at offset {offset} do not match the manifest's checksums", file.entry.path),
            ));
        }
        Ok(plain)
    })
    .await
    .map_err(|e| CliError::new(ErrorCode::Format, format!("restore task failed: {e}")))?
}

/// PostgreSQL recreates tablespace links from `tablespace_map` at start: it must name the
/// restored locations, not the source's.
fn rewrite_tablespace_map(plan: &RestorePlan, data: &Path) -> CliResult<()> {
    let path = data.join("tablespace_map");
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(()) };
    let mut out = String::new();
    for line in text.lines() {
        let (oid, old) = line.split_once(' ').unwrap_or((line, ""));
        match plan.roots.get(&format!("pg_tblspc/{oid}")) {
            Some(dest) => out.push_str(&format!("{oid} {}\n", dest.display())),
            None => out.push_str(&format!("{oid} {old}\n")),
        }
    }
    std::fs::write(&path, out).map_err(|e| io(&path, "write", e))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

fn shell_quote(arg: &str) -> String {
    if arg.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:%@,+".contains(&b)) {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', "'\\''"))
    }
}

/// The `restore_command` this restore writes: it must work on its own, so it names the
/// executable, the configuration file and the stanza, and carries options that came from the
/// environment (except secrets, which the server must have in a config file or its environment).
pub fn restore_command(config: &Config, stanza: &str, data: &Path) -> CliResult<String> {
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to find our own executable: {e}")))?;
    let mut args = vec![exe.display().to_string()];
    for opt in ["config", "config-path", "config-include-path"] {
        if let Some(v) = config.get(opt) {
            args.push(format!("--{opt}={v}"));
        }
    }
    args.push(format!("--stanza={stanza}"));
    args.push(format!("--pg1-path={}", data.display()));
    if config.get("repo").is_some() {
        args.push(format!("--repo={}", config.repo_index()));
    }
    for (name, source, secure, values) in config.settings_detail() {
        if source != Source::Environment {
            continue;
        }
        if secure {
            tracing::warn!(
                "option {name} came from the environment and cannot be written into restore_command; \
                 PostgreSQL needs it in a configuration file or in its own environment"
            );
            continue;
        }
        for v in values {
            args.push(format!("--{name}={v}"));
        }
    }
    let mut cmd: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
    cmd.push("archive-get".into());
    cmd.push("%f".into());
    cmd.push("\"%p\"".into());
    Ok(cmd.join(" "))
}

const BEGIN: &str = "# pgstrata restore settings begin";
const END: &str = "# pgstrata restore settings end";

/// Recovery settings of a data directory: the lines of `postgresql.auto.conf` that drive
/// recovery (ours or another tool's) and which signal files exist.
#[derive(Debug, Default)]
struct RecoveryState {
    /// Lines of `postgresql.auto.conf` that are not recovery settings.
    other: Vec<String>,
    recovery: Vec<String>,
    signals: Vec<&'static str>,
}

const SIGNALS: [&str; 2] = ["recovery.signal", "standby.signal"];

impl RecoveryState {
    fn read(data: &Path) -> Self {
        let text = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        let mut state = Self::default();
        let mut inside = false;
        for line in text.lines() {
            if line == BEGIN || line == END {
                inside = line == BEGIN;
                continue;
            }
            let key = line.split('=').next().unwrap_or("").trim();
            if inside || key == "restore_command" || key.starts_with("recovery_target") {
                state.recovery.push(line.to_string());
            } else {
                state.other.push(line.to_string());
            }
        }
        state.signals = SIGNALS.into_iter().filter(|s| data.join(s).exists()).collect();
        state
    }
}

/// Writes recovery settings into `postgresql.auto.conf` and the signal file; `--type=preserve`
/// puts back what the directory had before the restore.
fn write_recovery(
    config: &Config,
    stanza: &str,
    data: &Path,
    recovery: &Recovery,
    preserved: Option<RecoveryState>,
) -> CliResult<()> {
    for name in SIGNALS {
        let _ = std::fs::remove_file(data.join(name));
    }
    let auto = data.join("postgresql.auto.conf");
    // Drop an earlier block of ours and any recovery settings a previous tool left.
    let mut kept = RecoveryState::read(data).other;
    let signal = match (&recovery.goal, &preserved) {
        (Goal::Preserve, Some(before)) => {
            kept.extend(before.recovery.iter().cloned());
            before.signals.clone()
        }
        (Goal::None, _) => Vec::new(),
        (goal, _) => {
            kept.push(BEGIN.to_string());
            let cmd = restore_command(config, stanza, data)?;
            kept.push(format!("restore_command = '{}'", cmd.replace('\'', "''")));
            for (k, v) in recovery.settings() {
                kept.push(format!("{k} = '{}'", v.replace('\'', "''")));
            }
            for opt in config.list("recovery-option") {
                let (k, v) = opt.split_once('=').ok_or_else(|| {
                    CliError::new(
                        ErrorCode::OptionInvalidValue,
                        format!("'{opt}' is not valid for 'recovery-option': use key=value"),
                    )
                })?;
                kept.push(format!("{} = '{}'", k.trim(), v.trim().replace('\'', "''")));
            }
            kept.push(END.to_string());
            vec![if *goal == Goal::Standby { "standby.signal" } else { "recovery.signal" }]
        }
    };
    let mut text = kept.join("\n");
    text.push('\n');
    std::fs::write(&auto, text).map_err(|e| io(&auto, "write", e))?;
    for name in signal {
        let p = data.join(name);
        std::fs::write(&p, b"").map_err(|e| io(&p, "write", e))?;
    }
    if am_root() {
        // Files we wrote belong to the cluster's owner.
        if let Ok(meta) = std::fs::metadata(data) {
            use std::os::unix::fs::MetadataExt;
            for name in ["postgresql.auto.conf", "recovery.signal", "standby.signal"] {
                let p = data.join(name);
                if p.exists() {
                    let _ = std::os::unix::fs::chown(&p, Some(meta.uid()), Some(meta.gid()));
                }
            }
        }
    }
    tracing::info!("write recovery settings ({}) into {}", recovery.describe(), auto.display());
    Ok(())
}
