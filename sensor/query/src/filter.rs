//! What a query asks for (`--tag`, `--ja4`, `--ip`, `--request-id`, `--conn-id`, `--since`,
//! `--until`, all combined with AND), the byte strings a matching line must contain (the
//! prefilter, run on raw bytes before any JSON parse), and the exact test on the parsed line.
//!
//! A log line and an event answer the same question through different fields:
//!
//! | flag | log line | event |
//! |---|---|---|
//! | `--tag k=v` | `tag_k` = v | `correlation_tags.k` = v |
//! | `--ja4 X` | `ja4` = X | `ja4` = X |
//! | `--ip A` (or CIDR) | `src_ip` or `useragent_ip` in A | `src_ip` in A |
//! | `--request-id X` | `request_id` = X | `parent_correlation_id` = X |
//! | `--conn-id X` | `conn_id` = X | `root_correlation_id` = X |
//! | `--since/--until` | `time` (else `timestamp`) in [since, until) | `time_ns` (else `time`) in [since, until) |
//!
//! The prefilter looks for each wanted value as serde_json writes it, quotes included (the module
//! and the detector write their lines that way: only `"`, `\` and control characters escaped).
//! A value some other writer escaped differently (`\u0041` for `A`) is not found.

use std::net::IpAddr;

use correlate_lib::fields;
use ipnet::IpNet;

use crate::object::Object;
use crate::time;

/// Which kind of file a line comes from: the module's log or the detector's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Log,
    Events,
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--tag {0:?}: expected KEY=VALUE (e.g. investigation_id=INC-12345)")]
    Tag(String),
    #[error("--ip {0:?}: expected an IPv4/IPv6 address or a CIDR network (10.0.0.0/8)")]
    Ip(String),
}

/// One `--tag` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

impl std::str::FromStr for Tag {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, FilterError> {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| FilterError::Tag(s.into()))?;
        let key = k.strip_prefix(fields::TAG_PREFIX).unwrap_or(k);
        if key.is_empty() {
            return Err(FilterError::Tag(s.into()));
        }
        Ok(Self {
            key: key.to_owned(),
            value: v.to_owned(),
        })
    }
}

/// `--ip`: one address or a network.
pub fn parse_ip(s: &str) -> Result<IpNet, FilterError> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(normalize_net(net.trunc()));
    }
    s.parse::<IpAddr>()
        .map(|a| IpNet::from(normalize_addr(a)))
        .map_err(|_| FilterError::Ip(s.into()))
}

/// `::ffff:a.b.c.d` is the IPv4 client of a dual-stack listener.
pub fn normalize_addr(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    }
}

fn normalize_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        other => other,
    }
}

/// The conditions of one query; an empty filter matches every line.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub tags: Vec<Tag>,
    pub ja4: Option<String>,
    pub ip: Option<IpNet>,
    pub request_id: Option<String>,
    pub conn_id: Option<String>,
    /// Inclusive, Unix ns.
    pub since_ns: Option<i64>,
    /// Exclusive, Unix ns.
    pub until_ns: Option<i64>,
}

/// A JSON string as serde_json writes it, quotes included: what a line holding this value
/// contains byte for byte.
pub fn json_string(value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 2);
    // Writing a &str into a Vec cannot fail.
    let _ = correlate_lib::jsonl::write_str(&mut out, value);
    out
}

impl Filter {
    pub fn has_time_window(&self) -> bool {
        self.since_ns.is_some() || self.until_ns.is_some()
    }

    /// Byte strings every matching line contains, the most selective first (an id is rarer
    /// than a tag value, a tag value rarer than a fingerprint, an address prefix the least rare).
    pub fn needles(&self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        out.extend(self.request_id.as_deref().map(json_string));
        out.extend(self.conn_id.as_deref().map(json_string));
        out.extend(self.tags.iter().map(|t| json_string(&t.value)));
        out.extend(self.ja4.as_deref().map(json_string));
        out.extend(self.ip.and_then(ip_needle));
        out
    }

