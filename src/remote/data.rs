//! A database host's cluster served to the repository host (`pg1-host`): the data directory and
//! its tablespaces (listings with metadata, ranged reads) and a byte stream to PostgreSQL's
//! socket, over which the backup's SQL runs as if local.
//!
//! Served paths: absolute, no `.` or `..`, and inside `pg1-path` or a tablespace linked from its
//! `pg_tblspc` — nothing else of the host can be read.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use std::io::Seek;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{self, Body, Connection, Failure};
use super::wire::{self, ErrorKind, Found, FoundKind, Head, Op, Record, WireError};
use crate::accounts::Names;
use crate::backup::part::{self, PartDone, PartSpec};
use crate::error::{CliError, CliResult, ErrorCode};

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
            let specs: Vec<PartSpec> =
                serde_json::from_slice(&asked).map_err(|e| invalid(format!("invalid list of parts: {e}")))?;
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

/// The next whole record of a `data-seal` answer, taken off the front of what was `received`
/// (`Ok(None)`: more bytes needed; the head's lengths are bounded by [`Record::decode`], so what
/// is buffered waiting for a record is too): the part's blob (none when nothing was stored) and
/// what was found, or the server's error for that part.
pub fn take_record(received: &mut BytesMut) -> Result<Option<CliResult<part::SealedPart>>, String> {
    let Some(head) = Record::decode(received)? else { return Ok(None) };
    let (outcome, blob) = (head.outcome as usize, head.blob as usize);
    if received.len() < Record::HEAD + outcome + blob {
        return Ok(None);
    }
    let _ = received.split_to(Record::HEAD);
    let outcome = received.split_to(outcome);
    let blob = received.split_to(blob);
    let outcome: Outcome =
        serde_json::from_slice(&outcome).map_err(|e| format!("the server's account of a part is not valid: {e}"))?;
    Ok(Some(match outcome {
        Outcome::Done(done) => Ok(((!blob.is_empty()).then(|| blob.to_vec()), done)),
        Outcome::Failed { code, message } => {
            Err(CliError::new(ErrorCode::from_number(code).unwrap_or(ErrorCode::FileRead), message))
        }
    }))
}

/// How a part the server was asked to seal turned out.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Outcome {
    Done(PartDone),
    Failed { code: i32, message: String },
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
            Ok((blob, done)) => (blob.unwrap_or_default(), Outcome::Done(done)),
            Err(e) => (Vec::new(), Outcome::Failed { code: i32::from(e.code as u8), message: e.message }),
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

/// The client side: the cluster on `pg1-host`, read from threads (the walk, the copy workers)
/// over `process-max` connections.
#[derive(Debug)]
pub struct RemoteCluster {
    connections: Vec<Arc<Connection>>,
    next: std::sync::atomic::AtomicUsize,
    stanza: Option<String>,
    runtime: tokio::runtime::Handle,
}

fn failure_io(f: Failure) -> std::io::Error {
    match f {
        Failure::Answered(e) if e.kind == ErrorKind::NotFound => {
            std::io::Error::new(std::io::ErrorKind::NotFound, e.message)
        }
        Failure::Answered(e) if matches!(e.kind, ErrorKind::Forbidden | ErrorKind::Unauthenticated) => {
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, e.message)
        }
        other => std::io::Error::other(other.to_string()),
    }
}

