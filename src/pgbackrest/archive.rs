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

use pgstrata_repo_format::pg::TimelineId;
use pgstrata_repo_format::pg::{ControlFile, WalFileKind, WalFileName};
use pgstrata_repo_format::pgbackrest::{ArchiveInfo, decompress, decrypt_cbc, sha1_hex};

use super::Access;
use crate::error::{CliError, CliResult, ErrorCode};

/// The largest WAL segment PostgreSQL makes (`--wal-segsize` up to 1 GiB).
const MAX_SEGMENT: u64 = 1 << 30;
/// A timeline history file larger than this is no history file (one line per timeline).
const MAX_HISTORY: u64 = 16 << 20;

/// What pgBackRest's archive had to say of a segment.
#[derive(Debug)]
pub enum Found {
    /// The stanza has no pgBackRest archive in this repository.
    NoArchive,
    /// It has one, without the segment.
    Missing,
    /// Its content (a segment or a history file), checked.
    Segment(Vec<u8>),
}

/// Segment or timeline history file `name` from pgBackRest's archive of `stanza` in the
/// repository.
pub async fn fetch(
    access: Access<'_>,
    stanza: &str,
    name: &WalFileName,
    cluster: Option<&ControlFile>,
) -> CliResult<Found> {
    let Some(info) = super::archive_info(access, stanza).await? else { return Ok(Found::NoArchive) };
    let db = cluster
        .and_then(|c| {
            info.history
                .iter()
                .filter(|d| d.system_id == c.system_identifier && d.version == c.pg_version.to_string())
                .max_by_key(|d| d.id)
        })
        .unwrap_or(&info.current);
    fetch_from(access, stanza, &info, &db.archive_id(), name).await
}

/// [`fetch`] from archive `archive_id` (`15-1`; a stanza taken over has pgstrata's archive ids
/// for the same databases).
pub async fn fetch_in(access: Access<'_>, stanza: &str, archive_id: &str, name: &WalFileName) -> CliResult<Found> {
    let Some(info) = super::archive_info(access, stanza).await? else { return Ok(Found::NoArchive) };
    fetch_from(access, stanza, &info, archive_id, name).await
}

async fn fetch_from(
    access: Access<'_>,
    stanza: &str,
    info: &ArchiveInfo,
    archive_id: &str,
    name: &WalFileName,
) -> CliResult<Found> {
    let text = name.to_string();
    match name.kind {
        WalFileKind::Segment | WalFileKind::Partial => {}
        // A timeline history file: stored under its name at the top of the archive id, not
        // compressed (pgBackRest compresses segments only), encrypted like the rest.
        WalFileKind::History => {
            let key = format!("archive/{stanza}/{archive_id}/{text}");
            let stored = match access.store.head(&key).await? {
                None => return Ok(Found::Missing),
                Some(o) if o.size > MAX_HISTORY => {
                    return Err(CliError::new(
                        ErrorCode::Format,
                        format!("{key} is {} bytes: larger than any timeline history", o.size),
                    ));
                }
                Some(_) => access.store.get(&key).await?,
            };
            let plain = match &info.cipher_pass {
                Some(pass) => decrypt_cbc(&stored, pass.as_bytes(), &key)?,
                None => stored.to_vec(),
            };
            tracing::info!("found {name} in pgBackRest's archive {archive_id} of repo{}", access.index);
            return Ok(Found::Segment(plain));
        }
        WalFileKind::Backup { .. } => return Ok(Found::Missing),
    }
    let dir = format!("archive/{stanza}/{archive_id}/{}/", &text[..16.min(text.len())]);
    let wanted = format!("{text}-");
    let Some(object) = access
        .store
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
    let stored = access.store.get(&object.key).await?;
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
    tracing::info!("found {name} in pgBackRest's archive {archive_id} of repo{}", access.index);
    Ok(Found::Segment(plain))
}

/// The whole segment a key of pgBackRest's archive holds (`<segment>-<sha1>[.ext]`).
pub fn segment_of(key: &str) -> Option<WalFileName> {
    let file = key.rsplit('/').next()?;
    let name = file.get(..24)?.parse::<WalFileName>().ok()?;
    (name.kind == WalFileKind::Segment && file.as_bytes().get(24) == Some(&b'-')).then_some(name)
}

/// Calls `each` with every segment (not `.partial`, history or `.backup` files) of pgBackRest's
/// archive `archive_id` (`15-1`) of `stanza`, one `<timeline+log>` directory listed at a time.
pub async fn for_each_segment(
    access: Access<'_>,
    stanza: &str,
    archive_id: &str,
    mut each: impl FnMut(WalFileName),
) -> CliResult<()> {
    let root = format!("archive/{stanza}/{archive_id}/");
    for dir in access.store.list_dirs(&root).await? {
        if dir.len() != 16 || !dir.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue;
        }
        for object in access.store.list_files(&format!("{root}{dir}/")).await? {
            if let Some(name) = segment_of(&object.key) {
                each(name);
            }
        }
    }
    Ok(())
}

/// The highest timeline with a history file in pgBackRest's archive `archive_id` of `stanza`
/// (`None`: no such archive, or no history file in it).
pub async fn latest_timeline(access: Access<'_>, stanza: &str, archive_id: &str) -> CliResult<Option<TimelineId>> {
    let root = format!("archive/{stanza}/{archive_id}/");
    Ok(access
        .store
        .list_files(&root)
        .await?
        .iter()
        .filter_map(|o| o.key.rsplit('/').next()?.parse::<WalFileName>().ok())
        .filter(|n| n.kind == WalFileKind::History)
        .map(|n| n.timeline)
        .max())
}
