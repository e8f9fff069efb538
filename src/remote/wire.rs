//! What travels between a client and a `server`: HTTP/2 requests whose head (a JSON value in
//! one header) names the stanza, the repository and the operation; bodies stream.
//!
//! | operation | request body | answer body |
//! |---|---|---|
//! | `get` (also `head`, ranges) | — | the object's bytes; `pgstrata-meta` header: its [`Meta`] |
//! | `put` (overwrite, create-only, update) | the object | —; `pgstrata-meta`: [`Written`] |
//! | `upload` (streamed, any size) | the object, streamed | —; `pgstrata-meta`: [`Written`] |
//! | `list` | — | one [`Meta`] per line (JSON lines), streamed |
//! | `list-dir` | — | a [`Listing`] |
//! | `delete` | the keys, a JSON array | one `null` or [`WireError`] per key, a JSON array |
//! | `copy` | — | — |
//! | `data-list`, `data-stat` | — | [`Found`] entries (a JSON array), or one |
//! | `data-read` | — | the file's bytes in the range, streamed |
//! | `data-seal` | the parts to seal (JSON) | one [`Record`] per part: outcome and compressed blob |
//! | `sql` | the client's side of a PostgreSQL session | the server's side |
//!
//! Any failure is answered with a status other than 200 and a [`WireError`] body.

use serde::{Deserialize, Serialize};

/// Version of this protocol; a server refuses other versions with a clear error.
pub const PROTOCOL_VERSION: u32 = 1;
/// The request head.
pub const REQUEST_HEADER: &str = "pgstrata-request";
/// What the answer says about the object (get, put).
pub const META_HEADER: &str = "pgstrata-meta";
/// Keys of one `delete` request, at most (S3's batch size).
pub const DELETE_BATCH: usize = 1000;
/// Largest body of a one-piece `put` a server accepts (bigger objects go by `upload`).
pub const PUT_MAX: usize = 256 << 20;

/// The head of every repository request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Head {
    pub version: u32,
    /// The client's `--stanza`: whose configuration on the server resolves `repo` (none: the
    /// server's own). Keys are authorized by the stanza they lie in, whatever this says.
    pub stanza: Option<String>,
    pub repo: u32,
    pub op: Op,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Op {
    Get {
        key: String,
        range: Option<(u64, u64)>,
        head: bool,
    },
    Put {
        key: String,
        mode: Mode,
    },
    Upload {
        key: String,
    },
    List {
        prefix: Option<String>,
        offset: Option<String>,
    },
    ListDir {
        prefix: Option<String>,
    },
    Delete,
    Copy {
        from: String,
        to: String,
        overwrite: bool,
    },
    /// A directory of the served cluster: each entry with its metadata ([`Found`] list).
    DataList {
        path: String,
    },
    /// One path of the served cluster, links followed ([`Found`]).
    DataStat {
        path: String,
    },
    /// Up to `len` bytes of a file of the served cluster from `offset`, streamed (fewer at its
    /// end).
    DataRead {
        path: String,
        offset: u64,
        len: u64,
    },
    /// Parts of files of the served cluster read, checked and compressed by the server: the
    /// request body is the list of parts (`backup::part::PartSpec`, JSON), the answer one
    /// [`Record`] per part, in order.
    DataSeal,
    /// A byte stream to the served cluster's PostgreSQL socket, both ways.
    Sql,
}

/// One part of a file a `data-seal` request asks the database host's server to read, check and
/// compress (never encrypt: the key stays on the repository host).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRequest {
    pub path: std::path::PathBuf,
    pub offset: u64,
    /// Bytes to read; fewer at the end of the file.
    pub len: usize,
    /// Compression and frame size of the blob.
    pub blob: pgstrata_repo_format::BlobSettings,
    /// A relation segment with page checks: the block number of its first page.
    pub check_from_block: Option<u32>,
    /// Pages at or past this LSN change during the backup: not checked.
    pub start_lsn: u64,
    /// A main fork: report the digest of each page read.
    pub main_fork: bool,
    /// Store only the pages that changed since the prior backup.
    pub pages: Option<PageRequest>,
    /// The whole file's size and SHA-256 as the prior stored it (read the same: nothing sealed).
    pub same_as: Option<(u64, pgstrata_repo_format::Sha256Digest)>,
}

/// Which pages of a part to store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageRequest {
    pub prior_pages: u32,
    /// Pages stamped at or past this changed.
    pub since: u64,
    /// The prior's page digests, from the part's first page on.
    pub page_digests: Option<Vec<u64>>,
    /// The prior's frame digests, from the part's first frame on.
    pub chunks: Option<Vec<pgstrata_repo_format::Sha256Digest>>,
}

/// What sealing one part found, as a `data-seal` answer reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartAnswer {
    pub plain_len: u64,
    pub stored_len: u64,
    pub chunks: Vec<pgstrata_repo_format::Sha256Digest>,
    pub page_errors: Vec<u32>,
    pub stored_pages: Vec<u32>,
    pub page_chunks: Vec<pgstrata_repo_format::Sha256Digest>,
    pub page_digests: Vec<u64>,
    pub same: bool,
    pub vanished: bool,
}

/// How a part the server was asked to seal turned out.
#[derive(Debug, Serialize, Deserialize)]
pub enum SealOutcome {
    Done(PartAnswer),
    Failed { code: i32, message: String },
}

