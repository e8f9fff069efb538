//! A configured repository with its stanza: opening it, and reading and writing the rewritten
//! metadata (stanza info, backup catalog) with their `.copy` twins.

use std::path::PathBuf;

use bytes::Bytes;
use pgstrata_repo_format::layout::{StanzaLayout, copy_of};
use pgstrata_repo_format::meta::{
    BackupCatalog, CipherInfo, DbEntry, MetaKind, StanzaInfo, decode_meta, encode_meta, open_meta, seal_meta,
};
use pgstrata_repo_format::{BlobSettings, Compression, DataKey};
use pgstrata_storage::{
    AzureAuth, AzureConfig, GcsAuth, GcsConfig, ObjectOptions, RepoStore, RetryPolicy, S3Config, S3Sse, Secret,
    StorageConfig, StorageTls, UriStyle,
};

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};

/// Every repository index that has any option set (`repo1` when none has).
pub fn repo_indexes(config: &Config) -> Vec<u32> {
    if let Some(one) = config.int("repo").and_then(|v| u32::try_from(v).ok()) {
        return vec![one];
    }
    let found = config.repo_indexes_set();
    if found.is_empty() { vec![1] } else { found }
}

/// How new blobs are written: `compress-type`, `compress-level`, `buffer-size`.
pub fn blob_settings(config: &Config) -> CliResult<BlobSettings> {
    let level = config.int("compress-level").and_then(|v| i32::try_from(v).ok());
    let compression = Compression::from_option(config.get("compress-type").unwrap_or("zst"), level)?;
    let frame_size = config.size("buffer-size").and_then(|v| usize::try_from(v).ok()).unwrap_or(1 << 20);
    Ok(BlobSettings { compression, frame_size })
}

/// The stanza name; required by every stanza command.
pub fn stanza_name(config: &Config) -> CliResult<String> {
    let name = config.require("stanza")?.to_string();
    StanzaLayout::new(&name)?;
    Ok(name)
}

/// An opened repository of one stanza.
#[derive(Debug)]
pub struct Repo {
    pub index: u32,
    pub store: RepoStore,
    pub layout: StanzaLayout,
    pub info: StanzaInfo,
    pub key: Option<DataKey>,
}

impl Repo {
    /// `repo1 (posix:/var/lib/pgstrata)`, for messages.
    pub fn name(&self) -> String {
        format!("repo{} ({})", self.index, self.store.describe())
    }

    pub fn current_db(&self) -> CliResult<&DbEntry> {
        self.info.current_db().ok_or_else(|| {
            CliError::new(ErrorCode::RepoInvalid, format!("{}: stanza info has no database", self.name()))
        })
    }

    pub async fn load_catalog(&self) -> CliResult<BackupCatalog> {
        let key = self.layout.backup_catalog();
        load_twin(&self.store, &key, |bytes, what| {
            open_meta(bytes, MetaKind::BackupCatalog, what, self.key.as_ref()).map_err(CliError::from)
        })
        .await?
        .ok_or_else(|| {
            CliError::new(ErrorCode::FileMissing, format!("{}: backup catalog {key} is missing", self.name()))
        })
    }

