//! What the module does at each httpd phase, in safe Rust over the wrappers of [`crate::ffi`]:
//!
//! - directives fill the [`Settings`] of each server (config.rs);
//! - `post_config` (parent, once per configuration generation) opens the log sinks and finds
//!   (first time: maps) the shared counters, which live as long as the parent and which the
//!   children inherit;
//! - `child_init` (each child) attaches to the sensor's ring and starts the orphan flusher;
//! - `pre_connection` (REALLY_FIRST, primary connections only) records the accept time: a
//!   handshake joins the connection only if its SYN is inside the window around it;
//! - mod_ssl's `pre_handshake` captures the SYN and the ClientHello for inline mode
//!   ([`crate::inline`]);
//! - `post_read_request` (REALLY_FIRST) numbers the request on its connection, screens a
//!   proxy's fingerprint headers ([`crate::upstream`]), decides the fingerprint
//!   ([`crate::source`]: caching it on the connection, so keep-alive requests and HTTP/2 streams
//!   share their primary connection's handshake) and exports it as environment variables;
//! - `log_transaction` writes the line now when the join is decided, else hands it to the
//!   flusher;
//! - `handler` serves `SetHandler reqin-log-status` (Prometheus text).
//!
//! All state belongs to a pool (the configuration's, the child's, the connection's, the
//! request's): nothing survives a graceful restart in a Rust static.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::{c_int, CStr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use correlate_lib::join::JoinRules;
use correlate_lib::verdict::Verdict;
use correlate_lib::{unix_now_ns, TlsRecord};

use crate::config::{LogTarget, Settings, Verbosity};
use crate::correlation::{FileEvent, RingHandle, VerdictHandle};
use crate::ffi::openssl::{HelloSlot, HoldsHello};
use crate::ffi::shm::SharedCounters;
use crate::ffi::socket::ClientSocket;
use crate::ffi::{
    apr_status_t, module_loaded, spawn_without_signals, Conn, ConnEnv, Expr, H2Probe, Level, Pool,
    Request, Server, ServerHandle, TlsProbe, DECLINED, OK,
};
use crate::flusher::{BothPending, Flusher, Pending};
use crate::ids::{self, Ids as IdSource};
use crate::inline::{Capture, InlineGeneration, KnownHello, KnownSyn};
use crate::record::{
    self, FragmentMeta, LineFingerprint, OrphanReason, RecordParts, RequestSnapshot, Text,
    TlsFragment,
};
use crate::sink::{DatagramSink, FileSink};
use crate::source::{self, Decision, Wait};
use crate::stats::{self, Counter};
use crate::upstream::{Screened, Upstream, UpstreamValues};
use correlate_lib::clients::ClientMap;

/// The handler name of the status page: `SetHandler reqin-log-status`.
pub const STATUS_HANDLER: &CStr = c"reqin-log-status";

/// The module's state for one server, owned by the configuration pool.
#[derive(Default)]
pub struct ServerState {
    pub settings: Settings,
    /// Set by `post_config` when this server logs.
    pub(crate) output: OnceLock<Arc<Output>>,
    /// The generation's counters, shared by every server (set by `post_config`).
    stats: OnceLock<Arc<Stats>>,
    pub(crate) rules: OnceLock<Arc<JoinRules>>,
    /// Set by `child_init` (children only), for servers whose mode reads the ring.
    pub(crate) ring: OnceLock<Arc<RingHandle>>,
    flusher: OnceLock<Arc<Flusher>>,
    pub(crate) tls_probe: OnceLock<TlsProbe>,
    h2_probe: OnceLock<H2Probe>,
    /// mod_unique_id is loaded: its `UNIQUE_ID` is the request id.
    unique_id: OnceLock<bool>,
    /// The child's id generator (set by `child_init`, shared by every server of the child).
    ids: OnceLock<Arc<IdSource>>,
    /// `ReqinLogTag`, in configuration order: the main server's, then the virtual host's own
    /// (which replace a main-server tag of the same key).
    pub tags: Vec<Tag>,
    /// The generation's inline capture (set by `post_config` on every server when one of them
    /// fingerprints inline or both).
    inline: OnceLock<Arc<InlineGeneration>>,
    /// `ReqinLogTrustedProxy` (set by `post_config`).
    upstream: OnceLock<Option<Upstream>>,
    /// The detector's verdict table (set by `child_init`, one mapping per path).
    verdicts: OnceLock<Arc<VerdictHandle>>,
    /// The ja4→client map (`ReqinLogClientMap`), loaded by `post_config` for the generation.
    clients: OnceLock<Arc<ClientMap>>,
}

/// One `ReqinLogTag key value [condition]`.
#[derive(Clone)]
pub struct Tag {
    pub key: String,
    pub value: TagValue,
    /// Only requests for which this `ap_expr` condition holds get the tag.
    pub when: Option<Expr>,
}

#[derive(Clone)]
pub enum TagValue {
    Literal(String),
    /// A string `ap_expr` (`%{ENV:...}`, `%{REMOTE_ADDR}`...), evaluated per request.
    Expr(Expr),
}

impl ServerState {
    /// What inline capture needs in this generation, when a server fingerprints inline.
    pub fn inline_generation(&self) -> Option<&InlineGeneration> {
        self.inline.get().map(Arc::as_ref)
    }

    /// `ReqinLogClientMap`, when one loaded.
    pub fn clients(&self) -> Option<&ClientMap> {
        self.clients.get().map(Arc::as_ref)
    }

    /// A virtual host's state: its directives over the main server's, fresh runtime slots.
    pub fn merged(base: &ServerState, add: &ServerState) -> ServerState {
        let mut tags: Vec<Tag> = base
            .tags
            .iter()
            .filter(|t| !add.tags.iter().any(|a| a.key == t.key))
            .cloned()
            .collect();
        tags.extend(add.tags.iter().cloned());
        ServerState {
            settings: Settings::merge(&base.settings, &add.settings),
            tags,
            ..ServerState::default()
        }
    }
}

