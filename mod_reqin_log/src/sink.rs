//! Where finished lines go:
//!
//! - `ReqinLogFile`: a file opened for append or a piped log, opened in the parent
//!   (`post_config`) so every child inherits the descriptor, like mod_log_config's `CustomLog`.
//!   Each child collects lines in a [`LineBuffer`] (`ReqinLogBuffer`, default 16 KiB) and
//!   writes them with one `write(2)` when it is full or its oldest line is
//!   `ReqinLogFlushInterval` old (the orphan flusher's thread watches the time); with
//!   `ReqinLogBuffer 0` each line is one `write(2)`. A write holds only whole lines, so children
//!   appending to one `O_APPEND` file never interleave; to a pipe, a write is at most
//!   `PIPE_BUF` bytes, the most the kernel writes atomically. A file is opened once per configuration generation; a piped log
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
        self.failed_n(1)
    }

    /// Counts `n` failures at once (a buffered write that lost `n` lines).
    pub fn failed_n(&self, n: u64) -> Option<u64> {
        let failures = self.failures.fetch_add(n, Ordering::Relaxed) + n;
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

/// What became of the lines a sink was handed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Lines lost because a write failed.
    pub lost: u64,
    /// The error-log message due now (rate-limited), if any.
    pub report: Option<String>,
}

/// Lines of one child waiting for a single write (`ReqinLogBuffer`).
pub struct LineBuffer {
    capacity: usize,
    interval: Duration,
    /// Largest write: `PIPE_BUF` for a pipe, else unbounded.
    max_write: usize,
    batch: Mutex<Batch>,
    /// Held while a batch is written, taken before `batch` is released: batches reach the
    /// file in the order their lines were logged.
    writing: Mutex<()>,
}

#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
    /// The previous batch's allocation, cleared, for the next one.
    spare: Vec<u8>,
    /// When the oldest line in `bytes` arrived.
    since: Option<Instant>,
}

/// Bytes the kernel writes to a pipe atomically (Linux `PIPE_BUF`).
pub const PIPE_BUF: usize = 4096;

impl LineBuffer {
    pub fn new(capacity: usize, interval: Duration, target: &LogTarget) -> Self {
        Self {
            capacity,
            interval,
            max_write: match target {
                LogTarget::Pipe(_) => PIPE_BUF,
                LogTarget::File(_) => usize::MAX,
            },
            batch: Mutex::new(Batch::default()),
            writing: Mutex::new(()),
        }
    }

    /// Adds one complete line; when the buffer is full, writes everything with `write`.
    /// Returns the number of lines a failed write lost and its error.
    pub fn push<E>(
        &self,
        line: &[u8],
        write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), (u64, E)> {
        let mut pending = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.bytes.is_empty() {
            pending.since = Some(Instant::now());
            pending.bytes.reserve(self.capacity);
        }
        pending.bytes.extend_from_slice(line);
        if pending.bytes.len() < self.capacity {
            return Ok(());
        }
        self.write_out(pending, write)
    }

    /// Writes what is buffered if its oldest line is due at `now` (or `force`).
    pub fn flush<E>(
        &self,
        now: Instant,
        force: bool,
        write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), (u64, E)> {
        let pending = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        let due = pending
            .since
            .is_some_and(|since| force || now.saturating_duration_since(since) >= self.interval);
        if !due {
            return Ok(());
        }
        self.write_out(pending, write)
    }

    /// When the oldest buffered line is due, if any.
    pub fn due(&self) -> Option<Instant> {
        let pending = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        pending.since.map(|since| since + self.interval)
    }

    fn write_out<E>(
        &self,
        mut pending: std::sync::MutexGuard<'_, Batch>,
        mut write: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), (u64, E)> {
        let spare = std::mem::take(&mut pending.spare);
        let mut batch = std::mem::replace(&mut pending.bytes, spare);
        pending.since = None;
        let writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        drop(pending);
        let mut rest = batch.as_slice();
        let mut result = Ok(());
        while !rest.is_empty() {
            let n = chunk_len(rest, self.max_write);
            let (chunk, tail) = rest.split_at(n);
            if let Err(e) = write(chunk) {
                result = Err((count_lines(rest), e));
                break;
            }
            rest = tail;
        }
        drop(writing);
        // Keep the allocation for the next batch, unless one huge line inflated it.
        if batch.capacity() <= 2 * self.capacity {
            batch.clear();
            let mut pending = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.spare.capacity() == 0 {
                pending.spare = batch;
            }
        }
        result
    }
}

/// The longest prefix of `bytes` that is whole lines and at most `max` bytes; a single line
/// longer than `max` goes alone.
fn chunk_len(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    match bytes[..max].iter().rposition(|b| *b == b'\n') {
        Some(i) => i + 1,
        None => bytes[max..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(bytes.len(), |i| max + i + 1),
    }
}

fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| **b == b'\n').count() as u64
}

