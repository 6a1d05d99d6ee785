//! The command lines of `ja4sensor query`, `timeline` and `report` and what they print; exit
//! codes like grep's: 0 something found (or the page written), 1 nothing found, 2 an error.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgGroup, Args};

use crate::ch::ChSource;
use crate::clients::Mapping;
use crate::filter::{self, Filter, Tag};
use crate::query::{self, Output};
use crate::report::{self, Origin, ReportData, Tally};
use crate::scan::{self, ScanStats, Source};
use crate::time::{self, TimeArgError};
use crate::timeline::{self, Collector};

/// Where mod_reqin_log writes on Debian (the shipper's `ship.input.path` default); RHEL:
/// `/var/log/httpd/reqin.log*`.
pub const DEFAULT_LOG_GLOB: &str = "/var/log/apache2/reqin.log*";

/// The files and the window, common to the three commands.
#[derive(Debug, Clone, Args)]
pub struct Input {
    /// Log files or globs (rotated and .gz files included) [default: /var/log/apache2/reqin.log*,
    /// unless only --events are given].
    #[arg(value_name = "LOG")]
    pub logs: Vec<String>,
    /// The detector's event files (JSON lines), file or glob; repeatable.
    #[arg(long = "events", value_name = "GLOB")]
    pub events: Vec<String>,
    /// From this time on: RFC 3339 (2026-11-25T07:00:00Z), a date, or back from now (1h, 30m, 2days).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Before this time (same forms as --since).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Files read at once (0: one per core, at most 4).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,
    /// No summary line on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What to look for (AND of every flag given).
#[derive(Debug, Clone, Args, Default)]
pub struct Selectors {
    /// Operator tag KEY=VALUE (`ReqinLogTag`): the line's `tag_KEY`, an event's correlation_tags; repeatable.
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<Tag>,
    /// JA4 fingerprint.
    #[arg(long, value_name = "JA4")]
    pub ja4: Option<String>,
    /// Client address or CIDR network (src_ip, or useragent_ip behind a trusted proxy).
    #[arg(long, value_name = "ADDR|CIDR", value_parser = filter::parse_ip)]
    pub ip: Option<ipnet::IpNet>,
    /// One request (`request_id`; an event's parent_correlation_id).
    #[arg(long = "request-id", value_name = "ID")]
    pub request_id: Option<String>,
    /// One connection (`conn_id`; an event's root_correlation_id).
    #[arg(long = "conn-id", value_name = "ID")]
    pub conn_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub input: Input,
    #[command(flatten)]
    pub select: Selectors,
    /// A table for people instead of the matching lines.
    #[arg(long)]
    pub table: bool,
}

#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("root").required(true).multiple(true).args(["conn_id", "ip", "ja4", "tags"])))]
pub struct TimelineArgs {
    #[command(flatten)]
    pub input: Input,
    #[command(flatten)]
    pub select: Selectors,
    /// One JSON object per entry instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up when more connections match.
    #[arg(long, default_value_t = timeline::DEFAULT_MAX_ROOTS, value_name = "N")]
    pub max_roots: usize,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub input: Input,
    /// The page to write.
    #[arg(long, value_name = "FILE")]
    pub html: PathBuf,
    /// JA4 → client CSV (`ja4,client`), for lines without `ja4_client`.
    #[arg(long, value_name = "FILE")]
    pub clients: Option<PathBuf>,
    /// Read ClickHouse's http_logs + reqin_events instead of files (http://127.0.0.1:8123).
    #[arg(long, value_name = "URL")]
    pub clickhouse: Option<String>,
    #[arg(long, default_value = "default", requires = "clickhouse")]
    pub database: String,
    #[arg(long, default_value = "default", requires = "clickhouse")]
    pub user: String,
    /// [default: $CLICKHOUSE_PASSWORD, else empty] (the environment keeps it out of `ps`).
    #[arg(long, requires = "clickhouse")]
    pub password: Option<String>,
    /// Per ClickHouse query, seconds.
    #[arg(long, default_value_t = 300, requires = "clickhouse", value_name = "S")]
    pub timeout: u64,
    /// Add the timeline of this connection.
    #[arg(long = "conn-id", value_name = "ID")]
    pub conn_id: Option<String>,
    /// Add the timeline of this client's connections (address or CIDR).
    #[arg(long, value_name = "ADDR|CIDR", value_parser = filter::parse_ip)]
    pub ip: Option<ipnet::IpNet>,
}

#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error("{0}")]
    Time(#[from] TimeArgError),
    #[error("{0}")]
    Scan(#[from] scan::ScanError),
    #[error("{0}")]
    Timeline(#[from] timeline::TimelineError),
    #[error("{0}")]
    Report(#[from] report::ReportError),
    #[error("{0}")]
    Clients(#[from] crate::clients::ClientsError),
    #[error("--since {since} is not before --until {until}")]
    EmptyWindow { since: String, until: String },
}

const FOUND: u8 = 0;
const NOTHING: u8 = 1;
const ERROR: u8 = 2;

fn fail(cmd: &str, e: CliError) -> ExitCode {
    eprintln!("ja4sensor {cmd}: error: {e}");
    ExitCode::from(ERROR)
}

impl Input {
    fn window(&self) -> Result<Filter, CliError> {
        let now = time::now_ns();
        let since = self
            .since
            .as_deref()
            .map(|v| time::parse_time_arg("--since", v, now))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|v| time::parse_time_arg("--until", v, now))
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until) {
            if s >= u {
                return Err(CliError::EmptyWindow {
                    since: time::format_ns(s),
                    until: time::format_ns(u),
                });
            }
        }
        Ok(Filter {
            since_ns: since,
            until_ns: until,
            ..Filter::default()
        })
    }

    fn sources(&self) -> Result<Vec<Source>, CliError> {
        let logs = if self.logs.is_empty() && self.events.is_empty() {
            vec![DEFAULT_LOG_GLOB.to_owned()]
        } else {
            self.logs.clone()
        };
        Ok(scan::sources(&logs, &self.events)?)
    }
}

impl Selectors {
    fn into_filter(self, window: Filter) -> Filter {
        Filter {
            tags: self.tags,
            ja4: self.ja4,
            ip: self.ip,
            request_id: self.request_id,
            conn_id: self.conn_id,
            ..window
        }
    }
}

fn summary(cmd: &str, quiet: bool, stats: &ScanStats, what: &str) {
    if !quiet {
        eprintln!("ja4sensor {cmd}: {}", stats.summary(what));
    }
}

/// `ja4sensor query`.
pub fn query(args: QueryArgs) -> ExitCode {
    let run = || -> Result<ScanStats, CliError> {
        let window = args.input.window()?;
        let mut sources = args.input.sources()?;
        let older = match window.since_ns {
            Some(s) => scan::drop_older_than(&mut sources, s),
            None => 0,
        };
        let filter = args.select.clone().into_filter(window);
        let output = if args.table {
            Output::Table
        } else {
            Output::JsonLines
        };
        let mut stats = query::to_stdout(&sources, &filter, output, args.input.threads)?;
        stats.files_older_than_since = older;
        Ok(stats)
    };
    match run() {
        Ok(stats) => {
            summary("query", args.input.quiet, &stats, "matches");
            ExitCode::from(if stats.matched > 0 { FOUND } else { NOTHING })
        }
        Err(e) => fail("query", e),
    }
}

/// `ja4sensor timeline`.
pub fn timeline(args: TimelineArgs) -> ExitCode {
    let run = || -> Result<timeline::Timeline, CliError> {
        let window = args.input.window()?;
        let sources = args.input.sources()?;
        let filter = args.select.clone().into_filter(window);
        let t = timeline::build(&sources, &filter, args.input.threads, args.max_roots)?;
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        let written = if args.json {
            timeline::write_json(&t, &mut out)
        } else {
            timeline::write_text(&t, &mut out)
        };
        match written.and_then(|()| out.flush()) {
            Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                Err(scan::ScanError::Output(e).into())
            }
            _ => Ok(t),
        }
    };
    match run() {
        Ok(t) => {
            if !args.input.quiet {
                if let Some(sel) = &t.selection {
                    summary(
                        "timeline",
                        false,
                        sel,
                        "lines and events chose the connections",
                    );
                }
                let roots = t.roots.len();
                summary(
                    "timeline",
                    false,
                    &t.stats,
                    &format!("entries in {roots} connections"),
                );
            }
            ExitCode::from(if t.roots.is_empty() { NOTHING } else { FOUND })
        }
        Err(e) => fail("timeline", e),
    }
}

/// `ja4sensor report`.
pub fn report(args: ReportArgs) -> ExitCode {
    let run = || -> Result<ReportData, CliError> {
        let window = args.input.window()?;
        let mapping = match &args.clients {
            Some(p) => Mapping::load(p)?,
            None => Mapping::default(),
        };
        let selector = if args.conn_id.is_some() || args.ip.is_some() {
            Some(Filter {
                conn_id: args.conn_id.clone(),
                ip: args.ip,
                ..window.clone()
            })
        } else {
            None
        };
        let selector_text = selector.as_ref().map(|_| {
            let mut parts = Vec::new();
            if let Some(c) = &args.conn_id {
                parts.push(format!("--conn-id {c}"));
            }
            if let Some(ip) = &args.ip {
                parts.push(format!("--ip {ip}"));
            }
            parts.join(" ")
        });
        let (tally, tl, truncated, origin) = match &args.clickhouse {
            None => {
                let sources = args.input.sources()?;
                let (tally, tl, truncated) = report::from_files(
                    &sources,
                    &window,
                    selector.as_ref(),
                    &mapping,
                    args.input.threads,
                )?;
                (tally, tl, truncated, Origin::Files(sources))
            }
            Some(url) => {
                let src = ChSource {
                    url: url.clone(),
                    database: args.database.clone(),
                    user: args.user.clone(),
                    password: args
                        .password
                        .clone()
                        .or_else(|| std::env::var("CLICKHOUSE_PASSWORD").ok())
                        .unwrap_or_default(),
                    timeout: Duration::from_secs(args.timeout),
                };
                let (tally, tl, truncated) =
                    from_clickhouse(&src, &window, selector.as_ref(), &mapping)?;
                (
                    tally,
                    tl,
                    truncated,
                    Origin::ClickHouse {
                        url: url.clone(),
                        database: args.database.clone(),
                    },
                )
            }
        };
        let data = ReportData {
            agg: tally.agg,
            timeline: tl,
            timeline_truncated: truncated,
            stats: tally.stats,
            since_ns: window.since_ns,
            until_ns: window.until_ns,
            generated_ns: time::now_ns(),
            origin,
            mapping_rows: mapping.len(),
            selector_text,
        };
        report::write(&data, &args.html)?;
        Ok(data)
    };
    match run() {
        Ok(d) => {
            if !args.input.quiet {
                eprintln!(
                    "ja4sensor report: {} written: {} requests, {} events; {}",
                    args.html.display(),
                    d.agg.requests,
                    d.agg.events,
                    d.stats.summary("lines and events in the window")
                );
            }
            ExitCode::from(FOUND)
        }
        Err(e) => fail("report", e),
    }
}

/// The report's data from ClickHouse: rows of the window, then every row of the connections the
/// selector chose.
pub fn from_clickhouse(
    src: &ChSource,
    window: &Filter,
    selector: Option<&Filter>,
    mapping: &Mapping,
) -> Result<(Tally, Option<timeline::Timeline>, bool), report::ReportError> {
    let mut tally = Tally::default();
    let mut stats = ScanStats::default();
    let scope = report::Scope::new(window, selector, mapping);
    src.window(window.since_ns, window.until_ns, &mut |line, role| {
        tally.add(&mut stats, line, role, &scope);
    })?;
    tally.stats = stats;
    let Some(_) = selector else {
        return Ok((tally, None, false));
    };
    let truncated = tally.roots.len() > report::MAX_TIMELINE_ROOTS;
    let roots: std::collections::BTreeSet<String> = tally
        .roots
        .iter()
        .take(report::MAX_TIMELINE_ROOTS)
        .cloned()
        .collect();
    let mut c = Collector::new(&roots);
    let mut st = ScanStats::default();
    src.roots(&roots, &mut |line, role| {
        c.add(&mut st, line, role);
    })?;
    let tl = Collector::finish(vec![c], st).map_err(report::ReportError::Timeline)?;
    Ok((tally, Some(tl), truncated))
}
