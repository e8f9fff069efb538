//! WAL-G's `delete`: which backups go, decided without I/O from the catalog and the command's
//! arguments. What it decides is carried out by the engine's `expire` (under the repository's
//! lease, in its kill-safe order), with WAL-G's WAL rule: the archive before the oldest backup
//! that remains goes.
//!
//! - `retain N`: the N newest backups stay, and everything older goes — refused when a delta
//!   that stays would lose a backup it is a delta from; `retain FULL N`: the N newest full
//!   backups and everything after them stay; `retain FIND_FULL N`: the N newest backups stay,
//!   and the full backup the oldest of them needs, and everything after it.
//! - `before NAME|TIME`: the backups older than that backup (or than the first backup finished
//!   at or after TIME) go; refused when that would orphan a delta; with `FIND_FULL`, the full
//!   backup the target needs stays, and everything after it.
//! - `everything`: every backup and all WAL; refused while a backup is permanent, unless `FORCE`.
//!
//! Permanent backups (`backup-push --permanent`, `backup-mark`) are never removed (but by
//! `everything FORCE`), are not counted, and what they need stays.

use std::collections::BTreeSet;

use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry};
use pgstrata_repo_format::{BackupLabel, BackupType};

use super::names::named;
use crate::error::{CliError, CliResult, ErrorCode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    None,
    Full,
    FindFull,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Name(String),
    /// Unix seconds.
    Time(i64),
}

/// One `delete` command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delete {
    Retain { modifier: Modifier, count: usize },
    Before { find_full: bool, target: Target },
    Everything { force: bool },
}

fn usage(message: impl Into<String>) -> CliError {
    CliError::new(ErrorCode::CommandInvalid, message).hint(
        "usage: delete retain [FULL|FIND_FULL] N | delete before [FIND_FULL] NAME|TIME | delete everything [FORCE], \
         with --confirm to delete (without it, only what would be deleted is shown)",
    )
}

/// Parses `delete`'s arguments (without `--confirm`).
pub fn parse(args: &[&str]) -> CliResult<Delete> {
    match args {
        ["retain", rest @ ..] => {
            let (modifier, n) = match rest {
                ["FULL", n] => (Modifier::Full, n),
                ["FIND_FULL", n] => (Modifier::FindFull, n),
                [n] => (Modifier::None, n),
                _ => return Err(usage("delete retain takes [FULL|FIND_FULL] and a number")),
            };
            let count = n.parse::<usize>().ok().filter(|c| *c > 0).ok_or_else(|| {
                usage(format!("'{n}' is not a number of backups to retain (a whole number of at least 1)"))
            })?;
            Ok(Delete::Retain { modifier, count })
        }
        ["before", rest @ ..] => {
            let (find_full, what) = match rest {
                ["FIND_FULL", what] => (true, what),
                [what] => (false, what),
                _ => return Err(usage("delete before takes [FIND_FULL] and a backup name or a time")),
            };
            let target = if what.starts_with("base_") || *what == "LATEST" {
                Target::Name((*what).to_string())
            } else {
                let t = chrono::DateTime::parse_from_rfc3339(what)
                    .map_err(|_| usage(format!("'{what}' is neither a backup name (base_...) nor an RFC 3339 time")))?;
                Target::Time(t.timestamp())
            };
            Ok(Delete::Before { find_full, target })
        }
        ["everything"] => Ok(Delete::Everything { force: false }),
        ["everything", "FORCE"] => Ok(Delete::Everything { force: true }),
        ["everything", other, ..] => Err(usage(format!("delete everything takes only FORCE, not '{other}'"))),
        [mode, ..] => Err(usage(format!("unknown delete mode '{mode}' (retain, before or everything)"))),
        [] => Err(usage("delete needs a mode: retain, before or everything")),
    }
}

