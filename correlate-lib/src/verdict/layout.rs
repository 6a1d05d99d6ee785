//! Where everything lives in a verdict table file, in 64-bit words (little-endian), and the
//! limits a reader enforces before it believes a header. Layout version 1.
//!
//! ```text
//! word 0   magic "JA4VERD\0"
//! word 1   layout version (low 32) | header bytes (high 32)
//! word 2   slot count (low 32, a power of two) | words per slot (high 32)
//! word 3   generation (unique per table file: a restarted writer makes a new file)
//! word 4   writer pid
//! word 5   creation time, Unix ns
//! word 6   hash seed (random per file): a key's home slot is
//!          xxh3_64_with_seed(kind byte ‖ key bytes, seed) & (slot count − 1)
//! word 7   writes: verdicts set since creation
//! word 8   live entries (a gauge the writer keeps)
//! word 9   evictions: live entries displaced by a new key in a full probe window
//! words 10..16 reserved (zero)
//! HEADER_WORDS.. slots, SLOT_WORDS words each:
//!   word 0      seqlock (odd while the writer rewrites the slot)
//!   word 1      tag: 0 never used, 1 deleted (tombstone), else hash | TAG_LIVE
//!   word 2      expiry, Unix ns (the entry is a miss from then on)
//!   word 3      kind (byte 0: 1 IP, 2 JA4) | key length (byte 1) | verdict length (byte 2) |
//!               rule length (byte 3) | check (high 32: `body_check` of words
//!               1..SLOT_WORDS with this word's high half zeroed)
//!   words 4..9  key bytes (IP: 16 bytes, IPv4 as `::ffff:a.b.c.d`; JA4: its ASCII text)
//!   words 9..11 verdict word (ASCII `[a-z0-9_-]`)
//!   words 11..15 rule name (printable ASCII)
//!   word 15     time the verdict was set, Unix ns
//! ```
//!
//! A lookup hashes the key and probes at most [`PROBE_LIMIT`] slots from its home, reading only
//! the tag word of each until one carries the key's tag; it stops at the first never-used slot
//! (the writer never places a key beyond one). The writer reuses tombstones and expired entries
//! and rebuilds the file (a new generation) when tombstones fill a quarter of the slots.

pub const MAGIC: u64 = u64::from_le_bytes(*b"JA4VERD\0");
pub const LAYOUT_VERSION: u32 = 1;

pub const HEADER_WORDS: usize = 16;
pub const HEADER_BYTES: usize = HEADER_WORDS * 8;

pub const W_MAGIC: usize = 0;
pub const W_VERSION: usize = 1;
// The reader opens the table with the ring's `MappedFile`, which checks these two words where
// the ring has them.
const _: () =
    assert!(W_MAGIC == crate::ring::layout::W_MAGIC && W_VERSION == crate::ring::layout::W_VERSION);
pub const W_SLOTS: usize = 2;
pub const W_GENERATION: usize = 3;
pub const W_WRITER_PID: usize = 4;
pub const W_CREATED: usize = 5;
pub const W_HASH_SEED: usize = 6;
pub const W_WRITES: usize = 7;
pub const W_LIVE: usize = 8;
pub const W_EVICTIONS: usize = 9;
/// Live verdicts keyed by JA4 (a reader skips the JA4 lookup while there are none: most
/// tables hold client addresses only).
pub const W_LIVE_JA4: usize = 10;

/// Words per slot: two cache lines.
pub const SLOT_WORDS: usize = 16;
/// Words of a slot after its seqlock word (what a reader copies).
pub const BODY_WORDS: usize = SLOT_WORDS - 1;

// Body word offsets (body word 0 is slot word 1).
pub const B_TAG: usize = 0;
pub const B_EXPIRES: usize = 1;
pub const B_META: usize = 2;
pub const B_KEY: usize = 3;
pub const B_VERDICT: usize = 8;
pub const B_RULE: usize = 10;
pub const B_SET: usize = 14;

