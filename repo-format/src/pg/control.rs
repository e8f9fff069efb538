//! `global/pg_control`: the cluster's identity and last checkpoint.
//!
//! The layout of `ControlFileData` is the same in PostgreSQL 13 to 18 for every field read here
//! (`pg_control_version` 1300 for 13-16; 1700 for 17, which only reused padding inside the
//! checkpoint copy; 1800 for 18, which added `default_char_signedness` after
//! `data_checksum_version`). Its CRC-32C covers the bytes before the `crc` field: offset 288
//! up to 17, 292 from 18 (the new byte moves the 32-byte nonce, and `crc` is 4-aligned).

use super::{Lsn, TimelineId};
use crate::error::{FormatError, Result};

/// Size of the `pg_control` file on disk.
pub const PG_CONTROL_SIZE: usize = 8192;

/// Where `crc` lies for a `pg_control_version`.
const fn crc_offset(control_version: u32) -> usize {
    if control_version >= 1800 { 292 } else { 288 }
}

/// The `pg_control_version` of every supported major and the newest catalog-version ranges:
/// a catalog version at or above an entry (and below the next) belongs to that major version.
const CONTROL_VERSIONS: [u32; 3] = [1300, 1700, 1800];

/// Release catalog versions: a catalog version at or above an entry (and below the next) belongs
/// to that major version.
const CATALOG_VERSIONS: [(u32, u32); 6] =
    [(202_007_201, 13), (202_107_181, 14), (202_209_061, 15), (202_307_071, 16), (202_406_281, 17), (202_506_291, 18)];

/// The cluster state recorded in `pg_control`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DbState {
    Startup,
    ShutDown,
    ShutDownInRecovery,
    ShuttingDown,
    InCrashRecovery,
    InArchiveRecovery,
    InProduction,
    Unknown(u32),
}

impl DbState {
    fn from_raw(v: u32) -> Self {
        match v {
            0 => Self::Startup,
            1 => Self::ShutDown,
            2 => Self::ShutDownInRecovery,
            3 => Self::ShuttingDown,
            4 => Self::InCrashRecovery,
            5 => Self::InArchiveRecovery,
            6 => Self::InProduction,
            other => Self::Unknown(other),
        }
    }
}

/// The fields of `pg_control` that backup and restore need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlFile {
    pub system_identifier: u64,
    pub control_version: u32,
    pub catalog_version: u32,
    /// Major version derived from the catalog version.
    pub pg_version: u32,
    pub state: DbState,
    pub checkpoint: Lsn,
    pub redo: Lsn,
    pub timeline: TimelineId,
    pub prev_timeline: TimelineId,
    pub min_recovery_point: Lsn,
    pub blcksz: u32,
    pub relseg_size: u32,
    pub xlog_blcksz: u32,
    pub wal_segment_size: u32,
    /// 0 when data checksums are off.
    pub data_checksum_version: u32,
}

impl ControlFile {
    /// Parses and CRC-checks `pg_control`; `what` names it in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() < crc_offset(u32::MAX) + 4 {
            return Err(FormatError::truncated(what, format!("{} bytes, too short for pg_control", bytes.len())));
        }
        let u32_at = |at: usize| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
        let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
        let control_version = u32_at(8);
        if !CONTROL_VERSIONS.contains(&control_version) {
            return Err(FormatError::UnsupportedVersion {
                what: format!("{what} (pg_control_version)"),
                found: control_version,
                supported: CONTROL_VERSIONS[CONTROL_VERSIONS.len() - 1],
            });
        }
        let crc_at = crc_offset(control_version);
        let stored_crc = u32_at(crc_at);
        let computed = crc32c(&bytes[..crc_at]);
        if stored_crc != computed {
            return Err(FormatError::corrupt(
                what,
                format!("CRC mismatch (stored {stored_crc:08x}, computed {computed:08x})"),
            ));
        }
        let catalog_version = u32_at(12);
        let pg_version = CATALOG_VERSIONS
            .iter()
            .rev()
            .find(|(catalog, _)| catalog_version >= *catalog)
            .map(|(_, v)| *v)
            .ok_or_else(|| FormatError::UnsupportedVersion {
                what: format!("{what} (catalog version)"),
                found: catalog_version,
                supported: CATALOG_VERSIONS[CATALOG_VERSIONS.len() - 1].0,
            })?;
        // pg_control_version must agree with the catalog-version guess.
        let pg_version = match (control_version, pg_version) {
            (1800, 18) | (1700, 17) | (1300, 13..=16) => pg_version,
            _ => {
                return Err(FormatError::corrupt(
                    what,
                    format!("pg_control_version {control_version} does not match catalog version {catalog_version}"),
                ));
            }
        };
        // The engine reads pages of 8 KiB and WAL in PostgreSQL's segment sizes: a cluster built
        // otherwise is refused here, before any value is used (pgBackRest refuses it too).
        let (blcksz, xlog_blcksz, relseg_size, wal_segment_size) = (u32_at(216), u32_at(224), u32_at(220), u32_at(228));
        let unsupported = |detail: String| FormatError::Unsupported { what: what.to_string(), detail };
        if blcksz != 8192 || xlog_blcksz != 8192 {
            return Err(unsupported(format!(
                "page size {blcksz} and WAL page size {xlog_blcksz} are not supported (only 8192: PostgreSQL's default)"
            )));
        }
        if !wal_segment_size.is_power_of_two() || !(1 << 20..=1 << 30).contains(&wal_segment_size) {
            return Err(unsupported(format!(
                "WAL segment size {wal_segment_size} is not a power of two from 1 MiB to 1 GiB"
            )));
        }
        if relseg_size == 0 || u64::from(relseg_size) * 8192 > 1 << 40 {
            return Err(unsupported(format!("relation segment size {relseg_size} pages is not supported")));
        }
        Ok(Self {
            system_identifier: u64_at(0),
            control_version,
            catalog_version,
            pg_version,
            state: DbState::from_raw(u32_at(16)),
            checkpoint: Lsn(u64_at(32)),
            redo: Lsn(u64_at(40)),
            timeline: TimelineId(u32_at(48)),
            prev_timeline: TimelineId(u32_at(52)),
            min_recovery_point: Lsn(u64_at(136)),
            blcksz,
            relseg_size,
            xlog_blcksz,
            wal_segment_size,
            data_checksum_version: u32_at(252),
        })
    }
}

