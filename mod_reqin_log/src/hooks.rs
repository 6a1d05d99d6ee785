//! What the module does at each httpd phase, in safe Rust over the wrappers of [`crate::ffi`]:
//!
//! - directives fill the [`Settings`] of each server (`ReqinLogFile`, `ReqinLogRing`);
//! - `post_config` (parent, once per configuration generation) opens the log sinks, which the
//!   children inherit;
//! - `child_init` (each child) attaches to the sensor's ring;
//! - `post_read_request` (REALLY_FIRST) looks the connection's 4-tuple up in the ring and caches
//!   a hit on the connection: every request of a keep-alive connection shares its handshake;
//! - `log_transaction` looks up once more if the sensor published a hair late, and writes the
//!   line.
//!
//! All state belongs to a pool (the configuration's, or the connection's): nothing survives a
//! graceful restart in a Rust static.

use std::borrow::Cow;
use std::collections::HashMap;
use std::ffi::c_int;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use correlate_lib::ring::Lookup;
use correlate_lib::{ConnKey, TlsRecord};

use crate::config::{parse_ring_path, ConfigError, LogTarget, Settings};
use crate::correlation::{RingEvent, RingHandle};
use crate::ffi::{
    Cmd, Conn, Level, Pool, Request, Server, TlsProbe, DECLINED, HTTP_INTERNAL_SERVER_ERROR, OK,
};
use crate::record::{self, RequestSnapshot};
use crate::sink::Sink;

/// The module's state for one server, owned by the configuration pool.
#[derive(Default)]
pub struct ServerState {
    pub settings: Settings,
    /// Set by `post_config` when this server has a `ReqinLogFile`; unset, the module is off here.
    sink: OnceLock<Arc<Sink>>,
    /// Set by `child_init` (children only).
    ring: OnceLock<Arc<RingHandle>>,
    tls_probe: OnceLock<TlsProbe>,
}

impl ServerState {
    /// A virtual host's state: its directives over the main server's, fresh runtime slots.
    pub fn merged(base: &ServerState, add: &ServerState) -> ServerState {
        ServerState {
            settings: Settings::merge(&base.settings, &add.settings),
            ..ServerState::default()
        }
    }
}

/// The module's state for one connection, owned by the connection pool.
#[derive(Default)]
pub struct ConnState {
    /// The sensor's record of this connection's handshake, once found.
    record: OnceLock<TlsRecord>,
}

pub fn set_log_file(state: &mut ServerState, arg: &str, cmd: &Cmd<'_>) -> Result<(), ConfigError> {
    state.settings.log_target = Some(LogTarget::parse(arg, |rel| cmd.server_root_relative(rel))?);
    Ok(())
}

pub fn set_ring(state: &mut ServerState, arg: &str, _cmd: &Cmd<'_>) -> Result<(), ConfigError> {
    state.settings.ring_path = Some(parse_ring_path(arg)?);
    Ok(())
}

pub fn post_config(pconf: Pool<'_>, main: Server<'_>) -> c_int {
    let probe = TlsProbe::lookup();
    // Virtual hosts inheriting the main server's ReqinLogFile share its descriptor.
    let mut opened: HashMap<LogTarget, Arc<Sink>> = HashMap::new();
    for server in main.and_following() {
        let Some(state) = server.state() else {
            continue;
        };
        let _ = state.tls_probe.set(probe);
        let Some(target) = &state.settings.log_target else {
            continue;
        };
        let sink = match opened.get(target) {
            Some(sink) => Arc::clone(sink),
            None => match Sink::open(pconf, target) {
                Ok(sink) => {
                    let sink = Arc::new(sink);
                    opened.insert(target.clone(), Arc::clone(&sink));
                    sink
                }
                Err(e) => {
                    server.log(
                        Level::Err,
                        e.status,
                        &format!("ReqinLogFile: cannot open {target}: {e}"),
                    );
                    return HTTP_INTERNAL_SERVER_ERROR;
                }
            },
        };
        let _ = state.sink.set(sink);
    }
    if opened.is_empty() {
        main.log(
            Level::Debug,
            0,
            "no ReqinLogFile configured: mod_reqin_log logs nothing",
        );
    }
    OK
}