/// The module's own error-log messages: `LogLevel reqin_log:LEVEL` decides, and on top of it
/// `JsonSockLogLevel` (the C module's filter, default WARNING).
pub trait ModuleLog {
    fn log(&self, level: Level, status: apr_status_t, msg: &str);
}

/// Whether `JsonSockLogLevel` lets a message of this level through.
fn allowed(level: Level, v: Verbosity) -> bool {
    let needed = match level {
        Level::Crit | Level::Err => Verbosity::Error,
        Level::Warning => Verbosity::Warn,
        Level::Info => Verbosity::Info,
        Level::Debug => Verbosity::Debug,
    };
    needed <= v
}

impl ModuleLog for Server<'_> {
    #[track_caller]
    fn log(&self, level: Level, status: apr_status_t, msg: &str) {
        let v = self
            .state::<ServerState>()
            .map(|s| s.settings.verbosity())
            .unwrap_or_default();
        if allowed(level, v) {
            self.log_error(level, status, msg);
        }
    }
}

/// A server's error log for the child's other threads (the flusher), with its filter.
#[derive(Clone, Copy)]
pub struct Logger {
    server: ServerHandle,
    verbosity: Verbosity,
}

impl Logger {
    pub fn of(server: Server<'_>) -> Self {
        Self {
            server: server.handle(),
            verbosity: server
                .state::<ServerState>()
                .map(|s| s.settings.verbosity())
                .unwrap_or_default(),
        }
    }
}

impl ModuleLog for Logger {
    #[track_caller]
    fn log(&self, level: Level, status: apr_status_t, msg: &str) {
        if allowed(level, self.verbosity) {
            self.server.log_error(level, status, msg);
        }
    }
}

/// The module's state for one client connection (the primary one: HTTP/2 streams use their
/// master's), owned by the connection pool.
pub struct ConnState {
    /// The connection's id: the root of its requests' ids.
    conn_id: Option<Box<str>>,
    /// The TCP peer's address, normalised (`::ffff:a.b.c.d` is `a.b.c.d`): the verdict key.
    client_ip: Option<std::net::IpAddr>,
    /// Unix ns at `pre_connection`.
    pub(crate) accept_ns: u64,
    /// Requests read so far (HTTP/2: streams), for `keepalives`.
    requests: AtomicU64,
    /// The connection's final record, once decided: the sensor's (`sensor`), or `both`'s merge
    /// of the inline one with the sensor's. Boxed, as `inline`: with a [`Joined`] inline
    /// twice the state was 1 368 bytes, above what glibc's per-thread cache serves (1 032),
    /// and allocating it cost `pre_connection` 1 670 instructions more (callgrind).
    pub(crate) joined: OnceLock<Box<Joined>>,
    /// A request of this connection already waited the full lookup wait in vain: later ones
    /// look once and do not wait again (the handshake preceded the first request).
    pub(crate) waited_in_vain: AtomicBool,
    /// What httpd captured of the handshake (inline, both).
    capture: Capture,
    /// The record built from it, or why there is none (inline, both).
    pub(crate) inline: OnceLock<Result<Box<Joined>, OrphanReason>>,
}

impl ConnState {
    pub fn capture(&self) -> &Capture {
        &self.capture
    }
}

impl HoldsHello for ConnState {
    fn hello_slot(&self) -> &HelloSlot {
        self.capture.hello_slot()
    }
}

/// Whether a line's inline values were checked against the sensor's (`both`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not `both`'s business (sensor or inline alone).
    None,
    Agree,
    Disagree,
    /// `both`, but no sensor record to compare with.
    Unchecked,
}

/// A connection joined with its handshake: what every request on it reuses.
pub struct Joined {
    /// The connection's half of each line.
    fragment: TlsFragment,
    /// The environment variables (`REQIN_CORRELATED=1` and the fingerprint), in the
    /// connection's pool.
    env: ConnEnv,
    /// `both`: whether the sensor agreed.
    check: Check,
}

impl Joined {
    pub fn new(rec: TlsRecord, meta: FragmentMeta, primary: Conn<'_>, check: Check) -> Self {
        let env = primary.env(&[], crate::env::env_vars(Some((&rec, &meta))), |v| {
            v.as_str()
        });
        let (client, local) = (primary.client_addr(), primary.local_addr());
        Self {
            fragment: TlsFragment::new(rec, meta, client, local),
            env,
            check,
        }
    }

    /// As [`Joined::new`] for a record httpd made itself (`inline`), from the parts a child
    /// renders once per ClientHello and per SYN shape ([`crate::inline::KnownHello`],
    /// [`crate::inline::KnownSyn`]): their fields of the line and their environment variables,
    /// which the connection's environment points at instead of copying.
    pub fn inline(
        parts: RecordParts,
        meta: FragmentMeta,
        primary: Conn<'_>,
        hello: &KnownHello,
        syn: Option<&KnownSyn>,
    ) -> Self {
        let meta_vars = crate::env::meta_vars(&meta);
        let env = match syn {
            Some(syn) => primary.env(&[&hello.env, &syn.env], meta_vars, |v| v.as_str()),
            None => primary.env(&[&hello.env], meta_vars, |v| v.as_str()),
        };
        let (client, local) = (primary.client_addr(), primary.local_addr());
        let fragment = TlsFragment::with_parts(
            parts,
            meta,
            client,
            local,
            &hello.json,
            syn.map(|s| s.json.as_slice()),
        );
        Self {
            fragment,
            env,
            check: Check::None,
        }
    }

    pub fn fragment(&self) -> &TlsFragment {
        &self.fragment
    }
}

