//! A database host's cluster read by the repository host (`pg1-host`), the client side: the
//! data directory and its tablespaces (listings with metadata, ranged reads), parts sealed where
//! the data is, and a byte stream to PostgreSQL's socket over which the backup's SQL runs as if
//! local. The serving side is the `server` front end's (`crate::server::data`).

use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::client::{self, Body, Connection, Failure};
use super::wire::{self, ErrorKind, Found, Head, Op, PartAnswer, PartRequest, Record, SealOutcome};
use crate::error::{CliError, CliResult, ErrorCode};

/// A part sealed by the server: its compressed blob (none when nothing is stored) and what was
/// found.
pub type SealedRemotely = (Option<Vec<u8>>, PartAnswer);

/// The next whole record of a `data-seal` answer, taken off the front of what was `received`
/// (`Ok(None)`: more bytes needed; the head's lengths are bounded by [`Record::decode`], so what
/// is buffered waiting for a record is too): the part's blob (none when nothing was stored) and
/// what was found, or the server's error for that part.
pub fn take_record(received: &mut BytesMut) -> Result<Option<CliResult<SealedRemotely>>, String> {
    let Some(head) = Record::decode(received)? else { return Ok(None) };
    let (outcome, blob) = (head.outcome as usize, head.blob as usize);
    if received.len() < Record::HEAD + outcome + blob {
        return Ok(None);
    }
    let _ = received.split_to(Record::HEAD);
    let outcome = received.split_to(outcome);
    let blob = received.split_to(blob);
    let outcome: SealOutcome =
        serde_json::from_slice(&outcome).map_err(|e| format!("the server's account of a part is not valid: {e}"))?;
    Ok(Some(match outcome {
        SealOutcome::Done(done) => Ok(((!blob.is_empty()).then(|| blob.to_vec()), done)),
        SealOutcome::Failed { code, message } => {
            Err(CliError::new(ErrorCode::from_number(code).unwrap_or(ErrorCode::FileRead), message))
        }
    }))
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
    pub fn seal_parts(&self, specs: &[PartRequest]) -> Vec<CliResult<SealedRemotely>> {
        let mut out = Vec::with_capacity(specs.len());
        if let Err(e) = self.runtime.block_on(self.sealed(specs, &mut out)) {
            let failed = |spec: &PartRequest| {
                let message = format!("unable to read {} through {}: {e}", spec.path.display(), self.describe());
                Err(CliError::new(ErrorCode::FileRead, message))
            };
            out.extend(specs[out.len()..].iter().map(failed));
        }
        out
    }

    async fn sealed(&self, specs: &[PartRequest], out: &mut Vec<CliResult<SealedRemotely>>) -> Result<(), String> {
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
