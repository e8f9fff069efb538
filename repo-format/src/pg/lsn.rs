//! Log sequence numbers.

use std::fmt;
use std::str::FromStr;

use crate::error::FormatError;

/// A position in the WAL, printed and parsed as PostgreSQL does: `16/B374D848`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const INVALID: Lsn = Lsn(0);

    /// The segment number holding this position, for a segment size.
    pub fn segment_number(self, wal_segment_size: u64) -> u64 {
        self.0 / wal_segment_size
    }

    /// Offset of this position within its segment.
    pub fn segment_offset(self, wal_segment_size: u64) -> u64 {
        self.0 % wal_segment_size
    }

    pub fn is_valid(self) -> bool {
        self.0 != 0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xffff_ffff)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || FormatError::invalid("LSN", format!("{s:?} is not of the form X/X (hex)"));
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
            return Err(bad());
        }
        let hi = u32::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| bad())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

serde_as_text!(Lsn);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_and_parses_like_postgres() {
        let cases = [
            (0u64, "0/0"),
            (0x0000_0000_0100_0028, "0/1000028"),
            (0x0000_0016_B374_D848, "16/B374D848"),
            (u64::MAX, "FFFFFFFF/FFFFFFFF"),
        ];
        for (value, text) in cases {
            assert_eq!(Lsn(value).to_string(), text);
            assert_eq!(text.parse::<Lsn>().ok(), Some(Lsn(value)));
        }
        assert_eq!("16/b374d848".parse::<Lsn>().ok(), Some(Lsn(0x16_B374_D848)));
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "/", "0/", "/0", "G/0", "0/0/0", "123456789/0", "0x1/0", "1"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn segment_math() {
        let lsn: Lsn = "1/2000028".parse().expect("lsn");
        let seg = 16 * 1024 * 1024;
        assert_eq!(lsn.segment_number(seg), 0x102);
        assert_eq!(lsn.segment_offset(seg), 0x28);
    }
}
