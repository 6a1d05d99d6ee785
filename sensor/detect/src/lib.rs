//! `ja4sensor detect`: rules over mod_reqin_log's correlated log, in seed 003's words. The
//! [`engine`] reads lines (following the live log with the shipper's follower and checkpoint,
//! or replaying files once), feeds each to every enabled [`modules`] module, and dispatches the
//! [`event`]s they raise to every [`listeners`] listener whose criteria match: the service's
//! log, JSON-lines files (the ClickHouse path), CSV files of audit events, a program, and the
//! verdict table httpd reads.
//!
//! config → line → modules → event → listeners, glued by engine; this file is the command.

#![forbid(unsafe_code)]

pub mod config;
pub mod engine;
pub mod event;
pub mod line;
pub mod listeners;
pub mod modules;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use correlate_lib::follow::checkpoint::{Checkpoint, CheckpointError, FileState};
use correlate_lib::follow::{self, FollowError, LogFile};

use crate::config::{DetectConfig, StartAt};
use crate::engine::{Engine, Mode};

/// Where the packages put the configuration; the `detect:` section lives in the sensor's file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/ja4sensor/config.yml";

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Clients(#[from] correlate_lib::clients::ClientsError),
    #[error(transparent)]
    Ua(#[from] modules::mismatch::UaError),
    #[error(transparent)]
    State(#[from] modules::new_fingerprint::StateError),
    #[error(transparent)]
    Listener(#[from] listeners::ListenerError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Follow(#[from] FollowError),
    #[error("metrics endpoint {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot install the {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// `ja4sensor detect` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DetectArgs {
    /// YAML config file; its `detect:` section is read (the sensor's sections are ignored).
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
    /// Validate the configuration (and load the client map) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Run the engine once over these files (globs, rotated and .gz files too) and exit.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub replay: Vec<String>,
    /// With --replay: also run the verdict listener (left out by default: a replay of old
    /// lines should not block today's clients).
    #[arg(long, requires = "replay")]
    pub with_verdicts: bool,
}

/// Entry point of the subcommand.
pub fn run(args: &DetectArgs) -> Result<(), DetectError> {
    let cfg = DetectConfig::load(&args.config)?;
    let env = env_logger::Env::default().default_filter_or(cfg.log_level.clone());
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
    if args.check_config {
        let clients = engine::load_clients(&cfg.clients)?;
        log::info!(
            "configuration OK: following {:?}, {} threshold rule(s), {} listener(s), {} JA4s in the client map",
            cfg.input.path,
            cfg.modules.threshold.rules.len(),
            cfg.listeners.len(),
            clients.len()
        );
        return Ok(());
    }
    if !args.replay.is_empty() {
        let summary = replay(&cfg, &args.replay, args.with_verdicts)?;
        eprintln!("{summary}");
        return Ok(());
    }
    follow_log(&cfg)
}

/// What a replay did, for its caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub files: usize,
    pub lines: u64,
    pub malformed: u64,
    pub events: std::collections::BTreeMap<String, u64>,
    /// Files that could not be read to their end (a cut .gz...).
    pub read_errors: u64,
}

impl std::fmt::Display for ReplaySummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "replayed {} lines ({} malformed) from {} file(s)",
            self.lines, self.malformed, self.files
        )?;
        if self.read_errors > 0 {
            write!(f, ", {} read error(s)", self.read_errors)?;
        }
        f.write_str("; events:")?;
        if self.events.is_empty() {
            f.write_str(" none")?;
        }
        for (t, n) in &self.events {
            write!(f, " {t}={n}")?;
        }
        Ok(())
    }
}

/// `--replay`: every line of the files, in log order (rotated files first), through the engine.
pub fn replay(
    cfg: &DetectConfig,
    patterns: &[String],
    with_verdicts: bool,
) -> Result<ReplaySummary, DetectError> {
    let files = follow::whole::expand(patterns)?;
    let mut engine = Engine::build(cfg, Mode::Replay { with_verdicts })?;
    let mut read_errors = 0;
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut tick_at = std::time::Instant::now();
    for path in &files {
        let mut r = follow::whole::open(path)?;
        let mut offset = 0u64;
        loop {
            buf.clear();
            let n = match (&mut r)
                .take(follow::MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut buf)
            {
                Ok(n) => n,
                Err(e) => {
                    log::error!(
                        "{}: {e} after {offset} bytes; the rest of it is not replayed",
                        path.display()
                    );
                    read_errors += 1;
                    break;
                }
            };
            if n == 0 {
                break;
            }
            if buf.ends_with(b"\n") {
                buf.pop();
                engine.feed(&buf, offset);
            } else if n > follow::MAX_LINE_BYTES {
                engine.feed_overlong();
                // Skip to the end of the overlong line.
                let mut rest = Vec::new();
                let _ = r.read_until(b'\n', &mut rest);
                offset += rest.len() as u64;
            } else {
                // A finished file's last line without its newline: still a line.
                engine.feed(&buf, offset);
            }
            offset += n as u64;
            // The clock is read every 256 lines (a few hundred microseconds of them).
            if engine.lines() % 256 == 0 && tick_at.elapsed() >= Duration::from_secs(1) {
                engine.tick(correlate_lib::unix_now_ns());
                tick_at = std::time::Instant::now();
            }
        }
        engine.flush();
    }
    engine.finish();
    Ok(ReplaySummary {
        files: files.len(),
        lines: engine.lines(),
        malformed: engine.malformed(),
        events: engine.events_by_type().clone(),
        read_errors,
    })
}

