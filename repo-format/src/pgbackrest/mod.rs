//! What pgBackRest (2.x) writes, read as it writes it: its info files (`archive.info`,
//! `backup.info`: INI whose values are JSON, closed by a SHA-1 checksum of their content) and its
//! encryption (`aes-256-cbc` in OpenSSL's salted format). No I/O: bytes in, values out.
//!
//! The facts, from pgBackRest's source (`src/info/info.c`, `src/common/crypto/cipherBlock.c`),
//! checked against files pgBackRest 2.59.1 wrote (`fixtures/pgbackrest/`):
//!
//! - An info file is `[section]` lines and `key=value` lines, the value JSON. `[backrest]` holds
//!   `backrest-format` (5) and `backrest-version`, and, in a last `[backrest]` section of its
//!   own, `backrest-checksum`: the SHA-1 (hex) of the other values rendered as one JSON object,
//!   in file order — `{"section":{"key":value,...},...}` with each key JSON-quoted and each value
//!   as written.
//! - An encrypted file starts with `Salted__` and an 8-byte salt; the AES-256-CBC key and IV
//!   come from OpenSSL's `EVP_BytesToKey` with SHA-1 and one round over the passphrase and the
//!   salt; the plaintext is PKCS#7-padded. The info files are encrypted under the repository's
//!   passphrase (`repoN-cipher-pass`) and carry in `[cipher] cipher-pass` the passphrase of what
//!   they describe (the archive's files, or a backup's manifest).

pub mod blockmap;
pub mod manifest;
pub mod stream;

use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use sha1::{Digest, Sha1};

use crate::error::{FormatError, Result};

/// The repository format pgBackRest 2.x writes (`backrest-format`).
pub const REPOSITORY_FORMAT: u64 = 5;
/// The magic of OpenSSL's salted format.
pub(crate) const SALTED: &[u8; 8] = b"Salted__";
pub(crate) const SALT_LEN: usize = 8;

/// An info file's values, in file order, as written (JSON text), without the checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoFile {
    sections: Vec<(String, Vec<(String, String)>)>,
}

impl InfoFile {
    /// Parses an info file and checks its format and checksum; `what` names it in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let mut current: Option<String> = None;
        let mut checksum = None;
        let mut rendered = String::from("{");
        let mut last_rendered: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(name.to_string());
                continue;
            }
            let (Some(section), Some((key, value))) = (&current, line.split_once('=')) else {
                return Err(FormatError::corrupt(what, format!("line {}: neither a section nor key=value", n + 1)));
            };
            if serde_json::from_str::<serde_json::Value>(value).is_err() {
                return Err(FormatError::corrupt(what, format!("line {}: the value of '{key}' is not JSON", n + 1)));
            }
            if section == "backrest" && key == "backrest-checksum" {
                checksum = serde_json::from_str::<String>(value).ok();
                continue;
            }
            // The checksum's rendering: a section opens when it differs from the last one.
            if last_rendered.as_deref() != Some(section.as_str()) {
                if last_rendered.is_some() {
                    rendered.push_str("},");
                }
                rendered.push('"');
                rendered.push_str(section);
                rendered.push_str("\":{");
                last_rendered = Some(section.clone());
            } else {
                rendered.push(',');
            }
            rendered.push_str(&serde_json::Value::String(key.to_string()).to_string());
            rendered.push(':');
            rendered.push_str(value);
            match sections.iter_mut().find(|(s, _)| s == section) {
                Some((_, values)) => values.push((key.to_string(), value.to_string())),
                None => sections.push((section.clone(), vec![(key.to_string(), value.to_string())])),
            }
        }
        rendered.push_str("}}");
        let actual = crate::hex::encode(&Sha1::digest(rendered.as_bytes()));
        match checksum {
            None => return Err(FormatError::corrupt(what, format!("no checksum (the content's is {actual})"))),
            Some(expected) if expected != actual => {
                return Err(FormatError::corrupt(
                    what,
                    format!("checksum mismatch: the file says {expected}, its content is {actual}"),
                ));
            }
            Some(_) => {}
        }
        let info = Self { sections };
        let format = info.get_u64("backrest", "backrest-format");
        if format != Some(REPOSITORY_FORMAT) {
            return Err(FormatError::UnsupportedVersion {
                what: what.to_string(),
                found: format.and_then(|f| u32::try_from(f).ok()).unwrap_or(0),
                supported: REPOSITORY_FORMAT as u32,
            });
        }
        Ok(info)
    }

    /// A value as written (JSON text).
    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.iter().find(|(s, _)| s == section)?.1.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// A value parsed.
    pub fn get_json(&self, section: &str, key: &str) -> Option<serde_json::Value> {
        serde_json::from_str(self.get(section, key)?).ok()
    }

    /// A string value.
    pub fn get_str(&self, section: &str, key: &str) -> Option<String> {
        self.get_json(section, key)?.as_str().map(str::to_string)
    }

    /// An unsigned integer value.
    pub fn get_u64(&self, section: &str, key: &str) -> Option<u64> {
        self.get_json(section, key)?.as_u64()
    }

    /// The keys and values (JSON text) of a section, in file order.
    pub fn section(&self, name: &str) -> &[(String, String)] {
        self.sections.iter().find(|(s, _)| s == name).map_or(&[], |(_, v)| v.as_slice())
    }

    /// Removes a key; a section left empty goes (pgBackRest writes no empty section).
    pub fn remove(&mut self, section: &str, key: &str) -> bool {
        let Some(i) = self.sections.iter().position(|(s, _)| s == section) else { return false };
        let before = self.sections[i].1.len();
        self.sections[i].1.retain(|(k, _)| k != key);
        let removed = self.sections[i].1.len() != before;
        if self.sections[i].1.is_empty() {
            self.sections.remove(i);
        }
        removed
    }

    /// The file as pgBackRest writes it: each section's `key=value` lines, a blank line between
    /// sections, and last the `[backrest]` section of the checksum — the SHA-1 of the values
    /// rendered as [`parse`](Self::parse) checks them.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let mut rendered = String::from("{");
        for (n, (section, values)) in self.sections.iter().enumerate() {
            if n > 0 {
                text.push('\n');
                rendered.push_str("},");
            }
            text.push_str(&format!("[{section}]\n"));
            rendered.push_str(&format!("\"{section}\":{{"));
            for (i, (key, value)) in values.iter().enumerate() {
                text.push_str(&format!("{key}={value}\n"));
                if i > 0 {
                    rendered.push(',');
                }
                rendered.push_str(&serde_json::Value::String(key.clone()).to_string());
                rendered.push(':');
                rendered.push_str(value);
            }
        }
        rendered.push_str("}}");
        let checksum = crate::hex::encode(&Sha1::digest(rendered.as_bytes()));
        text.push_str(&format!("\n[backrest]\nbackrest-checksum=\"{checksum}\"\n"));
        text
    }
}

