//! A database host's cluster served to the repository host (`pg1-host`): the data directory and
//! its tablespaces (listings with metadata, ranged reads), parts sealed here (page checks,
//! digests, compression; no key), and a byte stream to PostgreSQL's socket, over which the
//! backup's SQL runs as if local.
//!
//! Served paths: absolute, no `.` or `..`, and inside `pg1-path` or a tablespace linked from its
//! `pg_tblspc` — nothing else of the host can be read.

use std::io::Seek;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::accounts::Names;
use crate::backup::part::{self, PartSpec};
use crate::remote::client::{self, Body};
use crate::remote::wire::{ErrorKind, Found, FoundKind, Op, PartRequest, Record, SealOutcome, WireError};

/// Bytes a `data-read` answer carries per chunk.
const READ_CHUNK: usize = 1 << 20;

/// A part a client may ask to be sealed, at most: a backup's parts are 8 MiB (a frame size
/// above that rounds them up, to 16 MiB with pgBackRest's largest `buffer-size`).
const SERVED_PART: usize = 16 << 20;

/// Requests that hold sealed parts or upload buffers (`data-seal`, uploads) at once, server-wide:
/// what the server buffers is bounded by this times a part or two, whatever clients ask for.
pub static HEAVY_REQUESTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(8);

/// A `data-seal` request's list of parts, at most.
const MAX_SEAL_REQUEST: usize = 16 << 20;

/// Frames smaller than pgBackRest's smallest `buffer-size` are not sealed for a client: their
/// headers would outweigh their data.
const MIN_FRAME: usize = 16 << 10;

fn found(name: String, meta: &std::fs::Metadata, link: Option<(String, bool)>, names: &Names) -> Found {
    let kind = if meta.file_type().is_symlink() {
        FoundKind::Link
    } else if meta.is_dir() {
        FoundKind::Dir
    } else if meta.is_file() {
        FoundKind::File
    } else {
        FoundKind::Other
    };
    let (link, link_dir) = match link {
        Some((to, dir)) => (Some(to), dir),
        None => (None, false),
    };
    let owner = names.owner(meta);
    Found {
        name,
        kind,
        size: meta.len(),
        mtime: meta.mtime(),
        mode: owner.mode,
        user: owner.user,
        group: owner.group,
        link,
        link_dir,
    }
}

/// The cluster of one stanza as this server serves it.
#[derive(Debug)]
pub struct ServedCluster {
    data: PathBuf,
    socket: PathBuf,
    /// Tablespace directories linked from `pg_tblspc` (looked up again when a path is not
    /// inside any known one: a tablespace created since).
    tablespaces: Mutex<Vec<PathBuf>>,
}

fn invalid(message: String) -> WireError {
    WireError::new(ErrorKind::Invalid, message)
}

fn io_error(what: &str, path: &Path, e: &std::io::Error) -> WireError {
    let kind = match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
        _ => ErrorKind::Other,
    };
    WireError::new(kind, format!("unable to {what} {}: {e}", path.display()))
}

impl ServedCluster {
    /// The cluster of a stanza's `pg1` on this host: its data directory and the socket of its
    /// server (directory and port).
    pub fn new(data: PathBuf, socket_dir: &Path, port: u16) -> Self {
        let socket = socket_dir.join(format!(".s.PGSQL.{port}"));
        Self { data, socket, tablespaces: Mutex::default() }
    }

