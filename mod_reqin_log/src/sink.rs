//! Where finished lines go:
//!
//! - `ReqinLogFile`: a file opened for append or a piped log, opened in the parent
//!   (`post_config`) so every child inherits the descriptor, like mod_log_config's `CustomLog`.
//!   Each line is one `write(2)` of the complete line: children appending to one `O_APPEND`
//!   file never interleave. A file is opened once per configuration generation; a piped log
//!   program is kept across graceful restarts, in the process pool (unlike `CustomLog`, whose
//!   program httpd kills at every graceful restart, losing the lines old children were still
//!   writing); a hard restart, which kills it with the children, starts a new one.
//! - `JsonSockLogSocket`: the original C module's UNIX datagram socket, one JSON object per
//!   datagram, non-blocking. Each child connects on first use; when a send fails the line is
//!   dropped (and counted), the socket closed, and a new connection tried at most once per
//!   `JsonSockLogReconnectInterval`. A full socket buffer drops the line and keeps the socket.
//!
//! Failures are reported to the error log at most once per `JsonSockLogErrorReportInterval`, with
//! the number of lines lost since the last report.

use std::io::ErrorKind;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

#[cfg(not(test))]
use crate::config::LogTarget;
#[cfg(not(test))]
use crate::ffi::{AprFile, Pool};

/// Counts failures and says when one is due for the error log.
pub struct Reporter {
    epoch: Instant,
    interval_ms: u64,
    failures: AtomicU64,
    next_report_ms: AtomicU64,
}

impl Reporter {
    pub fn new(interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            failures: AtomicU64::new(0),
            next_report_ms: AtomicU64::new(0),
        }
    }

    /// Counts one failure; `Some(failures since the last report)` for the one caller that
    /// should report now.
    pub fn failed(&self) -> Option<u64> {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_report_ms.load(Ordering::Relaxed);
        let due = now_ms >= next
            && self
                .next_report_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        due.then(|| {
            self.failures.fetch_sub(failures, Ordering::Relaxed);
            failures
        })
    }
}

/// `ReqinLogFile`.
#[cfg(not(test))]
pub struct FileSink {
    target: LogTarget,
    file: AprFile,
    reporter: Reporter,
}

#[cfg(not(test))]
impl FileSink {
    /// A file is opened in `pool` (the generation's). A piped log program is started in
    /// `pipe_pool`: the process pool when httpd has one that outlives the generation, so that a
    /// graceful restart does not kill the program while old children still write to it.
    pub fn open(
        pool: Pool<'_>,
        pipe_pool: Option<Pool<'_>>,
        target: &LogTarget,
        report: Duration,
    ) -> Result<Self, crate::ffi::AprError> {
        let file = match target {
            LogTarget::File(path) => AprFile::open_append(pool, path)?,
            LogTarget::Pipe(program) => match pipe_pool {
                Some(lasting) => AprFile::open_lasting_pipe(lasting, program)?,
                None => AprFile::open_pipe(pool, program)?,
            },
        };
        Ok(Self {
            target: target.clone(),
            file,
            reporter: Reporter::new(report),
        })
    }

    /// Writes one complete line (its `\n` included) with a single write.
    pub fn write_line(&self, line: &[u8]) -> Result<(), Option<String>> {
        self.file.write_all(line).map_err(|e| {
            self.reporter
                .failed()
                .map(|n| format!("ReqinLogFile {}: {n} log line(s) lost: {e}", self.target))
        })
    }
}

/// `JsonSockLogSocket`.
pub struct DatagramSink {
    path: PathBuf,
    reconnect: Duration,
    state: Mutex<SocketState>,
    reporter: Reporter,
}

struct SocketState {
    socket: Option<Arc<UnixDatagram>>,
    next_attempt: Option<Instant>,
}

impl DatagramSink {
    pub fn new(path: PathBuf, reconnect: Duration, report: Duration) -> Self {
        Self {
            path,
            reconnect,
            state: Mutex::new(SocketState {
                socket: None,
                next_attempt: None,
            }),
            reporter: Reporter::new(report),
        }
    }

    fn socket(&self) -> Result<Arc<UnixDatagram>, std::io::Error> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = &st.socket {
            return Ok(Arc::clone(s));
        }
        let now = Instant::now();
        if st.next_attempt.is_some_and(|t| now < t) {
            return Err(std::io::Error::new(
                ErrorKind::NotConnected,
                "waiting for JsonSockLogReconnectInterval before reconnecting",
            ));
        }
        st.next_attempt = Some(now + self.reconnect);
        let sock = UnixDatagram::unbound()?;
        sock.connect(&self.path)?;
        sock.set_nonblocking(true)?;
        let sock = Arc::new(sock);
        st.socket = Some(Arc::clone(&sock));
        Ok(sock)
    }

    /// Sends one JSON object (without its newline) as one datagram; never blocks.
    pub fn send(&self, line: &[u8]) -> Result<(), Option<String>> {
        let object = line.strip_suffix(b"\n").unwrap_or(line);
        let result = self.socket().and_then(|s| s.send(object).map(|_| ()));
        result.map_err(|e| {
            if e.kind() != ErrorKind::WouldBlock {
                // Closed or gone: reconnect after the interval.
                self.state
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .socket = None;
            }
            self.reporter.failed().map(|n| {
                format!(
                    "JsonSockLogSocket {}: {n} log line(s) dropped: {e}",
                    self.path.display()
                )
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn one_json_object_per_datagram_and_reconnect_after_the_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("http.socket");
        let sink = DatagramSink::new(path.clone(), Duration::from_millis(50), Duration::ZERO);
        assert!(sink.send(b"{\"a\":1}\n").is_err(), "no collector yet");
        let server = UnixDatagram::bind(&path).unwrap();
        assert!(
            sink.send(b"{\"a\":2}\n").is_err(),
            "within the reconnect interval"
        );
        std::thread::sleep(Duration::from_millis(60));
        sink.send(b"{\"a\":3}\n").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"a\":3}");
    }

    #[test]
    fn reports_are_rate_limited_with_a_count() {
        let r = Reporter::new(Duration::from_secs(3600));
        assert_eq!(r.failed(), Some(1));
        assert_eq!(r.failed(), None);
        assert_eq!(r.failed(), None);
    }
}