pub fn child_init(main: Server<'_>) {
    let now = Instant::now();
    // One mapping per ring file, shared by every server that uses it.
    let mut rings: HashMap<PathBuf, Arc<RingHandle>> = HashMap::new();
    for server in main.and_following() {
        let Some(state) = server.state() else {
            continue;
        };
        if state.sink.get().is_none() {
            continue;
        }
        let path = state.settings.ring_path();
        let ring = rings
            .entry(path.to_path_buf())
            .or_insert_with(|| {
                let ring = Arc::new(RingHandle::new(path.to_path_buf(), now));
                if let Some(event) = ring.attach(now) {
                    log_ring_event(server, &event);
                }
                ring
            })
            .clone();
        let _ = state.ring.set(ring);
    }
}

pub fn post_read_request(r: Request<'_>) -> c_int {
    let (Some(server), Some(conn)) = (r.server(), r.connection()) else {
        return DECLINED;
    };
    if let Some(state) = server.state().filter(|s| s.sink.get().is_some()) {
        record_of(state, server, conn);
    }
    DECLINED
}

pub fn log_transaction(r: Request<'_>) -> c_int {
    let Some(server) = r.server() else {
        return DECLINED;
    };
    let Some(state) = server.state() else {
        return DECLINED;
    };
    let Some(sink) = state.sink.get() else {
        return DECLINED;
    };
    let conn = r.connection();
    let tls = conn.and_then(|c| record_of(state, server, c));
    let line = record::log_line(&snapshot(state, r, conn), tls);
    if let Err(failure) = sink.write_line(&line) {
        if let Some(failures) = failure.report {
            server.log(
                Level::Err,
                failure.error.status,
                &format!(
                    "ReqinLogFile {}: {} log line(s) lost: {}",
                    sink.target(),
                    failures,
                    failure.error
                ),
            );
        }
    }
    OK
}

fn snapshot<'a>(
    state: &ServerState,
    r: Request<'a>,
    conn: Option<Conn<'a>>,
) -> RequestSnapshot<'a> {
    // Without a request line, method/path/protocol are httpd's placeholders, not the client's.
    let line = r.has_request_line();
    RequestSnapshot {
        request_time_us: r.request_time_us(),
        client: conn.and_then(|c| c.client_addr()),
        local: conn.and_then(|c| c.local_addr()),
        method: r.method().filter(|_| line),
        scheme: scheme(state, r, conn),
        host: r.host(),
        path: r.path().filter(|_| line),
        query: r.args().filter(|_| line),
        http_version: r.protocol().filter(|_| line),
        status: r.final_status(),
    }
}

/// "https" when the client's connection speaks TLS (mod_ssl's `ssl_is_https` on the primary
/// connection), else "http"; without mod_ssl, what `ap_http_scheme` says.
fn scheme<'a>(state: &ServerState, r: Request<'a>, conn: Option<Conn<'a>>) -> Option<Cow<'a, str>> {
    let tls = conn.and_then(|c| state.tls_probe.get().and_then(|p| p.is_tls(c.primary())));
    match tls {
        Some(true) => Some(Cow::Borrowed("https")),
        Some(false) => Some(Cow::Borrowed("http")),
        None => r.http_scheme(),
    }
}

/// The connection's TLS record: cached on the connection once found, else looked up now.
fn record_of<'a>(state: &ServerState, server: Server<'_>, conn: Conn<'a>) -> Option<&'a TlsRecord> {
    let cached = conn.state_or_init(ConnState::default)?;
    if let Some(record) = cached.record.get() {
        return Some(record);
    }
    let ring = state.ring.get()?;
    let key = ConnKey::new(conn.client_addr()?, conn.local_addr()?);
    let (found, event) = ring.lookup(&key, Instant::now());
    if let Some(event) = event {
        log_ring_event(server, &event);
    }
    match found {
        Lookup::Hit(record) => Some(cached.record.get_or_init(|| record)),
        Lookup::Miss => None,
        Lookup::Torn => {
            server.log(
                Level::Debug,
                0,
                &format!(
                    "ring {}: torn slot for {}",
                    ring.path().display(),
                    key.conn_id()
                ),
            );
            None
        }
    }
}

fn log_ring_event(server: Server<'_>, event: &RingEvent) {
    match event {
        RingEvent::Attached { path, generation } => server.log(
            Level::Info,
            0,
            &format!("attached to ring {} (generation {generation})", path.display()),
        ),
        RingEvent::Unavailable { path, error } => server.log(
            Level::Info,
            0,
            &format!(
                "ring {} not available ({error}); requests are logged uncorrelated, retrying every second",
                path.display()
            ),
        ),
        RingEvent::ReplacedButUnavailable { path, error } => server.log(
            Level::Warning,
            0,
            &format!(
                "ring {} was replaced but the new one does not open ({error}); still reading the old one",
                path.display()
            ),
        ),
    }
}
