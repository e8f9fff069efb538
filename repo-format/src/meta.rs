//! Versioned metadata: the stanza info, the backup catalog and backup manifests.
//!
//! The stanza info and catalog are small JSON documents in an *envelope*:
//! `{"format":1,"kind":"backup-catalog","checksum":"<sha256>","body":{...}}`. The checksum covers
//! the canonical serialization of `body`, and the format number is read before anything else so
//! an unknown version is reported as such rather than as a schema error. These objects are
//! rewritten, so they are stored twice (the key and its `.copy`) and read main-then-copy.
//!
//! A manifest can list millions of files, so it is never one JSON value: it is JSON lines —
//! a header line, one line per directory, file or link in strictly increasing path order, and an
//! end line with the count and the SHA-256 of every byte before it. [`ManifestWriter`] and
//! [`ManifestReader`] stream it, so memory does not grow with the number of files, and two
//! manifests (a backup and its parent) can be merge-joined by path.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::crypto::WrappedKey;
use crate::digest::{CountingHasher, Sha256Digest};
use crate::error::{FormatError, Result};
use crate::label::{BackupLabel, BackupType};
use crate::pg::{Lsn, TimelineId};

/// The metadata format this build writes and the highest it reads.
pub const META_FORMAT: u32 = 1;

/// What a metadata document is; stored as `kind` and checked on read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaKind {
    StanzaInfo,
    BackupCatalog,
    Manifest,
    Checkpoint,
}

impl MetaKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::StanzaInfo => "stanza-info",
            Self::BackupCatalog => "backup-catalog",
            Self::Manifest => "manifest",
            Self::Checkpoint => "backup-checkpoint",
        }
    }
}

fn to_value<T: Serialize>(what: &str, v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| FormatError::invalid(what, e.to_string()))
}

/// SHA-256 of the canonical form of `body`.
fn canonical_digest(what: &str, body: &Value) -> Result<Sha256Digest> {
    let mut bytes = Vec::new();
    write_canonical(body, &mut bytes).map_err(|e| FormatError::invalid(what, e.to_string()))?;
    Ok(Sha256Digest::of(&bytes))
}

/// Compact JSON with the keys of every object in byte order, whatever order the map keeps
/// (serde_json's `preserve_order` feature, switched on anywhere in a build, would otherwise
/// change the bytes the checksum covers).
fn write_canonical(v: &Value, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                if let Some(inner) = map.get(k) {
                    write_canonical(inner, out)?;
                }
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out)?;
            }
            out.push(b']');
        }
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
}

/// Serializes `body` into a checksummed, versioned envelope.
pub fn encode_meta<T: Serialize>(kind: MetaKind, body: &T) -> Result<Vec<u8>> {
    let body = to_value(kind.as_str(), body)?;
    let checksum = canonical_digest(kind.as_str(), &body)?;
    let doc = serde_json::json!({
        "format": META_FORMAT,
        "kind": kind.as_str(),
        "checksum": checksum.to_hex(),
        "body": body,
    });
    let mut out = serde_json::to_vec_pretty(&doc).map_err(|e| FormatError::invalid(kind.as_str(), e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

/// Checks the `format` and `kind` fields of a metadata line or document.
fn check_format(doc: &Value, kind: MetaKind, what: &str) -> Result<()> {
    let format = doc
        .get("format")
        .and_then(Value::as_u64)
        .ok_or_else(|| FormatError::NotAnObject { what: what.to_string(), detail: "no format number".to_string() })?;
    if format == 0 || format > u64::from(META_FORMAT) {
        return Err(FormatError::UnsupportedVersion {
            what: what.to_string(),
            found: u32::try_from(format).unwrap_or(u32::MAX),
            supported: META_FORMAT,
        });
    }
    let found = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    if found != kind.as_str() {
        return Err(FormatError::NotAnObject {
            what: what.to_string(),
            detail: format!("it is a {found:?} document, expected {:?}", kind.as_str()),
        });
    }
    Ok(())
}

/// Parses an envelope, checking format, kind and checksum; `what` names it in errors.
pub fn decode_meta<T: DeserializeOwned>(bytes: &[u8], kind: MetaKind, what: &str) -> Result<T> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| FormatError::corrupt(what, format!("not valid JSON: {e}")))?;
    check_format(&doc, kind, what)?;
    let body = doc.get("body").ok_or_else(|| FormatError::corrupt(what, "no body"))?;
    let stored =
        doc.get("checksum")
            .and_then(Value::as_str)
            .ok_or_else(|| FormatError::corrupt(what, "no checksum"))
            .and_then(|s| Sha256Digest::from_hex(s).map_err(|_| FormatError::corrupt(what, "malformed checksum")))?;
    let computed = canonical_digest(what, body)?;
    if stored != computed {
        return Err(FormatError::corrupt(what, format!("checksum mismatch (stored {stored}, computed {computed})")));
    }
    T::deserialize(body).map_err(|e| FormatError::corrupt(what, format!("unexpected content: {e}")))
}

/// The stored form of the backup catalog: its envelope inside a blob (compressed, and encrypted
/// when the stanza is). The stanza info is stored as its bare envelope instead (see
/// `docs/repo-format.md`), because it carries the wrapped key needed to open everything else.
pub fn seal_meta<T: Serialize>(
    kind: MetaKind,
    body: &T,
    settings: crate::frame::BlobSettings,
    key: Option<&crate::crypto::DataKey>,
) -> Result<Vec<u8>> {
    let plain = encode_meta(kind, body)?;
    Ok(crate::frame::encode_blob(&plain, settings, key)?.0)
}

/// Opens what [`seal_meta`] stored.
pub fn open_meta<T: DeserializeOwned>(
    bytes: &[u8],
    kind: MetaKind,
    what: &str,
    key: Option<&crate::crypto::DataKey>,
) -> Result<T> {
    let plain = crate::frame::decode_blob(bytes, what, key)?;
    decode_meta(&plain, kind, what)
}

/// One database the stanza has backed up; a new entry is added by `stanza-upgrade`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbEntry {
    pub id: u32,
    pub system_id: u64,
    pub pg_version: u32,
    pub catalog_version: u32,
    pub control_version: u32,
}

