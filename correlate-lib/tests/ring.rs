//! The shared-memory ring: round trip, eviction, replacement, files that are not rings.
//! (The cross-process stress test is `ring_stress.rs`, hostile files and slots `ring_hostile.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::Path;

use correlate_lib::fingerprint::syn::OptionKinds;
use correlate_lib::record::v4;
use correlate_lib::ring::{
    layout, Lookup, RingConfig, RingError, RingReader, RingWriter, SensorCounter,
};
use correlate_lib::{ConnKey, IpMeta, TcpMeta, TlsRecord};

const SMALL: RingConfig = RingConfig {
    slot_count: 64,
    slot_size: 1024,
};

fn key(port: u16) -> ConnKey {
    ConnKey::new(v4(10, 1, 2, 3, port), v4(192, 0, 2, 1, 443))
}

/// A record whose every field is derived from `n`, so a reader can tell a consistent record
/// from a mix of two writes.
fn record(n: u64, keys: u64) -> TlsRecord {
    let port = 20_000 + (n % keys) as u16;
    TlsRecord {
        key: Some(key(port)),
        syn_time_ns: n * 10,
        hello_time_ns: n * 10 + 7,
        closed_time_ns: 0,
        ip: Some(IpMeta {
            ttl: (n % 255) as u8,
            total_length: (n % 65_000) as u16,
            id: (n % 65_000) as u16,
            df: n.is_multiple_of(2),
        }),
        tcp: Some(TcpMeta {
            window_size: (n % 65_000) as u16,
            mss: 1460,
            window_scale: Some((n % 15) as u8),
            options: format!("MSS,NOP,WScale{}", n % 7),
        }),
        tls_version: "1.3".into(),
        tls_sni: format!("host-{n}.example"),
        tls_alpn: "h2".into(),
        ja4: format!("t13d{:012}", n),
        ja4_r: "x".repeat((n % 300) as usize),
        ja3: format!("771,{n},{n},{n},0"),
        ja3_hash: format!("{:032x}", n),
        sensor_id: "stress".into(),
        tcp_os: ["", "Linux 3.11 and newer", "Windows 7 or 8"][(n % 3) as usize].into(),
        tcp_os_distance: Some((n % 40) as u8),
        tcp_option_kinds: OptionKinds::from_slice(
            &[2, 1, 3, 1, 1, 8, 4, 0, 0][..(n % 10) as usize],
        ),
    }
}

#[test]
fn published_record_is_found_by_its_four_tuple() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o640, None).unwrap();
    let rec = record(5, 1000);
    w.publish(&rec).unwrap();
    let r = RingReader::open(&path).unwrap();
    assert_eq!(r.lookup(&rec.key.unwrap()), Lookup::Hit(rec));
    assert_eq!(r.lookup(&key(1)), Lookup::Miss);
    assert_eq!(r.generation(), w.generation());
    assert_eq!(r.published(), 1);
    let mode = std::fs::metadata(&path)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    assert_eq!(
        mode & 0o777,
        0o640,
        "created with the configured mode despite the umask"
    );
}

#[test]
fn mapped_ipv4_client_finds_the_ipv4_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let rec = record(9, 1000);
    w.publish(&rec).unwrap();
    let k = rec.key.unwrap();
    let mapped: SocketAddr = format!("[::ffff:{}]:{}", k.src.ip(), k.src.port())
        .parse()
        .unwrap();
    let r = RingReader::open(&path).unwrap();
    assert_eq!(r.lookup(&ConnKey::new(mapped, k.dst)), Lookup::Hit(rec));
}

#[test]
fn wrap_around_evicts_the_oldest_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let total = u64::from(SMALL.slot_count) * 3 + 5;
    for n in 0..total {
        w.publish(&record(n, 1_000_000)).unwrap();
    }
    let r = RingReader::open(&path).unwrap();
    let newest_first = total - u64::from(SMALL.slot_count);
    for n in 0..newest_first {
        assert_eq!(
            r.lookup(&record(n, 1_000_000).key.unwrap()),
            Lookup::Miss,
            "record {n} was evicted"
        );
    }
    let hits = (newest_first..total)
        .filter(|n| {
            matches!(
                r.lookup(&record(*n, 1_000_000).key.unwrap()),
                Lookup::Hit(_)
            )
        })
        .count();
    // A probe window that is full of newer entries can drop a record before its slot is reused;
    // with twice as many buckets as slots that is rare.
    assert!(
        hits as u64 >= u64::from(SMALL.slot_count) * 95 / 100,
        "only {hits} of the newest were found"
    );
}

