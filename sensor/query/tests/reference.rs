//! `query`, `timeline` and the report's counts against a brute-force reference (Python over the
//! same files: no prefilter, no threads, gzip and json from its standard library) on a generated
//! log of five files (two gzip rotations, two plain ones, the live file with a partial last line)
//! and two event files, with hostile lines in each.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::gen::{self, Config, Generated, MAPPED_IP, SUSPECT_IP, TAG_KEY, TAG_VALUE};
use common::{file_args, glob_in, reference};
use ja4sensor_query::clients::Mapping;
use ja4sensor_query::filter::{parse_ip, Filter, Tag};
use ja4sensor_query::query::{self, Output};
use ja4sensor_query::report;
use ja4sensor_query::scan::{self, Source};
use ja4sensor_query::time::{format_ns, parse_rfc3339_ns};
use ja4sensor_query::timeline;
use serde::Deserialize;
use serde_json::value::RawValue;

struct Data {
    dir: tempfile::TempDir,
    g: Generated,
    sources: Vec<Source>,
}

fn data() -> Data {
    let dir = tempfile::tempdir().unwrap();
    let g = gen::generate(dir.path(), &Config::default());
    let sources = scan::sources(
        &[glob_in(dir.path(), "reqin.log*")],
        &[glob_in(dir.path(), "events.jsonl*")],
    )
    .unwrap();
    Data { dir, g, sources }
}

/// A question asked both ways: our filter and the reference's flags.
struct Case {
    name: &'static str,
    filter: Filter,
    args: Vec<String>,
    /// The answer must not be empty (a filter that matches nothing proves little).
    some: bool,
}

fn tag() -> Tag {
    format!("{TAG_KEY}={TAG_VALUE}").parse().unwrap()
}

fn first_value(d: &Data, key: &str, pred: impl Fn(&serde_json::Value) -> bool) -> String {
    let bytes = std::fs::read(&d.g.logs[d.g.logs.len() - 2]).unwrap();
    for l in bytes.split(|b| *b == b'\n') {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(l) {
            if pred(&v) {
                if let Some(s) = v.get(key).and_then(|x| x.as_str()) {
                    return s.to_owned();
                }
            }
        }
    }
    panic!("no line with {key}");
}

