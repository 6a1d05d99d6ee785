//! Flow: per-connection state between the SYN and the ClientHello(s), in a table bounded in size,
//! in time and in buffered bytes, with the TCP reassembly of the client's first bytes.
//!
//! A flow is keyed by the directional [`ConnKey`] of the packets that created it: the sender is
//! `src`. Live captures only see client→server packets (the BPF filter selects destination
//! ports); offline files see both directions, and the direction that carries a ClientHello is
//! the client's.
//!
//! Reassembly ([`Stream`]) keeps the client's bytes from the first byte not yet inspected, in
//! sequence order: out-of-order segments wait in a side map until the gap is filled,
//! retransmissions are recognised by their sequence numbers and dropped, and where segments
//! overlap the bytes that arrived first win (what the receiving Linux stack does for data it
//! already queued). Everything is bounded: [`MAX_FLOW_BUFFER_BYTES`] per flow,
//! [`MAX_REASSEMBLY_BYTES`] across the table, [`MAX_FLOWS`] flows.
//!
//! [`OpenConnections`] remembers the connections whose hello was published, so the client's
//! FIN/RST can mark the ring record closed.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};

use correlate_lib::fingerprint::hello::{MAX_HELLO_BYTES, MAX_RECORD_PAYLOAD};
use correlate_lib::fingerprint::syn::SynTraits;
use correlate_lib::ConnKey;

/// The maps keyed by connection, looked up several times per packet: foldhash (seeded per
/// process, like hashbrown's default) instead of SipHash, whose cost on a `ConnKey` showed in
/// `ja4sensor read`'s profile.
type ConnMap<V> = HashMap<ConnKey, V, foldhash::fast::RandomState>;

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

/// Bytes of one client stream buffered while its ClientHello is reassembled: the largest hello
/// accepted ([`MAX_HELLO_BYTES`] plus its 4-byte handshake header), in records of at most
/// [`MAX_RECORD_PAYLOAD`] bytes each behind a 5-byte header, plus one leading ChangeCipherSpec
/// record (6 bytes). A hello that does not fit is counted (`hellos_too_large`) and dropped.
pub const MAX_FLOW_BUFFER_BYTES: usize =
    MAX_HELLO_BYTES + 4 + (MAX_HELLO_BYTES / MAX_RECORD_PAYLOAD + 1) * 5 + 6;

/// Bytes buffered by all flows together. Real hellos are < 2 KiB and complete within a round
/// trip, so a busy server holds a few hundred KiB; 64 MiB bounds what a flood of connections
/// each sending a huge partial hello can pin (65 536 flows × 64 KiB would be 4 GiB). Past it a
/// flow that needs more gives up (counted).
pub const MAX_REASSEMBLY_BYTES: usize = 64 * 1024 * 1024;

/// How often expired flows are swept (in capture time).
const SWEEP_INTERVAL_NS: u64 = 1_000_000_000;

/// The order queue may hold stale entries (flows removed by FIN/RST or replaced by a new SYN);
/// it is compacted when it grows past this many times the flow limit.
const ORDER_SLACK_FACTOR: usize = 2;

/// The client's SYN, kept until its hellos are published with its traits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenSyn {
    pub time_ns: u64,
    /// Parsed by correlate-lib ([`correlate_lib::fingerprint::syn::parse_syn`]), the code the
    /// module runs on `TCP_SAVED_SYN`.
    pub traits: SynTraits,
}

/// What [`Stream::insert`] did with a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// Every byte was already received: a retransmission.
    Duplicate,
    /// New bytes extend the in-order data (possibly releasing waiting out-of-order segments).
    Extended,
    /// The segment is ahead of a gap; it waits for the missing bytes.
    OutOfOrder,
    /// The segment ends past [`MAX_FLOW_BUFFER_BYTES`] beyond the inspection point.
    BeyondWindow,
    /// Buffering it would exceed the table's [`MAX_REASSEMBLY_BYTES`].
    OverBudget,
}

/// Half of the sequence space: an offset this large or larger is "before" the origin (RFC 1982
/// serial-number arithmetic).
const HALF_SEQ_SPACE: u32 = 1 << 31;

