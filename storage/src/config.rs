//! Which store to open and how: one variant per backend, with pgBackRest's `repoN-*` meaning.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::{GcpCredential, GoogleCloudStorageBuilder};
use object_store::local::LocalFileSystem;

use crate::error::{Result, StorageError};
use crate::retry::RetryPolicy;
use crate::store::RepoStore;

/// A secret value: usable, but never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `repoN-storage-verify-tls`, `repoN-storage-ca-file`, `repoN-storage-ca-path`: how the storage
/// endpoint's certificate is checked (S3, GCS, Azure).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageTls {
    /// Off: any certificate is accepted (a self-signed MinIO, as PGO's examples run it).
    pub verify: bool,
    /// CAs trusted besides the system's: a PEM file, and every `.pem`/`.crt` file of a directory.
    pub ca_file: Option<PathBuf>,
    pub ca_path: Option<PathBuf>,
}

impl Default for StorageTls {
    fn default() -> Self {
        Self { verify: true, ca_file: None, ca_path: None }
    }
}

impl StorageTls {
    /// The HTTP client options these settings make.
    fn client_options(&self) -> Result<object_store::ClientOptions> {
        let mut options = object_store::ClientOptions::new().with_allow_invalid_certificates(!self.verify);
        let mut files = Vec::new();
        if let Some(file) = &self.ca_file {
            files.push(file.clone());
        }
        if let Some(dir) = &self.ca_path {
            let listed = std::fs::read_dir(dir)
                .map_err(|e| StorageError::Config(format!("unable to list the CA directory {}: {e}", dir.display())))?;
            let mut found: Vec<PathBuf> = listed
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "pem" || x == "crt"))
                .collect();
            found.sort();
            files.extend(found);
        }
        for file in files {
            let pem = std::fs::read(&file)
                .map_err(|e| StorageError::Config(format!("unable to read the CA file {}: {e}", file.display())))?;
            let certificates = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                StorageError::Config(format!(
                    "{} holds no PEM certificate: {}",
                    file.display(),
                    crate::error::describe(&e)
                ))
            })?;
            if certificates.is_empty() {
                return Err(StorageError::Config(format!("{} holds no PEM certificate", file.display())));
            }
            for certificate in certificates {
                options = options.with_root_certificate(certificate);
            }
        }
        Ok(options)
    }
}

/// What every object store does with what it writes: `repoN-storage-tag`,
/// `repoN-storage-upload-chunk-size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectOptions {
    /// Tags on every object written (S3 `x-amz-tagging`, Azure `x-ms-tags`; GCS has none).
    pub tags: Vec<(String, String)>,
    /// The part size of streaming uploads (memory: about this times the parts in flight).
    pub upload_chunk: Option<usize>,
}

/// S3's smallest part but the last.
const S3_MIN_PART: usize = 5 << 20;

/// `repoN-s3-uri-style`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UriStyle {
    /// `https://bucket.endpoint/key` (pgBackRest's default).
    Host,
    /// `https://endpoint/bucket/key` (MinIO and most emulators).
    Path,
}

/// `repoN-type=s3`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Host, `host:port` or a URL; `http://` allows plain HTTP. `None`: AWS's endpoint for the region.
    pub endpoint: Option<String>,
    pub region: String,
    /// `repoN-path`: the key prefix inside the bucket.
    pub prefix: String,
    /// `repoN-s3-key` / `repoN-s3-key-secret` / `repoN-s3-token`; without a key, the AWS default
    /// chain (environment, web identity, container and instance credentials).
    pub key: Option<Secret>,
    pub key_secret: Option<Secret>,
    pub token: Option<Secret>,
    pub uri_style: UriStyle,
    pub tls: StorageTls,
    /// `repoN-s3-kms-key-id` / `repoN-s3-sse-customer-key`: the server-side encryption requested
    /// on every write (and, for a customer key, given on every read).
    pub sse: Option<S3Sse>,
    /// `repoN-s3-requester-pays`: requests carry `x-amz-request-payer: requester`.
    pub requester_pays: bool,
    /// `repoN-s3-sts-host`: the STS endpoint web-identity credentials are exchanged at.
    pub sts_endpoint: Option<String>,
    pub objects: ObjectOptions,
}

