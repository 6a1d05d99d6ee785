//! The correlated log line: one flat JSON object per request, built from a snapshot of what httpd
//! knew about the request and, when the sensor saw the connection's handshake, the sensor's
//! half of the line ([`TlsFragment`], rendered once per connection). Field names come only from
//! [`correlate_lib::fields`]. Pure: no httpd calls.
//!
//! The line is written straight into a buffer: no map, no intermediate strings. In httpd the
//! buffer is the worker thread's own ([`with_line`]), so a request costs no heap allocation for
//! its line once the buffer has grown to the longest line.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

#[cfg(any(doc, test))]
use correlate_lib::join;
use correlate_lib::{fields, jsonl, TlsRecord};

use crate::config::{Settings, REDACTED_VALUE};

/// Value of `orphan_side` for a request the sensor has no record of: source A (Apache) only.
pub const ORPHAN_SIDE_APACHE: &str = "A";

/// Where a line's fingerprint came from (`fingerprint_source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Sensor,
    Inline,
    Upstream,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Sensor, Source::Inline, Source::Upstream];

    pub fn as_str(self) -> &'static str {
        use fields::fingerprint_source as v;
        match self {
            Source::Sensor => v::SENSOR,
            Source::Inline => v::INLINE,
            Source::Upstream => v::UPSTREAM,
        }
    }
}

/// Why a line carries no fingerprint (`orphan_reason`); [`OrphanReason::SynNotSaved`] and
/// [`OrphanReason::SynUnparsable`] also say why an inline line has the TLS fields but none of
/// the SYN's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanReason {
    NoTls,
    Excluded,
    NotFirstRequest,
    RingMissing,
    SensorDown,
    NotInRing,
    HelloNotCaptured,
    HelloUnparsable,
    SynNotSaved,
    SynUnparsable,
    UpstreamUntrusted,
    UpstreamMissing,
    NoConnection,
}

impl OrphanReason {
    pub const ALL: [OrphanReason; 13] = [
        OrphanReason::NoTls,
        OrphanReason::Excluded,
        OrphanReason::NotFirstRequest,
        OrphanReason::RingMissing,
        OrphanReason::SensorDown,
        OrphanReason::NotInRing,
        OrphanReason::HelloNotCaptured,
        OrphanReason::HelloUnparsable,
        OrphanReason::SynNotSaved,
        OrphanReason::SynUnparsable,
        OrphanReason::UpstreamUntrusted,
        OrphanReason::UpstreamMissing,
        OrphanReason::NoConnection,
    ];

    pub fn as_str(self) -> &'static str {
        use fields::orphan_reason as v;
        match self {
            OrphanReason::NoTls => v::NO_TLS,
            OrphanReason::Excluded => v::EXCLUDED,
            OrphanReason::NotFirstRequest => v::NOT_FIRST_REQUEST,
            OrphanReason::RingMissing => v::RING_MISSING,
            OrphanReason::SensorDown => v::SENSOR_DOWN,
            OrphanReason::NotInRing => v::NOT_IN_RING,
            OrphanReason::HelloNotCaptured => v::HELLO_NOT_CAPTURED,
            OrphanReason::HelloUnparsable => v::HELLO_UNPARSABLE,
            OrphanReason::SynNotSaved => v::SYN_NOT_SAVED,
            OrphanReason::SynUnparsable => v::SYN_UNPARSABLE,
            OrphanReason::UpstreamUntrusted => v::UPSTREAM_UNTRUSTED,
            OrphanReason::UpstreamMissing => v::UPSTREAM_MISSING,
            OrphanReason::NoConnection => v::NO_CONNECTION,
        }
    }
}

/// What a line carries of the client's fingerprint.
#[derive(Debug, Clone, Copy)]
pub enum LineFingerprint<'a> {
    /// The connection's record (the sensor's or httpd's own), its half of the line rendered
    /// once per connection.
    Connection(&'a TlsFragment),
    /// A trusted proxy's headers: only what they say, nothing of the proxy's own connection.
    Upstream {
        ja4: Option<&'a str>,
        ja3_hash: Option<&'a str>,
    },
    /// None, and why.
    Orphan(OrphanReason),
}

impl LineFingerprint<'_> {
    /// `correlated` of the line: it carries a fingerprint.
    pub fn correlated(&self) -> bool {
        !matches!(self, LineFingerprint::Orphan(_))
    }

    pub fn source(&self) -> Option<Source> {
        match self {
            LineFingerprint::Connection(t) => Some(t.meta.source),
            LineFingerprint::Upstream { .. } => Some(Source::Upstream),
            LineFingerprint::Orphan(_) => None,
        }
    }

    /// The line's `orphan_reason`, if any.
    pub fn reason(&self) -> Option<OrphanReason> {
        match self {
            LineFingerprint::Connection(t) => t.meta.partial,
            LineFingerprint::Upstream { .. } => None,
            LineFingerprint::Orphan(r) => Some(*r),
        }
    }
}

/// A request field as the line carries it: its text, cut to its cap (on a character boundary)
/// and with U+FFFD for bytes that are not UTF-8 (a JSON line is UTF-8); when there were such
/// bytes, `raw` keeps them exactly ([`escape_raw`]), written as `<name>_raw`, so nothing is lost
/// to forensics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Text<'a> {
    pub text: Cow<'a, str>,
    pub raw: Option<String>,
}

impl<'a> From<&'a str> for Text<'a> {
    fn from(s: &'a str) -> Self {
        Self {
            text: Cow::Borrowed(s),
            raw: None,
        }
    }
}

/// What [`Text::from_bytes`] had to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextCuts {
    pub truncated: bool,
    pub not_utf8: bool,
}

impl<'a> Text<'a> {
    /// The first `max` bytes of `bytes` (fewer if that would split a UTF-8 character), as text.
    pub fn from_bytes(bytes: &'a [u8], max: usize) -> (Self, TextCuts) {
        let mut cuts = TextCuts {
            truncated: bytes.len() > max,
            not_utf8: false,
        };
        let kept = &bytes[..bytes.len().min(max)];
        match std::str::from_utf8(kept) {
            Ok(s) => (Self::from(s), cuts),
            Err(e) if cuts.truncated && e.error_len().is_none() => {
                // Valid up to a character the cap split: keep the whole characters.
                let whole = &kept[..e.valid_up_to()];
                let s = std::str::from_utf8(whole).unwrap_or_default();
                (Self::from(s), cuts)
            }
            Err(_) => {
                cuts.not_utf8 = true;
                (
                    Self {
                        text: String::from_utf8_lossy(kept),
                        raw: Some(escape_raw(kept)),
                    },
                    cuts,
                )
            }
        }
    }

    pub fn into_owned(self) -> Text<'static> {
        Text {
            text: Cow::Owned(self.text.into_owned()),
            raw: self.raw,
        }
    }
}

/// The exact bytes of a field as ASCII: printable ASCII as is, `\` and every other byte as
/// `\xNN` (lower-case hex), so `path_raw` of `/caf\xe9` is the request's own `/caf\xe9`.
pub fn escape_raw(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            out.push_str("\\x");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

/// What httpd knew about one request when it was logged. In the log hook the strings borrow the
/// request's pool; a line that must wait for the sensor is [`RequestSnapshot::into_owned`] so
/// the orphan flusher can finish it after the request is gone. `None` when httpd never got that
/// far (no request line: a 400 or 408 before the method).
#[derive(Debug, Clone, Default)]
pub struct RequestSnapshot<'a> {
    /// `r->request_time`: Unix microseconds when httpd started reading the request.
    pub request_time_us: i64,
    /// The TCP peer of the connection (`c->client_addr`), what the sensor saw; not
    /// `r->useragent_ip`, which mod_remoteip rewrites.
    pub client: Option<SocketAddr>,
    /// The local end of the connection (`c->local_addr`).
    pub local: Option<SocketAddr>,
    /// `r->useragent_ip` when it differs from the TCP peer's address.
    pub useragent_ip: Option<Cow<'a, str>>,
    pub method: Option<Cow<'a, str>>,
    pub scheme: Option<Cow<'a, str>>,
    /// Cut to `ReqinLogMaxFieldLen`, as are `path` and `query`.
    pub host: Option<Text<'a>>,
    pub path: Option<Text<'a>>,
    pub query: Option<Text<'a>>,
    pub http_version: Option<Cow<'a, str>>,
    /// Status of the final (internally redirected) request.
    pub status: i32,
    pub bytes_sent: u64,
    pub duration_us: u64,
    /// 1-based position of the request on its (primary) connection (`keepalives` and
    /// `sequence_number`).
    pub keepalives: u64,
    /// The connection's and the request's ids (crate::ids).
    pub conn_id: Option<Cow<'a, str>>,
    pub request_id: Option<Cow<'a, str>>,
    /// HTTP/2 stream id.
    pub stream_id: Option<u32>,
    /// The detector's verdict and its rule, when the table had one for this client.
    pub verdict: Option<(Cow<'a, str>, Cow<'a, str>)>,
    /// `ReqinLogTag` key and value (`tag_<key>`).
    pub tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// The configured headers present on the request, names as configured, values already
    /// truncated and redacted ([`collect_headers`]).
    pub headers: Vec<Header<'a>>,
    /// JA4H and its raw form (`ReqinLogJA4Plus On`; cookie values redacted as configured).
    pub ja4h: Option<(Cow<'a, str>, Cow<'a, str>)>,
}

