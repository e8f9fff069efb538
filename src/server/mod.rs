//! `server`: a front end of its own, serving this host's repositories and cluster to other hosts
//! over HTTP/2 with mutual TLS; and `server-ping`, the liveness probe.
//!
//! A connection is accepted with the TLS settings and grants of the moment (SIGHUP reloads
//! both: new connections use the new ones, work in progress finishes on the old). Every request
//! but `/ping` needs a client certificate signed by `tls-server-ca-file`, and every key it names
//! must lie in a stanza `tls-server-auth` grants that certificate's common name
//! (`stanza/<name>/...`); listings are filtered to those stanzas. Keys are parsed as
//! object_store paths (no `..`, no empty segments) under the repository's own root.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, UpdateVersion, WriteMultipart,
};
use pgstrata_storage::RetryPolicy;

use crate::accounts::Names;
use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::remote::client::{self, Body};
use crate::remote::data::is_data;

mod data;
use crate::remote::wire::{self, ErrorKind, Head, Listing, Meta, Mode, Op, Pong, WireError, Written};
use data::ServedCluster;

/// Part size and parts in flight of an upload the server writes for a client.
const UPLOAD_PART: usize = 8 << 20;
const UPLOAD_PARTS_IN_FLIGHT: usize = 2;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections open at once, at most; more are closed as they come (with a warning).
const MAX_CONNECTIONS: usize = 256;
/// How long a connection whose certificate is missing or untrusted stays open: long enough for
/// `server-ping` and the refusal it is given, not for holding a connection slot.
const UNTRUSTED_LIFE: Duration = Duration::from_secs(10);
/// Requests one connection may have open at once (a client uses about `process-max` of them),
/// which bounds what one connection can make the server hold.
const MAX_STREAMS: u32 = 64;
/// Repositories and clusters kept open per stanza, at most.
const CACHED_STANZAS: usize = 64;

/// Which stanzas each client common name may use (`tls-server-auth`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants(Vec<(String, Grant)>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Grant {
    All,
    Stanzas(Vec<String>),
}

impl Grants {
    /// Parses `client-cn=stanza[,stanza...]` and `client-cn=*` entries.
    pub fn parse(entries: &[String]) -> CliResult<Self> {
        let mut grants = Vec::new();
        for entry in entries {
            let bad = |why: &str| {
                CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{entry}' is not valid for 'tls-server-auth': {why}"),
                )
                .hint("use client-cn=stanza[,stanza...] or client-cn=*")
            };
            let (cn, stanzas) = entry.split_once('=').ok_or_else(|| bad("no '='"))?;
            let cn = cn.trim();
            if cn.is_empty() {
                return Err(bad("empty client common name"));
            }
            let list: Vec<String> =
                stanzas.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect();
            let grant = if list.iter().any(|s| s == "*") {
                Grant::All
            } else if list.is_empty() {
                return Err(bad("no stanza"));
            } else {
                Grant::Stanzas(list)
            };
            grants.push((cn.to_string(), grant));
        }
        Ok(Self(grants))
    }

    /// Whether `cn` may use `stanza`.
    pub fn allows(&self, cn: &str, stanza: &str) -> bool {
        self.0.iter().any(|(name, grant)| {
            name == cn
                && match grant {
                    Grant::All => true,
                    Grant::Stanzas(list) => list.iter().any(|s| s == stanza),
                }
        })
    }

    pub fn knows(&self, cn: &str) -> bool {
        self.0.iter().any(|(name, _)| name == cn)
    }
}

/// The stanza a repository key belongs to: `stanza/<name>/...` (or `stanza/<name>` itself),
/// and pgBackRest's keys of the same stanza in a repository taken over from it
/// (`archive/<name>/...`, `backup/<name>/...`).
pub fn stanza_of(key: &str) -> Option<&str> {
    let rest = ["stanza/", "archive/", "backup/"].iter().find_map(|p| key.strip_prefix(p))?;
    let name = rest.split('/').next()?;
    (!name.is_empty()).then_some(name)
}

/// What one reload of the configuration gives.
struct Settings {
    tls: crate::remote::tls::ServerTls,
    acceptor: tokio_rustls::TlsAcceptor,
    grants: Grants,
    config: Config,
    /// Repositories opened so far, by (stanza whose configuration resolved it, index).
    stores: Mutex<HashMap<(Option<String>, u32), Served>>,
    /// Clusters served so far, by stanza.
    clusters: Mutex<HashMap<String, Arc<ServedCluster>>>,
    names: Names,
}

