//! The `exec` listener: runs a configured program once per event, the event's JSON (one line)
//! on its stdin. The program and its arguments come from the configuration only and are run
//! directly (no shell): nothing from the event reaches a command line. At most
//! `max_concurrency` run at once, each is killed after `timeout_ms`; exit statuses are counted.
//! Events wait in a bounded queue (`queue`); when it is full the live detector drops and counts
//! them rather than fall behind the log, while a replay waits (it must hand every event over).

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use super::{Dispatched, Listener, ListenerError};
use crate::config::ListenerType;
use crate::modules::Metric;

/// How often a running program is checked for its exit.
const POLL: Duration = Duration::from_millis(2);

#[derive(Debug, Default)]
struct Counters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    spawn_errors: AtomicU64,
    dropped: AtomicU64,
}

pub struct ExecListener {
    name: String,
    tx: Option<Sender<String>>,
    workers: Vec<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// Replays wait for room in the queue instead of dropping.
    block_when_full: bool,
}

impl ExecListener {
    pub fn start(
        command: &[String],
        max_concurrency: usize,
        timeout: Duration,
        queue: usize,
        block_when_full: bool,
    ) -> Result<Self, ListenerError> {
        let Some((program, args)) = command.split_first() else {
            return Err(ListenerError::Other {
                listener: "exec",
                reason: "empty command".into(),
            });
        };
        let (tx, rx) = crossbeam_channel::bounded::<String>(queue.max(1));
        let counters = Arc::new(Counters::default());
        let mut workers = Vec::new();
        for n in 0..max_concurrency.max(1) {
            let (rx, counters) = (rx.clone(), Arc::clone(&counters));
            let (program, args) = (program.clone(), args.to_vec());
            let h = std::thread::Builder::new()
                .name(format!("detect-exec-{n}"))
                .spawn(move || {
                    for json in rx {
                        run_one(&program, &args, &json, timeout, &counters);
                    }
                })
                .map_err(|e| ListenerError::Other {
                    listener: "exec",
                    reason: format!("cannot start a worker thread: {e}"),
                })?;
            workers.push(h);
        }
        Ok(Self {
            name: format!("exec:{program}"),
            tx: Some(tx),
            workers,
            counters,
            block_when_full,
        })
    }
}

fn run_one(program: &str, args: &[String], json: &str, timeout: Duration, c: &Counters) {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            c.spawn_errors.fetch_add(1, Ordering::Relaxed);
            log::warn!("exec listener: cannot run {program}: {e}");
            return;
        }
    };
    c.started.fetch_add(1, Ordering::Relaxed);
    if let Some(mut stdin) = child.stdin.take() {
        // A program that does not read its stdin (EPIPE) is its own business.
        let _ = stdin
            .write_all(json.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
    }
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if status.success() {
                    c.succeeded.fetch_add(1, Ordering::Relaxed);
                } else {
                    c.failed.fetch_add(1, Ordering::Relaxed);
                    log::warn!("exec listener: {program} exited with {status}");
                }
                return;
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                c.timed_out.fetch_add(1, Ordering::Relaxed);
                log::warn!("exec listener: {program} killed after {timeout:?}");
                return;
            }
            Err(e) => {
                c.failed.fetch_add(1, Ordering::Relaxed);
                log::warn!("exec listener: waiting for {program}: {e}");
                return;
            }
        }
    }
}

impl Listener for ExecListener {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ListenerType {
        ListenerType::Exec
    }

    fn handle(&mut self, d: &Dispatched) -> Result<(), ListenerError> {
        let Some(tx) = &self.tx else {
            return Ok(());
        };
        let sent = if self.block_when_full {
            tx.send(d.json.to_owned()).map_err(|_| ())
        } else {
            match tx.try_send(d.json.to_owned()) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => {
                    self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                    return Err(ListenerError::Other {
                        listener: "exec",
                        reason: "queue full: event dropped".into(),
                    });
                }
                Err(TrySendError::Disconnected(_)) => Err(()),
            }
        };
        sent.map_err(|()| ListenerError::Other {
            listener: "exec",
            reason: "workers gone".into(),
        })
    }

    fn finish(&mut self) -> Result<(), ListenerError> {
        // Closing the queue ends each worker once it has run what was queued.
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        Ok(())
    }

    fn metrics(&self) -> Vec<Metric> {
        let c = &self.counters;
        let label = format!("{{listener=\"{}\"}}", self.name);
        let m = |what: &str, help, v: &AtomicU64| Metric {
            name: format!("exec_{what}_total{label}"),
            help,
            kind: "counter",
            value: v.load(Ordering::Relaxed),
        };
        vec![
            m("started", "programs started", &c.started),
            m("succeeded", "programs that exited 0", &c.succeeded),
            m(
                "failed",
                "programs that exited non-zero or by a signal",
                &c.failed,
            ),
            m(
                "timed_out",
                "programs killed after timeout_ms",
                &c.timed_out,
            ),
            m(
                "spawn_errors",
                "programs that could not be started",
                &c.spawn_errors,
            ),
            m(
                "dropped",
                "events dropped because the queue was full",
                &c.dropped,
            ),
        ]
    }
}

impl Drop for ExecListener {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

/// Counts for tests and the end-of-replay summary: (started, succeeded, failed, timed out).
impl ExecListener {
    pub fn counts(&self) -> (u64, u64, u64, u64) {
        let c = &self.counters;
        (
            c.started.load(Ordering::Relaxed),
            c.succeeded.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
            c.timed_out.load(Ordering::Relaxed),
        )
    }
}
