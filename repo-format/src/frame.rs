//! Blobs and frames: how every stored byte is compressed, encrypted and checked.
//!
//! A *blob* is one independently decodable byte stream: a 32-byte header followed by frames of
//! at most `frame_size` plaintext bytes (1 MiB by default). Each frame is compressed on its own
//! (zstd, lz4, or stored raw when compression does not make it smaller), then either sealed with
//! AES-256-GCM under the stanza's data key or, without encryption, checked by a 32-bit xxh3 sum.
//! The blob header and the frame's position are bound into every frame (as associated data, or
//! into the sum), so a frame moved to another blob or position fails, and the last frame carries
//! a flag, so a blob cut short is reported as truncated rather than decoded short.
//!
//! [`BlobEncoder`] turns plaintext into blob bytes and returns a [`BlobSummary`] from
//! [`BlobEncoder::finish`]; [`BlobDecoder`] does the reverse in the feed/poll style (no I/O:
//! `feed` bytes, `poll` frames until it answers `Ok(None)`, "feed me more"). The byte layout is
//! specified in `docs/repo-format.md`.

use xxhash_rust::xxh3::Xxh3;

use crate::crypto::{DataKey, KeyId, NONCE_LEN, TAG_LEN, random_bytes};
use crate::digest::{CountingHasher, Sha256Digest};
use crate::error::{FormatError, Result};

/// Magic bytes at the start of every blob.
pub const BLOB_MAGIC: [u8; 4] = *b"PGSB";
/// The blob layout version this build writes and the highest it reads.
pub const BLOB_VERSION: u8 = 1;
/// Length of the blob header.
pub const BLOB_HEADER_LEN: usize = 32;
/// Length of the header in front of every frame.
pub const FRAME_HEADER_LEN: usize = 16;
/// Default plaintext size of a frame.
pub const DEFAULT_FRAME_SIZE: usize = 1 << 20;
/// Largest plaintext a frame may carry; larger lengths in a header are corruption.
pub const MAX_FRAME_SIZE: usize = 16 << 20;

const FLAG_LAST: u8 = 1;
const CIPHER_NONE: u8 = 0;
const CIPHER_AES_256_GCM: u8 = 1;

/// How frames are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// Stored as is.
    None,
    /// zstd at the given level (1..=22; negative levels are zstd's fast modes).
    Zstd(i32),
    /// lz4 block format.
    Lz4,
    /// Raw deflate (gzip's codec) at the given level (0..=9): pgBackRest's `gz`, kept for
    /// configurations that set it; each frame is one deflate stream.
    Gzip(u32),
    /// bzip2 at the given block-size level (1..=9): pgBackRest's `bz2`.
    Bzip2(u32),
}

impl Compression {
    /// pgBackRest's option spelling: `none`, `zst`, `lz4`, `gz`, `bz2` with a level from
    /// `compress-level` (defaults as pgBackRest's: zst 3, gz 6, bz2 9).
    pub fn from_option(kind: &str, level: Option<i32>) -> Result<Self> {
        match kind {
            "none" => Ok(Self::None),
            "zst" | "zstd" => {
                let level = level.unwrap_or(3);
                if !(-7..=22).contains(&level) {
                    return Err(FormatError::invalid("compress-level", format!("{level} is outside -7..=22 for zst")));
                }
                Ok(Self::Zstd(level))
            }
            "lz4" => Ok(Self::Lz4),
            "gz" => Ok(Self::Gzip(level_in("gz", level, 6, 0..=9)?)),
            "bz2" => Ok(Self::Bzip2(level_in("bz2", level, 9, 1..=9)?)),
            other => Err(FormatError::invalid(
                "compress-type",
                format!("{other:?} is not supported (use none, zst, lz4, gz or bz2)"),
            )),
        }
    }
}

/// `level` (or `default`) when it lies in `range`.
fn level_in(kind: &str, level: Option<i32>, default: u32, range: std::ops::RangeInclusive<u32>) -> Result<u32> {
    let level = level.unwrap_or(default as i32);
    match u32::try_from(level) {
        Ok(l) if range.contains(&l) => Ok(l),
        _ => Err(FormatError::invalid(
            "compress-level",
            format!("{level} is outside {}..={} for {kind}", range.start(), range.end()),
        )),
    }
}

/// The per-frame codec byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Codec {
    Stored = 0,
    Zstd = 1,
    Lz4 = 2,
    Deflate = 3,
    Bzip2 = 4,
}

impl Codec {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Stored),
            1 => Some(Self::Zstd),
            2 => Some(Self::Lz4),
            3 => Some(Self::Deflate),
            4 => Some(Self::Bzip2),
            _ => None,
        }
    }
}

/// Settings for writing blobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobSettings {
    pub compression: Compression,
    pub frame_size: usize,
}

impl Default for BlobSettings {
    fn default() -> Self {
        Self { compression: Compression::Zstd(3), frame_size: DEFAULT_FRAME_SIZE }
    }
}

/// The parsed 32-byte blob header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    pub version: u8,
    pub encrypted: bool,
    pub blob_id: [u8; 16],
    pub key_id: Option<KeyId>,
}

