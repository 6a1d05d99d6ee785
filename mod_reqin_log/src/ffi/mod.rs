//! Every `unsafe` line of the module lives under `ffi/`: the bindgen bindings of httpd and APR,
//! the `extern "C"` functions httpd calls ([`entry`], generic over any [`entry::Module`]), and
//! the small safe wrappers below through which the rest of the crate reads httpd's structures.
//! This layer depends on nothing else in the crate: the module's state is stored in httpd's
//! config vectors as a value of its own type, checked on every access ([`Tagged`]).
//!
//! The wrappers borrow httpd's records for the duration of one hook call (`'a`). httpd
//! guarantees the records and their pools outlive the call; every wrapper is built from a
//! non-null pointer httpd handed to the hook, in [`entry`] only.

#![allow(unsafe_code)]

pub mod entry;
pub mod openssl;
pub mod shm;
pub mod socket;

use std::any::{Any, TypeId};
use std::borrow::Cow;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::panic::Location;
use std::path::PathBuf;
use std::ptr::{self, NonNull};

#[allow(
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unsafe_op_in_unsafe_fn,
    unknown_lints,
    unnecessary_transmutes,
    clippy::all
)]
pub mod sys {
    include!(concat!(env!("OUT_DIR"), "/httpd_bindings.rs"));
}

pub use sys::apr_status_t;

pub const OK: c_int = sys::OK as c_int;
pub const DECLINED: c_int = sys::DECLINED;
const APR_SUCCESS: apr_status_t = sys::APR_SUCCESS as apr_status_t;

/// Error-log levels we use (`LogLevel reqin_log:debug` shows all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Crit,
    Err,
    Warning,
    Info,
    Debug,
}

impl Level {
    fn aplog(self) -> c_int {
        (match self {
            Level::Crit => sys::APLOG_CRIT,
            Level::Err => sys::APLOG_ERR,
            Level::Warning => sys::APLOG_WARNING,
            Level::Info => sys::APLOG_INFO,
            Level::Debug => sys::APLOG_DEBUG,
        }) as c_int
    }
}

use entry::module_index;

/// `ap_get_module_config(v, &reqin_log_module)`: our slot in a config vector.
fn config_slot(vector: *mut sys::ap_conf_vector_t) -> Option<*mut *mut c_void> {
    let index = usize::try_from(module_index()).ok()?;
    if vector.is_null() {
        return None;
    }
    // SAFETY: a config vector is an array of `void *` with one slot per loaded module
    // (ap_create_*_config sizes it by the total module count), and our index is < that count.
    Some(unsafe { (vector as *mut *mut c_void).add(index) })
}

/// What our slot of a config vector points to: a value and its type. `repr(C)` puts the type
/// first whatever `T` is, so a reader can check it before it knows `T`.
#[repr(C)]
struct Tagged<T> {
    type_id: TypeId,
    value: T,
}

/// Moves `value` into the pool ([`pool_box`]) with its type, for a config slot.
fn pool_tagged<T: Any + Send + Sync>(pool: *mut sys::apr_pool_t, value: T) -> *mut Tagged<T> {
    pool_box(
        pool,
        Tagged {
            type_id: TypeId::of::<T>(),
            value,
        },
    )
}

/// The `T` behind a slot's pointer, if it holds one.
fn tagged_ref<'a, T: Any>(p: *const c_void) -> Option<&'a T> {
    let tag = p as *const TypeId;
    if tag.is_null() {
        return None;
    }
    // SAFETY: every non-null pointer stored in our slots comes from `pool_tagged` (a
    // `Tagged<_>`, whose first field is its TypeId), alive until its pool's cleanup, which
    // outlives every hook call that can see the slot. The value is read only as the type the
    // tag names.
    unsafe {
        if *tag != TypeId::of::<T>() {
            return None;
        }
        Some(&(*(p as *const Tagged<T>)).value)
    }
}

fn get_config<'a, T: Any>(vector: *mut sys::ap_conf_vector_t) -> Option<&'a T> {
    let slot = config_slot(vector)?;
    // SAFETY: a slot of a live config vector (see `config_slot`).
    tagged_ref(unsafe { *slot } as *const c_void)
}

/// Our slot of `vector` filled with `init()` in `pool`, unless it already holds a `T`.
///
/// Only for vectors one thread at a time can write: a connection's (its requests run one at a
/// time on HTTP/1.x, and each HTTP/2 stream has its own secondary conn_rec) or a request's.
fn get_or_init_config<'a, T: Any + Send + Sync>(
    vector: *mut sys::ap_conf_vector_t,
    pool: *mut sys::apr_pool_t,
    init: impl FnOnce() -> T,
) -> Option<&'a T> {
    if let Some(existing) = get_config::<T>(vector) {
        return Some(existing);
    }
    let slot = config_slot(vector)?;
    let boxed = pool_tagged(pool, init());
    // SAFETY: our slot of a live vector, written by the one thread that serves it (see above);
    // `boxed` lives until `pool`'s cleanup, and `pool` owns the vector.
    unsafe {
        *slot = boxed as *mut c_void;
        Some(&(*boxed).value)
    }
}

/// Moves `value` into a heap allocation whose lifetime is `pool`'s: a cleanup drops it when the
/// pool is cleared or destroyed (a new generation on graceful restart; the end of a connection).
fn pool_box<T: Send + Sync + 'static>(pool: *mut sys::apr_pool_t, value: T) -> *mut T {
    let raw = Box::into_raw(Box::new(value));
    // `drop_box::<T>` frees exactly this `Box<T>`.
    on_pool_cleanup(pool, raw as *const c_void, drop_box::<T>);
    raw
}

/// Keeps `value` alive until `pool` runs its cleanups: one reference of the `Arc`, handed to
/// the pool without a box of its own.
fn pool_arc<T: Send + Sync + 'static>(pool: *mut sys::apr_pool_t, value: std::sync::Arc<T>) {
    // `drop_arc::<T>` gives back exactly this reference.
    on_pool_cleanup(
        pool,
        std::sync::Arc::into_raw(value) as *const c_void,
        drop_arc::<T>,
    );
}