/// One database of a stanza's history as `backup.info` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupDb {
    pub id: u32,
    pub system_id: u64,
    pub version: String,
    pub catalog_version: u64,
    pub control_version: u64,
}

/// The timeline of a backup, from its first WAL segment (`backup-archive-start`); 1 when that
/// is not recorded.
pub fn timeline_of(archive_start: Option<&str>) -> crate::pg::TimelineId {
    let id = archive_start.and_then(|w| w.get(..8)).and_then(|t| u32::from_str_radix(t, 16).ok());
    crate::pg::TimelineId(id.unwrap_or(1))
}

/// An LSN as pgBackRest records it (`0/9000028`); 0 when not recorded.
pub fn lsn_of(lsn: Option<&str>) -> crate::pg::Lsn {
    lsn.and_then(|l| l.parse().ok()).unwrap_or(crate::pg::Lsn(0))
}

/// One backup of `backup.info`'s `[backup:current]`.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupEntry {
    pub label: String,
    /// `full`, `diff`, `incr`.
    pub backup_type: String,
    pub prior: Option<String>,
    pub references: Vec<String>,
    pub archive_start: Option<String>,
    pub archive_stop: Option<String>,
    pub lsn_start: Option<String>,
    pub lsn_stop: Option<String>,
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
    pub db_id: u32,
    pub size: u64,
    pub size_delta: u64,
    pub repo_size: u64,
    pub repo_size_delta: u64,
    pub error: bool,
    pub backrest_version: Option<String>,
    pub annotation: Option<serde_json::Value>,
}

/// What `backup.info` says: the databases, the backups, and the passphrase of the backups'
/// manifests when the repository is encrypted. The file itself is kept to be written back
/// (expire) exactly as pgBackRest writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct BackupInfo {
    pub current: BackupDb,
    pub history: Vec<BackupDb>,
    pub backups: Vec<BackupEntry>,
    pub cipher_pass: Option<String>,
    pub file: InfoFile,
    /// It was read encrypted (set by the reader; written back the same way).
    pub encrypted: bool,
}