/// The client's byte stream from the first byte not yet inspected, reassembled from segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// Sequence number of stream offset 0 (the SYN's + 1, or the first segment seen).
    origin: Option<u32>,
    /// Stream offset of `data[0]`: everything before was inspected and released.
    consumed: u32,
    /// In-order bytes from `consumed`.
    data: Vec<u8>,
    /// Out-of-order segments by stream offset, all past the end of `data`.
    pending: BTreeMap<u32, Vec<u8>>,
    pending_bytes: usize,
    /// Segments that contributed to `data` since it was last released.
    segments: u32,
}

impl Stream {
    /// Bytes held in memory.
    pub fn held(&self) -> usize {
        self.data.len() + self.pending_bytes
    }

    /// The in-order bytes not yet inspected.
    pub fn contiguous(&self) -> &[u8] {
        &self.data
    }

    /// Segments that made up the current in-order bytes (> 1: the hello was reassembled).
    pub fn segments(&self) -> u32 {
        self.segments
    }

    fn start_at(&mut self, seq: u32) {
        *self = Self {
            origin: Some(seq),
            ..Self::default()
        };
    }

    fn end(&self) -> u64 {
        u64::from(self.consumed) + self.data.len() as u64
    }

    /// Adds a segment starting at `seq`. `budget` is how many more bytes the table lets this
    /// flow buffer.
    pub fn insert(&mut self, seq: u32, payload: &[u8], budget: usize) -> Inserted {
        let origin = *self.origin.get_or_insert(seq);
        let mut offset = seq.wrapping_sub(origin);
        let mut payload = payload;
        if offset >= HALF_SEQ_SPACE {
            // Starts before the origin: keep only what follows it.
            let skip = origin.wrapping_sub(seq) as usize;
            let Some(rest) = payload.get(skip..).filter(|r| !r.is_empty()) else {
                return Inserted::Duplicate;
            };
            payload = rest;
            offset = 0;
        }
        let start = u64::from(offset);
        let end = start + payload.len() as u64;
        let have = self.end();
        if end <= have {
            return Inserted::Duplicate;
        }
        if end > u64::from(self.consumed) + MAX_FLOW_BUFFER_BYTES as u64 {
            return Inserted::BeyondWindow;
        }
        // Bytes already in `data` win over a retransmission that overlaps them.
        let (start, payload) = if start < have {
            let skip = (have - start) as usize;
            (have, payload.get(skip..).unwrap_or_default())
        } else {
            (start, payload)
        };
        if payload.len() > budget {
            return Inserted::OverBudget;
        }
        if start == have {
            self.data.extend_from_slice(payload);
            self.segments = self.segments.saturating_add(1);
            self.release_pending();
            Inserted::Extended
        } else {
            if self.pending_bytes + payload.len() > MAX_FLOW_BUFFER_BYTES {
                // Overlapping out-of-order copies could otherwise pile up.
                return Inserted::BeyondWindow;
            }
            // `start - consumed` < MAX_FLOW_BUFFER_BYTES, checked above: fits u32.
            let key = start as u32;
            let previous = self.pending.insert(key, payload.to_vec());
            self.pending_bytes += payload.len();
            if let Some(previous) = previous {
                self.pending_bytes -= previous.len();
                // Keep the longer copy of two segments starting at the same offset.
                if previous.len() > payload.len() {
                    self.pending_bytes += previous.len() - payload.len();
                    self.pending.insert(key, previous);
                }
            }
            Inserted::OutOfOrder
        }
    }

    /// Moves waiting segments that now touch the in-order data into it.
    fn release_pending(&mut self) {
        loop {
            let have = self.end();
            let Some(entry) = self.pending.first_entry() else {
                break;
            };
            let start = u64::from(*entry.key());
            if start > have {
                break;
            }
            let bytes = entry.remove();
            self.pending_bytes -= bytes.len();
            let skip = (have - start) as usize;
            if let Some(new) = bytes.get(skip..).filter(|b| !b.is_empty()) {
                self.data.extend_from_slice(new);
                self.segments = self.segments.saturating_add(1);
            }
        }
    }

    /// Releases the first `n` in-order bytes (a hello that was read).
    pub fn consume(&mut self, n: usize) {
        let n = n.min(self.data.len());
        self.data.drain(..n);
        self.consumed = self.consumed.wrapping_add(n as u32);
        self.segments = u32::from(!self.data.is_empty());
    }

