//! Events (seed 003): what modules dispatch. A standard event is a notice, warning or error
//! with a summary and a data block; an *audit event* has a fixed, declared field list
//! ([`AuditType`]) and is meant to become a row (the `csv` listener writes one file per audit
//! type). Every event carries the correlation ids of the line that caused it
//! (`parent_correlation_id` = its `request_id`, `root_correlation_id` = its `conn_id`) and the
//! line's `tag_*` fields. One flat JSON object per event (field names: `correlate_lib::fields`).

use std::borrow::Cow;
use std::fmt::Write as _;

use correlate_lib::fields;
use serde::Deserialize;
use serde_json::Value;

use crate::line::{format_rfc3339_us, Line, Scalar};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Notice,
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Event,
    Audit,
}

/// An audit event type: its name and the fields every event of it has, in this order (seed
/// 003's `CaptureStatsEvent`). `N` makes a missing or extra field a compile error.
#[derive(Debug)]
pub struct AuditType<const N: usize> {
    pub name: &'static str,
    pub fields: [&'static str; N],
}

impl<const N: usize> AuditType<N> {
    /// An audit event of this type with `values` for its declared fields.
    pub fn event(
        &self,
        module: &'static str,
        rule: &str,
        summary: String,
        values: [Value; N],
        ctx: &Context,
    ) -> Event {
        let data = self
            .fields
            .iter()
            .zip(values)
            .map(|(k, v)| (Cow::Borrowed(*k), v))
            .collect();
        Event {
            kind: Kind::Audit,
            severity: Severity::Notice,
            type_name: self.name.to_owned(),
            module,
            rule: rule.to_owned(),
            summary,
            data,
            ctx: ctx.clone(),
        }
    }
}

/// What an event inherits from the line that caused it (or, for statistics, from nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Log time of the line (wall clock for statistics), Unix ns.
    pub time_ns: u64,
    pub parent_correlation_id: Option<String>,
    pub root_correlation_id: Option<String>,
    pub tags: Vec<(String, String)>,
    pub src_ip: Option<String>,
    pub ja4: Option<String>,
    pub host: Option<String>,
    /// Identity of the line for event ids: hash of its bytes and where it was read.
    pub line_id: u64,
}

impl Context {
    /// The context of a line read at `offset` of a file (ids stay the same on a replay).
    pub fn of_line(line: &Line, raw: &[u8], offset: u64, fallback_ns: u64) -> Self {
        let s = |f: &str| line.str(f).map(str::to_owned);
        let conn_id = s(fields::CONN_ID).or_else(|| {
            // Lines older than `conn_id`: the 4-tuple, as the sensor names a flow.
            let port = |f| line.get(f).and_then(Scalar::as_u64);
            Some(format!(
                "{}:{}-{}:{}",
                line.str(fields::SRC_IP)?,
                port(fields::SRC_PORT)?,
                line.str(fields::DST_IP)?,
                port(fields::DST_PORT)?
            ))
        });
        let parent = s(fields::REQUEST_ID).or_else(|| {
            // Before `request_id`: the connection and the request's position on it.
            let n = line
                .get(fields::SEQUENCE_NUMBER)
                .or_else(|| line.get(fields::KEEPALIVES))
                .and_then(Scalar::as_u64)?;
            Some(format!("{}-{n}", conn_id.as_deref()?))
        });
        let tags = line
            .tags()
            .filter_map(|(k, v)| {
                let mut t = String::new();
                v.write_text(&mut t).then(|| (k.to_owned(), t))
            })
            .collect();
        Self {
            time_ns: line.time_ns().unwrap_or(fallback_ns),
            parent_correlation_id: parent,
            root_correlation_id: conn_id,
            tags,
            src_ip: s(fields::SRC_IP),
            ja4: s(fields::JA4),
            host: s(fields::HOST),
            line_id: xxhash_rust::xxh3::xxh3_64_with_seed(raw, offset),
        }
    }

    /// Statistics: wall clock, no line.
    pub fn now() -> Self {
        Self {
            time_ns: correlate_lib::unix_now_ns(),
            ..Self::default()
        }
    }
}

/// What a module gets with each line: its log time now, and its [`Context`] built only if the
/// module dispatches an event (most lines raise none; their ids and tags are never copied).
pub struct LineCtx<'a> {
    /// Log time of the line (Unix ns).
    pub time_ns: u64,
    raw: &'a [u8],
    offset: u64,
    fallback_ns: u64,
    built: std::cell::OnceCell<Context>,
}

impl<'a> LineCtx<'a> {
    /// A line without a time of its own gets the wall clock.
    pub fn of_line(line: &Line, raw: &'a [u8], offset: u64) -> Self {
        let time_ns = line.time_ns().unwrap_or_else(correlate_lib::unix_now_ns);
        Self {
            time_ns,
            raw,
            offset,
            fallback_ns: time_ns,
            built: std::cell::OnceCell::new(),
        }
    }

