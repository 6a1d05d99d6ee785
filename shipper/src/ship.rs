//! The shipping loop: scan → read complete lines → record the batch as pending → dead-letter the
//! malformed → insert → confirm → checkpoint.
//!
//! **Exactly once as a query sees it.** Every batch has a deterministic id,
//! `<fingerprint of the file>:<start offset>-<end offset>`, the same under any name the file takes
//! (rename, copytruncate copy). The rows are inserted into `ship_inbox`, a `Null` table whose
//! materialized views write them into `http_logs_raw` (and `http_logs`) *and* the id into
//! `ship_batches` within that single INSERT: the rows and their id land together or not at all
//! (a client killed mid-request leaves an incomplete body, which the server rejects). The
//! checkpoint is advanced only after the server confirmed the insert, and only one batch is in
//! flight, so after a crash at most one batch per file lies beyond its checkpoint, and it starts
//! exactly at the checkpointed offset. Hence:
//!
//! - after a (re)start, before the first batch of each file, the shipper asks `ship_batches` for
//!   an id starting with `<fingerprint>:<offset>-`; if there is one, the checkpoint jumps to its
//!   end instead of sending those lines again;
//! - after a failed or unconfirmed insert, it asks for that batch's exact id before re-sending the
//!   same range under the same id.
//!
//! Neither check may be overtaken by an attempt still on its way (a request can sit in a frozen
//! server's socket buffer long after the shipper gave up on it). Each attempt therefore carries a
//! `deadline` in server time (now + timeout + margin); the server refuses an attempt that starts
//! processing after it (`ship_inbox.live`, computed before any view runs), and the client never
//! waits past it. A check first waits until the server's clock is past the last attempt's deadline
//! (after a restart: past the deadline any request of the previous process could have), then until
//! no query with that `query_id` (the batch id) is still running; only then is its answer final.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tokio::sync::watch;

use crate::ch::{Ch, ChError};
use crate::checkpoint::{Checkpoint, CheckpointError, FileState};
use crate::config::ShipConfig;
use crate::follow::{self, FollowError, Line, LogFile};
use crate::metrics::Metrics;

/// While waiting for the server's clock to pass a deadline: it is a second-granular clock.
const CLOCK_POLL: Duration = Duration::from_millis(250);

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
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Exponential back-off: `initial`, doubling, at most `max`.
#[derive(Debug)]
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

/// A batch read from one file.
struct Batch {
    id: String,
    file: LogFile,
    start: u64,
    end: u64,
    lines: Vec<Line>,
}

pub struct Shipper {
    cfg: ShipConfig,
    cp: Checkpoint,
    ch: Option<Ch>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
    backoff: Backoff,
    caught_up_at: Instant,
    /// Files whose checkpointed offset was checked against `ship_batches` since start-up.
    verified: HashSet<String>,
    /// Requests of a previous process can no longer land (its deadlines have passed).
    settled: bool,
    started: Instant,
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

impl Shipper {
    pub fn new(
        cfg: ShipConfig,
        metrics: Arc<Metrics>,
        stop: watch::Receiver<bool>,
    ) -> Result<Self, ShipError> {
        let cp = Checkpoint::load(&cfg.checkpoint_path)?;
        let backoff = Backoff::new(
            Duration::from_millis(cfg.retry.initial_ms),
            Duration::from_millis(cfg.retry.max_ms),
        );
        Ok(Self {
            cfg,
            cp,
            ch: None,
            metrics,
            stop,
            backoff,
            caught_up_at: Instant::now(),
            verified: HashSet::new(),
            settled: false,
            started: Instant::now(),
        })
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Sleeps unless asked to stop; returns whether to stop.
    async fn pause(&mut self, d: Duration) -> bool {
        if self.stopping() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => self.stopping(),
            _ = self.stop.changed() => true,
        }
    }

    async fn retry_pause(&mut self) -> bool {
        Metrics::add(&self.metrics.retries, 1);
        let d = self.backoff.next_delay();
        self.pause(d).await
    }

    /// The client, connecting (and learning the server's version) when there is none.
    async fn client(&mut self) -> Result<Ch, ChError> {
        if let Some(ch) = &self.ch {
            return Ok(ch.clone());
        }
        let ch = Ch::connect(&self.cfg.clickhouse).await;
        let ch = self.ch_result(ch)?;
        log::info!(
            "connected to ClickHouse {} at {} ({} server)",
            ch.version,
            ch.url(),
            ch.flavor.as_str()
        );
        self.ch = Some(ch.clone());
        Ok(ch)
    }

