//! A configured repository with its stanza: opening it, and reading and writing the rewritten
//! metadata (stanza info, backup catalog) with their `.copy` twins.

use bytes::Bytes;
use pgstrata_repo_format::layout::{StanzaLayout, copy_of};
use pgstrata_repo_format::meta::{
    BackupCatalog, CipherInfo, DbEntry, MetaKind, StanzaInfo, decode_meta, encode_meta, open_meta, seal_meta,
};
use pgstrata_repo_format::{BlobSettings, DataKey};
use pgstrata_storage::{RepoStore, RetryPolicy, Secret, StorageConfig};

use crate::error::{CliError, CliResult, ErrorCode};

/// A repository as a front end resolved it from its options: where it is and how it must be
/// encrypted. The engine opens it; nothing below the front ends reads an option.
#[derive(Clone, Debug)]
pub struct RepoTarget {
    pub index: u32,
    /// Its storage, or why the options describe none (reported when it is opened, so a command
    /// over several repositories can go on past a broken one).
    pub storage: Result<StorageConfig, CliError>,
    pub cipher: CipherChoice,
}

/// `repoN-cipher-type` and `repoN-cipher-pass` as configured.
#[derive(Clone, Debug)]
pub struct CipherChoice {
    /// `none`, `aes-256-gcm`, or pgBackRest's `aes-256-cbc` (an inherited configuration: the
    /// repository is encrypted, with this passphrase; pgstrata's own objects are AES-256-GCM).
    pub kind: String,
    pub pass: Option<Secret>,
    /// Where the passphrase goes, for the message when it is missing (the front end's names).
    pub pass_hint: String,
}

impl RepoTarget {
    /// The storage, or the error the options gave.
    pub fn storage(&self) -> CliResult<&StorageConfig> {
        self.storage.as_ref().map_err(Clone::clone)
    }

    /// Opens the store (nothing contacted yet; a local repository directory must exist).
    pub fn store(&self) -> CliResult<RepoStore> {
        Ok(self.storage()?.open(RetryPolicy::default())?)
    }

    /// How pgBackRest's objects in this repository are reached through `store`.
    pub fn pgbackrest<'a>(&'a self, store: &'a RepoStore) -> crate::pgbackrest::Access<'a> {
        crate::pgbackrest::Access {
            store,
            index: self.index,
            pass: self.cipher.pass.as_ref().map(Secret::expose),
            pass_hint: &self.cipher.pass_hint,
        }
    }

    /// What an opened [`Repo`] keeps to reach pgBackRest's objects beside its stanza.
    pub fn foreign(&self) -> Foreign {
        Foreign { pass: self.cipher.pass.clone(), pass_hint: self.cipher.pass_hint.clone() }
    }
}

/// The passphrase and visibility of pgBackRest's objects in an opened repository (see
/// [`RepoTarget::pgbackrest`]).
#[derive(Clone, Debug)]
pub struct Foreign {
    pass: Option<Secret>,
    pass_hint: String,
}

/// An opened repository of one stanza.
#[derive(Debug)]
pub struct Repo {
    pub index: u32,
    pub store: RepoStore,
    pub layout: StanzaLayout,
    pub info: StanzaInfo,
    pub key: Option<DataKey>,
    /// Reaching pgBackRest's objects beside the stanza (a repository taken over).
    pub foreign: Foreign,
}

