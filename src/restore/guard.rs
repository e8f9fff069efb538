//! What a restore may do to the directories it is given, decided before it writes or removes
//! anything (pgBackRest's rules):
//!
//! - `postmaster.pid` in the data directory means PostgreSQL may be running — perhaps in another
//!   container or pod sharing the volume, where its pid means nothing here — so the restore is
//!   refused until someone who knows removes the file.
//! - `--delta` and `--force` may rewrite and remove files only where the directory is proven to
//!   be a data directory: it holds `PG_VERSION`, a `backup.manifest` (pgBackRest's), or our
//!   marker of a restore in progress. Elsewhere they are switched off with a warning, and a
//!   non-empty directory is refused as without them.
//! - In a tablespace location only this cluster's own `PG_<major>_<catalog>` directory is
//!   examined and cleaned; whatever else lives there (another cluster's) is never touched.

use std::path::Path;

use crate::error::{CliError, CliResult, ErrorCode};
use crate::restore::plan::RestorePlan;

/// Written into the data directory before a restore changes anything and removed when it has
/// completed: a restore that was interrupted leaves it, so `--delta` can finish the job.
pub const MARKER: &str = "pgstrata.restore";

/// Files whose presence proves a directory is a PostgreSQL data directory.
const PROOFS: [&str; 3] = ["PG_VERSION", "backup.manifest", MARKER];

/// How the restore may treat what is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Everything restored is new: the directories are empty or missing.
    Empty,
    /// Compare files in place and rewrite only what differs; remove what the backup lacks.
    Delta,
}

/// Checks the data directory; returns how the restore may treat it.
pub fn check_data_dir(data: &Path, delta_asked: bool) -> CliResult<Existing> {
    let pid = data.join("postmaster.pid");
    if std::fs::symlink_metadata(&pid).is_ok() {
        return Err(CliError::new(
            ErrorCode::PgRunning,
            format!("unable to restore while PostgreSQL is running in {}", data.display()),
        )
        .hint(format!(
            "{} exists: stop PostgreSQL first; remove postmaster.pid only if PostgreSQL is really not running \
             (on any host sharing this volume)",
            pid.display()
        )));
    }
    let mut delta = delta_asked;
    if delta && !PROOFS.iter().any(|p| data.join(p).exists()) {
        tracing::warn!(
            "--delta or --force given, but {} holds none of {} to prove it is a data directory: \
             --delta and --force are disabled, and a non-empty directory is refused",
            data.display(),
            PROOFS.join(", ")
        );
        delta = false;
    }
    if !delta && !is_empty(data)? {
        let mut e = CliError::new(
            ErrorCode::PathNotEmpty,
            format!("unable to restore to {}: the directory is not empty", data.display()),
        );
        e = if delta_asked {
            e.hint("restore into an empty directory, or check --pg1-path: this is not a PostgreSQL data directory")
        } else {
            e.hint("use --delta to restore over an existing cluster (only what differs is rewritten), or an empty directory")
        };
        return Err(e);
    }
    Ok(if delta { Existing::Delta } else { Existing::Empty })
}

/// Checks each tablespace location: without delta, this cluster's own directory in it must be
/// missing or empty (other clusters' directories may sit beside it).
pub fn check_tablespaces(plan: &RestorePlan, own_dirs: &[(String, String)], existing: Existing) -> CliResult<()> {
    if existing == Existing::Delta {
        return Ok(());
    }
    for (root, name) in own_dirs {
        let Some(dir) = plan.roots.get(root).map(|r| r.join(name)) else { continue };
        if !is_empty(&dir)? {
            return Err(CliError::new(
                ErrorCode::PathNotEmpty,
                format!("unable to restore tablespace {root} to {}: the directory is not empty", dir.display()),
            )
            .hint("use --delta to restore over an existing cluster, or map the tablespace elsewhere with --tablespace-map"));
        }
    }
    Ok(())
}

/// Missing counts as empty; anything else that cannot be read is an error.
fn is_empty(dir: &Path) -> CliResult<bool> {
    match std::fs::read_dir(dir) {
        Ok(mut d) => Ok(d.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(CliError::new(
            ErrorCode::PathNotEmpty,
            format!("unable to restore to {}: it is not a directory", dir.display()),
        )),
        Err(e) => Err(CliError::new(ErrorCode::FileRead, format!("unable to read {}: {e}", dir.display()))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("pgstrata-guard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn delta_needs_proof_of_a_data_directory() {
        let d = scratch("proof");
        assert_eq!(check_data_dir(&d.join("missing"), true).unwrap(), Existing::Empty);
        assert_eq!(check_data_dir(&d, true).unwrap(), Existing::Empty);
        std::fs::write(d.join("README"), "precious").unwrap();
        let e = check_data_dir(&d, true).unwrap_err();
        assert_eq!(e.code, ErrorCode::PathNotEmpty);
        let e = check_data_dir(&d, false).unwrap_err();
        assert_eq!(e.code, ErrorCode::PathNotEmpty);
        for proof in PROOFS {
            std::fs::write(d.join(proof), "15").unwrap();
            assert_eq!(check_data_dir(&d, true).unwrap(), Existing::Delta, "{proof}");
            std::fs::remove_file(d.join(proof)).unwrap();
        }
        std::fs::write(d.join("postmaster.pid"), "999999999\n").unwrap();
        std::fs::write(d.join("PG_VERSION"), "15").unwrap();
        assert_eq!(check_data_dir(&d, true).unwrap_err().code, ErrorCode::PgRunning);
        assert_eq!(std::fs::read(d.join("README")).unwrap(), b"precious");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn tablespace_guard_looks_only_at_this_clusters_directory() {
        let d = scratch("ts");
        std::fs::create_dir_all(d.join("PG_16_202307071/5")).unwrap();
        let mut plan = RestorePlan::default();
        plan.roots.insert("pg_tblspc/16400".into(), d.clone());
        let own = vec![("pg_tblspc/16400".to_string(), "PG_15_202209061".to_string())];
        check_tablespaces(&plan, &own, Existing::Empty).unwrap();
        std::fs::create_dir_all(d.join("PG_15_202209061/5")).unwrap();
        assert_eq!(check_tablespaces(&plan, &own, Existing::Empty).unwrap_err().code, ErrorCode::PathNotEmpty);
        check_tablespaces(&plan, &own, Existing::Delta).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
