//! JA4T and JA4H conformance over FoxIO's capture corpus (`tests/data/ja4/pcap`), built only
//! with `--features foxio`: every client SYN of every capture, parsed by correlate-lib's SYN
//! parser, must give the JA4T of FoxIO's Rust snapshots (`expected/ja4t.tsv`), and every
//! plain-text HTTP/1 request the JA4H of FoxIO's Python golden output (`expected/ja4h.tsv`).

#![cfg(feature = "foxio")]
// A test harness: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use correlate_lib::fingerprint::foxio::{ja4h, ja4t, HttpVersion};
use correlate_lib::fingerprint::syn::parse_syn;
use ja4sensor::capture;
use ja4sensor_pcap::device;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/ja4")
}

/// `capture\tsrc\tsport\tdst\tdport\tvalue` lines of an expected file, per capture.
fn expected(file: &str) -> BTreeMap<String, Vec<String>> {
    let text = std::fs::read_to_string(corpus().join("expected").join(file)).unwrap();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (capture, rest) = line.split_once('\t').unwrap();
        out.entry(capture.to_owned())
            .or_default()
            .push(rest.to_owned());
    }
    for lines in out.values_mut() {
        lines.sort();
    }
    out
}

fn captures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join("pcap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

/// Runs `f` on every decoded TCP segment of a capture.
fn segments(path: &Path, mut f: impl FnMut(&capture::Segment<'_>)) {
    let mut cap = device::open_file(path).unwrap();
    let link = device::link_type(&cap).unwrap();
    while let Ok(packet) = cap.next_packet() {
        if let Ok(seg) = capture::decode(link, packet.data) {
            f(&seg);
        }
    }
}

fn row(seg: &capture::Segment<'_>, value: &str) -> String {
    format!(
        "{}\t{}\t{}\t{}\t{value}",
        seg.src.ip(),
        seg.src.port(),
        seg.dst.ip(),
        seg.dst.port()
    )
}

fn compare(kind: &str, want: &BTreeMap<String, Vec<String>>, got: &BTreeMap<String, Vec<String>>) {
    let mut report = Vec::new();
    let mut checked = 0;
    for name in want
        .keys()
        .chain(got.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let empty = Vec::new();
        let (w, g) = (
            want.get(name).unwrap_or(&empty),
            got.get(name).unwrap_or(&empty),
        );
        checked += w.len();
        if w != g {
            report.push(format!("{name}:\n  want {w:#?}\n  got  {g:#?}"));
        }
    }
    println!("{kind}: {checked} expected values compared");
    assert!(checked > 0, "no expected {kind} values");
    assert!(
        report.is_empty(),
        "{kind} mismatches:\n{}",
        report.join("\n")
    );
}

#[test]
fn every_client_syn_of_the_corpus_has_foxios_ja4t() {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in captures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // The first SYN of a connection, as FoxIO fingerprints a stream (retransmissions, and
        // SYNs some stacks resend with fewer options, are not new streams).
        let mut seen = HashSet::new();
        segments(&path, |seg| {
            if !seg.flags.syn || seg.flags.ack || !seen.insert((seg.src, seg.dst)) {
                return;
            }
            let syn = parse_syn(seg.ip_packet).unwrap();
            got.entry(name.clone())
                .or_default()
                .push(row(seg, &ja4t(&syn)));
        });
    }
    for lines in got.values_mut() {
        lines.sort();
    }
    compare("JA4T", &expected("ja4t.tsv"), &got);
}

#[test]
fn every_plain_http1_request_of_the_corpus_has_foxios_ja4h() {
    let mut got: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for path in captures() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        segments(&path, |seg| {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            let Ok(httparse::Status::Complete(_)) = req.parse(seg.payload) else {
                return;
            };
            let (Some(method), Some(minor)) = (req.method, req.version) else {
                return;
            };
            let version = if minor == 0 {
                HttpVersion::Http10
            } else {
                HttpVersion::Http11
            };
            let fp = ja4h(
                method.as_bytes(),
                version,
                req.headers.iter().map(|h| (h.name.as_bytes(), h.value)),
            );
            got.entry(name.clone())
                .or_default()
                .push(row(seg, &fp.ja4h));
        });
    }
    for lines in got.values_mut() {
        lines.sort();
    }
    compare("JA4H", &expected("ja4h.tsv"), &got);
}
