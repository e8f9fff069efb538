//! The client side: one HTTP/2 connection over mutual TLS to a `server` ([`Connection`]), and a
//! repository behind a repository host as one more object store ([`RemoteStore`]). Every
//! command that works on a repository works on a remote one unchanged: the client compresses,
//! encrypts and decides; the server stores.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, ErrorKind, Head, Listing, Meta, Mode, Op, WireError, Written};

/// Request and answer bodies.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// HTTP/2 windows: enough in flight to fill a fast link, bounded per stream and connection.
pub const STREAM_WINDOW: u32 = 4 << 20;
pub const CONNECTION_WINDOW: u32 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Both sides ping an idle connection this often and drop it when a ping goes unanswered this
/// long: a host that died or a link that broke ends the requests on it instead of hanging them.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

pub fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: Bytes) -> Body {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

/// Why a request did not get an answer, or got a refusal.
#[derive(Debug)]
pub enum Failure {
    /// The server could not be reached (worth retrying).
    Unreachable(std::io::Error),
    /// TLS refused: by us (the server's certificate) or by the server (ours).
    Refused(String),
    /// The server answered with an error.
    Answered(WireError),
    /// The exchange broke off or made no sense.
    Broken(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unable to connect: {e}"),
            Self::Refused(m) | Self::Broken(m) => f.write_str(m),
            Self::Answered(e) => f.write_str(&e.message),
        }
    }
}

/// A stream of chunks as DATA frames, empty chunks dropped: h2 counts empty DATA frames a peer
/// receives and ends the connection after 100 (GOAWAY ENHANCE_YOUR_CALM, "too many empty data
/// frames"), for the whole life of the connection.
pub fn data_frames<E>(
    chunks: impl futures::Stream<Item = Result<Bytes, E>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, E>> {
    use futures::StreamExt;
    chunks.filter_map(|c| {
        futures::future::ready(match c {
            Ok(b) if b.is_empty() => None,
            other => Some(other.map(Frame::data)),
        })
    })
}

/// A request to `path` (`/repo`, `/data`) of the server at `endpoint`, with its head.
pub fn post(endpoint: &Endpoint, path: &str, head: &Head, body: Body) -> Result<http::Request<Body>, String> {
    let head = serde_json::to_vec(head).map_err(|e| e.to_string())?;
    http::Request::builder()
        .method(http::Method::POST)
        .uri(format!("https://{}:{}{path}", endpoint.host, endpoint.port))
        .header(wire::REQUEST_HEADER, http::HeaderValue::from_bytes(&head).map_err(|e| e.to_string())?)
        .body(body)
        .map_err(|e| e.to_string())
}

/// Where a server is and how to talk to it.
#[derive(Clone)]
pub struct Endpoint {
    /// The option that named it (`repo1-host`), for messages.
    pub option: String,
    pub host: String,
    pub port: u16,
    pub tls: Arc<ClientConfig>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.option, self.host, self.port)
    }
}

/// One connection to a server, opened on first use and again after it broke; requests share
/// it as HTTP/2 streams.
#[derive(Debug)]
pub struct Connection {
    pub endpoint: Endpoint,
    sender: tokio::sync::Mutex<Option<SendRequest<Body>>>,
}

/// The first rustls alert or error in a chain of sources.
fn tls_cause(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        // An io::Error's `source` skips the error it wraps (tokio-rustls wraps rustls's there).
        if let Some(tls) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        current = e.source();
    }
    None
}

