//! The per-packet path shared by live capture and offline reading:
//! capture (decode) → flow (SYN traits, table) → hello (parse) → fingerprint → a [`HelloEvent`]
//! handed to the caller's sink.

use correlate_lib::{ConnKey, TlsRecord};

use crate::capture::{self, DecodeError, LinkType};
use crate::fingerprint::{self, Transport};
use crate::flow::{self, FlowTable, SynTraits};
use crate::hello::{self, ClientHello, HelloError};

/// One fingerprinted ClientHello, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloEvent {
    pub record: TlsRecord,
    /// The SNI host name, `None` when the hello had none (the record's `tls_sni` is then empty).
    pub sni: Option<String>,
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
    pub syns: u64,
    /// Payloads that did not start with a TLS handshake record (HTTP, SSH, proxy setup...).
    pub payloads_not_tls: u64,
    /// TLS records that are not a ClientHello (later records of a connection, server side).
    pub payloads_not_hello: u64,
    /// Payloads skipped because the flow already found its hellos or gave up.
    pub payloads_after_done: u64,
    pub retransmissions: u64,
    /// ClientHellos that continue past the payload (need TCP reassembly).
    pub hellos_incomplete: u64,
    pub hellos_parsed: u64,
    /// ClientHellos that were malformed or over a limit.
    pub parse_failures: u64,
    /// Hellos with an extension whose content could not be read (still fingerprinted).
    pub malformed_extensions: u64,
    pub flows_closed: u64,
}

pub struct Pipeline {
    link: LinkType,
    flows: FlowTable,
    counters: Counters,
    sensor_id: String,
}

impl Pipeline {
    pub fn new(link: LinkType, max_flows: usize, flow_timeout_ns: u64, sensor_id: String) -> Self {
        Self {
            link,
            flows: FlowTable::new(max_flows, flow_timeout_ns),
            counters: Counters::default(),
            sensor_id,
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

    /// Expires idle flows when no packet arrives (live capture on a quiet interface).
    pub fn tick(&mut self, now_ns: u64) {
        self.flows.expire(now_ns);
    }

    /// Processes one captured frame; each ClientHello found is passed to `emit`.
    pub fn process(&mut self, time_ns: u64, frame: &[u8], emit: &mut dyn FnMut(HelloEvent)) {
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
        let key = ConnKey::new(segment.src, segment.dst);
        if segment.flags.syn && !segment.flags.ack {
            self.counters.syns += 1;
            let traits = SynTraits {
                time_ns,
                ip: segment.ip,
                tcp: flow::tcp_meta(segment.window, segment.options),
            };
            self.flows.on_syn(key, traits, segment.seq);
        }
        // SYN-ACKs open nothing: the flow of interest is the client's.
        let syn_ack = segment.flags.syn && segment.flags.ack;
        if !segment.payload.is_empty() && !syn_ack {
            self.scan_payload(key, time_ns, segment.seq, segment.payload, emit);
        }
        if (segment.flags.fin || segment.flags.rst) && self.flows.remove(&key).is_some() {
            self.counters.flows_closed += 1;
        }
    }

    fn scan_payload(
        &mut self,
        key: ConnKey,
        time_ns: u64,
        seq: u32,
        payload: &[u8],
        emit: &mut dyn FnMut(HelloEvent),
    ) {
        let flow = self.flows.get_or_insert(key, time_ns);
        if flow.is_done() {
            self.counters.payloads_after_done += 1;
            return;
        }
        if !flow.accept_payload(seq, payload.len()) {
            self.counters.retransmissions += 1;
            return;
        }
        let c = &mut self.counters;
        let hello = match hello::parse_client_hello(payload) {
            Ok(h) => h,
            Err(HelloError::NotTls { .. }) => {
                c.payloads_not_tls += 1;
                return;
            }
            Err(HelloError::NotHandshake { .. } | HelloError::NotClientHello { .. }) => {
                c.payloads_not_hello += 1;
                return;
            }
            Err(e @ HelloError::Incomplete { .. }) => {
                log::debug!("{}: {e}", key.conn_id());
                c.hellos_incomplete += 1;
                return;
            }
            Err(e) => {
                log::debug!("{}: {e}", key.conn_id());
                c.parse_failures += 1;
                return;
            }
        };
        flow.hellos += 1;
        c.hellos_parsed += 1;
        if !hello.malformed_extensions.is_empty() {
            c.malformed_extensions += 1;
            log::debug!(
                "{}: unreadable content in extensions {:04x?}",
                key.conn_id(),
                hello.malformed_extensions
            );
        }
        let syn = flow.syn.clone();
        emit(build_event(key, time_ns, syn, &hello, &self.sensor_id));
    }
}

/// The record of one hello: SYN traits (when seen) plus the hello's fingerprints.
pub fn build_event(
    key: ConnKey,
    hello_time_ns: u64,
    syn: Option<SynTraits>,
    hello: &ClientHello,
    sensor_id: &str,
) -> HelloEvent {
    let ja4 = fingerprint::ja4(hello, Transport::Tcp);
    let ja3 = fingerprint::ja3(hello);
    let (syn_time_ns, ip, tcp) = match syn {
        Some(s) => (s.time_ns, Some(s.ip), Some(s.tcp)),
        None => (0, None, None),
    };
    let record = TlsRecord {
        key: Some(key),
        syn_time_ns,
        hello_time_ns,
        closed_time_ns: 0,
        ip,
        tcp,
        tls_version: fingerprint::tls_version_label(fingerprint::offered_version(hello)),
        tls_sni: hello.sni.clone().unwrap_or_default(),
        tls_alpn: hello
            .first_alpn()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .unwrap_or_default(),
        ja4: ja4.ja4,
        ja4_r: ja4.ja4_r,
        ja3: ja3.ja3,
        ja3_hash: ja3.ja3_hash,
        sensor_id: sensor_id.to_owned(),
    };
    HelloEvent {
        record,
        sni: hello.sni.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::hello::tests::HelloBuilder;
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
}
