//! Digit writers shared by the fingerprints: they are built as bytes (digit tables, no `fmt`, no
//! `char` encoding: thousands of numbers per second) from ASCII only, then made a `String`.

use sha2::{Digest as _, Sha256};

/// JA4-family counts are two decimal digits.
pub(crate) const MAX_TWO_DIGIT_COUNT: usize = 99;
/// Length of a truncated sha256 in the JA4 family (`hash12`).
pub(crate) const HASH_CHARS: usize = 12;
/// What the JA4 family writes for the hash of an empty list.
pub(crate) const EMPTY_HASH: &str = "000000000000";

pub(crate) const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The bytes written by these helpers as a `String` (they are ASCII).
pub(crate) fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

/// Appends `bytes` as lowercase hex.
pub(crate) fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.extend_from_slice(&[
            HEX_DIGITS[usize::from(b >> 4)],
            HEX_DIGITS[usize::from(b & 0xf)],
        ]);
    }
}

/// Appends `0a0b,1301,...`: four hex digits each, comma-separated (JA4's lists).
pub(crate) fn push_hex4_list(out: &mut Vec<u8>, values: impl Iterator<Item = u16>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let [hi, lo] = v.to_be_bytes();
        out.extend_from_slice(&[
            HEX_DIGITS[usize::from(hi >> 4)],
            HEX_DIGITS[usize::from(hi & 0xf)],
            HEX_DIGITS[usize::from(lo >> 4)],
            HEX_DIGITS[usize::from(lo & 0xf)],
        ]);
    }
}

/// Appends a JA4-family count: two decimal digits, capped at 99.
pub(crate) fn push_count(out: &mut Vec<u8>, count: usize) {
    let n = count.min(MAX_TWO_DIGIT_COUNT) as u8;
    out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
}

/// Appends the first [`HASH_CHARS`] hex characters of the sha256 of `input`.
pub(crate) fn push_truncated_sha256(out: &mut Vec<u8>, input: &[u8]) {
    let digest = Sha256::digest(input);
    push_hex(out, digest.get(..HASH_CHARS / 2).unwrap_or(&digest));
}

#[cfg(test)]
pub(crate) fn truncated_sha256(input: &str) -> String {
    let mut out = Vec::new();
    push_truncated_sha256(&mut out, input.as_bytes());
    ascii_string(out)
}

/// Appends `value` in decimal: the five digits are computed with fixed arithmetic, the leading
/// zeros shifted out, and five bytes stored at once (no `memcpy` call, no loop) before the
/// unused tail is cut.
pub(crate) fn push_decimal(out: &mut Vec<u8>, value: u16) {
    let v = u32::from(value);
    let digit = |d: u32| b'0' + (d % 10) as u8;
    let ascii = u64::from_le_bytes([
        digit(v / 10000),
        digit(v / 1000),
        digit(v / 100),
        digit(v / 10),
        digit(v),
        0,
        0,
        0,
    ]);
    let leading_zeros = match value {
        0..=9 => 4,
        10..=99 => 3,
        100..=999 => 2,
        1000..=9999 => 1,
        _ => 0,
    };
    let text = (ascii >> (8 * leading_zeros)).to_le_bytes();
    out.extend_from_slice(&text[..5]);
    out.truncate(out.len() - leading_zeros);
}

/// `771-4865-...`: decimal, dash-separated (JA3's lists), appended to `out`.
pub(crate) fn push_decimal_list(out: &mut Vec<u8>, values: impl Iterator<Item = u16>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b'-');
        }
        push_decimal(out, v);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn digit_writers_match_fmt_for_every_u16() {
        for v in 0..=u16::MAX {
            let mut dec = Vec::new();
            push_decimal(&mut dec, v);
            assert_eq!(dec, v.to_string().as_bytes());
            let mut hex = Vec::new();
            push_hex4_list(&mut hex, [v, v].into_iter());
            assert_eq!(hex, format!("{v:04x},{v:04x}").as_bytes());
        }
    }
}
