//! Field names of every JSON object this product prints: the sensor's outputs (ja4sentinel's
//! `LogRecord`), the correlated log line of the Apache module, and what the ClickHouse shipper
//! extracts. Names come from the seeds (logcorrelator's `CorrelatedLog`, ja4sentinel's
//! `LogRecord`, the `http_logs` schema); defined once here and used everywhere.

// Connection 4-tuple (both sources).
pub const SRC_IP: &str = "src_ip";
pub const SRC_PORT: &str = "src_port";
pub const DST_IP: &str = "dst_ip";
pub const DST_PORT: &str = "dst_port";

// Event time. In a sensor record: the ClientHello capture time in Unix nanoseconds (sentinel).
// In the correlated line: the request time (RFC 3339), as logcorrelator prints it.
pub const TIMESTAMP: &str = "timestamp";
/// Request time as the original C module printed it (RFC 3339 with microseconds).
pub const TIME: &str = "time";

// Correlation outcome (logcorrelator).
pub const CORRELATED: &str = "correlated";
pub const ORPHAN_SIDE: &str = "orphan_side";
pub const KEEPALIVES: &str = "keepalives";
/// Prefixes that keep both values when the request (source A) and the sensor (source B) disagree.
pub const PREFIX_A: &str = "a_";
pub const PREFIX_B: &str = "b_";

// HTTP request (source A, mod_reqin_log).
pub const METHOD: &str = "method";
pub const SCHEME: &str = "scheme";
pub const HOST: &str = "host";
pub const PATH: &str = "path";
pub const QUERY: &str = "query";
pub const HTTP_VERSION: &str = "http_version";
pub const STATUS: &str = "status";
/// Bytes of the response body and headers sent (mod_log_config's `%B` of the final request).
pub const BYTES_SENT: &str = "bytes_sent";
/// Microseconds from the start of the request to its log phase (mod_log_config's `%D`).
pub const DURATION_US: &str = "duration_us";
/// `r->useragent_ip` when it differs from the TCP peer (mod_remoteip rewrote it); the join
/// always uses the TCP peer, logged as `src_ip`.
pub const USERAGENT_IP: &str = "useragent_ip";
/// Prefix of a configured request header: `header_User-Agent`.
pub const HEADER_PREFIX: &str = "header_";

// IP metadata of the client's SYN (ja4sentinel).
pub const IP_META_TTL: &str = "ip_meta_ttl";
pub const IP_META_TOTAL_LENGTH: &str = "ip_meta_total_length";
pub const IP_META_ID: &str = "ip_meta_id";
pub const IP_META_DF: &str = "ip_meta_df";

// TCP metadata of the client's SYN (ja4sentinel).
pub const TCP_META_WINDOW_SIZE: &str = "tcp_meta_window_size";
pub const TCP_META_MSS: &str = "tcp_meta_mss";
pub const TCP_META_WINDOW_SCALE: &str = "tcp_meta_window_scale";
pub const TCP_META_OPTIONS: &str = "tcp_meta_options";

// Flow identity and sensor (ja4sentinel; in the correlated line `conn_id` is the module's, below).
pub const CONN_ID: &str = "conn_id";
pub const SENSOR_ID: &str = "sensor_id";
pub const SYN_TO_CLIENTHELLO_MS: &str = "syn_to_clienthello_ms";

// TLS ClientHello (ja4sentinel + JA4 raw form).
pub const TLS_VERSION: &str = "tls_version";
pub const TLS_SNI: &str = "tls_sni";
pub const TLS_ALPN: &str = "tls_alpn";
pub const JA4: &str = "ja4";
pub const JA4_R: &str = "ja4_r";
pub const JA3: &str = "ja3";
pub const JA3_HASH: &str = "ja3_hash";