/// Longest key: a JA4 is 36 characters; room for a longer variant (JA4 with a longer prefix).
pub const MAX_KEY_BYTES: usize = (B_VERDICT - B_KEY) * 8;
/// Longest verdict word: `block`, `challenge`, `throttle`, `allow`... stay well inside it.
pub const MAX_VERDICT_BYTES: usize = (B_RULE - B_VERDICT) * 8;
/// Longest rule name the table keeps (a detector rule name is validated against it).
pub const MAX_RULE_BYTES: usize = (B_SET - B_RULE) * 8;

pub const TAG_EMPTY: u64 = 0;
pub const TAG_TOMBSTONE: u64 = 1;
/// Set in every live tag, so a live tag is never 0 or 1.
pub const TAG_LIVE: u64 = 1 << 63;

pub const KIND_IP: u8 = 1;
pub const KIND_JA4: u8 = 2;

/// Slots probed per lookup (from the home slot on, wrapping): 8 tag words.
pub const PROBE_LIMIT: usize = 8;
pub const MIN_SLOT_COUNT: u32 = 16;
/// 1 Mi slots × 128 bytes = 128 MiB: anything larger is a corrupt header, not a configuration.
pub const MAX_SLOT_COUNT: u32 = 1 << 20;

/// What a reader checks first (the ring's `MappedFile::open`).
pub(crate) const FILE_HEADER: crate::ring::FileHeader = crate::ring::FileHeader {
    magic: MAGIC,
    version: LAYOUT_VERSION,
    header_bytes: HEADER_BYTES,
};

/// Two 32-bit halves in one header word, as the ring packs them.
pub use crate::ring::layout::{pack, unpack};

/// Total words of a file with `slot_count` slots.
pub fn total_words(slot_count: u32) -> usize {
    HEADER_WORDS + slot_count as usize * SLOT_WORDS
}

/// Whether a slot count read from a header (or configured) is one this layout allows.
pub fn valid_slot_count(n: u32) -> bool {
    n.is_power_of_two() && (MIN_SLOT_COUNT..=MAX_SLOT_COUNT).contains(&n)
}

/// The live tag of a key whose hash is `hash`.
#[inline]
pub fn live_tag(hash: u64) -> u64 {
    hash | TAG_LIVE
}

/// The metadata word without its checksum half.
pub fn meta(kind: u8, key_len: u8, verdict_len: u8, rule_len: u8) -> u32 {
    u32::from_le_bytes([kind, key_len, verdict_len, rule_len])
}

/// Check word of a body with the checksum half of its metadata word zeroed: a multiply-rotate
/// mix of the 15 words (murmur3's 64-bit constants), folded to 32 bits. The seqlock catches
/// torn writes; this catches damage (a flipped bit changes the result). Not crc32, as the
/// ring's slots: every request of every httpd child checks a hit, and crc32 costs ~500
/// instructions per slot wherever the CPU's carry-less multiply is not used (under valgrind,
/// for one) against ~60 for this.
pub fn body_check(body: &[u64; BODY_WORDS]) -> u32 {
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for (i, w) in body.iter().enumerate() {
        let w = if i == B_META {
            w & u64::from(u32::MAX)
        } else {
            *w
        };
        h = (h ^ w).wrapping_mul(0xff51_afd7_ed55_8ccd).rotate_left(29);
    }
    h = (h ^ (h >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    // Truncation is the point: 32 bits of check in the metadata word's high half.
    (h ^ (h >> 32)) as u32
}

// The fields fill the body exactly, and the lengths fit their bytes.
const _: () = assert!(B_SET + 1 == BODY_WORDS);
const _: () = assert!(MAX_KEY_BYTES <= 255 && MAX_VERDICT_BYTES <= 255 && MAX_RULE_BYTES <= 255);
const _: () = assert!(PROBE_LIMIT as u32 <= MIN_SLOT_COUNT);
