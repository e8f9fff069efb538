//! The files of a backup pgBackRest made, read as pgBackRest stores them: a file's own object
//! (`<label>/<path>.gz`), its place in a bundle (`<label>/bundle/<id>` at an offset, "raw"
//! when the manifest says so), or — block incremental — its block map at the end of its stored
//! bytes and each block in the super block the map names, in this backup or an earlier one of
//! the manifest's `backup-reference` list; decrypted with the manifest's passphrase,
//! decompressed, and checked against the size and SHA-1 the manifest records. Memory per file
//! read is one buffer of [`READ`] bytes, or one super block and one block map (each at most
//! [`MAX_PIECE`]), whatever the file's size. Reads run on a blocking thread; the store is
//! reached through the runtime's handle.

use std::io::Write;

use pgstrata_repo_format::pgbackrest::blockmap;
use pgstrata_repo_format::pgbackrest::manifest::{self as pgb, Manifest};
use pgstrata_repo_format::pgbackrest::stream::{Decoder, Sha1Writer, decode_all};
use pgstrata_storage::RepoStore;

use crate::error::{CliError, CliResult, ErrorCode};

/// Bytes of stored data read at a time.
pub const READ: u64 = 4 << 20;
/// The largest block map or super block read (pgBackRest's block sizes are at most a few MiB).
pub const MAX_PIECE: u64 = 64 << 20;

/// Reads the files of one backup.
#[derive(Debug)]
pub struct Reader {
    store: RepoStore,
    stanza: String,
    pub manifest: Manifest,
    handle: tokio::runtime::Handle,
}

fn corrupt(m: &Manifest, why: String) -> CliError {
    CliError::new(ErrorCode::Format, format!("pgBackRest's backup {}: {why}", m.label))
}

impl Reader {
    /// Called within the runtime.
    pub fn new(store: &RepoStore, stanza: &str, manifest: Manifest) -> Self {
        Self { store: store.clone(), stanza: stanza.to_string(), manifest, handle: tokio::runtime::Handle::current() }
    }

    /// Writes `file`'s content into `out` (on a blocking thread) and checks its size and
    /// SHA-1; an empty file reads nothing.
    pub fn read(&self, file: &pgb::FileEntry, out: &mut dyn Write) -> CliResult<()> {
        if file.size == 0 {
            return Ok(());
        }
        let mut writer = Sha1Writer::with_limit(out, file.size);
        match file.block_incr {
            Some(bi) => self.read_blocks(file, bi, &mut writer)?,
            None => self.read_stored(file, &mut writer)?,
        }
        let (_, sha1, len) = writer.finish();
        let m = &self.manifest;
        if len != file.size {
            return Err(corrupt(m, format!("{} reads as {len} bytes, the manifest says {}", file.name, file.size)));
        }
        match &file.checksum {
            Some(expected) if *expected != sha1 => Err(corrupt(
                m,
                format!("{}: the SHA-1 of its content is {sha1}, the manifest says {expected}", file.name),
            )),
            _ => Ok(()),
        }
    }

    fn key(&self, relative: &str) -> String {
        format!("backup/{}/{relative}", self.stanza)
    }

    fn get(&self, key: &str, range: std::ops::Range<u64>) -> CliResult<bytes::Bytes> {
        Ok(self.handle.block_on(self.store.get_range(key, range))?)
    }

    /// A file stored whole or in a bundle: decrypted and decompressed as it streams in.
    fn read_stored<W: Write>(&self, file: &pgb::FileEntry, out: &mut W) -> CliResult<()> {
        let m = &self.manifest;
        let key = self.key(&m.file_object(file));
        let bundled = file.bundle_id.is_some_and(|b| b != 0);
        let raw = bundled && m.bundle_raw;
        let start = if bundled { file.bundle_offset } else { 0 };
        let end = start
            .checked_add(file.size_repo)
            .ok_or_else(|| corrupt(m, format!("{}: repo-size overflows", file.name)))?;
        let mut decoder = Decoder::new(m.cipher_pass.as_deref().map(str::as_bytes), raw, &m.compress_type, out)?;
        let mut at = start;
        while at < end {
            let next = end.min(at.saturating_add(READ));
            let bytes = self.get(&key, at..next)?;
            decoder.update(&bytes, &key)?;
            at = next;
        }
        decoder.finish(&key)?;
        Ok(())
    }

    /// A block-incremental file: its map read from the end of its stored bytes, then each block
    /// taken from the super block the map names, in file order.
    fn read_blocks<W: Write>(&self, file: &pgb::FileEntry, bi: pgb::BlockIncr, out: &mut W) -> CliResult<()> {
        let m = &self.manifest;
        let pass = m.cipher_pass.as_deref().map(str::as_bytes);
        let bad = |why: &str| corrupt(m, format!("{}: {why}", file.name));
        if bi.size == 0 || bi.size > MAX_PIECE || bi.map_size > MAX_PIECE || bi.map_size > file.size_repo {
            return Err(bad("block size or map size out of range"));
        }
        let key = self.key(&m.file_object(file));
        let start = if file.bundle_id.is_some_and(|b| b != 0) { file.bundle_offset } else { 0 };
        let map_at = start.checked_add(file.size_repo - bi.map_size).ok_or_else(|| bad("map offset overflows"))?;
        let stored_map = self.get(&key, map_at..map_at + bi.map_size)?;
        let map = decode_all(&stored_map, pass, true, "none", MAX_PIECE as usize, &key)?;
        let blocks = file.size.div_ceil(bi.size);
        let checksum_size = usize::try_from(bi.checksum_size).map_err(|_| bad("checksum size"))?;
        // The super block last decoded: the blocks of one are mostly consecutive in the map.
        let mut current: Option<((u32, u64, u64), Vec<u8>)> = None;
        let mut i = 0u64;
        let named = blockmap::for_each(&map, bi.size, checksum_size, blocks, |item| {
            let id = (item.reference, item.bundle_id, item.offset);
            if current.as_ref().map(|(k, _)| *k) != Some(id) {
                let label = m.references.get(item.reference as usize).ok_or_else(|| {
                    bad(&format!("its block map names reference {} of {}", item.reference, m.references.len()))
                })?;
                if item.size > MAX_PIECE || item.super_block_size > MAX_PIECE {
                    return Err(bad("a super block is larger than any pgBackRest writes"));
                }
                let object = self.key(&Manifest::block_object(label, &file.name, item.bundle_id));
                let end = item.offset.checked_add(item.size).ok_or_else(|| bad("super block offset overflows"))?;
                let stored = self.get(&object, item.offset..end)?;
                let plain = decode_all(&stored, pass, true, &m.compress_type, item.super_block_size as usize, &object)?;
                current = Some((id, plain));
            }
            let Some((_, plain)) = &current else { return Ok(()) };
            let want = bi.size.min(file.size - i * bi.size) as usize;
            let from = usize::try_from(item.block.saturating_mul(bi.size)).map_err(|_| bad("block number"))?;
            let block = plain.get(from..from.saturating_add(want)).ok_or_else(|| {
                bad(&format!("block {} of a super block of {} bytes is not there", item.block, plain.len()))
            })?;
            out.write_all(block).map_err(|e| bad(&format!("write: {e}")))?;
            i += 1;
            Ok(())
        })?;
        if named != blocks {
            return Err(bad(&format!("its block map names {named} blocks, the file has {blocks}")));
        }
        Ok(())
    }
}
