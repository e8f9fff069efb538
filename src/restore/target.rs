//! Recovery targets: what `--type`, `--target`, `--target-exclusive`, `--target-action` and
//! `--target-timeline` ask for, which backup can reach it, and the settings PostgreSQL gets.
//!
//! Everything here is decided before the restore writes a byte: a target that no backup can
//! reach, or that lies beyond what the archive holds, is an error naming the problem.

use std::collections::BTreeMap;

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::label::timestamp_text;
use pgstrata_repo_format::layout::archive_id;
use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry};
use pgstrata_repo_format::pg::{Lsn, TimelineHistory, TimelineId};

use crate::error::{CliError, CliResult, ErrorCode};
use crate::repo::Repo;
use crate::wal;

/// What recovery should reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Goal {
    /// Replay to the end of the archive.
    Default,
    /// Stop as soon as the backup is consistent.
    Immediate,
    /// A standby that keeps replaying from the archive.
    Standby,
    /// Write no recovery settings.
    None,
    /// Keep the recovery settings the data directory had before the restore.
    Preserve,
    /// A commit time: the text as given, and Unix microseconds.
    Time {
        text: String,
        micros: i64,
    },
    Lsn(Lsn),
    Xid(String),
    /// A restore point made with `pg_create_restore_point`.
    Name(String),
}

/// `--target-timeline`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimelineChoice {
    Latest,
    Current,
    Id(TimelineId),
}

/// The whole recovery request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    pub goal: Goal,
    pub exclusive: bool,
    pub action: String,
    pub timeline: Option<TimelineChoice>,
}

impl Recovery {
    /// Whether recovery stops at a target (and so takes a `recovery_target_action`).
    fn has_target(&self) -> bool {
        matches!(self.goal, Goal::Immediate | Goal::Time { .. } | Goal::Lsn(_) | Goal::Xid(_) | Goal::Name(_))
    }

    /// `recovery_target*` settings, in the order PostgreSQL documents them.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match &self.goal {
            Goal::Immediate => out.push(("recovery_target", "immediate".to_string())),
            Goal::Time { text, .. } => out.push(("recovery_target_time", text.clone())),
            Goal::Lsn(lsn) => out.push(("recovery_target_lsn", lsn.to_string())),
            Goal::Xid(xid) => out.push(("recovery_target_xid", xid.clone())),
            Goal::Name(name) => out.push(("recovery_target_name", name.clone())),
            Goal::Default | Goal::Standby | Goal::None | Goal::Preserve => {}
        }
        if self.exclusive {
            out.push(("recovery_target_inclusive", "false".to_string()));
        }
        if self.has_target() {
            out.push(("recovery_target_action", self.action.clone()));
        }
        match self.timeline {
            Some(TimelineChoice::Latest) => out.push(("recovery_target_timeline", "latest".to_string())),
            Some(TimelineChoice::Current) => out.push(("recovery_target_timeline", "current".to_string())),
            Some(TimelineChoice::Id(t)) => out.push(("recovery_target_timeline", t.0.to_string())),
            None => {}
        }
        out
    }

    /// A short description for messages.
    pub fn describe(&self) -> String {
        match &self.goal {
            Goal::Time { text, .. } => format!("time '{text}'"),
            Goal::Lsn(l) => format!("LSN {l}"),
            Goal::Xid(x) => format!("transaction {x}"),
            Goal::Name(n) => format!("restore point '{n}'"),
            other => format!("{other:?}").to_lowercase(),
        }
    }
}

fn micros_text(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let t = timestamp_text(secs);
    format!("{}-{}-{} {}:{}:{} UTC", &t[..4], &t[4..6], &t[6..8], &t[9..11], &t[11..13], &t[13..15])
}

/// The archive a backup's WAL lives in.
fn archive_of(repo: &Repo, backup: &CatalogEntry) -> CliResult<String> {
    let db = repo.info.db_history.iter().find(|d| d.id == backup.db_id).ok_or_else(|| {
        CliError::new(
            ErrorCode::RepoInvalid,
            format!("backup {} names database {} the stanza does not list", backup.label, backup.db_id),
        )
    })?;
    Ok(archive_id(db.pg_version, db.id))
}