fn cases(d: &Data) -> Vec<Case> {
    let t0 = Config::default().start_ns;
    // A window inside the data (about 20 minutes of it): from the 5th to the 12th minute.
    let (since, until) = (t0 + 5 * 60_000_000_000, t0 + 12 * 60_000_000_000);
    let window = |f: Filter| Filter {
        since_ns: Some(since),
        until_ns: Some(until),
        ..f
    };
    let win_args = vec![
        "--since".to_owned(),
        since.to_string(),
        "--until".to_owned(),
        until.to_string(),
    ];
    let ja4 = gen::CLIENTS[2].0.to_owned();
    let suspect_conn = d.g.suspect_conn.clone().unwrap();
    let request_id = format!("{suspect_conn}-2");
    let some_conn = first_value(d, "conn_id", |v| v["correlated"] == false);
    let tag_f = Filter {
        tags: vec![tag()],
        ..Filter::default()
    };
    let tag_a = vec!["--tag".to_owned(), format!("{TAG_KEY}={TAG_VALUE}")];
    let with = |a: &[String], b: &[String]| [a, b].concat();
    let s = |x: &str| x.to_owned();
    vec![
        Case {
            name: "tag",
            filter: tag_f.clone(),
            args: with(&tag_a, &[s("--needle"), format!("\"{TAG_VALUE}\"")]),
            some: true,
        },
        Case {
            name: "tag in a window",
            filter: window(tag_f.clone()),
            args: with(&tag_a, &win_args),
            some: true,
        },
        Case {
            name: "tag_ prefix spelled out, second tag",
            filter: Filter {
                tags: vec![tag(), "tag_analyst=alice".parse().unwrap()],
                ..Filter::default()
            },
            args: with(&tag_a, &[s("--tag"), s("tag_analyst=alice")]),
            some: true,
        },
        Case {
            name: "ja4",
            filter: Filter {
                ja4: Some(ja4.clone()),
                ..Filter::default()
            },
            args: vec![s("--ja4"), ja4.clone()],
            some: true,
        },
        Case {
            name: "ja4 in a window",
            filter: window(Filter {
                ja4: Some(ja4.clone()),
                ..Filter::default()
            }),
            args: with(&[s("--ja4"), ja4.clone()], &win_args),
            some: true,
        },
        Case {
            name: "one address",
            filter: Filter {
                ip: Some(parse_ip(SUSPECT_IP).unwrap()),
                ..Filter::default()
            },
            args: vec![s("--ip"), s(SUSPECT_IP)],
            some: true,
        },
        Case {
            name: "an IPv4 network holding a dual-stack client",
            filter: Filter {
                ip: Some(parse_ip("198.51.100.0/24").unwrap()),
                ..Filter::default()
            },
            args: vec![s("--ip"), s("198.51.100.0/24")],
            some: true,
        },
        Case {
            name: "the dual-stack client by its mapped form",
            filter: Filter {
                ip: Some(parse_ip(MAPPED_IP).unwrap()),
                ..Filter::default()
            },
            args: vec![s("--ip"), s(MAPPED_IP)],
            some: true,
        },
        Case {
            name: "an IPv6 network (no prefilter)",
            filter: Filter {
                ip: Some(parse_ip("2001:db8::/64").unwrap()),
                ..Filter::default()
            },
            args: vec![s("--ip"), s("2001:db8::/64")],
            some: true,
        },
        Case {
            name: "a /12 (prefilter on one octet)",
            filter: Filter {
                ip: Some(parse_ip("203.0.0.0/12").unwrap()),
                ..Filter::default()
            },
            args: vec![s("--ip"), s("203.0.0.0/12")],
            some: true,
        },
        Case {
            name: "request id",
            filter: Filter {
                request_id: Some(request_id.clone()),
                ..Filter::default()
            },
            args: vec![s("--request-id"), request_id.clone()],
            some: true,
        },
        Case {
            name: "conn id",
            filter: Filter {
                conn_id: Some(suspect_conn.clone()),
                ..Filter::default()
            },
            args: vec![s("--conn-id"), suspect_conn.clone()],
            some: true,
        },
        Case {
            name: "conn id of an orphan",
            filter: Filter {
                conn_id: Some(some_conn.clone()),
                ..Filter::default()
            },
            args: vec![s("--conn-id"), some_conn],
            some: true,
        },
        Case {
            name: "tag AND address AND conn",
            filter: Filter {
                tags: vec![tag()],
                ip: Some(parse_ip("203.0.113.0/24").unwrap()),
                conn_id: Some(suspect_conn.clone()),
                ..Filter::default()
            },
            args: with(
                &tag_a,
                &[s("--ip"), s("203.0.113.0/24"), s("--conn-id"), suspect_conn],
            ),
            some: true,
        },
        Case {
            name: "a window alone",
            filter: window(Filter::default()),
            args: win_args.clone(),
            some: true,
        },
        Case {
            name: "everything",
            filter: Filter::default(),
            args: vec![],
            some: true,
        },
        Case {
            name: "a value nobody has",
            filter: Filter {
                tags: vec!["investigation_id=INC-0".parse().unwrap()],
                ..Filter::default()
            },
            args: vec![s("--tag"), s("investigation_id=INC-0")],
            some: false,
        },
    ]
}

