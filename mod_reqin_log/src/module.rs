//! What httpd loads (`LoadModule reqin_log_module ...`): the `module` struct, the directive
//! table and the hook registration, kept together with the state they serve, as httpd's
//! `mod_log_config.c` keeps its own. The `extern "C"` side lives one layer below
//! (`ffi::entry`, generic over [`Module`]); this file only says which function of
//! [`crate::hooks`] and [`crate::config`] answers each call.
//!
//! Why the struct is a Rust static: a Rust cdylib is linked with a version script that exports
//! only what Rust defines, so a C-defined `reqin_log_module` would be invisible to httpd's
//! dlsym().

use std::ffi::c_int;

use crate::config::DIRECTIVES;
use crate::ffi::entry::{self, Args, Directive, DirectiveTable, Hooks, Module, Order};
use crate::ffi::openssl::TlsConn;
use crate::ffi::socket::ClientSocket;
use crate::ffi::{sys, Cmd, Conn, Pool, Request, Server};
use crate::hooks::{self, ServerState, Tag, TagValue};

/// mod_reqin_log, as [`entry`] sees it.
pub struct ReqinLog;

/// The symbol `LoadModule reqin_log_module` looks up. httpd writes `module_index`, `next` and
/// `dynamic_load_handle` while loading it (hence `static mut`); Rust code only takes its
/// address (`module_rec`).
// SAFETY: `no_mangle` counts as unsafe code because a second symbol of this name in the process
// would be undefined behaviour; this name is the module's, as httpd modules name themselves
// (`<name>_module`), and no other module of httpd's uses it. The file has no unsafe block.
#[allow(unsafe_code)]
#[no_mangle]
pub static mut reqin_log_module: sys::module =
    // httpd derives the short name used by `LogLevel reqin_log:debug` from "mod_reqin_log.c".
    entry::module_rec::<ReqinLog>(c"mod_reqin_log.c", COMMANDS.first());

