//! The traits of a client's SYN, read from its raw IP packet: an IPv4 or IPv6 header (IPv6
//! extension headers included) followed by the TCP header with its options, and no link layer.
//! That is what Linux's `getsockopt(TCP_SAVED_SYN)` returns on a socket accepted from a listener
//! with `TCP_SAVE_SYN` set to 1 (the saved bytes end with the TCP header: a Fast Open payload is
//! not kept, the IP length fields still count it), and what the sensor finds after the link
//! header of a captured frame (the payload may follow; it is not read).
//!
//! One pass over the headers gives what every consumer needs:
//! - [`IpMeta`]/[`TcpMeta`] (ja4sentinel's `ip_meta_*`/`tcp_meta_*` fields): TTL, total length,
//!   IPv4 id and DF; window, MSS, window scale and the option names in wire order;
//! - every option kind as the wire carries it ([`SynTraits::option_kinds`], JA4T's list);
//! - p0f's view ([`P0fTraits`]: IP version, IP options length, TOS, header length, option layout
//!   with EOL padding, quirks, payload) for the OS guess in [`super::os`].
//!
//! The bytes are hostile: every field is read through a bounds check, lengths are checked
//! against the buffer and against the header limits (60-byte TCP header, 40 bytes of options,
//! at most [`MAX_IPV6_EXTENSION_HEADERS`] IPv6 extension headers), nothing allocates beyond the
//! option-name string, and no input panics.

use crate::record::{IpMeta, TcpMeta};

/// TCP options: the 4-bit data offset counts 32-bit words, the fixed header is 20 bytes.
pub const MAX_TCP_OPTION_BYTES: usize = 40;
const TCP_FIXED_HEADER_LEN: usize = 20;
const IPV4_MIN_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// IPv6 extension headers walked before the TCP header; a real SYN has none (hop-by-hop or a
/// destination option at most). Past it the packet is refused, which bounds the walk.
pub const MAX_IPV6_EXTENSION_HEADERS: usize = 8;

const PROTO_TCP: u8 = 6;
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_URG: u8 = 0x20;
const TCP_ECE: u8 = 0x40;
const TCP_CWR: u8 = 0x80;

const OPT_EOL: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;
const OPT_WSCALE: u8 = 3;
const OPT_SACK_PERMITTED: u8 = 4;
const OPT_TIMESTAMPS: u8 = 8;
/// RFC 7323 §2.3: a shift above 14 is treated as 14; p0f calls it a quirk (`exws`).
const MAX_WINDOW_SCALE: u8 = 14;

/// Why bytes are not the SYN of a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SynError {
    #[error("{layer} header needs {needed} bytes, packet has {len}")]
    Truncated {
        layer: &'static str,
        needed: usize,
        len: usize,
    },
    #[error("IP version {version} is neither 4 nor 6")]
    NotIp { version: u8 },
    #[error("IPv4 header length {len} is below the 20-byte minimum")]
    BadIpv4HeaderLength { len: usize },
    #[error("TCP data offset {len} is below the 20-byte minimum")]
    BadTcpHeaderLength { len: usize },
    #[error("IP protocol {protocol} is not TCP")]
    NotTcp { protocol: u8 },
    #[error("more than {max} IPv6 extension headers")]
    TooManyExtensionHeaders { max: usize },
    #[error("IP fragment (a SYN is never fragmented)")]
    Fragment,
    #[error("TCP flags {flags:#04x} are not a SYN without ACK")]
    NotSyn { flags: u8 },
}

/// IP version of the SYN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum IpVersion {
    #[default]
    V4,
    V6,
}

/// Up to [`MAX_TCP_OPTION_BYTES`] TCP option kinds in wire order, stored inline (no allocation;
/// a SYN per connection is parsed on the sensor's and httpd's hot paths).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptionKinds {
    len: u8,
    kinds: [u8; MAX_TCP_OPTION_BYTES],
}

impl Default for OptionKinds {
    fn default() -> Self {
        Self {
            len: 0,
            kinds: [0; MAX_TCP_OPTION_BYTES],
        }
    }
}

impl std::fmt::Debug for OptionKinds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl OptionKinds {
    /// The first [`MAX_TCP_OPTION_BYTES`] kinds of `kinds`.
    pub fn from_slice(kinds: &[u8]) -> Self {
        let mut out = Self::default();
        for &k in kinds.iter().take(MAX_TCP_OPTION_BYTES) {
            out.push(k);
        }
        out
    }

