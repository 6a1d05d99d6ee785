//! libpcap: opening a live interface or a pcap/pcapng file, the BPF filter, the interfaces'
//! addresses, waiting for packets. The only code linked to libpcap; the frames it hands over are
//! decoded by `ja4sensor::capture`.

use std::net::IpAddr;
use std::path::Path;

use ja4sensor::capture::LinkType;
use ja4sensor::SensorError;
use pcap::{Activated, Capture, Linktype, Precision};

/// Bytes captured per packet. A ClientHello segment is at most one MTU on the wire but loopback
/// and GSO/GRO deliver up to 64 KiB "packets"; capturing them whole keeps the hello intact.
pub const SNAPLEN: i32 = 65_535;

/// How long the live loop waits for the capture to become readable before it looks at the stop
/// flag, the counters and the flow timeouts again. libpcap's own read timeout is not used: on
/// Linux (TPACKET_V3) it never fires while no packet arrives, so the handle is non-blocking and
/// we poll its descriptor ourselves.
pub const POLL_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

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
    LinkType::from_dlt(dlt.0).ok_or_else(|| CaptureError::UnsupportedLinkType {
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

impl From<CaptureError> for SensorError {
    fn from(e: CaptureError) -> Self {
        SensorError::Capture(Box::new(e))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ja4sensor::config::Config;

    #[test]
    fn the_generated_filters_compile() {
        let cfg = Config::default();
        check_filter(&cfg.bpf_filter(&[])).unwrap();
        let lo = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        check_filter(&cfg.bpf_filter(&lo)).unwrap();
        assert!(matches!(
            check_filter("tcp and nonsense"),
            Err(CaptureError::Filter { .. })
        ));
    }

    #[test]
    fn link_types_map_from_their_dlt() {
        assert_eq!(
            LinkType::from_dlt(Linktype::ETHERNET.0),
            Some(LinkType::Ethernet)
        );
        assert_eq!(
            LinkType::from_dlt(Linktype(113).0),
            Some(LinkType::LinuxSll)
        );
        assert_eq!(LinkType::from_dlt(147), None);
    }
}
