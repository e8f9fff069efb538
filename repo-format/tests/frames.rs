//! Frame properties: random round-trips in random chunkings, tampering, keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pgstrata_repo_format::frame::{BLOB_HEADER_LEN, FRAME_HEADER_LEN};
use pgstrata_repo_format::{
    BlobDecoder, BlobEncoder, BlobSettings, Compression, DataKey, FormatError, KdfParams, Sha256Digest, WrappedKey,
    decode_blob,
};
use proptest::prelude::*;

/// Compressible but not trivial: words with numbers, like table data.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let word = ["alpha ", "beta ", "gamma ", "delta ", "1234 ", "\n"][(x % 6) as usize];
        out.extend_from_slice(word.as_bytes());
        if x.is_multiple_of(5) {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(len);
    out
}

fn encode_in_chunks(data: &[u8], settings: BlobSettings, key: Option<&DataKey>, chunk: usize) -> Vec<u8> {
    let mut enc = BlobEncoder::new(settings, key).unwrap();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        enc.write(piece, &mut out);
    }
    let summary = enc.finish(&mut out);
    assert_eq!(summary.plain_len, data.len() as u64);
    assert_eq!(summary.plain_sha256, Some(Sha256Digest::of(data)));
    assert_eq!(summary.stored_len, out.len() as u64);
    assert_eq!(summary.stored_sha256, Sha256Digest::of(&out));
    assert_eq!(summary.chunk_sha256.len(), data.len().div_ceil(settings.frame_size));
    for (digest, chunk) in summary.chunk_sha256.iter().zip(data.chunks(settings.frame_size)) {
        assert_eq!(*digest, Sha256Digest::of(chunk));
    }
    out
}

fn decode_in_chunks(blob: &[u8], key: Option<&DataKey>, chunk: usize) -> Result<Vec<u8>, FormatError> {
    let mut dec = BlobDecoder::new("test blob", key);
    let mut out = Vec::new();
    for piece in blob.chunks(chunk.max(1)) {
        dec.feed(piece);
        while let Some(frame) = dec.poll()? {
            out.extend_from_slice(&frame);
        }
    }
    let summary = dec.finish()?;
    assert_eq!(summary.plain_len, out.len() as u64);
    Ok(out)
}

