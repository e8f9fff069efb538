//! pgBackRest's block-incremental map (`src/command/backup/blockMap.c`): for each block of a
//! file, in file order, which backup (an index into the manifest's `backup-reference` list),
//! which bundle, and which super block holds it, and the block's number in that super block.
//!
//! The map is a varint-128 flag (version 0), then references, each followed by its super
//! blocks, each by its blocks' checksums. A reference seen for the first time may carry a
//! bundle id and an offset; seen again it either continues its last super block or starts a
//! new one at an offset after the last. Super block sizes are coded as the difference from the
//! previous one (zig-zag), and a super block's block count is implied by its size unless given.
//! The last reference and the last super block of each are flagged.

use crate::error::{FormatError, Result};

const LAST: u64 = 1;
const REF_BUNDLE_ID: u64 = 2;
const REF_OFFSET: u64 = 4;
const REF_CONTINUE: u64 = 2;
const REF_CONTINUE_LAST: u64 = 4;
const REF_SHIFT: u32 = 3;
const SB_SIZE_REMAINDER: u64 = 1;
const SB_SIZE_SHIFT: u32 = 1;
const SB_CHANGE: u64 = 2;
const SB_TOTAL_OFFSET: u64 = 4;
const SB_SHIFT: u32 = 3;
const BLOCK_TOTAL_OFFSET: u64 = 1;
const BLOCK_TOTAL_SHIFT: u32 = 1;

/// Where one block of a file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockItem {
    /// Index into the manifest's reference list.
    pub reference: u32,
    /// 0: not in a bundle (the file's own `.pgbi` object).
    pub bundle_id: u64,
    /// Offset of the super block in that object.
    pub offset: u64,
    /// Stored (compressed, encrypted) size of the super block.
    pub size: u64,
    /// Plaintext size of the super block.
    pub super_block_size: u64,
    /// The block's number within the super block.
    pub block: u64,
}

struct Cursor<'a> {
    data: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn varint(&mut self) -> Result<u64> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = *self.data.get(self.at).ok_or_else(|| corrupt("ends inside a number"))?;
            self.at += 1;
            value |= u64::from(byte & 0x7f).checked_shl(7 * i).ok_or_else(|| corrupt("number too large"))?;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(corrupt("number too long"))
    }

    fn skip(&mut self, n: usize) -> Result<()> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or_else(|| corrupt("ends inside a checksum"))?;
        self.at = end;
        Ok(())
    }
}

fn corrupt(why: &str) -> FormatError {
    FormatError::corrupt("pgBackRest block map", why.to_string())
}

struct RefState {
    reference: u32,
    super_block_size: u64,
    bundle_id: u64,
    offset: u64,
    size: u64,
    block: u64,
}

