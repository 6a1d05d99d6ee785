//! The ClientHello of a TLS connection as OpenSSL received it, for the module's inline mode.
//!
//! mod_ssl runs its optional hook `pre_handshake (conn_rec *c, SSL *ssl, int is_proxy)` (declared
//! in `mod_ssl_openssl.h`, which Debian's apache2-dev does not ship; `entry` registers it by name
//! through `apr_optional_hook_add`, as that header's `APR_OPTIONAL_HOOK` macro does) right after
//! `SSL_new`, before the handshake. There [`TlsConn::capture_client_hello`] installs
//! OpenSSL's message callback on that `SSL *`: OpenSSL calls it with every handshake message it
//! reads or writes, the received ClientHello exactly as correlate-lib's
//! `fingerprint_client_hello` takes it (type 1, 24-bit length, body; OpenSSL has already joined
//! a hello split over several records or TCP segments). The callback copies that message into
//! the connection's [`HelloSlot`] (bounded by the slot's limit) and returns; nothing is parsed in
//! the handshake. When the server writes its ServerHello (not a HelloRetryRequest, after which
//! the client sends a second hello that replaces the first, as the sensor's ring record does),
//! the callback removes itself, so the rest of the connection's records cost nothing.
//!
//! OpenSSL is not linked: its functions are looked up in the process (`dlsym(RTLD_DEFAULT)`),
//! where mod_ssl loaded libssl. One build of the module then works with OpenSSL 1.1.1 (RHEL 8)
//! and 3.x alike (`SSL_set_msg_callback` and `SSL_ctrl` have kept their signatures and
//! `SSL_CTRL_SET_MSG_CALLBACK_ARG` its value since 1.0), and without mod_ssl nothing is looked
//! up at all.
//!
//! mod_ssl itself never sets a message callback (its `LogLevel ssl:trace*` output comes from
//! the info callback, `SSL_CTX_set_info_callback`, and from BIO callbacks, which this leaves
//! alone). OpenSSL has no getter for the message callback, so one set by another module on the
//! `SSL_CTX` could not be chained: it is replaced on the connections this captures (none of
//! httpd's own modules sets one).

use std::ffi::{c_int, c_long, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};

use super::Conn;

/// `void (*)(int write_p, int version, int content_type, const void *buf, size_t len, SSL *ssl,
/// void *arg)`.
type MsgCallback =
    unsafe extern "C" fn(c_int, c_int, c_int, *const c_void, usize, *mut c_void, *mut c_void);
type SetMsgCallback = unsafe extern "C" fn(*mut c_void, Option<MsgCallback>);
type SslCtrl = unsafe extern "C" fn(*mut c_void, c_int, c_long, *mut c_void) -> c_long;

/// `SSL_CTRL_SET_MSG_CALLBACK_ARG` (ssl.h; the same value in OpenSSL 1.0 through 3.x).
const SSL_CTRL_SET_MSG_CALLBACK_ARG: c_int = 16;
/// `SSL3_RT_HANDSHAKE`: the content type of a whole handshake message. Record headers (256) and
/// TLS 1.3 inner content types (257) come with other values, an SSLv2-style hello with 0.
const SSL3_RT_HANDSHAKE: c_int = 22;
const SSL3_MT_CLIENT_HELLO: u8 = 1;
const SSL3_MT_SERVER_HELLO: u8 = 2;
/// RFC 8446 §4.1.3: a HelloRetryRequest is a ServerHello whose random is SHA-256 of
/// "HelloRetryRequest".
const HELLO_RETRY_REQUEST_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];
/// Where the random starts in a ServerHello message: type, 24-bit length, legacy_version.
const SERVER_HELLO_RANDOM_AT: usize = 6;

/// OpenSSL's functions, found in the process (see the module doc). Looked up once per
/// configuration generation: mod_ssl, and with it libssl, may be unloaded and loaded again by a
/// graceful restart.
#[derive(Clone, Copy)]
pub struct OpenSsl {
    set_msg_callback: SetMsgCallback,
    ctrl: SslCtrl,
}

fn lookup_symbol(name: &CStr) -> *mut c_void {
    // SAFETY: dlsym with RTLD_DEFAULT searches the global symbol scope (httpd loads modules
    // and their libraries RTLD_GLOBAL); `name` is NUL-terminated. Null when absent.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) }
}

impl OpenSsl {
    /// `None` when no libssl is loaded (mod_ssl absent) or it lacks the functions.
    pub fn lookup() -> Option<Self> {
        let set = lookup_symbol(c"SSL_set_msg_callback");
        let ctrl = lookup_symbol(c"SSL_ctrl");
        if set.is_null() || ctrl.is_null() {
            return None;
        }
        // SAFETY: non-null addresses of libssl's `void SSL_set_msg_callback(SSL *, void
        // (*)(int, int, int, const void *, size_t, SSL *, void *))` and `long SSL_ctrl(SSL *,
        // int, long, void *)`; `SSL *` is an opaque pointer, passed as `*mut c_void`.
        unsafe {
            Some(Self {
                set_msg_callback: std::mem::transmute::<*mut c_void, SetMsgCallback>(set),
                ctrl: std::mem::transmute::<*mut c_void, SslCtrl>(ctrl),
            })
        }
    }
}

