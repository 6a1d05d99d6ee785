//! Survives a shared file being cut short under its mapping.
//!
//! A process that maps a file and touches a page past the file's end gets SIGBUS, which kills
//! it. The ring (and the verdict table) are files in `/dev/shm` that the sensor never shrinks,
//! but root can (`truncate -s 0 /dev/shm/ja4sensor.ring`), and an httpd child must not die of
//! it: a bug or an operator's mistake may lose the join, never a request.
//!
//! [`install`] sets a SIGBUS handler for the process. Every mapping this crate makes registers
//! its address range ([`Registration`], dropped with the mapping). When a fault falls inside a
//! registered range, the handler maps a zero-filled anonymous page over the faulting page
//! (`MAP_FIXED`: the same address, so the mapping stays whole) and marks the range, then returns:
//! the access is retried and reads zeros (a reader sees a bad magic or a failed checksum: a
//! miss; a writer's store lands in the private page). The owner notices the mark
//! ([`Registration::faulted`]) on its next check and drops or recreates the mapping. A fault
//! anywhere else goes to whatever handler was there before (httpd's core dumper, or the default
//! action: the process dies as it would have).
//!
//! The handler only loads and stores atomics, calls `mmap` (a system call with no locks in
//! user space) and `sigaction`: nothing that allocates or locks.
//!
//! Process model: install it in processes that keep this code mapped for their whole life (the
//! sensor; an httpd child, from `child_init`), never in the httpd parent, which may unload the
//! module while a handler would still point into it.

#![allow(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Mappings a process may have at once: a ring and a verdict table, each perhaps twice while
/// one is being replaced, in a few virtual hosts. A mapping made when the table is full is
/// simply unguarded.
const MAX_RANGES: usize = 64;

struct Range {
    start: AtomicUsize,
    len: AtomicUsize,
    faulted: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Range = Range {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    faulted: AtomicBool::new(false),
};

static RANGES: [Range; MAX_RANGES] = [EMPTY; MAX_RANGES];

/// The SIGBUS action in place before ours, to hand foreign faults to.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered range; unregistered on drop.
#[derive(Debug)]
pub struct Registration {
    slot: Option<usize>,
}

impl Registration {
    /// Registers `[start, start + len)`. `None` slot when the table is full (unguarded).
    pub fn new(start: *const u8, len: usize) -> Self {
        let start = start as usize;
        if start == 0 || len == 0 {
            return Self { slot: None };
        }
        for (i, r) in RANGES.iter().enumerate() {
            // Claim a free slot by its length first, so the handler never sees a start
            // without its length.
            if r.len
                .compare_exchange(0, len, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                r.faulted.store(false, Ordering::Relaxed);
                r.start.store(start, Ordering::Release);
                return Self { slot: Some(i) };
            }
        }
        Self { slot: None }
    }

    /// Whether a page of the range was replaced after a fault (the file was cut short).
    pub fn faulted(&self) -> bool {
        self.slot
            .and_then(|i| RANGES.get(i))
            .is_some_and(|r| r.faulted.load(Ordering::Acquire))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(r) = self.slot.and_then(|i| RANGES.get(i)) {
            r.start.store(0, Ordering::Release);
            r.len.store(0, Ordering::Release);
        }
    }
}

const PAGE: usize = 4096;

extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for a SA_SIGINFO handler; for SIGBUS its
    // si_addr is the faulting address.
    let addr = unsafe { info.as_ref() }.map_or(0, |i| unsafe { i.si_addr() } as usize);
    for r in &RANGES {
        let start = r.start.load(Ordering::Acquire);
        let len = r.len.load(Ordering::Acquire);
        if start != 0 && addr >= start && addr < start.saturating_add(len) {
            let page = addr & !(PAGE - 1);
            // SAFETY: replaces exactly one page of a mapping this crate made (inside a
            // registered range, so still mapped: ranges are unregistered before unmapping) by a
            // private zero page at the same address; MAP_FIXED over our own mapping is what it
            // is for. Readers and the writer only access that memory through atomics, which are
            // valid on any bit pattern.
            let p = unsafe {
                libc::mmap(
                    page as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                r.faulted.store(true, Ordering::Release);
                return;
            }
        }
    }
    // Not ours: what was there before.
    match PREVIOUS.get() {
        Some(prev) if prev.sa_sigaction != libc::SIG_DFL && prev.sa_sigaction != libc::SIG_IGN => {
            if prev.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous handler was installed for SIGBUS with SA_SIGINFO, so it
                // takes these three arguments.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig, info, ctx);
            } else {
                // SAFETY: a plain handler installed for SIGBUS takes the signal number.
                let f: extern "C" fn(libc::c_int) =
                    unsafe { std::mem::transmute(prev.sa_sigaction) };
                f(sig);
            }
        }
        _ => {
            // The default action: restore it and return; the access faults again and the
            // process dies of SIGBUS as it would have without us.
            // SAFETY: plain sigaction calls with valid pointers.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

/// Installs the handler for this process (idempotent).
pub fn install() -> io::Result<()> {
    if PREVIOUS.get().is_some() {
        return Ok(());
    }
    // SAFETY: sigaction with a handler of the SA_SIGINFO signature and a zeroed (empty) mask;
    // the previous action is written into `old`.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigbus as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_NODEFER;
        libc::sigemptyset(&mut act.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &act, &mut old) != 0 {
            return Err(io::Error::last_os_error());
        }
        let _ = PREVIOUS.set(old);
    }
    Ok(())
}
