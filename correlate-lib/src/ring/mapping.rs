//! The only module of the crate with `unsafe`: mapping the ring file and viewing it as a slice of
//! `AtomicU64`. Everything else reads and writes the shared memory through that slice, so every
//! access to bytes another process may be writing at the same time is an atomic access (plain
//! loads of such memory would be a data race, i.e. undefined behaviour).

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::atomic::AtomicU64;

use memmap2::{Mmap, MmapMut, MmapOptions};

enum Map {
    ReadOnly(Mmap),
    ReadWrite(MmapMut),
}

/// A mapped ring file seen as 64-bit atomic words.
pub struct SharedWords {
    map: Map,
}

impl SharedWords {
    /// Maps the whole file read-write (the sensor, which created and sized it).
    pub fn map_read_write(file: &File) -> io::Result<Self> {
        // SAFETY: memmap2 requires that nobody truncates the file while it is mapped (that would
        // turn accesses into SIGBUS) and warns that other processes may modify it. The file is a
        // fresh temporary the writer just created and sized; readers map it read-only and never
        // truncate it, and every access goes through atomics, so concurrent modification is the
        // intended, race-free use.
        let map = unsafe { MmapOptions::new().map_mut(file)? };
        Ok(Self {
            map: Map::ReadWrite(map),
        })
    }

    /// Maps the whole file read-only (every httpd child).
    pub fn map_read_only(file: &File) -> io::Result<Self> {
        // SAFETY: as above: the writer modifies the mapped memory concurrently, which is why the
        // memory is only ever read through atomic loads. The writer never shrinks a ring file
        // (a new ring is a new file renamed over the path); a third party truncating it would
        // be a SIGBUS, the same exposure every mmap-based reader of a shared file has.
        let map = unsafe { MmapOptions::new().map(file)? };
        Ok(Self {
            map: Map::ReadOnly(map),
        })
    }

    fn bytes(&self) -> (*const u8, usize) {
        match &self.map {
            Map::ReadOnly(m) => (m.as_ptr(), m.len()),
            Map::ReadWrite(m) => (m.as_ptr(), m.len()),
        }
    }

    /// The mapping as atomic words; a trailing partial word (a file length that is not a
    /// multiple of 8) is not part of the view.
    pub fn words(&self) -> &[AtomicU64] {
        let (ptr, len) = self.bytes();
        if len < 8 {
            return &[];
        }
        // SAFETY:
        // - alignment: mmap returns page-aligned memory, so `ptr` is 8-aligned;
        // - bounds: `len / 8` whole words lie inside the mapping;
        // - validity: every bit pattern is a valid u64, and AtomicU64 has the size and alignment
        //   of u64;
        // - lifetime: the slice borrows `self`, which owns the mapping;
        // - aliasing: the memory is only accessed through these atomics (here and in the other
        //   processes), never through `&mut` or plain loads. A read-only mapping is only ever
        //   loaded from (the reader never stores), and 64-bit atomic loads on the targets we
        //   build for (x86_64, aarch64) are plain loads that do not write.
        unsafe { std::slice::from_raw_parts(ptr.cast::<AtomicU64>(), len / 8) }
    }
}
