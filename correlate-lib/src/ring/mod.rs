//! The shared-memory ring that carries [`TlsRecord`]s from the sensor (the only writer) to every
//! httpd child (read-only readers). Format version 4.
//!
//! File layout (all integers little-endian, offsets 8-aligned):
//!
//! ```text
//! header (HEADER_BYTES)  magic, layout version, slot size/count, index size, generation,
//!                        write cursor, hash seed, sensor counters
//! index  (index_buckets × u32)   hash of ConnKey → slot number, in line-sized groups of 16
//! slots  (slot_count × slot_size) each: seqlock word, payload length, crc32, encoded TlsRecord
//! ```
//!
//! The writer fills slots round-robin (the oldest record is evicted when the ring wraps) and
//! points the index at the new slot. A reader hashes the 4-tuple (seeded per ring), reads the one
//! 64-byte group of index entries the hash selects, copies each candidate slot under its seqlock, and accepts it only if the sequence was
//! even and unchanged, the checksum matches, the record decodes and its key equals the one asked
//! for. Anything else is a miss: readers never trust the bytes and never block the writer.
//!
//! Module layout: [`mapping`] owns the mmap and every `unsafe` block; [`seqlock`] the protocol;
//! [`layout`] the header/slot offsets; this file the safe `RingWriter`/`RingReader` API.

pub mod guard;
pub mod layout;
// Also the verdict table's mapping (`crate::verdict`): one module owns every `unsafe` block.
pub(crate) mod mapping;
pub mod seqlock;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use layout::Geometry;
use mapping::{ReadOnlyWords, SharedWord, WritableWords};
use seqlock::{ReadAttempt, Word};

use crate::record::{
    set_encoded_closed_time, CodecError, ConnKey, RecordView, TlsRecord, CONN_KEY_BYTES,
};

/// Default location: tmpfs, readable by the Apache group only (see the sensor's `ring_group`).
pub const DEFAULT_RING_PATH: &str = "/dev/shm/ja4sensor.ring";
/// Default number of slots. At 1000 new TLS connections per second a record stays findable for
/// over half a minute, far longer than the wait between a handshake and its first request.
pub const DEFAULT_SLOT_COUNT: u32 = 32_768;
/// Default slot size in bytes (seqlock word + length + crc + encoded record). A browser's
/// record is ~600 bytes, but `ja3` and `ja4_r` grow with the hello's lists: a hello offering a
/// hundred ciphers (old Firefox, curl with OpenSSL's full list) needs ~1.3 KB. 2 KiB slots keep
/// them whole; the sensor shortens the raw strings of anything larger.
pub const DEFAULT_SLOT_SIZE: u32 = 2048;

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
    /// hellos that spanned several TCP segments or TLS records
    HellosReassembled = 7,
    /// handshake records whose ClientHello body did not parse
    ParseMalformedBody = 8,
    /// ClientHellos whose extension block did not parse
    ParseMalformedExtensions = 9,
    /// ClientHellos larger than the per-flow cap, dropped
    HellosTooLarge = 10,
    /// segments dropped because all flows together hit the reassembly memory cap
    ReassemblyOverBudget = 11,
    /// client payloads on a TLS port that were not a TLS handshake
    PayloadsNotTls = 12,
    /// frames whose link/IP/TCP headers did not parse
    PacketsMalformed = 13,
    /// packets from core.exclude_source_ips
    PacketsExcluded = 14,
    /// flows dropped after flow_timeout_sec without a complete hello
    FlowsExpired = 15,
    /// flows that ended (expired or evicted) without any ClientHello: SYN floods, half-open connections
    FlowsWithoutHello = 16,
    /// client FIN/RST seen for a published connection
    ConnectionsClosed = 17,
}

impl SensorCounter {
    pub const ALL: [SensorCounter; 18] = [
        SensorCounter::PacketsSeen,
        SensorCounter::KernelDrops,
        SensorCounter::HellosParsed,
        SensorCounter::ParseFailures,
        SensorCounter::FlowsEvicted,
        SensorCounter::RingWrites,
        SensorCounter::RecordsTooLarge,
        SensorCounter::HellosReassembled,
        SensorCounter::ParseMalformedBody,
        SensorCounter::ParseMalformedExtensions,
        SensorCounter::HellosTooLarge,
        SensorCounter::ReassemblyOverBudget,
        SensorCounter::PayloadsNotTls,
        SensorCounter::PacketsMalformed,
        SensorCounter::PacketsExcluded,
        SensorCounter::FlowsExpired,
        SensorCounter::FlowsWithoutHello,
        SensorCounter::ConnectionsClosed,
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
            SensorCounter::HellosReassembled => "hellos_reassembled",
            SensorCounter::ParseMalformedBody => "parse_failures_malformed_body",
            SensorCounter::ParseMalformedExtensions => "parse_failures_malformed_extensions",
            SensorCounter::HellosTooLarge => "hellos_too_large",
            SensorCounter::ReassemblyOverBudget => "reassembly_over_budget",
            SensorCounter::PayloadsNotTls => "payloads_not_tls",
            SensorCounter::PacketsMalformed => "packets_malformed",
            SensorCounter::PacketsExcluded => "packets_excluded",
            SensorCounter::FlowsExpired => "flows_expired",
            SensorCounter::FlowsWithoutHello => "flows_without_hello",
            SensorCounter::ConnectionsClosed => "connections_closed",
        }
    }

    /// Header word holding this counter.
    fn word(self) -> usize {
        layout::W_COUNTERS + self as usize
    }
}

