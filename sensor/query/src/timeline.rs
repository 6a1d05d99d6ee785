//! `ja4sensor timeline`: everything one client did, connection by connection. A connection
//! (`conn_id`, seed 004's root) is chosen when one of its lines or events matches the
//! selectors (`--conn-id`, `--ip`, `--ja4`, `--tag`, within `--since/--until`); then every line
//! and event of a chosen connection is shown, those outside the window too.
//!
//! Two passes over the files: the first finds the chosen connections (skipped for a bare
//! `--conn-id`), the second collects their lines and events (prefilter: any of their ids,
//! aho-corasick). Memory holds the answer, not the logs.
//!
//! Order, within a connection:
//! 1. the handshake, at the ClientHello time (`b_timestamp`, the earliest if lines disagree),
//!    or, for a connection without one (plain HTTP, orphans), a `connection` entry at its
//!    first request (httpd's accept time is not in the line);
//! 2. requests by (`time`, `sequence_number`), each with the gap since the previous request
//!    (the first: since the ClientHello);
//! 3. each event right after the request it points at (`parent_correlation_id`), events of one
//!    request by their time; an event whose request is not in the logs at its own time.
//!
//! Connections are ordered by their first entry, then by id.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};

use correlate_lib::fields;
use serde_json::value::RawValue;

use crate::filter::{json_string, Filter, Role};
use crate::object::Object;
use crate::query::fit;
use crate::scan::{self, Prefilter, ScanStats, Source};
use crate::time;

/// The ClientHello time of a correlated line (`b_timestamp`, Unix ns): the sensor's `timestamp`
/// under the merge prefix of its side.
static B_TIMESTAMP: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("{}{}", fields::PREFIX_B, fields::TIMESTAMP));

/// The fields an entry is made of (see [`raw_entry`]), for a log line and for an event.
static ENTRY_KEYS: std::sync::LazyLock<(Vec<String>, Vec<String>)> =
    std::sync::LazyLock::new(|| {
        let log = [
            fields::CONN_ID,
            fields::TIME,
            fields::TIMESTAMP,
            fields::SEQUENCE_NUMBER,
            fields::KEEPALIVES,
            fields::STREAM_ID,
            fields::REQUEST_ID,
            B_TIMESTAMP.as_str(),
        ];
        let events = [
            fields::ROOT_CORRELATION_ID,
            fields::EVENT_TIME_NS,
            fields::EVENT_TIME,
            fields::EVENT_ID,
            fields::PARENT_CORRELATION_ID,
        ];
        (
            log.iter().map(|s| (*s).to_owned()).collect(),
            events.iter().map(|s| (*s).to_owned()).collect(),
        )
    });

/// Default for `--max-roots`: beyond it the question is too wide for a timeline (narrow it with
/// `--since/--until`, or use `query`).
pub const DEFAULT_MAX_ROOTS: usize = 10_000;
/// The entries a timeline holds in memory (about 1 KiB each).
pub const MAX_ENTRIES: usize = 2_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error("more than {limit} connections match: narrow the question (--since/--until, another selector) or raise --max-roots")]
    TooManyRoots { limit: usize },
    #[error("the chosen connections have more than {MAX_ENTRIES} requests and events: narrow the question")]
    TooManyEntries,
    #[error("{0}")]
    Scan(#[from] scan::ScanError),
    #[error("prefilter over {roots} connection ids: {source}")]
    Prefilter {
        roots: usize,
        source: aho_corasick::BuildError,
    },
    #[error("writing the timeline: {0}")]
    Output(io::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Handshake,
    Connection,
    Request,
    Event,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Handshake => fields::ENTRY_HANDSHAKE,
            Kind::Connection => fields::ENTRY_CONNECTION,
            Kind::Request => fields::ENTRY_REQUEST,
            Kind::Event => fields::ENTRY_EVENT,
        }
    }
}

/// One entry of a connection's timeline.
#[derive(Debug, Clone)]
pub struct Entry {
    pub kind: Kind,
    pub time_ns: i64,
    /// A request's `sequence_number` (else `keepalives`); an event's: that of its request.
    pub seq: Option<u64>,
    pub stream_id: Option<u64>,
    /// `request_id` / `event_id`.
    pub id: Option<String>,
    /// An event's `parent_correlation_id`.
    pub parent: Option<String>,
    pub gap_ns: Option<i64>,
    /// The line or event as it is in its file; for a handshake, the line it was taken from.
    pub line: Box<str>,
}

