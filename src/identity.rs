//! What the binary says it is, by the name it was invoked under: pgstrata's own version, or — as
//! `pgbackrest` — the pgBackRest release whose interface it implements (docs/commands.md,
//! "version").

use std::path::Path;

/// Which program name we answer to, which decides env prefix and default paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Pgstrata,
    /// Installed as `pgbackrest`: a drop-in for operators that call pgBackRest.
    Pgbackrest,
    /// Installed as `wal-g`: WAL-G's command line (`crate::walg`), configured by its environment
    /// variables only, which it passes on as `PGSTRATA_*` (no configuration file is read).
    WalG,
}

impl Flavor {
    pub fn from_argv0(argv0: &str) -> Self {
        let base = Path::new(argv0).file_name().and_then(|s| s.to_str()).unwrap_or("");
        match base {
            "pgbackrest" => Self::Pgbackrest,
            "wal-g" => Self::WalG,
            _ => Self::Pgstrata,
        }
    }

    pub fn env_prefix(self) -> &'static str {
        match self {
            Self::Pgstrata | Self::WalG => "PGSTRATA_",
            Self::Pgbackrest => "PGBACKREST_",
        }
    }

    pub(crate) fn config_dir(self) -> &'static str {
        match self {
            Self::Pgstrata | Self::WalG => "/etc/pgstrata",
            Self::Pgbackrest => "/etc/pgbackrest",
        }
    }

    /// The configuration file read when `config` is not given.
    pub fn default_config_file(self) -> String {
        format!("{}/{}", self.config_dir(), self.config_file_name())
    }

    pub(crate) fn config_file_name(self) -> &'static str {
        match self {
            Self::Pgstrata | Self::WalG => "pgstrata.conf",
            Self::Pgbackrest => "pgbackrest.conf",
        }
    }
}

/// The name we were invoked under, for messages.
pub fn program_name(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Pgstrata => "pgstrata",
        Flavor::Pgbackrest => "pgbackrest",
        Flavor::WalG => "wal-g",
    }
}

/// The pgBackRest release whose command line, configuration and `info` JSON the pgBackRest front
/// end follows, and which it is compared with side by side.
pub const PGBACKREST_COMPAT: &str = "2.59.1";

/// What we are: `pgstrata 0.1.0`, noting the compatible mode when run as `pgbackrest` (help).
pub fn identity_line(flavor: Flavor) -> String {
    match flavor {
        Flavor::Pgstrata => format!("pgstrata {}", env!("CARGO_PKG_VERSION")),
        Flavor::Pgbackrest => {
            format!("pgstrata {} (pgBackRest {PGBACKREST_COMPAT} compatible mode)", env!("CARGO_PKG_VERSION"))
        }
        Flavor::WalG => format!("pgstrata {} (WAL-G front end)", env!("CARGO_PKG_VERSION")),
    }
}

/// The version a front end reports wherever its tool reports one (`version`, `info` JSON's
/// `backrest.version`, the log's command banners): as `pgbackrest`, the pgBackRest release whose
/// interface it implements; otherwise pgstrata's own.
pub fn reported_version(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::Pgbackrest => PGBACKREST_COMPAT,
        Flavor::Pgstrata | Flavor::WalG => env!("CARGO_PKG_VERSION"),
    }
}

/// `version --output=num`: pgBackRest's numbering, major * 1000000 + minor * 1000 + patch
/// (2.59.1 is 2059001).
pub fn version_num(flavor: Flavor) -> u64 {
    let mut parts = reported_version(flavor).split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor, patch) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    major * 1_000_000 + minor * 1000 + patch
}

/// The `version` line: as `pgbackrest`, the line pgBackRest prints (`pgBackRest 2.59.1`), which
/// monitoring clients parse (check_pgbackrest refuses anything else); `version --output=json`
/// and `help` say what this really is.
pub fn version_line(flavor: Flavor) -> String {
    match flavor {
        Flavor::Pgstrata | Flavor::WalG => identity_line(flavor),
        Flavor::Pgbackrest => format!("pgBackRest {PGBACKREST_COMPAT}"),
    }
}
