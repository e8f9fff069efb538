//! Clusters from their `pgN-*` options: where each data directory is and how to reach its server.

use std::path::PathBuf;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::postgres::ClusterTarget;

/// Every configured cluster (`pg1` when none is), in index order.
pub fn clusters(config: &Config) -> CliResult<Vec<ClusterTarget>> {
    let mut indexes = config.pg_indexes_set();
    if indexes.is_empty() {
        indexes.push(1);
    }
    indexes.into_iter().map(|n| cluster(config, n)).collect()
}

/// Cluster `pgN`; its `pgN-path` must be set and absolute.
pub fn cluster(config: &Config, n: u32) -> CliResult<ClusterTarget> {
    let opt = |suffix: &str| config.get(&format!("pg{n}-{suffix}"));
    let data = PathBuf::from(opt("path").ok_or_else(|| {
        CliError::new(ErrorCode::OptionRequired, format!("{} command requires option: pg{n}-path", config.command.name))
    })?);
    if !data.is_absolute() {
        return Err(CliError::new(
            ErrorCode::OptionInvalidValue,
            format!("'{}' is not valid for 'pg{n}-path' option: it must be absolute", data.display()),
        ));
    }
    let host = opt("host").map(|h| (h.to_string(), super::repos::endpoint(config, &format!("pg{n}"))));
    Ok(ClusterTarget {
        index: n,
        data,
        host,
        socket: PathBuf::from(opt("socket-path").unwrap_or("/var/run/postgresql")),
        port: config.int(&format!("pg{n}-port")).and_then(|p| u16::try_from(p).ok()).unwrap_or(5432),
        user: opt("user").map(str::to_string),
        database: opt("database").unwrap_or("postgres").to_string(),
        stanza: config.get("stanza").map(str::to_string),
        workers: super::process_max(config),
    })
}