#[test]
fn rotated_files_are_read_oldest_first_gzip_included() {
    let d = data();
    let want: Vec<Source> =
        d.g.logs
            .iter()
            .map(|p| Source {
                path: p.clone(),
                role: ja4sensor_query::filter::Role::Log,
            })
            .chain(d.g.events.iter().map(|p| Source {
                path: p.clone(),
                role: ja4sensor_query::filter::Role::Events,
            }))
            .collect();
    assert_eq!(d.sources, want);
    assert!(d.g.logs[0].to_string_lossy().ends_with("reqin.log.4.gz"));
    assert!(d.g.logs[4].to_string_lossy().ends_with("reqin.log"));
}

#[test]
fn query_answers_are_the_references_byte_for_byte() {
    let d = data();
    for c in cases(&d) {
        let mut args = vec!["query".to_owned()];
        args.extend(file_args(&d.g.logs, &d.g.events));
        args.extend(c.args.iter().cloned());
        let (want, _) = reference(&args);
        let n = want.iter().filter(|b| **b == b'\n').count() as u64;
        assert_eq!(c.some, n > 0, "{}: {n} matches", c.name);
        for threads in [1, 3] {
            let mut ours = Vec::new();
            let stats =
                query::run(&d.sources, &c.filter, Output::JsonLines, threads, &mut ours).unwrap();
            assert!(
                ours == want,
                "{} ({threads} threads): ours {} lines, reference {n} lines",
                c.name,
                ours.iter().filter(|b| **b == b'\n').count(),
            );
            assert_eq!(stats.matched, n, "{}", c.name);
            assert_eq!(stats.files, 10, "{}", c.name);
        }
    }
}

#[test]
fn hostile_lines_are_skipped_counted_and_never_stop_a_query() {
    let d = data();
    let g = &d.g;
    assert!(
        g.hostile_invalid_json >= 8 && g.hostile_overlong == 1,
        "{g:?}"
    );
    let f = Filter {
        tags: vec![tag()],
        ..Filter::default()
    };
    let stats = query::run(&d.sources, &f, Output::JsonLines, 2, &mut Vec::new()).unwrap();
    let mut args = vec!["query".to_owned()];
    args.extend(file_args(&g.logs, &g.events));
    args.extend([
        "--tag".to_owned(),
        format!("{TAG_KEY}={TAG_VALUE}"),
        "--needle".to_owned(),
        format!("\"{TAG_VALUE}\""),
    ]);
    let (_, counts) = reference(&args);
    let counts: serde_json::Value = serde_json::from_str(counts.trim()).unwrap();
    let k = &stats.skipped;
    // What the generator put there, by kind (each hostile line holds the tag value).
    assert_eq!(k.invalid_json, g.hostile_invalid_json, "{k:?}");
    assert_eq!(k.invalid_utf8, g.hostile_invalid_utf8, "{k:?}");
    assert_eq!(k.truncated, g.hostile_truncated, "{k:?}");
    assert_eq!(k.not_object, g.hostile_not_object, "{k:?}");
    assert_eq!(k.overlong, g.hostile_overlong, "{k:?}");
    assert_eq!(k.partial, g.partial_last_lines, "{k:?}");
    // And what the reference counts on its own.
    assert_eq!(
        k.invalid_json + k.invalid_utf8 + k.truncated + k.not_object,
        counts["hostile_with_needle"].as_u64().unwrap()
    );
    assert_eq!(k.overlong, counts["overlong"].as_u64().unwrap());
    assert_eq!(k.partial, counts["partial"].as_u64().unwrap());
    let summary = stats.summary("matches");
    assert!(summary.contains("invalid JSON"), "{summary}");
    // The table reads every match too.
    let mut table = Vec::new();
    let t = query::run(&d.sources, &f, Output::Table, 2, &mut table).unwrap();
    let rows = String::from_utf8(table).unwrap();
    assert_eq!(rows.lines().count() as u64, t.matched + 1);
    assert!(rows.starts_with("TIME"));
    assert!(rows.contains(TAG_VALUE) && rows.contains("event"));
}