/// Runs `drop(data)` once, when `pool` runs its cleanups (cleared or destroyed); `data` must be
/// what `drop` expects and belong to nothing else from now on.
fn on_pool_cleanup(
    pool: *mut sys::apr_pool_t,
    data: *const c_void,
    drop: unsafe extern "C" fn(*mut c_void) -> apr_status_t,
) {
    // SAFETY: `pool` is a live pool httpd gave us; APR runs a cleanup once, with `data`, and
    // the callers hand over a pointer only `drop` releases. The child cleanup (after fork,
    // before exec) must not free memory the parent still uses: apr_pool_cleanup_null, as
    // mod_log_config does.
    unsafe {
        sys::apr_pool_cleanup_register(pool, data, Some(drop), Some(sys::apr_pool_cleanup_null));
    }
}

unsafe extern "C" fn drop_arc<T>(data: *mut c_void) -> apr_status_t {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: registered by `pool_arc::<T>` with a pointer from `Arc::<T>::into_raw`; APR
        // runs a cleanup once.
        drop(unsafe { std::sync::Arc::from_raw(data as *const T) });
    });
    // As in `drop_box`: a panicking Drop is not reported, httpd continues.
    let _ = result;
    APR_SUCCESS
}

unsafe extern "C" fn drop_box<T>(data: *mut c_void) -> apr_status_t {
    let result = std::panic::catch_unwind(|| {
        // SAFETY: registered by `pool_box::<T>` with a pointer from `Box::<T>::into_raw`; APR
        // runs a cleanup once.
        drop(unsafe { Box::from_raw(data as *mut T) });
    });
    // A panicking Drop has nobody to report to here; the memory is leaked, httpd continues.
    let _ = result;
    APR_SUCCESS
}

/// `apr_pstrdup`: an error message httpd can keep after we return.
fn pool_str(pool: *mut sys::apr_pool_t, s: &str) -> *const c_char {
    let c = to_cstring(s);
    // SAFETY: `pool` is live (a directive handler's cmd->pool); apr_pstrdup copies `c`.
    unsafe { sys::apr_pstrdup(pool, c.as_ptr()) }
}

fn to_cstring(s: &str) -> CString {
    CString::new(s)
        .or_else(|_| CString::new(s.replace('\0', "\\0")))
        .unwrap_or_default()
}

/// A C string of a request, as UTF-8 (invalid bytes become U+FFFD).
fn text<'a>(p: *const c_char) -> Option<Cow<'a, str>> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null strings in httpd's records are NUL-terminated and allocated from the
    // record's pool, which outlives `'a` (one hook call).
    let c = unsafe { CStr::from_ptr(p) };
    // The plain check first: `to_string_lossy` walks the bytes chunk by chunk even when they
    // are all valid, which almost every request line and header is.
    Some(match c.to_str() {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => c.to_string_lossy(),
    })
}

/// The bytes of a C string of a request, without its NUL (not necessarily UTF-8).
fn bytes<'a>(p: *const c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    // SAFETY: as in `text`.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

fn socket_addr(sa: *const sys::apr_sockaddr_t) -> Option<SocketAddr> {
    // SAFETY: conn_rec addresses are null or point to an apr_sockaddr_t in the connection pool.
    let sa = unsafe { sa.as_ref() }?;
    let len = match u32::try_from(sa.family).ok()? {
        sys::APR_INET => 4,
        sys::APR_INET6 => 16,
        _ => return None,
    };
    if sa.ipaddr_ptr.is_null() || usize::try_from(sa.ipaddr_len).ok()? != len {
        return None;
    }
    // SAFETY: for APR_INET/APR_INET6, ipaddr_ptr points at the in_addr/in6_addr inside `sa.sa`,
    // `ipaddr_len` (checked above) bytes long.
    let octets = unsafe { std::slice::from_raw_parts(sa.ipaddr_ptr as *const u8, len) };
    crate::addr::socket_addr(octets, sa.port)
}

/// A pool httpd handed to a hook.
#[derive(Clone, Copy)]
pub struct Pool<'a> {
    raw: NonNull<sys::apr_pool_t>,
    _life: PhantomData<&'a sys::apr_pool_t>,
}

impl<'a> Pool<'a> {
    fn new(raw: *mut sys::apr_pool_t) -> Option<Self> {
        NonNull::new(raw).map(|raw| Self {
            raw,
            _life: PhantomData,
        })
    }

    /// Hands `value` to the pool: it is dropped when the pool is cleared or destroyed (for the
    /// child's pool: when the child exits, after its worker threads).
    pub fn own<T: Send + Sync + 'static>(&self, value: T) {
        pool_box(self.raw.as_ptr(), value);
    }
}

/// A `server_rec` (the main server or a virtual host).
#[derive(Clone, Copy)]
pub struct Server<'a> {
    raw: &'a sys::server_rec,
}

impl<'a> Server<'a> {
    fn new(raw: *const sys::server_rec) -> Option<Self> {
        // SAFETY: httpd passes valid server_recs (or null) to hooks; they live as long as the
        // configuration generation, longer than a hook call.
        unsafe { raw.as_ref() }.map(|raw| Self { raw })
    }