/// Chooses the backup to restore, as pgBackRest and PostgreSQL treat timelines:
///
/// - recovery follows `--target-timeline` when given; else `current` (the backup's own) for
///   `--type=immediate` (recovery ends at consistency, before any switch could matter), else
///   `latest` (PostgreSQL's default);
/// - `--set` names the backup, refused before anything is written when it does not lie on the
///   followed timeline's history (naming where that timeline forked from the backup's);
/// - otherwise the newest backup that lies on that history and, for a time or LSN target,
///   ended before it. Each newer backup passed over is logged at INFO with the reason.
///
/// Then checks that the archive reaches the target.
pub async fn choose_backup(
    repo: &Repo,
    catalog: &BackupCatalog,
    recovery: &Recovery,
    set: Option<&str>,
) -> CliResult<CatalogEntry> {
    let candidates: Vec<&CatalogEntry> = match set {
        Some(set) => {
            let label: BackupLabel = set.parse()?;
            let b = catalog.backups.iter().find(|b| b.label == label).ok_or_else(|| {
                CliError::new(ErrorCode::BackupSetInvalid, format!("backup set {set} is not in repo{}", repo.index))
                    .hint("run info to list the backups")
            })?;
            vec![b]
        }
        None => catalog.backups.iter().rev().collect(),
    };
    if candidates.is_empty() {
        return Err(CliError::new(
            ErrorCode::BackupSetInvalid,
            format!("no backup set found to restore in repo{}", repo.index),
        )
        .hint("take a backup first"));
    }
    // The timeline each candidate's recovery follows, and its history, each fetched once.
    let mut histories: BTreeMap<(String, TimelineId), TimelineHistory> = BTreeMap::new();
    let mut latest: BTreeMap<String, TimelineId> = BTreeMap::new();
    let mut judged = Vec::new();
    for b in candidates {
        let archive = archive_of(repo, b)?;
        let timeline = match recovery.timeline.unwrap_or(TimelineChoice::Latest) {
            TimelineChoice::Current => b.timeline,
            TimelineChoice::Id(t) => t,
            TimelineChoice::Latest => match latest.get(&archive) {
                Some(t) => *t,
                None => {
                    let t = wal::latest_timeline(repo, &archive).await?.max(b.timeline);
                    latest.insert(archive.clone(), t);
                    t
                }
            },
        };
        let key = (archive.clone(), timeline);
        if !histories.contains_key(&key) {
            let history = if timeline == b.timeline {
                // Following the backup's own timeline needs no history file.
                TimelineHistory { timeline, ancestors: Vec::new() }
            } else {
                wal::history(repo, &archive, timeline).await?
            };
            histories.insert(key.clone(), history);
        }
        judged.push((b, key));
    }
    let (chosen, key) = pick(&judged, &histories, recovery, set.is_some()).map_err(|refusal| match refusal {
        Refusal::OffHistory(why) => CliError::new(ErrorCode::DbMismatch, why).hint(
            "was the target timeline made by promoting a standby, or by a restore tested without \
             --archive-mode=off? Name another --target-timeline, or leave out --set",
        ),
        Refusal::AfterTarget(why) => CliError::new(
            ErrorCode::BackupSetInvalid,
            format!("backup set {why}: it cannot reach {}", recovery.describe()),
        )
        .hint("choose a later target, or leave out --set"),
        Refusal::None(whys) => CliError::new(
            ErrorCode::BackupSetInvalid,
            format!(
                "no backup in repo{} can reach {}: the target is before every usable backup ({})",
                repo.index,
                recovery.describe(),
                whys.join("; ")
            ),
        )
        .hint("choose a later target, another --target-timeline, or a repository with older backups"),
    })?;
    check_archive_reaches(repo, &key.0, chosen, &histories[key], recovery).await?;
    Ok(chosen.clone())
}

/// Why no backup was chosen.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// The named backup is not on the followed timeline's history.
    OffHistory(String),
    /// The named backup ended after a time or LSN target.
    AfterTarget(String),
    /// No candidate qualified: each one's reason.
    None(Vec<String>),
}

