//! The client's OS guessed from its SYN ([`SynTraits`]) with a p0f signature database: the
//! `p0f.fp` that the `huginn-net-db` crate ships (p0f 3's database, © 2012 Michal Zalewski,
//! GNU LGPL 2.1, with huginn-net's 2025–2026 additions; the crate itself is MIT OR Apache-2.0;
//! see the README), parsed and matched by that crate. Nothing here is a table of ours: this
//! module only turns our parse of the SYN into huginn-net's observation.
//!
//! A guess is reported only for an exact match (p0f's "specific" or "generic" signatures); a
//! fuzzy one (a tolerated TTL or quirk) is left out: the detector compares the OS with the
//! User-Agent's, and a weak guess there makes false alarms. The hop distance is reported for
//! every SYN: from the matched signature's initial TTL, else from the nearest common initial
//! TTL (32, 64, 128, 255), as p0f does.

use huginn_net_db::TcpDatabase;
use huginn_net_tcp::matcher_api::TcpMatcher as _;
use huginn_net_tcp::observable::TcpObservation;
use huginn_net_tcp::output::MatchRank;
use huginn_net_tcp::tcp::{IpVersion as HuginnIpVersion, PayloadSize, QuirkSet, TcpOption};

use super::syn::{IpVersion, SynTraits};

/// Longest `tcp_os` label kept in a record (p0f's longest is about 40 characters).
pub const MAX_OS_LABEL_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum OsError {
    #[error("the p0f signature database does not load: {0}")]
    Database(String),
}

/// The guess for one SYN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsGuess {
    /// `Linux 3.11 and newer`, `Windows 7 or 8`, `Mac OS X`...: the signature's name and flavor.
    /// `None` when no signature matched exactly.
    pub label: Option<String>,
    /// Hops from the client: initial TTL minus the TTL seen.
    pub distance: u8,
}

/// The loaded signature database (about 1 000 lines, parsed once per process or per httpd
/// configuration generation).
pub struct OsDatabase {
    db: TcpDatabase,
}

impl std::fmt::Debug for OsDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OsDatabase").finish_non_exhaustive()
    }
}

impl OsDatabase {
    /// The database embedded in `huginn-net-db`.
    pub fn load() -> Result<Self, OsError> {
        TcpDatabase::load_default()
            .map(|db| Self { db })
            .map_err(|e| OsError::Database(e.to_string()))
    }

    /// The client's OS and distance from its SYN.
    pub fn guess(&self, syn: &SynTraits) -> OsGuess {
        let observation = observation(syn);
        let matcher = huginn_net_db::TcpSignatureMatcher::new(&self.db);
        match matcher.match_tcp_request(&observation) {
            Some(found) if !matches!(found.rank, MatchRank::Fuzzy(_)) => OsGuess {
                label: Some(label(&found.os.name, found.os.variant.as_deref())),
                distance: found.dist,
            },
            _ => OsGuess {
                label: None,
                distance: huginn_net_tcp::ttl::guess_distance(syn.ip.ttl),
            },
        }
    }
}

/// `name flavor`, cut to [`MAX_OS_LABEL_LEN`] bytes on a character boundary.
fn label(name: &str, flavor: Option<&str>) -> String {
    let mut out = String::with_capacity(name.len() + 1 + flavor.map_or(0, str::len));
    out.push_str(name);
    if let Some(flavor) = flavor.filter(|f| !f.is_empty()) {
        out.push(' ');
        out.push_str(flavor);
    }
    let mut end = out.len().min(MAX_OS_LABEL_LEN);
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

/// huginn-net's observation of a SYN, built from our parse (what its own packet code would
/// compute from the same headers; `tos` and `tot_hdr` as it defines them).
fn observation(syn: &SynTraits) -> TcpObservation {
    let p0f = &syn.p0f;
    let olayout = p0f
        .layout
        .as_slice()
        .iter()
        .map(|&kind| match kind {
            0 => TcpOption::Eol(p0f.eol_padding),
            1 => TcpOption::Nop,
            2 => TcpOption::Mss,
            3 => TcpOption::Ws,
            4 => TcpOption::Sok,
            5 => TcpOption::Sack,
            8 => TcpOption::TS,
            other => TcpOption::Unknown(other),
        })
        .collect();
    TcpObservation {
        version: match p0f.version {
            IpVersion::V4 => HuginnIpVersion::V4,
            IpVersion::V6 => HuginnIpVersion::V6,
        },
        ittl: huginn_net_tcp::ttl::calculate_ttl(syn.ip.ttl),
        olen: p0f.ip_options_len,
        mss: p0f.mss,
        wsize: syn.tcp.window_size,
        tot_hdr: p0f.header_len,
        wscale: syn.tcp.window_scale,
        olayout,
        // Our bits are p0f's QUIRK_* values, as huginn-net's are.
        quirks: QuirkSet::from_bits(p0f.quirks.bits()),
        pclass: if p0f.payload_len == 0 {
            PayloadSize::Zero
        } else {
            PayloadSize::NonZero
        },
        peer_mss: None,
        tos: p0f.tos,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::fingerprint::syn::parse_syn;
    use crate::fingerprint::syn::testing::{ipv4_syn, ipv6_syn, LINUX_OPTIONS};

    fn guess(packet: &[u8]) -> OsGuess {
        OsDatabase::load()
            .unwrap()
            .guess(&parse_syn(packet).unwrap())
    }

    #[test]
    fn a_modern_linux_syn_is_linux_3_11_and_newer() {
        // p0f.fp: `*:64:0:*:mss*20,7:mss,sok,ts,nop,ws:df,id+:0` (window 20 × 1460).
        let g = guess(&ipv4_syn(57, true, 4242, 29200, &LINUX_OPTIONS));
        assert_eq!(g.label.as_deref(), Some("Linux 3.11 and newer"));
        assert_eq!(g.distance, 7);
        let v6 = guess(&ipv6_syn(60, 29200, &LINUX_OPTIONS));
        assert_eq!(v6.label.as_deref(), Some("Linux 3.11 and newer"));
        assert_eq!(v6.distance, 4);
    }

    #[test]
    fn a_windows_syn_is_windows() {
        // Windows 10/11: window 64240 (mss*44), MSS 1460, NOP, WScale 8, NOP, NOP, SACK-permitted.
        let opts = [2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2];
        let g = guess(&ipv4_syn(120, true, 0x1234, 64240, &opts));
        let label = g.label.unwrap();
        assert!(label.starts_with("Windows"), "{label}");
        assert_eq!(g.distance, 8);
    }

    #[test]
    fn an_unknown_syn_has_no_label_but_a_distance() {
        // No options at all, odd window: no signature.
        let g = guess(&ipv4_syn(50, true, 1, 1234, &[]));
        assert_eq!(g.label, None);
        assert_eq!(g.distance, 14);
    }

    #[test]
    fn labels_are_bounded_on_char_boundaries() {
        assert_eq!(
            label("Linux", Some("3.11 and newer")),
            "Linux 3.11 and newer"
        );
        assert_eq!(label("Mac OS X", None), "Mac OS X");
        assert_eq!(label("Mac OS X", Some("")), "Mac OS X");
        let long = label(&"é".repeat(40), Some("x"));
        assert!(long.len() <= MAX_OS_LABEL_LEN && long.chars().all(|c| c == 'é'));
    }

    proptest::proptest! {
        #[test]
        fn any_options_and_ttl_never_panic(ttl: u8, window: u16, opts in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let db = OsDatabase::load().unwrap();
            let _ = db.guess(&parse_syn(&ipv4_syn(ttl, true, 1, window, &opts)).unwrap());
        }
    }
}
