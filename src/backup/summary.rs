//! Incrementals that read only what changed, from PostgreSQL's WAL summaries (17 and later,
//! `summarize_wal = on`). The server's WAL summarizer records, for each range of WAL, which
//! blocks of which relation forks were modified, and how short each relation was truncated to
//! (its limit block); a database created by copying files is recorded as a whole. Between the
//! prior backup's start LSN and this backup's start LSN on one timeline, a block of a main fork
//! that no WAL record touched, below its limit and within the prior's copy, is the prior's
//! block: it is mapped to the prior, not read. Everything the summaries cannot vouch for is read
//! as before: a file the prior lacks, a database created since, a relation truncated below the
//! segment, new pages past the prior's copy, and every case where the summaries are not whole
//! (a gap in the range, another timeline, summaries removed or `summarize_wal` off at some
//! point), or too many to hold: then no file is read by summary, and an INFO line says why.
//!
//! Facts from PostgreSQL's own incremental backup (`basebackup_incremental.c`): the special
//! entry of relation number 0 marks a database created in the range; the free-space map is not
//! WAL-logged (only main forks are read by summary here).

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use pgstrata_repo_format::pg::{Lsn, TimelineId};

use crate::error::{CliError, CliResult, ErrorCode};

/// Default tablespace and shared (global) tablespace oids.
const DEFAULT_TABLESPACE: u32 = 1663;
const GLOBAL_TABLESPACE: u32 = 1664;

/// At most this many changed blocks, relations and databases are held (a few bytes each): past
/// it the summaries are not used, whatever the cluster's size.
pub const MAX_BLOCKS: usize = 4 << 20;

/// How long the backup waits for the summarizer to reach its start.
const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A relation file: tablespace, database (0 for shared relations) and relfilenode.
pub type RelFile = (u32, u32, u32);

/// What changed in one main fork over the range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelChange {
    /// The shortest length it was truncated to (blocks), if it was.
    pub limit: Option<u32>,
    /// Modified blocks, sorted, each once.
    pub blocks: Vec<u32>,
}

/// The main-fork changes between the prior backup's start and this backup's start.
#[derive(Debug, Default)]
pub struct Changes {
    rels: HashMap<RelFile, RelChange>,
    /// Databases (tablespace, database) created in the range.
    created: HashSet<(u32, u32)>,
}

/// Which pages of one segment file a backup must read.
#[derive(Debug, PartialEq, Eq)]
pub enum ToRead {
    /// The summaries cannot vouch for the file: read it as without them.
    Whole,
    /// These pages (file-relative, sorted); every other page is the prior's.
    Pages(Vec<u32>),
}

impl Changes {
    /// The pages of segment file `path` (a manifest path) to read: the file has `pages` pages
    /// now and had `prior_pages` in the prior; its first block is `first_block`.
    pub fn to_read(&self, path: &str, first_block: u32, pages: u32, prior_pages: u32) -> ToRead {
        let Some((spc, db, rel)) = rel_file(path) else { return ToRead::Whole };
        if self.created.contains(&(spc, db)) {
            return ToRead::Whole;
        }
        let change = self.rels.get(&(spc, db, rel));
        // Pages past the prior's copy, or at or past where the relation was truncated to, are
        // read whatever the summaries say of them.
        let mut keep_below = prior_pages.min(pages);
        if let Some(limit) = change.and_then(|c| c.limit) {
            if limit <= first_block {
                return ToRead::Whole;
            }
            keep_below = keep_below.min(limit - first_block);
        }
        let end = first_block.saturating_add(pages);
        let mut read: Vec<u32> = change
            .map(|c| {
                let from = c.blocks.partition_point(|b| *b < first_block);
                c.blocks[from..].iter().take_while(|b| **b < end).map(|b| b - first_block).collect()
            })
            .unwrap_or_default();
        read.retain(|p| *p < keep_below);
        read.extend(keep_below..pages);
        ToRead::Pages(read)
    }

    /// Changed blocks held.
    pub fn blocks(&self) -> usize {
        self.rels.values().map(|c| c.blocks.len()).sum()
    }

    pub fn relations(&self) -> usize {
        self.rels.len()
    }

    /// Adds one row of `pg_wal_summary_contents` (main fork only); `false` when the budget is
    /// spent.
    fn add(&mut self, (spc, db, rel): RelFile, block: u32, is_limit: bool, held: &mut usize) -> bool {
        // Every entry counts against the budget: blocks, relations, databases.
        if rel == 0 {
            *held += usize::from(self.created.insert((spc, db)));
            return *held <= MAX_BLOCKS;
        }
        let change = self.rels.entry((spc, db, rel)).or_insert_with(|| {
            *held += 1;
            RelChange::default()
        });
        if is_limit {
            change.limit = Some(change.limit.map_or(block, |l| l.min(block)));
        } else {
            change.blocks.push(block);
            *held += 1;
        }
        *held <= MAX_BLOCKS
    }

