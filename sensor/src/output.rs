//! ja4sentinel's JSON outputs beside the ring: `unix_socket` (one JSON object per datagram),
//! `file` (JSON lines, reopened on SIGHUP for logrotate) and `stdout`.
//!
//! Each output runs on its own thread behind a bounded queue of `async_buffer` records. The
//! capture loop only ever `try_send`s: a slow, full or absent consumer makes records drop (and
//! counted), never capture wait.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::config::OutputSpec;

/// First wait after a failed datagram send; doubled after each further failure.
pub const SOCKET_BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest wait between attempts (sentinel: exponential backoff 100 ms → 2 s).
pub const SOCKET_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Attempts per record before it is dropped (sentinel: max 3 attempts per write).
pub const SOCKET_ATTEMPTS: u32 = 3;
/// How often an idle file output checks for a reopen request and flushes.
const IDLE_CHECK: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open output file {path}: {source}")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create a datagram socket: {0}")]
    Socket(#[source] std::io::Error),
    #[error("cannot start the output thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// Counts of one output, shared with its thread.
#[derive(Debug, Default)]
struct Stats {
    queued: AtomicU64,
    /// Dropped because the queue was full (slow or absent consumer).
    dropped: AtomicU64,
    written: AtomicU64,
    /// Dropped after failing to write (every attempt failed).
    failed: AtomicU64,
}

/// A snapshot of one output's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCounts {
    pub name: String,
    pub queued: u64,
    pub dropped: u64,
    pub written: u64,
    pub failed: u64,
}

struct Worker {
    name: String,
    tx: Sender<Arc<str>>,
    stats: Arc<Stats>,
    handle: JoinHandle<()>,
}

/// The running outputs.
pub struct Outputs {
    workers: Vec<Worker>,
    /// Set at shutdown: sockets stop retrying, so the queue drains quickly.
    stopping: Arc<AtomicBool>,
}

impl Outputs {
    /// Starts one thread per output. `reopen` is bumped on SIGHUP; file outputs reopen their
    /// file when they see it change.
    pub fn start(specs: &[OutputSpec], reopen: Arc<AtomicU64>) -> Result<Self, OutputError> {
        let stopping = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for spec in specs {
            let stats = Arc::new(Stats::default());
            let (name, queue) = match spec {
                OutputSpec::UnixSocket { socket_path, queue } => {
                    (format!("unix_socket:{}", socket_path.display()), *queue)
                }
                OutputSpec::File { path, queue } => (format!("file:{}", path.display()), *queue),
                OutputSpec::Stdout { queue } => ("stdout".to_owned(), *queue),
            };
            let (tx, rx) = crossbeam_channel::bounded::<Arc<str>>(queue);
            let thread_stats = Arc::clone(&stats);
            let body: Box<dyn FnOnce() + Send> = match spec {
                OutputSpec::UnixSocket { socket_path, .. } => {
                    let socket = UnixDatagram::unbound().map_err(OutputError::Socket)?;
                    let path = socket_path.clone();
                    let stop = Arc::clone(&stopping);
                    Box::new(move || socket_loop(&socket, &path, &rx, &thread_stats, &stop))
                }
                OutputSpec::File { path, .. } => {
                    let file = FileOutput::open(path.clone(), Arc::clone(&reopen))?;
                    Box::new(move || file_loop(file, &rx, &thread_stats))
                }
                OutputSpec::Stdout { .. } => Box::new(move || stdout_loop(&rx, &thread_stats)),
            };
            let handle = std::thread::Builder::new()
                .name(format!("output-{}", workers.len()))
                .spawn(body)
                .map_err(OutputError::Thread)?;
            workers.push(Worker {
                name,
                tx,
                stats,
                handle,
            });
        }
        Ok(Self { workers, stopping })
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// Queues one JSON object for every output; never blocks.
    pub fn send(&self, json: &str) {
        let line: Arc<str> = Arc::from(json);
        for w in &self.workers {
            match w.tx.try_send(Arc::clone(&line)) {
                Ok(()) => w.stats.queued.fetch_add(1, Ordering::Relaxed),
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    w.stats.dropped.fetch_add(1, Ordering::Relaxed)
                }
            };
        }
    }

