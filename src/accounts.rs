//! The local user and group databases (`/etc/passwd`, `/etc/group`), read as (name, id) pairs:
//! backup records names for ids, restore (as root) sets ids for names.

/// The (name, id) entries of `/etc/passwd` (`Db::Users`) or `/etc/group` (`Db::Groups`);
/// empty when the file cannot be read.
pub fn entries(db: Db) -> Vec<(String, u32)> {
    let path = match db {
        Db::Users => "/etc/passwd",
        Db::Groups => "/etc/group",
    };
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_string();
            Some((name, f.nth(1)?.parse().ok()?))
        })
        .collect()
}

/// Which database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Users,
    Groups,
}

/// User and group names by id, for recording who owns what.
#[derive(Debug, Default)]
pub struct Names {
    users: std::collections::HashMap<u32, String>,
    groups: std::collections::HashMap<u32, String>,
}

impl Names {
    pub fn load() -> Self {
        let by_id = |db| entries(db).into_iter().map(|(name, id)| (id, name)).collect();
        Self { users: by_id(Db::Users), groups: by_id(Db::Groups) }
    }

    /// The owner of a file as the manifest records it: mode bits and names.
    pub fn owner(&self, meta: &std::fs::Metadata) -> pgstrata_repo_format::meta::Ownership {
        use std::os::unix::fs::MetadataExt;
        pgstrata_repo_format::meta::Ownership {
            mode: meta.mode() & 0o7777,
            user: self.users.get(&meta.uid()).cloned(),
            group: self.groups.get(&meta.gid()).cloned(),
        }
    }
}