impl Connection {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, sender: tokio::sync::Mutex::new(None) }
    }

    fn at(&self) -> String {
        format!("{}:{}", self.endpoint.host, self.endpoint.port)
    }

    async fn connect(&self) -> Result<SendRequest<Body>, Failure> {
        let at = self.at();
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((&*self.endpoint.host, self.endpoint.port)),
        )
        .await
        .map_err(|_| {
            Failure::Unreachable(std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{at}: timed out")))
        })?
        .map_err(|e| Failure::Unreachable(std::io::Error::new(e.kind(), format!("{at}: {e}"))))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(self.endpoint.host.clone())
            .map_err(|e| Failure::Refused(format!("'{}' is not a valid host name for TLS: {e}", self.endpoint.host)))?;
        let tls =
            tokio_rustls::TlsConnector::from(self.endpoint.tls.clone()).connect(name, tcp).await.map_err(|e| {
                match tls_cause(&e) {
                    Some(cause) => Failure::Refused(format!(
                        "TLS with {at} failed: {cause}; is {option}-ca-file the CA that signed the server's \
                         certificate, and does that certificate name {host}?",
                        option = self.endpoint.option,
                        host = self.endpoint.host
                    )),
                    None => Failure::Unreachable(std::io::Error::new(e.kind(), format!("{at}: {e}"))),
                }
            })?;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(KEEP_ALIVE)
            .keep_alive_timeout(KEEP_ALIVE)
            .keep_alive_while_idle(true)
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .max_frame_size(1 << 20)
            .handshake::<_, Body>(TokioIo::new(tls))
            .await
            .map_err(|e| self.broken(&e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection to a server ended: {e}");
            }
        });
        Ok(sender)
    }

    /// What a failed exchange means: TLS failed (a server answers a certificate it does not
    /// trust with an HTTP error instead, see `tls::server_config`), or the connection broke.
    fn broken(&self, e: &(dyn std::error::Error + 'static)) -> Failure {
        let at = self.at();
        match tls_cause(e) {
            Some(cause) => Failure::Refused(format!("TLS with {at} failed: {cause}")),
            None => Failure::Broken(format!("connection to {at} failed: {e}")),
        }
    }

    /// Sends a request and returns the answer's head and body, or the server's error.
    pub async fn send(&self, request: http::Request<Body>) -> Result<http::Response<Incoming>, Failure> {
        let mut sender = {
            let mut guard = self.sender.lock().await;
            match guard.as_ref() {
                Some(s) if !s.is_closed() => s.clone(),
                _ => {
                    let s = self.connect().await?;
                    *guard = Some(s.clone());
                    s
                }
            }
        };
        sender.ready().await.map_err(|e| self.broken(&e))?;
        let response = sender.send_request(request).await.map_err(|e| self.broken(&e))?;
        if response.status() == http::StatusCode::OK {
            return Ok(response);
        }
        let status = response.status();
        let body = read_body(response.into_body(), 1 << 20).await.unwrap_or_default();
        Err(Failure::Answered(serde_json::from_slice::<WireError>(&body).unwrap_or_else(|_| {
            WireError::new(ErrorKind::Other, format!("server answered {status}: {}", String::from_utf8_lossy(&body)))
        })))
    }
}

/// Asks a server whether it is up.
pub async fn ping(connection: &Connection) -> crate::error::CliResult<wire::Pong> {
    use crate::error::{CliError, ErrorCode};
    let endpoint = &connection.endpoint;
    let request = http::Request::builder()
        .method(http::Method::GET)
        .uri(format!("https://{}:{}/ping", endpoint.host, endpoint.port))
        .body(empty())
        .map_err(|e| CliError::new(ErrorCode::Protocol, e.to_string()))?;
    let unreachable = |f: Failure| {
        CliError::new(ErrorCode::HostConnect, format!("no server answers at {}:{}: {f}", endpoint.host, endpoint.port))
    };
    let response = connection.send(request).await.map_err(unreachable)?;
    let body = read_body(response.into_body(), 1 << 16).await.map_err(|e| unreachable(Failure::Broken(e)))?;
    serde_json::from_slice(&body).map_err(|e| {
        CliError::new(
            ErrorCode::Protocol,
            format!("{}:{} answered, but not as a pgstrata server: {e}", endpoint.host, endpoint.port),
        )
    })
}

/// Reads a whole (small) body, at most `max` bytes.
pub async fn read_body(mut body: Incoming, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            if out.len() + data.len() > max {
                return Err(format!("answer larger than {max} bytes"));
            }
            out.extend_from_slice(data);
        }
    }
    Ok(out)
}

fn header_json<T: serde::de::DeserializeOwned>(response: &http::Response<Incoming>) -> Result<T, Failure> {
    let value = response
        .headers()
        .get(wire::META_HEADER)
        .ok_or_else(|| Failure::Broken(format!("the server's answer has no {} header", wire::META_HEADER)))?;
    serde_json::from_slice(value.as_bytes())
        .map_err(|e| Failure::Broken(format!("the server's {} header is not valid: {e}", wire::META_HEADER)))
}

/// A repository of a stanza served by a repository host, as an object store.
#[derive(Debug, Clone)]
pub struct RemoteStore {
    connection: Arc<Connection>,
    stanza: Option<String>,
    repo: u32,
}

impl std::fmt::Display for RemoteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tls://{}:{}/repo{}", self.connection.endpoint.host, self.connection.endpoint.port, self.repo)
    }
}