    pub fn counts(&self) -> Vec<OutputCounts> {
        self.workers
            .iter()
            .map(|w| OutputCounts {
                name: w.name.clone(),
                queued: w.stats.queued.load(Ordering::Relaxed),
                dropped: w.stats.dropped.load(Ordering::Relaxed),
                written: w.stats.written.load(Ordering::Relaxed),
                failed: w.stats.failed.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// Records dropped by all outputs (queue full or write failed).
    pub fn dropped_total(&self) -> u64 {
        self.counts().iter().map(|c| c.dropped + c.failed).sum()
    }

    /// Closes the queues and waits up to `grace` for the threads to write what is queued.
    /// Threads still busy after it (a consumer that does not read) are left behind: the
    /// process is exiting.
    pub fn shutdown(self, grace: Duration) -> Vec<OutputCounts> {
        self.stopping.store(true, Ordering::Relaxed);
        let counts_before = self.counts();
        let deadline = Instant::now() + grace;
        let mut handles = Vec::new();
        for w in self.workers {
            drop(w.tx);
            handles.push((w.name, w.handle));
        }
        for (name, handle) in handles {
            while !handle.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if handle.is_finished() {
                if handle.join().is_err() {
                    log::error!("output {name} panicked");
                }
            } else {
                log::warn!("output {name} did not drain within {grace:?}");
            }
        }
        counts_before
    }
}

fn stdout_loop(rx: &Receiver<Arc<str>>, stats: &Stats) {
    let stdout = std::io::stdout();
    for line in rx {
        let mut out = stdout.lock();
        let ok = out.write_all(line.as_bytes()).is_ok() && out.write_all(b"\n").is_ok();
        if rx.is_empty() {
            let _ = out.flush();
        }
        count(stats, ok);
    }
    let _ = stdout.lock().flush();
}

fn count(stats: &Stats, ok: bool) {
    if ok {
        stats.written.fetch_add(1, Ordering::Relaxed);
    } else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A JSON-lines file, appended to, reopened when the reopen generation changes (SIGHUP after
/// logrotate moved it away).
struct FileOutput {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
    reopen: Arc<AtomicU64>,
    seen: u64,
}

impl FileOutput {
    fn open(path: PathBuf, reopen: Arc<AtomicU64>) -> Result<Self, OutputError> {
        let file = open_append(&path)?;
        let seen = reopen.load(Ordering::Relaxed);
        Ok(Self {
            path,
            out: std::io::BufWriter::new(file),
            reopen,
            seen,
        })
    }

    fn reopen_if_asked(&mut self) {
        let now = self.reopen.load(Ordering::Relaxed);
        if now == self.seen {
            return;
        }
        self.seen = now;
        let _ = self.out.flush();
        match open_append(&self.path) {
            Ok(file) => {
                self.out = std::io::BufWriter::new(file);
                log::info!("reopened {}", self.path.display());
            }
            Err(e) => log::error!("{e}; still writing to the previous file"),
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File, OutputError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .map_err(|source| OutputError::OpenFile {
            path: path.to_owned(),
            source,
        })
}

fn file_loop(mut file: FileOutput, rx: &Receiver<Arc<str>>, stats: &Stats) {
    loop {
        match rx.recv_timeout(IDLE_CHECK) {
            Ok(line) => {
                file.reopen_if_asked();
                let ok = file.out.write_all(line.as_bytes()).is_ok()
                    && file.out.write_all(b"\n").is_ok();
                count(stats, ok);
                if rx.is_empty() && file.out.flush().is_err() {
                    log::warn!("cannot flush {}", file.path.display());
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                file.reopen_if_asked();
                let _ = file.out.flush();
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let _ = file.out.flush();
}

/// Sends each record as one datagram to `path`. A failed send is retried after a backoff that
/// doubles from [`SOCKET_BACKOFF_MIN`] to [`SOCKET_BACKOFF_MAX`] while failures continue (the
/// consumer restarting), at most [`SOCKET_ATTEMPTS`] times per record.
fn socket_loop(
    socket: &UnixDatagram,
    path: &Path,
    rx: &Receiver<Arc<str>>,
    stats: &Stats,
    stopping: &AtomicBool,
) {
    let mut backoff = SOCKET_BACKOFF_MIN;
    let mut failures_reported = 0u64;
    for line in rx {
        let mut sent = false;
        for attempt in 0..SOCKET_ATTEMPTS {
            if attempt > 0 {
                if stopping.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(SOCKET_BACKOFF_MAX);
            }
            match socket.send_to(line.as_bytes(), path) {
                Ok(_) => {
                    sent = true;
                    backoff = SOCKET_BACKOFF_MIN;
                    break;
                }
                Err(e) => {
                    failures_reported += 1;
                    // Report the first failure and then every 1000th, not every record.
                    if failures_reported % 1000 == 1 {
                        log::warn!("unix_socket {}: {e} (retrying)", path.display());
                    }
                }
            }
        }
        count(stats, sent);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn absent_socket_consumer_drops_and_counts_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let spec = OutputSpec::UnixSocket {
            socket_path: dir.path().join("nobody.sock"),
            queue: 4,
        };
        let outputs = Outputs::start(&[spec], Arc::new(AtomicU64::new(0))).unwrap();
        let started = Instant::now();
        for i in 0..1000 {
            outputs.send(&format!("{{\"n\":{i}}}"));
        }
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "send never waits"
        );
        let c = &outputs.counts()[0];
        assert!(c.dropped >= 990, "{c:?}");
        let c = outputs.shutdown(Duration::from_millis(500));
        assert_eq!(c[0].written, 0);
    }

    #[test]
    fn datagrams_carry_one_json_object_each() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let spec = OutputSpec::UnixSocket {
            socket_path: path,
            queue: 10,
        };
        let outputs = Outputs::start(&[spec], Arc::new(AtomicU64::new(0))).unwrap();
        outputs.send("{\"a\":1}");
        outputs.send("{\"b\":2}");
        let mut buf = [0u8; 65536];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"a\":1}");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"{\"b\":2}");
        outputs.shutdown(Duration::from_secs(1));
    }

    #[test]
    fn file_output_appends_lines_and_reopens_after_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ja4.log");
        let reopen = Arc::new(AtomicU64::new(0));
        let spec = OutputSpec::File {
            path: path.clone(),
            queue: 10,
        };
        let outputs = Outputs::start(&[spec], Arc::clone(&reopen)).unwrap();
        outputs.send("{\"n\":1}");
        let wait_written = |n: u64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while outputs.counts()[0].written < n {
                assert!(Instant::now() < deadline);
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        wait_written(1);
        // logrotate moves the file away, then sends SIGHUP (here: bumps the generation).
        std::fs::rename(&path, dir.path().join("ja4.log.1")).unwrap();
        reopen.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(IDLE_CHECK * 2);
        outputs.send("{\"n\":2}");
        wait_written(2);
        outputs.shutdown(Duration::from_secs(1));
        let rotated = std::fs::read_to_string(dir.path().join("ja4.log.1")).unwrap();
        assert_eq!(rotated, "{\"n\":1}\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
    }
}
