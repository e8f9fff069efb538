//! WAL-G's configuration, read from the environment only (Spilo writes it as an `envdir`),
//! translated into pgstrata's options: which storage and where (`WALG_*_PREFIX`), its
//! credentials (`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`, `AZURE_STORAGE_*`), compression,
//! encryption, concurrency, and the cluster (`PGDATA`, `PGHOST`, `PGPORT`, `PGUSER`).
//!
//! Pure: an environment in, [`WalgSettings`] out; nothing is read but the key files named by
//! the environment.

use std::path::PathBuf;

use crate::error::{CliError, CliResult, ErrorCode};

/// The stanza a WAL-G prefix holds (one cluster per prefix): `<prefix>/stanza/<STANZA>/`.
pub const STANZA: &str = "main";

/// Which backup a delta is taken from (`WALG_DELTA_ORIGIN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaOrigin {
    /// The latest backup, full or delta (an incremental).
    Latest,
    /// The latest full backup (a differential).
    LatestFull,
}

/// What the environment configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalgSettings {
    /// pgstrata options (`repo1-type`, `repo1-s3-key`, …) with their values; secrets among them
    /// are passed to the engine as environment, never as arguments.
    pub options: Vec<(String, String)>,
    /// The data directory (`PGDATA`), when set.
    pub pgdata: Option<PathBuf>,
    pub upload_concurrency: u32,
    pub download_concurrency: u32,
    /// Deltas in a row before the next backup is full again; 0: every backup is full.
    pub delta_max_steps: u32,
    pub delta_origin: DeltaOrigin,
    /// Variables not understood, for a warning each.
    pub warnings: Vec<String>,
}

/// Every `WALG_*` / `WALE_*` variable read here or knowingly ignored (no effect on pgstrata).
const KNOWN: &[&str] = &[
    "WALG_S3_PREFIX",
    "WALE_S3_PREFIX",
    "WALG_GS_PREFIX",
    "WALE_GS_PREFIX",
    "WALG_AZ_PREFIX",
    "WALE_WABS_PREFIX",
    "WALG_FILE_PREFIX",
    "WALE_S3_ENDPOINT",
    "WALG_COMPRESSION_METHOD",
    "WALG_LIBSODIUM_KEY",
    "WALG_LIBSODIUM_KEY_PATH",
    "WALG_LIBSODIUM_KEY_TRANSFORM",
    "WALG_PGP_KEY",
    "WALG_PGP_KEY_PATH",
    "WALG_PGP_KEY_PASSPHRASE",
    "WALG_UPLOAD_CONCURRENCY",
    "WALG_DOWNLOAD_CONCURRENCY",
    "WALG_DELTA_MAX_STEPS",
    "WALG_DELTA_ORIGIN",
    "WALG_PREVENT_WAL_OVERWRITE",
    "WALG_LOG_LEVEL",
    // Spilo's own switches and settings pgstrata has no use for (no effect).
    "WALG_BACKUP_COMPRESSION_METHOD",
    "WALG_BACKUP_FROM_REPLICA",
    "WALG_UPLOAD_DISK_CONCURRENCY",
    "WALG_DISK_RATE_LIMIT",
    "WALG_NETWORK_RATE_LIMIT",
    "WALG_SENTINEL_USER_DATA",
    "WALG_S3_SSE",
    "WALG_S3_SSE_KMS_ID",
    "WALG_DISABLE_S3_SSE",
    "WALG_S3_CA_CERT_FILE",
    "WALG_AZURE_BUFFER_SIZE",
    "WALG_AZURE_MAX_BUFFERS",
    "WALE_ENV_DIR",
    "WALE_LOG_DESTINATION",
];

