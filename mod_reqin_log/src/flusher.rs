//! The orphan flusher: one thread per httpd child that finishes the lines whose handshake was
//! not in the ring yet when the request was logged, so no worker waits for the sensor. It also
//! writes each sink's buffered lines once the oldest is `ReqinLogFlushInterval` old.
//!
//! A pending line is re-checked every [`TICK`]: written correlated as soon as the ring has a
//! record that belongs to its connection, or as an orphan once the sensor has processed every
//! packet up to the request (its watermark passed the request's arrival: the hello would have
//! been seen) or the orphan delay expired. The queue is bounded; a full queue makes the worker
//! write the line as an orphan at once (counted). When the child exits, the pool cleanup stops
//! the thread, which gives every pending line one last lookup and writes it, then is joined:
//! a graceful restart or stop loses no line, and no thread outlives the module's code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use correlate_lib::ConnKey;
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use crate::correlation::RingHandle;
use crate::hooks::{Check, Output};
use crate::inline::InlineGeneration;
use crate::record::{
    with_line, LineFingerprint, OrphanReason, RequestSnapshot, Source, TlsFragment,
};
use crate::source::{fragment_meta, lookup_record, merge_parts, ring_reason};
use crate::stats::Counter;

/// How often pending lines are re-checked.
pub const TICK: Duration = Duration::from_millis(10);
/// How long the thread sleeps while nothing is pending (a new line wakes it at once): an idle
/// child must not wake 100 times a second. Bounds how late it notices the stop flag.
pub const IDLE_TICK: Duration = Duration::from_millis(100);
/// Pending lines per child. At 500 ms each, 4096 covers 8000 uncorrelated TLS requests per
/// second per child; beyond that lines are written as orphans at once rather than held.
pub const QUEUE_CAPACITY: usize = 4096;

/// A finished request waiting for its handshake.
pub struct Pending {
    pub snapshot: RequestSnapshot<'static>,
    pub key: ConnKey,
    pub accept_ns: u64,
    pub arrival_ns: u64,
    pub deadline: Instant,
    pub rules: Arc<correlate_lib::join::JoinRules>,
    pub ring: Arc<RingHandle>,
    pub output: Arc<Output>,
    /// `ReqinLogJA4Plus On`: a record found late gets its JA4T.
    pub ja4plus: bool,
    /// `ReqinLogClientMap`, for the line's `ja4_client`.
    pub clients: Option<Arc<correlate_lib::clients::ClientMap>>,
    /// The request sent fingerprint headers that were removed (`upstream_untrusted`).
    pub untrusted_upstream: bool,
    /// `ReqinLogFingerprint both`: the inline half, checked against the sensor's record.
    pub both: Option<Box<BothPending>>,
}

/// `both`: what a line waiting for the sensor carries when the record does not come.
pub struct BothPending {
    pub inline: TlsFragment,
    pub generation: Option<Arc<InlineGeneration>>,
}

impl Pending {
    /// Writes the line if it can be decided now (or `force`); false to keep it pending.
    fn settle(&self, force: bool) -> bool {
        if let Some(rec) = lookup_record(
            &self.ring,
            &self.rules,
            &self.key,
            self.accept_ns,
            &self.output,
            false,
        ) {
            self.output.stats.add(Counter::CorrelatedLate, 1);
            let (rec, meta, check) = match &self.both {
                Some(both) => merge_parts(
                    both.generation.as_deref(),
                    self.output.logger(),
                    &both.inline,
                    &rec,
                ),
                None => {
                    let meta = fragment_meta(
                        self.ja4plus,
                        self.clients.as_deref(),
                        Source::Sensor,
                        None,
                        &rec,
                    );
                    (rec, meta, Check::None)
                }
            };
            let tls = TlsFragment::new(rec, meta, self.snapshot.client, self.snapshot.local);
            self.write(LineFingerprint::Connection(&tls), check);
            return true;
        }
        let seen_everything = self.ring.watermark() >= self.arrival_ns;
        if force || seen_everything || Instant::now() >= self.deadline {
            match &self.both {
                Some(both) => {
                    self.write(LineFingerprint::Connection(&both.inline), Check::Unchecked)
                }
                None => {
                    self.output.stats.add(Counter::RingMisses, 1);
                    self.output.stats.add(Counter::OrphansDelayed, 1);
                    let reason = if self.untrusted_upstream {
                        OrphanReason::UpstreamUntrusted
                    } else if seen_everything {
                        OrphanReason::NotInRing
                    } else {
                        ring_reason(&self.ring)
                    };
                    self.write(LineFingerprint::Orphan(reason), Check::None);
                }
            }
            return true;
        }
        false
    }

    fn write(&self, fp: LineFingerprint<'_>, check: Check) {
        with_line(&self.snapshot, fp, |line| {
            self.output.write(line, fp, check)
        });
    }
}

/// The child's flusher; dropping it (pool cleanup) drains and joins the thread.
pub struct Flusher {
    tx: Sender<Box<Pending>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    /// `outputs`: the child's sinks, whose buffered lines the thread writes when due.
    pub fn start(
        spawn: impl FnOnce(Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>>,
        outputs: Vec<Arc<Output>>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = bounded(QUEUE_CAPACITY);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = spawn(Box::new({
            let stop = Arc::clone(&stop);
            move || run(rx, stop, outputs)
        }))?;
        Ok(Self {
            tx,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a line; gives it back when the queue is full or the flusher stopped.
    pub fn submit(&self, p: Box<Pending>) -> Result<(), Box<Pending>> {
        self.tx.try_send(p).map_err(|e| match e {
            TrySendError::Full(p) | TrySendError::Disconnected(p) => p,
        })
    }
}

impl Flusher {
    /// Writes every pending line and joins the thread (idempotent).
    pub fn stop_and_join(&self) {
        self.stop.store(true, Ordering::Release);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

fn run(rx: Receiver<Box<Pending>>, stop: Arc<AtomicBool>, outputs: Vec<Arc<Output>>) {
    let mut pending: Vec<Box<Pending>> = Vec::new();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        let mut tick = if pending.is_empty() && !stopping {
            IDLE_TICK
        } else {
            TICK
        };
        let now = Instant::now();
        if let Some(due) = outputs.iter().filter_map(|o| o.flush_due()).min() {
            tick = tick.min(due.saturating_duration_since(now));
        }
        match rx.recv_timeout(tick) {
            Ok(p) => pending.push(p),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                for p in pending.drain(..) {
                    settle_guarded(&p, true);
                }
                return;
            }
        }
        pending.extend(rx.try_iter());
        pending.retain(|p| !settle_guarded(p, stopping));
        let now = Instant::now();
        for output in &outputs {
            // A panic here (a bug) must not end the thread that flushes every sink.
            let _ =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| output.flush(now, false)));
        }
        if stopping && pending.is_empty() && rx.is_empty() {
            return;
        }
    }
}

/// A panic while settling one line (a bug) loses that line, not the flusher.
fn settle_guarded(p: &Pending, force: bool) -> bool {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| p.settle(force))).unwrap_or(true)
}
