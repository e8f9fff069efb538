//! Hosts talking to each other, the client side and what both sides share: pgstrata to pgstrata
//! over HTTP/2 with mutual TLS (rustls, hyper), as PGO deploys pgBackRest. The `server` command
//! itself is a front end of its own (`crate::server`).
//!
//! - [`client`]: a connection to a server, and [`client::RemoteStore`], a served repository as
//!   one more object store, so every command works on it unchanged.
//! - [`wire`]: the requests and answers; [`tls`]: TLS from PEM files; [`cert`]: the common name
//!   of a certificate.

pub mod cert;
pub mod client;
pub mod data;
pub mod tls;
pub mod wire;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};

/// Default port of a TLS server (`tls-server-port`, `repoN-host-port`).
pub const DEFAULT_PORT: u16 = 8432;

/// The endpoint named by `<prefix>-host` (`repo1`, `pg1`) and its `-host-*` options.
pub fn endpoint(config: &Config, prefix: &str) -> CliResult<client::Endpoint> {
    let option = format!("{prefix}-host");
    let host = config.require(&option)?.to_string();
    let kind = config.get(&format!("{option}-type")).unwrap_or("ssh");
    if kind != "tls" {
        return Err(CliError::new(
            ErrorCode::OptionInvalidValue,
            format!("{option}-type={kind} is not supported: pgstrata reaches other hosts over TLS only"),
        )
        .hint(format!("run `pgstrata server` on {host} and set {option}-type=tls")));
    }
    if config.get(&format!("{option}-ca-path")).is_some() {
        return Err(CliError::new(ErrorCode::OptionInvalidValue, format!("{option}-ca-path is not supported"))
            .hint(format!("give the CA certificate as {option}-ca-file")));
    }
    let file =
        |suffix: &str| -> CliResult<PathBuf> { Ok(PathBuf::from(config.require(&format!("{option}-{suffix}"))?)) };
    let tls = tls::client_config(&option, &file("ca-file")?, &file("cert-file")?, &file("key-file")?)?;
    let port = config.int(&format!("{option}-port")).and_then(|p| u16::try_from(p).ok()).unwrap_or(DEFAULT_PORT);
    Ok(client::Endpoint { option, host, port, tls })
}

/// Repository `index` behind `repoN-host`, as a store.
pub fn repo_store(config: &Config, index: u32) -> CliResult<pgstrata_storage::GivenStore> {
    let endpoint = endpoint(config, &format!("repo{index}"))?;
    let connection = Arc::new(client::Connection::new(endpoint));
    let store = client::RemoteStore::new(connection, config.get("stanza"), index);
    let describe = store.to_string();
    Ok(pgstrata_storage::GivenStore { store: Arc::new(store), describe })
}
