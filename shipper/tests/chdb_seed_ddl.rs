//! Seed 001's DDL verbatim (shipper/sql/modern) on a current ClickHouse engine, in-process via
//! the `chdb` PyPI package in the project's `.venv` (`make deps`): our lines populate every
//! `http_logs` column, and the detector's events every `reqin_events` column. Debian's 18.16
//! cannot run that DDL; this is where the modern variant is proven.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn seed_ddl_on_a_modern_engine_populates_every_http_logs_and_reqin_events_column() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../.venv/bin/python3");
    if !python.exists() {
        // On CI a missing venv is a broken set-up, not a reason to skip.
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} missing: run `make deps`",
            python.display()
        );
        eprintln!("skipped: {} missing (run `make deps`)", python.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lines = dir.path().join("lines.json");
    common::append_lines(&lines, 0, 100);
    common::append(
        &lines,
        format!("{}\n", common::orphan_line(5000)).as_bytes(),
    );
    let events = dir.path().join("events.jsonl");
    for n in 0..50 {
        common::append(&events, format!("{}\n", common::event_line(n)).as_bytes());
    }
    let out = Command::new(&python)
        .arg(root.join("tests/chdb_seed_ddl.py"))
        .arg(root.join("sql/modern"))
        .arg(&lines)
        .arg(&events)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok: 101 lines"), "{text}");
    assert!(
        text.contains("ok: 50 events, 17 reqin_events columns"),
        "{text}"
    );
}