/// Updates the checkpoint's view of the files. On the very first start (no checkpoint file)
/// with `start_at: end`, files already there count as read to their end.
fn track(cp: &mut Checkpoint, files: &[LogFile], skip_existing: bool) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for f in files {
        match cp.file_mut(&f.fingerprint) {
            Some(st) => {
                st.seen_unix = now;
                if f.size >= st.offset {
                    st.dev = f.dev;
                    st.ino = f.ino;
                    st.path = f.path.clone();
                }
            }
            None => cp.files.push(FileState {
                fingerprint: f.fingerprint.clone(),
                dev: f.dev,
                ino: f.ino,
                offset: if skip_existing { f.size } else { 0 },
                path: f.path.clone(),
                seen_unix: now,
            }),
        }
    }
    cp.prune();
}

/// The service: follows the log until SIGTERM/SIGINT; SIGHUP reopens the listeners' files.
/// Events of a batch reach the listeners (and their files are written) before the checkpoint
/// moves past the batch: a restart neither skips a line nor, short of a crash between the two,
/// reads one again (a crash there repeats the batch's events with the same `event_id`s).
pub fn follow_log(cfg: &DetectConfig) -> Result<(), DetectError> {
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for (sig, name) in [
        (signal_hook::consts::SIGTERM, "SIGTERM"),
        (signal_hook::consts::SIGINT, "SIGINT"),
    ] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|source| {
            DetectError::Signal {
                signal: name,
                source,
            }
        })?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup)).map_err(
        |source| DetectError::Signal {
            signal: "SIGHUP",
            source,
        },
    )?;
    follow_until(cfg, &stop, &hup)
}

/// [`follow_log`] without the signal handlers: runs until `stop` is set; `hup` set means
/// "reopen the files" (cleared here).
pub fn follow_until(
    cfg: &DetectConfig,
    stop: &AtomicBool,
    hup: &AtomicBool,
) -> Result<(), DetectError> {
    let first_start = !cfg.checkpoint_path.exists();
    let mut cp = Checkpoint::load(&cfg.checkpoint_path)?;
    let mut engine = Engine::build(cfg, Mode::Follow)?;
    let metrics_text = Arc::new(Mutex::new(engine.render_metrics()));
    if cfg.metrics.enabled {
        let addr = cfg.metrics_addr()?;
        let bound = serve_metrics(addr, Arc::clone(&metrics_text))?;
        log::info!("metrics on http://{bound}/metrics and /health");
    }
    log::info!(
        "following {:?} (checkpoint {}), {} JA4s in the client map",
        cfg.input.path,
        cfg.checkpoint_path.display(),
        engine.clients().len()
    );
    let poll = Duration::from_millis(cfg.input.poll_interval_ms);
    let mut skip_existing = first_start && cfg.input.start_at == StartAt::End;
    let mut last_tick = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            log::info!("SIGHUP: reopening the listeners' files");
            engine.reopen();
        }
        let files = follow::scan(&cfg.input.path);
        track(&mut cp, &files, skip_existing);
        if skip_existing {
            skip_existing = false;
            save_checkpoint(&cp, cfg);
        }
        let mut progressed = false;
        for f in &files {
            let offset = cp.file(&f.fingerprint).map_or(0, |s| s.offset);
            if f.size <= offset {
                continue;
            }
            let (lines, end) = match follow::read_lines(f, offset, cfg.input.batch_lines, None) {
                Ok(r) => r,
                Err(e) => {
                    log::debug!("{e}");
                    continue;
                }
            };
            if lines.is_empty() {
                continue;
            }
            for l in &lines {
                if l.overlong {
                    engine.feed_overlong();
                } else {
                    engine.feed(&l.bytes, l.offset);
                }
            }
            engine.flush();
            if let Some(st) = cp.file_mut(&f.fingerprint) {
                st.offset = end;
            }
            save_checkpoint(&cp, cfg);
            progressed = true;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) || !progressed {
            engine.tick(correlate_lib::unix_now_ns());
            engine.flush();
            if let Ok(mut m) = metrics_text.lock() {
                *m = engine.render_metrics();
            }
            last_tick = std::time::Instant::now();
        }
        if !progressed {
            std::thread::sleep(poll);
        }
    }
    log::info!("stopping after {} lines", engine.lines());
    engine.finish();
    save_checkpoint(&cp, cfg);
    Ok(())
}

fn save_checkpoint(cp: &Checkpoint, cfg: &DetectConfig) {
    // A failed save (full disk) is retried with the next batch; the events are already out.
    if let Err(e) = cp.save(&cfg.checkpoint_path) {
        log::error!("{e}");
    }
}

/// A request head larger than this is not a scraper's `GET /metrics`.
const MAX_REQUEST_HEAD_BYTES: usize = 8 * 1024;

/// Binds now (a taken port is a start-up error) and answers `/metrics` and `/health` from a
/// thread of its own, with the text the engine last rendered.
pub fn serve_metrics(
    addr: SocketAddr,
    text: Arc<Mutex<String>>,
) -> Result<SocketAddr, DetectError> {
    let listener =
        TcpListener::bind(addr).map_err(|source| DetectError::Metrics { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| DetectError::Metrics { addr, source })?;
    let spawned = std::thread::Builder::new()
        .name("detect-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
                let _ = answer(stream, &text);
            }
        });
    spawned.map_err(|source| DetectError::Metrics { addr, source })?;
    Ok(bound)
}

fn answer(mut stream: std::net::TcpStream, text: &Mutex<String>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let (status, ctype, body) = match target {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            text.lock().map(|t| t.clone()).unwrap_or_default(),
        ),
        "/health" => (
            "200 OK",
            "application/json",
            "{\"status\":\"ok\"}\n".to_owned(),
        ),
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes())
}
