//! Listeners (seed 003): what is done with events. Each registers criteria (seed 003's to-do):
//! event types, modules, minimum severity, kinds; the engine hands it only the events that
//! match. A listener's failure (a full disk, a hook that crashes) is counted and logged, never
//! fatal: the other listeners and the modules go on.

pub mod exec;
pub mod files;
pub mod verdict;

use crate::config::{ListenerConfig, ListenerType};
use crate::event::{Event, Kind, Severity};
use crate::modules::Metric;

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("{listener}: {path}: {source}")]
    Io {
        listener: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("{listener}: {reason}")]
    Other {
        listener: &'static str,
        reason: String,
    },
}

/// Which events a listener takes. Empty lists take everything.
#[derive(Debug, Clone, PartialEq)]
pub struct Criteria {
    pub types: Vec<String>,
    pub modules: Vec<String>,
    /// Events (not audit events) below this severity are not taken.
    pub min_severity: Severity,
    pub kinds: Vec<Kind>,
}

impl Criteria {
    pub fn from_config(c: &ListenerConfig) -> Self {
        Self {
            types: c.types.clone(),
            modules: c.modules.clone(),
            min_severity: c.min_severity,
            kinds: c.kinds.clone(),
        }
    }

    pub fn all() -> Self {
        Self {
            types: Vec::new(),
            modules: Vec::new(),
            min_severity: Severity::Notice,
            kinds: vec![Kind::Event, Kind::Audit],
        }
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.kinds.contains(&e.kind)
            && (e.kind == Kind::Audit || e.severity >= self.min_severity)
            && (self.types.is_empty() || self.types.contains(&e.type_name))
            && (self.modules.is_empty() || self.modules.iter().any(|m| m == e.module))
    }
}

/// An event as handed to listeners: the event, its id and its JSON text (made once).
pub struct Dispatched<'a> {
    pub event: &'a Event,
    pub id: &'a str,
    pub json: &'a str,
}

pub trait Listener: Send {
    /// `type` and target, for logs and metric labels (`jsonl:/var/log/...`).
    fn name(&self) -> &str;
    fn kind(&self) -> ListenerType;
    fn handle(&mut self, d: &Dispatched) -> Result<(), ListenerError>;
    /// After each batch of lines: make what was handled durable enough (write buffers out).
    fn flush(&mut self) -> Result<(), ListenerError> {
        Ok(())
    }
    /// SIGHUP: reopen files (logrotate moved them).
    fn reopen(&mut self) -> Result<(), ListenerError> {
        Ok(())
    }
    /// About once a second (wall clock).
    fn tick(&mut self, _now_ns: u64) {}
    /// At the end: finish what is in flight (the exec listener waits for its programs).
    fn finish(&mut self) -> Result<(), ListenerError> {
        self.flush()
    }
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
}

/// The `log` listener: one line per event on stderr, with the syslog priority prefix journald
/// understands (`<4>` warning...), so `journalctl -p warning -u ja4sensor-detect` filters them.
pub struct LogListener;

impl Listener for LogListener {
    fn name(&self) -> &str {
        "log"
    }

    fn kind(&self) -> ListenerType {
        ListenerType::Log
    }

    fn handle(&mut self, d: &Dispatched) -> Result<(), ListenerError> {
        let e = d.event;
        let prio = match (e.kind, e.severity) {
            (Kind::Audit, _) => 6,
            (_, Severity::Notice) => 5,
            (_, Severity::Warning) => 4,
            (_, Severity::Error) => 3,
        };
        let opt = |k: &str, v: &Option<String>| {
            v.as_ref().map(|v| format!(" {k}={v}")).unwrap_or_default()
        };
        eprintln!(
            "<{prio}>ja4sensor detect: {} {} module={}{}{}{}{} id={}: {}",
            e.severity_str(),
            e.type_name,
            e.module,
            if e.rule.is_empty() {
                String::new()
            } else {
                format!(" rule={}", e.rule)
            },
            opt("src_ip", &e.ctx.src_ip),
            opt("ja4", &e.ctx.ja4),
            opt("request_id", &e.ctx.parent_correlation_id),
            d.id,
            e.summary
        );
        Ok(())
    }
}
