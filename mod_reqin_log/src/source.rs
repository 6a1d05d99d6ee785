//! Where a request's fingerprint comes from (`ReqinLogFingerprint`, `ReqinLogTrustedProxy`),
//! and why it has none: one [`decide`] for `post_read_request` (the environment) and
//! `log_transaction` (the line).
//!
//! - A trusted proxy's headers win ([`crate::upstream`]): the client is behind it.
//! - `sensor`: the connection's record in the sensor's ring ([`join`], DESIGN.md's join rules),
//!   waiting at most `ReqinLogLookupWait` at `post_read_request` while the sensor is behind.
//! - `inline`: the record httpd built from the connection's SYN and ClientHello
//!   ([`crate::inline`]), at once.
//! - `both`: the inline record; once the sensor's record of the connection is found, the line
//!   keeps the inline values, takes the sensor's own fields (`sensor_id`,
//!   `syn_to_clienthello_ms`) and counts whether the two agree ([`crate::crosscheck`]). The
//!   environment never waits for the sensor; a line may, in the flusher, as in `sensor`.
//!
//! Every connection-level outcome is cached in the connection's state, so keep-alive requests
//! and HTTP/2 streams of a connection share it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use correlate_lib::clients::ClientMap;
use correlate_lib::join::{JoinRules, NoJoin};
use correlate_lib::ring::Lookup;
use correlate_lib::{unix_now_ns, ConnKey, TlsRecord};

use crate::config::FingerprintMode;
use crate::correlation::RingHandle;
use crate::crosscheck;
use crate::ffi::{Conn, Level, Request, Server};
use crate::hooks::{
    log_file_event, Check, ConnState, Joined, ModuleLog, Output, RequestState, ServerState,
};
use crate::inline::InlineGeneration;
use crate::record::{FragmentMeta, OrphanReason, Source};
use crate::stats::Counter;
use crate::upstream::{Screened, UpstreamValues};

/// A sensor whose watermark is this far behind the clock is not waited for (see `join`).
pub const SENSOR_STALL_NS: u64 = 1_000_000_000;