    pub fn as_slice(&self) -> &[u8] {
        self.kinds.get(..usize::from(self.len)).unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a kind; false (nothing stored) when full. One option takes at least one byte of
    /// the 40, so a full list holds every kind a TCP header can carry.
    pub fn push(&mut self, kind: u8) -> bool {
        match self.kinds.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = kind;
                self.len += 1;
                true
            }
            None => false,
        }
    }
}

/// p0f's quirks (`QUIRK_*` of p0f 3's `process.h`, same bit values), seen in the IP and TCP
/// headers of a SYN.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Quirks(u32);

impl Quirks {
    /// ECN: IP ECT/CE bits or the TCP ECE/CWR flags (`ecn`).
    pub const ECN: u32 = 0x0000_0001;
    /// IPv4 don't-fragment (`df`).
    pub const DF: u32 = 0x0000_0002;
    /// DF set and a non-zero IPv4 id (`id+`).
    pub const NONZERO_ID: u32 = 0x0000_0004;
    /// DF clear and a zero IPv4 id (`id-`).
    pub const ZERO_ID: u32 = 0x0000_0008;
    /// The reserved IPv4 flag bit set (`0+`).
    pub const MUST_BE_ZERO: u32 = 0x0000_0010;
    /// A non-zero IPv6 flow label (`flow`).
    pub const FLOW_ID: u32 = 0x0000_0020;
    /// Sequence number zero (`seq-`).
    pub const SEQ_ZERO: u32 = 0x0000_1000;
    /// Acknowledgment number set without ACK (`ack+`).
    pub const ACK_NONZERO: u32 = 0x0000_2000;
    /// ACK flag with a zero acknowledgment number (`ack-`).
    pub const ACK_ZERO: u32 = 0x0000_4000;
    /// Urgent pointer set without URG (`uptr+`).
    pub const URG_PTR: u32 = 0x0000_8000;
    /// URG flag (`urgf+`).
    pub const URG: u32 = 0x0001_0000;
    /// PSH flag (`pushf+`).
    pub const PUSH: u32 = 0x0002_0000;
    /// Own timestamp zero (`ts1-`).
    pub const TS1_ZERO: u32 = 0x0100_0000;
    /// Peer timestamp non-zero in a SYN (`ts2+`).
    pub const TS2_NONZERO: u32 = 0x0200_0000;
    /// Non-zero bytes after the end-of-options (`opt+`).
    pub const OPT_TRAILING: u32 = 0x0400_0000;
    /// Window scale above 14 (`exws`).
    pub const EXCESSIVE_WSCALE: u32 = 0x0800_0000;
    /// A malformed option (`bad`).
    pub const OPT_BAD: u32 = 0x1000_0000;

    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn contains(self, bit: u32) -> bool {
        self.0 & bit != 0
    }

    fn set(&mut self, bit: u32) {
        self.0 |= bit;
    }
}

/// What p0f's TCP signatures look at, beyond [`IpMeta`] and [`TcpMeta`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct P0fTraits {
    pub version: IpVersion,
    /// IPv4 options or IPv6 extension header bytes (saturating at 255).
    pub ip_options_len: u8,
    /// IPv4 DSCP, IPv6 traffic class without its ECN bits.
    pub tos: u8,
    /// IP plus TCP header bytes, options included.
    pub header_len: u16,
    /// Option kinds up to and including the first end-of-options, p0f's `olayout`.
    pub layout: OptionKinds,
    /// Bytes of option space after the end-of-options (`eol+N`).
    pub eol_padding: u8,
    /// The MSS option's value, `None` without one (0 is a value).
    pub mss: Option<u16>,
    pub quirks: Quirks,
    /// TCP payload bytes announced by the IP length (a Fast Open SYN carries data).
    pub payload_len: u16,
}

/// Everything the parse of one SYN yields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SynTraits {
    pub ip: IpMeta,
    pub tcp: TcpMeta,
    /// Every option kind in wire order as a dissector lists it: EOL and NOP are one byte, the
    /// others skip their length; parsing goes on after an EOL (its zero padding lists as more
    /// EOLs: `2,1,3,1,1,8,4,0,0` for macOS) and stops at a length that does not fit.
    pub option_kinds: OptionKinds,
    pub p0f: P0fTraits,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

