//! `archive-push` (PostgreSQL's `archive_command`) and `archive-get` (`restore_command`), and
//! their asynchronous workers (`push_async`, `get_async`) working through the spool.
//!
//! Exit codes of `archive-get` follow PostgreSQL's contract: 0 fetched; 1 not in the archive
//! (recovery ends, or a standby waits); anything above 125 (we use 255) for every other failure,
//! so a storage or integrity problem aborts recovery instead of silently ending it.

pub mod get_async;
pub mod push_async;
mod seal;
mod spool;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use pgstrata_repo_format::layout::archive_id;
use pgstrata_repo_format::pg::{ControlFile, WalFileKind, WalFileName, WalPageHeader};
use pgstrata_repo_format::{BlobSettings, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::repo::{Repo, RepoTarget, open_repo};
use crate::wal::HeadCheck;

/// What `archive-push` and `archive-get` (and their asynchronous workers) were asked for,
/// resolved once by a front end: the engine reads no option.
#[derive(Clone, Debug)]
pub struct ArchiveRequest {
    pub stanza: String,
    /// The repositories, in order (`--repo`, else every one configured).
    pub repos: Vec<RepoTarget>,
    /// How new objects are written (`compress-type`, `compress-level`, `buffer-size`).
    pub blob: BlobSettings,
    /// `process-max`.
    pub workers: usize,
    /// `archive-async`.
    pub asynchronous: bool,
    /// `spool-path`.
    pub spool_path: PathBuf,
    /// `lock-path`: worker locks and stop files.
    pub lock_path: PathBuf,
    /// `archive-timeout`: how long an asynchronous push waits for its worker.
    pub timeout: Duration,
    /// `archive-push-queue-max`.
    pub push_queue_max: Option<u64>,
    /// `archive-get-queue-max`.
    pub get_queue_max: u64,
    /// `pg1-path`: the cluster being recovered (else the working directory, where PostgreSQL
    /// runs `restore_command`).
    pub pg_path: Option<PathBuf>,
    /// Every `pgN-path` of the stanza (archive-push's working-directory check).
    pub pg_paths: Vec<String>,
    /// The options an asynchronous worker is started with (this process's command line).
    pub worker_args: Vec<String>,
    /// The command's parameters: `%p` for a push; `%f` and `%p` for a get; the `pg_wal`
    /// directory for the push worker.
    pub params: Vec<String>,
}

/// Resolves `%p`. A relative path is relative to the working directory, which PostgreSQL sets
/// to its data directory — never to `pg1-path`, which may name another cluster (the source of a
/// restore, say).
fn resolve(param: &str) -> CliResult<PathBuf> {
    std::path::absolute(param)
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to resolve the path {param}: {e}")))
}

/// Checks a segment's header against the stanza's database.
fn check_segment(repo: &Repo, name: &WalFileName, head: &[u8], len: u64) -> CliResult<()> {
    if !matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
        return Ok(());
    }
    let db = repo.current_db()?;
    let header = WalPageHeader::parse(head, &name.to_string())?;
    if header.system_identifier != db.system_id || header.pg_version != db.pg_version {
        return Err(CliError::new(
            ErrorCode::ArchiveMismatch,
            format!(
                "WAL file {name} is from PostgreSQL {} with system id {}, but stanza '{}' in {} is PostgreSQL {} with system id {}",
                header.pg_version,
                header.system_identifier,
                repo.layout.stanza(),
                repo.name(),
                db.pg_version,
                db.system_id
            ),
        )
        .hint("is archive_command pointing at the right stanza? After pg_upgrade, run stanza-upgrade"));
    }
    if name.kind == WalFileKind::Segment && len != u64::from(header.segment_size) {
        return Err(CliError::new(
            ErrorCode::Format,
            format!("WAL segment {name} is {len} bytes, its header says {}", header.segment_size),
        ));
    }
    Ok(())
}

