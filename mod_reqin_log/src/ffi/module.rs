//! The `module` struct httpd loads (`LoadModule reqin_log_module ...`) and every `extern "C"`
//! function httpd calls. Each one turns httpd's pointers into the safe wrappers of [`super`],
//! calls the matching function of [`crate::hooks`], and catches any panic: a bug may lose a log
//! line, never kill an httpd child (an unwinding panic across `extern "C"` aborts the process).
//!
//! Why the struct is here and not in `c/shim.c`: a Rust cdylib is linked with a version script
//! that exports only what Rust defines, so a C-defined `reqin_log_module` would be a local symbol
//! invisible to httpd's dlsym(). The directive table, which needs httpd's `AP_INIT_TAKE1`
//! designated initialisers, stays in C and is only referenced from here.

use std::any::Any;
use std::ffi::{c_char, c_int, c_ulong, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use super::{
    log_error, pool_box, pool_str, sys, text, Cmd, Conn, Level, Pool, Request, Server, DECLINED, OK,
};
use crate::hooks::{self, ServerState};

extern "C" {
    /// `AP_INIT_TAKE1` entries, NULL-terminated (c/shim.c).
    static reqin_log_cmds: sys::command_rec;
}

/// The symbol `LoadModule reqin_log_module` looks up. httpd writes `module_index`, `next` and
/// `dynamic_load_handle` while loading it (hence `static mut`); we only read `module_index`.
#[no_mangle]
pub static mut reqin_log_module: sys::module = sys::module {
    // STANDARD20_MODULE_STUFF
    version: sys::MODULE_MAGIC_NUMBER_MAJOR as c_int,
    minor_version: sys::MODULE_MAGIC_NUMBER_MINOR as c_int,
    module_index: -1,
    // httpd derives the short name used by `LogLevel reqin_log:debug` from this.
    name: c"mod_reqin_log.c".as_ptr(),
    dynamic_load_handle: ptr::null_mut(),
    next: ptr::null_mut(),
    magic: sys::MODULE_MAGIC_COOKIE as c_ulong,
    rewrite_args: None,
    create_dir_config: None,
    merge_dir_config: None,
    create_server_config: Some(create_server_config),
    merge_server_config: Some(merge_server_config),
    cmds: &raw const reqin_log_cmds,
    register_hooks: Some(register_hooks),
    flags: 0,
};

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

/// Runs `f`, turning a panic into an error-log line and `fallback`.
fn guard<T>(hook: &str, server: Option<Server<'_>>, fallback: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(payload) => {
            let msg = format!(
                "panic in {hook}: {}; request continues without it",
                panic_message(&*payload)
            );
            let _ = catch_unwind(AssertUnwindSafe(|| match server {
                Some(s) => s.log(Level::Crit, 0, &msg),
                None => log_error(ptr::null(), Level::Crit, 0, &msg),
            }));
            let _ = catch_unwind(AssertUnwindSafe(|| {
                if let Some(s) = server {
                    hooks::count_panic(s);
                }
            }));
            fallback
        }
    }
}

extern "C" fn register_hooks(_p: *mut sys::apr_pool_t) {
    guard("register_hooks", None, (), || {
        let none = ptr::null();
        let middle = sys::APR_HOOK_MIDDLE as c_int;
        // SAFETY: httpd calls register_hooks while loading the module, single-threaded; each
        // function registered has the exact signature of its hook.
        unsafe {
            sys::ap_hook_post_config(Some(post_config), none, none, middle);
            sys::ap_hook_child_init(Some(child_init), none, none, middle);
            // REALLY_FIRST: the accept time, as close to the accept as a module can see it.
            sys::ap_hook_pre_connection(
                Some(pre_connection),
                none,
                none,
                sys::APR_HOOK_REALLY_FIRST,
            );
            sys::ap_hook_handler(Some(handler), none, none, middle);
            // REALLY_FIRST: before mod_setenvif/mod_rewrite, which will read what we export.
            sys::ap_hook_post_read_request(
                Some(post_read_request),
                none,
                none,
                sys::APR_HOOK_REALLY_FIRST,
            );
            sys::ap_hook_log_transaction(Some(log_transaction), none, none, middle);
        }
    })
}

