//! Timeline history files (`00000003.history`): for each ancestor timeline, the LSN where the
//! next one branched off it. A line is `<parent tli>\t<switchpoint>\t<reason>`; blank lines and
//! `#` comments are ignored, as PostgreSQL's own reader does.
//!
//! As PostgreSQL (`readTimeLineHistory`), timeline ids must increase and be older than the
//! file's timeline, but switch points need not: a server promoted on a timeline before that
//! timeline's own switch point (recovery of an older backup to an early LSN with a later
//! `recovery_target_timeline`) writes a later switch point before an earlier one. A point
//! belongs to the newest entry whose range holds it (`tliOfPointInHistory`), so an ancestor's
//! WAL counts only up to the smallest switch point at or after its own entry: its effective end.

use super::{Lsn, TimelineId};
use crate::error::{FormatError, Result};

/// One ancestor: WAL of `timeline` is valid up to (not including) `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub timeline: TimelineId,
    pub end: Lsn,
}

/// The parsed history of `timeline`: its ancestors, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineHistory {
    pub timeline: TimelineId,
    pub ancestors: Vec<HistoryEntry>,
}

impl TimelineHistory {
    /// The history of timeline 1, which has no file and no ancestors.
    pub fn first() -> Self {
        Self { timeline: TimelineId(1), ancestors: Vec::new() }
    }

    pub fn parse(timeline: TimelineId, text: &[u8], what: &str) -> Result<Self> {
        let text = std::str::from_utf8(text).map_err(|_| FormatError::invalid(what, "history file is not UTF-8"))?;
        let mut ancestors: Vec<HistoryEntry> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let bad = |why: &str| FormatError::invalid(what, format!("line {}: {why}", n + 1));
            let tli: u32 =
                fields.next().and_then(|f| f.parse().ok()).ok_or_else(|| bad("expected a timeline number"))?;
            let end: Lsn = fields.next().and_then(|f| f.parse().ok()).ok_or_else(|| bad("expected an LSN"))?;
            if let Some(prev) = ancestors.last()
                && tli <= prev.timeline.0
            {
                return Err(bad("timeline ids must increase"));
            }
            if tli >= timeline.0 {
                return Err(bad("an ancestor timeline must be older than the file's timeline"));
            }
            ancestors.push(HistoryEntry { timeline: TimelineId(tli), end });
        }
        Ok(Self { timeline, ancestors })
    }

    /// Where WAL of `tli` stops being part of this history (its effective end: the smallest
    /// switch point from its entry on): `None` when `tli` is this timeline (open-ended) or not
    /// on the path at all (see [`Self::contains`]).
    pub fn end_of(&self, tli: TimelineId) -> Option<Lsn> {
        let at = self.ancestors.iter().position(|a| a.timeline == tli)?;
        self.ancestors[at..].iter().map(|a| a.end).min()
    }

    /// The switch point recorded for `tli` as the file says it (where the next timeline
    /// branched off it), whatever later entries say.
    pub fn switch_point(&self, tli: TimelineId) -> Option<Lsn> {
        self.ancestors.iter().find(|a| a.timeline == tli).map(|a| a.end)
    }

    /// Whether `tli` is this timeline or one of its ancestors.
    pub fn contains(&self, tli: TimelineId) -> bool {
        tli == self.timeline || self.ancestors.iter().any(|a| a.timeline == tli)
    }

    /// Whether a point `lsn` on timeline `tli` lies on this history: the timeline is on the path
    /// and the point comes before it branched off.
    pub fn includes(&self, tli: TimelineId, lsn: Lsn) -> bool {
        self.contains(tli) && self.end_of(tli).is_none_or(|end| lsn <= end)
    }

    /// The timeline WAL at `lsn` belongs to on this history (PostgreSQL's
    /// `tliOfPointInHistory`: the oldest ancestor whose effective end lies after `lsn`).
    pub fn timeline_at(&self, lsn: Lsn) -> TimelineId {
        self.ancestors
            .iter()
            .find(|a| self.end_of(a.timeline).is_some_and(|end| lsn < end))
            .map_or(self.timeline, |a| a.timeline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_postgres_history() {
        let text = b"1\t0/3000000\tno recovery target specified\n\n2\t0/50000A8\tat restore point \"x\"\n";
        let h = TimelineHistory::parse(TimelineId(3), text, "00000003.history").expect("parse");
        assert_eq!(h.ancestors.len(), 2);
        assert_eq!(h.end_of(TimelineId(1)), Some(Lsn(0x300_0000)));
        assert!(h.includes(TimelineId(1), Lsn(0x200_0000)));
        assert!(!h.includes(TimelineId(1), Lsn(0x400_0000)));
        assert!(h.includes(TimelineId(3), Lsn(u64::MAX)));
        assert!(!h.contains(TimelineId(4)));
        assert_eq!(h.timeline_at(Lsn(0x100)), TimelineId(1));
        assert_eq!(h.timeline_at(Lsn(0x400_0000)), TimelineId(2));
        assert_eq!(h.timeline_at(Lsn(0x600_0000)), TimelineId(3));
    }

    /// The file PostgreSQL writes when F1 (timeline 1) is recovered to 0/4000000 with
    /// `recovery_target_timeline = 2`, whose own switch from 1 was at 0/5000000: it promotes to 3
    /// and records 2's switch point before 1's. PostgreSQL reads it; so must we, with the same
    /// meaning: timeline 1 up to 0/4000000, then 3 (2 holds nothing of this history).
    #[test]
    fn a_switch_point_before_an_earlier_one_is_read_as_postgres_reads_it() {
        let text = b"1\t0/5000000\tno recovery target specified\n2\t0/4000000\tbefore 2000-01-01 00:00:00+00\n";
        let h = TimelineHistory::parse(TimelineId(3), text, "00000003.history").expect("PostgreSQL reads it");
        assert_eq!(h.switch_point(TimelineId(1)), Some(Lsn(0x500_0000)));
        assert_eq!(h.end_of(TimelineId(1)), Some(Lsn(0x400_0000)));
        assert_eq!(h.end_of(TimelineId(2)), Some(Lsn(0x400_0000)));
        assert_eq!(h.timeline_at(Lsn(0x300_0000)), TimelineId(1));
        assert_eq!(h.timeline_at(Lsn(0x400_0000)), TimelineId(3));
        assert_eq!(h.timeline_at(Lsn(0x480_0000)), TimelineId(3));
        assert!(h.includes(TimelineId(1), Lsn(0x300_0000)));
        assert!(!h.includes(TimelineId(1), Lsn(0x480_0000)), "timeline 1 after 3 branched off is not on the path");
        assert!(!h.includes(TimelineId(2), Lsn(0x510_0000)));
        // Every point maps as PostgreSQL's newest-first search of [begin, end) ranges maps it.
        let ranges = [(3u32, 0x400_0000u64, u64::MAX), (2, 0x500_0000, 0x400_0000), (1, 0, 0x500_0000)];
        for lsn in (0..0x600_0000u64).step_by(0x10_0000) {
            let expected = ranges.iter().find(|(_, b, e)| *b <= lsn && lsn < *e).map(|r| r.0).expect("a range");
            assert_eq!(h.timeline_at(Lsn(lsn)).0, expected, "at {lsn:#x}");
        }
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [&b"x\t0/1\tr"[..], b"1\tnope", b"2\t0/1\n1\t0/2", b"3\t0/1", b"1\t0/1\n1\t0/2"] {
            assert!(TimelineHistory::parse(TimelineId(3), bad, "h").is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