impl RemoteCluster {
    /// The cluster behind `endpoint` (a database host's server), read over `workers`
    /// connections; must be made inside the runtime its reads will use.
    pub fn new(endpoint: super::client::Endpoint, workers: usize, stanza: Option<String>) -> CliResult<Self> {
        let connections = (0..workers.max(1)).map(|_| Arc::new(Connection::new(endpoint.clone()))).collect();
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| CliError::new(ErrorCode::Service, format!("no I/O runtime for {}: {e}", endpoint.option)))?;
        Ok(Self { connections, next: 0.into(), stanza, runtime })
    }

    fn connection(&self) -> &Arc<Connection> {
        let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % self.connections.len();
        &self.connections[i]
    }

    pub fn describe(&self) -> String {
        let e = &self.connections[0].endpoint;
        format!("{}:{}", e.host, e.port)
    }

    fn request(&self, op: Op, body: Body) -> std::io::Result<http::Request<Body>> {
        let head = Head { version: wire::PROTOCOL_VERSION, stanza: self.stanza.clone(), repo: 0, op };
        client::post(&self.connections[0].endpoint, "/data", &head, body).map_err(std::io::Error::other)
    }

    async fn call(&self, op: Op) -> std::io::Result<http::Response<Incoming>> {
        let request = self.request(op, client::empty())?;
        self.connection().send(request).await.map_err(failure_io)
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, op: Op) -> std::io::Result<T> {
        let response = self.call(op).await?;
        let body = client::read_body(response.into_body(), 256 << 20).await.map_err(std::io::Error::other)?;
        serde_json::from_slice(&body).map_err(std::io::Error::other)
    }

    /// A directory's entries (blocking: call from a thread outside the runtime).
    pub fn list(&self, dir: &Path) -> std::io::Result<Vec<Found>> {
        self.runtime.block_on(self.json(Op::DataList { path: dir.display().to_string() }))
    }

    /// A path's metadata, links followed (blocking).
    pub fn stat(&self, path: &Path) -> std::io::Result<Found> {
        self.runtime.block_on(self.json(Op::DataStat { path: path.display().to_string() }))
    }

    /// A whole small file (async).
    pub async fn read_all(&self, path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
        let op = Op::DataRead { path: path.display().to_string(), offset: 0, len: max };
        let response = self.call(op).await?;
        client::read_body(response.into_body(), usize::try_from(max).unwrap_or(usize::MAX))
            .await
            .map_err(std::io::Error::other)
    }

    /// Parts sealed by the server where the data is, in one request (blocking: call from a
    /// copy worker): for each, in order, the compressed and unencrypted blob (none when nothing
    /// is stored) and what was found.
    pub fn seal_parts(&self, specs: &[PartSpec]) -> Vec<CliResult<part::SealedPart>> {
        let mut out = Vec::with_capacity(specs.len());
        if let Err(e) = self.runtime.block_on(self.sealed(specs, &mut out)) {
            let failed = |spec: &PartSpec| {
                let message = format!("unable to read {} through {}: {e}", spec.path.display(), self.describe());
                Err(CliError::new(ErrorCode::FileRead, message))
            };
            out.extend(specs[out.len()..].iter().map(failed));
        }
        out
    }

    async fn sealed(&self, specs: &[PartSpec], out: &mut Vec<CliResult<part::SealedPart>>) -> Result<(), String> {
        let asked = serde_json::to_vec(specs).map_err(|e| e.to_string())?;
        let request = self.request(Op::DataSeal, client::full(Bytes::from(asked))).map_err(|e| e.to_string())?;
        let mut body = self.connection().send(request).await.map_err(|f| f.to_string())?.into_body();
        let mut received = BytesMut::new();
        while out.len() < specs.len() {
            if let Some(part) = take_record(&mut received)? {
                out.push(part);
                continue;
            }
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        received.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(e.to_string()),
                None => return Err(format!("the answer ended after {} of {} parts", out.len(), specs.len())),
            }
        }
        Ok(())
    }

    /// A PostgreSQL session through the server: a stream tokio-postgres can run its protocol on.
    pub async fn sql_stream(
        endpoint: super::client::Endpoint,
        stanza: Option<&str>,
    ) -> CliResult<tokio::io::DuplexStream> {
        let connection = Connection::new(endpoint);
        let (ours, theirs) = tokio::io::duplex(64 << 10);
        let (mut theirs_read, mut theirs_write) = tokio::io::split(theirs);
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let outgoing = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
        });
        let head = Head { version: wire::PROTOCOL_VERSION, stanza: stanza.map(str::to_string), repo: 0, op: Op::Sql };
        let request =
            client::post(&connection.endpoint, "/data", &head, BodyExt::boxed_unsync(StreamBody::new(outgoing)))
                .map_err(|e| CliError::new(ErrorCode::Protocol, e))?;
        // Our side's bytes go out as they are written.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 << 10];
            loop {
                match theirs_read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let at = format!("{}:{}", connection.endpoint.host, connection.endpoint.port);
        let response = connection.send(request).await.map_err(|f| {
            let code = match &f {
                Failure::Answered(e) if matches!(e.kind, ErrorKind::Forbidden | ErrorKind::Unauthenticated) => {
                    ErrorCode::Access
                }
                _ => ErrorCode::DbConnect,
            };
            CliError::new(code, format!("unable to reach PostgreSQL through the server at {at}: {f}"))
        })?;
        let mut body = response.into_body();
        tokio::spawn(async move {
            // The connection lives as long as this task holds it.
            let _connection = connection;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref()
                    && theirs_write.write_all(data).await.is_err()
                {
                    return;
                }
            }
            let _ = theirs_write.shutdown().await;
        });
        Ok(ours)
    }
}

/// Data operations of a streamed kind: the server dispatches on these.
pub fn is_data(op: &Op) -> bool {
    matches!(op, Op::DataList { .. } | Op::DataStat { .. } | Op::DataRead { .. } | Op::DataSeal | Op::Sql)
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
