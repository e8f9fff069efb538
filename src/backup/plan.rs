//! What a backup will be, decided before anything is touched: its type, label and the database
//! it belongs to. A pure value, unit-tested; `take_backup` only carries it out.

use pgstrata_repo_format::meta::{BackupCatalog, BackupSettings, CatalogEntry, DbEntry, ManifestHeader, Target};
use pgstrata_repo_format::pg::{ControlFile, Lsn, TimelineId};
use pgstrata_repo_format::{BackupLabel, BackupType, Sha256Digest};

use crate::error::{CliError, CliResult, ErrorCode};

/// The decisions of one backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupPlan {
    pub label: BackupLabel,
    pub backup_type: BackupType,
    pub db_id: u32,
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
    /// Bytes written to the repository (packs and manifest).
    pub repo_size: u64,
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
        if requested != BackupType::Full {
            if !catalog.backups.is_empty() {
                return Err(CliError::new(
                    ErrorCode::NotImplemented,
                    format!("{} backups are not available in this version yet", requested.as_str()),
                )
                .hint("run with --type=full"));
            }
            warnings.push(format!("no prior backup exists, {} backup has been changed to full", requested.as_str()));
        }
        // Labels name seconds: the first second not already taken (only the lease holder
        // chooses labels, so this is unique).
        let mut at = now;
        while catalog.backups.iter().any(|b| b.label == BackupLabel::full(at)) {
            at += 1;
        }
        Ok(Self { label: BackupLabel::full(at), backup_type: BackupType::Full, db_id: db.id, warnings })
    }

    /// The manifest header of the finished backup.
    pub fn header(
        &self,
        control: &ControlFile,
        wal: &WalRange,
        settings: BackupSettings,
        targets: Vec<Target>,
        packs: u32,
    ) -> ManifestHeader {
        ManifestHeader {
            label: self.label.clone(),
            backup_type: self.backup_type,
            prior: None,
            references: vec![],
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
        }
    }

    /// The catalog entry that makes the backup visible.
    pub fn catalog_entry(&self, wal: &WalRange, stored: Stored, manifest_sha256: Sha256Digest) -> CatalogEntry {
        CatalogEntry {
            label: self.label.clone(),
            backup_type: self.backup_type,
            prior: None,
            references: vec![],
            db_id: self.db_id,
            timeline: wal.timeline,
            timestamp_start: wal.timestamp_start,
            timestamp_stop: wal.timestamp_stop,
            lsn_start: wal.lsn_start,
            lsn_stop: wal.lsn_stop,
            wal_start: wal.wal_start.clone(),
            wal_stop: wal.wal_stop.clone(),
            size: stored.size,
            delta: stored.size,
            repo_size: stored.repo_size,
            repo_delta: stored.repo_size,
            error: stored.page_error_files > 0,
            pgstrata_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest_sha256,
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

    fn catalog_with(labels: &[i64]) -> BackupCatalog {
        let wal = WalRange {
            timeline: TimelineId(1),
            lsn_start: Lsn(0),
            lsn_stop: Lsn(0),
            wal_start: String::new(),
            wal_stop: String::new(),
            timestamp_start: 0,
            timestamp_stop: 0,
        };
        let mut catalog = BackupCatalog::default();
        for &at in labels {
            let plan =
                BackupPlan { label: BackupLabel::full(at), backup_type: BackupType::Full, db_id: 1, warnings: vec![] };
            catalog.backups.push(plan.catalog_entry(&wal, Stored::default(), Sha256Digest::of(b"")));
        }
        catalog
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