extern "C" fn create_server_config(
    p: *mut sys::apr_pool_t,
    _s: *mut sys::server_rec,
) -> *mut c_void {
    guard("create_server_config", None, ptr::null_mut(), || {
        pool_box(p, ServerState::default()) as *mut c_void
    })
}

extern "C" fn merge_server_config(
    p: *mut sys::apr_pool_t,
    base: *mut c_void,
    add: *mut c_void,
) -> *mut c_void {
    guard("merge_server_config", None, add, || {
        // SAFETY: both are null or pointers returned by create_server_config/merge_server_config
        // (Box<ServerState> owned by the configuration pool, alive during the merge).
        let (base, add) = unsafe {
            (
                (base as *const ServerState).as_ref(),
                (add as *const ServerState).as_ref(),
            )
        };
        let merged = match (base, add) {
            (Some(b), Some(a)) => ServerState::merged(b, a),
            (Some(only), None) | (None, Some(only)) => {
                ServerState::merged(only, &ServerState::default())
            }
            (None, None) => ServerState::default(),
        };
        pool_box(p, merged) as *mut c_void
    })
}

extern "C" fn post_config(
    pconf: *mut sys::apr_pool_t,
    _plog: *mut sys::apr_pool_t,
    _ptemp: *mut sys::apr_pool_t,
    s: *mut sys::server_rec,
) -> c_int {
    let server = Server::new(s);
    guard("post_config", server, OK, || {
        match (Pool::new(pconf), server) {
            (Some(pool), Some(server)) => hooks::post_config(pool, server),
            _ => OK,
        }
    })
}

extern "C" fn child_init(pchild: *mut sys::apr_pool_t, s: *mut sys::server_rec) {
    let server = Server::new(s);
    guard("child_init", server, (), || {
        if let (Some(server), Some(pool)) = (server, Pool::new(pchild)) {
            hooks::child_init(pool, server);
        }
    })
}

extern "C" fn pre_connection(c: *mut sys::conn_rec, _csd: *mut c_void) -> c_int {
    let conn = Conn::new(c);
    guard(
        "pre_connection",
        conn.and_then(|c| c.base_server()),
        OK,
        || {
            if let Some(conn) = conn {
                hooks::pre_connection(conn);
            }
            OK
        },
    )
}

extern "C" fn handler(r: *mut sys::request_rec) -> c_int {
    let request = Request::new(r);
    guard(
        "handler",
        request.and_then(|r| r.server()),
        DECLINED,
        || request.map_or(DECLINED, hooks::handler),
    )
}

extern "C" fn post_read_request(r: *mut sys::request_rec) -> c_int {
    let request = Request::new(r);
    guard(
        "post_read_request",
        request.and_then(|r| r.server()),
        DECLINED,
        || request.map_or(DECLINED, hooks::post_read_request),
    )
}

extern "C" fn log_transaction(r: *mut sys::request_rec) -> c_int {
    let request = Request::new(r);
    guard(
        "log_transaction",
        request.and_then(|r| r.server()),
        DECLINED,
        || request.map_or(DECLINED, hooks::log_transaction),
    )
}

/// Every directive of c/shim.c: applies it to the server's settings (config.rs); returns NULL,
/// or the error httpd prints (allocated from cmd->pool) prefixed with the directive's name.
#[no_mangle]
pub extern "C" fn reqin_log_cmd(
    cmd: *mut sys::cmd_parms,
    _mconfig: *mut c_void,
    arg: *const c_char,
) -> *const c_char {
    // SAFETY: httpd passes the live cmd_parms of the directive being parsed.
    let Some(raw) = (unsafe { cmd.as_ref() }) else {
        return ptr::null();
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let cmd = Cmd { raw };
        let name = cmd.directive();
        let arg = text(arg).unwrap_or_default();
        let state = cmd
            .server_state_mut()
            .ok_or_else(|| format!("{name}: mod_reqin_log has no configuration for this server"))?;
        state
            .settings
            .apply(&name, &arg, |rel| cmd.server_root_relative(rel))
            .map_err(|e| format!("{name}: {e}"))
    }));
    match result {
        Ok(Ok(())) => ptr::null(),
        Ok(Err(msg)) => pool_str(raw.pool, &msg),
        Err(payload) => pool_str(
            raw.pool,
            &format!(
                "mod_reqin_log: internal error (panic: {})",
                panic_message(&*payload)
            ),
        ),
    }
}