impl BlobHeader {
    fn to_bytes(self) -> [u8; BLOB_HEADER_LEN] {
        let mut out = [0u8; BLOB_HEADER_LEN];
        out[..4].copy_from_slice(&BLOB_MAGIC);
        out[4] = self.version;
        out[5] = if self.encrypted { CIPHER_AES_256_GCM } else { CIPHER_NONE };
        out[8..24].copy_from_slice(&self.blob_id);
        if let Some(id) = self.key_id {
            out[24..32].copy_from_slice(&id.0);
        }
        out
    }

    /// Parses a header; `what` names the object in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        if bytes.len() < BLOB_HEADER_LEN {
            return Err(FormatError::truncated(what, format!("{} bytes, shorter than a blob header", bytes.len())));
        }
        if bytes[..4] != BLOB_MAGIC {
            return Err(FormatError::NotAnObject {
                what: what.to_string(),
                detail: format!("bad magic {:02x?}", &bytes[..4]),
            });
        }
        let version = bytes[4];
        if version == 0 || version > BLOB_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: what.to_string(),
                found: u32::from(version),
                supported: u32::from(BLOB_VERSION),
            });
        }
        let encrypted = match bytes[5] {
            CIPHER_NONE => false,
            CIPHER_AES_256_GCM => true,
            other => return Err(FormatError::corrupt(what, format!("unknown cipher byte {other}"))),
        };
        if bytes[6..8] != [0, 0] {
            return Err(FormatError::corrupt(what, "reserved header bytes are not zero"));
        }
        let mut blob_id = [0u8; 16];
        blob_id.copy_from_slice(&bytes[8..24]);
        let mut key = [0u8; 8];
        key.copy_from_slice(&bytes[24..32]);
        let key_id = if encrypted {
            Some(KeyId(key))
        } else if key != [0u8; 8] {
            return Err(FormatError::corrupt(what, "key id set on an unencrypted blob"));
        } else {
            None
        };
        Ok(Self { version, encrypted, blob_id, key_id })
    }
}

/// What [`BlobEncoder::finish`] reports about the blob it wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobSummary {
    /// Plaintext bytes written in.
    pub plain_len: u64,
    /// SHA-256 of the plaintext (`None` when the encoder was told not to compute it).
    pub plain_sha256: Option<Sha256Digest>,
    /// Blob bytes produced (header and frames).
    pub stored_len: u64,
    /// SHA-256 of the blob bytes.
    pub stored_sha256: Sha256Digest,
    /// SHA-256 of each frame's plaintext, in order (empty for an empty blob).
    pub chunk_sha256: Vec<Sha256Digest>,
    /// Number of frames.
    pub frames: u64,
}

thread_local! {
    /// One zstd compression context per thread (with the level it was last set to), and one
    /// decompression context: a context costs about a megabyte to set up, and a backup seals
    /// one blob per small file, so making one per blob dominated both time and memory churn.
    static COMPRESSOR: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's zstd compressor set to `level`; `None` when zstd fails.
fn with_compressor<R>(level: i32, f: impl FnOnce(&mut zstd::bulk::Compressor<'static>) -> R) -> Option<R> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().ok()?;
        match slot.as_mut() {
            Some((current, c)) if *current == level => {}
            Some((current, c)) => {
                c.set_compression_level(level).ok()?;
                *current = level;
            }
            None => *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?)),
        }
        slot.as_mut().map(|(_, c)| f(c))
    })
}

/// Decompresses into `out` with this thread's zstd context; the decoded length.
fn zstd_decompress(compressed: &[u8], out: &mut [u8]) -> std::io::Result<usize> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.try_borrow_mut().map_err(std::io::Error::other)?;
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress_to_buffer(compressed, out),
            None => Err(std::io::Error::other("no zstd context")),
        }
    })
}

/// Seals single frames of one blob. Reusable across frames.
struct FrameSealer {
    header: [u8; BLOB_HEADER_LEN],
    key: Option<DataKey>,
    compression: Compression,
    scratch: Vec<u8>,
}

impl FrameSealer {
    fn new(header: BlobHeader, key: Option<DataKey>, compression: Compression) -> Result<Self> {
        if let Compression::Zstd(level) = compression
            && !zstd::compression_level_range().contains(&level)
        {
            return Err(FormatError::invalid("zstd level", format!("{level} is outside zstd's range")));
        }
        Ok(Self { header: header.to_bytes(), key, compression, scratch: Vec::new() })
    }

    /// Appends the sealed frame to `out`.
    fn seal(&mut self, index: u64, plain: &[u8], last: bool, out: &mut Vec<u8>) {
        let codec = self.compress(plain);
        let (codec, body): (Codec, &[u8]) = match codec {
            Some(codec) => (codec, &self.scratch),
            None => (Codec::Stored, plain),
        };
        let mut fh = [0u8; FRAME_HEADER_LEN];
        fh[4..8].copy_from_slice(&len_u32(plain.len()).to_le_bytes());
        fh[8] = codec as u8;
        fh[9] = if last { FLAG_LAST } else { 0 };
        match &self.key {
            Some(key) => seal_encrypted(key, &self.header, index, fh, body, out),
            None => {
                fh[0..4].copy_from_slice(&len_u32(body.len()).to_le_bytes());
                let sum = frame_sum(&self.header, index, &fh, body);
                fh[12..16].copy_from_slice(&sum.to_le_bytes());
                out.extend_from_slice(&fh);
                out.extend_from_slice(body);
            }
        }
    }