fn truncated(layer: &'static str, needed: usize, len: usize) -> SynError {
    SynError::Truncated { layer, needed, len }
}

/// The IP layer: traits, where the TCP header starts, and the length the IP header announces
/// for the TCP segment.
struct IpLayer {
    meta: IpMeta,
    version: IpVersion,
    options_len: usize,
    tos: u8,
    quirks: Quirks,
    tcp_start: usize,
    /// TCP header + payload bytes announced by the IP header.
    segment_len: usize,
}

fn ipv4(b: &[u8]) -> Result<IpLayer, SynError> {
    let &first = b.first().ok_or(truncated("IPv4", IPV4_MIN_HEADER_LEN, 0))?;
    if b.len() < IPV4_MIN_HEADER_LEN {
        return Err(truncated("IPv4", IPV4_MIN_HEADER_LEN, b.len()));
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < IPV4_MIN_HEADER_LEN {
        return Err(SynError::BadIpv4HeaderLength { len: header_len });
    }
    if b.len() < header_len {
        return Err(truncated("IPv4", header_len, b.len()));
    }
    let tos_byte = b.get(1).copied().unwrap_or_default();
    let total_length = be16(b, 2).unwrap_or_default();
    let id = be16(b, 4).unwrap_or_default();
    let flags_fragment = be16(b, 6).unwrap_or_default();
    let ttl = b.get(8).copied().unwrap_or_default();
    let protocol = b.get(9).copied().unwrap_or_default();
    let reserved = flags_fragment & 0x8000 != 0;
    let df = flags_fragment & 0x4000 != 0;
    let more_fragments = flags_fragment & 0x2000 != 0;
    if more_fragments || flags_fragment & 0x1fff != 0 {
        return Err(SynError::Fragment);
    }
    if protocol != PROTO_TCP {
        return Err(SynError::NotTcp { protocol });
    }
    let mut quirks = Quirks::default();
    if tos_byte & 0x03 != 0 {
        quirks.set(Quirks::ECN);
    }
    if reserved {
        quirks.set(Quirks::MUST_BE_ZERO);
    }
    if df {
        quirks.set(Quirks::DF);
        if id != 0 {
            quirks.set(Quirks::NONZERO_ID);
        }
    } else if id == 0 {
        quirks.set(Quirks::ZERO_ID);
    }
    Ok(IpLayer {
        meta: IpMeta {
            ttl,
            total_length,
            id,
            df,
        },
        version: IpVersion::V4,
        options_len: header_len - IPV4_MIN_HEADER_LEN,
        tos: tos_byte >> 2,
        quirks,
        tcp_start: header_len,
        segment_len: usize::from(total_length).saturating_sub(header_len),
    })
}

fn ipv6(b: &[u8]) -> Result<IpLayer, SynError> {
    if b.len() < IPV6_HEADER_LEN {
        return Err(truncated("IPv6", IPV6_HEADER_LEN, b.len()));
    }
    let word = be32(b, 0).unwrap_or_default();
    let traffic_class = ((word >> 20) & 0xff) as u8;
    let flow_label = word & 0x000f_ffff;
    let payload_length = be16(b, 4).unwrap_or_default();
    let mut next = b.get(6).copied().unwrap_or_default();
    let hop_limit = b.get(7).copied().unwrap_or_default();
    let mut at = IPV6_HEADER_LEN;
    let mut headers = 0;
    while next != PROTO_TCP {
        if headers == MAX_IPV6_EXTENSION_HEADERS {
            return Err(SynError::TooManyExtensionHeaders {
                max: MAX_IPV6_EXTENSION_HEADERS,
            });
        }
        headers += 1;
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS => {
                (usize::from(
                    *b.get(at + 1)
                        .ok_or(truncated("IPv6 extension", at + 2, b.len()))?,
                ) + 1)
                    * 8
            }
            IPV6_AH => {
                (usize::from(
                    *b.get(at + 1)
                        .ok_or(truncated("IPv6 extension", at + 2, b.len()))?,
                ) + 2)
                    * 4
            }
            IPV6_FRAGMENT => return Err(SynError::Fragment),
            protocol => return Err(SynError::NotTcp { protocol }),
        };
        next = *b
            .get(at)
            .ok_or(truncated("IPv6 extension", at + 1, b.len()))?;
        at += len;
        if b.len() < at {
            return Err(truncated("IPv6 extension", at, b.len()));
        }
    }
    let extensions = at - IPV6_HEADER_LEN;
    let mut quirks = Quirks::default();
    if flow_label != 0 {
        quirks.set(Quirks::FLOW_ID);
    }
    if traffic_class & 0x03 != 0 {
        quirks.set(Quirks::ECN);
    }
    Ok(IpLayer {
        meta: IpMeta {
            ttl: hop_limit,
            // ja4sentinel reports the whole packet: fixed header plus payload.
            total_length: payload_length.saturating_add(IPV6_HEADER_LEN as u16),
            id: 0,
            df: false,
        },
        version: IpVersion::V6,
        options_len: extensions,
        tos: traffic_class >> 2,
        quirks,
        tcp_start: at,
        segment_len: usize::from(payload_length).saturating_sub(extensions),
    })
}