    /// Releases every in-order byte (a payload that is not a hello).
    pub fn consume_all(&mut self) {
        self.consume(self.data.len());
    }

    /// Frees every buffer; later segments are still recognised as old or new.
    pub fn clear(&mut self) {
        self.consume_all();
        self.pending.clear();
        self.pending_bytes = 0;
        self.data = Vec::new();
    }
}

/// State of one direction of one TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub syn: Option<SeenSyn>,
    pub last_seen_ns: u64,
    pub stream: Stream,
    pub hellos: u8,
    pub payloads_scanned: u16,
    /// Set when the flow stopped looking for hellos (too large, malformed, out of budget).
    pub gave_up: bool,
    /// Insertion number, to tell this flow from a later one with the same key.
    generation: u64,
}

impl Flow {
    fn new(now_ns: u64, generation: u64) -> Self {
        Self {
            syn: None,
            last_seen_ns: now_ns,
            stream: Stream::default(),
            hellos: 0,
            payloads_scanned: 0,
            gave_up: false,
            generation,
        }
    }

    /// True once nothing more is expected from this flow: both possible hellos seen, too many
    /// payloads without one, or it gave up.
    pub fn is_done(&self) -> bool {
        self.gave_up
            || self.hellos >= MAX_HELLOS_PER_FLOW
            || self.payloads_scanned >= MAX_PAYLOADS_SCANNED
    }

    /// Stops looking at this flow and frees its buffers.
    pub fn give_up(&mut self) {
        self.gave_up = true;
        self.stream.clear();
    }
}

/// Flows removed other than by FIN/RST.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Removed to make room for a new flow (table full).
    pub evicted: u64,
    /// Removed after `timeout` without a packet.
    pub expired: u64,
    /// Expired or evicted before any hello was found (half-open connections, SYN floods,
    /// clients that never spoke TLS).
    pub expired_without_hello: u64,
}

/// The bounded flow table: at most `max_flows` entries, each removed after `timeout_ns` idle,
/// buffering at most [`MAX_REASSEMBLY_BYTES`] in total.
#[derive(Debug)]
pub struct FlowTable {
    flows: ConnMap<Flow>,
    /// Keys in insertion order with their generation; the front is the oldest live flow once
    /// stale entries are skipped.
    order: VecDeque<(ConnKey, u64)>,
    max_flows: usize,
    timeout_ns: u64,
    next_generation: u64,
    last_sweep_ns: u64,
    /// Sum of `stream.held()` over the flows.
    buffered: usize,
    stats: FlowStats,
}

impl FlowTable {
    pub fn new(max_flows: usize, timeout_ns: u64) -> Self {
        Self {
            flows: ConnMap::default(),
            order: VecDeque::new(),
            max_flows: max_flows.max(1),
            timeout_ns,
            next_generation: 0,
            last_sweep_ns: 0,
            buffered: 0,
            stats: FlowStats::default(),
        }
    }

    /// Flows currently tracked.
    pub fn tracked(&self) -> usize {
        self.flows.len()
    }

    /// Bytes buffered by all flows for reassembly.
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Bytes a flow may still add to its buffers.
    pub fn budget_left(&self) -> usize {
        MAX_REASSEMBLY_BYTES.saturating_sub(self.buffered)
    }

    /// Accounts for a flow's buffers changing from `before` to `after` bytes.
    pub fn account(&mut self, before: usize, after: usize) {
        self.buffered = self.buffered.saturating_sub(before).saturating_add(after);
    }

    pub fn stats(&self) -> FlowStats {
        self.stats
    }

    /// A SYN starts a new flow, replacing any previous one with the same key (port reuse).
    pub fn on_syn(&mut self, key: ConnKey, syn: SeenSyn, seq: u32) -> &mut Flow {
        let now = syn.time_ns;
        let generation = self.admit(key);
        let mut fresh = Flow::new(now, generation);
        fresh.syn = Some(syn);
        // The SYN occupies one sequence number; data starts after it.
        fresh.stream.start_at(seq.wrapping_add(1));
        match self.flows.entry(key) {
            Entry::Occupied(slot) => {
                let flow = slot.into_mut();
                let held = flow.stream.held();
                self.buffered = self.buffered.saturating_sub(held);
                *flow = fresh;
                flow
            }
            Entry::Vacant(slot) => slot.insert(fresh),
        }
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
        let flow = self.flows.remove(key)?;
        self.buffered = self.buffered.saturating_sub(flow.stream.held());
        Some(flow)
    }

