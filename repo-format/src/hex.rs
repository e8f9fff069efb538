//! Lower-case hexadecimal text for digests, ids and salts, and the serde glue to store them so.

use crate::error::{FormatError, Result};

/// Encodes bytes as lower-case hex.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Decodes hex (either case) into exactly `N` bytes.
pub fn decode_array<const N: usize>(text: &str) -> Result<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != N * 2 {
        return Err(FormatError::invalid("hex value", format!("expected {} hex digits, found {}", N * 2, bytes.len())));
    }
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(out)
}

/// Decodes hex (either case) of any even length; `None` when it is not hex.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes.chunks_exact(2).map(|pair| Some((nibble(pair[0]).ok()? << 4) | nibble(pair[1]).ok()?)).collect()
}

fn nibble(c: u8) -> Result<u8> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(FormatError::invalid("hex value", format!("{:?} is not a hex digit", char::from(c)))),
    }
}

/// `#[serde(with = "crate::hex::array")]` for `[u8; N]` fields.
pub mod array {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let text = String::deserialize(d)?;
        super::decode_array(&text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_digits() {
        let bytes = [0x00, 0x9f, 0xa5, 0xff];
        assert_eq!(encode(&bytes), "009fa5ff");
        assert_eq!(decode_array::<4>("009FA5ff").ok(), Some(bytes));
        assert!(decode_array::<4>("009fa5f").is_err());
        assert!(decode_array::<2>("zz00").is_err());
    }
}