/// One part of a `data-seal` answer: an 8-byte head (the lengths of the outcome and of the
/// blob, both u32 little-endian), the outcome (JSON) and the compressed, unencrypted blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub outcome: u32,
    pub blob: u32,
}

impl Record {
    pub const HEAD: usize = 8;
    /// An outcome's JSON, at most (a part's page digests and frame digests).
    pub const MAX_OUTCOME: u32 = 16 << 20;
    /// A blob, at most: a whole part (16 MiB at most, see `data::SERVED_PART`) stored raw with
    /// its frame headers.
    pub const MAX_BLOB: u32 = 20 << 20;

    pub fn encode(self) -> [u8; 8] {
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&self.outcome.to_le_bytes());
        head[4..].copy_from_slice(&self.blob.to_le_bytes());
        head
    }

    /// The head at the start of `bytes`, checked against the limits; `Ok(None)`: too few bytes.
    pub fn decode(bytes: &[u8]) -> Result<Option<Self>, String> {
        let (Some(outcome), Some(blob)) = (bytes.get(..4), bytes.get(4..8)) else { return Ok(None) };
        let read = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        let record = Self { outcome: read(outcome), blob: read(blob) };
        if record.outcome > Self::MAX_OUTCOME || record.blob > Self::MAX_BLOB {
            return Err(format!("invalid record head (outcome {}, blob {})", record.outcome, record.blob));
        }
        Ok(Some(record))
    }
}

/// What a data directory listing says about one name.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub kind: FoundKind,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Permission bits.
    pub mode: u32,
    /// Owner names on the host the file is on.
    pub user: Option<String>,
    pub group: Option<String>,
    /// A link's destination, and whether it leads to a directory.
    pub link: Option<String>,
    pub link_dir: bool,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FoundKind {
    File,
    Dir,
    Link,
    Other,
}

/// How a `put` treats an existing object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Mode {
    Overwrite,
    Create,
    Update { e_tag: Option<String>, version: Option<String> },
}

/// An object as listed.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// Key relative to the repository.
    pub key: String,
    pub size: u64,
    /// Milliseconds since the epoch.
    pub modified_ms: i64,
    pub e_tag: Option<String>,
    pub version: Option<String>,
    /// The part of the object this answer holds (`get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<(u64, u64)>,
}

/// What a write produced.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Written {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// One level of a listing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Listing {
    pub objects: Vec<Meta>,
    pub prefixes: Vec<String>,
}

/// Why a request failed, by meaning.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    Precondition,
    NotModified,
    /// The storage behind the server refused.
    PermissionDenied,
    /// No client certificate.
    Unauthenticated,
    /// The certificate's name is not granted this stanza.
    Forbidden,
    /// A request the server cannot make sense of.
    Invalid,
    /// Worth retrying: the storage behind the server is unavailable for now.
    Unavailable,
    Other,
}

impl ErrorKind {
    pub fn status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::NotFound => S::NOT_FOUND,
            Self::AlreadyExists => S::CONFLICT,
            Self::Precondition => S::PRECONDITION_FAILED,
            Self::NotModified => S::NOT_MODIFIED,
            Self::PermissionDenied | Self::Forbidden => S::FORBIDDEN,
            Self::Unauthenticated => S::UNAUTHORIZED,
            Self::Invalid => S::BAD_REQUEST,
            Self::Unavailable => S::SERVICE_UNAVAILABLE,
            Self::Other => S::INTERNAL_SERVER_ERROR,
        }
    }
}

/// A failure as the other side reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WireError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into() }
    }
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

/// The answer to `/ping`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pong {
    pub name: String,
    pub version: String,
    pub protocol: u32,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn record_heads_round_trip_and_refuse_what_no_server_sends() {
        let r = Record { outcome: 1000, blob: 4096 };
        assert_eq!(Record::decode(&r.encode()).unwrap(), Some(r));
        assert_eq!(Record::decode(&r.encode()[..7]).unwrap(), None);
        assert!(Record::decode(&Record { outcome: Record::MAX_OUTCOME + 1, blob: 0 }.encode()).is_err());
        assert!(Record::decode(&Record { outcome: 10, blob: u32::MAX }.encode()).is_err());
    }

    #[test]
    fn heads_round_trip_and_read_as_documented() {
        let head = Head {
            version: PROTOCOL_VERSION,
            stanza: Some("db".into()),
            repo: 1,
            op: Op::Get { key: "archive/db/x".into(), range: Some((0, 10)), head: false },
        };
        let text = serde_json::to_string(&head).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"stanza":"db","repo":1,"op":{"kind":"get","key":"archive/db/x","range":[0,10],"head":false}}"#
        );
        let back: Head = serde_json::from_str(&text).unwrap();
        assert_eq!(back.op, head.op);
        let put = Op::Put { key: "k".into(), mode: Mode::Update { e_tag: Some("e".into()), version: None } };
        assert_eq!(serde_json::from_str::<Op>(&serde_json::to_string(&put).unwrap()).unwrap(), put);
        assert!(
            serde_json::from_str::<Head>(r#"{"version":1,"stanza":"db","repo":1,"op":{"kind":"format"}}"#).is_err()
        );
    }
}