/// The repositories that can be opened now (for reading: a failing one is a warning); an
/// error only when none can.
async fn open_readable(request: &ArchiveRequest) -> CliResult<Vec<Repo>> {
    let mut repos = Vec::new();
    let mut search = RepoSearch::default();
    for target in &request.repos {
        if let Some(repo) = search.answer(target.index, open_repo(target, &request.stanza).await.map(Some)) {
            repos.push(repo);
        }
    }
    match search.failures.into_iter().next() {
        Some(e) if repos.is_empty() => Err(e),
        _ => Ok(repos),
    }
}

/// Every configured repository of the stanza, opened and unlocked (writers need them all).
async fn open_all(request: &ArchiveRequest) -> CliResult<Vec<Repo>> {
    let mut repos = Vec::new();
    for target in &request.repos {
        repos.push(crate::repo::open_repo_writing(target, &request.stanza).await?);
    }
    Ok(repos)
}

/// Pushes one WAL file into every repository, create-only: returns when it is durable in all
/// of them. The same content already there is a success (with a warning); different content
/// is refused (45) and nothing is overwritten.
/// `threads`: threads compressing and encrypting its frames (`process-max` for one file; one
/// each when a worker pushes `process-max` files at once).
async fn push_file(
    repos: &[Repo],
    settings: BlobSettings,
    name: &WalFileName,
    path: &Path,
    threads: usize,
) -> CliResult<()> {
    let threads = threads.max(1);
    let mut first: Option<Sha256Digest> = None;
    for repo in repos {
        let db = repo.current_db()?;
        let archive = archive_id(db.pg_version, db.id);
        // Reading, compression, encryption and the digest the key carries run together on all
        // cores, while the archive is asked whether the file is already there.
        let (file, key, store) = (path.to_path_buf(), repo.key.clone(), repo.store.clone());
        let prefix = repo.layout.wal_prefix(&archive, name);
        let (dir, label) = (prefix.rsplit_once('/').map_or("", |(d, _)| d).to_string() + "/", name.to_string());
        let sealing = tokio::task::spawn_blocking(move || -> CliResult<(seal::Sealed, Output)> {
            // On the local filesystem the sealed frames go to a staging file as they come;
            // elsewhere they wait in memory for the key (it carries the file's digest).
            let mut out = match store.stage_new(&dir, &label)? {
                Some(staged) => Output::Staged(staged),
                None => Output::Pieces(Vec::new()),
            };
            let sealed = seal::seal_file(&file, settings, key.as_ref(), threads, &mut |piece| out.add(piece))?;
            Ok((sealed, out))
        });
        let (sealed, copies) = tokio::join!(sealing, crate::wal::copies(repo, &archive, name));
        let (sealed, out) =
            sealed.map_err(|e| CliError::new(ErrorCode::Service, format!("compression task failed: {e}")))??;
        let copies = copies?;
        check_segment(repo, name, &sealed.head, sealed.len)?;
        let sha = sealed.sha256;
        if first.is_some_and(|f| f != sha) {
            return Err(CliError::new(ErrorCode::FileRead, format!("WAL file {name} changed while it was archived")));
        }
        first = Some(sha);
        if copies.iter().any(|(_, s)| *s == sha) {
            tracing::warn!("WAL file {name} already exists in the {} archive with the same checksum", repo.name());
            continue;
        }
        if let Some((key, _)) = copies.first() {
            return Err(CliError::new(
                ErrorCode::ArchiveDuplicate,
                format!(
                    "WAL file {name} already exists in the {} archive with a different checksum ({key})",
                    repo.name()
                ),
            )
            .hint("this is often a sign of two clusters archiving into the same stanza"));
        }
        // The name first: of concurrent pushes of different bytes exactly one gets it (the same
        // bytes read back as our own claim), and the others are refused with nothing written.
        let claim = repo.layout.wal_claim(&archive, name);
        match repo.store.put_new(&claim, Bytes::from(sha.to_string())).await {
            Ok(()) => {}
            Err(e) if e.is_already_exists() => {
                let held = repo.store.get(&claim).await.map(|b| String::from_utf8_lossy(&b).trim().to_string());
                return Err(CliError::new(
                    ErrorCode::ArchiveDuplicate,
                    format!(
                        "WAL file {name} is claimed in the {} archive by a push of different content ({}; this one is {sha})",
                        repo.name(),
                        held.unwrap_or_else(|e| format!("unreadable: {e}"))
                    ),
                )
                .hint("this is often a sign of two clusters archiving into the same stanza; this segment stays in pg_wal"));
            }
            Err(e) => return Err(e.into()),
        }
        let key = repo.layout.wal_object(&archive, name, &sha);
        match out.store(repo, key).await {
            Ok(()) => tracing::info!("pushed WAL file {name} to the {} archive", repo.name()),
            // The key embeds the content's digest: another push of the same bytes won.
            Err(e) if e.is_already_exists() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Where a WAL file's sealed bytes are while its key is not known yet.
enum Output {
    Staged(pgstrata_storage::Staged),
    Pieces(Vec<Bytes>),
}

impl Output {
    fn add(&mut self, piece: Vec<u8>) -> CliResult<()> {
        match self {
            Self::Staged(staged) => staged.write(&piece)?,
            Self::Pieces(pieces) => pieces.push(Bytes::from(piece)),
        }
        Ok(())
    }

    /// Stores the bytes under `key`, create-only.
    async fn store(self, repo: &Repo, key: String) -> pgstrata_storage::Result<()> {
        match self {
            Self::Pieces(pieces) => repo.store.put_new_pieces(&key, pieces).await,
            Self::Staged(staged) => {
                let name = key.rsplit_once('/').map_or(key.as_str(), |(_, n)| n).to_string();
                let committed = tokio::task::spawn_blocking(move || staged.commit_new(&name)).await;
                committed.map_err(|e| pgstrata_storage::StorageError::Other {
                    store: repo.name().to_string(),
                    op: "store",
                    key,
                    detail: e.to_string(),
                })?
            }
        }
    }
}

fn wal_path_param(request: &ArchiveRequest) -> CliResult<(PathBuf, WalFileName)> {
    let param = request.params.first().ok_or_else(|| {
        CliError::new(
            ErrorCode::ParamRequired,
            "archive-push requires the WAL file's path (archive_command = '... archive-push %p')",
        )
    })?;
    check_working_dir(&request.pg_paths, param)?;
    let path = resolve(param)?;
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let name: WalFileName = file_name.parse()?;
    Ok((path, name))
}

/// PostgreSQL runs `archive_command` in its data directory and passes `%p` relative to it, so
/// the working directory says which cluster is archiving. When the stanza configures clusters
/// (`pgN-path`) and this is none of them — a copy restored elsewhere with the original's
/// configuration — it must not archive into the original's stanza (pgBackRest refuses it too).
fn check_working_dir(paths: &[String], param: &str) -> CliResult<()> {
    if Path::new(param).is_absolute() {
        return Ok(());
    }
    if paths.is_empty() {
        return Ok(());
    }
    let cwd = std::env::current_dir()
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to get the working directory: {e}")))?;
    let here = std::fs::canonicalize(&cwd).unwrap_or_else(|_| cwd.clone());
    if paths.iter().any(|p| std::fs::canonicalize(p).is_ok_and(|p| p == here)) {
        return Ok(());
    }
    Err(CliError::new(
        ErrorCode::OptionInvalidValue,
        format!(
            "PostgreSQL working directory '{}' is not the same as option pg1-path '{}'{}",
            cwd.display(),
            paths[0],
            if paths.len() > 1 { format!(" (nor {})", paths[1..].join(", ")) } else { String::new() }
        ),
    )
    .hint(
        "is PostgreSQL's data_directory configured as pg1-path? A copy restored elsewhere must not archive into \
         the original's stanza: restore it with --archive-mode=off, or give it its own stanza",
    ))
}

/// `archive-push`: the WAL file `%p` into every repository (through the worker when
/// asynchronous).
pub fn push(request: &ArchiveRequest) -> CliResult<()> {
    let (path, name) = wal_path_param(request)?;
    crate::control::check_not_stopped_in(&request.lock_path, Some(&request.stanza))?;
    if request.asynchronous {
        return push_async::foreground(request, &path, &name);
    }
    crate::runtime::runtime()?.block_on(async {
        let repos = open_all(request).await?;
        push_file(&repos, request.blob, &name, &path, request.workers).await
    })
}

fn get_params(request: &ArchiveRequest) -> CliResult<(WalFileName, PathBuf)> {
    let (Some(file), Some(dest)) = (request.params.first(), request.params.get(1)) else {
        return Err(CliError::new(
            ErrorCode::ParamRequired,
            "archive-get requires the WAL file name and the destination (restore_command = '... archive-get %f \"%p\"')",
        ));
    };
    Ok((file.parse()?, resolve(dest)?))
}

/// The archive holding the WAL of the cluster being recovered (`cluster`, its `pg_control`):
/// that of the newest database of the stanza with its system identifier and version — after
/// `pg_upgrade` and `stanza-upgrade`, a restored backup of the old cluster replays the old
/// database's WAL, whose segment names the new one reuses — else the current database's.
fn archive_for(repo: &Repo, cluster: Option<&ControlFile>) -> CliResult<String> {
    let current = repo.current_db()?;
    let db = cluster
        .and_then(|c| {
            repo.info
                .db_history
                .iter()
                .rev()
                .find(|d| d.system_id == c.system_identifier && d.pg_version == c.pg_version)
        })
        .unwrap_or(current);
    Ok(archive_id(db.pg_version, db.id))
}

/// `name` from one repository into `dest`: pgstrata's archive first, then pgBackRest's, which a
/// repository taken over from pgBackRest holds beside it (a stanza seen only through
/// pgBackRest's files has nothing in pgstrata's). `false` when neither has it.
async fn fetch_from(
    repo: &Repo,
    name: &WalFileName,
    cluster: Option<&ControlFile>,
    dest: &Path,
    (check, sync): (Option<&HeadCheck>, bool),
) -> CliResult<bool> {
    use crate::pgbackrest::archive::{Found, fetch};
    if !repo.seen_only()
        && crate::wal::fetch_to(repo, &archive_for(repo, cluster)?, name, dest, check.cloned(), sync).await?
    {
        return Ok(true);
    }
    match fetch(repo.pgbackrest(), repo.layout.stanza(), name, cluster).await? {
        Found::Segment(plain) => {
            if let Some(check) = check {
                check(&plain[..plain.len().min(8192)], plain.len() as u64)?;
            }
            write_file(dest, &plain, sync)?;
            Ok(true)
        }
        Found::Missing | Found::NoArchive => Ok(false),
    }
}

/// Fetches `name` into `dest` from the first repository that has it, by [`RepoSearch`]'s
/// rule; the repository's number, or `None` when none has it.
async fn fetch_any(
    repos: &[Repo],
    name: &WalFileName,
    cluster: Option<&ControlFile>,
    dest: &Path,
    how: (Option<&HeadCheck>, bool),
) -> CliResult<Option<u32>> {
    let mut search = RepoSearch::default();
    for repo in repos {
        let found = fetch_from(repo, name, cluster, dest, how).await.map(|f| f.then_some(()));
        if search.answer(repo.index, found).is_some() {
            return Ok(Some(repo.index));
        }
    }
    search.finish(name).map(|()| None)
}

/// The answers of several repositories to one question, in order (pgBackRest's rule): each
/// failure is a warning and the next repository is asked; the search ends with "absent" when
/// at least one repository answered and none had it, and with an error only when every
/// repository failed.
#[derive(Debug, Default)]
struct RepoSearch {
    asked: usize,
    failures: Vec<CliError>,
}

impl RepoSearch {
    /// Records one repository's answer; returns what it found.
    fn answer<T>(&mut self, index: u32, answer: CliResult<Option<T>>) -> Option<T> {
        self.asked += 1;
        match answer {
            Ok(found) => found,
            Err(mut e) => {
                tracing::warn!("repo{index}: {} (trying the next repository)", e.message);
                e.message = format!("repo{index}: {}", e.message);
                self.failures.push(e);
                None
            }
        }
    }

    /// Nothing was found: `Ok` (absent) unless every repository failed.
    fn finish(self, name: &WalFileName) -> CliResult<()> {
        let Some(first) = self.failures.first() else { return Ok(()) };
        let all: Vec<&str> = self.failures.iter().map(|e| e.message.as_str()).collect();
        if self.failures.len() < self.asked {
            tracing::warn!("{name} is in no repository that answered; failed: {}", all.join("; "));
            return Ok(());
        }
        let mut e = CliError::new(first.code, format!("unable to get {name} from any repository: {}", all.join("; ")));
        // Each repository's own hints (a wrong passphrase, a missing stanza) still apply.
        for hint in self.failures.iter().flat_map(|f| f.hints.iter()) {
            if !e.hints.contains(hint) {
                e.hints.push(hint.clone());
            }
        }
        Err(e)
    }
}

fn not_found(name: &WalFileName) -> CliError {
    CliError::new(ErrorCode::NotInArchive, format!("unable to find {name} in the archive"))
}

/// `archive-get`: the WAL file `%f` from the first repository that has it into `%p` (through
/// the prefetch queue when asynchronous).
pub fn get(request: &ArchiveRequest) -> CliResult<()> {
    let (name, dest) = get_params(request)?;
    if request.asynchronous && name.kind == WalFileKind::Segment {
        return get_async::foreground(request, &name, &dest);
    }
    get_sync(request, &name, &dest)
}

/// Fetches `name` from the repositories into `dest`.
fn get_sync(request: &ArchiveRequest, name: &WalFileName, dest: &Path) -> CliResult<()> {
    let cluster = get_async::cluster_control(request);
    crate::runtime::runtime()?.block_on(async {
        // Repositories are opened one at a time: a later one (its stanza info read, its key
        // unwrapped) only when the earlier ones lack the file.
        let mut search = RepoSearch::default();
        for target in &request.repos {
            let index = target.index;
            let attempt = async {
                let repo = open_repo(target, &request.stanza).await?;
                Ok(fetch_from(&repo, name, cluster.as_ref(), dest, (None, false)).await?.then_some(()))
            };
            if search.answer(index, attempt.await).is_some() {
                tracing::info!("found {name} in the repo{index} archive");
                return Ok(());
            }
        }
        search.finish(name)?;
        Err(not_found(name))
    })
}

/// Writes `data` under a temporary name beside `dest` (64 KiB at a time), then renames it:
/// PostgreSQL never sees half a file. Synced first only when `sync` asks (see
/// [`crate::wal::fetch_to`]).
pub(super) fn write_file(dest: &Path, data: &[u8], sync: bool) -> CliResult<()> {
    let tmp = crate::wal::temporary_beside(dest);
    let fail =
        |e: std::io::Error| CliError::new(ErrorCode::FileRead, format!("unable to write {}: {e}", tmp.display()));
    // Never through a link planted at the temporary name (removed first: unlink removes the
    // link itself).
    let _ = std::fs::remove_file(&tmp);
    let mut f = crate::anchor::create_nofollow(&tmp, 0o600, false).map_err(fail)?;
    let written = data
        .chunks(crate::wal::WRITE)
        .try_for_each(|c| f.write_all(c))
        .and_then(|()| if sync { f.sync_data() } else { Ok(()) })
        .and_then(|()| std::fs::rename(&tmp, dest));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}
