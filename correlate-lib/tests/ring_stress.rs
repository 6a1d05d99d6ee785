//! A reader in another process (two threads sharing one `RingReader`, like an httpd child)
//! hammers lookups while the writer rewrites every slot as fast as it can. No hit may ever be a
//! mix of two writes, and the run must prove it overlapped the writer.
//!
//! The reader is this same test binary, re-executed with the ring path in the environment
//! ([`common::stress`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use common::stress::{read_until, write_while_reading};
use common::{consistent, key, record};
use correlate_lib::ring::{Lookup, LookupTrace, RingConfig, RingReader, RingWriter};

const CHILD_ENV: &str = "RING_STRESS_READER";
/// More 4-tuples than slots: every slot is rewritten constantly, and a third of the lookups are
/// for records already evicted.
const STRESS_KEYS: u64 = 48;
const STRESS_RING: RingConfig = RingConfig {
    slot_count: 16,
    slot_size: 1024,
};
/// The reader keeps going until it has seen this much overlap (or the harness's time limit).
const WANT_HITS: u64 = 20_000;
const WANT_RACED: u64 = 50;

#[derive(Default)]
struct Tally {
    hits: AtomicU64,
    misses: AtomicU64,
    torn: AtomicU64,
    raced: AtomicU64,
    corrupt: AtomicU64,
    other_key: AtomicU64,
}

impl Tally {
    fn add(&self, trace: &LookupTrace) {
        self.raced
            .fetch_add(u64::from(trace.raced), Ordering::Relaxed);
        self.corrupt
            .fetch_add(u64::from(trace.corrupt), Ordering::Relaxed);
        self.other_key
            .fetch_add(u64::from(trace.other_key), Ordering::Relaxed);
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// The reader half; a no-op unless re-executed by `concurrent_reader_process_never_sees_a_torn_record`.
#[test]
fn reader_process() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let reader = RingReader::open(Path::new(&path)).unwrap();
    let cursor_start = reader.published();
    let tally = Tally::default();
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (reader, tally, done) = (&reader, &tally, &done);
            s.spawn(move || {
                let mut i = t;
                while !done.load(Ordering::Relaxed) {
                    let k = key(20_000 + (i % STRESS_KEYS) as u16);
                    let (outcome, trace) = reader.lookup_traced(&k);
                    tally.add(&trace);
                    match outcome {
                        Lookup::Hit(rec) => {
                            assert_eq!(rec.key, Some(k), "hit for another 4-tuple");
                            assert!(
                                consistent(&rec, STRESS_KEYS),
                                "torn record returned: {rec:?}"
                            );
                            tally.hits.fetch_add(1, Ordering::Relaxed);
                        }
                        Lookup::Torn => {
                            tally.torn.fetch_add(1, Ordering::Relaxed);
                        }
                        Lookup::Miss => {
                            tally.misses.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 2;
                }
            });
        }
        read_until(&done, start, || {
            Tally::get(&tally.hits) >= WANT_HITS && Tally::get(&tally.raced) >= WANT_RACED
        });
    });
    println!(
        "STRESS hits={} misses={} torn={} raced={} corrupt={} other_key={} cursor_start={} cursor_end={} ms={}",
        Tally::get(&tally.hits),
        Tally::get(&tally.misses),
        Tally::get(&tally.torn),
        Tally::get(&tally.raced),
        Tally::get(&tally.corrupt),
        Tally::get(&tally.other_key),
        cursor_start,
        reader.published(),
        start.elapsed().as_millis(),
    );
}

#[test]
fn concurrent_reader_process_never_sees_a_torn_record() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stress.ring");
    let mut w = RingWriter::create(&path, STRESS_RING, 0o600, None).unwrap();
    for n in 0..STRESS_KEYS {
        w.publish(&record(n, STRESS_KEYS)).unwrap();
    }
    // Write until the reader is done: the whole of its run overlaps the writer.
    let mut n = STRESS_KEYS;
    let counts = write_while_reading(CHILD_ENV, &path, || {
        w.publish(&record(n, STRESS_KEYS)).unwrap();
        n += 1;
    });
    let (line, count) = (&counts.0, |name: &str| counts.get(name));
    println!("writer published {n} records; reader: {line}");
    assert!(count("hits") >= 1000, "the reader found records: {line}");
    assert!(
        count("cursor_end") >= count("cursor_start") + 1000,
        "the writer published while the reader read: {line}"
    );
    assert!(
        count("raced") > 0,
        "the reader caught the writer inside a slot at least once: {line}"
    );
    // Every torn copy was caught by the seqlock itself: the checksum (a second line of defence
    // against damage) never had to reject a stable copy.
    assert_eq!(count("corrupt"), 0, "{line}");
}
