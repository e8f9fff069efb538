//! Frame seal/open throughput per codec, with and without encryption, next to the raw codec on
//! the same data. Data: generated PostgreSQL-heap-like 8 KiB pages (header, line pointers,
//! tuples of ints, timestamps, numeric text and words, a free-space hole), none repeated.
//!
//! `cargo bench -p pgstrata-repo-format --bench frames`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgstrata_repo_format::{BlobSettings, Compression, DataKey, decode_blob, encode_blob};

const TOTAL: usize = 16 << 20;
const CHUNK: usize = 1 << 20;

fn heap_like_pages(total: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
        "mike", "november", "oscar", "papa",
    ];
    let mut out = Vec::with_capacity(total);
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut id = 1u64;
    while out.len() < total {
        let mut page = vec![0u8; 8192];
        page[0..8].copy_from_slice(&(0x1_0000_0000u64 + next() % 0xFFFF_FFFF).to_le_bytes());
        let hole = 8192 * (5 + (next() % 11) as usize) / 100;
        let mut at = 24 + 4 * 60;
        let end = 8192 - hole;
        while at + 80 < end {
            page[at..at + 23].copy_from_slice(&[0x17; 23]);
            at += 23;
            page[at..at + 8].copy_from_slice(&id.to_le_bytes());
            id += 1;
            at += 8;
            page[at..at + 8].copy_from_slice(&(1_795_000_000_000_000u64 + id * 997).to_le_bytes());
            at += 8;
            let num = format!("{}.{:02}", next() % 100_000, next() % 100);
            page[at..at + num.len()].copy_from_slice(num.as_bytes());
            at += num.len();
            for _ in 0..(2 + next() % 6) {
                let w = WORDS[(next() % 16) as usize].as_bytes();
                if at + w.len() + 1 >= end {
                    break;
                }
                page[at..at + w.len()].copy_from_slice(w);
                at += w.len() + 1;
            }
        }
        out.extend_from_slice(&page);
    }
    out.truncate(total);
    out
}

fn codecs() -> [(&'static str, Compression); 4] {
    [
        ("none", Compression::None),
        ("lz4", Compression::Lz4),
        ("zstd-1", Compression::Zstd(1)),
        ("zstd-3", Compression::Zstd(3)),
    ]
}

fn raw_compress(c: Compression, data: &[u8]) -> Vec<Vec<u8>> {
    data.chunks(CHUNK)
        .map(|chunk| match c {
            Compression::None => chunk.to_vec(),
            Compression::Lz4 => lz4_flex::block::compress(chunk),
            Compression::Zstd(level) => zstd::bulk::compress(chunk, level).unwrap(),
            // gz and bz2 exist for configurations carried over from pgBackRest; not benched.
            Compression::Gzip(_) | Compression::Bzip2(_) => unreachable!("not in codecs()"),
        })
        .collect()
}

fn raw_decompress(c: Compression, chunks: &[Vec<u8>]) -> usize {
    chunks
        .iter()
        .map(|chunk| match c {
            Compression::None => black_box(chunk.to_vec()).len(),
            Compression::Lz4 => lz4_flex::block::decompress(chunk, CHUNK).unwrap().len(),
            Compression::Zstd(_) => zstd::bulk::decompress(chunk, CHUNK).unwrap().len(),
            Compression::Gzip(_) | Compression::Bzip2(_) => unreachable!("not in codecs()"),
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let data = heap_like_pages(TOTAL);
    let key = DataKey::generate();
    let mut seal = c.benchmark_group("seal");
    seal.throughput(Throughput::Bytes(TOTAL as u64));
    for (name, comp) in codecs() {
        seal.bench_function(format!("raw-{name}"), |b| b.iter(|| black_box(raw_compress(comp, &data))));
        let settings = BlobSettings { compression: comp, frame_size: CHUNK };
        seal.bench_function(format!("frame-{name}"), |b| {
            b.iter(|| black_box(encode_blob(&data, settings, None).unwrap()))
        });
        seal.bench_function(format!("frame-{name}-aes"), |b| {
            b.iter(|| black_box(encode_blob(&data, settings, Some(&key)).unwrap()))
        });
    }
    seal.finish();

    let mut open = c.benchmark_group("open");
    open.throughput(Throughput::Bytes(TOTAL as u64));
    for (name, comp) in codecs() {
        let raw = raw_compress(comp, &data);
        open.bench_function(format!("raw-{name}"), |b| b.iter(|| black_box(raw_decompress(comp, &raw))));
        let settings = BlobSettings { compression: comp, frame_size: CHUNK };
        let (plain_blob, summary) = encode_blob(&data, settings, None).unwrap();
        let (aes_blob, _) = encode_blob(&data, settings, Some(&key)).unwrap();
        eprintln!("{name}: ratio {:.2}", summary.plain_len as f64 / summary.stored_len as f64);
        open.bench_function(format!("frame-{name}"), |b| {
            b.iter(|| black_box(decode_blob(&plain_blob, "b", None).unwrap()))
        });
        open.bench_function(format!("frame-{name}-aes"), |b| {
            b.iter(|| black_box(decode_blob(&aes_blob, "b", Some(&key)).unwrap()))
        });
    }
    open.finish();
}

criterion_group! {
    name = frames;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(frames);
