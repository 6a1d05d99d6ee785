//! The verdict table: the detector's verdicts (`block`, `challenge`...) for a client IP or a
//! JA4, in shared memory, read by every httpd child on every request. The ring's little
//! sibling, with the same discipline: one writer (`ja4sensor detect`'s `verdict` listener),
//! read-only mappings in the readers, fixed-size slots each guarded by a seqlock and a
//! checksum, every number bounds-checked. A missing, garbage or foreign-version file is "no
//! verdict", never an error on the request path; a restarted writer makes a new file (new
//! generation), which readers notice with [`VerdictReader::is_replaced`] and re-open.
//!
//! File layout: [`layout`]. The mapping and its `unsafe` are the ring's (`ring::mapping`), the
//! seqlock protocol is the ring's (`ring::seqlock`); this file is the safe API.
//!
//! Cost of a lookup: one seeded xxh3 of 17 (IP) or ≤ 41 (JA4) bytes, one load per probed tag
//! word (an empty table: one), and for a candidate a 15-word copy and its check word (a multiply-rotate mix).

pub mod layout;

use std::fs;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use layout::{BODY_WORDS, SLOT_WORDS};

use crate::record::normalize_ip;
use crate::ring::mapping::{ReadOnlyWords, SharedWord, WritableWords};
use crate::ring::seqlock::{self, ReadAttempt};
use crate::ring::{load_word, MappedFile, NewFile, RingError};

/// Default location: beside the ring, in tmpfs.
pub const DEFAULT_VERDICT_PATH: &str = "/dev/shm/ja4sensor.verdicts";
/// Default slots: 65 536 × 128 bytes = 8 MiB, room for ~16 000 live verdicts: at a quarter
/// full, a probe window of 8 slots is practically never full (a full one evicts, counted).
pub const DEFAULT_SLOT_COUNT: u32 = 65_536;
/// Copies of a candidate slot before a reader calls it torn (as the ring's readers).
pub const READ_ATTEMPTS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum VerdictError {
    #[error("verdict table {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("verdict table {path}: not a ja4sensor verdict table (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("verdict table {path}: layout version {found}, this build reads version {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("verdict table {path}: file is {len} bytes, its header describes {needed}")]
    Truncated {
        path: PathBuf,
        len: u64,
        needed: u64,
    },
    #[error("verdict table {path}: invalid header field {field} = {value}")]
    BadHeader {
        path: PathBuf,
        field: &'static str,
        value: u64,
    },
    #[error("verdict table {path}: not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "verdict table slot count {0} is not a power of two in {min}..={max}",
        min = layout::MIN_SLOT_COUNT,
        max = layout::MAX_SLOT_COUNT
    )]
    SlotCount(u32),
    #[error("JA4 key {key:?} is not 1..={max} printable ASCII bytes", max = layout::MAX_KEY_BYTES)]
    Key { key: String },
    #[error("verdict word {word:?} is not 1..={max} bytes of [a-z0-9_-]", max = layout::MAX_VERDICT_BYTES)]
    Word { word: String },
    #[error("rule name {rule:?} is not 0..={max} bytes of printable ASCII", max = layout::MAX_RULE_BYTES)]
    Rule { rule: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> VerdictError + '_ {
    move |source| VerdictError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The ring's file helpers speak `RingError`: their I/O errors and those of a file's first header
/// words ([`MappedFile::open`]) have their counterparts here.
fn from_ring(path: &Path, e: RingError) -> VerdictError {
    match e {
        RingError::Io { path, source } => VerdictError::Io { path, source },
        RingError::NotAFile { path } => VerdictError::NotAFile { path },
        RingError::Truncated { path, len, needed } => VerdictError::Truncated { path, len, needed },
        RingError::BadMagic { path } => VerdictError::BadMagic { path },
        RingError::Version {
            path,
            found,
            expected,
        } => VerdictError::Version {
            path,
            found,
            expected,
        },
        RingError::BadHeader { path, field, value } => {
            VerdictError::BadHeader { path, field, value }
        }
        other => VerdictError::Io {
            path: path.to_path_buf(),
            source: io::Error::other(other.to_string()),
        },
    }
}

/// What a verdict is about: a client address or a TLS fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKey<'a> {
    /// Normalised like the ring's keys: `::ffff:a.b.c.d` is `a.b.c.d`.
    Ip(IpAddr),
    Ja4(&'a str),
}

impl VerdictKey<'_> {
    pub fn to_owned_key(&self) -> OwnedKey {
        match *self {
            VerdictKey::Ip(ip) => OwnedKey::Ip(normalize_ip(ip)),
            VerdictKey::Ja4(s) => OwnedKey::Ja4(s.to_owned()),
        }
    }
}

/// [`VerdictKey`] with its JA4 owned (what [`VerdictReader::entries`] returns).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum OwnedKey {
    Ip(IpAddr),
    Ja4(String),
}

impl OwnedKey {
    pub fn as_key(&self) -> VerdictKey<'_> {
        match self {
            OwnedKey::Ip(ip) => VerdictKey::Ip(*ip),
            OwnedKey::Ja4(s) => VerdictKey::Ja4(s),
        }
    }
}

impl std::fmt::Display for OwnedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OwnedKey::Ip(ip) => write!(f, "{ip}"),
            OwnedKey::Ja4(s) => f.write_str(s),
        }
    }
}

/// Bytes hashed for an address key: the kind byte, then 16 address bytes.
const IP_KEY_BYTES: usize = 17;

/// The hashed bytes of an address key (what [`KeyBytes`] holds for it, without the padding): an
/// IPv4 client as `::ffff:a.b.c.d`, so both spellings of one client are one key. What a lookup
/// hashes on the request path, built in registers.
#[inline]
fn ip_key(ip: IpAddr) -> [u8; IP_KEY_BYTES] {
    // `normalize_ip` then back to the mapped form is the identity on these 16 bytes. As one
    // integer: the compiler then writes the bytes as two words, not one by one.
    let addr: u128 = match ip {
        IpAddr::V4(v4) => 0xffff_0000_0000 | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    };
    let mut b = [0u8; IP_KEY_BYTES];
    b[0] = layout::KIND_IP;
    b[1..].copy_from_slice(&addr.to_be_bytes());
    b
}

/// A key as stored: kind, length, bytes (zero-padded). The kind byte and the bytes are kept
/// side by side, exactly what the hash reads, so hashing a key copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct KeyBytes {
    len: u8,
    /// The kind, then [`layout::MAX_KEY_BYTES`] key bytes.
    buf: [u8; 1 + layout::MAX_KEY_BYTES],
}