fn compression_strategy() -> impl Strategy<Value = Compression> {
    prop_oneof![
        Just(Compression::None),
        Just(Compression::Lz4),
        (1i32..=5).prop_map(Compression::Zstd),
        (0u32..=9).prop_map(Compression::Gzip),
        (1u32..=9).prop_map(Compression::Bzip2),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn round_trip_any_data_any_chunking(
        len in 0usize..200_000,
        seed in any::<u64>(),
        random_bytes in any::<bool>(),
        frame_size in 1usize..70_000,
        compression in compression_strategy(),
        encrypt in any::<bool>(),
        write_chunk in 1usize..100_000,
        read_chunk in 1usize..100_000,
    ) {
        let data = if random_bytes {
            (0..len).map(|i| (seed.wrapping_mul(i as u64 + 1) >> 24) as u8).collect()
        } else {
            sample(len, seed)
        };
        let key = encrypt.then(DataKey::generate);
        let settings = BlobSettings { compression, frame_size };
        let blob = encode_in_chunks(&data, settings, key.as_ref(), write_chunk);
        let back = decode_in_chunks(&blob, key.as_ref(), read_chunk).unwrap();
        prop_assert_eq!(&back, &data);
        // The in-place decoder of whole blobs agrees with the streaming one.
        let (whole, summary) = pgstrata_repo_format::decode_blob_with_summary(&blob, "b", key.as_ref()).unwrap();
        prop_assert_eq!(&whole, &data);
        prop_assert_eq!(summary.chunk_sha256.len(), data.len().div_ceil(frame_size));
        // So does the parallel one, digests included, whatever the thread count.
        let threads = 1 + (seed % 5) as usize;
        let (par, par_summary) =
            pgstrata_repo_format::decode_blob_parallel(&blob, "b", key.as_ref(), threads, u64::MAX).unwrap();
        prop_assert_eq!(&par, &data);
        prop_assert_eq!(&par_summary.chunk_sha256, &summary.chunk_sha256);
        prop_assert_eq!(par_summary.frames, summary.frames);
        // Sealed by several sealers in any order (as threads do), then put in index order: the
        // same format, every frame in its place.
        let sealers = 1 + (seed % 4) as usize;
        let parallel = seal_out_of_order(&data, settings, key.as_ref(), sealers);
        prop_assert_eq!(decode_in_chunks(&parallel, key.as_ref(), read_chunk).unwrap(), data.clone());
        prop_assert_eq!(pgstrata_repo_format::decode_blob(&parallel, "p", key.as_ref()).unwrap(), data.clone());
        prop_assert_eq!(frame_offsets(&parallel).len(), frame_offsets(&blob).len());
        // Compressed without a key (on a database host), sealed under the key afterwards: the
        // same data and frame digests, and a blob the same size as one encoded with the key.
        let plain_blob = encode_in_chunks(&data, settings, None, write_chunk);
        let sealed = pgstrata_repo_format::seal_compressed(plain_blob, "s", key.as_ref()).unwrap();
        let (resealed, resealed_summary) =
            pgstrata_repo_format::decode_blob_with_summary(&sealed, "s", key.as_ref()).unwrap();
        prop_assert_eq!(&resealed, &data);
        prop_assert_eq!(&resealed_summary.chunk_sha256, &summary.chunk_sha256);
        prop_assert_eq!(sealed.len(), blob.len());
    }
}

/// A [`ParallelBlob`] sealed last frame first, frame `i` by sealer `i % sealers`.
fn seal_out_of_order(data: &[u8], settings: BlobSettings, key: Option<&DataKey>, sealers: usize) -> Vec<u8> {
    let blob = pgstrata_repo_format::ParallelBlob::new(settings, key).unwrap();
    let frames: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(blob.frame_size()).collect() };
    assert_eq!(frames.len() as u64, blob.frame_count(data.len() as u64));
    let mut handles: Vec<_> = (0..sealers).map(|_| blob.sealer().unwrap()).collect();
    let mut sealed = vec![Vec::new(); frames.len()];
    for i in (0..frames.len()).rev() {
        handles[i % sealers].seal(i as u64, frames[i], i + 1 == frames.len(), &mut sealed[i]);
    }
    let mut out = blob.header_bytes().to_vec();
    out.extend(sealed.concat());
    out
}

fn frame_offsets(blob: &[u8]) -> Vec<(usize, usize)> {
    let mut frames = Vec::new();
    let mut at = BLOB_HEADER_LEN;
    while at < blob.len() {
        let body = u32::from_le_bytes(blob[at..at + 4].try_into().unwrap()) as usize;
        let end = at + FRAME_HEADER_LEN + body;
        frames.push((at, end));
        at = end;
    }
    frames
}

fn multi_frame_blob(key: Option<&DataKey>) -> (Vec<u8>, Vec<u8>) {
    let data = sample(24_000, 7);
    let settings = BlobSettings { compression: Compression::Zstd(1), frame_size: 4096 };
    (encode_in_chunks(&data, settings, key, 50_000), data)
}