/// The module's state for one request, owned by the request pool.
pub struct RequestState {
    /// 1-based position on the connection (`keepalives`, `sequence_number`).
    pub(crate) index: u64,
    request_id: Option<Box<str>>,
    /// A proxy's fingerprint headers, screened at `post_read_request`.
    pub(crate) upstream: Screened,
    /// `ReqinLogJA4Plus On`: JA4H and its raw form, of the request as the client sent it.
    ja4h: Option<(String, String)>,
    /// What the detector's verdict table said at `post_read_request`.
    verdict: OnceLock<Verdict>,
}

/// The counters in shared memory, the same block for every generation of this httpd parent
/// (absent if the mapping failed: then no counts).
pub struct Stats {
    shm: Option<SharedCounters>,
}

impl Stats {
    pub fn add(&self, c: Counter, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(shm) = &self.shm {
            shm.add(c.index(), n);
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.shm.as_ref().map_or(0, |s| s.get(c.index()))
    }
}

/// Where one server's lines go, and what counts them.
pub struct Output {
    file: Option<Arc<FileSink>>,
    socket: Option<Arc<DatagramSink>>,
    pub stats: Arc<Stats>,
    log: Logger,
}

impl Output {
    /// Writes one finished line to every sink; counts it, with its fingerprint's source or
    /// orphan reason, and `both`'s check. `lines_written` counts lines in the file (when the
    /// server has a `ReqinLogFile`; buffered ones when their write succeeds), else lines the
    /// socket took.
    pub fn write(&self, line: &[u8], fp: LineFingerprint<'_>, check: Check) {
        let correlated = fp.correlated();
        if let Some(source) = fp.source() {
            self.stats.add(Counter::of_source(source), 1);
        }
        if let Some(reason) = fp.reason() {
            self.stats.add(Counter::of_reason(reason), 1);
        }
        match check {
            Check::None => {}
            Check::Agree => self.stats.add(Counter::CrossCheckAgree, 1),
            Check::Disagree => self.stats.add(Counter::CrossCheckDisagree, 1),
            Check::Unchecked => self.stats.add(Counter::CrossCheckUnchecked, 1),
        }
        if let Some(file) = &self.file {
            let outcome = file.write_line(line, self.damage_epoch());
            self.count(outcome);
        }
        if let Some(socket) = &self.socket {
            match socket.send(line) {
                Ok(()) if self.file.is_none() => self.stats.add(Counter::LinesWritten, 1),
                Ok(()) => {}
                Err(report) => {
                    self.stats.add(Counter::Dropped, 1);
                    if let Some(msg) = report {
                        self.log.log(Level::Warning, 0, &msg);
                    }
                }
            }
        }
        self.stats.add(
            if correlated {
                Counter::Correlated
            } else {
                Counter::Orphans
            },
            1,
        );
    }

    /// Writes the file's buffered lines if the oldest is due at `now` (all if `force`).
    pub fn flush(&self, now: Instant, force: bool) {
        if let Some(file) = &self.file {
            self.count(file.flush(now, force, self.damage_epoch()));
        }
    }

    /// Reports the lines lost or dropped since the sinks' last reports (a child exiting: the
    /// report interval would hold them back for ever).
    pub fn report_pending(&self) {
        if let Some(msg) = self.file.as_ref().and_then(|f| f.pending_report()) {
            self.log.log(Level::Err, 0, &msg);
        }
        if let Some(msg) = self.socket.as_ref().and_then(|s| s.pending_report()) {
            self.log.log(Level::Warning, 0, &msg);
        }
    }

    /// The error log of the server this output belongs to.
    pub fn logger(&self) -> Logger {
        self.log
    }

    /// How many lines any child left damaged in a file: a change tells every writer to check
    /// the end of its file before its next write (see `sink::AppendFile`).
    fn damage_epoch(&self) -> u64 {
        self.stats.get(Counter::LinesDamaged)
    }

    /// When the file's oldest buffered line is due, if any.
    pub fn flush_due(&self) -> Option<Instant> {
        self.file.as_ref().and_then(|f| f.due())
    }