/// What a request gets, as far as it is decided now.
pub enum Decision<'a> {
    /// The connection's final record (the sensor's, the inline one, or `both`'s merge).
    Joined(&'a Joined),
    /// `both`: the inline record, without a sensor record to check it against (none will
    /// come: no ring, or the sensor is down).
    Unchecked(&'a Joined),
    /// `both`: the inline record; the sensor may still publish its own.
    InlineAwaiting { inline: &'a Joined, wait: Wait },
    /// `sensor`: not in the ring yet; the sensor may still publish it.
    NotYet(Wait),
    /// A trusted proxy's values.
    Upstream(&'a UpstreamValues),
    /// No fingerprint will come.
    Never(OrphanReason),
}

/// What a line waiting for the sensor needs.
pub struct Wait {
    pub key: ConnKey,
    pub accept_ns: u64,
    pub ring: Arc<RingHandle>,
}

/// The fingerprint of `r`, waiting up to `wait` for the sensor where the mode waits.
/// `count`: the log phase, whose misses are final enough to count.
pub fn decide<'a>(
    state: &'a ServerState,
    server: Server<'_>,
    r: Request<'_>,
    cs: Option<&'a ConnState>,
    rs: &'a RequestState,
    wait: Duration,
    count: bool,
) -> Decision<'a> {
    let untrusted = match &rs.upstream {
        Screened::Trusted(values) => return Decision::Upstream(values),
        Screened::TrustedWithout { .. } => return Decision::Never(OrphanReason::UpstreamMissing),
        Screened::Untrusted { removed } => *removed > 0,
        Screened::NotConfigured => false,
    };
    let decision = match state.settings.fingerprint() {
        FingerprintMode::Sensor => join(state, server, r, cs, rs.index, wait, count),
        FingerprintMode::Inline => inline(state, r, cs, rs.index, count),
        FingerprintMode::Both => both(state, server, r, cs, rs.index, wait, count),
    };
    match decision {
        // Forged fingerprint headers say more about this client than anything else.
        Decision::Never(_) if untrusted => Decision::Never(OrphanReason::UpstreamUntrusted),
        d => d,
    }
}

/// A connection that can have a fingerprint: its primary connection and 4-tuple.
struct Admitted<'a, 'r> {
    primary: Conn<'r>,
    key: ConnKey,
    cs: &'a ConnState,
}

/// Whether `r`'s connection can have a fingerprint at all: TLS, addresses known, not excluded,
/// and (one_to_one) the first request.
fn admit<'a, 'r>(
    state: &ServerState,
    r: Request<'r>,
    cs: Option<&'a ConnState>,
    index: u64,
    count: bool,
) -> Result<Admitted<'a, 'r>, OrphanReason> {
    let (Some(output), Some(rules), Some(conn)) =
        (state.output.get(), state.rules.get(), r.connection())
    else {
        return Err(OrphanReason::NoConnection);
    };
    let primary = conn.primary();
    let tls = state
        .tls_probe
        .get()
        .and_then(|p| p.is_tls(primary))
        .unwrap_or(false);
    if !tls {
        return Err(OrphanReason::NoTls);
    }
    let (Some(client), Some(local), Some(cs)) = (primary.client_addr(), primary.local_addr(), cs)
    else {
        return Err(OrphanReason::NoConnection);
    };
    let key = ConnKey::new(client, local);
    if let Err(why) = rules.admits(&key, index) {
        if count {
            match why {
                NoJoin::ExcludedSource => output.stats.add(Counter::ExcludedSource, 1),
                NoJoin::ExcludedPort => output.stats.add(Counter::ExcludedPort, 1),
                NoJoin::NotFirstRequest => {}
            }
        }
        return Err(match why {
            NoJoin::NotFirstRequest => OrphanReason::NotFirstRequest,
            NoJoin::ExcludedSource | NoJoin::ExcludedPort => OrphanReason::Excluded,
        });
    }
    Ok(Admitted { primary, key, cs })
}

/// A connection joined by an earlier request: it was TLS and admitted then; only this
/// request's position can still rule it out.
fn at_position<'a>(
    state: &ServerState,
    joined: &'a Joined,
    index: u64,
    ok: impl FnOnce(&'a Joined) -> Decision<'a>,
) -> Decision<'a> {
    match state.rules.get().map(|r| r.admits_position(index)) {
        Some(Ok(())) => ok(joined),
        _ => Decision::Never(OrphanReason::NotFirstRequest),
    }
}

/// Why a line that waited for the sensor has no record, by the ring's state now.
pub fn ring_reason(ring: &RingHandle) -> OrphanReason {
    if !ring.is_attached() || ring.file_gone() && sensor_stalled(ring) {
        OrphanReason::RingMissing
    } else if sensor_stalled(ring) {
        OrphanReason::SensorDown
    } else {
        OrphanReason::NotInRing
    }
}

/// A live sensor moves its watermark at least every 100 ms, idle or not; one that has not for
/// a second is stopped or hung.
fn sensor_stalled(ring: &RingHandle) -> bool {
    ring.watermark().saturating_add(SENSOR_STALL_NS) < unix_now_ns()
}

/// Looks `key` up and checks the record belongs to the connection accepted at `accept_ns`.
/// `count`: whether a miss is final enough to count.
pub fn lookup_record(
    ring: &RingHandle,
    rules: &JoinRules,
    key: &ConnKey,
    accept_ns: u64,
    output: &Output,
    count: bool,
) -> Option<TlsRecord> {
    let (found, event) = ring.lookup(key, unix_now_ns());
    if let Some(event) = event {
        // The flusher looks up most often: what it sees must reach the error log too.
        let (level, msg) = crate::hooks::file_event_message(&event);
        output.logger().log(level, 0, &msg);
    }
    match found {
        Lookup::Hit(rec) => match rules.belongs(&rec, key, accept_ns) {
            Ok(()) => Some(rec),
            Err(_) => {
                if count {
                    output.stats.add(Counter::ForeignRecords, 1);
                }
                None
            }
        },
        Lookup::Miss => None,
        Lookup::Torn => {
            if count {
                output.stats.add(Counter::TornReads, 1);
            }
            None
        }
    }
}