    fn ch_result<T>(&mut self, r: Result<T, ChError>) -> Result<T, ChError> {
        match &r {
            Ok(_) => Metrics::set(&self.metrics.clickhouse_up, 1),
            Err(_) => {
                Metrics::set(&self.metrics.clickhouse_up, 0);
                Metrics::add(&self.metrics.insert_errors, 1);
                // Reconnect next time: the server may have been restarted or upgraded, and its
                // version decides the client's set-up.
                self.ch = None;
            }
        }
        r
    }

    /// Runs until asked to stop. Only start-up problems are errors; everything after is retried.
    pub async fn run(mut self) -> Result<(), ShipError> {
        let flush = self.cfg.flush_interval();
        let log_every = Duration::from_secs(self.cfg.metrics.log_interval_s);
        let mut last_log = Instant::now();
        let mut window_start = Instant::now();
        loop {
            if self.stopping() {
                break;
            }
            if !log_every.is_zero() && last_log.elapsed() >= log_every {
                log::info!("ship metrics: {}", self.metrics.summary());
                last_log = Instant::now();
            }
            let files = follow::scan(&self.cfg.input.path);
            self.track(&files);
            let batch = self.next_batch(&files);
            let Some(batch) = batch else {
                window_start = Instant::now();
                if self.pause(flush).await {
                    break;
                }
                continue;
            };
            let full = batch.lines.len() >= self.cfg.clickhouse.batch_size;
            let waited = window_start.elapsed();
            if !full && waited < flush {
                if self.pause(flush - waited).await {
                    break;
                }
                continue;
            }
            let fingerprint = batch.file.fingerprint.clone();
            if !self.verified.contains(&fingerprint) {
                match self.verify_offset(&fingerprint, batch.start).await {
                    Ok(Some(end)) => {
                        log::info!(
                            "{}: lines {}..{end} are already in ClickHouse (shipped before a restart): skipping them",
                            batch.file.path.display(),
                            batch.start
                        );
                        Metrics::add(&self.metrics.batches_already_in_clickhouse, 1);
                        if let Some(st) = self.cp.file_mut(&fingerprint) {
                            st.offset = end;
                        }
                        if !self.save_checkpoint().await {
                            break;
                        }
                    }
                    Ok(None) => {
                        self.verified.insert(fingerprint);
                    }
                    Err(e) => {
                        log::warn!(
                            "checking {} against ClickHouse: {e}",
                            batch.file.path.display()
                        );
                        if self.retry_pause().await {
                            break;
                        }
                    }
                }
                continue;
            }
            if !self.ship(batch).await? {
                break;
            }
            window_start = Instant::now();
        }
        log::info!("stopping; ship metrics: {}", self.metrics.summary());
        Ok(())
    }

    /// Updates the checkpoint's view of the files (in memory) and the lag gauges.
    fn track(&mut self, files: &[LogFile]) {
        let now = now_unix();
        let mut lag = 0u64;
        for f in files {
            match self.cp.file_mut(&f.fingerprint) {
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
                    lag += f.size - st.offset;
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
                    lag += f.size;
                }
            }
        }
        self.cp.prune();
        // The unshipped tail may be a partial line; it is lag all the same.
        Metrics::set(&self.metrics.lag_bytes, lag);
        Metrics::set(&self.metrics.files_followed, files.len() as u64);
        if lag == 0 {
            self.caught_up_at = Instant::now();
        }
        Metrics::set(
            &self.metrics.lag_seconds,
            if lag == 0 {
                0
            } else {
                self.caught_up_at.elapsed().as_secs()
            },
        );
    }

    /// The oldest file with unshipped complete lines, read up to `batch_size` lines.
    fn next_batch(&self, files: &[LogFile]) -> Option<Batch> {
        for f in files {
            let offset = self.cp.file(&f.fingerprint).map_or(0, |s| s.offset);
            if f.size <= offset {
                continue;
            }
            let (lines, end) =
                match follow::read_lines(f, offset, self.cfg.clickhouse.batch_size, None) {
                    Ok(r) => r,
                    Err(e) => {
                        // Rotated between scan and read: the next scan finds it again.
                        log::debug!("{e}");
                        continue;
                    }
                };
            if lines.is_empty() {
                continue;
            }
            return Some(Batch {
                id: batch_id(&f.fingerprint, offset, end),
                file: f.clone(),
                start: offset,
                end,
                lines,
            });
        }
        None
    }