impl KeyBytes {
    /// `None` for a JA4 that is empty, too long or not printable ASCII (no such key is stored,
    /// so a reader's lookup of it is a miss).
    fn new(key: &VerdictKey) -> Option<Self> {
        let mut buf = [0u8; 1 + layout::MAX_KEY_BYTES];
        match *key {
            VerdictKey::Ip(ip) => {
                buf[..IP_KEY_BYTES].copy_from_slice(&ip_key(ip));
                Some(Self { len: 16, buf })
            }
            VerdictKey::Ja4(s) => {
                let b = s.as_bytes();
                if b.is_empty()
                    || b.len() > layout::MAX_KEY_BYTES
                    || !b.iter().all(u8::is_ascii_graphic)
                {
                    return None;
                }
                buf[0] = layout::KIND_JA4;
                buf[1..1 + b.len()].copy_from_slice(b);
                Some(Self {
                    len: b.len() as u8,
                    buf,
                })
            }
        }
    }

    /// A stored key's bytes (`kind` and the zero-padded key).
    fn from_parts(kind: u8, len: u8, bytes: &[u8; layout::MAX_KEY_BYTES]) -> Self {
        let mut buf = [0u8; 1 + layout::MAX_KEY_BYTES];
        buf[0] = kind;
        buf[1..].copy_from_slice(bytes);
        Self { len, buf }
    }

    fn kind(&self) -> u8 {
        self.buf[0]
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[1..]
    }

    fn hash(&self, seed: u64) -> u64 {
        let n = 1 + self.len as usize;
        xxhash_rust::xxh3::xxh3_64_with_seed(self.buf.get(..n).unwrap_or(&self.buf), seed)
    }

    fn words(&self) -> [u64; 5] {
        let mut w = [0u64; 5];
        for (dst, chunk) in w.iter_mut().zip(self.bytes().chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *dst = u64::from_le_bytes(b);
        }
        w
    }

    fn owned(&self) -> Option<OwnedKey> {
        match self.kind() {
            layout::KIND_IP if self.len == 16 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(self.bytes().get(..16)?);
                Some(OwnedKey::Ip(normalize_ip(IpAddr::V6(o.into()))))
            }
            layout::KIND_JA4 => {
                let b = self.bytes().get(..self.len as usize)?;
                Some(OwnedKey::Ja4(std::str::from_utf8(b).ok()?.to_owned()))
            }
            _ => None,
        }
    }
}

fn valid_word(w: &[u8]) -> bool {
    !w.is_empty()
        && w.len() <= layout::MAX_VERDICT_BYTES
        && w.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_' || *c == b'-')
}

fn valid_rule(r: &[u8]) -> bool {
    r.len() <= layout::MAX_RULE_BYTES && r.iter().all(|c| c.is_ascii_graphic() || *c == b' ')
}

/// Checks a verdict word as the writer will (for configuration checks).
pub fn check_word(word: &str) -> Result<(), VerdictError> {
    if valid_word(word.as_bytes()) {
        Ok(())
    } else {
        Err(VerdictError::Word { word: word.into() })
    }
}

/// Checks a rule name as the writer will (for configuration checks).
pub fn check_rule(rule: &str) -> Result<(), VerdictError> {
    if valid_rule(rule.as_bytes()) {
        Ok(())
    } else {
        Err(VerdictError::Rule { rule: rule.into() })
    }
}

/// Bytes packed into little-endian words, zero-padded.
fn pack_bytes<const N: usize>(b: &[u8]) -> [u64; N] {
    let mut w = [0u64; N];
    for (dst, chunk) in w.iter_mut().zip(b.chunks(8)) {
        let mut x = [0u8; 8];
        x[..chunk.len()].copy_from_slice(chunk);
        *dst = u64::from_le_bytes(x);
    }
    w
}

