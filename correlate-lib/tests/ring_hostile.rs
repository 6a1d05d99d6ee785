//! Readers never trust the ring: files that are not rings are refused with the right error, and
//! slots damaged (or forged) after the reader mapped them are misses, never a crash, a hang or a
//! record of another connection.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{encode, forge_slot, forge_slot_raw, key, poke_word, record};
use correlate_lib::ring::layout::{self, Geometry};
use correlate_lib::ring::{Lookup, RingConfig, RingError, RingReader, RingWriter};

const SMALL: RingConfig = RingConfig {
    slot_count: 64,
    slot_size: 1024,
};

/// A fresh ring with records 0..n published (record `i` in slot `i`).
fn ring_with(dir: &Path, n: u64) -> (PathBuf, RingWriter) {
    let path = dir.join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    for i in 0..n {
        w.publish(&record(i, 1000)).unwrap();
    }
    (path, w)
}

fn geometry(path: &Path) -> Geometry {
    RingReader::open(path).unwrap().geometry()
}

/// Writes `payload` into `slot` with the bits `flip` of byte `at` flipped, under the checksum of
/// the intact payload: damage the seqlock cannot see.
fn forge_flipped_slot(path: &Path, g: &Geometry, slot: u32, payload: &[u8], at: usize, flip: u8) {
    let mut damaged = payload.to_vec();
    damaged[at] ^= flip;
    forge_slot_raw(
        path,
        g,
        slot,
        2,
        layout::pack(payload.len() as u32, crc32fast::hash(payload)),
        &damaged,
    );
}

// ---- files that are not rings ----

#[test]
fn missing_file_is_an_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = RingReader::open(&dir.path().join("missing.ring"))
        .err()
        .unwrap();
    assert!(
        matches!(&err, RingError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[test]
fn zero_length_file_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("empty.ring");
    std::fs::write(&p, b"").unwrap();
    assert!(matches!(
        RingReader::open(&p),
        Err(RingError::Truncated { len: 0, .. })
    ));
}

#[test]
fn random_garbage_file_has_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("garbage.ring");
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..100_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&p, garbage).unwrap();
    assert!(matches!(
        RingReader::open(&p),
        Err(RingError::BadMagic { .. })
    ));
}

#[test]
fn ring_with_wrong_magic_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 0);
    poke_word(&p, layout::W_MAGIC, u64::from_le_bytes(*b"JA4RINGX"));
    assert!(matches!(
        RingReader::open(&p),
        Err(RingError::BadMagic { .. })
    ));
}

#[test]
fn ring_of_another_layout_version_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 0);
    poke_word(
        &p,
        layout::W_VERSION,
        layout::pack(1, layout::HEADER_BYTES as u32),
    );
    let err = RingReader::open(&p).err().unwrap();
    assert!(
        matches!(
            err,
            RingError::Version {
                found: 1,
                expected: layout::LAYOUT_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    let expected = format!(
        "layout version 1, this build reads version {}",
        layout::LAYOUT_VERSION
    );
    assert!(err.to_string().contains(&expected), "{err}");
}

/// Each header field, set to a value a reader must not believe, and the field the error names.
#[test]
fn header_claiming_impossible_sizes_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _w) = ring_with(dir.path(), 3);
    let bytes = std::fs::read(&good).unwrap();
    let p = dir.path().join("bad.ring");
    let with = |word: usize, value: u64| {
        std::fs::write(&p, &bytes).unwrap();
        poke_word(&p, word, value);
        RingReader::open(&p)
    };
    let slots = |size: u32, count: u32| with(layout::W_SLOTS, layout::pack(size, count));
    let index = |buckets: u32, probe: u32| with(layout::W_INDEX, layout::pack(buckets, probe));
    let cases: Vec<(&str, Result<RingReader, RingError>, &str)> = vec![
        ("slot count u32::MAX", slots(1024, u32::MAX), "slot_count"),
        ("slot count 0", slots(1024, 0), "slot_count"),
        ("slot size u32::MAX", slots(u32::MAX, 64), "slot_size"),
        ("slot size 0", slots(0, 64), "slot_size"),
        ("slot size below minimum", slots(64, 64), "slot_size"),
        ("slot size not 8-aligned", slots(1028, 64), "slot_size"),
        ("index not a power of two", index(100, 16), "index_buckets"),
        ("index smaller than slots", index(32, 16), "index_buckets"),
        ("index 2^31 buckets", index(1 << 31, 16), "index_buckets"),
        ("index smaller than a group", index(8, 16), "index_buckets"),
        ("probe limit 0", index(128, 0), "probe_limit"),
        ("probe limit 8", index(128, 8), "probe_limit"),
        ("probe limit u32::MAX", index(128, u32::MAX), "probe_limit"),
        (
            "header size",
            with(
                layout::W_VERSION,
                layout::pack(layout::LAYOUT_VERSION, 4096),
            ),
            "header_bytes",
        ),
    ];
    for (what, result, field) in cases {
        match result {
            Err(RingError::BadHeader { field: f, .. }) => assert_eq!(f, field, "{what}"),
            other => panic!("{what}: expected BadHeader({field}), got {:?}", other.err()),
        }
    }
    // Within every limit, but far more than the file holds.
    match slots(layout::MAX_SLOT_SIZE, 64) {
        Err(RingError::Truncated { len, needed, .. }) => {
            assert_eq!(len, bytes.len() as u64);
            assert!(needed > 64 * u64::from(layout::MAX_SLOT_SIZE), "{needed}");
        }
        other => panic!("expected Truncated, got {:?}", other.err()),
    }
}

