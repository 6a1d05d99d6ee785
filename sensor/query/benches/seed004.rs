//! Seed 004's targets in-process (the seed measures a query of an in-memory event history; here
//! the events and lines are read from files in the page cache, parsed and matched, the answer
//! written into memory): tag search over 10 000 events (< 10 ms) and the timeline of a
//! connection of more than 1 000 entries (< 100 ms). The whole-process numbers (start-up, peak
//! RSS) and the 1M-line comparison with grep are in scripts/bench/query.py.
//!
//! `cargo bench -p ja4sensor-query --bench seed004`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion};

use ja4sensor_query::filter::{Filter, Role};
use ja4sensor_query::query::{self, Output};
use ja4sensor_query::scan::Source;
use ja4sensor_query::timeline;

#[path = "../tests/common/gen.rs"]
mod gen;

fn seed(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = gen::Config {
        connections: 300,
        max_requests: 750,
        rotations: 0,
        gzip: 0,
        ..gen::Config::default()
    };
    let g = gen::generate(dir.path(), &cfg);
    let all = std::fs::read(&g.events[0]).unwrap();
    let ten_k: Vec<u8> = all
        .split_inclusive(|b| *b == b'\n')
        .take(10_000)
        .flatten()
        .copied()
        .collect();
    let events = dir.path().join("events-10k.jsonl");
    std::fs::write(&events, ten_k).unwrap();
    let sources = vec![Source {
        path: events,
        role: Role::Events,
    }];
    let tag = Filter {
        tags: vec![format!("{}={}", gen::TAG_KEY, gen::TAG_VALUE)
            .parse()
            .unwrap()],
        ..Filter::default()
    };
    let mut out = Vec::with_capacity(8 << 20);
    let st = query::run(&sources, &tag, Output::JsonLines, 1, &mut out).unwrap();
    eprintln!("tag search: {} of 10000 events match", st.matched);
    for threads in [1, 2] {
        c.bench_function(
            &format!("tag search over 10 000 events, {threads} thread(s)"),
            |b| {
                b.iter(|| {
                    out.clear();
                    query::run(&sources, &tag, Output::JsonLines, threads, &mut out).unwrap()
                })
            },
        );
    }
    let no_match = Filter {
        tags: vec!["investigation_id=INC-0".parse().unwrap()],
        ..Filter::default()
    };
    c.bench_function("tag search over 10 000 events, no match", |b| {
        b.iter(|| query::run(&sources, &no_match, Output::JsonLines, 1, &mut Vec::new()).unwrap())
    });

    let tdir = tempfile::tempdir().unwrap();
    let g = gen::generate(
        tdir.path(),
        &gen::Config {
            connections: 30,
            ..cfg
        },
    );
    let sources = vec![
        Source {
            path: g.logs[0].clone(),
            role: Role::Log,
        },
        Source {
            path: g.events[0].clone(),
            role: Role::Events,
        },
    ];
    let conn = Filter {
        conn_id: g.suspect_conn.clone(),
        ..Filter::default()
    };
    let t = timeline::build(&sources, &conn, 2, 10).unwrap();
    let entries: usize = t.roots.iter().map(|r| r.entries.len()).sum();
    eprintln!(
        "timeline: {entries} entries from {} lines and {} events",
        g.lines, g.event_lines
    );
    assert!(entries >= 1000);
    c.bench_function("timeline of a connection of 1 000+ entries", |b| {
        b.iter(|| {
            let t = timeline::build(&sources, &conn, 2, 10).unwrap();
            let mut out = Vec::new();
            timeline::write_json(&t, &mut out).unwrap();
            out.len()
        })
    });
}

criterion_group!(benches, seed);
criterion_main!(benches);
