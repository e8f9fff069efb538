//! The table of commands and options: names, kinds, defaults, and which are secret.
//!
//! Indexed options (`repo1-path`, `pg2-port`) are defined once by their suffix and group; the
//! index runs from 1 to [`MAX_INDEX`], as in pgBackRest. The unindexed spelling (`repo-path`)
//! means index 1.

/// Highest `repoN` / `pgN` index.
pub const MAX_INDEX: u32 = 256;

/// What kind of value an option takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `y`/`n`; on the command line `--opt` and `--no-opt`.
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Size {
        min: u64,
        max: u64,
    },
    Duration,
    Str,
    Path,
    Enum(&'static [&'static str]),
    /// May be given several times; values accumulate.
    List,
}

/// Which indexed group an option belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    None,
    Repo,
    Pg,
}

/// What pgstrata does with an option pgBackRest has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Implemented.
    Yes,
    /// Accepted and checked; what it means in pgstrata (often: what pgstrata always does).
    Accepted(&'static str),
    /// Refused when set to anything but pgBackRest's default, saying what to do instead.
    Refused(&'static str),
    /// Not applied: set to anything but pgBackRest's default, a warning saying what pgstrata
    /// does instead (an inherited pgBackRest configuration must not stop archiving over it).
    Ignored(&'static str),
}

/// One option.
#[derive(Clone, Copy, Debug)]
pub struct OptionDef {
    /// Full name, or the suffix after `repoN-` / `pgN-` for indexed options.
    pub name: &'static str,
    pub kind: Kind,
    pub group: Group,
    /// Secrets: refused on the command line, redacted in logs.
    pub secure: bool,
    /// Only on the command line or in the environment, never in a config file.
    pub cli_only: bool,
    pub default: Option<&'static str>,
    pub help: &'static str,
    pub support: Support,
}

const fn opt(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::None, secure: false, cli_only: false, default, help, support: Support::Yes }
}

const fn cli(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::None, secure: false, cli_only: true, default, help, support: Support::Yes }
}

const fn repo(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::Repo, secure: false, cli_only: false, default, help, support: Support::Yes }
}

const fn repo_secret(name: &'static str, help: &'static str) -> OptionDef {
    OptionDef {
        name,
        kind: Kind::Str,
        group: Group::Repo,
        secure: true,
        cli_only: false,
        default: None,
        help,
        support: Support::Yes,
    }
}

const fn pg(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::Pg, secure: false, cli_only: false, default, help, support: Support::Yes }
}

/// An option pgBackRest has that pgstrata accepts for what `meaning` says.
const fn accepted(
    name: &'static str,
    group: Group,
    kind: Kind,
    default: Option<&'static str>,
    meaning: &'static str,
) -> OptionDef {
    foreign(name, group, kind, default, Support::Accepted(meaning))
}

/// An option pgBackRest has that pgstrata refuses (unless set to `default`), saying why and what to do.
const fn refused(
    name: &'static str,
    group: Group,
    kind: Kind,
    default: Option<&'static str>,
    reason: &'static str,
) -> OptionDef {
    foreign(name, group, kind, default, Support::Refused(reason))
}

/// An option pgBackRest has that pgstrata does not apply (with a warning when set), saying what
/// it does instead.
const fn ignored(
    name: &'static str,
    group: Group,
    kind: Kind,
    default: Option<&'static str>,
    instead: &'static str,
) -> OptionDef {
    foreign(name, group, kind, default, Support::Ignored(instead))
}

/// An option of pgBackRest's that pgstrata does not implement as such: its help is what
/// `support` says.
const fn foreign(
    name: &'static str,
    group: Group,
    kind: Kind,
    default: Option<&'static str>,
    support: Support,
) -> OptionDef {
    let help = match support {
        Support::Accepted(text) | Support::Refused(text) | Support::Ignored(text) => text,
        Support::Yes => "",
    };
    OptionDef { name, kind, group, secure: false, cli_only: false, default, help, support }
}

const LOG_LEVELS: &[&str] = &["off", "error", "warn", "info", "detail", "debug", "trace"];

