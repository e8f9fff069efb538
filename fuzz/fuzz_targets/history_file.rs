//! Arbitrary bytes as a timeline history file (archived by PostgreSQL, read back from the
//! repository): errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgstrata_repo_format::pg::{TimelineHistory, TimelineId};

fuzz_target!(|data: &[u8]| {
    let timeline = data.first().map_or(2, |b| u32::from(*b).max(2));
    let _ = TimelineHistory::parse(TimelineId(timeline), data, "fuzz.history");
});
