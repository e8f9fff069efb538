//! Golden objects of format version 1: every build must keep decoding them, forever.
//!
//! `PGSTRATA_WRITE_FIXTURES=1 cargo test -p pgstrata-repo-format --test golden` writes them anew;
//! only do that when adding a fixture, never to make a failing decode pass.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use pgstrata_repo_format::meta::{
    BackupCatalog, BackupSettings, CatalogEntry, CipherInfo, DbEntry, DirEntry, FileData, FileEntry, ManifestEntry,
    ManifestHeader, ManifestWriter, MetaKind, Ownership, PartRef, StanzaInfo, Target, decode_meta, encode_meta,
    open_meta, read_manifest, seal_meta,
};
use pgstrata_repo_format::pg::{ControlFile, TimelineId, WalPageHeader};
use pgstrata_repo_format::{
    BackupType, BlobEncoder, BlobSettings, Compression, DataKey, KdfParams, Sha256Digest, WrappedKey, decode_blob,
    encode_blob,
};

const PASSPHRASE: &[u8] = b"pgstrata fixture passphrase";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| b"pgstrata golden fixture 0123456789\n"[i % 35] ^ ((i / 35) % 7) as u8).collect()
}

struct BlobCase {
    file: &'static str,
    settings: BlobSettings,
    len: usize,
    encrypted: bool,
}

const CASES: [BlobCase; 5] = [
    BlobCase {
        file: "plain.blob",
        settings: BlobSettings { compression: Compression::None, frame_size: 4096 },
        len: 10_000,
        encrypted: false,
    },
    BlobCase {
        file: "zstd-multiframe.blob",
        settings: BlobSettings { compression: Compression::Zstd(3), frame_size: 4096 },
        len: 20_000,
        encrypted: false,
    },
    BlobCase {
        file: "lz4.blob",
        settings: BlobSettings { compression: Compression::Lz4, frame_size: 65_536 },
        len: 10_000,
        encrypted: false,
    },
    BlobCase {
        file: "empty.blob",
        settings: BlobSettings { compression: Compression::Zstd(3), frame_size: 4096 },
        len: 0,
        encrypted: false,
    },
    BlobCase {
        file: "encrypted-multiframe.blob",
        settings: BlobSettings { compression: Compression::Zstd(3), frame_size: 4096 },
        len: 20_000,
        encrypted: true,
    },
];

fn stanza_info(key: &DataKey) -> StanzaInfo {
    StanzaInfo {
        stanza: "db".into(),
        created: 1_795_256_100,
        cipher: CipherInfo::Aes256Gcm { key: WrappedKey::wrap(key, PASSPHRASE, KdfParams::TEST).unwrap() },
        db_history: vec![DbEntry {
            id: 1,
            system_id: 7_710_611_319_148_304_303,
            pg_version: 15,
            catalog_version: 202_209_061,
            control_version: 1300,
        }],
    }
}

fn manifest_header() -> ManifestHeader {
    ManifestHeader {
        label: "20261121-101500F".parse().unwrap(),
        backup_type: BackupType::Full,
        prior: None,
        references: vec![],
        pg_version: 15,
        system_id: 7_710_611_319_148_304_303,
        db_id: 1,
        timeline: TimelineId(1),
        lsn_start: "0/2000028".parse().unwrap(),
        lsn_stop: "0/2000138".parse().unwrap(),
        wal_start: "000000010000000000000002".into(),
        wal_stop: "000000010000000000000002".into(),
        timestamp_start: 1_795_256_100,
        timestamp_stop: 1_795_256_103,
        settings: BackupSettings {
            compress_type: "zst".into(),
            compress_level: Some(3),
            cipher: "none".into(),
            frame_size: 1 << 20,
            checksum_page: true,
        },
        targets: vec![Target {
            name: "pg_data".into(),
            path: "/pgdata/pg15".into(),
            tablespace_oid: None,
            tablespace_name: None,
        }],
        packs: 1,
        databases: vec![],
        read_from: Vec::new(),
        wal_copy: Vec::new(),
    }
}

fn manifest_entries() -> Vec<ManifestEntry> {
    let owner = Ownership { mode: 0o600, user: Some("postgres".into()), group: Some("postgres".into()) };
    vec![
        ManifestEntry::Dir(DirEntry { path: "pg_data".into(), owner: Ownership { mode: 0o700, ..owner.clone() } }),
        ManifestEntry::File(FileEntry {
            path: "pg_data/PG_VERSION".into(),
            size: 3,
            mtime: 1_795_000_000,
            owner,
            sha256: Sha256Digest::of(b"15\n"),
            chunks: vec![Sha256Digest::of(b"15\n")],
            data: FileData::Stored { parts: vec![PartRef { pack: 0, offset: 0, len: 51, plain_len: 3 }] },
            page_errors: vec![],
            page_digests: Default::default(),
        }),
    ]
}