/// Every directive, each with the usage line `apachectl -t` prints next to a mistake.
/// [`DIRECTIVES`] (config.rs) lists the same names; a unit test keeps the two in step.
static COMMANDS: DirectiveTable<{ DIRECTIVES.len() + 1 }> = DirectiveTable::new::<ReqinLog>(&[
    // The original C module's directives, same meaning and defaults.
    Directive {
        name: c"JsonSockLogEnabled",
        args: Args::Flag,
        usage: c"On|Off: send lines to JsonSockLogSocket (default Off, as the C module); Off also silences ReqinLogFile",
    },
    Directive {
        name: c"JsonSockLogSocket",
        args: Args::Take1,
        usage: c"absolute path of a UNIX datagram socket that receives one JSON object per datagram (it may appear later: reconnected every JsonSockLogReconnectInterval)",
    },
    Directive {
        name: c"JsonSockLogHeaders",
        args: Args::Iterate,
        usage: c"request header names to log as header_<Name> (repeatable, case-insensitive)",
    },
    Directive {
        name: c"JsonSockLogMaxHeaders",
        args: Args::Take1,
        usage: c"at most this many configured headers per line (default 25)",
    },
    Directive {
        name: c"JsonSockLogMaxHeaderValueLen",
        args: Args::Take1,
        usage: c"header values are cut after this many bytes (default 256)",
    },
    Directive {
        name: c"JsonSockLogReconnectInterval",
        args: Args::Take1,
        usage: c"seconds between reconnection attempts of the socket (default 10)",
    },
    Directive {
        name: c"JsonSockLogErrorReportInterval",
        args: Args::Take1,
        usage: c"seconds between two error-log reports of a failing sink (default 10)",
    },
    Directive {
        name: c"JsonSockLogLevel",
        args: Args::Take1,
        usage: c"DEBUG|INFO|WARNING|ERROR|EMERG: least severe module message written (default WARNING)",
    },
    // mod_reqin_log's own.
    Directive {
        name: c"ReqinLogFile",
        args: Args::Take1,
        usage: c"where to write one JSON line per request: an absolute path (or relative to ServerRoot) opened for append, or |program for a piped log",
    },
    Directive {
        name: c"ReqinLogRing",
        args: Args::Take1,
        usage: c"absolute path of the ja4sensor shared-memory ring to join requests with (default /dev/shm/ja4sensor.ring)",
    },
    Directive {
        name: c"ReqinLogTimeWindow",
        args: Args::Take1,
        usage: c"a handshake joins a connection only if its SYN is this close to the accept (default 2s)",
    },
    Directive {
        name: c"ReqinLogOrphanDelay",
        args: Args::Take1,
        usage: c"how long a request without a handshake waits for the sensor before it is logged uncorrelated (default 500ms)",
    },
    Directive {
        name: c"ReqinLogMatchMode",
        args: Args::Take1,
        usage: c"one_to_many (every request of a connection joins its handshake, default) or one_to_one (only the first)",
    },
    Directive {
        name: c"ReqinLogExcludeSource",
        args: Args::Iterate,
        usage: c"client IPs or CIDRs never joined (repeatable)",
    },
    Directive {
        name: c"ReqinLogIncludePorts",
        args: Args::Iterate,
        usage: c"only requests to these local ports are joined (repeatable; default all)",
    },
    Directive {
        name: c"ReqinLogRedactHeaders",
        args: Args::Iterate,
        usage: c"Name adds, -Name removes a header from the redaction list, none clears it (default Authorization Cookie Set-Cookie Proxy-Authorization)",
    },
    Directive {
        name: c"ReqinLogExportEnv",
        args: Args::Flag,
        usage: c"On|Off: set JA4, JA3, TLS_*, TCP_* environment variables for the request (default On)",
    },
    Directive {
        name: c"ReqinLogLookupWait",
        args: Args::Take1,
        usage: c"longest wait at post_read_request for the sensor to publish the handshake (default 20ms)",
    },
    Directive {
        name: c"ReqinLogBuffer",
        args: Args::Take1,
        usage: c"bytes of lines a child collects before one write to ReqinLogFile, e.g. 16K; 0 or Off: one write per line (default 16K)",
    },
    Directive {
        name: c"ReqinLogFlushInterval",
        args: Args::Take1,
        usage: c"longest a buffered line waits before it is written (default 100ms)",
    },
    Directive {
        name: c"ReqinLogMaxFieldLen",
        args: Args::Take1,
        usage: c"path, query and host are cut after this many bytes, on a character boundary (default 2048)",
    },
    Directive {
        name: c"ReqinLogTag",
        args: Args::Take23,
        usage: c"key value [condition]: adds tag_<key> to the line; value and condition are ap_expr (value may use %{ENV:...}, condition as in <If>)",
    },
    Directive {
        name: c"ReqinLogVerdictTable",
        args: Args::Take1,
        usage: c"absolute path of ja4sensor detect's verdict table, or Off (default /dev/shm/ja4sensor.verdicts): sets REQIN_VERDICT",
    },
    Directive {
        name: c"ReqinLogClientMap",
        args: Args::Take1,
        usage: c"ja4->client mapping CSV (ours or FoxIO's ja4plus-mapping.csv), or Off (default /usr/share/ja4sensor/clients.csv when present): sets REQIN_CLIENT",
    },
    Directive {
        name: c"ReqinLogTestPanic",
        args: Args::Take1,
        usage: c"testing only: a request for this exact path makes the log hook panic",
    },
    Directive {
        name: c"ReqinLogFingerprint",
        args: Args::Take1,
        usage: c"sensor (the ja4sensor ring, default), inline (httpd's own TCP_SAVED_SYN and ClientHello, no sensor) or both (inline values checked against the ring)",
    },
    Directive {
        name: c"ReqinLogTrustedProxy",
        args: Args::Iterate,
        usage: c"IPs or CIDRs of proxies whose fingerprint headers (ReqinLogProxyHeader) are believed; removed from everyone else's requests (repeatable)",
    },
    Directive {
        name: c"ReqinLogProxyHeader",
        args: Args::Take2,
        usage: c"ja4|ja3_hash <header>: the header a trusted proxy sends the field in (default CloudFront-Viewer-JA4-Fingerprint, CloudFront-Viewer-JA3-Fingerprint)",
    },
    Directive {
        name: c"ReqinLogJA4Plus",
        args: Args::Flag,
        usage: c"On|Off: ja4t and ja4h/ja4h_r in the line and environment (FoxIO License 1.1; needs a build with the cargo feature foxio; default Off)",
    },
]);