    fn count(&self, outcome: crate::sink::Outcome) {
        self.stats.add(Counter::LinesWritten, outcome.written);
        self.stats.add(Counter::WriteErrors, outcome.lost);
        self.stats.add(Counter::LinesDamaged, outcome.damaged);
        if let Some(msg) = outcome.report {
            self.log.log(Level::Err, 0, &msg);
        }
    }
}

pub fn count_panic(server: Server<'_>) {
    if let Some(stats) = server.state::<ServerState>().and_then(|s| s.stats.get()) {
        stats.add(Counter::Panics, 1);
    }
}

pub fn post_config(pconf: Pool<'_>, _ptemp: Pool<'_>, main: Server<'_>) -> c_int {
    let probe = TlsProbe::lookup();
    let h2_probe = H2Probe::lookup();
    let unique_id = module_loaded(c"mod_unique_id.c");
    let stats = Arc::new(Stats {
        // Mapped once for the parent's life: counters survive graceful restarts (monotonic).
        shm: match SharedCounters::for_parent_lifetime(main, Counter::ALL.len()) {
            Ok(shm) => Some(shm),
            Err(e) => {
                main.log(
                    Level::Warning,
                    0,
                    &format!("cannot map shared counters ({e}); the status page shows zeros"),
                );
                None
            }
        },
    });
    // Inline capture: set up for the whole generation when any server fingerprints inline.
    // Reported on the real start and on restarts, not in the configuration pre-check pass.
    let report = main.parent_lifetime_pool().is_some();
    let captures = main.and_following().any(|s| {
        s.state::<ServerState>()
            .is_some_and(|st| st.settings.logs() && st.settings.fingerprint().captures())
    });
    crate::inline::configure_listeners(main, captures, report);
    let inline = captures.then(|| Arc::new(InlineGeneration::load(main, report)));
    // Virtual hosts inheriting the main server's sinks share its descriptor.
    let mut files: HashMap<LogTarget, Arc<FileSink>> = HashMap::new();
    let mut sockets: HashMap<PathBuf, Arc<DatagramSink>> = HashMap::new();
    let mut any = false;
    let mut client_maps: HashMap<PathBuf, Option<Arc<ClientMap>>> = HashMap::new();
    for server in main.and_following() {
        let Some(state) = server.state::<ServerState>() else {
            continue;
        };
        let settings = &state.settings;
        if let (Some(path), None) = (&settings.socket, settings.socket_sink()) {
            server.log(
                Level::Warning,
                0,
                &format!(
                    "JsonSockLogSocket {} is ignored: JsonSockLogEnabled is not On (its default is Off, as in the original module)",
                    path.display()
                ),
            );
        }
        if let Some((path, configured)) = settings.client_map() {
            let map =
                client_maps.entry(path.to_path_buf()).or_insert_with(|| {
                    match ClientMap::load(path) {
                        Ok(m) => Some(Arc::new(m)),
                        Err(e) => {
                            if configured {
                                server.log(
                                    Level::Warning,
                                    0,
                                    &format!(
                                        "ReqinLogClientMap {}: {e}; REQIN_CLIENT is not set",
                                        path.display()
                                    ),
                                );
                            }
                            None
                        }
                    }
                });
            if let Some(m) = map {
                let _ = state.clients.set(Arc::clone(m));
            }
        }
        let _ = state.tls_probe.set(probe);
        let _ = state.h2_probe.set(h2_probe);
        let _ = state.unique_id.set(unique_id);
        let _ = state.stats.set(Arc::clone(&stats));
        let _ = state.rules.set(Arc::new(settings.join_rules()));
        let _ = state.upstream.set(Upstream::from_settings(settings));
        if let Some(generation) = &inline {
            let _ = state.inline.set(Arc::clone(generation));
        }
        if !settings.logs() {
            continue;
        }
        any = true;
        let file = match &settings.log_target {
            None => None,
            Some(target) => match files.get(target) {
                Some(f) => Some(Arc::clone(f)),
                None => {
                    let (sink, not_open) = FileSink::open(
                        pconf,
                        main.parent_lifetime_pool(),
                        target,
                        settings.reconnect_interval(),
                        settings.error_report_interval(),
                        Some((settings.buffer(), settings.flush_interval())),
                    );
                    if let Some(why) = not_open {
                        // A run-time resource, not a syntax error: httpd keeps serving (and a
                        // graceful restart keeps working) while the log cannot be written.
                        server.log(
                            Level::Err,
                            0,
                            &format!(
                                "ReqinLogFile {target}: cannot open it ({why}); its lines are lost (counted as reqin_log_write_errors_total) until it opens: each child tries again every {}, httpd at every graceful restart",
                                humantime::format_duration(settings.reconnect_interval())
                            ),
                        );
                    }
                    let f = Arc::new(sink);
                    files.insert(target.clone(), Arc::clone(&f));
                    Some(f)
                }
            },
        };
        let socket = settings.socket_sink().map(|path| {
            Arc::clone(sockets.entry(path.clone()).or_insert_with(|| {
                if main.parent_lifetime_pool().is_some() {
                    // Once per start (not in the configuration pre-check) and per restart.
                    if let Some(why) = crate::sink::socket_absent(path) {
                        server.log(
                            Level::Warning,
                            0,
                            &format!(
                                "JsonSockLogSocket {}: {why}; its lines are dropped (counted as reqin_log_dropped_total, reported every {}) until a collector listens there; each child tries again every {}",
                                path.display(),
                                humantime::format_duration(settings.error_report_interval()),
                                humantime::format_duration(settings.reconnect_interval()),
                            ),
                        );
                    }
                }
                Arc::new(DatagramSink::new(
                    path.clone(),
                    settings.reconnect_interval(),
                    settings.error_report_interval(),
                ))
            }))
        });
        let _ = state.output.set(Arc::new(Output {
            file,
            socket,
            stats: Arc::clone(&stats),
            log: Logger::of(server),
        }));
    }
    if !any {
        main.log(
            Level::Debug,
            0,
            "no ReqinLogFile or JsonSockLogSocket configured: mod_reqin_log logs nothing",
        );
    }
    // This generation's handle on the counters lives as long as its configuration (the block
    // itself as long as the parent).
    pconf.own(ArcHolder(stats));
    OK
}

struct ArcHolder(#[allow(dead_code)] Arc<Stats>);

pub fn child_init(pchild: Pool<'_>, main: Server<'_>) {
    let now_ns = unix_now_ns();
    // A ring cut short under this child's mapping (root's `truncate`) must cost the join, not
    // the child: a SIGBUS there is turned into a zero page and the ring is dropped at its next
    // check. Children, never the parent, which may unload this module with a handler set.
    if let Err(e) = correlate_lib::ring::guard::install() {
        main.log(
            Level::Warning,
            0,
            &format!("cannot guard the ring mapping against truncation: {e}"),
        );
    }
    // One id prefix per child process (a new one after every restart).
    let ids = Arc::new(IdSource::new());
    for server in main.and_following() {
        if let Some(state) = server.state::<ServerState>() {
            let _ = state.ids.set(Arc::clone(&ids));
        }
    }
    // Every sink of this child once: the flusher writes their buffered lines when due.
    let mut outputs: Vec<Arc<Output>> = Vec::new();
    for server in main.and_following() {
        if let Some(output) = server.state::<ServerState>().and_then(|s| s.output.get()) {
            if !outputs.iter().any(|o| Arc::ptr_eq(o, output)) {
                outputs.push(Arc::clone(output));
            }
        }
    }
    // One flusher per child; it is stopped, drained and joined when the child's pool goes.
    let flusher = match Flusher::start(
        |f| spawn_without_signals("reqin-log-flush", f),
        outputs.clone(),
    ) {
        Ok(f) => Some(Arc::new(f)),
        Err(e) => {
            main.log(
                Level::Err,
                0,
                &format!(
                    "cannot start the orphan flusher thread ({e}); orphans are written at once, buffered lines when the buffer is full or the child exits"
                ),
            );
            None
        }
    };
    // One mapping per ring file, shared by every server that uses it.
    let mut rings: HashMap<PathBuf, Arc<RingHandle>> = HashMap::new();
    let mut verdict_tables: HashMap<PathBuf, Arc<VerdictHandle>> = HashMap::new();
    for server in main.and_following() {
        let Some(state) = server.state::<ServerState>() else {
            continue;
        };
        if let Some(f) = &flusher {
            let _ = state.flusher.set(Arc::clone(f));
        }
        if let Some(path) = state.settings.verdict_table() {
            let table = verdict_tables
                .entry(path.to_path_buf())
                .or_insert_with(|| {
                    let table = Arc::new(VerdictHandle::new(path.to_path_buf()));
                    // Silent when absent: without the detector, nothing changes.
                    if let Some(event @ FileEvent::Attached { .. }) = table.attach(now_ns) {
                        log_file_event(server, &event);
                    }
                    table
                })
                .clone();
            let _ = state.verdicts.set(table);
        }
        if !state.settings.fingerprint().uses_ring() {
            // `ReqinLogFingerprint inline`: no ring, nothing of the sensor's is touched.
            continue;
        }
        let path = state.settings.ring_path();
        let ring = rings
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let ring = Arc::new(RingHandle::new(path.to_path_buf()));
                if state.output.get().is_some() {
                    if let Some(event) = ring.attach(now_ns) {
                        log_file_event(server, &event);
                    }
                }
                ring
            })
            .clone();
        let _ = state.ring.set(ring);
    }
    pchild.own(ChildOwner { flusher, outputs });
}

