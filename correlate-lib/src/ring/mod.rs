//! The shared-memory ring that carries [`TlsRecord`]s from the sensor (the only writer) to every
//! httpd child (read-only readers). Format version 1.
//!
//! File layout (all integers little-endian, offsets 8-aligned):
//!
//! ```text
//! header (HEADER_BYTES)  magic, layout version, slot size/count, index size, generation,
//!                        write cursor, sensor counters
//! index  (index_buckets × u64)   open-addressed hash of ConnKey → slot number, bounded probing
//! slots  (slot_count × slot_size) each: seqlock word, payload length, crc32, encoded TlsRecord
//! ```
//!
//! The writer fills slots round-robin (the oldest record is evicted when the ring wraps) and
//! points the index at the new slot. A reader hashes the 4-tuple, probes a bounded number of index
//! buckets, copies each candidate slot under its seqlock, and accepts it only if the sequence was
//! even and unchanged, the checksum matches, the record decodes and its key equals the one asked
//! for. Anything else is a miss: readers never trust the bytes and never block the writer.
//!
//! Module layout: [`mapping`] owns the mmap and every `unsafe` block; [`seqlock`] the protocol;
//! [`layout`] the header/slot offsets; this file the safe `RingWriter`/`RingReader` API.

pub mod layout;
mod mapping;
pub mod seqlock;

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use layout::Geometry;
use mapping::SharedWords;
use seqlock::ReadAttempt;

use crate::record::{ConnKey, TlsRecord};

/// Default location: tmpfs, readable by the Apache group only (see the sensor's `ring_group`).
pub const DEFAULT_RING_PATH: &str = "/dev/shm/ja4sensor.ring";
/// Default number of slots. At 1000 new TLS connections per second a record stays findable for
/// over a minute, far longer than the wait between a handshake and its first request.
pub const DEFAULT_SLOT_COUNT: u32 = 65_536;
/// Default slot size in bytes (seqlock word + length + crc + encoded record).
pub const DEFAULT_SLOT_SIZE: u32 = 1024;

/// Sizing of a ring created by the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    pub slot_count: u32,
    pub slot_size: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            slot_count: DEFAULT_SLOT_COUNT,
            slot_size: DEFAULT_SLOT_SIZE,
        }
    }
}

/// Sensor statistics published in the ring header so that every httpd child (and the module's
/// status handler) can read them. Values are absolute counters (the writer stores, not adds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum SensorCounter {
    PacketsSeen = 0,
    KernelDrops = 1,
    HellosParsed = 2,
    ParseFailures = 3,
    FlowsEvicted = 4,
    RingWrites = 5,
    RecordsTooLarge = 6,
}

impl SensorCounter {
    pub const ALL: [SensorCounter; 7] = [
        SensorCounter::PacketsSeen,
        SensorCounter::KernelDrops,
        SensorCounter::HellosParsed,
        SensorCounter::ParseFailures,
        SensorCounter::FlowsEvicted,
        SensorCounter::RingWrites,
        SensorCounter::RecordsTooLarge,
    ];

    /// Name as printed in logs and Prometheus output.
    pub fn name(self) -> &'static str {
        match self {
            SensorCounter::PacketsSeen => "packets_seen",
            SensorCounter::KernelDrops => "kernel_drops",
            SensorCounter::HellosParsed => "hellos_parsed",
            SensorCounter::ParseFailures => "parse_failures",
            SensorCounter::FlowsEvicted => "flows_evicted",
            SensorCounter::RingWrites => "ring_writes",
            SensorCounter::RecordsTooLarge => "records_too_large",
        }
    }
}

/// Errors opening, creating or writing a ring. Lookups never error: a bad slot is a miss
/// (see [`Lookup`]).
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ring {path}: not a ja4sensor ring (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("ring {path}: layout version {found}, this build reads version {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("ring {path}: file is {len} bytes, its header describes {needed}")]
    Truncated {
        path: PathBuf,
        len: u64,
        needed: u64,
    },
    #[error("ring {path}: invalid header field {field} = {value}")]
    BadHeader {
        path: PathBuf,
        field: &'static str,
        value: u64,
    },
    #[error("invalid ring configuration: {0}")]
    Config(String),
    #[error("record of {len} bytes does not fit a slot payload of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("record has no connection key")]
    NoKey,
}

/// Outcome of a reader lookup.
// A lookup returns one value per request and is matched at once: boxing the hit would add an
// allocation to every correlated request for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The newest record for this 4-tuple.
    Hit(TlsRecord),
    /// No record for this 4-tuple.
    Miss,
    /// A candidate slot was being rewritten on every retry, or failed its checksum/decoding.
    /// Counted separately from misses, treated the same.
    Torn,
}