/// Reads WAL-G's variables from `env`.
pub fn translate(env: &[(String, String)]) -> CliResult<WalgSettings> {
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty());
    let mut options: Vec<(String, String)> = Vec::new();
    let mut set = |name: &str, value: &str| options.push((name.to_string(), value.to_string()));
    let mut warnings = Vec::new();

    // Storage: exactly one prefix.
    let prefixes: Vec<(&str, &str)> =
        ["WALG_S3_PREFIX", "WALE_S3_PREFIX", "WALG_GS_PREFIX", "WALE_GS_PREFIX", "WALG_AZ_PREFIX", "WALG_FILE_PREFIX"]
            .into_iter()
            .filter_map(|name| get(name).map(|v| (name, v)))
            .collect();
    let (name, prefix) = match prefixes.as_slice() {
        [one] => *one,
        [] => {
            return Err(CliError::new(ErrorCode::OptionRequired, "no storage is configured")
                .hint("set one of WALG_S3_PREFIX, WALG_GS_PREFIX, WALG_AZ_PREFIX or WALG_FILE_PREFIX"));
        }
        [(a, x), (b, y)] if matches!((*a, *b), ("WALG_S3_PREFIX", "WALE_S3_PREFIX")) && x == y => (*a, *x),
        many => {
            let names: Vec<&str> = many.iter().map(|(n, _)| *n).collect();
            return Err(CliError::new(
                ErrorCode::OptionInvalid,
                format!("several storages are configured ({}); set only one", names.join(", ")),
            ));
        }
    };
    let split = |scheme: &str| -> CliResult<(String, String)> {
        let rest = prefix.strip_prefix(scheme).ok_or_else(|| {
            CliError::new(ErrorCode::OptionInvalidValue, format!("{name} '{prefix}' does not start with {scheme}"))
        })?;
        let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(CliError::new(ErrorCode::OptionInvalidValue, format!("{name} '{prefix}' names no bucket")));
        }
        Ok((bucket.to_string(), format!("/{}", path.trim_matches('/'))))
    };
    match name {
        "WALG_S3_PREFIX" | "WALE_S3_PREFIX" => {
            let (bucket, path) = split("s3://")?;
            set("repo1-type", "s3");
            set("repo1-s3-bucket", &bucket);
            set("repo1-path", &path);
            set("repo1-s3-region", get("AWS_REGION").unwrap_or("us-east-1"));
            if let Some(endpoint) = get("AWS_ENDPOINT") {
                set("repo1-s3-endpoint", endpoint);
            } else if let Some(wale) = get("WALE_S3_ENDPOINT") {
                // WAL-E's form: `https+path://host:port`.
                let (scheme, host) = wale.split_once("://").unwrap_or(("https", wale));
                let (scheme, style) = scheme.split_once('+').unwrap_or((scheme, ""));
                set("repo1-s3-endpoint", &format!("{scheme}://{host}"));
                if style == "path" {
                    set("repo1-s3-uri-style", "path");
                }
            }
            if get("AWS_S3_FORCE_PATH_STYLE").is_some_and(truthy) {
                set("repo1-s3-uri-style", "path");
            }
            match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
                (Some(id), Some(secret)) => {
                    set("repo1-s3-key", id);
                    set("repo1-s3-key-secret", secret);
                    if let Some(token) = get("AWS_SESSION_TOKEN") {
                        set("repo1-s3-token", token);
                    }
                }
                _ if get("AWS_ROLE_ARN").is_some() && get("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() => {
                    set("repo1-s3-key-type", "web-id");
                }
                _ => set("repo1-s3-key-type", "auto"),
            }
        }
        "WALG_GS_PREFIX" | "WALE_GS_PREFIX" => {
            let (bucket, path) = split("gs://")?;
            set("repo1-type", "gcs");
            set("repo1-gcs-bucket", &bucket);
            set("repo1-path", &path);
            match get("GOOGLE_APPLICATION_CREDENTIALS") {
                Some(file) => set("repo1-gcs-key", file),
                None => set("repo1-gcs-key-type", "auto"),
            }
        }
        "WALG_AZ_PREFIX" => {
            let (container, path) = split("azure://")?;
            set("repo1-type", "azure");
            set("repo1-azure-container", &container);
            set("repo1-path", &path);
            if let Some(account) = get("AZURE_STORAGE_ACCOUNT") {
                set("repo1-azure-account", account);
            }
            match (get("AZURE_STORAGE_ACCESS_KEY"), get("AZURE_STORAGE_SAS_TOKEN")) {
                (Some(key), _) => set("repo1-azure-key", key),
                (None, Some(sas)) => {
                    set("repo1-azure-key-type", "sas");
                    set("repo1-azure-key", sas.trim_start_matches('?'));
                }
                (None, None) => set("repo1-azure-key-type", "auto"),
            }
        }
        _ => {
            if !prefix.starts_with('/') {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("WALG_FILE_PREFIX '{prefix}' is not an absolute path"),
                ));
            }
            set("repo1-type", "posix");
            set("repo1-path", prefix);
        }
    }

    match get("WALG_COMPRESSION_METHOD").unwrap_or("lz4") {
        "lz4" => set("compress-type", "lz4"),
        "zstd" => set("compress-type", "zst"),
        other => {
            return Err(CliError::new(
                ErrorCode::OptionInvalidValue,
                format!("WALG_COMPRESSION_METHOD '{other}' is not supported by pgstrata"),
            )
            .hint("use lz4 (WAL-G's default) or zstd"));
        }
    }

    if let Some(pass) = encryption_pass(&get)? {
        set("repo1-cipher-type", "aes-256-gcm");
        set("repo1-cipher-pass", &pass);
    }

    let count = |name: &str, default: &dyn Fn() -> u32| -> CliResult<u32> {
        match get(name) {
            None => Ok(default()),
            Some(v) => v.parse::<u32>().map_err(|_| {
                CliError::new(ErrorCode::OptionInvalidValue, format!("{name} '{v}' is not a whole number"))
            }),
        }
    };
    // Spilo's default, the CPU count up to 10; looked up only when a variable is unset (it reads
    // the cgroup files, and wal-push / wal-fetch start once per segment).
    let cpus = || std::thread::available_parallelism().map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)).min(10);
    let upload_concurrency = count("WALG_UPLOAD_CONCURRENCY", &cpus)?.clamp(1, 999);
    let download_concurrency = count("WALG_DOWNLOAD_CONCURRENCY", &cpus)?.clamp(1, 999);
    let delta_max_steps = count("WALG_DELTA_MAX_STEPS", &|| 0)?;
    let delta_origin = match get("WALG_DELTA_ORIGIN").unwrap_or("LATEST") {
        "LATEST" => DeltaOrigin::Latest,
        "LATEST_FULL" => DeltaOrigin::LatestFull,
        other => {
            return Err(CliError::new(
                ErrorCode::OptionInvalidValue,
                format!("WALG_DELTA_ORIGIN '{other}' is not LATEST or LATEST_FULL"),
            ));
        }
    };
    if get("WALG_PREVENT_WAL_OVERWRITE").is_some_and(|v| !truthy(v)) {
        warnings.push(
            "WALG_PREVENT_WAL_OVERWRITE is off, but pgstrata never overwrites an archived segment with different \
             content (it refuses, as with WALG_PREVENT_WAL_OVERWRITE=true)"
                .to_string(),
        );
    }

    // The cluster.
    if let Some(host) = get("PGHOST") {
        if !host.starts_with('/') {
            return Err(CliError::new(
                ErrorCode::OptionInvalidValue,
                format!("PGHOST '{host}' is not a socket directory; pgstrata connects through PostgreSQL's socket"),
            )
            .hint("set PGHOST to the socket directory, e.g. /var/run/postgresql"));
        }
        set("pg1-socket-path", host);
    }
    if let Some(port) = get("PGPORT") {
        set("pg1-port", port);
    }
    if let Some(user) = get("PGUSER") {
        set("pg1-user", user);
    }
    let pgdata = get("PGDATA").map(PathBuf::from);
    if let Some(dir) = &pgdata {
        set("pg1-path", &dir.display().to_string());
    }

    let log = match get("WALG_LOG_LEVEL").unwrap_or("NORMAL") {
        "DEVEL" => "debug",
        "ERROR" => "error",
        _ => "info",
    };
    set("log-level-stderr", log);
    set("log-level-console", "off");
    set("log-level-file", "off");

    for (key, _) in env {
        if (key.starts_with("WALG_") || key.starts_with("WALE_")) && !KNOWN.contains(&key.as_str()) {
            warnings.push(format!("{key} is not a variable pgstrata's WAL-G front end knows; ignored"));
        }
    }
    Ok(WalgSettings {
        options,
        pgdata,
        upload_concurrency,
        download_concurrency,
        delta_max_steps,
        delta_origin,
        warnings,
    })
}

fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "y" | "on")
}

/// The passphrase of pgstrata's encryption from WAL-G's key variables: the libsodium key
/// (decoded per `WALG_LIBSODIUM_KEY_TRANSFORM`, then hex); a PGP key is refused. pgstrata encrypts with AES-256-GCM under a key wrapped by this passphrase; a
/// repository written this way is pgstrata's, not readable by WAL-G itself.
fn encryption_pass<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> CliResult<Option<String>> {
    let read = |var: &str, path: &str| {
        std::fs::read_to_string(path).map_err(|e| {
            CliError::new(ErrorCode::FileRead, format!("unable to read the key file {var} names ({path}): {e}"))
        })
    };
    // WAL-G's PGP keys are asymmetric: pushing hosts hold the public key only, fetching hosts
    // the private one. pgstrata's encryption is symmetric (its manifests and resume checkpoints
    // are read back by the host that writes them), so a PGP key cannot be honoured; taking its
    // text as a passphrase would let anyone holding the public key read the repository.
    if let Some(var) =
        ["WALG_PGP_KEY", "WALG_PGP_KEY_PATH", "WALG_PGP_KEY_PASSPHRASE"].into_iter().find(|v| get(v).is_some())
    {
        return Err(CliError::new(
            ErrorCode::OptionInvalid,
            format!("{var} is set: PGP encryption (a public key to push, a private key to fetch) is not supported"),
        )
        .hint("encrypt with WALG_LIBSODIUM_KEY (a secret key every host holds), and unset WALG_PGP_KEY*"));
    }
    let sodium = match (get("WALG_LIBSODIUM_KEY"), get("WALG_LIBSODIUM_KEY_PATH")) {
        (Some(key), _) => Some(key.to_string()),
        (None, Some(path)) => Some(read("WALG_LIBSODIUM_KEY_PATH", path)?.trim().to_string()),
        (None, None) => None,
    };
    if let Some(key) = sodium {
        let bytes = match get("WALG_LIBSODIUM_KEY_TRANSFORM").unwrap_or("none") {
            "none" => key.into_bytes(),
            "hex" => pgstrata_repo_format::hex::decode(&key).ok_or_else(|| {
                CliError::new(
                    ErrorCode::OptionInvalidValue,
                    "WALG_LIBSODIUM_KEY is not hex (WALG_LIBSODIUM_KEY_TRANSFORM=hex)",
                )
            })?,
            "base64" => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(key.as_bytes()).map_err(|_| {
                    CliError::new(
                        ErrorCode::OptionInvalidValue,
                        "WALG_LIBSODIUM_KEY is not base64 (WALG_LIBSODIUM_KEY_TRANSFORM=base64)",
                    )
                })?
            }
            other => {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("WALG_LIBSODIUM_KEY_TRANSFORM '{other}' is not none, hex or base64"),
                ));
            }
        };
        if bytes.len() < 25 {
            return Err(CliError::new(
                ErrorCode::OptionInvalidValue,
                format!("WALG_LIBSODIUM_KEY is {} bytes long; WAL-G requires at least 25", bytes.len()),
            ));
        }
        return Ok(Some(pgstrata_repo_format::hex::encode(&bytes)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
    }

    fn option<'a>(s: &'a WalgSettings, name: &str) -> Option<&'a str> {
        s.options.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn an_s3_prefix_with_spilo_s_variables() {
        let s = translate(&env(&[
            ("WALG_S3_PREFIX", "s3://backups/spilo/demo/1234/wal/15"),
            ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_REGION", "eu-central-1"),
            ("AWS_S3_FORCE_PATH_STYLE", "true"),
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("WALG_COMPRESSION_METHOD", "zstd"),
            ("WALG_DELTA_MAX_STEPS", "6"),
            ("WALG_DOWNLOAD_CONCURRENCY", "4"),
            ("PGHOST", "/var/run/postgresql"),
            ("PGPORT", "5433"),
            ("WALG_SOMETHING_NEW", "1"),
            ("USE_WALG_BACKUP", "true"),
        ]))
        .unwrap();
        assert_eq!(option(&s, "repo1-type"), Some("s3"));
        assert_eq!(option(&s, "repo1-s3-bucket"), Some("backups"));
        assert_eq!(option(&s, "repo1-path"), Some("/spilo/demo/1234/wal/15"));
        assert_eq!(option(&s, "repo1-s3-endpoint"), Some("http://127.0.0.1:9000"));
        assert_eq!(option(&s, "repo1-s3-region"), Some("eu-central-1"));
        assert_eq!(option(&s, "repo1-s3-uri-style"), Some("path"));
        assert_eq!(option(&s, "repo1-s3-key-secret"), Some("secret"));
        assert_eq!(option(&s, "compress-type"), Some("zst"));
        assert_eq!(option(&s, "pg1-socket-path"), Some("/var/run/postgresql"));
        assert_eq!(option(&s, "pg1-port"), Some("5433"));
        assert_eq!((s.delta_max_steps, s.download_concurrency), (6, 4));
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("WALG_SOMETHING_NEW"));
    }

    #[test]
    fn storages_other_than_s3_and_wal_e_s_endpoint_form() {
        let s = translate(&env(&[("WALG_FILE_PREFIX", "/backups/x")])).unwrap();
        assert_eq!((option(&s, "repo1-type"), option(&s, "repo1-path")), (Some("posix"), Some("/backups/x")));
        assert_eq!(option(&s, "compress-type"), Some("lz4"), "WAL-G compresses with lz4 by default");
        let s = translate(&env(&[
            ("WALG_AZ_PREFIX", "azure://container/path"),
            ("AZURE_STORAGE_ACCOUNT", "acct"),
            ("AZURE_STORAGE_SAS_TOKEN", "?sv=1&sig=2"),
        ]))
        .unwrap();
        assert_eq!(option(&s, "repo1-azure-key"), Some("sv=1&sig=2"));
        assert_eq!(option(&s, "repo1-azure-key-type"), Some("sas"));
        let s =
            translate(&env(&[("WALG_GS_PREFIX", "gs://b"), ("GOOGLE_APPLICATION_CREDENTIALS", "/k.json")])).unwrap();
        assert_eq!((option(&s, "repo1-path"), option(&s, "repo1-gcs-key")), (Some("/"), Some("/k.json")));
        let s = translate(&env(&[("WALE_S3_PREFIX", "s3://b/p"), ("WALE_S3_ENDPOINT", "https+path://minio:9000")]))
            .unwrap();
        assert_eq!(option(&s, "repo1-s3-endpoint"), Some("https://minio:9000"));
        assert_eq!(option(&s, "repo1-s3-uri-style"), Some("path"));
    }

    #[test]
    fn bad_configurations_are_named() {
        let err = |pairs: &[(&str, &str)]| translate(&env(pairs)).unwrap_err().to_string();
        assert!(err(&[]).contains("no storage is configured"));
        assert!(err(&[("WALG_S3_PREFIX", "s3://a"), ("WALG_FILE_PREFIX", "/b")]).contains("several storages"));
        assert!(err(&[("WALG_S3_PREFIX", "bucket/path")]).contains("does not start with s3://"));
        assert!(err(&[("WALG_FILE_PREFIX", "/b"), ("WALG_COMPRESSION_METHOD", "brotli")]).contains("brotli"));
        assert!(err(&[("WALG_FILE_PREFIX", "/b"), ("PGHOST", "db.example")]).contains("socket directory"));
        assert!(err(&[("WALG_FILE_PREFIX", "/b"), ("WALG_DELTA_ORIGIN", "SOMETIME")]).contains("WALG_DELTA_ORIGIN"));
        assert!(err(&[("WALG_FILE_PREFIX", "/b"), ("WALG_LIBSODIUM_KEY", "short")]).contains("at least 25"));
        // A PGP key is never taken as a passphrase, alone or beside a libsodium key.
        let sodium = ("WALG_LIBSODIUM_KEY", "0123456789abcdef0123456789abcdef");
        for var in ["WALG_PGP_KEY", "WALG_PGP_KEY_PATH", "WALG_PGP_KEY_PASSPHRASE"] {
            for pairs in
                [&[("WALG_FILE_PREFIX", "/b"), (var, "x")][..], &[("WALG_FILE_PREFIX", "/b"), (var, "x"), sodium]]
            {
                let e = err(pairs);
                assert!(e.contains(var) && e.contains("not supported"), "{e}");
            }
        }
    }

    #[test]
    fn keys_become_a_passphrase_that_does_not_depend_on_their_encoding() {
        let raw = "0123456789abcdef0123456789abcdef";
        let pass = |pairs: &[(&str, &str)]| {
            let s = translate(&env(pairs)).unwrap();
            (option(&s, "repo1-cipher-type").map(str::to_string), option(&s, "repo1-cipher-pass").map(str::to_string))
        };
        let plain = pass(&[("WALG_FILE_PREFIX", "/b"), ("WALG_LIBSODIUM_KEY", raw)]);
        assert_eq!(plain.0.as_deref(), Some("aes-256-gcm"));
        let hex = pgstrata_repo_format::hex::encode(raw.as_bytes());
        let as_hex =
            pass(&[("WALG_FILE_PREFIX", "/b"), ("WALG_LIBSODIUM_KEY", &hex), ("WALG_LIBSODIUM_KEY_TRANSFORM", "hex")]);
        assert_eq!(plain, as_hex);
        assert_eq!(pass(&[("WALG_FILE_PREFIX", "/b")]), (None, None));
    }
}