fn write_all() {
    let out = dir().join("format/v1");
    std::fs::create_dir_all(&out).unwrap();
    let key = DataKey::generate();
    std::fs::write(out.join("stanza.info"), encode_meta(MetaKind::StanzaInfo, &stanza_info(&key)).unwrap()).unwrap();
    for case in &CASES {
        let mut enc = BlobEncoder::new(case.settings, case.encrypted.then_some(&key)).unwrap();
        let mut bytes = Vec::new();
        enc.write(&pattern(case.len), &mut bytes);
        enc.finish(&mut bytes);
        std::fs::write(out.join(case.file), bytes).unwrap();
    }
    let mut manifest = Vec::new();
    let mut w = ManifestWriter::new(&manifest_header(), &mut manifest).unwrap();
    for e in manifest_entries() {
        w.push(&e, &mut manifest).unwrap();
    }
    let manifest_sha256 = w.finish(&mut manifest).unwrap();
    // Stored as a repository stores them: the manifest in an encrypted blob, the catalog in a
    // compressed one.
    let settings = BlobSettings { compression: Compression::Zstd(3), frame_size: 1 << 20 };
    let (sealed_manifest, _) = encode_blob(&manifest, settings, Some(&key)).unwrap();
    std::fs::write(out.join("backup.manifest"), sealed_manifest).unwrap();
    let h = manifest_header();
    let catalog = BackupCatalog {
        backups: vec![CatalogEntry {
            label: h.label.clone(),
            backup_type: h.backup_type,
            prior: None,
            references: vec![],
            db_id: 1,
            timeline: h.timeline,
            timestamp_start: h.timestamp_start,
            timestamp_stop: h.timestamp_stop,
            lsn_start: h.lsn_start,
            lsn_stop: h.lsn_stop,
            wal_start: h.wal_start.clone(),
            wal_stop: h.wal_stop.clone(),
            size: 3,
            delta: 3,
            repo_size: 51,
            repo_delta: 51,
            error: false,
            pgstrata_version: "0.1.0".into(),
            manifest_sha256,
            keep: false,
            annotation: Default::default(),
        }],
    };
    std::fs::write(out.join("backup.catalog"), seal_meta(MetaKind::BackupCatalog, &catalog, settings, None).unwrap())
        .unwrap();
}

#[test]
fn golden_v1_objects_decode() {
    if std::env::var("PGSTRATA_WRITE_FIXTURES").is_ok_and(|v| v == "1") {
        write_all();
    }
    let v1 = dir().join("format/v1");
    let read = |name: &str| std::fs::read(v1.join(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"));

    let info: StanzaInfo = decode_meta(&read("stanza.info"), MetaKind::StanzaInfo, "stanza.info").unwrap();
    assert_eq!(info.db_history[0].system_id, 7_710_611_319_148_304_303);
    let CipherInfo::Aes256Gcm { key: wrapped } = &info.cipher else { panic!("fixture stanza is not encrypted") };
    let key = wrapped.unwrap_key(PASSPHRASE).unwrap();
    assert!(wrapped.unwrap_key(b"not the fixture passphrase").is_err());

    for case in &CASES {
        let bytes = read(case.file);
        let plain = decode_blob(&bytes, case.file, case.encrypted.then_some(&key)).unwrap();
        assert_eq!(plain, pattern(case.len), "{}", case.file);
    }

    let manifest = decode_blob(&read("backup.manifest"), "backup.manifest", Some(&key)).unwrap();
    let (header, entries) = read_manifest(&manifest, "backup.manifest").unwrap();
    assert_eq!(header, manifest_header());
    assert_eq!(entries, manifest_entries());
    let catalog: BackupCatalog =
        open_meta(&read("backup.catalog"), MetaKind::BackupCatalog, "backup.catalog", None).unwrap();
    assert_eq!(catalog.backups[0].manifest_sha256, Sha256Digest::of(&manifest));
}

#[test]
fn recorded_pg15_control_file_and_wal_page_parse() {
    let pg = dir().join("pg");
    let control = ControlFile::parse(&std::fs::read(pg.join("pg_control-15")).unwrap(), "pg_control").unwrap();
    let text = std::fs::read_to_string(pg.join("pg_controldata-15.txt")).unwrap();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)).map(|v| v.trim_start_matches(':').trim().to_string()).unwrap()
    };
    assert_eq!(control.system_identifier.to_string(), field("Database system identifier"));
    assert_eq!(control.checkpoint.to_string(), field("Latest checkpoint location"));
    assert_eq!(control.redo.to_string(), field("Latest checkpoint's REDO location"));
    assert_eq!(control.pg_version, 15);
    let wal = WalPageHeader::parse(&std::fs::read(pg.join("wal-first-page-15")).unwrap(), "wal").unwrap();
    assert_eq!(wal.system_identifier, control.system_identifier);
}

/// `pg_control` and the first WAL page written by a real server of each other major 13–18
/// (`initdb --data-checksums`, a checkpoint), checked against what that server's own SQL
/// functions said (`control-values.txt`).
#[test]
fn recorded_control_files_and_wal_pages_of_every_major_parse() {
    let pg = dir().join("pg");
    let values = std::fs::read_to_string(pg.join("control-values.txt")).unwrap();
    let mut seen = Vec::new();
    for line in values.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let f: Vec<&str> = line.split('|').collect();
        let major: u32 = f[0].parse().unwrap();
        let control =
            ControlFile::parse(&std::fs::read(pg.join(format!("pg_control-{major}"))).unwrap(), "pg_control").unwrap();
        assert_eq!(control.pg_version, major);
        assert_eq!(control.system_identifier.to_string(), f[1], "{major}");
        assert_eq!(control.control_version.to_string(), f[2], "{major}");
        assert_eq!(control.catalog_version.to_string(), f[3], "{major}");
        assert_eq!(control.checkpoint.to_string(), f[4], "{major}");
        assert_eq!(control.redo.to_string(), f[5], "{major}");
        assert_eq!(control.timeline.0.to_string(), f[6], "{major}");
        assert_eq!(control.data_checksum_version.to_string(), f[7], "{major}");
        let wal =
            WalPageHeader::parse(&std::fs::read(pg.join(format!("wal-first-page-{major}"))).unwrap(), "wal").unwrap();
        assert_eq!(wal.system_identifier, control.system_identifier, "{major}");
        assert_eq!(wal.pg_version, major);
        seen.push(major);
    }
    assert_eq!(seen, [13, 14, 16, 17, 18]);
}
