//! pgBackRest's stored files decoded as they stream in: AES-256-CBC in OpenSSL's salted format
//! (or "raw", without the `Salted__` magic, as bundles and block-incremental super blocks store
//! it), then the decompressor of the backup's `compress-type`, into any [`Write`] — a file, a
//! hash — through buffers of bounded size, never the whole file.
//!
//! Raw compression (pgBackRest's `.raw = true`) differs for gz only: a zlib stream instead of a
//! gzip one; zst, lz4 and bz2 are decoded alike either way (pgBackRest's `gz/decompress.c`,
//! `zst/decompress.c`, `lz4/decompress.c`).

use std::io::Write;

use aes::cipher::{BlockCipherDecrypt, KeyInit};

use crate::error::{FormatError, Result};

const BLOCK: usize = 16;

/// Streaming AES-256-CBC decryption of what pgBackRest encrypted under a passphrase.
pub struct CbcDecrypt {
    pass: Vec<u8>,
    raw: bool,
    header: Vec<u8>,
    cipher: Option<(aes::Aes256, [u8; BLOCK])>,
    /// Ciphertext not yet decrypted: less than a block, or the last block (held back for the
    /// padding).
    pending: Vec<u8>,
}

impl CbcDecrypt {
    /// `raw`: the salt comes first, without `Salted__`.
    pub fn new(pass: &[u8], raw: bool) -> Self {
        Self { pass: pass.to_vec(), raw, header: Vec::new(), cipher: None, pending: Vec::new() }
    }

    fn header_len(&self) -> usize {
        if self.raw { super::SALT_LEN } else { super::SALTED.len() + super::SALT_LEN }
    }

    /// Feeds ciphertext; plaintext is appended to `out` (the last block is held back).
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<()> {
        if self.cipher.is_none() {
            let need = self.header_len() - self.header.len();
            let take = need.min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() < self.header_len() {
                return Ok(());
            }
            let salt = if self.raw {
                &self.header[..]
            } else {
                if &self.header[..super::SALTED.len()] != super::SALTED {
                    return Err(FormatError::corrupt("pgBackRest file", "not encrypted as pgBackRest encrypts"));
                }
                &self.header[super::SALTED.len()..]
            };
            let (key, iv) = super::bytes_to_key(&self.pass, salt);
            let aes = aes::Aes256::new_from_slice(&key)
                .map_err(|e| FormatError::corrupt("pgBackRest file", format!("cipher setup: {e}")))?;
            self.cipher = Some((aes, iv));
        }
        self.pending.extend_from_slice(data);
        // Keep at least one whole block back: it may be the last, with the padding.
        let whole = self.pending.len() / BLOCK * BLOCK;
        let ready = if whole == self.pending.len() { whole.saturating_sub(BLOCK) } else { whole };
        if ready == 0 {
            return Ok(());
        }
        let Some((aes, prev)) = self.cipher.as_mut() else { return Ok(()) };
        // CBC decrypts every block independently (then XORs the ciphertext before it), so the
        // cipher runs on all ready blocks at once, in parallel where the CPU can.
        let start = out.len();
        out.extend_from_slice(&self.pending[..ready]);
        let (blocks, _) = aes::Block::slice_as_chunks_mut(&mut out[start..]);
        aes.decrypt_blocks(blocks);
        let word = |b: &[u8]| u128::from_ne_bytes(b.try_into().unwrap_or([0; BLOCK]));
        let befores = std::iter::once(&prev[..]).chain(self.pending.chunks_exact(BLOCK));
        for (block, before) in blocks.iter_mut().zip(befores) {
            let plain = word(block.as_slice()) ^ word(before);
            block.copy_from_slice(&plain.to_ne_bytes());
        }
        prev.copy_from_slice(&self.pending[ready - BLOCK..ready]);
        self.pending.drain(..ready);
        Ok(())
    }

    /// The last block, its PKCS#7 padding removed. A wrong passphrase shows here, as bad
    /// padding (or, 1 time in 256 or so, later as a wrong checksum).
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<()> {
        if self.cipher.is_none() || self.pending.len() != BLOCK {
            return Err(FormatError::corrupt(
                "pgBackRest file",
                "encrypted data ends mid-block (truncated or not encrypted)",
            ));
        }
        let Some((aes, prev)) = self.cipher.as_mut() else { return Err(FormatError::WrongPassphrase) };
        let mut block = aes::Block::default();
        block.copy_from_slice(&self.pending);
        aes.decrypt_block(&mut block);
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        let pad = usize::from(block[BLOCK - 1]);
        if pad == 0 || pad > BLOCK || block[BLOCK - pad..].iter().any(|&b| usize::from(b) != pad) {
            return Err(FormatError::WrongPassphrase);
        }
        out.extend_from_slice(&block[..BLOCK - pad]);
        Ok(())
    }
}

