//! Flow: per-connection state between the SYN and the ClientHello(s), in a table bounded in size
//! and in time.
//!
//! A flow is keyed by the directional [`ConnKey`] of the packets that created it: the sender is
//! `src`. Live captures only see client→server packets (the BPF filter selects destination
//! ports); offline files see both directions, and the direction that carries a ClientHello is
//! the client's.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};

use correlate_lib::{ConnKey, IpMeta, TcpMeta};

/// Default maximum number of flows tracked at once. A flow lives from its SYN until its
/// ClientHello(s) are read, its FIN/RST, or its idle timeout; 65 536 simultaneous handshakes is
/// far above a busy web server's rate (and matches the ring's default slot count) while bounding
/// memory to a few MiB under a SYN flood. Past it the oldest flow is evicted.
pub const MAX_FLOWS: usize = 65_536;

/// Client payloads inspected per flow before giving up on finding a ClientHello. Proxies put a
/// few non-TLS exchanges first (HTTP CONNECT: 1 request; SOCKS5: greeting + connect request), and
/// a HelloRetryRequest makes the client send a second hello right after the first.
pub const MAX_PAYLOADS_SCANNED: u16 = 16;

/// RFC 8446 §4.1.4: a server sends at most one HelloRetryRequest, so a client sends at most two
/// ClientHellos on one connection.
pub const MAX_HELLOS_PER_FLOW: u8 = 2;

/// How often expired flows are swept (in capture time).
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

/// The order queue may hold stale entries (flows removed by FIN/RST or replaced by a new SYN);
/// it is compacted when it grows past this many times the flow limit.
const ORDER_SLACK_FACTOR: usize = 2;

/// Traits of the client's SYN, published with every hello of the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynTraits {
    pub time_ns: u64,
    pub ip: IpMeta,
    pub tcp: TcpMeta,
}

/// State of one direction of one TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub syn: Option<SynTraits>,
    pub last_seen_ns: u64,
    /// Sequence number expected next from this sender; earlier data is a retransmission.
    pub next_seq: Option<u32>,
    pub hellos: u8,
    pub payloads_scanned: u16,
    /// Insertion number, to tell this flow from a later one with the same key.
    generation: u64,
}

impl Flow {
    fn new(now_ns: u64, generation: u64) -> Self {
        Self {
            syn: None,
            last_seen_ns: now_ns,
            next_seq: None,
            hellos: 0,
            payloads_scanned: 0,
            generation,
        }
    }

    /// True once nothing more is expected from this flow: both possible hellos seen, or too many
    /// payloads without one.
    pub fn is_done(&self) -> bool {
        self.hellos >= MAX_HELLOS_PER_FLOW || self.payloads_scanned >= MAX_PAYLOADS_SCANNED
    }

    /// Accounts for a payload starting at `seq`. Returns false for a retransmission of data
    /// already seen (which must not be scanned again, or a retransmitted hello would be reported
    /// twice).
    pub fn accept_payload(&mut self, seq: u32, len: usize) -> bool {
        if let Some(next) = self.next_seq {
            // Serial-number arithmetic (RFC 1982): `seq` before `next` means already seen.
            if (seq.wrapping_sub(next) as i32) < 0 {
                return false;
            }
        }
        // TCP payloads are < 2^32 bytes; truncation cannot happen for a captured frame.
        self.next_seq = Some(seq.wrapping_add(len as u32));
        self.payloads_scanned = self.payloads_scanned.saturating_add(1);
        true
    }
}

/// Flows removed other than by FIN/RST.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Removed to make room for a new flow (table full).
    pub evicted: u64,
    /// Removed after `timeout` without a packet.
    pub expired: u64,
}

/// The bounded flow table: at most `max_flows` entries, each removed after `timeout_ns` idle.
#[derive(Debug)]
pub struct FlowTable {
    flows: HashMap<ConnKey, Flow>,
    /// Keys in insertion order with their generation; the front is the oldest live flow once
    /// stale entries are skipped.
    order: VecDeque<(ConnKey, u64)>,
    max_flows: usize,
    timeout_ns: u64,
    next_generation: u64,
    last_sweep_ns: u64,
    stats: FlowStats,
}

