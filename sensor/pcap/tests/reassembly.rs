//! TCP reassembly on real hellos: every TCP ClientHello of FoxIO's corpus (real browsers and
//! tools) is cut into several segments, sent out of order with a retransmission and an
//! overlapping segment, every other one also re-framed into several TLS records, and written to
//! a new pcap. `ja4sensor read` must give, hello for hello, the same fingerprints as on the
//! original capture (where each hello is one segment).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use correlate_lib::fingerprint::hello::parse_client_hello_prefix;
use etherparse::PacketBuilder;
use ja4sensor::capture;
use ja4sensor_pcap::device;

fn corpus_pcaps() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/ja4/pcap");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// One ClientHello as captured: its connection and the hello's bytes (records included).
struct CapturedHello {
    src: SocketAddr,
    dst: SocketAddr,
    ttl: u8,
    bytes: Vec<u8>,
}

fn hellos_of(path: &Path) -> Vec<CapturedHello> {
    let mut cap = device::open_file(path).unwrap();
    let link = device::link_type(&cap).unwrap();
    let mut out = Vec::new();
    while let Ok(packet) = cap.next_packet() {
        let Ok(seg) = capture::decode(link, packet.data) else {
            continue;
        };
        if let Ok((_, used)) = parse_client_hello_prefix(seg.payload) {
            out.push(CapturedHello {
                src: seg.src,
                dst: seg.dst,
                // IPv4 TTL at byte 8, IPv6 hop limit at byte 7.
                ttl: seg.ip_packet[if seg.ip_packet[0] >> 4 == 4 { 8 } else { 7 }],
                bytes: seg.payload[..used].to_vec(),
            });
        }
    }
    out
}

/// Writes Ethernet frames into a classic pcap file.
struct PcapWriter {
    file: pcap::Savefile,
    time_us: i64,
}

impl PcapWriter {
    fn create(path: &Path) -> Self {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        Self {
            file: dead.savefile(path).unwrap(),
            time_us: 1_700_000_000_000_000,
        }
    }

    fn tcp(&mut self, src: SocketAddr, dst: SocketAddr, ttl: u8, seq: u32, syn: bool, data: &[u8]) {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = match (src.ip(), dst.ip()) {
            (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), ttl),
            (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), ttl),
            _ => panic!("mixed address families"),
        };
        let tcp = ip.tcp(src.port(), dst.port(), seq, 64240);
        let tcp = if syn {
            tcp.syn()
                .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(1460)])
                .unwrap()
        } else {
            tcp.ack(1).psh()
        };
        let mut frame = Vec::new();
        tcp.write(&mut frame, data).unwrap();
        self.time_us += 1_000;
        let header = pcap::PacketHeader {
            ts: libc::timeval {
                tv_sec: self.time_us / 1_000_000,
                tv_usec: self.time_us % 1_000_000,
            },
            caplen: frame.len() as u32,
            len: frame.len() as u32,
        };
        self.file.write(&pcap::Packet::new(&header, &frame));
    }
}

/// The same handshake message re-framed into TLS records of at most `max` bytes (a leading
/// ChangeCipherSpec record, sent before a second hello, is kept as it is).
fn reframe(hello: &[u8], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut hello = hello;
    if hello[0] == 20 {
        let ccs = 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        out.extend_from_slice(&hello[..ccs]);
        hello = &hello[ccs..];
    }
    let len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
    let message = &hello[5..5 + len];
    for chunk in message.chunks(max) {
        out.extend_from_slice(&hello[..3]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// Writes one connection: SYN, then `bytes` cut into `segment`-byte pieces sent last-first, with
/// the first piece retransmitted and a segment overlapping the first two pieces.
fn write_scrambled(w: &mut PcapWriter, h: &CapturedHello, bytes: &[u8], segment: usize) {
    let isn = 7_000u32;
    w.tcp(h.src, h.dst, h.ttl, isn, true, &[]);
    let data_seq = isn + 1;
    let cuts: Vec<usize> = (0..bytes.len()).step_by(segment).collect();
    let piece = |i: usize| &bytes[cuts[i]..(cuts[i] + segment).min(bytes.len())];
    for i in (1..cuts.len()).rev() {
        w.tcp(
            h.src,
            h.dst,
            h.ttl,
            data_seq + cuts[i] as u32,
            false,
            piece(i),
        );
        if i == 1 {
            let from = segment / 2;
            let to = (segment + segment / 2).min(bytes.len());
            w.tcp(
                h.src,
                h.dst,
                h.ttl,
                data_seq + from as u32,
                false,
                &bytes[from..to],
            );
        }
    }
    w.tcp(h.src, h.dst, h.ttl, data_seq, false, piece(0));
    w.tcp(h.src, h.dst, h.ttl, data_seq, false, piece(0));
}

/// `(ja4, ja4_r, ja3, sni)` of every hello `ja4sensor read` prints for `path`.
fn fingerprints(path: &Path) -> Vec<(String, String, String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_ja4sensor-pcap"))
        .arg("read")
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            (s("ja4"), s("ja4_r"), s("ja3"), s("tls_sni"))
        })
        .collect()
}

#[test]
fn split_reordered_and_reframed_corpus_hellos_keep_their_fingerprints() {
    let dir = tempfile::tempdir().unwrap();
    let scrambled = dir.path().join("scrambled.pcap");
    let mut writer = PcapWriter::create(&scrambled);
    let mut expected = Vec::new();
    for (n, path) in corpus_pcaps().iter().enumerate() {
        let hellos = hellos_of(path);
        if hellos.is_empty() {
            continue;
        }
        let original = fingerprints(path);
        // Every hello of the capture appears in the original output (proxy bytes and all).
        assert_eq!(original.len(), hellos.len(), "{}", path.display());
        for (i, h) in hellos.iter().enumerate() {
            let bytes = if i % 2 == 0 {
                reframe(&h.bytes, 100 + 37 * n)
            } else {
                h.bytes.clone()
            };
            write_scrambled(&mut writer, h, &bytes, 90 + 13 * ((n + i) % 11));
        }
        expected.extend(original);
    }
    writer.file.flush().unwrap();
    drop(writer);
    assert!(
        expected.len() >= 95,
        "{} hellos in the corpus",
        expected.len()
    );
    let actual = fingerprints(&scrambled);
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(&expected).enumerate() {
        assert_eq!(a, e, "hello #{i}");
    }
}
