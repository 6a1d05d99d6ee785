//! Decoding each captured frame down to the TCP segment the rest of the pipeline needs. Opening
//! libpcap (a live interface or a pcap/pcapng file) is `ja4sensor-pcap`'s part (`device.rs`
//! there): nothing here links libpcap.
//!
//! Frames are hostile input. Link headers are stripped here with explicit length checks; IP and
//! TCP are sliced by `etherparse`, which borrows the frame and returns structured errors. The
//! traits of a SYN are not read here: the pipeline hands the SYN's IP packet to
//! `correlate_lib::fingerprint::syn`, the parser httpd's inline mode uses too.

use std::net::{IpAddr, SocketAddr};

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};

/// Link-layer framings we decode. `any` gives Linux cooked captures (SLL, or SLL2 on newer
/// libpcap); `lo` and NICs give Ethernet; BSD loopback captures give DLT_NULL/DLT_LOOP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    Ethernet,
    /// DLT_NULL: 4-byte address family in the capturing host's byte order.
    Null,
    /// DLT_LOOP: 4-byte address family in network byte order.
    Loop,
    LinuxSll,
    LinuxSll2,
    /// Raw IP, version read from the first nibble.
    Raw,
}

impl LinkType {
    /// The framing of libpcap's data link type `dlt` (`pcap_datalink`), if we decode it.
    pub fn from_dlt(dlt: i32) -> Option<Self> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            0 => Some(LinkType::Null),
            108 => Some(LinkType::Loop),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            // DLT_RAW is 12 on most systems and 14 on OpenBSD; LINKTYPE_RAW is 101 in files;
            // 228/229 are LINKTYPE_IPV4/IPV6.
            12 | 14 | 101 | 228 | 229 => Some(LinkType::Raw),
            _ => None,
        }
    }
}

/// TCP flags the flow table acts on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

/// One decoded TCP segment, borrowing the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// The frame from the IP header on (no link layer): what a SYN's traits are parsed from.
    pub ip_packet: &'a [u8],
    pub seq: u32,
    pub flags: TcpFlags,
    pub payload: &'a [u8],
}

/// Why a frame yielded no TCP segment. Each variant has its own counter.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("{layer} header needs {needed} bytes, frame has {len}")]
    Truncated {
        layer: &'static str,
        needed: usize,
        len: usize,
    },
    #[error("link payload is not IP")]
    NotIp,
    #[error("loopback address family {family} is not IPv4 or IPv6")]
    NotIpFamily { family: u32 },
    #[error("malformed packet: {0}")]
    Malformed(#[from] etherparse::err::packet::SliceError),
    #[error("IP fragment (not reassembled)")]
    Fragment,
    #[error("not TCP")]
    NotTcp,
}

const ETHERNET_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
/// 802.1Q tags skipped (a double-tagged QinQ frame has two).
const MAX_VLAN_TAGS: usize = 2;
const ETHERTYPE_VLAN: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const SLL_HEADER_LEN: usize = 16;
const SLL2_HEADER_LEN: usize = 20;
const NULL_HEADER_LEN: usize = 4;

fn link_header<'a>(
    frame: &'a [u8],
    layer: &'static str,
    needed: usize,
) -> Result<&'a [u8], DecodeError> {
    frame.get(needed..).ok_or(DecodeError::Truncated {
        layer,
        needed,
        len: frame.len(),
    })
}

fn be16(frame: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]))
}

/// Decodes a frame of the given link type to its TCP segment.
pub fn decode(link: LinkType, frame: &[u8]) -> Result<Segment<'_>, DecodeError> {
    let (ip_packet, sliced) = match link {
        LinkType::Ethernet => {
            let mut at = ETHERNET_HEADER_LEN;
            let mut ether_type = be16(frame, 12).ok_or(DecodeError::Truncated {
                layer: "Ethernet",
                needed: ETHERNET_HEADER_LEN,
                len: frame.len(),
            })?;
            for _ in 0..MAX_VLAN_TAGS {
                if !ETHERTYPE_VLAN.contains(&ether_type) {
                    break;
                }
                ether_type = be16(frame, at + 2).ok_or(DecodeError::Truncated {
                    layer: "VLAN",
                    needed: at + VLAN_TAG_LEN,
                    len: frame.len(),
                })?;
                at += VLAN_TAG_LEN;
            }
            let payload = link_header(frame, "Ethernet", at)?;
            (
                payload,
                SlicedPacket::from_ether_type(EtherType(ether_type), payload)?,
            )
        }
        LinkType::Raw => (frame, SlicedPacket::from_ip(frame)?),
        LinkType::LinuxSll => {
            let payload = link_header(frame, "Linux SLL", SLL_HEADER_LEN)?;
            let protocol = be16(frame, 14).unwrap_or_default();
            (
                payload,
                SlicedPacket::from_ether_type(EtherType(protocol), payload)?,
            )
        }
        LinkType::LinuxSll2 => {
            let payload = link_header(frame, "Linux SLL2", SLL2_HEADER_LEN)?;
            let protocol = be16(frame, 0).unwrap_or_default();
            (
                payload,
                SlicedPacket::from_ether_type(EtherType(protocol), payload)?,
            )
        }
        LinkType::Null | LinkType::Loop => {
            let payload = link_header(frame, "loopback", NULL_HEADER_LEN)?;
            let mut family = [0u8; 4];
            family.copy_from_slice(frame.get(..NULL_HEADER_LEN).unwrap_or(&[0; 4]));
            let family = if link == LinkType::Loop {
                u32::from_be_bytes(family)
            } else {
                // The writer's byte order is unknown: accept either.
                let le = u32::from_le_bytes(family);
                if le <= 0xffff {
                    le
                } else {
                    u32::from_be_bytes(family)
                }
            };
            match family {
                // AF_INET everywhere; AF_INET6 is 10 (Linux), 24 (NetBSD/OpenBSD),
                // 28 (FreeBSD), 30 (macOS).
                2 | 10 | 24 | 28 | 30 => (payload, SlicedPacket::from_ip(payload)?),
                other => return Err(DecodeError::NotIpFamily { family: other }),
            }
        }
    };
    segment(ip_packet, sliced)
}