    fn finish(&mut self) {
        for c in self.rels.values_mut() {
            c.blocks.sort_unstable();
            c.blocks.dedup();
        }
    }
}

/// The tablespace, database and relfilenode of a main-fork segment's manifest path
/// (`pg_data/base/5/16384.2`, `pg_data/global/1262`, `pg_tblspc/16400/PG_17_.../5/16401`).
pub fn rel_file(path: &str) -> Option<RelFile> {
    let parts: Vec<&str> = path.split('/').collect();
    let num = |s: &str| s.parse::<u32>().ok();
    let rel = |file: &str| num(file.split('.').next().unwrap_or(""));
    match parts.as_slice() {
        ["pg_data", "base", db, file] => Some((DEFAULT_TABLESPACE, num(db)?, rel(file)?)),
        ["pg_data", "global", file] => Some((GLOBAL_TABLESPACE, 0, rel(file)?)),
        ["pg_tblspc", spc, version, db, file] if version.starts_with("PG_") => Some((num(spc)?, num(db)?, rel(file)?)),
        _ => None,
    }
}

/// Why the summaries were not used, for the INFO line.
pub type NotUsed = String;

/// The changes between `from` (the prior's start) and `to` (this backup's start) on
/// `timeline`, read from the server's WAL summaries; `Err` says why they cannot be used.
pub async fn changes(
    client: &tokio_postgres::Client,
    version_num: i32,
    timeline: TimelineId,
    (from, to): (Lsn, Lsn),
) -> CliResult<Result<Changes, NotUsed>> {
    if version_num < 170_000 {
        return Ok(Err("PostgreSQL before 17 has no WAL summaries".into()));
    }
    let q =
        |e: tokio_postgres::Error| CliError::new(ErrorCode::DbQuery, format!("unable to read the WAL summaries: {e}"));
    let on: String =
        client.query_one("select current_setting('summarize_wal')", &[]).await.map_err(q)?.try_get(0).map_err(q)?;
    if on != "on" {
        return Ok(Err("summarize_wal is off".into()));
    }
    // The summarizer must have summarized up to this backup's start.
    let began = std::time::Instant::now();
    loop {
        let row = client
            .query_one("select summarized_tli::int8, summarized_lsn::text from pg_get_wal_summarizer_state()", &[])
            .await
            .map_err(q)?;
        let (tli, lsn): (i64, String) = (row.try_get(0).map_err(q)?, row.try_get(1).map_err(q)?);
        let lsn: Lsn = lsn.parse()?;
        if i64::from(timeline.0) == tli && lsn >= to {
            break;
        }
        if began.elapsed() > WAIT {
            return Ok(Err(format!(
                "the WAL summarizer did not reach {to} in {} s (it is at {lsn} on timeline {tli})",
                WAIT.as_secs()
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let rows = client
        .query(
            "select start_lsn::text, end_lsn::text from pg_available_wal_summaries() \
             where tli = $1 and end_lsn > $2::text::pg_lsn and start_lsn < $3::text::pg_lsn order by start_lsn",
            &[&i64::from(timeline.0), &from.to_string(), &to.to_string()],
        )
        .await
        .map_err(q)?;
    let mut ranges = Vec::with_capacity(rows.len());
    for r in &rows {
        let (s, e): (String, String) = (r.try_get(0).map_err(q)?, r.try_get(1).map_err(q)?);
        ranges.push((s.parse::<Lsn>()?, e.parse::<Lsn>()?));
    }
    if let Some(gap) = gap(&ranges, from, to) {
        return Ok(Err(format!("the WAL summaries of timeline {} do not cover {gap}", timeline.0)));
    }
    let mut changes = Changes::default();
    let mut held = 0usize;
    for (start, end) in ranges {
        let stream = client
            .query_raw(
                "select reltablespace::int8, reldatabase::int8, relfilenode::int8, relblocknumber, is_limit_block \
                 from pg_wal_summary_contents($1, $2::text::pg_lsn, $3::text::pg_lsn) where relforknumber = 0",
                [
                    &i64::from(timeline.0) as &(dyn tokio_postgres::types::ToSql + Sync),
                    &start.to_string(),
                    &end.to_string(),
                ],
            )
            .await
            .map_err(q)?;
        let mut stream = std::pin::pin!(stream);
        while let Some(row) = stream.next().await {
            let row = row.map_err(q)?;
            let oid = |i: usize| -> CliResult<u32> {
                let v: i64 = row.try_get(i).map_err(q)?;
                u32::try_from(v).map_err(|_| CliError::new(ErrorCode::DbQuery, format!("a WAL summary names oid {v}")))
            };
            let block: i64 = row.try_get(3).map_err(q)?;
            let Ok(block) = u32::try_from(block) else {
                return Ok(Err(format!("a WAL summary names block {block}")));
            };
            let is_limit: bool = row.try_get(4).map_err(q)?;
            if !changes.add((oid(0)?, oid(1)?, oid(2)?), block, is_limit, &mut held) {
                return Ok(Err(format!("the WAL summaries name more than {MAX_BLOCKS} changed blocks")));
            }
        }
    }
    changes.finish();
    Ok(Ok(changes))
}

/// The first stretch of `from..to` no range covers, if any (`ranges` sorted by start).
fn gap(ranges: &[(Lsn, Lsn)], from: Lsn, to: Lsn) -> Option<String> {
    let mut covered = from;
    for (start, end) in ranges {
        if *start > covered {
            return Some(format!("{covered}..{start}"));
        }
        covered = covered.max(*end);
        if covered >= to {
            return None;
        }
    }
    (covered < to).then(|| format!("{covered}..{to}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(rels: &[(RelFile, Option<u32>, &[u32])], created: &[(u32, u32)]) -> Changes {
        let mut c = Changes::default();
        for (rel, limit, blocks) in rels {
            c.rels.insert(*rel, RelChange { limit: *limit, blocks: blocks.to_vec() });
        }
        c.created.extend(created.iter().copied());
        c
    }

    #[test]
    fn paths_name_their_relation() {
        assert_eq!(rel_file("pg_data/base/5/16384"), Some((1663, 5, 16384)));
        assert_eq!(rel_file("pg_data/base/5/16384.3"), Some((1663, 5, 16384)));
        assert_eq!(rel_file("pg_data/global/1262"), Some((1664, 0, 1262)));
        assert_eq!(rel_file("pg_tblspc/16400/PG_17_202406281/5/16401.1"), Some((16400, 5, 16401)));
        assert_eq!(rel_file("pg_data/base/5/16384_fsm"), None);
        assert_eq!(rel_file("pg_data/pg_xact/0000"), None);
    }

    #[test]
    fn only_changed_new_and_truncated_pages_are_read() {
        let rel = (1663, 5, 16384);
        let c = changes(&[(rel, None, &[3, 7, 131_075])], &[]);
        // Segment 0 of 10 pages, the prior had 8: pages 3 and 7, and the new 8 and 9.
        assert_eq!(c.to_read("pg_data/base/5/16384", 0, 10, 8), ToRead::Pages(vec![3, 7, 8, 9]));
        // Segment 1 (first block 131072): block 131075 is its page 3.
        assert_eq!(c.to_read("pg_data/base/5/16384.1", 131_072, 10, 10), ToRead::Pages(vec![3]));
        // A relation no WAL touched: nothing, but what is new.
        assert_eq!(c.to_read("pg_data/base/5/99999", 0, 4, 4), ToRead::Pages(vec![]));
        assert_eq!(c.to_read("pg_data/base/5/99999", 0, 6, 4), ToRead::Pages(vec![4, 5]));
        // Shorter than the prior: nothing past its end.
        assert_eq!(c.to_read("pg_data/base/5/16384", 0, 5, 8), ToRead::Pages(vec![3]));
        // Truncated to 5 blocks, then grown: pages from 5 on are read.
        let t = changes(&[(rel, Some(5), &[1])], &[]);
        assert_eq!(t.to_read("pg_data/base/5/16384", 0, 8, 8), ToRead::Pages(vec![1, 5, 6, 7]));
        // Truncated below the segment's start, or in a database created since: whole.
        assert_eq!(t.to_read("pg_data/base/5/16384.1", 131_072, 8, 8), ToRead::Whole);
        let d = changes(&[], &[(1663, 5)]);
        assert_eq!(d.to_read("pg_data/base/5/16384", 0, 8, 8), ToRead::Whole);
        assert_eq!(d.to_read("pg_data/base/6/16384", 0, 8, 8), ToRead::Pages(vec![]));
    }

    #[test]
    fn a_gap_in_the_summaries_is_found() {
        let l = |v: u64| Lsn(v);
        assert_eq!(gap(&[(l(0), l(100))], l(10), l(90)), None);
        assert_eq!(gap(&[(l(0), l(50)), (l(50), l(100))], l(10), l(90)), None);
        assert!(gap(&[(l(0), l(50)), (l(60), l(100))], l(10), l(90)).is_some());
        assert!(gap(&[(l(20), l(100))], l(10), l(90)).is_some());
        assert!(gap(&[(l(0), l(50))], l(10), l(90)).is_some());
        assert!(gap(&[], l(10), l(90)).is_some());
    }

    #[test]
    fn the_budget_bounds_what_is_held() {
        let mut c = Changes::default();
        let mut held = MAX_BLOCKS - 2;
        assert!(c.add((1663, 5, 1), 1, false, &mut held), "a relation and its block");
        assert!(!c.add((1663, 5, 1), 2, false, &mut held));
        let mut held = MAX_BLOCKS;
        assert!(!c.add((1663, 5, 0), 0, true, &mut held), "a created database counts too");
    }
}
