//! The join rules of logcorrelator (seeds 000/001), adapted to run inside the Apache worker that
//! serves the request. The whole rule set is here; the module only gathers the facts (the
//! connection's 4-tuple and accept time, the request's position on its connection, what the ring
//! returned) and asks.
//!
//! - Key: the full 4-tuple of the TCP connection ([`ConnKey`]); Apache knows both sides.
//! - A record counts only if it belongs to *this* connection: its SYN time (the ClientHello time
//!   when the SYN was not seen) lies inside the window around the connection's accept time, and
//!   the connection it describes was not already closed when this one was accepted. A reused
//!   client port therefore never joins the previous connection's handshake.
//! - One handshake matches every request of its connection (`one_to_many`, each with an
//!   incrementing `keepalives` counter), or only the first (`one_to_one`).
//! - Exclusions: source CIDRs and, when non-empty, an allow-list of destination ports.
//! - Field merge: HTTP fields from the request (source A), TLS/IP/TCP fields from the sensor
//!   (source B); on a collision with different values both are kept, prefixed `a_` and `b_`.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::fields;
use crate::record::{ConnKey, TlsRecord};

/// logcorrelator's `correlation.matching.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchMode {
    /// Every request of a connection joins its handshake (HTTP keep-alive, HTTP/2 streams).
    #[default]
    OneToMany,
    /// Only the first request of a connection joins; later ones are logged uncorrelated.
    OneToOne,
}

impl MatchMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "one_to_many" => Some(Self::OneToMany),
            "one_to_one" => Some(Self::OneToOne),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneToMany => "one_to_many",
            Self::OneToOne => "one_to_one",
        }
    }
}

/// Default half-width of the window around the accept time. A connection's SYN precedes its
/// accept by the time it waits in the listen backlog (microseconds on a healthy server, seconds
/// under overload or after a lost SYN is retransmitted); a previous connection on the same
/// client port is older than its own close, which the sensor also reports.
pub const DEFAULT_TIME_WINDOW: Duration = Duration::from_secs(2);

/// The rule set, as configured (per virtual host in the module).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinRules {
    pub time_window: Duration,
    pub mode: MatchMode,
    pub exclude_source: Vec<IpNet>,
    /// Empty means every destination port.
    pub include_dest_ports: Vec<u16>,
}

impl Default for JoinRules {
    fn default() -> Self {
        Self {
            time_window: DEFAULT_TIME_WINDOW,
            mode: MatchMode::OneToMany,
            exclude_source: Vec::new(),
            include_dest_ports: Vec::new(),
        }
    }
}

/// Why a request is not joined with a handshake; each maps to a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoJoin {
    /// The client address is in an excluded CIDR.
    ExcludedSource,
    /// The destination port is not in the allow-list.
    ExcludedPort,
    /// `one_to_one` and this is not the first request of the connection.
    NotFirstRequest,
}

/// Why a record found in the ring is not this connection's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Foreign {
    /// The record's key is another 4-tuple (defensive: the ring already compares keys).
    OtherKey,
    /// Its SYN (or hello) is outside the window around this connection's accept time.
    OutsideWindow,
    /// The connection it describes was closed before this one was accepted.
    ClosedBeforeAccept,
}

impl JoinRules {
    /// Decides before any lookup whether this request may join at all. `request_index` is the
    /// 1-based position of the request on its connection (the `keepalives` counter).
    pub fn admits(&self, key: &ConnKey, request_index: u64) -> Result<(), NoJoin> {
        if self.is_excluded_source(key.src.ip()) {
            return Err(NoJoin::ExcludedSource);
        }
        if !self.include_dest_ports.is_empty() && !self.include_dest_ports.contains(&key.dst.port())
        {
            return Err(NoJoin::ExcludedPort);
        }
        self.admits_position(request_index)
    }

    /// The part of [`JoinRules::admits`] that depends on the request, not on the connection:
    /// all a request of an already joined connection still has to pass.
    pub fn admits_position(&self, request_index: u64) -> Result<(), NoJoin> {
        if self.mode == MatchMode::OneToOne && request_index > 1 {
            return Err(NoJoin::NotFirstRequest);
        }
        Ok(())
    }

