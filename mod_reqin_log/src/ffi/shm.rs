//! A block of 64-bit counters in anonymous shared memory, mapped by the parent at `post_config`
//! and inherited by every child it forks, so each child adds to the same atomics and the status
//! handler of any child reads the sum over all of them. No file, no name: nothing to clean up if
//! httpd dies (the kernel frees the pages with the last process that maps them).
//!
//! Prometheus counters must be monotonic for the life of the httpd parent, so the block outlives
//! configuration generations: the first `post_config` maps it and records its address in the
//! *process* pool's userdata (`s->process->pool`, which lives as long as the parent and survives
//! every graceful restart and every unload of this DSO); each later generation finds it there
//! and keeps counting in the same atomics. Children of the old generation that are still
//! finishing their requests during a graceful restart therefore add to the same totals as the new
//! ones. The block is never unmapped in the parent: it is one page, and a cleanup function of
//! ours registered on the process pool would point into a DSO httpd may have unloaded since.

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{sys, Server};

/// The process pool's userdata key of the block. Bump the version if the meaning of a counter
/// index changes (a new module version loaded by a graceful restart then starts a new block).
const USERDATA_KEY: &CStr = c"mod_reqin_log/counters/v1";
/// First word of a parent-lifetime block, checked before a later generation trusts it.
const MAGIC: u64 = u64::from_be_bytes(*b"RQLCNT01");
/// Words before the counters: MAGIC, then the number of counter slots.
const HEADER_WORDS: usize = 2;
/// A parent-lifetime block is one page: room for counters a later module version may add.
const PROCESS_BLOCK_BYTES: usize = 4096;

pub struct SharedCounters {
    /// Start of the mapping.
    mapping: NonNull<AtomicU64>,
    /// Length of the mapping in bytes.
    bytes: usize,
    /// Word index of the first counter in the mapping.
    first: usize,
    /// Number of counters.
    len: usize,
    /// False for the parent-lifetime block, which later generations re-use.
    unmap_on_drop: bool,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64` (which is Sync), and it stays
// mapped until this value is dropped (the parent-lifetime block: until the process exits).
unsafe impl Send for SharedCounters {}
// SAFETY: see Send.
unsafe impl Sync for SharedCounters {}

/// Maps `bytes` zeroed bytes shared with every process forked afterwards.
fn map_shared(bytes: usize) -> std::io::Result<NonNull<AtomicU64>> {
    // SAFETY: an anonymous shared mapping of `bytes` bytes; no file descriptor, no address
    // hint. The kernel zero-fills it, and zero is a valid AtomicU64.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    NonNull::new(p as *mut AtomicU64).ok_or_else(std::io::Error::last_os_error)
}

impl SharedCounters {
    /// `len` zeroed counters shared with every process forked after this call, unmapped when
    /// this value is dropped (one configuration generation).
    pub fn map(len: usize) -> std::io::Result<Self> {
        let bytes = len.max(1) * std::mem::size_of::<AtomicU64>();
        Ok(Self {
            mapping: map_shared(bytes)?,
            bytes,
            first: 0,
            len,
            unmap_on_drop: true,
        })
    }

    /// `len` counters that live as long as the httpd parent: the block an earlier
    /// configuration generation of this process mapped, or a new zeroed one recorded for the
    /// next generations. Falls back to [`SharedCounters::map`] when `server` has no process.
    pub fn for_parent_lifetime(server: Server<'_>, len: usize) -> std::io::Result<Self> {
        let capacity = PROCESS_BLOCK_BYTES / std::mem::size_of::<AtomicU64>() - HEADER_WORDS;
        // SAFETY: httpd sets `s->process` on every server_rec to its process_rec, which lives
        // as long as the process; null is handled.
        let pool = unsafe { server.raw.process.as_ref() }
            .map(|p| p.pool)
            .filter(|p| !p.is_null());
        let Some(pool) = pool.filter(|_| len <= capacity) else {
            return Self::map(len);
        };
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: `pool` is the live process pool; the call only reads its userdata table
        // and writes one pointer into `data`.
        let status = unsafe { sys::apr_pool_userdata_get(&mut data, USERDATA_KEY.as_ptr(), pool) };
        if status == super::APR_SUCCESS {
            if let Some(found) = NonNull::new(data as *mut AtomicU64) {
                // SAFETY: only this function stores under USERDATA_KEY, and what it stores is
                // the start of a PROCESS_BLOCK_BYTES shared mapping never unmapped in this
                // process (inherited as is across the daemonizing fork), so both header words
                // are readable atomics.
                let (magic, slots) = unsafe {
                    (
                        (*found.as_ptr()).load(Ordering::Relaxed),
                        (*found.as_ptr().add(1)).load(Ordering::Relaxed),
                    )
                };
                if magic == MAGIC && usize::try_from(slots).is_ok_and(|s| s >= len) {
                    return Ok(Self {
                        mapping: found,
                        bytes: PROCESS_BLOCK_BYTES,
                        first: HEADER_WORDS,
                        len,
                        unmap_on_drop: false,
                    });
                }
            }
        }
        let mapping = map_shared(PROCESS_BLOCK_BYTES)?;
        // SAFETY: the two header words are inside the fresh mapping.
        unsafe {
            (*mapping.as_ptr()).store(MAGIC, Ordering::Relaxed);
            (*mapping.as_ptr().add(1)).store(capacity as u64, Ordering::Relaxed);
        }
        // SAFETY: `pool` is the live process pool; APR copies the key and keeps the pointer.
        // The cleanup is APR's no-op, not a function of this DSO, which may be unloaded before
        // the process pool is destroyed.
        let status = unsafe {
            sys::apr_pool_userdata_set(
                mapping.as_ptr() as *const c_void,
                USERDATA_KEY.as_ptr(),
                Some(sys::apr_pool_cleanup_null),
                pool,
            )
        };
        // Not recorded: this generation still counts, the next one starts a new block; keep
        // the mapping so that nothing could ever see an unmapped address.
        let _ = status;
        Ok(Self {
            mapping,
            bytes: PROCESS_BLOCK_BYTES,
            first: HEADER_WORDS,
            len,
            unmap_on_drop: false,
        })
    }

    fn slot(&self, i: usize) -> Option<&AtomicU64> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `first + i < first + len` words, all inside the live mapping (page-aligned,
        // so 8-byte aligned).
        Some(unsafe { &*self.mapping.as_ptr().add(self.first + i) })
    }

    pub fn add(&self, i: usize, n: u64) {
        if let Some(c) = self.slot(i) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self, i: usize) -> u64 {
        self.slot(i).map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

impl Drop for SharedCounters {
    fn drop(&mut self) {
        if !self.unmap_on_drop {
            return;
        }
        // SAFETY: unmaps exactly the region `map` created; no reference into it outlives self.
        unsafe {
            libc::munmap(self.mapping.as_ptr() as *mut libc::c_void, self.bytes);
        }
    }
}