/// What the message callback saw of a connection's ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CapturedHello {
    /// No ClientHello reached the callback (yet).
    #[default]
    None,
    /// The handshake message, exactly as OpenSSL passed it.
    Message(Box<[u8]>),
    /// A ClientHello of `len` bytes, more than the slot takes: not copied.
    TooLong { len: usize },
}

/// Where the message callback of one connection puts its ClientHello. Lives in the connection's
/// state (see [`HoldsHello`]); only the thread serving the connection's handshake writes it.
pub struct HelloSlot {
    max_len: usize,
    hello: Mutex<CapturedHello>,
    /// The functions to remove the callback with once the ServerHello is out.
    api: Mutex<Option<OpenSsl>>,
}

impl HelloSlot {
    /// A slot taking handshake messages of at most `max_len` bytes (header included).
    pub fn new(max_len: usize) -> Self {
        Self {
            max_len,
            hello: Mutex::new(CapturedHello::None),
            api: Mutex::new(None),
        }
    }

    /// What was captured, leaving [`CapturedHello::None`] behind.
    pub fn take(&self) -> CapturedHello {
        std::mem::take(&mut *self.hello.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn store(&self, message: &[u8]) {
        let captured = if message.len() <= self.max_len {
            CapturedHello::Message(message.into())
        } else {
            CapturedHello::TooLong { len: message.len() }
        };
        *self.hello.lock().unwrap_or_else(PoisonError::into_inner) = captured;
    }
}

/// A connection state that holds a [`HelloSlot`].
pub trait HoldsHello {
    fn hello_slot(&self) -> &HelloSlot;
}

/// The `SSL *` mod_ssl created for a connection, during its `pre_handshake` hook.
#[derive(Clone, Copy)]
pub struct TlsConn<'a> {
    ssl: std::ptr::NonNull<c_void>,
    _life: std::marker::PhantomData<&'a c_void>,
}

impl<'a> TlsConn<'a> {
    pub(super) fn new(ssl: *mut c_void) -> Option<Self> {
        std::ptr::NonNull::new(ssl).map(|ssl| Self {
            ssl,
            _life: std::marker::PhantomData,
        })
    }

    /// Installs the message callback that copies this connection's ClientHello into the
    /// [`HelloSlot`] of `conn`'s state `T`. Only a state that already exists counts (the module
    /// creates it at `pre_connection`), which is what makes the callback's pointer safe: see the
    /// SAFETY note inside. False when `conn` has no such state.
    pub fn capture_client_hello<T: HoldsHello + std::any::Any>(
        &self,
        api: &OpenSsl,
        conn: Conn<'a>,
    ) -> bool {
        let Some(state) = conn.state::<T>() else {
            return false;
        };
        let slot = state.hello_slot();
        *slot.api.lock().unwrap_or_else(PoisonError::into_inner) = Some(*api);
        let arg = slot as *const HelloSlot as *mut c_void;
        // SAFETY: `ssl` is the live `SSL *` mod_ssl handed to pre_handshake. The callback's
        // argument points into our state of the connection, which sits in a box registered
        // for cleanup on `c->pool` when the state was created, which was before this hook ran
        // (`state` only finds existing state). mod_ssl registers the cleanup that shuts down and
        // frees this `SSL *` on the same pool after pre_handshake returns (ssl_io_filter_init),
        // and APR runs a pool's cleanups last-registered first: the SSL, and every callback
        // OpenSSL can make for it, is gone before the slot is dropped.
        unsafe {
            (api.ctrl)(self.ssl.as_ptr(), SSL_CTRL_SET_MSG_CALLBACK_ARG, 0, arg);
            (api.set_msg_callback)(self.ssl.as_ptr(), Some(msg_callback));
        }
        true
    }
}

/// OpenSSL's message callback (see the module doc): copies a received ClientHello, and removes
/// itself when the ServerHello is written. Never blocks, never panics across the FFI boundary.
unsafe extern "C" fn msg_callback(
    write_p: c_int,
    _version: c_int,
    content_type: c_int,
    buf: *const c_void,
    len: usize,
    ssl: *mut c_void,
    arg: *mut c_void,
) {
    if content_type != SSL3_RT_HANDSHAKE || buf.is_null() || arg.is_null() || len == 0 {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `arg` is the HelloSlot set by `capture_client_hello`, alive as long as the
        // SSL (see there); OpenSSL passes `len` readable bytes at `buf` for the duration of
        // the call.
        let (slot, message) = unsafe {
            (
                &*(arg as *const HelloSlot),
                std::slice::from_raw_parts(buf as *const u8, len),
            )
        };
        match (write_p, message.first()) {
            (0, Some(&SSL3_MT_CLIENT_HELLO)) => slot.store(message),
            (1, Some(&SSL3_MT_SERVER_HELLO)) => {
                let random = message.get(SERVER_HELLO_RANDOM_AT..SERVER_HELLO_RANDOM_AT + 32);
                if random == Some(&HELLO_RETRY_REQUEST_RANDOM[..]) {
                    return;
                }
                let api = *slot.api.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(api) = api {
                    // SAFETY: `ssl` is the SSL this callback is running for; OpenSSL reads its
                    // message-callback pointer anew before each call, so clearing it here only
                    // stops later calls.
                    unsafe { (api.set_msg_callback)(ssl, None) };
                }
            }
            _ => {}
        }
    }));
}