    /// Removes flows idle for longer than the timeout. Runs at most once per second of capture
    /// time; cheap to call on every packet.
    pub fn expire(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < SWEEP_INTERVAL_NS {
            return;
        }
        self.last_sweep_ns = now_ns;
        let timeout = self.timeout_ns;
        let mut freed = 0usize;
        let mut expired = 0u64;
        let mut without_hello = 0u64;
        self.flows.retain(|_, flow| {
            let keep = now_ns.saturating_sub(flow.last_seen_ns) <= timeout;
            if !keep {
                freed += flow.stream.held();
                expired += 1;
                without_hello += u64::from(flow.hellos == 0);
            }
            keep
        });
        self.buffered = self.buffered.saturating_sub(freed);
        self.stats.expired += expired;
        self.stats.expired_without_hello += without_hello;
        self.compact_order();
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
                if let Some(flow) = self.flows.remove(&key) {
                    self.buffered = self.buffered.saturating_sub(flow.stream.held());
                    self.stats.expired_without_hello += u64::from(flow.hellos == 0);
                }
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

/// Connections remembered after their hello was published, so that the client's FIN or RST can
/// mark the ring record closed. Sized like the ring's default slot count: a record older than
/// that has been overwritten in the ring, and marking it would find nothing.
pub const MAX_OPEN_CONNECTIONS: usize = 65_536;

/// A published connection without a FIN/RST for this long is forgotten. Apache closes idle
/// keep-alive connections after seconds (KeepAliveTimeout 5 s, Timeout 60 s); an hour covers
/// long downloads and WebSockets, and the module's time window still refuses an older
/// handshake on a reused port.
pub const OPEN_CONNECTION_TTL_NS: u64 = 3600 * 1_000_000_000;

/// The bounded, expiring set of published-and-open connections.
#[derive(Debug, Default)]
pub struct OpenConnections {
    /// Key → publication time.
    open: ConnMap<u64>,
    /// Publication order (may hold stale entries of closed or re-published keys).
    order: VecDeque<(ConnKey, u64)>,
    /// Forgotten because of the size bound or the TTL.
    pub forgotten: u64,
}

impl OpenConnections {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Remembers `key`, published at `now_ns`.
    pub fn insert(&mut self, key: ConnKey, now_ns: u64) {
        self.expire(now_ns);
        while self.open.len() >= MAX_OPEN_CONNECTIONS {
            if !self.forget_oldest() {
                break;
            }
        }
        if self.order.len() >= ORDER_SLACK_FACTOR * MAX_OPEN_CONNECTIONS {
            let open = &self.open;
            self.order.retain(|(k, t)| open.get(k) == Some(t));
        }
        self.open.insert(key, now_ns);
        self.order.push_back((key, now_ns));
    }

    /// The client of `key` closed: true (and forgotten) if it was open.
    pub fn close(&mut self, key: &ConnKey) -> bool {
        self.open.remove(key).is_some()
    }

    /// Forgets connections published more than [`OPEN_CONNECTION_TTL_NS`] before `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        while let Some(&(key, t)) = self.order.front() {
            if now_ns.saturating_sub(t) <= OPEN_CONNECTION_TTL_NS {
                break;
            }
            self.order.pop_front();
            if self.open.get(&key) == Some(&t) {
                self.open.remove(&key);
                self.forgotten += 1;
            }
        }
    }