    /// The catalog and the version of it a writer read, for [`save_catalog`](Self::save_catalog):
    /// only a catalog nobody else wrote since is replaced.
    pub async fn load_catalog_for_update(&self) -> CliResult<(BackupCatalog, CatalogVersion)> {
        let key = self.layout.backup_catalog();
        let decode = |bytes: &[u8], what: &str| {
            open_meta(bytes, MetaKind::BackupCatalog, what, self.key.as_ref()).map_err(CliError::from)
        };
        match self.store.get_versioned(&key).await {
            Ok((bytes, version)) => match decode(&bytes, &key) {
                Ok(catalog) => return Ok((catalog, CatalogVersion(Some(version)))),
                Err(e) if e.code == ErrorCode::Crypto => return Err(e),
                Err(_) => {}
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        // The main object is missing or damaged: read as readers do (the copy), and rewrite
        // the main object without a condition.
        Ok((self.load_catalog().await?, CatalogVersion(None)))
    }

    /// Writes the catalog (main object, then copy). With the version it was read at, only if
    /// nobody wrote it since: a writer paused past its lease (another took it over and wrote)
    /// is refused (50) and commits nothing. Returns the version written.
    pub async fn save_catalog(
        &self,
        catalog: &BackupCatalog,
        settings: BlobSettings,
        read: &CatalogVersion,
    ) -> CliResult<CatalogVersion> {
        let bytes = Bytes::from(seal_meta(MetaKind::BackupCatalog, catalog, settings, self.key.as_ref())?);
        let key = self.layout.backup_catalog();
        let written = match &read.0 {
            None => {
                self.store.put(&key, bytes.clone()).await?;
                None
            }
            Some(version) => match self.store.put_if(&key, bytes.clone(), version.clone()).await {
                Ok(v) => Some(v),
                Err(e) if e.is_changed() => {
                    return Err(CliError::new(
                        ErrorCode::LockAcquire,
                        format!(
                            "{}: the backup catalog changed since this command read it: another writer took \
                             over the repository's lease; nothing was committed",
                            self.name()
                        ),
                    ));
                }
                Err(e) => return Err(e.into()),
            },
        };
        self.store.put(&copy_of(&key), bytes).await?;
        Ok(CatalogVersion(written))
    }
}

/// The version of the backup catalog a writer read (`None`: write without a condition).
#[derive(Clone, Debug, Default)]
pub struct CatalogVersion(Option<pgstrata_storage::store::ObjectVersion>);

/// Opens repository `index` for `stanza`, which must exist there, and unlocks its key.
pub async fn open_repo(config: &Config, index: u32, stanza: &str) -> CliResult<Repo> {
    let store = storage_of(config, index)?.open(RetryPolicy::default())?;
    let layout = StanzaLayout::new(stanza)?;
    let Some(info) = load_stanza_info(&store, &layout).await? else {
        return Err(CliError::new(
            ErrorCode::FileMissing,
            format!("stanza '{stanza}' does not exist in repo{index} ({})", store.describe()),
        )
        .hint("has the stanza-create command been run?")
        .hint("is the stanza name and repository configuration right?"));
    };
    let key = unlock(config, index, &info)?;
    Ok(Repo { index, store, layout, info, key })
}

/// The data key of an encrypted stanza, checked against `repoN-cipher-type` / `-cipher-pass`.
pub fn unlock(config: &Config, index: u32, info: &StanzaInfo) -> CliResult<Option<DataKey>> {
    let configured = config.get(&format!("repo{index}-cipher-type")).unwrap_or("none");
    match &info.cipher {
        CipherInfo::None if configured == "none" => Ok(None),
        CipherInfo::None => Err(CliError::new(
            ErrorCode::Crypto,
            format!("repo{index}-cipher-type is {configured}, but the stanza in repo{index} is not encrypted"),
        )
        .hint(format!("set repo{index}-cipher-type=none for this repository"))),
        CipherInfo::Aes256Gcm { key } => {
            if configured != "aes-256-gcm" {
                return Err(CliError::new(
                    ErrorCode::Crypto,
                    format!("the stanza in repo{index} is encrypted (aes-256-gcm), but repo{index}-cipher-type is {configured}"),
                )
                .hint(format!("set repo{index}-cipher-type=aes-256-gcm and repo{index}-cipher-pass")));
            }
            let pass = passphrase(config, index)?;
            Ok(Some(key.unwrap_key(pass.as_bytes())?))
        }
    }
}

/// `repoN-cipher-pass`, required when encryption is on.
pub fn passphrase(config: &Config, index: u32) -> CliResult<String> {
    config.get(&format!("repo{index}-cipher-pass")).map(str::to_string).ok_or_else(|| {
        CliError::new(ErrorCode::OptionRequired, format!("repo{index}-cipher-pass is required for an encrypted repository"))
            .hint(format!(
                "set it in the configuration file or the environment ({}REPO{index}_CIPHER_PASS), never on the command line",
                config.flavor.env_prefix()
            ))
    })
}

/// Reads the stanza info (main, then `.copy`); `None` when neither exists.
pub async fn load_stanza_info(store: &RepoStore, layout: &StanzaLayout) -> CliResult<Option<StanzaInfo>> {
    load_twin(store, &layout.stanza_info(), |bytes, what| {
        decode_meta(bytes, MetaKind::StanzaInfo, what).map_err(CliError::from)
    })
    .await
}

/// Writes the stanza info (main, then `.copy`).
pub async fn save_stanza_info(store: &RepoStore, layout: &StanzaLayout, info: &StanzaInfo) -> CliResult<()> {
    let bytes = encode_meta(MetaKind::StanzaInfo, info)?;
    save_twin(store, &layout.stanza_info(), Bytes::from(bytes)).await
}

/// Reads a rewritten metadata object: the main key, then its copy; both errors if neither decodes.
async fn load_twin<T>(
    store: &RepoStore,
    key: &str,
    decode: impl Fn(&[u8], &str) -> CliResult<T>,
) -> CliResult<Option<T>> {
    let mut errors = Vec::new();
    let mut missing = 0;
    for k in [key.to_string(), copy_of(key)] {
        match store.get(&k).await {
            Ok(bytes) => match decode(&bytes, &k) {
                Ok(v) => {
                    if !errors.is_empty() {
                        tracing::warn!("{} is damaged, using {k}: {}", key, errors.join("; "));
                    }
                    return Ok(Some(v));
                }
                // A wrong passphrase is not damage: report it as it is.
                Err(e) if e.code == ErrorCode::Crypto => return Err(e),
                Err(e) => errors.push(e.message),
            },
            Err(e) if e.is_not_found() => missing += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if missing == 2 {
        return Ok(None);
    }
    Err(CliError::new(ErrorCode::Format, format!("unable to read {key} or its copy: {}", errors.join("; "))))
}

/// Writes a rewritten metadata object: the main key first, then its copy.
async fn save_twin(store: &RepoStore, key: &str, bytes: Bytes) -> CliResult<()> {
    store.put(key, bytes.clone()).await?;
    store.put(&copy_of(key), bytes).await?;
    Ok(())
}

/// The storage of repository `index`, from its `repoN-*` options; through its repository host's
/// server when `repoN-host` is set.
pub fn storage_of(config: &Config, index: u32) -> CliResult<StorageConfig> {
    if config.get(&format!("repo{index}-host")).is_some() {
        return Ok(StorageConfig::Given(crate::remote::repo_store(config, index)?));
    }
    let opt = |suffix: &str| config.get(&format!("repo{index}-{suffix}")).map(str::to_string);
    let need = |suffix: &str| {
        opt(suffix).ok_or_else(|| {
            CliError::new(
                ErrorCode::OptionRequired,
                format!("{} command requires option: repo{index}-{suffix}", config.command.name),
            )
        })
    };
    let path = need("path")?;
    let endpoint = |key: &str| {
        opt(key).map(|e| match opt("storage-port") {
            Some(port) if !e.rsplit(':').next().is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) => {
                format!("{e}:{port}")
            }
            _ => e,
        })
    };
    let kind = opt("type").unwrap_or_else(|| "posix".into());
    // repoN-storage-tag (key=value, repeatable) and repoN-storage-upload-chunk-size.
    let objects = || -> CliResult<ObjectOptions> {
        let tags = config
            .list(&format!("repo{index}-storage-tag"))
            .iter()
            .map(|t| {
                t.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| {
                    CliError::new(
                        ErrorCode::OptionInvalidValue,
                        format!("'{t}' is not valid for 'repo{index}-storage-tag' option: give key=value"),
                    )
                })
            })
            .collect::<CliResult<Vec<_>>>()?;
        let upload_chunk =
            config.size(&format!("repo{index}-storage-upload-chunk-size")).and_then(|v| usize::try_from(v).ok());
        Ok(ObjectOptions { tags, upload_chunk })
    };
    // repoN-storage-verify-tls=n: any certificate (a self-signed MinIO); the CA options add
    // trusted CAs.
    let tls = StorageTls {
        verify: opt("storage-verify-tls").as_deref() != Some("n"),
        ca_file: opt("storage-ca-file").map(PathBuf::from),
        ca_path: opt("storage-ca-path").map(PathBuf::from),
    };
    Ok(match kind.as_str() {
        "posix" | "cifs" => {
            let path = PathBuf::from(&path);
            if !path.is_absolute() {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{}' is not valid for 'repo{index}-path' option: it must be absolute", path.display()),
                ));
            }
            StorageConfig::Posix { path }
        }
        "s3" => {
            let key_type = opt("s3-key-type").unwrap_or_else(|| "shared".into());
            let (key, key_secret) = if key_type == "shared" {
                (Some(Secret::new(need("s3-key")?)), Some(Secret::new(need("s3-key-secret")?)))
            } else {
                (None, None)
            };
            StorageConfig::S3(S3Config {
                bucket: need("s3-bucket")?,
                endpoint: endpoint("s3-endpoint"),
                region: need("s3-region")?,
                prefix: path,
                key,
                key_secret,
                token: opt("s3-token").map(Secret::new),
                uri_style: if opt("s3-uri-style").as_deref() == Some("path") { UriStyle::Path } else { UriStyle::Host },
                tls,
                sse: match (opt("s3-kms-key-id"), opt("s3-sse-customer-key")) {
                    (Some(_), Some(_)) => {
                        return Err(CliError::new(
                            ErrorCode::OptionInvalid,
                            format!(
                                "repo{index}-s3-kms-key-id and repo{index}-s3-sse-customer-key exclude each other: \
                                 S3 encrypts an object with one of them"
                            ),
                        ));
                    }
                    (Some(kms), None) => Some(S3Sse::Kms(kms)),
                    (None, Some(key)) => Some(S3Sse::CustomerKey(Secret::new(key))),
                    (None, None) => None,
                },
                requester_pays: opt("s3-requester-pays").as_deref() == Some("y"),
                sts_endpoint: opt("s3-sts-host"),
                objects: objects()?,
            })
        }
        "gcs" => {
            let auth = match opt("gcs-key-type").as_deref() {
                Some("token") => GcsAuth::Token(Secret::new(need("gcs-key")?)),
                Some("auto") => GcsAuth::Auto,
                _ => GcsAuth::Service(PathBuf::from(need("gcs-key")?)),
            };
            StorageConfig::Gcs(GcsConfig {
                bucket: need("gcs-bucket")?,
                prefix: path,
                auth,
                endpoint: endpoint("gcs-endpoint"),
                tls,
                user_project: opt("gcs-user-project"),
                objects: objects()?,
            })
        }
        "azure" => {
            let auth = match opt("azure-key-type").as_deref() {
                Some("sas") => AzureAuth::Sas(Secret::new(need("azure-key")?)),
                Some("auto") => AzureAuth::Auto,
                _ => AzureAuth::Shared(Secret::new(need("azure-key")?)),
            };
            let account = need("azure-account")?;
            // An endpoint given as a URL with a path is used as it is (the account in it);
            // otherwise the account goes into the host (host style) or the path (path style).
            let azure_endpoint = endpoint("azure-endpoint").map(|e| {
                let (scheme, rest) = e.split_once("://").unwrap_or(("https", e.as_str()));
                if rest.trim_end_matches('/').contains('/') {
                    e.clone()
                } else if opt("azure-uri-style").as_deref() == Some("path") {
                    format!("{scheme}://{}/{account}", rest.trim_end_matches('/'))
                } else {
                    format!("{scheme}://{account}.{}", rest.trim_end_matches('/'))
                }
            });
            StorageConfig::Azure(AzureConfig {
                account,
                container: need("azure-container")?,
                prefix: path,
                auth,
                endpoint: azure_endpoint,
                tls,
                objects: objects()?,
            })
        }
        other => {
            return Err(CliError::new(
                ErrorCode::OptionInvalidValue,
                format!("repo{index}-type '{other}' is not supported"),
            ));
        }
    })
}
