//! JA4 of a [`ClientHello`] (BSD-3-Clause, FoxIO), and the version helpers JA3 shares.
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

use super::digits::{
    ascii_string, push_count, push_hex4_list, push_truncated_sha256, EMPTY_HASH, HASH_CHARS,
    HEX_DIGITS,
};
use super::hello::ClientHello;

const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;

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

    let mut ja4 = Vec::with_capacity(a_end + 2 + 2 * HASH_CHARS);
    ja4.extend_from_slice(ja4_r.get(..a_end).unwrap_or_default());
    ja4.push(b'_');
    if ciphers.is_empty() {
        ja4.extend_from_slice(EMPTY_HASH.as_bytes());
    } else {
        push_truncated_sha256(&mut ja4, ja4_r.get(b_start..b_end).unwrap_or_default());
    }
    ja4.push(b'_');
    if c_exts.is_empty() {
        ja4.extend_from_slice(EMPTY_HASH.as_bytes());
    } else {
        push_truncated_sha256(&mut ja4, ja4_r.get(c_start..).unwrap_or_default());
    }
    Ja4 {
        ja4: ascii_string(ja4),
        ja4_r: ascii_string(ja4_r),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use crate::fingerprint::digits::truncated_sha256;
    use crate::fingerprint::hello::testing::HelloBuilder;
    use crate::fingerprint::ja3::ja3;

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

    pub(crate) fn spec_example() -> HelloBuilder {
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
}