const STORE: &str = "repository host";

impl RemoteStore {
    pub fn new(connection: Arc<Connection>, stanza: Option<&str>, repo: u32) -> Self {
        Self { connection, stanza: stanza.map(str::to_string), repo }
    }

    fn request(&self, op: Op, body: Body) -> object_store::Result<http::Request<Body>> {
        let head = Head { version: wire::PROTOCOL_VERSION, stanza: self.stanza.clone(), repo: self.repo, op };
        post(&self.connection.endpoint, "/repo", &head, body).map_err(generic)
    }

    async fn call(&self, op: Op, body: Body, path: &str) -> object_store::Result<http::Response<Incoming>> {
        let request = self.request(op, body)?;
        self.connection.send(request).await.map_err(|f| to_store_error(f, path))
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic { store: STORE, source: message.into() }
}

/// A failure as object_store's error, so the repository's retry layer treats it by meaning.
fn to_store_error(failure: Failure, path: &str) -> object_store::Error {
    let path = path.to_string();
    match failure {
        Failure::Unreachable(io) => object_store::Error::Generic { store: STORE, source: Box::new(io) },
        Failure::Refused(m) => object_store::Error::PermissionDenied { path, source: m.into() },
        Failure::Broken(m) => object_store::Error::Generic {
            store: STORE,
            source: Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, m)),
        },
        Failure::Answered(e) => match e.kind {
            ErrorKind::NotFound => object_store::Error::NotFound { path, source: Box::new(e) },
            ErrorKind::AlreadyExists => object_store::Error::AlreadyExists { path, source: Box::new(e) },
            ErrorKind::Precondition => object_store::Error::Precondition { path, source: Box::new(e) },
            ErrorKind::NotModified => object_store::Error::NotModified { path, source: Box::new(e) },
            ErrorKind::PermissionDenied | ErrorKind::Forbidden | ErrorKind::Unauthenticated => {
                object_store::Error::PermissionDenied { path, source: Box::new(e) }
            }
            ErrorKind::Unavailable => object_store::Error::Generic {
                store: STORE,
                source: Box::new(std::io::Error::new(std::io::ErrorKind::TimedOut, e.message)),
            },
            ErrorKind::Invalid | ErrorKind::Other => object_store::Error::Generic { store: STORE, source: Box::new(e) },
        },
    }
}

fn to_meta(m: Meta) -> object_store::Result<ObjectMeta> {
    let last_modified = chrono::DateTime::from_timestamp_millis(m.modified_ms)
        .ok_or_else(|| generic(format!("the server sent an invalid time for {}", m.key)))?;
    let location = Path::parse(&m.key).map_err(|e| generic(format!("the server sent an invalid key: {e}")))?;
    Ok(ObjectMeta { location, last_modified, size: m.size, e_tag: m.e_tag, version: m.version })
}

fn body_stream(body: Incoming, path: String) -> BoxStream<'static, object_store::Result<Bytes>> {
    body.into_data_stream()
        .map(move |r| {
            r.map_err(|e| object_store::Error::Generic {
                store: STORE,
                source: Box::new(std::io::Error::new(
                    std::io::ErrorKind::ConnectionAborted,
                    format!("reading {path} from the repository host: {e}"),
                )),
            })
        })
        .boxed()
}

