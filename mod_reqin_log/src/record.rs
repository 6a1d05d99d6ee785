//! The correlated log line: one flat JSON object per request, built from a snapshot of what httpd
//! knew about the request and, when the sensor saw the connection's handshake, its
//! [`TlsRecord`]. Field names come only from [`correlate_lib::fields`]. Pure: no httpd calls.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use correlate_lib::{fields, TlsRecord};
use serde::Serialize;

/// Value of `orphan_side` for a request the sensor has no record of: source A (Apache) only.
pub const ORPHAN_SIDE_APACHE: &str = "A";

/// What httpd knew about one request when it was logged. Strings are borrowed from the request
/// pool where they are valid UTF-8 (bytes that are not become U+FFFD: a JSON line is UTF-8).
/// `None` when httpd never got that far (no request line: a 400 or 408 before the method).
#[derive(Debug, Clone, Default)]
pub struct RequestSnapshot<'a> {
    /// `r->request_time`: Unix microseconds when httpd started reading the request.
    pub request_time_us: i64,
    /// The TCP peer of the connection (`c->client_addr`), what the sensor saw; not
    /// `r->useragent_ip`, which mod_remoteip rewrites.
    pub client: Option<SocketAddr>,
    /// The local end of the connection (`c->local_addr`).
    pub local: Option<SocketAddr>,
    pub method: Option<Cow<'a, str>>,
    pub scheme: Option<Cow<'a, str>>,
    pub host: Option<Cow<'a, str>>,
    pub path: Option<Cow<'a, str>>,
    pub query: Option<Cow<'a, str>>,
    pub http_version: Option<Cow<'a, str>>,
    /// Status of the final (internally redirected) request.
    pub status: i32,
}

/// The complete line, `\n` included, ready for a single `write()`.
pub fn log_line(req: &RequestSnapshot<'_>, tls: Option<&TlsRecord>) -> Vec<u8> {
    let mut line = JsonLine::new();
    let time = rfc3339_micros(req.request_time_us);
    line.field(fields::TIME, &time);
    line.field(fields::TIMESTAMP, &time);
    if let Some(client) = req.client {
        line.field(fields::SRC_IP, &client.ip().to_string());
        line.field(fields::SRC_PORT, &client.port());
    }
    if let Some(local) = req.local {
        line.field(fields::DST_IP, &local.ip().to_string());
        line.field(fields::DST_PORT, &local.port());
    }
    line.field(fields::CORRELATED, &tls.is_some());
    if tls.is_none() {
        line.field(fields::ORPHAN_SIDE, ORPHAN_SIDE_APACHE);
    }
    for (name, value) in [
        (fields::METHOD, &req.method),
        (fields::SCHEME, &req.scheme),
        (fields::HOST, &req.host),
        (fields::PATH, &req.path),
    ] {
        if let Some(v) = value {
            line.field(name, v.as_ref());
        }
    }
    // Present whenever there was a request line: `""` for a request without a query string.
    if req.method.is_some() || req.query.is_some() {
        line.field(fields::QUERY, req.query.as_deref().unwrap_or(""));
    }
    if let Some(v) = &req.http_version {
        line.field(fields::HTTP_VERSION, v.as_ref());
    }
    line.field(fields::STATUS, &req.status);
    if let Some(rec) = tls {
        // The sensor's 4-tuple is the one we joined on (same values, already logged) and its
        // `timestamp` is the ClientHello time, logged below as `b_timestamp`.
        const OURS: [&str; 5] = [
            fields::SRC_IP,
            fields::SRC_PORT,
            fields::DST_IP,
            fields::DST_PORT,
            fields::TIMESTAMP,
        ];
        for (name, value) in rec.json_fields() {
            if !OURS.contains(&name.as_str()) {
                line.field(&name, &value);
            }
        }
        let a_ns = u64::try_from(req.request_time_us)
            .unwrap_or(0)
            .saturating_mul(1000);
        line.field(&format!("{}{}", fields::PREFIX_A, fields::TIMESTAMP), &a_ns);
        line.field(
            &format!("{}{}", fields::PREFIX_B, fields::TIMESTAMP),
            &rec.hello_time_ns,
        );
    }
    line.finish()
}

/// `2026-11-25T07:01:02.123456Z` for a Unix time in microseconds (before 1970: the epoch).
pub fn rfc3339_micros(unix_us: i64) -> String {
    let us = u64::try_from(unix_us).unwrap_or(0);
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
}

/// A JSON object written field by field, in the order given (serde_json's `Map` would sort).
struct JsonLine {
    buf: Vec<u8>,
    empty: bool,
}

/// Typical line length; one allocation for most requests.
const LINE_CAPACITY: usize = 1024;