/// The decision of [`choose_backup`] over candidates (newest first, each with the key of the
/// history its recovery follows): the first that lies on its history and before the target.
fn pick<'a, K: Ord>(
    candidates: &[(&'a CatalogEntry, K)],
    histories: &'a BTreeMap<K, TimelineHistory>,
    recovery: &Recovery,
    named: bool,
) -> Result<(&'a CatalogEntry, &'a K), Refusal> {
    let mut passed = Vec::new();
    // The newest backup that stopped in a time target's own second: taken only when no older
    // one is sure to precede the target (the catalog keeps whole seconds).
    let mut same_second: Option<(&'a CatalogEntry, &'a K)> = None;
    for (b, key) in candidates {
        let Some((key, history)) = histories.get_key_value(key) else { continue };
        if let Some(why) = off_history(history, b) {
            let why = format!("{}: {why}", b.label);
            if named {
                return Err(Refusal::OffHistory(why));
            }
            tracing::info!("passing over backup {why}");
            passed.push(why);
            continue;
        }
        match after_target(&recovery.goal, b) {
            Some(After::Surely(why)) => {
                let why = format!("{}: {why}", b.label);
                if named {
                    return Err(Refusal::AfterTarget(why));
                }
                tracing::info!("passing over backup {why}");
                passed.push(why);
                continue;
            }
            Some(After::SameSecond) if !named => {
                tracing::info!(
                    "passing over backup {}: it stopped in the target's second, perhaps after the target",
                    b.label
                );
                same_second = same_second.or(Some((b, key)));
                continue;
            }
            _ => {}
        }
        if !passed.is_empty() || same_second.is_some() {
            tracing::info!(
                "restoring backup {}, the newest that reaches {} on timeline {}",
                b.label,
                recovery.describe(),
                history.timeline
            );
        }
        return Ok((b, key));
    }
    if let Some((b, key)) = same_second {
        tracing::warn!(
            "restoring backup {}, which stopped in the target's second: recovery fails if it stopped after {}",
            b.label,
            recovery.describe()
        );
        return Ok((b, key));
    }
    Err(Refusal::None(passed))
}

/// Why backup `b` cannot start recovery along `history`, if it cannot: its timeline is not on
/// the path, or the path leaves it before the backup's end.
fn off_history(history: &TimelineHistory, b: &CatalogEntry) -> Option<String> {
    if history.includes(b.timeline, b.lsn_stop) {
        return None;
    }
    let target = history.timeline;
    Some(match history.end_of(b.timeline) {
        Some(fork) => format!(
            "target timeline {target} forked from backup timeline {} at {fork}, which is before the backup's \
             lsn of {}",
            b.timeline, b.lsn_stop
        ),
        None => format!(
            "backup timeline {}, lsn {} is not in the history of target timeline {target}",
            b.timeline, b.lsn_stop
        ),
    })
}

/// Whether a backup ends after a time or LSN target.
enum After {
    /// It does: the reason.
    Surely(String),
    /// It stopped in the time target's second: before or after it, the catalog cannot tell.
    SameSecond,
}

/// Whether backup `b` ends after a time or LSN target.
fn after_target(goal: &Goal, b: &CatalogEntry) -> Option<After> {
    match goal {
        Goal::Time { micros, .. } if b.timestamp_stop.saturating_mul(1_000_000) > *micros => Some(After::Surely(
            format!("it ended at {}, after the target", micros_text(b.timestamp_stop.saturating_mul(1_000_000))),
        )),
        Goal::Time { micros, .. } if b.timestamp_stop.saturating_add(1).saturating_mul(1_000_000) > *micros => {
            Some(After::SameSecond)
        }
        Goal::Lsn(lsn) if b.lsn_stop > *lsn => {
            Some(After::Surely(format!("it ended at LSN {}, after the target", b.lsn_stop)))
        }
        _ => None,
    }
}

/// Refuses a time or LSN target the archive cannot reach: PostgreSQL would replay everything,
/// then stop with "recovery ended before configured recovery target was reached".
async fn check_archive_reaches(
    repo: &Repo,
    archive: &str,
    backup: &CatalogEntry,
    history: &TimelineHistory,
    recovery: &Recovery,
) -> CliResult<()> {
    let segment_size = wal::segment_size_of(backup.timeline, backup.lsn_start, &backup.wal_start);
    match &recovery.goal {
        Goal::Lsn(lsn) => {
            let tli = history.timeline_at(*lsn);
            let newest = wal::newest_segment(repo, archive, tli).await?;
            let end = match newest {
                Some((n, _)) => n.start_lsn(segment_size)?.0 + segment_size,
                None => 0,
            };
            if end <= lsn.0 {
                return Err(CliError::new(
                    ErrorCode::BackupSetInvalid,
                    format!(
                        "target LSN {lsn} is beyond the archive: WAL of timeline {tli} in repo{} ends at {}",
                        repo.index,
                        Lsn(end)
                    ),
                )
                .hint("is archiving working? The segment holding the target must be archived first"));
            }
        }
        Goal::Time { micros, text } => {
            let mut newest: Option<i64> = None;
            for tli in std::iter::once(history.timeline).chain(history.ancestors.iter().map(|a| a.timeline)) {
                if tli < backup.timeline {
                    continue;
                }
                if let Some((_, at)) = wal::newest_segment(repo, archive, tli).await? {
                    newest = newest.max(Some(at));
                }
            }
            // Stored times have whole seconds: a segment stored in the target's second counts.
            let reaches = newest.is_some_and(|at| (at + 1).saturating_mul(1_000_000) > *micros);
            if !reaches {
                return Err(CliError::new(
                    ErrorCode::BackupSetInvalid,
                    format!(
                        "target time '{text}' is beyond the archive: the newest WAL in repo{} was archived {}",
                        repo.index,
                        newest.map_or("never".to_string(), |at| format!("at {}", micros_text(at * 1_000_000)))
                    ),
                )
                .hint("WAL written after the target must be archived before recovery can stop at it"));
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full backup on `timeline` ending at `stop` (an LSN) and at `second` (a time).
    fn full(day: u32, timeline: u32, stop: u64) -> CatalogEntry {
        let mut b = crate::expire::plan::tests::backup(&format!("202701{day:02}-000000F"), None, 0.0, day);
        b.timeline = TimelineId(timeline);
        b.lsn_start = Lsn(stop - 0x100);
        b.lsn_stop = Lsn(stop);
        b.timestamp_stop = 1_800_000_000 + i64::from(day) * 86_400;
        b
    }

    fn history(timeline: u32, text: &str) -> TimelineHistory {
        TimelineHistory::parse(TimelineId(timeline), text.as_bytes(), "test.history").expect("history")
    }

    fn recovery(goal: Goal, timeline: Option<TimelineChoice>) -> Recovery {
        Recovery { goal, exclusive: false, action: "promote".into(), timeline }
    }

    /// What `choose_backup` decides for `backups` (oldest first) when recovery follows
    /// `followed` for every backup off `current`-style own timelines: the chosen label's day,
    /// or the refusal.
    fn decide(
        backups: &[CatalogEntry],
        followed: Option<&TimelineHistory>,
        goal: Goal,
        choice: Option<TimelineChoice>,
        set: Option<usize>,
    ) -> Result<u32, Refusal> {
        let recovery = recovery(goal, choice);
        let mut histories = BTreeMap::new();
        let newest_first: Vec<&CatalogEntry> = match set {
            Some(i) => vec![&backups[i]],
            None => backups.iter().rev().collect(),
        };
        let mut candidates = Vec::new();
        for b in newest_first {
            let (key, h) = match (recovery.timeline, followed) {
                (Some(TimelineChoice::Current), _) | (_, None) => {
                    (b.timeline.0, TimelineHistory { timeline: b.timeline, ancestors: Vec::new() })
                }
                (_, Some(h)) => (h.timeline.0, h.clone()),
            };
            histories.insert(key, h);
            candidates.push((b, key));
        }
        pick(&candidates, &histories, &recovery, set.is_some())
            .map(|(b, _)| b.label.as_str()[6..8].parse().expect("day"))
    }

    /// The scenario: F1 on timeline 1, F2 later on timeline 1, then an in-place PITR of F1
    /// to before F2 promoted to timeline 2 (switch at 0/3000000, F2 ended at 0/5000000).
    fn forked_before_newest() -> (Vec<CatalogEntry>, TimelineHistory) {
        (vec![full(1, 1, 0x200_0000), full(2, 1, 0x500_0000)], history(2, "1\t0/3000000\tbefore F2\n"))
    }

    #[test]
    fn immediate_without_a_timeline_follows_the_backups_own_and_takes_the_newest() {
        // from_config sets `current` for immediate (immediate_defaults_to_the_current_timeline).
        let (backups, tl2) = forked_before_newest();
        assert_eq!(decide(&backups, Some(&tl2), Goal::Immediate, Some(TimelineChoice::Current), None), Ok(2));
        // Following latest (timeline 2) instead, F2 is not on its history: F1, with the reason logged.
        assert_eq!(decide(&backups, Some(&tl2), Goal::Immediate, None, None), Ok(1));
    }

    #[test]
    fn the_table_over_histories() {
        let (backups, tl2) = forked_before_newest();
        let early = Goal::Lsn(Lsn(0x280_0000));
        let time_after_f1 = Goal::Time { text: "t".into(), micros: (1_800_000_000 + 86_400 + 10) * 1_000_000 };
        type Case = (&'static str, Option<&'static TimelineHistory>, Goal, Option<TimelineChoice>, Option<usize>);
        let tl2: &'static TimelineHistory = Box::leak(Box::new(tl2));
        // A PostgreSQL-written history whose switch point for 2 is before 1's: timeline 3 leaves
        // timeline 1 at 0/2800000.
        let tl3: &'static TimelineHistory =
            Box::leak(Box::new(history(3, "1\t0/3000000\tx\n2\t0/2800000\tbefore 2000-01-01\n")));
        let cases: Vec<(Case, Result<u32, ()>)> = vec![
            // Other types, no --target-timeline: latest; the newest on its history.
            (("default, latest=2", Some(tl2), Goal::Default, None, None), Ok(1)),
            (("lsn before the fork", Some(tl2), early.clone(), None, None), Ok(1)),
            (("time after F1, latest=2", Some(tl2), time_after_f1.clone(), None, None), Ok(1)),
            // Without a fork every backup is on the history: the newest.
            (("default, one timeline", None, Goal::Default, None, None), Ok(2)),
            // --target-timeline=current: the newest backup, each on its own timeline.
            (("current", Some(tl2), Goal::Default, Some(TimelineChoice::Current), None), Ok(2)),
            // --target-timeline=3 (earlier switch point for 2 than for 1): only F1 is on it.
            (("timeline 3", Some(tl3), Goal::Default, Some(TimelineChoice::Id(TimelineId(3))), None), Ok(1)),
            // --set on the history: taken; off it: refused.
            (("set F1 on 2", Some(tl2), Goal::Default, None, Some(0)), Ok(1)),
            (("set F2 on 2", Some(tl2), Goal::Default, None, Some(1)), Err(())),
            (("set F2 immediate", Some(tl2), Goal::Immediate, Some(TimelineChoice::Current), Some(1)), Ok(2)),
            // A time in F2's second (F1 surely before): F1; in F1's own second: F1 after all.
            (
                (
                    "time in F2's second",
                    None,
                    Goal::Time { text: "t".into(), micros: (1_800_000_000 + 2 * 86_400) * 1_000_000 + 500_000 },
                    None,
                    None,
                ),
                Ok(1),
            ),
            (
                (
                    "time in F1's second",
                    None,
                    Goal::Time { text: "t".into(), micros: (1_800_000_000 + 86_400) * 1_000_000 + 500_000 },
                    None,
                    None,
                ),
                Ok(1),
            ),
            // A time before every backup: nothing.
            (("time before all", None, Goal::Time { text: "t".into(), micros: 0 }, None, None), Err(())),
        ];
        for ((name, h, goal, choice, set), expected) in cases {
            let got = decide(&backups, h, goal, choice, set);
            assert_eq!(got.as_ref().map(|d| *d).map_err(|_| ()), expected, "{name}: {got:?}");
        }
    }

    #[test]
    fn a_named_backup_off_the_history_is_refused_naming_the_fork_and_its_lsn() {
        let (backups, tl2) = forked_before_newest();
        match decide(&backups, Some(&tl2), Goal::Default, None, Some(1)) {
            Err(Refusal::OffHistory(why)) => {
                assert!(why.contains("target timeline 2 forked from backup timeline 1 at 0/3000000"), "{why}");
                assert!(why.contains("lsn of 0/5000000"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        let tl3 = history(3, "2\t0/1000000\tx\n");
        match decide(&backups, Some(&tl3), Goal::Default, Some(TimelineChoice::Id(TimelineId(3))), Some(0)) {
            Err(Refusal::OffHistory(why)) => {
                assert!(
                    why.contains("backup timeline 1, lsn 0/2000000 is not in the history of target timeline 3"),
                    "{why}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
