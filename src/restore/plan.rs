//! Where each manifest path goes on this host: the data directory, tablespaces (remapped with
//! `--tablespace-map`) and links (`--link-map`). Pure: decided from the manifest and options
//! before anything is written, so every refusal here leaves the host untouched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use pgstrata_repo_format::meta::{LinkEntry, ManifestHeader};

use crate::error::{CliError, CliResult, ErrorCode};

/// What the options say of where things go (part of the restore's request).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// `--tablespace-map` (`name-or-oid=path`), and `--tablespace-map-all`: a directory the
    /// other tablespaces go into, each under its name.
    pub tablespace_map: Vec<String>,
    pub tablespace_map_all: Option<PathBuf>,
    /// `--link-map` (`link=destination`), and `--link-all`: the other links restored as links
    /// (otherwise as directories in the data directory, as pgBackRest does).
    pub link_map: Vec<String>,
    pub link_all: bool,
}

/// Where each manifest root and link goes on this host.
#[derive(Clone, Debug, Default)]
pub struct RestorePlan {
    /// Manifest root (`pg_data`, `pg_tblspc/16400`) to local directory.
    pub roots: BTreeMap<String, PathBuf>,
    /// Link path in the manifest (`pg_data/pg_wal`) to its (possibly remapped) destination.
    pub links: BTreeMap<String, PathBuf>,
    /// Links given by `--link-map`, and whether the manifest has them.
    mapped: BTreeMap<String, bool>,
    /// `--link-all`: links not in `--link-map` are restored as links too.
    link_all: bool,
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
    pub fn new(header: &ManifestHeader, data: &Path, request: &Placement) -> CliResult<Self> {
        let ts_map = parse_map(&request.tablespace_map, "tablespace-map")?;
        let mut plan = RestorePlan { link_all: request.link_all, ..Default::default() };
        plan.roots.insert("pg_data".into(), data.to_path_buf());
        let mut remapped = std::collections::BTreeSet::new();
        for t in &header.targets {
            if t.name == "pg_data" {
                continue;
            }
            check_manifest_path(&t.name)?;
            let oid = t.tablespace_oid.map(|o| o.to_string()).unwrap_or_default();
            let by_oid = ts_map.get(&oid);
            let by_name = t.tablespace_name.as_ref().and_then(|n| ts_map.get(n));
            if let (Some(a), Some(b)) = (by_oid, by_name)
                && a != b
            {
                return Err(CliError::new(
                    ErrorCode::TablespaceMap,
                    format!(
                        "tablespace remapped by name '{}' and id {oid} with different paths",
                        t.tablespace_name.as_deref().unwrap_or_default()
                    ),
                ));
            }
            remapped.insert(oid.clone());
            if let Some(name) = &t.tablespace_name {
                remapped.insert(name.clone());
            }
            // --tablespace-map-all: the others into one directory, each under its name.
            let all = request
                .tablespace_map_all
                .as_ref()
                .map(|dir| dir.join(t.tablespace_name.clone().unwrap_or_else(|| oid.clone())));
            let mapped = by_oid.or(by_name).cloned().or(all);
            if let Some(dest) = &mapped {
                tracing::info!("map tablespace '{}' to '{}'", t.name, dest.display());
            }
            let dest = mapped.unwrap_or_else(|| PathBuf::from(&t.path));
            if !dest.is_absolute() {
                return Err(CliError::new(
                    ErrorCode::Format,
                    format!("tablespace {} has a relative location {:?}", t.name, t.path),
                ));
            }
            plan.roots.insert(t.name.clone(), dest);
        }
        if let Some(unknown) = ts_map.keys().find(|k| !remapped.contains(*k)) {
            return Err(CliError::new(
                ErrorCode::TablespaceMap,
                format!("unable to remap invalid tablespace '{unknown}': the backup has no such tablespace"),
            ));
        }
        for (key, dest) in parse_map(&request.link_map, "link-map")? {
            plan.mapped.insert(format!("pg_data/{key}"), false);
            plan.links.insert(format!("pg_data/{key}"), dest);
        }
        Ok(plan)
    }

    /// A link of the manifest (not a tablespace link): it goes where `--link-map` says, or,
    /// with `--link-all`, where it pointed on the source; `false` when it is not restored as a
    /// link (pgBackRest's default: its contents go into a directory at the same place).
    pub fn add_link(&mut self, link: &LinkEntry) -> bool {
        if link.path.starts_with("pg_data/pg_tblspc/") {
            return true;
        }
        if let Some(seen) = self.mapped.get_mut(&link.path) {
            *seen = true;
        } else if self.link_all {
            self.links.insert(link.path.clone(), PathBuf::from(&link.destination));
        } else {
            return false;
        }
        true
    }

    /// A link kept as a link after all (a file link: its target's content is not in the
    /// backup, so no directory can stand in for it).
    pub fn keep_link(&mut self, link: &LinkEntry) {
        self.links.insert(link.path.clone(), PathBuf::from(&link.destination));
    }

    /// After the manifest: a `--link-map` naming a link the backup does not have is an error,
    /// except `pg_wal` (put on another volume, as operators do).
    pub fn check_link_map(&self) -> CliResult<()> {
        for (link, seen) in &self.mapped {
            if !seen && link != "pg_data/pg_wal" {
                return Err(CliError::new(
                    ErrorCode::LinkMap,
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