const fn crc32c_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

const CRC32C_TABLE: [u32; 256] = crc32c_table();

/// CRC-32C (Castagnoli), as PostgreSQL's `pg_crc32c`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    fn synthetic(control_version: u32, catalog: u32) -> Vec<u8> {
        synthetic_with(control_version, catalog, 8192, 131_072, 16 << 20)
    }

    fn synthetic_with(control_version: u32, catalog: u32, blcksz: u32, relseg: u32, wal_seg: u32) -> Vec<u8> {
        let mut b = vec![0u8; PG_CONTROL_SIZE];
        b[0..8].copy_from_slice(&7_000_000_000_000_000_001u64.to_le_bytes());
        b[8..12].copy_from_slice(&control_version.to_le_bytes());
        b[12..16].copy_from_slice(&catalog.to_le_bytes());
        b[16..20].copy_from_slice(&6u32.to_le_bytes());
        b[216..220].copy_from_slice(&blcksz.to_le_bytes());
        b[220..224].copy_from_slice(&relseg.to_le_bytes());
        b[224..228].copy_from_slice(&blcksz.to_le_bytes());
        b[228..232].copy_from_slice(&wal_seg.to_le_bytes());
        let at = crc_offset(control_version);
        let crc = crc32c(&b[..at]);
        b[at..at + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn versions_from_catalog_numbers() {
        for (catalog, version, control) in [
            (202_007_201, 13, 1300),
            (202_107_181, 14, 1300),
            (202_209_061, 15, 1300),
            (202_307_071, 16, 1300),
            (202_406_281, 17, 1700),
            (202_506_291, 18, 1800),
        ] {
            let c = ControlFile::parse(&synthetic(control, catalog), "pg_control").expect("parse");
            assert_eq!(c.pg_version, version);
            assert_eq!(c.state, DbState::InProduction);
            assert_eq!(c.wal_segment_size, 16 << 20);
        }
        assert!(ControlFile::parse(&synthetic(1300, 202_406_281), "pg_control").is_err());
        assert!(ControlFile::parse(&synthetic(1700, 202_506_291), "pg_control").is_err());
        // An 18 file checked at 17's CRC offset (or the reverse) does not pass.
        let mut moved = synthetic(1800, 202_506_291);
        moved[8..12].copy_from_slice(&1700u32.to_le_bytes());
        assert!(ControlFile::parse(&moved, "pg_control").is_err());
        assert!(matches!(
            ControlFile::parse(&synthetic(1201, 201_909_212), "pg_control"),
            Err(FormatError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn sizes_the_engine_does_not_handle_are_refused() {
        let parse =
            |blcksz, relseg, wal| ControlFile::parse(&synthetic_with(1300, 202_209_061, blcksz, relseg, wal), "c");
        assert!(parse(8192, 131_072, 64 << 20).is_ok());
        for (blcksz, relseg, wal) in
            [(16384, 131_072, 16 << 20), (8192, 131_072, 3 << 20), (8192, 131_072, 2 << 30), (8192, 0, 16 << 20)]
        {
            let e = parse(blcksz, relseg, wal).expect_err("refused");
            assert!(matches!(e, FormatError::Unsupported { .. }), "{e}");
        }
    }

    #[test]
    fn any_flipped_byte_before_the_crc_is_caught() {
        let good = synthetic(1300, 202_209_061);
        for at in [0, 9, 100, 287] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(ControlFile::parse(&bad, "pg_control").is_err(), "flip at {at}");
        }
        let good = synthetic(1800, 202_506_291);
        for at in [0, 100, 256, 291] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            assert!(ControlFile::parse(&bad, "pg_control").is_err(), "18: flip at {at}");
        }
    }
}