/// What the child's pool cleanup finishes: the flusher's Drop would join its thread only once
/// the servers' references (dropped with the configuration pool, later) are gone, so the
/// cleanup stops it explicitly (it writes every pending line), then writes what is still
/// buffered: a graceful restart or stop loses no line.
struct ChildOwner {
    flusher: Option<Arc<Flusher>>,
    outputs: Vec<Arc<Output>>,
}

impl Drop for ChildOwner {
    fn drop(&mut self) {
        if let Some(f) = &self.flusher {
            f.stop_and_join();
        }
        let now = Instant::now();
        for output in &self.outputs {
            output.flush(now, true);
            output.report_pending();
        }
    }
}

pub fn pre_connection(conn: Conn<'_>, socket: Option<ClientSocket>) {
    if conn.is_secondary() {
        return;
    }
    let _ = conn.state_or_init(|| new_conn_state(conn, socket));
}

fn new_conn_state(conn: Conn<'_>, socket: Option<ClientSocket>) -> ConnState {
    let ids = conn
        .base_server()
        .and_then(|s| s.state::<ServerState>())
        .and_then(|s| s.ids.get());
    ConnState {
        conn_id: ids.map(|ids| ids.conn_id().into_boxed_str()),
        client_ip: conn
            .client_addr()
            .map(|a| correlate_lib::record::normalize_ip(a.ip())),
        accept_ns: unix_now_ns(),
        requests: AtomicU64::new(0),
        joined: OnceLock::new(),
        waited_in_vain: AtomicBool::new(false),
        capture: Capture::new(socket),
        inline: OnceLock::new(),
    }
}

/// The primary connection's state. A secondary connection never creates it (its master's
/// `pre_connection` did, before any stream existed), so streams on other threads only read it.
fn conn_state<'a>(conn: Conn<'a>) -> Option<&'a ConnState> {
    let primary = conn.primary();
    match primary.state::<ConnState>() {
        Some(s) => Some(s),
        None if !conn.is_secondary() => primary.state_or_init(|| new_conn_state(primary, None)),
        None => None,
    }
}

fn request_state<'a>(
    state: &ServerState,
    r: Request<'a>,
    cs: Option<&ConnState>,
) -> Option<&'a RequestState> {
    r.state_or_init(|| {
        let index = cs.map_or(1, |cs| cs.requests.fetch_add(1, Ordering::Relaxed) + 1);
        // JA4H first: the request as the client sent it, forged headers included.
        let ja4h = ja4h(state, r);
        RequestState {
            index,
            request_id: request_id(state, r, cs, index),
            upstream: screen_upstream(state, r),
            ja4h,
            verdict: OnceLock::new(),
        }
    })
}

/// A proxy's fingerprint headers: used from a trusted proxy, removed from anyone else.
fn screen_upstream(state: &ServerState, r: Request<'_>) -> Screened {
    let Some(Some(upstream)) = state.upstream.get() else {
        return Screened::NotConfigured;
    };
    let peer = r
        .connection()
        .and_then(|c| c.primary().client_addr())
        .map(|a| a.ip());
    let screened = upstream.screen(peer, |name| r.header(name), |name| r.remove_header(name));
    if let Some(output) = state.output.get() {
        match &screened {
            Screened::Untrusted { removed } => {
                output.stats.add(Counter::UpstreamHeadersRemoved, *removed)
            }
            Screened::TrustedWithout { invalid } => {
                output.stats.add(Counter::UpstreamHeadersInvalid, *invalid)
            }
            _ => {}
        }
    }
    screened
}

/// `ReqinLogJA4Plus On`: JA4H of a request that has a request line.
#[cfg(feature = "foxio")]
fn ja4h(state: &ServerState, r: Request<'_>) -> Option<(String, String)> {
    if !state.settings.ja4plus() || !r.has_request_line() {
        return None;
    }
    let method = r.method_bytes()?;
    Some(crate::ja4plus::ja4h(
        method,
        r.proto_num(),
        r.headers_in(),
        state.settings.is_redacted("Cookie"),
    ))
}

