//! JA4T: `<window>_<option kinds>_<mss>_<window scale>` of a client's SYN, e.g.
//! `64240_2-1-3-1-1-4_1460_8` (FoxIO `technical_details/JA4T.png`; the fifth part, retransmission
//! timings, exists only in the active JA4TScan).
//!
//! - window: the raw window field (before scaling), decimal;
//! - option kinds in wire order, decimal, joined by `-`, as a dissector lists them: EOL padding
//!   after the end-of-options shows as more `0`s (`...-8-4-0-0` for macOS), and nothing for a SYN
//!   without options (`8192__0_0`);
//! - the MSS option's value, `0` without one; the window-scale shift, `0` without one.

use crate::fingerprint::syn::SynTraits;
use crate::TlsRecord;

/// JA4T of a parsed SYN (the module's inline mode: `TCP_SAVED_SYN`; the sensor: the captured SYN).
pub fn ja4t(syn: &SynTraits) -> String {
    ja4t_of(
        syn.tcp.window_size,
        syn.option_kinds.as_slice(),
        syn.tcp.mss,
        syn.tcp.window_scale.unwrap_or(0),
    )
}

/// JA4T of the SYN a ring record describes (the module's sensor mode); `None` when the sensor
/// did not see the SYN.
pub fn ja4t_of_record(record: &TlsRecord) -> Option<String> {
    let tcp = record.tcp.as_ref()?;
    Some(ja4t_of(
        tcp.window_size,
        record.tcp_option_kinds.as_slice(),
        tcp.mss,
        tcp.window_scale.unwrap_or(0),
    ))
}

fn ja4t_of(window: u16, kinds: &[u8], mss: u16, window_scale: u8) -> String {
    // 5 + 1 + 40 × 4 + 1 + 5 + 1 + 3 bytes at most.
    let mut out = String::with_capacity(16 + 4 * kinds.len());
    let mut digits = itoa::Buffer::new();
    out.push_str(digits.format(window));
    out.push('_');
    for (i, kind) in kinds.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        out.push_str(digits.format(*kind));
    }
    out.push('_');
    out.push_str(digits.format(mss));
    out.push('_');
    out.push_str(digits.format(window_scale));
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fingerprint::syn::parse_syn;
    use crate::fingerprint::syn::testing::{ipv4_syn, ipv6_syn};

    /// FoxIO's Rust `ja4` snapshots give one JA4T per TCP stream; these SYNs carry the option
    /// bytes of the SYNs behind three of them (Windows in `latest.pcapng`, macOS in
    /// `macos_tcp_flags.pcap`, Linux in `ssh-r.pcap`). The pcaps themselves are checked by
    /// `sensor/tests/ja4t_corpus.rs`.
    #[test]
    fn foxio_snapshot_values() {
        let windows = [2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2];
        let syn = parse_syn(&ipv4_syn(128, true, 1, 64240, &windows)).unwrap();
        assert_eq!(ja4t(&syn), "64240_2-1-3-1-1-4_1460_8");
        let macos = [
            2, 4, 5, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 4, 2, 0, 0,
        ];
        let syn = parse_syn(&ipv6_syn(64, 65535, &macos)).unwrap();
        assert_eq!(ja4t(&syn), "65535_2-1-3-1-1-8-4-0-0_1460_6");
        let linux = [
            2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let syn = parse_syn(&ipv4_syn(64, true, 1, 29200, &linux)).unwrap();
        assert_eq!(ja4t(&syn), "29200_2-4-8-1-3_1460_7");
        // gre-erspan-vxlan.pcap's snapshot: a SYN without options.
        let bare = parse_syn(&ipv4_syn(64, false, 1, 8192, &[])).unwrap();
        assert_eq!(ja4t(&bare), "8192__0_0");
    }

    #[test]
    fn a_ring_record_gives_the_same_ja4t_as_its_syn() {
        let opts = [2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2];
        let syn = parse_syn(&ipv4_syn(128, true, 1, 64240, &opts)).unwrap();
        let record = TlsRecord {
            tcp: Some(syn.tcp.clone()),
            tcp_option_kinds: syn.option_kinds,
            ..TlsRecord::default()
        };
        let mut buf = Vec::new();
        record.encode(&mut buf).unwrap();
        let decoded = TlsRecord::decode(&buf).unwrap();
        assert_eq!(ja4t_of_record(&decoded), Some(ja4t(&syn)));
        assert_eq!(ja4t_of_record(&TlsRecord::default()), None);
    }
}
