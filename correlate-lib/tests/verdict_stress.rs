//! A reader in another process (two threads sharing one `VerdictReader`, like an httpd child)
//! looks verdicts up while the writer rewrites them as fast as it can. Every hit must be one
//! whole write (its word, rule and expiry all name the same write), and the run must prove it
//! overlapped the writer. Same harness as `ring_stress.rs`: the reader is this test binary,
//! re-executed with the table path in the environment.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use common::stress::{read_until, write_while_reading};
use correlate_lib::verdict::{VerdictKey, VerdictLookup, VerdictReader, VerdictWriter};

const CHILD_ENV: &str = "VERDICT_STRESS_READER";
/// Keys rewritten round-robin: every key's slot is rewritten constantly. The table is large
/// enough that no probe window is ever full (an eviction would make a key miss: not what this
/// test is about).
const KEYS: u32 = 24;
const SLOTS: u32 = 512;
const BASE_NS: u64 = 1_900_000_000_000_000_000;
const WANT_HITS: u64 = 20_000;

fn key(i: u32) -> IpAddr {
    IpAddr::from([198, 51, 100, i as u8])
}

/// Write `n` of key `i`: word, rule and expiry all derived from `n`.
fn words_of(n: u64) -> (String, String, u64) {
    // Every write expires after the reader's clock (BASE_NS), the first one too: on a loaded
    // machine the reader may run before the writer rewrites anything.
    (
        format!("w{}", n % 1000),
        format!("rule-{n}"),
        BASE_NS + 1 + n,
    )
}

#[test]
fn reader_process() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let reader = VerdictReader::open(Path::new(&path)).unwrap();
    let writes_start = reader.writes();
    let (hits, misses, torn) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let done = AtomicBool::new(false);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..2u32 {
            let (reader, hits, misses, torn, done) = (&reader, &hits, &misses, &torn, &done);
            s.spawn(move || {
                let mut i = t;
                while !done.load(Ordering::Relaxed) {
                    match reader.lookup(&VerdictKey::Ip(key(i % KEYS)), BASE_NS) {
                        VerdictLookup::Hit(v) => {
                            let n: u64 = v
                                .rule()
                                .strip_prefix("rule-")
                                .and_then(|n| n.parse().ok())
                                .unwrap_or_else(|| panic!("rule of no write: {v:?}"));
                            let (word, _, expires) = words_of(n);
                            assert_eq!(v.word(), word, "torn verdict {v:?}");
                            assert_eq!(v.expires_ns, expires, "torn verdict {v:?}");
                            assert_eq!(
                                n % u64::from(KEYS),
                                u64::from(i % KEYS),
                                "verdict of another key {v:?}"
                            );
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                        VerdictLookup::Miss => {
                            misses.fetch_add(1, Ordering::Relaxed);
                        }
                        VerdictLookup::Torn => {
                            torn.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 2;
                }
            });
        }
        read_until(&done, start, || hits.load(Ordering::Relaxed) >= WANT_HITS);
    });
    println!(
        "STRESS hits={} misses={} torn={} writes_start={} writes_end={}",
        hits.load(Ordering::Relaxed),
        misses.load(Ordering::Relaxed),
        torn.load(Ordering::Relaxed),
        writes_start,
        reader.writes()
    );
}

#[test]
fn concurrent_reader_process_never_sees_a_torn_verdict() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stress.verdicts");
    let mut w = VerdictWriter::create(&path, SLOTS, 0o600, None).unwrap();
    let mut n = 0u64;
    let set = |w: &mut VerdictWriter, n: u64| {
        let (word, rule, expires) = words_of(n);
        let k = VerdictKey::Ip(key((n % u64::from(KEYS)) as u32));
        w.set(&k, &word, &rule, expires, 0).unwrap();
    };
    while n < u64::from(KEYS) {
        set(&mut w, n);
        n += 1;
    }
    let counts = write_while_reading(CHILD_ENV, &path, || {
        set(&mut w, n);
        n += 1;
    });
    let (line, count) = (&counts.0, |name: &str| counts.get(name));
    println!("writer set {n} verdicts; reader: {line}");
    assert!(count("hits") >= 1000, "{line}");
    assert!(
        count("writes_end") >= count("writes_start") + 1000,
        "the writer wrote while the reader read: {line}"
    );
    // Every key always has a verdict (rewritten in place): a miss would be a lookup that lost
    // its key while the writer was inside its slot, which the seqlock retries prevent.
    assert_eq!(count("misses"), 0, "{line}");
}
