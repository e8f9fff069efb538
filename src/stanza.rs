//! `stanza-create` and `stanza-upgrade`: record which database a stanza protects;
//! `stanza-delete`: remove a stanza from a repository, as pgBackRest guards it.

use pgstrata_repo_format::layout::StanzaLayout;
use pgstrata_repo_format::meta::{BackupCatalog, DbEntry, StanzaInfo};
use pgstrata_repo_format::pg::ControlFile;
use pgstrata_storage::RetryPolicy;

use std::path::PathBuf;
use std::time::Duration;

use pgstrata_repo_format::BlobSettings;

use crate::error::{CliError, CliResult, ErrorCode};
use crate::lease::Lease;
use crate::postgres::{ClusterTarget, connect, control, identify, remote_cluster};
use crate::repo::{Repo, RepoTarget, load_stanza_info, save_stanza_info};

/// What `stanza-create`, `stanza-upgrade` and `stanza-delete` were asked for, resolved once by
/// a front end.
#[derive(Clone, Debug)]
pub struct StanzaRequest {
    pub stanza: String,
    /// `--repo`, else every repository configured.
    pub repos: Vec<RepoTarget>,
    /// The configured clusters (create and upgrade read the primary's identity).
    pub clusters: Vec<ClusterTarget>,
    /// `online`: the running server is asked too.
    pub online: bool,
    /// How the new catalog is written.
    pub blob: BlobSettings,
    /// `lock-path` (stop files) and `lease-time`.
    pub lock_path: PathBuf,
    pub lease_time: Duration,
    /// `--force` (delete: even with `postmaster.pid` in `pg1-path`).
    pub force: bool,
}

/// Reads `pg_control` and, when `online`, checks the running server agrees with it.
async fn cluster_identity(request: &StanzaRequest) -> CliResult<ControlFile> {
    let cluster = &if request.online {
        crate::postgres::primary_first(&request.clusters).await?
    } else {
        request
            .clusters
            .first()
            .cloned()
            .ok_or_else(|| CliError::new(ErrorCode::OptionRequired, "stanza command requires option: pg1-path"))?
    };
    let path = cluster.data.clone();
    let remote = remote_cluster(cluster)?;
    let control = control(cluster, remote.as_deref()).await?;
    if request.online {
        let client = connect(cluster).await?;
        let server = identify(&client).await?;
        let same_dir = match remote {
            // On a database host: as its server reports it, which is how pg1-path names it there.
            Some(_) => std::path::Path::new(&server.data_directory) == path,
            None => std::fs::canonicalize(&server.data_directory).ok() == std::fs::canonicalize(&path).ok(),
        };
        if server.system_identifier != control.system_identifier
            || server.version_num / 10_000 != control.pg_version
            || !same_dir
        {
            return Err(CliError::new(
                ErrorCode::DbMismatch,
                format!(
                    "the server on pg1 (version {}, system id {}, data directory {}) is not the cluster in pg1-path {} \
                     (version {}, system id {})",
                    server.version_num / 10_000,
                    server.system_identifier,
                    server.data_directory,
                    path.display(),
                    control.pg_version,
                    control.system_identifier
                ),
            )
            .hint("check pg1-path, pg1-port and pg1-socket-path"));
        }
    }
    Ok(control)
}

fn db_entry(id: u32, control: &ControlFile) -> DbEntry {
    DbEntry {
        id,
        system_id: control.system_identifier,
        pg_version: control.pg_version,
        catalog_version: control.catalog_version,
        control_version: control.control_version,
    }
}

fn matches(db: &DbEntry, control: &ControlFile) -> bool {
    db.system_id == control.system_identifier && db.pg_version == control.pg_version
}

fn mismatch(index: u32, db: &DbEntry, control: &ControlFile) -> CliError {
    CliError::new(
        ErrorCode::DbMismatch,
        format!(
            "repo{index} holds a stanza for another database (version {}, system id {}); \
             this cluster is version {}, system id {}",
            db.pg_version, db.system_id, control.pg_version, control.system_identifier
        ),
    )
    .hint("is this the right stanza and repository?")
    .hint("after pg_upgrade, run stanza-upgrade instead")
}