impl JsonLine {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(LINE_CAPACITY);
        buf.push(b'{');
        Self { buf, empty: true }
    }

    fn field<V: Serialize + ?Sized>(&mut self, name: &str, value: &V) {
        let start = self.buf.len();
        if !self.empty {
            self.buf.push(b',');
        }
        let ok = serde_json::to_writer(&mut self.buf, name).is_ok() && {
            self.buf.push(b':');
            serde_json::to_writer(&mut self.buf, value).is_ok()
        };
        if ok {
            self.empty = false;
        } else {
            // Strings and numbers always serialise; never leave half a field behind anyway.
            self.buf.truncate(start);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(b"}\n");
        self.buf
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use correlate_lib::record::v4;
    use correlate_lib::{ConnKey, IpMeta, TcpMeta};
    use serde_json::Value;

    /// 2026-11-25T07:01:02.123456Z
    const REQUEST_US: i64 = 1_795_590_062_123_456;

    fn get_request() -> RequestSnapshot<'static> {
        RequestSnapshot {
            request_time_us: REQUEST_US,
            client: Some(v4(127, 0, 0, 1, 50000)),
            local: Some(v4(127, 0, 0, 1, 8443)),
            method: Some("GET".into()),
            scheme: Some("https".into()),
            host: Some("localhost".into()),
            path: Some("/index.html".into()),
            query: None,
            http_version: Some("HTTP/1.1".into()),
            status: 200,
        }
    }

    fn curl_record() -> TlsRecord {
        TlsRecord {
            key: Some(ConnKey::new(
                v4(127, 0, 0, 1, 50000),
                v4(127, 0, 0, 1, 8443),
            )),
            syn_time_ns: 1_795_590_062_000_000_000,
            hello_time_ns: 1_795_590_062_001_000_000,
            ip: Some(IpMeta {
                ttl: 64,
                total_length: 60,
                id: 1,
                df: true,
            }),
            tcp: Some(TcpMeta {
                window_size: 65495,
                mss: 65495,
                window_scale: Some(7),
                options: "MSS,SAckOK,Timestamps,NOP,WScale".into(),
            }),
            tls_version: "1.3".into(),
            tls_sni: "localhost".into(),
            tls_alpn: "http/1.1".into(),
            ja4: "t13d3112h1_e8f1e7e78f70_6bebaf5329ac".into(),
            ja4_r: "raw".into(),
            ja3: "771,4866".into(),
            ja3_hash: "0123456789abcdef0123456789abcdef".into(),
            sensor_id: "lab".into(),
            ..TlsRecord::default()
        }
    }

    fn parse(line: &[u8]) -> Value {
        assert_eq!(line.last(), Some(&b'\n'), "a line ends with a newline");
        assert_eq!(
            line.iter().filter(|b| **b == b'\n').count(),
            1,
            "exactly one line"
        );
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn request_time_is_rfc3339_utc_with_microseconds() {
        assert_eq!(rfc3339_micros(REQUEST_US), "2026-11-25T07:01:02.123456Z");
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(-5), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn uncorrelated_request_is_an_orphan_of_side_a() {
        let v = parse(&log_line(&get_request(), None));
        assert_eq!(v["time"], "2026-11-25T07:01:02.123456Z");
        assert_eq!(v["timestamp"], "2026-11-25T07:01:02.123456Z");
        assert_eq!(v["src_ip"], "127.0.0.1");
        assert_eq!(v["src_port"], 50000);
        assert_eq!(v["dst_port"], 8443);
        assert_eq!(v["correlated"], false);
        assert_eq!(v["orphan_side"], "A");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["query"], "");
        assert_eq!(v["http_version"], "HTTP/1.1");
        assert_eq!(v["status"], 200);
        assert!(v.get("ja4").is_none());
    }

    #[test]
    fn correlated_request_carries_the_sensor_fields_and_both_timestamps() {
        let line = log_line(&get_request(), Some(&curl_record()));
        let v = parse(&line);
        assert_eq!(v["correlated"], true);
        assert!(v.get("orphan_side").is_none());
        assert_eq!(v["ja4"], "t13d3112h1_e8f1e7e78f70_6bebaf5329ac");
        assert_eq!(v["ja3_hash"], "0123456789abcdef0123456789abcdef");
        assert_eq!(v["tls_sni"], "localhost");
        assert_eq!(v["ip_meta_ttl"], 64);
        assert_eq!(v["tcp_meta_options"], "MSS,SAckOK,Timestamps,NOP,WScale");
        assert_eq!(v["syn_to_clienthello_ms"], 1);
        assert_eq!(v["conn_id"], "127.0.0.1:50000-127.0.0.1:8443");
        assert_eq!(
            v["timestamp"], "2026-11-25T07:01:02.123456Z",
            "the request's, not the hello's"
        );
        assert_eq!(v["a_timestamp"], 1_795_590_062_123_456_000u64);
        assert_eq!(v["b_timestamp"], 1_795_590_062_001_000_000u64);
        let text = std::str::from_utf8(&line).unwrap();
        assert_eq!(
            text.matches("\"src_port\"").count(),
            1,
            "no duplicate keys: {text}"
        );
        assert_eq!(
            text.matches("\"timestamp\"").count(),
            1,
            "no duplicate keys: {text}"
        );
    }

    #[test]
    fn hostile_path_and_host_still_give_one_valid_json_line() {
        let mut req = get_request();
        req.path = Some("/a\"b\\c\n{\"injected\":1}\u{0}\u{1b}[31m".into());
        req.host = Some(
            String::from_utf8_lossy(b"evil\xff\r\nhost")
                .into_owned()
                .into(),
        );
        req.query = Some("x=\"}".into());
        let v = parse(&log_line(&req, None));
        assert_eq!(v["path"], "/a\"b\\c\n{\"injected\":1}\u{0}\u{1b}[31m");
        assert_eq!(v["host"], "evil\u{fffd}\r\nhost");
        assert!(v.get("injected").is_none());
    }

    #[test]
    fn request_without_a_request_line_logs_what_exists() {
        let req = RequestSnapshot {
            request_time_us: REQUEST_US,
            client: Some(v4(10, 0, 0, 1, 1234)),
            local: Some(v4(10, 0, 0, 2, 443)),
            status: 400,
            ..RequestSnapshot::default()
        };
        let v = parse(&log_line(&req, None));
        assert_eq!(v["status"], 400);
        assert_eq!(v["src_ip"], "10.0.0.1");
        assert!(v.get("method").is_none());
        assert!(v.get("path").is_none());
        assert!(v.get("query").is_none());
    }
}
