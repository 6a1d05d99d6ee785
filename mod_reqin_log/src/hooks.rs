//! What the module does at each httpd phase, in safe Rust over the wrappers of [`crate::ffi`]:
//!
//! - directives fill the [`Settings`] of each server (config.rs);
//! - `post_config` (parent, once per configuration generation) opens the log sinks and finds
//!   (first time: maps) the shared counters, which live as long as the parent and which the
//!   children inherit;
//! - `child_init` (each child) attaches to the sensor's ring and starts the orphan flusher;
//! - `pre_connection` (REALLY_FIRST, primary connections only) records the accept time: a
//!   handshake joins the connection only if its SYN is inside the window around it;
//! - `post_read_request` (REALLY_FIRST) numbers the request on its connection, looks the
//!   4-tuple up (caching a hit on the connection: keep-alive requests and HTTP/2 streams share
//!   their primary connection's handshake) and exports the fingerprint as environment variables;
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

use correlate_lib::join::{JoinRules, NoJoin};
use correlate_lib::ring::Lookup;
use correlate_lib::{unix_now_ns, ConnKey, TlsRecord};

use crate::config::{LogTarget, Settings, Verbosity};
use crate::correlation::{ClientVerdict, FileEvent, RingHandle, VerdictHandle};
use crate::ffi::shm::SharedCounters;
use crate::ffi::{
    apr_status_t, module_loaded, spawn_without_signals, Conn, ConnEnv, Expr, H2Probe, Level, Pool,
    Request, Server, ServerHandle, TlsProbe, DECLINED, OK,
};
use crate::flusher::{Flusher, Pending};
use crate::ids::{self, Ids as IdSource};
use crate::record::{self, RequestSnapshot, Text, TlsFragment};
use crate::sink::{DatagramSink, FileSink};
use crate::stats::{self, Counter};
use correlate_lib::clients::ClientMap;
use correlate_lib::fields;

/// The handler name of the status page: `SetHandler reqin-log-status`.
pub const STATUS_HANDLER: &CStr = c"reqin-log-status";

/// The module's state for one server, owned by the configuration pool.
#[derive(Default)]
pub struct ServerState {
    pub settings: Settings,
    /// Set by `post_config` when this server logs.
    output: OnceLock<Arc<Output>>,
    /// The generation's counters, shared by every server (set by `post_config`).
    stats: OnceLock<Arc<Stats>>,
    rules: OnceLock<Arc<JoinRules>>,
    /// Set by `child_init` (children only).
    ring: OnceLock<Arc<RingHandle>>,
    flusher: OnceLock<Arc<Flusher>>,
    tls_probe: OnceLock<TlsProbe>,
    h2_probe: OnceLock<H2Probe>,
    /// mod_unique_id is loaded: its `UNIQUE_ID` is the request id.
    unique_id: OnceLock<bool>,
    /// The child's id generator (set by `child_init`, shared by every server of the child).
    ids: OnceLock<Arc<IdSource>>,
    /// The detector's verdict table (set by `child_init`, one mapping per path).
    verdicts: OnceLock<Arc<VerdictHandle>>,
    /// The ja4→client map (`ReqinLogClientMap`), loaded by `post_config` for the generation.
    clients: OnceLock<Arc<ClientMap>>,
    /// `ReqinLogTag`, in configuration order: the main server's, then the virtual host's own
    /// (which replace a main-server tag of the same key).
    pub tags: Vec<Tag>,
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

/// A sensor whose watermark is this far behind the clock is not waited for (see `join`).
const SENSOR_STALL_NS: u64 = 1_000_000_000;

/// The module's state for one client connection (the primary one: HTTP/2 streams use their
/// master's), owned by the connection pool.
pub struct ConnState {
    /// The connection's id: the root of its requests' ids.
    conn_id: Option<Box<str>>,
    /// The TCP peer's address, normalised (`::ffff:a.b.c.d` is `a.b.c.d`): the verdict key.
    client_ip: Option<std::net::IpAddr>,
    /// Unix ns at `pre_connection`.
    accept_ns: u64,
    /// Requests read so far (HTTP/2: streams), for `keepalives`.
    requests: AtomicU64,
    /// The sensor's record of this connection's handshake, once found.
    joined: OnceLock<Joined>,
    /// A request of this connection already waited the full lookup wait in vain: later ones
    /// look once and do not wait again (the handshake preceded the first request).
    waited_in_vain: AtomicBool,
}

/// A connection joined with its handshake: what every request on it reuses.
pub struct Joined {
    /// The sensor's half of each line.
    fragment: TlsFragment,
    /// The environment variables (`REQIN_CORRELATED=1` and the fingerprint), in the
    /// connection's pool.
    env: ConnEnv,
}

impl Joined {
    fn new(rec: TlsRecord, primary: Conn<'_>, clients: Option<&ClientMap>) -> Self {
        // The client family the JA4 belongs to, for httpd.conf rules without the detector.
        let client = clients
            .filter(|_| !rec.ja4.is_empty())
            .map(|m| m.client(&rec.ja4).to_owned());
        let mut vars = crate::env::env_vars(Some(&rec));
        if let Some(c) = &client {
            vars.push((crate::env::REQIN_CLIENT, Cow::Borrowed(c.as_str())));
        }
        let env = primary.env(&vars);
        let mut fragment = TlsFragment::new(rec, primary.client_addr(), primary.local_addr());
        if let Some(c) = &client {
            fragment.add_str(fields::JA4_CLIENT, c);
        }
        Self { fragment, env }
    }
}

/// The module's state for one request, owned by the request pool.
pub struct RequestState {
    /// 1-based position on the connection (`keepalives`, `sequence_number`).
    index: u64,
    request_id: Option<Box<str>>,
    /// What the detector's verdict table said at `post_read_request`.
    verdict: OnceLock<ClientVerdict>,
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
    /// Writes one finished line to every sink; counts it. `lines_written` counts lines in the
    /// file (when the server has a `ReqinLogFile`; buffered ones when their write succeeds),
    /// else lines the socket took.
    pub fn write(&self, line: &[u8], correlated: bool) {
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
        let path = state.settings.ring_path();
        let ring = rings
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let ring = Arc::new(RingHandle::new(path.to_path_buf(), now_ns));
                if state.output.get().is_some() {
                    if let Some(event) = ring.attach(now_ns) {
                        log_file_event(server, &event);
                    }
                }
                ring
            })
            .clone();
        let _ = state.ring.set(ring);
        if let Some(path) = state.settings.verdict_table() {
            let table = verdict_tables
                .entry(path.to_path_buf())
                .or_insert_with(|| {
                    let table = Arc::new(VerdictHandle::new(path.to_path_buf(), now_ns));
                    // Silent when absent: without the detector, nothing changes.
                    if let Some(event @ FileEvent::Attached { .. }) = table.attach(now_ns) {
                        log_file_event(server, &event);
                    }
                    table
                })
                .clone();
            let _ = state.verdicts.set(table);
        }
        if let Some(f) = &flusher {
            let _ = state.flusher.set(Arc::clone(f));
        }
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
        }
    }
}

