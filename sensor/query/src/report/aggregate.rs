//! The numbers of the report, counted line by line in bounded memory: per-minute counts (one
//! entry per minute that has traffic), and per-key counters capped at [`MAX_KEYS`] distinct
//! keys (later keys are counted together as "other": a flood of forged fingerprints cannot
//! grow the report without bound).

use std::collections::{BTreeMap, HashMap};

use correlate_lib::fields;

use crate::clients::{family_of_client, family_of_user_agent, Mapping};
use crate::filter::Role;
use crate::object::Object;
use crate::time;

/// Distinct keys one counter keeps.
pub const MAX_KEYS: usize = 50_000;
/// Distinct rules whose events are drawn over time (the rest: "other").
pub const MAX_RULES: usize = 200;
/// Characters of an example User-Agent kept.
const MAX_EXAMPLE_CHARS: usize = 200;
pub const NS_PER_MINUTE: i64 = 60_000_000_000;
/// The label of what did not fit in a counter.
pub const OTHER: &str = "(other)";

/// The logged User-Agent header's field.
fn user_agent_key() -> String {
    format!("{}User-Agent", fields::HEADER_PREFIX)
}

/// Counts by key, at most [`MAX_KEYS`] keys.
#[derive(Debug, Default, Clone)]
pub struct Counter {
    counts: HashMap<String, u64>,
    pub other: u64,
}

impl Counter {
    pub fn add(&mut self, key: &str, n: u64) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += n;
        } else if self.counts.len() < MAX_KEYS {
            self.counts.insert(key.to_owned(), n);
        } else {
            self.other += n;
        }
    }

    pub fn merge(&mut self, o: &Counter) {
        for (k, n) in &o.counts {
            self.add(k, *n);
        }
        self.other += o.other;
    }

    /// The `n` largest, ties by key; "(other)" last when anything overflowed.
    pub fn top(&self, n: usize) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = self.counts.iter().map(|(k, c)| (k.clone(), *c)).collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v.truncate(n);
        if self.other > 0 {
            v.push((OTHER.to_owned(), self.other));
        }
        v
    }

    pub fn total(&self) -> u64 {
        self.counts.values().sum::<u64>() + self.other
    }

    /// Distinct keys kept.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    pub fn get(&self, key: &str) -> u64 {
        self.counts.get(key).copied().unwrap_or(0)
    }
}

/// A User-Agent claiming one family over a fingerprint of another.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mismatch {
    pub claimed: String,
    pub fingerprint: String,
    pub ja4: String,
}

/// Everything the report draws.
#[derive(Debug, Default, Clone)]
pub struct Aggregate {
    pub requests: u64,
    pub correlated: u64,
    pub first_ns: Option<i64>,
    pub last_ns: Option<i64>,
    /// Minute (Unix ns / 60 s) → (correlated, orphan).
    pub per_minute: BTreeMap<i64, (u64, u64)>,
    pub orphan_reasons: Counter,
    pub ja4: Counter,
    /// Client name of each JA4 counted (from the lines, else the mapping).
    pub ja4_client: HashMap<String, String>,
    pub mismatches: Counter,
    /// Mismatch key → (claimed, fingerprint family, ja4, example User-Agent).
    pub mismatch_detail: HashMap<String, (Mismatch, String)>,
    /// Lines with both a User-Agent family and a fingerprint family known.
    pub ua_checked: u64,
    pub ttl: BTreeMap<u64, u64>,
    pub os: Counter,
    pub events: u64,
    pub event_types: Counter,
    pub event_severities: Counter,
    /// Rule (else event type) → minute → events; at most [`MAX_RULES`] rules.
    pub events_per_rule: BTreeMap<String, BTreeMap<i64, u64>>,
    /// Lines without a time (counted nowhere else).
    pub without_time: u64,
}

