//! The `extern "C"` functions httpd calls, written once for any module that implements
//! [`Module`]: each turns httpd's pointers into the safe wrappers of [`super`], calls the
//! module's function, and catches any panic (a bug may lose a log line, never kill an httpd
//! child: an unwinding panic across `extern "C"` aborts the process).
//!
//! The module itself (its `module` struct, directive table and hook registration, in
//! `src/module.rs`) names these functions for its own type, so this layer knows nothing of
//! the module's state or hooks, and the module needs no `unsafe` to be called by httpd.

use std::any::Any;
use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::openssl::TlsConn;
use super::socket::ClientSocket;
use super::{log_error, pool_str, pool_tagged, sys, text, Cmd, Conn, Level, Pool, Request, Server};

pub use super::{DECLINED, OK};

/// What a module written over this layer provides. httpd calls the functions of
/// [`module_rec`] and [`DirectiveTable`], which call these.
pub trait Module: 'static {
    /// Per-server state (the main server's and each virtual host's), owned by the
    /// configuration pool.
    type ServerConfig: Any + Send + Sync + Default;

    /// A virtual host's configuration: what it sets over the main server's.
    fn merge_server_config(
        base: &Self::ServerConfig,
        add: &Self::ServerConfig,
    ) -> Self::ServerConfig;
    /// One directive with its arguments (1 for TAKE1/ITERATE/FLAG — `On`/`Off` —, 2 for TAKE2,
    /// 2 or 3 for TAKE23). `Err` is the message httpd prints after `Syntax error on line N`.
    fn directive(cmd: Cmd<'_>, state: &mut Self::ServerConfig, args: &[&str])
        -> Result<(), String>;
    fn register_hooks();
    fn post_config(pconf: Pool<'_>, ptemp: Pool<'_>, main: Server<'_>) -> c_int;
    fn child_init(pchild: Pool<'_>, main: Server<'_>);
    /// `socket`: the client socket the MPM accepted (none for an HTTP/2 stream).
    fn pre_connection(conn: Conn<'_>, socket: Option<ClientSocket>) -> c_int;
    /// mod_ssl's optional hook `pre_handshake`: a TLS connection's `SSL *` exists, its
    /// handshake has not started. `is_proxy`: a backend connection of mod_proxy.
    fn pre_handshake(conn: Conn<'_>, tls: TlsConn<'_>, is_proxy: bool);
    fn post_read_request(r: Request<'_>) -> c_int;
    fn log_transaction(r: Request<'_>) -> c_int;
    fn handler(r: Request<'_>) -> c_int;
    /// A panic was caught in a hook of `server` (for the module's counters).
    fn panicked(server: Option<Server<'_>>);
    /// The module's own `module` struct (the `#[no_mangle]` static httpd loaded).
    fn module_rec() -> *const sys::module;
}

/// The loaded module's struct, for its index in httpd's config vectors. Set by
/// `register_hooks`, which httpd calls when it loads (or, after a graceful restart, reloads)
/// the DSO, after assigning the index and before any directive of ours is read.
static LOADED: AtomicPtr<sys::module> = AtomicPtr::new(ptr::null_mut());

/// Our index in every config vector (-1 before the module is loaded).
pub(super) fn module_index() -> c_int {
    let m = LOADED.load(Ordering::Acquire);
    // SAFETY: null or the address of the module's own static `module` struct, which lives as
    // long as this DSO. httpd writes `module_index` once while loading it (single-threaded,
    // before any hook or directive runs); afterwards it is only read.
    unsafe { m.as_ref() }.map_or(-1, |m| m.module_index)
}

/// The `module` struct of `M` (`STANDARD20_MODULE_STUFF` and the server-config functions).
/// `name` is what `LogLevel <short name>:debug` derives the module's short name from.
pub const fn module_rec<M: Module>(
    name: &'static CStr,
    cmds: *const sys::command_rec,
) -> sys::module {
    sys::module {
        version: sys::MODULE_MAGIC_NUMBER_MAJOR as c_int,
        minor_version: sys::MODULE_MAGIC_NUMBER_MINOR as c_int,
        module_index: -1,
        name: name.as_ptr(),
        dynamic_load_handle: ptr::null_mut(),
        next: ptr::null_mut(),
        magic: sys::MODULE_MAGIC_COOKIE as c_ulong,
        rewrite_args: None,
        create_dir_config: None,
        merge_dir_config: None,
        create_server_config: Some(create_server_config::<M>),
        merge_server_config: Some(merge_server_config::<M>),
        cmds,
        register_hooks: Some(register_hooks::<M>),
        flags: 0,
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f`, turning a panic into an error-log line, a count and `fallback`.
fn guard<M: Module, T>(
    hook: &str,
    server: Option<Server<'_>>,
    fallback: T,
    f: impl FnOnce() -> T,
) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = format!(
                "panic in {hook}: {}; request continues without it",
                panic_message(&*payload)
            );
            let _ = catch_unwind(AssertUnwindSafe(|| match server {
                Some(s) => s.log_error(Level::Crit, 0, &msg),
                None => log_error(ptr::null(), Level::Crit, 0, &msg),
            }));
            let _ = catch_unwind(AssertUnwindSafe(|| M::panicked(server)));
            fallback
        }
    }
}

extern "C" fn register_hooks<M: Module>(_p: *mut sys::apr_pool_t) {
    LOADED.store(M::module_rec() as *mut sys::module, Ordering::Release);
    guard::<M, _>("register_hooks", None, (), M::register_hooks)
}

extern "C" fn create_server_config<M: Module>(
    p: *mut sys::apr_pool_t,
    _s: *mut sys::server_rec,
) -> *mut c_void {
    guard::<M, _>("create_server_config", None, ptr::null_mut(), || {
        pool_tagged(p, M::ServerConfig::default()) as *mut c_void
    })
}

extern "C" fn merge_server_config<M: Module>(
    p: *mut sys::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guard::<M, _>("merge_server_config", None, add, || {
        let (base, add) = (
            super::tagged_ref::<M::ServerConfig>(base),
            super::tagged_ref::<M::ServerConfig>(add),
        );
        let merged = match (base, add) {
            (Some(b), Some(a)) => M::merge_server_config(b, a),
            (Some(only), None) | (None, Some(only)) => {
                M::merge_server_config(only, &M::ServerConfig::default())
            }
            (None, None) => M::ServerConfig::default(),
        };
        pool_tagged(p, merged) as *mut c_void
    })
}

extern "C" fn post_config<M: Module>(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    ptemp: *mut sys::apr_pool_t,
    s: *mut sys::server_rec,
) -> c_int {
    let server = Server::new(s);
    guard::<M, _>("post_config", server, OK, || {
        match (Pool::new(pconf), Pool::new(ptemp), server) {
            (Some(pool), Some(temp), Some(server)) => M::post_config(pool, temp, server),
            _ => OK,
        }
    })
}

extern "C" fn child_init<M: Module>(pchild: *mut sys::apr_pool_t, s: *mut sys::server_rec) {
    let server = Server::new(s);
    guard::<M, _>("child_init", server, (), || {
        if let (Some(server), Some(pool)) = (server, Pool::new(pchild)) {
            M::child_init(pool, server);
        }
    })
}

extern "C" fn pre_connection<M: Module>(c: *mut sys::conn_rec, csd: *mut c_void) -> c_int {
    let conn = Conn::new(c);
    guard::<M, _>(
        "pre_connection",
        conn.and_then(|c| c.base_server()),
        OK,
        || {
            conn.map_or(OK, |conn| {
                M::pre_connection(conn, ClientSocket::from_csd(csd, &conn))
            })
        },
    )
}

/// `int (*)(conn_rec *c, SSL *ssl, int is_proxy)`, mod_ssl_openssl.h's `pre_handshake`.
extern "C" fn pre_handshake<M: Module>(
    c: *mut sys::conn_rec,
    ssl: *mut c_void,
    is_proxy: c_int,
) -> c_int {
    let conn = Conn::new(c);
    guard::<M, _>(
        "pre_handshake",
        conn.and_then(|c| c.base_server()),
        DECLINED,
        || {
            if let (Some(conn), Some(tls)) = (conn, TlsConn::new(ssl)) {
                M::pre_handshake(conn, tls, is_proxy != 0);
            }
            DECLINED
        },
    )
}

extern "C" fn handler<M: Module>(r: *mut sys::request_rec) -> c_int {
    let request = Request::new(r);
    guard::<M, _>(
        "handler",
        request.and_then(|r| r.server()),
        DECLINED,
        || request.map_or(DECLINED, M::handler),
    )
}

extern "C" fn post_read_request<M: Module>(r: *mut sys::request_rec) -> c_int {
    let request = Request::new(r);
    guard::<M, _>(
        "post_read_request",
        request.and_then(|r| r.server()),
        DECLINED,
        || request.map_or(DECLINED, M::post_read_request),
    )
}

extern "C" fn log_transaction<M: Module>(r: *mut sys::request_rec) -> c_int {
    let request = Request::new(r);
    guard::<M, _>(
        "log_transaction",
        request.and_then(|r| r.server()),
        DECLINED,
        || request.map_or(DECLINED, M::log_transaction),
    )
}

/// Where in the hook order a function runs.
#[derive(Debug, Clone, Copy)]
pub enum Order {
    ReallyFirst,
    Middle,
}

impl Order {
    fn apr(self) -> c_int {
        match self {
            Order::ReallyFirst => sys::APR_HOOK_REALLY_FIRST as c_int,
            Order::Middle => sys::APR_HOOK_MIDDLE as c_int,
        }
    }
}

/// The hooks of `M` httpd should run, and where in the order. Called from
/// [`Module::register_hooks`].
pub struct Hooks<M>(std::marker::PhantomData<M>);

impl<M: Module> Hooks<M> {
    pub fn post_config(order: Order) {
        // SAFETY: called from register_hooks (single-threaded, while httpd loads the module);
        // the function has the hook's exact signature.
        unsafe {
            sys::ap_hook_post_config(
                Some(post_config::<M>),
                ptr::null(),
                ptr::null(),
                order.apr(),
            )
        }
    }

    pub fn child_init(order: Order) {
        // SAFETY: as in `post_config`.
        unsafe {
            sys::ap_hook_child_init(Some(child_init::<M>), ptr::null(), ptr::null(), order.apr())
        }
    }

    pub fn pre_connection(order: Order) {
        // SAFETY: as in `post_config`.
        unsafe {
            sys::ap_hook_pre_connection(
                Some(pre_connection::<M>),
                ptr::null(),
                ptr::null(),
                order.apr(),
            )
        }
    }

    pub fn post_read_request(order: Order) {
        // SAFETY: as in `post_config`.
        unsafe {
            sys::ap_hook_post_read_request(
                Some(post_read_request::<M>),
                ptr::null(),
                ptr::null(),
                order.apr(),
            )
        }
    }

    pub fn log_transaction(order: Order) {
        // SAFETY: as in `post_config`.
        unsafe {
            sys::ap_hook_log_transaction(
                Some(log_transaction::<M>),
                ptr::null(),
                ptr::null(),
                order.apr(),
            )
        }
    }

    pub fn handler(order: Order) {
        // SAFETY: as in `post_config`.
        unsafe { sys::ap_hook_handler(Some(handler::<M>), ptr::null(), ptr::null(), order.apr()) }
    }

    /// mod_ssl's optional hook `pre_handshake`, registered by name as mod_ssl_openssl.h's
    /// `APR_OPTIONAL_HOOK(ssl, pre_handshake, ...)` does. Nothing happens without mod_ssl (or
    /// with a mod_ssl older than 2.4.33, which has no such hook).
    pub fn pre_handshake(order: Order) {
        let f: extern "C" fn(*mut sys::conn_rec, *mut c_void, c_int) -> c_int = pre_handshake::<M>;
        // SAFETY: called from register_hooks, as mod_ssl's own optional hooks are registered;
        // APR stores the pointer as `void (*)(void)` and mod_ssl calls it back with the
        // hook's exact signature, which `f` has.
        unsafe {
            sys::apr_optional_hook_add(
                c"pre_handshake".as_ptr(),
                Some(std::mem::transmute::<
                    extern "C" fn(*mut sys::conn_rec, *mut c_void, c_int) -> c_int,
                    unsafe extern "C" fn(),
                >(f)),
                ptr::null(),
                ptr::null(),
                order.apr(),
            )
        }
    }
}

/// How a directive takes its arguments (httpd's `cmd_how`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// One argument.
    Take1,
    /// Each argument separately (repeatable lists).
    Iterate,
    /// `On` or `Off`, passed to [`Module::directive`] as the text `On`/`Off`.
    Flag,
    /// Two arguments.
    Take2,
    /// Two or three arguments.
    Take23,
}

/// One entry of a directive table: name, arguments and the usage text `apachectl` prints.
#[derive(Debug, Clone, Copy)]
pub struct Directive {
    pub name: &'static CStr,
    pub args: Args,
    pub usage: &'static CStr,
}

/// A NULL-terminated `command_rec` table of `N - 1` directives, all handled by
/// [`Module::directive`], valid in the server config and in `<VirtualHost>` (RSRC_CONF).
#[repr(transparent)]
pub struct DirectiveTable<const N: usize>([sys::command_rec; N]);

// SAFETY: the table is built once at compile time and only read (by httpd, and by `first`):
// its pointers are to static strings and functions.
unsafe impl<const N: usize> Sync for DirectiveTable<N> {}

impl<const N: usize> DirectiveTable<N> {
    /// `directives` must have exactly `N - 1` entries (checked at compile time).
    pub const fn new<M: Module>(directives: &[Directive]) -> Self {
        assert!(
            directives.len() + 1 == N,
            "DirectiveTable::<N> holds N - 1 directives"
        );
        let end = sys::command_rec {
            name: ptr::null(),
            func: sys::cmd_func { take1: None },
            cmd_data: ptr::null_mut(),
            req_override: 0,
            args_how: sys::RAW_ARGS,
            errmsg: ptr::null(),
        };
        let mut table = [end; N];
        let mut i = 0;
        while i < directives.len() {
            let d = directives[i];
            let (func, how) = match d.args {
                Args::Take1 => (
                    sys::cmd_func {
                        take1: Some(take1::<M>),
                    },
                    sys::TAKE1,
                ),
                Args::Iterate => (
                    sys::cmd_func {
                        take1: Some(take1::<M>),
                    },
                    sys::ITERATE,
                ),
                Args::Flag => (
                    sys::cmd_func {
                        flag: Some(flag::<M>),
                    },
                    sys::FLAG,
                ),
                Args::Take2 => (
                    sys::cmd_func {
                        take2: Some(take2::<M>),
                    },
                    sys::TAKE2,
                ),
                Args::Take23 => (
                    sys::cmd_func {
                        take3: Some(take3::<M>),
                    },
                    sys::TAKE23,
                ),
            };
            table[i] = sys::command_rec {
                name: d.name.as_ptr(),
                func,
                cmd_data: ptr::null_mut(),
                req_override: sys::RSRC_CONF as c_int,
                args_how: how,
                errmsg: d.usage.as_ptr(),
            };
            i += 1;
        }
        Self(table)
    }

    /// The table as httpd's `module.cmds` wants it.
    pub const fn first(&self) -> *const sys::command_rec {
        self.0.as_ptr()
    }
}

fn directive<M: Module>(cmd: *mut sys::cmd_parms, args: &[*const c_char]) -> *const c_char {
    // SAFETY: httpd passes the live cmd_parms of the directive being parsed.
    let Some(raw) = (unsafe { cmd.as_ref() }) else {
        return ptr::null();
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let cmd = Cmd { raw };
        let name = cmd.directive();
        let texts: Vec<String> = args
            .iter()
            .filter(|a| !a.is_null())
            .map(|a| text(*a).unwrap_or_default().into_owned())
            .collect();
        let args: Vec<&str> = texts.iter().map(String::as_str).collect();
        let state = cmd
            .server_state_mut::<M::ServerConfig>()
            .ok_or_else(|| format!("{name}: the module has no configuration for this server"))?;
        M::directive(cmd, state, &args).map_err(|e| format!("{name}: {e}"))
    }));
    match result {
        Ok(Ok(())) => ptr::null(),
        Ok(Err(msg)) => pool_str(raw.pool, &msg),
        Err(payload) => pool_str(
            raw.pool,
            &format!("internal error (panic: {})", panic_message(&*payload)),
        ),
    }
}

unsafe extern "C" fn take1<M: Module>(
    cmd: *mut sys::cmd_parms,
    _mconfig: *mut c_void,
    arg: *const c_char,
) -> *const c_char {
    directive::<M>(cmd, &[arg])
}

unsafe extern "C" fn take2<M: Module>(
    cmd: *mut sys::cmd_parms,
    _mconfig: *mut c_void,
    a1: *const c_char,
    a2: *const c_char,
) -> *const c_char {
    directive::<M>(cmd, &[a1, a2])
}

unsafe extern "C" fn take3<M: Module>(
    cmd: *mut sys::cmd_parms,
    _mconfig: *mut c_void,
    a1: *const c_char,
    a2: *const c_char,
    a3: *const c_char,
) -> *const c_char {
    directive::<M>(cmd, &[a1, a2, a3])
}

unsafe extern "C" fn flag<M: Module>(
    cmd: *mut sys::cmd_parms,
    _mconfig: *mut c_void,
    on: c_int,
) -> *const c_char {
    let arg = if on != 0 { c"On" } else { c"Off" };
    directive::<M>(cmd, &[arg.as_ptr()])
}
