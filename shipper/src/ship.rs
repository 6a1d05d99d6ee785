//! The shipping loop: scan → read complete lines → dead-letter the malformed → insert (several
//! batches in flight) → confirm → checkpoint over the confirmed prefix.
//!
//! **Exactly once as a query sees it.** Every batch has a deterministic id,
//! `<fingerprint of the file>:<start offset>-<end offset>`, the same under any name the file takes
//! (rename, copytruncate copy). The rows are inserted into an inbox (`ship_inbox`, or
//! `ship_events_inbox` for the detector's events), a `Null` table whose materialized views write
//! them into `http_logs_raw` (and `http_logs`) *and* the id into `ship_batches` within that
//! single INSERT: the rows and their id land together or not at all (a client killed
//! mid-request leaves an incomplete body, which the server rejects). Up to `max_in_flight`
//! batches are inserted at once, each over its own range, and at most [`MAX_WINDOW`] are past the
//! checkpoint, which only ever moves over the *contiguous confirmed prefix* of them. Hence after
//! a crash the batches that may have landed past a file's checkpoint are among the last
//! [`MAX_WINDOW`] ranges sent, in any combination, and:
//!
//! - after a (re)start, before the first batch of each file, the shipper asks `ship_batches` (on
//!   every host of the list) for *every* recorded range of that file that ends past its
//!   checkpoint; those ranges are skipped (the checkpoint moves over them in order) and only the
//!   gaps between them are read and sent, each gap cut at the next recorded range;
//! - after a failed or unconfirmed insert, it asks the host that attempt went to for that batch's
//!   exact id before re-sending the same range under the same id. A batch whose attempt timed out
//!   and is then known not to have landed is cut in two (new ids, disjoint ranges), so a server
//!   too slow for a large batch still gets the lines through.
//!
//! Neither check may be overtaken by an attempt still on its way (a request can sit in a frozen
//! server's socket buffer long after the shipper gave up on it). Each attempt therefore carries a
//! `deadline` in server time (now + timeout + margin); the server refuses an attempt that starts
//! processing after it (`ship_inbox.live`, computed before any view runs), and the client never
//! waits past it. A check first waits until the server's clock is past the last attempt's deadline,
//! then until no query with that `query_id` (the batch id) is still running; only then is its
//! answer final. After a restart, the same holds for the previous process's attempts: after a
//! crash the shipper waits until the deadline any of them could have is past (`timeout_ms` + 3–4
//! s); after a clean stop, which waits for its attempts to finish and leaves a marker naming any
//! whose outcome it could not learn, only until those are past (usually not at all).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Map;
use tokio::sync::{watch, Notify, Semaphore};
use tokio::task::JoinHandle;

use crate::ch::{Ch, ChError, EVENTS_INBOX_TABLE, INBOX_TABLE, RETENTION_KEEP_PER_FILE};
use crate::checkpoint::{Checkpoint, CheckpointError, FileState};
use crate::config::ShipConfig;
use crate::encode::{self, Body};
use crate::follow::{self, Block, FollowError, LogFile, ReadLimits};
use crate::metrics::Metrics;