pub fn create(request: &StanzaRequest) -> CliResult<()> {
    let stanza = &request.stanza;
    crate::control::check_not_stopped_in(&request.lock_path, Some(stanza))?;
    crate::runtime::runtime()?.block_on(async {
        let control = cluster_identity(request).await?;
        for target in &request.repos {
            let index = target.index;
            let store = target.storage()?.open_creating(RetryPolicy::default())?;
            let layout = StanzaLayout::new(stanza)?;
            // A stanza pgBackRest made: taken over in place (its database ids), then checked
            // against the cluster as any existing stanza is.
            if load_stanza_info(&store, &layout).await?.is_none() {
                crate::repo::adopt(target, store.clone(), layout.clone(), true).await?;
            }
            let lease = Lease::acquire(&store, &layout, index, "stanza-create", request.lease_time).await?;
            let result = create_on(request, target, &control, store, layout).await;
            lease.release().await;
            result?;
        }
        Ok(())
    })
}

/// stanza-create on one repository, under its lease.
async fn create_on(
    request: &StanzaRequest,
    target: &RepoTarget,
    control: &ControlFile,
    store: pgstrata_storage::RepoStore,
    layout: StanzaLayout,
) -> CliResult<()> {
    let (stanza, index) = (&request.stanza, target.index);
    if let Some(info) = load_stanza_info(&store, &layout).await? {
        let db = info.current_db().ok_or_else(|| {
            CliError::new(ErrorCode::RepoInvalid, format!("repo{index}: stanza info has no database"))
        })?;
        if !matches(db, control) {
            return Err(mismatch(index, db, control));
        }
        let key = crate::repo::unlock(target, &info)?;
        let repo = Repo { index, store, layout, info, key, foreign: target.foreign() };
        // Only a missing catalog is created; a damaged or unreachable one is reported, never
        // replaced by an empty list of backups.
        match repo.load_catalog().await {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::FileMissing => {
                repo.save_catalog(&BackupCatalog::default(), request.blob, &Default::default()).await?;
            }
            Err(e) => return Err(e),
        }
        tracing::info!("stanza-create for stanza '{stanza}' on repo{index}: already exists and is valid");
        return Ok(());
    }
    // Lease objects (ours included) are not leftovers of a stanza.
    let lock_prefix = layout.lock("");
    let leftovers: Vec<_> =
        store.list_all(&layout.root()).await?.into_iter().filter(|o| !o.key.starts_with(&lock_prefix)).collect();
    if !leftovers.is_empty() {
        return Err(CliError::new(
            ErrorCode::RepoInvalid,
            format!("repo{index} has {} objects under {} but no stanza info", leftovers.len(), layout.root()),
        )
        .hint("the stanza may have been deleted partially; remove the leftovers or use another repo path"));
    }
    let (cipher, key) = crate::repo::new_cipher(target)?;
    let info = StanzaInfo {
        stanza: stanza.to_string(),
        created: crate::runtime::unix_now(),
        cipher,
        db_history: vec![db_entry(1, control)],
    };
    let repo = Repo { index, store, layout, info, key, foreign: target.foreign() };
    // The catalog first: a stanza info never exists without one.
    repo.save_catalog(&BackupCatalog::default(), request.blob, &Default::default()).await?;
    save_stanza_info(&repo.store, &repo.layout, &repo.info).await?;
    tracing::info!(
        "stanza-create for stanza '{stanza}' on repo{index}: created for PostgreSQL {} (system id {})",
        control.pg_version,
        control.system_identifier
    );
    Ok(())
}

pub fn upgrade(request: &StanzaRequest) -> CliResult<()> {
    let stanza = &request.stanza;
    crate::control::check_not_stopped_in(&request.lock_path, Some(stanza))?;
    crate::runtime::runtime()?.block_on(async {
        let control = cluster_identity(request).await?;
        for target in &request.repos {
            let index = target.index;
            let mut repo = crate::repo::open_repo(target, stanza).await?;
            let lease = Lease::acquire(&repo.store, &repo.layout, index, "stanza-upgrade", request.lease_time).await?;
            let current = repo.current_db()?;
            if matches(current, &control) {
                tracing::info!("stanza-upgrade for stanza '{stanza}' on repo{index}: already up to date");
                lease.release().await;
                continue;
            }
            let next = repo.info.db_history.iter().map(|d| d.id).max().unwrap_or(0) + 1;
            repo.info.db_history.push(db_entry(next, &control));
            let saved = match lease.check() {
                Ok(()) => save_stanza_info(&repo.store, &repo.layout, &repo.info).await,
                Err(e) => Err(e),
            };
            lease.release().await;
            saved?;
            tracing::info!(
                "stanza-upgrade for stanza '{stanza}' on repo{index}: now PostgreSQL {} (system id {}, db id {next})",
                control.pg_version,
                control.system_identifier
            );
        }
        Ok(())
    })
}