/// Parses the SYN whose IP packet starts at `packet[0]` (see the module doc for the bytes
/// accepted). Only the headers are read; payload bytes after them are ignored.
pub fn parse_syn(packet: &[u8]) -> Result<SynTraits, SynError> {
    let version = packet.first().map(|b| b >> 4).unwrap_or_default();
    let ip = match version {
        4 => ipv4(packet)?,
        6 => ipv6(packet)?,
        _ if packet.is_empty() => return Err(truncated("IP", 1, 0)),
        version => return Err(SynError::NotIp { version }),
    };
    let tcp = packet.get(ip.tcp_start..).unwrap_or_default();
    if tcp.len() < TCP_FIXED_HEADER_LEN {
        return Err(truncated(
            "TCP",
            ip.tcp_start + TCP_FIXED_HEADER_LEN,
            packet.len(),
        ));
    }
    let data_offset = usize::from(tcp.get(12).copied().unwrap_or_default() >> 4) * 4;
    if data_offset < TCP_FIXED_HEADER_LEN {
        return Err(SynError::BadTcpHeaderLength { len: data_offset });
    }
    let header =
        tcp.get(..data_offset)
            .ok_or(truncated("TCP", ip.tcp_start + data_offset, packet.len()))?;
    let flags = header.get(13).copied().unwrap_or_default();
    if flags & TCP_SYN == 0 || flags & TCP_ACK != 0 {
        return Err(SynError::NotSyn { flags });
    }
    let seq = be32(header, 4).unwrap_or_default();
    let ack = be32(header, 8).unwrap_or_default();
    let window = be16(header, 14).unwrap_or_default();
    let urgent = be16(header, 18).unwrap_or_default();
    let options = header.get(TCP_FIXED_HEADER_LEN..).unwrap_or_default();

    // p0f's TCP quirks (fp_tcp.c); ACK is clear in a SYN, so `ack-` cannot occur.
    let mut quirks = ip.quirks;
    if flags & (TCP_ECE | TCP_CWR) != 0 {
        quirks.set(Quirks::ECN);
    }
    if seq == 0 {
        quirks.set(Quirks::SEQ_ZERO);
    }
    if ack != 0 && flags & TCP_RST == 0 {
        quirks.set(Quirks::ACK_NONZERO);
    }
    if flags & TCP_URG != 0 {
        quirks.set(Quirks::URG);
    } else if urgent != 0 {
        quirks.set(Quirks::URG_PTR);
    }
    if flags & TCP_PSH != 0 {
        quirks.set(Quirks::PUSH);
    }
    let p0f = p0f_options(options, quirks);
    Ok(SynTraits {
        ip: ip.meta,
        tcp: tcp_meta(window, options),
        option_kinds: option_kinds(options),
        p0f: P0fTraits {
            version: ip.version,
            ip_options_len: u8::try_from(ip.options_len).unwrap_or(u8::MAX),
            tos: ip.tos,
            header_len: u16::try_from(ip.tcp_start + data_offset).unwrap_or(u16::MAX),
            payload_len: u16::try_from(ip.segment_len.saturating_sub(data_offset))
                .unwrap_or(u16::MAX),
            ..p0f
        },
    })
}

