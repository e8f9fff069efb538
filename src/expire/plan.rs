//! What `expire` removes, decided without I/O: from the catalog, the retention options and the
//! time, an [`ExpirePlan`] names the backups to remove (each with what depends on it) and says,
//! segment by segment, which archived WAL is still needed.
//!
//! The rules are pgBackRest's: full backups by count or by age (keeping the newest full older
//! than the age, so point-in-time recovery reaches back that far), differentials by count (fulls
//! count as differentials), incrementals only with what they depend on; WAL before the oldest
//! backup of the archive retention is removed except each retained backup's own start..stop
//! range. A backup marked `keep` is outside the rotation: never removed, never counted, and
//! everything it depends on stays.

use std::collections::BTreeSet;

use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry};
use pgstrata_repo_format::{BackupLabel, BackupType};

use crate::error::{CliError, CliResult, ErrorCode};

/// How full backups are retained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullRetention {
    /// The newest N.
    Count(u64),
    /// Those that completed within N days, and the newest one older than that.
    Days(u64),
}

/// A repository's retention options (`repoN-retention-*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub full: Option<FullRetention>,
    pub diff: Option<u64>,
    /// `repoN-retention-archive`: backups (of `archive_type`) worth of continuous WAL.
    pub archive: Option<u64>,
    pub archive_type: BackupType,
}

impl Retention {
    /// How far back continuous WAL is kept, or why it is not expired at all.
    fn wal_depth(&self, index: u32) -> Result<WalDepth, String> {
        let unset = |what: &str| {
            format!(
                "WAL is not expired: repo{index}-retention-archive is not set{what}; set it to the number of \
                 {} backups whose WAL to keep",
                self.archive_type.as_str()
            )
        };
        match (self.archive, self.archive_type) {
            (Some(n), t) => Ok(WalDepth::Count(n, t)),
            (None, BackupType::Full) => match self.full {
                Some(FullRetention::Count(n)) => Ok(WalDepth::Count(n, BackupType::Full)),
                Some(FullRetention::Days(_)) => Ok(WalDepth::OldestFull),
                None => Err(unset(&format!(" (nor repo{index}-retention-full)"))),
            },
            (None, BackupType::Diff) => self
                .diff
                .map(|n| WalDepth::Count(n, BackupType::Diff))
                .ok_or_else(|| unset(&format!(" (nor repo{index}-retention-diff)"))),
            (None, BackupType::Incr) => Err(unset("")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WalDepth {
    /// From the N-th newest backup counted by this type (full: fulls; diff: fulls and diffs;
    /// incr: every backup).
    Count(u64, BackupType),
    /// From the oldest retained full (time-based full retention).
    OldestFull,
}

/// Which backups to remove: by the retention options, one set (`--set`) with its dependents, or
/// the backups a caller chose (WAL-G's `delete`), whose WAL rule is WAL-G's: continuous WAL from
/// the oldest backup that remains outside `keep`, and none when no such backup remains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    Retention,
    Set(BackupLabel),
    Labels(BTreeSet<BackupLabel>),
}

/// One archived file as the WAL rules see it: its database and the segment it belongs to (the
/// first 24 hex digits of its name; a `.backup` or `.partial` file belongs to its segment).
#[derive(Clone, Copy, Debug)]
pub struct WalPosition<'a> {
    pub db_id: u32,
    pub segment: &'a str,
}

/// What happens to a `<timeline><log>` directory of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirVerdict {
    KeepAll,
    RemoveAll,
    /// Some segments go: decide file by file ([`ExpirePlan::keeps`]).
    Each,
}

/// The start..stop WAL of a retained backup, which it needs to become consistent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Consistency {
    db_id: u32,
    start: String,
    stop: String,
}

/// What one `expire` removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpirePlan {
    /// Backups to remove, dependents before what they depend on.
    pub expired: Vec<CatalogEntry>,
    /// The catalog after: every backup not expired.
    pub retained: BackupCatalog,
    /// Where continuous WAL starts (database, segment) — the oldest backup of the archive
    /// retention (none: no continuous WAL is kept); `None`: WAL is not expired.
    pub wal_from: Option<(u32, String, Option<BackupLabel>)>,
    consistency: Vec<Consistency>,
    /// Warnings for the log (an option not set, the latest backup expired).
    pub warnings: Vec<String>,
}

const DAY: i64 = 86_400;

