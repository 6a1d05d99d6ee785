//! The correlated log line: one flat JSON object per request, built from a snapshot of what httpd
//! knew about the request and, when the sensor saw the connection's handshake, its
//! [`TlsRecord`]. Field names come only from [`correlate_lib::fields`]. Pure: no httpd calls.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use correlate_lib::{fields, join, TlsRecord};
use serde_json::Value;

use crate::config::{Settings, REDACTED_VALUE};

/// Value of `orphan_side` for a request the sensor has no record of: source A (Apache) only.
pub const ORPHAN_SIDE_APACHE: &str = "A";

/// What httpd knew about one request when it was logged, copied out of the request's pool so a
/// line can be finished later by the orphan flusher, after the request is gone. Strings that
/// are not valid UTF-8 carry U+FFFD instead (a JSON line is UTF-8). `None` when httpd never got
/// that far (no request line: a 400 or 408 before the method).
#[derive(Debug, Clone, Default)]
pub struct RequestSnapshot {
    /// `r->request_time`: Unix microseconds when httpd started reading the request.
    pub request_time_us: i64,
    /// The TCP peer of the connection (`c->client_addr`), what the sensor saw; not
    /// `r->useragent_ip`, which mod_remoteip rewrites.
    pub client: Option<SocketAddr>,
    /// The local end of the connection (`c->local_addr`).
    pub local: Option<SocketAddr>,
    /// `r->useragent_ip` when it differs from the TCP peer's address.
    pub useragent_ip: Option<String>,
    pub method: Option<String>,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub path: Option<String>,
    pub query: Option<String>,
    pub http_version: Option<String>,
    /// Status of the final (internally redirected) request.
    pub status: i32,
    pub bytes_sent: u64,
    pub duration_us: u64,
    /// 1-based position of the request on its (primary) connection.
    pub keepalives: u64,
    /// The configured headers present on the request, names as configured, values already
    /// truncated and redacted ([`collect_headers`]).
    pub headers: Vec<(String, String)>,
}

/// What [`collect_headers`] had to cut, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderCuts {
    /// Values longer than `JsonSockLogMaxHeaderValueLen`.
    pub truncated_values: u64,
    /// Present headers beyond `JsonSockLogMaxHeaders`.
    pub dropped_headers: u64,
    pub redacted: u64,
}

/// The configured headers of a request: `get` returns a header's value (case-insensitive, as
/// httpd's tables), lossily decoded. At most `JsonSockLogMaxHeaders` of them, each cut to
/// `JsonSockLogMaxHeaderValueLen` bytes on a character boundary; credentials replaced by
/// [`REDACTED_VALUE`].
pub fn collect_headers(
    settings: &Settings,
    mut get: impl FnMut(&str) -> Option<String>,
) -> (Vec<(String, String)>, HeaderCuts) {
    let mut out = Vec::new();
    let mut cuts = HeaderCuts::default();
    let max_len = settings.max_header_value_len();
    for name in settings.headers() {
        let Some(mut value) = get(name) else {
            continue;
        };
        if out.len() >= settings.max_headers() {
            cuts.dropped_headers += 1;
            continue;
        }
        if settings.is_redacted(name) {
            cuts.redacted += 1;
            value = REDACTED_VALUE.to_owned();
        } else if value.len() > max_len {
            let mut end = max_len;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            value.truncate(end);
            cuts.truncated_values += 1;
        }
        out.push((name.clone(), value));
    }
    (out, cuts)
}

/// The complete line, `\n` included, ready for a single `write()`.
pub fn log_line(req: &RequestSnapshot, tls: Option<&TlsRecord>) -> Vec<u8> {
    let mut line: Vec<(String, Value)> = Vec::with_capacity(48);
    let mut put = |name: &str, value: Value| line.push((name.to_owned(), value));
    let time = rfc3339_micros(req.request_time_us);
    put(fields::TIME, time.clone().into());
    put(fields::TIMESTAMP, time.into());
    if let Some(client) = req.client {
        put(fields::SRC_IP, client.ip().to_string().into());
        put(fields::SRC_PORT, client.port().into());
    }
    if let Some(local) = req.local {
        put(fields::DST_IP, local.ip().to_string().into());
        put(fields::DST_PORT, local.port().into());
    }
    put(fields::CORRELATED, tls.is_some().into());
    if tls.is_none() {
        put(fields::ORPHAN_SIDE, ORPHAN_SIDE_APACHE.into());
    }
    put(fields::KEEPALIVES, req.keepalives.into());
    if let Some(ip) = &req.useragent_ip {
        put(fields::USERAGENT_IP, ip.clone().into());
    }
    for (name, value) in [
        (fields::METHOD, &req.method),
        (fields::SCHEME, &req.scheme),
        (fields::HOST, &req.host),
        (fields::PATH, &req.path),
    ] {
        if let Some(v) = value {
            put(name, v.clone().into());
        }
    }
    // Present whenever there was a request line: `""` for a request without a query string.
    if req.method.is_some() || req.query.is_some() {
        put(fields::QUERY, req.query.clone().unwrap_or_default().into());
    }
    if let Some(v) = &req.http_version {
        put(fields::HTTP_VERSION, v.clone().into());
    }
    put(fields::STATUS, req.status.into());
    put(fields::BYTES_SENT, req.bytes_sent.into());
    put(fields::DURATION_US, req.duration_us.into());
    for (name, value) in &req.headers {
        put(
            &format!("{}{name}", fields::HEADER_PREFIX),
            value.clone().into(),
        );
    }
    if let Some(rec) = tls {
        let a_ns = u64::try_from(req.request_time_us)
            .unwrap_or(0)
            .saturating_mul(1000);
        join::merge_fields(&mut line, rec.json_fields(), a_ns);
    }
    let mut buf = Vec::with_capacity(LINE_CAPACITY);
    buf.push(b'{');
    for (i, (name, value)) in line.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        // Strings and numbers always serialise; a failure could only leave the line short.
        let _ = serde_json::to_writer(&mut buf, name);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut buf, value);
    }
    buf.extend_from_slice(b"}\n");
    buf
}

/// Typical line length; one allocation for most requests.
const LINE_CAPACITY: usize = 1536;

/// `2026-11-25T07:01:02.123456Z` for a Unix time in microseconds (before 1970: the epoch).
pub fn rfc3339_micros(unix_us: i64) -> String {
    let us = u64::try_from(unix_us).unwrap_or(0);
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
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

    fn get_request() -> RequestSnapshot {
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
            keepalives: 1,
            ..RequestSnapshot::default()
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
        req.host = Some(String::from_utf8_lossy(b"evil\xff\r\nhost").into_owned());
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
