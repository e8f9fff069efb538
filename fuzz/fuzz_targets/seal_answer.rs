//! Arbitrary bytes as a database host's answer to `data-seal` (record heads, outcomes as JSON,
//! blobs), taken apart as the repository host does, and each part's account checked against
//! what was asked and the blob sent: errors, never panics, and nothing buffered past the heads'
//! bounds.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgstrata::backup::part::{PartDone, PartSpec, check_received};
use pgstrata::remote::data::take_record;
use pgstrata_repo_format::{BlobSettings, Compression, compressed_shape};

fuzz_target!(|data: &[u8]| {
    let specs = [false, true].map(|main_fork| PartSpec {
        path: "/pgdata/base/5/16384".into(),
        offset: 0,
        len: 8 << 20,
        blob: BlobSettings { compression: Compression::Zstd(3), frame_size: 1 << 20 },
        check_from_block: Some(0),
        start_lsn: 0,
        main_fork,
        pages: None,
        same_as: None,
    });
    let mut received = BytesMut::from(data);
    while let Ok(Some(part)) = take_record(&mut received) {
        if let Ok((blob, answer)) = part {
            let done = PartDone::from(answer);
            let shape = blob.as_deref().and_then(|b| compressed_shape(b, "fuzz").ok());
            for spec in &specs {
                let _ = check_received(spec, &done, shape);
            }
        }
    }
});
