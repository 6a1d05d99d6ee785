//! A block of 64-bit counters in anonymous shared memory: mapped by the parent at `post_config`,
//! inherited by every child it forks, so each child adds to the same atomics and the status
//! handler of any child reads the sum over all of them. No file, no name: nothing to clean up if
//! httpd dies, and a new configuration generation simply maps a new block (the old children keep
//! theirs until they exit; `munmap` in one process never affects another).

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct SharedCounters {
    base: NonNull<AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64` (which is Sync), and it stays
// mapped until this value is dropped.
unsafe impl Send for SharedCounters {}
// SAFETY: see Send.
unsafe impl Sync for SharedCounters {}

impl SharedCounters {
    /// `len` zeroed counters shared with every process forked after this call.
    pub fn map(len: usize) -> std::io::Result<Self> {
        let bytes = len.max(1) * std::mem::size_of::<AtomicU64>();
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
        let base = NonNull::new(p as *mut AtomicU64).ok_or_else(std::io::Error::last_os_error)?;
        Ok(Self { base, len })
    }

    fn slot(&self, i: usize) -> Option<&AtomicU64> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i < len` words inside the live mapping (page-aligned, so 8-byte aligned).
        Some(unsafe { &*self.base.as_ptr().add(i) })
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
        let bytes = self.len.max(1) * std::mem::size_of::<AtomicU64>();
        // SAFETY: unmaps exactly the region `map` created; no reference into it outlives self.
        unsafe {
            libc::munmap(self.base.as_ptr() as *mut libc::c_void, bytes);
        }
    }
}