impl ExpirePlan {
    /// Plans an `expire` of repository `index` at time `now` (unix seconds).
    pub fn new(
        catalog: &BackupCatalog,
        retention: &Retention,
        choice: &Choice,
        index: u32,
        now: i64,
    ) -> CliResult<Self> {
        let mut order: Vec<&CatalogEntry> = catalog.backups.iter().collect();
        order.sort_by_key(|b| (b.timestamp_stop, b.timestamp_start));
        let mut warnings = Vec::new();
        let candidates = match choice {
            Choice::Retention => {
                if retention.full.is_none() {
                    warnings.push(format!(
                        "option 'repo{index}-retention-full' is not set, the repository may run out of space; to keep \
                         full backups indefinitely (without this warning), set it to the maximum (9999999)"
                    ));
                }
                by_retention(&order, retention, now)
            }
            Choice::Set(label) => set_candidates(&order, label)?,
            Choice::Labels(labels) => order.iter().map(|b| &b.label).filter(|l| labels.contains(*l)).collect(),
        };
        // What a kept backup needs stays; what depends on a removed backup goes with it (a kept
        // backup's needs are all protected, so nothing retained loses what it depends on).
        let protected = needed_by(&order, |b| b.keep);
        let doomed: BTreeSet<&BackupLabel> = with_dependents(&order, candidates.into_iter().collect())
            .into_iter()
            .filter(|l| !protected.contains(l))
            .collect();
        if let Choice::Set(label) = choice {
            check_set(&order, label, &doomed, &mut warnings)?;
        }
        let expired: Vec<CatalogEntry> =
            order.iter().rev().filter(|b| doomed.contains(&b.label)).map(|b| (*b).clone()).collect();
        let retained =
            BackupCatalog { backups: catalog.backups.iter().filter(|b| !doomed.contains(&b.label)).cloned().collect() };
        let kept: Vec<&CatalogEntry> = order.iter().copied().filter(|b| !doomed.contains(&b.label)).collect();
        let from = |b: &CatalogEntry| (b.db_id, b.wal_start.clone(), Some(b.label.clone()));
        let wal_from = match (choice, retention.wal_depth(index)) {
            (Choice::Labels(_), _) => Some(
                wal_boundary(&kept, WalDepth::Count(u64::MAX, BackupType::Incr))
                    .map_or((u32::MAX, String::new(), None), from),
            ),
            (_, Ok(depth)) => wal_boundary(&kept, depth).map(from),
            (_, Err(why)) => {
                warnings.push(why);
                None
            }
        };
        let consistency = kept
            .iter()
            .map(|b| Consistency { db_id: b.db_id, start: b.wal_start.clone(), stop: b.wal_stop.clone() })
            .collect();
        Ok(Self { expired, retained, wal_from, consistency, warnings })
    }

    /// Whether an archived segment stays.
    pub fn keeps(&self, at: WalPosition<'_>) -> bool {
        let Some((db, from, _)) = &self.wal_from else { return true };
        at.db_id > *db
            || (at.db_id == *db && at.segment >= from.as_str())
            || self
                .consistency
                .iter()
                .any(|c| c.db_id == at.db_id && c.start.as_str() <= at.segment && at.segment <= c.stop.as_str())
    }

    /// Whether the segments of a `<timeline><log>` directory (16 hex digits) of database
    /// `db_id` all stay, all go, or must be looked at one by one.
    pub fn dir_verdict(&self, db_id: u32, dir: &str) -> DirVerdict {
        let (first, last) = (format!("{dir}00000000"), format!("{dir}FFFFFFFF"));
        let Some((db, from, _)) = &self.wal_from else { return DirVerdict::KeepAll };
        if db_id > *db || (db_id == *db && first.as_str() >= from.as_str()) {
            return DirVerdict::KeepAll;
        }
        let reaches_from = db_id == *db && last.as_str() >= from.as_str();
        let overlaps = self.consistency.iter().any(|c| c.db_id == db_id && c.start <= last && first <= c.stop);
        if reaches_from || overlaps { DirVerdict::Each } else { DirVerdict::RemoveAll }
    }
}

