//! The harness of the stress tests (`ring_stress.rs`, `verdict_stress.rs`): the writer runs in
//! the test process, the reader in another one. The reader is the same test binary, re-executed
//! with the shared file's path in the environment and `--exact reader_process`: that works under
//! `cargo test` and `cargo nextest` alike (both run the libtest harness), and needs no `fork` in
//! a multi-threaded test process.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The reader keeps going until it has seen enough overlap (or `MAX_READ_TIME`), so a loaded
/// machine gets a longer run instead of a flaky one.
pub const MIN_READ_TIME: Duration = Duration::from_millis(500);
pub const MAX_READ_TIME: Duration = Duration::from_secs(20);
/// The writer gives up on a reader that never exits.
pub const MAX_WRITE_TIME: Duration = Duration::from_secs(60);
/// Writes between two checks whether the reader is done.
const WRITES_PER_CHECK: usize = 1000;

/// The reader's clock, while its threads look up: sets `done` once `enough()` and
/// `MIN_READ_TIME` has passed since `start`, or `MAX_READ_TIME` has.
pub fn read_until(done: &AtomicBool, start: Instant, enough: impl Fn() -> bool) {
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let elapsed = start.elapsed();
        if (enough() && elapsed >= MIN_READ_TIME) || elapsed >= MAX_READ_TIME {
            done.store(true, Ordering::Relaxed);
            break;
        }
    }
}

/// The writer's half: starts the reader (`reader_process` of this binary, with `path` in
/// `child_env`) and calls `write` until it exits (killed after `MAX_WRITE_TIME`), so the whole
/// of its run overlaps the writer. Asserts that the reader succeeded; its `STRESS ...` line.
pub fn write_while_reading(child_env: &str, path: &Path, mut write: impl FnMut()) -> Counts {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "reader_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(child_env, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > MAX_WRITE_TIME {
            let _ = child.kill();
            break;
        }
        for _ in 0..WRITES_PER_CHECK {
            write();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "reader process failed ({}):\n{stdout}",
        out.status
    );
    let line = stdout
        .lines()
        .find_map(|l| l.find("STRESS ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("the reader reported its counts:\n{stdout}"));
    Counts(line.to_owned())
}

/// The reader's `STRESS name=value ...` line.
pub struct Counts(pub String);

impl Counts {
    pub fn get(&self, name: &str) -> u64 {
        self.0
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}
