//! pgBackRest's WAL archive in a repository pgstrata was pointed at (issue 25): a segment
//! pgBackRest archived is found and fetched, so a recovery replays WAL archived before the
//! switch instead of ending early. pgBackRest's keys (`archive/<stanza>/...`) and pgstrata's
//! (`stanza/<stanza>/...`) lie side by side under the repository's path; reading one never
//! touches the other.
//!
//! The archive's `archive.info` (or its `.copy`) names the databases; the one recovered is
//! chosen by the cluster's system identifier and major, else the current one. Each segment is
//! `<archive id>/<timeline+log>/<segment>-<sha1>.<ext>`: decrypted with the archive's
//! passphrase when the repository is encrypted (`aes-256-cbc`), decompressed by its extension,
//! and checked against the SHA-1 in its name before anything is written.

use pgstrata_repo_format::pg::{ControlFile, WalFileKind, WalFileName};
use pgstrata_repo_format::pgbackrest::{ArchiveInfo, decompress, decrypt_cbc, sha1_hex};
use pgstrata_storage::RepoStore;

use crate::error::{CliError, CliResult, ErrorCode};
use crate::repo::RepoTarget;

/// The largest WAL segment PostgreSQL makes (`--wal-segsize` up to 1 GiB).
const MAX_SEGMENT: u64 = 1 << 30;

/// Reads `archive.info` (or its copy); `None` when the stanza has no pgBackRest archive.
async fn archive_info(store: &RepoStore, target: &RepoTarget, stanza: &str) -> CliResult<Option<ArchiveInfo>> {
    // Behind a repository host, only pgstrata's stanzas are served: no pgBackRest archive there.
    if matches!(target.storage, Ok(pgstrata_storage::StorageConfig::Given(_))) {
        return Ok(None);
    }
    let key = format!("archive/{stanza}/archive.info");
    let mut errors = Vec::new();
    for (i, k) in [key.clone(), format!("{key}.copy")].into_iter().enumerate() {
        let bytes = match store.get(&k).await {
            Ok(b) => b,
            // No main file: no pgBackRest archive (pgBackRest writes the main file before its
            // copy), so a miss in pgstrata's archive costs one read, not two. The copy stands in
            // for a main file that is there but damaged.
            Err(e) if e.is_not_found() && i == 0 => return Ok(None),
            Err(e) if e.is_not_found() => continue,
            // Credentials limited to pgstrata's keys: no pgBackRest archive this reader can see.
            Err(pgstrata_storage::StorageError::PermissionDenied { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let plain = if bytes.starts_with(b"Salted__") {
            let pass = crate::repo::passphrase(target).map_err(|e| {
                CliError::new(
                    ErrorCode::Crypto,
                    format!("pgBackRest's archive.info in repo{} is encrypted: {}", target.index, e.message),
                )
            })?;
            match decrypt_cbc(&bytes, pass.expose().as_bytes(), &k) {
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
            .and_then(|t| ArchiveInfo::parse(t, &k).map_err(|e| e.to_string()))
        {
            Ok(info) => return Ok(Some(info)),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(None)
    } else {
        Err(CliError::new(
            ErrorCode::Format,
            format!("unable to read pgBackRest's {key} or its copy: {}", errors.join("; ")),
        ))
    }
}

/// What pgBackRest's archive had to say of a segment.
#[derive(Debug)]
pub enum Found {
    /// The stanza has no pgBackRest archive in this repository.
    NoArchive,
    /// It has one, without the segment.
    Missing,
    Segment(Vec<u8>),
}

/// Segment `name` from pgBackRest's archive of `stanza` in the repository.
pub async fn fetch(
    store: &RepoStore,
    target: &RepoTarget,
    stanza: &str,
    name: &WalFileName,
    cluster: Option<&ControlFile>,
) -> CliResult<Found> {
    let Some(info) = archive_info(store, target, stanza).await? else { return Ok(Found::NoArchive) };
    if !matches!(name.kind, WalFileKind::Segment | WalFileKind::Partial) {
        return Ok(Found::Missing);
    }
    let db = cluster
        .and_then(|c| {
            info.history
                .iter()
                .filter(|d| d.system_id == c.system_identifier && d.version == c.pg_version.to_string())
                .max_by_key(|d| d.id)
        })
        .unwrap_or(&info.current);
    let text = name.to_string();
    let dir = format!("archive/{stanza}/{}/{}/", db.archive_id(), &text[..16.min(text.len())]);
    let wanted = format!("{text}-");
    let Some(object) = store
        .list_files(&dir)
        .await?
        .into_iter()
        .find(|o| o.key.rsplit('/').next().is_some_and(|f| f.starts_with(&wanted)))
    else {
        return Ok(Found::Missing);
    };
    // Stored bytes are read whole: a segment compresses, so more than the largest segment (and
    // encryption's few bytes) is not one.
    if object.size > MAX_SEGMENT + 4096 {
        return Err(CliError::new(
            ErrorCode::Format,
            format!("{} is {} bytes: larger than any WAL segment", object.key, object.size),
        ));
    }
    let file = object.key.rsplit('/').next().unwrap_or_default().to_string();
    let sha1 =
        file.strip_prefix(&wanted).map(|r| r.split('.').next().unwrap_or_default().to_string()).unwrap_or_default();
    let stored = store.get(&object.key).await?;
    let opened = match &info.cipher_pass {
        Some(pass) => decrypt_cbc(&stored, pass.as_bytes(), &object.key)?,
        None => stored.to_vec(),
    };
    let plain = decompress(&file, &opened, MAX_SEGMENT, &object.key)?;
    if sha1_hex(&plain) != sha1 {
        return Err(CliError::new(
            ErrorCode::Format,
            format!("{}: the content's SHA-1 is not the {sha1} its name says", object.key),
        ));
    }
    tracing::info!("found {name} in pgBackRest's archive {} of repo{}", db.archive_id(), target.index);
    Ok(Found::Segment(plain))
}