    fn forget_oldest(&mut self) -> bool {
        while let Some((key, t)) = self.order.pop_front() {
            if self.open.get(&key) == Some(&t) {
                self.open.remove(&key);
                self.forgotten += 1;
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use correlate_lib::record::v4;

    fn key(port: u16) -> ConnKey {
        ConnKey::new(v4(10, 0, 0, 1, port), v4(10, 0, 0, 2, 443))
    }

    fn syn(t: u64) -> SeenSyn {
        SeenSyn {
            time_ns: t,
            traits: SynTraits::default(),
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

    fn stream_at(seq: u32) -> Stream {
        let mut s = Stream::default();
        s.start_at(seq);
        s
    }

    #[test]
    fn retransmitted_segment_is_a_duplicate() {
        let mut s = stream_at(1001);
        assert_eq!(s.insert(1001, &[1; 300], usize::MAX), Inserted::Extended);
        assert_eq!(s.insert(1001, &[1; 300], usize::MAX), Inserted::Duplicate);
        assert_eq!(s.insert(1301, &[2; 10], usize::MAX), Inserted::Extended);
        assert_eq!(s.contiguous().len(), 310);
        // Sequence numbers wrap.
        let mut s = stream_at(u32::MAX - 4);
        assert_eq!(
            s.insert(u32::MAX - 4, &[0; 100], usize::MAX),
            Inserted::Extended
        );
        assert_eq!(s.insert(95, &[1], usize::MAX), Inserted::Extended);
        assert_eq!(
            s.insert(u32::MAX - 4, &[0; 100], usize::MAX),
            Inserted::Duplicate
        );
        // Data from before the SYN is old.
        assert_eq!(
            s.insert(u32::MAX - 100, &[0; 10], usize::MAX),
            Inserted::Duplicate
        );
    }

    #[test]
    fn out_of_order_and_overlapping_segments_are_stitched_first_copy_wins() {
        let mut s = stream_at(0);
        assert_eq!(s.insert(6, b"ghij", usize::MAX), Inserted::OutOfOrder);
        assert_eq!(s.insert(3, b"DEFG", usize::MAX), Inserted::OutOfOrder);
        assert_eq!(s.held(), 8);
        assert_eq!(s.insert(0, b"abcd", usize::MAX), Inserted::Extended);
        // "abcd" then "EFG" (D overlapped, first copy "d" wins), then "hij".
        assert_eq!(s.contiguous(), b"abcdEFGhij");
        assert_eq!(s.segments(), 3);
        assert_eq!(s.held(), 10);
        s.consume(4);
        assert_eq!(s.contiguous(), b"EFGhij");
        assert_eq!(s.insert(2, b"cdEFGhijk", usize::MAX), Inserted::Extended);
        assert_eq!(s.contiguous(), b"EFGhijk");
    }

    #[test]
    fn buffers_are_bounded_per_flow_and_by_budget() {
        let mut s = stream_at(0);
        let far = u32::try_from(MAX_FLOW_BUFFER_BYTES).unwrap();
        assert_eq!(s.insert(far, &[0; 10], usize::MAX), Inserted::BeyondWindow);
        assert_eq!(s.insert(0, &[0; 10], 5), Inserted::OverBudget);
        assert_eq!(s.held(), 0);
        // Overlapping out-of-order copies cannot pile up past the window.
        let mut piled = 0;
        for start in 1..2000u32 {
            if s.insert(start, &[0; 200], usize::MAX) == Inserted::BeyondWindow {
                piled += 1;
            }
        }
        assert!(piled > 0 && s.held() <= MAX_FLOW_BUFFER_BYTES);
    }

    #[test]
    fn table_accounts_for_buffered_bytes() {
        let mut table = FlowTable::new(10, 5_000_000_000);
        let flow = table.on_syn(key(1), syn(1_000_000_000), 0);
        let before = flow.stream.held();
        flow.stream.insert(1, &[0; 100], usize::MAX);
        let after = flow.stream.held();
        table.account(before, after);
        assert_eq!(table.buffered(), 100);
        table.expire(10_000_000_000);
        assert_eq!((table.buffered(), table.tracked()), (0, 0));
        assert_eq!(table.stats().expired_without_hello, 1);
    }

    #[test]
    fn open_connections_are_bounded_and_expire() {
        let mut open = OpenConnections::default();
        for port in 0..10 {
            open.insert(key(port), 1);
        }
        assert!(open.close(&key(3)));
        assert!(!open.close(&key(3)), "closed once");
        open.insert(key(99), OPEN_CONNECTION_TTL_NS + 2);
        assert_eq!(open.len(), 1, "older ones expired");
        assert_eq!(open.forgotten, 9);
        let mut open = OpenConnections::default();
        for port in 0..=u16::MAX {
            open.insert(key(port), 5);
        }
        assert!(open.len() <= MAX_OPEN_CONNECTIONS);
    }
}