    /// This server, then every virtual host after it (`s->next`).
    pub fn and_following(self) -> impl Iterator<Item = Server<'a>> {
        std::iter::successors(Some(self), |s| Server::new(s.raw.next))
    }

    /// The module's state for this server (created by `create_server_config`).
    pub fn state<T: Any>(&self) -> Option<&'a T> {
        get_config(self.raw.module_config)
    }

    /// `ap_log_error` with our module index, so `LogLevel reqin_log:LEVEL` applies.
    #[track_caller]
    pub fn log_error(&self, level: Level, status: apr_status_t, msg: &str) {
        log_error(self.raw, level, status, msg);
    }

    /// The process pool (`s->process->pool`): it lives as long as the httpd parent, across
    /// every configuration generation and every unload of this DSO. `None` during the start-up
    /// pre-check pass, which runs before httpd detaches: a program started then would not be
    /// the daemon's child (nobody would reap or restart it).
    pub fn parent_lifetime_pool(&self) -> Option<Pool<'a>> {
        // SAFETY: ap_state_query only reads httpd's global state.
        let state = unsafe { sys::ap_state_query(sys::AP_SQ_MAIN_STATE as c_int) };
        if state == sys::AP_SQ_MS_CREATE_PRE_CONFIG as c_int {
            return None;
        }
        // SAFETY: httpd sets `s->process` on every server_rec to its process_rec, which lives
        // as long as the process; null is handled.
        let process = unsafe { self.raw.process.as_ref() }?;
        Pool::new(process.pool)
    }

    /// A handle other threads of the child (the orphan flusher) log through.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { raw: self.raw }
    }
}

/// `ap_log_error` for a server from any thread of the child.
#[derive(Clone, Copy)]
pub struct ServerHandle {
    raw: *const sys::server_rec,
}

// SAFETY: the server_rec is allocated from the configuration pool and only read; it outlives
// every thread that holds a handle (the flusher is joined in a cleanup of the child pool, a
// sub-pool of the configuration pool). ap_log_error is thread-safe.
unsafe impl Send for ServerHandle {}
// SAFETY: see Send.
unsafe impl Sync for ServerHandle {}

impl ServerHandle {
    #[track_caller]
    pub fn log_error(&self, level: Level, status: apr_status_t, msg: &str) {
        log_error(self.raw, level, status, msg);
    }
}

/// Starts a thread with every signal blocked. httpd's MPMs (prefork above all) rely on their
/// signals reaching their own threads: a SIGTERM handled on ours would run the child's exit,
/// whose pool cleanup joins this very thread.
pub fn spawn_without_signals<F>(name: &str, f: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    // SAFETY: plain sigset manipulation on local values; pthread_sigmask changes only the
    // calling thread's mask, restored right after the spawn (the new thread inherits the
    // blocked mask).
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let handle = std::thread::Builder::new().name(name.to_owned()).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        handle
    }
}

#[track_caller]
fn log_error(server: *const sys::server_rec, level: Level, status: apr_status_t, msg: &str) {
    let caller = Location::caller();
    let file = to_cstring(caller.file());
    let line = c_int::try_from(caller.line()).unwrap_or(0);
    let msg = to_cstring(msg);
    // SAFETY: a "%s" format with one NUL-terminated argument; `server` is a live server_rec or
    // null (httpd then logs to the main error log).
    unsafe {
        sys::ap_log_error_(
            file.as_ptr(),
            line,
            module_index(),
            level.aplog(),
            status,
            server,
            c"%s".as_ptr(),
            msg.as_ptr(),
        );
    }
}

/// A directive being parsed (`cmd_parms`).
pub struct Cmd<'a> {
    raw: &'a sys::cmd_parms,
}

impl<'a> Cmd<'a> {
    /// The directive's name as written in the command table.
    pub fn directive(&self) -> Cow<'a, str> {
        // SAFETY: cmd->cmd points to our static command table entry while its handler runs.
        let name = unsafe { self.raw.cmd.as_ref() }.map(|c| c.name);
        name.and_then(text).unwrap_or(Cow::Borrowed("ReqinLog"))
    }

    /// `ap_server_root_relative`, as `CustomLog` resolves a relative file name.
    pub fn server_root_relative(&self, rel: &str) -> Option<PathBuf> {
        let c = to_cstring(rel);
        // SAFETY: cmd->pool is live during the handler; the result is a pool string or null.
        let abs = unsafe { sys::ap_server_root_relative(self.raw.pool, c.as_ptr()) };
        text(abs).map(|s| PathBuf::from(s.into_owned()))
    }

    /// Parses an `ap_expr` (the language of `<If>` and `Require expr`) as httpd's own
    /// directives do, so `%{ENV:...}`, `%{REMOTE_ADDR}`, `-R '10.0.0.0/8'` mean what admins know.
    /// `string`: a string expression (`%{...}` interpolated) rather than a condition.
    pub fn parse_expr(&self, src: &str, string: bool) -> Result<Expr, String> {
        let c = CString::new(src).map_err(|_| "an expression cannot contain NUL".to_owned())?;
        let mut flags = sys::AP_EXPR_FLAG_DONT_VARY;
        if string {
            flags |= sys::AP_EXPR_FLAG_STRING_RESULT;
        }
        let mut err: *const c_char = ptr::null();
        // SAFETY: cmd is live during the handler; httpd copies `c` into the parse tree, which it
        // allocates from cmd->pool (the configuration's); `err` receives a pool string or null.
        let info = unsafe {
            sys::ap_expr_parse_cmd_mi(self.raw, c.as_ptr(), flags, &mut err, None, module_index())
        };
        if let Some(e) = text(err) {
            return Err(e.into_owned());
        }
        NonNull::new(info)
            .map(|raw| Expr { raw })
            .ok_or_else(|| "the expression did not parse".to_owned())
    }

    /// The state of the server whose section the directive is in, for writing.
    fn server_state_mut<T: Any>(&self) -> Option<&'a mut T> {
        // SAFETY: cmd->server is live during parsing.
        let server = unsafe { self.raw.server.as_ref() }?;
        let slot = config_slot(server.module_config)?;
        // SAFETY: a slot of a live vector; `tagged_ref` checked it holds a `Tagged<T>`. Config
        // parsing is single-threaded and nothing else holds a reference to the state while a
        // directive handler runs.
        unsafe {
            let p = *slot;
            tagged_ref::<T>(p)?;
            Some(&mut (*(p as *mut Tagged<T>)).value)
        }
    }
}

/// A parsed `ap_expr` ([`Cmd::parse_expr`]), evaluated per request.
#[derive(Debug, Clone, Copy)]
pub struct Expr {
    raw: NonNull<sys::ap_expr_info_t>,
}

