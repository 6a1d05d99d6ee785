//! Shared by the integration tests: the generated log ([`gen`]) and the brute-force reference
//! (`tests/reference.py`, Python's own gzip and json).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod gen;

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `tests/reference.py` with `args`: (stdout, stderr).
pub fn reference(args: &[String]) -> (Vec<u8>, String) {
    let out = Command::new("python3")
        .arg(manifest_dir().join("tests/reference.py"))
        .args(args)
        .output()
        .expect("python3 (make deps)");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "reference.py {args:?}: {err}");
    (out.stdout, err)
}

/// `--logs ... --events ...` for the reference.
pub fn file_args(logs: &[PathBuf], events: &[PathBuf]) -> Vec<String> {
    let mut v = vec!["--logs".to_owned()];
    v.extend(logs.iter().map(|p| p.display().to_string()));
    v.push("--events".to_owned());
    v.extend(events.iter().map(|p| p.display().to_string()));
    v
}

pub fn glob_in(dir: &Path, pattern: &str) -> String {
    format!("{}/{pattern}", dir.display())
}