#[test]
fn truncated_ring_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (good, _w) = ring_with(dir.path(), 3);
    let bytes = std::fs::read(&good).unwrap();
    let p = dir.path().join("cut.ring");
    for cut in [
        layout::HEADER_BYTES - 1,
        layout::HEADER_BYTES,
        bytes.len() / 2,
        bytes.len() - 1,
    ] {
        std::fs::write(&p, &bytes[..cut]).unwrap();
        assert!(
            matches!(RingReader::open(&p), Err(RingError::Truncated { .. })),
            "cut at {cut}"
        );
    }
}

#[test]
fn fifo_or_directory_at_the_ring_path_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.ring");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if made.map(|s| s.success()).unwrap_or(false) {
        // Opening a FIFO for reading blocks until a writer appears, unless the reader asks not to.
        let start = Instant::now();
        assert!(matches!(
            RingReader::open(&fifo),
            Err(RingError::NotAFile { .. })
        ));
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    let err = RingReader::open(dir.path()).err().unwrap();
    assert!(
        matches!(err, RingError::NotAFile { .. } | RingError::Io { .. }),
        "{err:?}"
    );
}

// ---- slots damaged after the reader mapped them ----

#[test]
fn flipped_payload_byte_is_torn_not_a_wrong_record() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 3);
    let r = RingReader::open(&p).unwrap();
    let g = r.geometry();
    let rec = record(1, 1000);
    assert_eq!(r.lookup(&rec.key.unwrap()), Lookup::Hit(rec.clone()));
    // Flip one bit of the SNI's bytes inside slot 1, in place, while the reader has it mapped.
    let payload = encode(&rec);
    let at = payload
        .windows(rec.tls_sni.len())
        .position(|w| w == rec.tls_sni.as_bytes())
        .unwrap();
    forge_flipped_slot(&p, &g, 1, &payload, at, 0x20);
    let (outcome, trace) = r.lookup_traced(&rec.key.unwrap());
    assert_eq!(outcome, Lookup::Torn);
    assert_eq!(trace.corrupt, 1, "{trace:?}");
    // Its neighbours are untouched.
    let other = record(2, 1000);
    assert_eq!(r.lookup(&other.key.unwrap()), Lookup::Hit(other));
}

#[test]
fn a_close_does_not_bless_a_damaged_slot_with_a_fresh_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (p, mut w) = ring_with(dir.path(), 3);
    let g = geometry(&p);
    let rec = record(1, 1000);
    let payload = encode(&rec);
    forge_flipped_slot(&p, &g, 1, &payload, payload.len() - 1, 0x01);
    assert!(!w.mark_closed(&rec.key.unwrap(), 99), "damaged: not marked");
    let r = RingReader::open(&p).unwrap();
    assert_eq!(r.lookup(&rec.key.unwrap()), Lookup::Torn, "still torn");
    // An intact neighbour is marked as usual.
    let other = record(2, 1000);
    assert!(w.mark_closed(&other.key.unwrap(), 99));
    let Lookup::Hit(got) = r.lookup(&other.key.unwrap()) else {
        panic!("neighbour still there")
    };
    assert_eq!(got.closed_time_ns, 99);
}