/// Reads a block map, calling `each` with every block in file order (nothing is collected: what
/// a map names costs no memory); returns how many blocks it names. `block_size` and
/// `checksum_size` are the file's (`bi` × 8192, `bic`); `max_blocks` bounds what is read (the
/// file's size in blocks): a map that names more is refused.
pub fn for_each<E: From<FormatError>>(
    map: &[u8],
    block_size: u64,
    checksum_size: usize,
    max_blocks: u64,
    mut each: impl FnMut(BlockItem) -> std::result::Result<(), E>,
) -> std::result::Result<u64, E> {
    if block_size == 0 {
        return Err(corrupt("block size 0").into());
    }
    let mut c = Cursor { data: map, at: 0 };
    if c.varint()? & 1 != 0 {
        return Err(corrupt("block map version must be zero").into());
    }
    let mut refs: Vec<RefState> = Vec::new();
    let mut count = 0u64;
    let mut size_last: u64 = 0;
    loop {
        let encoded = c.varint()?;
        let reference = u32::try_from(encoded >> REF_SHIFT).map_err(|_| corrupt("reference out of range"))?;
        let mut item =
            BlockItem { reference, bundle_id: 0, offset: 0, size: 0, super_block_size: block_size, block: 0 };
        let mut continued = false;
        let ri = match refs.iter().position(|r| r.reference == reference) {
            None => {
                if encoded & REF_BUNDLE_ID != 0 {
                    item.bundle_id = c.varint()?;
                }
                if encoded & REF_OFFSET != 0 {
                    item.offset = c.varint()?;
                }
                refs.push(RefState {
                    reference,
                    super_block_size: block_size,
                    bundle_id: item.bundle_id,
                    offset: item.offset,
                    size: 0,
                    block: 0,
                });
                refs.len() - 1
            }
            Some(i) => {
                let r = &mut refs[i];
                item.super_block_size = r.super_block_size;
                item.bundle_id = r.bundle_id;
                if encoded & REF_CONTINUE != 0 {
                    item.offset = r.offset;
                    item.size = r.size;
                    continued = true;
                } else {
                    item.offset = r.offset.checked_add(r.size).ok_or_else(|| corrupt("offset overflow"))?;
                    if encoded & REF_OFFSET != 0 {
                        item.offset = item.offset.checked_add(c.varint()?).ok_or_else(|| corrupt("offset overflow"))?;
                    }
                    r.offset = item.offset;
                }
                i
            }
        };
        let mut first = true;
        loop {
            let sb_encoded;
            if continued {
                sb_encoded = (if encoded & REF_CONTINUE_LAST != 0 { LAST } else { 0 }) | SB_TOTAL_OFFSET;
                continued = false;
            } else {
                sb_encoded = c.varint()?;
                let coded = sb_encoded >> SB_SHIFT;
                item.size = if size_last != 0 {
                    let delta = (coded >> 1) as i64 ^ -((coded & 1) as i64);
                    u64::try_from(i128::from(size_last) + i128::from(delta))
                        .map_err(|_| corrupt("super block size out of range"))?
                } else {
                    coded
                };
                let r = &mut refs[ri];
                if sb_encoded & SB_CHANGE != 0 {
                    let sbs = c.varint()?;
                    let mut size = (sbs >> SB_SIZE_SHIFT)
                        .checked_mul(block_size)
                        .ok_or_else(|| corrupt("super block size overflow"))?;
                    if sbs & SB_SIZE_REMAINDER != 0 {
                        size = size.checked_add(c.varint()?).ok_or_else(|| corrupt("super block size overflow"))?;
                    }
                    item.super_block_size = size;
                    r.super_block_size = size;
                }
                if first {
                    r.offset = item.offset;
                } else {
                    r.offset = r.offset.checked_add(size_last).ok_or_else(|| corrupt("offset overflow"))?;
                }
                r.size = item.size;
                r.block = 0;
            }
            size_last = item.size;
            first = false;
            let r = &mut refs[ri];
            let total = if sb_encoded & SB_TOTAL_OFFSET != 0 {
                let t = c.varint()?;
                if t & BLOCK_TOTAL_OFFSET != 0 {
                    r.block = r.block.checked_add(c.varint()?).ok_or_else(|| corrupt("block number overflow"))?;
                }
                (t >> BLOCK_TOTAL_SHIFT).checked_add(1).ok_or_else(|| corrupt("block total overflow"))?
            } else {
                item.super_block_size.div_ceil(block_size)
            };
            if count.saturating_add(total) > max_blocks {
                return Err(corrupt("names more blocks than the file has").into());
            }
            let first = r.block;
            for i in 0..total {
                item.block = first + i;
                c.skip(checksum_size)?;
                each(item)?;
            }
            count += total;
            r.block = r.block.checked_add(total).ok_or_else(|| corrupt("block number overflow"))?;
            item.offset = item.offset.checked_add(item.size).ok_or_else(|| corrupt("offset overflow"))?;
            if sb_encoded & LAST != 0 {
                break;
            }
        }
        if encoded & LAST != 0 {
            break;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    #[test]
    fn one_reference_two_super_blocks() {
        // Version 0; reference 0, last, in bundle 1 at offset 100; a super block of one block
        // stored in 50 bytes, then a last one (size +10: zig-zag 20).
        let mut m = Vec::new();
        varint(0, &mut m);
        varint(LAST | REF_BUNDLE_ID | REF_OFFSET, &mut m);
        varint(1, &mut m);
        varint(100, &mut m);
        varint(50 << SB_SHIFT, &mut m);
        m.extend_from_slice(&[0; 6]);
        varint((20 << SB_SHIFT) | LAST, &mut m);
        m.extend_from_slice(&[0; 6]);
        let read = |m: &[u8], max| {
            let mut items = Vec::new();
            for_each::<FormatError>(m, 8192 * 2, 6, max, |i| {
                items.push(i);
                Ok(())
            })
            .map(|_| items)
        };
        let items = read(&m, 10).expect("test data");
        assert_eq!(items.len(), 2);
        assert_eq!((items[0].bundle_id, items[0].offset, items[0].size, items[0].block), (1, 100, 50, 0));
        assert_eq!((items[1].offset, items[1].size, items[1].block), (150, 60, 0));
        assert!(read(&m, 1).is_err());
        assert!(read(&m[..m.len() - 1], 10).is_err());
    }
}
