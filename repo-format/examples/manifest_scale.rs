//! Streams a manifest of N files (default 1,000,000) through the writer and the reader, flushing
//! and feeding in 1 MiB pieces, and prints the manifest size and the process's peak memory:
//! memory must not grow with the number of files.
//!
//! `cargo run --release -p pgstrata-repo-format --example manifest_scale -- 1000000`

use pgstrata_repo_format::meta::{
    BackupSettings, FileData, FileEntry, ManifestEntry, ManifestHeader, ManifestReader, ManifestWriter, Ownership,
    PartRef,
};
use pgstrata_repo_format::pg::TimelineId;
use pgstrata_repo_format::{BackupType, Sha256Digest};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1_000_000);
    let header = ManifestHeader {
        label: "20261121-101500F".parse()?,
        backup_type: BackupType::Full,
        prior: None,
        references: vec![],
        pg_version: 15,
        system_id: 1,
        db_id: 1,
        timeline: TimelineId(1),
        lsn_start: "0/2000028".parse()?,
        lsn_stop: "0/2000138".parse()?,
        wal_start: "000000010000000000000002".into(),
        wal_stop: "000000010000000000000002".into(),
        timestamp_start: 0,
        timestamp_stop: 0,
        settings: BackupSettings {
            compress_type: "zst".into(),
            compress_level: Some(3),
            cipher: "none".into(),
            frame_size: 1 << 20,
            checksum_page: true,
        },
        targets: vec![],
        packs: 1,
        databases: vec![],
        read_from: Vec::new(),
        wal_copy: Vec::new(),
    };
    let mut out = Vec::with_capacity(2 << 20);
    let mut stream = Vec::new(); // what a reader would receive, fed back in 1 MiB pieces below
    let mut reader = ManifestReader::new("scale");
    let mut read = 0u64;
    let mut total = 0u64;
    let mut writer = ManifestWriter::new(&header, &mut out)?;
    let digest = Sha256Digest::of(b"content");
    for i in 0..n {
        let entry = ManifestEntry::File(FileEntry {
            path: format!("pg_data/base/16384/{:010}", i),
            size: 8192,
            mtime: 1_795_000_000,
            owner: Ownership { mode: 0o600, user: Some("postgres".into()), group: Some("postgres".into()) },
            sha256: digest,
            chunks: vec![digest],
            data: FileData::Stored { parts: vec![PartRef { pack: 0, offset: i * 100, len: 100, plain_len: 8192 }] },
            page_errors: vec![],
            page_digests: Default::default(),
        });
        writer.push(&entry, &mut out)?;
        if out.len() >= 1 << 20 {
            total += out.len() as u64;
            stream.clear();
            stream.append(&mut out);
            reader.feed(&stream);
            while reader.poll()?.is_some() {
                read += 1;
            }
        }
    }
    writer.finish(&mut out)?;
    total += out.len() as u64;
    reader.feed(&out);
    while reader.poll()?.is_some() {
        read += 1;
    }
    reader.finish()?;
    assert_eq!(read, n);
    println!(
        "{n} files: manifest {:.1} MiB, peak RSS {:.1} MiB",
        total as f64 / 1048576.0,
        peak_rss_kib() as f64 / 1024.0
    );
    Ok(())
}