#[test]
fn forged_slot_holding_another_connection_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 3);
    let r = RingReader::open(&p).unwrap();
    let g = r.geometry();
    // A perfectly valid slot (good length and checksum) for a 4-tuple the index does not point
    // at: the reader compares the decoded key, not just the hash tag.
    let mut stranger = record(500, 1000);
    stranger.key = Some(key(9));
    forge_slot(&p, &g, 0, &encode(&stranger));
    let (outcome, trace) = r.lookup_traced(&record(0, 1000).key.unwrap());
    assert_eq!(outcome, Lookup::Miss);
    assert_eq!(trace.other_key, 1, "{trace:?}");
    assert_eq!(
        r.lookup(&key(9)),
        Lookup::Miss,
        "no index entry points to it"
    );
}

#[test]
fn slot_length_beyond_the_slot_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 3);
    let r = RingReader::open(&p).unwrap();
    let g = r.geometry();
    let k = record(0, 1000).key.unwrap();
    for len in [0u32, g.slot_size - 15, g.slot_size, u32::MAX] {
        forge_slot_raw(&p, &g, 0, 2, layout::pack(len, 0), &[0xAB; 64]);
        let (outcome, trace) = r.lookup_traced(&k);
        assert_eq!(outcome, Lookup::Torn, "len {len}");
        assert_eq!(trace.corrupt, 1, "len {len}: {trace:?}");
    }
}

#[test]
fn slot_left_odd_by_a_dead_writer_is_torn_after_bounded_retries() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 3);
    let r = RingReader::open(&p).unwrap();
    let g = r.geometry();
    let rec = record(0, 1000);
    let payload = encode(&rec);
    forge_slot_raw(
        &p,
        &g,
        0,
        7,
        layout::pack(payload.len() as u32, crc32fast::hash(&payload)),
        &payload,
    );
    let start = Instant::now();
    let (outcome, trace) = r.lookup_traced(&rec.key.unwrap());
    assert_eq!(outcome, Lookup::Torn);
    assert_eq!(trace.torn, 1);
    assert_eq!(trace.raced, correlate_lib::ring::READ_ATTEMPTS);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "a reader never waits"
    );
}

#[test]
fn index_entries_pointing_outside_the_ring_are_torn() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = ring_with(dir.path(), 3);
    let r = RingReader::open(&p).unwrap();
    let g = r.geometry();
    let k = record(0, 1000).key.unwrap();
    let hash = r.key_hash(&k);
    // The key's own tag, so the reader does try these entries, with slot numbers past the end.
    let beyond = g.index_entry(hash, g.slot_mask() - 1);
    assert_eq!(g.entry_slot(beyond, hash), Some(g.slot_mask() - 1));
    assert!(
        g.slot_mask() > g.slot_count,
        "a slot number past the end fits"
    );
    for w in 0..g.index_words() {
        poke_word(&p, g.index_start() + w, layout::pack(beyond, beyond));
    }
    let (outcome, trace) = r.lookup_traced(&k);
    assert_eq!(outcome, Lookup::Torn);
    assert_eq!(trace.corrupt, g.probe_limit, "{trace:?}");
}