    /// A line at `time_ns` whose context is empty (tests, synthetic lines).
    pub fn at(time_ns: u64) -> LineCtx<'static> {
        let built = std::cell::OnceCell::new();
        let _ = built.set(Context {
            time_ns,
            ..Context::default()
        });
        LineCtx {
            time_ns,
            raw: b"",
            offset: 0,
            fallback_ns: time_ns,
            built,
        }
    }

    /// The context of `line` (the line this was made for), built on first use.
    pub fn context(&self, line: &Line) -> &Context {
        self.built
            .get_or_init(|| Context::of_line(line, self.raw, self.offset, self.fallback_ns))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub severity: Severity,
    pub type_name: String,
    pub module: &'static str,
    pub rule: String,
    pub summary: String,
    /// Scalars only (strings, numbers, booleans).
    pub data: Vec<(Cow<'static, str>, Value)>,
    pub ctx: Context,
}

impl Event {
    /// A notice, warning or error event.
    pub fn new(
        severity: Severity,
        type_name: &str,
        module: &'static str,
        rule: &str,
        summary: String,
        data: Vec<(Cow<'static, str>, Value)>,
        ctx: &Context,
    ) -> Self {
        Self {
            kind: Kind::Event,
            severity,
            type_name: type_name.to_owned(),
            module,
            rule: rule.to_owned(),
            summary,
            data,
            ctx: ctx.clone(),
        }
    }

    /// `notice`, `warning`, `error`, or `audit` for an audit event.
    pub fn severity_str(&self) -> &'static str {
        match self.kind {
            Kind::Audit => "audit",
            Kind::Event => self.severity.as_str(),
        }
    }

    /// Unique per event, and the same on a replay of the same file: the line's identity, the
    /// event's type and rule, and a sequence number of the line's events (`n`).
    pub fn event_id(&self, n: u32) -> String {
        let mut seed = format!(
            "{}\u{1f}{}\u{1f}{}\u{1f}{n}",
            self.type_name, self.rule, self.module
        );
        if self.ctx.line_id == 0 {
            // Statistics: no line; their time makes them unique.
            let _ = write!(seed, "\u{1f}{}", self.ctx.time_ns);
        }
        format!(
            "{:032x}",
            xxhash_rust::xxh3::xxh3_128_with_seed(seed.as_bytes(), self.ctx.line_id)
        )
    }

    /// The event as one JSON object (no newline), `emitted_ns` its dispatch time. Written
    /// straight into the string (no intermediate map): an event is made for most of its lines
    /// on a busy attack, so this is on the engine's hot path.
    pub fn to_json(&self, event_id: &str, emitted_ns: u64) -> String {
        let c = &self.ctx;
        let mut w = JsonObject::with_capacity(512 + 64 * self.data.len());
        w.str(fields::EVENT_TIME, &format_rfc3339_us(c.time_ns));
        w.raw(fields::EVENT_TIME_NS, itoa::Buffer::new().format(c.time_ns));
        w.str(fields::EVENT_EMITTED, &format_rfc3339_us(emitted_ns));
        w.str(fields::EVENT_ID, event_id);
        w.str(fields::EVENT_SEVERITY, self.severity_str());
        w.str(
            fields::EVENT_KIND,
            match self.kind {
                Kind::Event => "event",
                Kind::Audit => "audit",
            },
        );
        w.str(fields::EVENT_TYPE, &self.type_name);
        w.str(fields::EVENT_MODULE, self.module);
        w.str(fields::EVENT_RULE, &self.rule);
        w.str(fields::EVENT_SUMMARY, &self.summary);
        w.str(
            fields::PARENT_CORRELATION_ID,
            c.parent_correlation_id.as_deref().unwrap_or(""),
        );
        w.str(
            fields::ROOT_CORRELATION_ID,
            c.root_correlation_id.as_deref().unwrap_or(""),
        );
        w.key(fields::CORRELATION_TAGS);
        w.nested(
            c.tags
                .iter()
                .map(|(k, v)| (k.as_str(), Value::from(v.as_str()))),
        );
        for (k, v) in [
            (fields::SRC_IP, &c.src_ip),
            (fields::JA4, &c.ja4),
            (fields::HOST, &c.host),
        ] {
            if let Some(v) = v {
                w.str(k, v);
            }
        }
        w.key(fields::EVENT_DATA);
        w.nested(self.data.iter().map(|(k, v)| (k.as_ref(), v.clone())));
        w.finish()
    }

    pub fn data(&self, key: &str) -> Option<&Value> {
        self.data.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// A JSON object written field by field (values escaped by serde_json).
struct JsonObject {
    buf: Vec<u8>,
    first: bool,
}

impl JsonObject {
    fn with_capacity(n: usize) -> Self {
        let mut buf = Vec::with_capacity(n);
        buf.push(b'{');
        Self { buf, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.buf.push(b',');
        }
        self.first = false;
        // Serializing a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, k);
        self.buf.push(b':');
    }

    fn str(&mut self, k: &str, v: &str) {
        self.key(k);
        let _ = serde_json::to_writer(&mut self.buf, v);
    }

    fn raw(&mut self, k: &str, v: &str) {
        self.key(k);
        self.buf.extend_from_slice(v.as_bytes());
    }

    fn nested<'k>(&mut self, items: impl Iterator<Item = (&'k str, Value)>) {
        let mut inner = JsonObject {
            buf: std::mem::take(&mut self.buf),
            first: true,
        };
        inner.buf.push(b'{');
        for (k, v) in items {
            inner.key(k);
            let _ = serde_json::to_writer(&mut inner.buf, &v);
        }
        inner.buf.push(b'}');
        self.buf = inner.buf;
    }

    fn finish(mut self) -> String {
        self.buf.push(b'}');
        // Only UTF-8 went in (str and serde_json output).
        String::from_utf8(self.buf).unwrap_or_default()
    }
}

/// `ModuleStats`: every module's statistics, every `stats_interval_s` and at the end of a
/// replay. One declared field list for all modules (a module leaves what it does not count 0):
/// counters since the detector started.
pub const MODULE_STATS: AuditType<8> = AuditType {
    name: "ModuleStats",
    fields: [
        "lines",
        "bytes",
        "correlated",
        "orphans",
        "matched",
        "events",
        "tracked",
        "evicted",
    ],
};

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_the_ids_and_tags_of_its_line() {
        let raw = br#"{"time":"2026-11-25T07:40:01.123456Z","src_ip":"10.0.0.1","conn_id":"Xk3p-1a","request_id":"Xk3p-1a-2","ja4":"t13d","host":"h","tag_case":"INC-1","tag_n":7}"#;
        let line = Line::parse(raw).unwrap();
        let ctx = Context::of_line(&line, raw, 0, 0);
        let ev = Event::new(
            Severity::Warning,
            "T",
            "threshold",
            "r",
            "s".into(),
            vec![("k".into(), 1.into())],
            &ctx,
        );
        let v: Value = serde_json::from_str(&ev.to_json(&ev.event_id(0), 5)).unwrap();
        assert_eq!(v["parent_correlation_id"], "Xk3p-1a-2");
        assert_eq!(v["root_correlation_id"], "Xk3p-1a");
        assert_eq!(
            v["correlation_tags"],
            serde_json::json!({"case": "INC-1", "n": "7"})
        );
        assert_eq!(v["time"], "2026-11-25T07:40:01.123456Z");
        assert_eq!(v["time_ns"], 1_795_592_401_123_456_000u64);
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["kind"], "event");
        assert_eq!(
            (v["src_ip"].as_str(), v["ja4"].as_str(), v["host"].as_str()),
            (Some("10.0.0.1"), Some("t13d"), Some("h"))
        );
        assert_eq!(v["data"]["k"], 1);
        assert_ne!(ev.event_id(0), ev.event_id(1));
        assert_eq!(
            ev.event_id(0),
            Event::new(
                Severity::Warning,
                "T",
                "threshold",
                "r",
                "x".into(),
                vec![],
                &Context::of_line(&line, raw, 0, 0)
            )
            .event_id(0)
        );
    }

    #[test]
    fn lines_without_request_id_fall_back_to_conn_id_and_keepalives() {
        let raw = br#"{"src_ip":"10.0.0.1","src_port":5,"dst_ip":"10.0.0.2","dst_port":443,"keepalives":3}"#;
        let line = Line::parse(raw).unwrap();
        let ctx = Context::of_line(&line, raw, 0, 9);
        assert_eq!(
            ctx.root_correlation_id.as_deref(),
            Some("10.0.0.1:5-10.0.0.2:443")
        );
        assert_eq!(
            ctx.parent_correlation_id.as_deref(),
            Some("10.0.0.1:5-10.0.0.2:443-3")
        );
        assert_eq!(ctx.time_ns, 9);
    }

    #[test]
    fn audit_events_have_exactly_their_declared_fields() {
        let ev = MODULE_STATS.event(
            "report",
            "",
            "s".into(),
            std::array::from_fn(|i| (i as u64).into()),
            &Context::now(),
        );
        let names: Vec<&str> = ev.data.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, MODULE_STATS.fields);
        assert_eq!(ev.severity_str(), "audit");
    }
}