/// `ReqinLogFile`.
#[cfg(not(test))]
pub struct FileSink {
    target: LogTarget,
    file: AprFile,
    reporter: Reporter,
    /// `None`: `ReqinLogBuffer 0`, a write per line.
    buffer: Option<LineBuffer>,
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
        buffer: Option<(usize, Duration)>,
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
            buffer: buffer
                .filter(|(size, _)| *size > 0)
                .map(|(size, interval)| LineBuffer::new(size, interval, target)),
        })
    }

    /// Takes one complete line (its `\n` included): buffered, or written with a single write.
    pub fn write_line(&self, line: &[u8]) -> Outcome {
        let write = |bytes: &[u8]| self.file.write_all(bytes);
        let result = match &self.buffer {
            Some(buffer) => buffer.push(line, write),
            None => write(line).map_err(|e| (1, e)),
        };
        self.outcome(result)
    }

    /// Writes the buffered lines if the oldest is due at `now` (all of them if `force`).
    pub fn flush(&self, now: Instant, force: bool) -> Outcome {
        match &self.buffer {
            Some(buffer) => self.outcome(buffer.flush(now, force, |b| self.file.write_all(b))),
            None => Outcome::default(),
        }
    }

    /// When the oldest buffered line is due, if any.
    pub fn due(&self) -> Option<Instant> {
        self.buffer.as_ref().and_then(LineBuffer::due)
    }

    fn outcome(&self, result: Result<(), (u64, crate::ffi::AprError)>) -> Outcome {
        match result {
            Ok(()) => Outcome::default(),
            Err((lost, e)) => Outcome {
                lost,
                report: self
                    .reporter
                    .failed_n(lost)
                    .map(|n| format!("ReqinLogFile {}: {n} log line(s) lost: {e}", self.target)),
            },
        }
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

    #[test]
    fn lines_wait_until_the_buffer_is_full_then_go_in_one_write() {
        let buf = LineBuffer::new(
            100,
            Duration::from_secs(3600),
            &LogTarget::File("/x".into()),
        );
        let mut written: Vec<Vec<u8>> = Vec::new();
        for i in 0..10u8 {
            let line = [b'a' + i; 19]
                .iter()
                .chain(b"\n")
                .copied()
                .collect::<Vec<u8>>();
            buf.push(&line, |b| {
                written.push(b.to_vec());
                Ok::<(), ()>(())
            })
            .unwrap();
        }
        // 20-byte lines, capacity 100: written at the 5th and the 10th line, whole.
        assert_eq!(written.len(), 2);
        assert!(written.iter().all(|w| w.len() == 100 && w.ends_with(b"\n")));
        assert_eq!(buf.due(), None);
    }

    #[test]
    fn the_oldest_line_is_written_after_the_interval_or_when_forced() {
        let interval = Duration::from_millis(100);
        let buf = LineBuffer::new(1 << 20, interval, &LogTarget::File("/x".into()));
        let start = Instant::now();
        buf.push(b"one\n", |_| Err("no write expected")).unwrap();
        let due = buf.due().unwrap();
        assert!(due >= start + interval);
        let mut out = Vec::new();
        buf.flush(due - Duration::from_millis(1), false, |b| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(out.is_empty(), "not due yet");
        buf.flush(due, false, |b| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out, b"one\n");
        buf.push(b"two\n", |_| Err("no write expected")).unwrap();
        buf.flush(Instant::now(), true, |b| {
            out.extend_from_slice(b);
            Ok::<(), ()>(())
        })
        .unwrap();
        assert_eq!(out, b"one\ntwo\n");
        assert_eq!(buf.due(), None);
    }

    #[test]
    fn a_pipe_gets_whole_lines_of_at_most_pipe_buf_bytes() {
        let buf = LineBuffer::new(
            64 * 1024,
            Duration::from_secs(1),
            &LogTarget::Pipe("cat".into()),
        );
        let mut lines = Vec::new();
        for i in 0..200usize {
            let mut l = vec![b'x'; 10 + (i * 37) % 300];
            if i == 100 {
                l = vec![b'L'; 3 * PIPE_BUF];
            }
            l.push(b'\n');
            buf.push(&l, |_| Err("not full yet")).unwrap();
            lines.push(l);
        }
        let mut writes: Vec<Vec<u8>> = Vec::new();
        buf.flush(Instant::now(), true, |b| {
            writes.push(b.to_vec());
            Ok::<(), ()>(())
        })
        .unwrap();
        assert!(writes.len() > 1);
        for w in &writes {
            assert!(w.ends_with(b"\n"), "whole lines only");
            assert!(w.len() <= PIPE_BUF || w.iter().filter(|b| **b == b'\n').count() == 1);
        }
        assert_eq!(writes.concat(), lines.concat(), "every byte, in order");
    }

    #[test]
    fn a_failed_write_reports_the_lines_it_lost() {
        let buf = LineBuffer::new(
            1 << 20,
            Duration::from_secs(1),
            &LogTarget::File("/x".into()),
        );
        for _ in 0..7 {
            buf.push(b"line\n", |_| Err("not full yet")).unwrap();
        }
        let err = buf
            .flush(Instant::now(), true, |_| Err("disk full"))
            .unwrap_err();
        assert_eq!(err, (7, "disk full"));
        assert_eq!(buf.due(), None, "lost, not retried forever");
        let r = Reporter::new(Duration::from_secs(3600));
        assert_eq!(r.failed_n(7), Some(7));
        assert_eq!(r.failed_n(2), None);
    }
}
