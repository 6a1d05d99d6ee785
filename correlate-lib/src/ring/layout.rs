//! Where everything lives in a ring file, in 64-bit words, and the limits a reader enforces
//! before it believes a header. Format version 4.
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
//! word  9      hash seed (random per ring file): the index hash of a 4-tuple is
//!              xxh3_64_with_seed(canonical key bytes, seed)
//! words 16..48 sensor counters (SensorCounter as index)
//! HEADER_WORDS.. index: index_buckets 32-bit entries, two per word (even entry in the low half),
//!              in groups of 16 = one 64-byte line; 0 = empty, else the upper bits of the hash's
//!              high half as a tag, above `slot + 1` in the low `slot_bits` bits
//! then, at the next 4 KiB boundary
//!              slots: slot_count × slot_size bytes; per slot word 0 seqlock, word 1
//!              payload length (low 32) | crc32 (high 32), then the payload words
//! ```
//!
//! A lookup reads one index line: the group is chosen by the hash's low bits, and a key's entry
//! is only ever in its group. A miss therefore costs one cache line (a false candidate, a tag
//! collision, is rare: 1 in 2^(32 - slot_bits) per occupied entry, 1 in 32 768 at 65 536 slots).
//! Version 1 had 64-bit entries probed from any bucket (often two lines) and an unseeded hash.
//! Version 2 stored each string of a record behind its own length; version 3 stores the nine
//! lengths first and the strings back to back (record codec 2), so a reader checks them for
//! UTF-8 in one pass. Version 4 (record codec 3) adds the client's OS guess (`tcp_os`,
//! `tcp_os_distance`) and the SYN's TCP option kinds to every record.

pub const MAGIC: u64 = u64::from_le_bytes(*b"JA4RING\0");
pub const LAYOUT_VERSION: u32 = 4;

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
pub const W_HASH_SEED: usize = 9;
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
/// Index entries probed per lookup: one group, one 64-byte line of 32-bit entries. With twice as
/// many entries as slots a group holds 8 on average; one overflows (its oldest entry is dropped
/// from the index) for about 1 record in 2 500.
pub const PROBE_LIMIT: u32 = 16;
/// Bytes of one index group; groups are aligned to it (the index starts at a line boundary).
pub const INDEX_GROUP_BYTES: usize = 64;
/// Words of one index group.
pub const INDEX_GROUP_WORDS: usize = INDEX_GROUP_BYTES / 8;
/// Where the slots start: the first multiple of this many words after the index (one page),
/// so that no slot straddles a page boundary more than it must.
pub const SLOTS_ALIGN_WORDS: usize = 4096 / 8;

/// Geometry read from (or written to) a header, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub slot_size: u32,
    pub slot_count: u32,
    pub index_buckets: u32,
    pub probe_limit: u32,
}

