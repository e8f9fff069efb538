//! A pgBackRest repository pgstrata was pointed at (issue 25): pgBackRest's objects
//! (`archive/<stanza>/...`, `backup/<stanza>/...`) lie beside pgstrata's (`stanza/<stanza>/...`)
//! under the repository's path. This module reads them as pgBackRest writes them — the info
//! files (decrypted with the repository's passphrase), the backups' manifests (with the
//! passphrase `backup.info` holds), and the files of a backup — and writes back only what
//! pgBackRest's own `expire` would (`backup.info`, with its checksum, encrypted as it was).
//!
//! Behind a repository host (`repoN-host`, PGO's repo host) the same keys are reached through
//! pgstrata's server, which serves a stanza's pgBackRest keys under the same grant as its own.

pub mod archive;
pub mod files;

use bytes::Bytes;
use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry, StanzaInfo};
use pgstrata_repo_format::pgbackrest::manifest::Manifest;
use pgstrata_repo_format::pgbackrest::{ArchiveInfo, BackupEntry, BackupInfo, decrypt_cbc, encrypt_cbc_salted};
use pgstrata_repo_format::pgbackrest::{lsn_of, timeline_of};
use pgstrata_repo_format::{BackupLabel, Sha256Digest};
use pgstrata_storage::{RepoStore, StorageError};

use crate::error::{CliError, CliResult, ErrorCode};

/// How pgBackRest's objects of one repository are reached: its store, its number (for
/// messages) and the repository's passphrase as configured (`repoN-cipher-pass`), which opens
/// pgBackRest's info files. Built by `RepoTarget::pgbackrest`.
#[derive(Clone, Copy, Debug)]
pub struct Access<'a> {
    pub store: &'a RepoStore,
    pub index: u32,
    pub pass: Option<&'a str>,
    /// Where the passphrase is set, for the message when it is missing.
    pub pass_hint: &'a str,
}

impl Access<'_> {
    fn repo_pass(&self, what: &str) -> CliResult<&[u8]> {
        self.pass.map(str::as_bytes).ok_or_else(|| {
            CliError::new(
                ErrorCode::Crypto,
                format!("pgBackRest's {what} in repo{} is encrypted, and no passphrase is configured", self.index),
            )
            .hint(self.pass_hint.to_string())
        })
    }
}

/// The largest info file or manifest read (a manifest of a million files is ~200 MB; more is
/// not a manifest).
const MAX_INFO: u64 = 1 << 30;