impl Settings {
    fn load(config: Config) -> CliResult<Self> {
        let need = |name: &str| -> CliResult<std::path::PathBuf> {
            Ok(std::path::PathBuf::from(config.get(name).ok_or_else(|| {
                CliError::new(ErrorCode::OptionRequired, format!("server command requires option: {name}"))
            })?))
        };
        let (ca, cert, key) =
            (need("tls-server-ca-file")?, need("tls-server-cert-file")?, need("tls-server-key-file")?);
        let tls =
            crate::remote::tls::server_config(&crate::remote::tls::ServerFiles { ca: &ca, cert: &cert, key: &key })?;
        let grants = Grants::parse(config.list("tls-server-auth"))?;
        if grants.0.is_empty() {
            tracing::warn!("tls-server-auth is not set: every client will be refused");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        Ok(Self {
            tls,
            acceptor,
            grants,
            config,
            stores: Mutex::default(),
            clusters: Mutex::default(),
            names: Names::load(),
        })
    }

    /// This host's configuration as a command for `stanza` sees it (its `[stanza]` section).
    fn stanza_config(&self, stanza: &str) -> Result<Config, WireError> {
        self.config.reload(&[format!("--stanza={stanza}")]).map_err(|e| {
            WireError::new(ErrorKind::Other, format!("configuration for stanza '{stanza}': {}", e.message))
        })
    }

    /// The cluster of `stanza` as configured on this host.
    fn cluster(&self, stanza: &str) -> Result<Arc<ServedCluster>, WireError> {
        if let Ok(clusters) = self.clusters.lock()
            && let Some(c) = clusters.get(stanza)
        {
            return Ok(c.clone());
        }
        let target = crate::request::clusters::cluster(&self.stanza_config(stanza)?, 1)
            .map_err(|e| WireError::new(ErrorKind::Invalid, e.message))?;
        if target.host.is_some() {
            return Err(WireError::new(
                ErrorKind::Invalid,
                "pg1 is itself behind a database host on this server; it is not served from here",
            ));
        }
        let cluster = Arc::new(ServedCluster::new(target.data, &target.socket, target.port));
        if let Ok(mut clusters) = self.clusters.lock() {
            // Bounded whatever stanza names clients send (`*` grants): start over when full.
            if clusters.len() >= CACHED_STANZAS {
                clusters.clear();
            }
            clusters.insert(stanza.to_string(), cluster.clone());
        }
        Ok(cluster)
    }

    /// Repository `index` as configured for `stanza` on this host.
    fn served(&self, stanza: Option<&str>, index: u32) -> Result<Served, WireError> {
        let cache_key = (stanza.map(str::to_string), index);
        if let Ok(stores) = self.stores.lock()
            && let Some(s) = stores.get(&cache_key)
        {
            return Ok(s.clone());
        }
        let config = match stanza {
            Some(s) => self.stanza_config(s)?,
            None => self.config.clone(),
        };
        if index != 1 && !config.repo_indexes_set().contains(&index) {
            return Err(WireError::new(ErrorKind::Invalid, format!("repo{index} is not configured on this server")));
        }
        if config.get(&format!("repo{index}-host")).is_some() {
            return Err(WireError::new(
                ErrorKind::Invalid,
                format!("repo{index} is itself behind a repository host on this server; it is not served from here"),
            ));
        }
        let storage = crate::request::repos::repo_target(&config, index)
            .storage()
            .cloned()
            .map_err(|e| WireError::new(ErrorKind::Invalid, e.message))?;
        let local = match &storage {
            pgstrata_storage::StorageConfig::Posix { path } => Some(path.display().to_string()),
            _ => None,
        };
        let store = storage.open_creating(RetryPolicy::default()).map_err(|e| {
            let message = e.to_string();
            store_error(&local.as_deref().map_or(message.clone(), |l| message.replace(l, "<repository>")))
        })?;
        let (store, prefix) = store.object_store();
        let served = Served { store, prefix: prefix.to_string(), local };
        if let Ok(mut stores) = self.stores.lock() {
            if stores.len() >= CACHED_STANZAS {
                stores.clear();
            }
            stores.insert(cache_key, served.clone());
        }
        Ok(served)
    }
}

fn store_error(message: &str) -> WireError {
    WireError::new(ErrorKind::Other, message)
}

/// A repository as served: its object store and its root in it.
#[derive(Clone)]
struct Served {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// The repository's directory on this host (a filesystem repository): left out of what
    /// clients are told.
    local: Option<String>,
}

impl Served {
    fn path(&self, key: &str) -> Result<Path, WireError> {
        let full = if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) };
        Path::parse(&full).map_err(|e| WireError::new(ErrorKind::Invalid, format!("invalid key '{key}': {e}")))
    }

    /// An error as a client sees it: this host's repository directory replaced by its name.
    fn scrub(&self, mut e: WireError) -> WireError {
        if let Some(local) = &self.local {
            e.message = e.message.replace(local.trim_end_matches('/'), "<repository>");
        }
        e
    }

    fn key_of(&self, path: &Path) -> String {
        pgstrata_storage::store::key_under(&self.prefix, path)
    }

    fn meta(&self, m: &ObjectMeta) -> Meta {
        Meta {
            key: self.key_of(&m.location),
            size: m.size,
            modified_ms: m.last_modified.timestamp_millis(),
            e_tag: m.e_tag.clone(),
            version: m.version.clone(),
            range: None,
        }
    }
}