// SAFETY: the parse tree lives in the configuration pool and is never written after parsing;
// httpd evaluates one tree from many threads at once (every `Require expr` does).
unsafe impl Send for Expr {}
// SAFETY: see Send.
unsafe impl Sync for Expr {}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Expr {}

/// Whether a module of this name (`mod_unique_id.c`) is loaded.
pub fn module_loaded(name: &CStr) -> bool {
    // SAFETY: a lookup in httpd's list of loaded modules.
    !unsafe { sys::ap_find_linked_module(name.as_ptr()) }.is_null()
}

/// A `conn_rec`.
#[derive(Clone, Copy)]
pub struct Conn<'a> {
    raw: &'a sys::conn_rec,
}

impl<'a> Conn<'a> {
    fn new(raw: *const sys::conn_rec) -> Option<Self> {
        // SAFETY: a request's connection is valid for the whole request.
        unsafe { raw.as_ref() }.map(|raw| Self { raw })
    }

    /// The TCP peer (`c->client_addr`), what the sensor saw.
    pub fn client_addr(&self) -> Option<SocketAddr> {
        socket_addr(self.raw.client_addr)
    }

    /// Our end of the TCP connection (`c->local_addr`).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        socket_addr(self.raw.local_addr)
    }

    /// The client's real connection for an HTTP/2 stream (`c->master`), else this one.
    pub fn primary(&self) -> Conn<'a> {
        Conn::new(self.raw.master).unwrap_or(*self)
    }

    /// An HTTP/2 stream's secondary connection.
    pub fn is_secondary(&self) -> bool {
        !self.raw.master.is_null()
    }

    /// The server the connection arrived on (`c->base_server`).
    pub fn base_server(&self) -> Option<Server<'a>> {
        Server::new(self.raw.base_server)
    }

    /// Copies the values of `vars` into this connection's pool once, for
    /// [`Request::set_conn_env`]; the names are static and kept as they are. The variables
    /// of `shared` come first, not copied: the connection's pool keeps each block alive.
    pub fn env<V>(
        &self,
        shared: &[&std::sync::Arc<EnvBlock>],
        vars: impl IntoIterator<Item = (&'static CStr, V)>,
        mut value: impl FnMut(&mut V) -> &str,
    ) -> ConnEnv {
        let mut out = Vec::with_capacity(16);
        for block in shared {
            pool_arc(self.raw.pool, std::sync::Arc::clone(block));
            out.extend(block.vars.iter().map(|(k, v)| (k.as_ptr(), v.as_ptr())));
        }
        let dup = |s: &str| {
            // memchr: the values include JA4_R and JA3, hundreds of bytes each.
            if memchr::memchr(0, s.as_bytes()).is_some() {
                let c = to_cstring(s);
                // SAFETY: the connection's pool is live for this call; apr_pstrdup copies `c`.
                return unsafe { sys::apr_pstrdup(self.raw.pool, c.as_ptr()) as *const c_char };
            }
            // SAFETY: the connection's pool is live for this call; apr_pstrmemdup copies the
            // `s.len()` bytes at `s` (no NUL among them, checked above) and adds the NUL.
            unsafe {
                sys::apr_pstrmemdup(self.raw.pool, s.as_ptr().cast::<c_char>(), s.len())
                    as *const c_char
            }
        };
        out.extend(
            vars.into_iter()
                .map(|(name, mut v)| (name.as_ptr(), dup(value(&mut v))))
                .filter(|(_, v)| !v.is_null()),
        );
        ConnEnv {
            conn: self.raw,
            vars: out,
        }
    }

    /// Our per-connection state, if `pre_connection` created it.
    pub fn state<T: Any>(&self) -> Option<&'a T> {
        get_config::<T>(self.raw.conn_config)
    }

    /// Our per-connection state, created on first use and dropped with the connection's pool.
    /// Only the threads serving this connection's requests see it.
    pub fn state_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&'a T> {
        get_or_init_config(self.raw.conn_config, self.raw.pool, init)
    }
}

/// Environment variables made once for a connection ([`Conn::env`]) and set on each of its
/// requests without copying: the strings live in that connection's pool, or in an
/// [`EnvBlock`] the pool keeps alive.
pub struct ConnEnv {
    conn: *const sys::conn_rec,
    vars: Vec<(*const c_char, *const c_char)>,
}

/// Environment variables rendered once as C strings, shared by every connection they
/// describe (`inline`: those of one ClientHello, or of one SYN shape, in the child's memo),
/// so a connection's [`ConnEnv`] points at them instead of copying them. Never changed once
/// made; [`Conn::env`] hands the connection's pool a reference, so a block lives at least as
/// long as every request table that holds its pointers, whatever becomes of the memo.
pub struct EnvBlock {
    vars: Vec<(&'static CStr, CString)>,
}

impl EnvBlock {
    /// The values of `vars`, each with its static name (a value with a NUL byte as
    /// [`Conn::env`] copies it).
    pub fn new<V>(
        vars: impl IntoIterator<Item = (&'static CStr, V)>,
        mut value: impl FnMut(&mut V) -> &str,
    ) -> Self {
        Self {
            vars: vars
                .into_iter()
                .map(|(name, mut v)| (name, to_cstring(value(&mut v))))
                .collect(),
        }
    }
}

// SAFETY: the values are NUL-terminated strings of a connection pool or of an `EnvBlock` that
// pool holds a reference to (`pool_arc`), never written after `Conn::env` made them, the names
// static strings of this module; they are only read, and only while that connection is alive
// (see `Request::set_conn_env`): its requests' pools are destroyed before its own cleanups run.
unsafe impl Send for ConnEnv {}
// SAFETY: as for Send: shared, read-only data.
unsafe impl Sync for ConnEnv {}

/// mod_ssl's `ssl_is_https` optional function, looked up once per configuration generation
/// (mod_ssl may be unloaded and reloaded on a graceful restart, so never cache it process-wide).
#[derive(Clone, Copy)]
pub struct TlsProbe {
    is_https: Option<unsafe extern "C" fn(*mut sys::conn_rec) -> c_int>,
}

impl TlsProbe {
    pub fn lookup() -> Self {
        // SAFETY: a registry lookup by name; null when mod_ssl is not loaded.
        let f = unsafe { sys::apr_dynamic_fn_retrieve(c"ssl_is_https".as_ptr()) };
        Self {
            // SAFETY: mod_ssl registers `ssl_is_https` as `int (*)(conn_rec *)`
            // (APR_DECLARE_OPTIONAL_FN in mod_ssl.h); apr_opt_fn_t is only its erased type.
            is_https: f.map(|f| unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(),
                    unsafe extern "C" fn(*mut sys::conn_rec) -> c_int,
                >(f)
            }),
        }
    }

