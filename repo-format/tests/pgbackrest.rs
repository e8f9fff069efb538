//! pgBackRest's own files, as pgBackRest 2.59.1 wrote them (`fixtures/pgbackrest/2.59.1`, made by
//! `fixtures/pgbackrest/make-fixtures.sh`: a PostgreSQL 15 cluster archiving into two
//! repositories, one unencrypted, one with `repo1-cipher-type=aes-256-cbc` and the passphrase
//! `fixture passphrase`; gz, pgBackRest's default): read back with pgstrata's reader.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::PathBuf;

use pgstrata_repo_format::FormatError;
use pgstrata_repo_format::pg::{WalPageHeader, wal_magic_for_version};
use pgstrata_repo_format::pgbackrest::{ArchiveInfo, InfoFile, decrypt_cbc, encrypt_cbc, sha1_hex};

const PASS: &[u8] = b"fixture passphrase";
const SEGMENT: &str = "000000010000000000000002";
const SEGMENT_SHA1: &str = "66d3a4d085368defd3de3cca97dd899b6a5d4af8";

fn fixture(kind: &str, name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pgbackrest/2.59.1").join(kind).join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data).read_to_end(&mut out).expect("gzip");
    out
}

#[test]
fn archive_info_is_read_and_its_checksum_checked() {
    let text = String::from_utf8(fixture("plain", "archive.info")).unwrap();
    let info = ArchiveInfo::parse(&text, "archive.info").unwrap();
    assert_eq!(info.current.id, 1);
    assert_eq!(info.current.version, "15");
    assert_eq!(info.current.archive_id(), "15-1");
    assert_eq!(info.history, vec![info.current.clone()]);
    assert_eq!(info.cipher_pass, None);
    assert_eq!(info.backrest_version.as_deref(), Some("2.59.1"));
    // Any value changed: the checksum no longer matches.
    let tampered = text.replace("db-id=1", "db-id=2");
    let e = InfoFile::parse(&tampered, "archive.info").unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    let e = InfoFile::parse(&text.replace("backrest-checksum", "backrest-checksumx"), "x").unwrap_err();
    assert!(e.to_string().contains("no checksum"), "{e}");
    // backup.info has the same shape and its own checksum.
    let backup = InfoFile::parse(&String::from_utf8(fixture("plain", "backup.info")).unwrap(), "backup.info").unwrap();
    assert_eq!(backup.get_u64("db", "db-catalog-version"), Some(202_209_061));
    assert_eq!(backup.get_u64("db", "db-system-id"), Some(info.current.system_id));
}

#[test]
fn an_encrypted_repository_is_read_with_its_passphrase_and_the_archives() {
    let sealed = fixture("cbc", "archive.info");
    let e = decrypt_cbc(&sealed, b"not the passphrase", "archive.info").unwrap_err();
    assert!(matches!(e, FormatError::WrongPassphrase), "{e}");
    let text = String::from_utf8(decrypt_cbc(&sealed, PASS, "archive.info").unwrap()).unwrap();
    let info = ArchiveInfo::parse(&text, "archive.info").unwrap();
    let sub = info.cipher_pass.expect("the archive's passphrase");
    // The segment: encrypted under the archive's passphrase, then gzip; the same WAL as the
    // unencrypted repository's, which its name's SHA-1 vouches for.
    let name = format!("{SEGMENT}-{SEGMENT_SHA1}.gz");
    let wal = gunzip(&decrypt_cbc(&fixture("cbc", &name), sub.as_bytes(), &name).unwrap());
    let plain = gunzip(&fixture("plain", &name));
    assert_eq!(wal.len(), 16 << 20);
    assert_eq!(wal, plain);
    assert_eq!(sha1_hex(&wal), SEGMENT_SHA1);
    let header = WalPageHeader::parse(&wal, SEGMENT).unwrap();
    assert_eq!(header.system_identifier, info.current.system_id);
    assert_eq!(Some(header.magic), wal_magic_for_version(15));
    // The backup's info, under the repository's passphrase too.
    let backup = decrypt_cbc(&fixture("cbc", "backup.info"), PASS, "backup.info").unwrap();
    assert!(
        InfoFile::parse(&String::from_utf8(backup).unwrap(), "backup.info")
            .unwrap()
            .get("cipher", "cipher-pass")
            .is_some()
    );
}

#[test]
fn encryption_round_trips_as_openssl_salted_aes_256_cbc() {
    for len in [0usize, 1, 15, 16, 17, 1000] {
        let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let sealed = encrypt_cbc(&plain, PASS, *b"saltsalt");
        assert_eq!(&sealed[..8], b"Salted__");
        assert_eq!((sealed.len() - 16) % 16, 0);
        assert_eq!(decrypt_cbc(&sealed, PASS, "x").unwrap(), plain);
    }
    assert!(decrypt_cbc(b"plain text, not encrypted", PASS, "x").is_err());
}