/// Every option pgstrata knows.
pub const OPTIONS: &[OptionDef] = &[
    // Where configuration comes from.
    cli("config", Kind::Path, None, "configuration file (default /etc/pgstrata/pgstrata.conf)"),
    cli("config-path", Kind::Path, None, "base directory of the configuration file and conf.d"),
    cli("config-include-path", Kind::Path, None, "directory of additional *.conf files"),
    // What to act on.
    cli("stanza", Kind::Str, None, "the stanza (cluster) to act on"),
    cli("repo", Kind::Int { min: 1, max: MAX_INDEX as i64 }, None, "which repository (repoN) to use"),
    cli(
        "output",
        Kind::Enum(&["text", "json", "prometheus", "num"]),
        Some("text"),
        "output format (info: also prometheus, the text exposition format; version: num, pgBackRest's number)",
    ),
    // Logging.
    opt("log-level-console", Kind::Enum(LOG_LEVELS), Some("warn"), "level of messages on stdout"),
    opt("log-level-stderr", Kind::Enum(LOG_LEVELS), Some("warn"), "level of messages on stderr"),
    opt("log-level-file", Kind::Enum(LOG_LEVELS), Some("info"), "level of messages in the log file"),
    opt("log-path", Kind::Path, Some("/var/log/pgstrata"), "directory of log files"),
    opt("log-timestamp", Kind::Bool, Some("y"), "prefix log lines with a timestamp"),
    // The TLS server (`server`) other hosts reach this one through.
    opt("tls-server-address", Kind::Str, Some("localhost"), "server: address to listen on"),
    opt("tls-server-port", Kind::Int { min: 1, max: 65535 }, Some("8432"), "server: port to listen on"),
    opt("tls-server-ca-file", Kind::Path, None, "server: CA that client certificates must be signed by"),
    opt("tls-server-cert-file", Kind::Path, None, "server: its certificate (PEM)"),
    opt("tls-server-key-file", Kind::Path, None, "server: its private key (PEM)"),
    opt(
        "tls-server-auth",
        Kind::List,
        None,
        "server: client-cn=stanza[,stanza...] or client-cn=* (which stanzas a client certificate may use)",
    ),
    // Locks, spool, resources.
    opt("lock-path", Kind::Path, Some("/tmp/pgstrata"), "directory of lock files"),
    opt(
        "lease-time",
        Kind::Duration,
        Some("60"),
        "how long a repository's writer lease lasts unrenewed (a killed writer's lease is taken over after it)",
    ),
    opt("spool-path", Kind::Path, Some("/var/spool/pgstrata"), "directory of the asynchronous archive queues"),
    opt("process-max", Kind::Int { min: 1, max: 999 }, Some("1"), "worker threads for compression and transfer"),
    opt("compress-type", Kind::Enum(&["none", "zst", "lz4", "gz", "bz2"]), Some("zst"), "compression"),
    opt("compress-level", Kind::Int { min: -7, max: 22 }, None, "compression level (zst: 1..22, default 3)"),
    opt("buffer-size", Kind::Size { min: 16 << 10, max: 16 << 20 }, Some("1MiB"), "plaintext size of a frame"),
    opt("start-fast", Kind::Bool, Some("n"), "ask PostgreSQL for an immediate checkpoint at backup start"),
    opt(
        "checksum-page",
        Kind::Bool,
        None,
        "backup: check page checksums (default: when the cluster has data checksums); n skips the checks",
    ),
    opt("online", Kind::Bool, Some("y"), "the cluster is running"),
    opt("archive-check", Kind::Bool, Some("y"), "wait for the backup's WAL to be archived"),
    opt(
        "backup-standby",
        Kind::Enum(&["n", "y", "prefer"]),
        Some("n"),
        "backup: read replicated files from a standby (pgN in recovery); y fails without one, prefer falls back \
         to the primary",
    ),
    opt("archive-async", Kind::Bool, Some("n"), "archive-push and archive-get work through the spool, in parallel"),
    opt(
        "archive-push-queue-max",
        Kind::Size { min: 0, max: u64::MAX },
        None,
        "drop WAL (breaking PITR) beyond this backlog",
    ),
    opt("archive-get-queue-max", Kind::Size { min: 0, max: u64::MAX }, Some("128MiB"), "WAL archive-get prefetches"),
    opt("archive-timeout", Kind::Duration, Some("60"), "how long to wait for WAL to reach the archive"),
    opt("resume", Kind::Bool, Some("y"), "backup: resume an interrupted backup of the same type and prior"),
    opt("delta", Kind::Bool, Some("n"), "restore: rewrite only what differs; backup: compare files by content"),
    opt("force", Kind::Bool, Some("n"), "force the command"),
    opt("expire-auto", Kind::Bool, Some("y"), "backup: expire per the retention after a successful backup"),
    cli("dry-run", Kind::Bool, Some("n"), "expire: show what would be removed, remove nothing"),
    cli("annotation", Kind::List, None, "backup, annotate: key=value to record with the backup (empty value: remove)"),
    opt(
        "restore-test-path",
        Kind::Path,
        None,
        "restore-test: where its scratch directory goes (default: the temp dir)",
    ),
    opt("restore-test-timeout", Kind::Duration, Some("3600"), "restore-test: how long start and recovery may take"),
    opt("pg-bin", Kind::Path, None, "restore-test: PostgreSQL's programs (default /usr/lib/postgresql/<major>/bin)"),
    cli(
        "recurse",
        Kind::Bool,
        Some("n"),
        "repo-ls: list everything below the path, not one level; repo-rm: remove a path with objects below it",
    ),
    cli(
        "filter",
        Kind::Str,
        None,
        "manifest: show this one file (pg_data/...); repo-ls: show the names this regular expression matches",
    ),
    cli(
        "reference",
        Kind::Str,
        None,
        "manifest: show the files stored in this backup (a label; latest: the backup shown)",
    ),
    cli("keep", Kind::Bool, None, "backup, annotate: expire never removes the backup (or, --no-keep, may again)"),
    opt("type", Kind::Str, None, "backup or recovery type"),
    cli("set", Kind::Str, None, "backup label to restore or show"),
    opt("target", Kind::Str, None, "recovery target"),
    opt("target-action", Kind::Enum(&["pause", "promote", "shutdown"]), Some("pause"), "action at the recovery target"),
    opt("target-exclusive", Kind::Bool, Some("n"), "stop just before the recovery target instead of after it"),
    opt("target-timeline", Kind::Str, None, "timeline to recover along: latest, current or a number"),
    opt("link-map", Kind::List, None, "where to restore a link: name=path"),
    opt("tablespace-map", Kind::List, None, "where to restore a tablespace: name-or-oid=path"),
    opt(
        "archive-copy",
        Kind::Bool,
        Some("n"),
        "backup: store the WAL from the backup's start to its stop in the backup too (read back from the \
         archive), so a restore reaches consistency without the archive; needs archive-check",
    ),
    opt(
        "exclude",
        Kind::List,
        None,
        "backup: leave out a path relative to the data directory (dir/: what it holds; name: it and, for a \
         directory, all it holds); a restore then lacks it",
    ),
    opt(
        "link-all",
        Kind::Bool,
        Some("n"),
        "restore every link as a link; otherwise a directory link not in link-map is restored as a directory in \
         the data directory (as pgBackRest does)",
    ),
    opt(
        "tablespace-map-all",
        Kind::Path,
        None,
        "restore every tablespace not in tablespace-map into this directory, each under its name",
    ),
    opt(
        "db-include",
        Kind::List,
        None,
        "selective restore: restore only these databases (names or oids) and the system databases; the others are \
         restored as empty sparse files, to be dropped",
    ),
    opt(
        "db-exclude",
        Kind::List,
        None,
        "selective restore: restore these databases (names or oids) as empty sparse files, to be dropped",
    ),
    opt("recovery-option", Kind::List, None, "extra recovery setting: key=value"),
    opt(
        "archive-mode",
        Kind::Enum(&["preserve", "off"]),
        Some("preserve"),
        "restore: off writes archive_mode = 'off' so the restored copy does not archive into the stanza",
    ),
    // Repositories.
    repo("type", Kind::Enum(&["posix", "cifs", "s3", "gcs", "azure", "sftp"]), Some("posix"), "storage type"),
    repo("path", Kind::Path, Some("/var/lib/pgstrata"), "repository path (directory, or prefix in a bucket)"),
    repo(
        "cipher-type",
        Kind::Enum(&["none", "aes-256-gcm", "aes-256-cbc"]),
        Some("none"),
        "encryption: aes-256-gcm (pgstrata's objects); aes-256-cbc, pgBackRest's, is taken as 'encrypted with this \
         passphrase' (pgstrata's own objects are still AES-256-GCM)",
    ),
    repo_secret("cipher-pass", "encryption passphrase"),
    repo(
        "bundle-size",
        Kind::Size { min: 1 << 20, max: 1 << 30 },
        Some("64MiB"),
        "target size of a pack (the object small files are stored together in)",
    ),
    repo("s3-bucket", Kind::Str, None, "S3 bucket"),
    repo("s3-endpoint", Kind::Str, None, "S3 endpoint (host, host:port or URL)"),
    repo("s3-region", Kind::Str, None, "S3 region"),
    repo_secret("s3-key", "S3 access key id"),
    repo_secret("s3-key-secret", "S3 secret access key"),
    repo_secret("s3-token", "S3 session token"),
    repo("s3-kms-key-id", Kind::Str, None, "S3 server-side encryption with this AWS KMS key (SSE-KMS) on every write"),
    repo_secret(
        "s3-sse-customer-key",
        "S3 server-side encryption with this customer key (SSE-C, base64 of 32 bytes), given on every request",
    ),
    repo("s3-requester-pays", Kind::Bool, Some("n"), "S3 requests are billed to the requester (x-amz-request-payer)"),
    repo(
        "s3-sts-host",
        Kind::Str,
        None,
        "STS endpoint for repoN-s3-key-type=web-id (default: the region's, sts.REGION.amazonaws.com)",
    ),
    accepted(
        "s3-role",
        Group::Repo,
        Kind::Str,
        None,
        "repoN-s3-key-type=auto asks the instance metadata service for the instance profile's role (one per \
         instance) and its temporary credentials, renewed before they expire",
    ),
    repo("gcs-user-project", Kind::Str, None, "GCS project billed for the requests (x-goog-user-project)"),
    repo(
        "azure-uri-style",
        Kind::Enum(&["host", "path"]),
        Some("host"),
        "host: https://ACCOUNT.ENDPOINT/...; path: https://ENDPOINT/ACCOUNT/... (Azurite, Azure Stack)",
    ),
    repo("s3-key-type", Kind::Enum(&["shared", "auto", "web-id"]), Some("shared"), "S3 credentials source"),
    repo("s3-uri-style", Kind::Enum(&["host", "path"]), Some("host"), "S3 addressing style"),
    repo("gcs-bucket", Kind::Str, None, "GCS bucket"),
    repo("gcs-endpoint", Kind::Str, None, "GCS endpoint (URL)"),
    repo_secret("gcs-key", "GCS key file path or token"),
    repo("gcs-key-type", Kind::Enum(&["service", "token", "auto"]), Some("service"), "GCS credentials source"),
    repo_secret("azure-account", "Azure storage account"),
    repo("azure-container", Kind::Str, None, "Azure container"),
    repo_secret("azure-key", "Azure shared key or SAS token"),
    repo("azure-key-type", Kind::Enum(&["shared", "sas", "auto"]), Some("shared"), "Azure credentials source"),
    repo("azure-endpoint", Kind::Str, None, "Azure blob endpoint (URL, account in the path for emulators)"),
    repo("storage-port", Kind::Int { min: 1, max: 65535 }, None, "port of the storage endpoint"),
    repo("retention-full", Kind::Int { min: 1, max: 9_999_999 }, None, "full backups to keep"),
    repo("retention-full-type", Kind::Enum(&["count", "time"]), Some("count"), "retention-full is a count or days"),
    repo("retention-diff", Kind::Int { min: 1, max: 9_999_999 }, None, "differential backups to keep"),
    repo(
        "retention-archive",
        Kind::Int { min: 1, max: 9_999_999 },
        None,
        "backups (of retention-archive-type) whose continuous WAL is kept",
    ),
    repo(
        "retention-history",
        Kind::Int { min: 0, max: 9_999_999 },
        Some("365"),
        "days an expired backup's manifest is kept (0: none)",
    ),
    repo(
        "retention-archive-type",
        Kind::Enum(&["full", "diff", "incr"]),
        Some("full"),
        "which backups retention-archive counts",
    ),
    repo("host", Kind::Str, None, "repository host whose server serves this repository (repoN-host-type=tls)"),
    repo("host-type", Kind::Enum(&["ssh", "tls"]), Some("ssh"), "how to reach repoN-host (only tls is supported)"),
    repo("host-port", Kind::Int { min: 1, max: 65535 }, None, "port of repoN-host's server (tls: 8432)"),
    repo("host-ca-file", Kind::Path, None, "CA the server's certificate is checked against"),
    repo("host-ca-path", Kind::Path, None, "directory of CAs (not supported: use repoN-host-ca-file)"),
    repo("host-cert-file", Kind::Path, None, "this client's certificate"),
    repo("host-key-file", Kind::Path, None, "this client's private key"),
    repo("host-user", Kind::Str, None, "ssh only (ignored with tls)"),
    repo("host-cmd", Kind::Path, None, "ssh only (ignored with tls)"),
    repo("host-config", Kind::Path, None, "the remote's configuration (ignored with tls: the server has its own)"),
    repo("host-config-path", Kind::Path, None, "as repoN-host-config"),
    repo("host-config-include-path", Kind::Path, None, "as repoN-host-config"),
    // PostgreSQL clusters.
    pg("path", Kind::Path, None, "data directory"),
    pg("port", Kind::Int { min: 1, max: 65535 }, Some("5432"), "port"),
    pg("socket-path", Kind::Path, None, "unix socket directory"),
    pg("user", Kind::Str, None, "user to connect as"),
    pg("database", Kind::Str, Some("postgres"), "database to connect to"),
    pg("host", Kind::Str, None, "database host whose server serves this cluster (pgN-host-type=tls)"),
    pg("host-type", Kind::Enum(&["ssh", "tls"]), Some("ssh"), "how to reach pgN-host (only tls is supported)"),
    pg("host-port", Kind::Int { min: 1, max: 65535 }, None, "port of pgN-host's server (tls: 8432)"),
    pg("host-ca-file", Kind::Path, None, "CA the server's certificate is checked against"),
    pg("host-ca-path", Kind::Path, None, "directory of CAs (not supported: use pgN-host-ca-file)"),
    pg("host-cert-file", Kind::Path, None, "this client's certificate"),
    pg("host-key-file", Kind::Path, None, "this client's private key"),
    pg("host-user", Kind::Str, None, "ssh only (ignored with tls)"),
    pg("host-cmd", Kind::Path, None, "ssh only (ignored with tls)"),
    pg("host-config", Kind::Path, None, "the remote's configuration (ignored with tls: the server has its own)"),
    pg("host-config-path", Kind::Path, None, "as pgN-host-config"),
    pg("host-config-include-path", Kind::Path, None, "as pgN-host-config"),
    // pgBackRest's options pgstrata accepts for what it already does, or refuses with a reason
    // (see docs/configuration.md, "pgBackRest options").
    accepted(
        "detail-level",
        Group::None,
        Kind::Enum(&["full", "progress"]),
        Some("full"),
        "info: the full detail is always shown",
    ),
    accepted("help", Group::None, Kind::Bool, Some("n"), "help: as the help command"),
    accepted("version", Group::None, Kind::Bool, Some("n"), "help: as the version command"),
    accepted("report", Group::None, Kind::Bool, Some("n"), "check: internal to pgBackRest; no effect"),
    accepted("verbose", Group::None, Kind::Bool, Some("n"), "verify: every problem is always listed"),
    accepted("exec-id", Group::None, Kind::Str, None, "internal to pgBackRest's processes; no effect"),
    accepted(
        "process",
        Group::None,
        Kind::Int { min: 0, max: 1024 },
        None,
        "internal to pgBackRest's processes; no effect",
    ),
    accepted("lock", Group::None, Kind::List, None, "internal to pgBackRest's processes; no effect"),
    accepted(
        "remote-type",
        Group::None,
        Kind::Enum(&["pg", "repo"]),
        None,
        "internal to pgBackRest's processes; no effect",
    ),
    accepted(
        "pg",
        Group::None,
        Kind::Int { min: 1, max: MAX_INDEX as i64 },
        None,
        "internal to pgBackRest's processes; no effect",
    ),
    accepted("beta", Group::None, Kind::Bool, Some("n"), "no beta features are gated; no effect"),
    accepted("cmd", Group::None, Kind::Path, None, "pgstrata starts its own workers; hosts run their own server"),
    accepted("log-subprocess", Group::None, Kind::Bool, Some("n"), "workers log into the command's own log"),
    accepted(
        "allow-root",
        Group::None,
        Kind::Bool,
        Some("n"),
        "a root restore writes through opened directories and never follows a planted link (docs/operators.md)",
    ),
    accepted("neutral-umask", Group::None, Kind::Bool, Some("y"), "pgstrata always writes with at least umask 027"),
    accepted(
        "priority",
        Group::None,
        Kind::Int { min: -20, max: 19 },
        None,
        "scheduling priority is left to the operator (nice, the pod's resources)",
    ),
    accepted(
        "compress-level-network",
        Group::None,
        Kind::Int { min: -5, max: 12 },
        Some("1"),
        "a database host's server compresses with compress-type and compress-level itself",
    ),
    accepted(
        "io-timeout",
        Group::None,
        Kind::Duration,
        Some("60"),
        "storage requests have pgstrata's own timeouts and retries (docs/storage.md)",
    ),
    accepted(
        "protocol-timeout",
        Group::None,
        Kind::Duration,
        Some("1830"),
        "a host's server has its own handshake and idle limits",
    ),
    accepted(
        "db-timeout",
        Group::None,
        Kind::Duration,
        Some("1800"),
        "queries wait as PostgreSQL lets them (statement_timeout)",
    ),
    accepted(
        "job-retry",
        Group::None,
        Kind::Int { min: 0, max: 99 },
        Some("2"),
        "storage requests are retried by pgstrata's own policy (docs/storage.md)",
    ),
    accepted(
        "job-retry-interval",
        Group::None,
        Kind::Duration,
        Some("15"),
        "storage requests are retried by pgstrata's own policy (docs/storage.md)",
    ),
    accepted("sck-block", Group::None, Kind::Bool, Some("n"), "internal to pgBackRest's sockets; no effect"),
    accepted("sck-keep-alive", Group::None, Kind::Bool, Some("y"), "connections use the system's keep-alive settings"),
    accepted(
        "tcp-keep-alive-count",
        Group::None,
        Kind::Int { min: 1, max: 32 },
        None,
        "connections use the system's keep-alive settings",
    ),
    accepted(
        "tcp-keep-alive-idle",
        Group::None,
        Kind::Int { min: 1, max: 3600 },
        None,
        "connections use the system's keep-alive settings",
    ),
    accepted(
        "tcp-keep-alive-interval",
        Group::None,
        Kind::Int { min: 1, max: 900 },
        None,
        "connections use the system's keep-alive settings",
    ),
    accepted(
        "archive-header-check",
        Group::None,
        Kind::Bool,
        Some("y"),
        "archive-push always checks a segment's header against the stanza",
    ),
    accepted(
        "archive-missing-retry",
        Group::None,
        Kind::Bool,
        Some("y"),
        "archive-get asks the repository again for a segment it queued as missing",
    ),
    accepted(
        "archive-push-batch-size",
        Group::None,
        Kind::Size { min: 1, max: u64::MAX },
        None,
        "asynchronous archive-push sizes its own batches by process-max",
    ),
    accepted(
        "archive-mode-check",
        Group::None,
        Kind::Bool,
        Some("y"),
        "archive-push refuses a cluster that is not the stanza's (its data directory and system id)",
    ),
    accepted(
        "page-header-check",
        Group::None,
        Kind::Bool,
        Some("y"),
        "page headers are checked with page checksums (checksum-page)",
    ),
    accepted(
        "manifest-save-threshold",
        Group::None,
        Kind::Size { min: 1, max: u64::MAX },
        None,
        "a backup checkpoints what it stored as it goes (resume)",
    ),
    accepted(
        "stop-auto",
        Group::None,
        Kind::Bool,
        Some("n"),
        "no effect on PostgreSQL 13-18 (non-exclusive backups end with their session)",
    ),
    accepted("compress", Group::None, Kind::Bool, Some("y"), "deprecated in pgBackRest: use compress-type"),
    accepted(
        "sort",
        Group::None,
        Kind::Enum(&["none", "asc", "desc"]),
        Some("asc"),
        "repo-ls: listings are in ascending order",
    ),
    accepted(
        "raw",
        Group::None,
        Kind::Bool,
        Some("n"),
        "repo-get: a path in pgstrata's own layout prints the stored object as it is",
    ),
    accepted(
        "cipher-pass",
        Group::None,
        Kind::Str,
        None,
        "repo-get: decrypts with the stanza's key (repoN-cipher-pass)",
    ),
    accepted("pg-version-force", Group::None, Kind::Str, None, "the version is read from pg_control (13-18)"),
    accepted("local", Group::Repo, Kind::Bool, Some("n"), "internal to pgBackRest's processes; no effect"),
    accepted("local", Group::Pg, Kind::Bool, Some("n"), "internal to pgBackRest's processes; no effect"),
    accepted(
        "bundle",
        Group::Repo,
        Kind::Bool,
        Some("n"),
        "pgstrata always packs files together (repoN-bundle-size sets the pack size)",
    ),
    accepted(
        "bundle-limit",
        Group::Repo,
        Kind::Size { min: 8 << 10, max: 1 << 30 },
        Some("2MiB"),
        "every file goes into packs; large files span parts",
    ),
    accepted("block", Group::Repo, Kind::Bool, Some("n"), "pgstrata always stores changed relation files by page"),
    accepted(
        "block-size-map",
        Group::Repo,
        Kind::List,
        None,
        "pgstrata stores by page (8 KiB) and checks frames of buffer-size",
    ),
    accepted("block-age-map", Group::Repo, Kind::List, None, "pgstrata stores by page whatever a file's age"),
    accepted("block-checksum-size-map", Group::Repo, Kind::List, None, "pages are compared by their own digests"),
    accepted(
        "block-size-super",
        Group::Repo,
        Kind::Size { min: 1, max: 1 << 30 },
        None,
        "pages are stored in parts of 8 MiB",
    ),
    accepted(
        "block-size-super-full",
        Group::Repo,
        Kind::Size { min: 1, max: 1 << 30 },
        None,
        "pages are stored in parts of 8 MiB",
    ),
    accepted(
        "hardlink",
        Group::Repo,
        Kind::Bool,
        Some("n"),
        "unchanged files are referenced by the manifest, never copied or linked",
    ),
    accepted("symlink", Group::Repo, Kind::Bool, Some("y"), "pgstrata's layout has no latest link to keep"),
    refused(
        "archive-expire-before",
        Group::None,
        Kind::Str,
        None,
        "not supported yet: expire removes WAL by the retention options",
    ),
    refused("oldest", Group::None, Kind::Bool, Some("n"), "not supported yet: expire --set names the backup to remove"),
    refused(
        "ignore-missing",
        Group::None,
        Kind::Bool,
        Some("n"),
        "not supported yet: repo-get of a missing object fails",
    ),
    ignored(
        "cmd-ssh",
        Group::None,
        Kind::Path,
        Some("ssh"),
        "not used: hosts are reached over TLS only (repoN-host-type=tls / pgN-host-type=tls)",
    ),
    ignored(
        "tls-cipher-12",
        Group::None,
        Kind::Str,
        None,
        "not applied: TLS 1.2 uses rustls's cipher suites (ECDHE with AES-GCM or ChaCha20-Poly1305 only)",
    ),
    ignored("tls-cipher-13", Group::None, Kind::Str, None, "not applied: TLS 1.3 uses rustls's cipher suites"),
    refused(
        "target-time",
        Group::Repo,
        Kind::Str,
        None,
        "reading a repository as it was at a time needs versioned storage: not supported",
    ),
    repo(
        "storage-verify-tls",
        Kind::Bool,
        Some("y"),
        "check the storage endpoint's TLS certificate (n: accept any, e.g. a self-signed MinIO)",
    ),
    repo(
        "storage-ca-file",
        Kind::Path,
        None,
        "a PEM file of CAs trusted for the storage endpoint, besides the system's",
    ),
    repo(
        "storage-ca-path",
        Kind::Path,
        None,
        "a directory of PEM CA files (.pem, .crt) trusted for the storage endpoint",
    ),
    refused(
        "storage-host",
        Group::Repo,
        Kind::Str,
        None,
        "not supported yet: give the address in repoN-s3-endpoint / -gcs-endpoint / -azure-endpoint",
    ),
    repo(
        "storage-tag",
        Kind::List,
        None,
        "a key=value tag on every object written (repeatable; S3 and Azure): set before stanza-create",
    ),
    repo(
        "storage-upload-chunk-size",
        Kind::Size { min: 64 << 10, max: 1 << 30 },
        None,
        "part size of streaming uploads to an object store (default 8MiB; at least 5MiB on S3); memory is about \
         this times 4 per upload in flight",
    ),
    refused("s3-service", Group::Repo, Kind::Str, Some("s3"), "not supported yet: requests are signed for s3"),
    refused("s3-process-cmd", Group::Repo, Kind::List, None, "not supported: give credentials with repoN-s3-key-type"),
    refused("sftp-host", Group::Repo, Kind::Str, None, SFTP),
    refused("sftp-host-fingerprint", Group::Repo, Kind::Str, None, SFTP),
    refused(
        "sftp-host-key-check-type",
        Group::Repo,
        Kind::Enum(&["accept-new", "fingerprint", "none", "strict"]),
        Some("strict"),
        SFTP,
    ),
    refused("sftp-host-key-hash-type", Group::Repo, Kind::Enum(&["md5", "sha1", "sha256"]), None, SFTP),
    refused("sftp-host-port", Group::Repo, Kind::Int { min: 1, max: 65535 }, Some("22"), SFTP),
    refused("sftp-host-user", Group::Repo, Kind::Str, None, SFTP),
    refused("sftp-known-host", Group::Repo, Kind::List, None, SFTP),
    refused("sftp-private-key-file", Group::Repo, Kind::Path, None, SFTP),
    refused("sftp-private-key-passphrase", Group::Repo, Kind::Str, None, SFTP),
    refused("sftp-public-key-file", Group::Repo, Kind::Path, None, SFTP),
];

