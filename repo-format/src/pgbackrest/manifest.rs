//! pgBackRest's backup manifest (`backup/<stanza>/<label>/backup.manifest`), read as
//! `src/info/manifest/serialize.c.inc` writes it: an info file (INI, JSON values, SHA-1
//! checksum) with `[backup]`, `[backup:db]`, `[backup:option]`, `[backup:target]`, `[db]` (the
//! databases), `[target:file]`, `[target:link]`, `[target:path]` and their `:default`
//! sections, and `[cipher] cipher-pass` (the passphrase of the backup's files) when encrypted.
//!
//! A file entry holds, as present: `bi`/`bic`/`bim` (block incremental: block size in units of
//! 8 KiB, checksum size, map size), `bni`/`bno` (bundle id and offset), `checksum` (SHA-1 of
//! the file), `checksum-page`, `group`, `mode`, `rck` (SHA-1 of the stored bytes),
//! `reference` (the backup that stores it), `repo-size` (when not `size`), `size`, `szo`,
//! `timestamp`, `user`. Owners are names, or `false` when unmapped.

use super::InfoFile;
use crate::error::{FormatError, Result};

/// pgBackRest's unit of `bi`.
pub const BLOCK_INCR_SIZE_FACTOR: u64 = 8192;
/// `bic` when absent.
const BLOCK_INCR_CHECKSUM_SIZE_MIN: u64 = 6;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `pg_data`, `pg_tblspc/<oid>`, or `pg_data/<link>` for a link.
    pub name: String,
    pub path: String,
    /// `path` or `link`.
    pub kind: String,
    /// A link to a file: its name (the path is then its directory).
    pub file: Option<String>,
    pub tablespace_id: Option<u32>,
    pub tablespace_name: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub mode: u32,
    pub user: Option<String>,
    pub group: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathEntry {
    pub name: String,
    pub owner: Owner,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEntry {
    pub name: String,
    pub destination: String,
    pub owner: Owner,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockIncr {
    /// Block size in bytes.
    pub size: u64,
    pub checksum_size: u64,
    /// Bytes of the map at the end of the stored file.
    pub map_size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub size_repo: u64,
    pub timestamp: i64,
    pub owner: Owner,
    /// SHA-1 (hex) of the file; absent only in partial manifests.
    pub checksum: Option<String>,
    /// The backup storing it, when not this one.
    pub reference: Option<String>,
    pub bundle_id: Option<u64>,
    pub bundle_offset: u64,
    pub block_incr: Option<BlockIncr>,
}

/// A whole manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub label: String,
    /// `full`, `diff`, `incr`.
    pub backup_type: String,
    pub prior: Option<String>,
    /// `backup-reference`: every backup a block map may name, oldest first (2.4x and later).
    pub references: Vec<String>,
    pub archive_start: Option<String>,
    pub archive_stop: Option<String>,
    pub lsn_start: Option<String>,
    pub lsn_stop: Option<String>,
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
    pub timestamp_copy_start: i64,
    pub pg_version: String,
    pub system_id: u64,
    pub db_id: u32,
    pub compress_type: String,
    pub bundle: bool,
    pub bundle_raw: bool,
    pub online: bool,
    pub targets: Vec<Target>,
    pub paths: Vec<PathEntry>,
    pub links: Vec<LinkEntry>,
    pub files: Vec<FileEntry>,
    /// Name and oid of each database.
    pub databases: Vec<(String, u32)>,
    /// The passphrase of the backup's files.
    pub cipher_pass: Option<String>,
}

fn json(value: &str, what: &str, key: &str) -> Result<serde_json::Value> {
    serde_json::from_str(value).map_err(|e| FormatError::corrupt(what, format!("{key}: {e}")))
}

fn owner_name(v: Option<&serde_json::Value>, default: &Option<String>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => None,
        None => default.clone(),
    }
}

fn mode_of(v: Option<&serde_json::Value>, default: u32) -> u32 {
    v.and_then(|m| m.as_str()).and_then(|m| u32::from_str_radix(m, 8).ok()).unwrap_or(default)
}

struct Defaults {
    mode: u32,
    user: Option<String>,
    group: Option<String>,
}

fn defaults(info: &InfoFile, section: &str, mode: u32) -> Defaults {
    let get = |k: &str| info.get_json(section, k);
    Defaults {
        mode: mode_of(get("mode").as_ref(), mode),
        user: owner_name(get("user").as_ref(), &None),
        group: owner_name(get("group").as_ref(), &None),
    }
}

impl Defaults {
    fn owner(&self, v: &serde_json::Value) -> Owner {
        Owner {
            mode: mode_of(v.get("mode"), self.mode),
            user: owner_name(v.get("user"), &self.user),
            group: owner_name(v.get("group"), &self.group),
        }
    }
}