/// One connection and its entries in order.
#[derive(Debug, Clone)]
pub struct Root {
    pub id: String,
    pub entries: Vec<Entry>,
    pub requests: usize,
    pub events: usize,
}

#[derive(Debug, Default)]
pub struct Timeline {
    pub roots: Vec<Root>,
    /// The pass that collected the entries (`matched`: entries from lines and events).
    pub stats: ScanStats,
    /// The pass that chose the connections (`matched`: lines and events matching the selectors).
    pub selection: Option<ScanStats>,
}

/// Builds the timeline of the connections `filter` chooses in `sources`.
pub fn build(
    sources: &[Source],
    filter: &Filter,
    threads: usize,
    max_roots: usize,
) -> Result<Timeline, TimelineError> {
    let (roots, selection) = choose_roots(sources, filter, threads, max_roots)?;
    let mut timeline = collect(sources, &roots, threads)?;
    timeline.selection = selection;
    Ok(timeline)
}

/// The connections chosen, and what the first pass read (none for a bare `--conn-id`).
fn choose_roots(
    sources: &[Source],
    filter: &Filter,
    threads: usize,
    max_roots: usize,
) -> Result<(BTreeSet<String>, Option<ScanStats>), TimelineError> {
    if let Some(c) = &filter.conn_id {
        let alone = filter.tags.is_empty()
            && filter.ja4.is_none()
            && filter.ip.is_none()
            && filter.request_id.is_none()
            && !filter.has_time_window();
        if alone {
            return Ok((BTreeSet::from([c.clone()]), None));
        }
    }
    let pre = Prefilter::all_of(filter.needles());
    let keys = [Role::Log, Role::Events].map(|role| {
        let mut k = filter.keys(role);
        k.push(root_key(role).to_owned());
        k
    });
    let per_file = scan::map_files(sources, threads, |src| {
        let mut found = BTreeSet::new();
        let mut too_many = false;
        let keys = match src.role {
            Role::Log => &keys[0],
            Role::Events => &keys[1],
        };
        let st = src.scan(&pre, &mut |line, st| {
            let Some(o) = st.parse_keys(line, keys) else {
                return true;
            };
            if !filter.matches(&o, src.role) {
                return true;
            }
            st.matched += 1;
            if let Some(root) = o.str(root_key(src.role)) {
                if !root.is_empty() {
                    found.insert(root.into_owned());
                }
            }
            too_many = found.len() > max_roots;
            !too_many
        });
        (found, st, too_many)
    });
    let mut roots = BTreeSet::new();
    let mut stats = ScanStats::default();
    for (found, st, too_many) in per_file {
        stats.merge(&st);
        roots.extend(found);
        if too_many || roots.len() > max_roots {
            return Err(TimelineError::TooManyRoots { limit: max_roots });
        }
    }
    Ok((roots, Some(stats)))
}

/// The field naming a line's or an event's connection.
fn root_key(role: Role) -> &'static str {
    match role {
        Role::Log => fields::CONN_ID,
        Role::Events => fields::ROOT_CORRELATION_ID,
    }
}

/// A line or event of a chosen connection, before ordering.
struct Raw {
    root: String,
    role: Role,
    time_ns: i64,
    seq: Option<u64>,
    stream_id: Option<u64>,
    id: Option<String>,
    parent: Option<String>,
    /// A log line's `b_timestamp` (ClientHello, Unix ns).
    hello_ns: Option<i64>,
    line: Box<str>,
}

fn raw_entry(o: &Object, line: &[u8], role: Role, root: String) -> Option<Raw> {
    let text = std::str::from_utf8(line).ok()?;
    Some(match role {
        Role::Log => Raw {
            root,
            role,
            time_ns: time::line_time_ns(o)?,
            seq: o
                .u64(fields::SEQUENCE_NUMBER)
                .or_else(|| o.u64(fields::KEEPALIVES)),
            stream_id: o.u64(fields::STREAM_ID),
            id: o.str(fields::REQUEST_ID).map(|s| s.into_owned()),
            parent: None,
            hello_ns: o
                .u64(&B_TIMESTAMP)
                .and_then(|n| i64::try_from(n).ok())
                .filter(|&n| n > 0),
            line: text.into(),
        },
        Role::Events => Raw {
            root,
            role,
            time_ns: time::event_time_ns(o)?,
            seq: None,
            stream_id: None,
            id: o.str(fields::EVENT_ID).map(|s| s.into_owned()),
            parent: o.str(fields::PARENT_CORRELATION_ID).map(|s| s.into_owned()),
            hello_ns: None,
            line: text.into(),
        },
    })
}