    /// Ships one batch to the end (or until asked to stop: then `Ok(false)`).
    async fn ship(&mut self, batch: Batch) -> Result<bool, ShipError> {
        let t0 = Instant::now();
        // 1. Split good rows from dead letters.
        let mut good = Vec::with_capacity(batch.lines.len());
        let mut dead = Vec::new();
        for line in &batch.lines {
            match json_object_line(line) {
                Some(text) => good.push(text),
                None => dead.push(line),
            }
        }
        let rows = good.len() as u64;
        // 2. Dead letters first: a line is either in ClickHouse or in this file once the
        // checkpoint moves past it. (A crash here may write them twice; each carries its batch id.)
        if !dead.is_empty() {
            loop {
                match write_dead_letters(&self.cfg.dead_letter_path, &batch, &dead) {
                    Ok(()) => break,
                    Err(e) => {
                        log::error!("{e}; retrying");
                        Metrics::add(&self.metrics.dead_letter_errors, 1);
                        if self.retry_pause().await {
                            return Ok(false);
                        }
                    }
                }
            }
            Metrics::add(&self.metrics.dead_letters, dead.len() as u64);
        }
        // 3. Insert, checking first whenever an earlier attempt may have landed.
        if rows > 0 && !self.insert(&batch.id, &good).await {
            return Ok(false);
        }
        let t_insert = t0.elapsed();
        // 4. Confirmed: move the checkpoint past the batch.
        if let Some(st) = self.cp.file_mut(&batch.file.fingerprint) {
            st.offset = batch.end;
        }
        if !self.save_checkpoint().await {
            return Ok(false);
        }
        self.backoff.reset();
        Metrics::add(&self.metrics.rows_shipped, rows);
        Metrics::add(&self.metrics.batches_shipped, 1);
        Metrics::add(&self.metrics.bytes_shipped, batch.end - batch.start);
        log::debug!(
            "batch {} shipped: {rows} rows, {} dead letters; insert confirmed after {t_insert:?}, checkpoint after {:?}",
            batch.id,
            dead.len(),
            t0.elapsed()
        );
        Ok(true)
    }

    /// Returns false when asked to stop before the batch was confirmed.
    async fn insert(&mut self, id: &str, lines: &[&str]) -> bool {
        // The deadline of the last attempt whose outcome is unknown.
        let mut uncertain: Option<u64> = None;
        loop {
            if let Some(deadline) = uncertain {
                match self.already_in_clickhouse(id, deadline).await {
                    Ok(Some(true)) => {
                        log::info!("batch {id} is already in ClickHouse: not sending it again");
                        Metrics::add(&self.metrics.batches_already_in_clickhouse, 1);
                        return true;
                    }
                    Ok(Some(false)) => {}
                    // Asked to stop mid-check: never send unchecked.
                    Ok(None) => return false,
                    Err(e) => {
                        log::warn!("checking batch {id}: {e}; retrying");
                        if self.retry_pause().await {
                            return false;
                        }
                        continue;
                    }
                }
            }
            let r = match self.client().await {
                Ok(ch) => {
                    let deadline = ch.attempt_deadline();
                    // From here on the attempt may land (until its deadline).
                    uncertain = Some(deadline);
                    let r = ch.insert_batch(id, lines, deadline).await;
                    self.ch_result(r)
                }
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => return true,
                Err(e) => {
                    log::warn!("inserting batch {id}: {e}; retrying");
                    if self.retry_pause().await {
                        return false;
                    }
                }
            }
        }
    }

    /// Whether the batch `id` is recorded, asked once no attempt with `deadline` can still land:
    /// the server's clock is past it and no query with this id runs. `None` when asked to stop.
    async fn already_in_clickhouse(
        &mut self,
        id: &str,
        deadline: u64,
    ) -> Result<Option<bool>, ChError> {
        if !self.wait_server_past(deadline).await? {
            return Ok(None);
        }
        let ch = self.client().await?;
        // An attempt that started before its deadline must finish before its result can be read.
        while self.ch_result(ch.query_running(id).await)? {
            if self.pause(self.cfg.flush_interval()).await {
                return Ok(None);
            }
        }
        self.ch_result(ch.batch_recorded(id).await).map(Some)
    }

