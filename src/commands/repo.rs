//! `repo-ls`, `repo-get`, `repo-put`, `repo-rm`: look into (and, for administration, change) a
//! repository as stored, on any backend.
//!
//! A path under `archive/<stanza>/` is pgBackRest's path of a stanza's WAL archive; it is shown
//! as pgBackRest shows it (`archive/db/15-1/0000000100000000/<segment>-<digest>`, history files
//! as `00000002.history`), and `repo-get` of such a path prints the file's content (decrypted,
//! decompressed), so clients that read pgBackRest's archive through these commands
//! (check_pgbackrest) work unchanged. `backup/<stanza>/` is pgBackRest's path of the backup
//! directories (labels), listed as ours. Other paths are our own keys, listed and read raw.

use std::collections::BTreeMap;
use std::io::Write;

use futures::StreamExt;
use pgstrata_repo_format::frame::decode_blob;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};

fn open(config: &Config) -> CliResult<pgstrata_storage::RepoStore> {
    crate::request::repos::chosen_repo(config).store()
}

/// Where a `repo-ls`/`repo-get` path points.
#[derive(Debug, PartialEq, Eq)]
enum View {
    /// Our own key (prefix).
    Native(String),
    /// pgBackRest's archive path of `stanza`: our key (prefix) of the same place.
    Archive { stanza: String, key: String },
}

impl View {
    fn of(path: &str) -> Self {
        let path = path.trim_matches('/');
        for top in ["archive", "backup"] {
            let Some(rest) = path.strip_prefix(top).and_then(|r| r.strip_prefix('/')) else { continue };
            let (stanza, rest) = rest.split_once('/').unwrap_or((rest, ""));
            if stanza.is_empty() {
                continue;
            }
            let key = format!("stanza/{stanza}/{top}/{rest}").trim_end_matches('/').to_string();
            return if top == "archive" {
                View::Archive { stanza: stanza.to_string(), key }
            } else {
                // pgBackRest's backup path: our backup directories, shown and read as stored.
                View::Native(key)
            };
        }
        View::Native(path.to_string())
    }

    fn key(&self) -> &str {
        match self {
            View::Native(k) | View::Archive { key: k, .. } => k,
        }
    }

    /// Whether a key is left out: pgBackRest's archive holds WAL files only, not the claims of
    /// their names (a claim whose segment never arrived must not read as the segment).
    fn hides(&self, key: &str) -> bool {
        matches!(self, View::Archive { .. }) && pgstrata_repo_format::layout::is_wal_claim(key)
    }

    /// How a name below the listed path is shown.
    fn shown(&self, name: &str) -> String {
        match self {
            View::Archive { .. } => match name.split_once(".history-") {
                Some((timeline, _)) => format!("{timeline}.history"),
                None => name.to_string(),
            },
            View::Native(_) => name.to_string(),
        }
    }
}

/// Lists what is under a path: one level, or everything with `--recurse`; as text (one name a
/// line) or, `--output=json`, pgBackRest's object of `name: {type, size, time}`.
pub fn ls(config: &Config) -> CliResult<()> {
    let store = open(config)?;
    let view = View::of(config.params.first().map(String::as_str).unwrap_or(""));
    let prefix = if view.key().is_empty() { String::new() } else { format!("{}/", view.key()) };
    let recurse = config.bool("recurse");
    // name -> None for a directory, Some((size, time)) for an object.
    let mut entries: BTreeMap<String, Option<(u64, i64)>> = BTreeMap::new();
    crate::runtime::runtime()?.block_on(async {
        if recurse {
            let mut stream = store.list(&prefix);
            while let Some(item) = stream.next().await {
                let item = item?;
                if view.hides(&item.key) {
                    continue;
                }
                let rel = item.key[prefix.len()..].to_string();
                let mut at = 0;
                while let Some(i) = rel[at..].find('/') {
                    entries.insert(rel[..at + i].to_string(), None);
                    at += i + 1;
                }
                entries.insert(view.shown(&rel), Some((item.size, item.last_modified)));
            }
        } else {
            for dir in store.list_dirs(&prefix).await? {
                entries.insert(dir, None);
            }
            for item in store.list_files(&prefix).await?.into_iter().filter(|i| !view.hides(&i.key)) {
                entries.insert(view.shown(&item.key[prefix.len()..]), Some((item.size, item.last_modified)));
            }
        }
        Ok::<_, CliError>(())
    })?;
    let out = if config.get("output") == Some("json") {
        let mut map = serde_json::Map::new();
        map.insert(".".into(), serde_json::json!({"type": "path"}));
        for (name, what) in &entries {
            let v = match what {
                None => serde_json::json!({"type": "path"}),
                Some((size, time)) => serde_json::json!({"type": "file", "size": size, "time": time}),
            };
            map.insert(name.clone(), v);
        }
        format!("{}\n", serde_json::Value::Object(map))
    } else {
        entries.keys().map(|n| format!("{n}\n")).collect()
    };
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to write output: {e}")))
}