#[test]
fn reused_four_tuple_returns_the_newest_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let old = record(1, 10);
    let new = record(11, 10);
    assert_eq!(old.key, new.key);
    w.publish(&old).unwrap();
    w.publish(&new).unwrap();
    let r = RingReader::open(&path).unwrap();
    assert_eq!(r.lookup(&new.key.unwrap()), Lookup::Hit(new));
}

#[test]
fn close_time_is_recorded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let rec = record(3, 1000);
    w.publish(&rec).unwrap();
    assert!(w.mark_closed(&rec.key.unwrap(), 99));
    assert!(!w.mark_closed(&key(1), 99), "no record, nothing to mark");
    let r = RingReader::open(&path).unwrap();
    let Lookup::Hit(got) = r.lookup(&rec.key.unwrap()) else {
        panic!("record still there")
    };
    assert_eq!(got.closed_time_ns, 99);
    assert_eq!(
        TlsRecord {
            closed_time_ns: 0,
            ..got
        },
        rec
    );
    assert_eq!(r.published(), 1, "a close is not a new record");
}

#[test]
fn oversized_record_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(
        &path,
        RingConfig {
            slot_count: 8,
            slot_size: 256,
        },
        0o600,
        None,
    )
    .unwrap();
    let mut rec = record(1, 10);
    rec.ja3 = "1-".repeat(400);
    assert!(matches!(
        w.publish(&rec),
        Err(RingError::RecordTooLarge { .. })
    ));
    let mut keyless = record(2, 10);
    keyless.key = None;
    assert!(matches!(w.publish(&keyless), Err(RingError::NoKey)));
}

#[test]
fn counters_and_watermark_reach_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let r = RingReader::open(&path).unwrap();
    w.set_counter(SensorCounter::KernelDrops, 42);
    w.set_watermark(123_456);
    assert_eq!(r.counter(SensorCounter::KernelDrops), 42);
    assert_eq!(r.counter(SensorCounter::PacketsSeen), 0);
    assert_eq!(r.watermark(), 123_456);
    assert_eq!(r.writer_pid(), std::process::id());
}

#[test]
fn restarted_writer_or_deleted_file_is_noticed_by_readers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let w1 = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let r = RingReader::open(&path).unwrap();
    assert!(!r.is_replaced());
    let w2 = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    assert!(r.is_replaced(), "a new ring file replaced the mapped one");
    assert_ne!(w1.generation(), w2.generation());
    let r2 = RingReader::open(&path).unwrap();
    assert_eq!(r2.generation(), w2.generation());
    std::fs::remove_file(&path).unwrap();
    assert!(r2.is_replaced(), "a deleted ring is replaced");
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn files_that_are_not_rings_are_rejected_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.ring");
    assert!(matches!(
        RingReader::open(&dir.path().join("missing")),
        Err(RingError::Io { .. })
    ));
    write_file(&p, b"");
    assert!(matches!(
        RingReader::open(&p),
        Err(RingError::Truncated { .. })
    ));
    let garbage: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    write_file(&p, &garbage);
    assert!(matches!(
        RingReader::open(&p),
        Err(RingError::BadMagic { .. })
    ));

    // A real ring, then damaged header by header field.
    let good = dir.path().join("good.ring");
    RingWriter::create(&good, SMALL, 0o600, None).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let patch = |word: usize, value: u64| {
        let mut b = bytes.clone();
        b[word * 8..word * 8 + 8].copy_from_slice(&value.to_le_bytes());
        write_file(&p, &b);
        RingReader::open(&p)
    };
    assert!(matches!(
        patch(layout::W_VERSION, layout::pack(1, 512)),
        Err(RingError::Version { found: 1, .. })
    ));
    assert!(matches!(
        patch(layout::W_SLOTS, layout::pack(1024, u32::MAX)),
        Err(RingError::BadHeader {
            field: "slot_count",
            ..
        })
    ));
    assert!(matches!(
        patch(layout::W_SLOTS, layout::pack(1001, 64)),
        Err(RingError::BadHeader {
            field: "slot_size",
            ..
        })
    ));
    assert!(matches!(
        patch(layout::W_SLOTS, layout::pack(1024, 1_000_000)),
        Err(RingError::BadHeader { .. }) | Err(RingError::Truncated { .. })
    ));
    assert!(matches!(
        patch(layout::W_INDEX, layout::pack(100, 8)),
        Err(RingError::BadHeader {
            field: "index_buckets",
            ..
        })
    ));
    write_file(&p, &bytes[..bytes.len() / 2]);
    assert!(matches!(
        RingReader::open(&p),
        Err(RingError::Truncated { .. })
    ));
}