// Every counter has a word in the header's counters area.
const _: () = assert!(SensorCounter::ALL.len() <= layout::MAX_COUNTERS);

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
    /// The writer's path no longer names its file.
    #[error("ring {path}: the path now holds {found}, not the sensor's ring")]
    Replaced { path: PathBuf, found: &'static str },
    /// The path is a directory, FIFO, device...: mapping it could block or fault a reader.
    #[error("ring {path}: not a regular file")]
    NotAFile { path: PathBuf },
    /// A string of the record exceeds its codec limit (the sensor shortens them before publishing).
    #[error("record does not encode: {0}")]
    Encode(#[from] CodecError),
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

/// What one lookup went through, candidate by candidate (an index entry whose tag matched the
/// key). For status counters and for tests that prove which layer rejected what.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupTrace {
    /// Index entries in the probe window whose tag matched the key's hash.
    pub candidates: u32,
    /// Slot copies abandoned because the writer was inside the slot (each retry counts).
    pub raced: u32,
    /// Candidates still racing after [`READ_ATTEMPTS`] copies.
    pub torn: u32,
    /// Stable copies (or entries) that were not a valid record: slot number out of range, length
    /// beyond the slot, checksum mismatch, or a payload that does not decode. Only damage (or a
    /// hostile writer) produces these: a torn write is caught by the seqlock before the checksum.
    pub corrupt: u32,
    /// Valid records of another 4-tuple (a hash-tag collision, or a slot reused since the entry
    /// was read).
    pub other_key: u32,
}

/// Copies of a slot a reader attempts before calling it torn. The writer rewrites a slot in well
/// under a microsecond, so a second attempt almost always succeeds; a reader never spins longer.
pub const READ_ATTEMPTS: u32 = 4;

/// Bytes of a candidate slot prefetched before its copy: a browser's record is ~600 bytes, a
/// hello with a long cipher list ~1.3 KB (the rest arrives by the hardware prefetcher).
const PREFETCH_BYTES: usize = 1024;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RingError + '_ {
    move |source| RingError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `<path>.tmp.<pid>`: in the ring's directory, so the final rename is atomic.
pub(crate) fn temp_path(path: &Path, pid: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{pid}"));
    PathBuf::from(name)
}

/// Creates `tmp` exclusively. The ring lives in /dev/shm, a world-writable directory: O_EXCL
/// (which also refuses a symlink) keeps a planted link from redirecting the writer's truncate and
/// writes to another file. A leftover of a crashed writer that had our pid is unlinked (unlink
/// never follows links) and the create retried once.
pub(crate) fn create_exclusive(tmp: &Path, mode: u32) -> Result<File, RingError> {
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp).map_err(io_err(tmp))?;
            open().map_err(io_err(tmp))
        }
        other => other.map_err(io_err(tmp)),
    }
}

/// A new shared file (a ring or a verdict table) under its temporary name, not yet renamed over
/// the path: created exclusively, sized, its pages reserved, mapped read-write.
pub(crate) struct NewFile {
    pub tmp: PathBuf,
    pub file: File,
    pub map: WritableWords,
}