impl Repo {
    /// How pgBackRest's objects in this repository are reached.
    pub fn pgbackrest(&self) -> crate::pgbackrest::Access<'_> {
        crate::pgbackrest::Access {
            store: &self.store,
            index: self.index,
            pass: self.foreign.pass.as_ref().map(Secret::expose),
            pass_hint: &self.foreign.pass_hint,
        }
    }

    /// `repo1 (posix:/var/lib/pgstrata)`, for messages.
    pub fn name(&self) -> String {
        format!("repo{} ({})", self.index, self.store.describe())
    }

    pub fn current_db(&self) -> CliResult<&DbEntry> {
        self.info.current_db().ok_or_else(|| {
            CliError::new(ErrorCode::RepoInvalid, format!("{}: stanza info has no database", self.name()))
        })
    }

    /// A stanza only pgBackRest has written, seen through its files ([`adopt`] without
    /// writing): nothing of pgstrata's is stored yet (its stanza info, never stored, has no
    /// creation time).
    pub fn seen_only(&self) -> bool {
        self.info.created == 0
    }

    pub async fn load_catalog(&self) -> CliResult<BackupCatalog> {
        let key = self.layout.backup_catalog();
        load_twin(&self.store, &key, |bytes, what| {
            open_meta(bytes, MetaKind::BackupCatalog, what, self.key.as_ref()).map_err(CliError::from)
        })
        .await?
        // A stanza seen only through pgBackRest's files: no pgstrata backups yet.
        .or_else(|| self.seen_only().then(BackupCatalog::default))
        .ok_or_else(|| {
            CliError::new(ErrorCode::FileMissing, format!("{}: backup catalog {key} is missing", self.name()))
        })
    }

    /// The catalog and the version of it a writer read, for [`save_catalog`](Self::save_catalog):
    /// only a catalog nobody else wrote since is replaced.
    pub async fn load_catalog_for_update(&self) -> CliResult<(BackupCatalog, CatalogVersion)> {
        let key = self.layout.backup_catalog();
        let decode = |bytes: &[u8], what: &str| {
            open_meta(bytes, MetaKind::BackupCatalog, what, self.key.as_ref()).map_err(CliError::from)
        };
        match self.store.get_versioned(&key).await {
            Ok((bytes, version)) => match decode(&bytes, &key) {
                Ok(catalog) => return Ok((catalog, CatalogVersion(Some(version)))),
                Err(e) if e.code == ErrorCode::Crypto => return Err(e),
                Err(_) => {}
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        // The main object is missing or damaged: read as readers do (the copy), and rewrite
        // the main object without a condition.
        Ok((self.load_catalog().await?, CatalogVersion(None)))
    }

    /// Writes the catalog (main object, then copy). With the version it was read at, only if
    /// nobody wrote it since: a writer paused past its lease (another took it over and wrote)
    /// is refused (50) and commits nothing. Returns the version written.
    pub async fn save_catalog(
        &self,
        catalog: &BackupCatalog,
        settings: BlobSettings,
        read: &CatalogVersion,
    ) -> CliResult<CatalogVersion> {
        let bytes = Bytes::from(seal_meta(MetaKind::BackupCatalog, catalog, settings, self.key.as_ref())?);
        let key = self.layout.backup_catalog();
        let written = match &read.0 {
            None => {
                self.store.put(&key, bytes.clone()).await?;
                None
            }
            Some(version) => match self.store.put_if(&key, bytes.clone(), version.clone()).await {
                Ok(v) => Some(v),
                Err(e) if e.is_changed() => {
                    return Err(CliError::new(
                        ErrorCode::LockAcquire,
                        format!(
                            "{}: the backup catalog changed since this command read it: another writer took \
                             over the repository's lease; nothing was committed",
                            self.name()
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            },
        };
        self.store.put(&copy_of(&key), bytes).await?;
        Ok(CatalogVersion(written))
    }
}

/// The version of the backup catalog a writer read (`None`: write without a condition).
#[derive(Clone, Debug, Default)]
pub struct CatalogVersion(Option<pgstrata_storage::store::ObjectVersion>);

/// Opens repository `target` for `stanza`, which must exist there, and unlocks its key.
pub async fn open_repo(target: &RepoTarget, stanza: &str) -> CliResult<Repo> {
    open(target, stanza, false).await
}

/// [`open_repo`] for a command that writes the stanza (archive-push, backup, expire): a stanza
/// only pgBackRest has made is taken over for good, pgstrata's stanza info written beside it.
/// Readers (restore, archive-get, info, verify) see the same stanza without writing anything —
/// a restore Job running as root must not leave objects the database host's user cannot write.
pub async fn open_repo_writing(target: &RepoTarget, stanza: &str) -> CliResult<Repo> {
    open(target, stanza, true).await
}

async fn open(target: &RepoTarget, stanza: &str, write: bool) -> CliResult<Repo> {
    let index = target.index;
    let store = target.store()?;
    let layout = StanzaLayout::new(stanza)?;
    let Some(info) = load_stanza_info(&store, &layout).await? else {
        if let Some(repo) = adopt(target, store.clone(), layout.clone(), write).await? {
            return Ok(repo);
        }
        return Err(CliError::new(
            ErrorCode::FileMissing,
            format!("stanza '{stanza}' does not exist in repo{index} ({})", store.describe()),
        )
        .hint("has the stanza-create command been run?")
        .hint("is the stanza name and repository configuration right?"));
    };
    let key = unlock(target, &info)?;
    Ok(Repo { index, store, layout, info, key, foreign: target.foreign() })
}

/// A stanza pgBackRest made and pgstrata has not written to yet: pgstrata continues it in
/// place. Its stanza info is created from pgBackRest's `archive.info` (the same database ids,
/// so both tools' archives of a database have the same archive id) under the repository's
/// lease, unless another process created it meanwhile; where the credentials may not write, it
/// is used as read (nothing of pgstrata's is there to decrypt) — as it is when `write` is off.
/// `None` when the stanza has no pgBackRest archive either.
pub async fn adopt(
    target: &RepoTarget,
    store: RepoStore,
    layout: StanzaLayout,
    write: bool,
) -> CliResult<Option<Repo>> {
    let stanza = layout.stanza().to_string();
    let index = target.index;
    let access = target.pgbackrest(&store);
    let Some(archive) = crate::pgbackrest::archive_info(access, &stanza).await? else { return Ok(None) };
    // The catalog and control versions pgstrata's stanza info records (for writing only).
    let backups = if write { crate::pgbackrest::backup_info(access, &stanza).await.ok().flatten() } else { None };
    let mut db_history = Vec::new();
    let mut dbs = archive.history.clone();
    if !dbs.iter().any(|d| d.id == archive.current.id) {
        dbs.push(archive.current.clone());
    }
    dbs.sort_by_key(|d| d.id);
    for db in dbs {
        let Ok(pg_version) = db.version.parse::<u32>() else {
            return Err(CliError::new(
                ErrorCode::DbMismatch,
                format!(
                    "pgBackRest's stanza '{stanza}' in repo{index} holds PostgreSQL {}, which pgstrata does not support",
                    db.version
                ),
            ));
        };
        let known = backups.as_ref().and_then(|b| b.history.iter().find(|h| h.id == db.id));
        db_history.push(DbEntry {
            id: db.id,
            system_id: db.system_id,
            pg_version,
            catalog_version: known.map_or(0, |k| u32::try_from(k.catalog_version).unwrap_or(0)),
            control_version: known.map_or(0, |k| u32::try_from(k.control_version).unwrap_or(0)),
        });
    }
    // The current database last, as pgstrata's stanza info orders them.
    if let Some(i) = db_history.iter().position(|d| d.id == archive.current.id) {
        let current = db_history.remove(i);
        db_history.push(current);
    }
    let read_only = |db_history| {
        let info = StanzaInfo { stanza: layout.stanza().to_string(), created: 0, cipher: CipherInfo::None, db_history };
        Ok(Some(Repo {
            index,
            store: store.clone(),
            layout: layout.clone(),
            info,
            key: None,
            foreign: target.foreign(),
        }))
    };
    if !write {
        return read_only(db_history);
    }
    for _ in 0..100 {
        match crate::lease::Lease::acquire(&store, &layout, index, "adopt", crate::lease::LEASE_TIME).await {
            Ok(lease) => {
                let result = adopt_under_lease(target, &store, &layout, db_history.clone(), &lease).await;
                lease.release().await;
                let (info, key) = result?;
                return Ok(Some(Repo { index, store, layout, info, key, foreign: target.foreign() }));
            }
            // Another process is creating it (or a backup holds the lease): it may be there now.
            Err(e) if e.code == ErrorCode::LockAcquire => {
                if let Some(info) = load_stanza_info(&store, &layout).await? {
                    let key = unlock(target, &info)?;
                    return Ok(Some(Repo { index, store, layout, info, key, foreign: target.foreign() }));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) if e.code == ErrorCode::Access => {
                tracing::info!(
                    "repo{index}: pgBackRest's stanza '{stanza}' is read as it is (this host may not write there)"
                );
                return read_only(db_history);
            }
            Err(e) => return Err(e),
        }
    }
    Err(CliError::new(
        ErrorCode::LockAcquire,
        format!(
            "repo{index}: pgBackRest's stanza '{stanza}' is being taken over by another process that does not finish"
        ),
    ))
}

async fn adopt_under_lease(
    target: &RepoTarget,
    store: &RepoStore,
    layout: &StanzaLayout,
    db_history: Vec<DbEntry>,
    lease: &crate::lease::Lease,
) -> CliResult<(StanzaInfo, Option<DataKey>)> {
    if let Some(info) = load_stanza_info(store, layout).await? {
        let key = unlock(target, &info)?;
        return Ok((info, key));
    }
    let (cipher, key) = new_cipher(target)?;
    let created = crate::runtime::unix_now();
    let stanza = layout.stanza().to_string();
    let info = StanzaInfo { stanza: stanza.clone(), created, cipher, db_history };
    let repo = Repo {
        index: target.index,
        store: store.clone(),
        layout: layout.clone(),
        info,
        key,
        foreign: target.foreign(),
    };
    lease.check()?;
    // The catalog first: a stanza info never exists without one.
    repo.save_catalog(&BackupCatalog::default(), BlobSettings::default(), &CatalogVersion(None)).await?;
    lease.check()?;
    save_stanza_info(store, layout, &repo.info).await?;
    tracing::warn!(
        "repo{}: stanza '{stanza}' was made by pgBackRest: pgstrata continues it in place, its own objects under \
         stanza/{stanza}/ beside pgBackRest's (whose backups and WAL stay readable by both tools)",
        target.index
    );
    Ok((repo.info, repo.key))
}

/// The encryption of a new stanza, as `repoN-cipher-type` asks: a fresh data key wrapped under
/// the passphrase (AES-256-GCM, also for pgBackRest's `aes-256-cbc`: pgstrata's own objects
/// are GCM under the same passphrase, which is said once here), or none.
pub fn new_cipher(target: &RepoTarget) -> CliResult<(CipherInfo, Option<DataKey>)> {
    let kind = target.cipher.kind.as_str();
    if !matches!(kind, "aes-256-gcm" | "aes-256-cbc") {
        return Ok((CipherInfo::None, None));
    }
    if kind == "aes-256-cbc" {
        tracing::warn!(
            "repo{}-cipher-type=aes-256-cbc is pgBackRest's cipher: pgstrata encrypts its own objects with \
             aes-256-gcm under the same passphrase",
            target.index
        );
    }
    let pass = passphrase(target)?.expose().to_string();
    let key = DataKey::generate();
    let wrapped =
        pgstrata_repo_format::WrappedKey::wrap(&key, pass.as_bytes(), pgstrata_repo_format::KdfParams::DEFAULT)?;
    Ok((CipherInfo::Aes256Gcm { key: wrapped }, Some(key)))
}

/// The data key of an encrypted stanza, checked against `repoN-cipher-type` / `-cipher-pass`.
pub fn unlock(target: &RepoTarget, info: &StanzaInfo) -> CliResult<Option<DataKey>> {
    let (index, configured) = (target.index, target.cipher.kind.as_str());
    match &info.cipher {
        CipherInfo::None if configured == "none" => Ok(None),
        CipherInfo::None => Err(CliError::new(
            ErrorCode::Crypto,
            format!("repo{index}-cipher-type is {configured}, but the stanza in repo{index} is not encrypted"),
        )
        .hint(format!("set repo{index}-cipher-type=none for this repository"))),
        CipherInfo::Aes256Gcm { key } => {
            if !matches!(configured, "aes-256-gcm" | "aes-256-cbc") {
                return Err(CliError::new(
                    ErrorCode::Crypto,
                    format!("the stanza in repo{index} is encrypted (aes-256-gcm), but repo{index}-cipher-type is {configured}"),
                )
                .hint(format!("set repo{index}-cipher-type=aes-256-gcm and repo{index}-cipher-pass")));
            }
            let pass = passphrase(target)?;
            Ok(Some(key.unwrap_key(pass.expose().as_bytes())?))
        }
    }
}

/// `repoN-cipher-pass`, required when encryption is on.
pub fn passphrase(target: &RepoTarget) -> CliResult<&Secret> {
    target.cipher.pass.as_ref().ok_or_else(|| {
        CliError::new(
            ErrorCode::OptionRequired,
            format!("repo{}-cipher-pass is required for an encrypted repository", target.index),
        )
        .hint(target.cipher.pass_hint.clone())
    })
}

/// Reads the stanza info (main, then `.copy`); `None` when neither exists.
pub async fn load_stanza_info(store: &RepoStore, layout: &StanzaLayout) -> CliResult<Option<StanzaInfo>> {
    load_twin(store, &layout.stanza_info(), |bytes, what| {
        decode_meta(bytes, MetaKind::StanzaInfo, what).map_err(CliError::from)
    })
    .await
}

/// Writes the stanza info (main, then `.copy`).
pub async fn save_stanza_info(store: &RepoStore, layout: &StanzaLayout, info: &StanzaInfo) -> CliResult<()> {
    let bytes = encode_meta(MetaKind::StanzaInfo, info)?;
    save_twin(store, &layout.stanza_info(), Bytes::from(bytes)).await
}

/// Reads a rewritten metadata object: the main key, then its copy; both errors if neither decodes.
async fn load_twin<T>(
    store: &RepoStore,
    key: &str,
    decode: impl Fn(&[u8], &str) -> CliResult<T>,
) -> CliResult<Option<T>> {
    let mut errors = Vec::new();
    let mut missing = 0;
    for k in [key.to_string(), copy_of(key)] {
        match store.get(&k).await {
            Ok(bytes) => match decode(&bytes, &k) {
                Ok(v) => {
                    if !errors.is_empty() {
                        tracing::warn!("{} is damaged, using {k}: {}", key, errors.join("; "));
                    }
                    return Ok(Some(v));
                }
                // A wrong passphrase is not damage: report it as it is.
                Err(e) if e.code == ErrorCode::Crypto => return Err(e),
                Err(e) => errors.push(e.message),
            },
            Err(e) if e.is_not_found() => missing += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if missing == 2 {
        return Ok(None);
    }
    Err(CliError::new(ErrorCode::Format, format!("unable to read {key} or its copy: {}", errors.join("; "))))
}

/// Writes a rewritten metadata object: the main key first, then its copy.
async fn save_twin(store: &RepoStore, key: &str, bytes: Bytes) -> CliResult<()> {
    store.put(key, bytes.clone()).await?;
    store.put(&copy_of(key), bytes).await?;
    Ok(())
}