// Correlation ids (seed 004's names). `conn_id` (above) is the root of a workflow: one TCP
// connection, minted by the module so every line has one, unique across children, restarts
// and hosts. `request_id` is one request on it, `sequence_number` its 1-based position
// (`keepalives` keeps seed 001's name for the same number); an HTTP/2 line also says its stream.
pub const REQUEST_ID: &str = "request_id";
pub const SEQUENCE_NUMBER: &str = "sequence_number";
pub const STREAM_ID: &str = "stream_id";
/// Prefix of an operator's tag (`ReqinLogTag key value`): `tag_investigation_id`.
pub const TAG_PREFIX: &str = "tag_";
// Events (the detector's): the line that raised one is its parent, that line's connection its
// root; the line's tags travel with it.
pub const PARENT_CORRELATION_ID: &str = "parent_correlation_id";
pub const ROOT_CORRELATION_ID: &str = "root_correlation_id";
pub const CORRELATION_TAGS: &str = "correlation_tags";

// Raw bytes of a request field that was not valid UTF-8 (its field carries U+FFFD instead):
// every byte outside printable ASCII, and `\`, written as `\xNN`.
pub const RAW_SUFFIX: &str = "_raw";

// Where a line's fingerprint came from, and why a TLS line has none.
pub const FINGERPRINT_SOURCE: &str = "fingerprint_source";
pub const ORPHAN_REASON: &str = "orphan_reason";

/// The values of [`FINGERPRINT_SOURCE`].
pub mod fingerprint_source {
    /// The `ja4sensor` sidecar's ring record (packet capture).
    pub const SENSOR: &str = "sensor";
    /// httpd itself: `TCP_SAVED_SYN` and the ClientHello from OpenSSL's message callback.
    pub const INLINE: &str = "inline";
    /// A trusted proxy's fingerprint headers (CloudFront-Viewer-JA4-Fingerprint...).
    pub const UPSTREAM: &str = "upstream";
}

/// The values of [`ORPHAN_REASON`]: why a line carries no fingerprint (`syn_not_saved`,
/// `syn_unparsable`: why an inline line carries the TLS fields but not the SYN's).
pub mod orphan_reason {
    /// Not a TLS connection.
    pub const NO_TLS: &str = "no_tls";
    /// `ReqinLogExcludeSource` / `ReqinLogIncludePorts`.
    pub const EXCLUDED: &str = "excluded";
    /// `ReqinLogMatchMode one_to_one`: only the connection's first request is joined.
    pub const NOT_FIRST_REQUEST: &str = "not_first_request";
    /// No ring mapped (the file is missing, unreadable, damaged, or of another version).
    pub const RING_MISSING: &str = "ring_missing";
    /// A ring is mapped, but the sensor's watermark is over a second old (stopped, hung).
    pub const SENSOR_DOWN: &str = "sensor_down";
    /// The sensor was live and had processed the packets up to the request: no record of
    /// this connection (missed, or the record belongs to an earlier connection).
    pub const NOT_IN_RING: &str = "not_in_ring";
    /// Inline: no ClientHello reached OpenSSL's message callback (mod_ssl without the
    /// `pre_handshake` hook, libssl not found).
    pub const HELLO_NOT_CAPTURED: &str = "hello_not_captured";
    /// Inline: the ClientHello did not parse, or was over the size limit.
    pub const HELLO_UNPARSABLE: &str = "hello_unparsable";
    /// Inline: the kernel kept no SYN (a SYN cookie, a listener without `TCP_SAVE_SYN`).
    pub const SYN_NOT_SAVED: &str = "syn_not_saved";
    /// Inline: the saved SYN did not parse.
    pub const SYN_UNPARSABLE: &str = "syn_unparsable";
    /// A fingerprint header came from a peer that is not a `ReqinLogTrustedProxy`: removed.
    pub const UPSTREAM_UNTRUSTED: &str = "upstream_untrusted";
    /// A trusted proxy sent no (valid) fingerprint header.
    pub const UPSTREAM_MISSING: &str = "upstream_missing";
    /// httpd gave the connection no addresses.
    pub const NO_CONNECTION: &str = "no_connection";
}