/// A logged request header: its name as configured, its value as logged.
pub type Header<'a> = (Cow<'a, str>, Text<'a>);

impl RequestSnapshot<'_> {
    /// The same snapshot, owning its strings.
    pub fn into_owned(self) -> RequestSnapshot<'static> {
        let own = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        let own_text = |t: Option<Text<'_>>| t.map(Text::into_owned);
        RequestSnapshot {
            request_time_us: self.request_time_us,
            client: self.client,
            local: self.local,
            useragent_ip: own(self.useragent_ip),
            method: own(self.method),
            scheme: own(self.scheme),
            host: own_text(self.host),
            path: own_text(self.path),
            query: own_text(self.query),
            http_version: own(self.http_version),
            status: self.status,
            bytes_sent: self.bytes_sent,
            duration_us: self.duration_us,
            keepalives: self.keepalives,
            conn_id: own(self.conn_id),
            request_id: own(self.request_id),
            stream_id: self.stream_id,
            verdict: self
                .verdict
                .map(|(w, r)| (Cow::Owned(w.into_owned()), Cow::Owned(r.into_owned()))),
            tags: self
                .tags
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.into_owned()), Cow::Owned(v.into_owned())))
                .collect(),
            headers: self
                .headers
                .into_iter()
                .map(|(n, v)| (Cow::Owned(n.into_owned()), v.into_owned()))
                .collect(),
            ja4h: self
                .ja4h
                .map(|(h, r)| (Cow::Owned(h.into_owned()), Cow::Owned(r.into_owned()))),
        }
    }
}

/// What [`collect_headers`] had to cut, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeaderCuts {
    /// Values longer than `JsonSockLogMaxHeaderValueLen`.
    pub truncated_values: u64,
    /// Present headers beyond `JsonSockLogMaxHeaders`.
    pub dropped_headers: u64,
    pub redacted: u64,
    /// Values that were not UTF-8 (logged with `header_<Name>_raw`).
    pub not_utf8: u64,
}

/// The configured headers of a request: `get` returns a header's bytes (case-insensitive, as
/// httpd's tables). At most `JsonSockLogMaxHeaders` of them, each cut to
/// `JsonSockLogMaxHeaderValueLen` bytes on a character boundary ([`Text::from_bytes`]);
/// credentials replaced by [`REDACTED_VALUE`].
pub fn collect_headers<'a>(
    settings: &'a Settings,
    mut get: impl FnMut(&str) -> Option<&'a [u8]>,
) -> (Vec<Header<'a>>, HeaderCuts) {
    let mut out = Vec::new();
    let mut cuts = HeaderCuts::default();
    let max_len = settings.max_header_value_len();
    for name in settings.headers() {
        let Some(value) = get(name) else {
            continue;
        };
        if out.len() >= settings.max_headers() {
            cuts.dropped_headers += 1;
            continue;
        }
        let value = if settings.is_redacted(name) {
            cuts.redacted += 1;
            Text::from(REDACTED_VALUE)
        } else {
            let (text, cut) = Text::from_bytes(value, max_len);
            cuts.truncated_values += u64::from(cut.truncated);
            cuts.not_utf8 += u64::from(cut.not_utf8);
            text
        };
        out.push((Cow::Borrowed(name.as_str()), value));
    }
    (out, cuts)
}

/// The sensor's half of a correlated line. It depends only on the record and the connection's
/// two addresses, so it is rendered once per connection and appended to the line of every
/// keep-alive request and HTTP/2 stream of that connection.
///
/// The request-side fields that also come from the sensor are the connection's addresses
/// (`src_ip`, `src_port`, `dst_ip`, `dst_port`) and `timestamp`: the line keeps its own value
/// and, when the sensor's differs, writes its own as `a_<name>` and the sensor's as `b_<name>`
/// (the rule of [`join::merge_fields`]).
#[derive(Debug, Clone)]
pub struct TlsFragment {
    record: FragmentRecord,
    meta: FragmentMeta,
    /// The connection the fragment was rendered for.
    client: Option<SocketAddr>,
    local: Option<SocketAddr>,
    /// The request side's address fields, `,"src_ip":…` (`a_src_ip` where the sensor
    /// disagrees), rendered once.
    addresses: Vec<u8>,
    /// `,"name":value` for every sensor field the request side does not already carry with the
    /// same value (those it carries with another value as `b_<name>`), `b_timestamp` included.
    json: Vec<u8>,
}

/// The record a fragment was rendered from.
#[derive(Debug, Clone)]
enum FragmentRecord {
    Owned(TlsRecord),
    /// Built only when asked for ([`TlsFragment::record`]: `both`'s cross-check, a line for
    /// other addresses).
    Parts(RecordParts),
}

/// A record in three parts: what belongs to this connection alone, and the fields of its
/// ClientHello and of its SYN's shape, shared with every connection that sent the same hello
/// and the same SYN. httpd's inline fingerprint keeps a connection's record so, instead of a
/// record of its own with a copy of every string (an allocation each, and its free, on every
/// new connection).
#[derive(Debug, Clone)]
pub struct RecordParts {
    /// The 4-tuple, times, `ip` (with the SYN's IP id), `sensor_id`; no TLS or TCP field.
    pub own: TlsRecord,
    /// The TLS fields ([`TLS_FIELDS`]); nothing else is read.
    pub hello: std::sync::Arc<TlsRecord>,
    /// `tcp`, `tcp_os`, `tcp_os_distance` and `tcp_option_kinds`; nothing else is read.
    /// `None` without a SYN (then `own.ip` is `None` too).
    pub syn: Option<std::sync::Arc<TlsRecord>>,
}

impl RecordParts {
    /// The whole record.
    pub fn to_record(&self) -> TlsRecord {
        let hello = &*self.hello;
        let mut rec = TlsRecord {
            tls_version: hello.tls_version.clone(),
            tls_sni: hello.tls_sni.clone(),
            tls_alpn: hello.tls_alpn.clone(),
            ja4: hello.ja4.clone(),
            ja4_r: hello.ja4_r.clone(),
            ja3: hello.ja3.clone(),
            ja3_hash: hello.ja3_hash.clone(),
            ..self.own.clone()
        };
        if let Some(syn) = &self.syn {
            rec.tcp.clone_from(&syn.tcp);
            rec.tcp_os.clone_from(&syn.tcp_os);
            rec.tcp_os_distance = syn.tcp_os_distance;
            rec.tcp_option_kinds = syn.tcp_option_kinds;
        }
        rec
    }
}

/// What a connection's half of the line says besides its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentMeta {
    pub source: Source,
    /// Why the SYN's fields are missing beside the TLS ones (inline).
    pub partial: Option<OrphanReason>,
    /// JA4T of the record's SYN (`ReqinLogJA4Plus On`).
    pub ja4t: Option<String>,
    /// The client family the JA4 belongs to (`ReqinLogClientMap`): `ja4_client`,
    /// `REQIN_CLIENT`.
    pub client: Option<String>,
    /// The record has the sensor's own fields (a sensor record, or `both`'s merge): its
    /// `sensor_id` is written even when empty, as in every sensor line; a record httpd made
    /// alone has none.
    pub sensor_fields: bool,
}

impl FragmentMeta {
    pub fn of(source: Source) -> Self {
        Self {
            source,
            partial: None,
            ja4t: None,
            client: None,
            sensor_fields: source == Source::Sensor,
        }
    }
}