/// Fills the whole file after the header with random bytes, or a random header, and reads.
fn lookups_survive(path: &Path) {
    if let Ok(r) = RingReader::open(path) {
        for n in 0..40 {
            let rec = record(n, 1000);
            if let Lookup::Hit(got) = r.lookup(&rec.key.unwrap()) {
                assert_eq!(got, rec, "a hit is always the true record");
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// The checksum is no defence against a hostile writer (it can compute one): with a valid
    /// length and crc over random bytes, the decoder and the key comparison must still hold.
    #[test]
    fn random_payload_with_a_valid_checksum_never_panics_or_lies(
        payload in proptest::collection::vec(proptest::num::u8::ANY, 1..1008),
        keep_prefix in proptest::bool::ANY,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (p, _w) = ring_with(dir.path(), 3);
        let g = geometry(&p);
        let rec = record(0, 1000);
        let mut payload = payload;
        if keep_prefix {
            // Keep the true codec version, flags and key so decoding gets further in.
            let real = encode(&rec);
            let n = payload.len().min(38);
            payload[..n].copy_from_slice(&real[..n]);
        }
        forge_slot(&p, &g, 0, &payload);
        let r = RingReader::open(&p).unwrap();
        // A reader picks candidates by the record's fixed head (key, hello time) and decodes
        // the strings of the one it returns: a head naming another connection is a miss
        // whatever follows it; a head or strings that do not decode are a torn read.
        let canonical = rec.key.unwrap().canonical_bytes();
        let expected = match correlate_lib::RecordView::parse_head(&payload) {
            Ok((key, _)) if key != Some(&canonical) => Lookup::Miss,
            Ok(_) => match correlate_lib::TlsRecord::decode(&payload) {
                Ok(d) => Lookup::Hit(d),
                Err(_) => Lookup::Torn,
            },
            Err(_) => Lookup::Torn,
        };
        proptest::prop_assert_eq!(r.lookup(&rec.key.unwrap()), expected);
    }

    #[test]
    fn random_bytes_over_index_and_slots_never_panic_a_lookup(
        noise in proptest::collection::vec(proptest::num::u8::ANY, 1..8192),
        at in 0u64..70_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (p, _w) = ring_with(dir.path(), 40);
        let len = std::fs::metadata(&p).unwrap().len();
        let room = len - layout::HEADER_BYTES as u64 - noise.len() as u64;
        let off = layout::HEADER_BYTES as u64 + at % room;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &noise, off).unwrap();
        lookups_survive(&p);
    }

    #[test]
    fn random_header_words_never_panic_open_or_lookup(
        words in proptest::collection::vec(proptest::num::u64::ANY, 1..8),
        small in proptest::collection::vec(0u64..300, 3),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (p, _w) = ring_with(dir.path(), 40);
        // Words 1..=3 hold the geometry: mostly small numbers, to pass some checks.
        for (i, w) in words.iter().enumerate() {
            let v = if i < small.len() { layout::pack(small[i] as u32 * 8, *w as u32 % 256) } else { *w };
            poke_word(&p, 1 + i % 8, v);
        }
        lookups_survive(&p);
    }
}

// ---- the writer in a world-writable directory ----

#[test]
fn planted_symlink_at_the_temp_name_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let tmp = dir
        .path()
        .join(format!("r.ring.tmp.{}", std::process::id()));
    std::os::unix::fs::symlink(&victim, &tmp).unwrap();
    let mut w = RingWriter::create(&path, SMALL, 0o640, None).unwrap();
    w.publish(&record(1, 1000)).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(
        !tmp.exists() && tmp.symlink_metadata().is_err(),
        "no temp left"
    );
    assert!(!path.symlink_metadata().unwrap().file_type().is_symlink());
    let r = RingReader::open(&path).unwrap();
    assert!(matches!(
        r.lookup(&record(1, 1000).key.unwrap()),
        Lookup::Hit(_)
    ));
}

#[test]
fn ring_gets_the_configured_mode_and_group() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let gid = std::fs::metadata(dir.path()).unwrap().gid();
    RingWriter::create(&path, SMALL, 0o640, Some(gid)).unwrap();
    let m = std::fs::metadata(&path).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o640);
    assert_eq!(m.gid(), gid);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        vec![std::ffi::OsString::from("r.ring")],
        "no temp left"
    );
}

#[test]
fn invalid_ring_configurations_are_refused_before_any_file_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    for (slot_count, slot_size) in [
        (0, 1024),
        (64, 1020),
        (64, 8),
        (64, layout::MAX_SLOT_SIZE + 8),
        (layout::MAX_SLOT_COUNT + 1, 1024),
        (u32::MAX, 1024),
    ] {
        let r = RingWriter::create(
            &path,
            RingConfig {
                slot_count,
                slot_size,
            },
            0o600,
            None,
        );
        assert!(
            matches!(r, Err(RingError::Config(_))),
            "{slot_count} × {slot_size}: {:?}",
            r.err()
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
