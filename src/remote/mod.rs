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

/// Default port of a TLS server (`tls-server-port`, `repoN-host-port`).
pub const DEFAULT_PORT: u16 = 8432;
