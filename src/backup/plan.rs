//! What a backup will be, decided before anything is touched: its type, label, the database it
//! belongs to and the backup it builds on (its prior). A pure value, unit-tested; `take_backup`
//! only carries it out.
//!
//! The prior follows pgBackRest: a diff builds on the latest full, an incr on the latest backup
//! of any type, both of the stanza's current database (after `stanza-upgrade` the older
//! database's backups do not count). With no usable prior, a diff or incr becomes a full, with
//! pgBackRest's warning.

use pgstrata_repo_format::meta::{
    BackupCatalog, BackupSettings, CatalogEntry, DatabaseRef, DbEntry, ManifestHeader, ResumeAttempt, Target,
};

/// Backups in the order they were taken: by start time, the label breaking ties (labels of one
/// full's chain sort in time order; names alone would not order across a clock change).
fn order(b: &CatalogEntry) -> (i64, &BackupLabel) {
    (b.timestamp_start, &b.label)
}
use pgstrata_repo_format::pg::{ControlFile, Lsn, TimelineId};
use pgstrata_repo_format::{BackupLabel, BackupType, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};

/// The decisions of one backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPlan {
    pub label: BackupLabel,
    pub backup_type: BackupType,
    pub db_id: u32,
    /// The backup this one builds on (diff, incr).
    pub prior: Option<CatalogEntry>,
    /// Files must be compared by content, not size and time: the cluster changed timeline
    /// since the prior (promoted, or restored), where times cannot be trusted.
    pub delta: bool,
    /// Said to the user before the backup starts (a type changed to full, ...).
    pub warnings: Vec<String>,
}

/// Where the server put the backup's start and stop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalRange {
    pub timeline: TimelineId,
    pub lsn_start: Lsn,
    pub lsn_stop: Lsn,
    pub wal_start: String,
    pub wal_stop: String,
    pub timestamp_start: i64,
    pub timestamp_stop: i64,
}

/// What the copy stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Bytes of cluster files.
    pub size: u64,
    /// Bytes of cluster files this backup copied (the rest it references).
    pub delta: u64,
    /// Stored bytes a restore of this backup reads (its own and what it references).
    pub repo_size: u64,
    /// Bytes this backup wrote to the repository (packs and manifest).
    pub repo_delta: u64,
    pub packs: u32,
    pub page_error_files: u64,
}

impl BackupPlan {
    /// Plans a backup of the cluster described by `control` into a stanza whose current
    /// database is `db` and whose complete backups are `catalog`, at `now` (unix seconds).
    pub fn new(
        catalog: &BackupCatalog,
        db: &DbEntry,
        control: &ControlFile,
        requested: BackupType,
        now: i64,
    ) -> CliResult<Self> {
        if db.system_id != control.system_identifier || db.pg_version != control.pg_version {
            return Err(CliError::new(
                ErrorCode::DbMismatch,
                format!(
                    "the cluster (PostgreSQL {}, system id {}) is not the stanza's database (PostgreSQL {}, system id {})",
                    control.pg_version, control.system_identifier, db.pg_version, db.system_id
                ),
            )
            .hint("after pg_upgrade, run stanza-upgrade"));
        }
        let mut warnings = Vec::new();
        let prior = match requested {
            BackupType::Full => None,
            kind => {
                let ours = catalog.backups.iter().filter(|b| b.db_id == db.id);
                let prior = match kind {
                    BackupType::Diff => ours.filter(|b| b.backup_type == BackupType::Full).max_by_key(|b| order(b)),
                    _ => ours.max_by_key(|b| order(b)),
                };
                if prior.is_none() {
                    warnings.push(format!("no prior backup exists, {} backup has been changed to full", kind.as_str()));
                }
                prior.cloned()
            }
        };
        let delta = prior.as_ref().is_some_and(|p| p.timeline != control.timeline);
        if let (true, Some(p)) = (delta, &prior) {
            warnings.push(format!(
                "the timeline changed since backup {} (timeline {} -> {}): every file is compared by content",
                p.label, p.timeline.0, control.timeline.0
            ));
        }
        let backup_type = if prior.is_some() { requested } else { BackupType::Full };
        // Labels name seconds: the first second not already taken (only the lease holder
        // chooses labels, so this is unique).
        let label_at = |at: i64| match &prior {
            None => BackupLabel::full(at),
            Some(p) => BackupLabel::dependent(&p.label, backup_type, at),
        };
        let mut at = now;
        while catalog.backups.iter().any(|b| b.label == label_at(at)) {
            at += 1;
        }
        Ok(Self { label: label_at(at), backup_type, db_id: db.id, prior, delta, warnings })
    }