/// Why an SFTP repository is refused.
const SFTP: &str =
    "SFTP repositories are not supported: use posix, s3, gcs or azure, or a repository host (repoN-host-type=tls)";

/// One command.
#[derive(Clone, Copy, Debug)]
pub struct CommandDef {
    pub name: &'static str,
    pub help: &'static str,
    /// Available in this build.
    pub implemented: bool,
}

const fn cmd(name: &'static str, implemented: bool, help: &'static str) -> CommandDef {
    CommandDef { name, help, implemented }
}

/// Every command of pgBackRest's interface; those not yet built answer with a clear error.
pub const COMMANDS: &[CommandDef] = &[
    cmd("annotate", true, "add or change annotations of a backup"),
    cmd("archive-get", true, "fetch a WAL segment from the archive (restore_command)"),
    cmd("archive-get:async", true, "(internal) prefetch WAL into the spool for archive-get"),
    cmd("archive-push", true, "archive a WAL segment (archive_command)"),
    cmd("archive-push:async", true, "(internal) push ready WAL from pg_wal for archive-push"),
    cmd("backup", true, "take a full, diff or incr backup"),
    cmd("check", true, "check the configuration and that archiving works"),
    cmd("expire", true, "remove backups and WAL past the retention"),
    cmd("help", true, "show help"),
    cmd("info", true, "show backups and archive"),
    cmd("manifest", true, "show a backup's manifest: its files and where they are stored"),
    cmd("repo-get", true, "print an object of the repository, raw"),
    cmd("repo-ls", true, "list objects of the repository"),
    cmd("repo-put", true, "write standard input into an object of the repository, as given"),
    cmd("repo-rm", true, "remove an object or a path of the repository"),
    cmd("restore", true, "restore a backup"),
    cmd("restore-test", true, "restore a backup into a scratch directory, start it, check it, remove it"),
    cmd("server", true, "serve the repository or data directory to other hosts over TLS"),
    cmd("server-ping", true, "check that a server is up"),
    cmd("stanza-create", true, "create the stanza in the repository"),
    cmd("stanza-delete", true, "delete the stanza from the repository"),
    cmd("stanza-upgrade", true, "record a new database version after pg_upgrade"),
    cmd("start", true, "allow commands to run again"),
    cmd("stop", true, "stop commands from running"),
    cmd("verify", true, "verify the repository's contents"),
    cmd("version", true, "show the version"),
];