#[test]
fn a_corrupt_gzip_rotation_is_reported_and_the_other_files_still_answer() {
    let d = data();
    let gz = &d.g.logs[1];
    let whole = std::fs::read(gz).unwrap();
    std::fs::write(gz, &whole[..whole.len() / 2]).unwrap();
    let f = Filter {
        tags: vec![tag()],
        ..Filter::default()
    };
    let mut ours = Vec::new();
    let stats = query::run(&d.sources, &f, Output::JsonLines, 2, &mut ours).unwrap();
    assert_eq!(stats.failed_files.len(), 1, "{:?}", stats.failed_files);
    assert!(stats.failed_files[0].contains("reqin.log.3.gz"));
    let intact: Vec<_> = d.g.logs.iter().filter(|p| *p != gz).cloned().collect();
    let mut args = vec!["query".to_owned()];
    args.extend(file_args(&intact, &d.g.events));
    args.extend(["--tag".to_owned(), format!("{TAG_KEY}={TAG_VALUE}")]);
    let (want, _) = reference(&args);
    let ours_lines: BTreeSet<&[u8]> = ours.split(|b| *b == b'\n').collect();
    for l in want.split(|b| *b == b'\n') {
        assert!(
            ours_lines.contains(l),
            "missing {}",
            String::from_utf8_lossy(l)
        );
    }
}

#[derive(Debug, Deserialize)]
struct OurEntry<'a> {
    root_correlation_id: String,
    entry: String,
    time_ns: i64,
    time: String,
    correlation_id: Option<String>,
    parent_correlation_id: Option<String>,
    sequence_number: Option<u64>,
    stream_id: Option<u64>,
    gap_ns: Option<i64>,
    #[serde(borrow)]
    line: &'a RawValue,
}

#[derive(Debug, Deserialize, PartialEq)]
struct RefEntry {
    root: String,
    entry: String,
    time_ns: i64,
    id: Option<String>,
    parent: Option<String>,
    seq: Option<u64>,
    stream: Option<u64>,
    gap: Option<i64>,
    line: String,
}

#[test]
fn timelines_are_the_references_entry_for_entry() {
    let d = data();
    let t0 = Config::default().start_ns;
    let suspect_conn = d.g.suspect_conn.clone().unwrap();
    let h2 = d.g.h2_conn.clone().unwrap();
    let s = |x: &str| x.to_owned();
    let timeline_cases: Vec<(&str, Filter, Vec<String>, bool)> = vec![
        (
            "a connection (one pass)",
            Filter {
                conn_id: Some(suspect_conn.clone()),
                ..Filter::default()
            },
            vec![s("--conn-id"), suspect_conn.clone()],
            true,
        ),
        (
            "an HTTP/2 connection",
            Filter {
                conn_id: Some(h2.clone()),
                ..Filter::default()
            },
            vec![s("--conn-id"), h2],
            true,
        ),
        (
            "an address",
            Filter {
                ip: Some(parse_ip(SUSPECT_IP).unwrap()),
                ..Filter::default()
            },
            vec![s("--ip"), s(SUSPECT_IP)],
            true,
        ),
        (
            "a tag",
            Filter {
                tags: vec![tag()],
                ..Filter::default()
            },
            vec![s("--tag"), format!("{TAG_KEY}={TAG_VALUE}")],
            true,
        ),
        (
            "a JA4 in a window",
            Filter {
                ja4: Some(gen::CLIENTS[3].0.to_owned()),
                since_ns: Some(t0 + 3 * 60_000_000_000),
                until_ns: Some(t0 + 8 * 60_000_000_000),
                ..Filter::default()
            },
            vec![
                s("--ja4"),
                s(gen::CLIENTS[3].0),
                s("--since"),
                (t0 + 3 * 60_000_000_000).to_string(),
                s("--until"),
                (t0 + 8 * 60_000_000_000).to_string(),
            ],
            true,
        ),
        (
            "a connection nobody has",
            Filter {
                conn_id: Some(s("nope")),
                ..Filter::default()
            },
            vec![s("--conn-id"), s("nope")],
            false,
        ),
    ];
    for (name, filter, args, some) in timeline_cases {
        let t = timeline::build(&d.sources, &filter, 2, 10_000).unwrap();
        let mut out = Vec::new();
        timeline::write_json(&t, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let ours: Vec<RefEntry> = text
            .lines()
            .map(|l| {
                let e: OurEntry = serde_json::from_str(l).unwrap();
                assert_eq!(parse_rfc3339_ns(&e.time), Some(e.time_ns / 1000 * 1000));
                assert_eq!(format_ns(e.time_ns), e.time);
                RefEntry {
                    root: e.root_correlation_id,
                    entry: e.entry,
                    time_ns: e.time_ns,
                    id: e.correlation_id,
                    parent: e.parent_correlation_id,
                    seq: e.sequence_number,
                    stream: e.stream_id,
                    gap: e.gap_ns,
                    line: e.line.get().to_owned(),
                }
            })
            .collect();
        let mut rargs = vec!["timeline".to_owned()];
        rargs.extend(file_args(&d.g.logs, &d.g.events));
        rargs.extend(args);
        let (want, _) = reference(&rargs);
        let want: Vec<RefEntry> = String::from_utf8(want)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(ours.len(), want.len(), "{name}");
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "{name}: entry {i}");
        }
        assert_eq!(some, !ours.is_empty(), "{name}");
        if some {
            assert!(
                ours.iter().any(|e| e.entry == "event") || name.contains("HTTP/2"),
                "{name}: events interleaved"
            );
        }
    }
}

