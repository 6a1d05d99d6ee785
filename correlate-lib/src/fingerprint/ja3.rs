//! JA3 (Salesforce) of a [`ClientHello`]: `legacy_version,ciphers,extensions,groups,point_formats`
//! in decimal and wire order, values joined by `-`, GREASE removed from ciphers, extensions and
//! groups (point formats kept); `ja3_hash` is its MD5 in lowercase hex.

use md5::{Digest as _, Md5};

use super::digits::{ascii_string, push_decimal, push_decimal_list, push_hex};
use super::hello::ClientHello;
use super::ja4::is_grease;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja3 {
    pub ja3: String,
    pub ja3_hash: String,
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
    use crate::fingerprint::hello::testing::HelloBuilder;
    use crate::fingerprint::ja4::tests::spec_example;

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