/// What the connection's half of a line says besides its record (`ja4plus`:
/// `ReqinLogJA4Plus On`).
pub fn fragment_meta(
    ja4plus: bool,
    clients: Option<&ClientMap>,
    source: Source,
    partial: Option<OrphanReason>,
    rec: &TlsRecord,
) -> FragmentMeta {
    FragmentMeta {
        source,
        partial,
        ja4t: ja4t(ja4plus, rec),
        client: client_label(clients, rec),
        sensor_fields: source == Source::Sensor,
    }
}

/// `ja4_client`: the client family of the record's JA4, when a map is loaded.
pub fn client_label(clients: Option<&ClientMap>, rec: &TlsRecord) -> Option<String> {
    clients
        .filter(|_| !rec.ja4.is_empty())
        .map(|m| m.client(&rec.ja4).to_owned())
}

#[cfg(feature = "foxio")]
pub fn ja4t(on: bool, rec: &TlsRecord) -> Option<String> {
    on.then(|| correlate_lib::fingerprint::foxio::ja4t_of_record(rec))
        .flatten()
}

#[cfg(not(feature = "foxio"))]
pub fn ja4t(_on: bool, _rec: &TlsRecord) -> Option<String> {
    None
}

/// `sensor`: tries to join `r` now, waiting up to `wait` while the sensor has not yet
/// processed the packets up to the request's arrival.
fn join<'a>(
    state: &ServerState,
    server: Server<'_>,
    r: Request<'_>,
    cs: Option<&'a ConnState>,
    index: u64,
    wait: Duration,
    count: bool,
) -> Decision<'a> {
    if let Some(joined) = cs.and_then(|cs| cs.joined.get()) {
        return at_position(state, joined, index, Decision::Joined);
    }
    let Admitted { primary, key, cs } = match admit(state, r, cs, index, count) {
        Ok(a) => a,
        Err(reason) => return Decision::Never(reason),
    };
    let (Some(ring), Some(rules)) = (state.ring.get(), state.rules.get()) else {
        return Decision::Never(OrphanReason::RingMissing);
    };
    let arrival_ns = crate::hooks::arrival_ns(r);
    let wait = if cs.waited_in_vain.load(Ordering::Relaxed) {
        Duration::ZERO
    } else {
        wait
    };
    let deadline = Instant::now() + wait;
    loop {
        let (found, event) = ring.lookup(&key, unix_now_ns());
        if let Some(event) = event {
            log_file_event(server, &event);
        }
        if let Lookup::Hit(rec) = found {
            if rules.belongs(&rec, &key, cs.accept_ns).is_ok() {
                return Decision::Joined(cs.joined.get_or_init(|| {
                    let meta = fragment_meta(
                        state.settings.ja4plus(),
                        state.clients(),
                        Source::Sensor,
                        None,
                        &rec,
                    );
                    Box::new(Joined::new(rec, meta, primary, Check::None))
                }));
            }
        }
        if !ring.is_attached() {
            // No sensor at all: every request is an orphan, at once.
            return Decision::Never(OrphanReason::RingMissing);
        }
        let watermark = ring.watermark();
        // Waiting for a stalled sensor would only slow every request.
        let stalled = watermark.saturating_add(SENSOR_STALL_NS) < unix_now_ns();
        let timed_out = Instant::now() >= deadline;
        if timed_out && !wait.is_zero() {
            cs.waited_in_vain.store(true, Ordering::Relaxed);
        }
        if watermark >= arrival_ns || timed_out || stalled {
            return Decision::NotYet(Wait {
                key,
                accept_ns: cs.accept_ns,
                ring: Arc::clone(ring),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The connection's inline record, computed once (by the first request that needs it).
fn inline_record<'a>(
    state: &ServerState,
    admitted: &Admitted<'a, '_>,
) -> Result<&'a Joined, OrphanReason> {
    let Admitted { primary, key, cs } = admitted;
    let record = cs.inline.get_or_init(|| {
        let generation = state
            .inline_generation()
            .ok_or(OrphanReason::HelloNotCaptured)?;
        let f = crate::inline::fingerprint(generation, cs.capture(), *key, cs.accept_ns)?;
        let meta = FragmentMeta {
            partial: f.partial,
            ja4t: f
                .parts
                .syn
                .as_deref()
                .and_then(|syn| ja4t(state.settings.ja4plus(), syn)),
            client: client_label(state.clients(), &f.parts.hello),
            ..FragmentMeta::of(Source::Inline)
        };
        Ok(Box::new(Joined::inline(
            f.parts,
            meta,
            *primary,
            &f.hello,
            f.syn.as_deref(),
        )))
    });
    record.as_deref().map_err(|reason| *reason)
}

/// `inline`: the record httpd built itself.
fn inline<'a>(
    state: &ServerState,
    r: Request<'_>,
    cs: Option<&'a ConnState>,
    index: u64,
    count: bool,
) -> Decision<'a> {
    if let Some(Ok(joined)) = cs.and_then(|cs| cs.inline.get()) {
        return at_position(state, joined, index, Decision::Joined);
    }
    let admitted = match admit(state, r, cs, index, count) {
        Ok(a) => a,
        Err(reason) => return Decision::Never(reason),
    };
    match inline_record(state, &admitted) {
        Ok(joined) => Decision::Joined(joined),
        Err(reason) => Decision::Never(reason),
    }
}