/// Every option kind, dissector style (see [`SynTraits::option_kinds`]).
fn option_kinds(options: &[u8]) -> OptionKinds {
    let bytes = options
        .get(..options.len().min(MAX_TCP_OPTION_BYTES))
        .unwrap_or_default();
    let mut kinds = OptionKinds::default();
    let mut i = 0;
    while let Some(&kind) = bytes.get(i) {
        if kind == OPT_EOL || kind == OPT_NOP {
            kinds.push(kind);
            i += 1;
            continue;
        }
        let Some(&len) = bytes.get(i + 1) else { break };
        let len = usize::from(len);
        if len < 2 || i + len > bytes.len() {
            break;
        }
        kinds.push(kind);
        i += len;
    }
    kinds
}

/// p0f's reading of the options (fp_tcp.c): the layout up to the end-of-options and its
/// padding, MSS, window scale, timestamps quirks; a malformed option stops it with `bad`.
fn p0f_options(options: &[u8], mut quirks: Quirks) -> P0fTraits {
    let bytes = options
        .get(..options.len().min(MAX_TCP_OPTION_BYTES))
        .unwrap_or_default();
    let mut traits = P0fTraits::default();
    let mut i = 0;
    while let Some(&kind) = bytes.get(i) {
        traits.layout.push(kind);
        i += 1;
        // The option's length byte and value, when it has them.
        let sized = |want: usize| -> Option<&[u8]> {
            let len = usize::from(*bytes.get(i)?);
            if len != want {
                return None;
            }
            bytes.get(i + 1..i + len - 1)
        };
        match kind {
            OPT_EOL => {
                let rest = bytes.get(i..).unwrap_or_default();
                traits.eol_padding = u8::try_from(rest.len()).unwrap_or(u8::MAX);
                if rest.iter().any(|&b| b != 0) {
                    quirks.set(Quirks::OPT_TRAILING);
                }
                break;
            }
            OPT_NOP => {}
            OPT_MSS => match sized(4) {
                Some([a, b]) => {
                    traits.mss = Some(u16::from_be_bytes([*a, *b]));
                    i += 3;
                }
                _ => {
                    quirks.set(Quirks::OPT_BAD);
                    break;
                }
            },
            OPT_WSCALE => match sized(3) {
                Some([shift]) => {
                    if *shift > MAX_WINDOW_SCALE {
                        quirks.set(Quirks::EXCESSIVE_WSCALE);
                    }
                    i += 2;
                }
                _ => {
                    quirks.set(Quirks::OPT_BAD);
                    break;
                }
            },
            OPT_SACK_PERMITTED => match sized(2) {
                Some([]) => i += 1,
                _ => {
                    quirks.set(Quirks::OPT_BAD);
                    break;
                }
            },
            OPT_TIMESTAMPS => match sized(10) {
                Some(value) => {
                    if be32(value, 0) == Some(0) {
                        quirks.set(Quirks::TS1_ZERO);
                    }
                    if be32(value, 4).is_some_and(|ts2| ts2 != 0) {
                        quirks.set(Quirks::TS2_NONZERO);
                    }
                    i += 9;
                }
                None => {
                    quirks.set(Quirks::OPT_BAD);
                    break;
                }
            },
            // SACK blocks and unknown options: any length from 2 that fits.
            _ => {
                let len = bytes.get(i).map(|&l| usize::from(l));
                match len {
                    Some(len) if len >= 2 && i + len - 1 <= bytes.len() => i += len - 1,
                    _ => {
                        quirks.set(Quirks::OPT_BAD);
                        break;
                    }
                }
            }
        }
    }
    traits.quirks = quirks;
    traits
}

/// Names of TCP option kinds in `tcp_meta_options`. The five a SYN normally carries are spelled
/// exactly as ja4sentinel prints them (seed 002: `MSS,NOP,WScale,NOP,NOP,Timestamps,SACK`):
///
/// | kind | name | option |
/// |---|---|---|
/// | 0 | `EOL` | end of option list (RFC 9293) |
/// | 1 | `NOP` | no-operation padding (RFC 9293) |
/// | 2 | `MSS` | maximum segment size (RFC 9293) |
/// | 3 | `WScale` | window scale (RFC 7323) |
/// | 4 | `SACK` | SACK-permitted (RFC 2018); sentinel calls it `SACK` |
/// | 5 | `SACKBlocks` | SACK blocks (RFC 2018; never in a SYN) |
/// | 8 | `Timestamps` | timestamps (RFC 7323) |
/// | 28 | `UTO` | user timeout (RFC 5482) |
/// | 29 | `AO` | TCP authentication option (RFC 5925) |
/// | 30 | `MPTCP` | multipath TCP (RFC 8684) |
/// | 34 | `TFO` | TCP Fast Open cookie (RFC 7413) |
/// | other | `Opt<kind>` | e.g. `Opt254` (experimental) |
pub fn option_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0 => "EOL",
        1 => "NOP",
        2 => "MSS",
        3 => "WScale",
        4 => "SACK",
        5 => "SACKBlocks",
        8 => "Timestamps",
        28 => "UTO",
        29 => "AO",
        30 => "MPTCP",
        34 => "TFO",
        _ => return None,
    })
}

