//! The per-packet path shared by live capture and offline reading:
//! capture (decode) → flow (SYN traits, table, reassembly) → hello (parse) → fingerprint → an
//! [`Event`] handed to the caller's sink.

use std::sync::OnceLock;

use correlate_lib::fingerprint::hello::{self, ClientHello, HelloError};
use correlate_lib::fingerprint::os::OsDatabase;
use correlate_lib::fingerprint::{self, syn, TlsFingerprint, Transport};
use correlate_lib::{ConnKey, TlsRecord};
use ipnet::IpNet;

use crate::capture::{self, DecodeError, LinkType};
use crate::flow::{self, FlowTable, Inserted, OpenConnections, SeenSyn};

/// The p0f signature database, parsed once per process (the sensor is an executable: a static
/// here outlives nothing it depends on) and shared by every pipeline. `None` if it did not load
/// (logged once): hellos are then published without an OS guess.
pub fn os_database() -> Option<&'static OsDatabase> {
    static DB: OnceLock<Option<OsDatabase>> = OnceLock::new();
    DB.get_or_init(|| match OsDatabase::load() {
        Ok(db) => Some(db),
        Err(e) => {
            log::error!("{e}; records get no tcp_os");
            None
        }
    })
    .as_ref()
}

/// One fingerprinted ClientHello, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloEvent {
    pub record: TlsRecord,
    /// The SNI host name, `None` when the hello had none (the record's `tls_sni` is then empty).
    pub sni: Option<String>,
}

/// What the pipeline hands to its sink.
// Events are handed over by value one at a time, never stored in bulk: boxing the hello would
// only add an allocation per hello.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A ClientHello was read.
    Hello(HelloEvent),
    /// The client of a connection whose hello was published sent FIN or RST at `time_ns`.
    Closed { key: ConnKey, time_ns: u64 },
}

/// Every kind of packet the pipeline saw or skipped. Absolute counts since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_seen: u64,
    /// Frames whose link/IP/TCP headers did not decode (truncated, malformed).
    pub packets_malformed: u64,
    pub packets_not_ip: u64,
    pub packets_not_tcp: u64,
    /// IP fragments: not reassembled (a ClientHello is never sent fragmented in practice).
    pub ip_fragments: u64,
    /// Packets from a source in `core.exclude_source_ips`.
    pub packets_excluded: u64,
    pub syns: u64,
    /// SYNs whose IP/TCP headers the SYN parser refused (more IPv6 extension headers than it
    /// walks, an AH header...): the flow is tracked without SYN traits.
    pub syns_unparsed: u64,
    /// Payloads that did not start with a TLS handshake record (HTTP, SSH, proxy setup...).
    pub payloads_not_tls: u64,
    /// TLS records that are not a ClientHello (later records of a connection, server side).
    pub payloads_not_hello: u64,
    /// Payloads skipped because the flow already found its hellos or gave up.
    pub payloads_after_done: u64,
    /// Segments whose every byte was already received.
    pub retransmissions: u64,
    /// Segments that arrived ahead of a gap and waited for it.
    pub segments_out_of_order: u64,
    /// Times a ClientHello needed more segments than arrived so far (it waits for them).
    pub hellos_incomplete: u64,
    /// ClientHellos read from more than one segment.
    pub hellos_reassembled: u64,
    pub hellos_parsed: u64,
    /// ClientHellos that were malformed (sum of the `parse_*` counters below).
    pub parse_failures: u64,
    pub parse_malformed_body: u64,
    pub parse_malformed_extensions: u64,
    /// A non-handshake record in the middle of a hello.
    pub parse_interleaved: u64,
    /// Hellos (or records) over `MAX_HELLO_BYTES` / `MAX_FLOW_BUFFER_BYTES`: dropped.
    pub hellos_too_large: u64,
    /// Flows that gave up because all flows together buffer `MAX_REASSEMBLY_BYTES`.
    pub reassembly_over_budget: u64,
    /// Hellos with an extension whose content could not be read (still fingerprinted).
    pub malformed_extensions: u64,
    pub flows_closed: u64,
    /// Client FIN/RST of connections whose hello was published (ring record marked closed).
    pub connections_closed: u64,
}

/// Capacity of the flow table and its timeout.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub max_flows: usize,
    pub flow_timeout_ns: u64,
    pub sensor_id: String,
    /// Packets from these sources are skipped (`core.exclude_source_ips`).
    pub exclude_sources: Vec<IpNet>,
}

