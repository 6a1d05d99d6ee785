//! JA4/JA3 conformance over FoxIO's capture corpus (`tests/data/ja4`): `ja4sensor read` on every
//! capture must produce exactly the expected TCP ClientHellos, with matching `ja4`, `ja4_r`, `ja3`
//! and `ja3_hash`, as judged by the corpus's own `check_ja4.py`. QUIC hellos are optional and not
//! checked (the sensor does not decrypt QUIC Initials).

// A test harness: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/ja4")
}

/// Runs the sensor on one capture and the checker on its output; returns the checker's report
/// and whether it passed.
fn check(capture: &Path, out_dir: &Path) -> (String, bool) {
    let name = capture.file_name().unwrap().to_string_lossy().into_owned();
    let output = Command::new(env!("CARGO_BIN_EXE_ja4sensor"))
        .arg("read")
        .arg(capture)
        .output()
        .expect("run ja4sensor");
    assert!(
        output.status.success(),
        "ja4sensor read {name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let actual = out_dir.join(format!("{name}.jsonl"));
    std::fs::write(&actual, &output.stdout).unwrap();
    let expected = corpus().join("expected").join(format!("{name}.jsonl"));
    let checker = Command::new("python3")
        .arg(corpus().join("check_ja4.py"))
        .arg(&actual)
        .arg(&expected)
        .args(["--require", "ja4_r,ja3,ja3_hash", "-q"])
        .output()
        .expect("run python3 check_ja4.py");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&checker.stdout),
        String::from_utf8_lossy(&checker.stderr)
    );
    (report, checker.status.success())
}

#[test]
fn every_tcp_clienthello_of_the_corpus_matches() {
    let mut captures: Vec<PathBuf> = std::fs::read_dir(corpus().join("pcap"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    captures.sort();
    assert!(
        !captures.is_empty(),
        "no captures under {}",
        corpus().display()
    );
    let out_dir = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    for capture in &captures {
        let (report, ok) = check(capture, out_dir.path());
        let name = capture.file_name().unwrap().to_string_lossy();
        println!("== {name}: {}", if ok { "OK" } else { "FAILED" });
        println!("{}", report.trim_end());
        if !ok {
            failed.push(name.into_owned());
        }
    }
    assert!(
        failed.is_empty(),
        "captures failing the checker: {failed:?}"
    );
}

#[test]
fn unreadable_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("not-a-capture.pcap");
    std::fs::write(&bogus, b"this is not a capture file").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_ja4sensor"))
        .arg("read")
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not-a-capture.pcap"), "{stderr}");
}