/// `ReqinLogTag key value [condition]` (arguments checked by `Settings::apply`): the
/// expressions parsed by httpd, so a mistake fails `apache2 -t` with httpd's own message.
fn tag(cmd: Cmd<'_>, args: &[&str]) -> Result<Tag, String> {
    let (key, value, when) = match args {
        [k, v] => (*k, *v, None),
        [k, v, c] => (*k, *v, Some(*c)),
        _ => return Err("expected a key, a value and optionally a condition".into()),
    };
    let value = if value.contains('%') {
        TagValue::Expr(
            cmd.parse_expr(value, true)
                .map_err(|e| format!("value {value:?}: {e}"))?,
        )
    } else {
        TagValue::Literal(value.to_owned())
    };
    let when = when
        .map(|c| {
            cmd.parse_expr(c, false)
                .map_err(|e| format!("condition {c:?}: {e}"))
        })
        .transpose()?;
    Ok(Tag {
        key: key.to_owned(),
        value,
        when,
    })
}

impl Module for ReqinLog {
    type ServerConfig = ServerState;

    fn merge_server_config(base: &ServerState, add: &ServerState) -> ServerState {
        ServerState::merged(base, add)
    }

    fn directive(cmd: Cmd<'_>, state: &mut ServerState, args: &[&str]) -> Result<(), String> {
        let name = cmd.directive();
        state
            .settings
            .apply(&name, args, |rel| cmd.server_root_relative(rel))
            .map_err(|e| e.to_string())?;
        if name == "ReqinLogTag" {
            state.tags.push(tag(cmd, args)?);
        }
        Ok(())
    }

    fn register_hooks() {
        Hooks::<ReqinLog>::post_config(Order::Middle);
        Hooks::<ReqinLog>::child_init(Order::Middle);
        // REALLY_FIRST: the accept time, as close to the accept as a module can see it; and
        // the connection's state exists before mod_ssl's pre_connection runs pre_handshake.
        Hooks::<ReqinLog>::pre_connection(Order::ReallyFirst);
        Hooks::<ReqinLog>::pre_handshake(Order::Middle);
        Hooks::<ReqinLog>::handler(Order::Middle);
        // REALLY_FIRST: before mod_setenvif/mod_rewrite, which will read what we export.
        Hooks::<ReqinLog>::post_read_request(Order::ReallyFirst);
        Hooks::<ReqinLog>::log_transaction(Order::Middle);
    }

    fn post_config(pconf: Pool<'_>, ptemp: Pool<'_>, main: Server<'_>) -> c_int {
        hooks::post_config(pconf, ptemp, main)
    }

    fn child_init(pchild: Pool<'_>, main: Server<'_>) {
        hooks::child_init(pchild, main)
    }

    fn pre_connection(conn: Conn<'_>, socket: Option<ClientSocket>) -> c_int {
        hooks::pre_connection(conn, socket);
        entry::OK
    }

    fn pre_handshake(conn: Conn<'_>, tls: TlsConn<'_>, is_proxy: bool) {
        crate::inline::pre_handshake(conn, tls, is_proxy)
    }

    fn post_read_request(r: Request<'_>) -> c_int {
        hooks::post_read_request(r)
    }

    fn log_transaction(r: Request<'_>) -> c_int {
        hooks::log_transaction(r)
    }

    fn handler(r: Request<'_>) -> c_int {
        hooks::handler(r)
    }

    fn panicked(server: Option<Server<'_>>) {
        if let Some(s) = server {
            hooks::count_panic(s);
        }
    }

    fn module_rec() -> *const sys::module {
        &raw const reqin_log_module
    }
}