/// The TCP traits of a SYN: window, MSS, window scale and the option kinds in wire order
/// (`MSS,SACK,Timestamps,NOP,WScale` for Linux; unknown kinds as `Opt<kind>`). Parsing stops at
/// EOL or at an option whose length is invalid.
pub fn tcp_meta(window: u16, options: &[u8]) -> TcpMeta {
    let mut meta = TcpMeta {
        window_size: window,
        ..TcpMeta::default()
    };
    // Comma-separated names, written in place (a SYN per connection: no list of names).
    let mut names = String::with_capacity(48);
    let bytes = options
        .get(..options.len().min(MAX_TCP_OPTION_BYTES))
        .unwrap_or_default();
    let mut i = 0;
    while let Some(&kind) = bytes.get(i) {
        if !names.is_empty() {
            names.push(',');
        }
        match option_name(kind) {
            Some(name) => names.push_str(name),
            None => {
                names.push_str("Opt");
                names.push_str(itoa::Buffer::new().format(kind));
            }
        }
        match kind {
            OPT_EOL => break,
            OPT_NOP => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else { break };
        let len = usize::from(len);
        let Some(value) = bytes.get(i + 2..i + len.max(2)) else {
            break;
        };
        if len < 2 {
            break;
        }
        match (kind, value) {
            (OPT_MSS, [a, b]) => meta.mss = u16::from_be_bytes([*a, *b]),
            (OPT_WSCALE, [shift]) => meta.window_scale = Some(*shift),
            _ => {}
        }
        i += len;
    }
    meta.options = names;
    meta
}

/// IP + TCP SYN bytes for tests and fuzz seeds (other crates: feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
pub mod testing {
    /// An IPv4 SYN: TTL, DF, id, window and raw option bytes (padded to a 4-byte multiple with
    /// EOL), no payload.
    pub fn ipv4_syn(ttl: u8, df: bool, id: u16, window: u16, options: &[u8]) -> Vec<u8> {
        let mut opts = options.to_vec();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let tcp_len = 20 + opts.len();
        let total = 20 + tcp_len;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&(if df { 0x4000u16 } else { 0 }).to_be_bytes());
        p.extend_from_slice(&[ttl, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        p.extend_from_slice(&[0xc3, 0x50, 0x01, 0xbb]);
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.push(((tcp_len / 4) as u8) << 4);
        p.push(0x02);
        p.extend_from_slice(&window.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend(opts);
        p
    }

    /// The same SYN over IPv6 (hop limit, flow label 0, no extension headers).
    pub fn ipv6_syn(hop_limit: u8, window: u16, options: &[u8]) -> Vec<u8> {
        let v4 = ipv4_syn(hop_limit, false, 0, window, options);
        let tcp = &v4[20..];
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        p.extend_from_slice(&[6, hop_limit]);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        p.extend_from_slice(&[0; 11]);
        p.push(1);
        p.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        p.extend_from_slice(&[0; 11]);
        p.push(2);
        p.extend_from_slice(tcp);
        p
    }

    /// Linux's SYN options on an Ethernet path: MSS 1460, SACK-permitted, timestamps
    /// (non-zero own stamp), NOP, window scale 7.
    pub const LINUX_OPTIONS: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn linux_syn_options_are_named_in_wire_order() {
        // MSS 65495, SACK-permitted, Timestamps, NOP, WScale 7 (Linux loopback SYN).
        let opts = [
            2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let meta = tcp_meta(65495, &opts);
        assert_eq!(meta.options, "MSS,SACK,Timestamps,NOP,WScale");
        assert_eq!(meta.mss, 65495);
        assert_eq!(meta.window_scale, Some(7));
        assert_eq!(meta.window_size, 65495);
    }

    #[test]
    fn broken_options_stop_parsing_without_panic() {
        assert_eq!(tcp_meta(1, &[2]).options, "MSS");
        assert_eq!(tcp_meta(1, &[2, 1, 1]).options, "MSS");
        assert_eq!(tcp_meta(1, &[1, 0, 2, 4, 5, 0]).options, "NOP,EOL");
        assert_eq!(tcp_meta(1, &[99, 2, 1]).options, "Opt99,NOP");
        for len in 0..=255u8 {
            let _ = tcp_meta(1, &[3, len, 1, 1, 1]);
        }
    }

    #[test]
    fn sentinel_example_options_are_spelled_like_sentinel() {
        // Windows/macOS order: MSS, NOP, WScale, NOP, NOP, Timestamps, SACK-permitted.
        let opts = [
            2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 4, 2,
        ];
        let meta = tcp_meta(65535, &opts);
        assert_eq!(meta.options, "MSS,NOP,WScale,NOP,NOP,Timestamps,SACK");
        assert_eq!((meta.mss, meta.window_scale), (1460, Some(8)));
    }

    #[test]
    fn an_ipv4_syn_yields_every_trait() {
        let syn = parse_syn(&ipv4_syn(57, true, 4242, 64240, &LINUX_OPTIONS)).unwrap();
        assert_eq!(
            syn.ip,
            IpMeta {
                ttl: 57,
                total_length: 60,
                id: 4242,
                df: true
            }
        );
        assert_eq!(syn.tcp.options, "MSS,SACK,Timestamps,NOP,WScale");
        assert_eq!((syn.tcp.mss, syn.tcp.window_scale), (1460, Some(7)));
        assert_eq!(syn.option_kinds.as_slice(), [2, 4, 8, 1, 3]);
        let p0f = syn.p0f;
        assert_eq!(p0f.version, IpVersion::V4);
        assert_eq!(
            (p0f.ip_options_len, p0f.header_len, p0f.payload_len),
            (0, 60, 0)
        );
        assert_eq!(p0f.layout.as_slice(), [2, 4, 8, 1, 3]);
        assert_eq!(p0f.mss, Some(1460));
        assert_eq!(p0f.quirks.bits(), Quirks::DF | Quirks::NONZERO_ID);
    }

    #[test]
    fn an_ipv6_syn_has_no_id_and_counts_the_fixed_header() {
        let syn = parse_syn(&ipv6_syn(64, 65535, &LINUX_OPTIONS)).unwrap();
        assert_eq!(syn.ip.ttl, 64);
        assert_eq!(syn.ip.total_length, 80);
        assert!(!syn.ip.df && syn.ip.id == 0);
        assert_eq!(syn.p0f.version, IpVersion::V6);
        assert_eq!(syn.p0f.header_len, 80);
        assert_eq!(syn.p0f.quirks.bits(), 0);
    }

    #[test]
    fn macos_eol_padding_is_listed_for_ja4t_and_counted_for_p0f() {
        // MSS, NOP, WScale 6, NOP, NOP, Timestamps, SACK-permitted, EOL, EOL (24 bytes).
        let opts = [
            2, 4, 5, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 4, 2, 0, 0,
        ];
        let syn = parse_syn(&ipv4_syn(64, true, 0, 65535, &opts)).unwrap();
        assert_eq!(syn.option_kinds.as_slice(), [2, 1, 3, 1, 1, 8, 4, 0, 0]);
        assert_eq!(syn.p0f.layout.as_slice(), [2, 1, 3, 1, 1, 8, 4, 0]);
        assert_eq!(syn.p0f.eol_padding, 1);
        assert_eq!(
            syn.tcp.options,
            "MSS,NOP,WScale,NOP,NOP,Timestamps,SACK,EOL"
        );
        assert_eq!(syn.p0f.quirks.bits(), Quirks::DF);
    }

    #[test]
    fn what_tcp_saved_syn_returns_parses_like_the_captured_packet() {
        // getsockopt(TCP_SAVED_SYN) ends at the TCP header even when the IP length counts a
        // Fast Open payload; the captured frame has the payload.
        let mut captured = ipv4_syn(64, true, 1, 65535, &LINUX_OPTIONS);
        let headers = captured.len();
        captured.extend_from_slice(b"early data");
        let total = captured.len() as u16;
        captured[2..4].copy_from_slice(&total.to_be_bytes());
        let saved = &captured[..headers];
        let from_capture = parse_syn(&captured).unwrap();
        assert_eq!(parse_syn(saved).unwrap(), from_capture);
        assert_eq!(from_capture.p0f.payload_len, 10);
    }

    #[test]
    fn ipv6_extension_headers_are_walked_and_bounded() {
        let plain = ipv6_syn(64, 1000, &LINUX_OPTIONS);
        // Insert one 8-byte hop-by-hop header in front of TCP.
        let mut with_hbh = plain[..40].to_vec();
        with_hbh[6] = IPV6_HOP_BY_HOP;
        let payload = u16::from_be_bytes([plain[4], plain[5]]) + 8;
        with_hbh[4..6].copy_from_slice(&payload.to_be_bytes());
        with_hbh.extend_from_slice(&[PROTO_TCP, 0, 1, 4, 0, 0, 0, 0]);
        with_hbh.extend_from_slice(&plain[40..]);
        let syn = parse_syn(&with_hbh).unwrap();
        assert_eq!(syn.p0f.ip_options_len, 8);
        assert_eq!(syn.tcp, parse_syn(&plain).unwrap().tcp);
        // A chain of hop-by-hop headers longer than the bound.
        let mut chain = plain[..40].to_vec();
        chain[6] = IPV6_HOP_BY_HOP;
        for _ in 0..=MAX_IPV6_EXTENSION_HEADERS {
            chain.extend_from_slice(&[IPV6_HOP_BY_HOP, 0, 1, 4, 0, 0, 0, 0]);
        }
        assert_eq!(
            parse_syn(&chain),
            Err(SynError::TooManyExtensionHeaders {
                max: MAX_IPV6_EXTENSION_HEADERS
            })
        );
    }

    #[test]
    fn non_syns_and_short_packets_are_errors() {
        let syn = ipv4_syn(64, true, 1, 1000, &LINUX_OPTIONS);
        for cut in 0..40 {
            assert!(parse_syn(&syn[..cut]).is_err(), "cut at {cut}");
        }
        let mut syn_ack = syn.clone();
        syn_ack[33] = 0x12;
        assert_eq!(parse_syn(&syn_ack), Err(SynError::NotSyn { flags: 0x12 }));
        let mut udp = syn.clone();
        udp[9] = 17;
        assert_eq!(parse_syn(&udp), Err(SynError::NotTcp { protocol: 17 }));
        let mut fragment = syn.clone();
        fragment[6] = 0x20;
        assert_eq!(parse_syn(&fragment), Err(SynError::Fragment));
        assert_eq!(parse_syn(&[0x15; 60]), Err(SynError::NotIp { version: 1 }));
    }

    #[test]
    fn p0f_quirks_of_odd_syns() {
        // Zero sequence number, no DF with a zero id, zero own timestamp, an excessive shift,
        // junk after EOL.
        let opts = [8, 10, 0, 0, 0, 0, 0, 0, 0, 1, 3, 3, 15, 0, 7, 0];
        let mut p = ipv4_syn(128, false, 0, 8192, &opts);
        p[24..28].copy_from_slice(&[0, 0, 0, 0]);
        let q = parse_syn(&p).unwrap().p0f.quirks;
        for bit in [
            Quirks::SEQ_ZERO,
            Quirks::ZERO_ID,
            Quirks::TS1_ZERO,
            Quirks::TS2_NONZERO,
            Quirks::EXCESSIVE_WSCALE,
            Quirks::OPT_TRAILING,
        ] {
            assert!(q.contains(bit), "{bit:#x} in {:#x}", q.bits());
        }
        // An MSS option of the wrong length is `bad`.
        let bad = parse_syn(&ipv4_syn(64, true, 1, 1, &[2, 3, 5, 1])).unwrap();
        assert!(bad.p0f.quirks.contains(Quirks::OPT_BAD));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse_syn(&bytes);
        }

        #[test]
        fn random_options_never_panic_and_stay_bounded(opts in proptest::collection::vec(proptest::num::u8::ANY, 0..40)) {
            let syn = parse_syn(&ipv4_syn(64, true, 1, 1000, &opts)).unwrap();
            proptest::prop_assert!(syn.option_kinds.as_slice().len() <= MAX_TCP_OPTION_BYTES);
            proptest::prop_assert!(syn.p0f.layout.as_slice().len() <= MAX_TCP_OPTION_BYTES);
        }
    }
}