/// Finds a command by name.
pub fn command(name: &str) -> Option<&'static CommandDef> {
    COMMANDS.iter().find(|c| c.name == name)
}

/// Options pgstrata has that pgBackRest does not, with the commands that take them.
const OWN_OPTIONS: &[(&str, &[&str])] = &[
    (
        "lease-time",
        &["annotate", "archive-push", "backup", "expire", "stanza-create", "stanza-delete", "stanza-upgrade"],
    ),
    ("restore-test-path", &["restore-test"]),
    ("restore-test-timeout", &["restore-test"]),
    ("pg-bin", &["restore-test"]),
    ("keep", &["backup", "annotate"]),
];

/// Commands of pgstrata's own that take options of pgBackRest's commands too: `restore-test`
/// restores (and prints like `info`), an `:async` worker takes its foreground's options.
fn also_as(command: &str) -> &[&str] {
    match command {
        "restore-test" => &["restore", "info", "verify"],
        "archive-push:async" => &["archive-push"],
        "archive-get:async" => &["archive-get"],
        _ => &[],
    }
}

impl OptionDef {
    /// The name pgBackRest documents it by: `repo-path`, `pg-host`, `start-fast`.
    pub fn documented_name(&self) -> String {
        match self.group {
            Group::None => self.name.to_string(),
            Group::Repo => format!("repo-{}", self.name),
            Group::Pg => format!("pg-{}", self.name),
        }
    }