    /// Compresses into `scratch`; `None` when the frame is better stored raw.
    fn compress(&mut self, plain: &[u8]) -> Option<Codec> {
        if plain.is_empty() {
            return None;
        }
        self.scratch.clear();
        match self.compression {
            Compression::None => return None,
            Compression::Zstd(level) => {
                self.scratch.reserve(zstd::zstd_safe::compress_bound(plain.len()));
                let scratch = &mut self.scratch;
                with_compressor(level, |c| c.compress_to_buffer(plain, scratch))?.ok()?;
            }
            Compression::Lz4 => {
                self.scratch.resize(lz4_flex::block::get_maximum_output_size(plain.len()), 0);
                let n = lz4_flex::block::compress_into(plain, &mut self.scratch).ok()?;
                self.scratch.truncate(n);
            }
            Compression::Gzip(level) => {
                let mut z = flate2::Compress::new(flate2::Compression::new(level), false);
                compress_all(plain, &mut self.scratch, |input, out| {
                    z.compress_vec(input, out, flate2::FlushCompress::Finish).ok().map(|status| {
                        (status == flate2::Status::StreamEnd, usize::try_from(z.total_in()).unwrap_or(usize::MAX))
                    })
                })?;
            }
            Compression::Bzip2(level) => {
                let mut z = bzip2::Compress::new(bzip2::Compression::new(level), 30);
                compress_all(plain, &mut self.scratch, |input, out| {
                    z.compress_vec(input, out, bzip2::Action::Finish).ok().map(|status| {
                        (status == bzip2::Status::StreamEnd, usize::try_from(z.total_in()).unwrap_or(usize::MAX))
                    })
                })?;
            }
        }
        let codec = match self.compression {
            Compression::Zstd(_) => Codec::Zstd,
            Compression::Gzip(_) => Codec::Deflate,
            Compression::Bzip2(_) => Codec::Bzip2,
            _ => Codec::Lz4,
        };
        (self.scratch.len() < plain.len()).then_some(codec)
    }
}

/// Runs a streaming compressor to the end of its stream: `step` is handed the input not yet
/// consumed and the output vector (with spare capacity) and answers whether the stream ended and
/// the total input consumed. Gives up (`None`) once the output would not be smaller than the
/// input, when the frame is stored raw anyway.
fn compress_all(
    plain: &[u8],
    out: &mut Vec<u8>,
    mut step: impl FnMut(&[u8], &mut Vec<u8>) -> Option<(bool, usize)>,
) -> Option<()> {
    out.reserve(plain.len() / 2 + 64);
    let mut consumed = 0;
    loop {
        if out.len() == out.capacity() {
            if out.len() >= plain.len() {
                return None;
            }
            out.reserve(plain.len() / 4 + 64);
        }
        let (ended, total) = step(plain.get(consumed..)?, out)?;
        consumed = total;
        if ended {
            return Some(());
        }
    }
}

/// Inflates a whole frame body into `out` (exactly its length); the bytes written.
fn inflate_into(compressed: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    let mut z = flate2::Decompress::new(false);
    let status = z.decompress(compressed, out, flate2::FlushDecompress::Finish).map_err(|e| e.to_string())?;
    if status != flate2::Status::StreamEnd || z.total_in() != compressed.len() as u64 {
        return Err("stream does not end where the frame does".into());
    }
    usize::try_from(z.total_out()).map_err(|e| e.to_string())
}

/// Decompresses a whole bzip2 frame body into `out`; the bytes written.
fn bunzip_into(compressed: &[u8], out: &mut [u8]) -> std::result::Result<usize, String> {
    let mut z = bzip2::Decompress::new(false);
    let status = z.decompress(compressed, out).map_err(|e| e.to_string())?;
    if status != bzip2::Status::StreamEnd || z.total_in() != compressed.len() as u64 {
        return Err("stream does not end where the frame does".into());
    }
    usize::try_from(z.total_out()).map_err(|e| e.to_string())
}

/// Appends one frame sealed under `key`: its header (`fh`, lengths and flags set but for the
/// stored length), a fresh nonce, the encrypted (compressed) body and the tag.
fn seal_encrypted(
    key: &DataKey,
    header: &[u8; BLOB_HEADER_LEN],
    index: u64,
    mut fh: [u8; FRAME_HEADER_LEN],
    body: &[u8],
    out: &mut Vec<u8>,
) {
    fh[0..4].copy_from_slice(&len_u32(body.len() + NONCE_LEN + TAG_LEN).to_le_bytes());
    fh[12..16].fill(0);
    out.extend_from_slice(&fh);
    let mut nonce = [0u8; NONCE_LEN];
    random_bytes(&mut nonce);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(body);
    let aad = frame_aad(header, index, &fh);
    let tag = key.seal(&nonce, &aad, &mut out[start..]);
    out.extend_from_slice(&tag);
}

/// Checks an unencrypted blob made elsewhere (every frame's sum, codec and flags, the last-frame
/// marker, nothing after it) and, given a key, seals it under that key: the compressed frame
/// bodies are kept as they are, so a blob compressed on another host is encrypted here without
/// being decompressed. The result is what [`BlobEncoder`] would have written with the key (same
/// blob id); without a key, the blob itself.
/// What an unencrypted blob holds by its frame headers alone: the sum of its frames' plain
/// lengths and the number of frames that hold any (what a writer's chunk digests count).
pub fn compressed_shape(blob: &[u8], what: &str) -> Result<(u64, usize)> {
    let (_, spans) = frame_spans(blob, what, None)?;
    let plain = spans.iter().map(|s| s.plain_len as u64).sum();
    Ok((plain, spans.iter().filter(|s| s.plain_len > 0).count()))
}

