//! The files of a backup pgBackRest made, read as pgBackRest stores them: a file's own object
//! (`<label>/<path>.gz`), its place in a bundle (`<label>/bundle/<id>` at an offset, "raw"
//! when the manifest says so), or — block incremental — its block map at the end of its stored
//! bytes and each block in the super block the map names, in this backup or an earlier one of
//! the manifest's `backup-reference` list; decrypted with the manifest's passphrase,
//! decompressed, and checked against the size and SHA-1 the manifest records. Memory per file
//! read is one buffer of [`READ`] bytes, or — block incremental — [`WINDOWS`] read-ahead
//! windows of [`READ`] bytes, one decoded super block and the block map (each at most
//! [`MAX_PIECE`]), whatever the file's size. Reads run on a blocking thread: a repository on
//! this host's filesystem is read there directly, any other through the runtime's handle.

use std::io::Write;

use pgstrata_repo_format::pgbackrest::blockmap;
use pgstrata_repo_format::pgbackrest::manifest::{self as pgb, Manifest};
use pgstrata_repo_format::pgbackrest::stream::{Decoder, Sha1Writer, decode_all};
use pgstrata_storage::RepoStore;

use crate::error::{CliError, CliResult, ErrorCode};

/// Bytes of stored data read at a time.
pub const READ: u64 = 4 << 20;
/// Read-ahead windows a block-incremental file keeps (one per backup of its chain read from).
const WINDOWS: usize = 4;
/// The largest block map or super block read (pgBackRest's block sizes are at most a few MiB).
pub const MAX_PIECE: u64 = 64 << 20;