/// The record fields that come from the ClientHello alone, in [`TlsRecord::serialize_fields`]'s
/// order: what [`tls_json`] renders once for every connection that sends the same hello.
const TLS_FIELDS: [&str; 7] = [
    fields::TLS_VERSION,
    fields::TLS_SNI,
    fields::TLS_ALPN,
    fields::JA4,
    fields::JA4_R,
    fields::JA3,
    fields::JA3_HASH,
];

/// The record fields of the SYN alone, but its IP id (the one that changes from connection to
/// connection of a client): what [`syn_json`] renders once for every connection of the same
/// client stack. `(ip_meta_*, tcp_meta_*, tcp_os, tcp_os_distance)`.
fn is_syn_field(name: &[u8]) -> bool {
    const TTL: &[u8] = fields::IP_META_TTL.as_bytes();
    const TOTAL_LENGTH: &[u8] = fields::IP_META_TOTAL_LENGTH.as_bytes();
    const DF: &[u8] = fields::IP_META_DF.as_bytes();
    const WINDOW: &[u8] = fields::TCP_META_WINDOW_SIZE.as_bytes();
    const MSS: &[u8] = fields::TCP_META_MSS.as_bytes();
    const SCALE: &[u8] = fields::TCP_META_WINDOW_SCALE.as_bytes();
    const OPTIONS: &[u8] = fields::TCP_META_OPTIONS.as_bytes();
    const OS: &[u8] = fields::TCP_OS.as_bytes();
    const DISTANCE: &[u8] = fields::TCP_OS_DISTANCE.as_bytes();
    matches!(
        name,
        TTL | TOTAL_LENGTH | DF | WINDOW | MSS | SCALE | OPTIONS | OS | DISTANCE
    )
}

/// `,"ip_meta_ttl":…,"tcp_os_distance":…`: a record's SYN fields but `ip_meta_id`, as its
/// fragment writes them (the record's own serialization, filtered), for
/// [`TlsFragment::with_parts`].
pub fn syn_json(rec: &TlsRecord) -> Vec<u8> {
    let mut merge = Merge::new(None, None, false);
    merge.only_syn = true;
    // Writing strings and numbers into a Vec cannot fail.
    let _ = rec.serialize_fields(&mut merge);
    std::mem::take(&mut merge.out)
}

/// `,"tls_version":…,"ja3_hash":…`: the [`TLS_FIELDS`] of a record as its fragment writes
/// them, for [`TlsFragment::with_tls_json`].
pub fn tls_json(rec: &TlsRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + rec.ja4_r.len() + rec.ja3.len());
    let values = [
        &rec.tls_version,
        &rec.tls_sni,
        &rec.tls_alpn,
        &rec.ja4,
        &rec.ja4_r,
        &rec.ja3,
        &rec.ja3_hash,
    ];
    for (name, value) in TLS_FIELDS.iter().zip(values) {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        let _ = jsonl::write_str(&mut out, value);
    }
    out
}

impl TlsFragment {
    /// Merges the record's fields with the request side's address fields by the rule of
    /// [`join::merge_fields`], writing them as they are serialized (no map), then what `meta`
    /// adds (`fingerprint_source`, ...). A `sensor_id` without a value (a record httpd made
    /// itself) is left out.
    pub fn new(
        rec: TlsRecord,
        meta: FragmentMeta,
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Self {
        Self::render_merged(rec, meta, client, local, None, None)
    }

    /// As [`TlsFragment::new`] for the record of `parts`, with its TLS fields already rendered
    /// by [`tls_json`] (the same hello of an earlier connection), and its SYN fields by
    /// [`syn_json`] (the same SYN): only the rest is rendered again, and the record is kept in
    /// its parts.
    pub fn with_parts(
        parts: RecordParts,
        meta: FragmentMeta,
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
        tls_json: &[u8],
        syn_json: Option<&[u8]>,
    ) -> Self {
        if let (Some(syn), Some(c), Some(l)) = (syn_json, client, local) {
            if parts.own.key.is_some_and(|k| k.src == c && k.dst == l) {
                let (addresses, json) =
                    Self::render_same_addresses(&parts.own, &meta, c, l, tls_json, syn);
                return Self {
                    record: FragmentRecord::Parts(parts),
                    meta,
                    client,
                    local,
                    addresses,
                    json,
                };
            }
        }
        Self::render_merged(
            parts.to_record(),
            meta,
            client,
            local,
            Some(tls_json),
            syn_json,
        )
    }

    /// [`TlsFragment::render`] by the merge of every field.
    fn render_merged(
        rec: TlsRecord,
        meta: FragmentMeta,
        client: Option<SocketAddr>,
        local: Option<SocketAddr>,
        tls_json: Option<&[u8]>,
        syn_json: Option<&[u8]>,
    ) -> Self {
        let mut merge = Merge::new(client, local, meta.sensor_fields);
        merge.skip_tls = tls_json.is_some();
        merge.skip_syn = syn_json.is_some();
        match (tls_json, syn_json) {
            (Some(tls), Some(syn)) => {
                merge.connection_fields(&rec);
                merge.out.extend_from_slice(tls);
                merge.out.extend_from_slice(syn);
            }
            _ => {
                // Writing strings and numbers into a Vec cannot fail.
                let _ = rec.serialize_fields(&mut merge);
                for json in [tls_json, syn_json].into_iter().flatten() {
                    merge.out.extend_from_slice(json);
                }
            }
        }
        push_meta(&mut merge.out, &meta);
        let mut addresses = Vec::with_capacity(96);
        for f in &merge.request {
            if let Some(value) = &f.value {
                addresses.extend_from_slice(b",\"");
                if f.renamed {
                    addresses.extend_from_slice(fields::PREFIX_A.as_bytes());
                }
                addresses.extend_from_slice(f.name.as_bytes());
                addresses.extend_from_slice(b"\":");
                addresses.extend_from_slice(value);
            }
        }
        Self {
            record: FragmentRecord::Owned(rec),
            meta,
            client,
            local,
            addresses,
            json: std::mem::take(&mut merge.out),
        }
    }

    /// The `addresses` and `json` of a record whose 4-tuple is the request side's own (httpd's
    /// own record, inline), with its TLS and SYN fields rendered: every address field has the
    /// same value on both sides, so the merge writes the request side's and none of the
    /// record's, and what is left of the record is [`Merge::connection_fields`]' other
    /// fields, written here in the same order without the merge's buffers. Of `rec`, only
    /// what [`RecordParts::own`] holds is read. Two buffers, not one: with a curl-sized hello
    /// one would be above the 1 032 bytes glibc's per-thread cache serves (BENCHMARKS.md).
    fn render_same_addresses(
        rec: &TlsRecord,
        meta: &FragmentMeta,
        client: SocketAddr,
        local: SocketAddr,
        tls_json: &[u8],
        syn_json: &[u8],
    ) -> (Vec<u8>, Vec<u8>) {
        let mut addresses = Vec::with_capacity(96);
        for (ip, port, ip_name, port_name) in [
            (client.ip(), client.port(), fields::SRC_IP, fields::SRC_PORT),
            (local.ip(), local.port(), fields::DST_IP, fields::DST_PORT),
        ] {
            push_key(&mut addresses, ip_name);
            addresses.push(b'"');
            push_ip(&mut addresses, ip);
            addresses.push(b'"');
            push_key(&mut addresses, port_name);
            addresses.extend_from_slice(itoa::Buffer::new().format(port).as_bytes());
        }
        // The numbers and names below, and what `push_meta` adds, fit in the 192 bytes.
        let mut json = Vec::with_capacity(
            192 + tls_json.len()
                + syn_json.len()
                + rec.sensor_id.len()
                + meta.ja4t.as_ref().map_or(0, String::len)
                + meta.client.as_ref().map_or(0, String::len),
        );
        if let Some(ip) = &rec.ip {
            push_key(&mut json, fields::IP_META_ID);
            json.extend_from_slice(itoa::Buffer::new().format(ip.id).as_bytes());
        }
        // As `Merge::write_entry`: an empty `sensor_id` is left out of a record httpd made.
        if meta.sensor_fields || !rec.sensor_id.is_empty() {
            push_key(&mut json, fields::SENSOR_ID);
            let _ = jsonl::write_str(&mut json, &rec.sensor_id);
        }
        if let Some(ms) = rec.syn_to_clienthello_ms() {
            push_key(&mut json, fields::SYN_TO_CLIENTHELLO_MS);
            json.extend_from_slice(itoa::Buffer::new().format(ms).as_bytes());
        }
        json.extend_from_slice(b",\"");
        json.extend_from_slice(fields::PREFIX_B.as_bytes());
        json.extend_from_slice(fields::TIMESTAMP.as_bytes());
        json.extend_from_slice(b"\":");
        json.extend_from_slice(itoa::Buffer::new().format(rec.hello_time_ns).as_bytes());
        json.extend_from_slice(tls_json);
        json.extend_from_slice(syn_json);
        push_meta(&mut json, meta);
        (addresses, json)
    }

    /// The same record's fragment for another pair of addresses.
    fn for_addresses(&self, client: Option<SocketAddr>, local: Option<SocketAddr>) -> Self {
        Self::new(self.record().into_owned(), self.meta.clone(), client, local)
    }

    /// The record the fragment was rendered from (built from its parts if it was kept so).
    pub fn record(&self) -> Cow<'_, TlsRecord> {
        match &self.record {
            FragmentRecord::Owned(rec) => Cow::Borrowed(rec),
            FragmentRecord::Parts(parts) => Cow::Owned(parts.to_record()),
        }
    }