/// A decompressor that is written to and writes into `W`.
pub enum Decompress<W: Write> {
    None(W),
    Gz(flate2::write::GzDecoder<W>),
    Zlib(flate2::write::ZlibDecoder<W>),
    Bz2(bzip2::write::BzDecoder<W>),
    Zst(Box<zstd::stream::write::Decoder<'static, W>>),
    /// lz4 frames are decoded at the end (the codec reads, it is not written to): what is
    /// buffered is at most the compressed file, bounded by the caller.
    Lz4(Vec<u8>, W),
}

impl<W: Write> Decompress<W> {
    /// For pgBackRest's `compress-type` (`none`, `gz`, `bz2`, `lz4`, `zst`); `raw` as stored
    /// in bundles and super blocks.
    pub fn new(compress_type: &str, raw: bool, out: W) -> Result<Self> {
        Ok(match compress_type {
            "none" | "" => Self::None(out),
            "gz" if raw => Self::Zlib(flate2::write::ZlibDecoder::new(out)),
            "gz" => Self::Gz(flate2::write::GzDecoder::new(out)),
            "bz2" => Self::Bz2(bzip2::write::BzDecoder::new(out)),
            "zst" => Self::Zst(Box::new(
                zstd::stream::write::Decoder::new(out)
                    .map_err(|e| FormatError::corrupt("pgBackRest file", format!("zst: {e}")))?,
            )),
            "lz4" => Self::Lz4(Vec::new(), out),
            other => {
                return Err(FormatError::corrupt("pgBackRest backup", format!("unknown compress-type '{other}'")));
            }
        })
    }

    /// The compress type of a file by its name's extension (`.gz`, ...), as pgBackRest names
    /// files stored whole.
    pub fn type_of(name: &str) -> &'static str {
        match name.rsplit_once('.').map(|(_, e)| e) {
            Some("gz") => "gz",
            Some("bz2") => "bz2",
            Some("lz4") => "lz4",
            Some("zst") => "zst",
            _ => "none",
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Self::None(w) => w.write_all(data),
            Self::Gz(w) => w.write_all(data),
            Self::Zlib(w) => w.write_all(data),
            Self::Bz2(w) => w.write_all(data),
            Self::Zst(w) => w.write_all(data),
            Self::Lz4(buf, _) => {
                buf.extend_from_slice(data);
                Ok(())
            }
        }
    }

    /// Ends the stream (a truncated one is an error) and gives the output back.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Self::None(w) => Ok(w),
            Self::Gz(w) => w.finish(),
            Self::Zlib(w) => w.finish(),
            Self::Bz2(mut w) => w.finish(),
            Self::Zst(mut w) => {
                w.flush()?;
                Ok(w.into_inner())
            }
            Self::Lz4(buf, mut w) => {
                let mut dec = lz4_flex::frame::FrameDecoder::new(&buf[..]);
                std::io::copy(&mut dec, &mut w)?;
                Ok(w)
            }
        }
    }
}

/// Decrypts (when `pass` is given) and decompresses a stream of stored bytes into `out`.
pub struct Decoder<W: Write> {
    cipher: Option<CbcDecrypt>,
    plain: Vec<u8>,
    inner: Decompress<W>,
}

impl<W: Write> Decoder<W> {
    pub fn new(pass: Option<&[u8]>, raw: bool, compress_type: &str, out: W) -> Result<Self> {
        Ok(Self {
            cipher: pass.map(|p| CbcDecrypt::new(p, raw)),
            plain: Vec::new(),
            inner: Decompress::new(compress_type, raw, out)?,
        })
    }

    pub fn update(&mut self, data: &[u8], what: &str) -> Result<()> {
        let io = |e: std::io::Error| FormatError::corrupt(what, format!("unable to decompress: {e}"));
        match &mut self.cipher {
            Some(c) => {
                self.plain.clear();
                c.update(data, &mut self.plain)?;
                self.inner.write_all(&self.plain).map_err(io)
            }
            None => self.inner.write_all(data).map_err(io),
        }
    }

