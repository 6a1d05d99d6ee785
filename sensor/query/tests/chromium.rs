//! The report page in real headless Chromium (Debian's `chromium`, `make deps`), driven through
//! the DevTools protocol (`tests/chromium_report.py`): no console error, no blocked or failed
//! fetch, every chart's SVG present and drawn; a screenshot for people under
//! `target/report/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::gen::{self, Config, SUSPECT_IP};
use common::{glob_in, manifest_dir};
use ja4sensor_query::clients::Mapping;
use ja4sensor_query::filter::{parse_ip, Filter};
use ja4sensor_query::report::{self, html, Origin, ReportData};
use ja4sensor_query::scan;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHARTS: [&str; 7] = [
    "requests", "ja4", "mismatch", "ttl", "os", "events", "timeline",
];

fn chromium_present() -> bool {
    if Path::new(CHROMIUM).exists() {
        return true;
    }
    // On CI a missing browser is a broken set-up, not a reason to skip.
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{CHROMIUM} missing: run `make deps`"
    );
    eprintln!("skipped: {CHROMIUM} missing (run `make deps`)");
    false
}

/// Where people find the screenshots: `target/report/`.
fn out_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("report");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn open_in_chromium(page: &Path, shot: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg(manifest_dir().join("tests/chromium_report.py"))
        .arg(page)
        .arg(shot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium_report.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn page(data: &Path, window: Filter, with_timeline: bool) -> String {
    let sources = scan::sources(
        &[glob_in(data, "reqin.log*")],
        &[glob_in(data, "events.jsonl*")],
    )
    .unwrap();
    let selector = with_timeline.then(|| Filter {
        ip: Some(parse_ip(SUSPECT_IP).unwrap()),
        ..window.clone()
    });
    let (tally, timeline, truncated) =
        report::from_files(&sources, &window, selector.as_ref(), &Mapping::default(), 2).unwrap();
    let d = ReportData {
        agg: tally.agg,
        timeline,
        timeline_truncated: truncated,
        stats: tally.stats,
        since_ns: window.since_ns,
        until_ns: window.until_ns,
        generated_ns: ja4sensor_query::time::now_ns(),
        origin: Origin::Files(sources),
        mapping_rows: 0,
        selector_text: with_timeline.then(|| format!("--ip {SUSPECT_IP}")),
    };
    html::render(&d).unwrap()
}

#[test]
fn the_report_renders_in_chromium_with_every_chart_and_no_console_error() {
    if !chromium_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    gen::generate(dir.path(), &Config::default());
    let html = page(dir.path(), Filter::default(), true);
    // Self-contained: nothing to fetch, nothing to run.
    for forbidden in [" src=", " href=", "<script", "<link", "url("] {
        assert!(!html.contains(forbidden), "the page has {forbidden:?}");
    }
    let out = out_dir();
    let path = out.join("ja4sensor-report.html");
    std::fs::write(&path, &html).unwrap();
    let shot = out.join("ja4sensor-report.png");
    let r = open_in_chromium(&path, &shot);
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    let charts = r["charts"].as_array().unwrap();
    let ids: Vec<&str> = charts.iter().map(|c| c["id"].as_str().unwrap()).collect();
    let want: Vec<String> = CHARTS.iter().map(|c| format!("chart-{c}")).collect();
    assert_eq!(ids, want);
    for c in charts {
        assert_eq!(c["svg"], true, "{c}");
        assert!(c["shapes"].as_u64().unwrap() > 10, "{c}");
        assert!(c["texts"].as_u64().unwrap() > 2, "{c}");
        assert!(c["width"].as_f64().unwrap() >= 900.0, "{c}");
        assert!(c["bbox_h"].as_f64().unwrap() >= 100.0, "{c}");
    }
    assert!(r["screenshot_bytes"].as_u64().unwrap() > 50_000, "{r}");
    eprintln!("screenshot: {}", shot.display());
}

#[test]
fn an_empty_window_still_draws_every_chart() {
    if !chromium_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    gen::generate(dir.path(), &Config::default());
    // Long before the data.
    let window = Filter {
        since_ns: Some(1_000_000_000_000_000_000),
        until_ns: Some(1_000_000_060_000_000_000),
        ..Filter::default()
    };
    let html = page(dir.path(), window, true);
    assert!(html.contains("no requests in the window"));
    let path = dir.path().join("empty.html");
    std::fs::write(&path, &html).unwrap();
    let r = open_in_chromium(&path, &out_dir().join("ja4sensor-report-empty.png"));
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    assert_eq!(r["charts"].as_array().unwrap().len(), CHARTS.len());
    for c in r["charts"].as_array().unwrap() {
        assert!(c["shapes"].as_u64().unwrap() > 0, "{c}");
    }
}

#[test]
fn the_check_sees_a_blocked_fetch_and_a_console_error() {
    if !chromium_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    gen::generate(
        dir.path(),
        &Config {
            connections: 50,
            ..Config::default()
        },
    );
    let html = page(dir.path(), Filter::default(), false);
    // What a careless change could add: a fetch (refused by the page's policy) and a script
    // (refused too: the policy allows none).
    let bad = html.replacen(
        "<h1>",
        "<img src=\"http://192.0.2.1/x.png\"><script>console.error('boom')</script><h1>",
        1,
    );
    let path = dir.path().join("bad.html");
    std::fs::write(&path, bad).unwrap();
    let r = open_in_chromium(&path, &dir.path().join("bad.png"));
    let errors = r["errors"].as_array().unwrap();
    let text = serde_json::to_string(errors).unwrap();
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(text.contains("script"), "{text}");
}
