//! JA4 and JA3 of a [`ClientHello`].
//!
//! JA4 (FoxIO, `technical_details/JA4.md`; summarised in `tests/data/ja4/README.md`) is
//! `A_B_C`:
//! - A: protocol (`t` TCP, `q` QUIC), version (highest non-GREASE supported_versions value, else
//!   the body's legacy_version), `d`/`i` for SNI present/absent, cipher and extension counts
//!   (GREASE excluded, capped at 99), and the first and last character of the first ALPN value
//!   (`00` if none; the hex digits of the value when either end is not ASCII alphanumeric).
//! - B: sha256 of the sorted non-GREASE ciphers as 4-digit hex joined by `,`, first 12 hex
//!   characters; `000000000000` when there are none.
//! - C: the same over the sorted non-GREASE extensions without SNI (0x0000) and ALPN (0x0010),
//!   followed by `_` and the signature_algorithms (0x000d) values in wire order when that
//!   extension is non-empty; `000000000000` when the extension list is empty.
//!
//! `ja4_r` is `A_<sorted ciphers>_<sorted extensions>[_<sigalgs>]`, the strings that are hashed.
//!
//! JA3 (Salesforce) is `legacy_version,ciphers,extensions,groups,point_formats` in decimal and
//! wire order, values joined by `-`, GREASE removed from ciphers, extensions and groups (point
//! formats kept); `ja3_hash` is its MD5 in lowercase hex.

use md5::{Digest as _, Md5};
use sha2::Sha256;

use crate::hello::ClientHello;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
/// JA4 counts are two decimal digits.
const MAX_JA4_COUNT: usize = 99;
/// Length of the truncated sha256 in JA4 parts B and C.
const JA4_HASH_CHARS: usize = 12;
const JA4_EMPTY_HASH: &str = "000000000000";

/// RFC 8701: GREASE values are `0x?a?a` with both bytes equal.
pub fn is_grease(value: u16) -> bool {
    value & 0x0f0f == 0x0a0a && value >> 8 == value & 0xff
}

/// Transport of the hello; the first character of JA4 (`q` for QUIC and `d` for DTLS join here
/// when those transports are captured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
}