    pub fn finish(mut self, what: &str) -> Result<W> {
        let io = |e: std::io::Error| FormatError::corrupt(what, format!("unable to decompress: {e}"));
        if let Some(c) = self.cipher.take() {
            self.plain.clear();
            c.finish(&mut self.plain)?;
            self.inner.write_all(&self.plain).map_err(io)?;
        }
        self.inner.finish().map_err(io)
    }
}

impl std::fmt::Debug for CbcDecrypt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CbcDecrypt")
    }
}

impl<W: Write> std::fmt::Debug for Decompress<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decompress")
    }
}

impl<W: Write> std::fmt::Debug for Decoder<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoder")
    }
}

/// A writer that keeps at most `limit` bytes: more is an error (a hostile object must not
/// exhaust memory).
#[derive(Debug)]
pub struct Bounded {
    pub data: Vec<u8>,
    pub limit: usize,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.data.len().saturating_add(buf.len()) > self.limit {
            return Err(std::io::Error::other(format!("decodes to more than {} bytes", self.limit)));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Passes bytes through to `W`, counting them and taking their SHA-1 (what pgBackRest's
/// manifest records of each file).
#[derive(Debug)]
pub struct Sha1Writer<W: Write> {
    pub inner: W,
    hash: sha1::Sha1,
    pub len: u64,
    limit: u64,
}

impl<W: Write> Sha1Writer<W> {
    pub fn new(inner: W) -> Self {
        Self::with_limit(inner, u64::MAX)
    }

    /// Refuses to pass on more than `limit` bytes (a file's recorded size: stored bytes that
    /// decode to more are damaged or hostile, and must not fill the disk first).
    pub fn with_limit(inner: W, limit: u64) -> Self {
        Self { inner, hash: <sha1::Sha1 as sha1::Digest>::new(), len: 0, limit }
    }

    /// The SHA-1 (hex) and size of everything written.
    pub fn finish(self) -> (W, String, u64) {
        let digest = <sha1::Sha1 as sha1::Digest>::finalize(self.hash);
        (self.inner, crate::hex::encode(&digest), self.len)
    }
}

impl<W: Write> Write for Sha1Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len.saturating_add(buf.len() as u64) > self.limit {
            return Err(std::io::Error::other(format!("decodes to more than its {} bytes", self.limit)));
        }
        let n = self.inner.write(buf)?;
        sha1::Digest::update(&mut self.hash, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Decodes a whole small object (a super block, a block map) to at most `limit` bytes.
pub fn decode_all(
    data: &[u8],
    pass: Option<&[u8]>,
    raw: bool,
    compress_type: &str,
    limit: usize,
    what: &str,
) -> Result<Vec<u8>> {
    let mut d = Decoder::new(pass, raw, compress_type, Bounded { data: Vec::new(), limit })?;
    d.update(data, what)?;
    Ok(d.finish(what)?.data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_what_encrypt_cbc_wrote_in_any_pieces() {
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sealed = super::super::encrypt_cbc(&plain, b"pass", [3; 8]);
        for piece in [1usize, 5, 16, 17, 1000] {
            let mut c = CbcDecrypt::new(b"pass", false);
            let mut out = Vec::new();
            for chunk in sealed.chunks(piece) {
                c.update(chunk, &mut out).expect("test data");
            }
            c.finish(&mut out).expect("test data");
            assert_eq!(out, plain, "pieces of {piece}");
        }
        // Raw: the same without the magic.
        let mut c = CbcDecrypt::new(b"pass", true);
        let mut out = Vec::new();
        c.update(&sealed[8..], &mut out).expect("test data");
        c.finish(&mut out).expect("test data");
        assert_eq!(out, plain);
        let mut c = CbcDecrypt::new(b"wrong", false);
        let mut out = Vec::new();
        c.update(&sealed, &mut out).expect("test data");
        assert!(c.finish(&mut out).is_err());
    }

    #[test]
    fn raw_gz_is_zlib() {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"hello hello hello").expect("test data");
        let stored = z.finish().expect("test data");
        assert_eq!(decode_all(&stored, None, true, "gz", 100, "t").expect("test data"), b"hello hello hello");
        assert!(decode_all(&stored, None, true, "gz", 5, "t").is_err());
    }
}