fn segment<'a>(ip_packet: &'a [u8], sliced: SlicedPacket<'a>) -> Result<Segment<'a>, DecodeError> {
    let (src_ip, dst_ip, fragmented) = match &sliced.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header();
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.is_payload_fragmented(),
            )
        }
        Some(NetSlice::Ipv6(v6)) => {
            let h = v6.header();
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.is_payload_fragmented(),
            )
        }
        None => return Err(DecodeError::NotIp),
    };
    if fragmented {
        return Err(DecodeError::Fragment);
    }
    let Some(TransportSlice::Tcp(tcp)) = sliced.transport else {
        return Err(DecodeError::NotTcp);
    };
    Ok(Segment {
        src: SocketAddr::new(src_ip, tcp.source_port()),
        dst: SocketAddr::new(dst_ip, tcp.destination_port()),
        ip_packet,
        seq: tcp.sequence_number(),
        flags: TcpFlags {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
        },
        payload: tcp.payload(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_ipv4(payload: &[u8]) -> Vec<u8> {
        let builder = PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, 1000, 64240)
            .syn()
            .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
            .unwrap();
        let mut out = Vec::new();
        builder.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn raw_ipv4_tcp_is_decoded() {
        let frame = tcp_ipv4(b"hi");
        let seg = decode(LinkType::Raw, &frame).unwrap();
        assert_eq!(seg.src, "10.0.0.1:40000".parse().unwrap());
        assert_eq!(seg.dst, "10.0.0.2:443".parse().unwrap());
        assert_eq!(seg.ip_packet, &frame[..]);
        assert!(seg.flags.syn && !seg.flags.ack);
        assert_eq!(seg.payload, b"hi");
    }

    #[test]
    fn cooked_and_loopback_headers_are_stripped() {
        let ip = tcp_ipv4(b"x");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&ip);
        assert_eq!(decode(LinkType::LinuxSll, &sll).unwrap().payload, b"x");
        assert_eq!(decode(LinkType::LinuxSll, &sll).unwrap().ip_packet, &ip[..]);
        let mut sll2 = 0x0800u16.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&ip);
        assert_eq!(decode(LinkType::LinuxSll2, &sll2).unwrap().payload, b"x");
        let mut null = 2u32.to_le_bytes().to_vec();
        null.extend_from_slice(&ip);
        assert_eq!(decode(LinkType::Null, &null).unwrap().payload, b"x");
        let mut null_be = 2u32.to_be_bytes().to_vec();
        null_be.extend_from_slice(&ip);
        assert_eq!(decode(LinkType::Null, &null_be).unwrap().payload, b"x");
    }

    #[test]
    fn ethernet_and_vlan_headers_are_stripped_to_the_ip_packet() {
        let ip = tcp_ipv4(b"v");
        let mut eth = vec![0u8; 12];
        eth.extend_from_slice(&0x0800u16.to_be_bytes());
        eth.extend_from_slice(&ip);
        let seg = decode(LinkType::Ethernet, &eth).unwrap();
        assert_eq!((seg.ip_packet, seg.payload), (&ip[..], &b"v"[..]));
        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x88, 0xa8, 0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        qinq.extend_from_slice(&ip);
        let seg = decode(LinkType::Ethernet, &qinq).unwrap();
        assert_eq!(seg.ip_packet, &ip[..]);
        let mut arp = vec![0u8; 12];
        arp.extend_from_slice(&0x0806u16.to_be_bytes());
        arp.extend_from_slice(&[0; 28]);
        assert!(decode(LinkType::Ethernet, &arp).is_err());
    }

    #[test]
    fn short_and_garbage_frames_are_errors() {
        for link in [
            LinkType::Ethernet,
            LinkType::Null,
            LinkType::Loop,
            LinkType::LinuxSll,
            LinkType::LinuxSll2,
            LinkType::Raw,
        ] {
            for len in 0..24 {
                assert!(decode(link, &vec![0x45; len]).is_err(), "{link:?} {len}");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn random_frames_never_panic(frame in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            for link in [LinkType::Ethernet, LinkType::Null, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::Raw] {
                let _ = decode(link, &frame);
            }
        }
    }
}