/// `both`: the inline record, checked against the sensor's once it is in the ring.
fn both<'a>(
    state: &ServerState,
    server: Server<'_>,
    r: Request<'_>,
    cs: Option<&'a ConnState>,
    index: u64,
    wait: Duration,
    count: bool,
) -> Decision<'a> {
    if let Some(joined) = cs.and_then(|cs| cs.joined.get()) {
        return at_position(state, joined, index, Decision::Joined);
    }
    let admitted = match admit(state, r, cs, index, count) {
        Ok(a) => a,
        Err(reason) => return Decision::Never(reason),
    };
    let inline = match inline_record(state, &admitted) {
        Ok(joined) => joined,
        // Nothing inline (no hello captured): the sensor's record alone, as `sensor` does.
        Err(_) => return join(state, server, r, cs, index, wait, count),
    };
    let Admitted { primary, key, cs } = admitted;
    let (Some(ring), Some(rules)) = (state.ring.get(), state.rules.get()) else {
        return Decision::Unchecked(inline);
    };
    let (found, event) = ring.lookup(&key, unix_now_ns());
    if let Some(event) = event {
        log_file_event(server, &event);
    }
    if let Lookup::Hit(rec) = found {
        if rules.belongs(&rec, &key, cs.accept_ns).is_ok() {
            return Decision::Joined(
                cs.joined
                    .get_or_init(|| Box::new(merged(state, server, inline, &rec, primary))),
            );
        }
    }
    if !ring.is_attached() || sensor_stalled(ring) {
        return Decision::Unchecked(inline);
    }
    Decision::InlineAwaiting {
        inline,
        wait: Wait {
            key,
            accept_ns: cs.accept_ns,
            ring: Arc::clone(ring),
        },
    }
}

/// `both`: the line's record once the sensor's is found: the inline values, the sensor's own
/// fields; disagreements counted per line and the first ones of each child logged.
fn merged(
    state: &ServerState,
    log: impl ModuleLog,
    inline: &Joined,
    sensor: &TlsRecord,
    primary: Conn<'_>,
) -> Joined {
    let (rec, meta, check) = merge_parts(state.inline_generation(), log, inline.fragment(), sensor);
    Joined::new(rec, meta, primary, check)
}

/// What [`merged`] builds, for a connection (the hooks) or a single line (the flusher).
pub fn merge_parts(
    generation: Option<&InlineGeneration>,
    log: impl ModuleLog,
    inline: &crate::record::TlsFragment,
    sensor: &TlsRecord,
) -> (TlsRecord, FragmentMeta, Check) {
    let (rec, differ) = crosscheck::merge_with_sensor(&inline.record(), sensor);
    if !differ.is_empty() && generation.is_some_and(|g| g.log_disagreement()) {
        log.log(
            Level::Warning,
            0,
            &format!(
                "ReqinLogFingerprint both: inline and sensor disagree for {}: {}",
                sensor.key.map_or_else(|| "?".to_owned(), |k| k.conn_id()),
                crosscheck::describe(&inline.record(), sensor, &differ)
            ),
        );
    }
    let meta = FragmentMeta {
        sensor_fields: true,
        ..inline.meta().clone()
    };
    let check = if differ.is_empty() {
        Check::Agree
    } else {
        Check::Disagree
    };
    (rec, meta, check)
}