/// The entries of the connections `roots` in `sources`, ordered (the second pass).
pub fn collect(
    sources: &[Source],
    roots: &BTreeSet<String>,
    threads: usize,
) -> Result<Timeline, TimelineError> {
    if roots.is_empty() {
        return Ok(Timeline::default());
    }
    let needles: Vec<Vec<u8>> = roots.iter().map(|r| json_string(r)).collect();
    let pre = Prefilter::any_of(&needles, vec![]).map_err(|source| TimelineError::Prefilter {
        roots: roots.len(),
        source,
    })?;
    let per_file = scan::map_files(sources, threads, |src| {
        let mut c = Collector::new(roots);
        let st = src.scan(&pre, &mut |line, st| c.add(st, line, src.role));
        (c, st)
    });
    let mut stats = ScanStats::default();
    let mut parts = Vec::with_capacity(per_file.len());
    for (c, st) in per_file {
        stats.merge(&st);
        parts.push(c);
    }
    Collector::finish(parts, stats)
}

/// The lines and events of chosen connections, from files or from ClickHouse.
pub struct Collector<'r> {
    roots: &'r BTreeSet<String>,
    raws: Vec<Raw>,
    full: bool,
}

impl<'r> Collector<'r> {
    pub fn new(roots: &'r BTreeSet<String>) -> Self {
        Self {
            roots,
            raws: Vec::new(),
            full: false,
        }
    }

    /// Keeps `line` when it belongs to a chosen connection; false once [`MAX_ENTRIES`] are held.
    pub fn add(&mut self, st: &mut ScanStats, line: &[u8], role: Role) -> bool {
        let keys: &[String] = match role {
            Role::Log => &ENTRY_KEYS.0,
            Role::Events => &ENTRY_KEYS.1,
        };
        let Some(o) = st.parse_keys(line, keys) else {
            return true;
        };
        let Some(root) = o.str(root_key(role)) else {
            return true;
        };
        if !self.roots.contains(root.as_ref()) {
            return true;
        }
        if let Some(r) = raw_entry(&o, line, role, root.into_owned()) {
            st.matched += 1;
            self.raws.push(r);
        }
        self.full = self.raws.len() > MAX_ENTRIES;
        !self.full
    }

    /// The timeline of what `parts` kept.
    pub fn finish(parts: Vec<Collector>, stats: ScanStats) -> Result<Timeline, TimelineError> {
        let mut by_root: HashMap<String, Vec<Raw>> = HashMap::new();
        let mut n = 0usize;
        for c in parts {
            n += c.raws.len();
            if c.full || n > MAX_ENTRIES {
                return Err(TimelineError::TooManyEntries);
            }
            for r in c.raws {
                by_root.entry(r.root.clone()).or_default().push(r);
            }
        }
        let mut out: Vec<Root> = by_root
            .into_iter()
            .map(|(id, raws)| order_root(id, raws))
            .collect();
        out.sort_by(|a, b| {
            let first = |r: &Root| r.entries.first().map_or(i64::MAX, |e| e.time_ns);
            first(a).cmp(&first(b)).then_with(|| a.id.cmp(&b.id))
        });
        Ok(Timeline {
            roots: out,
            stats,
            selection: None,
        })
    }
}