    /// The backups whose data this one may reference: its prior and what the prior references.
    pub fn references(&self) -> Vec<BackupLabel> {
        let Some(p) = &self.prior else { return Vec::new() };
        let mut refs = p.references.clone();
        refs.push(p.label.clone());
        refs.sort();
        refs.dedup();
        refs
    }

    /// What this attempt at the backup records in its checkpoints (see `super::resume`).
    pub fn attempt(&self, timestamp_start: i64, settings: BackupSettings, first_pack: u32) -> ResumeAttempt {
        ResumeAttempt {
            label: self.label.clone(),
            backup_type: self.backup_type,
            prior: self.prior.as_ref().map(|p| p.label.clone()),
            db_id: self.db_id,
            timestamp_start,
            settings,
            first_pack,
        }
    }

    /// The manifest header of the finished backup.
    pub fn header(
        &self,
        control: &ControlFile,
        wal: &WalRange,
        settings: BackupSettings,
        targets: Vec<Target>,
        packs: u32,
        databases: Vec<DatabaseRef>,
    ) -> ManifestHeader {
        ManifestHeader {
            label: self.label.clone(),
            backup_type: self.backup_type,
            prior: self.prior.as_ref().map(|p| p.label.clone()),
            references: self.references(),
            pg_version: control.pg_version,
            system_id: control.system_identifier,
            db_id: self.db_id,
            timeline: wal.timeline,
            lsn_start: wal.lsn_start,
            lsn_stop: wal.lsn_stop,
            wal_start: wal.wal_start.clone(),
            wal_stop: wal.wal_stop.clone(),
            timestamp_start: wal.timestamp_start,
            timestamp_stop: wal.timestamp_stop,
            settings,
            targets,
            packs,
            databases,
            read_from: Vec::new(),
            wal_copy: Vec::new(),
        }
    }

