//! Page maps of page-level incrementals: which backup holds each 8 KiB page of a relation file,
//! and where in that backup's stored bytes of the file. Pure functions, used by backup (to map
//! the pages it does not store to its prior's) and by restore (to find every page's bytes).
//!
//! A backup stores a file either whole (`stored`: page `n` is at byte `n x 8192` of the parts'
//! plaintext, concatenated) or as pages (`pages`: the stored pages concatenated in page order,
//! and runs mapping every page of the file to the backup that physically holds it and the index
//! among that backup's stored pages of the file). Runs always name the physical holder, so a
//! restore never follows a chain.

use pgstrata_repo_format::BackupLabel;
use pgstrata_repo_format::meta::{FileData, PageRun, PartRef};
use pgstrata_repo_format::pg::{BLCKSZ, Lsn, PageVerdict, verify_page};

/// Whether a backup whose prior started at `since` and had `prior_pages` pages of this file
/// stores page `page_no` (`page`, as read): a page new since the prior, all zeros, with a
/// header that is not a page header (torn, being written), or stamped at or past `since` —
/// every change of a page since the prior started is WAL-logged and stamps it (with
/// `full_page_writes`, a change after this backup started is replayed from WAL anyway).
pub fn must_store(page: &[u8], page_no: u32, prior_pages: u32, since: Lsn) -> bool {
    let Ok(page) = <&[u8; BLCKSZ]>::try_from(page) else { return true };
    if page_no >= prior_pages {
        return true;
    }
    match verify_page(page, 0, false) {
        PageVerdict::Valid(header) => header.lsn >= since,
        PageVerdict::New | PageVerdict::BadHeader | PageVerdict::ChecksumMismatch { .. } => true,
    }
}

/// A page-level file as a restore needs it: its runs, with every backup they name (or the
/// holder, for runs naming none) mapped to that backup's stored bytes of the file.
#[derive(Debug)]
pub struct Paged {
    pub runs: Vec<PageRun>,
    pub sources: std::collections::BTreeMap<BackupLabel, PageSource>,
}

/// One backup's stored bytes of a file: its parts and the digests of their frames (each part's
/// frames in order; see [`first_chunks`]).
#[derive(Debug)]
pub struct PageSource {
    pub parts: Vec<PartRef>,
    pub chunks: Vec<pgstrata_repo_format::Sha256Digest>,
}

/// Pages of a file of `size` bytes (a partial last page counts).
pub fn page_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(BLCKSZ as u64)).unwrap_or(u32::MAX)
}

/// Every page of a file as `holder` stores it (`data`, `size` bytes), with the holder named:
/// the runs a later backup copies for the pages it does not store. `None` for data that holds
/// no pages (empty, or a reference: resolve it to the holder's data first).
pub fn holder_map(holder: &BackupLabel, data: &FileData, size: u64) -> Option<Vec<PageRun>> {
    match data {
        FileData::Stored { .. } => {
            let count = page_count(size);
            Some(if count == 0 {
                vec![]
            } else {
                vec![PageRun { first: 0, count, backup: Some(holder.clone()), at: 0 }]
            })
        }
        FileData::Pages { runs, .. } => Some(
            runs.iter()
                .map(|r| PageRun { backup: Some(r.backup.clone().unwrap_or_else(|| holder.clone())), ..r.clone() })
                .collect(),
        ),
        FileData::Empty | FileData::Same { .. } => None,
    }
}

/// The runs of a file of `pages` pages of which this backup stored `stored` (page numbers,
/// increasing): stored pages map to this backup (`backup: None`) at their index among the
/// stored ones; every other page to where `prior` (a holder map, covering at least those pages)
/// says it is. `None` when `prior` does not cover a page that was not stored.
pub fn runs(stored: &[u32], pages: u32, prior: &[PageRun]) -> Option<Vec<PageRun>> {
    let mut out: Vec<PageRun> = Vec::new();
    let mut push = |page: u32, backup: Option<BackupLabel>, at: u32| {
        if let Some(last) = out.last_mut()
            && last.backup == backup
            && last.first.checked_add(last.count) == Some(page)
            && last.at.checked_add(last.count) == Some(at)
        {
            last.count += 1;
            return;
        }
        out.push(PageRun { first: page, count: 1, backup, at });
    };
    let (mut next_stored, mut prior_run) = (0usize, 0usize);
    for page in 0..pages {
        if stored.get(next_stored) == Some(&page) {
            push(page, None, u32::try_from(next_stored).ok()?);
            next_stored += 1;
            continue;
        }
        while prior.get(prior_run).is_some_and(|r| u64::from(r.first) + u64::from(r.count) <= u64::from(page)) {
            prior_run += 1;
        }
        let run = prior.get(prior_run).filter(|r| r.first <= page)?;
        push(page, run.backup.clone(), run.at.checked_add(page - run.first)?);
    }
    Some(out)
}

