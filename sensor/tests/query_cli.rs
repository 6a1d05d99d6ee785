//! `ja4sensor query`, `timeline` and `report` as a person runs them: the real binary, globs over
//! a live file and a gzip rotation (made by the `gzip` tool), an event file, RFC 3339 and
//! relative times, exit codes (0 found, 1 nothing, 2 error). Answers against the brute-force
//! reference of the query crate (sensor/query/tests/reference.py). The thorough comparisons are
//! in sensor/query/tests/.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use correlate_lib::fields;
use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ja4sensor");

fn reference_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("query/tests/reference.py")
}

/// Request `n` of connection `c` at `t_us` (Unix µs).
fn line(c: u32, n: u32, t_us: i64, tag: bool) -> String {
    let t = rfc3339(t_us);
    let mut m = Map::new();
    m.insert(fields::TIME.into(), t.clone().into());
    m.insert(fields::TIMESTAMP.into(), t.into());
    m.insert(fields::SRC_IP.into(), format!("198.51.100.{c}").into());
    m.insert(fields::SRC_PORT.into(), (40000 + c).into());
    m.insert(fields::CORRELATED.into(), c.is_multiple_of(2).into());
    m.insert(fields::CONN_ID.into(), format!("conn{c}").into());
    m.insert(fields::REQUEST_ID.into(), format!("conn{c}-{n}").into());
    m.insert(fields::SEQUENCE_NUMBER.into(), n.into());
    m.insert(fields::METHOD.into(), "GET".into());
    m.insert(fields::HOST.into(), "h.example".into());
    m.insert(fields::PATH.into(), format!("/p/{n}").into());
    m.insert(fields::STATUS.into(), 200.into());
    if c.is_multiple_of(2) {
        m.insert(
            fields::JA4.into(),
            "t13d1516h2_8daaf6152771_02713d6af862".into(),
        );
        m.insert(
            format!("{}{}", fields::PREFIX_B, fields::TIMESTAMP),
            (t_us * 1000 - 3_000_000).into(),
        );
        m.insert(fields::IP_META_TTL.into(), 64.into());
    }
    if tag {
        m.insert(format!("{}case", fields::TAG_PREFIX), "C-7".into());
    }
    serde_json::to_string(&m).unwrap()
}

fn rfc3339(t_us: i64) -> String {
    // 2026-11-25T07:00:00Z is 1_795_590_000 s; the tests stay within that day's hour.
    let base = 1_795_590_000_i64;
    let s = t_us / 1_000_000 - base;
    format!(
        "2026-11-25T07:{:02}:{:02}.{:06}Z",
        s / 60,
        s % 60,
        t_us % 1_000_000
    )
}

struct Logs {
    dir: tempfile::TempDir,
    logs: Vec<PathBuf>,
    events: PathBuf,
}

fn logs() -> Logs {
    let dir = tempfile::tempdir().unwrap();
    let t0 = 1_795_590_000_000_000_i64;
    let mut old = String::new();
    let mut live = String::new();
    let mut events = String::new();
    for c in 0..20u32 {
        for n in 1..=3u32 {
            let t = t0 + i64::from(c) * 60_000_000 + i64::from(n) * 1_000_000;
            let l = line(c, n, t, c.is_multiple_of(5));
            if c < 10 {
                old.push_str(&l);
                old.push('\n');
            } else {
                live.push_str(&l);
                live.push('\n');
            }
            if c.is_multiple_of(5) && n == 2 {
                let e = json!({
                    fields::EVENT_TIME: rfc3339(t), fields::EVENT_TIME_NS: t * 1000,
                    fields::EVENT_ID: format!("ev{c}"), fields::EVENT_SEVERITY: "warning",
                    fields::EVENT_KIND: "event", fields::EVENT_TYPE: "ThresholdExceeded",
                    fields::EVENT_MODULE: "threshold", fields::EVENT_RULE: "burst",
                    fields::EVENT_SUMMARY: "burst", fields::PARENT_CORRELATION_ID: format!("conn{c}-{n}"),
                    fields::ROOT_CORRELATION_ID: format!("conn{c}"), fields::SRC_IP: format!("198.51.100.{c}"),
                    fields::CORRELATION_TAGS: {"case": "C-7"},
                });
                events.push_str(&format!("{e}\n"));
            }
        }
    }
    live.push_str("{\"time\":\"2026-11-25T07:59:00.000000Z\",\"tag_case\":\"C-7\",\"junk\n");
    let rotated = dir.path().join("reqin.log.1");
    std::fs::write(&rotated, old).unwrap();
    assert!(Command::new("gzip")
        .arg(&rotated)
        .status()
        .unwrap()
        .success());
    let gz = dir.path().join("reqin.log.1.gz");
    // logrotate order: the rotation is older than the live file.
    let old_time = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&gz)
        .unwrap()
        .set_modified(old_time)
        .unwrap();
    let live_path = dir.path().join("reqin.log");
    std::fs::write(&live_path, live).unwrap();
    let ev = dir.path().join("events.jsonl");
    std::fs::write(&ev, events).unwrap();
    Logs {
        logs: vec![gz, live_path],
        events: ev,
        dir,
    }
}