impl Geometry {
    /// Index entries for a slot count: the next power of two at or above twice the slots, and at
    /// least one group.
    pub fn for_slots(slot_count: u32, slot_size: u32) -> Option<Self> {
        let index_buckets = slot_count
            .checked_mul(2)?
            .checked_next_power_of_two()?
            .max(PROBE_LIMIT);
        Some(Self {
            slot_size,
            slot_count,
            index_buckets,
            probe_limit: PROBE_LIMIT,
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
            || self.index_buckets < PROBE_LIMIT
            || self.index_buckets > MAX_INDEX_BUCKETS
        {
            return Some(("index_buckets", u64::from(self.index_buckets)));
        }
        // A group is one line of entries: the only probe length this layout has.
        if self.probe_limit != PROBE_LIMIT {
            return Some(("probe_limit", u64::from(self.probe_limit)));
        }
        None
    }

    /// Mask of the entry bits holding `slot + 1` (the rest is the tag): wide enough for
    /// `slot_count`. 17 bits for 65 536 slots, 25 for `MAX_SLOT_COUNT`.
    pub fn slot_mask(&self) -> u32 {
        u32::MAX >> self.slot_count.leading_zeros()
    }

    /// Index groups (a power of two: `index_buckets` is one, and at least `PROBE_LIMIT`).
    pub fn index_groups(&self) -> usize {
        self.index_buckets as usize / PROBE_LIMIT as usize
    }

    /// First word of the index group of a key whose hash is `hash`.
    pub fn group_start(&self, hash: u64) -> usize {
        // Truncation is the point: the low bits choose the group, the high half gives the tag.
        let group = hash as usize & (self.index_groups() - 1);
        self.index_start() + group * INDEX_GROUP_WORDS
    }

    /// The entry pointing at `slot` for a key whose hash is `hash`: the upper bits of the hash's
    /// high half as a tag (a reader skips most foreign entries without copying their slot) and
    /// `slot + 1` below them, so that 0 always means an empty entry.
    pub fn index_entry(&self, hash: u64, slot: u32) -> u32 {
        (entry_tag(hash) & !self.slot_mask()) | (slot.saturating_add(1) & self.slot_mask())
    }

    /// Whether `entry` carries the tag of `hash`, and if so the slot it points at (`None` for an
    /// empty entry or another tag). The slot is not checked against the slot count here: a reader
    /// does that, a writer only reads entries it wrote.
    pub fn entry_slot(&self, entry: u32, hash: u64) -> Option<u32> {
        let mask = self.slot_mask();
        ((entry ^ entry_tag(hash)) & !mask == 0)
            .then(|| (entry & mask).checked_sub(1))
            .flatten()
    }

    /// Bit `i` set for every entry `i` of a group (its 8 words) that carries the tag of `hash`:
    /// the candidates of a lookup, computed branch-free over the whole line.
    pub fn group_matches(&self, group: &[u64; INDEX_GROUP_WORDS], hash: u64) -> u32 {
        let mask = self.slot_mask();
        let tag = entry_tag(hash) & !mask;
        let mut matches = 0u32;
        for (i, word) in group.iter().enumerate() {
            for half in 0..2 {
                let e = word_entry(*word, half);
                let hit = (e & !mask) == tag && (e & mask) != 0;
                matches |= u32::from(hit) << (2 * i + half);
            }
        }
        matches
    }

    /// The slot of a non-empty entry, whatever its tag.
    pub fn entry_parts(&self, entry: u32) -> Option<u32> {
        (entry & self.slot_mask()).checked_sub(1)
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

    /// Words of the index: two entries per word.
    pub fn index_words(&self) -> usize {
        self.index_buckets as usize / 2
    }

    pub fn slots_start(&self) -> usize {
        (HEADER_WORDS + self.index_words()).next_multiple_of(SLOTS_ALIGN_WORDS)
    }

    /// Total words of the file, or `None` on overflow (a hostile header).
    pub fn total_words(&self) -> Option<usize> {
        (self.slot_count as usize)
            .checked_mul(self.slot_words())?
            .checked_add(self.slots_start())
    }
}

/// The index hash of a 4-tuple's canonical bytes in a ring whose header holds `seed`. Seeded so
/// that a client choosing its source port cannot aim at a group from outside.
pub fn key_hash(seed: u64, canonical: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(canonical, seed)
}

/// The high half of a hash, whose upper bits are an entry's tag.
pub fn entry_tag(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Entry `i` of the two packed in an index word (`i` 0: the low half).
pub fn word_entry(word: u64, i: usize) -> u32 {
    // Truncation is the point: one half of the word.
    (word >> (32 * (i & 1))) as u32
}

/// `word` with entry `i` (0: the low half) replaced by `entry`.
pub fn with_entry(word: u64, i: usize, entry: u32) -> u64 {
    let shift = 32 * (i & 1);
    (word & !(u64::from(u32::MAX) << shift)) | (u64::from(entry) << shift)
}

// `slot + 1` must fit an entry, with tag bits to spare.
const _: () = assert!(MAX_SLOT_COUNT < u32::MAX >> 4);
// A group is one line of entries, and groups are line-aligned.
const _: () = assert!(PROBE_LIMIT as usize * 4 == INDEX_GROUP_BYTES);
const _: () = assert!((HEADER_WORDS * 8).is_multiple_of(INDEX_GROUP_BYTES));
// The counters area holds every `SensorCounter` and stays inside the header.
const _: () = assert!(W_COUNTERS + MAX_COUNTERS <= HEADER_WORDS);

/// What a reader checks first ([`super::MappedFile::open`]).
pub(crate) const FILE_HEADER: super::FileHeader = super::FileHeader {
    magic: MAGIC,
    version: LAYOUT_VERSION,
    header_bytes: HEADER_BYTES,
};

pub fn pack(lo: u32, hi: u32) -> u64 {
    u64::from(lo) | (u64::from(hi) << 32)
}

pub fn unpack(w: u64) -> (u32, u32) {
    // Truncation is the point: the two halves of the word.
    (w as u32, (w >> 32) as u32)
}