/// `stanza-delete` on every repository (or `--repo`), pgBackRest's rules: nothing to do where
/// the stanza does not exist; otherwise the stanza must be stopped on this host
/// (`stop`, so no archive-push or backup starts here meanwhile) and, unless `--force`,
/// PostgreSQL must not be running in `pg1-path`. Under the repository's lease the stanza info
/// and catalog go first, so every reader sees the stanza gone before its data goes, then the
/// backups (newest first) and the archive. A delete that is interrupted is
/// finished by running it again. The lease objects stay, so writer generations keep growing
/// if the stanza is created again.
pub fn delete(request: &StanzaRequest) -> CliResult<()> {
    let stanza = &request.stanza;
    let layout = StanzaLayout::new(stanza)?;
    crate::runtime::runtime()?.block_on(async {
        // Every repository (or --repo) where the stanza has anything but its lease objects.
        let mut present = Vec::new();
        for target in &request.repos {
            let index = target.index;
            let store = target.store()?;
            let root = layout.root();
            let dirs = store.list_dirs(&root).await?;
            if !store.list_files(&root).await?.is_empty() || dirs.iter().any(|d| d != LOCK_DIR) {
                present.push((index, store));
            } else {
                tracing::info!("stanza-delete: stanza '{stanza}' does not exist on repo{index}");
            }
        }
        if present.is_empty() {
            return Ok(());
        }
        let stop = crate::control::stop_file_in(&request.lock_path, Some(stanza));
        if !stop.exists() {
            return Err(CliError::new(
                ErrorCode::FileMissing,
                format!("stop file does not exist for stanza '{stanza}' ({})", stop.display()),
            )
            .hint(format!("run the stop command for stanza '{stanza}' on this host first")));
        }
        if !request.force
            && let Some(data) = request.clusters.first().map(|c| &c.data)
            && data.join("postmaster.pid").exists()
        {
            return Err(CliError::new(
                ErrorCode::PgRunning,
                format!(
                    "{} exists: PostgreSQL looks to be running; stanza '{stanza}' is not deleted",
                    data.join("postmaster.pid").display()
                ),
            )
            .hint("shut down PostgreSQL first, or use --force"));
        }
        for (index, store) in present {
            let lease = Lease::acquire(&store, &layout, index, "stanza-delete", request.lease_time).await?;
            let deleted = delete_stanza(&store, &layout, &lease).await;
            lease.release().await;
            let deleted = deleted?;
            tracing::info!("stanza-delete for stanza '{stanza}' on repo{index}: {deleted} objects deleted");
        }
        // Last: a delete killed before this point is finished by running it again.
        std::fs::remove_file(&stop)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) })
            .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to remove {}: {e}", stop.display())))?;
        Ok(())
    })
}

/// The directory of the lease objects in a stanza (`StanzaLayout::lock`).
const LOCK_DIR: &str = "lock";

/// Deletes a stanza's objects, the stanza info and catalog first; returns how many went.
async fn delete_stanza(store: &pgstrata_storage::RepoStore, layout: &StanzaLayout, lease: &Lease) -> CliResult<u64> {
    use pgstrata_repo_format::layout::copy_of;
    let mut deleted = 0u64;
    for key in [layout.stanza_info(), layout.backup_catalog()] {
        lease.check()?;
        for k in [key.clone(), copy_of(&key)] {
            store.delete(&k).await?;
            deleted += 1;
        }
    }
    let backups = format!("{}backup", layout.root());
    let mut labels = store.list_dirs(&backups).await?;
    labels.sort_by(|a, b| b.cmp(a));
    for label in &labels {
        lease.check()?;
        deleted += store.delete_prefix(&format!("{backups}/{label}/")).await?;
    }
    for dir in store.list_dirs(&layout.root()).await? {
        if dir == LOCK_DIR {
            continue;
        }
        lease.check()?;
        deleted += store.delete_prefix(&format!("{}{dir}/", layout.root())).await?;
    }
    for leftover in store.list_files(&layout.root()).await? {
        store.delete(&leftover.key).await?;
        deleted += 1;
    }
    Ok(deleted)
}
