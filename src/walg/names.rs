//! WAL-G's names for the backups of the catalog, and `backup-list`'s output.
//!
//! A backup's WAL-G name is derived, never stored: `base_<first WAL segment>` for a full backup,
//! `base_<segment>_D_<segment of the backup it is a delta from>` for a delta (Spilo reads the
//! start segment out of the name). The repository keeps pgBackRest labels, so both front ends
//! read the same catalog; in the rare case of two backups starting in the same segment, the
//! later one's name gets its label appended.

use std::collections::BTreeMap;

use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry, DbEntry};
use pgstrata_repo_format::{BackupLabel, BackupType};
use serde::Serialize;

use crate::error::{CliError, CliResult, ErrorCode};

/// Each backup of the catalog with its WAL-G name, oldest first.
pub fn named(catalog: &BackupCatalog) -> Vec<(String, &CatalogEntry)> {
    let mut order: Vec<&CatalogEntry> = catalog.backups.iter().collect();
    order.sort_by_key(|b| (b.timestamp_start, b.timestamp_stop));
    let by_label: BTreeMap<&BackupLabel, &CatalogEntry> = order.iter().map(|b| (&b.label, *b)).collect();
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    order
        .into_iter()
        .map(|b| {
            let mut name = format!("base_{}", b.wal_start);
            if let Some(from) = b.prior.as_ref().and_then(|p| by_label.get(p)) {
                name.push_str(&format!("_D_{}", from.wal_start));
            }
            let seen = taken.entry(name.clone()).or_default();
            *seen += 1;
            if *seen > 1 {
                name.push_str(&format!("_{}", b.label));
            }
            (name, b)
        })
        .collect()
}

/// The backup `name` stands for: `LATEST` (the newest), or a WAL-G name.
pub fn find<'a>(catalog: &'a BackupCatalog, name: &str) -> CliResult<&'a CatalogEntry> {
    let all = named(catalog);
    let found = if name == "LATEST" {
        all.last().map(|(_, b)| *b)
    } else {
        all.iter().find(|(n, b)| n == name || b.label.to_string() == name).map(|(_, b)| *b)
    };
    found.ok_or_else(|| {
        let what =
            if name == "LATEST" { "there is no backup".to_string() } else { format!("no backup is named {name}") };
        CliError::new(ErrorCode::BackupSetInvalid, what).hint("run backup-list to see the backups")
    })
}

fn rfc3339(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0)
        .map_or_else(|| unix.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// One row of `backup-list --json` (WAL-G's field names).
#[derive(Serialize)]
struct Row {
    backup_name: String,
    time: String,
    wal_file_name: String,
    storage_name: &'static str,
    #[serde(flatten)]
    detail: Option<Detail>,
}

/// What `--detail` adds.
#[derive(Serialize)]
struct Detail {
    start_time: String,
    finish_time: String,
    pg_version: u32,
    start_lsn: u64,
    finish_lsn: u64,
    is_permanent: bool,
    system_identifier: u64,
    uncompressed_size: u64,
    compressed_size: u64,
    /// pgstrata's own: the pgBackRest label the repository knows it by, and its type.
    label: String,
    backup_type: &'static str,
}

/// `backup-list`: a table (whitespace-separated columns under a header, as Spilo's scripts
/// parse it) or JSON (`--json`, indented with `--pretty`); `--detail` adds columns.
pub fn list(catalog: &BackupCatalog, dbs: &[DbEntry], detail: bool, json: bool, pretty: bool) -> CliResult<String> {
    let db = |id: u32| dbs.iter().find(|d| d.id == id);
    let rows: Vec<Row> = named(catalog)
        .into_iter()
        .map(|(name, b)| Row {
            backup_name: name,
            time: rfc3339(b.timestamp_stop),
            wal_file_name: b.wal_start.clone(),
            storage_name: "default",
            detail: detail.then(|| Detail {
                start_time: rfc3339(b.timestamp_start),
                finish_time: rfc3339(b.timestamp_stop),
                pg_version: db(b.db_id).map_or(0, |d| d.pg_version),
                start_lsn: b.lsn_start.0,
                finish_lsn: b.lsn_stop.0,
                is_permanent: b.keep,
                system_identifier: db(b.db_id).map_or(0, |d| d.system_id),
                uncompressed_size: b.size,
                compressed_size: b.repo_delta,
                label: b.label.to_string(),
                backup_type: match b.backup_type {
                    BackupType::Full => "full",
                    BackupType::Diff | BackupType::Incr => "delta",
                },
            }),
        })
        .collect();
    if json {
        let text = if pretty { serde_json::to_string_pretty(&rows) } else { serde_json::to_string(&rows) };
        return text.map(|t| t + "\n").map_err(|e| CliError::new(ErrorCode::Service, e.to_string()));
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    if detail {
        table.push(
            [
                "name",
                "last_modified",
                "start_time",
                "finish_time",
                "pg_version",
                "start_lsn",
                "finish_lsn",
                "is_permanent",
            ]
            .map(String::from)
            .to_vec(),
        );
    } else {
        table.push(["name", "modified", "wal_segment_backup_start"].map(String::from).to_vec());
    }
    for r in &rows {
        let mut line = vec![r.backup_name.clone(), r.time.clone()];
        match &r.detail {
            Some(d) => line.extend([
                d.start_time.clone(),
                d.finish_time.clone(),
                d.pg_version.to_string(),
                lsn(d.start_lsn),
                lsn(d.finish_lsn),
                d.is_permanent.to_string(),
            ]),
            None => line.push(r.wal_file_name.clone()),
        }
        table.push(line);
    }
    Ok(columns(&table))
}

fn lsn(v: u64) -> String {
    pgstrata_repo_format::pg::Lsn(v).to_string()
}

/// Rows padded into columns (two spaces between), one line each.
fn columns(table: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..table.first().map_or(0, Vec::len))
        .map(|c| table.iter().map(|r| r.get(c).map_or(0, String::len)).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in table {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| if i + 1 == row.len() { cell.clone() } else { format!("{cell:<w$}", w = widths[i]) })
            .collect();
        out.push_str(&cells.join("  "));
        out.push('\n');
    }
    out
}