/// Writes one object to stdout: our keys as stored; a file of pgBackRest's archive path as its
/// content.
pub fn get(config: &Config) -> CliResult<()> {
    let path = config
        .params
        .first()
        .ok_or_else(|| CliError::new(ErrorCode::ParamRequired, "repo-get requires the object's path"))?;
    let store = open(config)?;
    let view = View::of(path);
    let bytes = crate::runtime::runtime()?.block_on(async {
        match &view {
            View::Native(key) => Ok::<_, CliError>(store.get(key).await?.to_vec()),
            View::Archive { stanza, key } => {
                let repo =
                    crate::repo::open_repo(&crate::request::repos::repo_target(config, config.repo_index()), stanza)
                        .await?;
                // A history file is shown without its digest: find the object it names.
                let key = if key.ends_with(".history") {
                    let found = store.list_files(&format!("{key}-")).await?;
                    // Not the claim of its name, which sorts among the digests.
                    found
                        .into_iter()
                        .map(|o| o.key)
                        .find(|k| !pgstrata_repo_format::layout::is_wal_claim(k))
                        .unwrap_or_else(|| key.clone())
                } else {
                    key.clone()
                };
                let sealed = store.get(&key).await?;
                Ok(decode_blob(&sealed, &key, repo.key.as_ref())?)
            }
        }
    })?;
    std::io::stdout()
        .lock()
        .write_all(&bytes)
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to write output: {e}")))
}

/// The one path parameter of `repo-put` and `repo-rm`.
fn single_path(config: &Config, what: &str) -> CliResult<String> {
    match config.params.as_slice() {
        [path] if !path.trim_matches('/').is_empty() => Ok(path.trim_matches('/').to_string()),
        [_] => Err(CliError::new(
            ErrorCode::ParamInvalid,
            format!("{what} needs a path below the repository's root, not the root itself"),
        )),
        [] => Err(CliError::new(ErrorCode::ParamRequired, format!("{what} requires the object's path"))),
        _ => Err(CliError::new(ErrorCode::ParamInvalid, "only one path may be specified")),
    }
}

/// Refuses pgBackRest's archive paths for writes: a segment goes into the archive through
/// `archive-push` (with its claim, checks and encryption), never as raw bytes.
fn native_key(path: &str, what: &str) -> CliResult<String> {
    match View::of(path) {
        View::Native(key) => Ok(key),
        View::Archive { stanza, .. } => Err(CliError::new(
            ErrorCode::ParamInvalid,
            format!(
                "{what} does not write into the WAL archive of stanza '{stanza}' ('{path}'): archive a segment with \
                 archive-push, or give pgstrata's own key (stanza/{stanza}/archive/...)"
            ),
        )),
    }
}

/// Copies standard input into one object, as given (no compression or encryption: the
/// repository's objects are written as they are stored), through a streaming upload so the
/// memory used does not depend on the input's size. An object of that name is replaced.
pub fn put(config: &Config) -> CliResult<()> {
    use std::io::Read;
    let key = native_key(&single_path(config, "repo-put")?, "repo-put")?;
    let store = open(config)?;
    crate::runtime::runtime()?.block_on(async {
        let mut upload = store.upload(&key).await?;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(CliError::new(ErrorCode::FileRead, format!("unable to read standard input: {e}")));
                }
            };
            upload.write(&buf[..n]).await?;
        }
        upload.finish().await?;
        Ok(())
    })
}

/// Removes one object, or a path: an empty path as is, a path with objects below it only with
/// `--recurse` (pgBackRest's rule), never the repository's root.
pub fn rm(config: &Config) -> CliResult<()> {
    let path = single_path(config, "repo-rm")?;
    let key = match View::of(&path) {
        View::Native(key) | View::Archive { key, .. } => key,
    };
    let store = open(config)?;
    crate::runtime::runtime()?.block_on(async {
        if store.head(&key).await?.is_some() {
            store.delete(&key).await?;
            return Ok(());
        }
        let prefix = format!("{key}/");
        let below = store.list(&prefix).next().await.transpose()?;
        match below {
            None => Ok(()),
            Some(_) if config.bool("recurse") => {
                let removed = store.delete_prefix(&prefix).await?;
                tracing::info!("removed {removed} objects below {path}");
                Ok(())
            }
            Some(first) => Err(CliError::new(
                ErrorCode::OptionInvalid,
                format!(
                    "recurse option must be used to delete non-empty path '{path}' (it holds {} and more)",
                    first.key
                ),
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbackrest_archive_paths_map_to_ours() {
        assert_eq!(
            View::of("archive/db/15-1"),
            View::Archive { stanza: "db".into(), key: "stanza/db/archive/15-1".into() }
        );
        assert_eq!(View::of("/archive/db/"), View::Archive { stanza: "db".into(), key: "stanza/db/archive".into() });
        assert_eq!(View::of("stanza/db/archive"), View::Native("stanza/db/archive".into()));
        assert_eq!(View::of("archive"), View::Native("archive".into()));
        assert_eq!(View::of("backup/db"), View::Native("stanza/db/backup".into()));
        assert_eq!(View::of("backups/db"), View::Native("backups/db".into()));
        let v = View::of("archive/db/15-1");
        assert_eq!(v.shown("00000002.history-ab12"), "00000002.history");
        assert_eq!(
            v.shown("0000000100000000/000000010000000000000003-ab12"),
            "0000000100000000/000000010000000000000003-ab12"
        );
    }
}