fn order_root(id: String, raws: Vec<Raw>) -> Root {
    let (mut requests, events): (Vec<Raw>, Vec<Raw>) =
        raws.into_iter().partition(|r| r.role == Role::Log);
    requests.sort_by(|a, b| {
        (a.time_ns, a.seq.unwrap_or(u64::MAX)).cmp(&(b.time_ns, b.seq.unwrap_or(u64::MAX)))
    });
    let hello = requests
        .iter()
        .filter_map(|r| r.hello_ns.map(|h| (h, r)))
        .min_by_key(|(h, _)| *h);
    let mut entries = Vec::with_capacity(requests.len() + events.len() + 1);
    let mut prev = match (hello, requests.first()) {
        (Some((h, r)), _) => {
            entries.push(Entry {
                kind: Kind::Handshake,
                time_ns: h,
                seq: None,
                stream_id: None,
                id: None,
                parent: None,
                gap_ns: None,
                line: r.line.clone(),
            });
            Some(h)
        }
        (None, Some(first)) => {
            entries.push(Entry {
                kind: Kind::Connection,
                time_ns: first.time_ns,
                seq: None,
                stream_id: None,
                id: None,
                parent: None,
                gap_ns: None,
                line: first.line.clone(),
            });
            None
        }
        (None, None) => None,
    };
    // Events by the request they point at (a request id may be missing: its events then stand
    // at their own time).
    let mut by_parent: HashMap<&str, Vec<&Raw>> = HashMap::new();
    let known: std::collections::HashSet<&str> =
        requests.iter().filter_map(|r| r.id.as_deref()).collect();
    let mut loose: Vec<&Raw> = Vec::new();
    for e in &events {
        match e.parent.as_deref() {
            Some(p) if known.contains(p) => by_parent.entry(p).or_default().push(e),
            _ => loose.push(e),
        }
    }
    for list in by_parent.values_mut() {
        list.sort_by(|a, b| (a.time_ns, &a.id).cmp(&(b.time_ns, &b.id)));
    }
    loose.sort_by(|a, b| (a.time_ns, &a.id).cmp(&(b.time_ns, &b.id)));
    let mut loose = loose.into_iter().peekable();
    let event_entry = |e: &Raw, seq: Option<u64>, gap: Option<i64>| Entry {
        kind: Kind::Event,
        time_ns: e.time_ns,
        seq,
        stream_id: None,
        id: e.id.clone(),
        parent: e.parent.clone(),
        gap_ns: gap,
        line: e.line.clone(),
    };
    for r in &requests {
        while let Some(e) = loose.next_if(|e| e.time_ns < r.time_ns) {
            entries.push(event_entry(e, None, None));
        }
        entries.push(Entry {
            kind: Kind::Request,
            time_ns: r.time_ns,
            seq: r.seq,
            stream_id: r.stream_id,
            id: r.id.clone(),
            parent: None,
            gap_ns: prev.map(|p| r.time_ns - p),
            line: r.line.clone(),
        });
        prev = Some(r.time_ns);
        if let Some(list) = r.id.as_deref().and_then(|id| by_parent.remove(id)) {
            for e in list {
                entries.push(event_entry(e, r.seq, Some(e.time_ns - r.time_ns)));
            }
        }
    }
    entries.extend(loose.map(|e| event_entry(e, None, None)));
    Root {
        id,
        requests: requests.len(),
        events: events.len(),
        entries,
    }
}

/// `--json`: one object per entry (see `fields::TIMELINE_*`), connections one after the other.
pub fn write_json(t: &Timeline, out: &mut dyn Write) -> io::Result<()> {
    for root in &t.roots {
        for e in &root.entries {
            let mut m = serde_json::Map::new();
            m.insert(fields::ROOT_CORRELATION_ID.into(), root.id.clone().into());
            m.insert(fields::TIMELINE_ENTRY.into(), e.kind.as_str().into());
            m.insert(fields::TIME.into(), time::format_ns(e.time_ns).into());
            m.insert(fields::EVENT_TIME_NS.into(), e.time_ns.into());
            if let Some(id) = &e.id {
                m.insert(fields::CORRELATION_ID.into(), id.clone().into());
            }
            if let Some(p) = &e.parent {
                m.insert(fields::PARENT_CORRELATION_ID.into(), p.clone().into());
            }
            if let Some(s) = e.seq {
                m.insert(fields::SEQUENCE_NUMBER.into(), s.into());
            }
            if let Some(s) = e.stream_id {
                m.insert(fields::STREAM_ID.into(), s.into());
            }
            if let Some(g) = e.gap_ns {
                m.insert(fields::TIMELINE_GAP_NS.into(), g.into());
            }
            let head = serde_json::to_string(&m).map_err(io::Error::other)?;
            // The line itself goes in verbatim (it is valid JSON: it was parsed).
            let line: &RawValue = serde_json::from_str(&e.line).map_err(io::Error::other)?;
            let body = head.strip_suffix('}').unwrap_or(&head);
            writeln!(out, "{body},\"{}\":{}}}", fields::TIMELINE_LINE, line.get())?;
        }
    }
    out.flush()
}

