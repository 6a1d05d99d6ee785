//! Where finished lines go: a file opened for append or a piped log, opened once per
//! configuration generation in the parent (`post_config`), so every child inherits the
//! descriptor, like mod_log_config's `CustomLog`. Each line is one `write(2)` of the complete
//! line: children appending to one `O_APPEND` file never interleave.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::LogTarget;
use crate::ffi::{AprError, AprFile, Pool};

/// A full disk fails every request; one error-log line per interval says so, with a count.
pub const ERROR_REPORT_INTERVAL: Duration = Duration::from_secs(10);

pub struct Sink {
    target: LogTarget,
    file: AprFile,
    epoch: Instant,
    /// Failures since the last report.
    failures: AtomicU64,
    /// Milliseconds after `epoch` before which failures are only counted.
    next_report_ms: AtomicU64,
}

/// A write that failed; `report` is `Some(failures since the last report)` for the one caller
/// that should log it now.
pub struct WriteFailure {
    pub error: AprError,
    pub report: Option<u64>,
}

impl Sink {
    pub fn open(pool: Pool<'_>, target: &LogTarget) -> Result<Self, AprError> {
        let file = match target {
            LogTarget::File(path) => AprFile::open_append(pool, path)?,
            LogTarget::Pipe(program) => AprFile::open_pipe(pool, program)?,
        };
        Ok(Self {
            target: target.clone(),
            file,
            epoch: Instant::now(),
            failures: AtomicU64::new(0),
            next_report_ms: AtomicU64::new(0),
        })
    }

    pub fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Writes one complete line (its `\n` included) with a single write.
    pub fn write_line(&self, line: &[u8]) -> Result<(), WriteFailure> {
        self.file.write_all(line).map_err(|error| {
            let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let next = self.next_report_ms.load(Ordering::Relaxed);
            let interval = u64::try_from(ERROR_REPORT_INTERVAL.as_millis()).unwrap_or(u64::MAX);
            let due = now_ms >= next
                && self
                    .next_report_ms
                    .compare_exchange(
                        next,
                        now_ms.saturating_add(interval),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_ok();
            let report = due.then(|| {
                self.failures.fetch_sub(failures, Ordering::Relaxed);
                failures
            });
            WriteFailure { error, report }
        })
    }
}