/// An object store failure as the client should see it.
fn wire_error(e: &object_store::Error) -> WireError {
    let kind = match e {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
        object_store::Error::Precondition { .. } => ErrorKind::Precondition,
        object_store::Error::NotModified { .. } => ErrorKind::NotModified,
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            ErrorKind::PermissionDenied
        }
        e if pgstrata_storage::retry::is_transient(e) => ErrorKind::Unavailable,
        _ => ErrorKind::Other,
    };
    WireError::new(kind, pgstrata_storage::error::describe(e))
}

/// Who is asking: the peer address and, when it presented a certificate the CA signed, its
/// common name; or why its certificate is not trusted.
#[derive(Clone, Debug)]
struct Peer {
    address: SocketAddr,
    name: Option<String>,
    untrusted: Option<String>,
    /// The certificates it presented, checked again when the settings change (a reload with
    /// another CA).
    chain: Arc<Vec<rustls_pki_types::CertificateDer<'static>>>,
}

impl Peer {
    fn new(address: SocketAddr, chain: Vec<rustls_pki_types::CertificateDer<'static>>, settings: &Settings) -> Self {
        let name = chain.first().and_then(|cert| crate::remote::cert::common_name(cert));
        let untrusted = if chain.is_empty() { None } else { settings.tls.check_client(&chain).err() };
        Self { address, name, untrusted, chain: Arc::new(chain) }
    }

    /// The same peer judged by other settings (after a reload): its certificate against their CA.
    fn judged_by(&self, settings: &Settings) -> Self {
        let untrusted = if self.chain.is_empty() { None } else { settings.tls.check_client(&self.chain).err() };
        Self { untrusted, ..self.clone() }
    }

    /// The trusted common name, or the refusal of every request but `/ping`.
    fn name(&self) -> Result<&str, WireError> {
        match (&self.name, &self.untrusted) {
            (Some(name), None) => Ok(name),
            (_, Some(why)) => Err(WireError::new(
                ErrorKind::Unauthenticated,
                format!(
                    "this server does not trust the client certificate ({why}); \
                     it serves only certificates signed by the CA of its tls-server-ca-file"
                ),
            )),
            (None, None) => Err(unauthenticated()),
        }
    }
}

type Answer = http::Response<Body>;

fn answer_error(e: &WireError) -> Answer {
    let body = serde_json::to_vec(e).unwrap_or_default();
    let mut response = http::Response::new(client::full(Bytes::from(body)));
    *response.status_mut() = e.kind.status();
    response
}

fn answer(body: Body, meta: Option<&impl serde::Serialize>) -> Result<Answer, WireError> {
    let mut response = http::Response::new(body);
    if let Some(meta) = meta {
        let json = serde_json::to_vec(meta).map_err(|e| store_error(&e.to_string()))?;
        let value = http::HeaderValue::from_bytes(&json).map_err(|e| store_error(&e.to_string()))?;
        response.headers_mut().insert(wire::META_HEADER, value);
    }
    Ok(response)
}