/// The labels retention picks, before `keep` and dependencies are applied.
fn by_retention<'a>(order: &[&'a CatalogEntry], retention: &Retention, now: i64) -> Vec<&'a BackupLabel> {
    let rotating = |types: &[BackupType]| -> Vec<&'a CatalogEntry> {
        order.iter().copied().filter(|b| !b.keep && types.contains(&b.backup_type)).collect()
    };
    let mut out = Vec::new();
    let fulls = rotating(&[BackupType::Full]);
    match retention.full {
        Some(FullRetention::Count(n)) => {
            let excess = fulls.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
            out.extend(fulls[..excess].iter().map(|b| &b.label));
        }
        Some(FullRetention::Days(days)) => {
            let cutoff = now.saturating_sub(i64::try_from(days).unwrap_or(i64::MAX / DAY).saturating_mul(DAY));
            // The newest full that is older than the period stays: recovery to the period's start needs it.
            if let Some(anchor) = fulls.iter().rposition(|b| b.timestamp_stop <= cutoff) {
                out.extend(fulls[..anchor].iter().map(|b| &b.label));
            }
        }
        None => {}
    }
    if let Some(n) = retention.diff {
        let counted = rotating(&[BackupType::Full, BackupType::Diff]);
        let excess = counted.len().saturating_sub(usize::try_from(n).unwrap_or(usize::MAX));
        out.extend(counted[..excess].iter().filter(|b| b.backup_type == BackupType::Diff).map(|b| &b.label));
    }
    out
}

fn set_candidates<'a>(order: &[&'a CatalogEntry], label: &BackupLabel) -> CliResult<Vec<&'a BackupLabel>> {
    let Some(b) = order.iter().find(|b| &b.label == label) else {
        return Err(CliError::new(ErrorCode::BackupSetInvalid, format!("backup set {label} does not exist"))
            .hint("run info to see the backups in the repository"));
    };
    if b.keep {
        return Err(CliError::new(
            ErrorCode::BackupSetInvalid,
            format!("backup set {label} is marked keep and is not expired"),
        )
        .hint(format!("remove the mark first: annotate --set={label} --no-keep")));
    }
    Ok(vec![&b.label])
}

/// `--set`: refused when a kept backup needs the set or no full backup would remain.
fn check_set(
    order: &[&CatalogEntry],
    label: &BackupLabel,
    doomed: &BTreeSet<&BackupLabel>,
    warnings: &mut Vec<String>,
) -> CliResult<()> {
    if !doomed.contains(label) {
        let keeper =
            order.iter().find(|b| b.keep && depends_on(b, label, order)).map_or(String::new(), |b| b.label.to_string());
        return Err(CliError::new(
            ErrorCode::BackupSetInvalid,
            format!("backup set {label} is needed by the kept backup {keeper} and is not expired"),
        )
        .hint(format!("remove the mark first: annotate --set={keeper} --no-keep")));
    }
    if !order.iter().any(|b| b.backup_type == BackupType::Full && !doomed.contains(&b.label)) {
        return Err(CliError::new(
            ErrorCode::BackupSetInvalid,
            format!("backup set {label} is not expired: at least one full backup must remain in the repository"),
        ));
    }
    if order.last().is_some_and(|b| doomed.contains(&b.label)) {
        warnings.push(format!(
            "expiring the latest backup ({}): point-in-time recovery after the remaining backups may be compromised",
            order.last().map_or(String::new(), |b| b.label.to_string())
        ));
    }
    Ok(())
}

/// The direct dependencies of a backup: its prior and every backup it takes data from.
fn needs(b: &CatalogEntry) -> impl Iterator<Item = &BackupLabel> {
    b.prior.iter().chain(b.references.iter())
}

fn depends_on(b: &CatalogEntry, label: &BackupLabel, order: &[&CatalogEntry]) -> bool {
    needed_by(order, |x| x.label == b.label).contains(label) && b.label != *label
}

/// Every backup matching `root` and, transitively, everything they need.
fn needed_by<'a>(order: &[&'a CatalogEntry], root: impl Fn(&CatalogEntry) -> bool) -> BTreeSet<&'a BackupLabel> {
    let mut set: BTreeSet<&BackupLabel> = order.iter().filter(|b| root(b)).map(|b| &b.label).collect();
    // Newest first: a backup only needs older ones, so one pass reaches the whole closure.
    for b in order.iter().rev() {
        if set.contains(&b.label) {
            set.extend(needs(b));
        }
    }
    set
}