/// S3 server-side encryption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum S3Sse {
    /// SSE-KMS under this key id or ARN.
    Kms(String),
    /// SSE-C with this base64 256-bit key.
    CustomerKey(Secret),
}

/// `repoN-gcs-key-type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GcsAuth {
    /// Application default credentials.
    Auto,
    /// A service-account key file (`repoN-gcs-key` is its path).
    Service(PathBuf),
    /// A bearer token (`repoN-gcs-key` is the token).
    Token(Secret),
}

/// `repoN-type=gcs`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: String,
    pub auth: GcsAuth,
    /// `repoN-gcs-endpoint`: base URL (default Google's).
    pub endpoint: Option<String>,
    pub tls: StorageTls,
    /// `repoN-gcs-user-project`: the project billed for requests (`x-goog-user-project`).
    pub user_project: Option<String>,
    pub objects: ObjectOptions,
}

/// `repoN-azure-key-type`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureAuth {
    /// Shared key (`repoN-azure-key`).
    Shared(Secret),
    /// A SAS token (`repoN-azure-key` holds the query string).
    Sas(Secret),
    /// Managed identity / environment.
    Auto,
}

/// `repoN-type=azure`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    pub prefix: String,
    pub auth: AzureAuth,
    /// Blob endpoint URL including the account for emulators
    /// (`http://127.0.0.1:10000/devstoreaccount1`); default Azure's.
    pub endpoint: Option<String>,
    pub tls: StorageTls,
    pub objects: ObjectOptions,
}

/// A store given whole: a repository another pgstrata serves (`repoN-host`), as an object store.
#[derive(Clone, Debug)]
pub struct GivenStore {
    pub store: Arc<dyn ObjectStore>,
    /// For messages: `tls://host:8432/repo1`.
    pub describe: String,
}

impl PartialEq for GivenStore {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.store, &other.store)
    }
}

impl Eq for GivenStore {}

/// A repository's storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageConfig {
    /// `repoN-type=posix` (or `cifs`): a directory, e.g. a mounted volume.
    Posix {
        path: PathBuf,
    },
    S3(S3Config),
    Gcs(GcsConfig),
    Azure(AzureConfig),
    Given(GivenStore),
}

fn url_with_scheme(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.trim_end_matches('/').to_string()
    } else {
        format!("https://{}", endpoint.trim_end_matches('/'))
    }
}

fn invalid(e: object_store::Error) -> StorageError {
    StorageError::Config(crate::error::describe(&e))
}

impl StorageConfig {
    /// A short description for messages: `posix:/repo`, `s3://bucket/prefix`, ...
    pub fn describe(&self) -> String {
        match self {
            Self::Posix { path } => format!("posix:{}", path.display()),
            Self::S3(c) => format!("s3://{}/{}", c.bucket, c.prefix.trim_matches('/')),
            Self::Gcs(c) => format!("gs://{}/{}", c.bucket, c.prefix.trim_matches('/')),
            Self::Azure(c) => format!("azure://{}/{}/{}", c.account, c.container, c.prefix.trim_matches('/')),
            Self::Given(g) => g.describe.clone(),
        }
    }

    /// Opens the store. Nothing is contacted yet; a local repository directory must exist.
    pub fn open(&self, retry: RetryPolicy) -> Result<RepoStore> {
        self.open_inner(retry, false)
    }

    /// Opens the store, creating a local repository directory if it is missing (for commands
    /// that create a repository, like `stanza-create`).
    pub fn open_creating(&self, retry: RetryPolicy) -> Result<RepoStore> {
        self.open_inner(retry, true)
    }