async fn handle(settings: Arc<Settings>, peer: Peer, request: http::Request<Incoming>) -> Result<Answer, Infallible> {
    let result = match request.uri().path() {
        "/ping" => ping_answer(),
        "/repo" => repo_request(&settings, &peer, request).await,
        "/data" => data_request(&settings, &peer, request).await,
        other => Err(WireError::new(ErrorKind::Invalid, format!("unknown request path '{other}'"))),
    };
    Ok(result.unwrap_or_else(|e| {
        if matches!(e.kind, ErrorKind::Unauthenticated | ErrorKind::Forbidden | ErrorKind::Invalid) {
            tracing::warn!("refused a request from {}: {}", peer.address, e.message);
        } else {
            tracing::trace!("request from {} failed: {}", peer.address, e.message);
        }
        answer_error(&e)
    }))
}

fn ping_answer() -> Result<Answer, WireError> {
    let pong =
        Pong { name: "pgstrata".into(), version: env!("CARGO_PKG_VERSION").into(), protocol: wire::PROTOCOL_VERSION };
    answer(client::full(Bytes::from(serde_json::to_vec(&pong).unwrap_or_default())), None::<&()>)
}

/// Checks that the peer may use every stanza `keys` belong to.
fn authorize<'a>(settings: &Settings, peer: &Peer, keys: impl IntoIterator<Item = &'a str>) -> Result<(), WireError> {
    let name = peer.name()?;
    for key in keys {
        let stanza = stanza_of(key).ok_or_else(|| {
            WireError::new(
                ErrorKind::Forbidden,
                format!("'{key}' is not inside a stanza; nothing outside stanzas is served"),
            )
        })?;
        if !settings.grants.allows(name, stanza) {
            return Err(forbidden(name, stanza, &settings.grants));
        }
    }
    Ok(())
}

/// A write request must name its stanza, and every key it writes must lie in it.
fn writes_in_stanza(stanza: Option<&str>, keys: &[&str]) -> Result<(), WireError> {
    let Some(stanza) = stanza else {
        return Err(WireError::new(ErrorKind::Invalid, "a write must name its stanza"));
    };
    match keys.iter().find(|k| stanza_of(k) != Some(stanza)) {
        Some(key) => Err(WireError::new(ErrorKind::Forbidden, format!("'{key}' is not inside stanza '{stanza}'"))),
        None => Ok(()),
    }
}

fn unauthenticated() -> WireError {
    WireError::new(
        ErrorKind::Unauthenticated,
        "no client certificate was presented; this server serves only clients with a certificate signed by its tls-server-ca-file",
    )
}

/// The refusal a client sees: the same whether or not its name appears in `tls-server-auth`
/// (the server's log says which).
fn forbidden(name: &str, stanza: &str, grants: &Grants) -> WireError {
    let why = if grants.knows(name) { "is not granted" } else { "is not named in tls-server-auth, so not granted" };
    tracing::debug!("client certificate CN '{name}' {why} stanza '{stanza}'");
    WireError::new(
        ErrorKind::Forbidden,
        format!("client certificate CN '{name}' is not granted stanza '{stanza}' on this server (tls-server-auth)"),
    )
}

/// The request's head, once its certificate is trusted and the stanza it names is granted.
fn head_of<'a>(
    settings: &Settings,
    peer: &'a Peer,
    request: &http::Request<Incoming>,
) -> Result<(Head, &'a str), WireError> {
    let name = peer.name()?;
    let head = request
        .headers()
        .get(wire::REQUEST_HEADER)
        .ok_or_else(|| WireError::new(ErrorKind::Invalid, format!("no {} header", wire::REQUEST_HEADER)))?;
    let head: Head = serde_json::from_slice(head.as_bytes())
        .map_err(|e| WireError::new(ErrorKind::Invalid, format!("invalid request head: {e}")))?;
    if head.version != wire::PROTOCOL_VERSION {
        return Err(WireError::new(
            ErrorKind::Invalid,
            format!("protocol version {} is not spoken here (this server: {})", head.version, wire::PROTOCOL_VERSION),
        ));
    }
    if let Some(stanza) = &head.stanza
        && !settings.grants.allows(name, stanza)
    {
        return Err(forbidden(name, stanza, &settings.grants));
    }
    tracing::trace!("{} ({name}): {:?}", peer.address, head.op);
    Ok((head, name))
}

