//! Timelines, WAL file names and the long header at the start of every WAL segment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Lsn;
use crate::error::{FormatError, Result};

/// WAL page size PostgreSQL is built with by default.
pub const XLOG_BLCKSZ: u32 = 8192;

/// A timeline id; printed as 8 hex digits in file names, as a decimal in recovery settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimelineId(pub u32);

impl fmt::Display for TimelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What a file in the WAL archive is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WalFileKind {
    /// A whole segment: `000000010000000000000003`.
    Segment,
    /// A segment that was being written at a promotion: `...03.partial`.
    Partial,
    /// A timeline history file: `00000002.history` (log and seg are zero).
    History,
    /// A backup history file: `...03.00000028.backup`, with the backup's start offset.
    Backup { offset: u32 },
}

/// A parsed WAL file name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WalFileName {
    pub timeline: TimelineId,
    /// The high 32 bits of the segment's start LSN ("xlogid").
    pub log: u32,
    /// The segment number within `log`.
    pub seg: u32,
    pub kind: WalFileKind,
}

fn check_segment_size(wal_segment_size: u64) -> Result<()> {
    // PostgreSQL allows powers of two from 1 MiB to 1 GiB.
    if !wal_segment_size.is_power_of_two() || !((1 << 20)..=(1 << 30)).contains(&wal_segment_size) {
        return Err(FormatError::invalid(
            "WAL segment size",
            format!("{wal_segment_size} is not a power of two between 1 MiB and 1 GiB"),
        ));
    }
    Ok(())
}

impl WalFileName {
    /// The segment of `timeline` with number `segno` for a segment size.
    pub fn segment(timeline: TimelineId, segno: u64, wal_segment_size: u64) -> Result<Self> {
        check_segment_size(wal_segment_size)?;
        let per_log = 0x1_0000_0000 / wal_segment_size;
        let log = u32::try_from(segno / per_log)
            .map_err(|_| FormatError::invalid("WAL segment number", format!("{segno} is out of range")))?;
        // per_log fits in u32 range for segment sizes >= 1 MiB.
        let seg = (segno % per_log) as u32;
        Ok(Self { timeline, log, seg, kind: WalFileKind::Segment })
    }

    /// The segment holding `lsn`.
    pub fn for_lsn(timeline: TimelineId, lsn: Lsn, wal_segment_size: u64) -> Result<Self> {
        check_segment_size(wal_segment_size)?;
        Self::segment(timeline, lsn.segment_number(wal_segment_size), wal_segment_size)
    }

    /// The history file of a timeline.
    pub fn history(timeline: TimelineId) -> Self {
        Self { timeline, log: 0, seg: 0, kind: WalFileKind::History }
    }

    /// The segment number; an error when `seg` is too large for the segment size.
    pub fn segment_number(&self, wal_segment_size: u64) -> Result<u64> {
        check_segment_size(wal_segment_size)?;
        let per_log = 0x1_0000_0000 / wal_segment_size;
        if u64::from(self.seg) >= per_log {
            return Err(FormatError::invalid(
                "WAL file name",
                format!(
                    "{self} has segment {:X}, but {wal_segment_size}-byte segments stop at {:X}",
                    self.seg,
                    per_log - 1
                ),
            ));
        }
        Ok(u64::from(self.log) * per_log + u64::from(self.seg))
    }

    /// The LSN where this segment starts.
    pub fn start_lsn(&self, wal_segment_size: u64) -> Result<Lsn> {
        Ok(Lsn(self.segment_number(wal_segment_size)? * wal_segment_size))
    }

    /// The next segment on the same timeline.
    pub fn next(&self, wal_segment_size: u64) -> Result<Self> {
        Self::segment(self.timeline, self.segment_number(wal_segment_size)? + 1, wal_segment_size)
    }

    /// The 24-hex-digit segment part (or 8 digits for a history file), without suffix.
    pub fn stem(&self) -> String {
        match self.kind {
            WalFileKind::History => format!("{:08X}", self.timeline.0),
            _ => format!("{:08X}{:08X}{:08X}", self.timeline.0, self.log, self.seg),
        }
    }