#[cfg(not(feature = "foxio"))]
fn ja4h(_state: &ServerState, _r: Request<'_>) -> Option<(String, String)> {
    None
}

/// mod_unique_id's `UNIQUE_ID` when it is loaded (generated now through httpd's log-id hook,
/// which mod_unique_id's own post_read_request then reuses), else `<conn_id>-<sequence>`, which
/// becomes the request's log id (`%L` in `ErrorLogFormat`) too.
fn request_id(
    state: &ServerState,
    r: Request<'_>,
    cs: Option<&ConnState>,
    index: u64,
) -> Option<Box<str>> {
    if state.unique_id.get() == Some(&true) {
        return r
            .generate_log_id()
            .map(|id| id.into_owned().into_boxed_str());
    }
    let conn_id = cs.and_then(|cs| cs.conn_id.as_deref())?;
    let id = ids::request_id(conn_id, index);
    r.set_log_id(&id);
    Some(id.into_boxed_str())
}

pub fn arrival_ns(r: Request<'_>) -> u64 {
    u64::try_from(r.request_time_us())
        .unwrap_or(0)
        .saturating_mul(1000)
}

pub fn post_read_request(r: Request<'_>) -> c_int {
    let (Some(server), Some(conn)) = (r.server(), r.connection()) else {
        return DECLINED;
    };
    let Some(state) = server
        .state::<ServerState>()
        .filter(|s| s.output.get().is_some())
    else {
        return DECLINED;
    };
    let cs = conn_state(conn);
    let Some(rs) = request_state(state, r, cs) else {
        return DECLINED;
    };
    let decision = source::decide(
        state,
        server,
        r,
        cs,
        rs,
        state.settings.lookup_wait(),
        false,
    );
    let verdict = verdict(state, server, r, cs, decision_ja4(&decision));
    if let Some(v) = verdict {
        let _ = rs.verdict.set(v);
    }
    if state.settings.export_env() {
        export_env(r, &decision);
        if let Some(v) = &verdict {
            r.add_env_str(crate::env::REQIN_VERDICT, v.word());
            let rule = v.rule();
            if !rule.is_empty() {
                r.add_env_str(crate::env::REQIN_VERDICT_RULE, rule);
            }
        }
        if let Some(id) = &rs.request_id {
            r.add_env_str(crate::env::REQIN_REQUEST_ID, id);
        }
        if let Some(id) = cs.and_then(|cs| cs.conn_id.as_deref()) {
            r.add_env_str(crate::env::REQIN_CONN_ID, id);
        }
        if let Some((ja4h, ja4h_r)) = &rs.ja4h {
            r.set_env_str(crate::env::JA4H, ja4h);
            r.set_env_str(crate::env::JA4H_R, ja4h_r);
        }
    }
    DECLINED
}

/// The JA4 the request was decided with, if any.
fn decision_ja4<'a>(decision: &'a Decision<'_>) -> Option<&'a str> {
    let ja4 = match decision {
        Decision::Joined(joined)
        | Decision::Unchecked(joined)
        | Decision::InlineAwaiting { inline: joined, .. } => Some(joined.fragment().ja4()),
        Decision::Upstream(values) => values.ja4.as_deref(),
        Decision::NotYet(_) | Decision::Never(_) => None,
    };
    ja4.filter(|j| !j.is_empty())
}

/// The detector's verdict for this request's client: by its TCP peer address first (what the
/// detector keys on: the line's `src_ip`), then by its JA4.
fn verdict(
    state: &ServerState,
    server: Server<'_>,
    r: Request<'_>,
    cs: Option<&ConnState>,
    ja4: Option<&str>,
) -> Option<Verdict> {
    let table = state.verdicts.get()?;
    let ip = cs?.client_ip?;
    // The request's own time (httpd read the clock when the request arrived): a verdict that
    // expires within the request's first microseconds is a hair late, and no clock is read.
    table.verdict(ip, ja4, arrival_ns(r), |event| {
        log_file_event(server, &event)
    })
}

/// The fingerprint's environment variables (`REQIN_CORRELATED=0` without one).
fn export_env(r: Request<'_>, decision: &Decision<'_>) {
    match decision {
        Decision::Joined(joined)
        | Decision::Unchecked(joined)
        | Decision::InlineAwaiting { inline: joined, .. } => r.set_conn_env(&joined.env),
        Decision::Upstream(values) => {
            r.set_env_c(crate::env::REQIN_CORRELATED, c"1");
            if let Some(v) = &values.ja4 {
                r.set_env_str(crate::env::JA4, v);
            }
            if let Some(v) = &values.ja3_hash {
                r.set_env_str(crate::env::JA3_HASH, v);
            }
            r.set_env_str(
                crate::env::REQIN_FINGERPRINT_SOURCE,
                record::Source::Upstream.as_str(),
            );
        }
        Decision::NotYet(_) | Decision::Never(_) => r.set_env_c(crate::env::REQIN_CORRELATED, c"0"),
    }
}