/// The chosen backups and, transitively, every backup that needs one of them.
fn with_dependents<'a>(order: &[&'a CatalogEntry], mut set: BTreeSet<&'a BackupLabel>) -> BTreeSet<&'a BackupLabel> {
    // Oldest first: a dependent is newer than what it depends on.
    for b in order {
        if needs(b).any(|n| set.contains(n)) {
            set.insert(&b.label);
        }
    }
    set
}

/// The oldest backup whose WAL onwards is kept, among the retained backups outside `keep`.
fn wal_boundary<'a>(retained: &[&'a CatalogEntry], depth: WalDepth) -> Option<&'a CatalogEntry> {
    let rotating = retained.iter().copied().filter(|b| !b.keep);
    match depth {
        WalDepth::OldestFull => rotating.into_iter().find(|b| b.backup_type == BackupType::Full),
        WalDepth::Count(n, counted) => {
            let counted: Vec<&CatalogEntry> = rotating
                .filter(|b| match counted {
                    BackupType::Full => b.backup_type == BackupType::Full,
                    BackupType::Diff => b.backup_type != BackupType::Incr,
                    BackupType::Incr => true,
                })
                .collect();
            let n = usize::try_from(n).unwrap_or(usize::MAX).min(counted.len());
            counted.len().checked_sub(n).and_then(|i| counted.get(i)).copied()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use pgstrata_repo_format::Sha256Digest;
    use pgstrata_repo_format::pg::{Lsn, TimelineId};

    const NOW: i64 = 1_800_000_000;

    /// A backup that stopped `age_days` before [`NOW`], its WAL in segment `seg` (timeline 1).
    pub(crate) fn backup(label: &str, prior: Option<&str>, age_days: f64, seg: u32) -> CatalogEntry {
        let label: BackupLabel = label.parse().expect("label");
        let prior: Option<BackupLabel> = prior.map(|p| p.parse().expect("prior"));
        let stop = NOW - (age_days * DAY as f64) as i64;
        CatalogEntry {
            backup_type: label.backup_type(),
            references: prior.iter().cloned().collect(),
            prior,
            label,
            db_id: 1,
            timeline: TimelineId(1),
            timestamp_start: stop - 60,
            timestamp_stop: stop,
            lsn_start: Lsn(1),
            lsn_stop: Lsn(2),
            wal_start: format!("0000000100000000{seg:08X}"),
            wal_stop: format!("0000000100000000{:08X}", seg + 1),
            size: 0,
            delta: 0,
            repo_size: 0,
            repo_delta: 0,
            error: false,
            pgstrata_version: String::new(),
            manifest_sha256: Sha256Digest::of(b""),
            keep: false,
            annotation: Default::default(),
        }
    }

    const F1: &str = "20270101-000000F";
    const D1: &str = "20270101-000000F_20270102-000000D";
    const F2: &str = "20270103-000000F";
    const I2: &str = "20270103-000000F_20270104-000000I";
    const F3: &str = "20270105-000000F";

    /// F1, D1, F2, I2, F3: one a day, WAL segments 0x10, 0x20, ...
    fn five() -> BackupCatalog {
        BackupCatalog {
            backups: vec![
                backup(F1, None, 5.0, 0x10),
                backup(D1, Some(F1), 4.0, 0x20),
                backup(F2, None, 3.0, 0x30),
                backup(I2, Some(F2), 2.0, 0x40),
                backup(F3, None, 1.0, 0x50),
            ],
        }
    }

    fn count(full: u64) -> Retention {
        Retention { full: Some(FullRetention::Count(full)), diff: None, archive: None, archive_type: BackupType::Full }
    }

    fn labels(entries: &[CatalogEntry]) -> Vec<String> {
        entries.iter().map(|b| b.label.to_string()).collect()
    }

    fn seg(n: u32) -> String {
        format!("0000000100000000{n:08X}")
    }

    fn keeps(plan: &ExpirePlan, n: u32) -> bool {
        plan.keeps(WalPosition { db_id: 1, segment: &seg(n) })
    }

    #[test]
    fn full_count_expires_the_oldest_fulls_with_their_dependents_and_their_wal() {
        let plan = ExpirePlan::new(&five(), &count(2), &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [D1, F1], "dependents first");
        assert_eq!(labels(&plan.retained.backups), [F2, I2, F3]);
        assert_eq!(plan.wal_from.as_ref().map(|w| w.1.clone()), Some(seg(0x30)));
        assert!(!keeps(&plan, 0x10) && !keeps(&plan, 0x21) && !keeps(&plan, 0x2F));
        assert!(keeps(&plan, 0x30) && keeps(&plan, 0x45) && keeps(&plan, 0x99));
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        // Nothing more on a second run: the plan of the retained catalog is empty.
        let again = ExpirePlan::new(&plan.retained, &count(2), &Choice::Retention, 1, NOW).expect("plan");
        assert!(again.expired.is_empty());
    }

    #[test]
    fn full_time_keeps_the_newest_full_older_than_the_period() {
        // Fulls 5, 3 and 1 days old.
        let at = |days| {
            let r = Retention { full: Some(FullRetention::Days(days)), ..count(1) };
            labels(&ExpirePlan::new(&five(), &r, &Choice::Retention, 1, NOW).expect("plan").expired)
        };
        assert_eq!(at(2), [D1, F1], "F2 (3 days) is the anchor");
        assert_eq!(at(4), Vec::<String>::new(), "F1 (5 days) is the only full older than 4 days: kept");
        assert_eq!(at(10), Vec::<String>::new(), "no full older than the period");
        assert_eq!(at(0), [I2, F2, D1, F1], "F3 anchors a zero-day period");
        // WAL from the oldest retained full when retention-archive is not set.
        let r = Retention { full: Some(FullRetention::Days(2)), ..count(1) };
        let plan = ExpirePlan::new(&five(), &r, &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(plan.wal_from.map(|w| w.1), Some(seg(0x30)));
    }

    #[test]
    fn archive_type_diff_counts_fulls_and_diffs_and_keeps_older_backups_consistent() {
        let r = Retention {
            full: Some(FullRetention::Count(3)),
            diff: None,
            archive: Some(2),
            archive_type: BackupType::Diff,
        };
        let plan = ExpirePlan::new(&five(), &r, &Choice::Retention, 1, NOW).expect("plan");
        assert!(plan.expired.is_empty());
        // The two newest fulls-or-diffs are F3 and F2: continuous WAL from F2; F1 and D1 keep
        // only their own start..stop.
        assert_eq!(plan.wal_from.as_ref().and_then(|w| w.2.as_ref()).map(|l| l.to_string()), Some(F2.to_string()));
        let kept: Vec<u32> = (0x0F..0x32).filter(|&n| keeps(&plan, n)).collect();
        assert_eq!(kept, [0x10, 0x11, 0x20, 0x21, 0x30, 0x31]);
        // Counting incrementals too (retention-archive-type=incr): from I2.
        let r = Retention { archive_type: BackupType::Incr, ..r };
        let plan = ExpirePlan::new(&five(), &r, &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(plan.wal_from.and_then(|w| w.2).map(|l| l.to_string()), Some(I2.to_string()));
    }

    #[test]
    fn unset_options_warn_and_keep_wal() {
        let none = Retention { full: None, diff: None, archive: None, archive_type: BackupType::Full };
        let plan = ExpirePlan::new(&five(), &none, &Choice::Retention, 2, NOW).expect("plan");
        assert!(plan.expired.is_empty() && plan.wal_from.is_none());
        assert!(plan.warnings.iter().any(|w| w.contains("'repo2-retention-full' is not set")), "{:?}", plan.warnings);
        let incr = Retention { archive_type: BackupType::Incr, ..count(2) };
        let plan = ExpirePlan::new(&five(), &incr, &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [D1, F1], "backups still expire");
        assert!(plan.wal_from.is_none(), "but WAL is kept");
        assert!(plan.warnings.iter().any(|w| w.contains("repo1-retention-archive is not set")));
    }

    #[test]
    fn diff_retention_counts_fulls_as_diffs() {
        const D2: &str = "20270101-000000F_20270103-000000D";
        const I3: &str = "20270101-000000F_20270103-100000I";
        const D3: &str = "20270101-000000F_20270104-000000D";
        let catalog = BackupCatalog {
            backups: vec![
                backup(F1, None, 5.0, 0x10),
                backup(D1, Some(F1), 4.0, 0x20),
                backup(D2, Some(F1), 3.0, 0x30),
                backup(I3, Some(D2), 2.5, 0x38),
                backup(D3, Some(F1), 2.0, 0x40),
            ],
        };
        let r = Retention { diff: Some(2), ..count(2) };
        let plan = ExpirePlan::new(&catalog, &r, &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [D1]);
        let r = Retention { diff: Some(1), ..count(2) };
        let plan = ExpirePlan::new(&catalog, &r, &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [I3, D2, D1], "an incr goes with its diff");
    }

    #[test]
    fn kept_backups_stay_with_what_they_need_and_do_not_count() {
        let mut catalog = five();
        catalog.backups[0].keep = true; // F1
        let plan = ExpirePlan::new(&catalog, &count(1), &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [I2, F2], "F1 is kept (and so its diff); F3 is the one rotating full kept");
        assert!(keeps(&plan, 0x10) && keeps(&plan, 0x11), "a kept backup keeps its own WAL");
        assert!(!keeps(&plan, 0x12));
        let mut catalog = five();
        catalog.backups[3].keep = true; // I2 needs F2
        let plan = ExpirePlan::new(&catalog, &count(1), &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [D1, F1]);
        let refused = ExpirePlan::new(&catalog, &count(1), &Choice::Set(F2.parse().expect("l")), 1, NOW);
        let e = refused.expect_err("F2 is needed by a kept backup");
        assert!(e.message.contains("needed by the kept backup 20270103-000000F_20270104-000000I"), "{}", e.message);
        let refused = ExpirePlan::new(&catalog, &count(1), &Choice::Set(I2.parse().expect("l")), 1, NOW);
        assert!(refused.expect_err("kept").message.contains("is marked keep"));
    }

    #[test]
    fn a_set_goes_with_its_dependents_but_the_last_full_stays() {
        let plan = ExpirePlan::new(&five(), &count(9), &Choice::Set(F2.parse().expect("l")), 1, NOW).expect("plan");
        assert_eq!(labels(&plan.expired), [I2, F2]);
        let plan = ExpirePlan::new(&five(), &count(9), &Choice::Set(F3.parse().expect("l")), 1, NOW).expect("plan");
        assert!(plan.warnings.iter().any(|w| w.contains("expiring the latest backup")), "{:?}", plan.warnings);
        let only = BackupCatalog { backups: five().backups[..2].to_vec() };
        let e = ExpirePlan::new(&only, &count(9), &Choice::Set(F1.parse().expect("l")), 1, NOW).expect_err("last full");
        assert!(e.message.contains("at least one full backup must remain"), "{}", e.message);
        let e = ExpirePlan::new(&only, &count(9), &Choice::Set(F3.parse().expect("l")), 1, NOW).expect_err("absent");
        assert_eq!(e.code, ErrorCode::BackupSetInvalid);
    }

    #[test]
    fn wal_rules_across_timelines_and_databases() {
        let mut catalog = five();
        // F3 on timeline 2 of database 2 (after a stanza-upgrade).
        catalog.backups[4].db_id = 2;
        catalog.backups[4].wal_start = "000000020000000000000005".into();
        let r = Retention { archive: Some(1), ..count(3) };
        let plan = ExpirePlan::new(&catalog, &r, &Choice::Retention, 1, NOW).expect("plan");
        assert_eq!(plan.wal_from.as_ref().map(|w| (w.0, w.1.as_str())), Some((2, "000000020000000000000005")));
        // Database 1: only the retained backups' own ranges; database 2: from F3 on, across timelines.
        assert_eq!(plan.dir_verdict(1, "0000000100000001"), DirVerdict::RemoveAll);
        assert_eq!(plan.dir_verdict(1, "0000000100000000"), DirVerdict::Each);
        assert!(keeps(&plan, 0x31) && !keeps(&plan, 0x32));
        assert_eq!(
            plan.dir_verdict(2, "0000000100000000"),
            DirVerdict::RemoveAll,
            "an older timeline before the boundary"
        );
        assert_eq!(plan.dir_verdict(2, "0000000200000000"), DirVerdict::Each);
        assert_eq!(plan.dir_verdict(2, "0000000200000001"), DirVerdict::KeepAll);
        assert_eq!(plan.dir_verdict(2, "0000000300000000"), DirVerdict::KeepAll, "a later timeline");
        assert_eq!(plan.dir_verdict(3, "0000000100000000"), DirVerdict::KeepAll, "a newer database");
        assert!(plan.keeps(WalPosition { db_id: 2, segment: "000000020000000000000005" }));
        assert!(!plan.keeps(WalPosition { db_id: 2, segment: "000000020000000000000004" }));
    }
}