impl FlowTable {
    pub fn new(max_flows: usize, timeout_ns: u64) -> Self {
        Self {
            flows: HashMap::new(),
            order: VecDeque::new(),
            max_flows: max_flows.max(1),
            timeout_ns,
            next_generation: 0,
            last_sweep_ns: 0,
            stats: FlowStats::default(),
        }
    }

    /// Flows currently tracked.
    pub fn tracked(&self) -> usize {
        self.flows.len()
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// A SYN starts a new flow, replacing any previous one with the same key (port reuse).
    pub fn on_syn(&mut self, key: ConnKey, syn: SynTraits, seq: u32) -> &mut Flow {
        let now = syn.time_ns;
        let flow = self.insert(key, now);
        flow.syn = Some(syn);
        // The SYN occupies one sequence number; data starts after it.
        flow.next_seq = Some(seq.wrapping_add(1));
        flow
    }

    /// The flow of a data packet, created (without SYN traits) when the SYN was not seen.
    pub fn get_or_insert(&mut self, key: ConnKey, now_ns: u64) -> &mut Flow {
        let generation = if self.flows.contains_key(&key) {
            0
        } else {
            self.admit(key)
        };
        let flow = self
            .flows
            .entry(key)
            .or_insert_with(|| Flow::new(now_ns, generation));
        flow.last_seen_ns = now_ns;
        flow
    }

    #[cfg(test)]
    pub fn get_mut(&mut self, key: &ConnKey) -> Option<&mut Flow> {
        self.flows.get_mut(key)
    }

    /// Removes a flow when its sender closes (FIN or RST).
    pub fn remove(&mut self, key: &ConnKey) -> Option<Flow> {
        self.flows.remove(key)
    }

    /// Removes flows idle for longer than the timeout. Runs at most once per second of capture
    /// time; cheap to call on every packet.
    pub fn expire(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < SWEEP_INTERVAL_NS {
            return;
        }
        self.last_sweep_ns = now_ns;
        let timeout = self.timeout_ns;
        let before = self.flows.len();
        self.flows
            .retain(|_, flow| now_ns.saturating_sub(flow.last_seen_ns) <= timeout);
        self.stats.expired += (before - self.flows.len()) as u64;
        self.compact_order();
    }

    /// Inserts a fresh flow for `key`, replacing any previous one.
    fn insert(&mut self, key: ConnKey, now_ns: u64) -> &mut Flow {
        let generation = self.admit(key);
        let fresh = Flow::new(now_ns, generation);
        match self.flows.entry(key) {
            Entry::Occupied(slot) => {
                let flow = slot.into_mut();
                *flow = fresh;
                flow
            }
            Entry::Vacant(slot) => slot.insert(fresh),
        }
    }

    /// Makes room for `key` (evicting the oldest flows if the table is full) and records its
    /// insertion order. Returns the new flow's generation.
    fn admit(&mut self, key: ConnKey) -> u64 {
        if !self.flows.contains_key(&key) {
            while self.flows.len() >= self.max_flows {
                if !self.evict_oldest() {
                    break;
                }
            }
        }
        // Compact before queuing: the new flow is not in the map yet and must not be dropped.
        if self.order.len() >= ORDER_SLACK_FACTOR * self.max_flows {
            self.compact_order();
        }
        self.next_generation += 1;
        self.order.push_back((key, self.next_generation));
        self.next_generation
    }

    /// Evicts the oldest live flow. False when there is none (the order queue is exhausted).
    fn evict_oldest(&mut self) -> bool {
        while let Some((key, generation)) = self.order.pop_front() {
            let live = self
                .flows
                .get(&key)
                .is_some_and(|f| f.generation == generation);
            if live {
                self.flows.remove(&key);
                self.stats.evicted += 1;
                return true;
            }
        }
        false
    }

    /// Drops queue entries whose flow is gone or was replaced.
    fn compact_order(&mut self) {
        let flows = &self.flows;
        self.order.retain(|(key, generation)| {
            flows.get(key).is_some_and(|f| f.generation == *generation)
        });
    }
}

/// Names of TCP option kinds as ja4sentinel prints them in `tcp_meta_options`.
fn option_name(kind: u8) -> Option<&'static str> {
    Some(match kind {
        0 => "EOL",
        1 => "NOP",
        2 => "MSS",
        3 => "WScale",
        4 => "SAckOK",
        5 => "SACK",
        8 => "Timestamps",
        28 => "UTO",
        29 => "AO",
        30 => "MPTCP",
        34 => "TFO",
        _ => return None,
    })
}