pub fn seal_compressed(blob: Vec<u8>, what: &str, key: Option<&DataKey>) -> Result<Vec<u8>> {
    let (raw, spans) = frame_spans(&blob, what, None)?;
    for span in &spans {
        let fh = &span.fh;
        let corrupt = |detail: &str| FormatError::corrupt(what, format!("frame {}: {detail}", span.index));
        let body = &blob[span.start..span.start + span.body_len];
        if fh[10..12] != [0, 0] || fh[9] & !FLAG_LAST != 0 || Codec::from_byte(fh[8]).is_none() {
            return Err(corrupt("unknown codec, flags or reserved bytes"));
        }
        if frame_sum(&raw, span.index, fh, body) != u32_at(fh, 12) {
            return Err(corrupt("checksum mismatch (altered, moved or reordered)"));
        }
    }
    let Some(key) = key else { return Ok(blob) };
    let mut header = BlobHeader::parse(&raw, what)?;
    header.encrypted = true;
    header.key_id = Some(key.id());
    let header = header.to_bytes();
    let mut out = Vec::with_capacity(blob.len() + spans.len() * (NONCE_LEN + TAG_LEN));
    out.extend_from_slice(&header);
    for span in &spans {
        let body = &blob[span.start..span.start + span.body_len];
        seal_encrypted(key, &header, span.index, span.fh, body, &mut out);
    }
    Ok(out)
}

fn len_u32(n: usize) -> u32 {
    // Frames are capped at MAX_FRAME_SIZE (plus small overhead), far below u32::MAX.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn frame_aad(header: &[u8; BLOB_HEADER_LEN], index: u64, fh: &[u8; FRAME_HEADER_LEN]) -> [u8; 52] {
    let mut aad = [0u8; 52];
    aad[..32].copy_from_slice(header);
    aad[32..40].copy_from_slice(&index.to_le_bytes());
    aad[40..52].copy_from_slice(&fh[..12]);
    aad
}

fn frame_sum(header: &[u8; BLOB_HEADER_LEN], index: u64, fh: &[u8; FRAME_HEADER_LEN], body: &[u8]) -> u32 {
    let mut h = Xxh3::new();
    h.update(header);
    h.update(&index.to_le_bytes());
    h.update(&fh[..12]);
    h.update(body);
    // The low 32 bits of xxh3-64.
    (h.digest() & 0xffff_ffff) as u32
}

/// Writes one blob: buffers plaintext into frames and appends sealed frames to a caller's buffer.
pub struct BlobEncoder {
    sealer: FrameSealer,
    frame_size: usize,
    pending: Vec<u8>,
    index: u64,
    header_written: bool,
    plain: Option<CountingHasher>,
    plain_len: u64,
    stored: CountingHasher,
    chunks: Vec<Sha256Digest>,
}

impl std::fmt::Debug for BlobEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobEncoder").field("index", &self.index).field("plain_len", &self.plain_len).finish()
    }
}

impl BlobEncoder {
    /// A new blob with a random id; encrypted when `key` is given.
    pub fn new(settings: BlobSettings, key: Option<&DataKey>) -> Result<Self> {
        let mut blob_id = [0u8; 16];
        random_bytes(&mut blob_id);
        Self::with_id(settings, key, blob_id)
    }

    /// A new blob with a chosen id (fixtures and tests).
    pub fn with_id(settings: BlobSettings, key: Option<&DataKey>, blob_id: [u8; 16]) -> Result<Self> {
        if settings.frame_size == 0 || settings.frame_size > MAX_FRAME_SIZE {
            return Err(FormatError::invalid(
                "frame size",
                format!("{} is outside 1..={MAX_FRAME_SIZE}", settings.frame_size),
            ));
        }
        let header =
            BlobHeader { version: BLOB_VERSION, encrypted: key.is_some(), blob_id, key_id: key.map(DataKey::id) };
        Ok(Self {
            sealer: FrameSealer::new(header, key.cloned(), settings.compression)?,
            frame_size: settings.frame_size,
            pending: Vec::new(),
            index: 0,
            header_written: false,
            plain: Some(CountingHasher::default()),
            plain_len: 0,
            stored: CountingHasher::default(),
            chunks: Vec::new(),
        })
    }