    /// Whether the connection speaks TLS; `None` when mod_ssl is not loaded.
    pub fn is_tls(&self, conn: Conn<'_>) -> Option<bool> {
        let f = self.is_https?;
        // SAFETY: ssl_is_https only reads the connection's mod_ssl config; the conn_rec is live.
        Some(unsafe { f(conn.raw as *const sys::conn_rec as *mut sys::conn_rec) } != 0)
    }
}

/// mod_http2's `http2_var_lookup` optional function, looked up once per configuration
/// generation (like [`TlsProbe`]).
#[derive(Clone, Copy)]
pub struct H2Probe {
    #[allow(clippy::type_complexity)]
    lookup: Option<
        unsafe extern "C" fn(
            *mut sys::apr_pool_t,
            *mut sys::server_rec,
            *mut sys::conn_rec,
            *mut sys::request_rec,
            *mut c_char,
        ) -> *mut c_char,
    >,
}

impl H2Probe {
    pub fn lookup() -> Self {
        // SAFETY: a registry lookup by name; null when mod_http2 is not loaded.
        let f = unsafe { sys::apr_dynamic_fn_retrieve(c"http2_var_lookup".as_ptr()) };
        Self {
            // SAFETY: mod_http2 registers `http2_var_lookup` as `char *(*)(apr_pool_t *,
            // server_rec *, conn_rec *, request_rec *, char *)` (APR_DECLARE_OPTIONAL_FN in
            // mod_http2.h); apr_opt_fn_t is only its erased type.
            lookup: f.map(|f| unsafe {
                std::mem::transmute::<
                    unsafe extern "C" fn(),
                    unsafe extern "C" fn(
                        *mut sys::apr_pool_t,
                        *mut sys::server_rec,
                        *mut sys::conn_rec,
                        *mut sys::request_rec,
                        *mut c_char,
                    ) -> *mut c_char,
                >(f)
            }),
        }
    }

    /// The HTTP/2 stream id of a request on an HTTP/2 stream (`H2_STREAM_ID`).
    pub fn stream_id(&self, r: Request<'_>) -> Option<u32> {
        let f = self.lookup?;
        let conn = r.connection()?;
        if !conn.is_secondary() {
            return None;
        }
        let mut name = *b"H2_STREAM_ID\0";
        // SAFETY: mod_http2's lookup reads the connection's h2 context and returns a string of
        // `r->pool` (or null / ""); it does not keep or write `name`.
        let v = unsafe {
            f(
                r.raw.pool,
                r.raw.server,
                r.raw.connection,
                r.raw as *const _ as *mut _,
                name.as_mut_ptr().cast::<c_char>(),
            )
        };
        text(v)?.parse().ok()
    }
}

/// A `request_rec`.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    raw: &'a sys::request_rec,
}

impl<'a> Request<'a> {
    fn new(raw: *const sys::request_rec) -> Option<Self> {
        // SAFETY: httpd passes a valid request_rec to request hooks, alive for the call.
        unsafe { raw.as_ref() }.map(|raw| Self { raw })
    }