    /// The commands that take it, pgBackRest's list for its options; `None` for any command.
    pub fn commands(&self) -> Option<&'static [&'static str]> {
        let name = self.documented_name();
        super::pgbackrest::commands_of(&name).or_else(|| OWN_OPTIONS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c))
    }

    /// Whether `command` takes this option.
    pub fn valid_for(&self, command: &str) -> bool {
        match self.commands() {
            None => true,
            Some(commands) => {
                std::iter::once(command).chain(also_as(command).iter().copied()).any(|c| commands.contains(&c))
            }
        }
    }
}

/// A resolved option name: definition plus index (0 when not indexed).
#[derive(Clone, Copy, Debug)]
pub struct Resolved {
    pub def: &'static OptionDef,
    pub index: u32,
}

impl Resolved {
    /// The canonical name: `repo2-path`, `log-path`.
    pub fn canonical(&self) -> String {
        match self.def.group {
            Group::None => self.def.name.to_string(),
            Group::Repo => format!("repo{}-{}", self.index, self.def.name),
            Group::Pg => format!("pg{}-{}", self.index, self.def.name),
        }
    }
}

/// Resolves an option name (`repo12-s3-bucket`, `repo-path`, `log-level-file`), or a deprecated
/// name pgBackRest still accepts (`db-path`, `db2-path`, `backup-host`, `repo1-s3-verify-ssl`).
pub fn resolve(name: &str) -> Option<Resolved> {
    resolve_current(name).or_else(|| resolve_current(&undeprecated(name)?))
}