/// The JSON lines of a streamed listing, one [`ObjectMeta`] each.
fn lines(body: Incoming) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    const LINE_MAX: usize = 1 << 20;
    let data = body.into_data_stream();
    futures::stream::unfold((data, Vec::<u8>::new(), false), |(mut data, mut buf, mut done)| async move {
        loop {
            if let Some(end) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=end).collect();
                let item = serde_json::from_slice::<Meta>(&line[..end])
                    .map_err(|e| generic(format!("the server sent an invalid listing line: {e}")))
                    .and_then(to_meta);
                return Some((item, (data, buf, done)));
            }
            if done {
                if buf.is_empty() {
                    return None;
                }
                buf.clear();
                return Some((Err(generic("the server's listing ended inside a line".into())), (data, buf, true)));
            }
            match data.next().await {
                Some(Ok(chunk)) => {
                    buf.extend_from_slice(&chunk);
                    if buf.len() > LINE_MAX {
                        return Some((
                            Err(generic("the server sent an over-long listing line".into())),
                            (data, Vec::new(), true),
                        ));
                    }
                }
                Some(Err(e)) => {
                    let err = object_store::Error::Generic {
                        store: STORE,
                        source: Box::new(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e.to_string())),
                    };
                    return Some((Err(err), (data, Vec::new(), true)));
                }
                None => done = true,
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for RemoteStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mode = match opts.mode {
            PutMode::Overwrite => Mode::Overwrite,
            PutMode::Create => Mode::Create,
            PutMode::Update(v) => Mode::Update { e_tag: v.e_tag, version: v.version },
        };
        let key = location.to_string();
        let body = full(Bytes::from(payload));
        let response = self.call(Op::Put { key: key.clone(), mode }, body, &key).await?;
        let written: Written = header_json(&response).map_err(|f| to_store_error(f, &key))?;
        Ok(PutResult { e_tag: written.e_tag, version: written.version, extensions: Default::default() })
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let key = location.to_string();
        let (tx, rx) = mpsc::unbounded_channel::<Chunk>();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await? {
                    Chunk::Data(bytes, ack) => {
                        if let Some(ack) = ack {
                            let _ = ack.send(());
                        }
                        // No empty DATA frames (see `data_frames`).
                        if !bytes.is_empty() {
                            return Some((Ok(Frame::data(bytes)), rx));
                        }
                    }
                    Chunk::Abort => return Some((Err(std::io::Error::other("upload aborted")), rx)),
                }
            }
        });
        let request = self.request(Op::Upload { key: key.clone() }, BodyExt::boxed_unsync(StreamBody::new(stream)))?;
        let connection = self.connection.clone();
        let path = key.clone();
        let answer = tokio::spawn(async move {
            let response = connection.send(request).await.map_err(|f| to_store_error(f, &path))?;
            let written: Written = header_json(&response).map_err(|f| to_store_error(f, &path))?;
            Ok(PutResult { e_tag: written.e_tag, version: written.version, extensions: Default::default() })
        });
        Ok(Box::new(RemoteUpload { key, tx: Some(tx), answer: Some(answer) }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        let key = location.to_string();
        if options.if_match.is_some()
            || options.if_none_match.is_some()
            || options.if_modified_since.is_some()
            || options.if_unmodified_since.is_some()
            || options.version.is_some()
        {
            return Err(object_store::Error::NotImplemented {
                operation: "conditional get".into(),
                implementer: STORE.into(),
            });
        }
        let range = match options.range {
            None => None,
            Some(GetRange::Bounded(r)) => Some((r.start, r.end)),
            Some(GetRange::Offset(start)) => Some((start, u64::MAX)),
            Some(GetRange::Suffix(_)) => {
                return Err(object_store::Error::NotImplemented {
                    operation: "suffix range".into(),
                    implementer: STORE.into(),
                });
            }
        };
        let response = self.call(Op::Get { key: key.clone(), range, head: options.head }, empty(), &key).await?;
        let meta: Meta = header_json(&response).map_err(|f| to_store_error(f, &key))?;
        let range: Range<u64> = match meta.range {
            Some((start, end)) => start..end,
            None => 0..meta.size,
        };
        let meta = to_meta(meta)?;
        let payload = GetResultPayload::Stream(body_stream(response.into_body(), key));
        Ok(GetResult { payload, meta, range, attributes: Attributes::default(), extensions: Default::default() })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .chunks(wire::DELETE_BATCH)
            .then(move |batch| {
                let this = this.clone();
                async move {
                    let mut out: Vec<object_store::Result<Path>> = Vec::with_capacity(batch.len());
                    let mut keys = Vec::new();
                    let mut slots = Vec::new();
                    for (i, item) in batch.into_iter().enumerate() {
                        match item {
                            Ok(path) => {
                                keys.push(path.to_string());
                                slots.push((i, path));
                                out.push(Ok(Path::default()));
                            }
                            Err(e) => out.push(Err(e)),
                        }
                    }
                    if keys.is_empty() {
                        return futures::stream::iter(out);
                    }
                    let answers = this.delete_batch(&keys).await;
                    for (n, (i, path)) in slots.into_iter().enumerate() {
                        out[i] = match &answers {
                            Ok(answers) => match answers.get(n) {
                                Some(None) => Ok(path),
                                Some(Some(e)) => Err(to_store_error(Failure::Answered(e.clone()), path.as_ref())),
                                None => Err(generic("the server's delete answer is short".into())),
                            },
                            Err(e) => Err(generic(format!("unable to delete {path}: {e}"))),
                        };
                    }
                    futures::stream::iter(out)
                }
            })
            .flatten()
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_from(prefix, None)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.list_from(prefix, Some(offset.to_string()))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let key = prefix.map(ToString::to_string);
        let shown = key.clone().unwrap_or_default();
        let response = self.call(Op::ListDir { prefix: key }, empty(), &shown).await?;
        let body = read_body(response.into_body(), 256 << 20).await.map_err(generic)?;
        let listing: Listing =
            serde_json::from_slice(&body).map_err(|e| generic(format!("the server sent an invalid listing: {e}")))?;
        let objects = listing.objects.into_iter().map(to_meta).collect::<object_store::Result<Vec<_>>>()?;
        let common_prefixes = listing
            .prefixes
            .iter()
            .map(|p| Path::parse(p).map_err(|e| generic(format!("the server sent an invalid key: {e}"))))
            .collect::<object_store::Result<Vec<_>>>()?;
        Ok(ListResult { common_prefixes, objects, extensions: Default::default() })
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        let overwrite = matches!(options.mode, CopyMode::Overwrite);
        let op = Op::Copy { from: from.to_string(), to: to.to_string(), overwrite };
        self.call(op, empty(), from.as_ref()).await.map(|_| ())
    }
}