/// A request for the cluster of a stanza (`pg1-host` clients).
async fn data_request(settings: &Settings, peer: &Peer, request: http::Request<Incoming>) -> Result<Answer, WireError> {
    let (head, _) = head_of(settings, peer, &request)?;
    if !is_data(&head.op) {
        return Err(WireError::new(ErrorKind::Invalid, "not a data operation"));
    }
    let stanza =
        head.stanza.ok_or_else(|| WireError::new(ErrorKind::Invalid, "a data request must name its stanza"))?;
    let cluster = settings.cluster(&stanza)?;
    data::serve(&cluster, &settings.names, head.op, request.into_body()).await
}

async fn repo_request(settings: &Settings, peer: &Peer, request: http::Request<Incoming>) -> Result<Answer, WireError> {
    let (head, name) = head_of(settings, peer, &request)?;
    // Nothing is opened (a local repository directory would be created) for a client no grant
    // names.
    if !settings.grants.knows(name) {
        return Err(forbidden(name, head.stanza.as_deref().unwrap_or("(none)"), &settings.grants));
    }
    // A write names its stanza and stays inside it: it goes to that stanza's repository as this
    // host configures it, never to another stanza's through the global one.
    let written: Option<Vec<&str>> = match &head.op {
        Op::Put { key, .. } | Op::Upload { key } => Some(vec![key.as_str()]),
        Op::Copy { to, .. } => Some(vec![to.as_str()]),
        Op::Delete => Some(Vec::new()),
        _ => None,
    };
    if let Some(keys) = &written {
        writes_in_stanza(head.stanza.as_deref(), keys)?;
    }
    let served = settings.served(head.stanza.as_deref(), head.repo)?;
    let body = request.into_body();
    let answered = match head.op {
        Op::Get { key, range, head } => {
            authorize(settings, peer, [key.as_str()])?;
            get(&served, &key, range, head).await
        }
        Op::Put { key, mode } => {
            authorize(settings, peer, [key.as_str()])?;
            put(&served, &key, mode, body).await
        }
        Op::Upload { key } => {
            authorize(settings, peer, [key.as_str()])?;
            upload(&served, &key, body).await
        }
        Op::List { prefix, offset } => list(settings, name, &served, prefix, offset),
        Op::ListDir { prefix } => list_dir(settings, name, &served, prefix).await,
        Op::Delete => delete(settings, peer, (&served, head.stanza.as_deref()), body).await,
        Op::DataList { .. } | Op::DataStat { .. } | Op::DataRead { .. } | Op::DataSeal | Op::Sql => {
            Err(WireError::new(ErrorKind::Invalid, "a data operation is not a repository request"))
        }
        Op::Copy { from, to, overwrite } => {
            authorize(settings, peer, [from.as_str(), to.as_str()])?;
            let mode = if overwrite { CopyMode::Overwrite } else { CopyMode::Create };
            let options = CopyOptions { mode, ..Default::default() };
            served
                .store
                .copy_opts(&served.path(&from)?, &served.path(&to)?, options)
                .await
                .map_err(|e| wire_error(&e))?;
            answer(client::empty(), None::<&()>)
        }
    };
    answered.map_err(|e| served.scrub(e))
}

async fn get(served: &Served, key: &str, range: Option<(u64, u64)>, head: bool) -> Result<Answer, WireError> {
    let range =
        range.map(|(start, end)| if end == u64::MAX { GetRange::Offset(start) } else { GetRange::Bounded(start..end) });
    let options = GetOptions { range, head, ..Default::default() };
    let result = served.store.get_opts(&served.path(key)?, options).await.map_err(|e| wire_error(&e))?;
    let mut meta = served.meta(&result.meta);
    meta.range = Some((result.range.start, result.range.end));
    if head {
        return answer(client::empty(), Some(&meta));
    }
    let stream = client::data_frames(result.into_stream().map(|r| r.map_err(std::io::Error::other)));
    answer(BodyExt::boxed_unsync(StreamBody::new(stream)), Some(&meta))
}

