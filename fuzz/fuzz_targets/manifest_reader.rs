//! Arbitrary bytes as a manifest stream: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgstrata_repo_format::meta::ManifestReader;

fuzz_target!(|data: &[u8]| {
    let mut r = ManifestReader::new("fuzz");
    for piece in data.chunks(97) {
        r.feed(piece);
        while let Ok(Some(_)) = r.poll() {}
    }
    let _ = r.finish();
});