impl Transport {
    fn ja4_char(self) -> u8 {
        match self {
            Transport::Tcp => b't',
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4 {
    pub ja4: String,
    pub ja4_r: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja3 {
    pub ja3: String,
    pub ja3_hash: String,
}

/// The version a client offers at most: the highest non-GREASE supported_versions value, else
/// the body's legacy_version.
pub fn offered_version(hello: &ClientHello) -> u16 {
    if hello.extensions.contains(&EXT_SUPPORTED_VERSIONS) {
        if let Some(max) = hello
            .supported_versions
            .iter()
            .copied()
            .filter(|v| !is_grease(*v))
            .max()
        {
            return max;
        }
    }
    hello.legacy_version
}

/// ja4sentinel's `tls_version`: `1.3`, `1.2`, `1.1`, `1.0`, `ssl3`, or the hex value.
pub fn tls_version_label(version: u16) -> String {
    match version {
        0x0304 => "1.3".into(),
        0x0303 => "1.2".into(),
        0x0302 => "1.1".into(),
        0x0301 => "1.0".into(),
        0x0300 => "ssl3".into(),
        0x0002 => "ssl2".into(),
        other => format!("{other:#06x}"),
    }
}

fn ja4_version(version: u16) -> &'static str {
    match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// Appends the two ALPN characters of JA4 part A (spec rule, see the module doc).
fn push_ja4_alpn(out: &mut Vec<u8>, first: Option<&[u8]>) {
    match first {
        Some([f, .., l] | [f @ l]) => {
            if f.is_ascii_alphanumeric() && l.is_ascii_alphanumeric() {
                out.extend_from_slice(&[*f, *l]);
            } else {
                out.extend_from_slice(&[
                    HEX_DIGITS[usize::from(f >> 4)],
                    HEX_DIGITS[usize::from(l & 0x0f)],
                ]);
            }
        }
        _ => out.extend_from_slice(b"00"),
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// The fingerprints are built as bytes (digit tables, no `fmt`, no `char` encoding: thousands
/// of numbers per second) from ASCII only, then made a `String`.
fn ascii_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_default()
}

/// Appends `bytes` as lowercase hex.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    for b in bytes {
        out.extend_from_slice(&[
            HEX_DIGITS[usize::from(b >> 4)],
            HEX_DIGITS[usize::from(b & 0xf)],
        ]);
    }
}

/// Appends `0a0b,1301,...`: four hex digits each, comma-separated (JA4's lists).
fn push_hex4_list(out: &mut Vec<u8>, values: impl Iterator<Item = u16>) {
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

/// Appends a JA4 count: two decimal digits, capped at 99.
fn push_count(out: &mut Vec<u8>, count: usize) {
    let n = count.min(MAX_JA4_COUNT) as u8;
    out.extend_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
}

/// Appends the first [`JA4_HASH_CHARS`] hex characters of the sha256 of `input`.
fn push_truncated_sha256(out: &mut Vec<u8>, input: &[u8]) {
    let digest = Sha256::digest(input);
    push_hex(out, digest.get(..JA4_HASH_CHARS / 2).unwrap_or(&digest));
}

#[cfg(test)]
fn truncated_sha256(input: &str) -> String {
    let mut out = Vec::new();
    push_truncated_sha256(&mut out, input.as_bytes());
    ascii_string(out)
}

pub fn ja4(hello: &ClientHello, transport: Transport) -> Ja4 {
    let not_grease = |v: &u16| !is_grease(*v);
    let mut ciphers = Vec::with_capacity(hello.ciphers.len());
    ciphers.extend(hello.ciphers.iter().copied().filter(not_grease));
    let extension_count = hello.extensions.iter().copied().filter(not_grease).count();
    let mut c_exts = Vec::with_capacity(hello.extensions.len());
    c_exts.extend(
        hello
            .extensions
            .iter()
            .copied()
            .filter(|e| not_grease(e) && *e != EXT_SERVER_NAME && *e != EXT_ALPN),
    );
    ciphers.sort_unstable();
    c_exts.sort_unstable();
    let sigalgs = if hello.extensions.contains(&EXT_SIGNATURE_ALGORITHMS) {
        hello.signature_algorithms.as_slice()
    } else {
        &[]
    };
    let has_sigalgs = sigalgs.iter().any(not_grease);

    // ja4_r is `A_<b_raw>_<c_raw>`; parts B and C hash the raw strings, sliced out of it.
    let mut ja4_r = Vec::with_capacity(
        12 + 5 * (ciphers.len() + c_exts.len() + sigalgs.len()) + usize::from(has_sigalgs),
    );
    ja4_r.push(transport.ja4_char());
    ja4_r.extend_from_slice(ja4_version(offered_version(hello)).as_bytes());
    ja4_r.push(if hello.extensions.contains(&EXT_SERVER_NAME) {
        b'd'
    } else {
        b'i'
    });
    push_count(&mut ja4_r, ciphers.len());
    push_count(&mut ja4_r, extension_count);
    push_ja4_alpn(&mut ja4_r, hello.first_alpn());
    let a_end = ja4_r.len();
    ja4_r.push(b'_');
    let b_start = ja4_r.len();
    push_hex4_list(&mut ja4_r, ciphers.iter().copied());
    let b_end = ja4_r.len();
    ja4_r.push(b'_');
    let c_start = ja4_r.len();
    push_hex4_list(&mut ja4_r, c_exts.iter().copied());
    if has_sigalgs {
        ja4_r.push(b'_');
        push_hex4_list(&mut ja4_r, sigalgs.iter().copied().filter(not_grease));
    }

    let mut ja4 = Vec::with_capacity(a_end + 2 + 2 * JA4_HASH_CHARS);
    ja4.extend_from_slice(ja4_r.get(..a_end).unwrap_or_default());
    ja4.push(b'_');
    if ciphers.is_empty() {
        ja4.extend_from_slice(JA4_EMPTY_HASH.as_bytes());
    } else {
        push_truncated_sha256(&mut ja4, ja4_r.get(b_start..b_end).unwrap_or_default());
    }
    ja4.push(b'_');
    if c_exts.is_empty() {
        ja4.extend_from_slice(JA4_EMPTY_HASH.as_bytes());
    } else {
        push_truncated_sha256(&mut ja4, ja4_r.get(c_start..).unwrap_or_default());
    }
    Ja4 {
        ja4: ascii_string(ja4),
        ja4_r: ascii_string(ja4_r),
    }
}

/// Appends `value` in decimal: the five digits are computed with fixed arithmetic, the leading
/// zeros shifted out, and five bytes stored at once (no `memcpy` call, no loop) before the
/// unused tail is cut.
fn push_decimal(out: &mut Vec<u8>, value: u16) {
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
fn push_decimal_list(out: &mut Vec<u8>, values: impl Iterator<Item = u16>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(b'-');
        }
        push_decimal(out, v);
    }
}

pub fn ja3(hello: &ClientHello) -> Ja3 {
    let not_grease = |v: &u16| !is_grease(*v);
    let values = hello.ciphers.len()
        + hello.extensions.len()
        + hello.supported_groups.len()
        + hello.ec_point_formats.len();
    let mut ja3 = Vec::with_capacity(10 + 6 * values);
    push_decimal(&mut ja3, hello.legacy_version);
    ja3.push(b',');
    push_decimal_list(&mut ja3, hello.ciphers.iter().copied().filter(not_grease));
    ja3.push(b',');
    push_decimal_list(
        &mut ja3,
        hello.extensions.iter().copied().filter(not_grease),
    );
    ja3.push(b',');
    push_decimal_list(
        &mut ja3,
        hello.supported_groups.iter().copied().filter(not_grease),
    );
    ja3.push(b',');
    push_decimal_list(
        &mut ja3,
        hello.ec_point_formats.iter().map(|&f| u16::from(f)),
    );
    let digest = Md5::digest(&ja3);
    let mut ja3_hash = Vec::with_capacity(32);
    push_hex(&mut ja3_hash, &digest);
    Ja3 {
        ja3: ascii_string(ja3),
        ja3_hash: ascii_string(ja3_hash),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::hello::tests::HelloBuilder;

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

    const SPEC_CIPHERS: [u16; 15] = [
        0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014,
        0x009c, 0x009d, 0x002f, 0x0035,
    ];
    const SPEC_SIGALGS: [u16; 8] = [
        0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601,
    ];

    /// The hello of JA4.md's worked example (extension contents filled in where JA4 reads
    /// them), with the given ciphers, supported_versions, sigalgs and extra extensions.
    fn spec_hello(
        ciphers: &[u16],
        versions: &[u16],
        sigalgs: &[u16],
        extra: &[u16],
    ) -> HelloBuilder {
        let mut b = HelloBuilder {
            ciphers: ciphers.to_vec(),
            ..Default::default()
        }
        .sni("example.com")
        .alpn(&[b"h2", b"http/1.1"])
        .supported_versions(versions)
        .sigalgs(sigalgs);
        for ext in [
            0x0005, 0x000a, 0x000b, 0x0012, 0x0015, 0x0017, 0x001b, 0x0023, 0x002d, 0x0033, 0x4469,
            0xff01,
        ]
        .iter()
        .chain(extra)
        {
            b = b.ext(*ext, Vec::new());
        }
        b
    }

    fn spec_example() -> HelloBuilder {
        spec_hello(&SPEC_CIPHERS, &[0x0304, 0x0303], &SPEC_SIGALGS, &[])
    }

    fn ja4_of(b: &HelloBuilder) -> String {
        ja4(&b.parse(), Transport::Tcp).ja4
    }

    #[test]
    fn spec_worked_example() {
        let fp = ja4(&spec_example().parse(), Transport::Tcp);
        assert_eq!(fp.ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(
            fp.ja4_r,
            "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
             0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_\
             0403,0804,0401,0503,0805,0501,0806,0601"
        );
    }

    #[test]
    fn grease_is_ignored_in_ciphers_extensions_versions_and_sigalgs() {
        let mut ciphers = vec![0x0a0a];
        ciphers.extend(SPEC_CIPHERS);
        ciphers.push(0xfafa);
        let mut sigalgs = vec![0x1a1a];
        sigalgs.extend(SPEC_SIGALGS);
        let b = spec_hello(
            &ciphers,
            &[0x7a7a, 0x0304, 0x0303],
            &sigalgs,
            &[0x2a2a, 0xdada],
        );
        assert_eq!(ja4_of(&b), "t13d1516h2_8daaf6152771_e5627efa2ab1");
        let ja3 = ja3(&b.parse()).ja3;
        for grease in ["2570", "64250", "10794", "56026"] {
            assert!(!ja3.split([',', '-']).any(|v| v == grease), "{ja3}");
        }
    }

    #[test]
    fn grease_detection_needs_both_bytes_equal() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x000a) && !is_grease(0x1301));
    }

    #[test]
    fn no_sni_is_i() {
        let b = HelloBuilder::default().alpn(&[b"h2"]);
        assert!(ja4_of(&b).starts_with("t12i0101h2_"));
    }

    #[test]
    fn no_alpn_extension_is_00() {
        let b = HelloBuilder::default().sni("x.example");
        assert!(ja4_of(&b).starts_with("t12d010100_"));
    }

    #[test]
    fn empty_alpn_list_and_empty_first_value_are_00() {
        let empty_list = HelloBuilder::default().alpn(&[]);
        assert!(ja4_of(&empty_list).starts_with("t12i010100_"));
        let empty_value = HelloBuilder::default().alpn(&[b"", b"h2"]);
        assert!(ja4_of(&empty_value).starts_with("t12i010100_"));
    }

    #[test]
    fn one_char_alpn_is_doubled() {
        let b = HelloBuilder::default().alpn(&[b"x"]);
        assert!(ja4_of(&b).starts_with("t12i0101xx_"));
    }

    #[test]
    fn non_alphanumeric_alpn_uses_hex_digits() {
        for (value, want) in [
            (&[0xab, 0xcd][..], "ad"),
            (&[0x30, 0xab][..], "3b"),
            (&[0xba, 0xad][..], "bd"),
            (&b"#h2"[..], "22"),
            (&b"h2#"[..], "63"),
        ] {
            let b = HelloBuilder::default().alpn(&[value]);
            assert_eq!(&ja4_of(&b)[8..10], want, "{value:02x?}");
        }
    }

    #[test]
    fn counts_are_capped_at_99() {
        let mut b = HelloBuilder {
            ciphers: (1..=150).collect(),
            ..Default::default()
        };
        for ext in 0x0100..0x0100 + 120u16 {
            b = b.ext(ext, Vec::new());
        }
        let fp = ja4(&b.parse(), Transport::Tcp);
        assert!(fp.ja4.starts_with("t12i999900_"), "{}", fp.ja4);
        // The hashed lists keep every value.
        assert_eq!(fp.ja4_r.split('_').nth(1).unwrap().split(',').count(), 150);
    }

    #[test]
    fn supported_versions_wins_over_legacy_version() {
        let b = HelloBuilder {
            legacy_version: 0x0303,
            ..Default::default()
        }
        .supported_versions(&[0x0301, 0x0304, 0x0302]);
        let hello = b.parse();
        assert!(ja4(&hello, Transport::Tcp).ja4.starts_with("t13"));
        assert_eq!(tls_version_label(offered_version(&hello)), "1.3");
        let legacy = HelloBuilder {
            legacy_version: 0x0301,
            record_version: 0x0300,
            ..Default::default()
        };
        assert!(
            ja4_of(&legacy).starts_with("t10"),
            "record version is never used"
        );
        let grease_only = HelloBuilder::default().supported_versions(&[0x4a4a]);
        assert!(ja4_of(&grease_only).starts_with("t12"));
    }

    #[test]
    fn empty_lists_hash_to_zeros_and_no_trailing_underscore() {
        let b = HelloBuilder {
            ciphers: vec![],
            ..Default::default()
        }
        .sni("only.sni");
        let fp = ja4(&b.parse(), Transport::Tcp);
        assert_eq!(fp.ja4, "t12d000100_000000000000_000000000000");
        assert_eq!(fp.ja4_r, "t12d000100__");
        let no_sigalgs = HelloBuilder::default().ext(0x0017, Vec::new());
        let fp = ja4(&no_sigalgs.parse(), Transport::Tcp);
        assert!(fp.ja4_r.ends_with("_0017"), "{}", fp.ja4_r);
        assert_eq!(&fp.ja4[24..], truncated_sha256("0017"));
    }

    #[test]
    fn only_signature_algorithms_extension_feeds_part_c() {
        // signature_algorithms_cert (0x0032) content must not be appended.
        let b = HelloBuilder::default()
            .ext(0x0032, vec![0, 2, 4, 3])
            .ext(0x0017, Vec::new());
        assert!(ja4(&b.parse(), Transport::Tcp)
            .ja4_r
            .ends_with("_0017,0032"));
    }

    #[test]
    fn ja3_keeps_wire_order_point_formats_and_empty_fields() {
        let b = HelloBuilder {
            legacy_version: 0x0301,
            ciphers: vec![0x0a0a, 0x0039, 0x0038, 0x00ff],
            ..Default::default()
        }
        .sni("x")
        .groups(&[0x1a1a, 0x001d, 0x0017])
        .point_formats(&[0, 1, 2]);
        let fp = ja3(&b.parse());
        assert_eq!(fp.ja3, "769,57-56-255,0-10-11,29-23,0-1-2");
        let bare = HelloBuilder {
            legacy_version: 0x0301,
            ciphers: vec![0x0039],
            ..Default::default()
        }
        .sni("x");
        assert_eq!(ja3(&bare.parse()).ja3, "769,57,0,,");
        // md5("769,57,0,,")
        assert_eq!(ja3(&bare.parse()).ja3_hash.len(), 32);
    }

    #[test]
    fn ja3_hash_is_md5_of_the_string() {
        let fp = ja3(&spec_example().parse());
        let digest = Md5::digest(fp.ja3.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(fp.ja3_hash, hex);
    }
}