pub struct Pipeline {
    link: LinkType,
    flows: FlowTable,
    open: OpenConnections,
    counters: Counters,
    sensor_id: String,
    exclude_sources: Vec<IpNet>,
    /// The hellos read from one segment, kept between packets so that no packet allocates it.
    found: Vec<(ClientHello, Option<SeenSyn>)>,
    os: Option<&'static OsDatabase>,
}

impl Pipeline {
    pub fn new(link: LinkType, max_flows: usize, flow_timeout_ns: u64, sensor_id: String) -> Self {
        Self::with_config(
            link,
            PipelineConfig {
                max_flows,
                flow_timeout_ns,
                sensor_id,
                exclude_sources: Vec::new(),
            },
        )
    }

    pub fn with_config(link: LinkType, cfg: PipelineConfig) -> Self {
        Self {
            link,
            flows: FlowTable::new(cfg.max_flows, cfg.flow_timeout_ns),
            open: OpenConnections::default(),
            counters: Counters::default(),
            sensor_id: cfg.sensor_id,
            exclude_sources: cfg.exclude_sources,
            found: Vec::with_capacity(usize::from(flow::MAX_HELLOS_PER_FLOW)),
            os: os_database(),
        }
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn flow_stats(&self) -> flow::FlowStats {
        self.flows.stats()
    }

    pub fn flows_tracked(&self) -> usize {
        self.flows.tracked()
    }

    /// Bytes buffered for reassembly across all flows.
    pub fn reassembly_bytes(&self) -> usize {
        self.flows.buffered()
    }

    /// Published connections not yet closed (and not forgotten).
    pub fn open_connections(&self) -> usize {
        self.open.len()
    }

    /// Expires idle flows when no packet arrives (live capture on a quiet interface).
    pub fn tick(&mut self, now_ns: u64) {
        self.flows.expire(now_ns);
        self.open.expire(now_ns);
    }

    /// Processes one captured frame; each ClientHello found and each close of a published
    /// connection is passed to `emit`.
    pub fn process(&mut self, time_ns: u64, frame: &[u8], emit: &mut dyn FnMut(Event)) {
        self.counters.packets_seen += 1;
        self.flows.expire(time_ns);
        let segment = match capture::decode(self.link, frame) {
            Ok(s) => s,
            Err(e) => {
                log::trace!("frame skipped: {e}");
                let c = &mut self.counters;
                match e {
                    DecodeError::NotIp | DecodeError::NotIpFamily { .. } => c.packets_not_ip += 1,
                    DecodeError::NotTcp => c.packets_not_tcp += 1,
                    DecodeError::Fragment => c.ip_fragments += 1,
                    DecodeError::Truncated { .. } | DecodeError::Malformed(_) => {
                        c.packets_malformed += 1
                    }
                }
                return;
            }
        };
        if !self.exclude_sources.is_empty() {
            let src = correlate_lib::record::normalize_ip(segment.src.ip());
            if self.exclude_sources.iter().any(|net| net.contains(&src)) {
                self.counters.packets_excluded += 1;
                return;
            }
        }
        let key = ConnKey::new(segment.src, segment.dst);
        if segment.flags.syn && !segment.flags.ack {
            self.counters.syns += 1;
            match syn::parse_syn(segment.ip_packet) {
                Ok(traits) => {
                    self.flows
                        .on_syn(key, SeenSyn { time_ns, traits }, segment.seq);
                }
                Err(e) => {
                    log::debug!("{}: SYN traits unreadable: {e}", key.conn_id());
                    self.counters.syns_unparsed += 1;
                    self.flows.get_or_insert(key, time_ns);
                }
            }
        }
        // SYN-ACKs open nothing: the flow of interest is the client's.
        let syn_ack = segment.flags.syn && segment.flags.ack;
        if !segment.payload.is_empty() && !syn_ack {
            // A SYN carrying data (TCP Fast Open): the data follows the SYN's sequence number.
            let seq = if segment.flags.syn {
                segment.seq.wrapping_add(1)
            } else {
                segment.seq
            };
            self.scan_payload(key, time_ns, seq, segment.payload, emit);
        }
        if segment.flags.fin || segment.flags.rst {
            if self.flows.remove(&key).is_some() {
                self.counters.flows_closed += 1;
            }
            if self.open.close(&key) {
                self.counters.connections_closed += 1;
                emit(Event::Closed { key, time_ns });
            }
        }
    }

    fn scan_payload(
        &mut self,
        key: ConnKey,
        time_ns: u64,
        seq: u32,
        payload: &[u8],
        emit: &mut dyn FnMut(Event),
    ) {
        let budget = self.flows.budget_left();
        let flow = self.flows.get_or_insert(key, time_ns);
        if flow.is_done() {
            self.counters.payloads_after_done += 1;
            return;
        }
        let c = &mut self.counters;
        let held_before = flow.stream.held();
        match flow.stream.insert(seq, payload, budget) {
            Inserted::Extended => {}
            Inserted::Duplicate => c.retransmissions += 1,
            Inserted::OutOfOrder => c.segments_out_of_order += 1,
            Inserted::BeyondWindow => {
                log::debug!("{}: hello larger than the reassembly window", key.conn_id());
                c.hellos_too_large += 1;
                flow.give_up();
            }
            Inserted::OverBudget => {
                log::debug!("{}: reassembly budget exhausted", key.conn_id());
                c.reassembly_over_budget += 1;
                flow.give_up();
            }
        }
        let hellos = &mut self.found;
        while !flow.is_done() && !flow.stream.contiguous().is_empty() {
            let reassembled = flow.stream.segments() > 1;
            match hello::parse_client_hello_prefix(flow.stream.contiguous()) {
                Ok((hello, used)) => {
                    flow.hellos += 1;
                    c.hellos_parsed += 1;
                    c.hellos_reassembled += u64::from(reassembled);
                    flow.stream.consume(used);
                    hellos.push((hello, flow.syn.clone()));
                }
                Err(HelloError::NotTls { .. }) => {
                    c.payloads_not_tls += 1;
                    flow.payloads_scanned += 1;
                    flow.stream.consume_all();
                }
                Err(HelloError::NotHandshake { .. } | HelloError::NotClientHello { .. }) => {
                    c.payloads_not_hello += 1;
                    flow.payloads_scanned += 1;
                    flow.stream.consume_all();
                }
                Err(HelloError::Incomplete { .. }) => {
                    c.hellos_incomplete += 1;
                    break;
                }
                Err(e) => {
                    log::debug!("{}: {e}", key.conn_id());
                    match e {
                        HelloError::RecordTooLong { .. } | HelloError::HelloTooLong { .. } => {
                            c.hellos_too_large += 1
                        }
                        HelloError::Interleaved { .. } => {
                            c.parse_failures += 1;
                            c.parse_interleaved += 1;
                        }
                        HelloError::MalformedExtensions { .. } => {
                            c.parse_failures += 1;
                            c.parse_malformed_extensions += 1;
                        }
                        _ => {
                            c.parse_failures += 1;
                            c.parse_malformed_body += 1;
                        }
                    }
                    flow.give_up();
                }
            }
        }
        if flow.is_done() {
            flow.stream.clear();
        }
        let held_after = flow.stream.held();
        self.flows.account(held_before, held_after);
        let mut found = std::mem::take(&mut self.found);
        for (hello, syn) in found.drain(..) {
            if !hello.malformed_extensions.is_empty() {
                self.counters.malformed_extensions += 1;
                log::debug!(
                    "{}: unreadable content in extensions {:04x?}",
                    key.conn_id(),
                    hello.malformed_extensions
                );
            }
            self.open.insert(key, time_ns);
            emit(Event::Hello(build_event(
                key,
                time_ns,
                syn,
                &hello,
                &self.sensor_id,
                self.os,
            )));
        }
        self.found = found;
    }
}

/// The record of one hello: SYN traits and the OS they suggest (when the SYN was seen) plus the
/// hello's fingerprints.
pub fn build_event(
    key: ConnKey,
    hello_time_ns: u64,
    syn: Option<SeenSyn>,
    hello: &ClientHello,
    sensor_id: &str,
    os: Option<&OsDatabase>,
) -> HelloEvent {
    let tls = TlsFingerprint::of(hello, Transport::Tcp);
    let sni = tls.sni.clone();
    let guess = syn.as_ref().zip(os).map(|(s, db)| db.guess(&s.traits));
    let record = fingerprint::connection_record(
        key,
        hello_time_ns,
        syn.map(|s| (s.time_ns, s.traits)),
        tls,
        guess,
        sensor_id,
    );
    HelloEvent { record, sni }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use correlate_lib::fingerprint::hello::testing::{record, HelloBuilder};
    use etherparse::PacketBuilder;

    fn packet(sport: u16, seq: u32, syn: bool, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 57).tcp(sport, 443, seq, 29200);
        let b = if syn {
            b.syn()
                .options(&[
                    etherparse::TcpOptionElement::MaximumSegmentSize(1460),
                    etherparse::TcpOptionElement::Noop,
                    etherparse::TcpOptionElement::WindowScale(8),
                ])
                .unwrap()
        } else {
            b.ack(1)
        };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn run(frames: &[(u64, Vec<u8>)]) -> (Vec<HelloEvent>, Counters) {
        let (events, c) = run_events(frames);
        let hellos = events
            .into_iter()
            .filter_map(|e| match e {
                Event::Hello(h) => Some(h),
                Event::Closed { .. } => None,
            })
            .collect();
        (hellos, c)
    }

    fn run_events(frames: &[(u64, Vec<u8>)]) -> (Vec<Event>, Counters) {
        let mut p = Pipeline::new(LinkType::Raw, 100, 30_000_000_000, "lab".into());
        let mut out = Vec::new();
        for (t, f) in frames {
            p.process(*t, f, &mut |e| out.push(e));
        }
        (out, p.counters())
    }

    #[test]
    fn syn_traits_join_the_hello_of_their_connection() {
        let hello = HelloBuilder::default()
            .sni("example.com")
            .alpn(&[b"h2"])
            .bytes();
        let (events, c) = run(&[
            (1_000_000_000, packet(40000, 100, true, &[])),
            (1_012_000_000, packet(40000, 101, false, &hello)),
        ]);
        assert_eq!(events.len(), 1);
        let r = &events[0].record;
        assert_eq!(r.syn_to_clienthello_ms(), Some(12));
        assert_eq!(r.ip.unwrap().ttl, 57);
        let tcp = r.tcp.as_ref().unwrap();
        assert_eq!(
            (tcp.mss, tcp.window_scale, tcp.window_size),
            (1460, Some(8), 29200)
        );
        assert_eq!(tcp.options, "MSS,NOP,WScale");
        assert_eq!(r.tcp_option_kinds.as_slice(), [2, 1, 3]);
        // TTL 57 under Linux's initial 64 (no signature has this option layout).
        assert_eq!(r.tcp_os_distance, Some(7));
        assert_eq!(r.tls_sni, "example.com");
        assert_eq!(r.tls_alpn, "h2");
        assert_eq!(r.tls_version, "1.2");
        assert_eq!(r.sensor_id, "lab");
        assert_eq!(events[0].sni.as_deref(), Some("example.com"));
        assert_eq!((c.syns, c.hellos_parsed), (1, 1));
    }

    #[test]
    fn hello_after_proxy_bytes_is_found() {
        let hello = HelloBuilder::default().bytes();
        let (events, c) = run(&[
            (
                1,
                packet(40001, 1, false, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n"),
            ),
            (2, packet(40001, 37, false, &hello)),
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(c.payloads_not_tls, 1);
        assert!(events[0].record.ip.is_none(), "no SYN seen");
    }

    #[test]
    fn retransmitted_hello_is_reported_once_but_a_second_hello_is_reported() {
        let hello = HelloBuilder::default().bytes();
        let len = hello.len() as u32;
        let (events, c) = run(&[
            (1, packet(40002, 1, false, &hello)),
            (2, packet(40002, 1, false, &hello)),
            (3, packet(40002, 1 + len, false, &hello)),
            (4, packet(40002, 1 + 2 * len, false, &hello)),
        ]);
        assert_eq!(events.len(), 2, "at most two hellos per connection");
        assert_eq!(c.retransmissions, 1);
        assert_eq!(c.payloads_after_done, 1);
    }

    #[test]
    fn garbage_hello_is_counted_and_dropped() {
        let mut bad = HelloBuilder::default().bytes();
        // Record header (5), handshake header (4), version (2), random (32): session id length.
        bad[43] = 0xff;
        let (events, c) = run(&[(1, packet(40003, 1, false, &bad))]);
        assert!(events.is_empty());
        assert_eq!(c.parse_failures, 1);
    }

    fn flagged(sport: u16, seq: u32, fin: bool, rst: bool) -> Vec<u8> {
        let b = PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 57).tcp(sport, 443, seq, 29200);
        let b = if fin { b.fin().ack(1) } else { b.ack(1) };
        let b = if rst { b.rst() } else { b };
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    fn big_hello() -> Vec<u8> {
        // ~1.8 KB like a post-quantum Chrome hello: padding extension (0x0015).
        HelloBuilder::default()
            .sni("split.example")
            .alpn(&[b"h2", b"http/1.1"])
            .ext(0x0015, vec![0; 1700])
            .bytes()
    }

    #[test]
    fn split_clienthello_is_reassembled_from_reordered_overlapping_segments() {
        let hello = big_hello();
        let whole = run(&[(1, packet(40010, 1, false, &hello))]).0;
        let base = 101u32;
        // Cut into 4 segments; send 3rd, 1st, 4th, a retransmitted 1st, an overlap of 1st-2nd,
        // then 2nd.
        let cuts = [0usize, 500, 1000, 1500, hello.len()];
        let seg = |i: usize| {
            packet(
                40010,
                base + cuts[i] as u32,
                false,
                &hello[cuts[i]..cuts[i + 1]],
            )
        };
        let overlap = packet(40010, base + 400, false, &hello[400..700]);
        let (events, c) = run(&[
            (1_000, packet(40010, base - 1, true, &[])),
            (2_000, seg(2)),
            (3_000, seg(0)),
            (4_000, seg(3)),
            (5_000, seg(0)),
            (6_000, overlap),
            (7_000, seg(1)),
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].record.ja4, whole[0].record.ja4);
        assert_eq!(events[0].record.ja3, whole[0].record.ja3);
        assert_eq!(events[0].record.tls_sni, "split.example");
        assert_eq!(
            events[0].record.hello_time_ns, 7_000,
            "time of the last segment"
        );
        assert_eq!(c.hellos_reassembled, 1);
        assert_eq!(c.segments_out_of_order, 2);
        assert_eq!(c.retransmissions, 1);
    }

    #[test]
    fn hello_split_across_tls_records_is_read() {
        let hello = big_hello();
        let message = &hello[5..];
        let mut records = Vec::new();
        for chunk in message.chunks(600) {
            records.extend(record(22, 0x0301, chunk));
        }
        let (events, _) = run(&[
            (1, packet(40011, 1, false, &records[..700])),
            (2, packet(40011, 701, false, &records[700..])),
        ]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].record.tls_sni, "split.example");
    }

    #[test]
    fn client_fin_or_rst_closes_a_published_connection_once() {
        let hello = HelloBuilder::default().bytes();
        let len = hello.len() as u32;
        let (events, c) = run_events(&[
            (1, packet(40012, 100, true, &[])),
            (2, packet(40012, 101, false, &hello)),
            (3, flagged(40012, 101 + len, true, false)),
            (4, flagged(40012, 102 + len, false, true)),
            // RST of a connection that never published a hello: nothing to mark.
            (5, flagged(40013, 1, false, true)),
        ]);
        assert_eq!(events.len(), 2);
        let Event::Closed { key, time_ns } = &events[1] else {
            panic!("{events:?}")
        };
        assert_eq!((key.src.port(), *time_ns), (40012, 3));
        assert_eq!(c.connections_closed, 1);
    }

    #[test]
    fn oversized_hello_is_counted_and_dropped() {
        let mut hello = HelloBuilder::default().bytes();
        // Handshake length 0xffffff: far over MAX_HELLO_BYTES.
        hello[6..9].copy_from_slice(&[0xff, 0xff, 0xff]);
        let (events, c) = run(&[(1, packet(40014, 1, false, &hello))]);
        assert!(events.is_empty());
        assert_eq!(c.hellos_too_large, 1);
    }

    #[test]
    fn non_tls_bytes_on_the_tls_port_are_counted_and_the_flow_gives_up() {
        let frames: Vec<_> = (0..20u32)
            .map(|i| (u64::from(i), packet(40015, 1 + 4 * i, false, b"GET ")))
            .collect();
        let (events, c) = run(&frames);
        assert!(events.is_empty());
        assert_eq!(c.payloads_not_tls, u64::from(flow::MAX_PAYLOADS_SCANNED));
        assert_eq!(
            c.payloads_after_done,
            20 - u64::from(flow::MAX_PAYLOADS_SCANNED)
        );
    }

    #[test]
    fn syn_flood_is_bounded_and_half_open_flows_expire() {
        let mut p = Pipeline::new(LinkType::Raw, 1000, 2_000_000_000, String::new());
        for port in 0..5000u16 {
            p.process(1_000_000_000, &packet(port, 7, true, &[]), &mut |_| {});
        }
        assert_eq!(p.flows_tracked(), 1000);
        assert_eq!(p.flow_stats().evicted, 4000);
        // Half-open: a partial hello that never completes.
        p.process(
            1_500_000_000,
            &packet(9, 8, false, &big_hello()[..100]),
            &mut |_| {},
        );
        assert_eq!(p.reassembly_bytes(), 100);
        p.tick(10_000_000_000);
        assert_eq!((p.flows_tracked(), p.reassembly_bytes()), (0, 0));
        assert_eq!(p.flow_stats().expired, 1000);
        assert_eq!(p.flow_stats().expired_without_hello, 5001);
    }

    #[test]
    fn excluded_sources_are_skipped_and_counted() {
        let mut p = Pipeline::with_config(
            LinkType::Raw,
            PipelineConfig {
                max_flows: 10,
                flow_timeout_ns: 1_000_000_000,
                sensor_id: String::new(),
                exclude_sources: vec!["192.0.2.0/24".parse().unwrap()],
            },
        );
        let mut n = 0;
        p.process(
            1,
            &packet(1, 1, false, &HelloBuilder::default().bytes()),
            &mut |_| n += 1,
        );
        assert_eq!((n, p.counters().packets_excluded), (0, 1));
    }

    fn hello_frames(
        hello: &[u8],
        cuts: &[usize],
        order: &[usize],
        dups: &[usize],
    ) -> Vec<(u64, Vec<u8>)> {
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c % hello.len()).collect();
        bounds.extend([0, hello.len()]);
        bounds.sort_unstable();
        bounds.dedup();
        let pieces: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let mut frames = vec![(0, packet(50000, 99, true, &[]))];
        let mut sequence: Vec<usize> = order.iter().map(|i| i % pieces.len()).collect();
        sequence.extend(0..pieces.len());
        sequence.extend(dups.iter().map(|i| i % pieces.len()));
        for (t, i) in sequence.into_iter().enumerate() {
            let (a, b) = pieces[i];
            frames.push((
                t as u64 + 1,
                packet(50000, 100 + a as u32, false, &hello[a..b]),
            ));
        }
        frames
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(500))]

        /// However a hello is cut, reordered and retransmitted, it is read once and fingerprinted
        /// as if it came whole.
        #[test]
        fn any_segmentation_order_and_duplication_reads_the_same_hello(
            cuts in proptest::collection::vec(0usize..4096, 0..12),
            order in proptest::collection::vec(0usize..64, 0..12),
            dups in proptest::collection::vec(0usize..64, 0..4),
        ) {
            let hello = big_hello();
            let whole = run(&[(1, packet(50001, 1, false, &hello))]).0;
            let (events, _) = run(&hello_frames(&hello, &cuts, &order, &dups));
            proptest::prop_assert_eq!(events.len(), 1);
            proptest::prop_assert_eq!(&events[0].record.ja4, &whole[0].record.ja4);
            proptest::prop_assert_eq!(&events[0].record.ja3, &whole[0].record.ja3);
        }

        /// Mutated and truncated hellos and IP/TCP headers: never a panic, buffers stay bounded.
        #[test]
        fn mutated_frames_never_panic_and_stay_bounded(
            cuts in proptest::collection::vec(0usize..4096, 0..6),
            flips in proptest::collection::vec((0usize..4096, proptest::num::u8::ANY), 1..16),
            truncate in proptest::option::of(0usize..2048),
        ) {
            let mut p = Pipeline::new(LinkType::Raw, 64, 1_000_000_000, String::new());
            for (t, mut frame) in hello_frames(&big_hello(), &cuts, &[], &[]) {
                for (at, byte) in &flips {
                    let len = frame.len();
                    frame[at % len] ^= byte;
                }
                if let Some(n) = truncate {
                    frame.truncate(n.max(1));
                }
                p.process(t, &frame, &mut |_| {});
                proptest::prop_assert!(p.reassembly_bytes() <= 64 * flow::MAX_FLOW_BUFFER_BYTES);
            }
            let mut hello = big_hello();
            for (at, byte) in &flips {
                let len = hello.len();
                hello[at % len] ^= byte;
            }
            let _ = hello::parse_client_hello(&hello);
        }
    }
}
