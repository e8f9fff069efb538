//! Backup labels in pgBackRest's form: `20261121-101500F`, `20261121-101500F_20261122-030000D`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{FormatError, Result};

/// full, diff or incr.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    Full,
    Diff,
    Incr,
}

impl BackupType {
    fn letter(self) -> char {
        match self {
            Self::Full => 'F',
            Self::Diff => 'D',
            Self::Incr => 'I',
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Diff => "diff",
            Self::Incr => "incr",
        }
    }
}

impl FromStr for BackupType {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "full" => Ok(Self::Full),
            "diff" => Ok(Self::Diff),
            "incr" => Ok(Self::Incr),
            other => Err(FormatError::invalid("backup type", format!("{other:?} (use full, diff or incr)"))),
        }
    }
}

/// A backup's label; sorts in the order backups were taken.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupLabel(String);

/// `YYYYMMDD-HHMMSS` for a Unix time (UTC).
pub fn timestamp_text(unix_seconds: i64) -> String {
    let [y, m, d, hh, mm, ss] = civil_time(unix_seconds);
    format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}")
}

/// Year, month, day, hour, minute, second (UTC) of a Unix time.
pub fn civil_time(unix_seconds: i64) -> [i64; 6] {
    let days = unix_seconds.div_euclid(86_400);
    let secs = unix_seconds.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    [y, m, d, secs / 3600, secs / 60 % 60, secs % 60]
}

/// Parses a recovery target time as PostgreSQL prints timestamps, `YYYY-MM-DD HH:MM:SS[.ffffff]`
/// followed by an optional zone `Z`, `+HH`, `-HH`, `+HH:MM` or `+HHMM` (a `T` may separate date
/// and time). Returns Unix microseconds, or `None` when the text is not of that form. Without a
/// zone the time is taken as UTC (PostgreSQL would use its `timezone` setting).
pub fn parse_timestamp(text: &str) -> Option<(i64, bool)> {
    let t = text.trim();
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok()).flatten()
    };
    let (date, rest) = t.split_at_checked(10)?;
    let mut d = date.split('-');
    let (y, mo, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let rest = rest.strip_prefix(' ').or_else(|| rest.strip_prefix('T'))?;
    let (clock, rest) = rest.split_at_checked(8)?;
    let mut c = clock.split(':');
    let (hh, mi, ss) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            let (f, z) = r.split_at(digits);
            if f.is_empty() || f.len() > 9 {
                return None;
            }
            let micros = format!("{f:0<6}");
            (num(&micros[..6])?, z.trim_start())
        }
        None => (0, rest.trim_start()),
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || hh > 23 || mi > 59 || ss > 60 {
        return None;
    }
    let offset = match zone {
        "" => None,
        "Z" | "UTC" => Some(0),
        z => {
            let sign = match z.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let z = &z[1..];
            let (h, m) = match z.split_once(':') {
                Some((h, m)) => (num(h)?, num(m)?),
                None if z.len() == 4 => (num(&z[..2])?, num(&z[2..])?),
                None if z.len() <= 2 => (num(z)?, 0),
                None => return None,
            };
            Some(sign * (h * 3600 + m * 60))
        }
    };
    let secs = days_from_civil(y, mo, day) * 86_400 + hh * 3600 + mi * 60 + ss - offset.unwrap_or(0);
    Some((secs * 1_000_000 + frac, offset.is_some()))
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Howard Hinnant's days-to-civil conversion (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl BackupLabel {
    /// The label of a full backup started at `unix_seconds`.
    pub fn full(unix_seconds: i64) -> Self {
        Self(format!("{}F", timestamp_text(unix_seconds)))
    }

    /// The label of a diff or incr backup on top of the full backup `full`.
    pub fn dependent(full: &BackupLabel, kind: BackupType, unix_seconds: i64) -> Self {
        Self(format!("{}_{}{}", full.full_part(), timestamp_text(unix_seconds), kind.letter()))
    }

    pub fn backup_type(&self) -> BackupType {
        match self.0.as_bytes().last() {
            Some(b'D') => BackupType::Diff,
            Some(b'I') => BackupType::Incr,
            _ => BackupType::Full,
        }
    }

    /// The label of the full backup this one descends from (itself for a full).
    pub fn full_part(&self) -> &str {
        &self.0[..16]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// When the backup started: its label's last time stamp, as unix seconds.
    pub fn started_at(&self) -> Option<i64> {
        let s = self.0.get(self.0.len().checked_sub(16)?..self.0.len() - 1)?;
        let text = format!("{}-{}-{} {}:{}:{}", &s[0..4], &s[4..6], &s[6..8], &s[9..11], &s[11..13], &s[13..15]);
        parse_timestamp(&text).map(|(micros, _)| micros.div_euclid(1_000_000))
    }
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15 && b[8] == b'-' && b.iter().enumerate().all(|(i, c)| i == 8 || c.is_ascii_digit())
}

