//! Reading a stanza's WAL archive: finding and fetching files, timelines and their histories,
//! and the newest segment of a timeline. Shared by `archive-get`, `restore` (choosing a backup
//! for a target), `check` and `info`.

use pgstrata_repo_format::layout::parse_wal_object;
use pgstrata_repo_format::pg::{Lsn, TimelineHistory, TimelineId, WalFileKind, WalFileName};
use pgstrata_repo_format::{Sha256Digest, decode_blob_parallel};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::pgbackrest::archive as foreign;
use crate::repo::Repo;

/// The copies of `name` in an archive, as (key, digest of the plaintext).
pub async fn copies(repo: &Repo, archive: &str, name: &WalFileName) -> CliResult<Vec<(String, Sha256Digest)>> {
    let prefix = repo.layout.wal_prefix(archive, name);
    // One flat listing: a history file sits at the top of the archive, above every segment.
    let found = repo.store.list_files(&prefix).await?;
    Ok(found
        .into_iter()
        .filter_map(|o| {
            let (n, sha) = parse_wal_object(&o.key)?;
            (n == *name).then_some((o.key, sha))
        })
        .collect())
}

/// The largest file of a WAL archive: PostgreSQL's largest segment size (1 GiB).
const MAX_WAL_FILE: u64 = 1 << 30;

/// Fetches `name`, decrypted, decompressed and checked against the digest its key carries, its
/// frames opened on up to `threads` threads. `None` when the archive does not have it.
pub async fn fetch(repo: &Repo, archive: &str, name: &WalFileName, threads: usize) -> CliResult<Option<Vec<u8>>> {
    let found = copies(repo, archive, name).await?;
    let Some((key, sha)) = found.first() else { return Ok(None) };
    if found.iter().any(|(_, s)| s != sha) {
        return Err(CliError::new(
            ErrorCode::ArchiveDuplicate,
            format!("WAL file {name} exists in the {} archive with different contents", repo.name()),
        ));
    }
    let stored = repo.store.get(key).await?;
    // Off the runtime's threads, the frames opened in parallel (a segment is 16 of them).
    let (key, sha, data_key) = (key.clone(), *sha, repo.key.clone());
    tokio::task::spawn_blocking(move || {
        let (plain, _) = decode_blob_parallel(&stored, &key, data_key.as_ref(), threads, MAX_WAL_FILE)?;
        if Sha256Digest::of(&plain) != sha {
            return Err(CliError::new(ErrorCode::Format, format!("{key}: content does not match its checksum")));
        }
        Ok(Some(plain))
    })
    .await
    .map_err(|e| CliError::new(ErrorCode::Service, format!("the decoding task failed: {e}")))?
}

/// The history of `timeline` from the archive; timeline 1 has none and needs none.
pub async fn history(repo: &Repo, archive: &str, timeline: TimelineId) -> CliResult<TimelineHistory> {
    if timeline.0 <= 1 {
        return Ok(TimelineHistory::first());
    }
    let name = WalFileName::history(timeline);
    let text = match fetch(repo, archive, &name, 1).await? {
        Some(text) => Some(text),
        // A stanza taken over from pgBackRest: its archive holds the histories made before.
        None => match foreign::fetch_in(repo.pgbackrest(), repo.layout.stanza(), archive, &name).await? {
            foreign::Found::Segment(text) => Some(text),
            foreign::Found::NoArchive | foreign::Found::Missing => None,
        },
    };
    let text = text.ok_or_else(|| {
        CliError::new(
            ErrorCode::FileMissing,
            format!("timeline {timeline} has no history file ({name}) in the {} archive", repo.name()),
        )
        .hint("history files are archived at promotion; was archive_command working then?")
    })?;
    // A history the archive holds that does not parse is damaged repository content (29), not
    // a bad option.
    TimelineHistory::parse(timeline, &text, &name.to_string())
        .map_err(|e| CliError::new(ErrorCode::Format, e.to_string()))
}

/// The timeline PostgreSQL's `recovery_target_timeline = 'latest'` would pick from this archive
/// (pgstrata's and pgBackRest's of the same id): the highest one with a history file (timeline
/// 1 needs none).
pub async fn latest_timeline(repo: &Repo, archive: &str) -> CliResult<TimelineId> {
    let dir = repo.layout.archive_dir(archive);
    let foreign = foreign::latest_timeline(repo.pgbackrest(), repo.layout.stanza(), archive).await?;
    let mut latest = foreign.unwrap_or(TimelineId(1));
    for o in repo.store.list_files(&dir).await? {
        if let Some((n, _)) = parse_wal_object(&o.key)
            && n.kind == WalFileKind::History
        {
            latest = latest.max(n.timeline);
        }
    }
    Ok(latest)
}

/// The newest whole segment of `timeline` in the archive (pgstrata's or pgBackRest's of the
/// same id), with the Unix time it was stored.
pub async fn newest_segment(repo: &Repo, archive: &str, timeline: TimelineId) -> CliResult<Option<(WalFileName, i64)>> {
    let ours = newest_own_segment(repo, archive, timeline).await?;
    let theirs = foreign::newest_segment(repo.pgbackrest(), repo.layout.stanza(), archive, timeline).await?;
    Ok(ours.into_iter().chain(theirs).max_by_key(|(n, at)| (n.log, n.seg, *at)))
}

async fn newest_own_segment(repo: &Repo, archive: &str, timeline: TimelineId) -> CliResult<Option<(WalFileName, i64)>> {
    let dir = repo.layout.archive_dir(archive);
    let tli = format!("{:08X}", timeline.0);
    let logs: Vec<String> = repo.store.list_dirs(&dir).await?.into_iter().filter(|d| d.starts_with(&tli)).collect();
    // Newest log directory first; an empty one (possible on a local repository) falls through.
    for log in logs.iter().rev() {
        let newest = repo
            .store
            .list_files(&format!("{dir}{log}/"))
            .await?
            .into_iter()
            .filter_map(|o| {
                let (n, _) = parse_wal_object(&o.key)?;
                (n.kind == WalFileKind::Segment).then_some((n, o.last_modified))
            })
            .max_by_key(|(n, _)| (n.log, n.seg));
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

/// The WAL segment size a backup's start LSN and first segment name agree on.
pub fn segment_size_of(timeline: TimelineId, lsn_start: Lsn, wal_start: &str) -> u64 {
    (20..=30)
        .map(|bits| 1u64 << bits)
        .find(|size| WalFileName::for_lsn(timeline, lsn_start, *size).is_ok_and(|n| n.to_string() == wal_start))
        .unwrap_or(16 << 20)
}