    /// Feeds plaintext; appends any completed frames (and the header, the first time) to `out`.
    pub fn write(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        self.write_header(out);
        if let Some(h) = self.plain.as_mut() {
            h.update(data);
        }
        self.plain_len += data.len() as u64;
        while !data.is_empty() {
            if self.pending.is_empty() && data.len() > self.frame_size {
                // A whole frame with more data after it: seal straight from the input.
                let (frame, rest) = data.split_at(self.frame_size);
                self.seal_frame(frame, false, out);
                data = rest;
                continue;
            }
            if self.pending.len() == self.frame_size {
                // More data follows, so the buffered frame is not the last one.
                self.flush_frame(false, out);
            }
            let room = self.frame_size - self.pending.len();
            let take = room.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
    }

    /// Seals the last frame and reports what was written.
    pub fn finish(mut self, out: &mut Vec<u8>) -> BlobSummary {
        self.write_header(out);
        self.flush_frame(true, out);
        let plain_len = self.plain_len;
        let plain_sha256 = self.plain.map(|h| h.finish().1);
        let (stored_len, stored_sha256) = self.stored.finish();
        BlobSummary {
            plain_len,
            plain_sha256,
            stored_len,
            stored_sha256,
            chunk_sha256: self.chunks,
            frames: self.index,
        }
    }

    fn write_header(&mut self, out: &mut Vec<u8>) {
        if !self.header_written {
            self.header_written = true;
            out.extend_from_slice(&self.sealer.header);
            self.stored.update(&self.sealer.header);
        }
    }

    fn flush_frame(&mut self, last: bool, out: &mut Vec<u8>) {
        let pending = std::mem::take(&mut self.pending);
        self.seal_frame(&pending, last, out);
        self.pending = pending;
        self.pending.clear();
    }

    fn seal_frame(&mut self, plain: &[u8], last: bool, out: &mut Vec<u8>) {
        if !plain.is_empty() {
            self.chunks.push(Sha256Digest::of(plain));
        }
        let start = out.len();
        self.sealer.seal(self.index, plain, last, out);
        self.stored.update(&out[start..]);
        self.index += 1;
    }

    /// Skips the SHA-256 of the whole plaintext (`BlobSummary::plain_sha256` is then `None`),
    /// for callers that derive a digest from the per-frame digests instead.
    pub fn without_plain_digest(mut self) -> Self {
        self.plain = None;
        self
    }
}

/// Encodes `data` as one blob in one call.
pub fn encode_blob(data: &[u8], settings: BlobSettings, key: Option<&DataKey>) -> Result<(Vec<u8>, BlobSummary)> {
    let mut enc = BlobEncoder::new(settings, key)?;
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    enc.write(data, &mut out);
    let summary = enc.finish(&mut out);
    Ok((out, summary))
}

/// One blob whose frames are sealed by several threads: the header once, then any number of
/// [`FrameSealerHandle`]s seal frames by index. Concatenating the header and every frame in
/// index order gives the same format [`BlobEncoder`] writes (without its digests).
#[derive(Clone, Debug)]
pub struct ParallelBlob {
    header: BlobHeader,
    key: Option<DataKey>,
    settings: BlobSettings,
}

impl ParallelBlob {
    pub fn new(settings: BlobSettings, key: Option<&DataKey>) -> Result<Self> {
        if settings.frame_size == 0 || settings.frame_size > MAX_FRAME_SIZE {
            return Err(FormatError::invalid(
                "frame size",
                format!("{} is outside 1..={MAX_FRAME_SIZE}", settings.frame_size),
            ));
        }
        let mut blob_id = [0u8; 16];
        random_bytes(&mut blob_id);
        let header =
            BlobHeader { version: BLOB_VERSION, encrypted: key.is_some(), blob_id, key_id: key.map(DataKey::id) };
        Ok(Self { header, key: key.cloned(), settings })
    }

    pub fn frame_size(&self) -> usize {
        self.settings.frame_size
    }

    /// How many frames `len` bytes make (an empty blob is one empty frame).
    pub fn frame_count(&self, len: u64) -> u64 {
        len.div_ceil(self.settings.frame_size as u64).max(1)
    }

    pub fn header_bytes(&self) -> [u8; BLOB_HEADER_LEN] {
        self.header.to_bytes()
    }

    /// A sealer for one thread.
    pub fn sealer(&self) -> Result<FrameSealerHandle> {
        Ok(FrameSealerHandle(FrameSealer::new(self.header, self.key.clone(), self.settings.compression)?))
    }
}

/// Seals frames of a [`ParallelBlob`]; one per thread.
pub struct FrameSealerHandle(FrameSealer);

impl std::fmt::Debug for FrameSealerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameSealerHandle").finish()
    }
}

impl FrameSealerHandle {
    /// Appends frame `index` (the blob's last when `last`) to `out`.
    pub fn seal(&mut self, index: u64, plain: &[u8], last: bool, out: &mut Vec<u8>) {
        self.0.seal(index, plain, last, out);
    }
}

/// What a [`BlobDecoder`] saw once the whole blob decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeSummary {
    pub plain_len: u64,
    /// SHA-256 of each frame's plaintext: compare with a manifest's chunk digests.
    pub chunk_sha256: Vec<Sha256Digest>,
    pub frames: u64,
}

/// Decodes one blob, feed/poll style: no I/O, any chunking of the input.
pub struct BlobDecoder {
    what: String,
    key: Option<DataKey>,
    buf: Vec<u8>,
    pos: usize,
    header: Option<(BlobHeader, [u8; BLOB_HEADER_LEN])>,
    index: u64,
    done: bool,
    plain_len: u64,
    chunks: Vec<Sha256Digest>,
    /// Whether `chunks` is kept (off: the caller checks the plaintext its own way).
    chunk_digests: bool,
    /// Decrypted frame bodies, reused.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for BlobDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobDecoder").field("what", &self.what).field("index", &self.index).finish()
    }
}

impl BlobDecoder {
    /// A decoder for a blob named `what` in errors. With a key, the blob must be encrypted under
    /// that key; without one, it must be unencrypted.
    pub fn new(what: impl Into<String>, key: Option<&DataKey>) -> Self {
        Self {
            what: what.into(),
            key: key.cloned(),
            buf: Vec::new(),
            pos: 0,
            header: None,
            index: 0,
            done: false,
            plain_len: 0,
            chunks: Vec::new(),
            chunk_digests: true,
            scratch: Vec::new(),
        }
    }