/// Reads an info file (or manifest) and its `.copy`, decrypted with `pass` when it is
/// encrypted, and parsed by `parse`; `None` when the main file is not there (pgBackRest writes
/// the main file before its copy, so a missing main file means no such file) or the
/// credentials may not read it.
async fn read_twin<T>(
    access: Access<'_>,
    key: &str,
    pass: Option<&[u8]>,
    parse: impl Fn(&str, &str) -> Result<T, pgstrata_repo_format::FormatError>,
) -> CliResult<Option<(T, bool)>> {
    let mut errors = Vec::new();
    for (i, k) in [key.to_string(), format!("{key}.copy")].into_iter().enumerate() {
        let bytes = match access.store.get(&k).await {
            Ok(b) => b,
            Err(e) if e.is_not_found() && i == 0 => return Ok(None),
            Err(e) if e.is_not_found() => continue,
            Err(StorageError::PermissionDenied { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if bytes.len() as u64 > MAX_INFO {
            errors.push(format!("{k} is larger than {MAX_INFO} bytes"));
            continue;
        }
        let plain = if bytes.starts_with(b"Salted__") {
            let pass = match pass {
                Some(p) => p,
                None => access.repo_pass(&k)?,
            };
            match decrypt_cbc(&bytes, pass, &k) {
                Ok(p) => p,
                Err(e @ pgstrata_repo_format::FormatError::WrongPassphrase) => return Err(e.into()),
                Err(e) => {
                    errors.push(e.to_string());
                    continue;
                }
            }
        } else {
            bytes.to_vec()
        };
        match std::str::from_utf8(&plain)
            .map_err(|e| e.to_string())
            .and_then(|t| parse(t, &k).map_err(|e| e.to_string()))
        {
            Ok(v) => {
                if !errors.is_empty() {
                    tracing::warn!("pgBackRest's {key} is damaged, using its copy: {}", errors.join("; "));
                }
                return Ok(Some((v, bytes.starts_with(b"Salted__"))));
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(CliError::new(
            ErrorCode::Format,
            format!("unable to read pgBackRest's {key} or its copy: {}", errors.join("; ")),
        )
        .hint("a pgBackRest repository pgstrata cannot read is never written beside; check it with pgBackRest"))
    }
}

/// `archive/<stanza>/archive.info`; `None` when the stanza has no pgBackRest archive here.
pub async fn archive_info(access: Access<'_>, stanza: &str) -> CliResult<Option<ArchiveInfo>> {
    Ok(read_twin(access, &format!("archive/{stanza}/archive.info"), None, ArchiveInfo::parse).await?.map(|(i, _)| i))
}

/// `backup/<stanza>/backup.info`; `None` when the stanza has no pgBackRest backups here.
pub async fn backup_info(access: Access<'_>, stanza: &str) -> CliResult<Option<BackupInfo>> {
    let read = read_twin(access, &format!("backup/{stanza}/backup.info"), None, BackupInfo::parse).await?;
    Ok(read.map(|(mut info, encrypted)| {
        info.encrypted = encrypted;
        info
    }))
}

/// A backup's manifest, decrypted with the passphrase `backup.info` holds.
pub async fn manifest(access: Access<'_>, stanza: &str, info: &BackupInfo, label: &str) -> CliResult<Manifest> {
    let key = format!("backup/{stanza}/{label}/backup.manifest");
    let pass = info.cipher_pass.as_deref().map(str::as_bytes);
    let (manifest, _) = read_twin(access, &key, pass, Manifest::parse).await?.ok_or_else(|| {
        CliError::new(ErrorCode::FileMissing, format!("pgBackRest's manifest {key} is missing"))
            .hint("the backup may have been expired by pgBackRest meanwhile: run info")
    })?;
    if manifest.label != label {
        return Err(CliError::new(
            ErrorCode::Format,
            format!("pgBackRest's manifest {key} is of backup {}", manifest.label),
        ));
    }
    Ok(manifest)
}

/// Writes `backup.info` and its copy back as pgBackRest writes them: the main file, then the
/// copy, encrypted under the repository's passphrase when it was read encrypted.
pub async fn save_backup_info(access: Access<'_>, stanza: &str, info: &BackupInfo) -> CliResult<()> {
    let text = info.file.render();
    let bytes = if info.encrypted {
        Bytes::from(encrypt_cbc_salted(text.as_bytes(), access.repo_pass("backup.info")?)?)
    } else {
        Bytes::from(text.into_bytes())
    };
    let key = format!("backup/{stanza}/backup.info");
    access.store.put(&key, bytes.clone()).await?;
    access.store.put(&format!("{key}.copy"), bytes).await?;
    Ok(())
}

/// A backup of `backup.info` as a catalog entry, so the recovery target picks among pgstrata's
/// and pgBackRest's backups alike. `db_id` is pgstrata's id of the same database.
pub fn catalog_entry(b: &BackupEntry, db_id: u32) -> Option<CatalogEntry> {
    let label: BackupLabel = b.label.parse().ok()?;
    Some(CatalogEntry {
        label,
        backup_type: b.backup_type.parse().ok()?,
        prior: b.prior.as_deref().and_then(|p| p.parse().ok()),
        references: b.references.iter().filter_map(|r| r.parse().ok()).collect(),
        db_id,
        timeline: timeline_of(b.archive_start.as_deref()),
        timestamp_start: b.timestamp_start,
        timestamp_stop: b.timestamp_stop,
        lsn_start: lsn_of(b.lsn_start.as_deref()),
        lsn_stop: lsn_of(b.lsn_stop.as_deref()),
        wal_start: b.archive_start.clone().unwrap_or_default(),
        wal_stop: b.archive_stop.clone().unwrap_or_default(),
        size: b.size,
        delta: b.size_delta,
        repo_size: b.repo_size,
        repo_delta: b.repo_size_delta,
        error: b.error,
        pgstrata_version: format!("pgBackRest {}", b.backrest_version.as_deref().unwrap_or("?")),
        manifest_sha256: Sha256Digest([0; 32]),
        keep: false,
        annotation: Default::default(),
    })
}

/// Adds pgBackRest's backups to pgstrata's catalog (by start time), each under pgstrata's id of
/// the same database; one whose database pgstrata's stanza does not know is left out.
pub fn merge_catalog(catalog: &mut BackupCatalog, info: &BackupInfo, stanza: &StanzaInfo) {
    for b in &info.backups {
        if catalog.backups.iter().any(|c| c.label.to_string() == b.label) {
            continue;
        }
        let db = info.history.iter().find(|d| d.id == b.db_id).unwrap_or(&info.current);
        let ours =
            stanza.db_history.iter().find(|d| d.system_id == db.system_id && d.pg_version.to_string() == db.version);
        match ours.and_then(|d| catalog_entry(b, d.id)) {
            Some(entry) => catalog.backups.push(entry),
            None => tracing::warn!(
                "pgBackRest's backup {} (PostgreSQL {}, system id {}) is not of a database of this stanza: left out",
                b.label,
                db.version,
                db.system_id
            ),
        }
    }
    catalog.backups.sort_by_key(|b| (b.timestamp_start, b.label.to_string()));
}