/// What a person reads for one entry (without time and gap).
pub fn describe(e: &Entry) -> String {
    let Ok(o) = Object::parse(e.line.as_bytes()) else {
        return String::new();
    };
    let s = |k: &str| o.text(k).map(|v| v.into_owned()).unwrap_or_default();
    let opt = |label: &str, k: &str| match o.text(k) {
        Some(v) if !v.is_empty() => format!(" {label}{v}"),
        _ => String::new(),
    };
    match e.kind {
        Kind::Handshake => format!(
            "TLS {} sni={} alpn={} ja4={}{}{}{}{}",
            s(fields::TLS_VERSION),
            s(fields::TLS_SNI),
            s(fields::TLS_ALPN),
            s(fields::JA4),
            opt("client=", fields::JA4_CLIENT),
            opt("ttl=", fields::IP_META_TTL),
            opt("os=", fields::TCP_OS),
            opt("syn→hello ms=", fields::SYN_TO_CLIENTHELLO_MS),
        ),
        Kind::Connection => format!(
            "no handshake record{}{}",
            opt("orphan_reason=", fields::ORPHAN_REASON),
            opt("scheme=", fields::SCHEME),
        ),
        Kind::Request => {
            let mut d = format!(
                "{} {}{}{} {} {}",
                s(fields::METHOD),
                s(fields::HOST),
                s(fields::PATH),
                match o.text(fields::QUERY) {
                    Some(q) if !q.is_empty() => format!("?{q}"),
                    _ => String::new(),
                },
                s(fields::HTTP_VERSION),
                s(fields::STATUS)
            );
            d.push_str(&opt("ua=", &format!("{}User-Agent", fields::HEADER_PREFIX)));
            for (k, _) in o.entries() {
                if let Some(tag) = k.strip_prefix(fields::TAG_PREFIX) {
                    d.push_str(&format!(" {tag}={}", s(k)));
                }
            }
            d.push_str(&opt("id=", fields::REQUEST_ID));
            d
        }
        Kind::Event => format!(
            "{} {} rule={}: {}",
            s(fields::EVENT_SEVERITY),
            s(fields::EVENT_TYPE),
            s(fields::EVENT_RULE),
            s(fields::EVENT_SUMMARY)
        ),
    }
}

/// The heading of a connection: its addresses and counts.
pub fn heading(root: &Root) -> String {
    let first_line = root
        .entries
        .iter()
        .find(|e| e.kind != Kind::Event)
        .and_then(|e| Object::parse(e.line.as_bytes()).ok());
    let addr = |o: &Object, ip: &str, port: &str| match (o.str(ip), o.u64(port)) {
        (Some(i), Some(p)) if i.contains(':') => format!("[{i}]:{p}"),
        (Some(i), Some(p)) => format!("{i}:{p}"),
        (Some(i), None) => i.into_owned(),
        _ => "?".into(),
    };
    let (src, dst) = first_line.map_or_else(
        || ("?".to_owned(), "?".to_owned()),
        |o| {
            (
                addr(&o, fields::SRC_IP, fields::SRC_PORT),
                addr(&o, fields::DST_IP, fields::DST_PORT),
            )
        },
    );
    let span = match (root.entries.first(), root.entries.last()) {
        (Some(a), Some(b)) => time::format_gap(b.time_ns - a.time_ns),
        _ => String::new(),
    };
    format!(
        "connection {}  {src} -> {dst}  {} requests, {} events over {span}",
        fit(&root.id, 0),
        root.requests,
        root.events
    )
}

/// Human text: one block per connection.
pub fn write_text(t: &Timeline, out: &mut dyn Write) -> io::Result<()> {
    for (i, root) in t.roots.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{}", heading(root))?;
        for e in &root.entries {
            let label = match (e.kind, e.seq, e.stream_id) {
                (Kind::Request, Some(s), Some(st)) => format!("#{s} s{st}"),
                (Kind::Request, Some(s), None) => format!("#{s}"),
                (Kind::Request, None, _) => "#?".into(),
                (Kind::Event, _, _) => "  event".into(),
                (k, _, _) => k.as_str().into(),
            };
            let gap = e
                .gap_ns
                .map(|g| format!("+{}", time::format_gap(g)))
                .unwrap_or_default();
            writeln!(
                out,
                "  {}  {label:<10} {gap:>12}  {}",
                time::format_ns(e.time_ns),
                fit(&describe(e), 0)
            )?;
        }
    }
    out.flush()
}