#[test]
fn every_flipped_byte_is_detected() {
    let key = DataKey::generate();
    for key in [None, Some(&key)] {
        let (blob, _) = multi_frame_blob(key);
        let frames = frame_offsets(&blob);
        assert!(frames.len() >= 6);
        for at in 0..blob.len() {
            let mut bad = blob.clone();
            bad[at] ^= 0x01;
            let Err(err) = decode_blob(&bad, "blob", key) else { panic!("flip at {at} went unnoticed") };
            assert!(
                pgstrata_repo_format::decode_blob_parallel(&bad, "blob", key, 3, u64::MAX).is_err(),
                "flip at {at} went unnoticed by the parallel decoder"
            );
            if key.is_none() {
                // An unencrypted blob from another host is checked before it is sealed here.
                let key = DataKey::generate();
                assert!(
                    pgstrata_repo_format::seal_compressed(bad.clone(), "blob", Some(&key)).is_err(),
                    "flip at {at} went unnoticed when sealing"
                );
            }
            let in_body = frames.iter().any(|&(start, end)| at >= start + FRAME_HEADER_LEN && at < end);
            if in_body {
                assert!(matches!(err, FormatError::Corrupt { .. }), "flip in a frame body at {at}: {err}");
            }
        }
    }
}

#[test]
fn swapped_frames_are_detected() {
    let key = DataKey::generate();
    for key in [None, Some(&key)] {
        let (blob, _) = multi_frame_blob(key);
        let frames = frame_offsets(&blob);
        let (a, b) = (frames[1], frames[2]);
        let mut swapped = blob[..a.0].to_vec();
        swapped.extend_from_slice(&blob[b.0..b.1]);
        swapped.extend_from_slice(&blob[a.0..a.1]);
        swapped.extend_from_slice(&blob[b.1..]);
        let Err(err) = decode_blob(&swapped, "blob", key) else { panic!("swap went unnoticed") };
        assert!(pgstrata_repo_format::decode_blob_parallel(&swapped, "blob", key, 2, u64::MAX).is_err());
        assert!(matches!(err, FormatError::Corrupt { .. }), "{err}");
    }
}

#[test]
fn frames_moved_between_blobs_are_detected() {
    let key = DataKey::generate();
    let (one, _) = multi_frame_blob(Some(&key));
    let (two, _) = multi_frame_blob(Some(&key));
    let f1 = frame_offsets(&one);
    let f2 = frame_offsets(&two);
    let mut mixed = one[..f1[1].0].to_vec();
    mixed.extend_from_slice(&two[f2[1].0..f2[1].1]);
    mixed.extend_from_slice(&one[f1[1].1..]);
    assert!(matches!(decode_blob(&mixed, "blob", Some(&key)), Err(FormatError::Corrupt { .. })));
}

#[test]
fn dropped_last_frame_and_any_cut_are_truncation() {
    let key = DataKey::generate();
    for key in [None, Some(&key)] {
        let (blob, _) = multi_frame_blob(key);
        let frames = frame_offsets(&blob);
        let (last_start, _) = *frames.last().unwrap();
        let Err(err) = decode_blob(&blob[..last_start], "blob", key) else { panic!("dropped frame unnoticed") };
        assert!(matches!(err, FormatError::Truncated { .. }), "{err}");
        for cut in (0..blob.len()).step_by(97) {
            let Err(err) = decode_blob(&blob[..cut], "blob", key) else { panic!("cut at {cut} unnoticed") };
            assert!(matches!(err, FormatError::Truncated { .. }), "cut at {cut}: {err}");
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(matches!(decode_blob(&longer, "blob", key), Err(FormatError::Corrupt { .. })));
    }
}

#[test]
fn keys_are_checked_with_distinct_errors() {
    let key = DataKey::generate();
    let other = DataKey::generate();
    let (blob, data) = multi_frame_blob(Some(&key));
    assert_eq!(decode_blob(&blob, "blob", Some(&key)).unwrap(), data);
    assert!(matches!(decode_blob(&blob, "blob", Some(&other)), Err(FormatError::KeyMismatch { .. })));
    assert!(matches!(decode_blob(&blob, "blob", None), Err(FormatError::KeyRequired { .. })));
    // A plain object where an encrypted one is expected is refused, not trusted.
    let (plain, _) = multi_frame_blob(None);
    assert!(matches!(decode_blob(&plain, "blob", Some(&key)), Err(FormatError::Corrupt { .. })));

    let wrapped = WrappedKey::wrap(&key, b"right passphrase", KdfParams::TEST).unwrap();
    let err = wrapped.unwrap_key(b"wrong passphrase").unwrap_err();
    assert!(matches!(err, FormatError::WrongPassphrase), "{err}");
    let unwrapped = wrapped.unwrap_key(b"right passphrase").unwrap();
    assert_eq!(decode_blob(&blob, "blob", Some(&unwrapped)).unwrap(), data);
}

#[test]
fn incompressible_frames_are_stored_raw() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let settings = BlobSettings { compression: Compression::Zstd(3), frame_size: 32 * 1024 };
    let blob = encode_in_chunks(&data, settings, None, 100_000);
    // Header + 4 frame headers + the data itself: no expansion beyond framing.
    assert!(blob.len() <= data.len() + BLOB_HEADER_LEN + 4 * FRAME_HEADER_LEN);
    assert_eq!(decode_blob(&blob, "blob", None).unwrap(), data);
}

