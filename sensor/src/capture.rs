//! Capture: opening libpcap (a live interface or a pcap/pcapng file) and decoding each frame down
//! to the TCP segment the rest of the pipeline needs.
//!
//! Frames are hostile input. Link headers are stripped here with explicit length checks; IP and
//! TCP are sliced by `etherparse`, which borrows the frame and returns structured errors. The
//! traits of a SYN are not read here: the pipeline hands the SYN's IP packet to
//! `correlate_lib::fingerprint::syn`, the parser httpd's inline mode uses too.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use etherparse::{EtherType, NetSlice, SlicedPacket, TransportSlice};
use pcap::{Activated, Capture, Linktype, Precision};

/// Bytes captured per packet. A ClientHello segment is at most one MTU on the wire but loopback
/// and GSO/GRO deliver up to 64 KiB "packets"; capturing them whole keeps the hello intact.
pub const SNAPLEN: i32 = 65_535;

/// How long the live loop waits for the capture to become readable before it looks at the stop
/// flag, the counters and the flow timeouts again. libpcap's own read timeout is not used: on
/// Linux (TPACKET_V3) it never fires while no packet arrives, so the handle is non-blocking and
/// we poll its descriptor ourselves.
pub const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

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
    pub fn from_pcap(link: Linktype) -> Option<Self> {
        match link.0 {
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

/// Errors opening or reading a capture.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("cannot open capture on interface {interface:?}: {source}")]
    OpenLive {
        interface: String,
        #[source]
        source: pcap::Error,
    },
    #[error("cannot open capture file {path}: {source}")]
    OpenFile {
        path: String,
        #[source]
        source: pcap::Error,
    },
    #[error("invalid BPF filter {filter:?}: {source}")]
    Filter {
        filter: String,
        #[source]
        source: pcap::Error,
    },
    #[error("unsupported link type {name} ({dlt}); supported: Ethernet, NULL/LOOP, Linux SLL/SLL2, raw IP")]
    UnsupportedLinkType { dlt: i32, name: String },
    #[error("cannot list the interfaces' addresses: {0}")]
    ListDevices(#[source] pcap::Error),
    #[error("capture read failed: {0}")]
    Read(#[source] pcap::Error),
    #[error("waiting for packets failed: {0}")]
    Poll(#[source] std::io::Error),
}

/// How long a packet may wait in the kernel before the sensor sees it. Live captures use
/// TPACKET_V3: the kernel packs packets of any size into blocks and hands a block over when it
/// is full or this old, so a 2 MiB buffer holds thousands of SYNs and hellos. (Immediate mode
/// would use TPACKET_V2, whose fixed frames are as large as the interface MTU: on `lo`, 64 KiB,
/// 32 frames in 2 MiB, and a burst of 33 SYNs loses packets.)
pub const BLOCK_TIMEOUT_MS: i32 = 1;

/// Bound on how long ago a packet still held in the kernel's open block was captured: the block
/// timeout rounded up to the kernel's timer tick (at worst 10 ms at HZ=100), plus slack. A read
/// that finds nothing has processed every packet captured before `now - this`.
pub const CAPTURE_LATENCY_NS: u64 = 15_000_000;

/// Opens a live capture (TPACKET_V3 blocks retired after [`BLOCK_TIMEOUT_MS`]) with the given
/// BPF filter. The handle is non-blocking: an empty read returns
/// [`pcap::Error::TimeoutExpired`]; wait with [`wait_readable`].
/// `buffer_bytes` is libpcap's kernel buffer (see `Config::pcap_buffer_bytes`).
pub fn open_live(
    interface: &str,
    filter: &str,
    buffer_bytes: i32,
) -> Result<Capture<pcap::Active>, CaptureError> {
    let open_err = |source| CaptureError::OpenLive {
        interface: interface.to_owned(),
        source,
    };
    let mut cap = Capture::from_device(interface)
        .map_err(open_err)?
        .immediate_mode(false)
        .timeout(BLOCK_TIMEOUT_MS)
        .buffer_size(buffer_bytes)
        .snaplen(SNAPLEN)
        .promisc(false)
        .open()
        .and_then(Capture::setnonblock)
        .map_err(open_err)?;
    cap.filter(filter, true)
        .map_err(|source| CaptureError::Filter {
            filter: filter.to_owned(),
            source,
        })?;
    Ok(cap)
}

/// Compiles `filter` without opening an interface (for `--check-config`).
pub fn check_filter(filter: &str) -> Result<(), CaptureError> {
    let err = |source| CaptureError::Filter {
        filter: filter.to_owned(),
        source,
    };
    let dead = Capture::dead(Linktype::ETHERNET).map_err(err)?;
    dead.compile(filter, true).map(|_| ()).map_err(err)
}

/// Every address of every interface of this host (loopback included), for the generated
/// filter's `dst host` clause when `core.local_ips` is empty.
pub fn local_addresses() -> Result<Vec<IpAddr>, CaptureError> {
    let devices = pcap::Device::list().map_err(CaptureError::ListDevices)?;
    let mut ips: Vec<IpAddr> = devices
        .iter()
        .flat_map(|d| d.addresses.iter().map(|a| a.addr))
        .collect();
    ips.sort();
    ips.dedup();
    Ok(ips)
}

/// Waits until the capture has packets to read, `timeout` passes, or a signal interrupts the
/// wait (EINTR is not an error: the caller re-checks its stop flag).
pub fn wait_readable(
    cap: &Capture<pcap::Active>,
    timeout: std::time::Duration,
) -> Result<(), CaptureError> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let timeout = Timespec {
        tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let mut fds = [PollFd::new(cap, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(CaptureError::Poll(e.into())),
    }
}

/// Opens a pcap or pcapng file; libpcap detects the format from its magic number. Timestamps are
/// requested in nanoseconds (libpcap scales microsecond files).
pub fn open_file(path: &Path) -> Result<Capture<pcap::Offline>, CaptureError> {
    Capture::from_file_with_precision(path, Precision::Nano).map_err(|source| {
        CaptureError::OpenFile {
            path: path.display().to_string(),
            source,
        }
    })
}

/// The capture's link type, if we decode it.
pub fn link_type<T: Activated + ?Sized>(cap: &Capture<T>) -> Result<LinkType, CaptureError> {
    let dlt = cap.get_datalink();
    LinkType::from_pcap(dlt).ok_or_else(|| CaptureError::UnsupportedLinkType {
        dlt: dlt.0,
        name: dlt.get_name().unwrap_or_else(|_| "unknown".into()),
    })
}

/// Unix nanoseconds of a packet header; `sub_second_ns` is 1 for nanosecond captures and 1000
/// for microsecond ones. Times before 1970 map to 0.
pub fn timestamp_ns(header: &pcap::PacketHeader, sub_second_ns: u64) -> u64 {
    let secs = u64::try_from(header.ts.tv_sec).unwrap_or(0);
    let frac = u64::try_from(header.ts.tv_usec).unwrap_or(0);
    secs.saturating_mul(1_000_000_000)
        .saturating_add(frac.saturating_mul(sub_second_ns))
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
