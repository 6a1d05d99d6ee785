//! `ja4sensor report`: one self-contained HTML page about a time window of the logs (or of
//! ClickHouse's `http_logs` + `reqin_events`): requests per minute (correlated / orphan), top
//! JA4s and their clients, User-Agents that claim another client than their fingerprint, TTL
//! and OS of the SYNs, events per rule over time, and, when asked, the timeline of a client.
//!
//! The page has no script and fetches nothing (its Content-Security-Policy forbids it); the
//! charts are inline SVG drawn by plotters.

pub mod aggregate;
pub mod charts;
pub mod html;

use std::collections::BTreeSet;

use correlate_lib::fields;

use crate::clients::Mapping;
use crate::filter::{Filter, Role};
use crate::scan::{self, Prefilter, ScanStats, Source};
use crate::timeline::{self, Timeline, TimelineError};

pub use aggregate::Aggregate;

/// Connections whose timeline the page draws at most (`--ip` of a busy client).
pub const MAX_TIMELINE_ROOTS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{0}")]
    Chart(#[from] charts::ChartError),
    #[error("{0}")]
    Timeline(#[from] TimelineError),
    #[error("{0}")]
    ClickHouse(#[from] crate::ch::ChError),
    #[error("writing {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Where the data came from, for the page's heading.
#[derive(Debug, Clone)]
pub enum Origin {
    Files(Vec<Source>),
    ClickHouse { url: String, database: String },
}

/// What the page shows.
#[derive(Debug)]
pub struct ReportData {
    pub agg: Aggregate,
    pub timeline: Option<Timeline>,
    /// More connections matched than the page draws.
    pub timeline_truncated: bool,
    pub stats: ScanStats,
    pub since_ns: Option<i64>,
    pub until_ns: Option<i64>,
    pub generated_ns: i64,
    pub origin: Origin,
    pub mapping_rows: usize,
    /// The selectors of the timeline, as typed.
    pub selector_text: Option<String>,
}

/// What one reading of lines produced: the counts and, when a timeline is asked for, the
/// connections its selector chose.
#[derive(Default)]
pub struct Tally {
    pub agg: Aggregate,
    pub roots: BTreeSet<String>,
    pub stats: ScanStats,
}

/// What a report counts: the window, the selector of its timeline, the client mapping, and the
/// fields all of them read (a parse keeps only those).
pub struct Scope<'a> {
    pub window: &'a Filter,
    pub selector: Option<&'a Filter>,
    pub mapping: &'a Mapping,
    keys: [Vec<String>; 2],
}

impl<'a> Scope<'a> {
    pub fn new(window: &'a Filter, selector: Option<&'a Filter>, mapping: &'a Mapping) -> Self {
        let keys = [Role::Log, Role::Events].map(|role| {
            let mut k = Aggregate::keys(role);
            k.extend(window.keys(role));
            if let Some(sel) = selector {
                k.extend(sel.keys(role));
                k.push(
                    match role {
                        Role::Log => fields::CONN_ID,
                        Role::Events => fields::ROOT_CORRELATION_ID,
                    }
                    .to_owned(),
                );
            }
            k.sort();
            k.dedup();
            k
        });
        Self {
            window,
            selector,
            mapping,
            keys,
        }
    }
}

impl Tally {
    /// Counts one line or event when it is inside `window`; notes its connection when it also
    /// matches `selector`.
    pub fn add(&mut self, stats: &mut ScanStats, line: &[u8], role: Role, scope: &Scope) {
        let keys = match role {
            Role::Log => &scope.keys[0],
            Role::Events => &scope.keys[1],
        };
        let Some(o) = stats.parse_keys(line, keys) else {
            return;
        };
        if !scope.window.matches(&o, role) {
            return;
        }
        stats.matched += 1;
        match role {
            Role::Log => self.agg.add_line(&o, scope.mapping),
            Role::Events => self.agg.add_event(&o),
        }
        if let Some(sel) = scope.selector {
            if sel.matches(&o, role) && self.roots.len() <= MAX_TIMELINE_ROOTS {
                let key = match role {
                    Role::Log => fields::CONN_ID,
                    Role::Events => fields::ROOT_CORRELATION_ID,
                };
                if let Some(root) = o.str(key).filter(|r| !r.is_empty()) {
                    self.roots.insert(root.into_owned());
                }
            }
        }
    }

    fn merge(&mut self, o: Tally) {
        self.agg.merge(&o.agg);
        self.roots.extend(o.roots);
        self.stats.merge(&o.stats);
    }
}

/// The page's data from log and event files. `window` holds `--since/--until`; `selector`
/// (with the window) chooses the connections of the timeline.
pub fn from_files(
    sources: &[Source],
    window: &Filter,
    selector: Option<&Filter>,
    mapping: &Mapping,
    threads: usize,
) -> Result<(Tally, Option<Timeline>, bool), ReportError> {
    let every = Prefilter::all_of(Vec::new());
    let mut readable: Vec<Source> = sources.to_vec();
    let older = match window.since_ns {
        Some(s) => scan::drop_older_than(&mut readable, s),
        None => 0,
    };
    let scope = Scope::new(window, selector, mapping);
    let tallies = scan::map_files(&readable, threads, |src| {
        let mut t = Tally::default();
        let stats = src.scan(&every, &mut |line, st| {
            t.add(st, line, src.role, &scope);
            true
        });
        t.stats = stats;
        t
    });
    let mut total = Tally::default();
    for t in tallies {
        total.merge(t);
    }
    total.stats.files_older_than_since = older;
    if selector.is_none() {
        return Ok((total, None, false));
    }
    let truncated = total.roots.len() > MAX_TIMELINE_ROOTS;
    let roots: BTreeSet<String> = total
        .roots
        .iter()
        .take(MAX_TIMELINE_ROOTS)
        .cloned()
        .collect();
    let tl = timeline::collect(sources, &roots, threads)?;
    Ok((total, Some(tl), truncated))
}

/// Writes the page to `path`.
pub fn write(data: &ReportData, path: &std::path::Path) -> Result<(), ReportError> {
    let page = html::render(data)?;
    std::fs::write(path, page).map_err(|source| ReportError::Write {
        path: path.to_owned(),
        source,
    })
}
