//! Where each manifest path goes on this host: the data directory, tablespaces (remapped with
//! `--tablespace-map`) and links (`--link-map`). Pure: decided from the manifest and options
//! before anything is written, so every refusal here leaves the host untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{LinkEntry, ManifestHeader};

use crate::error::{CliError, CliResult, ErrorCode};

/// Where each manifest root and link goes on this host.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Manifest root (`pg_data`, `pg_tblspc/16400`) to local directory.
    pub roots: BTreeMap<String, PathBuf>,
    /// Link path in the manifest (`pg_data/pg_wal`) to its (possibly remapped) destination.
    pub links: BTreeMap<String, PathBuf>,
    /// Links given by `--link-map`, and whether the manifest has them.
    mapped: BTreeMap<String, bool>,
}

/// Refuses a manifest path that could name something outside its root: empty, `.` or `..`
/// components, or an absolute path. A manifest is authenticated, but it may come from an
/// older or hostile writer; a restore never writes outside the directories it was given.
pub fn check_manifest_path(path: &str) -> CliResult<()> {
    let bad =
        path.is_empty() || path.starts_with('/') || path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(CliError::new(
            ErrorCode::Format,
            format!("manifest path {path:?} is not a plain relative path: refusing to restore it"),
        ));
    }
    Ok(())
}

impl RestorePlan {
    /// Decides where the data directory and tablespaces go; links are added as the manifest
    /// is read ([`add_link`](Self::add_link)), remapped links (`--link-map`) are known at once.
    pub fn new(
        header: &ManifestHeader,
        data: &Path,
        tablespace_map: &[String],
        link_map: &[String],
    ) -> CliResult<Self> {
        let ts_map = parse_map(tablespace_map, "tablespace-map")?;
        let mut plan = RestorePlan::default();
        plan.roots.insert("pg_data".into(), data.to_path_buf());
        for t in &header.targets {
            if t.name == "pg_data" {
                continue;
            }
            check_manifest_path(&t.name)?;
            let oid = t.tablespace_oid.map(|o| o.to_string()).unwrap_or_default();
            let mapped = ts_map.get(&oid).or_else(|| t.tablespace_name.as_ref().and_then(|n| ts_map.get(n)));
            let dest = mapped.cloned().unwrap_or_else(|| PathBuf::from(&t.path));
            if !dest.is_absolute() {
                return Err(CliError::new(
                    ErrorCode::Format,
                    format!("tablespace {} has a relative location {:?}", t.name, t.path),
                ));
            }
            plan.roots.insert(t.name.clone(), dest);
        }
        for (key, dest) in parse_map(link_map, "link-map")? {
            plan.mapped.insert(format!("pg_data/{key}"), false);
            plan.links.insert(format!("pg_data/{key}"), dest);
        }
        Ok(plan)
    }

    /// A link of the manifest (not a tablespace link): it goes where `--link-map` says, or
    /// where it pointed on the source.
    pub fn add_link(&mut self, link: &LinkEntry) {
        if link.path.starts_with("pg_data/pg_tblspc/") {
            return;
        }
        if let Some(seen) = self.mapped.get_mut(&link.path) {
            *seen = true;
        } else {
            self.links.insert(link.path.clone(), PathBuf::from(&link.destination));
        }
    }

    /// After the manifest: a `--link-map` naming a link the backup does not have is an error,
    /// except `pg_wal` (put on another volume, as operators do).
    pub fn check_link_map(&self) -> CliResult<()> {
        for (link, seen) in &self.mapped {
            if !seen && link != "pg_data/pg_wal" {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("link-map: the backup has no link '{}'", link.trim_start_matches("pg_data/")),
                ));
            }
        }
        Ok(())
    }

    /// The local path of a manifest path; an error for a path outside every root.
    pub fn local(&self, path: &str) -> CliResult<PathBuf> {
        // Longest root first: pg_tblspc/16400 before pg_data.
        for (root, dir) in self.roots.iter().rev() {
            if path == root {
                return Ok(dir.clone());
            }
            if let Some(rest) = path.strip_prefix(root.as_str()).and_then(|r| r.strip_prefix('/')) {
                // Inside a remapped link (pg_data/pg_wal -> elsewhere)?
                for (link, dest) in &self.links {
                    if let Some(inner) = path.strip_prefix(link.as_str()).and_then(|r| r.strip_prefix('/')) {
                        return Ok(dest.join(inner));
                    }
                }
                return Ok(dir.join(rest));
            }
        }
        Err(CliError::new(ErrorCode::Format, format!("manifest path {path} is outside every restored directory")))
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        self.roots.get("pg_data").map(PathBuf::as_path).unwrap_or(Path::new("."))
    }

    /// Tablespace roots (not the data directory) and their local locations.
    pub fn tablespaces(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.roots.iter().filter(|(k, _)| k.as_str() != "pg_data").map(|(k, v)| (k.as_str(), v.as_path()))
    }
}

/// `name=path` pairs of `--tablespace-map` / `--link-map`.
fn parse_map(values: &[String], option: &str) -> CliResult<BTreeMap<String, PathBuf>> {
    values
        .iter()
        .map(|v| {
            let (k, p) = v.split_once('=').ok_or_else(|| {
                CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{v}' is not valid for '{option}' option: use name=path"),
                )
            })?;
            let path = PathBuf::from(p);
            if !path.is_absolute() {
                return Err(CliError::new(
                    ErrorCode::OptionInvalidValue,
                    format!("'{v}': the path of '{option}' must be absolute"),
                ));
            }
            Ok((k.to_string(), path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn manifest_paths_must_stay_inside_their_root() {
        for ok in ["pg_data", "pg_data/base/1/1259", "pg_tblspc/16400/PG_15_202209061/5/16401", "pg_data/..x"] {
            assert!(check_manifest_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/etc/passwd", "pg_data/../etc", "pg_data/./x", "pg_data//x", "pg_data/base/..", "pg_data/"] {
            let e = check_manifest_path(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::Format, "{bad}");
            assert!(e.message.contains("not a plain relative path"), "{}", e.message);
        }
    }

    #[test]
    fn local_paths_follow_roots_and_links() {
        let mut plan = RestorePlan::default();
        plan.roots.insert("pg_data".into(), "/restore/data".into());
        plan.roots.insert("pg_tblspc/16400".into(), "/restore/ts".into());
        plan.links.insert("pg_data/pg_wal".into(), "/wal".into());
        assert_eq!(plan.local("pg_data/base/1/1259").unwrap(), Path::new("/restore/data/base/1/1259"));
        assert_eq!(plan.local("pg_tblspc/16400/PG_15_1/5/1").unwrap(), Path::new("/restore/ts/PG_15_1/5/1"));
        assert_eq!(plan.local("pg_data/pg_wal/archive_status").unwrap(), Path::new("/wal/archive_status"));
        assert!(plan.local("elsewhere/x").is_err());
        assert_eq!(plan.tablespaces().count(), 1);
    }
}
