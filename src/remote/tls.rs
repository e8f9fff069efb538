//! TLS set-up of both sides from PEM files: the server asks every client for a certificate
//! signed by `tls-server-ca-file`; a client checks the server against `repoN-host-ca-file` /
//! `pgN-host-ca-file` and presents its own certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{CliError, CliResult, ErrorCode};

/// HTTP/2 is all both sides speak.
const ALPN: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn bad_file(option: &str, path: &Path, detail: impl std::fmt::Display) -> CliError {
    CliError::new(ErrorCode::OptionInvalidValue, format!("unable to load {option} '{}': {detail}", path.display()))
}

/// The certificates of a PEM file (a chain: the leaf first).
pub fn certificates(option: &str, path: &Path) -> CliResult<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad_file(option, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_file(option, path, e))?;
    if certs.is_empty() {
        return Err(bad_file(option, path, "no certificate in it"));
    }
    Ok(certs)
}

/// The private key of a PEM file.
pub fn private_key(option: &str, path: &Path) -> CliResult<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| bad_file(option, path, e))
}

fn roots(option: &str, path: &Path) -> CliResult<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(option, path)? {
        roots.add(cert).map_err(|e| bad_file(option, path, e))?;
    }
    Ok(roots)
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> CliError {
    CliError::new(ErrorCode::OptionInvalidValue, format!("unable to set up TLS ({what}): {e}"))
}

/// The files a server is configured with.
#[derive(Clone, Debug)]
pub struct ServerFiles<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
}

/// The server's TLS, and the check of client certificates against `tls-server-ca-file`.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl ServerTls {
    /// Checks a client's certificate chain (leaf first) against the CA: `Err` says why it is
    /// not trusted.
    pub fn check_client(&self, chain: &[CertificateDer<'_>]) -> Result<(), String> {
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
        self.verifier
            .verify_client_cert(leaf, intermediates, rustls_pki_types::UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The server's TLS: its certificate, and client certificates asked for but checked after the
/// handshake ([`ServerTls::check_client`]; the handshake still proves the client holds the
/// key). A client without a certificate, or with one the CA did not sign, then gets a clear
/// refusal for every request but `/ping` (the liveness probe has no certificate) instead of a
/// connection closed without a word, which is all a failed handshake tells an HTTP/2 client.
pub fn server_config(files: &ServerFiles<'_>) -> CliResult<ServerTls> {
    let roots = roots("tls-server-ca-file", files.ca)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .allow_unauthenticated()
        .build()
        .map_err(|e| tls_error("client verifier", e))?;
    let deferred = Arc::new(Deferred(verifier.clone()));
    let certs = certificates("tls-server-cert-file", files.cert)?;
    let key = private_key("tls-server-key-file", files.key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_client_cert_verifier(deferred)
        .with_single_cert(certs, key)
        .map_err(|e| bad_file("tls-server-key-file", files.key, e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(ServerTls { config: Arc::new(config), verifier })
}

/// Asks for a client certificate and checks the client's handshake signature with it, leaving
/// the chain's trust to [`ServerTls::check_client`].
#[derive(Debug)]
struct Deferred(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for Deferred {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A client's TLS: the server verified against `ca`, our certificate presented.
pub fn client_config(prefix: &str, ca: &Path, cert: &Path, key: &Path) -> CliResult<Arc<ClientConfig>> {
    let roots = roots(&format!("{prefix}-ca-file"), ca)?;
    let certs = certificates(&format!("{prefix}-cert-file"), cert)?;
    let key_der = private_key(&format!("{prefix}-key-file"), key)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key_der)
        .map_err(|e| bad_file(&format!("{prefix}-key-file"), key, e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// The liveness probe's TLS: no client certificate, and the server's certificate not checked
/// (the probe runs next to the server and learns nothing but that it answers).
pub fn probe_config() -> CliResult<Arc<ClientConfig>> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider())))
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Accepts any server certificate whose handshake signature is valid; used by the probe only.
#[derive(Debug)]
struct AnyServer(Arc<CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
