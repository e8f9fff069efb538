//! Arbitrary bytes as a compressed blob a database host sent (`pg1-host`): its shape read, then
//! sealed under a key and decoded, with the parallel decoder too. Errors, never panics, and
//! no allocation past what the bound allows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgstrata_repo_format::{DataKey, compressed_shape, decode_blob, decode_blob_parallel, seal_compressed};

fuzz_target!(|data: &[u8]| {
    let _ = compressed_shape(data, "fuzz");
    let _ = decode_blob_parallel(data, "fuzz", None, 2, 1 << 24);
    let key = DataKey::from_bytes([7; 32]);
    if let Ok(sealed) = seal_compressed(data.to_vec(), "fuzz", Some(&key)) {
        let plain = decode_blob(&sealed, "fuzz", Some(&key));
        let direct = decode_blob(data, "fuzz", None);
        assert_eq!(plain.is_ok(), direct.is_ok(), "sealing changed whether the blob decodes");
    }
});