impl BackupInfo {
    /// Reads `backup.info` (decrypted already when the repository is encrypted).
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let file = InfoFile::parse(text, what)?;
        let missing = |key: &str| FormatError::corrupt(what, format!("[db] has no {key}"));
        let current = BackupDb {
            id: file.get_u64("db", "db-id").and_then(|v| u32::try_from(v).ok()).ok_or_else(|| missing("db-id"))?,
            system_id: file.get_u64("db", "db-system-id").ok_or_else(|| missing("db-system-id"))?,
            version: file.get_str("db", "db-version").ok_or_else(|| missing("db-version"))?,
            catalog_version: file.get_u64("db", "db-catalog-version").unwrap_or(0),
            control_version: file.get_u64("db", "db-control-version").unwrap_or(0),
        };
        let mut history = Vec::new();
        for (id, value) in file.section("db:history") {
            let v: serde_json::Value =
                serde_json::from_str(value).map_err(|e| FormatError::corrupt(what, format!("db:history {id}: {e}")))?;
            let bad = || FormatError::corrupt(what, format!("db:history {id} is incomplete"));
            history.push(BackupDb {
                id: id.parse().map_err(|_| bad())?,
                system_id: v["db-system-id"].as_u64().ok_or_else(bad)?,
                version: v["db-version"].as_str().ok_or_else(bad)?.to_string(),
                catalog_version: v["db-catalog-version"].as_u64().unwrap_or(0),
                control_version: v["db-control-version"].as_u64().unwrap_or(0),
            });
        }
        let mut backups = Vec::new();
        for (label, value) in file.section("backup:current") {
            let v: serde_json::Value =
                serde_json::from_str(value).map_err(|e| FormatError::corrupt(what, format!("backup {label}: {e}")))?;
            let bad = |k: &str| FormatError::corrupt(what, format!("backup {label} has no {k}"));
            let text = |k: &str| v[k].as_str().map(str::to_string);
            let num = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
            backups.push(BackupEntry {
                label: label.clone(),
                backup_type: text("backup-type").ok_or_else(|| bad("backup-type"))?,
                prior: text("backup-prior"),
                references: v["backup-reference"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| r.as_str().map(str::to_string)).collect())
                    .unwrap_or_default(),
                archive_start: text("backup-archive-start"),
                archive_stop: text("backup-archive-stop"),
                lsn_start: text("backup-lsn-start"),
                lsn_stop: text("backup-lsn-stop"),
                timestamp_start: v["backup-timestamp-start"].as_i64().ok_or_else(|| bad("backup-timestamp-start"))?,
                timestamp_stop: v["backup-timestamp-stop"].as_i64().ok_or_else(|| bad("backup-timestamp-stop"))?,
                db_id: u32::try_from(num("db-id")?).map_err(|_| bad("db-id"))?,
                size: num("backup-info-size")?,
                size_delta: num("backup-info-size-delta")?,
                repo_size: num("backup-info-repo-size")?,
                repo_size_delta: num("backup-info-repo-size-delta")?,
                error: v["backup-error"].as_bool().unwrap_or(false),
                backrest_version: text("backrest-version"),
                annotation: v.get("backup-annotation").cloned(),
            });
        }
        Ok(Self {
            current,
            history,
            backups,
            cipher_pass: file.get_str("cipher", "cipher-pass"),
            file,
            encrypted: false,
        })
    }

    /// Removes a backup from `[backup:current]`; the file renders without it.
    pub fn remove_backup(&mut self, label: &str) {
        self.file.remove("backup:current", label);
        self.backups.retain(|b| b.label != label);
    }
}

/// One database of a stanza's history, as `archive.info` records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveDb {
    /// pgBackRest's database id (the `N` of the archive id `15-N`).
    pub id: u32,
    pub system_id: u64,
    /// `"15"`, `"9.6"`.
    pub version: String,
}

impl ArchiveDb {
    /// The archive directory of this database: `<version>-<id>`.
    pub fn archive_id(&self) -> String {
        format!("{}-{}", self.version, self.id)
    }
}

/// What `archive.info` says: the current database, its history, and the passphrase of the
/// archive's files when the repository is encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveInfo {
    pub current: ArchiveDb,
    pub history: Vec<ArchiveDb>,
    pub cipher_pass: Option<String>,
    pub backrest_version: Option<String>,
}

impl ArchiveInfo {
    /// Reads `archive.info` (decrypted already when the repository is encrypted).
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let info = InfoFile::parse(text, what)?;
        let missing = |key: &str| FormatError::corrupt(what, format!("[db] has no {key}"));
        let current = ArchiveDb {
            id: info.get_u64("db", "db-id").and_then(|v| u32::try_from(v).ok()).ok_or_else(|| missing("db-id"))?,
            system_id: info.get_u64("db", "db-system-id").ok_or_else(|| missing("db-system-id"))?,
            version: info.get_str("db", "db-version").ok_or_else(|| missing("db-version"))?,
        };
        let mut history = Vec::new();
        for (id, value) in info.section("db:history") {
            let v: serde_json::Value =
                serde_json::from_str(value).map_err(|e| FormatError::corrupt(what, format!("db:history {id}: {e}")))?;
            let bad = || FormatError::corrupt(what, format!("db:history {id} is incomplete"));
            history.push(ArchiveDb {
                id: id.parse().map_err(|_| bad())?,
                system_id: v["db-id"].as_u64().ok_or_else(bad)?,
                version: v["db-version"].as_str().ok_or_else(bad)?.to_string(),
            });
        }
        Ok(Self {
            current,
            history,
            cipher_pass: info.get_str("cipher", "cipher-pass"),
            backrest_version: info.get_str("backrest", "backrest-version"),
        })
    }
}