async fn put(served: &Served, key: &str, mode: Mode, body: Incoming) -> Result<Answer, WireError> {
    let bytes = Limited::new(body, wire::PUT_MAX)
        .collect()
        .await
        .map_err(|e| WireError::new(ErrorKind::Invalid, format!("reading the object for {key}: {e}")))?
        .to_bytes();
    let mode = match mode {
        Mode::Overwrite => PutMode::Overwrite,
        Mode::Create => PutMode::Create,
        Mode::Update { e_tag, version } => PutMode::Update(UpdateVersion { e_tag, version }),
    };
    let options = PutOptions { mode, ..Default::default() };
    let result = served
        .store
        .put_opts(&served.path(key)?, PutPayload::from(bytes), options)
        .await
        .map_err(|e| wire_error(&e))?;
    answer(client::empty(), Some(&Written { e_tag: result.e_tag, version: result.version }))
}

/// A streamed upload: parts written as the body arrives; a body that breaks off (the client
/// aborted, or died) aborts the upload, so nothing half-written becomes visible.
async fn upload(served: &Served, key: &str, mut body: Incoming) -> Result<Answer, WireError> {
    let path = served.path(key)?;
    // Its parts in flight count against the server-wide bound.
    let _permit = data::HEAVY_REQUESTS.acquire().await.map_err(|e| store_error(&e.to_string()))?;
    let multipart = served.store.put_multipart(&path).await.map_err(|e| wire_error(&e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(multipart, UPLOAD_PART);
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(e) = writer.wait_for_capacity(UPLOAD_PARTS_IN_FLIGHT).await {
                        let _ = writer.abort().await;
                        return Err(wire_error(&e));
                    }
                    writer.write(data);
                }
            }
            Some(Err(e)) => {
                let _ = writer.abort().await;
                return Err(WireError::new(ErrorKind::Invalid, format!("the upload of {key} broke off: {e}")));
            }
        }
    }
    let result = writer.finish().await.map_err(|e| wire_error(&e))?;
    answer(client::empty(), Some(&Written { e_tag: result.e_tag, version: result.version }))
}

/// Whether a listing may show `key` to `name`: keys of granted stanzas only.
fn visible(settings: &Settings, name: &str, key: &str) -> bool {
    stanza_of(key).is_some_and(|s| settings.grants.allows(name, s))
}

fn list_prefix(served: &Served, prefix: Option<&str>) -> Result<Option<Path>, WireError> {
    match prefix {
        Some(p) if !p.is_empty() => Ok(Some(served.path(p)?)),
        _ if served.prefix.is_empty() => Ok(None),
        _ => Ok(Some(served.path("")?)),
    }
}

fn list(
    settings: &Settings,
    name: &str,
    served: &Served,
    prefix: Option<String>,
    offset: Option<String>,
) -> Result<Answer, WireError> {
    let root = list_prefix(served, prefix.as_deref())?;
    let listing = match offset {
        Some(offset) => served.store.list_with_offset(root.as_ref(), &served.path(&offset)?),
        None => served.store.list(root.as_ref()),
    };
    let (grants, name, served) = (settings.grants.clone(), name.to_string(), served.clone());
    let lines = listing.filter_map(move |item| {
        let line = match item {
            Ok(m) => {
                let meta = served.meta(&m);
                let shown = stanza_of(&meta.key).is_some_and(|s| grants.allows(&name, s));
                shown.then(|| {
                    let mut line = serde_json::to_vec(&meta).unwrap_or_default();
                    line.push(b'\n');
                    Ok(Frame::data(Bytes::from(line)))
                })
            }
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        };
        futures::future::ready(line)
    });
    answer(BodyExt::boxed_unsync(StreamBody::new(lines)), None::<&()>)
}

async fn list_dir(
    settings: &Settings,
    name: &str,
    served: &Served,
    prefix: Option<String>,
) -> Result<Answer, WireError> {
    let root = list_prefix(served, prefix.as_deref())?;
    let result = served.store.list_with_delimiter(root.as_ref()).await.map_err(|e| wire_error(&e))?;
    let mut listing = Listing::default();
    for m in &result.objects {
        let meta = served.meta(m);
        if visible(settings, name, &meta.key) {
            listing.objects.push(meta);
        }
    }
    for p in &result.common_prefixes {
        let key = served.key_of(p);
        // `stanza/` lists the stanzas themselves: only the granted ones are shown.
        if visible(settings, name, &key) {
            listing.prefixes.push(key);
        }
    }
    let body = serde_json::to_vec(&listing).map_err(|e| store_error(&e.to_string()))?;
    answer(client::full(Bytes::from(body)), None::<&()>)
}