#[test]
fn corrupted_slots_are_misses_never_wrong_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let recs: Vec<TlsRecord> = (0..32).map(|n| record(n, 1000)).collect();
    for r in &recs {
        w.publish(r).unwrap();
    }
    let reader = RingReader::open(&path).unwrap();
    let g = reader.geometry();
    // Scribble over every slot's payload and the index through a second handle on the file.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for slot in 0..g.slot_count as u64 {
        let off =
            (g.slots_start() as u64 * 8) + slot * u64::from(g.slot_size) + 16 + (slot * 13) % 200;
        f.seek(SeekFrom::Start(off)).unwrap();
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        f.write_all(&state.to_le_bytes()).unwrap();
    }
    for r in &recs {
        match reader.lookup(&r.key.unwrap()) {
            Lookup::Hit(got) => assert_eq!(&got, r, "a hit is always the true record"),
            Lookup::Miss | Lookup::Torn => {}
        }
    }
    // Index entries pointing outside the ring.
    for b in 0..g.index_buckets as u64 {
        f.seek(SeekFrom::Start((g.index_start() as u64 + b) * 8))
            .unwrap();
        f.write_all(&u64::MAX.to_le_bytes()).unwrap();
    }
    for r in &recs {
        assert!(!matches!(reader.lookup(&r.key.unwrap()), Lookup::Hit(_)));
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn random_bytes_in_slots_never_panic_a_lookup(noise in proptest::collection::vec(proptest::num::u8::ANY, 1..4096), at in 0usize..60_000) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.ring");
        let mut w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
        for n in 0..40 { w.publish(&record(n, 1000)).unwrap(); }
        let len = std::fs::metadata(&path).unwrap().len() as usize;
        let off = (layout::HEADER_BYTES + at) % (len - noise.len().min(len - layout::HEADER_BYTES));
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.seek(SeekFrom::Start(off.max(layout::HEADER_BYTES) as u64)).unwrap();
        f.write_all(&noise).unwrap();
        let r = RingReader::open(&path).unwrap();
        for n in 0..40 {
            let rec = record(n, 1000);
            if let Lookup::Hit(got) = r.lookup(&rec.key.unwrap()) {
                proptest::prop_assert_eq!(got, rec);
            }
        }
    }
}

#[test]
fn reader_of_a_replaced_ring_keeps_its_old_records_until_it_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.ring");
    let mut old = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    old.publish(&record(1, 1000)).unwrap();
    let r = RingReader::open(&path).unwrap();
    let mut new = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    new.publish(&record(2, 1000)).unwrap();
    // The old file is unlinked, not truncated: its mapping stays valid (no SIGBUS).
    assert!(r.is_replaced());
    assert!(matches!(
        r.lookup(&record(1, 1000).key.unwrap()),
        Lookup::Hit(_)
    ));
    assert_eq!(r.lookup(&record(2, 1000).key.unwrap()), Lookup::Miss);
    let r2 = RingReader::open(&path).unwrap();
    assert!(!r2.is_replaced());
    assert_eq!(r2.generation(), new.generation());
    assert_eq!(r2.lookup(&record(1, 1000).key.unwrap()), Lookup::Miss);
    assert!(matches!(
        r2.lookup(&record(2, 1000).key.unwrap()),
        Lookup::Hit(_)
    ));
}

#[test]
fn a_ring_overwritten_or_truncated_in_place_says_what_was_seen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ja4.ring");
    let _w = RingWriter::create(&path, SMALL, 0o600, None).unwrap();
    let r = RingReader::open(&path).unwrap();
    assert!(r.damage().is_none(), "a sensor's ring is intact");
    // Random bytes over the header, same inode (what `dd conv=notrunc` does).
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    std::os::unix::fs::FileExt::write_at(&f, &[0x5a; 64], 0).unwrap();
    assert!(!r.is_replaced(), "same inode");
    assert!(matches!(r.damage(), Some(RingError::BadMagic { .. })));
    let dir2 = tempfile::tempdir().unwrap();
    let path2 = dir2.path().join("ja4.ring");
    let _w2 = RingWriter::create(&path2, SMALL, 0o600, None).unwrap();
    let r2 = RingReader::open(&path2).unwrap();
    // Cut shorter than the mapping, in place: reading past the end would fault.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path2)
        .unwrap()
        .set_len(4096)
        .unwrap();
    assert!(matches!(
        r2.damage(),
        Some(RingError::Truncated { len: 4096, .. })
    ));
}
