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
}

const fn opt(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::None, secure: false, cli_only: false, default, help }
}

const fn cli(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::None, secure: false, cli_only: true, default, help }
}

const fn repo(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::Repo, secure: false, cli_only: false, default, help }
}

const fn repo_secret(name: &'static str, help: &'static str) -> OptionDef {
    OptionDef { name, kind: Kind::Str, group: Group::Repo, secure: true, cli_only: false, default: None, help }
}

const fn pg(name: &'static str, kind: Kind, default: Option<&'static str>, help: &'static str) -> OptionDef {
    OptionDef { name, kind, group: Group::Pg, secure: false, cli_only: false, default, help }
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
        Kind::Enum(&["text", "json", "prometheus"]),
        Some("text"),
        "output format (info: also prometheus, the text exposition format)",
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
    cli("recurse", Kind::Bool, Some("n"), "repo-ls: list everything below the path, not one level"),
    cli("keep", Kind::Bool, None, "backup, annotate: expire never removes the backup (or, --no-keep, may again)"),
    opt("type", Kind::Str, None, "backup or recovery type"),
    cli("set", Kind::Str, None, "backup label to restore or show"),
    opt("target", Kind::Str, None, "recovery target"),
    opt("target-action", Kind::Enum(&["pause", "promote", "shutdown"]), Some("pause"), "action at the recovery target"),
    opt("target-exclusive", Kind::Bool, Some("n"), "stop just before the recovery target instead of after it"),
    opt("target-timeline", Kind::Str, None, "timeline to recover along: latest, current or a number"),
    opt("link-map", Kind::List, None, "where to restore a link: name=path"),
    opt("tablespace-map", Kind::List, None, "where to restore a tablespace: name-or-oid=path"),
    opt("recovery-option", Kind::List, None, "extra recovery setting: key=value"),
    opt(
        "archive-mode",
        Kind::Enum(&["preserve", "off"]),
        Some("preserve"),
        "restore: off writes archive_mode = 'off' so the restored copy does not archive into the stanza",
    ),
    // Repositories.
    repo("type", Kind::Enum(&["posix", "cifs", "s3", "gcs", "azure"]), Some("posix"), "storage type"),
    repo("path", Kind::Path, Some("/var/lib/pgstrata"), "repository path (directory, or prefix in a bucket)"),
    repo("cipher-type", Kind::Enum(&["none", "aes-256-gcm", "aes-256-cbc"]), Some("none"), "encryption"),
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
];

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
    cmd("repo-get", true, "print an object of the repository, raw"),
    cmd("repo-ls", true, "list objects of the repository"),
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

/// Resolves an option name (`repo12-s3-bucket`, `repo-path`, `log-level-file`).
pub fn resolve(name: &str) -> Option<Resolved> {
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