async fn delete(
    settings: &Settings,
    peer: &Peer,
    (served, stanza): (&Served, Option<&str>),
    body: Incoming,
) -> Result<Answer, WireError> {
    let bytes = Limited::new(body, 16 << 20)
        .collect()
        .await
        .map_err(|e| WireError::new(ErrorKind::Invalid, format!("reading the keys to delete: {e}")))?
        .to_bytes();
    let keys: Vec<String> = serde_json::from_slice(&bytes)
        .map_err(|e| WireError::new(ErrorKind::Invalid, format!("invalid list of keys to delete: {e}")))?;
    if keys.len() > wire::DELETE_BATCH {
        return Err(WireError::new(ErrorKind::Invalid, format!("more than {} keys in one delete", wire::DELETE_BATCH)));
    }
    authorize(settings, peer, keys.iter().map(String::as_str))?;
    writes_in_stanza(stanza, &keys.iter().map(String::as_str).collect::<Vec<_>>())?;
    let results: Vec<Option<WireError>> = stream::iter(keys)
        .map(|key| async move {
            let path = served.path(&key).map_err(Some)?;
            served.store.delete(&path).await.map_err(|e| Some(wire_error(&e)))
        })
        .buffered(16)
        .map(|r: Result<(), Option<WireError>>| r.err().flatten())
        .collect()
        .await;
    let body = serde_json::to_vec(&results).map_err(|e| store_error(&e.to_string()))?;
    answer(client::full(Bytes::from(body)), None::<&()>)
}

/// The `server` command: listens until SIGTERM or SIGINT; SIGHUP reloads.
pub fn run(config: &Config) -> CliResult<()> {
    let workers = config.int("process-max").and_then(|n| usize::try_from(n).ok()).unwrap_or(1).max(2);
    let rt = crate::runtime::pool(workers, None)?;
    rt.block_on(serve(config.clone()))
}

async fn serve(config: Config) -> CliResult<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let address = config.get("tls-server-address").unwrap_or("localhost").to_string();
    let port = config.int("tls-server-port").and_then(|p| u16::try_from(p).ok()).unwrap_or(8432);
    // Connections read the settings of the moment for every request: a reload that revokes a
    // grant (or replaces the CA) applies to connections already open too.
    let (publish, settings) = tokio::sync::watch::channel(Arc::new(Settings::load(config.clone())?));
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let listener = tokio::net::TcpListener::bind((address.as_str(), port)).await.map_err(|e| {
        CliError::new(ErrorCode::HostConnect, format!("unable to listen on {address}:{port}: {e}"))
            .hint("is another server already listening there (tls-server-address, tls-server-port)?")
    })?;
    let signal_error = |e: std::io::Error| CliError::new(ErrorCode::Service, format!("unable to handle signals: {e}"));
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    tracing::info!("server listening on {address}:{port}");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, address) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("unable to accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!("refused a connection from {address}: {MAX_CONNECTIONS} are open already");
                    continue;
                };
                let current = settings.clone();
                tokio::spawn(async move {
                    connection(current, tcp, address).await;
                    drop(slot);
                });
            }
            _ = hangup.recv() => {
                match config.reload(&[]).and_then(Settings::load) {
                    Ok(new) => {
                        publish.send_replace(Arc::new(new));
                        tracing::info!("configuration and certificates reloaded");
                    }
                    Err(e) => tracing::error!("reload failed, keeping the previous settings: {}", e.message),
                }
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    tracing::info!("server stopping");
    Ok(())
}

