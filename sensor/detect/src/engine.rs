//! The engine (seed 003): reads log lines, feeds each to every enabled module, dispatches what
//! they emit to every listener whose criteria match, and every `stats_interval_s` asks each
//! module for its statistics (a `ModuleStats` audit event). The same engine runs live
//! (`ja4sensor detect`, lines from the follower) and over files (`--replay`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use correlate_lib::clients::{ClientMap, DEFAULT_CLIENTS_PATH};

use crate::config::{self, DetectConfig, ListenerType};
use crate::event::{Context, Event, LineCtx, MODULE_STATS};
use crate::line::Line;
use crate::listeners::exec::ExecListener;
use crate::listeners::files::{CsvListener, JsonlListener};
use crate::listeners::verdict::VerdictListener;
use crate::listeners::{Criteria, Dispatched, Listener, ListenerError, LogListener};
use crate::modules::mismatch::{Mismatch, UaParser};
use crate::modules::new_fingerprint::NewFingerprint;
use crate::modules::report::Report;
use crate::modules::threshold::Threshold;
use crate::modules::{Metric, Module};
use crate::DetectError;

/// How the engine runs: live (the service) or once over files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Follow,
    /// `with_verdicts`: a replay normally leaves the live verdict table alone.
    Replay {
        with_verdicts: bool,
    },
}

/// A listener's errors are logged at most this often (the rest are counted).
const ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

pub struct Engine {
    modules: Vec<Box<dyn Module>>,
    listeners: Vec<(Criteria, Box<dyn Listener>)>,
    pending: Vec<Event>,
    field_buf: crate::line::FieldBuf,
    lines: u64,
    malformed: u64,
    events: BTreeMap<String, u64>,
    listener_errors: u64,
    suppressed_errors: u64,
    last_error_log: Option<Instant>,
    stats_every_ns: u64,
    last_stats_ns: u64,
    clients: Arc<ClientMap>,
}