/// While waiting for the server's clock to pass a deadline: it is a second-granular clock.
const CLOCK_POLL: Duration = Duration::from_millis(250);
/// Recorded ranges fetched per lookup; more are fetched when these are used up.
const LOOKUP_LIMIT: usize = 10_000;
/// How often the retention job of `ship_batches` runs (first soon after start-up).
const RETENTION_INTERVAL: Duration = Duration::from_secs(3600);
/// Growth samples kept per file for `lag_seconds` (a scan adds at most one per 10 ms).
const MAX_GROWTH_SAMPLES: usize = 100_000;
const GROWTH_SAMPLE_SPACING: Duration = Duration::from_millis(10);
/// The smallest byte cap a timed-out insert shrinks the next batches to.
const MIN_CAP_BYTES: usize = 64 * 1024;
/// Batches past a checkpoint, confirmed or not: while the oldest waits (its host is down and
/// only that host can say whether it landed), up to this many more can go to other hosts.
/// A restart's lookup finds at most this many (each in at most 16 parts) past a checkpoint.
pub const MAX_WINDOW: usize = 64;
/// Once this many batches are past a checkpoint (the oldest is waiting for its host), new ones
/// are only sent full or after [`CROWDED_FLUSH`]: at the default 500 lines or 200 ms, a window
/// of small batches would fill within seconds of a shard going down, and the web server would
/// stop shipping anywhere until that shard is back.
const CROWDED: usize = MAX_WINDOW / 4;
const CROWDED_FLUSH: Duration = Duration::from_secs(5);
/// A timed-out batch is cut in two at most this many times (into at most 16 parts): past a
/// checkpoint there are then at most [`MAX_WINDOW`] × 16 recorded parts of a file, what the
/// retention job keeps of every file (`ch::RETENTION_KEEP_PER_FILE`).
pub const MAX_SPLIT_DEPTH: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    ClickHouse(#[from] ChError),
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
    #[error("dead-letter file {path}: {source}")]
    DeadLetter {
        path: String,
        source: std::io::Error,
    },
    #[error("clean-stop marker {path}: {source}")]
    Marker {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Exponential back-off: `initial`, doubling, at most `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            next: initial,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// What is shipped where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// mod_reqin_log's correlated log → `http_logs_raw`, `http_logs`.
    Logs,
    /// The detector's jsonl event files → `reqin_events`.
    Events,
}

impl Input {
    pub fn inbox(self) -> &'static str {
        match self {
            Self::Logs => INBOX_TABLE,
            Self::Events => EVENTS_INBOX_TABLE,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Logs => "log",
            Self::Events => "events",
        }
    }
}

/// The marker a clean stop leaves beside the checkpoint: the attempts whose outcome it could not
/// learn (none, usually). Its absence at start-up means the last run ended in a crash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CleanStop {
    pub uncertain: Vec<Uncertain>,
    /// Batches were left past a checkpoint (confirmed behind one that was not): the next start's
    /// lookup then needs every host; otherwise a host that is down may be passed over.
    #[serde(default)]
    pub pending: bool,
}

/// An attempt that may still land: the host it went to and its deadline (that host's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uncertain {
    pub url: String,
    pub deadline: u64,
}

pub fn marker_path(checkpoint_path: &Path) -> PathBuf {
    let mut name = checkpoint_path.file_name().unwrap_or_default().to_owned();
    name.push(".clean-stop");
    checkpoint_path.with_file_name(name)
}

/// Reads and removes the marker (durably: a crash of this run must not find it again). `None`
/// when there was none or it is unreadable (then the start waits as after a crash).
fn take_marker(path: &Path) -> Result<Option<CleanStop>, ShipError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ShipError::Marker {
                path: path.to_owned(),
                source,
            })
        }
    };
    let marker = serde_json::from_slice::<CleanStop>(&text)
        .map_err(|e| log::warn!("clean-stop marker {}: {e}; ignored", path.display()))
        .ok();
    let err = |source| ShipError::Marker {
        path: path.to_owned(),
        source,
    };
    std::fs::remove_file(path).map_err(err)?;
    sync_dir(path).map_err(err)?;
    Ok(marker)
}

fn write_marker(path: &Path, marker: &CleanStop) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let bytes = serde_json::to_vec(marker).map_err(std::io::Error::other)?;
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    File::open(dir)?.sync_all()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn batch_id(fingerprint: &str, start: u64, end: u64) -> String {
    format!("{fingerprint}:{start}-{end}")
}

/// One ClickHouse server of the list.
struct Host {
    url: String,
    state: Mutex<HostState>,
}

struct HostState {
    ch: Option<Ch>,
    /// Not chosen for new batches before this (it failed recently).
    down_until: Option<Instant>,
    backoff: Backoff,
}

/// What the batch tasks share with the loop.
struct Ctx {
    cfg: ShipConfig,
    hosts: Vec<Host>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    /// The byte cap of new batches: halved by a timed-out insert, doubled by a confirmed one,
    /// between [`MIN_CAP_BYTES`] and `max_batch_bytes`.
    cap_bytes: AtomicUsize,
    /// Signalled by every batch task that ends.
    done: Notify,
    /// One per batch that may be inserting at once (`max_in_flight`), taken for each attempt
    /// only: a batch waiting to learn whether its attempt landed (its host down or frozen) holds
    /// none, so the next batches go to the other hosts meanwhile.
    permits: Semaphore,
    /// Batches waiting for such an answer, per input (one stream each); they do not count
    /// against `max_in_flight`.
    in_doubt: [AtomicUsize; 2],
}

/// Counts a batch in doubt while it lives.
struct InDoubt<'a>(&'a AtomicUsize);

impl<'a> InDoubt<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for InDoubt<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn lock(m: &Mutex<HostState>) -> std::sync::MutexGuard<'_, HostState> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Ctx {
    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.cfg.retry.initial_ms),
            Duration::from_millis(self.cfg.retry.max_ms),
        )
    }

    /// Sleeps unless asked to stop; returns whether to stop.
    async fn pause(&self, d: Duration) -> bool {
        if self.stopping() {
            return true;
        }
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stopping(),
            _ = stop.changed() => true,
        }
    }

    async fn retry_pause(&self, backoff: &mut Backoff) -> bool {
        Metrics::add(&self.metrics.retries, 1);
        self.pause(backoff.next_delay()).await
    }

    /// A permit to insert (see [`Ctx::permits`]); None when asked to stop first.
    async fn permit(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        let mut stop = self.stop.clone();
        tokio::select! {
            p = self.permits.acquire() => p.ok(),
            _ = stop.wait_for(|s| *s) => None,
        }
    }

    /// The batches of `input`'s stream waiting to learn whether their attempt landed.
    fn in_doubt(&self, input: Input) -> &AtomicUsize {
        &self.in_doubt[input as usize]
    }

    fn url(&self, h: usize) -> &str {
        self.hosts.get(h).map_or("", |x| x.url.as_str())
    }

    /// The client of host `h`, connecting (and learning the server's version) when there is none.
    async fn client(&self, h: usize) -> Result<Ch, ChError> {
        let Some(host) = self.hosts.get(h) else {
            return Err(ChError::Answer {
                url: String::new(),
                what: "the host list",
                answer: format!("no host {h}"),
            });
        };
        if let Some(ch) = &lock(&host.state).ch {
            return Ok(ch.clone());
        }
        let ch = Ch::connect_to(&self.cfg.clickhouse, &host.url).await;
        let ch = self.result(h, ch)?;
        log::info!(
            "connected to ClickHouse {} at {} ({} server)",
            ch.version,
            ch.url(),
            ch.flavor.as_str()
        );
        lock(&host.state).ch = Some(ch.clone());
        Ok(ch)
    }

    fn result<T>(&self, h: usize, r: Result<T, ChError>) -> Result<T, ChError> {
        let Some(host) = self.hosts.get(h) else {
            return r;
        };
        let mut st = lock(&host.state);
        match &r {
            Ok(_) => {
                Metrics::set(&self.metrics.clickhouse_up, 1);
                st.down_until = None;
                st.backoff.reset();
            }
            Err(_) => {
                Metrics::set(&self.metrics.clickhouse_up, 0);
                Metrics::add(&self.metrics.insert_errors, 1);
                // Reconnect next time: the server may have been restarted or upgraded, and its
                // version decides the client's set-up.
                st.ch = None;
                let d = st.backoff.next_delay();
                st.down_until = Some(Instant::now() + d);
            }
        }
        r
    }

    /// The first host of the list not known to be down; when all are, the one that comes back
    /// soonest.
    fn pick_host(&self) -> usize {
        let now = Instant::now();
        let mut soonest = (0, None::<Instant>);
        for (i, host) in self.hosts.iter().enumerate() {
            match lock(&host.state).down_until {
                None => return i,
                Some(t) if t <= now => return i,
                Some(t) => {
                    if soonest.1.is_none_or(|s| t < s) {
                        soonest = (i, Some(t));
                    }
                }
            }
        }
        soonest.0
    }

    /// Waits until host `h`'s clock is past `deadline`; false when asked to stop.
    async fn wait_server_past(&self, h: usize, deadline: u64) -> Result<bool, ChError> {
        loop {
            let ch = self.client(h).await?;
            let now = self.result(h, ch.server_now().await)?;
            if now > deadline {
                return Ok(true);
            }
            if self.pause(CLOCK_POLL).await {
                return Ok(false);
            }
        }
    }

    /// Whether the batch `id` is recorded on host `h`, asked once no attempt with `deadline` can
    /// still land there: its clock is past it and no query with this id runs. `None` when asked
    /// to stop.
    async fn already_in(&self, h: usize, id: &str, deadline: u64) -> Result<Option<bool>, ChError> {
        if !self.wait_server_past(h, deadline).await? {
            return Ok(None);
        }
        let ch = self.client(h).await?;
        // An attempt that started before its deadline must finish before its result can be read.
        while self.result(h, ch.query_running(id).await)? {
            if self.pause(self.cfg.flush_interval()).await {
                return Ok(None);
            }
        }
        self.result(h, ch.batch_recorded(id).await).map(Some)
    }

    fn shrink_cap(&self) {
        let cap = self.cap_bytes.load(Ordering::Relaxed);
        self.cap_bytes
            .store((cap / 2).max(MIN_CAP_BYTES), Ordering::Relaxed);
    }

    fn grow_cap(&self) {
        let cap = self.cap_bytes.load(Ordering::Relaxed);
        self.cap_bytes.store(
            cap.saturating_mul(2)
                .min(self.cfg.clickhouse.max_batch_bytes),
            Ordering::Relaxed,
        );
    }
}

/// How a batch (or a part of one) ended.
#[derive(Debug)]
enum Outcome {
    /// Inserted (`rows`), or found recorded (`already`).
    Confirmed { rows: u64, already: bool },
    /// Asked to stop first; these attempts may still land.
    Stopped { uncertain: Vec<Uncertain> },
}

enum PartOutcome {
    Done(Outcome),
    /// Timed out, then known not to have landed: cut it in two.
    Split,
}

/// A batch read and encoded on a blocking thread.
struct Prepared {
    file: LogFile,
    start: u64,
    block: Block,
    id: String,
    body: Body,
    dead: Vec<usize>,
}

/// A batch's lines encoded on a blocking thread (in the batch's task, while the batch before it
/// is being inserted).
async fn prepare(file: LogFile, start: u64, block: Block) -> Option<Prepared> {
    tokio::task::spawn_blocking(move || {
        let id = batch_id(&file.fingerprint, start, block.end);
        let (body, dead) = encode::encode(&block, &id);
        Prepared {
            file,
            start,
            block,
            id,
            body,
            dead,
        }
    })
    .await
    .ok()
}

/// One batch of the pipeline, in the order of its range.
struct Job {
    fingerprint: String,
    end: u64,
    bytes: u64,
    task: Option<JoinHandle<Outcome>>,
    outcome: Option<Outcome>,
}

/// Where the next batch of one verified file starts, and what is already recorded past it.
struct Cursor {
    next: u64,
    /// Recorded ranges past the checkpoint (from the start-up lookup), by start.
    landed: VecDeque<(u64, u64)>,
    /// The lookup returned its limit: look again when `landed` is used up.
    more_landed: bool,
}

/// One input glob with its checkpoint and its batches in flight.
struct Stream {
    input: Input,
    pattern: String,
    checkpoint_path: PathBuf,
    cp: Checkpoint,
    files: Vec<LogFile>,
    cursors: HashMap<String, Cursor>,
    jobs: VecDeque<Job>,
    /// When unsent complete lines were first seen and left for more to come.
    pending_since: Option<Instant>,
    /// Per file: (when, size) each time a scan saw it grow, for `lag_seconds`.
    growth: HashMap<String, VecDeque<(Instant, u64)>>,
    dirty: bool,
}

impl Stream {
    fn new(input: Input, pattern: &str, checkpoint_path: &Path) -> Result<Self, ShipError> {
        Ok(Self {
            input,
            pattern: pattern.to_owned(),
            checkpoint_path: checkpoint_path.to_owned(),
            cp: Checkpoint::load(checkpoint_path)?,
            files: Vec::new(),
            cursors: HashMap::new(),
            jobs: VecDeque::new(),
            pending_since: None,
            growth: HashMap::new(),
            dirty: false,
        })
    }

    fn offset(&self, fingerprint: &str) -> u64 {
        self.cp.file(fingerprint).map_or(0, |s| s.offset)
    }

    /// Scans the glob; updates the checkpoint's view of the files (in memory) and the growth
    /// samples. Returns (unshipped bytes, age of the oldest unshipped byte).
    fn scan(&mut self) -> (u64, Duration) {
        self.files = follow::scan(&self.pattern);
        let now = now_unix();
        let instant = Instant::now();
        let mut lag_bytes = 0u64;
        let mut lag = Duration::ZERO;
        for f in &self.files {
            let offset = match self.cp.file_mut(&f.fingerprint) {
                Some(st) => {
                    st.seen_unix = now;
                    if f.size < st.offset {
                        // Same first line, shorter than what we shipped: the copy a
                        // `copytruncate` made before the last lines reached the original (which
                        // we shipped from the original). Nothing in it is new.
                        log::debug!(
                            "{} is a shorter copy of a file shipped up to {}: nothing new in it",
                            f.path.display(),
                            st.offset
                        );
                        continue;
                    }
                    st.dev = f.dev;
                    st.ino = f.ino;
                    st.path = f.path.clone();
                    st.offset
                }
                None => {
                    self.cp.files.push(FileState {
                        fingerprint: f.fingerprint.clone(),
                        dev: f.dev,
                        ino: f.ino,
                        offset: 0,
                        path: f.path.clone(),
                        seen_unix: now,
                    });
                    0
                }
            };
            // The unshipped tail may be a partial line; it is lag all the same.
            lag_bytes += f.size - offset;
            let samples = self.growth.entry(f.fingerprint.clone()).or_default();
            match samples.back_mut() {
                Some(last) if last.1 >= f.size => {}
                // Bytes seen within a few ms of the last sample count as seen then.
                Some(last) if instant.duration_since(last.0) < GROWTH_SAMPLE_SPACING => {
                    last.1 = f.size;
                }
                _ => {
                    samples.push_back((instant, f.size));
                    if samples.len() > MAX_GROWTH_SAMPLES {
                        samples.pop_front();
                    }
                }
            }
            // A sample (t, size): the file had `size` bytes at t. The oldest unshipped byte
            // (offset + 1) was first seen at the first sample larger than the offset.
            while samples.len() > 1 && samples.front().is_some_and(|s| s.1 <= offset) {
                samples.pop_front();
            }
            if f.size > offset {
                if let Some(&(t, _)) = samples.front() {
                    lag = lag.max(instant.duration_since(t));
                }
            }
        }
        let live: HashSet<&str> = self.files.iter().map(|f| f.fingerprint.as_str()).collect();
        self.growth.retain(|fp, _| live.contains(fp.as_str()));
        self.cp.prune();
        (lag_bytes, lag)
    }
}

pub struct Shipper {
    ctx: Arc<Ctx>,
    streams: Vec<Stream>,
    stop: watch::Receiver<bool>,
    marker_path: PathBuf,
    /// The previous run's clean-stop marker (taken at start-up), if it left one.
    marker: Option<CleanStop>,
    /// The same, kept for the whole run (the start-up lookups of files seen later).
    last_stop: Option<CleanStop>,
    /// Deadlines a stop during the start-up wait leaves to the next start (`None`: unknown, so
    /// no clean-stop marker is written).
    owed: Option<Vec<Uncertain>>,
    started: Instant,
    retention: Option<(Instant, Option<JoinHandle<()>>)>,
}

impl Shipper {
    pub fn new(
        cfg: ShipConfig,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, ShipError> {
        let mut streams = vec![Stream::new(
            Input::Logs,
            &cfg.input.path,
            &cfg.checkpoint_path,
        )?];
        if !cfg.events.path.is_empty() {
            streams.push(Stream::new(
                Input::Events,
                &cfg.events.path,
                &cfg.events.checkpoint_path,
            )?);
        }
        let marker_path = marker_path(&cfg.checkpoint_path);
        let marker = take_marker(&marker_path)?;
        let backoff = Backoff::new(
            Duration::from_millis(cfg.retry.initial_ms),
            Duration::from_millis(cfg.retry.max_ms),
        );
        let hosts = cfg
            .host_urls()
            .into_iter()
            .map(|url| Host {
                url,
                state: Mutex::new(HostState {
                    ch: None,
                    down_until: None,
                    backoff: backoff.clone(),
                }),
            })
            .collect();
        let cfg_in_flight = cfg.clickhouse.max_in_flight;
        let ctx = Arc::new(Ctx {
            cap_bytes: AtomicUsize::new(cfg.clickhouse.max_batch_bytes),
            cfg,
            hosts,
            metrics,
            stop: stop.clone(),
            done: Notify::new(),
            permits: Semaphore::new(cfg_in_flight),
            in_doubt: [AtomicUsize::new(0), AtomicUsize::new(0)],
        });
        Ok(Self {
            ctx,
            streams,
            stop,
            marker_path,
            last_stop: marker.clone(),
            owed: Some(Vec::new()),
            marker,
            started: Instant::now(),
            retention: None,
        })
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Runs until asked to stop. Only start-up problems are errors; everything after is retried.
    pub async fn run(mut self) -> Result<(), ShipError> {
        let log_every = Duration::from_secs(self.ctx.cfg.metrics.log_interval_s);
        let mut last_log = Instant::now();
        if self.settle().await {
            loop {
                if self.stopping() {
                    break;
                }
                if !log_every.is_zero() && last_log.elapsed() >= log_every {
                    log::info!("ship metrics: {}", self.ctx.metrics.summary());
                    last_log = Instant::now();
                }
                self.retention_tick();
                self.track();
                if !self.harvest(false).await {
                    break;
                }
                let mut wake = self.ctx.cfg.flush_interval();
                for s in 0..self.streams.len() {
                    if let Some(d) = self.launch(s).await {
                        wake = wake.min(d);
                    }
                }
                let mut stop = self.stop.clone();
                tokio::select! {
                    _ = self.ctx.done.notified() => {}
                    _ = tokio::time::sleep(wake) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        self.finish().await;
        log::info!("stopping; ship metrics: {}", self.ctx.metrics.summary());
        Ok(())
    }

    /// Before anything is looked up: waits until no attempt of the previous run can still land.
    /// After a clean stop, only the attempts its marker names; after a crash, any it could have
    /// made (its deadlines are at most ours at start-up), on every host at once. A host that
    /// refuses connections holds no attempt (a request waiting in a server's buffers dies with
    /// it). False when asked to stop.
    async fn settle(&mut self) -> bool {
        let marker = self.marker.clone();
        match &marker {
            Some(m) if m.uncertain.is_empty() => {
                log::info!("the last run stopped cleanly: starting at once");
                return true;
            }
            Some(m) => log::info!(
                "the last run stopped cleanly with {} insert(s) of unknown outcome: waiting for their deadlines",
                m.uncertain.len()
            ),
            None => log::info!(
                "no clean-stop marker (first run, or the last one crashed): waiting until any insert it left in flight has expired"
            ),
        }
        let since_start = self.started.elapsed().as_secs();
        let tasks: Vec<JoinHandle<Settled>> = (0..self.ctx.hosts.len())
            .map(|h| {
                let ctx = self.ctx.clone();
                let named = marker.as_ref().map(|m| {
                    m.uncertain
                        .iter()
                        .filter(|u| u.url == ctx.url(h))
                        .map(|u| u.deadline)
                        .max()
                });
                tokio::spawn(async move { settle_host(&ctx, h, named, since_start).await })
            })
            .collect();
        let mut settled = true;
        for (h, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap_or(Settled::Unknown) {
                Settled::Yes => {}
                // Stopped first: what was waited for is still owed by the next start.
                Settled::StoppedBefore(deadline) => {
                    settled = false;
                    if let Some(owed) = &mut self.owed {
                        owed.push(Uncertain {
                            url: self.ctx.url(h).to_owned(),
                            deadline,
                        });
                    }
                }
                Settled::Unknown => {
                    settled = false;
                    self.owed = None;
                }
            }
        }
        settled && !self.stopping()
    }

    /// Scans every input; sets the lag gauges.
    fn track(&mut self) {
        let mut lag_bytes = 0;
        let mut lag = Duration::ZERO;
        let mut files = 0;
        for s in &mut self.streams {
            let (b, l) = s.scan();
            lag_bytes += b;
            lag = lag.max(l);
            files += s.files.len() as u64;
        }
        let m = &self.ctx.metrics;
        Metrics::set(&m.lag_bytes, lag_bytes);
        Metrics::set(&m.files_followed, files);
        Metrics::set(
            &m.lag_ms,
            if lag_bytes == 0 {
                0
            } else {
                u64::try_from(lag.as_millis()).unwrap_or(u64::MAX)
            },
        );
        let in_flight = self
            .streams
            .iter()
            .map(|s| s.jobs.iter().filter(|j| j.task.is_some()).count() as u64)
            .sum();
        Metrics::set(&m.in_flight, in_flight);
    }

    /// Collects ended batches, moves each checkpoint over its confirmed prefix and saves it.
    /// With `all`, waits for every batch in flight. False when a save was interrupted by a stop.
    async fn harvest(&mut self, all: bool) -> bool {
        let mut ok = true;
        for s in 0..self.streams.len() {
            for job in self.streams[s].jobs.iter_mut() {
                let finished = job.task.as_ref().is_some_and(|t| t.is_finished());
                if finished || (all && job.task.is_some()) {
                    if let Some(task) = job.task.take() {
                        job.outcome = Some(match task.await {
                            Ok(o) => o,
                            Err(e) => {
                                log::error!("batch task failed: {e}");
                                Outcome::Stopped {
                                    uncertain: Vec::new(),
                                }
                            }
                        });
                    }
                }
            }
            let stream = &mut self.streams[s];
            while let Some(Outcome::Confirmed { rows, already }) =
                stream.jobs.front().and_then(|j| j.outcome.as_ref())
            {
                let (rows, already) = (*rows, *already);
                let Some(job) = stream.jobs.pop_front() else {
                    break;
                };
                if let Some(st) = stream.cp.file_mut(&job.fingerprint) {
                    st.offset = st.offset.max(job.end);
                }
                stream.dirty = true;
                let m = &self.ctx.metrics;
                Metrics::add(&m.rows_shipped, rows);
                if stream.input == Input::Events {
                    Metrics::add(&m.event_rows_shipped, rows);
                }
                if !already {
                    Metrics::add(&m.batches_shipped, 1);
                }
                Metrics::add(&m.bytes_shipped, job.bytes);
            }
            if self.streams[s].dirty && !self.save_checkpoint(s).await {
                ok = false;
            }
        }
        ok
    }

    /// Saves a stream's checkpoint (on a blocking thread), retrying with back-off (a full disk
    /// is reported and waited out). False when asked to stop first.
    async fn save_checkpoint(&mut self, s: usize) -> bool {
        let mut backoff = self.ctx.backoff();
        loop {
            let stream = &self.streams[s];
            let cp = stream.cp.clone();
            let path = stream.checkpoint_path.clone();
            let t = Instant::now();
            let r = tokio::task::spawn_blocking(move || cp.save(&path)).await;
            Metrics::add_time(&self.ctx.metrics.checkpoint_us, t.elapsed());
            let err = match r {
                Ok(Ok(())) => {
                    self.streams[s].dirty = false;
                    return true;
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            log::error!("{err}; retrying");
            Metrics::add(&self.ctx.metrics.checkpoint_errors, 1);
            if self.ctx.retry_pause(&mut backoff).await {
                return false;
            }
        }
    }

    /// Starts batches of stream `s` while it has room in flight (and in the unconfirmed
    /// window) and lines to send. Returns when to look again if lines were left to gather more.
    async fn launch(&mut self, s: usize) -> Option<Duration> {
        let max_in_flight = self.ctx.cfg.clickhouse.max_in_flight;
        // One more than may be inserting: the next batch is read and encoded meanwhile. Batches
        // in doubt (waiting for a host that cannot answer yet) are not inserting.
        let running = |st: &Stream, ctx: &Ctx| {
            st.jobs
                .iter()
                .filter(|j| j.task.as_ref().is_some_and(|t| !t.is_finished()))
                .count()
                .saturating_sub(ctx.in_doubt(st.input).load(Ordering::Relaxed))
        };
        while running(&self.streams[s], &self.ctx) <= max_in_flight
            && self.streams[s].jobs.len() < MAX_WINDOW
            && !self.stopping()
        {
            match self.next_job(s).await {
                Next::Launched => {}
                Next::Wait(d) => return Some(d),
                Next::Nothing => return None,
            }
        }
        None
    }

    /// The next batch of stream `s`: from the oldest file with unsent complete lines.
    async fn next_job(&mut self, s: usize) -> Next {
        let files = self.streams[s].files.clone();
        let newest = files.last().map(|f| f.fingerprint.clone());
        for f in files {
            if !self.streams[s].cursors.contains_key(&f.fingerprint) {
                let from = self.streams[s].offset(&f.fingerprint);
                match self.verify(s, &f, from).await {
                    Ok(true) => {}
                    Ok(false) => return Next::Nothing,
                    Err(e) => {
                        log::warn!("checking {} against ClickHouse: {e}", f.path.display());
                        return Next::Wait(Duration::from_millis(
                            self.ctx.cfg.retry.max_ms.min(1000),
                        ));
                    }
                }
            }
            let stream = &mut self.streams[s];
            let Some(cur) = stream.cursors.get_mut(&f.fingerprint) else {
                continue;
            };
            if f.size <= cur.next {
                continue;
            }
            while cur.landed.front().is_some_and(|r| r.1 <= cur.next) {
                cur.landed.pop_front();
            }
            if let Some(&(start, end)) = cur.landed.front() {
                if start <= cur.next {
                    log::info!(
                        "{}: bytes {}..{end} are already in ClickHouse (shipped before a restart): skipping them",
                        f.path.display(),
                        cur.next
                    );
                    Metrics::add(&self.ctx.metrics.batches_already_in_clickhouse, 1);
                    stream.jobs.push_back(Job {
                        fingerprint: f.fingerprint.clone(),
                        end,
                        bytes: end - cur.next,
                        task: None,
                        outcome: Some(Outcome::Confirmed {
                            rows: 0,
                            already: true,
                        }),
                    });
                    cur.next = end;
                    cur.landed.pop_front();
                    return Next::Launched;
                }
            }
            if cur.landed.is_empty() && cur.more_landed {
                // Used up what the lookup returned: look again from here.
                let from = cur.next;
                return match self.verify(s, &f, from).await {
                    Ok(true) => Next::Launched,
                    Ok(false) => Next::Nothing,
                    Err(e) => {
                        log::warn!("checking {} against ClickHouse: {e}", f.path.display());
                        Next::Wait(Duration::from_millis(self.ctx.cfg.retry.max_ms.min(1000)))
                    }
                };
            }
            let end_limit = cur.landed.front().map(|r| r.0);
            let start = cur.next;
            let cfg = &self.ctx.cfg.clickhouse;
            let limits = ReadLimits {
                max_lines: cfg.max_batch_rows,
                max_bytes: self.ctx.cap_bytes.load(Ordering::Relaxed),
                end: end_limit,
            };
            let t = Instant::now();
            let file = f.clone();
            let read =
                tokio::task::spawn_blocking(move || follow::read_block(&file, start, limits)).await;
            Metrics::add_time(&self.ctx.metrics.prepare_us, t.elapsed());
            let block = match read {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    // Rotated between scan and read: the next scan finds it again.
                    log::debug!("{e}");
                    continue;
                }
                Err(e) => {
                    log::error!("reading {}: {e}", f.path.display());
                    continue;
                }
            };
            log::debug!(
                "{}: {} lines from {start} read in {:?}",
                f.path.display(),
                block.len(),
                t.elapsed()
            );
            if block.is_empty() {
                continue;
            }
            let stream = &mut self.streams[s];
            let waited = stream.pending_since.map_or(Duration::ZERO, |t| t.elapsed());
            let crowded = stream.jobs.len() >= CROWDED;
            let (min_lines, flush) = if crowded {
                (
                    limits.max_lines,
                    self.ctx.cfg.flush_interval().max(CROWDED_FLUSH),
                )
            } else {
                (cfg.batch_size, self.ctx.cfg.flush_interval())
            };
            let full = block.len() >= min_lines
                || block.len() >= limits.max_lines
                || block.data.len() >= limits.max_bytes
                || Some(block.end) == end_limit
                || newest.as_deref() != Some(f.fingerprint.as_str());
            if !full && waited < flush {
                stream.pending_since.get_or_insert_with(Instant::now);
                return Next::Wait(flush - waited);
            }
            stream.pending_since = None;
            Metrics::set(&self.ctx.metrics.last_batch_rows, block.len() as u64);
            if let Some(cur) = stream.cursors.get_mut(&f.fingerprint) {
                cur.next = block.end;
            }
            let end = block.end;
            let ctx = self.ctx.clone();
            let input = stream.input;
            let file = f.clone();
            let task = tokio::spawn(async move {
                let outcome = ship_batch(&ctx, input, file, start, block).await;
                ctx.done.notify_one();
                outcome
            });
            stream.jobs.push_back(Job {
                fingerprint: f.fingerprint.clone(),
                end,
                bytes: end - start,
                task: Some(task),
                outcome: None,
            });
            return Next::Launched;
        }
        Next::Nothing
    }

    /// Before the first batch of a file: the recorded ranges that end past `offset` (its
    /// checkpoint), from every host (a batch may have gone to any of them). False when asked to
    /// stop.
    async fn verify(&mut self, s: usize, f: &LogFile, offset: u64) -> Result<bool, ChError> {
        let prefix = format!("{}:", f.fingerprint);
        let mut landed = Vec::new();
        let mut more = false;
        for h in 0..self.ctx.hosts.len() {
            let ch = match self.ctx.client(h).await {
                Ok(ch) => ch,
                Err(e) if e.never_sent() && self.may_pass_over(h) => {
                    log::warn!(
                        "{}: {} is down; the last run stopped cleanly with nothing left there past a checkpoint, so it is not asked",
                        f.path.display(),
                        self.ctx.url(h)
                    );
                    continue;
                }
                Err(e) => return Err(e),
            };
            while self
                .ctx
                .result(h, ch.query_running_with_prefix(&prefix).await)?
            {
                if self.ctx.pause(self.ctx.cfg.flush_interval()).await {
                    return Ok(false);
                }
            }
            let ranges = self.ctx.result(
                h,
                ch.landed_ranges(&f.fingerprint, offset, LOOKUP_LIMIT).await,
            )?;
            more |= ranges.len() >= LOOKUP_LIMIT;
            landed.extend(ranges);
        }
        landed.sort_unstable();
        landed.dedup();
        if !landed.is_empty() {
            log::info!(
                "{}: {} batch(es) past the checkpoint ({offset}) are already in ClickHouse",
                f.path.display(),
                landed.len()
            );
        }
        self.streams[s].cursors.insert(
            f.fingerprint.clone(),
            Cursor {
                next: offset,
                landed: landed.into(),
                more_landed: more,
            },
        );
        Ok(true)
    }

    /// Whether the start-up lookup may go without host `h` while it is down: only after a clean
    /// stop that left no batch past a checkpoint and no attempt of unknown outcome there.
    fn may_pass_over(&self, h: usize) -> bool {
        self.last_stop
            .as_ref()
            .is_some_and(|m| !m.pending && !m.uncertain.iter().any(|u| u.url == self.ctx.url(h)))
    }

    /// Starts the retention job of `ship_batches` on every host, soon after start-up and then
    /// every [`RETENTION_INTERVAL`], one at a time.
    fn retention_tick(&mut self) {
        let days = self.ctx.cfg.clickhouse.batch_retention_days;
        if days == 0 {
            return;
        }
        if let Some((at, task)) = &self.retention {
            if at.elapsed() < RETENTION_INTERVAL || task.as_ref().is_some_and(|t| !t.is_finished())
            {
                return;
            }
        }
        let ctx = self.ctx.clone();
        let task = tokio::spawn(async move {
            for h in 0..ctx.hosts.len() {
                let r = match ctx.client(h).await {
                    Ok(ch) => ch.prune_batches(days, RETENTION_KEEP_PER_FILE).await,
                    Err(e) => Err(e),
                };
                match r {
                    Ok(true) => {
                        Metrics::add(&ctx.metrics.retention_runs, 1);
                        log::info!(
                            "{}: deleting ship_batches records older than {days} days (the newest {RETENTION_KEEP_PER_FILE} of each file are kept)",
                            ctx.url(h)
                        );
                    }
                    Ok(false) => {}
                    Err(e) => log::warn!("ship_batches retention on {}: {e}", ctx.url(h)),
                }
            }
        });
        self.retention = Some((Instant::now(), Some(task)));
    }

    /// After a stop: lets the batches in flight end their attempts, saves the checkpoints and,
    /// when everything is saved, leaves the clean-stop marker naming any attempt of unknown
    /// outcome.
    async fn finish(&mut self) {
        let saved = self.harvest(true).await && self.final_saves().await;
        let Some(owed) = self.owed.clone() else {
            log::warn!("stopped before the start-up wait knew its deadlines: no clean-stop marker, the next start waits as after a crash");
            return;
        };
        // A file this run did not look up still has whatever the previous run left past its
        // checkpoint (anything, after a crash).
        let unexamined = self.streams.iter().any(|s| {
            s.files
                .iter()
                .any(|f| !s.cursors.contains_key(&f.fingerprint))
        });
        let mut marker = CleanStop {
            uncertain: owed,
            pending: unexamined && self.last_stop.as_ref().is_none_or(|m| m.pending),
        };
        for s in &self.streams {
            marker.pending |= !s.jobs.is_empty();
            for job in &s.jobs {
                if let Some(Outcome::Stopped { uncertain }) = &job.outcome {
                    marker.uncertain.extend(uncertain.iter().cloned());
                }
            }
        }
        if !saved {
            log::warn!("checkpoint not saved at stop: the next start waits as after a crash");
            return;
        }
        match write_marker(&self.marker_path, &marker) {
            Ok(()) => log::info!(
                "clean stop: marker {} written ({} insert(s) of unknown outcome)",
                self.marker_path.display(),
                marker.uncertain.len()
            ),
            Err(e) => log::warn!(
                "clean-stop marker {}: {e}; the next start waits as after a crash",
                self.marker_path.display()
            ),
        }
    }

    /// One more attempt at every unsaved checkpoint (the stop ended the retries).
    async fn final_saves(&mut self) -> bool {
        let mut ok = true;
        for s in &mut self.streams {
            if s.dirty {
                match s.cp.save(&s.checkpoint_path) {
                    Ok(()) => s.dirty = false,
                    Err(e) => {
                        log::error!("{e}");
                        ok = false;
                    }
                }
            }
        }
        ok
    }
}

/// How [`settle_host`] ended.
enum Settled {
    Yes,
    /// Asked to stop while waiting for this deadline.
    StoppedBefore(u64),
    /// Asked to stop before the deadline was known.
    Unknown,
}

/// [`Shipper::settle`] for host `h`: `named` is the marker's deadline for it (`Some(None)`: the
/// marker names none), `None` without a marker.
async fn settle_host(ctx: &Ctx, h: usize, named: Option<Option<u64>>, since_start: u64) -> Settled {
    let mut backoff = ctx.backoff();
    let mut deadline = match named {
        Some(None) => return Settled::Yes,
        Some(Some(d)) => Some(d),
        None => None,
    };
    let stopped = |d: Option<u64>| d.map_or(Settled::Unknown, Settled::StoppedBefore);
    loop {
        let ch = match ctx.client(h).await {
            Ok(ch) => ch,
            Err(e) if e.never_sent() => {
                log::info!("{}: down, so no earlier insert can land there", ctx.url(h));
                return Settled::Yes;
            }
            Err(e) => {
                log::warn!("{e}; retrying");
                if ctx.retry_pause(&mut backoff).await {
                    return stopped(deadline);
                }
                continue;
            }
        };
        let d = *deadline.get_or_insert_with(|| ch.attempt_deadline().saturating_sub(since_start));
        match ctx.wait_server_past(h, d).await {
            Ok(true) => return Settled::Yes,
            Ok(false) => return Settled::StoppedBefore(d),
            Err(e) if e.never_sent() => return Settled::Yes,
            Err(e) => {
                log::warn!("{e}; retrying");
                if ctx.retry_pause(&mut backoff).await {
                    return Settled::StoppedBefore(d);
                }
            }
        }
    }
}

enum Next {
    Launched,
    Wait(Duration),
    Nothing,
}

/// Ships one prepared batch to the end: dead letters first, then the rows (cut in two when a
/// timed-out part is known not to have landed).
async fn ship_batch(ctx: &Ctx, input: Input, file: LogFile, start: u64, block: Block) -> Outcome {
    let t = Instant::now();
    let Some(p) = prepare(file, start, block).await else {
        return Outcome::Stopped {
            uncertain: Vec::new(),
        };
    };
    Metrics::add_time(&ctx.metrics.prepare_us, t.elapsed());
    // 1. Dead letters first: a line is either in ClickHouse or in this file once the checkpoint
    // moves past it. (A crash here may write them twice; each carries its batch id.)
    if !p.dead.is_empty() {
        let mut backoff = ctx.backoff();
        loop {
            match write_dead_letters(&ctx.cfg.dead_letter_path, &p, &p.dead) {
                Ok(()) => break,
                Err(e) => {
                    log::error!("{e}; retrying");
                    Metrics::add(&ctx.metrics.dead_letter_errors, 1);
                    if ctx.retry_pause(&mut backoff).await {
                        return Outcome::Stopped {
                            uncertain: Vec::new(),
                        };
                    }
                }
            }
        }
        Metrics::add(&ctx.metrics.dead_letters, p.dead.len() as u64);
    }
    // 2. The rows, as one part or, after timeouts, several: (file start, file end, depth, id,
    // rows). Each attempt waits for its turn (at most `max_in_flight` are being inserted; the
    // next batch is prepared meanwhile). The lines themselves are dropped: the body holds the
    // rows once.
    let (start, end, all_dead) = (p.start, p.block.end, p.dead.len() == p.block.len());
    drop(p.block);
    let mut parts: VecDeque<(u64, u64, u32, String, Body)> = VecDeque::new();
    if p.body.rows() > 0 {
        parts.push_back((start, end, 0, p.id.clone(), p.body));
    }
    let mut rows = 0u64;
    let mut already = true;
    while let Some((from, to, depth, id, mut body)) = parts.pop_front() {
        let splittable = body.rows() > 1 && depth < MAX_SPLIT_DEPTH;
        match ship_part(ctx, input, &id, &mut body, splittable).await {
            PartOutcome::Done(Outcome::Confirmed {
                rows: n,
                already: was_there,
            }) => {
                rows += n;
                already &= was_there;
                ctx.grow_cap();
            }
            PartOutcome::Done(stopped) => return stopped,
            PartOutcome::Split => {
                let mid = body.rows() / 2;
                let Some(cut) = body.offset(mid) else {
                    return Outcome::Stopped {
                        uncertain: Vec::new(),
                    };
                };
                let fp = p.file.fingerprint.clone();
                let halves = tokio::task::spawn_blocking(move || {
                    let n = body.rows();
                    [(0, mid, from, cut), (mid, n, cut, to)].map(|(lo, hi, a, z)| {
                        let id = batch_id(&fp, a, z);
                        let sub = body.sub(lo, hi, &id);
                        (a, z, depth + 1, id, sub)
                    })
                })
                .await;
                let Ok([first, second]) = halves else {
                    return Outcome::Stopped {
                        uncertain: Vec::new(),
                    };
                };
                log::info!(
                    "batch {id} timed out and is not in ClickHouse: sending it as {} and {}",
                    first.3,
                    second.3
                );
                Metrics::add(&ctx.metrics.batches_split, 1);
                parts.push_front(second);
                parts.push_front(first);
            }
        }
    }
    Outcome::Confirmed {
        rows,
        already: already && !all_dead,
    }
}

/// Inserts one part until confirmed, checking first whenever an earlier attempt may have landed.
async fn ship_part(
    ctx: &Ctx,
    input: Input,
    id: &str,
    body: &mut Body,
    splittable: bool,
) -> PartOutcome {
    let mut backoff = ctx.backoff();
    // The host and deadline of the last attempt whose outcome is unknown.
    let mut uncertain: Option<(usize, u64)> = None;
    let mut timed_out = false;
    let stopped = |u: Option<(usize, u64)>| {
        PartOutcome::Done(Outcome::Stopped {
            uncertain: u
                .map(|(h, deadline)| Uncertain {
                    url: ctx.url(h).to_owned(),
                    deadline,
                })
                .into_iter()
                .collect(),
        })
    };
    loop {
        if let Some((h, deadline)) = uncertain {
            let _doubt = InDoubt::new(ctx.in_doubt(input));
            match ctx.already_in(h, id, deadline).await {
                Ok(Some(true)) => {
                    log::info!("batch {id} is already in ClickHouse: not sending it again");
                    Metrics::add(&ctx.metrics.batches_already_in_clickhouse, 1);
                    return PartOutcome::Done(Outcome::Confirmed {
                        rows: 0,
                        already: true,
                    });
                }
                Ok(Some(false)) => {
                    uncertain = None;
                    if timed_out && splittable {
                        return PartOutcome::Split;
                    }
                }
                // Asked to stop mid-check: never send unchecked.
                Ok(None) => return stopped(uncertain),
                Err(e) => {
                    log::warn!("checking batch {id} on {}: {e}; retrying", ctx.url(h));
                    if ctx.retry_pause(&mut backoff).await {
                        return stopped(uncertain);
                    }
                    continue;
                }
            }
        }
        if ctx.stopping() {
            return stopped(None);
        }
        let Some(permit) = ctx.permit().await else {
            return stopped(None);
        };
        let h = ctx.pick_host();
        let ch = match ctx.client(h).await {
            Ok(ch) => ch,
            Err(e) => {
                drop(permit);
                log::warn!("{e}; retrying");
                if ctx.retry_pause(&mut backoff).await {
                    return stopped(None);
                }
                continue;
            }
        };
        if h > 0 {
            Metrics::add(&ctx.metrics.failovers, 1);
        }
        let deadline = ch.attempt_deadline();
        body.set_deadline(u32::try_from(deadline).unwrap_or(u32::MAX));
        // From here on the attempt may land (until its deadline).
        uncertain = Some((h, deadline));
        let t = Instant::now();
        let r = ch.insert_rows(input.inbox(), id, body.chunks()).await;
        drop(permit);
        Metrics::add_time(&ctx.metrics.insert_us, t.elapsed());
        match ctx.result(h, r) {
            Ok(()) => {
                log::debug!(
                    "batch {id}: {} rows ({} bytes) inserted into {} in {:?}",
                    body.rows(),
                    body.len(),
                    ctx.url(h),
                    t.elapsed()
                );
                return PartOutcome::Done(Outcome::Confirmed {
                    rows: body.rows() as u64,
                    already: false,
                });
            }
            Err(e) => {
                timed_out = e.is_timeout();
                if e.never_sent() {
                    uncertain = None;
                }
                if timed_out {
                    ctx.shrink_cap();
                }
                log::warn!("inserting batch {id} into {}: {e}; retrying", ctx.url(h));
                if ctx.retry_pause(&mut backoff).await {
                    return stopped(uncertain);
                }
            }
        }
    }
}

fn write_dead_letters(path: &Path, p: &Prepared, dead: &[usize]) -> Result<(), ShipError> {
    let err = |source| ShipError::DeadLetter {
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for &i in dead {
        let Some(line) = p.block.lines.get(i) else {
            continue;
        };
        let mut obj = Map::new();
        obj.insert("batch_id".into(), p.id.clone().into());
        obj.insert("file".into(), p.file.path.display().to_string().into());
        obj.insert("offset".into(), line.offset.into());
        obj.insert("overlong".into(), line.overlong.into());
        obj.insert(
            "line".into(),
            String::from_utf8_lossy(p.block.line(i)).into_owned().into(),
        );
        serde_json::to_writer(&mut out, &obj).map_err(|e| err(std::io::Error::other(e)))?;
        out.push(b'\n');
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(err)?;
    f.write_all(&out).map_err(err)?;
    f.sync_data().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let d: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(d, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn marker_is_taken_once_and_survives_a_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = marker_path(&dir.path().join("ship.checkpoint"));
        assert_eq!(path.file_name().unwrap(), "ship.checkpoint.clean-stop");
        assert_eq!(take_marker(&path).unwrap(), None);
        let m = CleanStop {
            uncertain: vec![Uncertain {
                url: "http://h:8123".into(),
                deadline: 7,
            }],
            pending: true,
        };
        write_marker(&path, &m).unwrap();
        assert_eq!(take_marker(&path).unwrap(), Some(m));
        assert!(!path.exists());
        std::fs::write(&path, b"garbage").unwrap();
        assert_eq!(take_marker(&path).unwrap(), None);
        assert!(!path.exists());
    }
}