pub fn log_transaction(r: Request<'_>) -> c_int {
    let Some(server) = r.server() else {
        return DECLINED;
    };
    let Some(state) = server.state::<ServerState>() else {
        return DECLINED;
    };
    let Some(output) = state.output.get() else {
        return DECLINED;
    };
    if let Some(path) = &state.settings.test_panic_path {
        if r.uri().as_deref() == Some(path.as_str()) {
            panic!("ReqinLogTestPanic: forced panic in the log hook for {path}");
        }
    }
    let conn = r.connection();
    let cs = conn.and_then(conn_state);
    let rs = request_state(state, r, cs);
    let index = rs.map_or(1, |rs| rs.index);
    let ids = Ids {
        conn_id: cs.and_then(|cs| cs.conn_id.as_deref()),
        request_id: rs.and_then(|rs| rs.request_id.as_deref()),
        verdict: rs.and_then(|rs| rs.verdict.get()),
    };
    let snapshot = snapshot(state, output, r, conn, index, ids, rs);
    let Some(rs) = rs else {
        let fp = LineFingerprint::Orphan(OrphanReason::NoConnection);
        record::with_line(&snapshot, fp, |line| output.write(line, fp, Check::None));
        return OK;
    };
    let write = |snapshot: &RequestSnapshot<'_>, fp: LineFingerprint<'_>, check: Check| {
        record::with_line(snapshot, fp, |line| output.write(line, fp, check))
    };
    match source::decide(state, server, r, cs, rs, Duration::ZERO, true) {
        Decision::Joined(joined) => write(
            &snapshot,
            LineFingerprint::Connection(&joined.fragment),
            joined.check,
        ),
        Decision::Unchecked(joined) => write(
            &snapshot,
            LineFingerprint::Connection(&joined.fragment),
            Check::Unchecked,
        ),
        Decision::Upstream(values) => write(&snapshot, upstream_fingerprint(values), Check::None),
        Decision::Never(reason) => write(&snapshot, LineFingerprint::Orphan(reason), Check::None),
        Decision::NotYet(wait) => wait_for_sensor(state, output, r, snapshot, wait, None, rs),
        Decision::InlineAwaiting { inline, wait } => {
            wait_for_sensor(state, output, r, snapshot, wait, Some(inline), rs)
        }
    }
    OK
}

fn upstream_fingerprint(values: &UpstreamValues) -> LineFingerprint<'_> {
    LineFingerprint::Upstream {
        ja4: values.ja4.as_deref(),
        ja3_hash: values.ja3_hash.as_deref(),
    }
}

/// A line whose connection's record the sensor may still publish: written now if the sensor
/// has processed every packet up to the request (nothing is coming), else handed to the
/// flusher, which writes it when the record arrives or the orphan delay ends. `inline`
/// (`both`): what the line carries if the sensor's record does not come.
fn wait_for_sensor(
    state: &ServerState,
    output: &Arc<Output>,
    r: Request<'_>,
    snapshot: RequestSnapshot<'_>,
    wait: Wait,
    inline: Option<&Joined>,
    rs: &RequestState,
) {
    let arrival_ns = arrival_ns(r);
    let untrusted = matches!(rs.upstream, Screened::Untrusted { removed } if removed > 0);
    let now = |snapshot: &RequestSnapshot<'_>, reason: OrphanReason| match inline {
        Some(joined) => record::with_line(
            snapshot,
            LineFingerprint::Connection(&joined.fragment),
            |line| {
                output.write(
                    line,
                    LineFingerprint::Connection(&joined.fragment),
                    Check::Unchecked,
                )
            },
        ),
        None => {
            output.stats.add(Counter::RingMisses, 1);
            let reason = if untrusted {
                OrphanReason::UpstreamUntrusted
            } else {
                reason
            };
            let fp = LineFingerprint::Orphan(reason);
            record::with_line(snapshot, fp, |line| output.write(line, fp, Check::None));
        }
    };
    if wait.ring.watermark() >= arrival_ns {
        // The sensor has processed every packet up to the request: no hello is coming.
        now(&snapshot, OrphanReason::NotInRing);
        return;
    }
    let (Some(flusher), Some(rules)) = (state.flusher.get(), state.rules.get()) else {
        now(&snapshot, source::ring_reason(&wait.ring));
        return;
    };
    let pending = Box::new(Pending {
        snapshot: snapshot.into_owned(),
        key: wait.key,
        accept_ns: wait.accept_ns,
        arrival_ns,
        deadline: Instant::now() + state.settings.orphan_delay(),
        rules: Arc::clone(rules),
        ring: wait.ring,
        output: Arc::clone(output),
        ja4plus: state.settings.ja4plus(),
        clients: state.clients.get().cloned(),
        untrusted_upstream: untrusted,
        both: inline.map(|joined| {
            Box::new(BothPending {
                inline: joined.fragment.clone(),
                generation: state.inline.get().cloned(),
            })
        }),
    });
    if let Err(p) = flusher.submit(pending) {
        output.stats.add(Counter::QueueFull, 1);
        now(&p.snapshot, source::ring_reason(&p.ring));
    }
}

/// A request's correlation ids, as its line carries them.
struct Ids<'a> {
    conn_id: Option<&'a str>,
    request_id: Option<&'a str>,
    verdict: Option<&'a Verdict>,
}

