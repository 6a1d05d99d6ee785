//! Where finished lines go:
//!
//! - `ReqinLogFile`: a file opened for append or a piped log, opened in the parent
//!   (`post_config`) so every child inherits the descriptor, like mod_log_config's `CustomLog`.
//!   Each child collects lines in a [`LineBuffer`] (`ReqinLogBuffer`, default 16 KiB) and
//!   writes them with one `write(2)` when it is full or its oldest line is
//!   `ReqinLogFlushInterval` old (the orphan flusher's thread watches the time); with
//!   `ReqinLogBuffer 0` each line is one `write(2)`. A write holds only whole lines, so children
//!   appending to one `O_APPEND` file never interleave; to a pipe, a write is at most
//!   `PIPE_BUF` bytes, the most the kernel writes atomically. A file is opened once per
//!   configuration generation; one that cannot be opened then (its directory does not exist
//!   yet) is a warning, and each child tries again every `JsonSockLogReconnectInterval`,
//!   counting the lines it loses meanwhile. A line is in the file whole or not at all, even when
//!   the disk fills up ([`AppendFile`]). A piped log program is kept across graceful restarts,
//!   in the process pool (unlike `CustomLog`, whose program httpd kills at every graceful
//!   restart, losing the lines old children were still writing); a hard restart, which kills
//!   it with the children, starts a new one.
//! - `JsonSockLogSocket`: the original C module's UNIX datagram socket, one JSON object per
//!   datagram, non-blocking. The socket (or its directory) may not exist when httpd starts:
//!   that is a warning, not an error. Each child connects on first use; when a send fails the line is
//!   dropped (and counted), the socket closed, and a new connection tried at most once per
//!   `JsonSockLogReconnectInterval`. A full socket buffer drops the line and keeps the socket.
//!
//! Failures are reported to the error log at most once per `JsonSockLogErrorReportInterval`, with
//! the number of lines lost since the last report.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(test))]
use std::sync::OnceLock;
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

    /// The failures counted since the last report, now reported (a child about to exit: what
    /// the interval held back would otherwise be in no error log).
    pub fn take_pending(&self) -> Option<u64> {
        Some(self.failures.swap(0, Ordering::Relaxed)).filter(|&n| n > 0)
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
    /// Lines that reached the file (or the pipe) whole.
    pub written: u64,
    /// Lines lost because a write failed or the file could not be opened.
    pub lost: u64,
    /// Lines left damaged in the file: a write cut short (disk full) that could not be cut back
    /// to the last whole line (another process had appended after it). Counted in `lost` too.
    pub damaged: u64,
    /// The error-log message due now (rate-limited), if any.
    pub report: Option<String>,
}

/// What one `write(2)` of whole lines achieved.
#[derive(Debug)]
pub struct Chunk<E> {
    /// Whole lines now in the file.
    pub written: u64,
    /// Set when the write failed or was cut short: the rest of the chunk is lost.
    pub error: Option<E>,
    /// The cut-short write left a partial line the writer could not remove.
    pub damaged: bool,
}

impl<E> Chunk<E> {
    pub fn whole(bytes: &[u8]) -> Self {
        Self {
            written: count_lines(bytes),
            error: None,
            damaged: false,
        }
    }
}

/// What a [`LineBuffer`] write achieved.
#[derive(Debug, PartialEq, Eq)]
pub struct Flushed<E> {
    pub written: u64,
    pub lost: u64,
    pub damaged: u64,
    pub error: Option<E>,
}

impl<E> Default for Flushed<E> {
    fn default() -> Self {
        Self {
            written: 0,
            lost: 0,
            damaged: 0,
            error: None,
        }
    }
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
    pub fn push<E>(&self, line: &[u8], write: impl FnMut(&[u8]) -> Chunk<E>) -> Flushed<E> {
        let mut pending = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.bytes.is_empty() {
            pending.since = Some(Instant::now());
            pending.bytes.reserve(self.capacity);
        }
        pending.bytes.extend_from_slice(line);
        if pending.bytes.len() < self.capacity {
            return Flushed::default();
        }
        self.write_out(pending, write)
    }