/// OpenSSL's `EVP_BytesToKey` with SHA-1 and one round, for AES-256-CBC: 32 bytes of key, 16
/// of IV.
pub(crate) fn bytes_to_key(pass: &[u8], salt: &[u8]) -> ([u8; 32], [u8; 16]) {
    let mut out = Vec::with_capacity(48);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < 48 {
        let mut h = Sha1::new();
        h.update(&prev);
        h.update(pass);
        h.update(salt);
        prev = h.finalize().to_vec();
        out.extend_from_slice(&prev);
    }
    let mut key = [0u8; 32];
    let mut iv = [0u8; 16];
    key.copy_from_slice(&out[..32]);
    iv.copy_from_slice(&out[32..48]);
    (key, iv)
}

/// Decrypts what pgBackRest encrypted under `pass`; `what` names it in errors. A wrong
/// passphrase is reported as such (it shows as bad padding).
pub fn decrypt_cbc(data: &[u8], pass: &[u8], what: &str) -> Result<Vec<u8>> {
    if data.len() < SALTED.len() + SALT_LEN || &data[..SALTED.len()] != SALTED {
        return Err(FormatError::corrupt(what, "not encrypted as pgBackRest encrypts (no 'Salted__' header)"));
    }
    let salt = &data[SALTED.len()..SALTED.len() + SALT_LEN];
    let body = &data[SALTED.len() + SALT_LEN..];
    let (key, iv) = bytes_to_key(pass, salt);
    let dec = cbc::Decryptor::<aes::Aes256>::new_from_slices(&key, &iv)
        .map_err(|e| FormatError::corrupt(what, format!("cipher setup: {e}")))?;
    // Under a wrong passphrase the padding comes out wrong (but for 1 time in 256 or so, when
    // the result is garbage that fails later checks: the info checksum, the WAL's SHA-1).
    dec.decrypt_padded_vec::<Pkcs7>(body).map_err(|_| FormatError::WrongPassphrase)
}

/// Encrypts as pgBackRest does, with the given salt (a writer draws it at random).
pub fn encrypt_cbc(plain: &[u8], pass: &[u8], salt: [u8; SALT_LEN]) -> Vec<u8> {
    let (key, iv) = bytes_to_key(pass, &salt);
    let mut out = Vec::with_capacity(SALTED.len() + SALT_LEN + plain.len() + 16);
    out.extend_from_slice(SALTED);
    out.extend_from_slice(&salt);
    match cbc::Encryptor::<aes::Aes256>::new_from_slices(&key, &iv) {
        Ok(enc) => out.extend_from_slice(&enc.encrypt_padded_vec::<Pkcs7>(plain)),
        // Key and IV have the cipher's sizes by construction.
        Err(_) => out.clear(),
    }
    out
}

/// Encrypts as pgBackRest does, under a random salt.
pub fn encrypt_cbc_salted(plain: &[u8], pass: &[u8]) -> Result<Vec<u8>> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| FormatError::corrupt("salt", format!("no randomness: {e}")))?;
    Ok(encrypt_cbc(plain, pass, salt))
}

/// Decompresses a whole file as pgBackRest compressed it, by the extension of its name (`gz`,
/// `bz2`, `lz4` frame, `zst`; none: stored as is), to at most `limit` bytes: more is refused
/// (a file a repository could hold is never larger), so a hostile object cannot exhaust memory.
pub fn decompress(name: &str, data: &[u8], limit: u64, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    let reader: Box<dyn Read + '_> = match name.rsplit_once('.').map(|(_, e)| e) {
        Some("gz") => Box::new(flate2::read::GzDecoder::new(data)),
        Some("bz2") => Box::new(bzip2::read::BzDecoder::new(data)),
        Some("lz4") => Box::new(lz4_flex::frame::FrameDecoder::new(data)),
        Some("zst") => Box::new(
            zstd::stream::read::Decoder::new(data).map_err(|e| FormatError::corrupt(what, format!("zst: {e}")))?,
        ),
        _ => return Ok(data.to_vec()),
    };
    let mut out = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| FormatError::corrupt(what, format!("unable to decompress: {e}")))?;
    if out.len() as u64 > limit {
        return Err(FormatError::corrupt(what, format!("decompresses to more than {limit} bytes")));
    }
    Ok(out)
}

/// The SHA-1 (hex) of some bytes: what pgBackRest names archived WAL by.
pub fn sha1_hex(data: &[u8]) -> String {
    crate::hex::encode(&Sha1::digest(data))
}