/// `ReqinLogTag`s that apply to `r`, evaluated now (a failed expression leaves its tag out).
fn tags<'a>(state: &'a ServerState, r: Request<'a>) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
    let mut out = Vec::new();
    for tag in &state.tags {
        if let Some(when) = &tag.when {
            if r.eval_bool(when) != Ok(true) {
                continue;
            }
        }
        let value = match &tag.value {
            TagValue::Literal(v) => Cow::Borrowed(v.as_str()),
            TagValue::Expr(e) => match r.eval_str(e) {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        out.push((Cow::Borrowed(tag.key.as_str()), value));
    }
    out
}

fn snapshot<'a>(
    state: &'a ServerState,
    output: &Output,
    r: Request<'a>,
    conn: Option<Conn<'_>>,
    keepalives: u64,
    ids: Ids<'a>,
    rs: Option<&'a RequestState>,
) -> RequestSnapshot<'a> {
    // Without a request line, method/path/protocol are httpd's placeholders, not the client's.
    let line = r.has_request_line();
    let client = conn.and_then(|c| c.client_addr());
    let useragent_ip = r.useragent_ip().filter(|ua| {
        !r.useragent_is_peer()
            && client.is_none_or(|c| {
                ua.parse::<std::net::IpAddr>()
                    .map(|ip| {
                        correlate_lib::record::normalize_ip(ip)
                            != correlate_lib::record::normalize_ip(c.ip())
                    })
                    .unwrap_or(true)
            })
    });
    let (headers, cuts) = record::collect_headers(&state.settings, |name| {
        std::ffi::CString::new(name).ok().and_then(|c| r.header(&c))
    });
    output
        .stats
        .add(Counter::HeaderValuesTruncated, cuts.truncated_values);
    output
        .stats
        .add(Counter::HeadersDropped, cuts.dropped_headers);
    output.stats.add(Counter::HeadersRedacted, cuts.redacted);
    let max = state.settings.max_field_len();
    let (mut truncated, mut not_utf8) = (0, cuts.not_utf8);
    let mut field = |bytes: Option<&'a [u8]>| {
        bytes.map(|b| {
            let (text, cut) = Text::from_bytes(b, max);
            truncated += u64::from(cut.truncated);
            not_utf8 += u64::from(cut.not_utf8);
            text
        })
    };
    let host = field(r.host());
    let path = field(r.path().filter(|_| line));
    let query = field(r.args().filter(|_| line));
    output.stats.add(Counter::FieldsTruncated, truncated);
    output.stats.add(Counter::FieldsNotUtf8, not_utf8);
    let start_us = r.request_time_us();
    let now_us = i64::try_from(unix_now_ns() / 1000).unwrap_or(i64::MAX);
    RequestSnapshot {
        request_time_us: start_us,
        client,
        local: conn.and_then(|c| c.local_addr()),
        useragent_ip,
        method: r.method().filter(|_| line),
        scheme: scheme(state, r, conn),
        host,
        path,
        query,
        http_version: r.protocol().filter(|_| line),
        status: r.final_status(),
        bytes_sent: r.bytes_sent(),
        duration_us: u64::try_from(now_us.saturating_sub(start_us)).unwrap_or(0),
        keepalives,
        conn_id: ids.conn_id.map(Cow::Borrowed),
        request_id: ids.request_id.map(Cow::Borrowed),
        verdict: ids
            .verdict
            .map(|v| (Cow::Borrowed(v.word()), Cow::Borrowed(v.rule()))),
        stream_id: state.h2_probe.get().and_then(|p| p.stream_id(r)),
        headers,
        tags: tags(state, r),
        ja4h: rs
            .and_then(|rs| rs.ja4h.as_ref())
            .map(|(h, raw)| (Cow::Borrowed(h.as_str()), Cow::Borrowed(raw.as_str()))),
    }
}

/// "https" when the client's connection speaks TLS (mod_ssl's `ssl_is_https` on the primary
/// connection), else "http"; without mod_ssl, what `ap_http_scheme` says.
fn scheme<'a>(state: &ServerState, r: Request<'a>, conn: Option<Conn<'_>>) -> Option<Cow<'a, str>> {
    let tls = conn.and_then(|c| state.tls_probe.get().and_then(|p| p.is_tls(c.primary())));
    match tls {
        Some(true) => Some(Cow::Borrowed("https")),
        Some(false) => Some(Cow::Borrowed("http")),
        None => r.http_scheme(),
    }
}

/// `SetHandler reqin-log-status`: the counters of every child, and the sensor's.
pub fn handler(r: Request<'_>) -> c_int {
    if !r.handler_is(STATUS_HANDLER) {
        return DECLINED;
    }
    let Some(state) = r.server().and_then(|s| s.state::<ServerState>()) else {
        return DECLINED;
    };
    let Some(stats) = state.stats.get() else {
        return DECLINED;
    };
    let ring = state.ring.get().and_then(|ring| ring.status());
    // `?html`: a page for people, as mod_status answers without `?auto`.
    let html = r
        .args()
        .is_some_and(|a| a.split(|b| *b == b'&').any(|p| p == b"html"));
    let body = if html {
        r.set_content_type(c"text/html; charset=utf-8");
        stats::render_html(
            |c| stats.get(c),
            ring.as_ref(),
            crate::record::rfc3339_micros(i64::try_from(unix_now_ns() / 1000).unwrap_or(0))
                .as_str(),
        )
    } else {
        r.set_content_type(c"text/plain; version=0.0.4; charset=utf-8");
        stats::render(|c| stats.get(c), ring.as_ref())
    };
    if !r.header_only() {
        r.write(body.as_bytes());
    }
    OK
}

pub fn log_file_event(server: Server<'_>, event: &FileEvent) {
    let (level, msg) = file_event_message(event);
    server.log(level, 0, &msg);
}

/// The error-log line for something a child saw of the ring or the verdict table.
pub fn file_event_message(event: &FileEvent) -> (Level, String) {
    // What a missing file means for the requests.
    let without = |what: &str| {
        if what == "ring" {
            "requests are logged uncorrelated"
        } else {
            "no client has a verdict"
        }
    };
    match event {
        FileEvent::Attached {
            what,
            path,
            generation,
        } => (
            Level::Info,
            format!("attached to {what} {} (generation {generation})", path.display()),
        ),
        FileEvent::Unavailable { what, path, error } => (
            Level::Info,
            format!(
                "{what} {} not available ({error}); {}, retrying every second",
                path.display(),
                without(what)
            ),
        ),
        FileEvent::ReplacedButUnavailable {
            what,
            path,
            error,
            mapped_inode,
        } => (
            Level::Warning,
            format!(
                "{what} {}: the file at this path is no longer the one mapped (inode {mapped_inode}) and does not open ({error}); still reading the {what} mapped before, retrying every second",
                path.display()
            ),
        ),
        FileEvent::Damaged {
            what,
            path,
            error,
            inode,
        } => (
            Level::Warning,
            format!(
                "{what} {}: the mapped file (same inode {inode}) was changed in place by something other than its writer ({error}); it is no longer read, {} until a valid one opens, retrying every second",
                path.display(),
                without(what)
            ),
        ),
    }
}
