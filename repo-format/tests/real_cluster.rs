//! Checks the PostgreSQL parsers against a real cluster made by `initdb --data-checksums`.
//!
//! Needs PostgreSQL's binaries (`PGSTRATA_PG_BIN`, default `/usr/lib/postgresql/15/bin`). Under a
//! plain `cargo test` the test is skipped when they are missing; with `PGSTRATA_REQUIRE_SERVERS=1`
//! (set by `scripts/test.sh`) a missing or failing PostgreSQL is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use pgstrata_repo_format::pg::{BLCKSZ, ControlFile, PageVerdict, WalPageHeader, verify_page};

fn pg_bin() -> PathBuf {
    PathBuf::from(std::env::var("PGSTRATA_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()))
}

fn required() -> bool {
    std::env::var("PGSTRATA_REQUIRE_SERVERS").is_ok_and(|v| v == "1")
}

/// Runs a PostgreSQL tool, as the `postgres` OS user when we are root (initdb refuses root).
fn run_pg(tool: &str, args: &[&str]) -> std::process::Output {
    let bin = pg_bin().join(tool);
    let is_root = Command::new("id").arg("-u").output().map(|o| o.stdout == b"0\n").unwrap_or(false);
    let mut cmd = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.args(args).env("LC_ALL", "C").output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
}

fn initdb() -> Option<Cluster> {
    if !pg_bin().join("initdb").exists() {
        assert!(!required(), "PostgreSQL binaries not found in {}", pg_bin().display());
        eprintln!("skipping: no PostgreSQL binaries in {}", pg_bin().display());
        return None;
    }
    let dir = tempfile::Builder::new().prefix("pgstrata-initdb-").tempdir().unwrap();
    // Let the postgres user write into the temp dir.
    let _ = Command::new("chmod").arg("0777").arg(dir.path()).status();
    let data = dir.path().join("data");
    let out = run_pg("initdb", &["--data-checksums", "-A", "trust", "-U", "postgres", "-D", data.to_str().unwrap()]);
    assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    let _ = Command::new("chmod").args(["-R", "a+rX"]).arg(&data).status();
    Some(Cluster { _dir: dir, data })
}

fn controldata_field(data: &Path, field: &str) -> String {
    let out = run_pg("pg_controldata", &[data.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim_start_matches(':').trim().to_string()))
        .unwrap_or_else(|| panic!("{field} not in pg_controldata output"))
}

#[test]
fn real_cluster_pages_control_file_and_wal_header() {
    let Some(cluster) = initdb() else { return };

    // pg_control: identity equals pg_controldata's.
    let control_bytes = std::fs::read(cluster.data.join("global/pg_control")).unwrap();
    let control = ControlFile::parse(&control_bytes, "pg_control").expect("pg_control parses");
    let sysid: u64 = controldata_field(&cluster.data, "Database system identifier").parse().unwrap();
    assert_eq!(control.system_identifier, sysid);
    let catalog: u32 = controldata_field(&cluster.data, "Catalog version number").parse().unwrap();
    assert_eq!(control.catalog_version, catalog);
    let major: u32 = std::fs::read_to_string(cluster.data.join("PG_VERSION")).unwrap().trim().parse().unwrap();
    assert_eq!(control.pg_version, major);
    assert_eq!(control.checkpoint.to_string(), controldata_field(&cluster.data, "Latest checkpoint location"));
    assert_eq!(control.data_checksum_version, 1);
    assert_eq!(control.wal_segment_size, 16 << 20);
    assert_eq!(control.blcksz as usize, BLCKSZ);

    // Every page of every relation file: the checksum we compute equals pd_checksum.
    let mut checked = 0usize;
    let mut with_data = 0usize;
    for dir in ["global", "base/1", "base/4", "base/5"] {
        for entry in std::fs::read_dir(cluster.data.join(dir)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let numeric = name.split('_').next().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
            if !numeric || name.contains('.') {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(bytes.len() % BLCKSZ, 0, "{} is not whole pages", path.display());
            for (blkno, page) in bytes.chunks_exact(BLCKSZ).enumerate() {
                let page: &[u8; BLCKSZ] = page.try_into().unwrap();
                match verify_page(page, blkno as u32, true) {
                    PageVerdict::Valid(_) => with_data += 1,
                    PageVerdict::New => {}
                    other => panic!("{} block {blkno}: {other:?}", path.display()),
                }
                checked += 1;
            }
        }
    }
    assert!(with_data > 500, "only {with_data} pages with data checked of {checked}");

    // A flipped byte is caught.
    let bytes = std::fs::read(cluster.data.join("global/1262")).unwrap();
    let mut page: [u8; BLCKSZ] = bytes[..BLCKSZ].try_into().unwrap();
    page[BLCKSZ - 100] ^= 0x10;
    assert!(matches!(verify_page(&page, 0, true), PageVerdict::ChecksumMismatch { .. }));

    // The WAL segment initdb left: long header names this cluster.
    let wal = std::fs::read(cluster.data.join("pg_wal/000000010000000000000001")).unwrap();
    let header = WalPageHeader::parse(&wal, "first segment").expect("WAL header parses");
    assert_eq!(header.system_identifier, sysid);
    assert_eq!(header.pg_version, major);
    assert_eq!(header.segment_size, 16 << 20);
    assert_eq!(header.timeline.0, 1);
}
