//! Feeds arbitrary bytes, in arbitrary chunks, to the blob decoder with and without a key: it
//! must return errors, never panic, and never allocate beyond its frame limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgstrata_repo_format::{BlobDecoder, DataKey};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else { return };
    let key = DataKey::from_bytes([7u8; 32]);
    for key in [None, Some(&key)] {
        let mut dec = BlobDecoder::new("fuzz", key);
        let chunk = usize::from(split).max(1);
        for piece in rest.chunks(chunk) {
            dec.feed(piece);
            loop {
                match dec.poll() {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
        }
        let _ = dec.finish();
    }
});