impl NewFile {
    /// `len` bytes at [`temp_path`]`(path, pid)`; the temporary is removed again if sizing or
    /// mapping it fails.
    pub(crate) fn create(
        path: &Path,
        pid: u32,
        len: u64,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Self, RingError> {
        let tmp = temp_path(path, pid);
        let file = create_exclusive(&tmp, mode)?;
        let mapped = RingWriter::init_file(&file, &tmp, len, mode, gid)
            .and_then(|()| WritableWords::map(&file).map_err(io_err(&tmp)));
        match mapped {
            Ok(map) => Ok(Self { tmp, file, map }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }
}

/// The generation and hash seed of a new shared file of process `pid`. The generation is unique
/// per create: two writers started in the same nanosecond differ by pid, and a restarted one
/// with a recycled pid differs by time. The seed is secret from clients (the file is readable
/// by the writer and httpd only), so the index position of a key cannot be aimed at from
/// outside, and different for every file: std's RandomState draws its keys from the OS's random
/// source.
pub(crate) fn new_generation(pid: u32) -> (u64, u64) {
    let generation = crate::unix_now_ns() ^ (u64::from(pid) << 40) ^ u64::from(pid);
    let hash_seed = {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one((generation, pid))
    };
    (generation, hash_seed)
}

/// What the first two header words of a shared file (a ring or a verdict table) must say: word
/// [`layout::W_MAGIC`] its magic, word [`layout::W_VERSION`] its layout version (low 32) | header
/// bytes (high 32).
pub(crate) struct FileHeader {
    pub magic: u64,
    pub version: u32,
    pub header_bytes: usize,
}

/// A shared file (a ring or a verdict table) mapped read-only, its magic, layout version and
/// header size checked: what a reader knows before it looks at the rest of the header.
pub(crate) struct MappedFile {
    pub map: ReadOnlyWords,
    /// The file's metadata when it was opened (its length may have changed since).
    pub meta: fs::Metadata,
    /// Bytes of the mapping (whole words): from here on only the mapping counts.
    pub mapped_len: u64,
}

impl MappedFile {
    /// Opens and maps `path` read-only. A missing, truncated, foreign or garbage file is an
    /// error, never a crash.
    pub(crate) fn open(path: &Path, header: &FileHeader) -> Result<Self, RingError> {
        // O_NONBLOCK: opening a FIFO planted at the path must not hang an httpd child; anything
        // but a regular file is refused right after.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(io_err(path))?;
        let meta = file.metadata().map_err(io_err(path))?;
        if !meta.is_file() {
            return Err(RingError::NotAFile {
                path: path.to_path_buf(),
            });
        }
        let truncated = |len: u64| RingError::Truncated {
            path: path.to_path_buf(),
            len,
            needed: header.header_bytes as u64,
        };
        if meta.len() < header.header_bytes as u64 {
            return Err(truncated(meta.len()));
        }
        let map = ReadOnlyWords::map(&file).map_err(io_err(path))?;
        let words = map.words();
        // From here on only the mapping counts: the file may have changed size since the stat.
        let mapped_len = (words.len() as u64).saturating_mul(8);
        if mapped_len < header.header_bytes as u64 {
            return Err(truncated(mapped_len));
        }
        if load_word(words, layout::W_MAGIC) != header.magic {
            return Err(RingError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let (version, header_bytes) = layout::unpack(load_word(words, layout::W_VERSION));
        if version != header.version {
            return Err(RingError::Version {
                path: path.to_path_buf(),
                found: version,
                expected: header.version,
            });
        }
        if header_bytes as usize != header.header_bytes {
            return Err(RingError::BadHeader {
                path: path.to_path_buf(),
                field: "header_bytes",
                value: u64::from(header_bytes),
            });
        }
        Ok(Self {
            map,
            meta,
            mapped_len,
        })
    }
}

/// Whether `path` no longer names the file of `identity` (device, inode): replaced or deleted.
pub(crate) fn is_replaced(path: &Path, identity: (u64, u64)) -> bool {
    match fs::metadata(path) {
        Ok(m) => (m.dev(), m.ino()) != identity,
        Err(_) => true,
    }
}

/// Packs payload bytes into little-endian words, the last one zero-padded.
fn payload_words(payload: &[u8]) -> impl Iterator<Item = u64> + '_ {
    payload.chunks(8).map(|chunk| {
        let mut w = [0u8; 8];
        for (dst, src) in w.iter_mut().zip(chunk) {
            *dst = *src;
        }
        u64::from_le_bytes(w)
    })
}

/// The sensor's handle: creates (or replaces) the ring file and publishes records.
pub struct RingWriter {
    path: PathBuf,
    map: WritableWords,
    /// (device, inode) of the file created, to notice that the path no longer names it.
    identity: (u64, u64),
    geometry: Geometry,
    generation: u64,
    hash_seed: u64,
    cursor: u64,
    /// Writer-side bookkeeping (never read by readers, so never trusted from the file): the key
    /// and the index bucket (+1, 0 = none) of the record in each slot, so an evicted slot's index
    /// entry can be cleared and a republished 4-tuple replaces its older entry.
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
        let len = geometry
            .total_words()
            .and_then(|w| u64::try_from(w).ok())
            .and_then(|w| w.checked_mul(8))
            .ok_or_else(|| RingError::Config("ring size overflows".into()))?;
        let pid = std::process::id();
        let NewFile { tmp, file, map } = NewFile::create(path, pid, len, mode, gid)?;
        let identity = file
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .map_err(io_err(&tmp))?;
        let (generation, hash_seed) = new_generation(pid);
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
        set(layout::W_HASH_SEED, hash_seed);
        set(layout::W_WRITER_PID, u64::from(pid));
        set(layout::W_CREATED, crate::unix_now_ns());
        // The magic last, with Release: a header with the magic is complete. (Readers cannot see
        // the file before the rename anyway; this also covers a reader that opens the temp name.)
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
            identity,
            geometry,
            generation,
            hash_seed,
            cursor: 0,
            slot_keys: vec![None; n],
            slot_bucket: vec![0; n],
            slot_order: vec![0; n],
            encode_buf: Vec::with_capacity(geometry.payload_capacity()),
        })
    }

    /// Whether readers can still find this ring: `Some` when the path no longer names the file
    /// the writer maps (deleted, or replaced by something else: a FIFO, a symlink, another file)
    /// or the file was changed in place or cut short. The sensor then creates a new ring.
    pub fn damage(&self) -> Option<RingError> {
        match fs::symlink_metadata(&self.path) {
            Ok(m) if m.file_type().is_file() && (m.dev(), m.ino()) == self.identity => {}
            Ok(m) => {
                return Some(RingError::Replaced {
                    path: self.path.clone(),
                    found: if m.file_type().is_symlink() {
                        "a symbolic link"
                    } else if m.file_type().is_fifo() {
                        "a FIFO"
                    } else if m.is_file() {
                        "another file"
                    } else {
                        "something that is not a file"
                    },
                })
            }
            Err(_) => {
                return Some(RingError::Replaced {
                    path: self.path.clone(),
                    found: "nothing (deleted)",
                })
            }
        }
        let words = self.map.words();
        mapped_damage(&MappedState {
            path: &self.path,
            word: &|i| words.get(i).map_or(0, |w| w.load(Ordering::Relaxed)),
            geometry: self.geometry,
            generation: self.generation,
            mapped_bytes: (words.len() as u64).saturating_mul(8),
            faulted: self.map.faulted(),
            identity: self.identity,
        })
    }

    pub(crate) fn init_file(
        file: &File,
        tmp: &Path,
        len: u64,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<(), RingError> {
        file.set_len(len).map_err(io_err(tmp))?;
        // Reserve the pages now: on tmpfs a ring larger than the free space would otherwise be
        // created fine and then kill the sensor with SIGBUS on its first write to a page that
        // cannot be backed. A filesystem without fallocate keeps the sparse file.
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(io_err(tmp)(e.into())),
        }
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
        let result = record
            .encode(&mut buf)
            .map_err(RingError::from)
            .and_then(|()| {
                let max = self.geometry.payload_capacity();
                if buf.len() > max {
                    Err(RingError::RecordTooLarge {
                        len: buf.len(),
                        max,
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
        // Round-robin: the slot of the oldest record (or a never used one).
        let slot_u32 = (self.cursor % u64::from(g.slot_count)) as u32;
        let slot = slot_u32 as usize;
        let hash = self.key_hash(&key);

        // 1. Evict the slot's previous record from the index, before its bytes change.
        if let Some(bucket) = self.slot_bucket.get(slot).copied().filter(|b| *b != 0) {
            let b = bucket as usize - 1;
            if self.entry(b).and_then(|e| g.entry_parts(e)) == Some(slot_u32) {
                self.set_entry(b, 0);
            }
        }

        // 2. Rewrite the slot under its seqlock.
        self.write_slot(slot, payload);

        // 3. Point an entry of the key's group at the slot: the entry of an older record of the
        // same 4-tuple (a reused client port: the newest replaces it), else the first empty one,
        // else the one pointing at the oldest record.
        let first = self.group_first_entry(hash);
        let mut empty: Option<usize> = None;
        let mut same_key: Option<(usize, u32)> = None;
        let mut oldest: Option<(usize, u32, u64)> = None;
        for b in first..first + layout::PROBE_LIMIT as usize {
            let Some(entry) = self.entry(b) else {
                continue;
            };
            match g.entry_parts(entry) {
                None => {
                    empty.get_or_insert(b);
                }
                Some(s) => {
                    if g.entry_slot(entry, hash) == Some(s)
                        && self.slot_keys.get(s as usize).copied().flatten() == Some(key)
                    {
                        same_key = Some((b, s));
                        break;
                    }
                    let order = self.slot_order.get(s as usize).copied().unwrap_or(0);
                    if oldest.is_none_or(|(_, _, o)| order < o) {
                        oldest = Some((b, s, order));
                    }
                }
            }
        }
        let (bucket, displaced) = match (same_key, empty, oldest) {
            (Some((b, s)), _, _) => (b, Some(s)),
            (None, Some(b), _) => (b, None),
            (None, None, Some((b, s, _))) => (b, Some(s)),
            // A group has PROBE_LIMIT ≥ 1 entries, all inside the index (validated geometry).
            (None, None, None) => (first, None),
        };
        // The displaced record loses its index entry; when its slot is reused, step 1 must not
        // clear the entry that now belongs to this record.
        if let Some(d) = displaced.and_then(|d| self.slot_bucket.get_mut(d as usize)) {
            *d = 0;
        }
        // Release (in set_entry): a reader that sees this entry sees the slot written above.
        self.set_entry(bucket, g.index_entry(hash, slot_u32));
        if let Some(k) = self.slot_keys.get_mut(slot) {
            *k = Some(key);
        }
        if let Some(b) = self.slot_bucket.get_mut(slot) {
            // bucket < index_buckets ≤ MAX_INDEX_BUCKETS < u32::MAX.
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

    /// The index hash of `key` in this ring.
    fn key_hash(&self, key: &ConnKey) -> u64 {
        layout::key_hash(self.hash_seed, &key.canonical_bytes())
    }

    /// Number of the first entry of the group of a key whose hash is `hash`.
    fn group_first_entry(&self, hash: u64) -> usize {
        (self.geometry.group_start(hash) - self.geometry.index_start()) * 2
    }

    /// Index entry `b` (0-based over the whole index).
    fn entry(&self, b: usize) -> Option<u32> {
        let w = self.words().get(self.geometry.index_start() + b / 2)?;
        Some(layout::word_entry(w.load(Ordering::Relaxed), b))
    }

    /// Stores index entry `b`, keeping the other entry of its word (this process is the only
    /// writer). Release: a reader that sees the entry sees what was written before it.
    fn set_entry(&self, b: usize, entry: u32) {
        if let Some(w) = self.words().get(self.geometry.index_start() + b / 2) {
            let word = layout::with_entry(w.load(Ordering::Relaxed), b, entry);
            w.store(word, Ordering::Release);
        }
    }

    /// The words of `slot` (seqlock word first).
    fn slot_words(&self, slot: usize) -> Option<&[AtomicU64]> {
        let g = self.geometry;
        let start = g.slots_start() + slot * g.slot_words();
        self.words().get(start..start + g.slot_words())
    }

    /// Rewrites `slot` under its seqlock: length|crc word, then the payload words. The caller
    /// checked that the payload fits (`payload_capacity` < u32::MAX).
    fn write_slot(&self, slot: usize, payload: &[u8]) {
        let len_word = layout::pack(payload.len() as u32, crc32fast::hash(payload));
        if let Some(words) = self.slot_words(slot) {
            seqlock::write(
                words,
                std::iter::once(len_word).chain(payload_words(payload)),
            );
        }
    }

    /// The slot the index points at for `key`, if it holds that key's record.
    fn indexed_slot(&self, key: &ConnKey) -> Option<usize> {
        let g = self.geometry;
        let hash = self.key_hash(key);
        let first = self.group_first_entry(hash);
        (first..first + layout::PROBE_LIMIT as usize).find_map(|b| {
            let s = g.entry_slot(self.entry(b)?, hash)? as usize;
            (self.slot_keys.get(s).copied().flatten().as_ref() == Some(key)).then_some(s)
        })
    }

    /// Records the close (client FIN/RST, Unix ns) of a published connection in its record, in
    /// place: readers then see `closed_time_ns` and can tell this connection from a later one on
    /// the same client port. Not a new record (the cursor does not move). False when the ring
    /// holds no findable record for `key` (never published, evicted, or displaced), or when its
    /// slot no longer matches its checksum (left as it is: readers see it torn).
    pub fn mark_closed(&mut self, key: &ConnKey, closed_ns: u64) -> bool {
        let Some(slot) = self.indexed_slot(key) else {
            return false;
        };
        let capacity = self.geometry.payload_capacity();
        let mut buf = std::mem::take(&mut self.encode_buf);
        // The only writer reading its own slot: never raced. The bytes are patched only if they
        // are still the record the checksum covers and it is this connection's.
        let intact = self
            .slot_words(slot)
            .is_some_and(|words| copy_slot(words, &mut buf, capacity) == SlotCopy::Intact);
        let marked = intact
            && matches!(
                set_encoded_closed_time(&mut buf, &key.canonical_bytes(), closed_ns),
                Ok(true)
            );
        if marked {
            // Same length: it fits where it was.
            self.write_slot(slot, &buf);
        }
        self.encode_buf = buf;
        marked
    }

    /// Stores an absolute counter value in the header.
    pub fn set_counter(&self, counter: SensorCounter, value: u64) {
        if let Some(w) = self.words().get(counter.word()) {
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

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
}

/// A read-only view of a ring, one per httpd child. `Send + Sync`: lookups take `&self` and may
/// run on many threads at once.
pub struct RingReader {
    path: PathBuf,
    map: ReadOnlyWords,
    geometry: Geometry,
    generation: u64,
    hash_seed: u64,
    /// (device, inode) of the file mapped, to notice a replaced or deleted ring.
    identity: (u64, u64),
}

/// What a mapping of a ring knows about itself, for [`mapped_damage`].
struct MappedState<'a> {
    path: &'a Path,
    word: &'a dyn Fn(usize) -> u64,
    geometry: Geometry,
    generation: u64,
    mapped_bytes: u64,
    faulted: bool,
    identity: (u64, u64),
}

/// Whether the mapped ring file was changed in place (its header no longer what it was when
/// mapped) or cut shorter than the mapping: the checks the reader and the writer share.
fn mapped_damage(m: &MappedState<'_>) -> Option<RingError> {
    let path = || m.path.to_path_buf();
    // Cut short first: the header of a truncated file reads as zeros too, but "truncated" is
    // what happened.
    let meta = fs::symlink_metadata(m.path).ok();
    let same_file = meta
        .as_ref()
        .is_some_and(|x| (x.dev(), x.ino()) == m.identity);
    if m.faulted || (same_file && meta.as_ref().is_some_and(|x| x.len() < m.mapped_bytes)) {
        return Some(RingError::Truncated {
            path: path(),
            len: meta.map_or(0, |x| x.len()),
            needed: m.mapped_bytes,
        });
    }
    if (m.word)(layout::W_MAGIC) != layout::MAGIC {
        return Some(RingError::BadMagic { path: path() });
    }
    let (version, _) = layout::unpack((m.word)(layout::W_VERSION));
    if version != layout::LAYOUT_VERSION {
        return Some(RingError::Version {
            path: path(),
            found: version,
            expected: layout::LAYOUT_VERSION,
        });
    }
    let g = m.geometry;
    if layout::unpack((m.word)(layout::W_SLOTS)) != (g.slot_size, g.slot_count)
        || layout::unpack((m.word)(layout::W_INDEX)) != (g.index_buckets, g.probe_limit)
    {
        return Some(RingError::BadHeader {
            path: path(),
            field: "geometry",
            value: (m.word)(layout::W_SLOTS),
        });
    }
    if (m.word)(layout::W_GENERATION) != m.generation {
        return Some(RingError::BadHeader {
            path: path(),
            field: "generation",
            value: (m.word)(layout::W_GENERATION),
        });
    }
    None
}

/// Loads header word `i` of a read-only mapping (0 if the mapping is shorter). Relaxed load plus
/// acquire fence: the ordering of an Acquire load, in the form that is sound on read-only memory.
#[inline]
pub(crate) fn load_word(words: &[SharedWord], i: usize) -> u64 {
    let v = words.get(i).map_or(0, SharedWord::load);
    fence(Ordering::Acquire);
    v
}

impl RingReader {
    /// Maps an existing ring read-only and validates its header (magic, version, sizes against
    /// the file length). A missing, truncated or garbage file is an error, never a crash.
    pub fn open(path: &Path) -> Result<Self, RingError> {
        let MappedFile {
            map,
            meta,
            mapped_len,
        } = MappedFile::open(path, &layout::FILE_HEADER)?;
        let words = map.words();
        let word = |i: usize| load_word(words, i);
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
        if mapped_len < needed {
            return Err(RingError::Truncated {
                path: path.to_path_buf(),
                len: mapped_len,
                needed,
            });
        }
        let generation = word(layout::W_GENERATION);
        let hash_seed = word(layout::W_HASH_SEED);
        Ok(Self {
            path: path.to_path_buf(),
            map,
            geometry,
            generation,
            hash_seed,
            identity: (meta.dev(), meta.ino()),
        })
    }

    fn words(&self) -> &[SharedWord] {
        self.map.words()
    }

    fn header_word(&self, i: usize) -> u64 {
        load_word(self.words(), i)
    }

    /// Finds the newest record for `key` in O(1) (bounded index probing) and returns it owned.
    /// Uses a per-thread [`LookupBuf`]; [`RingReader::find`] avoids the string allocations.
    pub fn lookup(&self, key: &ConnKey) -> Lookup {
        self.lookup_traced(key).0
    }

    /// [`RingReader::lookup`], plus what each candidate slot turned out to be.
    pub fn lookup_traced(&self, key: &ConnKey) -> (Lookup, LookupTrace) {
        thread_local! {
            static BUF: std::cell::RefCell<LookupBuf> = std::cell::RefCell::new(LookupBuf::default());
        }
        let owned = |buf: &mut LookupBuf| {
            let (found, trace) = self.find(key, buf);
            let lookup = match found {
                Found::Hit(view) => Lookup::Hit(view.to_record()),
                Found::Miss => Lookup::Miss,
                Found::Torn => Lookup::Torn,
            };
            (lookup, trace)
        };
        // A nested lookup on the same thread (none exists today) gets a buffer of its own
        // rather than a panic.
        BUF.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => owned(&mut buf),
            Err(_) => owned(&mut LookupBuf::default()),
        })
    }

    /// Finds the newest record for `key`, decoded in place in `buf`: no allocation once the
    /// buffer has grown to a slot. The view borrows `buf` until the caller is done with it.
    pub fn find<'b>(&self, key: &ConnKey, buf: &'b mut LookupBuf) -> (Found<'b>, LookupTrace) {
        let g = self.geometry;
        let canonical = key.canonical_bytes();
        let hash = layout::key_hash(self.hash_seed, &canonical);
        let mut trace = LookupTrace::default();
        // The key's group: one 64-byte line of entries, loaded once (the acquire fence after the
        // loads pairs with the writer's Release store of an entry: the slot it points at was
        // written before).
        let start = g.group_start(hash);
        let mut group = [0u64; layout::INDEX_GROUP_WORDS];
        if let Some(words) = self.words().get(start..start + layout::INDEX_GROUP_WORDS) {
            for (dst, w) in group.iter_mut().zip(words) {
                *dst = w.load();
            }
        }
        fence(Ordering::Acquire);
        // Hello time of the record held in `buf.best`, if any.
        let mut best: Option<u64> = None;
        let mut matches = g.group_matches(&group, hash);
        while matches != 0 {
            let i = matches.trailing_zeros() as usize;
            matches &= matches - 1;
            let Some(slot) = group
                .get(i / 2)
                .and_then(|w| g.entry_slot(layout::word_entry(*w, i), hash))
            else {
                continue;
            };
            trace.candidates += 1;
            match self.read_slot(slot, &canonical, buf, &mut trace) {
                SlotRead::Record {
                    hello_time_ns,
                    key_matches: true,
                } => {
                    // Two entries for one 4-tuple only exist transiently (or in a damaged
                    // index): the later handshake is the connection's current one.
                    if best.is_none_or(|t| hello_time_ns >= t) {
                        best = Some(hello_time_ns);
                        std::mem::swap(&mut buf.current, &mut buf.best);
                    }
                }
                SlotRead::Record { .. } => trace.other_key += 1,
                SlotRead::Torn => trace.torn += 1,
                SlotRead::Corrupt => trace.corrupt += 1,
            }
        }
        let found = match best.map(|_| RecordView::parse(&buf.best)) {
            Some(Ok(view)) => Found::Hit(view),
            // Checksummed, with a valid head, but its strings do not decode: damage or a
            // hostile writer.
            Some(Err(_)) => {
                trace.corrupt += 1;
                Found::Torn
            }
            None if trace.torn > 0 || trace.corrupt > 0 => Found::Torn,
            None => Found::Miss,
        };
        (found, trace)
    }

    /// Copies `slot` under its seqlock into `buf.current` and checks it decodes. Every number
    /// read from the slot is checked before it is used; the bytes are only believed once the
    /// checksum matches.
    fn read_slot(
        &self,
        slot: u32,
        canonical: &[u8; CONN_KEY_BYTES],
        buf: &mut LookupBuf,
        trace: &mut LookupTrace,
    ) -> SlotRead {
        let g = self.geometry;
        if slot >= g.slot_count {
            return SlotRead::Corrupt;
        }
        // In range: `open` checked that every slot lies inside the mapping.
        let start = g.slots_start() + slot as usize * g.slot_words();
        let Some(slot_words) = self.words().get(start..start + g.slot_words()) else {
            return SlotRead::Corrupt;
        };
        // Start every line of a typical record on its way now, rather than one after another
        // as the copy below reaches them (its first load would otherwise wait for the length).
        mapping::prefetch(slot_words, PREFETCH_BYTES);
        let capacity = g.payload_capacity();
        for _ in 0..READ_ATTEMPTS {
            // Straight into the buffer the record is decoded from.
            match copy_slot(slot_words, &mut buf.current, capacity) {
                SlotCopy::Raced => {
                    trace.raced += 1;
                    std::hint::spin_loop();
                    continue;
                }
                SlotCopy::Corrupt => return SlotRead::Corrupt,
                SlotCopy::Intact => {}
            }
            // Only the fixed-size head here: the strings of the one record returned are
            // checked once, by the caller's full parse.
            return match RecordView::parse_head(&buf.current) {
                Ok((key, hello_time_ns)) => SlotRead::Record {
                    hello_time_ns,
                    key_matches: key == Some(canonical),
                },
                Err(_) => SlotRead::Corrupt,
            };
        }
        SlotRead::Torn
    }

    /// True when the file at the path is no longer the one mapped (sensor restarted and replaced
    /// it, or it was deleted), so the caller should re-open. Costs one `stat`.
    pub fn is_replaced(&self) -> bool {
        is_replaced(&self.path, self.identity)
    }

    /// The inode of the mapped file.
    pub fn inode(&self) -> u64 {
        self.identity.1
    }

    /// What is wrong with the mapped file itself, if anything: something other than the
    /// sensor wrote over it in place (same inode) — its header no longer says what it said
    /// when it was opened — or cut it shorter than the mapping (reading past its end would
    /// fault; see [`guard`]). The sensor never does either: a new ring is a new file renamed
    /// over the path.
    pub fn damage(&self) -> Option<RingError> {
        let words = self.words();
        mapped_damage(&MappedState {
            path: &self.path,
            word: &|i| load_word(words, i),
            geometry: self.geometry,
            generation: self.generation,
            mapped_bytes: (words.len() as u64).saturating_mul(8),
            faulted: self.map.faulted(),
            identity: self.identity,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The index hash of `key` in this ring (seeded per ring file): with [`Geometry::group_start`]
    /// and [`Geometry::index_entry`], where the writer puts the key's index entry.
    pub fn key_hash(&self, key: &ConnKey) -> u64 {
        layout::key_hash(self.hash_seed, &key.canonical_bytes())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn counter(&self, counter: SensorCounter) -> u64 {
        self.header_word(counter.word())
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

    /// Unix ns at which the ring was created.
    pub fn created_ns(&self) -> u64 {
        self.header_word(layout::W_CREATED)
    }

    pub fn geometry(&self) -> Geometry {
        self.geometry
    }
}

/// A reader's working memory for [`RingReader::find`]: the bytes of the candidate being checked and of the best match so far. Grows to one slot and is then reused:
/// keep one per thread.
#[derive(Debug, Default)]
pub struct LookupBuf {
    current: Vec<u8>,
    best: Vec<u8>,
}

/// Outcome of [`RingReader::find`]: [`Lookup`] with the record borrowed from a [`LookupBuf`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found<'b> {
    Hit(RecordView<'b>),
    Miss,
    Torn,
}

/// What one copy of a slot's payload was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotCopy {
    /// A stable copy that matches its length word and checksum.
    Intact,
    /// The writer was inside the slot during the copy.
    Raced,
    /// A stable copy that is not what its length word and checksum describe.
    Corrupt,
}

/// Copies the payload of a slot (`words`: its sequence, its length|crc word, its payload) into
/// `buf`, as many bytes as the length word claims (at most `capacity`: the seqlock clamps it),
/// and checks the copy against that length and the checksum. The readers' lookups and the
/// writer's in-place close both trust a slot only through this.
fn copy_slot<W: Word>(words: &[W], buf: &mut Vec<u8>, capacity: usize) -> SlotCopy {
    let (attempt, len_word) = seqlock::read(words, buf, |len_word| {
        (layout::unpack(len_word).0 as usize).min(capacity)
    });
    if attempt == ReadAttempt::Raced {
        return SlotCopy::Raced;
    }
    let (len, crc) = layout::unpack(len_word);
    if len == 0 || len as usize > capacity || len as usize != buf.len() {
        return SlotCopy::Corrupt;
    }
    if crc32fast::hash(buf) != crc {
        return SlotCopy::Corrupt;
    }
    SlotCopy::Intact
}

/// What one candidate slot was.
enum SlotRead {
    /// A valid record; whether it is the 4-tuple asked for.
    Record {
        hello_time_ns: u64,
        key_matches: bool,
    },
    /// Still being rewritten after every attempt.
    Torn,
    /// A stable copy that is not a valid record.
    Corrupt,
}

// httpd children share one reader between their threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<RingReader>();
    send_sync::<RingWriter>();
};