    pub fn is_excluded_source(&self, ip: IpAddr) -> bool {
        let ip = crate::record::normalize_ip(ip);
        self.exclude_source.iter().any(|net| net.contains(&ip))
    }

    /// Checks that `record` describes the connection with `key` accepted at `accept_time_ns`
    /// (Unix ns, the same clock as the capture timestamps).
    pub fn belongs(
        &self,
        record: &TlsRecord,
        key: &ConnKey,
        accept_time_ns: u64,
    ) -> Result<(), Foreign> {
        if record.key.as_ref() != Some(key) {
            return Err(Foreign::OtherKey);
        }
        if record.closed_time_ns != 0 && record.closed_time_ns < accept_time_ns {
            return Err(Foreign::ClosedBeforeAccept);
        }
        let start = if record.syn_time_ns != 0 {
            record.syn_time_ns
        } else {
            record.hello_time_ns
        };
        let window = u64::try_from(self.time_window.as_nanos()).unwrap_or(u64::MAX);
        if start.abs_diff(accept_time_ns) > window {
            return Err(Foreign::OutsideWindow);
        }
        Ok(())
    }
}

/// Merges the sensor's fields (source B, [`TlsRecord::json_fields`]) into the request's line
/// (source A, fields in the order they are printed). Fields only the sensor has are appended; a
/// field both have with the same value is kept once (the 4-tuple); with different values both
/// are kept as `a_<name>` (request) and `b_<name>` (sensor) and the plain name is dropped.
///
/// `timestamp` is the one collision that is always present and always differs: the line's
/// `timestamp` is the request time as RFC 3339 (what logcorrelator prints and `http_logs` parses)
/// and stays; `a_timestamp` is the request time and `b_timestamp` the ClientHello time, both Unix
/// nanoseconds (`UInt64` columns of seed 001's `http_logs`).
///
/// `conn_id` is not merged: in the correlated line it is the module's id of the connection,
/// the root of its requests' ids (seed 004), on every line; the sensor's flow id
/// (`ip:port-ip:port`, sentinel's) repeats the address fields and stays in the sensor's outputs.
pub fn merge_fields(line: &mut Vec<(String, Value)>, sensor: Map<String, Value>, a_time_ns: u64) {
    for (name, b) in sensor {
        if name == fields::CONN_ID {
            continue;
        }
        if name == fields::TIMESTAMP {
            line.push((
                format!("{}{name}", fields::PREFIX_A),
                Value::from(a_time_ns),
            ));
            line.push((format!("{}{name}", fields::PREFIX_B), b));
            continue;
        }
        match line.iter().position(|(n, _)| *n == name) {
            None => line.push((name, b)),
            Some(i) if line[i].1 == b => {}
            Some(i) => {
                let a = line.remove(i).1;
                line.insert(i, (format!("{}{name}", fields::PREFIX_A), a));
                line.push((format!("{}{name}", fields::PREFIX_B), b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::v4;

    const SEC: u64 = 1_000_000_000;

    fn key() -> ConnKey {
        ConnKey::new(v4(198, 51, 100, 7, 50123), v4(192, 0, 2, 1, 443))
    }

    fn record(syn: u64, hello: u64) -> TlsRecord {
        TlsRecord {
            key: Some(key()),
            syn_time_ns: syn,
            hello_time_ns: hello,
            ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1".into(),
            ..TlsRecord::default()
        }
    }

    #[test]
    fn handshake_of_this_connection_belongs() {
        let rules = JoinRules::default();
        let accept = 100 * SEC;
        assert_eq!(
            rules.belongs(&record(accept - 1_000, accept + 5_000), &key(), accept),
            Ok(())
        );
    }

    #[test]
    fn reused_client_port_never_joins_old_handshake() {
        let rules = JoinRules::default();
        let accept = 100 * SEC;
        // The previous connection on this port: SYN 30 s ago, outside the window.
        let old = record(accept - 30 * SEC, accept - 30 * SEC + 1_000);
        assert_eq!(
            rules.belongs(&old, &key(), accept),
            Err(Foreign::OutsideWindow)
        );
        // Inside the window, but the sensor saw it close before this connection was accepted.
        let mut recent = record(accept - SEC / 2, accept - SEC / 2 + 1_000);
        recent.closed_time_ns = accept - SEC / 4;
        assert_eq!(
            rules.belongs(&recent, &key(), accept),
            Err(Foreign::ClosedBeforeAccept)
        );
    }

    #[test]
    fn hello_time_stands_in_for_an_unseen_syn() {
        let rules = JoinRules::default();
        let accept = 100 * SEC;
        assert_eq!(
            rules.belongs(&record(0, accept + 1_000), &key(), accept),
            Ok(())
        );
        assert_eq!(
            rules.belongs(&record(0, accept + 3 * SEC), &key(), accept),
            Err(Foreign::OutsideWindow)
        );
    }

    #[test]
    fn one_to_one_joins_only_the_first_request() {
        let mut rules = JoinRules::default();
        assert_eq!(rules.admits(&key(), 1), Ok(()));
        assert_eq!(rules.admits(&key(), 7), Ok(()));
        rules.mode = MatchMode::OneToOne;
        assert_eq!(rules.admits(&key(), 1), Ok(()));
        assert_eq!(rules.admits(&key(), 2), Err(NoJoin::NotFirstRequest));
        assert_eq!(rules.admits_position(1), Ok(()));
        assert_eq!(rules.admits_position(2), Err(NoJoin::NotFirstRequest));
        rules.mode = MatchMode::OneToMany;
        assert_eq!(rules.admits_position(9), Ok(()));
    }

    #[test]
    fn exclusions_by_source_cidr_and_destination_port() {
        let rules = JoinRules {
            exclude_source: vec!["198.51.100.0/24".parse().unwrap()],
            ..JoinRules::default()
        };
        assert_eq!(rules.admits(&key(), 1), Err(NoJoin::ExcludedSource));
        let mapped: std::net::SocketAddr = "[::ffff:198.51.100.7]:1".parse().unwrap();
        assert!(
            rules.is_excluded_source(mapped.ip()),
            "mapped IPv4 matches an IPv4 CIDR"
        );
        let rules = JoinRules {
            include_dest_ports: vec![8443],
            ..JoinRules::default()
        };
        assert_eq!(rules.admits(&key(), 1), Err(NoJoin::ExcludedPort));
    }

    #[test]
    fn colliding_fields_with_different_values_keep_both_sides() {
        let mut line: Vec<(String, Value)> = vec![
            (
                "timestamp".into(),
                Value::from("2026-01-01T00:00:00.000001Z"),
            ),
            ("src_ip".into(), Value::from("198.51.100.7")),
            ("method".into(), Value::from("GET")),
            ("tls_sni".into(), Value::from("a.example")),
        ];
        let mut sensor = Map::new();
        sensor.insert("timestamp".into(), Value::from(222u64));
        sensor.insert("src_ip".into(), Value::from("198.51.100.7"));
        sensor.insert("ja4".into(), Value::from("t13"));
        sensor.insert("tls_sni".into(), Value::from("b.example"));
        merge_fields(&mut line, sensor, 111);
        let get = |n: &str| line.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        assert_eq!(get("a_timestamp"), Some(Value::from(111u64)));
        assert_eq!(get("b_timestamp"), Some(Value::from(222u64)));
        assert_eq!(
            get("timestamp"),
            Some(Value::from("2026-01-01T00:00:00.000001Z")),
            "the line keeps its RFC 3339 time"
        );
        assert_eq!(get("src_ip"), Some(Value::from("198.51.100.7")));
        assert_eq!(line.iter().filter(|(k, _)| k == "src_ip").count(), 1);
        assert_eq!(get("method"), Some(Value::from("GET")));
        assert_eq!(get("ja4"), Some(Value::from("t13")));
        assert_eq!(get("tls_sni"), None);
        assert_eq!(get("a_tls_sni"), Some(Value::from("a.example")));
        assert_eq!(get("b_tls_sni"), Some(Value::from("b.example")));
    }

    #[test]
    fn match_mode_parses_logcorrelator_names() {
        assert_eq!(MatchMode::parse("one_to_one"), Some(MatchMode::OneToOne));
        assert_eq!(MatchMode::parse("ONE_TO_MANY"), Some(MatchMode::OneToMany));
        assert_eq!(MatchMode::parse("many"), None);
    }
}