    /// The record's JA4 (empty without one).
    pub fn ja4(&self) -> &str {
        match &self.record {
            FragmentRecord::Owned(rec) => &rec.ja4,
            FragmentRecord::Parts(parts) => &parts.hello.ja4,
        }
    }

    pub fn meta(&self) -> &FragmentMeta {
        &self.meta
    }
}

/// `,"name":` for a name of [`fields`] (plain ASCII, nothing to escape).
fn push_key(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
}

/// What a fragment's [`FragmentMeta`] adds after the record's fields: `fingerprint_source`,
/// then `orphan_reason`, `ja4t` and `ja4_client` when there are.
fn push_meta(out: &mut Vec<u8>, meta: &FragmentMeta) {
    for (name, value) in [
        (fields::FINGERPRINT_SOURCE, Some(meta.source.as_str())),
        (
            fields::ORPHAN_REASON,
            meta.partial.map(OrphanReason::as_str),
        ),
        (fields::JA4T, meta.ja4t.as_deref()),
        (fields::JA4_CLIENT, meta.client.as_deref()),
    ] {
        if let Some(value) = value {
            push_key(out, name);
            let _ = jsonl::write_str(out, value);
        }
    }
}

/// An address as its `Display` text (nothing to escape): IPv4 digit by digit on the stack
/// (`core::fmt` made a sixth of a fragment's cost, an `itoa` call and a copy per octet still
/// 220 instructions an address), IPv6 through `Display`.
fn push_ip(out: &mut Vec<u8>, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // The four octets' digits on the stack, then one copy.
            let mut text = [0u8; 15];
            let mut len = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text[len] = b'.';
                    len += 1;
                }
                if octet >= 100 {
                    text[len] = b'0' + octet / 100;
                    len += 1;
                }
                if octet >= 10 {
                    text[len] = b'0' + octet / 10 % 10;
                    len += 1;
                }
                text[len] = b'0' + octet % 10;
                len += 1;
            }
            out.extend_from_slice(&text[..len]);
        }
        std::net::IpAddr::V6(v6) => {
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// What [`Merge`] does with one of the record's fields, by its name.
enum FieldClass {
    /// Not written: the sensor's flow id (`conn_id`), or a field rendered elsewhere.
    Drop,
    SensorId,
    Timestamp,
    /// One of the request side's address fields (index into `Merge::request`).
    Request(usize),
    Tls,
    /// A SYN field but `ip_meta_id` ([`syn_json`]).
    Syn,
    Other,
}

fn classify(name: &[u8]) -> FieldClass {
    const CONN_ID: &[u8] = fields::CONN_ID.as_bytes();
    const SENSOR_ID: &[u8] = fields::SENSOR_ID.as_bytes();
    const TIMESTAMP: &[u8] = fields::TIMESTAMP.as_bytes();
    const SRC_IP: &[u8] = fields::SRC_IP.as_bytes();
    const SRC_PORT: &[u8] = fields::SRC_PORT.as_bytes();
    const DST_IP: &[u8] = fields::DST_IP.as_bytes();
    const DST_PORT: &[u8] = fields::DST_PORT.as_bytes();
    const TLS_VERSION: &[u8] = fields::TLS_VERSION.as_bytes();
    const TLS_SNI: &[u8] = fields::TLS_SNI.as_bytes();
    const TLS_ALPN: &[u8] = fields::TLS_ALPN.as_bytes();
    const JA4: &[u8] = fields::JA4.as_bytes();
    const JA4_R: &[u8] = fields::JA4_R.as_bytes();
    const JA3: &[u8] = fields::JA3.as_bytes();
    const JA3_HASH: &[u8] = fields::JA3_HASH.as_bytes();
    match name {
        CONN_ID => FieldClass::Drop,
        SENSOR_ID => FieldClass::SensorId,
        TIMESTAMP => FieldClass::Timestamp,
        SRC_IP => FieldClass::Request(0),
        SRC_PORT => FieldClass::Request(1),
        DST_IP => FieldClass::Request(2),
        DST_PORT => FieldClass::Request(3),
        TLS_VERSION | TLS_SNI | TLS_ALPN | JA4 | JA4_R | JA3 | JA3_HASH => FieldClass::Tls,
        other if is_syn_field(other) => FieldClass::Syn,
        _ => FieldClass::Other,
    }
}

impl Merge {
    /// A merge against the request side's addresses.
    fn new(client: Option<SocketAddr>, local: Option<SocketAddr>, sensor_fields: bool) -> Self {
        let text = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = Vec::with_capacity(48);
            f(&mut v);
            v
        };
        let ip = |a: SocketAddr| {
            text(&|v| {
                v.push(b'"');
                push_ip(v, a.ip());
                v.push(b'"');
            })
        };
        let port = |a: SocketAddr| {
            text(&|v| v.extend_from_slice(itoa::Buffer::new().format(a.port()).as_bytes()))
        };
        Merge {
            request: [
                (fields::SRC_IP, client.map(ip)),
                (fields::SRC_PORT, client.map(port)),
                (fields::DST_IP, local.map(ip)),
                (fields::DST_PORT, local.map(port)),
            ]
            .map(|(name, value)| RequestField {
                name,
                value,
                renamed: false,
            }),
            skip_empty_sensor_id: !sensor_fields,
            skip_tls: false,
            skip_syn: false,
            only_syn: false,
            out: Vec::with_capacity(1024),
            key: SCRATCH.with(|s| s.take().0),
            value: SCRATCH.with(|s| s.take().1),
        }
    }
}

thread_local! {
    /// [`Merge`]'s key and value buffers, kept by each thread between fragments.
    static SCRATCH: Cell<(Vec<u8>, Vec<u8>)> = const { Cell::new((Vec::new(), Vec::new())) };
}

impl Drop for Merge {
    fn drop(&mut self) {
        // A buffer a hostile record made large is not kept.
        if self.value.capacity() <= KEPT_CAPACITY {
            let (key, value) = (
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.value),
            );
            let _ = SCRATCH.try_with(|s| s.set((key, value)));
        }
    }
}

/// A request-side field the sensor also writes, as JSON text.
struct RequestField {
    name: &'static str,
    value: Option<Vec<u8>>,
    /// The sensor's value differs: the request side's is written as `a_<name>`.
    renamed: bool,
}

/// Receives the record's fields ([`TlsRecord::serialize_fields`]) and writes each one as
/// `,"name":value`: `timestamp` as `b_timestamp`; a field the request side also has, not at
/// all when the values are equal, as `b_<name>` when they differ.
struct Merge {
    request: [RequestField; 4],
    skip_empty_sensor_id: bool,
    /// The TLS fields are rendered elsewhere ([`tls_json`]).
    skip_tls: bool,
    /// The SYN fields but `ip_meta_id` are rendered elsewhere ([`syn_json`]).
    skip_syn: bool,
    /// Only those are written ([`syn_json`] itself).
    only_syn: bool,
    out: Vec<u8>,
    /// The current key and value, as JSON text.
    key: Vec<u8>,
    value: Vec<u8>,
}

impl serde::ser::SerializeMap for Merge {
    type Ok = ();
    type Error = serde_json::Error;