    pub fn server(&self) -> Option<Server<'a>> {
        Server::new(self.raw.server)
    }

    pub fn connection(&self) -> Option<Conn<'a>> {
        Conn::new(self.raw.connection)
    }

    /// A string expression's value for this request.
    pub fn eval_str(&self, expr: &Expr) -> Result<Cow<'a, str>, String> {
        let mut err: *const c_char = ptr::null();
        // SAFETY: a live request of this thread and a parse tree of the configuration pool;
        // the result is a string of the request's pool (or null with `err` set).
        let v = unsafe {
            sys::ap_expr_str_exec(self.raw as *const _ as *mut _, expr.raw.as_ptr(), &mut err)
        };
        match text(err) {
            Some(e) => Err(e.into_owned()),
            None => Ok(text(v).unwrap_or_default()),
        }
    }

    /// A condition's value for this request.
    pub fn eval_bool(&self, expr: &Expr) -> Result<bool, String> {
        let mut err: *const c_char = ptr::null();
        // SAFETY: as in `eval_str`.
        let v = unsafe {
            sys::ap_expr_exec(self.raw as *const _ as *mut _, expr.raw.as_ptr(), &mut err)
        };
        match text(err) {
            Some(e) => Err(e.into_owned()),
            None if v < 0 => Err("the condition could not be evaluated".to_owned()),
            None => Ok(v > 0),
        }
    }

    /// The request's log id (`r->log_id`, what `%L` prints and mod_unique_id's `UNIQUE_ID` reuses),
    /// generating it now by httpd's own hook when nobody did yet: with mod_unique_id loaded that
    /// is mod_unique_id's id, else httpd's.
    pub fn generate_log_id(&self) -> Option<Cow<'a, str>> {
        if self.raw.log_id.is_null() {
            let r = self.raw as *const sys::request_rec as *mut sys::request_rec;
            // SAFETY: what httpd's own `add_log_id` does for `%L`: the hook writes a string of
            // the request's pool into `r->log_id`. Only the thread serving the request touches
            // the field.
            unsafe {
                sys::ap_run_generate_log_id(self.raw.connection, r, &mut (*r).log_id);
            }
        }
        text(self.raw.log_id)
    }

    /// Sets `r->log_id` (when nobody set it yet), so the error log's `%L` and mod_unique_id
    /// use the same id as our line.
    pub fn set_log_id(&self, id: &str) {
        if !self.raw.log_id.is_null() || id.contains('\0') {
            return;
        }
        let r = self.raw as *const sys::request_rec as *mut sys::request_rec;
        // SAFETY: copies `id` (no NUL inside, checked) into the request's pool and stores it
        // in the request's own field, which only this thread touches.
        unsafe {
            (*r).log_id =
                sys::apr_pstrmemdup(self.raw.pool, id.as_ptr().cast::<c_char>(), id.len());
        }
    }

    /// `r->request_time`, Unix microseconds.
    pub fn request_time_us(&self) -> i64 {
        self.raw.request_time
    }

    /// False when httpd never read a request line (the method, path... are then meaningless).
    pub fn has_request_line(&self) -> bool {
        !self.raw.the_request.is_null()
    }

    pub fn method(&self) -> Option<Cow<'a, str>> {
        text(self.raw.method)
    }

    /// `r->hostname` (from the Host header or an absolute URI, validated), else the raw Host
    /// header.
    pub fn host(&self) -> Option<&'a [u8]> {
        bytes(self.raw.hostname).or_else(|| self.header(c"Host"))
    }

    /// The URL path as the client sent it (`r->parsed_uri.path`, still %-encoded).
    pub fn path(&self) -> Option<&'a [u8]> {
        bytes(self.raw.parsed_uri.path)
    }

    /// The query string (`r->args`), without its `?`.
    pub fn args(&self) -> Option<&'a [u8]> {
        bytes(self.raw.args)
    }

    pub fn protocol(&self) -> Option<Cow<'a, str>> {
        text(self.raw.protocol)
    }

    /// `r->status` of the last request of an internal-redirect chain (mod_log_config's `%>s`).
    pub fn final_status(&self) -> i32 {
        let mut last = self.raw;
        // SAFETY: `next` links requests of the same chain, all alive while the first is logged.
        while let Some(next) = unsafe { last.next.as_ref() } {
            last = next;
        }
        last.status
    }

    /// Our per-request state (`r->request_config`), created on first use, dropped with the
    /// request's pool. Only the thread serving the request sees it.
    pub fn state_or_init<T: Any + Send + Sync>(&self, init: impl FnOnce() -> T) -> Option<&'a T> {
        get_or_init_config(self.raw.request_config, self.raw.pool, init)
    }

    pub fn uri(&self) -> Option<Cow<'a, str>> {
        text(self.raw.uri)
    }

    /// True when `r->handler` is `name`: a byte comparison, asked of every request, so no UTF-8
    /// check and no copy.
    pub fn handler_is(&self, name: &CStr) -> bool {
        if self.raw.handler.is_null() {
            return false;
        }
        // SAFETY: as in `text`: a non-null handler name is NUL-terminated and lives in the
        // request's pool (or is a static string of a module) for the whole hook call.
        let handler = unsafe { CStr::from_ptr(self.raw.handler) };
        handler == name
    }

    pub fn header_only(&self) -> bool {
        self.raw.header_only != 0
    }

    /// `r->proto_num`: `major * 1000 + minor` (1001 for HTTP/1.1, 2000 for HTTP/2).
    // Only JA4H (cargo feature foxio) reads these.
    #[cfg_attr(not(feature = "foxio"), allow(dead_code))]
    pub fn proto_num(&self) -> u32 {
        u32::try_from(self.raw.proto_num).unwrap_or(0)
    }

    /// The method as the client sent it, as bytes.
    // Only JA4H (cargo feature foxio) reads these.
    #[cfg_attr(not(feature = "foxio"), allow(dead_code))]
    pub fn method_bytes(&self) -> Option<&'a [u8]> {
        bytes(self.raw.method)
    }

    /// Every request header as httpd holds it (`r->headers_in`, in the order read; an HTTP/2
    /// request's without its pseudo-headers), name and value as bytes.
    // Only JA4H (cargo feature foxio) reads these.
    #[cfg_attr(not(feature = "foxio"), allow(dead_code))]
    pub fn headers_in(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone + 'a {
        let entries: &'a [sys::apr_table_entry_t] = if self.raw.headers_in.is_null() {
            &[]
        } else {
            // SAFETY: `apr_table_elts` (apr_tables.h) is this cast: a table starts with its
            // array header, whose `elts` hold `nelts` entries. The table lives in the request's
            // pool and is not changed while this hook call reads it.
            unsafe {
                let array = &*(self.raw.headers_in as *const sys::apr_array_header_t);
                match usize::try_from(array.nelts) {
                    Ok(n) if n > 0 && !array.elts.is_null() => {
                        std::slice::from_raw_parts(array.elts as *const sys::apr_table_entry_t, n)
                    }
                    _ => &[],
                }
            }
        };
        entries
            .iter()
            .filter_map(|e| Some((bytes(e.key)?, bytes(e.val)?)))
    }

    /// Removes every header of this name from `r->headers_in`, so no later module sees it.
    pub fn remove_header(&self, name: &CStr) {
        if self.raw.headers_in.is_null() {
            return;
        }
        // SAFETY: a live table of the request, changed only by the thread serving it.
        unsafe { sys::apr_table_unset(self.raw.headers_in, name.as_ptr()) }
    }

    /// `r->useragent_ip` (mod_remoteip's view of the client).
    pub fn useragent_ip(&self) -> Option<Cow<'a, str>> {
        text(self.raw.useragent_ip)
    }

    /// A request header's value (name case-insensitive, as httpd's tables), as its bytes.
    pub fn header(&self, name: &CStr) -> Option<&'a [u8]> {
        if self.raw.headers_in.is_null() {
            return None;
        }
        // SAFETY: headers_in is a live table of the request; the value is a pool string.
        bytes(unsafe { sys::apr_table_get(self.raw.headers_in, name.as_ptr()) })
    }

    /// Sets every variable of `env` in `r->subprocess_env`. When `env` was made for this
    /// request's (primary) connection, by `apr_table_setn`, without copying: the request's
    /// pool, and an HTTP/2 stream's, descend from that connection's pool, which APR destroys
    /// only after all of its descendants, so the strings outlive the table. An `env` made for
    /// another connection (never, from the hooks), whose strings may be gone, is ignored.
    pub fn set_conn_env(&self, env: &ConnEnv) {
        let own =
            Conn::new(self.raw.connection).is_some_and(|c| std::ptr::eq(c.primary().raw, env.conn));
        if self.raw.subprocess_env.is_null() || !own {
            return;
        }
        // At post_read_request (REALLY_FIRST) the table is normally still empty: then nothing
        // can be replaced, and appending skips `setn`'s search for an existing key, which
        // compared the fingerprint's names with each other (JA4/JA4_R/JA3..., TLS_*, TCP_*)
        // and cost more than the rest of the hook.
        // SAFETY: a live table of the request.
        let empty = unsafe { sys::apr_is_empty_table(self.raw.subprocess_env) } != 0;
        let put = if empty {
            sys::apr_table_addn
        } else {
            sys::apr_table_setn
        };
        for (name, value) in &env.vars {
            // SAFETY: a live table of the request; `name`/`value` outlive it (see above).
            unsafe { put(self.raw.subprocess_env, *name, *value) };
        }
    }

    /// Whether `r->useragent_ip` is the TCP peer's address (`c->client_ip`): the same string
    /// unless a module such as mod_remoteip replaced it.
    pub fn useragent_is_peer(&self) -> bool {
        let Some(conn) = Conn::new(self.raw.connection) else {
            return false;
        };
        let (ua, peer) = (self.raw.useragent_ip, conn.raw.client_ip);
        if ua.is_null() || peer.is_null() {
            return ua == peer;
        }
        // SAFETY: both are NUL-terminated strings of the request's and connection's pools.
        ua == peer || unsafe { CStr::from_ptr(ua) == CStr::from_ptr(peer) }
    }

    /// `r->subprocess_env[name] = value`, the value copied into the request's pool.
    pub fn set_env_str(&self, name: &'static CStr, value: &str) {
        if self.raw.subprocess_env.is_null() || memchr::memchr(0, value.as_bytes()).is_some() {
            return;
        }
        // SAFETY: a live table of the request; the value is copied into the request's pool
        // (no NUL inside, checked), the name is static, so `setn` keeps both pointers safely.
        unsafe {
            let v =
                sys::apr_pstrmemdup(self.raw.pool, value.as_ptr().cast::<c_char>(), value.len());
            sys::apr_table_setn(self.raw.subprocess_env, name.as_ptr(), v);
        }
    }

    /// As [`Request::set_env_str`] for a variable the table cannot hold yet (the module's own
    /// `REQIN_*`, set once at `post_read_request`): appended, without `setn`'s search of
    /// every entry for the name.
    pub fn add_env_str(&self, name: &'static CStr, value: &str) {
        if self.raw.subprocess_env.is_null() || memchr::memchr(0, value.as_bytes()).is_some() {
            return;
        }
        // SAFETY: as in `set_env_str`; `addn` keeps both pointers the same way.
        unsafe {
            let v =
                sys::apr_pstrmemdup(self.raw.pool, value.as_ptr().cast::<c_char>(), value.len());
            sys::apr_table_addn(self.raw.subprocess_env, name.as_ptr(), v);
        }
    }

    /// `apr_table_set(r->subprocess_env, name, value)` for strings already in C form.
    pub fn set_env_c(&self, name: &CStr, value: &CStr) {
        if self.raw.subprocess_env.is_null() {
            return;
        }
        // SAFETY: subprocess_env is a live table of the request; apr_table_set copies both.
        unsafe { sys::apr_table_set(self.raw.subprocess_env, name.as_ptr(), value.as_ptr()) }
    }

    /// `r->bytes_sent` of the final request of the chain (mod_log_config's `%B`).
    pub fn bytes_sent(&self) -> u64 {
        let mut last = self.raw;
        // SAFETY: as in `final_status`.
        while let Some(next) = unsafe { last.next.as_ref() } {
            last = next;
        }
        u64::try_from(last.bytes_sent).unwrap_or(0)
    }

    pub fn set_content_type(&self, ct: &'static CStr) {
        // SAFETY: a static string; httpd keeps the pointer for the request's lifetime.
        unsafe { sys::ap_set_content_type(self.raw as *const _ as *mut _, ct.as_ptr()) }
    }

    /// `ap_rwrite`: the response body, through the output filters.
    pub fn write(&self, body: &[u8]) -> bool {
        let Ok(len) = c_int::try_from(body.len()) else {
            return false;
        };
        // SAFETY: the request is live and being handled by this thread.
        unsafe {
            sys::ap_rwrite(
                body.as_ptr() as *const c_void,
                len,
                self.raw as *const _ as *mut _,
            ) >= 0
        }
    }

    /// `ap_http_scheme(r)`: what the server is configured to be (`SSLEngine on` → "https").
    pub fn http_scheme(&self) -> Option<Cow<'a, str>> {
        // SAFETY: runs the http_scheme hook on a live request; returns a static or pool string.
        text(unsafe { sys::ap_run_http_scheme(self.raw) })
    }
}

