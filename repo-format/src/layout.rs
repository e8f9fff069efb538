//! Every key pgstrata writes, in one place. Keys are relative to the repository root (the
//! storage layer adds `repo1-path` or the bucket prefix).
//!
//! ```text
//! stanza/<stanza>/stanza.info[.copy]                         stanza identity, db history, wrapped key
//! stanza/<stanza>/backup.catalog[.copy]                      the list of complete backups
//! stanza/<stanza>/backup/<label>/backup.manifest[.copy]      one backup's manifest (written last)
//! stanza/<stanza>/backup/<label>/pack/<00000000>             pack objects of that backup
//! stanza/<stanza>/archive/<ver>-<db-id>/<tli+log>/<segment>-<sha256>   archived WAL segment
//! stanza/<stanza>/archive/<ver>-<db-id>/<tli>.history-<sha256>          timeline history file
//! stanza/<stanza>/lock/<name>                                 advisory locks (create-only objects)
//! ```

use crate::digest::Sha256Digest;
use crate::error::{FormatError, Result};
use crate::label::BackupLabel;
use crate::pg::{WalFileKind, WalFileName};

/// Suffix of the spare copy of rewritten metadata.
pub const COPY_SUFFIX: &str = ".copy";

/// Keys of one stanza.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaLayout {
    stanza: String,
    root: String,
}

/// Checks a stanza name: letters, digits, `_`, `-`, `.`; not starting with `.`.
pub fn check_stanza_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(FormatError::invalid(
            "stanza name",
            format!("{name:?} (use 1-64 letters, digits, '_', '-' or '.', not starting with '.')"),
        ))
    }
}

impl StanzaLayout {
    pub fn new(stanza: &str) -> Result<Self> {
        check_stanza_name(stanza)?;
        Ok(Self { stanza: stanza.to_string(), root: format!("stanza/{stanza}") })
    }

    pub fn stanza(&self) -> &str {
        &self.stanza
    }

    /// Prefix of everything in the stanza, with a trailing `/`.
    pub fn root(&self) -> String {
        format!("{}/", self.root)
    }

    pub fn stanza_info(&self) -> String {
        format!("{}/stanza.info", self.root)
    }

    pub fn backup_catalog(&self) -> String {
        format!("{}/backup.catalog", self.root)
    }

    /// Prefix of one backup's objects, with a trailing `/`.
    pub fn backup_dir(&self, label: &BackupLabel) -> String {
        format!("{}/backup/{label}/", self.root)
    }

    pub fn manifest(&self, label: &BackupLabel) -> String {
        format!("{}backup.manifest", self.backup_dir(label))
    }

    pub fn pack(&self, label: &BackupLabel, pack: u32) -> String {
        format!("{}pack/{pack:08}", self.backup_dir(label))
    }

    /// Prefix of the checkpoints of a backup in progress, with a trailing `/`.
    pub fn checkpoint_dir(&self, label: &BackupLabel) -> String {
        format!("{}resume/", self.backup_dir(label))
    }

    /// The checkpoint written when `pack` was complete, by the attempt that began at `first_pack`.
    pub fn checkpoint(&self, label: &BackupLabel, first_pack: u32, pack: u32) -> String {
        format!("{}{first_pack:08}-{pack:08}", self.checkpoint_dir(label))
    }

    /// Prefix of the WAL archive of one database (`15-1`), with a trailing `/`.
    pub fn archive_dir(&self, archive_id: &str) -> String {
        format!("{}/archive/{archive_id}/", self.root)
    }

    /// Prefix under which every stored copy of `name` would be found.
    pub fn wal_prefix(&self, archive_id: &str, name: &WalFileName) -> String {
        match name.kind {
            WalFileKind::History => format!("{}{name}-", self.archive_dir(archive_id)),
            _ => format!("{}{}/{name}-", self.archive_dir(archive_id), name.log_dir()),
        }
    }

    /// The key of a WAL file whose plaintext has `sha256`: the digest is visible in the name so
    /// a duplicate push is detected without downloading.
    pub fn wal_object(&self, archive_id: &str, name: &WalFileName, sha256: &Sha256Digest) -> String {
        format!("{}{sha256}", self.wal_prefix(archive_id, name))
    }

    /// The claim of a WAL file's name: a small object created only if absent, holding the hex
    /// digest of the plaintext whose push claimed the name first. Concurrent pushes of different
    /// bytes under one name (two primaries on one timeline) race on it: exactly one wins. A
    /// claim whose object never arrived (its pusher died) reads as "not archived"; the same bytes
    /// may be pushed again, different bytes stay refused. Parsed by no WAL reader
    /// ([`parse_wal_object`] refuses its name) and expired with its segment.
    pub fn wal_claim(&self, archive_id: &str, name: &WalFileName) -> String {
        format!("{}{WAL_CLAIM}", self.wal_prefix(archive_id, name))
    }