    fn linked_tablespaces(&self) -> Vec<PathBuf> {
        let Ok(dir) = std::fs::read_dir(self.data.join("pg_tblspc")) else { return Vec::new() };
        dir.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).filter(|p| p.is_absolute()).collect()
    }

    /// Refuses a path inside the data directory that passes through a link PostgreSQL did not
    /// make: only `pg_wal` (`initdb -X`, operators' WAL volumes) and `pg_tblspc/<oid>` are
    /// followed, so a link planted in PGDATA cannot serve what lies elsewhere on this host.
    fn no_foreign_link(&self, rest: &Path) -> Result<(), WireError> {
        let mut at = self.data.clone();
        for (depth, c) in rest.components().enumerate() {
            at.push(c);
            let own = match depth {
                0 => at.ends_with("pg_wal"),
                1 => at.parent().is_some_and(|d| d == self.data.join("pg_tblspc")),
                _ => false,
            };
            if !own && std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(WireError::new(
                    ErrorKind::Forbidden,
                    format!(
                        "'{}' is a link; this server follows only pg_wal and tablespace links in the data directory",
                        at.strip_prefix(&self.data).unwrap_or(&at).display()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The path if it may be served: plain, absolute, inside the data directory or a tablespace.
    fn allowed(&self, path: &str) -> Result<PathBuf, WireError> {
        let p = PathBuf::from(path);
        if !p.is_absolute() || p.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
            return Err(invalid(format!("invalid path '{path}': it must be absolute, without '.' or '..'")));
        }
        if let Ok(rest) = p.strip_prefix(&self.data) {
            self.no_foreign_link(rest)?;
            return Ok(p);
        }
        let inside = |list: &[PathBuf]| list.iter().any(|t| p.starts_with(t));
        let mut known = self.tablespaces.lock().map_err(|_| invalid("lock poisoned".into()))?;
        if !inside(&known) {
            *known = self.linked_tablespaces();
        }
        if inside(&known) {
            return Ok(p);
        }
        Err(WireError::new(
            ErrorKind::Forbidden,
            format!("'{path}' is outside the data directory and tablespaces this server serves"),
        ))
    }
}

/// Handles the data operations of one request.
pub async fn serve(
    cluster: &ServedCluster,
    names: &Names,
    op: Op,
    body: Incoming,
) -> Result<http::Response<Body>, WireError> {
    match op {
        Op::DataList { path } => {
            let dir = cluster.allowed(&path)?;
            let mut out = Vec::new();
            let entries = std::fs::read_dir(&dir).map_err(|e| io_error("list", &dir, &e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_error("list", &dir, &e))?;
                let name = entry.file_name().into_string().map_err(|raw| {
                    invalid(format!("unable to back up {}: the file name {raw:?} is not valid UTF-8", dir.display()))
                })?;
                let path = entry.path();
                let meta = match std::fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error("examine", &path, &e)),
                };
                let link = if meta.file_type().is_symlink() {
                    let to = std::fs::read_link(&path).map_err(|e| io_error("read link", &path, &e))?;
                    Some((to.display().to_string(), std::fs::metadata(&path).is_ok_and(|m| m.is_dir())))
                } else {
                    None
                };
                out.push(found(name, &meta, link, names));
            }
            json(&out)
        }
        Op::DataStat { path } => {
            let p = cluster.allowed(&path)?;
            let meta = std::fs::metadata(&p).map_err(|e| io_error("examine", &p, &e))?;
            json(&found(String::new(), &meta, None, names))
        }
        Op::DataRead { path, offset, len } => {
            let p = cluster.allowed(&path)?;
            let mut file = std::fs::File::open(&p).map_err(|e| io_error("open", &p, &e))?;
            file.seek(std::io::SeekFrom::Start(offset)).map_err(|e| io_error("read", &p, &e))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(2);
            tokio::task::spawn_blocking(move || read_chunks(file, len, &tx));
            Ok(streamed(rx))
        }
        Op::DataSeal => {
            let asked = client::read_body(body, MAX_SEAL_REQUEST)
                .await
                .map_err(|e| invalid(format!("unable to read the parts asked for: {e}")))?;
            let asked: Vec<PartRequest> =
                serde_json::from_slice(&asked).map_err(|e| invalid(format!("invalid list of parts: {e}")))?;
            let specs: Vec<PartSpec> = asked.into_iter().map(PartSpec::from).collect();
            for spec in &specs {
                let path = spec.path.to_str().ok_or_else(|| invalid(format!("invalid path {:?}", spec.path)))?;
                cluster.allowed(path)?;
                if spec.len > SERVED_PART || spec.blob.frame_size < MIN_FRAME {
                    return Err(invalid(format!(
                        "a part of {} bytes in frames of {} is outside what is served (parts up to {SERVED_PART} \
                         bytes, frames of at least {MIN_FRAME})",
                        spec.len, spec.blob.frame_size
                    )));
                }
            }
            // Held until the last record is handed over: one sealed part in the channel, one
            // being sealed.
            let permit = HEAVY_REQUESTS.acquire().await.map_err(|e| invalid(e.to_string()))?;
            let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(1);
            tokio::task::spawn_blocking(move || {
                seal_records(&specs, &tx);
                drop(permit);
            });
            Ok(streamed(rx))
        }
        Op::Sql => sql_tunnel(cluster, body).await,
        _ => Err(invalid("not a data operation".into())),
    }
}

/// The answer streaming what a blocking reader sends (never an empty DATA frame, see
/// [`client::data_frames`]).
fn streamed(rx: tokio::sync::mpsc::Receiver<std::io::Result<Bytes>>) -> http::Response<Body> {
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    http::Response::new(BodyExt::boxed_unsync(StreamBody::new(client::data_frames(stream))))
}

/// Reads `len` bytes (fewer at the end of the file) a chunk at a time and sends them; stops when
/// the answer is dropped.
fn read_chunks(file: std::fs::File, len: u64, tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
    use std::io::Read;
    let mut source = file.take(len);
    loop {
        let mut chunk = Vec::with_capacity(READ_CHUNK);
        match (&mut source).take(READ_CHUNK as u64).read_to_end(&mut chunk) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
        if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return;
        }
    }
}