/// How the stanza's objects are encrypted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum CipherInfo {
    None,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm {
        key: WrappedKey,
    },
}

/// The stanza's identity. Stored unencrypted (it holds the wrapped key).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StanzaInfo {
    pub stanza: String,
    /// Unix seconds.
    pub created: i64,
    pub cipher: CipherInfo,
    /// Oldest first; the last entry is the current database.
    pub db_history: Vec<DbEntry>,
}

impl StanzaInfo {
    /// The current database.
    pub fn current_db(&self) -> Option<&DbEntry> {
        self.db_history.last()
    }
}

/// One complete backup, as listed in the catalog (what `info` needs without opening manifests).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogEntry {
    pub label: BackupLabel,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub prior: Option<BackupLabel>,
    /// Every backup this one needs data from.
    pub references: Vec<BackupLabel>,
    pub db_id: u32,
    pub timeline: TimelineId,
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
    pub lsn_start: Lsn,
    pub lsn_stop: Lsn,
    pub wal_start: String,
    pub wal_stop: String,
    /// Size of the cluster's files.
    pub size: u64,
    /// Bytes of cluster files this backup copied.
    pub delta: u64,
    /// Stored bytes needed to restore (this backup and what it references).
    pub repo_size: u64,
    /// Stored bytes this backup wrote.
    pub repo_delta: u64,
    /// Page checksum errors were found.
    pub error: bool,
    pub pgstrata_version: String,
    /// SHA-256 of the manifest's plaintext, binding the catalog to it.
    pub manifest_sha256: Sha256Digest,
    /// Kept: `expire` never removes it, nor what it depends on (`backup --keep`, `annotate`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep: bool,
    /// The user's `key=value` annotations (`backup --annotation`, `annotate`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotation: std::collections::BTreeMap<String, String>,
}

/// The list of complete backups of a stanza, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupCatalog {
    pub backups: Vec<CatalogEntry>,
}

/// A root the backup copied: `pg_data` or a tablespace `pg_tblspc/<oid>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// `pg_data` or `pg_tblspc/<oid>`.
    pub name: String,
    /// Absolute path on the source host.
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_oid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tablespace_name: Option<String>,
}

/// Settings a backup was written with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSettings {
    /// `none`, `zst` or `lz4`.
    pub compress_type: String,
    pub compress_level: Option<i32>,
    /// `none` or `aes-256-gcm`.
    pub cipher: String,
    pub frame_size: u64,
    /// Page checksums were verified.
    pub checksum_page: bool,
}

/// The first line of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHeader {
    pub label: BackupLabel,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub prior: Option<BackupLabel>,
    pub references: Vec<BackupLabel>,
    pub pg_version: u32,
    pub system_id: u64,
    pub db_id: u32,
    pub timeline: TimelineId,
    pub lsn_start: Lsn,
    pub lsn_stop: Lsn,
    pub wal_start: String,
    pub wal_stop: String,
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
    pub settings: BackupSettings,
    pub targets: Vec<Target>,
    /// Number of pack objects (`pack/00000000` ..).
    pub packs: u32,
    /// The cluster's databases when the backup started (for `info --set`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseRef>,
    /// Where the copy read the cluster's files, with the files and bytes read on each host:
    /// the primary and, with `backup-standby`, the standby. Empty in manifests written before
    /// it was recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub read_from: Vec<ReadFrom>,
    /// `archive-copy`: the WAL segments from the backup's start to its stop, stored in this
    /// backup's packs as the files `pg_data/pg_wal/<segment>` a restore writes, so the backup
    /// reaches consistency without the archive. Kept in the header, not among the entries (the
    /// walk leaves `pg_wal` empty and entries stay in path order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub wal_copy: Vec<FileEntry>,
}

