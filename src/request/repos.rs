//! Repositories and hosts from their options: `repoN-*` into a [`RepoTarget`], `repoN-host` /
//! `pgN-host` into an endpoint, `compress-*` and `buffer-size` into blob settings.

use std::path::PathBuf;
use std::sync::Arc;

use pgstrata_repo_format::layout::StanzaLayout;
use pgstrata_repo_format::{BlobSettings, Compression};
use pgstrata_storage::{
    AzureAuth, AzureConfig, GcsAuth, GcsConfig, ObjectOptions, S3Config, S3Sse, Secret, StorageConfig, StorageTls,
    UriStyle,
};

use crate::config::Config;
use crate::error::{CliError, CliResult, ErrorCode};
use crate::remote::{client, tls};
use crate::repo::{CipherChoice, RepoTarget};

/// Default port of a TLS server (`tls-server-port`, `repoN-host-port`).
pub use crate::remote::DEFAULT_PORT;

/// Every repository index that has any option set (`repo1` when none has); `--repo` alone when
/// given.
pub fn repo_indexes(config: &Config) -> Vec<u32> {
    if let Some(one) = config.int("repo").and_then(|v| u32::try_from(v).ok()) {
        return vec![one];
    }
    let found = config.repo_indexes_set();
    if found.is_empty() { vec![1] } else { found }
}

/// The repositories a command works on: `--repo`, else every one configured.
pub fn repo_targets(config: &Config) -> Vec<RepoTarget> {
    repo_indexes(config).into_iter().map(|i| repo_target(config, i)).collect()
}

/// Repository `index` as its options describe it.
pub fn repo_target(config: &Config, index: u32) -> RepoTarget {
    let pass_hint = format!(
        "set it in the configuration file or the environment ({}REPO{index}_CIPHER_PASS), never on the command line",
        config.flavor.env_prefix()
    );
    RepoTarget {
        index,
        storage: storage_of(config, index),
        cipher: CipherChoice {
            kind: config.get(&format!("repo{index}-cipher-type")).unwrap_or("none").to_string(),
            pass: config.get(&format!("repo{index}-cipher-pass")).map(Secret::new),
            pass_hint,
        },
    }
}

/// The repository `--repo` names (`repo1` by default): the one commands like `repo-ls` and
/// `backup` work on.
pub fn chosen_repo(config: &Config) -> RepoTarget {
    repo_target(config, config.repo_index())
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
fn repo_store(config: &Config, index: u32) -> CliResult<pgstrata_storage::GivenStore> {
    let endpoint = endpoint(config, &format!("repo{index}"))?;
    let connection = Arc::new(client::Connection::new(endpoint));
    let store = client::RemoteStore::new(connection, config.get("stanza"), index);
    let describe = store.to_string();
    Ok(pgstrata_storage::GivenStore { store: Arc::new(store), describe })
}

/// The storage of repository `index`, from its `repoN-*` options; through its repository host's
/// server when `repoN-host` is set.
fn storage_of(config: &Config, index: u32) -> CliResult<StorageConfig> {
    if config.get(&format!("repo{index}-host")).is_some() {
        return Ok(StorageConfig::Given(repo_store(config, index)?));
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
