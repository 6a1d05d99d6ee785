//! Ring lookup cost as an httpd child pays it, with a full ring (every slot written, the index
//! as crowded as it gets): a hit (the record is copied, checked and decoded in place: `find_hit`;
//! plus the copy into an owned record the module caches on the connection: `lookup_hit`), a miss
//! (the probe window is scanned), and the writer's publish rate. Hits are spread over the whole
//! 64 MiB ring, so most of them miss the CPU caches: a worst case, a request usually follows its
//! handshake within milliseconds.
//!
//! Criterion gives the median with its confidence interval; the p99 of single lookups, which
//! criterion does not report, is measured after it by timing a million lookups one by one
//! (minus the cost of reading the clock) and printed as `p99`.
//! Run: `cargo bench -p correlate-lib --bench ring` (part of `make bench`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use correlate_lib::ring::{Found, Lookup, LookupBuf, RingConfig, RingReader, RingWriter};
use correlate_lib::{ConnKey, IpMeta, TcpMeta, TlsRecord};
use criterion::{criterion_group, Criterion, Throughput};

const SLOTS: u32 = 65_536;
/// Records a request finds while they are still in the CPU cache.
const HOT: usize = 512;

fn key(n: u32) -> ConnKey {
    let client = Ipv4Addr::from(0x0a00_0000 | (n >> 16));
    ConnKey::new(
        SocketAddr::new(IpAddr::V4(client), (n & 0xffff) as u16),
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 443),
    )
}

/// A realistic record: a Chrome-like hello's strings.
fn record(n: u32) -> TlsRecord {
    TlsRecord {
        key: Some(key(n)),
        syn_time_ns: 1_700_000_000_000_000_000 + u64::from(n) * 1000,
        hello_time_ns: 1_700_000_000_000_000_000 + u64::from(n) * 1000 + 900,
        closed_time_ns: 0,
        ip: Some(IpMeta { ttl: 64, total_length: 60, id: n as u16, df: true }),
        tcp: Some(TcpMeta {
            window_size: 64240,
            mss: 1460,
            window_scale: Some(7),
            options: "MSS,SACK,Timestamps,NOP,WScale".into(),
        }),
        tls_version: "1.3".into(),
        tls_sni: "www.example.com".into(),
        tls_alpn: "h2".into(),
        ja4: "t13d1516h2_8daaf6152771_02713d6af862".into(),
        ja4_r: "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,4469,fe0d,ff01_0403,0804,0401,0503,0805,0501,0806,0601".into(),
        ja3: "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,0-23-65281-10-11-35-16-5-13-18-51-45-43-27-17513-65037,29-23-24,0".into(),
        ja3_hash: "cd08e31494f9531f560d64c695473da9".into(),
        sensor_id: "bench".into(),
        tcp_os: "Linux 3.11 and newer".into(),
        tcp_os_distance: Some(0),
        tcp_option_kinds: correlate_lib::fingerprint::syn::OptionKinds::from_slice(&[2, 4, 8, 1, 3]),
    }
}

struct Full {
    _dir: tempfile::TempDir,
    writer: RingWriter,
    reader: RingReader,
    /// Keys whose records are still in the ring (the newest SLOTS published).
    live: Vec<ConnKey>,
}

fn full_ring() -> Full {
    // On tmpfs, where the sensor keeps its ring (/dev/shm), when there is one.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let path = dir.path().join("bench.ring");
    let config = RingConfig {
        slot_count: SLOTS,
        ..RingConfig::default()
    };
    let mut writer = RingWriter::create(&path, config, 0o600, None).unwrap();
    // Twice around: every slot overwritten once, the index carrying evictions.
    for n in 0..2 * SLOTS {
        writer.publish(&record(n)).unwrap();
    }
    let reader = RingReader::open(&path).unwrap();
    let live: Vec<ConnKey> = (SLOTS..2 * SLOTS)
        .map(key)
        .filter(|k| matches!(reader.lookup(k), Lookup::Hit(_)))
        .collect();
    Full {
        _dir: dir,
        writer,
        reader,
        live,
    }
}

fn lookups(c: &mut Criterion) {
    let mut full = full_ring();
    let mut g = c.benchmark_group("ring");
    g.measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    // The next key: a step through the keys without a division per iteration (a `%` by a
    // length the compiler does not know costs tens of cycles, counted as lookup time).
    let len = full.live.len();
    let step = |i: usize, by: usize| if i + by >= len { i + by - len } else { i + by };
    let mut i = 0usize;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = step(i, 7919);
            black_box(full.reader.lookup(&full.live[i]))
        })
    });
    let mut buf = LookupBuf::default();
    g.bench_function("find_hit", |b| {
        b.iter(|| {
            i = step(i, 7919);
            matches!(full.reader.find(&full.live[i], &mut buf).0, Found::Hit(v) if black_box(v).hello_time_ns > 0)
        })
    });
    // The usual case: the request follows its handshake by milliseconds, so the record was
    // written moments ago and is still in the cache. Cycles over the 512 newest records.
    let hot = &full.live[full.live.len().saturating_sub(HOT)..];
    let mut h = 0usize;
    g.bench_function("find_hit_recent", |b| {
        b.iter(|| {
            h += 1;
            if h == hot.len() {
                h = 0;
            }
            matches!(full.reader.find(&hot[h], &mut buf).0, Found::Hit(v) if black_box(v).hello_time_ns > 0)
        })
    });
    let mut m = 0u32;
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            m = m.wrapping_add(1);
            black_box(full.reader.lookup(&key(3 * SLOTS + (m % SLOTS))))
        })
    });
    g.throughput(Throughput::Elements(1));
    let mut n = 2 * SLOTS;
    let rec = record(0);
    g.bench_function("publish", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            let mut r = rec.clone();
            r.key = Some(key(n));
            full.writer.publish(black_box(&r)).unwrap();
        })
    });
    g.finish();
}

/// p50/p99 of single lookups, timed one by one.
fn percentiles() {
    let full = full_ring();
    let clock = {
        let mut v: Vec<u64> = (0..100_000)
            .map(|_| {
                let t = Instant::now();
                black_box(());
                t.elapsed().as_nanos() as u64
            })
            .collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let mut buf = LookupBuf::default();
    let hot = &full.live[full.live.len().saturating_sub(HOT)..];
    for (name, hit, owned) in [
        ("lookup_hit", Some(&full.live[..]), true),
        ("find_hit", Some(&full.live[..]), false),
        ("find_hit_recent", Some(hot), false),
        ("lookup_miss", None, true),
    ] {
        let mut v = Vec::with_capacity(1_000_000);
        for j in 0..1_000_000usize {
            let k = match hit {
                Some(keys) => keys[(j * 7919) % keys.len()],
                None => key(3 * SLOTS + (j as u32 % SLOTS)),
            };
            let t = Instant::now();
            if owned {
                black_box(full.reader.lookup(&k));
            } else {
                black_box(full.reader.find(&k, &mut buf).0);
            }
            v.push((t.elapsed().as_nanos() as u64).saturating_sub(clock));
        }
        v.sort_unstable();
        let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
        println!(
            "ring/{name}: single lookups, clock cost {clock} ns subtracted: p50 {} ns, p99 {} ns, p99.9 {} ns",
            p(0.5),
            p(0.99),
            p(0.999)
        );
    }
    println!(
        "ring: {} of {} newest records findable in the full ring",
        full.live.len(),
        SLOTS
    );
}

criterion_group!(benches, lookups);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    percentiles();
}
