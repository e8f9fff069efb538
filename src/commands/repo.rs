//! `repo-ls` and `repo-get`: look into a repository as stored, on any backend.

use std::io::Write;

use futures::StreamExt;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};

fn open(config: &Config) -> CliResult<pgstrata_storage::RepoStore> {
    let storage = config.storage(config.repo_index())?;
    Ok(storage.open(pgstrata_storage::RetryPolicy::default())?)
}

/// Lists object keys under an optional path, one per line, sorted.
pub fn ls(config: &Config) -> CliResult<()> {
    let store = open(config)?;
    let prefix = config.params.first().map(|p| format!("{}/", p.trim_matches('/'))).unwrap_or_default();
    let prefix = if prefix == "/" { String::new() } else { prefix };
    let rt = super::runtime()?;
    let mut keys = rt.block_on(async {
        let mut out = Vec::new();
        let mut stream = store.list(&prefix);
        while let Some(item) = stream.next().await {
            out.push(item?);
        }
        Ok::<_, CliError>(out)
    })?;
    keys.sort_by(|a, b| a.key.cmp(&b.key));
    let json = config.get("output") == Some("json");
    let mut stdout = std::io::stdout().lock();
    let write = |out: &mut std::io::StdoutLock<'_>, line: String| {
        writeln!(out, "{line}").map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to write output: {e}")))
    };
    if json {
        let items: Vec<serde_json::Value> = keys
            .iter()
            .map(|k| serde_json::json!({"name": &k.key[prefix.len()..], "size": k.size, "time": k.last_modified}))
            .collect();
        write(&mut stdout, serde_json::Value::Array(items).to_string())?;
    } else {
        for k in &keys {
            write(&mut stdout, k.key[prefix.len()..].to_string())?;
        }
    }
    Ok(())
}

/// Writes one object's stored bytes to stdout.
pub fn get(config: &Config) -> CliResult<()> {
    let key = config
        .params
        .first()
        .ok_or_else(|| CliError::new(ErrorCode::ParamRequired, "repo-get requires the object's path"))?;
    let store = open(config)?;
    let rt = super::runtime()?;
    let bytes = rt.block_on(store.get(key.trim_start_matches('/')))?;
    std::io::stdout()
        .lock()
        .write_all(&bytes)
        .map_err(|e| CliError::new(ErrorCode::FileRead, format!("unable to write output: {e}")))
}