impl RemoteStore {
    fn list_from(
        &self,
        prefix: Option<&Path>,
        offset: Option<String>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let this = self.clone();
        let prefix = prefix.map(ToString::to_string);
        futures::stream::once(async move {
            let shown = prefix.clone().unwrap_or_default();
            match this.call(Op::List { prefix, offset }, empty(), &shown).await {
                Ok(response) => lines(response.into_body()),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten()
        .boxed()
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<Vec<Option<WireError>>, String> {
        let body = serde_json::to_vec(keys).map_err(|e| e.to_string())?;
        let response = self.call(Op::Delete, full(Bytes::from(body)), "").await.map_err(|e| e.to_string())?;
        let body = read_body(response.into_body(), 64 << 20).await?;
        let answers: Vec<Option<WireError>> =
            serde_json::from_slice(&body).map_err(|e| format!("the server sent an invalid delete answer: {e}"))?;
        if answers.len() != keys.len() {
            return Err(format!("the server answered {} of {} deletes", answers.len(), keys.len()));
        }
        Ok(answers)
    }
}

/// What goes into a streamed upload's body.
enum Chunk {
    /// Bytes, and who waits for them to be taken by the connection.
    Data(Bytes, Option<oneshot::Sender<()>>),
    /// Ends the body with an error: the server sees the stream reset and discards the upload.
    Abort,
}

/// A streamed upload: one request whose body is every part in order.
struct RemoteUpload {
    key: String,
    tx: Option<mpsc::UnboundedSender<Chunk>>,
    answer: Option<tokio::task::JoinHandle<object_store::Result<PutResult>>>,
}

impl std::fmt::Debug for RemoteUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteUpload").field("key", &self.key).finish()
    }
}

impl RemoteUpload {
    async fn answer(&mut self) -> object_store::Result<PutResult> {
        match self.answer.take() {
            Some(handle) => handle.await.map_err(|e| generic(format!("upload of {}: {e}", self.key)))?,
            None => Err(generic(format!("upload of {} already ended", self.key))),
        }
    }
}

#[async_trait]
impl MultipartUpload for RemoteUpload {
    /// Parts go into the body in the order they are given (the caller may await them in any
    /// order); each is done when the connection has taken it.
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (ack, taken) = oneshot::channel();
        let key = self.key.clone();
        let sent = match &self.tx {
            Some(tx) => {
                let mut chunks: Vec<Bytes> = data.into_iter().collect();
                if chunks.is_empty() {
                    chunks.push(Bytes::new());
                }
                let last = chunks.len().saturating_sub(1);
                let mut ack = Some(ack);
                chunks
                    .into_iter()
                    .enumerate()
                    .all(|(i, c)| tx.send(Chunk::Data(c, if i == last { ack.take() } else { None })).is_ok())
                    && ack.is_none()
            }
            None => false,
        };
        Box::pin(async move {
            if sent && taken.await.is_ok() {
                Ok(())
            } else {
                Err(object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        format!("the upload of {key} to the repository host broke off"),
                    )),
                })
            }
        })
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        // Dropping the sender ends the body; the server then finishes the object and answers.
        self.tx = None;
        self.answer().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Chunk::Abort);
        }
        let _ = self.answer().await;
        Ok(())
    }
}