/// Maximum TCP option bytes: the data offset is 4 bits of 32-bit words, header 20 bytes.
const MAX_TCP_OPTION_BYTES: usize = 40;

/// The TCP traits of a SYN: window, MSS, window scale and the option kinds in wire order
/// (`MSS,NOP,WScale,SAckOK,Timestamps`; unknown kinds as `Opt<kind>`). Parsing stops at EOL or at
/// an option whose length is invalid.
pub fn tcp_meta(window: u16, options: &[u8]) -> TcpMeta {
    let mut meta = TcpMeta {
        window_size: window,
        ..TcpMeta::default()
    };
    let mut names: Vec<String> = Vec::new();
    let bytes = options
        .get(..options.len().min(MAX_TCP_OPTION_BYTES))
        .unwrap_or_default();
    let mut i = 0;
    while let Some(&kind) = bytes.get(i) {
        names.push(option_name(kind).map_or_else(|| format!("Opt{kind}"), str::to_owned));
        match kind {
            0 => break,
            1 => {
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
            (2, [a, b]) => meta.mss = u16::from_be_bytes([*a, *b]),
            (3, [shift]) => meta.window_scale = Some(*shift),
            _ => {}
        }
        i += len;
    }
    meta.options = names.join(",");
    meta
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use correlate_lib::record::v4;

    fn key(port: u16) -> ConnKey {
        ConnKey::new(v4(10, 0, 0, 1, port), v4(10, 0, 0, 2, 443))
    }

    fn syn(t: u64) -> SynTraits {
        SynTraits {
            time_ns: t,
            ip: IpMeta::default(),
            tcp: TcpMeta::default(),
        }
    }

    #[test]
    fn linux_syn_options_are_named_in_wire_order() {
        // MSS 65495, SAckOK, Timestamps, NOP, WScale 7 (Linux loopback SYN).
        let opts = [
            2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7,
        ];
        let meta = tcp_meta(65495, &opts);
        assert_eq!(meta.options, "MSS,SAckOK,Timestamps,NOP,WScale");
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
    fn table_is_bounded_and_evicts_the_oldest() {
        let mut table = FlowTable::new(3, u64::MAX);
        for port in 1..=5 {
            table.on_syn(key(port), syn(u64::from(port)), 0);
        }
        assert_eq!(table.tracked(), 3);
        assert_eq!(table.stats().evicted, 2);
        assert!(table.get_mut(&key(1)).is_none() && table.get_mut(&key(2)).is_none());
        assert!(table.get_mut(&key(5)).is_some());
    }

    #[test]
    fn removed_and_replaced_flows_do_not_confuse_eviction() {
        let mut table = FlowTable::new(2, u64::MAX);
        for round in 0..100u64 {
            table.on_syn(key(1), syn(round), 0);
            table.remove(&key(1));
            table.on_syn(key(2), syn(round), 0);
        }
        assert_eq!(table.tracked(), 1);
        assert_eq!(table.stats().evicted, 0);
        assert!(table.order.len() <= ORDER_SLACK_FACTOR * 2 + 1);
    }

    #[test]
    fn idle_flows_expire() {
        let mut table = FlowTable::new(10, 5_000_000_000);
        table.on_syn(key(1), syn(1_000_000_000), 0);
        table.get_or_insert(key(2), 4_000_000_000);
        table.expire(7_000_000_000);
        assert!(table.get_mut(&key(1)).is_none());
        assert!(table.get_mut(&key(2)).is_some());
        assert_eq!(table.stats().expired, 1);
    }

    #[test]
    fn retransmitted_payload_is_not_scanned_twice() {
        let mut table = FlowTable::new(10, u64::MAX);
        let flow = table.on_syn(key(1), syn(1), 1000);
        assert!(flow.accept_payload(1001, 300));
        assert!(!flow.accept_payload(1001, 300));
        assert!(flow.accept_payload(1301, 10));
        // Sequence numbers wrap.
        let flow = table.on_syn(key(2), syn(1), u32::MAX - 5);
        assert!(flow.accept_payload(u32::MAX - 4, 100));
        assert!(flow.accept_payload(95, 1));
        assert!(!flow.accept_payload(u32::MAX - 4, 100));
    }
}