/// The files a backup read on one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadFrom {
    /// `primary` or `standby`.
    pub role: String,
    /// The cluster's `pgN-host`, or none when read locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its data directory.
    pub path: String,
    pub files: u64,
    pub bytes: u64,
}

/// A database of the backed-up cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseRef {
    pub name: String,
    pub oid: u32,
}

/// Owner and permissions of a path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// A directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub path: String,
    #[serde(flatten)]
    pub owner: Ownership,
}

/// A symbolic link (tablespace links under `pg_tblspc`, `pg_wal` links, ...).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEntry {
    pub path: String,
    pub destination: String,
    #[serde(flatten)]
    pub owner: Ownership,
}

/// Where a stored blob is: `len` bytes at `offset` of pack `pack` of the backup that wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub pack: u32,
    pub offset: u64,
    pub len: u64,
    /// Plaintext bytes the blob decodes to.
    pub plain_len: u64,
}

/// A run of consecutive pages of a relation file and where their bytes are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRun {
    /// First page number (in the file).
    pub first: u32,
    pub count: u32,
    /// The backup holding these pages; `None` for this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupLabel>,
    /// Index of the first of these pages in that backup's stored pages of this file.
    pub at: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl FileData {
    /// Bytes stored for the file, in this backup or (for a reference) the one holding it.
    pub fn stored(&self) -> u64 {
        match self {
            Self::Empty => 0,
            Self::Stored { parts } | Self::Pages { parts, .. } => parts.iter().map(|p| p.len).sum(),
            Self::Same { stored, .. } => *stored,
        }
    }
}

/// Where a file's content is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileData {
    /// Zero bytes; nothing stored.
    Empty,
    /// The whole content, in this backup's blobs, in order.
    Stored { parts: Vec<PartRef> },
    /// Unchanged: identical to the file in `backup`, which stores it in `stored` bytes (for
    /// the repository sizes `info` reports; 0 when not recorded).
    Same {
        backup: BackupLabel,
        #[serde(default, skip_serializing_if = "is_zero")]
        stored: u64,
    },
    /// Page-level incremental: the pages this backup stored (in `parts`, concatenated), the
    /// SHA-256 of each frame of each part (the parts' own frames, in order: what verifies the
    /// stored pages, as the file's `chunks` describe the file as read), and the runs that map
    /// every page of the file to a backup and a stored-page index.
    Pages {
        parts: Vec<PartRef>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        chunks: Vec<Sha256Digest>,
        runs: Vec<PageRun>,
    },
}

/// The xxh3-64 of each 8 KiB page of a relation file as the backup read it: what a delta
/// restore compares the pages in place with, to rewrite only those that differ. Stored as one
/// hex string, 16 digits per page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageDigests(pub Vec<u64>);

impl PageDigests {
    /// The digest of one page's bytes.
    pub fn of(page: &[u8]) -> u64 {
        xxhash_rust::xxh3::xxh3_64(page)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for PageDigests {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut text = String::with_capacity(self.0.len() * 16);
        for d in &self.0 {
            text.push_str(&crate::hex::encode(&d.to_be_bytes()));
        }
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for PageDigests {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if !text.len().is_multiple_of(16) {
            return Err(serde::de::Error::custom("page digests: not 16 hex digits per page"));
        }
        let digests = (0..text.len() / 16)
            .map(|i| {
                let digits = text.get(i * 16..i * 16 + 16).unwrap_or_default();
                crate::hex::decode_array::<8>(digits).map(u64::from_be_bytes)
            })
            .collect::<Result<Vec<u64>>>()
            .map_err(serde::de::Error::custom)?;
        Ok(Self(digests))
    }
}

/// A regular file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    #[serde(flatten)]
    pub owner: Ownership,
    /// SHA-256 of the whole restored file.
    pub sha256: Sha256Digest,
    /// SHA-256 of each `frame_size` chunk of the restored file (for chunk-level delta restore).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<Sha256Digest>,
    pub data: FileData,
    /// Pages whose checksum failed when backed up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub page_errors: Vec<u32>,
    /// Of a relation's main fork of whole pages: the digest of each page as read.
    #[serde(default, skip_serializing_if = "PageDigests::is_empty")]
    pub page_digests: PageDigests,
}

/// One attempt at a backup, as its checkpoints record it: what a later attempt must match to
/// resume it (reuse its stored files instead of copying them again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeAttempt {
    pub label: BackupLabel,
    #[serde(rename = "type")]
    pub backup_type: BackupType,
    pub prior: Option<BackupLabel>,
    pub db_id: u32,
    /// When this attempt started (unix seconds): a file changed since may differ from its copy.
    pub timestamp_start: i64,
    pub settings: BackupSettings,
    /// The attempt's first pack number (packs below are an earlier attempt's).
    pub first_pack: u32,
}

