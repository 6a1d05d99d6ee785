//! Where everything lives in a ring file, in 64-bit words, and the limits a reader enforces
//! before it believes a header. Format version 1.
//!
//! ```text
//! word  0      magic "JA4RING\0"
//! word  1      layout version (low 32) | header bytes (high 32)
//! word  2      slot size in bytes (low 32) | slot count (high 32)
//! word  3      index buckets (low 32) | probe limit (high 32)
//! word  4      generation (unique per ring file)
//! word  5      writer pid
//! word  6      write cursor: records published since creation
//! word  7      capture watermark: Unix ns up to which the sensor has processed every packet
//! word  8      creation time, Unix ns
//! words 16..48 sensor counters (SensorCounter as index)
//! HEADER_WORDS.. index: index_buckets words, 0 = empty, else (hash tag << 32) | (slot + 1)
//! then         slots: slot_count × slot_size bytes; per slot word 0 seqlock, word 1
//!              payload length (low 32) | crc32 (high 32), then the payload words
//! ```

pub const MAGIC: u64 = u64::from_le_bytes(*b"JA4RING\0");
pub const LAYOUT_VERSION: u32 = 1;

pub const HEADER_WORDS: usize = 64;
pub const HEADER_BYTES: usize = HEADER_WORDS * 8;

pub const W_MAGIC: usize = 0;
pub const W_VERSION: usize = 1;
pub const W_SLOTS: usize = 2;
pub const W_INDEX: usize = 3;
pub const W_GENERATION: usize = 4;
pub const W_WRITER_PID: usize = 5;
pub const W_CURSOR: usize = 6;
pub const W_WATERMARK: usize = 7;
pub const W_CREATED: usize = 8;
pub const W_COUNTERS: usize = 16;
/// Room for sensor counters; `SensorCounter` uses the first few, the rest are for new ones
/// without a layout version change.
pub const MAX_COUNTERS: usize = 32;

/// Words at the start of every slot before the payload: seqlock, length|crc.
pub const SLOT_HEADER_WORDS: usize = 2;
/// Smallest slot: the slot header plus a record with short strings (an encoded record without
/// strings is already ~90 bytes).
pub const MIN_SLOT_SIZE: u32 = 256;
/// Largest slot a reader accepts: it bounds the copy a lookup makes (a hostile header cannot
/// make a reader allocate more than this per candidate).
pub const MAX_SLOT_SIZE: u32 = 64 * 1024;
/// 16 M slots × 1 KiB is 16 GiB: anything larger is a corrupt header, not a configuration.
pub const MAX_SLOT_COUNT: u32 = 16 * 1024 * 1024;
/// Twice `MAX_SLOT_COUNT` rounded to a power of two: what the writer makes for the largest ring.
pub const MAX_INDEX_BUCKETS: u32 = 2 * MAX_SLOT_COUNT;
/// Index buckets probed per lookup. With twice as many buckets as slots the expected probe length
/// is ~1.5; 8 keeps every lookup O(1) while losing almost no record to a full window.
pub const PROBE_LIMIT: u32 = 8;
pub const MAX_PROBE_LIMIT: u32 = 64;

/// Geometry read from (or written to) a header, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slot_size: u32,
    pub slot_count: u32,
    pub index_buckets: u32,
    pub probe_limit: u32,
}

impl Geometry {
    /// Index buckets for a slot count: the next power of two at or above twice the slots.
    pub fn for_slots(slot_count: u32, slot_size: u32) -> Option<Self> {
        let index_buckets = slot_count.checked_mul(2)?.checked_next_power_of_two()?;
        Some(Self {
            slot_size,
            slot_count,
            index_buckets,
            probe_limit: PROBE_LIMIT.min(index_buckets),
        })
    }

    /// The first field that is out of range, with its value.
    pub fn invalid_field(&self) -> Option<(&'static str, u64)> {
        if self.slot_size < MIN_SLOT_SIZE
            || self.slot_size > MAX_SLOT_SIZE
            || !self.slot_size.is_multiple_of(8)
        {
            return Some(("slot_size", u64::from(self.slot_size)));
        }
        if self.slot_count == 0 || self.slot_count > MAX_SLOT_COUNT {
            return Some(("slot_count", u64::from(self.slot_count)));
        }
        if !self.index_buckets.is_power_of_two()
            || self.index_buckets < self.slot_count
            || self.index_buckets > MAX_INDEX_BUCKETS
        {
            return Some(("index_buckets", u64::from(self.index_buckets)));
        }
        if self.probe_limit == 0
            || self.probe_limit > MAX_PROBE_LIMIT
            || self.probe_limit > self.index_buckets
        {
            return Some(("probe_limit", u64::from(self.probe_limit)));
        }
        None
    }

    pub fn slot_words(&self) -> usize {
        self.slot_size as usize / 8
    }

    pub fn payload_capacity(&self) -> usize {
        self.slot_size as usize - SLOT_HEADER_WORDS * 8
    }

    pub fn index_start(&self) -> usize {
        HEADER_WORDS
    }

    pub fn slots_start(&self) -> usize {
        HEADER_WORDS + self.index_buckets as usize
    }

    /// Total words of the file, or `None` on overflow (a hostile header).
    pub fn total_words(&self) -> Option<usize> {
        (self.slot_count as usize)
            .checked_mul(self.slot_words())?
            .checked_add(self.slots_start())
    }
}

/// An index entry pointing at `slot` for a key whose hash is `hash`: the hash's upper half as a
/// tag (a reader skips most foreign entries without copying their slot) and `slot + 1` in the
/// lower half, so that 0 always means an empty bucket.
pub fn index_entry(hash: u64, slot: u32) -> u64 {
    pack(slot.saturating_add(1), entry_tag(hash))
}

/// The tag a key's entries carry (upper 32 bits of its hash).
pub fn entry_tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// The tag and slot of a non-empty entry; `None` for an empty bucket. The slot is not checked
/// against the slot count here: a reader does that, a writer only reads entries it wrote.
pub fn entry_parts(entry: u64) -> Option<(u32, u32)> {
    let (slot_plus_one, tag) = unpack(entry);
    slot_plus_one.checked_sub(1).map(|slot| (tag, slot))
}

// `slot + 1` must fit the entry's 32-bit half.
const _: () = assert!(MAX_SLOT_COUNT < u32::MAX);
// The counters area holds every `SensorCounter` and stays inside the header.
const _: () = assert!(W_COUNTERS + MAX_COUNTERS <= HEADER_WORDS);

pub fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

pub fn unpack(w: u64) -> (u32, u32) {
    // Truncation is the point: the two halves of the word.
    (w as u32, (w >> 32) as u32)
}