    /// The 16-hex-digit timeline-and-log directory pgBackRest groups segments by.
    pub fn log_dir(&self) -> String {
        format!("{:08X}{:08X}", self.timeline.0, self.log)
    }
}

impl fmt::Display for WalFileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.stem())?;
        match self.kind {
            WalFileKind::Segment => Ok(()),
            WalFileKind::Partial => f.write_str(".partial"),
            WalFileKind::History => f.write_str(".history"),
            WalFileKind::Backup { offset } => write!(f, ".{offset:08X}.backup"),
        }
    }
}

fn hex8(text: &str) -> Option<u32> {
    (text.len() == 8 && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| u32::from_str_radix(text, 16).ok())?
}

impl FromStr for WalFileName {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            FormatError::invalid(
                "WAL file name",
                format!("{s:?} is not a WAL segment, .partial, .history or .backup name"),
            )
        };
        if let Some(tli) = s.strip_suffix(".history") {
            let timeline = hex8(tli).ok_or_else(bad)?;
            return Ok(Self::history(TimelineId(timeline)));
        }
        let (stem, kind) = if let Some(stem) = s.strip_suffix(".partial") {
            (stem, WalFileKind::Partial)
        } else if let Some(rest) = s.strip_suffix(".backup") {
            let (stem, offset) = rest.split_once('.').ok_or_else(bad)?;
            (stem, WalFileKind::Backup { offset: hex8(offset).ok_or_else(bad)? })
        } else {
            (s, WalFileKind::Segment)
        };
        if stem.len() != 24 || !stem.is_ascii() {
            return Err(bad());
        }
        let timeline = hex8(&stem[0..8]).ok_or_else(bad)?;
        let log = hex8(&stem[8..16]).ok_or_else(bad)?;
        let seg = hex8(&stem[16..24]).ok_or_else(bad)?;
        if timeline == 0 {
            return Err(bad());
        }
        Ok(Self { timeline: TimelineId(timeline), log, seg, kind })
    }
}

/// `XLOG_PAGE_MAGIC` of each supported major version.
const WAL_MAGIC: [(u32, u16); 6] = [(13, 0xD106), (14, 0xD10D), (15, 0xD110), (16, 0xD113), (17, 0xD116), (18, 0xD118)];

/// The major version whose WAL starts pages with `magic`.
pub fn pg_version_for_wal_magic(magic: u16) -> Option<u32> {
    WAL_MAGIC.iter().find(|(_, m)| *m == magic).map(|(v, _)| *v)
}

/// The WAL page magic of a major version.
pub fn wal_magic_for_version(version: u32) -> Option<u16> {
    WAL_MAGIC.iter().find(|(v, _)| *v == version).map(|(_, m)| *m)
}

const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of the long page header at the start of each segment.
pub const LONG_HEADER_LEN: usize = 40;

/// The long page header that opens every WAL segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalPageHeader {
    pub magic: u16,
    /// Major version implied by the magic.
    pub pg_version: u32,
    pub timeline: TimelineId,
    /// LSN of this page (the segment's start).
    pub page_addr: Lsn,
    pub system_identifier: u64,
    pub segment_size: u32,
    pub xlog_blcksz: u32,
}