    fn serialize_key<T: ?Sized + serde::Serialize>(&mut self, key: &T) -> Result<(), Self::Error> {
        self.key.clear();
        jsonl::key_text(&mut self.key, key)
    }

    fn serialize_value<T: ?Sized + serde::Serialize>(
        &mut self,
        value: &T,
    ) -> Result<(), Self::Error> {
        // The key as is: the record's keys are names of `fields`, which need no escaping.
        let name = self.key.as_slice();
        debug_assert!(needs_no_escape(name));
        let class = classify(name);
        match class {
            // The module's id of the connection is the line's `conn_id` (the root of its
            // request ids); the sensor's flow id (`ip:port-ip:port`) says nothing the address
            // fields do not.
            FieldClass::Drop => return Ok(()),
            FieldClass::Tls if self.skip_tls || self.only_syn => return Ok(()),
            FieldClass::Syn if self.skip_syn => return Ok(()),
            FieldClass::Syn => {}
            _ if self.only_syn => return Ok(()),
            _ => {}
        }
        self.value.clear();
        jsonl::write_value(&mut self.value, value)?;
        self.write_entry(class);
        Ok(())
    }

    fn end(self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl Merge {
    /// Writes the entry in `key` and `value` (its JSON text) by the merge rule.
    fn write_entry(&mut self, class: FieldClass) {
        let mut prefix: &[u8] = b"";
        match class {
            // A record httpd made itself: no sensor said anything.
            FieldClass::SensorId
                if self.skip_empty_sensor_id && self.value.as_slice() == b"\"\"" =>
            {
                return
            }
            FieldClass::Timestamp => prefix = fields::PREFIX_B.as_bytes(),
            FieldClass::Request(i) => {
                if let Some(f) = self.request.get_mut(i).filter(|f| f.value.is_some()) {
                    if f.value.as_deref() == Some(self.value.as_slice()) {
                        return;
                    }
                    f.renamed = true;
                    prefix = fields::PREFIX_B.as_bytes();
                }
            }
            _ => {}
        }
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(prefix);
        self.out.extend_from_slice(&self.key);
        self.out.extend_from_slice(b"\":");
        self.out.extend_from_slice(&self.value);
    }

    /// One field written without serde: its name, and its value's JSON text from `value`.
    fn field(&mut self, name: &'static str, value: impl FnOnce(&mut Vec<u8>)) {
        self.key.clear();
        self.key.extend_from_slice(name.as_bytes());
        let class = classify(name.as_bytes());
        self.value.clear();
        value(&mut self.value);
        self.write_entry(class);
    }

    /// The record's fields that change from one connection to the next (the 4-tuple, the IP
    /// id, the times) and `sensor_id`: with [`tls_json`] and [`syn_json`], every field of
    /// [`TlsRecord::serialize_fields`] (a unit test keeps the two lists in step), written
    /// directly rather than through serde for each connection.
    fn connection_fields(&mut self, rec: &TlsRecord) {
        let number = |n: u64| {
            move |v: &mut Vec<u8>| v.extend_from_slice(itoa::Buffer::new().format(n).as_bytes())
        };
        let ip = |a: std::net::IpAddr| {
            move |v: &mut Vec<u8>| {
                v.push(b'"');
                push_ip(v, a);
                v.push(b'"');
            }
        };
        if let Some(k) = &rec.key {
            self.field(fields::SRC_IP, ip(k.src.ip()));
            self.field(fields::SRC_PORT, number(u64::from(k.src.port())));
            self.field(fields::DST_IP, ip(k.dst.ip()));
            self.field(fields::DST_PORT, number(u64::from(k.dst.port())));
        }
        if let Some(meta) = &rec.ip {
            self.field(fields::IP_META_ID, number(u64::from(meta.id)));
        }
        self.field(fields::SENSOR_ID, |v| {
            let _ = jsonl::write_str(v, &rec.sensor_id);
        });
        if let Some(ms) = rec.syn_to_clienthello_ms() {
            self.field(fields::SYN_TO_CLIENTHELLO_MS, number(ms));
        }
        self.field(fields::TIMESTAMP, number(rec.hello_time_ns));
    }
}

/// The fields [`Merge::connection_fields`] writes, for the test that keeps it in step with
/// the record's own serialization.
#[cfg(test)]
const CONNECTION_FIELDS: [&str; 9] = [
    fields::SRC_IP,
    fields::SRC_PORT,
    fields::DST_IP,
    fields::DST_PORT,
    fields::IP_META_ID,
    fields::CONN_ID,
    fields::SENSOR_ID,
    fields::SYN_TO_CLIENTHELLO_MS,
    fields::TIMESTAMP,
];

/// A JSON object being written into a byte buffer.
struct Object<'b> {
    out: &'b mut Vec<u8>,
    empty: bool,
}

/// Printable ASCII without `"` or `\\`: what JSON writes between quotes as it is (the checks
/// of the text the module copies without escaping it).
fn needs_no_escape(text: &[u8]) -> bool {
    text.iter()
        .all(|&b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

impl<'b> Object<'b> {
    fn open(out: &'b mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, empty: true }
    }

    /// The separator before a key (none before the first) and the key's opening quote.
    #[inline]
    fn open_key(&mut self) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
    }

    /// A key from [`fields`]: plain ASCII, written as is (configured header names go through
    /// [`Object::prefixed_key`], which escapes).
    fn key(&mut self, name: &'static str) {
        debug_assert!(needs_no_escape(name.as_bytes()));
        self.open_key();
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// The key `prefix` + `name`, both from [`fields`] (plain ASCII, written as they are).
    fn field_key(&mut self, prefix: &'static str, name: &'static str) {
        debug_assert!(needs_no_escape(prefix.as_bytes()) && needs_no_escape(name.as_bytes()));
        self.open_key();
        self.out.extend_from_slice(prefix.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// The key `prefix` + `name`, where `prefix` is one of the plain-ASCII field prefixes.
    fn prefixed_key(&mut self, prefix: &str, name: &str) {
        self.open_key();
        self.out.extend_from_slice(prefix.as_bytes());
        // `name` escaped, without the opening quote `write_str` writes.
        let start = self.out.len();
        let _ = jsonl::write_str(self.out, name);
        self.out.remove(start);
        self.out.push(b':');
    }

    /// A value the module wrote itself from digits, letters and punctuation that JSON does not
    /// escape (a time, its own connection id): copied between quotes without the escape check.
    fn plain(&mut self, name: &'static str, value: &str) {
        debug_assert!(needs_no_escape(value.as_bytes()));
        self.key(name);
        self.out.reserve(value.len() + 2);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    fn str(&mut self, name: &'static str, value: &str) {
        self.key(name);
        // A string always serialises.
        let _ = jsonl::write_str(self.out, value);
    }

    /// `name` and, when its bytes were not UTF-8, `name_raw`.
    fn text(&mut self, name: &'static str, value: &Text<'_>) {
        self.str(name, &value.text);
        if let Some(raw) = &value.raw {
            self.key(name);
            // `"name":` → `"name_raw":`
            self.out.truncate(self.out.len() - 2);
            self.out.extend_from_slice(fields::RAW_SUFFIX.as_bytes());
            self.out.extend_from_slice(b"\":");
            // `raw` is printable ASCII without `\`; only `"` needs escaping.
            let _ = jsonl::write_str(self.out, raw);
        }
    }

    fn ip(&mut self, name: &'static str, ip: std::net::IpAddr) {
        self.key(name);
        self.out.push(b'"');
        push_ip(self.out, ip);
        self.out.push(b'"');
    }

    fn num(&mut self, name: &'static str, value: impl itoa::Integer) {
        self.key(name);
        self.out
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
    }

    fn bool(&mut self, name: &'static str, value: bool) {
        self.key(name);
        self.out
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn close(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// Writes the complete line, `\n` included, at the end of `out`.
pub fn write_line(out: &mut Vec<u8>, req: &RequestSnapshot<'_>, fp: LineFingerprint<'_>) {
    // A fragment made for another connection (never, from the hooks) is rendered again.
    let fresh;
    let tls = match fp {
        LineFingerprint::Connection(t) if (t.client, t.local) != (req.client, req.local) => {
            fresh = t.for_addresses(req.client, req.local);
            Some(&fresh)
        }
        LineFingerprint::Connection(t) => Some(t),
        _ => None,
    };
    let mut o = Object::open(out);
    let time = Rfc3339Micros::new(req.request_time_us);
    let time = time.as_str();
    o.plain(fields::TIME, time);
    o.plain(fields::TIMESTAMP, time);
    match tls {
        Some(t) => o.out.extend_from_slice(&t.addresses),
        None => {
            if let Some(client) = req.client {
                o.ip(fields::SRC_IP, client.ip());
                o.num(fields::SRC_PORT, client.port());
            }
            if let Some(local) = req.local {
                o.ip(fields::DST_IP, local.ip());
                o.num(fields::DST_PORT, local.port());
            }
        }
    }
    o.bool(fields::CORRELATED, fp.correlated());
    if let LineFingerprint::Orphan(reason) = fp {
        o.str(fields::ORPHAN_SIDE, ORPHAN_SIDE_APACHE);
        o.str(fields::ORPHAN_REASON, reason.as_str());
    }
    o.num(fields::KEEPALIVES, req.keepalives);
    if let Some(id) = &req.conn_id {
        // `ids::Ids::conn_id`: hex digits and a dash.
        o.plain(fields::CONN_ID, id);
    }
    if let Some(id) = &req.request_id {
        o.str(fields::REQUEST_ID, id);
    }
    o.num(fields::SEQUENCE_NUMBER, req.keepalives);
    if let Some(id) = req.stream_id {
        o.num(fields::STREAM_ID, id);
    }
    if let Some((word, rule)) = &req.verdict {
        o.str(fields::VERDICT, word);
        if !rule.is_empty() {
            o.str(fields::VERDICT_RULE, rule);
        }
    }
    if let Some(ip) = &req.useragent_ip {
        o.str(fields::USERAGENT_IP, ip);
    }
    for (name, value) in [(fields::METHOD, &req.method), (fields::SCHEME, &req.scheme)] {
        if let Some(v) = value {
            o.str(name, v);
        }
    }
    for (name, value) in [(fields::HOST, &req.host), (fields::PATH, &req.path)] {
        if let Some(v) = value {
            o.text(name, v);
        }
    }
    // Present whenever there was a request line: `""` for a request without a query string.
    match &req.query {
        Some(q) => o.text(fields::QUERY, q),
        None if req.method.is_some() => o.str(fields::QUERY, ""),
        None => {}
    }
    if let Some(v) = &req.http_version {
        o.str(fields::HTTP_VERSION, v);
    }
    o.num(fields::STATUS, req.status);
    o.num(fields::BYTES_SENT, req.bytes_sent);
    o.num(fields::DURATION_US, req.duration_us);
    for (name, value) in &req.headers {
        o.prefixed_key(fields::HEADER_PREFIX, name);
        let _ = jsonl::write_str(o.out, &value.text);
        if let Some(raw) = &value.raw {
            o.prefixed_key(fields::HEADER_PREFIX, name);
            o.out.truncate(o.out.len() - 2);
            o.out.extend_from_slice(fields::RAW_SUFFIX.as_bytes());
            o.out.extend_from_slice(b"\":");
            let _ = jsonl::write_str(o.out, raw);
        }
    }
    for (key, value) in &req.tags {
        o.prefixed_key(fields::TAG_PREFIX, key);
        let _ = jsonl::write_str(o.out, value);
    }
    if let Some((ja4h, ja4h_r)) = &req.ja4h {
        o.str(fields::JA4H, ja4h);
        o.str(fields::JA4H_R, ja4h_r);
    }
    if let LineFingerprint::Upstream { ja4, ja3_hash } = fp {
        for (name, value) in [(fields::JA4, ja4), (fields::JA3_HASH, ja3_hash)] {
            if let Some(v) = value {
                o.str(name, v);
            }
        }
        o.str(fields::FINGERPRINT_SOURCE, Source::Upstream.as_str());
    }
    if let Some(t) = tls {
        let a_ns = u64::try_from(req.request_time_us)
            .unwrap_or(0)
            .saturating_mul(1000);
        o.field_key(fields::PREFIX_A, fields::TIMESTAMP);
        o.out
            .extend_from_slice(itoa::Buffer::new().format(a_ns).as_bytes());
        o.out.extend_from_slice(&t.json);
    }
    o.close();
}

/// The complete line, `\n` included, in a new buffer.
pub fn log_line(req: &RequestSnapshot<'_>, fp: LineFingerprint<'_>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(LINE_CAPACITY);
    write_line(&mut buf, req, fp);
    buf
}

/// Renders the line in the calling thread's buffer and hands it to `f`; the buffer is kept for
/// the thread's next line (unless one exceptional line made it large).
pub fn with_line<R>(
    req: &RequestSnapshot<'_>,
    fp: LineFingerprint<'_>,
    f: impl FnOnce(&[u8]) -> R,
) -> R {
    thread_local! {
        static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(LINE_CAPACITY));
    }
    LINE.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            write_line(&mut buf, req, fp);
            let result = f(&buf);
            if buf.capacity() > KEPT_CAPACITY {
                *buf = Vec::with_capacity(LINE_CAPACITY);
            }
            result
        }
        // Re-entered from `f` (it never is): a buffer of its own.
        Err(_) => f(&log_line(req, fp)),
    })
}

/// Typical line length; one allocation for most requests.
const LINE_CAPACITY: usize = 2048;
/// A thread keeps a buffer up to this size between lines.
const KEPT_CAPACITY: usize = 64 * 1024;

/// `2026-11-25T07:01:02.123456Z` for a Unix time in microseconds (before 1970: the epoch),
/// formatted once on the stack.
struct Rfc3339Micros {
    buf: [u8; 32],
    len: usize,
}

/// `2026-11-25T07:01:02.`: what every line of the same second shares.
const SECOND_PREFIX: usize = 20;

impl Rfc3339Micros {
    /// The seconds are formatted once per second per thread, the microseconds every time.
    fn new(unix_us: i64) -> Self {
        thread_local! {
            static SECOND: Cell<(u64, [u8; SECOND_PREFIX])> =
                const { Cell::new((u64::MAX, [0; SECOND_PREFIX])) };
        }
        let us = u64::try_from(unix_us).unwrap_or(0);
        let (secs, micros) = (us / 1_000_000, us % 1_000_000);
        let prefix = match SECOND.with(Cell::get) {
            (cached, prefix) if cached == secs => prefix,
            _ => {
                let full = Self::format(us);
                if full.len != SECOND_PREFIX + 7 {
                    return full;
                }
                let mut prefix = [0u8; SECOND_PREFIX];
                prefix.copy_from_slice(&full.buf[..SECOND_PREFIX]);
                SECOND.with(|c| c.set((secs, prefix)));
                prefix
            }
        };
        let mut buf = [0u8; 32];
        buf[..SECOND_PREFIX].copy_from_slice(&prefix);
        let mut digits = micros;
        for i in (SECOND_PREFIX..SECOND_PREFIX + 6).rev() {
            buf[i] = b'0' + (digits % 10) as u8;
            digits /= 10;
        }
        buf[SECOND_PREFIX + 6] = b'Z';
        Self {
            buf,
            len: SECOND_PREFIX + 7,
        }
    }

    fn format(us: u64) -> Self {
        let mut buf = [0u8; 32];
        let mut rest = &mut buf[..];
        // 27 bytes for every year up to 9999 (humantime's range); a longer one would be cut.
        let _ = write!(
            rest,
            "{}",
            humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us))
        );
        let len = 32 - rest.len();
        Self { buf, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

/// [`Rfc3339Micros`] as a string.
pub fn rfc3339_micros(unix_us: i64) -> String {
    Rfc3339Micros::new(unix_us).as_str().to_owned()
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

    const ORPHAN: LineFingerprint<'static> = LineFingerprint::Orphan(OrphanReason::NotInRing);

    fn sensor() -> FragmentMeta {
        FragmentMeta::of(Source::Sensor)
    }

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
            conn_id: Some("0123456789abcdef-1".into()),
            request_id: Some("0123456789abcdef-1-1".into()),
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
        // The same second again (its prefix cached), then the next.
        assert_eq!(
            rfc3339_micros(REQUEST_US - 123_450),
            "2026-11-25T07:01:02.000006Z"
        );
        assert_eq!(
            rfc3339_micros(REQUEST_US + 876_544),
            "2026-11-25T07:01:03.000000Z"
        );
        assert_eq!(
            rfc3339_micros(REQUEST_US + 876_543),
            "2026-11-25T07:01:02.999999Z"
        );
        for us in (0..3_000_000_000_000_000i64).step_by(7_777_777_777_777) {
            assert_eq!(
                rfc3339_micros(us),
                humantime::format_rfc3339_micros(
                    UNIX_EPOCH + Duration::from_micros(us.unsigned_abs())
                )
                .to_string()
            );
        }
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339_micros(-5), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn uncorrelated_request_is_an_orphan_of_side_a() {
        let v = parse(&log_line(&get_request(), ORPHAN));
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
        let req = get_request();
        let tls = TlsFragment::new(curl_record(), sensor(), req.client, req.local);
        let line = log_line(&req, LineFingerprint::Connection(&tls));
        let v = parse(&line);
        assert_eq!(v["correlated"], true);
        assert!(v.get("orphan_side").is_none());
        assert_eq!(v["ja4"], "t13d3112h1_e8f1e7e78f70_6bebaf5329ac");
        assert_eq!(v["ja3_hash"], "0123456789abcdef0123456789abcdef");
        assert_eq!(v["tls_sni"], "localhost");
        assert_eq!(v["ip_meta_ttl"], 64);
        assert_eq!(v["tcp_meta_options"], "MSS,SAckOK,Timestamps,NOP,WScale");
        assert_eq!(v["syn_to_clienthello_ms"], 1);
        assert_eq!(
            v["conn_id"], "0123456789abcdef-1",
            "the module's, not the sensor's flow id"
        );
        assert_eq!(v["request_id"], "0123456789abcdef-1-1");
        assert_eq!(v["sequence_number"], 1);
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
        req.host = Some(Text::from_bytes(b"evil\xff\r\nhost", 100).0);
        req.query = Some("x=\"}".into());
        let v = parse(&log_line(&req, ORPHAN));
        assert_eq!(v["path"], "/a\"b\\c\n{\"injected\":1}\u{0}\u{1b}[31m");
        assert_eq!(v["host"], "evil\u{fffd}\r\nhost");
        assert!(v.get("injected").is_none());
    }

    #[test]
    fn invalid_utf8_keeps_the_replacement_and_the_exact_bytes_beside_it() {
        let mut req = get_request();
        let (path, cuts) = Text::from_bytes(b"/caf\xe9/\\x41\"", 100);
        assert!(cuts.not_utf8 && !cuts.truncated);
        req.path = Some(path);
        req.headers = vec![("User-Agent".into(), Text::from_bytes(b"bot\x00\xfe", 100).0)];
        let v = parse(&log_line(&req, ORPHAN));
        assert_eq!(v["path"], "/caf\u{fffd}/\\x41\"");
        // `\` itself is escaped, so the raw form reads back unambiguously.
        assert_eq!(v["path_raw"], "/caf\\xe9/\\x5cx41\"");
        assert_eq!(v["header_User-Agent"], "bot\u{0}\u{fffd}");
        assert_eq!(v["header_User-Agent_raw"], "bot\\x00\\xfe");
        assert!(
            v.get("host_raw").is_none(),
            "only for fields that were not UTF-8"
        );
        let back: Vec<u8> = unescape(v["path_raw"].as_str().unwrap());
        assert_eq!(back, b"/caf\xe9/\\x41\"");
    }

    fn unescape(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).unwrap());
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn long_fields_are_cut_at_the_cap_on_a_character_boundary() {
        let long = format!("/{}", "é".repeat(5000));
        let (t, cuts) = Text::from_bytes(long.as_bytes(), 2048);
        assert!(cuts.truncated && !cuts.not_utf8);
        assert!(t.raw.is_none(), "a cut character is not an invalid byte");
        assert_eq!(t.text.len(), 2047, "'/' + 1023 two-byte characters");
        let (t, cuts) = Text::from_bytes(b"/short", 2048);
        assert_eq!((t.text.as_ref(), cuts), ("/short", TextCuts::default()));
        let (t, cuts) = Text::from_bytes(b"/ab\xffcdef", 5);
        assert!(cuts.truncated && cuts.not_utf8);
        assert_eq!(t.raw.as_deref(), Some("/ab\\xffc"));
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
        let v = parse(&log_line(&req, ORPHAN));
        assert_eq!(v["status"], 400);
        assert_eq!(v["src_ip"], "10.0.0.1");
        assert!(v.get("method").is_none());
        assert!(v.get("path").is_none());
        assert!(v.get("query").is_none());
    }

    #[test]
    fn an_address_the_sensor_disagrees_with_is_kept_on_both_sides() {
        // httpd on a dual-stack socket sees the IPv4 client as ::ffff:127.0.0.1; the sensor as
        // 127.0.0.1: the line keeps both, as join::merge_fields does.
        let mut req = get_request();
        req.client = Some("[::ffff:127.0.0.1]:50000".parse().unwrap());
        let tls = TlsFragment::new(curl_record(), sensor(), req.client, req.local);
        let line = log_line(&req, LineFingerprint::Connection(&tls));
        let v = parse(&line);
        assert_eq!(v["a_src_ip"], "::ffff:127.0.0.1");
        assert_eq!(v["b_src_ip"], "127.0.0.1");
        assert!(v.get("src_ip").is_none());
        assert_eq!(
            v["src_port"], 50000,
            "same port on both sides: written once"
        );
        assert_eq!(v["dst_ip"], "127.0.0.1");
    }

    #[test]
    fn the_fragment_line_has_the_fields_of_the_generic_merge() {
        // The fields of a correlated line are those of join::merge_fields over the whole line.
        let req = get_request();
        let rec = curl_record();
        let ours = parse(&log_line(
            &req,
            LineFingerprint::Connection(&TlsFragment::new(
                rec.clone(),
                sensor(),
                req.client,
                req.local,
            )),
        ));
        let mut generic: Vec<(String, Value)> = match parse(&log_line(&req, ORPHAN)) {
            Value::Object(m) => m
                .into_iter()
                .filter(|(k, _)| k != "orphan_side" && k != "orphan_reason")
                .map(|(k, v)| {
                    if k == "correlated" {
                        (k, Value::Bool(true))
                    } else {
                        (k, v)
                    }
                })
                .collect(),
            _ => unreachable!(),
        };
        let a_ns = u64::try_from(req.request_time_us).unwrap() * 1000;
        join::merge_fields(&mut generic, rec.json_fields(), a_ns);
        generic.push(("fingerprint_source".into(), Value::from("sensor")));
        let generic: serde_json::Map<String, Value> = generic.into_iter().collect();
        assert_eq!(ours, Value::Object(generic));
    }

    #[test]
    fn sensor_fields_only_collide_with_the_connection_addresses_and_timestamp() {
        // TlsFragment renders the sensor half once per connection: that is only right while
        // the request-level fields it could collide with are the connection's own (`conn_id`:
        // the module's, never merged with the sensor's flow id).
        let req = get_request();
        let Value::Object(line) = parse(&log_line(&req, ORPHAN)) else {
            unreachable!()
        };
        let mut shared: Vec<String> = curl_record()
            .json_fields()
            .keys()
            .filter(|k| line.contains_key(k.as_str()))
            .cloned()
            .collect();
        shared.sort();
        assert_eq!(
            shared,
            [
                "conn_id",
                "dst_ip",
                "dst_port",
                "src_ip",
                "src_port",
                "timestamp"
            ]
        );
    }

    #[test]
    fn a_thread_reuses_its_line_buffer() {
        let req = get_request();
        let first = with_line(&req, ORPHAN, |l| l.to_vec());
        let again = with_line(&req, ORPHAN, |l| l.to_vec());
        assert_eq!(first, again);
        assert_eq!(first, log_line(&req, ORPHAN));
    }

    #[test]
    fn the_fields_rendered_apart_are_every_field_of_the_record() {
        let full = TlsRecord {
            tcp_os: "Linux 3.11 and newer".into(),
            tcp_os_distance: Some(0),
            ..curl_record()
        };
        assert!(full.syn_to_clienthello_ms().is_some() && full.key.is_some());
        let Value::Object(all) = serde_json::to_value(full.json()).unwrap() else {
            unreachable!()
        };
        let mut ours: Vec<&str> = TLS_FIELDS.to_vec();
        ours.extend(CONNECTION_FIELDS);
        let syn: Vec<String> = all
            .keys()
            .filter(|k| is_syn_field(k.as_bytes()))
            .cloned()
            .collect();
        ours.extend(syn.iter().map(String::as_str));
        let mut ours: Vec<String> = ours.into_iter().map(str::to_owned).collect();
        ours.sort();
        let mut theirs: Vec<String> = all.keys().cloned().collect();
        theirs.sort();
        assert_eq!(
            ours, theirs,
            "a record field that is neither TLS, SYN nor a connection field: render it in Merge::connection_fields"
        );
        assert_eq!(syn.len(), 9, "every SYN field but the IP id: {syn:?}");
    }

    /// `rec` in the parts httpd's inline fingerprint keeps (see `inline::fingerprint`).
    fn parts_of(rec: &TlsRecord) -> RecordParts {
        let hello = TlsRecord {
            tls_version: rec.tls_version.clone(),
            tls_sni: rec.tls_sni.clone(),
            tls_alpn: rec.tls_alpn.clone(),
            ja4: rec.ja4.clone(),
            ja4_r: rec.ja4_r.clone(),
            ja3: rec.ja3.clone(),
            ja3_hash: rec.ja3_hash.clone(),
            ..TlsRecord::default()
        };
        let syn = rec.ip.is_some().then(|| TlsRecord {
            tcp: rec.tcp.clone(),
            tcp_os: rec.tcp_os.clone(),
            tcp_os_distance: rec.tcp_os_distance,
            tcp_option_kinds: rec.tcp_option_kinds,
            ..TlsRecord::default()
        });
        RecordParts {
            own: TlsRecord {
                key: rec.key,
                syn_time_ns: rec.syn_time_ns,
                hello_time_ns: rec.hello_time_ns,
                closed_time_ns: rec.closed_time_ns,
                ip: rec.ip,
                sensor_id: rec.sensor_id.clone(),
                ..TlsRecord::default()
            },
            hello: std::sync::Arc::new(hello),
            syn: syn.map(std::sync::Arc::new),
        }
    }

    #[test]
    fn a_record_kept_in_parts_is_the_record() {
        let with_syn = TlsRecord {
            tcp_os: "Linux 3.11 and newer".into(),
            tcp_os_distance: Some(0),
            tcp_option_kinds: correlate_lib::fingerprint::syn::OptionKinds::from_slice(&[
                2, 4, 8, 1, 3,
            ]),
            ..curl_record()
        };
        let without_syn = TlsRecord {
            ip: None,
            tcp: None,
            syn_time_ns: 0,
            ..curl_record()
        };
        for rec in [curl_record(), with_syn, without_syn] {
            let parts = parts_of(&rec);
            assert_eq!(parts.to_record(), rec);
            let req = get_request();
            let (tls, syn) = (tls_json(&rec), syn_json(&rec));
            let kept = TlsFragment::with_parts(
                parts,
                FragmentMeta::of(Source::Inline),
                req.client,
                req.local,
                &tls,
                rec.ip.is_some().then_some(syn.as_slice()),
            );
            assert_eq!(*kept.record(), rec);
            assert_eq!(kept.ja4(), rec.ja4);
            let whole = TlsFragment::new(
                rec.clone(),
                FragmentMeta::of(Source::Inline),
                req.client,
                req.local,
            );
            assert_eq!(
                parse(&log_line(&req, LineFingerprint::Connection(&kept))),
                parse(&log_line(&req, LineFingerprint::Connection(&whole)))
            );
        }
    }

    #[test]
    fn tls_fields_rendered_once_give_the_same_line() {
        let inline = FragmentMeta {
            partial: Some(OrphanReason::SynNotSaved),
            ja4t: Some("65495_2-4-8-1-3_65495_7".into()),
            ..FragmentMeta::of(Source::Inline)
        };
        for (meta, sensor_id, client) in [
            (sensor(), "lab", None),
            (inline.clone(), "", None),
            // A dual-stack listener's view of the client: a_/b_ on both paths.
            (
                inline,
                "",
                Some("[::ffff:127.0.0.1]:50000".parse().unwrap()),
            ),
        ] {
            let mut req = get_request();
            if client.is_some() {
                req.client = client;
            }
            let rec = TlsRecord {
                tls_sni: "wei\"rd\\sni\u{1}".into(),
                tcp_os: "Linux 3.11 and newer".into(),
                tcp_os_distance: Some(0),
                sensor_id: sensor_id.into(),
                ..curl_record()
            };
            let json = tls_json(&rec);
            let syn = syn_json(&rec);
            assert!(!String::from_utf8_lossy(&syn).contains("ip_meta_id"));
            let again = TlsFragment::with_parts(
                parts_of(&rec),
                meta.clone(),
                req.client,
                req.local,
                &json,
                Some(&syn),
            );
            let whole = TlsFragment::new(rec, meta, req.client, req.local);
            let (a, b) = (
                parse(&log_line(&req, LineFingerprint::Connection(&again))),
                parse(&log_line(&req, LineFingerprint::Connection(&whole))),
            );
            assert_eq!(a, b);
            assert_eq!(a["tls_sni"], "wei\"rd\\sni\u{1}");
            let text =
                String::from_utf8(log_line(&req, LineFingerprint::Connection(&again))).unwrap();
            for once in [
                "\"ja4\"",
                "\"ip_meta_ttl\"",
                "\"ip_meta_id\"",
                "\"src_port\"",
            ] {
                assert_eq!(text.matches(once).count(), 1, "{once}: {text}");
            }
            assert_eq!(
                a.get("sensor_id").is_some(),
                !sensor_id.is_empty(),
                "{text}"
            );
            if client.is_some() {
                assert_eq!(a["a_src_ip"], "::ffff:127.0.0.1", "{text}");
                assert_eq!(a["b_src_ip"], "127.0.0.1", "{text}");
            }
        }
    }

    #[test]
    fn a_fragment_of_the_connections_own_addresses_is_the_merges_byte_for_byte() {
        let req = get_request();
        let partial = FragmentMeta {
            partial: Some(OrphanReason::SynUnparsable),
            ja4t: Some("65495_2-4-8-1-3_65495_7".into()),
            client: Some("curl".into()),
            ..FragmentMeta::of(Source::Inline)
        };
        for (meta, sensor_id, syn_ns) in [
            (FragmentMeta::of(Source::Inline), "", 0),
            (partial, "", 0),
            (sensor(), "lab", 1_795_590_062_000_000_000),
            (sensor(), "", 0),
        ] {
            let rec = TlsRecord {
                sensor_id: sensor_id.into(),
                syn_time_ns: syn_ns,
                tcp_os: "Linux 3.11 and newer".into(),
                tcp_os_distance: Some(0),
                ..curl_record()
            };
            let (tls, syn) = (tls_json(&rec), syn_json(&rec));
            let fast = TlsFragment::with_parts(
                parts_of(&rec),
                meta.clone(),
                req.client,
                req.local,
                &tls,
                Some(&syn),
            );
            let merged = TlsFragment::render_merged(
                rec,
                meta,
                req.client,
                req.local,
                Some(&tls),
                Some(&syn),
            );
            assert_eq!(
                String::from_utf8_lossy(&fast.addresses),
                String::from_utf8_lossy(&merged.addresses)
            );
            assert_eq!(
                String::from_utf8_lossy(&fast.json),
                String::from_utf8_lossy(&merged.json)
            );
        }
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        let octets = [0u8, 1, 9, 10, 99, 100, 109, 199, 200, 255];
        for a in octets {
            for b in octets {
                for ip in [
                    std::net::IpAddr::from([a, b, b, a]),
                    std::net::IpAddr::from([a, 0, 255, b]),
                    std::net::IpAddr::from([u16::from(a), 0, 0, 0, 0, 0, 0, u16::from(b)]),
                ] {
                    let mut out = Vec::new();
                    push_ip(&mut out, ip);
                    assert_eq!(String::from_utf8(out).unwrap(), ip.to_string());
                }
            }
        }
    }

    #[test]
    fn a_fragment_used_for_other_addresses_is_rendered_again() {
        let req = get_request();
        let other = TlsFragment::new(curl_record(), sensor(), Some(v4(10, 9, 9, 9, 1)), req.local);
        assert_eq!(
            log_line(&req, LineFingerprint::Connection(&other)),
            log_line(
                &req,
                LineFingerprint::Connection(&TlsFragment::new(
                    curl_record(),
                    sensor(),
                    req.client,
                    req.local
                ))
            )
        );
    }
}
