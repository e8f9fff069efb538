//! Arbitrary bytes as pg_control and as a WAL segment's first page: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgstrata_repo_format::pg::{ControlFile, WalPageHeader};

fuzz_target!(|data: &[u8]| {
    let _ = ControlFile::parse(data, "fuzz");
    let _ = WalPageHeader::parse(data, "fuzz");
    // Also with a valid CRC over whatever came in, to reach the field parsing.
    if data.len() >= 292 {
        let mut fixed = data.to_vec();
        let crc = pgstrata_repo_format::pg::crc32c(&fixed[..288]);
        fixed[288..292].copy_from_slice(&crc.to_le_bytes());
        let _ = ControlFile::parse(&fixed, "fuzz");
    }
});