impl WalPageHeader {
    /// Parses the first bytes of a WAL segment; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() < LONG_HEADER_LEN {
            return Err(FormatError::truncated(what, "shorter than a WAL long page header"));
        }
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let magic = u16_at(0);
        let pg_version = pg_version_for_wal_magic(magic).ok_or_else(|| FormatError::NotAnObject {
            what: what.to_string(),
            detail: format!("WAL page magic {magic:#06X} is not PostgreSQL 13-18's"),
        })?;
        let info = u16_at(2);
        if info & XLP_LONG_HEADER == 0 {
            return Err(FormatError::corrupt(what, "first page lacks the long header flag"));
        }
        let header = Self {
            magic,
            pg_version,
            timeline: TimelineId(u32_at(4)),
            page_addr: Lsn(u64_at(8)),
            system_identifier: u64_at(24),
            segment_size: u32_at(32),
            xlog_blcksz: u32_at(36),
        };
        if check_segment_size(u64::from(header.segment_size)).is_err() {
            return Err(FormatError::corrupt(
                what,
                format!("segment size {} in header is invalid", header.segment_size),
            ));
        }
        if header.page_addr.segment_offset(u64::from(header.segment_size)) != 0 {
            return Err(FormatError::corrupt(
                what,
                format!("first page address {} is not a segment start", header.page_addr),
            ));
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG16: u64 = 16 << 20;

    #[test]
    fn parses_every_kind_and_prints_it_back() {
        let cases = [
            ("000000010000000000000003", WalFileKind::Segment),
            ("0000000A00000001000000FF.partial", WalFileKind::Partial),
            ("00000002.history", WalFileKind::History),
            ("000000010000000000000002.00000028.backup", WalFileKind::Backup { offset: 0x28 }),
        ];
        for (text, kind) in cases {
            let name: WalFileName = text.parse().expect(text);
            assert_eq!(name.kind, kind);
            assert_eq!(name.to_string(), text);
        }
    }

    #[test]
    fn rejects_non_wal_names() {
        for bad in [
            "00000001000000000000003",
            "0000000100000000000000031",
            "00000000000000000000000A",
            "000000010000000000000003.bak",
            "0000000G0000000000000003",
            "0002.history",
            "archive_status",
            "0000000100000000000000é3",
            "",
        ] {
            assert!(bad.parse::<WalFileName>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn segment_numbers_follow_the_segment_size() {
        // 16 MiB: 256 segments per log id.
        let name: WalFileName = "0000000100000001000000FF".parse().expect("name");
        assert_eq!(name.segment_number(SEG16).ok(), Some(0x1FF));
        assert_eq!(name.next(SEG16).map(|n| n.to_string()).ok().as_deref(), Some("000000010000000200000000"));
        assert_eq!(name.start_lsn(SEG16).map(|l| l.to_string()).ok().as_deref(), Some("1/FF000000"));
        // 1 GiB: only 4 segments per log id, so seg FF is impossible.
        assert!(name.segment_number(1 << 30).is_err());
        let big = WalFileName::segment(TimelineId(3), 9, 1 << 30).expect("segment");
        assert_eq!(big.to_string(), "000000030000000200000001");
        // 64 MiB from an LSN.
        let lsn: Lsn = "2/4C000028".parse().expect("lsn");
        let at = WalFileName::for_lsn(TimelineId(1), lsn, 64 << 20).expect("for_lsn");
        assert_eq!(at.to_string(), "000000010000000200000013");
        assert!(WalFileName::segment(TimelineId(1), 1, 3 << 20).is_err());
    }

    #[test]
    fn long_header_round_trip_from_bytes() {
        let mut page = vec![0u8; 8192];
        page[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        page[2..4].copy_from_slice(&0x0007u16.to_le_bytes());
        page[4..8].copy_from_slice(&2u32.to_le_bytes());
        page[8..16].copy_from_slice(&(5u64 * SEG16).to_le_bytes());
        page[24..32].copy_from_slice(&7_301_234_567_890_123_456u64.to_le_bytes());
        page[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        page[36..40].copy_from_slice(&8192u32.to_le_bytes());
        let h = WalPageHeader::parse(&page, "seg").expect("parse");
        assert_eq!(h.pg_version, 15);
        assert_eq!(h.timeline, TimelineId(2));
        assert_eq!(h.system_identifier, 7_301_234_567_890_123_456);
        page[0] = 0x99;
        assert!(matches!(WalPageHeader::parse(&page, "seg"), Err(FormatError::NotAnObject { .. })));
    }
}