impl Aggregate {
    /// The fields [`Aggregate::add_line`] / [`Aggregate::add_event`] read.
    pub fn keys(role: Role) -> Vec<String> {
        let v: Vec<&str> = match role {
            Role::Log => vec![
                fields::TIME,
                fields::TIMESTAMP,
                fields::CORRELATED,
                fields::ORPHAN_REASON,
                fields::IP_META_TTL,
                fields::TCP_OS,
                fields::JA4,
                fields::JA4_CLIENT,
            ],
            Role::Events => vec![
                fields::EVENT_TIME_NS,
                fields::EVENT_TIME,
                fields::EVENT_TYPE,
                fields::EVENT_SEVERITY,
                fields::EVENT_RULE,
            ],
        };
        let mut v: Vec<String> = v.into_iter().map(str::to_owned).collect();
        if role == Role::Log {
            v.push(user_agent_key());
        }
        v
    }

    pub fn add_line(&mut self, o: &Object, mapping: &Mapping) {
        let Some(t) = time::line_time_ns(o) else {
            self.without_time += 1;
            return;
        };
        self.requests += 1;
        self.first_ns = Some(self.first_ns.map_or(t, |f| f.min(t)));
        self.last_ns = Some(self.last_ns.map_or(t, |l| l.max(t)));
        let correlated = o.bool(fields::CORRELATED).unwrap_or(false);
        let minute = self
            .per_minute
            .entry(t.div_euclid(NS_PER_MINUTE))
            .or_default();
        if correlated {
            self.correlated += 1;
            minute.0 += 1;
        } else {
            minute.1 += 1;
            let reason = o.str(fields::ORPHAN_REASON);
            self.orphan_reasons
                .add(reason.as_deref().unwrap_or("(not given)"), 1);
        }
        if let Some(ttl) = o.u64(fields::IP_META_TTL) {
            *self.ttl.entry(ttl).or_default() += 1;
        }
        if let Some(os) = o.str(fields::TCP_OS) {
            if !os.is_empty() {
                self.os.add(&os, 1);
            }
        }
        let Some(ja4) = o.str(fields::JA4).filter(|j| !j.is_empty()) else {
            return;
        };
        self.ja4.add(&ja4, 1);
        let from_line = o
            .str(fields::JA4_CLIENT)
            .filter(|c| !c.is_empty() && c != "unknown");
        let client = from_line
            .as_deref()
            .or_else(|| mapping.get(&ja4))
            .map(str::to_owned);
        if let Some(c) = &client {
            if !self.ja4_client.contains_key(ja4.as_ref()) && self.ja4_client.len() < MAX_KEYS {
                self.ja4_client.insert(ja4.clone().into_owned(), c.clone());
            }
        }
        let ua = o.str(&user_agent_key());
        let claimed = ua.as_deref().and_then(family_of_user_agent);
        let actual = client.as_deref().and_then(family_of_client);
        if let (Some(claimed), Some(actual), Some(ua)) = (claimed, actual, ua.as_deref()) {
            self.ua_checked += 1;
            if claimed != actual {
                let m = Mismatch {
                    claimed: claimed.into(),
                    fingerprint: actual.into(),
                    ja4: ja4.clone().into_owned(),
                };
                let key = format!("{claimed} → {actual} · {ja4}");
                self.mismatches.add(&key, 1);
                if !self.mismatch_detail.contains_key(&key) && self.mismatch_detail.len() < MAX_KEYS
                {
                    let example: String = ua.chars().take(MAX_EXAMPLE_CHARS).collect();
                    self.mismatch_detail.insert(key, (m, example));
                }
            }
        }
    }

    pub fn add_event(&mut self, o: &Object) {
        let Some(t) = time::event_time_ns(o) else {
            self.without_time += 1;
            return;
        };
        self.events += 1;
        let ty = o.str(fields::EVENT_TYPE);
        self.event_types.add(ty.as_deref().unwrap_or("(none)"), 1);
        let sev = o.str(fields::EVENT_SEVERITY);
        self.event_severities
            .add(sev.as_deref().unwrap_or("(none)"), 1);
        let rule = o
            .str(fields::EVENT_RULE)
            .filter(|r| !r.is_empty())
            .or(ty)
            .map_or_else(|| "(none)".to_owned(), |r| r.into_owned());
        let key =
            if self.events_per_rule.contains_key(&rule) || self.events_per_rule.len() < MAX_RULES {
                rule
            } else {
                OTHER.to_owned()
            };
        *self
            .events_per_rule
            .entry(key)
            .or_default()
            .entry(t.div_euclid(NS_PER_MINUTE))
            .or_default() += 1;
    }

