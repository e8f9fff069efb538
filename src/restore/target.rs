//! Recovery targets: what `--type`, `--target`, `--target-exclusive`, `--target-action` and
//! `--target-timeline` ask for, which backup can reach it, and the settings PostgreSQL gets.
//!
//! Everything here is decided before the restore writes a byte: a target that no backup can
//! reach, or that lies beyond what the archive holds, is an error naming the problem.

use std::collections::BTreeMap;

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::label::{parse_timestamp, timestamp_text};
use pgstrata_repo_format::layout::archive_id;
use pgstrata_repo_format::meta::{BackupCatalog, CatalogEntry};
use pgstrata_repo_format::pg::{Lsn, TimelineHistory, TimelineId};

use crate::config::Config;
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

fn invalid(message: String) -> CliError {
    CliError::new(ErrorCode::OptionInvalidValue, message)
}

impl Recovery {
    pub fn from_config(config: &Config) -> CliResult<Self> {
        let kind = config.get("type").unwrap_or("default");
        let target = config.get("target");
        let needs_target = matches!(kind, "time" | "lsn" | "xid" | "name");
        let need = || {
            target.map(str::to_string).ok_or_else(|| {
                CliError::new(ErrorCode::OptionRequired, format!("restore --type={kind} requires option: target"))
            })
        };
        let goal = match kind {
            "default" => Goal::Default,
            "immediate" => Goal::Immediate,
            "standby" => Goal::Standby,
            "none" => Goal::None,
            "preserve" => Goal::Preserve,
            "time" => {
                let text = need()?;
                let (micros, zoned) = parse_timestamp(&text).ok_or_else(|| {
                    invalid(format!("'{text}' is not a valid target time: use YYYY-MM-DD HH:MM:SS[.ffffff][+-HH[:MM]]"))
                })?;
                if !zoned {
                    tracing::warn!(
                        "target time '{text}' has no time zone: pgstrata takes it as UTC to choose the backup, \
                         PostgreSQL reads it in its own timezone setting"
                    );
                }
                Goal::Time { text, micros }
            }
            "lsn" => {
                let text = need()?;
                Goal::Lsn(text.parse().map_err(|_| invalid(format!("'{text}' is not a valid target LSN (X/X)")))?)
            }
            "xid" => {
                let text = need()?;
                if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(invalid(format!("'{text}' is not a valid target transaction id")));
                }
                Goal::Xid(text)
            }
            "name" => {
                let text = need()?;
                if text.is_empty() || text.len() >= 64 {
                    return Err(invalid(format!("'{text}' is not a valid restore point name (1 to 63 bytes)")));
                }
                Goal::Name(text)
            }
            other => {
                return Err(invalid(format!(
                    "'{other}' is not valid for 'type' option of restore \
                     (default, immediate, standby, none, preserve, time, lsn, xid, name)"
                )));
            }
        };
        if target.is_some() && !needs_target {
            return Err(CliError::new(
                ErrorCode::OptionInvalid,
                format!("option 'target' is not valid with restore --type={kind}"),
            )
            .hint("--target goes with --type=time, lsn, xid or name"));
        }
        let exclusive = config.bool("target-exclusive");
        if exclusive && !matches!(goal, Goal::Time { .. } | Goal::Lsn(_) | Goal::Xid(_)) {
            return Err(CliError::new(
                ErrorCode::OptionInvalid,
                format!("option 'target-exclusive' is not valid with restore --type={kind}"),
            ));
        }
        let timeline = match config.get("target-timeline") {
            None => None,
            Some("latest") => Some(TimelineChoice::Latest),
            Some("current") => Some(TimelineChoice::Current),
            Some(n) => Some(TimelineChoice::Id(TimelineId(n.parse().ok().filter(|t| *t >= 1).ok_or_else(|| {
                invalid(format!("'{n}' is not valid for 'target-timeline': use latest, current or a number"))
            })?))),
        };
        for opt in config.list("recovery-option") {
            if opt.split_once('=').is_none_or(|(k, _)| k.trim().is_empty()) {
                return Err(invalid(format!("'{opt}' is not valid for 'recovery-option': use key=value")));
            }
        }
        let action = config.get("target-action").unwrap_or("pause").to_string();
        Ok(Self { goal, exclusive, action, timeline })
    }

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

/// Chooses the backup to restore: `--set` when given (checked against the target), else the
/// newest backup that ended before a time or LSN target on a timeline leading to the target
/// timeline. Then checks that the archive reaches the target.
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
    // Histories by (archive, timeline), each fetched once.
    let mut histories: BTreeMap<(String, TimelineId), TimelineHistory> = BTreeMap::new();
    let mut latest: BTreeMap<String, TimelineId> = BTreeMap::new();
    let mut refusals = Vec::new();
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
            histories.insert(key.clone(), wal::history(repo, &archive, timeline).await?);
        }
        let history = &histories[&key];
        if !history.includes(b.timeline, b.lsn_stop) {
            refusals.push(format!(
                "{} (timeline {} at {}) is not on the history of timeline {timeline}",
                b.label, b.timeline, b.lsn_stop
            ));
            continue;
        }
        match &recovery.goal {
            Goal::Time { micros, .. } if b.timestamp_stop.saturating_mul(1_000_000) > *micros => {
                refusals.push(format!(
                    "{} ended at {}, after the target",
                    b.label,
                    micros_text(b.timestamp_stop * 1_000_000)
                ));
                continue;
            }
            Goal::Lsn(lsn) if b.lsn_stop > *lsn => {
                refusals.push(format!("{} ended at LSN {}, after the target", b.label, b.lsn_stop));
                continue;
            }
            _ => {}
        }
        check_archive_reaches(repo, &archive, b, history, recovery).await?;
        return Ok(b.clone());
    }
    let what = match set {
        Some(set) => format!("backup set {set} cannot reach {}", recovery.describe()),
        None => format!(
            "no backup in repo{} can reach {}: the target is before every usable backup",
            repo.index,
            recovery.describe()
        ),
    };
    Err(CliError::new(ErrorCode::BackupSetInvalid, format!("{what} ({})", refusals.join("; ")))
        .hint("choose a later target, another --target-timeline, or a repository with older backups"))
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