    fn open_inner(&self, retry: RetryPolicy, create: bool) -> Result<RepoStore> {
        let (inner, prefix): (Arc<dyn ObjectStore>, &str) = match self {
            Self::Posix { path } => {
                if !path.is_absolute() {
                    return Err(StorageError::Config(format!("repo path {} must be absolute", path.display())));
                }
                if create {
                    std::fs::create_dir_all(path).map_err(|e| {
                        StorageError::Config(format!("unable to create repository directory {}: {e}", path.display()))
                    })?;
                } else if !path.is_dir() {
                    return Err(StorageError::NotFound {
                        store: self.describe(),
                        key: String::from("repository directory"),
                    });
                }
                let fs = LocalFileSystem::new_with_prefix(path)
                    .map_err(invalid)?
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                let fs = crate::local::LocalStore::new(fs, path.clone());
                return Ok(RepoStore::new(Arc::new(fs), "", self.describe(), retry).with_local_root(path.clone()));
            }
            // S3 and GCS name their uploads (see `crate::upload`); Azure's abort is a no-op.
            Self::S3(c) => {
                let s3 = Arc::new(build_s3(c, retry)?);
                let store = RepoStore::new(s3.clone(), &c.prefix, self.describe(), retry).with_multipart(s3);
                return Ok(c.objects.apply(store, S3_MIN_PART));
            }
            Self::Gcs(c) => {
                if !c.objects.tags.is_empty() {
                    return Err(StorageError::Config("GCS objects have no tags: unset repoN-storage-tag".into()));
                }
                let gcs = Arc::new(build_gcs(c, retry)?);
                let store = RepoStore::new(gcs.clone(), &c.prefix, self.describe(), retry).with_multipart(gcs);
                return Ok(c.objects.apply(store, 1));
            }
            Self::Azure(c) => {
                let store = RepoStore::new(Arc::new(build_azure(c, retry)?), &c.prefix, self.describe(), retry);
                return Ok(c.objects.apply(store, 1));
            }
            Self::Given(g) => (g.store.clone(), ""),
        };
        Ok(RepoStore::new(inner, prefix, self.describe(), retry))
    }
}

impl ObjectOptions {
    /// The store with these tags and part size (at least `min_part`, the backend's smallest).
    fn apply(&self, store: RepoStore, min_part: usize) -> RepoStore {
        let store = store.with_tags(&self.tags);
        match self.upload_chunk {
            Some(chunk) => store.with_upload_parts(chunk.max(min_part), crate::store::DEFAULT_PARTS_IN_FLIGHT),
            None => store,
        }
    }
}

fn build_s3(c: &S3Config, retry: RetryPolicy) -> Result<object_store::aws::AmazonS3> {
    if c.bucket.is_empty() {
        return Err(StorageError::Config("repo s3 bucket is not set (repo1-s3-bucket)".into()));
    }
    let mut b = match &c.key {
        Some(_) => AmazonS3Builder::new(),
        None => AmazonS3Builder::from_env(),
    };
    b = b
        .with_client_options(c.tls.client_options()?)
        .with_bucket_name(&c.bucket)
        .with_region(&c.region)
        .with_virtual_hosted_style_request(c.uri_style == UriStyle::Host)
        .with_retry(retry.http_retry_config());
    if let Some(endpoint) = &c.endpoint {
        let url = url_with_scheme(endpoint);
        b = b.with_allow_http(url.starts_with("http://")).with_endpoint(url);
    }
    match (&c.key, &c.key_secret) {
        (Some(key), Some(secret)) => {
            b = b.with_access_key_id(key.expose()).with_secret_access_key(secret.expose());
            if let Some(token) = &c.token {
                b = b.with_token(token.expose());
            }
        }
        (Some(_), None) => {
            return Err(StorageError::Config("repo1-s3-key is set but repo1-s3-key-secret is not".into()));
        }
        (None, _) => {}
    }
    match &c.sse {
        Some(S3Sse::Kms(key)) => b = b.with_sse_kms_encryption(key),
        Some(S3Sse::CustomerKey(key)) => b = b.with_ssec_encryption(key.expose()),
        None => {}
    }
    if c.requester_pays {
        b = b.with_request_payer(true);
    }
    if let Some(sts) = &c.sts_endpoint {
        b = b.with_config(object_store::aws::AmazonS3ConfigKey::StsEndpoint, url_with_scheme(sts));
    }
    b.build().map_err(invalid)
}