/// Every file of `detect.clients`, merged in order. The packaged default may be missing on a
/// development machine (a warning); a file the operator named must exist.
pub fn load_clients(paths: &[std::path::PathBuf]) -> Result<ClientMap, DetectError> {
    let mut map = ClientMap::new();
    for p in paths {
        match ClientMap::load(p) {
            Ok(m) => {
                log::info!("client map {}: {} JA4s", p.display(), m.len());
                map.merge(m);
            }
            Err(correlate_lib::clients::ClientsError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound
                    && p == Path::new(DEFAULT_CLIENTS_PATH) =>
            {
                log::warn!(
                    "client map {} is missing: every JA4's client is unknown",
                    p.display()
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(map)
}

fn gid_of(group: &str) -> Result<Option<u32>, DetectError> {
    if group.is_empty() {
        return Ok(None);
    }
    if let Ok(n) = group.parse::<u32>() {
        return Ok(Some(n));
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(Some(g.gid.as_raw())),
        _ => Err(DetectError::Config(config::ConfigError::Invalid {
            key: "listeners[].group".into(),
            value: group.into(),
            expected: "expected an existing group name or a gid".into(),
        })),
    }
}

impl Engine {
    /// Modules and listeners as configured (the config is validated).
    pub fn build(cfg: &DetectConfig, mode: Mode) -> Result<Self, DetectError> {
        let clients = Arc::new(load_clients(&cfg.clients)?);
        let m = &cfg.modules;
        let mut modules: Vec<Box<dyn Module>> = Vec::new();
        if m.report.enabled {
            modules.push(Box::new(Report::new(m.report.notice_every_line)));
        }
        if m.fingerprint_mismatch.enabled {
            let parser = Arc::new(UaParser::new()?);
            modules.push(Box::new(Mismatch::new(
                m.fingerprint_mismatch.clone(),
                parser,
                Arc::clone(&clients),
            )));
        }
        if m.threshold.enabled && !m.threshold.rules.is_empty() {
            modules.push(Box::new(Threshold::new(
                &m.threshold.rules,
                m.threshold.max_keys,
            )));
        }
        if m.new_fingerprint.enabled {
            let nf = &m.new_fingerprint;
            let state = (mode == Mode::Follow).then_some(nf.state_path.as_path());
            modules.push(Box::new(NewFingerprint::new(
                nf.max_entries,
                state,
                nf.save_interval_s,
                Arc::clone(&clients),
                &m.fingerprint_mismatch.user_agent_field,
            )?));
        }
        let mut listeners: Vec<(Criteria, Box<dyn Listener>)> = Vec::new();
        for l in cfg.listeners.iter().filter(|l| l.enabled) {
            let criteria = Criteria::from_config(l);
            let listener: Box<dyn Listener> = match l.kind {
                ListenerType::Log => Box::new(LogListener),
                ListenerType::Jsonl => Box::new(JsonlListener::open(
                    ListenerType::Jsonl,
                    l.path
                        .as_deref()
                        .unwrap_or(Path::new(config::DEFAULT_JSONL_PATH)),
                )?),
                ListenerType::Clickhouse => Box::new(JsonlListener::open(
                    ListenerType::Clickhouse,
                    l.path
                        .as_deref()
                        .unwrap_or(Path::new(config::DEFAULT_CLICKHOUSE_PATH)),
                )?),
                ListenerType::Csv => Box::new(CsvListener::open(
                    l.path
                        .as_deref()
                        .unwrap_or(Path::new(config::DEFAULT_CSV_DIR)),
                )?),
                ListenerType::Exec => Box::new(ExecListener::start(
                    l.command.as_deref().unwrap_or_default(),
                    l.max_concurrency
                        .unwrap_or(config::DEFAULT_EXEC_CONCURRENCY),
                    Duration::from_millis(l.timeout_ms.unwrap_or(config::DEFAULT_EXEC_TIMEOUT_MS)),
                    l.queue.unwrap_or(config::DEFAULT_EXEC_QUEUE),
                    mode != Mode::Follow,
                )?),
                ListenerType::Verdict => {
                    if mode
                        == (Mode::Replay {
                            with_verdicts: false,
                        })
                    {
                        log::info!(
                            "replay: the verdict listener is left out (--with-verdicts to keep it)"
                        );
                        continue;
                    }
                    let path = l
                        .path
                        .clone()
                        .unwrap_or_else(|| correlate_lib::verdict::DEFAULT_VERDICT_PATH.into());
                    let mode_bits = config::parse_mode(
                        l.mode.as_deref().unwrap_or(config::DEFAULT_VERDICT_MODE),
                    )
                    .unwrap_or(0o640);
                    Box::new(VerdictListener::open(
                        &path,
                        l.slot_count
                            .unwrap_or(correlate_lib::verdict::DEFAULT_SLOT_COUNT),
                        mode_bits,
                        gid_of(l.group.as_deref().unwrap_or(""))?,
                        l.key.unwrap_or_default(),
                        l.verdict.as_deref().unwrap_or(config::DEFAULT_VERDICT_WORD),
                        l.ttl_s.unwrap_or(config::DEFAULT_VERDICT_TTL_S),
                    )?)
                }
            };
            listeners.push((criteria, listener));
        }
        Ok(Self::new(modules, listeners, cfg.stats_interval_s, clients))
    }

    pub fn new(
        modules: Vec<Box<dyn Module>>,
        listeners: Vec<(Criteria, Box<dyn Listener>)>,
        stats_interval_s: u64,
        clients: Arc<ClientMap>,
    ) -> Self {
        Self {
            modules,
            listeners,
            pending: Vec::new(),
            field_buf: crate::line::FieldBuf::default(),
            lines: 0,
            malformed: 0,
            events: BTreeMap::new(),
            listener_errors: 0,
            suppressed_errors: 0,
            last_error_log: None,
            stats_every_ns: stats_interval_s.saturating_mul(1_000_000_000),
            last_stats_ns: correlate_lib::unix_now_ns(),
            clients,
        }
    }

    /// One line (without its `\n`), read at `offset` of its file.
    pub fn feed(&mut self, raw: &[u8], offset: u64) {
        self.lines += 1;
        let line = match Line::parse_with(raw, std::mem::take(&mut self.field_buf)) {
            Ok(l) => l,
            Err(e) => {
                self.malformed += 1;
                log::debug!("line at offset {offset} skipped: {e}");
                return;
            }
        };
        let ctx = LineCtx::of_line(&line, raw, offset);
        let mut out = std::mem::take(&mut self.pending);
        for m in &mut self.modules {
            m.on_line(&line, &ctx, &mut out);
        }
        self.dispatch(&mut out);
        self.pending = out;
        self.field_buf = line.into_buf();
    }

    /// A line too long to be one of ours (the follower cut it).
    pub fn feed_overlong(&mut self) {
        self.lines += 1;
        self.malformed += 1;
    }

    fn dispatch(&mut self, events: &mut Vec<Event>) {
        if events.is_empty() {
            // Most lines: no clock read.
            return;
        }
        let emitted = correlate_lib::unix_now_ns();
        // Ids count the events of one line apart (a line may raise several of one type).
        for (n, e) in events.drain(..).enumerate() {
            *self.events.entry(e.type_name.clone()).or_default() += 1;
            let mut json: Option<(String, String)> = None;
            for (criteria, l) in &mut self.listeners {
                if !criteria.matches(&e) {
                    continue;
                }
                let (id, text) = json.get_or_insert_with(|| {
                    let id = e.event_id(u32::try_from(n).unwrap_or(u32::MAX));
                    let text = e.to_json(&id, emitted);
                    (id, text)
                });
                let d = Dispatched {
                    event: &e,
                    id,
                    json: text,
                };
                if let Err(err) = l.handle(&d) {
                    Self::count_error(
                        &mut self.listener_errors,
                        &mut self.suppressed_errors,
                        &mut self.last_error_log,
                        &err,
                    );
                }
            }
        }
    }

    fn count_error(
        errors: &mut u64,
        suppressed: &mut u64,
        last: &mut Option<Instant>,
        err: &ListenerError,
    ) {
        *errors += 1;
        if last.is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY) {
            if *suppressed > 0 {
                log::error!("{err} (and {suppressed} more listener errors)");
            } else {
                log::error!("{err}");
            }
            *suppressed = 0;
            *last = Some(Instant::now());
        } else {
            *suppressed += 1;
        }
    }

    /// The `ModuleStats` audit event of every module, now.
    pub fn report_stats(&mut self) {
        let ctx = Context::now();
        let mut out = Vec::new();
        for m in &self.modules {
            let s = m.stats();
            let summary = format!("{}: {} lines, {} events", m.name(), s.lines, s.events);
            out.push(MODULE_STATS.event(
                m.name(),
                "",
                summary,
                [
                    s.lines.into(),
                    s.bytes.into(),
                    s.correlated.into(),
                    s.orphans.into(),
                    s.matched.into(),
                    s.events.into(),
                    s.tracked.into(),
                    s.evicted.into(),
                ],
                &ctx,
            ));
        }
        self.dispatch(&mut out);
    }

    /// About once a second: statistics when due, modules' and listeners' housekeeping.
    pub fn tick(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_stats_ns) >= self.stats_every_ns {
            self.last_stats_ns = now_ns;
            self.report_stats();
        }
        for m in &mut self.modules {
            m.tick(now_ns, false);
        }
        for (_, l) in &mut self.listeners {
            l.tick(now_ns);
        }
    }

    /// Writes the listeners' buffers out (after each batch of lines, before the checkpoint).
    pub fn flush(&mut self) {
        for (_, l) in &mut self.listeners {
            if let Err(e) = l.flush() {
                Self::count_error(
                    &mut self.listener_errors,
                    &mut self.suppressed_errors,
                    &mut self.last_error_log,
                    &e,
                );
            }
        }
    }

    /// SIGHUP: the file listeners reopen their files.
    pub fn reopen(&mut self) {
        for (_, l) in &mut self.listeners {
            if let Err(e) = l.reopen() {
                Self::count_error(
                    &mut self.listener_errors,
                    &mut self.suppressed_errors,
                    &mut self.last_error_log,
                    &e,
                );
            }
        }
    }

    /// The end (stop or end of replay): final statistics, state saved, listeners finished.
    pub fn finish(&mut self) {
        self.report_stats();
        let now = correlate_lib::unix_now_ns();
        for m in &mut self.modules {
            m.tick(now, true);
        }
        for (_, l) in &mut self.listeners {
            if let Err(e) = l.finish() {
                Self::count_error(
                    &mut self.listener_errors,
                    &mut self.suppressed_errors,
                    &mut self.last_error_log,
                    &e,
                );
            }
        }
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn malformed(&self) -> u64 {
        self.malformed
    }

    /// Events dispatched, by type.
    pub fn events_by_type(&self) -> &BTreeMap<String, u64> {
        &self.events
    }

    pub fn clients(&self) -> &ClientMap {
        &self.clients
    }

    /// Prometheus text (prefix `ja4sensor_detect_`).
    pub fn render_metrics(&self) -> String {
        let mut out = String::new();
        let mut seen_help = std::collections::HashSet::new();
        let mut put = |m: &Metric| {
            let base = m.name.split('{').next().unwrap_or(&m.name).to_owned();
            if seen_help.insert(base.clone()) {
                let _ = writeln!(out, "# HELP ja4sensor_detect_{base} {}", m.help);
                let _ = writeln!(out, "# TYPE ja4sensor_detect_{base} {}", m.kind);
            }
            let _ = writeln!(out, "ja4sensor_detect_{} {}", m.name, m.value);
        };
        let c = |name: &str, help, value| Metric {
            name: name.into(),
            help,
            kind: "counter",
            value,
        };
        put(&c("lines_total", "log lines read", self.lines));
        put(&c(
            "malformed_lines_total",
            "lines that are not a JSON object (skipped)",
            self.malformed,
        ));
        put(&c(
            "listener_errors_total",
            "failed listener operations",
            self.listener_errors,
        ));
        for (t, n) in &self.events {
            put(&c(
                &format!("events_total{{type=\"{t}\"}}"),
                "events dispatched",
                *n,
            ));
        }
        for m in &self.modules {
            let s = m.stats();
            let l = |what: &str| format!("module_{what}{{module=\"{}\"}}", m.name());
            put(&c(&l("lines_total"), "lines the module took", s.lines));
            put(&c(
                &l("matched_total"),
                "lines the module acted on",
                s.matched,
            ));
            put(&c(
                &l("events_total"),
                "events the module dispatched",
                s.events,
            ));
            put(&Metric {
                name: l("tracked"),
                help: "keys or entries the module holds",
                kind: "gauge",
                value: s.tracked,
            });
            put(&c(
                &l("evicted_total"),
                "keys or entries dropped to stay bounded",
                s.evicted,
            ));
            if m.name() == "report" {
                put(&c("report_bytes_total", "bytes of lines", s.bytes));
                put(&c(
                    "report_correlated_total",
                    "correlated lines",
                    s.correlated,
                ));
                put(&c(
                    "report_orphans_total",
                    "lines without a fingerprint",
                    s.orphans,
                ));
            }
            for x in m.metrics() {
                put(&x);
            }
        }
        for (_, l) in &self.listeners {
            for x in l.metrics() {
                put(&x);
            }
        }
        out
    }
}