    /// The fields [`Filter::matches`] reads in a line of `role` (a parse may keep only these).
    pub fn keys(&self, role: Role) -> Vec<String> {
        let mut k: Vec<String> = Vec::new();
        let mut add = |s: &str| {
            if !k.iter().any(|x| x == s) {
                k.push(s.to_owned());
            }
        };
        let (request_key, conn_key) = match role {
            Role::Log => (fields::REQUEST_ID, fields::CONN_ID),
            Role::Events => (fields::PARENT_CORRELATION_ID, fields::ROOT_CORRELATION_ID),
        };
        if self.request_id.is_some() {
            add(request_key);
        }
        if self.conn_id.is_some() {
            add(conn_key);
        }
        if self.ja4.is_some() {
            add(fields::JA4);
        }
        match role {
            Role::Log => {
                for t in &self.tags {
                    add(&format!("{}{}", fields::TAG_PREFIX, t.key));
                }
                if self.ip.is_some() {
                    add(fields::SRC_IP);
                    add(fields::USERAGENT_IP);
                }
                if self.has_time_window() {
                    add(fields::TIME);
                    add(fields::TIMESTAMP);
                }
            }
            Role::Events => {
                if !self.tags.is_empty() {
                    add(fields::CORRELATION_TAGS);
                }
                if self.ip.is_some() {
                    add(fields::SRC_IP);
                }
                if self.has_time_window() {
                    add(fields::EVENT_TIME_NS);
                    add(fields::EVENT_TIME);
                }
            }
        }
        k
    }