/// The current name of a deprecated one, with its index kept.
fn undeprecated(name: &str) -> Option<String> {
    for (old, new) in super::pgbackrest::DEPRECATED {
        match old.split_once('?') {
            None if *old == name => return Some(new.to_string()),
            None => {}
            Some((prefix, rest)) => {
                let Some(tail) = name.strip_prefix(prefix) else { continue };
                let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 && &tail[digits..] == rest {
                    let index = &tail[..digits];
                    // repo-s3-host -> repo2-storage-host; db2-path -> pg2-path.
                    let (group, suffix) = new.split_once('-')?;
                    return Some(format!("{group}{index}-{suffix}"));
                }
            }
        }
    }
    None
}

fn resolve_current(name: &str) -> Option<Resolved> {
    for (prefix, group) in [("repo", Group::Repo), ("pg", Group::Pg)] {
        if let Some(rest) = name.strip_prefix(prefix) {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (num, tail) = rest.split_at(digits);
            if let Some(suffix) = tail.strip_prefix('-') {
                let index = if num.is_empty() { 1 } else { num.parse().ok()? };
                if !(1..=MAX_INDEX).contains(&index) || num.starts_with('0') {
                    return None;
                }
                if let Some(def) = OPTIONS.iter().find(|d| d.group == group && d.name == suffix) {
                    return Some(Resolved { def, index });
                }
            }
        }
    }
    OPTIONS.iter().find(|d| d.group == Group::None && d.name == name).map(|def| Resolved { def, index: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deprecated_names_resolve_to_theirs_with_their_index() {
        for (old, new) in [
            ("db-path", "pg1-path"),
            ("db2-path", "pg2-path"),
            ("db3-socket-path", "pg3-socket-path"),
            ("backup-host", "repo1-host"),
            ("retention-full", "repo1-retention-full"),
            ("repo-s3-verify-ssl", "repo1-storage-verify-tls"),
            ("repo2-s3-verify-tls", "repo2-storage-verify-tls"),
            ("repo3-azure-ca-file", "repo3-storage-ca-file"),
            ("archive-queue-max", "archive-push-queue-max"),
        ] {
            assert_eq!(resolve(old).map(|r| r.canonical()).as_deref(), Some(new), "{old}");
        }
        assert!(resolve("db0-path").is_none() && resolve("dbx-path").is_none());
    }

    #[test]
    fn resolves_indexed_and_plain_names() {
        assert_eq!(resolve("repo1-path").map(|r| r.canonical()).as_deref(), Some("repo1-path"));
        assert_eq!(resolve("repo-path").map(|r| r.canonical()).as_deref(), Some("repo1-path"));
        assert_eq!(resolve("repo256-s3-bucket").map(|r| r.index), Some(256));
        assert!(resolve("repo257-path").is_none());
        assert!(resolve("repo0-path").is_none());
        assert!(resolve("repo01-path").is_none());
        assert_eq!(resolve("pg3-port").map(|r| r.canonical()).as_deref(), Some("pg3-port"));
        assert_eq!(resolve("repo").map(|r| r.canonical()).as_deref(), Some("repo"));
        assert!(resolve("repo1-nonsense").is_none());
        assert!(resolve("log-level").is_none());
        assert!(resolve("repo1-cipher-pass").is_some_and(|r| r.def.secure));
    }
}