fn build_gcs(c: &GcsConfig, retry: RetryPolicy) -> Result<object_store::gcp::GoogleCloudStorage> {
    if c.bucket.is_empty() {
        return Err(StorageError::Config("repo gcs bucket is not set (repo1-gcs-bucket)".into()));
    }
    let mut b = match c.auth {
        GcsAuth::Auto => GoogleCloudStorageBuilder::from_env(),
        _ => GoogleCloudStorageBuilder::new(),
    };
    // A plain-HTTP endpoint (an emulator) must be allowed on the client options themselves.
    let plain = c.endpoint.as_deref().is_some_and(|e| url_with_scheme(e).starts_with("http://"));
    let mut options = c.tls.client_options()?.with_allow_http(plain);
    if let Some(project) = &c.user_project {
        let value = http::HeaderValue::from_str(project)
            .map_err(|_| StorageError::Config(format!("'{project}' is not a valid GCS project id")))?;
        let mut headers = http::HeaderMap::new();
        headers.insert("x-goog-user-project", value);
        options = options.with_default_headers(headers);
    }
    b = b.with_client_options(options).with_bucket_name(&c.bucket).with_retry(retry.http_retry_config());
    if let Some(endpoint) = &c.endpoint {
        b = b.with_base_url(&url_with_scheme(endpoint));
    }
    match &c.auth {
        GcsAuth::Auto => {}
        GcsAuth::Service(path) => b = b.with_service_account_path(path.to_string_lossy()),
        GcsAuth::Token(token) => {
            let cred = GcpCredential { bearer: token.expose().to_string() };
            b = b.with_credentials(Arc::new(object_store::StaticCredentialProvider::new(cred)));
        }
    }
    b.build().map_err(invalid)
}

fn build_azure(c: &AzureConfig, retry: RetryPolicy) -> Result<object_store::azure::MicrosoftAzure> {
    if c.account.is_empty() || c.container.is_empty() {
        return Err(StorageError::Config(
            "repo azure account and container must be set (repo1-azure-account, repo1-azure-container)".into(),
        ));
    }
    let mut b = MicrosoftAzureBuilder::new()
        .with_client_options(c.tls.client_options()?)
        .with_account(&c.account)
        .with_container_name(&c.container)
        .with_retry(retry.http_retry_config());
    if let Some(endpoint) = &c.endpoint {
        let url = url_with_scheme(endpoint);
        b = b.with_allow_http(url.starts_with("http://")).with_endpoint(url);
    }
    match &c.auth {
        AzureAuth::Shared(key) => b = b.with_access_key(key.expose()),
        AzureAuth::Sas(sas) => {
            let pairs: Vec<(String, String)> = sas
                .expose()
                .trim_start_matches('?')
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), v.to_string())
                })
                .collect();
            b = b.with_sas_authorization(pairs);
        }
        AzureAuth::Auto => {}
    }
    b.build().map_err(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let c = StorageConfig::S3(S3Config {
            bucket: "b".into(),
            endpoint: None,
            region: "us-east-1".into(),
            prefix: "/repo".into(),
            key: Some(Secret::new("AKIAEXAMPLE")),
            key_secret: Some(Secret::new("very-secret-value")),
            token: None,
            uri_style: UriStyle::Host,
            tls: StorageTls::default(),
            sse: None,
            requester_pays: false,
            sts_endpoint: None,
            objects: Default::default(),
        });
        let text = format!("{c:?}");
        assert!(!text.contains("very-secret-value") && !text.contains("AKIAEXAMPLE"), "{text}");
        assert_eq!(c.describe(), "s3://b/repo");
    }

    #[test]
    fn incomplete_configs_are_refused() {
        let s3 = StorageConfig::S3(S3Config {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            prefix: String::new(),
            key: Some(Secret::new("k")),
            key_secret: None,
            token: None,
            uri_style: UriStyle::Path,
            tls: StorageTls::default(),
            sse: None,
            requester_pays: false,
            sts_endpoint: None,
            objects: Default::default(),
        });
        assert!(matches!(s3.open(RetryPolicy::none()), Err(StorageError::Config(_))));
        let posix = StorageConfig::Posix { path: "relative/dir".into() };
        assert!(matches!(posix.open(RetryPolicy::none()), Err(StorageError::Config(_))));
    }
}