/// The write end of a piped log (`ReqinLogFile "|program"`), opened in the parent at
/// `post_config` and inherited by every child. Writes are one `write(2)` each (the file is
/// unbuffered), which is what lets many threads and processes write to it without interleaving
/// lines (at most `PIPE_BUF` bytes per write).
pub struct AprFile {
    raw: NonNull<sys::apr_file_t>,
}

// SAFETY: an unbuffered apr_file_t has no user-space state that writes mutate; concurrent
// apr_file_write_full calls are concurrent write(2)s on one O_APPEND descriptor, exactly as
// mod_log_config does from every worker thread. The file lives until the configuration pool is
// cleared, after which no request (and no reader of this handle) runs.
unsafe impl Send for AprFile {}
// SAFETY: see Send.
unsafe impl Sync for AprFile {}

/// Whether the restart that started this configuration generation was not a graceful one
/// (`SIGHUP`, `apachectl restart`: every child killed), as the Unix MPMs record it in their
/// retained data: `was_graceful` is set from the restart signal when the old configuration
/// pool is cleared, before the new configuration is read.
fn last_restart_was_hard() -> bool {
    // SAFETY: returns the Unix MPMs' retained data, created on first use and kept for the life
    // of the process (null handled); the flag is a plain int.
    unsafe { sys::ap_unixd_mpm_get_retained_data().as_ref() }.is_none_or(|d| d.was_graceful == 0)
}

