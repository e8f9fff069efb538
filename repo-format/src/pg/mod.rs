//! PostgreSQL's on-disk types, spelled as PostgreSQL spells them: [`Lsn`], [`TimelineId`],
//! [`WalFileName`], the 8 KiB page header and checksum, `pg_control`, and the WAL long page
//! header. Pure parsing; versions 13 to 17.

mod control;
mod history;
mod lsn;
mod page;
mod wal;

pub use control::{ControlFile, DbState, PG_CONTROL_SIZE, crc32c};
pub use history::{HistoryEntry, TimelineHistory};
pub use lsn::Lsn;
pub use page::{BLCKSZ, PageHeader, PageVerdict, page_checksum, verify_page};
pub use wal::{
    TimelineId, WalFileKind, WalFileName, WalPageHeader, XLOG_BLCKSZ, pg_version_for_wal_magic, wal_magic_for_version,
};

/// The PostgreSQL major versions this build understands.
pub const SUPPORTED_VERSIONS: std::ops::RangeInclusive<u32> = 13..=18;