/// A pack object and its size when it was completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackObject {
    pub pack: u32,
    pub size: u64,
}

/// The first line of a checkpoint: the attempt, and the packs completed since the previous one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointHeader {
    pub attempt: ResumeAttempt,
    pub packs: Vec<PackObject>,
}

#[derive(Serialize, Deserialize)]
struct CheckpointLine {
    format: u32,
    kind: String,
    header: CheckpointHeader,
}

/// Written by a backup in progress each time a pack is complete: JSON lines like a manifest's
/// (header, file entries in path order, end line with the count and the SHA-256 of the lines
/// before it). The entries are those of the files finished since the previous checkpoint, all
/// of whose parts are in complete packs. Entry lines are written as files finish, so what is
/// held is their text, not a document tree.
#[derive(Debug, Default)]
pub struct CheckpointWriter {
    lines: Vec<u8>,
    entries: u64,
    /// The last path pushed (order continues from one checkpoint to the next).
    last_path: Option<String>,
}

impl CheckpointWriter {
    /// Appends an entry; paths must be strictly increasing across checkpoints.
    pub fn push(&mut self, entry: &FileEntry) -> Result<()> {
        check_order(&mut self.last_path, &entry.path)?;
        self.entries += 1;
        write_line(entry, &mut self.lines)
    }

    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Bytes of entry text held.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The checkpoint's text with `header` first; the writer is empty again.
    pub fn finish(&mut self, header: &CheckpointHeader) -> Result<Vec<u8>> {
        let line = CheckpointLine {
            format: META_FORMAT,
            kind: MetaKind::Checkpoint.as_str().to_string(),
            header: header.clone(),
        };
        let mut out = Vec::with_capacity(self.lines.len() + 256);
        write_line(&line, &mut out)?;
        out.append(&mut self.lines);
        let sha256 = Sha256Digest::of(&out);
        write_line(&EndLine::End(EndInfo { entries: std::mem::take(&mut self.entries), sha256 }), &mut out)?;
        Ok(out)
    }
}

/// Reads what [`CheckpointWriter::finish`] wrote, checking the format, order, count and digest.
pub fn read_checkpoint(text: &[u8], what: &str) -> Result<(CheckpointHeader, Vec<FileEntry>)> {
    let mut lines = text.split_inclusive(|&b| b == b'\n');
    let first = lines.next().ok_or_else(|| FormatError::truncated(what, "empty"))?;
    let doc: Value =
        serde_json::from_slice(first).map_err(|e| FormatError::corrupt(what, format!("header line: {e}")))?;
    check_format(&doc, MetaKind::Checkpoint, what)?;
    let header: CheckpointLine =
        serde_json::from_value(doc).map_err(|e| FormatError::corrupt(what, format!("header line: {e}")))?;
    let (mut entries, mut body_len, mut last) = (Vec::new(), first.len(), None);
    for line in lines {
        if line.starts_with(b"{\"end\"") {
            let EndLine::End(end) =
                serde_json::from_slice(line).map_err(|e| FormatError::corrupt(what, format!("end line: {e}")))?;
            let digest = Sha256Digest::of(text.get(..body_len).unwrap_or_default());
            if end.entries != entries.len() as u64 || end.sha256 != digest || body_len + line.len() != text.len() {
                return Err(FormatError::corrupt(what, "end line does not match the entries read"));
            }
            return Ok((header.header, entries));
        }
        let entry: FileEntry = serde_json::from_slice(line)
            .map_err(|e| FormatError::corrupt(what, format!("entry {}: {e}", entries.len() + 1)))?;
        check_order(&mut last, &entry.path).map_err(|_| FormatError::corrupt(what, "entries out of order"))?;
        body_len += line.len();
        entries.push(entry);
    }
    Err(FormatError::truncated(what, "no end line"))
}

/// One line of a manifest after the header.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestEntry {
    Dir(DirEntry),
    File(FileEntry),
    Link(LinkEntry),
}