#[test]
fn every_codec_shrinks_text_and_stores_noise_raw() {
    let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let text: Vec<u8> = (0..100_000u32).map(|i| b"pgstrata "[i as usize % 9]).collect();
    for compression in [Compression::Lz4, Compression::Zstd(3), Compression::Gzip(6), Compression::Bzip2(9)] {
        let settings = BlobSettings { compression, frame_size: 32 * 1024 };
        let blob = encode_in_chunks(&noise, settings, None, 7_000);
        assert!(blob.len() <= noise.len() + BLOB_HEADER_LEN + 4 * FRAME_HEADER_LEN, "{compression:?} expanded");
        assert_eq!(decode_blob(&blob, "blob", None).unwrap(), noise);
        let blob = encode_in_chunks(&text, settings, None, 7_000);
        assert!(blob.len() < text.len() / 10, "{compression:?}: {} bytes", blob.len());
        assert_eq!(decode_blob(&blob, "blob", None).unwrap(), text);
    }
    assert_eq!(Compression::from_option("gz", None).unwrap(), Compression::Gzip(6));
    assert_eq!(Compression::from_option("bz2", None).unwrap(), Compression::Bzip2(9));
    assert!(Compression::from_option("bz2", Some(0)).is_err());
    assert!(Compression::from_option("gz", Some(10)).is_err());
}

#[test]
fn unknown_version_is_named() {
    let (mut blob, _) = multi_frame_blob(None);
    blob[4] = 9;
    let err = decode_blob(&blob, "pack 3", None).unwrap_err();
    assert!(matches!(err, FormatError::UnsupportedVersion { found: 9, .. }), "{err}");
    assert!(err.to_string().contains("pack 3"));
}

#[test]
fn claimed_lengths_are_bounded_before_anything_is_allocated() {
    let key = DataKey::generate();
    for key in [None, Some(&key)] {
        let (blob, plain) = multi_frame_blob(key);
        // Every frame claims the largest plain length: refused as damage (a WAL segment's bound).
        let mut bad = blob.clone();
        for (start, _) in frame_offsets(&blob) {
            bad[start + 4..start + 8].copy_from_slice(&(16u32 << 20).to_le_bytes());
        }
        let err = pgstrata_repo_format::decode_blob_parallel(&bad, "blob", key, 2, 1 << 30).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }), "{err}");
        // What the caller knows the blob holds at most.
        let max = plain.len() as u64 - 1;
        let err = pgstrata_repo_format::decode_blob_parallel(&blob, "blob", key, 2, max).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }) && err.to_string().contains("more than"), "{err}");
        let (decoded, _) = pgstrata_repo_format::decode_blob_parallel(&blob, "blob", key, 2, max + 1).unwrap();
        assert_eq!(decoded, plain);
    }
}