fn unpack_bytes<const B: usize>(words: &[u64]) -> [u8; B] {
    let mut out = [0u8; B];
    for (dst, w) in out.chunks_exact_mut(8).zip(words) {
        dst.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// A verdict found by a lookup, copied out of the table (no allocation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    word: [u8; layout::MAX_VERDICT_BYTES],
    word_len: u8,
    rule: [u8; layout::MAX_RULE_BYTES],
    rule_len: u8,
    /// Unix ns from which the verdict no longer applies.
    pub expires_ns: u64,
    /// Unix ns when the detector set it.
    pub set_ns: u64,
}

impl Verdict {
    /// The verdict word, e.g. `block` (checked ASCII by the lookup).
    pub fn word(&self) -> &str {
        std::str::from_utf8(self.word.get(..self.word_len as usize).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The rule that reached it (may be empty).
    pub fn rule(&self) -> &str {
        std::str::from_utf8(self.rule.get(..self.rule_len as usize).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl std::fmt::Debug for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verdict")
            .field("word", &self.word())
            .field("rule", &self.rule())
            .field("expires_ns", &self.expires_ns)
            .field("set_ns", &self.set_ns)
            .finish()
    }
}

/// Outcome of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictLookup {
    Hit(Verdict),
    /// No verdict for the key, or an expired one.
    Miss,
    /// The key's slot was being rewritten on every attempt, or failed its checksum: treated
    /// as a miss, counted apart.
    Torn,
}

impl VerdictLookup {
    /// The verdict of a hit (a miss and a torn read are both "no verdict" to a request).
    #[inline]
    pub fn hit(self) -> Option<Verdict> {
        match self {
            VerdictLookup::Hit(v) => Some(v),
            VerdictLookup::Miss | VerdictLookup::Torn => None,
        }
    }
}

/// A decoded, checked slot body.
struct Entry {
    key: KeyBytes,
    verdict: Verdict,
}

/// Decodes a stable copy of a slot body; `None` unless every length, byte and the checksum is
/// what a writer of this layout writes.
fn decode(body: &[u64; BODY_WORDS]) -> Option<Entry> {
    if body[layout::B_TAG] & layout::TAG_LIVE == 0 {
        return None;
    }
    let (meta, crc) = layout::unpack(body[layout::B_META]);
    if layout::body_check(body) != crc {
        return None;
    }
    let [kind, key_len, word_len, rule_len] = meta.to_le_bytes();
    let (kl, wl, rl) = (key_len as usize, word_len as usize, rule_len as usize);
    if kl == 0
        || kl > layout::MAX_KEY_BYTES
        || wl > layout::MAX_VERDICT_BYTES
        || rl > layout::MAX_RULE_BYTES
    {
        return None;
    }
    let key_bytes: [u8; layout::MAX_KEY_BYTES] =
        unpack_bytes(body.get(layout::B_KEY..layout::B_VERDICT)?);
    let word: [u8; layout::MAX_VERDICT_BYTES] =
        unpack_bytes(body.get(layout::B_VERDICT..layout::B_RULE)?);
    let rule: [u8; layout::MAX_RULE_BYTES] = unpack_bytes(body.get(layout::B_RULE..layout::B_SET)?);
    if !valid_word(word.get(..wl)?) || !valid_rule(rule.get(..rl)?) {
        return None;
    }
    let key = KeyBytes::from_parts(kind, key_len, &key_bytes);
    match kind {
        layout::KIND_IP if kl == 16 => {}
        layout::KIND_JA4 if key_bytes.get(..kl)?.iter().all(u8::is_ascii_graphic) => {}
        _ => return None,
    }
    Some(Entry {
        key,
        verdict: Verdict {
            word,
            word_len,
            rule,
            rule_len,
            expires_ns: body[layout::B_EXPIRES],
            set_ns: body[layout::B_SET],
        },
    })
}

/// The verdict of a stable copy of a slot whose key the caller already compared with its own
/// (`key_words`, kind and length): the lookup's path, which skips unpacking and re-checking the
/// key. `None` unless the check word, every length and byte are what a writer of this layout
/// writes.
fn decode_verdict(
    body: &[u64; BODY_WORDS],
    kb: &KeyBytes,
    key_words: &[u64; 5],
) -> Option<Verdict> {
    let (meta, check) = layout::unpack(body[layout::B_META]);
    let [kind, key_len, word_len, rule_len] = meta.to_le_bytes();
    if kind != kb.kind()
        || key_len != kb.len
        || body.get(layout::B_KEY..layout::B_VERDICT)? != key_words
    {
        return None;
    }
    if layout::body_check(body) != check {
        return None;
    }
    let (wl, rl) = (word_len as usize, rule_len as usize);
    if wl > layout::MAX_VERDICT_BYTES || rl > layout::MAX_RULE_BYTES {
        return None;
    }
    let word: [u8; layout::MAX_VERDICT_BYTES] =
        unpack_bytes(body.get(layout::B_VERDICT..layout::B_RULE)?);
    let rule: [u8; layout::MAX_RULE_BYTES] = unpack_bytes(body.get(layout::B_RULE..layout::B_SET)?);
    if !valid_word(word.get(..wl)?) || !valid_rule(rule.get(..rl)?) {
        return None;
    }
    Some(Verdict {
        word,
        word_len,
        rule,
        rule_len,
        expires_ns: body[layout::B_EXPIRES],
        set_ns: body[layout::B_SET],
    })
}

/// The writer's view of one slot (never read back from the file, so never trusted from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Empty,
    Tombstone,
    Live { expires_ns: u64, key: KeyBytes },
}

/// What [`VerdictWriter::set`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOutcome {
    /// A new key took a free (never used or deleted) slot.
    Inserted,
    /// The key already had a verdict: replaced.
    Replaced,
    /// A new key took the slot of an expired verdict.
    ReusedExpired,
    /// The probe window was full of live verdicts: the one expiring first was dropped.
    Evicted,
}

/// The detector's handle: creates the table file and sets verdicts.
pub struct VerdictWriter {
    path: PathBuf,
    mode: u32,
    gid: Option<u32>,
    map: WritableWords,
    slot_count: u32,
    generation: u64,
    hash_seed: u64,
    states: Vec<SlotState>,
    keys: std::collections::HashMap<KeyBytes, u32>,
    /// How many of `keys` are JA4 keys (the header's `W_LIVE_JA4`), kept as they come and go:
    /// counting them at every `set` made filling a table quadratic.
    live_ja4: usize,
    tombstones: usize,
    writes: u64,
    evictions: u64,
}

impl VerdictWriter {
    /// Creates a fresh, empty table at `path` (written under a temporary name, then renamed
    /// over the old file: readers see the old table or a complete new one), with a new
    /// generation. `mode` is the file mode (0o640: the Apache group reads), `gid` its group.
    pub fn create(
        path: &Path,
        slot_count: u32,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Self, VerdictError> {
        if !layout::valid_slot_count(slot_count) {
            return Err(VerdictError::SlotCount(slot_count));
        }
        let len = (layout::total_words(slot_count) * 8) as u64;
        let pid = std::process::id();
        // The file stays open until the table is in place, as the ring's.
        let NewFile {
            tmp,
            file: _file,
            map,
        } = NewFile::create(path, pid, len, mode, gid).map_err(|e| from_ring(path, e))?;
        let (generation, hash_seed) = crate::ring::new_generation(pid);
        let words = map.words();
        let set = |i: usize, v: u64| {
            if let Some(w) = words.get(i) {
                w.store(v, Ordering::Relaxed);
            }
        };
        set(
            layout::W_VERSION,
            layout::pack(layout::LAYOUT_VERSION, layout::HEADER_BYTES as u32),
        );
        set(
            layout::W_SLOTS,
            layout::pack(slot_count, layout::SLOT_WORDS as u32),
        );
        set(layout::W_GENERATION, generation);
        set(layout::W_WRITER_PID, u64::from(pid));
        set(layout::W_CREATED, crate::unix_now_ns());
        set(layout::W_HASH_SEED, hash_seed);
        // The magic last: a header with the magic is complete.
        if let Some(w) = words.get(layout::W_MAGIC) {
            w.store(layout::MAGIC, Ordering::Release);
        }
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(path)(e));
        }
        Ok(Self {
            path: path.to_path_buf(),
            mode,
            gid,
            map,
            slot_count,
            generation,
            hash_seed,
            states: vec![SlotState::Empty; slot_count as usize],
            keys: std::collections::HashMap::new(),
            live_ja4: 0,
            tombstones: 0,
            writes: 0,
            evictions: 0,
        })
    }

    /// As [`VerdictWriter::create`], keeping the unexpired verdicts of the table already at
    /// `path` (a restarted detector keeps blocking whom it blocked). A missing or unreadable
    /// old table is simply not carried over. Returns the writer and how many were kept.
    pub fn create_keeping(
        path: &Path,
        slot_count: u32,
        mode: u32,
        gid: Option<u32>,
        now_ns: u64,
    ) -> Result<(Self, usize), VerdictError> {
        let old = VerdictReader::open(path)
            .map(|r| r.entries(now_ns))
            .unwrap_or_default();
        let mut w = Self::create(path, slot_count, mode, gid)?;
        let mut kept = 0;
        for e in &old {
            if w.set(&e.key.as_key(), &e.word, &e.rule, e.expires_ns, now_ns)
                .is_ok()
            {
                kept += 1;
            }
        }
        Ok((w, kept))
    }

    fn words(&self) -> &[AtomicU64] {
        self.map.words()
    }

    fn slot(&self, i: usize) -> Option<&[AtomicU64]> {
        let start = layout::HEADER_WORDS + i * SLOT_WORDS;
        self.words().get(start..start + SLOT_WORDS)
    }

    fn write_body(&self, i: usize, body: &[u64; BODY_WORDS]) {
        if let Some(slot) = self.slot(i) {
            seqlock::write(slot, body.iter().copied());
        }
    }

    fn set_header(&self, w: usize, v: u64) {
        if let Some(word) = self.words().get(w) {
            word.store(v, Ordering::Relaxed);
        }
    }

    fn publish_counters(&self) {
        self.set_header(layout::W_WRITES, self.writes);
        self.set_header(layout::W_LIVE, self.keys.len() as u64);
        self.set_header(layout::W_LIVE_JA4, self.live_ja4 as u64);
        self.set_header(layout::W_EVICTIONS, self.evictions);
    }

    /// Sets (or replaces) the verdict for `key` until `expires_ns`. The word must be
    /// `[a-z0-9_-]{1,16}`, the rule printable ASCII of at most 32 bytes.
    pub fn set(
        &mut self,
        key: &VerdictKey,
        word: &str,
        rule: &str,
        expires_ns: u64,
        now_ns: u64,
    ) -> Result<SetOutcome, VerdictError> {
        let kb = KeyBytes::new(key).ok_or_else(|| VerdictError::Key {
            key: format!("{key:?}"),
        })?;
        check_word(word)?;
        check_rule(rule)?;
        let hash = kb.hash(self.hash_seed);
        let mask = self.slot_count as usize - 1;
        let home = hash as usize & mask;
        let (slot, outcome) = match self.keys.get(&kb) {
            Some(s) => (*s as usize, SetOutcome::Replaced),
            None => {
                let mut free: Option<(usize, SetOutcome)> = None;
                let mut soonest: Option<(usize, u64)> = None;
                for p in 0..layout::PROBE_LIMIT {
                    let i = (home + p) & mask;
                    match self.states.get(i).copied().unwrap_or(SlotState::Empty) {
                        SlotState::Empty => {
                            free.get_or_insert((i, SetOutcome::Inserted));
                            // Readers stop at the first never-used slot: nothing goes beyond it.
                            break;
                        }
                        SlotState::Tombstone => {
                            free.get_or_insert((i, SetOutcome::Inserted));
                        }
                        SlotState::Live { expires_ns: e, .. } if e <= now_ns => {
                            free.get_or_insert((i, SetOutcome::ReusedExpired));
                        }
                        SlotState::Live { expires_ns: e, .. } => {
                            if soonest.is_none_or(|(_, s)| e < s) {
                                soonest = Some((i, e));
                            }
                        }
                    }
                }
                match (free, soonest) {
                    (Some(f), _) => f,
                    (None, Some((i, _))) => (i, SetOutcome::Evicted),
                    // PROBE_LIMIT ≥ 1: the loop saw at least one slot.
                    (None, None) => (home, SetOutcome::Evicted),
                }
            }
        };
        // The slot's previous occupant (an expired or evicted verdict of another key) loses it.
        match self.states.get(slot).copied() {
            Some(SlotState::Live { key: old, .. }) if old != kb => {
                self.forget(&old);
            }
            Some(SlotState::Tombstone) => self.tombstones = self.tombstones.saturating_sub(1),
            _ => {}
        }
        let mut body = [0u64; BODY_WORDS];
        body[layout::B_TAG] = layout::live_tag(hash);
        body[layout::B_EXPIRES] = expires_ns;
        let kw = kb.words();
        body[layout::B_KEY..layout::B_VERDICT].copy_from_slice(&kw);
        body[layout::B_VERDICT..layout::B_RULE].copy_from_slice(&pack_bytes::<2>(word.as_bytes()));
        body[layout::B_RULE..layout::B_SET].copy_from_slice(&pack_bytes::<4>(rule.as_bytes()));
        body[layout::B_SET] = now_ns;
        let meta = layout::meta(kb.kind(), kb.len, word.len() as u8, rule.len() as u8);
        body[layout::B_META] = u64::from(meta);
        body[layout::B_META] = layout::pack(meta, layout::body_check(&body));
        self.write_body(slot, &body);
        if let Some(s) = self.states.get_mut(slot) {
            *s = SlotState::Live {
                expires_ns,
                key: kb,
            };
        }
        if self.keys.insert(kb, slot as u32).is_none() && kb.kind() == layout::KIND_JA4 {
            self.live_ja4 += 1;
        }
        self.writes += 1;
        if outcome == SetOutcome::Evicted {
            self.evictions += 1;
        }
        self.publish_counters();
        Ok(outcome)
    }

    /// `key` no longer has a verdict: its slot, if it had one.
    fn forget(&mut self, key: &KeyBytes) -> Option<u32> {
        let slot = self.keys.remove(key)?;
        if key.kind() == layout::KIND_JA4 {
            self.live_ja4 = self.live_ja4.saturating_sub(1);
        }
        Some(slot)
    }

    fn bury(&mut self, slot: usize) {
        let mut body = [0u64; BODY_WORDS];
        body[layout::B_TAG] = layout::TAG_TOMBSTONE;
        self.write_body(slot, &body);
        if let Some(s) = self.states.get_mut(slot) {
            *s = SlotState::Tombstone;
        }
        self.tombstones += 1;
    }

    /// Removes the verdict for `key`; false when it had none.
    pub fn remove(&mut self, key: &VerdictKey) -> bool {
        let Some(kb) = KeyBytes::new(key) else {
            return false;
        };
        let Some(slot) = self.forget(&kb) else {
            return false;
        };
        self.bury(slot as usize);
        self.publish_counters();
        true
    }

    /// Turns every verdict expired at `now_ns` into a tombstone (readers already treat them as
    /// misses; this frees their slots and keeps `live()` honest). Returns how many. When
    /// tombstones fill a quarter of the table, it is rebuilt ([`VerdictWriter::rebuild`]) so
    /// that misses stay one tag load.
    pub fn expire(&mut self, now_ns: u64) -> Result<usize, VerdictError> {
        let expired: Vec<(KeyBytes, u32)> = self
            .keys
            .iter()
            .filter(|(_, s)| {
                matches!(self.states.get(**s as usize), Some(SlotState::Live { expires_ns, .. }) if *expires_ns <= now_ns)
            })
            .map(|(k, s)| (*k, *s))
            .collect();
        for (k, s) in &expired {
            self.forget(k);
            self.bury(*s as usize);
        }
        self.publish_counters();
        if self.tombstones * 4 >= self.slot_count as usize {
            self.rebuild(now_ns)?;
        }
        Ok(expired.len())
    }

    /// Writes a new table file (new generation, no tombstones) with the live verdicts, renamed
    /// over this one; readers re-open it when they notice the replacement.
    pub fn rebuild(&mut self, now_ns: u64) -> Result<(), VerdictError> {
        let live: Vec<(OwnedKey, Verdict)> = self
            .entries_local()
            .into_iter()
            .filter(|(_, v)| v.expires_ns > now_ns)
            .collect();
        let mut fresh = Self::create(&self.path, self.slot_count, self.mode, self.gid)?;
        fresh.writes = self.writes;
        fresh.evictions = self.evictions;
        for (k, v) in &live {
            fresh.set(&k.as_key(), v.word(), v.rule(), v.expires_ns, now_ns)?;
        }
        *self = fresh;
        Ok(())
    }

    /// The writer's own entries, read back from its mapping.
    fn entries_local(&self) -> Vec<(OwnedKey, Verdict)> {
        let mut out = Vec::with_capacity(self.keys.len());
        for s in self.keys.values() {
            let Some(slot) = self.slot(*s as usize) else {
                continue;
            };
            let (attempt, body) = seqlock::read_words::<AtomicU64, BODY_WORDS>(slot);
            if attempt != ReadAttempt::Stable {
                continue;
            }
            if let Some(e) = decode(&body) {
                if let Some(k) = e.key.owned() {
                    out.push((k, e.verdict));
                }
            }
        }
        out
    }

    /// Live verdicts (expired ones included until [`VerdictWriter::expire`] runs).
    pub fn live(&self) -> usize {
        self.keys.len()
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn writes(&self) -> u64 {
        self.writes
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }
}

/// A read-only view of a verdict table, one per httpd child, shared by its threads.
pub struct VerdictReader {
    path: PathBuf,
    map: ReadOnlyWords,
    slot_count: u32,
    generation: u64,
    hash_seed: u64,
    identity: (u64, u64),
}

/// A verdict listed by [`VerdictReader::entries`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictEntry {
    pub key: OwnedKey,
    pub word: String,
    pub rule: String,
    pub expires_ns: u64,
    pub set_ns: u64,
}

