//! A connection's SYN as the kernel kept it, for the module's inline mode: Linux saves the IP and
//! TCP headers of the SYN of every connection accepted from a listening socket with
//! `TCP_SAVE_SYN` set to 1, and hands them out once with `getsockopt(TCP_SAVED_SYN)` on the
//! accepted socket (then frees them). httpd's MPMs open their listeners (`ap_listeners`) at
//! `open_logs`, before `post_config`, in the parent, and keep the same sockets across graceful
//! restarts; [`save_syn_on_listeners`] is called at every `post_config`, before the children
//! fork, so every child's accepted connections carry their SYN.

use std::ffi::c_int;
use std::net::SocketAddr;

use super::{socket_addr, sys, Conn, APR_SUCCESS};

/// What setting `TCP_SAVE_SYN` on one listener did.
#[derive(Debug)]
pub struct ListenerOutcome {
    pub addr: Option<SocketAddr>,
    /// `Err` with the kernel's error (ENOPROTOOPT: a kernel without `TCP_SAVE_SYN`).
    pub result: Result<(), std::io::Error>,
}

/// The descriptor of an APR socket.
fn os_fd(sd: *mut sys::apr_socket_t) -> Option<c_int> {
    if sd.is_null() {
        return None;
    }
    let mut fd: sys::apr_os_sock_t = -1;
    // SAFETY: `sd` is a live APR socket (a listener of the configuration, or a connection's);
    // apr_os_sock_get only reads its descriptor into `fd`.
    let status = unsafe { sys::apr_os_sock_get(&mut fd, sd) };
    (status == APR_SUCCESS && fd >= 0).then_some(fd)
}

fn int_option(fd: c_int, name: c_int) -> std::io::Result<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            name,
            (&mut value as *mut c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_int_option(fd: c_int, name: c_int, value: c_int) -> std::io::Result<()> {
    // SAFETY: `value` is a c_int, its size given.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            name,
            (&value as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets `TCP_SAVE_SYN` to 1 on every listening socket of httpd (`on`), or back to 0 where it is
/// set (`!on`: a configuration that no longer fingerprints inline stops the kernel keeping
/// SYNs; a listener without it is left untouched). Empty before the MPM opened its listeners
/// (`apache2 -t`).
pub fn save_syn_on_listeners(on: bool) -> Vec<ListenerOutcome> {
    let mut out = Vec::new();
    // SAFETY: `ap_listeners` is httpd's list of listeners, built by the MPM at open_logs and
    // only changed by httpd's configuration phases, which run on this (the parent's only)
    // thread; each record and its socket live in the process or configuration pool.
    let mut lr = unsafe { sys::ap_listeners };
    while let Some(rec) = {
        // SAFETY: null or a record of the list (see above).
        unsafe { lr.as_ref() }
    } {
        let addr = socket_addr(rec.bind_addr);
        let result = match os_fd(rec.sd) {
            None => Err(std::io::Error::from(std::io::ErrorKind::NotConnected)),
            Some(fd) if on => set_int_option(fd, libc::TCP_SAVE_SYN, 1),
            Some(fd) => match int_option(fd, libc::TCP_SAVE_SYN) {
                Ok(0) => Ok(()),
                Ok(_) => set_int_option(fd, libc::TCP_SAVE_SYN, 0),
                Err(e) => Err(e),
            },
        };
        out.push(ListenerOutcome { addr, result });
        lr = rec.next;
    }
    out
}

/// How many sets of listening sockets the MPM uses (`ListenCoresBucketsRatio`): only the
/// first is `ap_listeners`; the others are duplicates private to the MPM.
pub fn listen_buckets() -> i32 {
    // SAFETY: a plain int of httpd's, written at open_logs in the parent.
    unsafe { sys::ap_num_listen_buckets }
}

/// What `TCP_SAVED_SYN` gave for a connection.
#[derive(Debug)]
pub enum SavedSyn {
    /// The SYN's IP and TCP headers, the first `n` bytes of the buffer.
    Saved(usize),
    /// Nothing saved: the listener did not have `TCP_SAVE_SYN`, the connection was accepted
    /// through a SYN cookie (queue overflow), or the SYN was already read.
    NotSaved,
    /// Longer than the buffer.
    TooLong,
    /// The socket or the call failed.
    Failed,
}

/// A client connection's socket descriptor, taken at `pre_connection` from the socket the MPM
/// passes (core stores it in the connection only at its own, last, `pre_connection`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSocket {
    fd: c_int,
}

impl ClientSocket {
    /// The descriptor of `csd`, the `apr_socket_t *` of a `pre_connection` hook (null or not
    /// an APR socket for an HTTP/2 stream's secondary connection: `None`).
    pub(super) fn from_csd(csd: *mut std::ffi::c_void, conn: &Conn<'_>) -> Option<Self> {
        if conn.is_secondary() {
            return None;
        }
        os_fd(csd as *mut sys::apr_socket_t).map(|fd| Self { fd })
    }

    /// The connection's saved SYN, read into `buf` (the kernel then frees its copy).
    pub fn take_saved_syn(&self, buf: &mut [u8]) -> SavedSyn {
        let mut len = libc::socklen_t::try_from(buf.len()).unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `buf` is writable for `len` bytes; the kernel writes at most `len` and sets
        // `len` to what it wrote (or, on EINVAL, to what it needs). The descriptor is the
        // connection's for as long as the connection is served (a stale one only fails).
        let rc = unsafe {
            libc::getsockopt(
                self.fd,
                libc::IPPROTO_TCP,
                libc::TCP_SAVED_SYN,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let len = usize::try_from(len).unwrap_or(0);
        if rc != 0 {
            return match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINVAL) if len > buf.len() => SavedSyn::TooLong,
                _ => SavedSyn::Failed,
            };
        }
        match len {
            0 => SavedSyn::NotSaved,
            n => SavedSyn::Saved(n.min(buf.len())),
        }
    }
}
