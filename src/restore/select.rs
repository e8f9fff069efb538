//! Selective restore (`--db-include`, `--db-exclude`): which databases' files are restored as
//! empty sparse files of their recorded size instead of their content. PostgreSQL starts with
//! them in its catalog and they can be dropped; they cannot be used. The rules are pgBackRest's:
//! databases are named by name or oid; the system databases (template0, template1, postgres, and
//! any with an oid below 16384) are always restored with `--db-include` and only left out when
//! excluded by name; naming a database the backup does not have is an error, as is including a
//! system database or one that is also excluded. Pure: decided from the manifest's header before
//! anything is written.

use std::collections::BTreeSet;

use pgstrata_repo_format::meta::{DatabaseRef, ManifestHeader};

use crate::error::{CliError, CliResult, ErrorCode};

/// PostgreSQL's first oid for user objects: databases below it were made by `initdb`.
const FIRST_NORMAL_OID: u32 = 16384;

fn is_system(db: &DatabaseRef) -> bool {
    matches!(db.name.as_str(), "template0" | "template1" | "postgres") || db.oid < FIRST_NORMAL_OID
}

/// The databases whose files are zeroed, and the manifest paths that hold them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub zeroed: BTreeSet<u32>,
    /// `pg_tblspc/<oid>` of each tablespace: databases have a directory in its
    /// `PG_<major>_<catalog>` directory.
    tablespaces: Vec<String>,
}

impl Selection {
    /// Every database restored.
    pub fn all() -> Self {
        Self::default()
    }

    /// Decides from the backup's databases and the options.
    pub fn new(header: &ManifestHeader, include: &[String], exclude: &[String]) -> CliResult<Self> {
        if include.is_empty() && exclude.is_empty() {
            return Ok(Self::all());
        }
        let dbs = &header.databases;
        if dbs.is_empty() {
            return Err(CliError::new(
                ErrorCode::Format,
                "the backup records no databases: a selective restore cannot tell them apart",
            )
            .hint("restore without --db-include/--db-exclude"));
        }
        let find = |given: &str, what: &str| -> CliResult<&DatabaseRef> {
            dbs.iter().find(|d| d.name == given || d.oid.to_string() == given).ok_or_else(|| {
                let names: Vec<&str> = dbs.iter().map(|d| d.name.as_str()).collect();
                CliError::new(ErrorCode::DbMissing, format!("database to {what} '{given}' does not exist"))
                    .hint(format!("the backup has: {}", names.join(", ")))
            })
        };
        let excluded: BTreeSet<u32> =
            exclude.iter().map(|e| find(e, "exclude").map(|d| d.oid)).collect::<CliResult<_>>()?;
        let mut included = BTreeSet::new();
        for given in include {
            let db = find(given, "include")?;
            if is_system(db) {
                return Err(CliError::new(
                    ErrorCode::DbInvalid,
                    "system databases (template0, postgres, etc.) are included by default",
                ));
            }
            if excluded.contains(&db.oid) {
                return Err(CliError::new(
                    ErrorCode::DbInvalid,
                    format!("database to include '{given}' is in the exclude list"),
                ));
            }
            included.insert(db.oid);
        }
        let zeroed = if include.is_empty() {
            excluded
        } else {
            dbs.iter()
                .filter(|d| !included.contains(&d.oid) && (!is_system(d) || excluded.contains(&d.oid)))
                .map(|d| d.oid)
                .collect()
        };
        let tablespaces =
            header.targets.iter().filter(|t| t.tablespace_oid.is_some()).map(|t| t.name.clone()).collect();
        Ok(Self { zeroed, tablespaces })
    }

    /// Whether a manifest file is restored as an empty sparse file.
    pub fn zeroes(&self, path: &str) -> bool {
        if self.zeroed.is_empty() {
            return false;
        }
        let db_of = |rest: &str| rest.split_once('/').and_then(|(db, _)| db.parse::<u32>().ok());
        if let Some(db) = path.strip_prefix("pg_data/base/").and_then(db_of) {
            return self.zeroed.contains(&db);
        }
        self.tablespaces.iter().any(|ts| {
            path.strip_prefix(ts.as_str())
                .and_then(|r| r.strip_prefix('/'))
                .and_then(|r| r.split_once('/'))
                .filter(|(version_dir, _)| version_dir.starts_with("PG_"))
                .and_then(|(_, rest)| db_of(rest))
                .is_some_and(|db| self.zeroed.contains(&db))
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header() -> ManifestHeader {
        let text = r#"{"label":"20260101-000000F","type":"full","prior":null,"references":[],"pg_version":150000,
            "system_id":1,"db_id":1,"timeline":1,"lsn_start":"0/2000028","lsn_stop":"0/2000100",
            "wal_start":"000000010000000000000002","wal_stop":"000000010000000000000002","timestamp_start":0,
            "timestamp_stop":0,"settings":{"compress_type":"zst","compress_level":null,"cipher":"none",
            "frame_size":1048576,"checksum_page":false},"targets":[{"name":"pg_data","path":"/d"},
            {"name":"pg_tblspc/16500","path":"/ts","tablespace_oid":16500}],"packs":1,
            "databases":[{"name":"postgres","oid":5},{"name":"template1","oid":1},{"name":"template0","oid":4},
            {"name":"app","oid":16384},{"name":"other","oid":16385}]}"#;
        serde_json::from_str(text).unwrap()
    }

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn include_keeps_the_system_databases_and_zeroes_the_rest() {
        let s = Selection::new(&header(), &list(&["app"]), &[]).unwrap();
        assert_eq!(s.zeroed, BTreeSet::from([16385]));
        assert!(s.zeroes("pg_data/base/16385/2619"));
        assert!(s.zeroes("pg_tblspc/16500/PG_15_202209061/16385/16400"));
        assert!(!s.zeroes("pg_tblspc/16500/PG_15_202209061/16384/16400"));
        assert!(!s.zeroes("pg_data/base/16384/2619"));
        assert!(!s.zeroes("pg_data/base/5/2619"));
        assert!(!s.zeroes("pg_data/global/pg_control"));
        // By oid, the same; a system database excluded by name goes too.
        let s = Selection::new(&header(), &list(&["16384"]), &list(&["postgres"])).unwrap();
        assert_eq!(s.zeroed, BTreeSet::from([5, 16385]));
    }

    #[test]
    fn exclude_alone_zeroes_only_what_it_names() {
        let s = Selection::new(&header(), &[], &list(&["other"])).unwrap();
        assert_eq!(s.zeroed, BTreeSet::from([16385]));
        assert!(Selection::new(&header(), &[], &[]).unwrap().zeroed.is_empty());
    }

    #[test]
    fn bad_selections_are_refused_with_pgbackrest_codes() {
        for (include, exclude, code, says) in [
            (&["nope"][..], &[][..], ErrorCode::DbMissing, "database to include 'nope' does not exist"),
            (&[][..], &["nope"][..], ErrorCode::DbMissing, "database to exclude 'nope' does not exist"),
            (&["postgres"][..], &[][..], ErrorCode::DbInvalid, "system databases"),
            (&["app"][..], &["app"][..], ErrorCode::DbInvalid, "is in the exclude list"),
        ] {
            let e = Selection::new(&header(), &list(include), &list(exclude)).unwrap_err();
            assert_eq!(e.code, code, "{include:?} {exclude:?}");
            assert!(e.message.contains(says), "{}", e.message);
        }
    }
}