impl Manifest {
    /// Parses a manifest (decrypted already); `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let info = InfoFile::parse(text, what)?;
        let missing = |section: &str, key: &str| FormatError::corrupt(what, format!("[{section}] has no {key}"));
        let s = |section: &str, key: &str| info.get_str(section, key);
        let u = |section: &str, key: &str| info.get_u64(section, key);
        let b = |key: &str| info.get_json("backup:option", key).and_then(|v| v.as_bool()).unwrap_or(false);
        let mut targets = Vec::new();
        for (name, value) in info.section("backup:target") {
            let v = json(value, what, name)?;
            targets.push(Target {
                name: name.clone(),
                path: v["path"].as_str().ok_or_else(|| missing("backup:target", "path"))?.to_string(),
                kind: v["type"].as_str().unwrap_or("path").to_string(),
                file: v["file"].as_str().map(str::to_string),
                tablespace_id: v["tablespace-id"].as_str().and_then(|t| t.parse().ok()),
                tablespace_name: v["tablespace-name"].as_str().map(str::to_string),
            });
        }
        let path_defaults = defaults(&info, "target:path:default", 0o700);
        let mut paths = Vec::new();
        for (name, value) in info.section("target:path") {
            paths.push(PathEntry { name: name.clone(), owner: path_defaults.owner(&json(value, what, name)?) });
        }
        let link_defaults = defaults(&info, "target:link:default", 0o777);
        let mut links = Vec::new();
        for (name, value) in info.section("target:link") {
            let v = json(value, what, name)?;
            links.push(LinkEntry {
                name: name.clone(),
                destination: v["destination"].as_str().ok_or_else(|| missing(name, "destination"))?.to_string(),
                owner: link_defaults.owner(&v),
            });
        }
        let file_defaults = defaults(&info, "target:file:default", 0o600);
        let mut files = Vec::new();
        for (name, value) in info.section("target:file") {
            let v = json(value, what, name)?;
            let size = v["size"].as_u64().ok_or_else(|| missing(name, "size"))?;
            let block_incr = match v["bi"].as_u64() {
                Some(bi) => Some(BlockIncr {
                    size: bi.checked_mul(BLOCK_INCR_SIZE_FACTOR).ok_or_else(|| missing(name, "a sane bi"))?,
                    checksum_size: v["bic"].as_u64().unwrap_or(BLOCK_INCR_CHECKSUM_SIZE_MIN),
                    map_size: v["bim"].as_u64().unwrap_or(0),
                })
                .filter(|b| b.map_size > 0),
                None => None,
            };
            files.push(FileEntry {
                name: name.clone(),
                size,
                size_repo: v["repo-size"].as_u64().unwrap_or(size),
                timestamp: v["timestamp"].as_i64().ok_or_else(|| missing(name, "timestamp"))?,
                owner: file_defaults.owner(&v),
                checksum: v["checksum"].as_str().map(str::to_string),
                reference: v["reference"].as_str().map(str::to_string),
                bundle_id: v["bni"].as_u64(),
                bundle_offset: v["bno"].as_u64().unwrap_or(0),
                block_incr,
            });
        }
        let mut databases = Vec::new();
        for (name, value) in info.section("db") {
            let v = json(value, what, name)?;
            if let Some(oid) = v["db-id"].as_u64().and_then(|o| u32::try_from(o).ok()) {
                databases.push((name.clone(), oid));
            }
        }
        let references = s("backup", "backup-reference")
            .map(|r| r.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Self {
            label: s("backup", "backup-label").ok_or_else(|| missing("backup", "backup-label"))?,
            backup_type: s("backup", "backup-type").ok_or_else(|| missing("backup", "backup-type"))?,
            prior: s("backup", "backup-prior"),
            references,
            archive_start: s("backup", "backup-archive-start"),
            archive_stop: s("backup", "backup-archive-stop"),
            lsn_start: s("backup", "backup-lsn-start"),
            lsn_stop: s("backup", "backup-lsn-stop"),
            timestamp_start: info.get_json("backup", "backup-timestamp-start").and_then(|v| v.as_i64()).unwrap_or(0),
            timestamp_stop: info.get_json("backup", "backup-timestamp-stop").and_then(|v| v.as_i64()).unwrap_or(0),
            timestamp_copy_start: info
                .get_json("backup", "backup-timestamp-copy-start")
                .and_then(|v| v.as_i64())
                .unwrap_or(0),
            pg_version: s("backup:db", "db-version").ok_or_else(|| missing("backup:db", "db-version"))?,
            system_id: u("backup:db", "db-system-id").ok_or_else(|| missing("backup:db", "db-system-id"))?,
            db_id: u("backup:db", "db-id").and_then(|v| u32::try_from(v).ok()).unwrap_or(1),
            compress_type: s("backup:option", "option-compress-type").unwrap_or_else(|| {
                // Before compress-type existed: gz when compressed.
                if b("option-compress") { "gz".into() } else { "none".into() }
            }),
            bundle: info.get_json("backup", "backup-bundle").and_then(|v| v.as_bool()).unwrap_or(false),
            bundle_raw: info.get_json("backup", "backup-bundle-raw").and_then(|v| v.as_bool()).unwrap_or(false),
            online: info.get_json("backup:option", "option-online").and_then(|v| v.as_bool()).unwrap_or(true),
            targets,
            paths,
            links,
            files,
            databases,
            cipher_pass: s("cipher", "cipher-pass"),
        })
    }

    /// The repository file holding `file`, relative to `backup/<stanza>/`: its own object
    /// (`<label>/<name>` with the compression's extension, or `.pgbi` when block incremental),
    /// or its bundle (`<label>/bundle/<id>`).
    pub fn file_object(&self, file: &FileEntry) -> String {
        let label = file.reference.as_deref().unwrap_or(&self.label);
        match file.bundle_id {
            Some(id) if id != 0 => format!("{label}/bundle/{id}"),
            _ if file.block_incr.is_some() => format!("{label}/{}.pgbi", file.name),
            _ => format!("{label}/{}{}", file.name, extension(&self.compress_type)),
        }
    }

    /// The object holding block-incremental super blocks of `name` in backup `label`.
    pub fn block_object(label: &str, name: &str, bundle_id: u64) -> String {
        if bundle_id != 0 { format!("{label}/bundle/{bundle_id}") } else { format!("{label}/{name}.pgbi") }
    }
}

/// The extension pgBackRest gives a file compressed with `compress_type`.
pub fn extension(compress_type: &str) -> &'static str {
    match compress_type {
        "gz" => ".gz",
        "bz2" => ".bz2",
        "lz4" => ".lz4",
        "zst" => ".zst",
        _ => "",
    }
}