pub fn pre_connection(conn: Conn<'_>) {
    if conn.is_secondary() {
        return;
    }
    let _ = conn.state_or_init(|| new_conn_state(conn));
}

fn new_conn_state(conn: Conn<'_>) -> ConnState {
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
    }
}

/// The primary connection's state. A secondary connection never creates it (its master's
/// `pre_connection` did, before any stream existed), so streams on other threads only read it.
fn conn_state<'a>(conn: Conn<'a>) -> Option<&'a ConnState> {
    let primary = conn.primary();
    match primary.state::<ConnState>() {
        Some(s) => Some(s),
        None if !conn.is_secondary() => primary.state_or_init(|| new_conn_state(primary)),
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
        RequestState {
            index,
            request_id: request_id(state, r, cs, index),
            verdict: OnceLock::new(),
        }
    })
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

/// The outcome of trying to join a request with its connection's handshake.
enum Join<'a> {
    Joined(&'a Joined),
    /// Decided: no handshake will ever join this request.
    Never,
    /// Not in the ring yet; the sensor may still publish it.
    NotYet {
        key: ConnKey,
        accept_ns: u64,
        ring: Arc<RingHandle>,
    },
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
        let (level, msg) = file_event_message(&event);
        output.log.log(level, 0, &msg);
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

/// Tries to join `r` now, waiting up to `wait` while the sensor has not yet processed the
/// packets up to the request's arrival.
fn join<'a>(
    state: &ServerState,
    server: Server<'_>,
    r: Request<'_>,
    cs: Option<&'a ConnState>,
    index: u64,
    wait: Duration,
    count: bool,
) -> Join<'a> {
    let (Some(output), Some(rules), Some(conn)) =
        (state.output.get(), state.rules.get(), r.connection())
    else {
        return Join::Never;
    };
    if let Some(joined) = cs.and_then(|cs| cs.joined.get()) {
        // The connection was joined by an earlier request: it is TLS and its 4-tuple was
        // admitted then; only this request's position can still rule it out.
        return match rules.admits_position(index) {
            Ok(()) => Join::Joined(joined),
            Err(_) => Join::Never,
        };
    }
    let primary = conn.primary();
    let tls = state
        .tls_probe
        .get()
        .and_then(|p| p.is_tls(primary))
        .unwrap_or(false);
    if !tls {
        return Join::Never;
    }
    let (Some(client), Some(local), Some(cs)) = (primary.client_addr(), primary.local_addr(), cs)
    else {
        return Join::Never;
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
        return Join::Never;
    }
    let Some(ring) = state.ring.get() else {
        return Join::Never;
    };
    let arrival_ns = arrival_ns(r);
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
                return Join::Joined(
                    cs.joined.get_or_init(|| {
                        Joined::new(rec, primary, state.clients.get().map(|c| &**c))
                    }),
                );
            }
        }
        if !ring.is_attached() {
            // No sensor at all: every request is an orphan, at once.
            return Join::Never;
        }
        let watermark = ring.watermark();
        // A live sensor moves its watermark at least every 100 ms, idle or not; one that has not
        // for a second is stopped or hung, and waiting for it would only slow every request.
        let stalled = watermark.saturating_add(SENSOR_STALL_NS) < unix_now_ns();
        let timed_out = Instant::now() >= deadline;
        if timed_out && !wait.is_zero() {
            cs.waited_in_vain.store(true, Ordering::Relaxed);
        }
        if watermark >= arrival_ns || timed_out || stalled {
            return Join::NotYet {
                key,
                accept_ns: cs.accept_ns,
                ring: Arc::clone(ring),
            };
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn arrival_ns(r: Request<'_>) -> u64 {
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
    let joined = match join(
        state,
        server,
        r,
        cs,
        rs.index,
        state.settings.lookup_wait(),
        false,
    ) {
        Join::Joined(joined) => Some(joined),
        _ => None,
    };
    let verdict = verdict(state, server, cs, joined);
    if let Some(v) = verdict.clone() {
        let _ = rs.verdict.set(v);
    }
    if state.settings.export_env() {
        if let Some(v) = &verdict {
            r.set_env_str(crate::env::REQIN_VERDICT, &v.word);
            if !v.rule.is_empty() {
                r.set_env_str(crate::env::REQIN_VERDICT_RULE, &v.rule);
            }
        }
        match joined {
            Some(joined) => r.set_conn_env(&joined.env),
            None => r.set_env_c(c"REQIN_CORRELATED", c"0"),
        }
        if let Some(id) = &rs.request_id {
            r.set_env_str(crate::env::REQIN_REQUEST_ID, id);
        }
        if let Some(id) = cs.and_then(|cs| cs.conn_id.as_deref()) {
            r.set_env_str(crate::env::REQIN_CONN_ID, id);
        }
    }
    DECLINED
}

/// The detector's verdict for this request's client: by its TCP peer address first (what the
/// detector keys on: the line's `src_ip`), then by its JA4 when the connection is joined.
fn verdict(
    state: &ServerState,
    server: Server<'_>,
    cs: Option<&ConnState>,
    joined: Option<&Joined>,
) -> Option<ClientVerdict> {
    let table = state.verdicts.get()?;
    let ip = cs?.client_ip?;
    let ja4 = joined.map(|j| j.fragment.ja4()).filter(|j| !j.is_empty());
    let (found, event) = table.verdict(ip, ja4, unix_now_ns());
    if let Some(event) = event {
        log_file_event(server, &event);
    }
    found
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
    let snapshot = snapshot(state, output, r, conn, index, ids);
    match join(state, server, r, cs, index, Duration::ZERO, true) {
        Join::Joined(joined) => record::with_line(&snapshot, Some(&joined.fragment), |line| {
            output.write(line, true)
        }),
        Join::Never => record::with_line(&snapshot, None, |line| output.write(line, false)),
        Join::NotYet {
            key,
            accept_ns,
            ring,
        } => {
            let arrival_ns = arrival_ns(r);
            let orphan_now = |snapshot: &RequestSnapshot<'_>| {
                output.stats.add(Counter::RingMisses, 1);
                record::with_line(snapshot, None, |line| output.write(line, false));
            };
            if ring.watermark() >= arrival_ns {
                // The sensor has processed every packet up to the request: no hello is coming.
                orphan_now(&snapshot);
            } else if let (Some(flusher), Some(rules)) = (state.flusher.get(), state.rules.get()) {
                let pending = Box::new(Pending {
                    snapshot: snapshot.into_owned(),
                    key,
                    accept_ns,
                    arrival_ns,
                    deadline: Instant::now() + state.settings.orphan_delay(),
                    rules: Arc::clone(rules),
                    ring,
                    output: Arc::clone(output),
                    clients: state.clients.get().cloned(),
                });
                if let Err(p) = flusher.submit(pending) {
                    output.stats.add(Counter::QueueFull, 1);
                    orphan_now(&p.snapshot);
                }
            } else {
                orphan_now(&snapshot);
            }
        }
    }
    OK
}

/// A request's correlation ids, as its line carries them.
struct Ids<'a> {
    conn_id: Option<&'a str>,
    request_id: Option<&'a str>,
    verdict: Option<&'a ClientVerdict>,
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
        verdict: ids.verdict.map(|v| {
            (
                Cow::Borrowed(v.word.as_str()),
                Cow::Borrowed(v.rule.as_str()),
            )
        }),
        stream_id: state.h2_probe.get().and_then(|p| p.stream_id(r)),
        headers,
        tags: tags(state, r),
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

fn log_file_event(server: Server<'_>, event: &FileEvent) {
    let (level, msg) = file_event_message(event);
    server.log(level, 0, &msg);
}

/// The error-log line for something a child saw of the ring or the verdict table.
fn file_event_message(event: &FileEvent) -> (Level, String) {
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