    pub fn lock(&self, name: &str) -> String {
        format!("{}/lock/{name}", self.root)
    }

    /// Where an expired backup's manifest is kept for `repoN-retention-history` days.
    pub fn history_dir(&self) -> String {
        format!("{}/history/", self.root)
    }

    pub fn history(&self, label: &BackupLabel) -> String {
        format!("{}{label}.manifest", self.history_dir())
    }

    /// The last result of a check run on the repository (`verify.json`, `restore-test.json`).
    pub fn report(&self, name: &str) -> String {
        format!("{}/report/{name}", self.root)
    }
}

/// `<major>-<db id>`, the archive id pgBackRest uses too.
pub fn archive_id(pg_version: u32, db_id: u32) -> String {
    format!("{pg_version}-{db_id}")
}

/// Splits the last path component of a WAL object key into file name and digest.
/// The last part of a WAL claim's key (after `<name>-`).
pub const WAL_CLAIM: &str = "claim";

/// Whether `key` is a WAL file's claim ([`StanzaLayout::wal_claim`]).
pub fn is_wal_claim(key: &str) -> bool {
    key.rsplit('/')
        .next()
        .and_then(|b| b.rsplit_once('-'))
        .is_some_and(|(n, c)| c == WAL_CLAIM && n.parse::<WalFileName>().is_ok())
}

pub fn parse_wal_object(key: &str) -> Option<(WalFileName, Sha256Digest)> {
    let base = key.rsplit('/').next()?;
    let (name, digest) = base.rsplit_once('-')?;
    Some((name.parse().ok()?, Sha256Digest::from_hex(digest).ok()?))
}

/// The attempt's first pack and the completed pack of a checkpoint key.
pub fn parse_checkpoint(key: &str) -> Option<(u32, u32)> {
    let (first, pack) = key.rsplit('/').next()?.split_once('-')?;
    let digits = |s: &str| s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit());
    (digits(first) && digits(pack)).then(|| Some((first.parse().ok()?, pack.parse().ok()?)))?
}

/// The pack number of a pack key.
pub fn parse_pack(key: &str) -> Option<u32> {
    let (dir, name) = key.rsplit_once('/')?;
    (dir.ends_with("pack") && name.len() == 8 && name.bytes().all(|b| b.is_ascii_digit())).then(|| name.parse().ok())?
}

/// The key of a metadata object's spare copy.
pub fn copy_of(key: &str) -> String {
    format!("{key}{COPY_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable() {
        let l = StanzaLayout::new("db").expect("layout");
        let label: BackupLabel = "20261121-101500F".parse().expect("label");
        assert_eq!(l.stanza_info(), "stanza/db/stanza.info");
        assert_eq!(copy_of(&l.backup_catalog()), "stanza/db/backup.catalog.copy");
        assert_eq!(l.manifest(&label), "stanza/db/backup/20261121-101500F/backup.manifest");
        assert_eq!(l.pack(&label, 7), "stanza/db/backup/20261121-101500F/pack/00000007");
        assert_eq!(parse_pack(&l.pack(&label, 7)), Some(7));
        let checkpoint = l.checkpoint(&label, 3, 12);
        assert_eq!(checkpoint, "stanza/db/backup/20261121-101500F/resume/00000003-00000012");
        assert!(checkpoint.starts_with(&l.checkpoint_dir(&label)));
        assert_eq!(parse_checkpoint(&checkpoint), Some((3, 12)));
        for odd in ["resume/3-12", "resume/00000003-0000001x", "resume/00000003", "resume/00000003-00000012.tmp"] {
            assert_eq!(parse_checkpoint(odd), None, "{odd}");
        }
        assert_eq!(parse_pack("backup/x/pack/00000007.multipart"), None);
        let seg: WalFileName = "000000020000000100000003".parse().expect("seg");
        let sha = Sha256Digest::of(b"x");
        let key = l.wal_object(&archive_id(15, 1), &seg, &sha);
        assert_eq!(key, format!("stanza/db/archive/15-1/0000000200000001/000000020000000100000003-{sha}"));
        assert_eq!(parse_wal_object(&key), Some((seg, sha)));
        let hist = WalFileName::history(crate::pg::TimelineId(2));
        assert_eq!(l.wal_object("15-1", &hist, &sha), format!("stanza/db/archive/15-1/00000002.history-{sha}"));
    }

    #[test]
    fn stanza_names_are_checked() {
        for bad in ["", "a/b", ".hidden", "x y", "é"] {
            assert!(StanzaLayout::new(bad).is_err(), "{bad:?}");
        }
        assert!(StanzaLayout::new("main-db_1.x").is_ok());
    }
}