/// Seals each part where the data is (page checks, digests, compression; no key here) and
/// sends one [`Record`] per part, in order; stops when the answer is dropped.
fn seal_records(specs: &[PartSpec], tx: &tokio::sync::mpsc::Sender<std::io::Result<Bytes>>) {
    for spec in specs {
        part::read_ahead(&spec.path, spec.len as u64);
    }
    let mut buf = Vec::new();
    for spec in specs {
        let (blob, outcome) = match part::seal_part(spec, None, &mut buf) {
            Ok((blob, done)) => (blob.unwrap_or_default(), SealOutcome::Done(done.into())),
            Err(e) => (Vec::new(), SealOutcome::Failed { code: i32::from(e.code as u8), message: e.message }),
        };
        let outcome = serde_json::to_vec(&outcome).unwrap_or_default();
        let head = Record { outcome: len_u32(outcome.len()), blob: len_u32(blob.len()) };
        let mut front = BytesMut::with_capacity(Record::HEAD + outcome.len());
        front.extend_from_slice(&head.encode());
        front.extend_from_slice(&outcome);
        // Nothing stored, nothing sent: an empty DATA frame counts against the peer's h2 limit
        // (100 per connection, then GOAWAY ENHANCE_YOUR_CALM), and an incremental has many parts
        // with nothing to store.
        if tx.blocking_send(Ok(front.freeze())).is_err()
            || (!blob.is_empty() && tx.blocking_send(Ok(Bytes::from(blob))).is_err())
        {
            return;
        }
    }
}

fn len_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn json(value: &impl serde::Serialize) -> Result<http::Response<Body>, WireError> {
    let body = serde_json::to_vec(value).map_err(|e| invalid(e.to_string()))?;
    Ok(http::Response::new(client::full(Bytes::from(body))))
}

/// Connects to PostgreSQL's socket and joins it to the request (client to server) and the
/// answer (server to client).
async fn sql_tunnel(cluster: &ServedCluster, mut body: Incoming) -> Result<http::Response<Body>, WireError> {
    let socket = tokio::net::UnixStream::connect(&cluster.socket).await.map_err(|e| {
        WireError::new(
            ErrorKind::Unavailable,
            format!("unable to connect to PostgreSQL at {}: {e}", cluster.socket.display()),
        )
    })?;
    let (from_pg, mut to_pg) = socket.into_split();
    tokio::spawn(async move {
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref()
                && to_pg.write_all(data).await.is_err()
            {
                return;
            }
        }
        let _ = to_pg.shutdown().await;
    });
    let stream = futures::stream::unfold((from_pg, BytesMut::new()), |(mut from_pg, mut buf)| async move {
        buf.resize(64 << 10, 0);
        match from_pg.read(&mut buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => {
                let chunk = buf.split_to(n).freeze();
                Some((Ok::<_, std::io::Error>(Frame::data(chunk)), (from_pg, buf)))
            }
        }
    });
    Ok(http::Response::new(BodyExt::boxed_unsync(StreamBody::new(stream))))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_the_data_directory_and_its_tablespaces_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("pgdata");
        let ts = dir.path().join("ts");
        std::fs::create_dir_all(data.join("pg_tblspc")).unwrap();
        std::fs::create_dir_all(&ts).unwrap();
        let cluster = ServedCluster { data: data.clone(), socket: dir.path().join("s"), tablespaces: Mutex::default() };
        assert!(cluster.allowed(&data.join("base/5/1259").display().to_string()).is_ok());
        for bad in ["relative/path", "/etc/../etc/passwd"] {
            assert_eq!(cluster.allowed(bad).unwrap_err().kind, ErrorKind::Invalid, "{bad}");
        }
        let escape = format!("{}/../ts/x", data.display());
        assert_eq!(cluster.allowed(&escape).unwrap_err().kind, ErrorKind::Invalid);
        let outside = ts.join("PG_15_1/5/16400").display().to_string();
        assert_eq!(cluster.allowed(&outside).unwrap_err().kind, ErrorKind::Forbidden);
        assert_eq!(cluster.allowed("/etc/passwd").unwrap_err().kind, ErrorKind::Forbidden);
        // Once linked as a tablespace, it is served.
        std::os::unix::fs::symlink(&ts, data.join("pg_tblspc/16400")).unwrap();
        assert!(cluster.allowed(&outside).is_ok());
    }
}