/// Where stored bytes lie: an object's key and a byte range in it.
pub type Span = (String, std::ops::Range<u64>);

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
        self.decode(file, None, out)
    }

    /// [`read`](Self::read) of a file whose stored bytes were read already (`stored`: what
    /// [`bundled`](Self::bundled) names).
    pub fn read_given(&self, file: &pgb::FileEntry, stored: &[u8], out: &mut dyn Write) -> CliResult<()> {
        self.decode(file, Some(stored), out)
    }

    /// Where a file stored in a bundle lies (object key and range), for reading it with its
    /// neighbours in one request; `None` for any other file (stored whole, block incremental,
    /// empty).
    pub fn bundled(&self, file: &pgb::FileEntry) -> Option<Span> {
        let bundled = file.bundle_id.is_some_and(|b| b != 0) && file.block_incr.is_none() && file.size > 0;
        let end = file.bundle_offset.checked_add(file.size_repo)?;
        bundled.then(|| (self.key(&self.manifest.file_object(file)), file.bundle_offset..end))
    }

    fn decode(&self, file: &pgb::FileEntry, stored: Option<&[u8]>, out: &mut dyn Write) -> CliResult<()> {
        if file.size == 0 {
            return Ok(());
        }
        let mut writer = Sha1Writer::with_limit(out, file.size);
        match (file.block_incr, stored) {
            (Some(bi), _) => self.read_blocks(file, bi, &mut writer)?,
            (None, Some(stored)) => self.decode_stored(file, stored, &mut writer)?,
            (None, None) => self.read_stored(file, &mut writer)?,
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
        // A repository on this host's filesystem is read here, on this thread (a round trip
        // through the runtime for every super block costs more than the read).
        if let Some(path) = self.store.local_file(key) {
            use std::io::{Read, Seek};
            let failed = |e: std::io::Error| {
                let code =
                    if e.kind() == std::io::ErrorKind::NotFound { ErrorCode::FileMissing } else { ErrorCode::FileRead };
                CliError::new(code, format!("unable to read {} at {}..{}: {e}", path.display(), range.start, range.end))
            };
            let len = range.end.saturating_sub(range.start);
            let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
            let mut file = std::fs::File::open(&path).map_err(failed)?;
            file.seek(std::io::SeekFrom::Start(range.start)).map_err(failed)?;
            file.take(len).read_to_end(&mut buf).map_err(failed)?;
            if buf.len() as u64 != len {
                return Err(failed(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)));
            }
            return Ok(bytes::Bytes::from(buf));
        }
        Ok(self.handle.block_on(self.store.get_range(key, range))?)
    }

    /// `range` of `key`, from the window over `key` when it holds it; otherwise read with up to
    /// [`READ`] bytes ahead (never past `extent`) into that window. One window per object, at
    /// most [`WINDOWS`] (the least recently read goes): a file's blocks alternate between the
    /// backups of its chain, each read front to back.
    fn read_ahead(
        &self,
        windows: &mut Vec<(String, u64, bytes::Bytes)>,
        key: &str,
        range: std::ops::Range<u64>,
        extent: u64,
    ) -> CliResult<bytes::Bytes> {
        let len = (range.end - range.start) as usize;
        if let Some(i) = windows.iter().position(|(k, _, _)| k == key) {
            let (_, start, data) = &windows[i];
            if range.start >= *start && range.end <= start.saturating_add(data.len() as u64) {
                let from = (range.start - start) as usize;
                let hit = data.slice(from..from + len);
                let used = windows.remove(i);
                windows.push(used);
                return Ok(hit);
            }
            windows.remove(i);
        }
        let end = range.end.max(extent.min(range.start.saturating_add(READ)));
        let data = self.get(key, range.start..end)?;
        let wanted = data.slice(..len.min(data.len()));
        if windows.len() >= WINDOWS {
            windows.remove(0);
        }
        windows.push((key.to_string(), range.start, data));
        Ok(wanted)
    }

    /// A file stored whole or in a bundle: decrypted and decompressed as it streams in.
    fn read_stored<W: Write>(&self, file: &pgb::FileEntry, out: &mut W) -> CliResult<()> {
        let m = &self.manifest;
        let key = self.key(&m.file_object(file));
        let start = if file.bundle_id.is_some_and(|b| b != 0) { file.bundle_offset } else { 0 };
        let end = start
            .checked_add(file.size_repo)
            .ok_or_else(|| corrupt(m, format!("{}: repo-size overflows", file.name)))?;
        let mut decoder = self.decoder(file, out)?;
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

    /// A file whose stored bytes are given.
    fn decode_stored<W: Write>(&self, file: &pgb::FileEntry, stored: &[u8], out: &mut W) -> CliResult<()> {
        let what = self.manifest.file_object(file);
        let mut decoder = self.decoder(file, out)?;
        decoder.update(stored, &what)?;
        decoder.finish(&what)?;
        Ok(())
    }

    /// The decryption (raw in a bundle written raw) and decompression of a file's stored bytes.
    fn decoder<W: Write>(&self, file: &pgb::FileEntry, out: W) -> CliResult<Decoder<W>> {
        let m = &self.manifest;
        let raw = file.bundle_id.is_some_and(|b| b != 0) && m.bundle_raw;
        Ok(Decoder::new(m.cipher_pass.as_deref().map(str::as_bytes), raw, &m.compress_type, out)?)
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
        // Where this file's super blocks end in each object (reference and bundle): reads ahead
        // stop there, so one request serves the super blocks that lie back to back.
        let mut extents: Vec<((u32, u64), u64)> = Vec::new();
        blockmap::for_each(&map, bi.size, checksum_size, blocks, |item| {
            let end = item.offset.checked_add(item.size).ok_or_else(|| bad("super block offset overflows"))?;
            match extents.iter_mut().find(|(k, _)| *k == (item.reference, item.bundle_id)) {
                Some((_, e)) => *e = (*e).max(end),
                None => extents.push(((item.reference, item.bundle_id), end)),
            }
            Ok::<(), CliError>(())
        })?;
        // The super block last decoded (the blocks of one are mostly consecutive in the map), and
        // the stored bytes last read (at most READ bytes).
        let mut current: Option<((u32, u64, u64), Vec<u8>)> = None;
        let mut windows: Vec<(String, u64, bytes::Bytes)> = Vec::with_capacity(WINDOWS);
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
                let extent =
                    extents.iter().find(|(k, _)| *k == (item.reference, item.bundle_id)).map_or(end, |(_, e)| *e);
                let stored = self.read_ahead(&mut windows, &object, item.offset..end, extent)?;
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