impl VerdictReader {
    /// Maps an existing table read-only and validates its header. A missing, truncated,
    /// foreign or garbage file is an error (the caller treats it as "no verdicts"), never a
    /// crash.
    pub fn open(path: &Path) -> Result<Self, VerdictError> {
        let MappedFile {
            map,
            meta,
            mapped_len,
        } = MappedFile::open(path, &layout::FILE_HEADER).map_err(|e| from_ring(path, e))?;
        let words = map.words();
        let word = |i: usize| load_word(words, i);
        let bad = |field, value| VerdictError::BadHeader {
            path: path.to_path_buf(),
            field,
            value,
        };
        let (slot_count, slot_words) = layout::unpack(word(layout::W_SLOTS));
        if !layout::valid_slot_count(slot_count) {
            return Err(bad("slot_count", u64::from(slot_count)));
        }
        if slot_words as usize != SLOT_WORDS {
            return Err(bad("slot_words", u64::from(slot_words)));
        }
        let needed = (layout::total_words(slot_count) * 8) as u64;
        if mapped_len < needed {
            return Err(VerdictError::Truncated {
                path: path.to_path_buf(),
                len: mapped_len,
                needed,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            generation: word(layout::W_GENERATION),
            hash_seed: word(layout::W_HASH_SEED),
            map,
            slot_count,
            identity: (meta.dev(), meta.ino()),
        })
    }

    fn slot(&self, i: usize) -> Option<&[SharedWord]> {
        let start = layout::HEADER_WORDS + i * SLOT_WORDS;
        self.map.words().get(start..start + SLOT_WORDS)
    }

    /// The verdict for `key` that has not expired at `now_ns`. O(1): at most
    /// [`layout::PROBE_LIMIT`] tag loads and one checked copy.
    pub fn lookup(&self, key: &VerdictKey, now_ns: u64) -> VerdictLookup {
        self.lookup_inline(key, now_ns)
    }

    /// [`VerdictReader::lookup`], inlined into each entry point: one call from the module
    /// per request, the rest in registers.
    #[inline(always)]
    fn lookup_inline(&self, key: &VerdictKey, now_ns: u64) -> VerdictLookup {
        // An empty table (the detector runs but has no verdict: what most requests meet) is a
        // miss without hashing the key.
        if load_word(self.map.words(), layout::W_LIVE) == 0 {
            return VerdictLookup::Miss;
        }
        let hash = match *key {
            // Every request's key: hashed straight from the address bytes.
            VerdictKey::Ip(ip) => xxhash_rust::xxh3::xxh3_64_with_seed(&ip_key(ip), self.hash_seed),
            VerdictKey::Ja4(_) => match KeyBytes::new(key) {
                Some(kb) => kb.hash(self.hash_seed),
                None => return VerdictLookup::Miss,
            },
        };
        self.probe(key, hash, now_ns)
    }

    /// The probes of a lookup from `hash`'s home slot. A miss reads one tag word per slot, and
    /// nothing else: the window is bounds-checked once, not per slot, and the key is only
    /// unpacked for a slot whose tag is the key's ([`VerdictReader::read_candidate`]).
    #[inline(always)]
    fn probe(&self, key: &VerdictKey, hash: u64, now_ns: u64) -> VerdictLookup {
        let want = layout::live_tag(hash);
        let n = self.slot_count as usize;
        let home = hash as usize & (n - 1);
        let words = self.map.words();
        let start = layout::HEADER_WORDS + home * SLOT_WORDS;
        const WINDOW: usize = layout::PROBE_LIMIT * SLOT_WORDS;
        // All but the few homes within PROBE_LIMIT of the last slot: one run of slots.
        if home + layout::PROBE_LIMIT <= n {
            if let Some(window) = words.get(start..start + WINDOW) {
                return self.scan([window, &[]], key, want, now_ns);
            }
        }
        self.probe_wrapping(key, hash, now_ns)
    }

    /// [`VerdictReader::probe`] of a window that runs past the last slot: up to it, then on
    /// from slot 0.
    #[cold]
    #[inline(never)]
    fn probe_wrapping(&self, key: &VerdictKey, hash: u64, now_ns: u64) -> VerdictLookup {
        let n = self.slot_count as usize;
        let home = hash as usize & (n - 1);
        let slots = self
            .map
            .words()
            .get(layout::HEADER_WORDS..layout::HEADER_WORDS + n * SLOT_WORDS)
            .unwrap_or_default();
        let first = (n - home).min(layout::PROBE_LIMIT);
        let runs = [
            slots
                .get(home * SLOT_WORDS..(home + first) * SLOT_WORDS)
                .unwrap_or_default(),
            slots
                .get(..(layout::PROBE_LIMIT - first) * SLOT_WORDS)
                .unwrap_or_default(),
        ];
        self.scan(runs, key, layout::live_tag(hash), now_ns)
    }

    /// The tag words of the slots in `runs`, in order, until a never-used slot (the writer
    /// never places a key beyond one) or the key's own slot.
    #[inline(always)]
    fn scan(
        &self,
        runs: [&[SharedWord]; 2],
        key: &VerdictKey,
        want: u64,
        now_ns: u64,
    ) -> VerdictLookup {
        let mut torn = false;
        for run in runs {
            for slot in run.chunks_exact(SLOT_WORDS) {
                let tag = slot.get(1).map_or(layout::TAG_EMPTY, SharedWord::load);
                if tag == layout::TAG_EMPTY {
                    return if torn {
                        VerdictLookup::Torn
                    } else {
                        VerdictLookup::Miss
                    };
                }
                if tag != want {
                    continue;
                }
                match self.read_candidate(slot, key, want) {
                    Candidate::Ours(v) if v.expires_ns > now_ns => return VerdictLookup::Hit(v),
                    // A key has one slot: an expired verdict is the answer.
                    Candidate::Ours(_) => return VerdictLookup::Miss,
                    Candidate::Other => {}
                    Candidate::Torn => torn = true,
                }
            }
        }
        if torn {
            VerdictLookup::Torn
        } else {
            VerdictLookup::Miss
        }
    }

    /// [`VerdictReader::lookup`] of a client address: what every request pays.
    pub fn lookup_ip(&self, ip: IpAddr, now_ns: u64) -> VerdictLookup {
        self.lookup_inline(&VerdictKey::Ip(ip), now_ns)
    }

    /// [`VerdictReader::lookup`] of a JA4.
    #[inline]
    pub fn lookup_ja4(&self, ja4: &str, now_ns: u64) -> VerdictLookup {
        // The writer publishes how many JA4 verdicts are live: none, nothing to probe for.
        if load_word(self.map.words(), layout::W_LIVE_JA4) == 0 {
            return VerdictLookup::Miss;
        }
        self.lookup(&VerdictKey::Ja4(ja4), now_ns)
    }

    /// A slot whose tag word is the key's: copied under its seqlock and checked. Out of line:
    /// the probe loop of a miss keeps to its registers.
    #[inline(never)]
    fn read_candidate(&self, slot: &[SharedWord], key: &VerdictKey, want: u64) -> Candidate {
        // The tag matched, so the key is one `KeyBytes::new` accepted when it was hashed.
        let Some(kb) = KeyBytes::new(key) else {
            return Candidate::Other;
        };
        let key_words = kb.words();
        for _ in 0..READ_ATTEMPTS {
            let (attempt, body) = seqlock::read_words::<SharedWord, BODY_WORDS>(slot);
            if attempt == ReadAttempt::Raced {
                std::hint::spin_loop();
                continue;
            }
            if body[layout::B_TAG] != want {
                // Rewritten since its tag was read (another key, or a tombstone).
                return Candidate::Other;
            }
            if let Some(v) = decode_verdict(&body, &kb, &key_words) {
                return Candidate::Ours(v);
            }
            // Our tag but not our verdict: another key with the same hash (as good as never:
            // 63 bits), else damage.
            return match decode(&body) {
                Some(e) if e.key != kb => Candidate::Other,
                _ => Candidate::Torn,
            };
        }
        Candidate::Torn
    }

    /// Every valid verdict not expired at `now_ns` (slot order). For the detector's carry-over
    /// across a restart, status pages and tests; not for the request path.
    pub fn entries(&self, now_ns: u64) -> Vec<VerdictEntry> {
        let mut out = Vec::new();
        for i in 0..self.slot_count as usize {
            let Some(slot) = self.slot(i) else { break };
            if slot.get(1).map_or(0, SharedWord::load) & layout::TAG_LIVE == 0 {
                continue;
            }
            for _ in 0..READ_ATTEMPTS {
                let (attempt, body) = seqlock::read_words::<SharedWord, BODY_WORDS>(slot);
                if attempt == ReadAttempt::Raced {
                    continue;
                }
                if let Some(e) = decode(&body) {
                    if let (Some(key), true) = (e.key.owned(), e.verdict.expires_ns > now_ns) {
                        out.push(VerdictEntry {
                            key,
                            word: e.verdict.word().to_owned(),
                            rule: e.verdict.rule().to_owned(),
                            expires_ns: e.verdict.expires_ns,
                            set_ns: e.verdict.set_ns,
                        });
                    }
                }
                break;
            }
        }
        out
    }

    /// True when the file at the path is no longer the one mapped (the detector restarted or
    /// rebuilt it, or it was deleted): re-open. Costs one `stat`; the module does it at most
    /// once a second.
    pub fn is_replaced(&self) -> bool {
        crate::ring::is_replaced(&self.path, self.identity)
    }

    /// The inode of the mapped file.
    pub fn inode(&self) -> u64 {
        self.identity.1
    }

    /// What is wrong with the mapped file itself: cut shorter than the mapping (a SIGBUS the
    /// ring's guard turned into zero pages, or a smaller file at the same inode) or its header
    /// overwritten in place. The detector never does either (a new table is a new file).
    pub fn damage(&self) -> Option<VerdictError> {
        let words = self.map.words();
        let mapped = (words.len() as u64).saturating_mul(8);
        let same = fs::metadata(&self.path)
            .ok()
            .filter(|m| (m.dev(), m.ino()) == self.identity);
        if self.map.faulted() || same.as_ref().is_some_and(|m| m.len() < mapped) {
            return Some(VerdictError::Truncated {
                path: self.path.clone(),
                len: same.map_or(0, |m| m.len()),
                needed: mapped,
            });
        }
        if load_word(words, layout::W_MAGIC) != layout::MAGIC
            || load_word(words, layout::W_GENERATION) != self.generation
        {
            return Some(VerdictError::BadMagic {
                path: self.path.clone(),
            });
        }
        None
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn slot_count(&self) -> u32 {
        self.slot_count
    }

    /// Live verdicts according to the writer's gauge in the header.
    pub fn live(&self) -> u64 {
        load_word(self.map.words(), layout::W_LIVE)
    }

    /// Verdicts set since the table was created.
    pub fn writes(&self) -> u64 {
        load_word(self.map.words(), layout::W_WRITES)
    }

    pub fn evictions(&self) -> u64 {
        load_word(self.map.words(), layout::W_EVICTIONS)
    }

    pub fn writer_pid(&self) -> u32 {
        u32::try_from(load_word(self.map.words(), layout::W_WRITER_PID)).unwrap_or(0)
    }
}

enum Candidate {
    Ours(Verdict),
    Other,
    Torn,
}

// httpd children share one reader between their threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<VerdictReader>();
    send_sync::<VerdictWriter>();
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000_000;
    const HOUR: u64 = 3_600_000_000_000;

    fn table(dir: &Path, slots: u32) -> (PathBuf, VerdictWriter) {
        let p = dir.join("t.verdicts");
        let w = VerdictWriter::create(&p, slots, 0o600, None).unwrap();
        (p, w)
    }

    #[test]
    fn a_verdict_for_an_ip_is_found_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 64);
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            w.set(&VerdictKey::Ip(ip), "block", "flood", NOW + HOUR, NOW)
                .unwrap(),
            SetOutcome::Inserted
        );
        let r = VerdictReader::open(&p).unwrap();
        let VerdictLookup::Hit(v) = r.lookup_ip(ip, NOW) else {
            panic!("no hit")
        };
        assert_eq!(
            (v.word(), v.rule(), v.expires_ns),
            ("block", "flood", NOW + HOUR)
        );
        // The dual-stack spelling of the same client finds it too.
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert!(matches!(r.lookup_ip(mapped, NOW), VerdictLookup::Hit(_)));
        assert_eq!(r.lookup_ip(ip, NOW + HOUR), VerdictLookup::Miss, "expired");
        assert_eq!(
            r.lookup_ip("192.0.2.8".parse().unwrap(), NOW),
            VerdictLookup::Miss
        );
        assert_eq!(r.live(), 1);
    }

    #[test]
    fn ja4_and_ip_keys_are_distinct_and_replaced_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 64);
        let ja4 = "t13d1516h2_8daaf6152771_02713d6af862";
        w.set(&VerdictKey::Ja4(ja4), "challenge", "r1", NOW + HOUR, NOW)
            .unwrap();
        assert_eq!(
            w.set(&VerdictKey::Ja4(ja4), "block", "r2", NOW + HOUR, NOW)
                .unwrap(),
            SetOutcome::Replaced
        );
        let r = VerdictReader::open(&p).unwrap();
        let VerdictLookup::Hit(v) = r.lookup_ja4(ja4, NOW) else {
            panic!()
        };
        assert_eq!((v.word(), v.rule()), ("block", "r2"));
        assert_eq!(
            r.lookup_ja4("t13d1516h2_8daaf6152771_02713d6af863", NOW),
            VerdictLookup::Miss
        );
        assert!(w.remove(&VerdictKey::Ja4(ja4)));
        assert_eq!(r.lookup_ja4(ja4, NOW), VerdictLookup::Miss);
        assert!(!w.remove(&VerdictKey::Ja4(ja4)));
    }

    #[test]
    fn the_live_ja4_count_follows_sets_evictions_removals_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 16);
        let ja4s: Vec<String> = (0..40)
            .map(|i| format!("t13d1516h2_8daaf6152771_{i:012x}"))
            .collect();
        let check = |w: &VerdictWriter, what: &str| {
            let brute = w
                .keys
                .keys()
                .filter(|k| k.kind() == layout::KIND_JA4)
                .count();
            assert_eq!(w.live_ja4, brute, "{what}");
            // Opened anew: an expiry may have rebuilt the table into a new file.
            let r = VerdictReader::open(&p).unwrap();
            assert_eq!(
                load_word(r.map.words(), layout::W_LIVE_JA4),
                brute as u64,
                "{what}"
            );
        };
        // More keys than slots: sets evict JA4 and IP verdicts alike.
        for (i, ja4) in ja4s.iter().enumerate() {
            let ttl = HOUR * (1 + i as u64 % 3);
            w.set(&VerdictKey::Ja4(ja4), "block", "r", NOW + ttl, NOW)
                .unwrap();
            let ip = VerdictKey::Ip(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into());
            w.set(&ip, "block", "r", NOW + ttl, NOW).unwrap();
            w.set(&VerdictKey::Ja4(ja4), "challenge", "r", NOW + ttl, NOW)
                .unwrap();
            check(&w, &format!("set {i}"));
        }
        for ja4 in &ja4s[30..] {
            w.remove(&VerdictKey::Ja4(ja4));
        }
        check(&w, "removed");
        w.expire(NOW + HOUR).unwrap();
        check(&w, "expired");
        w.expire(NOW + 3 * HOUR).unwrap();
        check(&w, "all expired");
        assert_eq!(w.live_ja4, 0);
    }

    #[test]
    fn bad_words_rules_and_keys_are_refused_by_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (_p, mut w) = table(dir.path(), 64);
        let ip = VerdictKey::Ip("10.0.0.1".parse().unwrap());
        assert!(matches!(
            w.set(&ip, "Block", "r", NOW, NOW),
            Err(VerdictError::Word { .. })
        ));
        assert!(matches!(
            w.set(&ip, "", "r", NOW, NOW),
            Err(VerdictError::Word { .. })
        ));
        assert!(matches!(
            w.set(&ip, "block", &"x".repeat(33), NOW, NOW),
            Err(VerdictError::Rule { .. })
        ));
        assert!(matches!(
            w.set(&VerdictKey::Ja4("a b"), "block", "r", NOW, NOW),
            Err(VerdictError::Key { .. })
        ));
        assert!(matches!(
            VerdictWriter::create(&dir.path().join("x"), 100, 0o600, None),
            Err(VerdictError::SlotCount(100))
        ));
    }

    #[test]
    fn a_full_probe_window_evicts_the_verdict_expiring_first() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 16);
        let mut outcomes = Vec::new();
        for i in 0..40u64 {
            let ip = VerdictKey::Ip(IpAddr::from([10, 0, 0, i as u8]));
            outcomes.push(w.set(&ip, "block", "r", NOW + HOUR + i, NOW).unwrap());
        }
        assert!(outcomes.contains(&SetOutcome::Evicted));
        // Every set either took a slot or displaced a verdict; at most one key per slot.
        assert!(w.live() <= 16);
        assert_eq!(w.live() as u64 + w.evictions(), 40);
        assert!(w.evictions() >= 24);
        // The newest key is always present; every listed entry reads back.
        let r = VerdictReader::open(&p).unwrap();
        let last = VerdictKey::Ip(IpAddr::from([10, 0, 0, 39]));
        assert!(matches!(r.lookup(&last, NOW), VerdictLookup::Hit(_)));
        assert_eq!(r.entries(NOW).len(), w.live());
        assert_eq!(r.evictions(), w.evictions());
    }

    #[test]
    fn an_address_hashes_the_same_on_the_lookup_path_as_in_the_writer() {
        // The writer hashes `KeyBytes`, a lookup the address bytes built in registers: one
        // key, one home slot, whatever the spelling.
        for ip in [
            "192.0.2.7",
            "::ffff:192.0.2.7",
            "2001:db8::1",
            "::192.0.2.7",
            "::",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            let kb = KeyBytes::new(&VerdictKey::Ip(ip)).unwrap();
            for seed in [0, 1, 0x9e37_79b9_7f4a_7c15, u64::MAX] {
                assert_eq!(
                    kb.hash(seed),
                    xxhash_rust::xxh3::xxh3_64_with_seed(&ip_key(ip), seed),
                    "{ip}"
                );
            }
        }
    }

    #[test]
    fn keys_whose_probe_window_wraps_past_the_last_slot_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 16);
        // Eight keys whose home is one of the last four slots (picked under this table's
        // random seed): half of them can only be placed in slots 0..4, past the wrap.
        let home = |k: &VerdictKey| KeyBytes::new(k).unwrap().hash(w.hash_seed) & 15;
        let keys: Vec<VerdictKey> = (0..=255u8)
            .map(|i| VerdictKey::Ip(IpAddr::from([10, 9, 8, i])))
            .filter(|k| home(k) >= 12)
            .take(8)
            .collect();
        assert_eq!(keys.len(), 8);
        for k in &keys {
            w.set(k, "block", "r", NOW + HOUR, NOW).unwrap();
        }
        assert_eq!(w.evictions(), 0);
        let r = VerdictReader::open(&p).unwrap();
        for k in &keys {
            assert!(matches!(r.lookup(k, NOW), VerdictLookup::Hit(_)), "{k:?}");
        }
        // Misses homed anywhere, the wrapped ones included, probe to an empty slot or the
        // window's end and stop.
        for i in 0..=255u8 {
            let other = VerdictKey::Ip(IpAddr::from([10, 9, 9, i]));
            assert_eq!(r.lookup(&other, NOW), VerdictLookup::Miss);
        }
    }

    #[test]
    fn expired_verdicts_become_tombstones_and_the_table_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 16);
        for i in 0..6u8 {
            let ip = VerdictKey::Ip(IpAddr::from([10, 0, 0, i]));
            w.set(&ip, "block", "r", NOW + 1 + u64::from(i), NOW)
                .unwrap();
        }
        let keep = VerdictKey::Ip(IpAddr::from([10, 0, 1, 1]));
        w.set(&keep, "challenge", "k", NOW + HOUR, NOW).unwrap();
        let r = VerdictReader::open(&p).unwrap();
        let gen = w.generation();
        assert_eq!(w.expire(NOW + 10).unwrap(), 6);
        // 6 tombstones ≥ a quarter of 16 slots: a new file, the live verdict in it.
        assert_ne!(w.generation(), gen);
        assert!(r.is_replaced());
        let r2 = VerdictReader::open(&p).unwrap();
        assert_eq!(r2.entries(NOW).len(), 1);
        assert!(matches!(r2.lookup(&keep, NOW), VerdictLookup::Hit(_)));
    }

    #[test]
    fn a_restarted_writer_keeps_unexpired_verdicts_under_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let (p, mut w) = table(dir.path(), 64);
        let a = VerdictKey::Ip("203.0.113.1".parse().unwrap());
        let b = VerdictKey::Ja4("t13d1516h2_8daaf6152771_02713d6af862");
        w.set(&a, "block", "flood", NOW + HOUR, NOW).unwrap();
        w.set(&b, "challenge", "mismatch", NOW + 5, NOW).unwrap();
        let old = VerdictReader::open(&p).unwrap();
        drop(w);
        let (w2, kept) = VerdictWriter::create_keeping(&p, 64, 0o600, None, NOW + 10).unwrap();
        assert_eq!(kept, 1, "the expired JA4 verdict is not carried over");
        assert!(old.is_replaced());
        let r = VerdictReader::open(&p).unwrap();
        assert_ne!(r.generation(), old.generation());
        assert_eq!(r.generation(), w2.generation());
        assert!(matches!(r.lookup(&a, NOW + 10), VerdictLookup::Hit(v) if v.rule() == "flood"));
    }

    #[test]
    fn missing_foreign_and_truncated_files_are_errors_not_crashes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            VerdictReader::open(&dir.path().join("none")),
            Err(VerdictError::Io { .. })
        ));
        let ring = dir.path().join("ring");
        crate::ring::RingWriter::create(
            &ring,
            crate::ring::RingConfig {
                slot_count: 16,
                slot_size: 1024,
            },
            0o600,
            None,
        )
        .unwrap();
        assert!(matches!(
            VerdictReader::open(&ring),
            Err(VerdictError::BadMagic { .. })
        ));
        let (p, _w) = table(dir.path(), 64);
        let bytes = fs::read(&p).unwrap();
        let cut = dir.path().join("cut");
        fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
        assert!(matches!(
            VerdictReader::open(&cut),
            Err(VerdictError::Truncated { .. })
        ));
        let mut v2 = bytes.clone();
        v2[8..12].copy_from_slice(&2u32.to_le_bytes());
        let other = dir.path().join("v2");
        fs::write(&other, &v2).unwrap();
        assert!(matches!(
            VerdictReader::open(&other),
            Err(VerdictError::Version { found: 2, .. })
        ));
        assert!(matches!(
            VerdictReader::open(dir.path()),
            Err(VerdictError::NotAFile { .. })
        ));
    }
}
