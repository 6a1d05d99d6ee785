//! `threshold`: seed 003's SSHLoginTriesExceeded, generalised. A rule counts the lines that
//! match all its conditions, per key (the values of its `key` fields: `src_ip`, `ja4`,
//! `ja4`+`host`, a header...). When `count` of them fall inside a sliding window of
//! `window_ms` (log time), it dispatches ONE event and stays quiet for that key until the key
//! has had no matching line for `quiet_ms`; then it re-arms.
//!
//! Memory is bounded: each rule tracks at most `max_keys` keys, the least recently matched one
//! is forgotten first (counted as evicted); a key holds the times of at most `count` matches.

use std::num::NonZeroUsize;

use lru::LruCache;
use serde_json::Value;

use super::{Metric, Module, Stats};
use crate::config::{ConditionConfig, RuleConfig};
use crate::event::{Event, LineCtx, Severity};
use crate::line::{Line, Scalar};

/// One field condition.
#[derive(Debug, Clone)]
pub struct Condition {
    field: String,
    op: Op,
}

#[derive(Debug, Clone)]
enum Op {
    Equals(Expected),
    NotEquals(Expected),
    Prefix(String),
    Regex(regex::Regex),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    /// Lowest value of the class (400 for `4xx`).
    StatusClass(u64),
    Exists(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Expected {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Expected {
    fn from_yaml(v: &serde_yaml::Value) -> Result<Self, String> {
        match v {
            serde_yaml::Value::String(s) => Ok(Expected::Str(s.clone())),
            serde_yaml::Value::Number(n) => n
                .as_f64()
                .map(Expected::Num)
                .ok_or_else(|| "a number".into()),
            serde_yaml::Value::Bool(b) => Ok(Expected::Bool(*b)),
            _ => Err("expected a string, number or boolean to compare with".into()),
        }
    }

    fn matches(&self, v: &Scalar) -> bool {
        match (self, v) {
            (Expected::Str(e), Scalar::Str(s)) => e == s,
            (Expected::Num(e), v) => v.as_f64() == Some(*e),
            (Expected::Bool(e), Scalar::Bool(b)) => e == b,
            _ => false,
        }
    }
}

impl Condition {
    /// The condition a config entry describes, or what is wrong with it.
    pub fn from_config(c: &ConditionConfig) -> Result<Self, String> {
        if c.field.is_empty() {
            return Err("expected a field name in `field`".into());
        }
        let mut ops: Vec<Op> = Vec::new();
        if let Some(v) = &c.equals {
            ops.push(Op::Equals(Expected::from_yaml(v)?));
        }
        if let Some(v) = &c.not_equals {
            ops.push(Op::NotEquals(Expected::from_yaml(v)?));
        }
        if let Some(p) = &c.prefix {
            ops.push(Op::Prefix(p.clone()));
        }
        if let Some(r) = &c.regex {
            ops.push(Op::Regex(
                regex::Regex::new(r).map_err(|e| format!("bad regex: {e}"))?,
            ));
        }
        for (v, f) in [
            (c.gt, Op::Gt as fn(f64) -> Op),
            (c.ge, Op::Ge),
            (c.lt, Op::Lt),
            (c.le, Op::Le),
        ] {
            if let Some(v) = v {
                ops.push(f(v));
            }
        }
        if let Some(s) = &c.status_class {
            let b = s.as_bytes();
            let ok =
                b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx");
            if !ok {
                return Err(format!(
                    "status_class {s:?}: expected 1xx, 2xx, 3xx, 4xx or 5xx"
                ));
            }
            ops.push(Op::StatusClass(u64::from(b[0] - b'0') * 100));
        }
        if let Some(e) = c.exists {
            ops.push(Op::Exists(e));
        }
        if ops.len() != 1 {
            return Err(format!(
                "expected exactly one of equals, not_equals, prefix, regex, gt, ge, lt, le, status_class, exists (found {})",
                ops.len()
            ));
        }
        Ok(Self {
            field: c.field.clone(),
            op: ops.remove(0),
        })
    }

    pub fn matches(&self, line: &Line) -> bool {
        let v = line.get(&self.field).filter(|v| !matches!(v, Scalar::Null));
        match (&self.op, v) {
            (Op::Exists(e), v) => v.is_some() == *e,
            (Op::NotEquals(e), None) => {
                let _ = e;
                true
            }
            (_, None) => false,
            (Op::Equals(e), Some(v)) => e.matches(v),
            (Op::NotEquals(e), Some(v)) => !e.matches(v),
            (Op::Prefix(p), Some(v)) => v.as_str().is_some_and(|s| s.starts_with(p.as_str())),
            (Op::Regex(r), Some(v)) => v.as_str().is_some_and(|s| r.is_match(s)),
            (Op::Gt(x), Some(v)) => v.as_f64().is_some_and(|n| n > *x),
            (Op::Ge(x), Some(v)) => v.as_f64().is_some_and(|n| n >= *x),
            (Op::Lt(x), Some(v)) => v.as_f64().is_some_and(|n| n < *x),
            (Op::Le(x), Some(v)) => v.as_f64().is_some_and(|n| n <= *x),
            (Op::StatusClass(lo), Some(v)) => {
                v.as_u64().is_some_and(|n| (*lo..*lo + 100).contains(&n))
            }
        }
    }
}

/// Per-key state.
#[derive(Debug)]
struct KeyState {
    /// Times (log ns) of the matches inside the window, oldest first; at most `count`.
    times: std::collections::VecDeque<u64>,
    /// An event was dispatched and the key has not been quiet since.
    fired: bool,
    last_ns: u64,
}

struct Rule {
    name: String,
    key: Vec<String>,
    count: u32,
    window_ns: u64,
    quiet_ns: u64,
    severity: Severity,
    event_type: String,
    when: Vec<Condition>,
    keys: LruCache<Box<str>, KeyState>,
    matched: u64,
    no_key: u64,
    events: u64,
    evicted: u64,
}

impl Rule {
    fn on_line(&mut self, line: &Line, ctx: &LineCtx, keybuf: &mut String, out: &mut Vec<Event>) {
        if !self.when.iter().all(|c| c.matches(line)) {
            return;
        }
        self.matched += 1;
        keybuf.clear();
        for (i, f) in self.key.iter().enumerate() {
            if i > 0 {
                keybuf.push('\u{1f}');
            }
            let written = line.get(f).is_some_and(|v| v.write_text(keybuf));
            if !written {
                self.no_key += 1;
                return;
            }
        }
        let t = ctx.time_ns;
        let st = match self.keys.get_mut(keybuf.as_str()) {
            Some(st) => st,
            None => {
                let fresh = KeyState {
                    times: std::collections::VecDeque::new(),
                    fired: false,
                    last_ns: t,
                };
                if let Some((old, _)) = self.keys.push(keybuf.as_str().into(), fresh) {
                    if *old != *keybuf.as_str() {
                        self.evicted += 1;
                    }
                }
                match self.keys.get_mut(keybuf.as_str()) {
                    Some(st) => st,
                    None => return,
                }
            }
        };
        if st.fired {
            if t.saturating_sub(st.last_ns) >= self.quiet_ns {
                st.fired = false;
                st.times.clear();
            } else {
                st.last_ns = t.max(st.last_ns);
                return;
            }
        }
        st.last_ns = t.max(st.last_ns);
        // Inside the window: less than `window_ns` before this line.
        while st
            .times
            .front()
            .is_some_and(|&x| t.saturating_sub(x) >= self.window_ns)
        {
            st.times.pop_front();
        }
        st.times.push_back(t);
        if st.times.len() < self.count as usize {
            return;
        }
        let first = st.times.front().copied().unwrap_or(t);
        st.fired = true;
        st.times = std::collections::VecDeque::new();
        self.events += 1;
        let mut data: Vec<(std::borrow::Cow<'static, str>, Value)> = vec![
            ("key".into(), keybuf.replace('\u{1f}', " ").into()),
            ("count".into(), self.count.into()),
            ("window_ms".into(), (self.window_ns / 1_000_000).into()),
            ("first_ns".into(), first.into()),
            ("last_ns".into(), t.into()),
        ];
        for f in &self.key {
            if let Some(v) = line.get(f) {
                data.push((format!("key_{f}").into(), v.to_json()));
            }
        }
        let summary = format!(
            "{}: {} matching lines from {} within {} ms",
            self.name,
            self.count,
            self.key
                .iter()
                .zip(keybuf.split('\u{1f}'))
                .map(|(f, v)| format!("{f}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
            self.window_ns / 1_000_000
        );
        out.push(Event::new(
            self.severity,
            &self.event_type,
            "threshold",
            &self.name,
            summary,
            data,
            ctx.context(line),
        ));
    }
}

pub struct Threshold {
    rules: Vec<Rule>,
    lines: u64,
    keybuf: String,
}

impl Threshold {
    /// The rules of the config (already validated: a bad condition is skipped with a log line).
    pub fn new(rules: &[RuleConfig], max_keys: usize) -> Self {
        let cap = NonZeroUsize::new(max_keys).unwrap_or(NonZeroUsize::MIN);
        let rules = rules
            .iter()
            .map(|r| Rule {
                name: r.name.clone(),
                key: r.key.clone(),
                count: r.count.max(1),
                window_ns: r.window_ms.saturating_mul(1_000_000),
                quiet_ns: r.quiet_ms.saturating_mul(1_000_000),
                severity: r.severity,
                event_type: r.event_type.clone(),
                when: r
                    .when
                    .iter()
                    .filter_map(|c| match Condition::from_config(c) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            log::error!("threshold rule {}: condition skipped: {e}", r.name);
                            None
                        }
                    })
                    .collect(),
                keys: LruCache::new(cap),
                matched: 0,
                no_key: 0,
                events: 0,
                evicted: 0,
            })
            .collect();
        Self {
            rules,
            lines: 0,
            keybuf: String::new(),
        }
    }
}

impl Module for Threshold {
    fn name(&self) -> &'static str {
        "threshold"
    }

    fn on_line(&mut self, line: &Line, ctx: &LineCtx, out: &mut Vec<Event>) {
        self.lines += 1;
        for r in &mut self.rules {
            r.on_line(line, ctx, &mut self.keybuf, out);
        }
    }

    fn stats(&self) -> Stats {
        let sum = |f: fn(&Rule) -> u64| self.rules.iter().map(f).sum();
        Stats {
            lines: self.lines,
            matched: sum(|r| r.matched),
            events: sum(|r| r.events),
            tracked: sum(|r| r.keys.len() as u64),
            evicted: sum(|r| r.evicted),
            ..Stats::default()
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let mut m = Vec::new();
        for r in &self.rules {
            let name = |what: &str| format!("threshold_{what}{{rule=\"{}\"}}", r.name);
            m.push(Metric {
                name: name("matched_total"),
                help: "lines that matched the rule's conditions",
                kind: "counter",
                value: r.matched,
            });
            m.push(Metric {
                name: name("no_key_total"),
                help: "matching lines without every key field",
                kind: "counter",
                value: r.no_key,
            });
            m.push(Metric {
                name: name("events_total"),
                help: "events dispatched",
                kind: "counter",
                value: r.events,
            });
            m.push(Metric {
                name: name("keys"),
                help: "keys tracked",
                kind: "gauge",
                value: r.keys.len() as u64,
            });
            m.push(Metric {
                name: name("evicted_total"),
                help: "keys forgotten to stay within max_keys",
                kind: "counter",
                value: r.evicted,
            });
        }
        m
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn rule(count: u32, window_ms: u64, quiet_ms: u64, when: Vec<ConditionConfig>) -> RuleConfig {
        RuleConfig {
            name: "r".into(),
            count,
            window_ms,
            quiet_ms,
            when,
            ..RuleConfig::default()
        }
    }

    #[test]
    fn keys_short_and_long_are_told_apart() {
        // Keys of many lengths: each its own count, evicted keys counted.
        let ips: Vec<String> = [1, 53, 54, 55, 200]
            .iter()
            .flat_map(|&n| ["a", "b"].map(|c| c.repeat(n)))
            .collect();
        let mut t = Threshold::new(&[rule(2, 10_000, 0, vec![])], 100);
        let once: Vec<_> = ips.iter().map(|ip| (1, ip.as_str(), 200)).collect();
        assert!(feed(&mut t, &once).is_empty());
        assert_eq!(feed(&mut t, &once).len(), ips.len());
        assert_eq!(t.stats().tracked, ips.len() as u64);
        let mut small = Threshold::new(&[rule(2, 10_000, 0, vec![])], 2);
        assert!(feed(&mut small, &once).is_empty());
        assert_eq!(small.stats().evicted, ips.len() as u64 - 2);
    }

    /// Feeds `(ms, src_ip, status)` lines; returns the times (ms) of the events.
    fn feed(t: &mut Threshold, lines: &[(u64, &str, u64)]) -> Vec<u64> {
        let mut fired = Vec::new();
        for (ms, ip, status) in lines {
            let raw = format!(r#"{{"src_ip":"{ip}","status":{status},"path":"/login"}}"#);
            let l = Line::parse(raw.as_bytes()).unwrap();
            let ctx = LineCtx::at(ms * MS);
            let mut out = Vec::new();
            t.on_line(&l, &ctx, &mut out);
            fired.extend(out.iter().map(|_| *ms));
        }
        fired
    }

    #[test]
    fn n_lines_inside_the_window_fire_once_not_once_per_line() {
        let mut t = Threshold::new(&[rule(3, 1000, 5000, vec![])], 100);
        let lines: Vec<_> = (0..10).map(|i| (i * 10, "a", 200)).collect();
        assert_eq!(feed(&mut t, &lines), [20]);
        assert_eq!(t.stats().events, 1);
    }

    #[test]
    fn matches_spread_wider_than_the_window_never_fire() {
        let mut t = Threshold::new(&[rule(3, 1000, 0, vec![])], 100);
        let lines: Vec<_> = (0..10).map(|i| (i * 600, "a", 200)).collect();
        assert!(feed(&mut t, &lines).is_empty());
        // The window slides: 3 inside any 1000 ms fire even if earlier ones were outside.
        assert_eq!(feed(&mut t, &[(6000, "a", 200), (6100, "a", 200)]), [6100]);
    }

    #[test]
    fn the_rule_re_arms_only_after_a_quiet_period() {
        let mut t = Threshold::new(&[rule(2, 1000, 3000, vec![])], 100);
        // Fires at 100; keeps matching every 500 ms (never quiet for 3 s): no second event.
        let busy: Vec<_> = (0..12).map(|i| (i * 500, "a", 200)).collect();
        assert_eq!(feed(&mut t, &busy), [500]);
        // Quiet from 5500 to 9000 (3.5 s), then two quick ones: armed again, fires.
        assert_eq!(feed(&mut t, &[(9000, "a", 200), (9100, "a", 200)]), [9100]);
    }

    #[test]
    fn keys_are_counted_apart_and_conditions_filter() {
        let cond = ConditionConfig {
            field: "status".into(),
            status_class: Some("4xx".into()),
            ..Default::default()
        };
        let mut t = Threshold::new(&[rule(2, 1000, 0, vec![cond])], 100);
        let fired = feed(
            &mut t,
            &[
                (0, "a", 404),
                (1, "b", 403),
                (2, "a", 200),
                (3, "b", 401),
                (4, "a", 500),
            ],
        );
        assert_eq!(fired, [3], "only b had two 4xx lines");
        assert_eq!(t.stats().matched, 3);
    }

    #[test]
    fn the_key_table_is_bounded_and_evictions_counted() {
        let mut t = Threshold::new(&[rule(2, 10_000, 0, vec![])], 3);
        let ips = ["a", "b", "c", "d", "e"];
        let lines: Vec<_> = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (i as u64, *ip, 200))
            .collect();
        feed(&mut t, &lines);
        let s = t.stats();
        assert_eq!((s.tracked, s.evicted), (3, 2));
        // "a" was evicted: its second line starts a new count instead of firing.
        assert!(feed(&mut t, &[(10, "a", 200)]).is_empty());
        assert_eq!(feed(&mut t, &[(11, "e", 200)]), [11]);
    }

    #[test]
    fn conditions() {
        let c = |f: &str, yaml: &str| {
            let mut cfg: ConditionConfig = serde_yaml::from_str(yaml).unwrap();
            cfg.field = f.into();
            Condition::from_config(&cfg).unwrap()
        };
        let l = Line::parse(br#"{"method":"POST","path":"/api/v1/login","status":401,"bytes_sent":"12","correlated":false}"#).unwrap();
        assert!(c("method", "equals: POST").matches(&l));
        assert!(c("status", "equals: 401").matches(&l));
        assert!(c("correlated", "equals: false").matches(&l));
        assert!(!c("method", "not_equals: POST").matches(&l));
        assert!(c("ja4", "not_equals: x").matches(&l));
        assert!(c("path", "prefix: /api/").matches(&l));
        assert!(c("path", "regex: '^/api/v[0-9]+/login$'").matches(&l));
        assert!(c("status", "ge: 400").matches(&l) && !c("status", "lt: 400").matches(&l));
        assert!(
            c("bytes_sent", "gt: 10").matches(&l),
            "numeric strings compare as numbers"
        );
        assert!(
            c("status", "status_class: 4xx").matches(&l)
                && !c("status", "status_class: 5xx").matches(&l)
        );
        assert!(c("ja4", "exists: false").matches(&l) && !c("ja4", "exists: true").matches(&l));
        let bad: ConditionConfig = serde_yaml::from_str("{field: status, gt: 1, lt: 2}").unwrap();
        assert!(Condition::from_config(&bad).is_err());
        let bad: ConditionConfig =
            serde_yaml::from_str("{field: status, status_class: 6xx}").unwrap();
        assert!(Condition::from_config(&bad).is_err());
    }
}
