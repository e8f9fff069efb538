//! What the binary says it is, by the name it was invoked under: pgstrata's own version, or — as
//! `pgbackrest` — the pgBackRest release whose interface it implements (docs/commands.md,
//! "version").

use crate::config::Flavor;

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