/// An APR error with its message.
#[derive(Debug, Clone)]
pub struct AprError {
    pub status: apr_status_t,
    pub message: String,
}

impl std::fmt::Display for AprError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (APR status {})", self.message, self.status)
    }
}

fn apr_error(status: apr_status_t) -> AprError {
    let mut buf = [0 as c_char; 256];
    // SAFETY: apr_strerror writes a NUL-terminated message of at most `len` bytes into `buf`.
    let message = unsafe {
        sys::apr_strerror(status, buf.as_mut_ptr(), buf.len());
        CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned()
    };
    AprError { status, message }
}

impl AprFile {
    /// `ap_open_piped_log`: httpd starts `program` (through the shell, as `CustomLog "|..."`)
    /// and restarts it if it dies; we write to its stdin.
    pub fn open_pipe(pool: Pool<'_>, program: &str) -> Result<Self, AprError> {
        let c = to_cstring(program);
        // SAFETY: `pool` is live (pconf); the piped log and its write end belong to it.
        let file = unsafe {
            let pl = sys::ap_open_piped_log(pool.raw.as_ptr(), c.as_ptr());
            if pl.is_null() {
                ptr::null_mut()
            } else {
                sys::ap_piped_log_write_fd(pl)
            }
        };
        NonNull::new(file)
            .map(|raw| Self { raw })
            .ok_or_else(|| AprError {
                status: 0,
                message: format!("could not start piped log program {program:?}"),
            })
    }

    /// As [`AprFile::open_pipe`] in the process pool ([`Server::parent_lifetime_pool`]): later
    /// configuration generations find the running program in the pool's userdata and write to
    /// the same pipe, so a graceful restart neither kills the program nor loses what old
    /// children still write. httpd restarts the program if it dies (reliable piped logs), on
    /// the same pipe, and stops it with the parent; after a hard restart, which kills it, a new
    /// one is started. A command no longer configured keeps its (idle) program until the
    /// parent exits.
    pub fn open_lasting_pipe(process_pool: Pool<'_>, program: &str) -> Result<Self, AprError> {
        let key = to_cstring(&format!("mod_reqin_log/piped-log/{program}"));
        let pool = process_pool.raw.as_ptr();
        let mut data: *mut c_void = ptr::null_mut();
        // SAFETY: `pool` is the live process pool; the call reads its userdata table and
        // writes one pointer into `data`.
        let status = unsafe { sys::apr_pool_userdata_get(&mut data, key.as_ptr(), pool) };
        let mut pl = if status == APR_SUCCESS {
            data as *mut sys::piped_log
        } else {
            ptr::null_mut()
        };
        if !pl.is_null() && last_restart_was_hard() {
            // A hard restart signals the whole process group (the program dies of its SIGHUP
            // like the children) and httpd, reaping it while it stops, does not start it
            // again: retire the old pipe and start a new program.
            // SAFETY: `pl` is the piped log stored under our key, allocated in the process
            // pool. The parent closes its own copies of the pipe, which nothing of this
            // generation uses (a program that survived gets end-of-file); closing them again
            // in the pool's cleanup at exit is a harmless EBADF. No unregistering: httpd did it
            // when it reaped the program, and APR crashes on a second one.
            unsafe {
                sys::apr_file_close(sys::ap_piped_log_write_fd(pl));
                sys::apr_file_close(sys::ap_piped_log_read_fd(pl));
            }
            pl = ptr::null_mut();
        }
        if pl.is_null() {
            // SAFETY: `pool` is live and lives as long as the process; the piped log, its pipe
            // and its restart registration belong to it.
            pl = unsafe { sys::ap_open_piped_log(pool, to_cstring(program).as_ptr()) };
            if !pl.is_null() {
                // SAFETY: APR copies the key; the value is the piped log allocated in the same
                // pool, so it lives as long as the entry. The cleanup is APR's no-op (not a
                // function of this DSO, which httpd may unload before the pool goes).
                unsafe {
                    sys::apr_pool_userdata_set(
                        pl as *const c_void,
                        key.as_ptr(),
                        Some(sys::apr_pool_cleanup_null),
                        pool,
                    );
                }
            }
        }
        let file = if pl.is_null() {
            ptr::null_mut()
        } else {
            // SAFETY: `pl` is a live piped log of the process pool (just opened, or stored
            // under our key by an earlier generation of this process).
            unsafe { sys::ap_piped_log_write_fd(pl) }
        };
        NonNull::new(file)
            .map(|raw| Self { raw })
            .ok_or_else(|| AprError {
                status: 0,
                message: format!("could not start piped log program {program:?}"),
            })
    }

    /// Writes all of `bytes` (one `write(2)` unless the kernel takes less).
    pub fn write_all(&self, bytes: &[u8]) -> Result<(), AprError> {
        let mut written = 0usize;
        // SAFETY: the file is open (see the Send impl); APR reads `bytes.len()` bytes of `bytes`.
        let status = unsafe {
            sys::apr_file_write_full(
                self.raw.as_ptr(),
                bytes.as_ptr() as *const c_void,
                bytes.len(),
                &mut written,
            )
        };
        if status == APR_SUCCESS {
            Ok(())
        } else {
            Err(apr_error(status))
        }
    }
}