    /// Waits until the server's clock is past `deadline`; false when asked to stop.
    async fn wait_server_past(&mut self, deadline: u64) -> Result<bool, ChError> {
        loop {
            let ch = self.client().await?;
            let now = self.ch_result(ch.server_now().await)?;
            if now > deadline {
                return Ok(true);
            }
            if self.pause(CLOCK_POLL).await {
                return Ok(false);
            }
        }
    }

    /// After a (re)start: the end of a batch recorded in ClickHouse that starts at `offset` of
    /// this file (shipped, but the checkpoint was not saved), or `None` (also when asked to
    /// stop: the loop then ends before shipping anything).
    async fn verify_offset(
        &mut self,
        fingerprint: &str,
        offset: u64,
    ) -> Result<Option<u64>, ChError> {
        // A cached client says nothing about the server: only real requests set `clickhouse_up`.
        let ch = self.client().await?;
        if !self.settled {
            // Once per start-up: an insert of a killed predecessor may still be on its way; it
            // started before us, so its deadline has passed once this one has.
            let elapsed = self.started.elapsed().as_secs();
            let deadline = ch.attempt_deadline().saturating_sub(elapsed);
            if !self.wait_server_past(deadline).await? {
                return Ok(None);
            }
            self.settled = true;
        }
        let prefix = format!("{fingerprint}:{offset}-");
        while self.ch_result(ch.query_running_with_prefix(&prefix).await)? {
            if self.pause(self.cfg.flush_interval()).await {
                return Ok(None);
            }
        }
        let id = self.ch_result(ch.batch_with_prefix(&prefix).await)?;
        let end = id.and_then(|id| id.strip_prefix(&prefix)?.parse::<u64>().ok());
        Ok(end.filter(|e| *e > offset))
    }

    /// Saves the checkpoint, retrying with back-off (a full disk is reported and waited out).
    async fn save_checkpoint(&mut self) -> bool {
        loop {
            match self.cp.save(&self.cfg.checkpoint_path) {
                Ok(()) => return true,
                Err(e) => {
                    log::error!("{e}; retrying");
                    Metrics::add(&self.metrics.checkpoint_errors, 1);
                    if self.retry_pause().await {
                        return false;
                    }
                }
            }
        }
    }
}

/// The text of a good line; `None` for a dead letter (not UTF-8, not a JSON object, or cut
/// because it was overlong).
fn json_object_line(line: &Line) -> Option<&str> {
    if line.overlong {
        return None;
    }
    let text = std::str::from_utf8(&line.bytes).ok()?;
    let text = text.strip_suffix('\r').unwrap_or(text);
    serde_json::from_str::<Map<String, Value>>(text).ok()?;
    Some(text)
}

fn write_dead_letters(path: &Path, batch: &Batch, dead: &[&Line]) -> Result<(), ShipError> {
    let err = |source| ShipError::DeadLetter {
        path: path.display().to_string(),
        source,
    };
    let mut out = Vec::new();
    for line in dead {
        let mut obj = Map::new();
        obj.insert("batch_id".into(), batch.id.clone().into());
        obj.insert("file".into(), batch.file.path.display().to_string().into());
        obj.insert("offset".into(), line.offset.into());
        obj.insert("overlong".into(), line.overlong.into());
        obj.insert(
            "line".into(),
            String::from_utf8_lossy(&line.bytes).into_owned().into(),
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
    fn only_json_objects_become_rows() {
        let line = |s: &str| Line {
            offset: 0,
            bytes: s.as_bytes().to_vec(),
            overlong: false,
        };
        let ok = line("{\"a\":\"x\\\"y\"}\r");
        assert_eq!(json_object_line(&ok), Some(r#"{"a":"x\"y"}"#));
        assert!(json_object_line(&line("[1,2]")).is_none());
        assert!(json_object_line(&line("not json")).is_none());
        assert!(json_object_line(&line("{\"a\":")).is_none());
    }
}