    /// The catalog entry that makes the backup visible.
    pub fn catalog_entry(&self, wal: &WalRange, stored: Stored, manifest_sha256: Sha256Digest) -> CatalogEntry {
        CatalogEntry {
            label: self.label.clone(),
            backup_type: self.backup_type,
            prior: self.prior.as_ref().map(|p| p.label.clone()),
            references: self.references(),
            db_id: self.db_id,
            timeline: wal.timeline,
            timestamp_start: wal.timestamp_start,
            timestamp_stop: wal.timestamp_stop,
            lsn_start: wal.lsn_start,
            lsn_stop: wal.lsn_stop,
            wal_start: wal.wal_start.clone(),
            wal_stop: wal.wal_stop.clone(),
            size: stored.size,
            delta: stored.delta,
            repo_size: stored.repo_size,
            repo_delta: stored.repo_delta,
            error: stored.page_error_files > 0,
            pgstrata_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest_sha256,
            keep: false,
            annotation: Default::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> DbEntry {
        DbEntry { id: 1, system_id: 42, pg_version: 15, catalog_version: 202_209_061, control_version: 1300 }
    }

    fn control() -> ControlFile {
        ControlFile {
            system_identifier: 42,
            control_version: 1300,
            catalog_version: 202_209_061,
            pg_version: 15,
            state: pgstrata_repo_format::pg::DbState::InProduction,
            checkpoint: Lsn(0),
            redo: Lsn(0),
            timeline: TimelineId(1),
            prev_timeline: TimelineId(1),
            min_recovery_point: Lsn(0),
            blcksz: 8192,
            relseg_size: 131_072,
            xlog_blcksz: 8192,
            wal_segment_size: 16 << 20,
            data_checksum_version: 1,
        }
    }

    fn wal_at(at: i64, timeline: u32) -> WalRange {
        WalRange {
            timeline: TimelineId(timeline),
            lsn_start: Lsn(0),
            lsn_stop: Lsn(0),
            wal_start: String::new(),
            wal_stop: String::new(),
            timestamp_start: at,
            timestamp_stop: at,
        }
    }

    /// Backups taken one after another, as planned at their times (of database `db_id`).
    fn catalog_of(backups: &[(BackupType, i64, u32)]) -> BackupCatalog {
        let mut catalog = BackupCatalog::default();
        for &(kind, at, db_id) in backups {
            let db = DbEntry { id: db_id, ..db() };
            let plan = BackupPlan::new(&catalog, &db, &control(), kind, at).expect("plan");
            catalog.backups.push(plan.catalog_entry(&wal_at(at, 1), Stored::default(), Sha256Digest::of(b"")));
        }
        catalog
    }

    fn catalog_with(labels: &[i64]) -> BackupCatalog {
        catalog_of(&labels.iter().map(|&at| (BackupType::Full, at, 1)).collect::<Vec<_>>())
    }

    #[test]
    fn a_diff_builds_on_the_latest_full_an_incr_on_the_latest_backup() {
        let t = 1_800_000_000;
        let catalog =
            catalog_of(&[(BackupType::Full, t, 1), (BackupType::Diff, t + 10, 1), (BackupType::Incr, t + 20, 1)]);
        let labels: Vec<&str> = catalog.backups.iter().map(|b| b.label.as_str()).collect();
        let full = BackupLabel::full(t);
        assert_eq!(labels[1], BackupLabel::dependent(&full, BackupType::Diff, t + 10).as_str());
        assert_eq!(catalog.backups[2].prior.as_ref(), Some(&catalog.backups[1].label));
        assert_eq!(catalog.backups[2].references, [full.clone(), catalog.backups[1].label.clone()]);

        let diff = BackupPlan::new(&catalog, &db(), &control(), BackupType::Diff, t + 30).expect("plan");
        assert_eq!(diff.prior.as_ref().map(|p| &p.label), Some(&full));
        assert_eq!(diff.references(), std::slice::from_ref(&full));
        assert_eq!(diff.label, BackupLabel::dependent(&full, BackupType::Diff, t + 30));
        let incr = BackupPlan::new(&catalog, &db(), &control(), BackupType::Incr, t + 30).expect("plan");
        assert_eq!(incr.prior.as_ref().map(|p| &p.label), Some(&catalog.backups[2].label));
        assert_eq!(incr.references().len(), 3);
        assert!(incr.warnings.is_empty() && !incr.delta);
        assert_eq!(
            incr.catalog_entry(&wal_at(t + 30, 1), Stored::default(), Sha256Digest::of(b"")).prior,
            Some(catalog.backups[2].label.clone())
        );
    }

    #[test]
    fn the_backups_of_an_older_database_are_no_prior() {
        let t = 1_800_000_000;
        let catalog = catalog_of(&[(BackupType::Full, t, 1)]);
        let upgraded = DbEntry { id: 2, ..db() };
        let plan = BackupPlan::new(&catalog, &upgraded, &control(), BackupType::Diff, t + 5).expect("plan");
        assert_eq!((plan.backup_type, plan.prior.is_none()), (BackupType::Full, true));
        assert_eq!(plan.warnings, ["no prior backup exists, diff backup has been changed to full"]);
    }

    #[test]
    fn a_timeline_change_since_the_prior_compares_by_content() {
        let t = 1_800_000_000;
        let catalog = catalog_of(&[(BackupType::Full, t, 1)]);
        let promoted = ControlFile { timeline: TimelineId(2), ..control() };
        let plan = BackupPlan::new(&catalog, &db(), &promoted, BackupType::Incr, t + 5).expect("plan");
        assert!(plan.delta && plan.backup_type == BackupType::Incr);
        assert!(plan.warnings[0].contains("timeline changed"), "{:?}", plan.warnings);
    }

    #[test]
    fn two_dependent_backups_in_one_second_get_different_labels() {
        let t = 1_800_000_000;
        let catalog = catalog_of(&[(BackupType::Full, t, 1), (BackupType::Incr, t + 5, 1)]);
        let plan = BackupPlan::new(&catalog, &db(), &control(), BackupType::Incr, t + 5).expect("plan");
        assert_ne!(plan.label, catalog.backups[1].label);
    }

    #[test]
    fn the_first_backup_of_any_type_is_a_full_with_a_warning() {
        let plan =
            BackupPlan::new(&catalog_with(&[]), &db(), &control(), BackupType::Incr, 1_800_000_000).expect("plan");
        assert_eq!(plan.backup_type, BackupType::Full);
        assert_eq!(plan.label, BackupLabel::full(1_800_000_000));
        assert_eq!(plan.warnings, ["no prior backup exists, incr backup has been changed to full"]);
    }

    #[test]
    fn two_backups_in_one_second_get_different_labels() {
        let now = 1_800_000_000;
        let plan =
            BackupPlan::new(&catalog_with(&[now, now + 1]), &db(), &control(), BackupType::Full, now).expect("plan");
        assert_eq!(plan.label, BackupLabel::full(now + 2));
    }

    #[test]
    fn another_cluster_is_refused() {
        let mut other = control();
        other.system_identifier = 43;
        let err = BackupPlan::new(&catalog_with(&[]), &db(), &other, BackupType::Full, 0).expect_err("mismatch");
        assert_eq!(err.code, ErrorCode::DbMismatch);
        assert!(err.message.contains("system id 43"), "{}", err.message);
    }
}