    pub fn merge(&mut self, o: &Aggregate) {
        self.requests += o.requests;
        self.correlated += o.correlated;
        self.first_ns = match (self.first_ns, o.first_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_ns = match (self.last_ns, o.last_ns) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        for (m, (c, r)) in &o.per_minute {
            let e = self.per_minute.entry(*m).or_default();
            e.0 += c;
            e.1 += r;
        }
        self.orphan_reasons.merge(&o.orphan_reasons);
        self.ja4.merge(&o.ja4);
        for (k, v) in &o.ja4_client {
            if self.ja4_client.len() < MAX_KEYS {
                self.ja4_client
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
        }
        self.mismatches.merge(&o.mismatches);
        for (k, v) in &o.mismatch_detail {
            if self.mismatch_detail.len() < MAX_KEYS {
                self.mismatch_detail
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
        }
        self.ua_checked += o.ua_checked;
        for (t, n) in &o.ttl {
            *self.ttl.entry(*t).or_default() += n;
        }
        self.os.merge(&o.os);
        self.events += o.events;
        self.event_types.merge(&o.event_types);
        self.event_severities.merge(&o.event_severities);
        for (rule, minutes) in &o.events_per_rule {
            let key = if self.events_per_rule.contains_key(rule)
                || self.events_per_rule.len() < MAX_RULES
            {
                rule.clone()
            } else {
                OTHER.to_owned()
            };
            let mine = self.events_per_rule.entry(key).or_default();
            for (m, n) in minutes {
                *mine.entry(*m).or_default() += n;
            }
        }
        self.without_time += o.without_time;
    }

    pub fn orphans(&self) -> u64 {
        self.requests - self.correlated
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_chrome_user_agent_over_a_curl_fingerprint_is_a_mismatch() {
        let mut a = Aggregate::default();
        let m = Mapping::default();
        for line in [
            r#"{"time":"2026-11-25T07:40:01.000001Z","correlated":true,"ja4":"J1","ja4_client":"curl","header_User-Agent":"Mozilla/5.0 Chrome/131.0 Safari/537.36","ip_meta_ttl":64,"tcp_os":"Linux"}"#,
            r#"{"time":"2026-11-25T07:40:02.000001Z","correlated":true,"ja4":"J1","ja4_client":"curl","header_User-Agent":"curl/8.5.0","ip_meta_ttl":64}"#,
            r#"{"time":"2026-11-25T07:41:02.000001Z","correlated":false,"orphan_reason":"no_tls"}"#,
        ] {
            a.add_line(&Object::parse(line.as_bytes()).unwrap(), &m);
        }
        assert_eq!((a.requests, a.correlated, a.orphans()), (3, 2, 1));
        assert_eq!(a.per_minute.len(), 2);
        assert_eq!(a.ua_checked, 2);
        assert_eq!(
            a.mismatches.top(5),
            vec![("chromium → curl · J1".to_owned(), 1)]
        );
        assert_eq!(a.ttl.get(&64), Some(&2));
        assert_eq!(a.orphan_reasons.get("no_tls"), 1);
    }

    #[test]
    fn counters_keep_a_bounded_number_of_keys() {
        let mut c = Counter::default();
        for i in 0..MAX_KEYS + 10 {
            c.add(&i.to_string(), 1);
        }
        c.add("0", 5);
        assert_eq!(c.other, 10);
        assert_eq!(c.total(), (MAX_KEYS + 15) as u64);
        assert_eq!(c.top(1), vec![("0".to_owned(), 6), (OTHER.to_owned(), 10)]);
    }
}