async fn connection(
    current: tokio::sync::watch::Receiver<Arc<Settings>>,
    tcp: tokio::net::TcpStream,
    address: SocketAddr,
) {
    let _ = tcp.set_nodelay(true);
    let settings = current.borrow().clone();
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, settings.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::warn!("TLS handshake with {address} failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("TLS handshake with {address} timed out");
            return;
        }
    };
    let chain =
        tls.get_ref().1.peer_certificates().unwrap_or_default().iter().map(|c| c.clone().into_owned()).collect();
    let peer = Peer::new(address, chain, &settings);
    match (&peer.name, &peer.untrusted) {
        (_, Some(why)) => tracing::warn!("connection from {address}: client certificate not trusted: {why}"),
        (Some(name), None) => tracing::debug!("connection from {address} (CN '{name}')"),
        (None, None) => tracing::debug!("connection from {address} (no client certificate)"),
    }
    let trusted = peer.name().is_ok();
    let service = hyper::service::service_fn(move |request| {
        // Every request is judged by the settings of the moment, not those of the handshake.
        let now = current.borrow().clone();
        let peer = if Arc::ptr_eq(&now, &settings) { peer.clone() } else { peer.judged_by(&now) };
        handle(now, peer, request)
    });
    let served = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Some(client::KEEP_ALIVE))
        .keep_alive_timeout(client::KEEP_ALIVE)
        .max_concurrent_streams(MAX_STREAMS)
        .initial_stream_window_size(client::STREAM_WINDOW)
        .initial_connection_window_size(client::CONNECTION_WINDOW)
        .max_frame_size(1 << 20)
        .serve_connection(TokioIo::new(tls), service);
    let served = if trusted {
        served.await
    } else {
        match tokio::time::timeout(UNTRUSTED_LIFE, served).await {
            Ok(r) => r,
            Err(_) => {
                tracing::debug!("closed the connection from {address}: no trusted certificate");
                return;
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!("connection from {address} ended: {e}");
    }
}

/// `server-ping [host]`: exit 0 when a server answers at `host` (default `tls-server-address`)
/// and `tls-server-port`.
pub fn ping(config: &Config) -> CliResult<()> {
    let host = match config.params.first() {
        Some(h) => h.clone(),
        None => match config.get("tls-server-address").unwrap_or("localhost") {
            "0.0.0.0" | "*" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            other => other.to_string(),
        },
    };
    let port = config.int("tls-server-port").and_then(|p| u16::try_from(p).ok()).unwrap_or(8432);
    let endpoint =
        client::Endpoint { option: "server-ping".into(), host, port, tls: crate::remote::tls::probe_config()? };
    let rt = crate::runtime::runtime()?;
    let pong = rt.block_on(crate::remote::client::ping(&client::Connection::new(endpoint)))?;
    tracing::info!("server {} {} answered", pong.name, pong.version);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn grants(entries: &[&str]) -> CliResult<Grants> {
        Grants::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn grants_read_as_pgbackrest_writes_them() {
        let g = grants(&["pgbackrest@uid=*", "backup-job=db,other", "reader = db"]).unwrap();
        assert!(g.allows("pgbackrest@uid", "db") && g.allows("pgbackrest@uid", "anything"));
        assert!(g.allows("backup-job", "other") && !g.allows("backup-job", "third"));
        assert!(g.allows("reader", "db"));
        assert!(!g.allows("stranger", "db") && !g.knows("stranger"));
        for bad in ["no-equals", "=db", "cn="] {
            let e = grants(&[bad]).unwrap_err();
            assert!(e.message.contains("tls-server-auth"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn keys_belong_to_the_stanza_they_name() {
        assert_eq!(stanza_of("stanza/db/archive/15-1/x"), Some("db"));
        assert_eq!(stanza_of("stanza/db"), Some("db"));
        assert_eq!(stanza_of("stanza/"), None);
        assert_eq!(stanza_of("stanza"), None);
        assert_eq!(stanza_of("other/db/x"), None);
        assert_eq!(stanza_of("archive/db/15-1/0000000100000000/x"), Some("db"));
        assert_eq!(stanza_of("backup/db/backup.info"), Some("db"));
        assert_eq!(stanza_of("archive/"), None);
        assert_eq!(stanza_of(""), None);
    }

    #[test]
    fn keys_stay_under_the_served_root() {
        let served =
            Served { store: Arc::new(object_store::memory::InMemory::new()), prefix: "repo".into(), local: None };
        assert_eq!(served.path("stanza/db/x").unwrap().as_ref(), "repo/stanza/db/x");
        for bad in ["stanza/db/../../etc/passwd", "stanza/db//x", "../x", "stanza/./db"] {
            let e = served.path(bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Invalid, "{bad}");
        }
        assert_eq!(served.key_of(&Path::from("repo/stanza/db/x")), "stanza/db/x");
    }
}
