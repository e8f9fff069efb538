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