    /// The exact test on a parsed line.
    pub fn matches(&self, o: &Object, role: Role) -> bool {
        let (request_key, conn_key) = match role {
            Role::Log => (fields::REQUEST_ID, fields::CONN_ID),
            Role::Events => (fields::PARENT_CORRELATION_ID, fields::ROOT_CORRELATION_ID),
        };
        if let Some(want) = &self.request_id {
            if o.str(request_key).as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.conn_id {
            if o.str(conn_key).as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.ja4 {
            if o.str(fields::JA4).as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        if !self.tags.is_empty() && !self.tags_match(o, role) {
            return false;
        }
        if let Some(net) = &self.ip {
            let inside = |key: &str| {
                o.str(key)
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .is_some_and(|a| net.contains(&normalize_addr(a)))
            };
            let hit = match role {
                Role::Log => inside(fields::SRC_IP) || inside(fields::USERAGENT_IP),
                Role::Events => inside(fields::SRC_IP),
            };
            if !hit {
                return false;
            }
        }
        if self.has_time_window() {
            let t = match role {
                Role::Log => time::line_time_ns(o),
                Role::Events => time::event_time_ns(o),
            };
            let Some(t) = t else { return false };
            if self.since_ns.is_some_and(|s| t < s) || self.until_ns.is_some_and(|u| t >= u) {
                return false;
            }
        }
        true
    }

    fn tags_match(&self, o: &Object, role: Role) -> bool {
        match role {
            Role::Log => self.tags.iter().all(|t| {
                o.str_prefixed(fields::TAG_PREFIX, &t.key).as_deref() == Some(t.value.as_str())
            }),
            Role::Events => self.tags.iter().all(|t| {
                o.nested_str(fields::CORRELATION_TAGS, &t.key).as_deref() == Some(t.value.as_str())
            }),
        }
    }
}

/// What every address of `net` looks like in a line: a host as its text and the closing quote;
/// an IPv4 network as the text of its whole leading octets (`10.1.` for `10.1.0.0/16`). No
/// opening quote: `::ffff:10.1.2.3` is the same client. IPv6 networks have no fixed text prefix.
fn ip_needle(net: IpNet) -> Option<Vec<u8>> {
    match net {
        IpNet::V4(v4) => {
            let octets = v4.addr().octets();
            let whole = usize::from(v4.prefix_len() / 8);
            match whole {
                0 => None,
                4 => Some(format!("{}\"", v4.addr()).into_bytes()),
                n => {
                    let mut s = String::new();
                    for o in octets.iter().take(n) {
                        s.push_str(&o.to_string());
                        s.push('.');
                    }
                    Some(s.into_bytes())
                }
            }
        }
        IpNet::V6(v6) if v6.prefix_len() == 128 => Some(format!("{}\"", v6.addr()).into_bytes()),
        IpNet::V6(_) => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(s: &str) -> Object<'_> {
        Object::parse(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_line_and_an_event_answer_the_same_question_through_their_own_fields() {
        let f = Filter {
            tags: vec!["investigation_id=INC-1".parse().unwrap()],
            request_id: Some("c1-2".into()),
            conn_id: Some("c1".into()),
            ip: Some(parse_ip("198.51.100.0/24").unwrap()),
            ..Filter::default()
        };
        let l = line(
            r#"{"time":"2026-11-25T07:40:01.123456Z","src_ip":"198.51.100.7","conn_id":"c1","request_id":"c1-2","tag_investigation_id":"INC-1"}"#,
        );
        let e = line(
            r#"{"time_ns":1795592401123456000,"src_ip":"198.51.100.7","root_correlation_id":"c1","parent_correlation_id":"c1-2","correlation_tags":{"investigation_id":"INC-1"}}"#,
        );
        assert!(f.matches(&l, Role::Log));
        assert!(f.matches(&e, Role::Events));
        assert!(!f.matches(&l, Role::Events));
        assert!(!f.matches(&e, Role::Log));
    }

    #[test]
    fn addresses_match_by_network_and_dual_stack_forms_are_one_client() {
        let f = Filter {
            ip: Some(parse_ip("10.1.0.0/16").unwrap()),
            ..Filter::default()
        };
        assert!(f.matches(&line(r#"{"src_ip":"::ffff:10.1.9.9"}"#), Role::Log));
        assert!(f.matches(
            &line(r#"{"src_ip":"127.0.0.1","useragent_ip":"10.1.0.1"}"#),
            Role::Log
        ));
        assert!(!f.matches(&line(r#"{"src_ip":"10.2.0.1"}"#), Role::Log));
        assert_eq!(f.needles(), vec![b"10.1.".to_vec()]);
        assert_eq!(
            parse_ip("::ffff:192.0.2.0/120").unwrap(),
            parse_ip("192.0.2.0/24").unwrap()
        );
        assert_eq!(
            ip_needle(parse_ip("2001:db8::1").unwrap()).unwrap(),
            b"2001:db8::1\"".to_vec()
        );
        assert!(parse_ip("10.0.0.300").is_err());
    }

    #[test]
    fn the_time_window_is_inclusive_below_and_exclusive_above() {
        let t = time::parse_rfc3339_ns("2026-11-25T07:40:01.123456Z").unwrap();
        let l = line(r#"{"time":"2026-11-25T07:40:01.123456Z"}"#);
        let at = |since: i64, until: i64| Filter {
            since_ns: Some(since),
            until_ns: Some(until),
            ..Filter::default()
        };
        assert!(at(t, t + 1).matches(&l, Role::Log));
        assert!(!at(t - 1, t).matches(&l, Role::Log));
        assert!(!at(t - 1, t + 1).matches(&line("{}"), Role::Log));
    }

    #[test]
    fn needles_are_values_as_serde_json_writes_them() {
        let f = Filter {
            tags: vec!["tag_k=a\"b".parse().unwrap()],
            ja4: Some("t13d".into()),
            ..Filter::default()
        };
        assert_eq!(f.tags[0].key, "k");
        assert_eq!(
            f.needles(),
            vec![br#""a\"b""#.to_vec(), br#""t13d""#.to_vec()]
        );
        assert!("novalue".parse::<Tag>().is_err());
        assert!("=v".parse::<Tag>().is_err());
    }
}