// The client's OS as its SYN suggests it (p0f-style signatures), and hops from the initial TTL.
pub const TCP_OS: &str = "tcp_os";
pub const TCP_OS_DISTANCE: &str = "tcp_os_distance";
/// The client family the JA4 belongs to, from the fingerprint→client mapping file
/// (`REQIN_CLIENT`).
pub const JA4_CLIENT: &str = "ja4_client";
/// The detector's verdict for this client (`REQIN_VERDICT`) and the rule that reached it.
pub const VERDICT: &str = "verdict";
pub const VERDICT_RULE: &str = "verdict_rule";

// FoxIO License 1.1 fingerprints, opt-in (cargo feature `foxio` and a directive).
pub const JA4T: &str = "ja4t";
pub const JA4H: &str = "ja4h";
pub const JA4H_R: &str = "ja4h_r";

// The detector's events (seed 003: notice / warning / error events and audit events), one flat
// JSON object per line in its `jsonl` listener's file, shipped as is into `reqin_events`. Besides
// these: `parent_correlation_id`, `root_correlation_id`, `correlation_tags` (above) and, when
// the triggering line had them, `src_ip`, `ja4`, `host`.
/// RFC 3339 UTC (microseconds): when what the event reports happened, in log time (the
/// triggering line's request time; the wall clock for statistics), so a replay of yesterday's
/// log interleaves its events with yesterday's lines.
pub const EVENT_TIME: &str = "time";
/// Unix nanoseconds of [`EVENT_TIME`] (sorting without parsing).
pub const EVENT_TIME_NS: &str = "time_ns";
/// RFC 3339 UTC wall clock when the detector raised it.
pub const EVENT_EMITTED: &str = "emitted";
/// Unique per event (replays of the same log give the same ids: derived from the line).
pub const EVENT_ID: &str = "event_id";
/// `notice`, `warning`, `error`; `audit` for audit events.
pub const EVENT_SEVERITY: &str = "severity";
/// `event` or `audit`.
pub const EVENT_KIND: &str = "kind";
/// The event's type name, e.g. `FingerprintMismatch`, `ThresholdExceeded`, `NewFingerprint`,
/// `ModuleStats`.
pub const EVENT_TYPE: &str = "type";
/// The module that raised it (`fingerprint_mismatch`, `threshold`, ...).
pub const EVENT_MODULE: &str = "module";
/// The configured instance of the module (a threshold rule's name).
pub const EVENT_RULE: &str = "rule";
pub const EVENT_SUMMARY: &str = "summary";
/// Key-values of the event (an object; an audit event's declared fields).
pub const EVENT_DATA: &str = "data";

// `ja4sensor timeline --json`: one object per entry of a connection's timeline, in time order.
// Besides these: `root_correlation_id` (the connection), `parent_correlation_id` (an event's
// request), `sequence_number`, `stream_id`, `time`, `time_ns`.
/// The entry's own id (seed 004's name): a request's `request_id`, an event's `event_id`.
pub const CORRELATION_ID: &str = "correlation_id";
/// What the entry is: [`ENTRY_HANDSHAKE`], [`ENTRY_CONNECTION`], [`ENTRY_REQUEST`] or
/// [`ENTRY_EVENT`].
pub const TIMELINE_ENTRY: &str = "entry";
/// The TLS handshake the sensor saw (at the ClientHello time, `b_timestamp`).
pub const ENTRY_HANDSHAKE: &str = "handshake";
/// A connection without a handshake record (plain HTTP, orphans): at its first request.
pub const ENTRY_CONNECTION: &str = "connection";
pub const ENTRY_REQUEST: &str = "request";
pub const ENTRY_EVENT: &str = "event";
/// Nanoseconds since the previous request of the connection (the handshake for the first one);
/// for an event, since the request that raised it.
pub const TIMELINE_GAP_NS: &str = "gap_ns";
/// The log line or event itself, as it is in its file.
pub const TIMELINE_LINE: &str = "line";
