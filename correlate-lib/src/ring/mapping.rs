//! With [`super::guard`], the only module of the ring with `unsafe`: mapping the ring file and viewing it as 64-bit
//! atomic words. Everything else reads and writes the shared memory through these views, so every
//! access to bytes another process may be writing at the same time is an atomic access (plain
//! loads of such memory would be a data race, i.e. undefined behaviour).
//!
//! Two views, so the type system keeps the promises the `SAFETY` comments rely on:
//! - [`WritableWords`] (the sensor): `&[AtomicU64]` over a read-write mapping.
//! - [`ReadOnlyWords`] (every httpd child): `&[SharedWord]` over a read-only mapping. A
//!   `SharedWord` offers nothing but a `Relaxed` load: Rust only promises that relaxed atomic loads
//!   of at most 8 bytes (on x86_64/aarch64 and the other 64-bit targets) are sound on read-only
//!   memory; stores, read-modify-writes and even `Acquire` loads are not covered. Readers get their
//!   ordering from `fence(Acquire)` after the relaxed load instead.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{Mmap, MmapMut, MmapOptions};

use super::guard::Registration;

// The soundness of `SharedWord::load` on a read-only mapping rests on 8-byte relaxed loads being
// plain loads, which `core::sync::atomic` documents for 64-bit targets only.
#[cfg(not(target_pointer_width = "64"))]
compile_error!("the shared-memory ring needs a 64-bit target (8-byte loads from read-only memory)");

/// One 64-bit word of a read-only mapping, which another process may be writing.
#[repr(transparent)]
pub struct SharedWord(AtomicU64);

impl SharedWord {
    /// Relaxed atomic load: the only access a reader makes. Callers that need ordering follow it
    /// with `fence(Ordering::Acquire)`.
    #[inline]
    pub fn load(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Asks the CPU to start loading the cache lines of `words` (at most `max_bytes` of them) into
/// its caches, so that the loads that follow find them there or already on their way. Only a
/// hint: it reads nothing, and is a no-op where no prefetch instruction is wired up.
#[inline]
pub fn prefetch(words: &[SharedWord], max_bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = words.len().saturating_mul(8).min(max_bytes);
        let base = words.as_ptr().cast::<i8>();
        for offset in (0..bytes).step_by(64) {
            // SAFETY: a prefetch is a hint that never faults and never reads into the program
            // (the address is not even required to be mapped); `offset` stays inside `words`, so
            // `wrapping_add` does not leave the allocation either.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(base.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (words, max_bytes);
}

/// The sensor's read-write mapping of the ring file, as atomic words.
pub struct WritableWords {
    // Declared first: unregistered before the mapping goes (fields drop in order).
    guard: Registration,
    map: MmapMut,
}

impl WritableWords {
    /// Maps the whole file read-write (the sensor, which created and sized it).
    pub fn map(file: &File) -> io::Result<Self> {
        // SAFETY: memmap2 requires that nobody truncates the file while it is mapped (accesses
        // would then raise SIGBUS) and warns that other processes may modify it. The file is a
        // fresh temporary the writer just created (O_EXCL), sized and allocated; readers map it
        // read-only and never truncate it, and every access goes through atomics, so concurrent
        // modification is the intended, race-free use.
        let map = unsafe { MmapOptions::new().map_mut(file)? };
        Ok(Self {
            guard: Registration::new(map.as_ptr(), map.len()),
            map,
        })
    }

    /// Whether a page of the mapping had to be replaced because the file was cut short
    /// ([`super::guard`]).
    pub fn faulted(&self) -> bool {
        self.guard.faulted()
    }

    /// The mapping as atomic words; a trailing partial word is not part of the view.
    pub fn words(&self) -> &[AtomicU64] {
        let (ptr, len) = (self.map.as_ptr(), self.map.len());
        // mmap returns page-aligned memory (memmap2 maps one page even for an empty file); checked
        // rather than assumed, because a misaligned atomic is undefined behaviour.
        if ptr.align_offset(8) != 0 {
            return &[];
        }
        // SAFETY:
        // - alignment: `ptr` is 8-aligned (checked just above);
        // - bounds: `len / 8` whole words lie inside the mapping;
        // - validity: every bit pattern is a valid u64; AtomicU64 has the size and alignment of
        //   u64 on 64-bit targets (checked at compile time above);
        // - lifetime: the slice borrows `self`, which owns the mapping;
        // - aliasing: this process only touches the memory through these atomics (never through
        //   `&mut` or `as_mut_ptr`), and other processes only through atomic loads.
        unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), len / 8) }
    }
}

/// A read-only mapping of a ring file, as words that can only be loaded.
pub struct ReadOnlyWords {
    // Declared first: unregistered before the mapping goes (fields drop in order).
    guard: Registration,
    map: Mmap,
}

impl ReadOnlyWords {
    /// Maps the whole file read-only (every httpd child).
    pub fn map(file: &File) -> io::Result<Self> {
        // SAFETY: the writer modifies the mapped memory concurrently, which is why it is only ever
        // read through atomic loads (`SharedWord`). The writer never shrinks a ring file (a new
        // ring is a new file renamed over the path); a third party with write access truncating it
        // would raise SIGBUS, the exposure every reader of a shared mapping has. The ring file's
        // mode (0640, owned by the sensor) keeps httpd from being such a party.
        let map = unsafe { MmapOptions::new().map(file)? };
        Ok(Self {
            guard: Registration::new(map.as_ptr(), map.len()),
            map,
        })
    }

    /// Whether a page of the mapping had to be replaced because the file was cut short
    /// ([`super::guard`]).
    pub fn faulted(&self) -> bool {
        self.guard.faulted()
    }

    /// The mapping as load-only words; a trailing partial word is not part of the view.
    #[inline]
    pub fn words(&self) -> &[SharedWord] {
        let (ptr, len) = (self.map.as_ptr(), self.map.len());
        // mmap returns page-aligned memory (memmap2 maps one page even for an empty file); checked
        // rather than assumed, because a misaligned atomic is undefined behaviour.
        if ptr.align_offset(8) != 0 {
            return &[];
        }
        // SAFETY:
        // - alignment: `ptr` is 8-aligned (checked just above);
        // - bounds: `len / 8` whole words lie inside the mapping;
        // - validity: every bit pattern is a valid u64; SharedWord is `repr(transparent)` over
        //   AtomicU64, which has the size and alignment of u64 on 64-bit targets;
        // - lifetime: the slice borrows `self`, which owns the mapping;
        // - read-only memory: `SharedWord` exposes only `load(Relaxed)` of 8 bytes, which
        //   `core::sync::atomic` ("Atomic accesses to read-only memory") allows on read-only
        //   pages on 64-bit targets; the inner AtomicU64 is private, so no store, RMW or
        //   stronger-ordered load can be made through this view;
        // - races: the writer process only uses atomic stores on this memory.
        unsafe { std::slice::from_raw_parts(ptr.cast::<SharedWord>(), len / 8) }
    }
}