/// Where a stored page is: the part (index) of a backup's stored bytes of a file, and the
/// offset of the page in that part's plaintext. `at` is the page's index among the stored
/// pages (its page number for a file stored whole).
pub fn locate(parts: &[PartRef], at: u32) -> Option<(usize, u64)> {
    let mut offset = u64::from(at) * BLCKSZ as u64;
    for (i, part) in parts.iter().enumerate() {
        if offset < part.plain_len {
            return Some((i, offset));
        }
        offset -= part.plain_len;
    }
    None
}

/// The index of the first frame digest of each part, in a list of the parts' frame digests
/// (each part's frames start at its beginning).
pub fn first_chunks(parts: &[PartRef], frame_size: u64) -> Vec<usize> {
    let frame_size = frame_size.max(1);
    let mut at = 0usize;
    parts
        .iter()
        .map(|p| {
            let first = at;
            at += usize::try_from(p.plain_len.div_ceil(frame_size)).unwrap_or(usize::MAX);
            first
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn label(text: &str) -> BackupLabel {
        text.parse().unwrap()
    }

    fn run(first: u32, count: u32, backup: Option<&BackupLabel>, at: u32) -> PageRun {
        PageRun { first, count, backup: backup.cloned(), at }
    }

    fn part(plain_len: u64) -> PartRef {
        PartRef { pack: 0, offset: 0, len: 1, plain_len }
    }

    #[test]
    fn a_file_stored_whole_maps_every_page_to_itself() {
        let full = label("20270115-080000F");
        let data = FileData::Stored { parts: vec![part(5 * 8192)] };
        assert_eq!(holder_map(&full, &data, 5 * 8192).unwrap(), [run(0, 5, Some(&full), 0)]);
        assert!(holder_map(&full, &FileData::Empty, 0).is_none());
    }

    #[test]
    fn runs_take_the_stored_pages_from_this_backup_and_the_rest_from_the_prior() {
        let full = label("20270115-080000F");
        let prior = holder_map(&full, &FileData::Stored { parts: vec![part(6 * 8192)] }, 6 * 8192).unwrap();
        // Pages 1 and 2 changed; the file grew by pages 6 and 7 (new pages are always stored).
        let r = runs(&[1, 2, 6, 7], 8, &prior).unwrap();
        assert_eq!(r, [run(0, 1, Some(&full), 0), run(1, 2, None, 0), run(3, 3, Some(&full), 3), run(6, 2, None, 2)]);
    }

    #[test]
    fn an_incr_on_an_incr_names_the_physical_holders() {
        let (full, incr) = (label("20270115-080000F"), label("20270115-080000F_20270116-080000I"));
        let incr_data = FileData::Pages {
            parts: vec![part(2 * 8192)],
            chunks: vec![],
            runs: vec![run(0, 1, Some(&full), 0), run(1, 2, None, 0), run(3, 1, Some(&full), 3)],
        };
        let prior = holder_map(&incr, &incr_data, 4 * 8192).unwrap();
        assert_eq!(prior[1], run(1, 2, Some(&incr), 0));
        // Now page 2 changed again; the file shrank to 3 pages.
        let r = runs(&[2], 3, &prior).unwrap();
        assert_eq!(r, [run(0, 1, Some(&full), 0), run(1, 1, Some(&incr), 0), run(2, 1, None, 0)]);
        // A page the prior does not cover and this backup did not store: no map.
        assert!(runs(&[], 5, &prior).is_none());
        // A prior map from a damaged manifest whose runs wrap: no map, and no overflow.
        assert!(runs(&[], 3, &[run(0, u32::MAX, Some(&full), u32::MAX)]).is_none());
        assert!(runs(&[], 3, &[run(u32::MAX, u32::MAX, Some(&full), 0)]).is_none());
    }

    #[test]
    fn pages_are_found_in_their_part() {
        let parts = [part(3 * 8192), part(2 * 8192)];
        assert_eq!(locate(&parts, 0), Some((0, 0)));
        assert_eq!(locate(&parts, 3), Some((1, 0)));
        assert_eq!(locate(&parts, 4), Some((1, 8192)));
        assert_eq!(locate(&parts, 5), None);
        assert_eq!(first_chunks(&[part(3 << 20), part(100), part(1 << 20)], 1 << 20), [0, 3, 4]);
    }
}