/// The backups `delete` removes (oldest first), and the permanent ones `everything FORCE` removes
/// too (their mark must go first).
pub fn doomed<'a>(catalog: &'a BackupCatalog, what: &Delete) -> CliResult<Vec<&'a CatalogEntry>> {
    let order: Vec<&CatalogEntry> = named(catalog).into_iter().map(|(_, b)| b).collect();
    let rotating: Vec<usize> = (0..order.len()).filter(|i| !order[*i].keep).collect();
    let full_of = |mut i: usize| -> usize {
        while let Some(prior) = &order[i].prior {
            match order.iter().position(|b| &b.label == prior) {
                Some(p) => i = p,
                None => break,
            }
        }
        i
    };
    let (boundary, find_full) = match what {
        Delete::Everything { force } => {
            let permanent: Vec<String> = order.iter().filter(|b| b.keep).map(|b| b.label.to_string()).collect();
            if !permanent.is_empty() && !force {
                return Err(CliError::new(
                    ErrorCode::BackupSetInvalid,
                    format!("permanent backups exist ({}); nothing is deleted", permanent.join(", ")),
                )
                .hint("delete everything FORCE deletes them too, or backup-mark -i them first"));
            }
            return Ok(order);
        }
        Delete::Retain { modifier, count } => {
            let counted: Vec<usize> = match modifier {
                Modifier::Full => {
                    rotating.iter().copied().filter(|i| order[*i].backup_type == BackupType::Full).collect()
                }
                _ => rotating.clone(),
            };
            if counted.len() <= *count {
                return Ok(Vec::new());
            }
            (counted[counted.len() - count], *modifier == Modifier::FindFull)
        }
        Delete::Before { find_full, target } => {
            let at = match target {
                Target::Name(name) => {
                    let found = super::names::find(catalog, name)?;
                    order.iter().position(|b| b.label == found.label)
                }
                Target::Time(t) => order.iter().position(|b| b.timestamp_stop >= *t),
            };
            let at = at.ok_or_else(|| {
                CliError::new(
                    ErrorCode::BackupSetInvalid,
                    "no backup finished at or after that time; nothing is deleted",
                )
                .hint("delete everything removes every backup")
            })?;
            (at, *find_full)
        }
    };
    let boundary = if find_full { full_of(boundary) } else { boundary };
    let doomed: Vec<&CatalogEntry> = rotating.iter().filter(|i| **i < boundary).map(|i| order[*i]).collect();
    // What stays must keep what it needs.
    let gone: BTreeSet<&BackupLabel> = doomed.iter().map(|b| &b.label).collect();
    for b in order.iter().filter(|b| !gone.contains(&b.label)) {
        if let Some(lost) = b.prior.iter().chain(&b.references).find(|n| gone.contains(n)) {
            return Err(CliError::new(
                ErrorCode::BackupSetInvalid,
                format!("backup {} is a delta from {lost}, which would be deleted; nothing is deleted", b.label),
            )
            .hint("add FIND_FULL to keep the full backup the oldest remaining delta needs"));
        }
    }
    Ok(doomed)
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unknown_modes_are_named() {
        let said = |args: &[&str]| parse(args).err().map(|e| e.message).unwrap_or_default();
        assert!(said(&["foo"]).contains("unknown delete mode 'foo'"), "{}", said(&["foo"]));
        assert!(said(&[]).contains("delete needs a mode"));
        assert!(said(&["everything", "NOW"]).contains("only FORCE"));
    }

    /// Backups one hour apart, starting in segments 1, 2, 3…: `F` full, `D` a delta from the
    /// previous one, `P` a permanent full.
    fn catalog(kinds: &str) -> BackupCatalog {
        let mut backups: Vec<CatalogEntry> = Vec::new();
        let n = kinds.len();
        for (i, kind) in kinds.chars().enumerate() {
            let hour = 10 + i;
            let prior = backups.last().map(|b| b.label.to_string());
            let label = match (kind, &prior) {
                ('D', Some(p)) => format!("{}_20270101-{hour:02}0000I", p.split('_').next().unwrap()),
                _ => format!("20270101-{hour:02}0000F"),
            };
            let prior = prior.filter(|_| kind == 'D');
            let age_days = (n - i) as f64 / 24.0;
            let mut b = crate::expire::plan::tests::backup(&label, prior.as_deref(), age_days, i as u32 + 1);
            b.keep = kind == 'P';
            backups.push(b);
        }
        BackupCatalog { backups }
    }

    /// The start segments (last digit) of what goes.
    fn gone(kinds: &str, args: &[&str]) -> CliResult<String> {
        let c = catalog(kinds);
        let d = doomed(&c, &parse(args)?)?;
        Ok(d.iter().map(|b| b.wal_start[23..].to_string()).collect())
    }

    #[test]
    fn retain_counts_backups_fulls_or_finds_the_full() {
        // 1F 2D 3D 4F 5D 6D
        assert_eq!(gone("FDDFDD", &["retain", "3"]).unwrap(), "123");
        assert!(gone("FDDFDD", &["retain", "2"]).unwrap_err().message.contains("is a delta from"));
        assert_eq!(gone("FDDFDD", &["retain", "FIND_FULL", "2"]).unwrap(), "123");
        assert_eq!(gone("FDDFDD", &["retain", "FULL", "1"]).unwrap(), "123");
        assert_eq!(gone("FDDFDD", &["retain", "FULL", "2"]).unwrap(), "");
        assert_eq!(gone("FDDFDD", &["retain", "9"]).unwrap(), "");
    }

    #[test]
    fn before_a_name_or_a_time() {
        assert_eq!(gone("FDDFDD", &["before", "base_000000010000000000000004"]).unwrap(), "123");
        let delta = "base_000000010000000000000005_D_000000010000000000000004";
        assert!(gone("FDDFDD", &["before", delta]).unwrap_err().message.contains("is a delta from"));
        assert_eq!(gone("FDDFDD", &["before", "FIND_FULL", delta]).unwrap(), "123");
        // Just before the 4th finished: it is the first at or after that time.
        let stop = catalog("FDDFDD").backups[3].timestamp_stop;
        let t = chrono::DateTime::from_timestamp(stop - 1, 0).unwrap().to_rfc3339();
        assert_eq!(gone("FDDFDD", &["before", &t]).unwrap(), "123");
        assert!(gone("FDDFDD", &["before", "base_00000001000000000000000F"]).is_err());
    }

    #[test]
    fn permanent_backups_are_neither_counted_nor_deleted() {
        // 1P 2F 3D 4F: 1 is permanent. Retaining 2 would keep 3D and 4F but lose 3D's full.
        assert!(gone("PFDF", &["retain", "2"]).unwrap_err().message.contains("is a delta from"));
        assert_eq!(gone("PFDF", &["retain", "FIND_FULL", "2"]).unwrap(), "");
        assert_eq!(gone("PFDF", &["retain", "1"]).unwrap(), "23");
        assert!(gone("PFDF", &["everything"]).unwrap_err().message.contains("permanent"));
        assert_eq!(gone("PFDF", &["everything", "FORCE"]).unwrap(), "1234");
        assert_eq!(gone("FDF", &["everything"]).unwrap(), "123");
    }

    #[test]
    fn bad_arguments_say_how_to_call() {
        for args in [
            &["retain"][..],
            &["retain", "0"],
            &["retain", "LAST", "2"],
            &["before"],
            &["before", "yesterday"],
            &["all"],
        ] {
            let e = parse(args).unwrap_err();
            assert!(e.hints.iter().any(|h| h.contains("usage: delete")), "{args:?}: {e}");
        }
    }
}