#[test]
fn a_connection_starts_with_its_handshake_and_counts_its_requests() {
    let d = data();
    let conn = d.g.h2_conn.clone().unwrap();
    let t = timeline::build(
        &d.sources,
        &Filter {
            conn_id: Some(conn.clone()),
            ..Filter::default()
        },
        1,
        10,
    )
    .unwrap();
    assert_eq!(t.roots.len(), 1);
    let r = &t.roots[0];
    assert_eq!(r.id, conn);
    let kinds: Vec<_> = r.entries.iter().map(|e| e.kind).collect();
    assert!(matches!(
        kinds[0],
        timeline::Kind::Handshake | timeline::Kind::Connection
    ));
    let seqs: Vec<u64> = r.entries.iter().filter_map(|e| e.stream_id).collect();
    assert!(seqs.len() >= 3, "{seqs:?}");
    let mut text = Vec::new();
    timeline::write_text(&t, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.starts_with(&format!("connection {conn}")), "{text}");
    assert!(text.contains(" s1 ") && text.contains(" s3 "), "{text}");
}

#[test]
fn report_counts_are_the_references() {
    let d = data();
    let t0 = Config::default().start_ns;
    for (since, until) in [
        (None, None),
        (
            Some(t0 + 3 * 60_000_000_000),
            Some(t0 + 10 * 60_000_000_000),
        ),
    ] {
        let window = Filter {
            since_ns: since,
            until_ns: until,
            ..Filter::default()
        };
        let (tally, _, _) =
            report::from_files(&d.sources, &window, None, &Mapping::default(), 2).unwrap();
        let mut args = vec!["counts".to_owned()];
        args.extend(file_args(&d.g.logs, &d.g.events));
        if let (Some(s), Some(u)) = (since, until) {
            args.extend([
                "--since".into(),
                s.to_string(),
                "--until".into(),
                u.to_string(),
            ]);
        }
        let (want, _) = reference(&args);
        let want: serde_json::Value = serde_json::from_slice(&want).unwrap();
        assert_eq!(tally.agg.requests, want["requests"].as_u64().unwrap());
        assert_eq!(tally.agg.correlated, want["correlated"].as_u64().unwrap());
        assert_eq!(tally.agg.events, want["events"].as_u64().unwrap());
        assert!(tally.agg.mismatches.total() > 0);
    }
    drop(d.dir);
}