fn ja4sensor(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn reference(args: &[String]) -> Vec<u8> {
    let out = Command::new("python3")
        .arg(reference_py())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn files(l: &Logs) -> Vec<String> {
    let mut v = vec!["--logs".to_owned()];
    v.extend(l.logs.iter().map(|p| p.display().to_string()));
    v.push("--events".to_owned());
    v.push(l.events.display().to_string());
    v
}

#[test]
fn query_over_a_glob_with_a_gzip_rotation_and_events_answers_like_the_reference() {
    let l = logs();
    let glob = format!("{}/reqin.log*", l.dir.path().display());
    let ev = l.events.display().to_string();
    let out = ja4sensor(&[
        "query",
        "--tag",
        "case=C-7",
        "--since",
        "2026-11-25T07:04:00Z",
        "--until",
        "2026-11-25T08:00:00+00:00",
        "--events",
        &ev,
        &glob,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = vec!["query".to_owned()];
    args.extend(files(&l));
    args.extend(
        [
            "--tag",
            "case=C-7",
            "--since",
            "1795590240000000000",
            "--until",
            "1795593600000000000",
        ]
        .map(str::to_owned),
    );
    let want = reference(&args);
    assert!(!want.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&want)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("3 files (1 gzip)"), "{err}");
    assert!(err.contains("skipped 1 lines (1 truncated)"), "{err}");

    // A table for people; nothing found is exit 1; a bad address is exit 2 with a message.
    let table = ja4sensor(&["query", "--table", "-q", "--ip", "198.51.100.0/28", &glob]);
    assert_eq!(table.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&table.stdout).starts_with("TIME "));
    let none = ja4sensor(&["query", "-q", "--ja4", "nothing", &glob]);
    assert_eq!(none.status.code(), Some(1));
    assert!(none.stdout.is_empty());
    let bad = ja4sensor(&["query", "--ip", "10.0.0.300", &glob]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("10.0.0.300"));
    let bad_time = ja4sensor(&["query", "--since", "last tuesday", &glob]);
    assert_eq!(bad_time.status.code(), Some(2));
    // A time back from now (the lines are of 2026-11-25: all of them or none are that recent).
    let recent = ja4sensor(&["query", "-q", "--since", "1h", &glob]);
    assert!(matches!(recent.status.code(), Some(0 | 1)));
    // Events only: no default log is read.
    let only = ja4sensor(&["query", "-q", "--events", &ev, "--conn-id", "conn5"]);
    assert_eq!(only.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&only.stdout).lines().count(), 1);
}

#[test]
fn timeline_and_report_run_from_the_command_line() {
    let l = logs();
    let glob = format!("{}/reqin.log*", l.dir.path().display());
    let ev = l.events.display().to_string();
    let out = ja4sensor(&[
        "timeline", "--json", "--tag", "case=C-7", "--events", &ev, &glob,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut args = vec!["timeline".to_owned()];
    args.extend(files(&l));
    args.extend(["--tag".to_owned(), "case=C-7".to_owned()]);
    let want = reference(&args);
    let ours: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|x| serde_json::from_str(x).unwrap())
        .collect();
    let theirs: Vec<Value> = String::from_utf8_lossy(&want)
        .lines()
        .map(|x| serde_json::from_str(x).unwrap())
        .collect();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a[fields::ROOT_CORRELATION_ID], b["root"]);
        assert_eq!(a[fields::TIMELINE_ENTRY], b["entry"]);
        assert_eq!(a[fields::EVENT_TIME_NS], b["time_ns"]);
    }
    let text = ja4sensor(&["timeline", "--conn-id", "conn10", &glob]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.starts_with("connection conn10"), "{text}");
    assert!(text.contains("handshake") && text.contains("#3"), "{text}");
    let none = ja4sensor(&["timeline", "-q", "--conn-id", "nope", &glob]);
    assert_eq!(none.status.code(), Some(1));
    let missing = ja4sensor(&["timeline", &glob]);
    assert_eq!(missing.status.code(), Some(2), "a selector is required");

    let page = l.dir.path().join("report.html");
    let page_s = page.display().to_string();
    let rep = ja4sensor(&[
        "report",
        "--html",
        &page_s,
        "--events",
        &ev,
        "--conn-id",
        "conn10",
        &glob,
    ]);
    assert_eq!(
        rep.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&rep.stderr)
    );
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 7);
    assert!(html.contains("connection conn10"));
    assert!(
        html.contains("<th>requests</th><td>60 ("),
        "every request counted"
    );
}