    /// A decoder that does not hash each frame's plaintext ([`chunks`](Self::chunks) stays
    /// empty): for a caller that checks the whole plaintext against one digest of its own, so
    /// each byte is hashed once. Frames are still checked by their own sum or tag.
    pub fn without_chunk_digests(mut self) -> Self {
        self.chunk_digests = false;
        self
    }

    /// Adds input bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// True once the last frame has been decoded.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// SHA-256 of each non-empty frame's plaintext decoded so far, in order (the last one is
    /// the frame [`poll`](Self::poll) returned last, when it was not empty).
    pub fn chunks(&self) -> &[Sha256Digest] {
        &self.chunks
    }

    /// The next frame's plaintext, `Ok(None)` when more input is needed (or the blob is done).
    pub fn poll(&mut self) -> Result<Option<Vec<u8>>> {
        let mut plain = Vec::new();
        Ok(self.poll_into(&mut plain)?.then_some(plain))
    }

    /// [`poll`](Self::poll) into a buffer the caller reuses (cleared first): `false` when more
    /// input is needed (or the blob is done).
    pub fn poll_into(&mut self, plain: &mut Vec<u8>) -> Result<bool> {
        plain.clear();
        if self.header.is_none() {
            if self.available() < BLOB_HEADER_LEN {
                return Ok(false);
            }
            let raw: [u8; BLOB_HEADER_LEN] = self.take_array();
            let header = BlobHeader::parse(&raw, &self.what)?;
            check_key(&self.what, self.key.as_ref(), &header)?;
            self.header = Some((header, raw));
        }
        if self.done {
            if self.available() > 0 {
                return Err(FormatError::corrupt(
                    &self.what,
                    format!("{} bytes after the last frame", self.available()),
                ));
            }
            return Ok(false);
        }
        if self.available() < FRAME_HEADER_LEN {
            return Ok(false);
        }
        let mut fh = [0u8; FRAME_HEADER_LEN];
        fh.copy_from_slice(&self.buf[self.pos..self.pos + FRAME_HEADER_LEN]);
        let body_len = u32_at(&fh, 0) as usize;
        let plain_len = u32_at(&fh, 4) as usize;
        let encrypted = self.key.is_some();
        let overhead = if encrypted { NONCE_LEN + TAG_LEN } else { 0 };
        if plain_len > MAX_FRAME_SIZE || body_len > MAX_FRAME_SIZE + overhead || body_len < overhead {
            return Err(self.corrupt_frame("impossible frame lengths"));
        }
        if self.available() < FRAME_HEADER_LEN + body_len {
            return Ok(false);
        }
        let start = self.pos + FRAME_HEADER_LEN;
        let Some((_, raw_header)) = self.header else {
            return Err(FormatError::corrupt(&self.what, "frame before header"));
        };
        let ctx = FrameCtx { what: &self.what, key: self.key.as_ref(), raw_header: &raw_header };
        let body = &self.buf[start..start + body_len];
        let last = open_frame(&ctx, self.index, &fh, body, &mut self.scratch, plain)?;
        self.pos = start + body_len;
        self.plain_len += plain.len() as u64;
        if self.chunk_digests && !plain.is_empty() {
            self.chunks.push(Sha256Digest::of(plain));
        }
        self.index += 1;
        if last {
            self.done = true;
        }
        Ok(true)
    }

    /// Ends decoding: the blob must have reached its last frame with nothing after it.
    pub fn finish(mut self) -> Result<DecodeSummary> {
        // Surface an error for trailing bytes or a complete but unpolled frame.
        while self.poll()?.is_some() {}
        if self.header.is_none() {
            return Err(FormatError::truncated(&self.what, "no blob header"));
        }
        if !self.done {
            return Err(FormatError::truncated(
                &self.what,
                format!("ends after {} frames without the last-frame marker", self.index),
            ));
        }
        Ok(DecodeSummary { plain_len: self.plain_len, chunk_sha256: self.chunks, frames: self.index })
    }

    fn corrupt_frame(&self, detail: &str) -> FormatError {
        FormatError::corrupt(&self.what, format!("frame {}: {detail}", self.index))
    }

    fn available(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take_array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        out
    }
}

/// What opening a frame needs to know about its blob.
struct FrameCtx<'a> {
    what: &'a str,
    key: Option<&'a DataKey>,
    raw_header: &'a [u8; BLOB_HEADER_LEN],
}

