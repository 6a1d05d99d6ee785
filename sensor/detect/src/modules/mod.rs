//! Modules (seed 003): each takes every log line, keeps its own statistics and state, and
//! dispatches events. The engine feeds them in configuration order.

pub mod mismatch;
pub mod new_fingerprint;
pub mod report;
pub mod threshold;

use crate::event::{Event, LineCtx};
use crate::line::Line;

/// The modules there are (`listeners[].modules` names them).
pub const MODULE_NAMES: [&str; 4] = [
    "report",
    "fingerprint_mismatch",
    "threshold",
    "new_fingerprint",
];

/// Statistics every module reports (the `ModuleStats` audit event's fields); what a module does
/// not count stays 0. Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub lines: u64,
    pub bytes: u64,
    pub correlated: u64,
    pub orphans: u64,
    /// Lines the module acted on (checked, matched a rule, had a JA4).
    pub matched: u64,
    pub events: u64,
    /// Keys or entries held now.
    pub tracked: u64,
    /// Keys or entries dropped to stay within the configured bound.
    pub evicted: u64,
}

/// One Prometheus sample a module exports on `/metrics` (name after `ja4sensor_detect_`).
pub struct Metric {
    pub name: String,
    pub help: &'static str,
    pub kind: &'static str,
    pub value: u64,
}

pub trait Module: Send {
    fn name(&self) -> &'static str;
    /// Takes one line; pushes what it dispatches onto `out`.
    fn on_line(&mut self, line: &Line, ctx: &LineCtx, out: &mut Vec<Event>);
    fn stats(&self) -> Stats;
    /// Module-specific counters, besides the [`Stats`] the engine exports for every module.
    fn metrics(&self) -> Vec<Metric> {
        Vec::new()
    }
    /// Called about once a second (wall clock) and at the end: persist state if due.
    fn tick(&mut self, _now_ns: u64, _final: bool) {}
}
