//! The capture half of ja4sensor: libpcap ([`device`]), `run`'s loop from an interface into the
//! ring ([`live`]) and `read` of a capture file ([`offline`]). Everything the frames go through
//! after libpcap (decoding, reassembly, fingerprints, the ring, sentinel's outputs) is the
//! `ja4sensor` library.
//!
//! Its own crate and binary (`ja4sensor-pcap`) so that libpcap, and what libpcap pulls in
//! (D-Bus, systemd, gcrypt, lz4, zstd, lzma: nine libraries on Debian 12), is loaded only by the
//! process that captures: `ja4sensor run` and `ja4sensor read` execute this binary with their
//! arguments; `ja4sensor query` and the other commands start without them (about 1 ms and 2 MiB
//! less per command). It is also the one binary that needs `CAP_NET_RAW`.

#![forbid(unsafe_code)]

pub mod device;
pub mod live;
pub mod offline;