/// Verifies and decodes one frame whose header is `fh` and body `body` (lengths already
/// checked against the limits), appending its plaintext to `out`. Returns whether it is the last
/// frame. `scratch` holds decrypted bytes; stored and unencrypted frames are not copied first.
fn open_frame(
    ctx: &FrameCtx<'_>,
    index: u64,
    fh: &[u8; FRAME_HEADER_LEN],
    body: &[u8],
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<bool> {
    let corrupt = |detail: &str| FormatError::corrupt(ctx.what, format!("frame {index}: {detail}"));
    let plain_len = u32_at(fh, 4) as usize;
    let compressed: &[u8] = match ctx.key {
        Some(key) => {
            // Bytes 12..16 are outside the associated data, so they must be exactly zero.
            if fh[10..16] != [0; 6] {
                return Err(corrupt("reserved bytes are not zero"));
            }
            let n = body.len();
            let mut nonce = [0u8; NONCE_LEN];
            nonce.copy_from_slice(&body[..NONCE_LEN]);
            let mut tag = [0u8; TAG_LEN];
            tag.copy_from_slice(&body[n - TAG_LEN..]);
            scratch.clear();
            scratch.extend_from_slice(&body[NONCE_LEN..n - TAG_LEN]);
            let aad = frame_aad(ctx.raw_header, index, fh);
            if !key.open(&nonce, &aad, scratch, &tag) {
                return Err(corrupt("authentication failed (altered, moved or reordered)"));
            }
            scratch
        }
        None => {
            if fh[10..12] != [0, 0] {
                return Err(corrupt("reserved bytes are not zero"));
            }
            if frame_sum(ctx.raw_header, index, fh, body) != u32_at(fh, 12) {
                return Err(corrupt("checksum mismatch (altered, moved or reordered)"));
            }
            body
        }
    };
    let codec = Codec::from_byte(fh[8]).ok_or_else(|| corrupt("unknown codec"))?;
    if fh[9] & !FLAG_LAST != 0 {
        return Err(corrupt("unknown flags"));
    }
    let start = out.len();
    match codec {
        Codec::Stored => {
            if compressed.len() != plain_len {
                return Err(corrupt("stored length differs from header"));
            }
            out.extend_from_slice(compressed);
        }
        Codec::Zstd => {
            out.resize(start + plain_len, 0);
            let n = zstd_decompress(compressed, &mut out[start..]).map_err(|e| corrupt(&format!("zstd: {e}")))?;
            if n != plain_len {
                return Err(corrupt("decoded length differs from header"));
            }
        }
        Codec::Lz4 => {
            out.resize(start + plain_len, 0);
            let n = lz4_flex::block::decompress_into(compressed, &mut out[start..])
                .map_err(|e| corrupt(&format!("lz4: {e}")))?;
            if n != plain_len {
                return Err(corrupt("decoded length differs from header"));
            }
        }
        Codec::Deflate | Codec::Bzip2 => {
            out.resize(start + plain_len, 0);
            let decoded = match codec {
                Codec::Deflate => inflate_into(compressed, &mut out[start..]),
                _ => bunzip_into(compressed, &mut out[start..]),
            };
            let n = decoded.map_err(|e| corrupt(&format!("{codec:?}: {e}")))?;
            if n != plain_len {
                return Err(corrupt("decoded length differs from header"));
            }
        }
    }
    Ok(fh[9] & FLAG_LAST != 0)
}

/// Checks that a blob's encryption matches the key the reader holds.
fn check_key(what: &str, key: Option<&DataKey>, header: &BlobHeader) -> Result<()> {
    match (key, header.key_id) {
        (Some(key), Some(found)) if key.id() != found => Err(FormatError::KeyMismatch {
            what: what.to_string(),
            found: found.to_string(),
            expected: key.id().to_string(),
        }),
        (Some(_), Some(_)) | (None, None) => Ok(()),
        (None, Some(_)) => Err(FormatError::KeyRequired { what: what.to_string() }),
        (Some(_), None) => Err(FormatError::corrupt(
            what,
            "object is not encrypted but the repository is (refusing an unauthenticated object)",
        )),
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decodes a whole blob held in memory.
pub fn decode_blob(bytes: &[u8], what: &str, key: Option<&DataKey>) -> Result<Vec<u8>> {
    decode_in_place(bytes, what, key, false).map(|(plain, _)| plain)
}

/// Decodes a whole blob held in memory; also returns the per-frame digests. Frames are opened
/// in place (no staging copy of the input).
pub fn decode_blob_with_summary(bytes: &[u8], what: &str, key: Option<&DataKey>) -> Result<(Vec<u8>, DecodeSummary)> {
    decode_in_place(bytes, what, key, true)
}

/// One frame of a blob held in memory: where its body is and what its header says.
struct FrameSpan {
    index: u64,
    fh: [u8; FRAME_HEADER_LEN],
    start: usize,
    body_len: usize,
    plain_len: usize,
}

/// The frames of a whole blob, checked for structure (lengths within limits, a last frame,
/// nothing after it) but not yet opened.
fn frame_spans(bytes: &[u8], what: &str, key: Option<&DataKey>) -> Result<([u8; BLOB_HEADER_LEN], Vec<FrameSpan>)> {
    if bytes.len() < BLOB_HEADER_LEN {
        return Err(FormatError::truncated(what, format!("{} bytes, shorter than a blob header", bytes.len())));
    }
    let mut raw = [0u8; BLOB_HEADER_LEN];
    raw.copy_from_slice(&bytes[..BLOB_HEADER_LEN]);
    let header = BlobHeader::parse(&raw, what)?;
    check_key(what, key, &header)?;
    let overhead = if key.is_some() { NONCE_LEN + TAG_LEN } else { 0 };
    let mut spans = Vec::new();
    let mut pos = BLOB_HEADER_LEN;
    loop {
        let index = spans.len() as u64;
        let truncated =
            || FormatError::truncated(what, format!("ends after {index} frames without the last-frame marker"));
        if bytes.len() - pos < FRAME_HEADER_LEN {
            return Err(truncated());
        }
        let mut fh = [0u8; FRAME_HEADER_LEN];
        fh.copy_from_slice(&bytes[pos..pos + FRAME_HEADER_LEN]);
        let body_len = u32_at(&fh, 0) as usize;
        let plain_len = u32_at(&fh, 4) as usize;
        if plain_len > MAX_FRAME_SIZE || body_len > MAX_FRAME_SIZE + overhead || body_len < overhead {
            return Err(FormatError::corrupt(what, format!("frame {index}: impossible frame lengths")));
        }
        let start = pos + FRAME_HEADER_LEN;
        if bytes.len() - start < body_len {
            return Err(truncated());
        }
        pos = start + body_len;
        let last = fh[9] & FLAG_LAST != 0;
        spans.push(FrameSpan { index, fh, start, body_len, plain_len });
        if last {
            break;
        }
    }
    if pos != bytes.len() {
        return Err(FormatError::corrupt(what, format!("{} bytes after the last frame", bytes.len() - pos)));
    }
    Ok((raw, spans))
}

/// Decodes a whole blob held in memory with up to `threads` threads opening frames at once
/// (a WAL segment is 16 frames: `archive-get` answers recovery faster), with the per-frame
/// digests. The same checks as [`decode_blob_with_summary`], the same result. The frames' claimed
/// plain lengths are checked against `max_plain` (what the caller knows the blob can hold: a WAL
/// segment is at most 1 GiB) before anything is allocated for them: a damaged or hostile blob
/// is refused as corrupt, never an abort.
pub fn decode_blob_parallel(
    bytes: &[u8],
    what: &str,
    key: Option<&DataKey>,
    threads: usize,
    max_plain: u64,
) -> Result<(Vec<u8>, DecodeSummary)> {
    let (raw, spans) = frame_spans(bytes, what, key)?;
    let overhead = if key.is_some() { NONCE_LEN + TAG_LEN } else { 0 };
    let mut total: u64 = 0;
    for span in &spans {
        // A stored frame holds its plaintext; a compressed one is bounded by `max_plain` below.
        if Codec::from_byte(span.fh[8]) == Some(Codec::Stored) && span.plain_len != span.body_len - overhead {
            return Err(FormatError::corrupt(what, format!("frame {}: stored length differs from header", span.index)));
        }
        total = total.saturating_add(span.plain_len as u64);
    }
    if total > max_plain {
        return Err(FormatError::corrupt(what, format!("claims {total} bytes, more than it can hold ({max_plain})")));
    }
    let total = usize::try_from(total).map_err(|_| FormatError::corrupt(what, "too large for this machine"))?;
    let mut out = vec![0u8; total];
    let mut slices: Vec<(&FrameSpan, &mut [u8])> = Vec::with_capacity(spans.len());
    let mut rest = out.as_mut_slice();
    for span in &spans {
        let (mine, tail) = rest.split_at_mut(span.plain_len);
        slices.push((span, mine));
        rest = tail;
    }
    let threads = threads.clamp(1, spans.len().max(1));
    let mut groups: Vec<Vec<(&FrameSpan, &mut [u8])>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in slices.into_iter().enumerate() {
        groups[i % threads].push(s);
    }
    let ctx = FrameCtx { what, key, raw_header: &raw };
    let results: Vec<Result<Vec<(u64, Sha256Digest)>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| {
                let ctx = &ctx;
                scope.spawn(move || {
                    let (mut scratch, mut plain) = (Vec::new(), Vec::new());
                    let mut digests = Vec::with_capacity(group.len());
                    for (span, dest) in group {
                        plain.clear();
                        let body = &bytes[span.start..span.start + span.body_len];
                        open_frame(ctx, span.index, &span.fh, body, &mut scratch, &mut plain)?;
                        if plain.len() != dest.len() {
                            return Err(FormatError::corrupt(
                                ctx.what,
                                format!("frame {}: decoded length differs from header", span.index),
                            ));
                        }
                        dest.copy_from_slice(&plain);
                        if !plain.is_empty() {
                            digests.push((span.index, Sha256Digest::of(&plain)));
                        }
                    }
                    Ok(digests)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err(FormatError::corrupt(what, "a decoding thread panicked"))))
            .collect()
    });
    let mut chunks = Vec::with_capacity(spans.len());
    for r in results {
        chunks.extend(r?);
    }
    chunks.sort_by_key(|(index, _)| *index);
    let summary = DecodeSummary {
        plain_len: total as u64,
        chunk_sha256: chunks.into_iter().map(|(_, d)| d).collect(),
        frames: spans.len() as u64,
    };
    Ok((out, summary))
}

/// The in-place decoder; per-frame digests only when `digests` is set.
fn decode_in_place(bytes: &[u8], what: &str, key: Option<&DataKey>, digests: bool) -> Result<(Vec<u8>, DecodeSummary)> {
    let (raw, spans) = frame_spans(bytes, what, key)?;
    let ctx = FrameCtx { what, key, raw_header: &raw };
    let mut out = Vec::new();
    let mut chunks = Vec::new();
    let mut scratch = Vec::new();
    for span in &spans {
        let before = out.len();
        let body = &bytes[span.start..span.start + span.body_len];
        open_frame(&ctx, span.index, &span.fh, body, &mut scratch, &mut out)?;
        if digests && out.len() > before {
            chunks.push(Sha256Digest::of(&out[before..]));
        }
    }
    let summary = DecodeSummary { plain_len: out.len() as u64, chunk_sha256: chunks, frames: spans.len() as u64 };
    Ok((out, summary))
}