impl FromStr for BackupLabel {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            FormatError::invalid(
                "backup label",
                format!("{s:?} is not like 20261121-101500F or 20261121-101500F_20261122-030000I"),
            )
        };
        // Byte slicing below is safe only on ASCII (a fuzzer found the multi-byte case).
        let ok = s.is_ascii()
            && match s.len() {
                16 => is_stamp(&s[..15]) && s.ends_with('F'),
                33 => {
                    is_stamp(&s[..15])
                        && &s[15..17] == "F_"
                        && is_stamp(&s[17..32])
                        && (s.ends_with('D') || s.ends_with('I'))
                }
                _ => false,
            };
        if ok { Ok(Self(s.to_string())) } else { Err(bad()) }
    }
}

impl fmt::Display for BackupLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for BackupLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BackupLabel({})", self.0)
    }
}

serde_as_text!(BackupLabel);

#[cfg(test)]
mod tests {

    #[test]
    fn parses_target_times() {
        let base = 1_700_000_000i64; // 2023-11-14 22:13:20 UTC
        assert_eq!(parse_timestamp("2023-11-14 22:13:20"), Some((base * 1_000_000, false)));
        assert_eq!(parse_timestamp("2023-11-14 22:13:20.5+00"), Some((base * 1_000_000 + 500_000, true)));
        assert_eq!(parse_timestamp("2023-11-15 00:13:20.000001+02:00"), Some((base * 1_000_000 + 1, true)));
        assert_eq!(parse_timestamp("2023-11-14T17:13:20-0500"), Some((base * 1_000_000, true)));
        assert_eq!(parse_timestamp("2023-11-14 22:13:20Z"), Some((base * 1_000_000, true)));
        for bad in ["", "yesterday", "2023-13-01 00:00:00", "2023-11-14", "2023-11-14 22:13", "2023-11-14 22:13:20 CET"]
        {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        let [y, m, d, ..] = civil_time(base);
        assert_eq!(days_from_civil(y, m, d), base.div_euclid(86_400));
        // A label's own time: the full's, or the dependent's last stamp.
        let full = BackupLabel::full(base);
        assert_eq!(full.started_at(), Some(base));
        assert_eq!(BackupLabel::dependent(&full, BackupType::Incr, base + 3600).started_at(), Some(base + 3600));
    }

    use super::*;

    #[test]
    fn labels_like_pgbackrest() {
        // 2026-11-21 10:15:00 UTC
        let t = 1_795_256_100;
        let full = BackupLabel::full(t);
        assert_eq!(full.to_string(), "20261121-101500F");
        let incr = BackupLabel::dependent(&full, BackupType::Incr, t + 86_400 + 3_600);
        assert_eq!(incr.to_string(), "20261121-101500F_20261122-111500I");
        assert_eq!(incr.backup_type(), BackupType::Incr);
        assert_eq!(incr.full_part(), "20261121-101500F");
        assert_eq!(incr.as_str().parse::<BackupLabel>().ok(), Some(incr.clone()));
        assert!(full < incr);
        assert_eq!(timestamp_text(0), "19700101-000000");
        assert_eq!(timestamp_text(951_782_400), "20000229-000000");
    }

    #[test]
    fn rejects_other_text() {
        for bad in [
            "",
            "20261121-101500",
            "20261121-101500X",
            "2026112a-101500F",
            "20261121-101500F_20261122-111500F",
            "latest",
        ] {
            assert!(bad.parse::<BackupLabel>().is_err(), "{bad:?}");
        }
    }
}