/// Copies of a slot a reader attempts before calling it torn. The writer rewrites a slot in well
/// under a microsecond, so a second attempt almost always succeeds; a reader never spins longer.
const READ_ATTEMPTS: usize = 4;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RingError + '_ {
    move |source| RingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The sensor's handle: creates (or replaces) the ring file and publishes records.
pub struct RingWriter {
    path: PathBuf,
    map: SharedWords,
    geometry: Geometry,
    generation: u64,
    cursor: u64,
    /// Writer-side bookkeeping (never read by readers): the key and the index bucket (+1, 0 =
    /// none) of the record in each slot, so an evicted slot's index entry can be cleared and a
    /// republished 4-tuple replaces its older entry.
    slot_keys: Vec<Option<ConnKey>>,
    slot_bucket: Vec<u32>,
    /// Publication order of each slot's record (cursor value), to evict the oldest index entry.
    slot_order: Vec<u64>,
    encode_buf: Vec<u8>,
}

impl RingWriter {
    /// Creates a fresh ring at `path` (written under a temporary name, then renamed over the old
    /// file, so readers see either the old ring or a complete new one), with a new generation.
    /// `mode` is the file mode (0o640 in production) and `gid` an optional group owner.
    pub fn create(
        path: &Path,
        config: RingConfig,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Self, RingError> {
        if !config.slot_size.is_multiple_of(8) {
            return Err(RingError::Config(format!(
                "slot_size {} is not a multiple of 8",
                config.slot_size
            )));
        }
        let geometry =
            Geometry::for_slots(config.slot_count, config.slot_size).ok_or_else(|| {
                RingError::Config(format!("slot_count {} is too large", config.slot_count))
            })?;
        if let Some((field, value)) = geometry.invalid_field() {
            return Err(RingError::Config(format!(
                "{field} = {value} is out of range (slot_size {}..={} bytes, slot_count 1..={})",
                layout::MIN_SLOT_SIZE,
                layout::MAX_SLOT_SIZE,
                layout::MAX_SLOT_COUNT
            )));
        }
        let total_words = geometry
            .total_words()
            .ok_or_else(|| RingError::Config("ring size overflows".into()))?;
        let pid = std::process::id();
        let mut tmp_name = path.as_os_str().to_owned();
        tmp_name.push(format!(".tmp.{pid}"));
        let tmp = PathBuf::from(tmp_name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        let result = Self::init_file(&file, &tmp, total_words, mode, gid)
            .and_then(|()| SharedWords::map_read_write(&file).map_err(io_err(&tmp)));
        let map = match result {
            Ok(map) => map,
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let generation = now_ns() ^ (u64::from(pid) << 40) ^ u64::from(pid);
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
            layout::pack(geometry.slot_size, geometry.slot_count),
        );
        set(
            layout::W_INDEX,
            layout::pack(geometry.index_buckets, geometry.probe_limit),
        );
        set(layout::W_GENERATION, generation);
        set(layout::W_WRITER_PID, u64::from(pid));
        set(layout::W_CREATED, now_ns());
        // The magic last, with Release: a header with the magic is complete.
        if let Some(w) = words.get(layout::W_MAGIC) {
            w.store(layout::MAGIC, Ordering::Release);
        }
        if let Err(e) = fs::rename(&tmp, path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(path)(e));
        }
        let n = geometry.slot_count as usize;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            geometry,
            generation,
            cursor: 0,
            slot_keys: vec![None; n],
            slot_bucket: vec![0; n],
            slot_order: vec![0; n],
            encode_buf: Vec::with_capacity(geometry.payload_capacity()),
        })
    }

    fn init_file(
        file: &File,
        tmp: &Path,
        total_words: usize,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<(), RingError> {
        let len = u64::try_from(total_words)
            .ok()
            .and_then(|w| w.checked_mul(8))
            .ok_or_else(|| RingError::Config("ring size overflows".into()))?;
        file.set_len(len).map_err(io_err(tmp))?;
        // The umask applied at open; the configured mode is what the operator asked for.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err(tmp))?;
        if let Some(gid) = gid {
            std::os::unix::fs::fchown(file, None, Some(gid)).map_err(io_err(tmp))?;
        }
        Ok(())
    }

    fn words(&self) -> &[AtomicU64] {
        self.map.words()
    }

    /// Payload bytes a slot holds; an encoded record larger than this is refused.
    pub fn slot_payload_max(&self) -> usize {
        self.geometry.payload_capacity()
    }

    /// Publishes a record (its `key` must be set), evicting the oldest slot when full.
    pub fn publish(&mut self, record: &TlsRecord) -> Result<(), RingError> {
        let key = record.key.ok_or(RingError::NoKey)?;
        let mut buf = std::mem::take(&mut self.encode_buf);
        let encoded = record.encode(&mut buf);
        let result = encoded
            .map_err(|e| RingError::Config(format!("record does not encode: {e}")))
            .and_then(|()| {
                if buf.len() > self.geometry.payload_capacity() {
                    Err(RingError::RecordTooLarge {
                        len: buf.len(),
                        max: self.geometry.payload_capacity(),
                    })
                } else {
                    self.publish_encoded(key, &buf);
                    Ok(())
                }
            });
        self.encode_buf = buf;
        result
    }

    fn publish_encoded(&mut self, key: ConnKey, payload: &[u8]) {
        let g = self.geometry;
        let slot_count = u64::from(g.slot_count);
        let slot = (self.cursor % slot_count) as usize;
        let hash = key.hash64();

        // 1. Evict the slot's previous record from the index, before its bytes change.
        if let Some(bucket) = self.slot_bucket.get(slot).copied().filter(|b| *b != 0) {
            let b = bucket as usize - 1;
            if let Some(entry) = self.words().get(g.index_start() + b) {
                if Self::entry_slot(entry.load(Ordering::Relaxed)) == Some(slot) {
                    entry.store(0, Ordering::Release);
                }
            }
        }

        // 2. Rewrite the slot under its seqlock: length|crc word, then the payload words.
        let crc = crc32fast::hash(payload);
        let len_word = layout::pack(payload.len() as u32, crc);
        let payload_words = payload.chunks(8).map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        });
        let start = g.slots_start() + slot * g.slot_words();
        if let Some(slot_words) = self.words().get(start..start + g.slot_words()) {
            seqlock::write(slot_words, std::iter::once(len_word).chain(payload_words));
        }

        // 3. Point an index bucket of the key's probe window at the slot.
        let tag = hash >> 32;
        let mask = u64::from(g.index_buckets) - 1;
        let first = hash & mask;
        let mut chosen: Option<(usize, Option<usize>)> = None;
        let mut oldest: Option<(usize, Option<usize>, u64)> = None;
        for i in 0..u64::from(g.probe_limit) {
            let b = ((first + i) & mask) as usize;
            let Some(entry) = self.words().get(g.index_start() + b) else {
                continue;
            };
            let e = entry.load(Ordering::Relaxed);
            let target = Self::entry_slot(e);
            match target {
                None => {
                    chosen.get_or_insert((b, None));
                }
                Some(s) => {
                    let same_key = self.slot_keys.get(s).copied().flatten() == Some(key);
                    if (e >> 32) == tag && same_key {
                        // The newest record of a 4-tuple replaces the older one.
                        chosen = Some((b, Some(s)));
                        break;
                    }
                    let order = self.slot_order.get(s).copied().unwrap_or(0);
                    if oldest.is_none_or(|(_, _, o)| order < o) {
                        oldest = Some((b, Some(s), order));
                    }
                }
            }
        }
        let (bucket, displaced) = chosen
            .or(oldest.map(|(b, s, _)| (b, s)))
            .unwrap_or((first as usize, None));
        if let Some(d) = displaced.and_then(|d| self.slot_bucket.get_mut(d)) {
            *d = 0;
        }
        if let Some(entry) = self.words().get(g.index_start() + bucket) {
            entry.store((tag << 32) | (slot as u64 + 1), Ordering::Release);
        }
        if let Some(k) = self.slot_keys.get_mut(slot) {
            *k = Some(key);
        }
        if let Some(b) = self.slot_bucket.get_mut(slot) {
            *b = bucket as u32 + 1;
        }
        if let Some(o) = self.slot_order.get_mut(slot) {
            *o = self.cursor;
        }
        self.cursor += 1;
        if let Some(w) = self.words().get(layout::W_CURSOR) {
            w.store(self.cursor, Ordering::Release);
        }
    }

    fn entry_slot(entry: u64) -> Option<usize> {
        let low = (entry & 0xffff_ffff) as usize;
        low.checked_sub(1)
    }

    /// Stores an absolute counter value in the header.
    pub fn set_counter(&self, counter: SensorCounter, value: u64) {
        if let Some(w) = self.words().get(layout::W_COUNTERS + counter as usize) {
            w.store(value, Ordering::Relaxed);
        }
    }

    /// Declares that every packet captured up to `ns` (Unix ns) has been processed: a reader
    /// whose request arrived before it and finds no record can stop waiting for one.
    pub fn set_watermark(&self, ns: u64) {
        if let Some(w) = self.words().get(layout::W_WATERMARK) {
            w.store(ns, Ordering::Release);
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records published since the ring was created.
    pub fn published(&self) -> u64 {
        self.cursor
    }
}

/// A read-only view of a ring, one per httpd child. `Send + Sync`: lookups take `&self` and may
/// run on many threads at once.
pub struct RingReader {
    path: PathBuf,
    map: SharedWords,
    geometry: Geometry,
    generation: u64,
    /// (device, inode) of the file mapped, to notice a replaced or deleted ring.
    identity: (u64, u64),
}

impl RingReader {
    /// Maps an existing ring read-only and validates its header (magic, version, sizes against
    /// the file length). A missing, truncated or garbage file is an error, never a crash.
    pub fn open(path: &Path) -> Result<Self, RingError> {
        let file = File::open(path).map_err(io_err(path))?;
        let meta = file.metadata().map_err(io_err(path))?;
        let len = meta.len();
        if len < layout::HEADER_BYTES as u64 {
            return Err(RingError::Truncated {
                path: path.to_path_buf(),
                len,
                needed: layout::HEADER_BYTES as u64,
            });
        }
        let map = SharedWords::map_read_only(&file).map_err(io_err(path))?;
        let words = map.words();
        let word = |i: usize| words.get(i).map_or(0, |w| w.load(Ordering::Acquire));
        if word(layout::W_MAGIC) != layout::MAGIC {
            return Err(RingError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let (version, header_bytes) = layout::unpack(word(layout::W_VERSION));
        if version != layout::LAYOUT_VERSION {
            return Err(RingError::Version {
                path: path.to_path_buf(),
                found: version,
                expected: layout::LAYOUT_VERSION,
            });
        }
        if header_bytes as usize != layout::HEADER_BYTES {
            return Err(RingError::BadHeader {
                path: path.to_path_buf(),
                field: "header_bytes",
                value: u64::from(header_bytes),
            });
        }
        let (slot_size, slot_count) = layout::unpack(word(layout::W_SLOTS));
        let (index_buckets, probe_limit) = layout::unpack(word(layout::W_INDEX));
        let geometry = Geometry {
            slot_size,
            slot_count,
            index_buckets,
            probe_limit,
        };
        if let Some((field, value)) = geometry.invalid_field() {
            return Err(RingError::BadHeader {
                path: path.to_path_buf(),
                field,
                value,
            });
        }
        let needed = geometry
            .total_words()
            .and_then(|w| u64::try_from(w).ok())
            .and_then(|w| w.checked_mul(8))
            .unwrap_or(u64::MAX);
        if (words.len() as u64) * 8 < needed {
            return Err(RingError::Truncated {
                path: path.to_path_buf(),
                len,
                needed,
            });
        }
        let generation = word(layout::W_GENERATION);
        Ok(Self {
            path: path.to_path_buf(),
            map,
            geometry,
            generation,
            identity: (meta.dev(), meta.ino()),
        })
    }

    fn words(&self) -> &[AtomicU64] {
        self.map.words()
    }

    fn header_word(&self, i: usize) -> u64 {
        self.words().get(i).map_or(0, |w| w.load(Ordering::Acquire))
    }

    /// Finds the newest record for `key` in O(1) (bounded index probing).
    pub fn lookup(&self, key: &ConnKey) -> Lookup {
        let g = self.geometry;
        let hash = key.hash64();
        let tag = hash >> 32;
        let mask = u64::from(g.index_buckets) - 1;
        let first = hash & mask;
        let mut best: Option<TlsRecord> = None;
        let mut torn = false;
        let mut body = vec![0u64; g.slot_words() - 1];
        for i in 0..u64::from(g.probe_limit) {
            let b = ((first + i) & mask) as usize;
            let e = self.header_word(g.index_start() + b);
            if e == 0 || (e >> 32) != tag {
                continue;
            }
            let Some(slot) = ((e & 0xffff_ffff) as usize).checked_sub(1) else {
                continue;
            };
            if slot >= g.slot_count as usize {
                torn = true;
                continue;
            }
            match self.read_slot(slot, &mut body) {
                SlotRead::Record(rec) => {
                    if rec.key.as_ref() == Some(key)
                        && best
                            .as_ref()
                            .is_none_or(|b| rec.hello_time_ns >= b.hello_time_ns)
                    {
                        best = Some(rec);
                    }
                }
                SlotRead::Torn => torn = true,
            }
        }
        match best {
            Some(rec) => Lookup::Hit(rec),
            None if torn => Lookup::Torn,
            None => Lookup::Miss,
        }
    }

    fn read_slot(&self, slot: usize, body: &mut [u64]) -> SlotRead {
        let g = self.geometry;
        let start = g.slots_start() + slot * g.slot_words();
        let Some(slot_words) = self.words().get(start..start + g.slot_words()) else {
            return SlotRead::Torn;
        };
        for _ in 0..READ_ATTEMPTS {
            if seqlock::read(slot_words, body) == ReadAttempt::Raced {
                std::hint::spin_loop();
                continue;
            }
            let Some((&len_word, payload_words)) = body.split_first() else {
                return SlotRead::Torn;
            };
            let (len, crc) = layout::unpack(len_word);
            let len = len as usize;
            if len > g.payload_capacity() || len > payload_words.len() * 8 {
                return SlotRead::Torn;
            }
            let mut bytes = Vec::with_capacity(len);
            for w in payload_words {
                if bytes.len() >= len {
                    break;
                }
                bytes.extend_from_slice(&w.to_le_bytes());
            }
            bytes.truncate(len);
            if crc32fast::hash(&bytes) != crc {
                return SlotRead::Torn;
            }
            return match TlsRecord::decode(&bytes) {
                Ok(rec) => SlotRead::Record(rec),
                Err(_) => SlotRead::Torn,
            };
        }
        SlotRead::Torn
    }

    /// True when the file at the path is no longer the one mapped (sensor restarted and replaced
    /// it, or it was deleted), so the caller should re-open. Costs one `stat`.
    pub fn is_replaced(&self) -> bool {
        match fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.identity,
            Err(_) => true,
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn counter(&self, counter: SensorCounter) -> u64 {
        self.header_word(layout::W_COUNTERS + counter as usize)
    }

    /// Unix ns up to which the sensor has processed every captured packet (0: never reported).
    pub fn watermark(&self) -> u64 {
        self.header_word(layout::W_WATERMARK)
    }

    /// Records published since the ring was created.
    pub fn published(&self) -> u64 {
        self.header_word(layout::W_CURSOR)
    }

    /// Process id of the sensor that created the ring.
    pub fn writer_pid(&self) -> u32 {
        u32::try_from(self.header_word(layout::W_WRITER_PID)).unwrap_or(0)
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
}

// Returned once per candidate slot and matched at once, like `Lookup`.
#[allow(clippy::large_enum_variant)]
enum SlotRead {
    Record(TlsRecord),
    Torn,
}
