//! The 8 KiB page: its header, PostgreSQL's page checksum, and the sanity check backups use.

use super::Lsn;

/// Page size PostgreSQL is built with by default.
pub const BLCKSZ: usize = 8192;

const N_SUMS: usize = 32;
const FNV_PRIME: u32 = 16_777_619;
/// Seeds of the 32 parallel FNV-1a lanes of PostgreSQL's page checksum (a fixed part of the
/// algorithm: every checksum on disk depends on them).
const CHECKSUM_BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C, 0xF8D4474F,
    0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC,
    0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6,
    0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];
const PD_VALID_FLAG_BITS: u16 = 0x0007;
const MAXALIGN: u16 = 8;

#[inline]
fn mix(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// PostgreSQL's checksum of `page` as block `blkno` of its relation (counting across 1 GiB
/// segments), computed as if `pd_checksum` were zero. Equal to `pd_checksum` on a good page.
pub fn page_checksum(page: &[u8; BLCKSZ], blkno: u32) -> u16 {
    let mut sums = CHECKSUM_BASE_OFFSETS;
    for (row, chunk) in page.chunks_exact(4 * N_SUMS).enumerate() {
        for (lane, word) in chunk.chunks_exact(4).enumerate() {
            let mut value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            // pd_checksum is bytes 8..10: the low half of the third word of the first row.
            if row == 0 && lane == 2 {
                value &= 0xffff_0000;
            }
            sums[lane] = mix(sums[lane], value);
        }
    }
    for _ in 0..2 {
        for sum in &mut sums {
            *sum = mix(*sum, 0);
        }
    }
    let checksum = sums.iter().fold(0u32, |acc, s| acc ^ s) ^ blkno;
    // The result is in 1..=65535; it never equals zero, which means "no checksum".
    ((checksum % 65_535) + 1) as u16
}

/// The fixed fields at the start of every page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub lsn: Lsn,
    pub checksum: u16,
    pub flags: u16,
    pub lower: u16,
    pub upper: u16,
    pub special: u16,
    pub pagesize_version: u16,
}

impl PageHeader {
    /// Reads the header of a page.
    pub fn parse(page: &[u8; BLCKSZ]) -> Self {
        let u16_at = |at: usize| u16::from_le_bytes([page[at], page[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([page[at], page[at + 1], page[at + 2], page[at + 3]]);
        Self {
            lsn: Lsn((u64::from(u32_at(0)) << 32) | u64::from(u32_at(4))),
            checksum: u16_at(8),
            flags: u16_at(10),
            lower: u16_at(12),
            upper: u16_at(14),
            special: u16_at(16),
            pagesize_version: u16_at(18),
        }
    }

    /// PostgreSQL's header sanity check, exactly the one it applies before trusting a page read
    /// (so a page PostgreSQL accepts is never reported as bad).
    pub fn is_sane(&self) -> bool {
        self.flags & !PD_VALID_FLAG_BITS == 0
            && self.lower <= self.upper
            && self.upper <= self.special
            && usize::from(self.special) <= BLCKSZ
            && self.special.is_multiple_of(MAXALIGN)
    }
}

/// What a backup concludes about one page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageVerdict {
    /// All zeros: a page PostgreSQL extended the file with but has not written.
    New,
    /// Header sane and, when checksums are on, checksum correct.
    Valid(PageHeader),
    /// Header fails the sanity check (torn, not a heap/index page, or garbage).
    BadHeader,
    /// Header sane but the checksum differs.
    ChecksumMismatch { stored: u16, computed: u16 },
}

/// Classifies a page; `checksums` says whether the cluster has data checksums on.
pub fn verify_page(page: &[u8; BLCKSZ], blkno: u32, checksums: bool) -> PageVerdict {
    let header = PageHeader::parse(page);
    if header.upper == 0 && page.iter().all(|&b| b == 0) {
        return PageVerdict::New;
    }
    if !header.is_sane() {
        return PageVerdict::BadHeader;
    }
    if checksums {
        let computed = page_checksum(page, blkno);
        if computed != header.checksum {
            return PageVerdict::ChecksumMismatch { stored: header.checksum, computed };
        }
    }
    PageVerdict::Valid(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_page() -> [u8; BLCKSZ] {
        let mut page = [0u8; BLCKSZ];
        page[0..4].copy_from_slice(&1u32.to_le_bytes());
        page[4..8].copy_from_slice(&0x0200_0028u32.to_le_bytes());
        page[12..14].copy_from_slice(&32u16.to_le_bytes());
        page[14..16].copy_from_slice(&8000u16.to_le_bytes());
        page[16..18].copy_from_slice(&8192u16.to_le_bytes());
        page[18..20].copy_from_slice(&0x2004u16.to_le_bytes());
        for (i, b) in page[8000..].iter_mut().enumerate() {
            *b = (i * 7 % 251) as u8;
        }
        page
    }

    #[test]
    fn checksum_ignores_its_own_field_and_depends_on_block_number() {
        let mut page = sample_page();
        let c = page_checksum(&page, 0);
        page[8..10].copy_from_slice(&c.to_le_bytes());
        assert_eq!(page_checksum(&page, 0), c);
        assert_ne!(page_checksum(&page, 1), c);
        assert!(matches!(verify_page(&page, 0, true), PageVerdict::Valid(h) if h.lsn == Lsn(0x1_0200_0028)));
        page[8100] ^= 1;
        assert!(matches!(verify_page(&page, 0, true), PageVerdict::ChecksumMismatch { .. }));
        assert!(matches!(verify_page(&page, 0, false), PageVerdict::Valid(_)));
    }

    #[test]
    fn zero_and_garbage_pages() {
        let zero = [0u8; BLCKSZ];
        assert_eq!(verify_page(&zero, 3, true), PageVerdict::New);
        let mut garbage = sample_page();
        garbage[14..16].copy_from_slice(&10u16.to_le_bytes()); // upper < lower
        assert_eq!(verify_page(&garbage, 0, true), PageVerdict::BadHeader);
    }
}