    /// Writes what is buffered if its oldest line is due at `now` (or `force`).
    pub fn flush<E>(
        &self,
        now: Instant,
        force: bool,
        write: impl FnMut(&[u8]) -> Chunk<E>,
    ) -> Flushed<E> {
        let pending = self.batch.lock().unwrap_or_else(PoisonError::into_inner);
        let due = pending
            .since
            .is_some_and(|since| force || now.saturating_duration_since(since) >= self.interval);
        if !due {
            return Flushed::default();
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
        mut write: impl FnMut(&[u8]) -> Chunk<E>,
    ) -> Flushed<E> {
        let spare = std::mem::take(&mut pending.spare);
        let mut batch = std::mem::replace(&mut pending.bytes, spare);
        pending.since = None;
        let writing = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        drop(pending);
        let mut rest = batch.as_slice();
        let mut result = Flushed::default();
        while !rest.is_empty() {
            let n = chunk_len(rest, self.max_write);
            let (chunk, tail) = rest.split_at(n);
            let done = write(chunk);
            result.written += done.written;
            if done.error.is_some() {
                result.lost = count_lines(rest).saturating_sub(done.written);
                result.damaged = u64::from(done.damaged);
                result.error = done.error;
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
    // memchr skips the bytes between newlines several at a time (a buffer of 16 KiB holds
    // about 20 lines); a byte-by-byte count was a fifth of the module's cost per request.
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

/// Appends whole lines to a plain file so that a line is in the file whole or not at all.
///
/// A `write(2)` to a regular file is cut short only when the disk (or the quota, or the file
/// size limit) is full; the rest would be appended by a later write, after other children's
/// lines, making one line of two halves. So the remainder is never written: the partial line
/// is cut off again (`ftruncate` back to where it began, after checking the file still ends
/// with exactly those bytes), and its lines are counted as lost. If another process appended
/// in between, the bytes cannot be removed without removing its line: the partial line stays,
/// is counted as damaged, and the next write of any child starts with a newline so that no
/// further line is joined to it. Children learn of the damage from a shared counter
/// (`damage_epoch`), one atomic load per write.
pub struct AppendFile {
    file: File,
    /// The shared damage count last seen by this process.
    seen_damage: AtomicU64,
}

impl AppendFile {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        // Read too: a cut-short write is checked against the file's end before it is removed.
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        Ok(Self {
            file,
            seen_damage: AtomicU64::new(0),
        })
    }

    /// Writes `bytes` (whole lines) with one `write(2)`. `damage_epoch` is the shared count of
    /// damaged lines (any child's).
    pub fn write_lines(&self, bytes: &[u8], damage_epoch: u64) -> Chunk<std::io::Error> {
        let mut f = &self.file;
        if self.seen_damage.swap(damage_epoch, Ordering::Relaxed) != damage_epoch
            && !self.ends_with_newline()
        {
            // A partial line is at the end of the file: keep ours out of it.
            if let Err(e) = f.write_all(b"\n") {
                return Chunk {
                    written: 0,
                    error: Some(e),
                    damaged: false,
                };
            }
        }
        loop {
            match f.write(bytes) {
                Ok(n) if n == bytes.len() => return Chunk::whole(bytes),
                Ok(n) => {
                    let whole = bytes[..n]
                        .iter()
                        .rposition(|b| *b == b'\n')
                        .map_or(0, |i| i + 1);
                    let partial = &bytes[whole..n];
                    let damaged = !partial.is_empty() && !self.cut_back(partial);
                    return Chunk {
                        written: count_lines(&bytes[..whole]),
                        error: Some(std::io::Error::new(
                            std::io::ErrorKind::StorageFull,
                            format!(
                                "short write ({n} of {} bytes): no space left on the log's file system",
                                bytes.len()
                            ),
                        )),
                        damaged,
                    };
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Chunk {
                        written: 0,
                        error: Some(e),
                        damaged: false,
                    }
                }
            }
        }
    }

    /// Removes `partial` from the end of the file if it is still exactly the file's end.
    fn cut_back(&self, partial: &[u8]) -> bool {
        let Ok(size) = self.file.metadata().map(|m| m.len()) else {
            return false;
        };
        let Some(start) = size.checked_sub(partial.len() as u64) else {
            return false;
        };
        let mut tail = vec![0u8; partial.len()];
        if self.file.read_at(&mut tail, start).is_err() || tail != partial {
            return false;
        }
        self.file.set_len(start).is_ok()
    }

    fn ends_with_newline(&self) -> bool {
        let Ok(size) = self.file.metadata().map(|m| m.len()) else {
            return true;
        };
        if size == 0 {
            return true;
        }
        let mut last = [0u8; 1];
        // Unreadable (a write-only file): assume the best rather than add blank lines.
        self.file
            .read_at(&mut last, size - 1)
            .map_or(true, |_| last == *b"\n")
    }
}

/// `ReqinLogFile`: where its lines are written.
#[cfg(not(test))]
enum Handle {
    File(AppendFile),
    Pipe(AprFile),
}

/// `ReqinLogFile`.
#[cfg(not(test))]
pub struct FileSink {
    target: LogTarget,
    /// Opened by the parent at `post_config`; when that failed (a directory that does not exist
    /// yet), each child tries again every `reopen` until it opens.
    handle: OnceLock<Handle>,
    reopen: Duration,
    next_open: Mutex<Instant>,
    reporter: Reporter,
    /// `None`: `ReqinLogBuffer 0`, a write per line.
    buffer: Option<LineBuffer>,
}

#[cfg(not(test))]
impl FileSink {
    /// A file is opened for append now (as root, in the parent). A piped log program is started
    /// in `pipe_pool`: the process pool when httpd has one that outlives the generation, so that
    /// a graceful restart does not kill the program while old children still write to it.
    ///
    /// A log that cannot be opened is not an error: the sink is returned unopened with the
    /// reason (for the error log); for a file, children retry every `reopen`; a piped log is
    /// tried again at the next graceful restart.
    pub fn open(
        pool: Pool<'_>,
        pipe_pool: Option<Pool<'_>>,
        target: &LogTarget,
        reopen: Duration,
        report: Duration,
        buffer: Option<(usize, Duration)>,
    ) -> (Self, Option<String>) {
        let handle = OnceLock::new();
        let opened = match target {
            LogTarget::File(path) => AppendFile::open(path)
                .map(Handle::File)
                .map_err(|e| e.to_string()),
            LogTarget::Pipe(program) => match pipe_pool {
                Some(lasting) => AprFile::open_lasting_pipe(lasting, program),
                None => AprFile::open_pipe(pool, program),
            }
            .map(Handle::Pipe)
            .map_err(|e| e.to_string()),
        };
        let not_open = match opened {
            Ok(h) => {
                let _ = handle.set(h);
                None
            }
            Err(e) => Some(e),
        };
        (
            Self {
                target: target.clone(),
                handle,
                reopen,
                next_open: Mutex::new(Instant::now() + reopen),
                reporter: Reporter::new(report),
                buffer: buffer
                    .filter(|(size, _)| *size > 0)
                    .map(|(size, interval)| LineBuffer::new(size, interval, target)),
            },
            not_open,
        )
    }

    /// The open file, or an attempt to open it when one is due.
    fn handle(&self) -> Result<&Handle, std::io::Error> {
        if let Some(h) = self.handle.get() {
            return Ok(h);
        }
        let LogTarget::File(path) = &self.target else {
            return Err(std::io::Error::other(
                "the piped log program is not running",
            ));
        };
        {
            let mut next = self
                .next_open
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if now < *next {
                return Err(std::io::Error::new(
                    ErrorKind::NotFound,
                    "not open; waiting for JsonSockLogReconnectInterval before trying again",
                ));
            }
            *next = now + self.reopen;
        }
        let f = AppendFile::open(path)?;
        Ok(self.handle.get_or_init(|| Handle::File(f)))
    }

    fn write_chunk(&self, bytes: &[u8], damage_epoch: u64) -> Chunk<String> {
        match self.handle() {
            Ok(Handle::File(f)) => {
                let c = f.write_lines(bytes, damage_epoch);
                Chunk {
                    written: c.written,
                    error: c.error.map(|e| e.to_string()),
                    damaged: c.damaged,
                }
            }
            Ok(Handle::Pipe(p)) => match p.write_all(bytes) {
                Ok(()) => Chunk::whole(bytes),
                Err(e) => Chunk {
                    written: 0,
                    error: Some(e.to_string()),
                    damaged: false,
                },
            },
            Err(e) => Chunk {
                written: 0,
                error: Some(format!("cannot open it: {e}")),
                damaged: false,
            },
        }
    }

    /// Takes one complete line (its `\n` included): buffered, or written with a single write.
    /// `damage_epoch`: the shared count of damaged lines ([`AppendFile`]).
    pub fn write_line(&self, line: &[u8], damage_epoch: u64) -> Outcome {
        let write = |bytes: &[u8]| self.write_chunk(bytes, damage_epoch);
        let result = match &self.buffer {
            Some(buffer) => buffer.push(line, write),
            None => {
                let c = write(line);
                Flushed {
                    written: c.written,
                    lost: 1 - c.written.min(1),
                    damaged: u64::from(c.damaged),
                    error: c.error,
                }
            }
        };
        self.outcome(result)
    }

    /// Writes the buffered lines if the oldest is due at `now` (all of them if `force`).
    pub fn flush(&self, now: Instant, force: bool, damage_epoch: u64) -> Outcome {
        match &self.buffer {
            Some(buffer) => {
                self.outcome(buffer.flush(now, force, |b| self.write_chunk(b, damage_epoch)))
            }
            None => Outcome::default(),
        }
    }

    /// The lost lines not reported yet, as the report a child exiting writes.
    pub fn pending_report(&self) -> Option<String> {
        self.reporter.take_pending().map(|n| {
            format!(
                "ReqinLogFile {}: {n} log line(s) lost since the last report (this child is exiting)",
                self.target
            )
        })
    }

    /// When the oldest buffered line is due, if any.
    pub fn due(&self) -> Option<Instant> {
        self.buffer.as_ref().and_then(LineBuffer::due)
    }

    fn outcome(&self, result: Flushed<String>) -> Outcome {
        let report = match &result.error {
            Some(e) if result.lost > 0 => self
                .reporter
                .failed_n(result.lost)
                .map(|n| format!("ReqinLogFile {}: {n} log line(s) lost: {e}", self.target)),
            _ => None,
        };
        Outcome {
            written: result.written,
            lost: result.lost,
            damaged: result.damaged,
            report,
        }
    }
}

/// Why nobody can receive on the socket at `path` right now, if so (for the start-up warning;
/// a child connects on its own later).
pub fn socket_absent(path: &Path) -> Option<String> {
    if let Some(dir) = path.parent().filter(|d| !d.is_dir()) {
        return Some(format!("directory {} does not exist (yet)", dir.display()));
    }
    let sock = match UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => return Some(format!("cannot create a socket: {e}")),
    };
    match sock.connect(path) {
        Ok(()) => None,
        Err(e) if e.kind() == ErrorKind::NotFound => Some("no such socket (yet)".to_owned()),
        Err(e) => Some(format!("nobody listens there ({e})")),
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

    /// The dropped lines not reported yet, as the report a child exiting writes.
    pub fn pending_report(&self) -> Option<String> {
        self.reporter.take_pending().map(|n| {
            format!(
                "JsonSockLogSocket {}: {n} log line(s) dropped since the last report (this child is exiting)",
                self.path.display()
            )
        })
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
    fn what_the_interval_held_back_is_taken_once_for_the_last_report() {
        let r = Reporter::new(Duration::from_secs(3600));
        assert_eq!(r.failed(), Some(1));
        assert_eq!(r.take_pending(), None);
        assert_eq!(r.failed_n(3), None);
        assert_eq!(r.failed(), None);
        assert_eq!(r.take_pending(), Some(4));
        assert_eq!(r.take_pending(), None);
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
            let f: Flushed<()> = buf.push(&line, |b| {
                written.push(b.to_vec());
                Chunk::whole(b)
            });
            assert_eq!(f.lost, 0);
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
        buf.push(b"one\n", |_| -> Chunk<()> { panic!("no write expected") });
        let due = buf.due().unwrap();
        assert!(due >= start + interval);
        let mut out = Vec::new();
        let _: Flushed<()> = buf.flush(due - Duration::from_millis(1), false, |b| {
            out.extend_from_slice(b);
            Chunk::whole(b)
        });
        assert!(out.is_empty(), "not due yet");
        let f: Flushed<()> = buf.flush(due, false, |b| {
            out.extend_from_slice(b);
            Chunk::whole(b)
        });
        assert_eq!(f.written, 1);
        assert_eq!(out, b"one\n");
        buf.push(b"two\n", |_| -> Chunk<()> { panic!("no write expected") });
        let _: Flushed<()> = buf.flush(Instant::now(), true, |b| {
            out.extend_from_slice(b);
            Chunk::whole(b)
        });
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
            let _: Flushed<()> = buf.push(&l, |_| panic!("not full yet"));
            lines.push(l);
        }
        let mut writes: Vec<Vec<u8>> = Vec::new();
        let f: Flushed<()> = buf.flush(Instant::now(), true, |b| {
            writes.push(b.to_vec());
            Chunk::whole(b)
        });
        assert_eq!(f.written, 200);
        assert!(writes.len() > 1);
        for w in &writes {
            assert!(w.ends_with(b"\n"), "whole lines only");
            assert!(w.len() <= PIPE_BUF || w.iter().filter(|b| **b == b'\n').count() == 1);
        }
        assert_eq!(writes.concat(), lines.concat(), "every byte, in order");
    }

    #[test]
    fn a_failed_write_reports_the_lines_it_lost_and_only_those() {
        let buf = LineBuffer::new(
            1 << 20,
            Duration::from_secs(1),
            &LogTarget::Pipe("cat".into()),
        );
        for _ in 0..2000 {
            let _: Flushed<()> = buf.push(b"line line line\n", |_| panic!("not full yet"));
        }
        // The first PIPE_BUF chunk goes through, the second fails.
        let mut calls = 0;
        let f = buf.flush(Instant::now(), true, |b| {
            calls += 1;
            if calls == 1 {
                Chunk::whole(b)
            } else {
                Chunk {
                    written: 0,
                    error: Some("disk full"),
                    damaged: false,
                }
            }
        });
        let first = (PIPE_BUF / 15) as u64;
        assert_eq!((f.written, f.lost), (first, 2000 - first));
        assert_eq!(f.error, Some("disk full"));
        assert_eq!(buf.due(), None, "lost, not retried forever");
        let r = Reporter::new(Duration::from_secs(3600));
        assert_eq!(r.failed_n(7), Some(7));
        assert_eq!(r.failed_n(2), None);
    }

    #[test]
    fn a_partial_line_at_the_end_is_cut_back_only_if_it_is_still_ours() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        std::fs::write(&path, b"{\"a\":1}\n{\"b\":").unwrap();
        let f = AppendFile::open(&path).unwrap();
        assert!(!f.cut_back(b"{\"c\":"), "not the bytes we wrote");
        assert!(f.cut_back(b"{\"b\":"));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
    }

    #[test]
    fn after_damage_anywhere_the_next_write_starts_on_a_new_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        // Another child's cut-short write that could not be removed.
        std::fs::write(&path, b"{\"a\":1}\n{\"half").unwrap();
        let f = AppendFile::open(&path).unwrap();
        let c = f.write_lines(b"{\"b\":2}\n", 1);
        assert_eq!((c.written, c.damaged), (1, false));
        let c = f.write_lines(b"{\"c\":3}\n", 1);
        assert_eq!(c.written, 1);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"{\"a\":1}\n{\"half\n{\"b\":2}\n{\"c\":3}\n",
            "one newline, once, and only after the shared damage count moved"
        );
    }
}