impl ManifestEntry {
    pub fn path(&self) -> &str {
        match self {
            Self::Dir(d) => &d.path,
            Self::File(f) => &f.path,
            Self::Link(l) => &l.path,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct HeaderLine {
    format: u32,
    kind: String,
    header: ManifestHeader,
}

#[derive(Serialize, Deserialize)]
struct EndInfo {
    entries: u64,
    sha256: Sha256Digest,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum EndLine {
    End(EndInfo),
}

/// Checks that `path` sorts strictly after the last path written.
fn check_order(last: &mut Option<String>, path: &str) -> Result<()> {
    if let Some(last) = last.as_deref()
        && path <= last
    {
        return Err(FormatError::invalid("manifest entry order", format!("{path:?} does not sort after {last:?}")));
    }
    *last = Some(path.to_string());
    Ok(())
}

/// Streams a manifest out as JSON lines.
#[derive(Debug)]
pub struct ManifestWriter {
    hasher: CountingHasher,
    entries: u64,
    last_path: Option<String>,
}

impl ManifestWriter {
    /// Starts a manifest; appends the header line to `out`.
    pub fn new(header: &ManifestHeader, out: &mut Vec<u8>) -> Result<Self> {
        let mut w = Self { hasher: CountingHasher::default(), entries: 0, last_path: None };
        let line =
            HeaderLine { format: META_FORMAT, kind: MetaKind::Manifest.as_str().to_string(), header: header.clone() };
        w.emit(&line, out)?;
        Ok(w)
    }

    /// Appends one entry; paths must be strictly increasing (byte order).
    pub fn push(&mut self, entry: &ManifestEntry, out: &mut Vec<u8>) -> Result<()> {
        check_order(&mut self.last_path, entry.path())?;
        self.entries += 1;
        self.emit(entry, out)
    }

    /// Appends entry lines that a [`ManifestBody`] wrote earlier (a backup spools them while
    /// it copies, before its header is known); `count` is the number of entries in `lines`.
    /// The body checked their order; the entry [`push`](Self::push)ed next must be one whose
    /// place the body [`reserve`](ManifestBody::reserve)d.
    pub fn splice(&mut self, lines: &[u8], count: u64, out: &mut Vec<u8>) {
        self.hasher.update(lines);
        out.extend_from_slice(lines);
        self.entries += count;
        self.last_path = None;
    }

    /// Appends the end line; returns the SHA-256 of the whole manifest text.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<Sha256Digest> {
        let hasher = std::mem::take(&mut self.hasher);
        let (_, sha256) = hasher.clone().finish();
        let start = out.len();
        let line = EndLine::End(EndInfo { entries: self.entries, sha256 });
        write_line(&line, out)?;
        let mut all = hasher;
        all.update(&out[start..]);
        Ok(all.finish().1)
    }

    fn emit<T: Serialize>(&mut self, v: &T, out: &mut Vec<u8>) -> Result<()> {
        let start = out.len();
        write_line(v, out)?;
        self.hasher.update(&out[start..]);
        Ok(())
    }
}

/// Entry lines written before the header exists, in order, with places kept for entries that
/// are only known later (`backup_label` comes from the end of a backup but sorts early).
/// [`ManifestWriter::splice`] puts the lines after the header.
#[derive(Debug, Default)]
pub struct ManifestBody {
    entries: u64,
    last_path: Option<String>,
}

impl ManifestBody {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one entry line; paths must be strictly increasing, reserved places included.
    pub fn push(&mut self, entry: &ManifestEntry, out: &mut Vec<u8>) -> Result<()> {
        check_order(&mut self.last_path, entry.path())?;
        self.entries += 1;
        write_line(entry, out)
    }

    /// Keeps the place of `path`: what follows must sort after it.
    pub fn reserve(&mut self, path: &str) -> Result<()> {
        check_order(&mut self.last_path, path)
    }

    /// Entries pushed so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }
}

fn write_line<T: Serialize>(v: &T, out: &mut Vec<u8>) -> Result<()> {
    serde_json::to_writer(&mut *out, v).map_err(|e| FormatError::invalid("manifest line", e.to_string()))?;
    out.push(b'\n');
    Ok(())
}

/// Longest manifest line accepted (a file of 1 TiB lists a million chunk digests: ~70 MiB).
const MAX_LINE: usize = 256 << 20;

/// Reads a manifest as it arrives, feed/poll style.
#[derive(Debug)]
pub struct ManifestReader {
    what: String,
    buf: Vec<u8>,
    pos: usize,
    /// How many bytes past `pos` are known to hold no newline: each byte is searched once, however
    /// the input is cut (a long line fed in small pieces is not rescanned on every poll).
    scanned: usize,
    hasher: CountingHasher,
    header: Option<ManifestHeader>,
    entries: u64,
    last_path: Option<String>,
    ended: Option<Sha256Digest>,
}

impl ManifestReader {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            buf: Vec::new(),
            pos: 0,
            scanned: 0,
            hasher: CountingHasher::default(),
            header: None,
            entries: 0,
            last_path: None,
            ended: None,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The header, once its line has been read by [`poll`](Self::poll).
    pub fn header(&self) -> Option<&ManifestHeader> {
        self.header.as_ref()
    }

    /// The next entry; `Ok(None)` when more input is needed or the end line was read.
    pub fn poll(&mut self) -> Result<Option<ManifestEntry>> {
        loop {
            if self.ended.is_some() {
                if self.pos < self.buf.len() {
                    return Err(FormatError::corrupt(&self.what, "data after the end line"));
                }
                return Ok(None);
            }
            let from = self.pos + self.scanned;
            let Some(nl) = self.buf[from..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len() - self.pos;
                if self.scanned > MAX_LINE {
                    return Err(FormatError::corrupt(&self.what, "line too long"));
                }
                return Ok(None);
            };
            self.scanned = 0;
            let line_end = from + nl + 1;
            let line = self.buf[self.pos..line_end].to_vec();
            self.pos = line_end;
            if self.header.is_none() {
                self.hasher.update(&line);
                let doc: Value = serde_json::from_slice(&line)
                    .map_err(|e| FormatError::corrupt(&self.what, format!("header line: {e}")))?;
                check_format(&doc, MetaKind::Manifest, &self.what)?;
                let parsed: HeaderLine = serde_json::from_value(doc)
                    .map_err(|e| FormatError::corrupt(&self.what, format!("header line: {e}")))?;
                self.header = Some(parsed.header);
                continue;
            }
            if line.starts_with(b"{\"end\"") {
                let EndLine::End(end) = serde_json::from_slice(&line)
                    .map_err(|e| FormatError::corrupt(&self.what, format!("end line: {e}")))?;
                let (_, computed) = self.hasher.clone().finish();
                if end.sha256 != computed || end.entries != self.entries {
                    return Err(FormatError::corrupt(&self.what, "end line does not match the entries read"));
                }
                self.ended = Some(computed);
                continue;
            }
            self.hasher.update(&line);
            let entry: ManifestEntry = serde_json::from_slice(&line)
                .map_err(|e| FormatError::corrupt(&self.what, format!("entry {}: {e}", self.entries + 1)))?;
            if let Some(last) = &self.last_path
                && entry.path() <= last.as_str()
            {
                return Err(FormatError::corrupt(&self.what, format!("entry {:?} out of order", entry.path())));
            }
            self.last_path = Some(entry.path().to_string());
            self.entries += 1;
            return Ok(Some(entry));
        }
    }

    /// Checks that the whole manifest was read, up to and including its end line.
    pub fn finish(mut self) -> Result<ManifestHeader> {
        while self.poll()?.is_some() {}
        match (self.header, self.ended) {
            (Some(header), Some(_)) => Ok(header),
            _ => Err(FormatError::truncated(&self.what, "no end line")),
        }
    }
}

/// Reads a whole manifest held in memory (tests and small manifests).
pub fn read_manifest(bytes: &[u8], what: &str) -> Result<(ManifestHeader, Vec<ManifestEntry>)> {
    let mut r = ManifestReader::new(what);
    r.feed(bytes);
    let mut entries = Vec::new();
    while let Some(e) = r.poll()? {
        entries.push(e);
    }
    let header = r.finish()?;
    Ok((header, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_sorts_keys_at_every_level() {
        let v: Value =
            serde_json::from_str(r#"{"z":1,"a":{"y":[{"b":2,"a":"\u00e9"}],"x":null},"m":true}"#).expect("json");
        let mut out = Vec::new();
        write_canonical(&v, &mut out).expect("canonical");
        assert_eq!(String::from_utf8(out).expect("utf8"), r#"{"a":{"x":null,"y":[{"a":"é","b":2}]},"m":true,"z":1}"#);
    }
    use crate::crypto::{DataKey, KdfParams};

    pub(crate) fn header() -> ManifestHeader {
        ManifestHeader {
            label: "20261121-101500F".parse().expect("label"),
            backup_type: BackupType::Full,
            prior: None,
            references: vec![],
            pg_version: 15,
            system_id: 7_310_000_000_000_000_001,
            db_id: 1,
            timeline: TimelineId(1),
            lsn_start: "0/2000028".parse().expect("lsn"),
            lsn_stop: "0/2000100".parse().expect("lsn"),
            wal_start: "000000010000000000000002".into(),
            wal_stop: "000000010000000000000002".into(),
            timestamp_start: 1_795_256_100,
            timestamp_stop: 1_795_256_110,
            settings: BackupSettings {
                compress_type: "zst".into(),
                compress_level: Some(3),
                cipher: "none".into(),
                frame_size: 1 << 20,
                checksum_page: true,
            },
            targets: vec![Target {
                name: "pg_data".into(),
                path: "/pgdata/pg15".into(),
                tablespace_oid: None,
                tablespace_name: None,
            }],
            packs: 1,
            databases: vec![DatabaseRef { name: "postgres".into(), oid: 5 }],
            read_from: Vec::new(),
            wal_copy: Vec::new(),
        }
    }

    fn owner() -> Ownership {
        Ownership { mode: 0o600, user: Some("postgres".into()), group: Some("postgres".into()) }
    }

    pub(crate) fn entries() -> Vec<ManifestEntry> {
        vec![
            ManifestEntry::Dir(DirEntry { path: "pg_data".into(), owner: Ownership { mode: 0o700, ..owner() } }),
            ManifestEntry::File(FileEntry {
                path: "pg_data/PG_VERSION".into(),
                size: 3,
                mtime: 1_795_000_000,
                owner: owner(),
                sha256: Sha256Digest::of(b"15\n"),
                chunks: vec![Sha256Digest::of(b"15\n")],
                data: FileData::Stored { parts: vec![PartRef { pack: 0, offset: 0, len: 80, plain_len: 3 }] },
                page_errors: vec![],
                page_digests: Default::default(),
            }),
            ManifestEntry::File(FileEntry {
                path: "pg_data/base/5/16384".into(),
                size: 3 * 8192,
                mtime: 1_795_000_001,
                owner: owner(),
                sha256: Sha256Digest::of(b"x"),
                chunks: vec![Sha256Digest::of(b"x")],
                data: FileData::Pages {
                    parts: vec![PartRef { pack: 0, offset: 80, len: 300, plain_len: 8192 }],
                    chunks: vec![Sha256Digest::of(b"page 2")],
                    runs: vec![
                        PageRun { first: 0, count: 2, backup: Some("20261120-101500F".parse().expect("label")), at: 0 },
                        PageRun { first: 2, count: 1, backup: None, at: 0 },
                    ],
                },
                page_errors: vec![2],
                page_digests: PageDigests(vec![0, u64::MAX, 0x0123_4567_89ab_cdef]),
            }),
            ManifestEntry::File(FileEntry {
                path: "pg_data/global/pg_control".into(),
                size: 8192,
                mtime: 1_795_000_002,
                owner: owner(),
                sha256: Sha256Digest::of(b"y"),
                chunks: vec![],
                data: FileData::Same { backup: "20261120-101500F".parse().expect("label"), stored: 0 },
                page_errors: vec![],
                page_digests: Default::default(),
            }),
            ManifestEntry::Link(LinkEntry {
                path: "pg_data/pg_tblspc/16400".into(),
                destination: "/tblspc/one".into(),
                owner: Ownership { mode: 0o777, ..owner() },
            }),
            ManifestEntry::File(FileEntry {
                path: "pg_data/postmaster.opts".into(),
                size: 0,
                mtime: 1_795_000_003,
                owner: owner(),
                sha256: Sha256Digest::of(b""),
                chunks: vec![],
                data: FileData::Empty,
                page_errors: vec![],
                page_digests: Default::default(),
            }),
        ]
    }

    pub(crate) fn write_manifest() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = ManifestWriter::new(&header(), &mut out).expect("writer");
        for e in entries() {
            w.push(&e, &mut out).expect("push");
        }
        w.finish(&mut out).expect("finish");
        out
    }

    #[test]
    fn manifest_round_trips_in_any_chunking() {
        let bytes = write_manifest();
        for chunk in [1, 7, 100, bytes.len()] {
            let mut r = ManifestReader::new("manifest");
            let mut got = Vec::new();
            for piece in bytes.chunks(chunk) {
                r.feed(piece);
                while let Some(e) = r.poll().expect("poll") {
                    got.push(e);
                }
            }
            assert_eq!(r.finish().expect("finish"), header());
            assert_eq!(got, entries());
        }
    }

    #[test]
    fn checkpoint_round_trips_and_damage_is_detected() {
        let files: Vec<FileEntry> = entries()
            .into_iter()
            .filter_map(|e| match e {
                ManifestEntry::File(f) => Some(f),
                _ => None,
            })
            .collect();
        let header = CheckpointHeader {
            attempt: ResumeAttempt {
                label: "20261120-101500F".parse().expect("label"),
                backup_type: BackupType::Full,
                prior: None,
                db_id: 1,
                timestamp_start: 1_795_000_000,
                settings: header().settings,
                first_pack: 3,
            },
            packs: vec![PackObject { pack: 3, size: 1000 }],
        };
        let mut w = CheckpointWriter::default();
        for f in &files {
            w.push(f).expect("push");
        }
        let text = w.finish(&header).expect("finish");
        assert!(w.push(&files[0]).is_err(), "order continues across checkpoints");
        assert!(w.is_empty(), "finish empties the writer");
        assert_eq!(w.len(), 0);
        let (read_header, read) = read_checkpoint(&text, "cp").expect("read");
        assert_eq!((read_header, read), (header.clone(), files.clone()));
        assert_eq!(files[1].page_digests.0[2], 0x0123_4567_89ab_cdef, "page digests survive");
        let flipped = String::from_utf8(text.clone()).expect("utf8").replacen("16384", "16385", 1);
        assert!(read_checkpoint(flipped.as_bytes(), "cp").is_err(), "a changed entry is detected");
        assert!(read_checkpoint(&text[..text.len() - 5], "cp").is_err(), "a cut is detected");
        let end = text.iter().rposition(|&b| b == b'{').expect("end line");
        assert!(read_checkpoint(&text[..end], "cp").is_err(), "a missing end line is detected");
    }

    #[test]
    fn manifest_damage_is_detected() {
        let bytes = write_manifest();
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        // An edited size.
        let edited = text.replace("\"size\":3,", "\"size\":4,");
        assert_ne!(edited, text);
        assert!(matches!(read_manifest(edited.as_bytes(), "m"), Err(FormatError::Corrupt { .. })));
        // A dropped entry line.
        let lines: Vec<&str> = text.lines().collect();
        let dropped: String =
            lines.iter().enumerate().filter(|(i, _)| *i != 2).map(|(_, l)| format!("{l}\n")).collect();
        assert!(matches!(read_manifest(dropped.as_bytes(), "m"), Err(FormatError::Corrupt { .. })));
        // No end line.
        let cut: String = lines[..lines.len() - 1].iter().map(|l| format!("{l}\n")).collect();
        assert!(matches!(read_manifest(cut.as_bytes(), "m"), Err(FormatError::Truncated { .. })));
        // A future format.
        let future = text.replacen("{\"format\":1,", "{\"format\":2,", 1);
        assert!(matches!(read_manifest(future.as_bytes(), "m"), Err(FormatError::UnsupportedVersion { found: 2, .. })));
    }

    #[test]
    fn manifest_writer_enforces_path_order() {
        let mut out = Vec::new();
        let mut w = ManifestWriter::new(&header(), &mut out).expect("writer");
        let e = entries();
        w.push(&e[1], &mut out).expect("first");
        assert!(w.push(&e[0], &mut out).is_err());
        assert!(w.push(&e[1], &mut out).is_err());
    }

    #[test]
    fn a_spooled_body_with_a_reserved_place_gives_the_same_manifest() {
        let e = entries();
        // Entry 1 is known only at the end: its place is kept, the others are spooled.
        let mut body = ManifestBody::new();
        let (mut before, mut after) = (Vec::new(), Vec::new());
        body.push(&e[0], &mut before).expect("push");
        body.reserve(e[1].path()).expect("reserve");
        for entry in &e[2..] {
            body.push(entry, &mut after).expect("push");
        }
        assert_eq!(body.entries(), e.len() as u64 - 1);
        // A place already passed, or an entry sorting before the place, is refused.
        assert!(body.reserve(e[1].path()).is_err());

        let mut out = Vec::new();
        let mut w = ManifestWriter::new(&header(), &mut out).expect("writer");
        w.splice(&before, 1, &mut out);
        w.push(&e[1], &mut out).expect("reserved entry");
        let mid = after.len() / 2;
        w.splice(&after[..mid], 0, &mut out);
        w.splice(&after[mid..], e.len() as u64 - 2, &mut out);
        w.finish(&mut out).expect("finish");
        assert_eq!(out, write_manifest());
        assert_eq!(read_manifest(&out, "m").expect("read").1, e);
    }

    #[test]
    fn envelope_checks_kind_version_and_checksum() {
        let key = DataKey::generate();
        let info = StanzaInfo {
            stanza: "db".into(),
            created: 1_795_256_100,
            cipher: CipherInfo::Aes256Gcm { key: WrappedKey::wrap(&key, b"pass", KdfParams::TEST).expect("wrap") },
            db_history: vec![DbEntry {
                id: 1,
                system_id: u64::MAX - 5,
                pg_version: 15,
                catalog_version: 202_209_061,
                control_version: 1300,
            }],
        };
        let bytes = encode_meta(MetaKind::StanzaInfo, &info).expect("encode");
        let back: StanzaInfo = decode_meta(&bytes, MetaKind::StanzaInfo, "stanza.info").expect("decode");
        assert_eq!(back, info);
        assert!(matches!(
            decode_meta::<BackupCatalog>(&bytes, MetaKind::BackupCatalog, "backup.catalog"),
            Err(FormatError::NotAnObject { .. })
        ));
        let text = String::from_utf8(bytes).expect("utf8");
        let tampered = text.replace("\"stanza\": \"db\"", "\"stanza\": \"xx\"");
        assert_ne!(tampered, text);
        assert!(matches!(
            decode_meta::<StanzaInfo>(tampered.as_bytes(), MetaKind::StanzaInfo, "s"),
            Err(FormatError::Corrupt { .. })
        ));
        let future = text.replace("\"format\": 1", "\"format\": 7");
        let err =
            decode_meta::<StanzaInfo>(future.as_bytes(), MetaKind::StanzaInfo, "stanza.info").expect_err("future");
        assert!(matches!(err, FormatError::UnsupportedVersion { found: 7, .. }));
        assert!(err.to_string().contains("stanza.info has format version 7"), "{err}");
    }
}
