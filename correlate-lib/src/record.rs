//! The record the sensor publishes for each TLS connection: the client's SYN traits and the
//! fingerprints of its ClientHello, keyed by the connection's 4-tuple.
//!
//! Records cross a process boundary through shared memory, so the binary codec here treats its
//! input as hostile: every length is checked against the buffer and against a named limit, and a
//! buffer that does not decode is an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::fields;
use crate::fingerprint::syn::{OptionKinds, MAX_TCP_OPTION_BYTES};

/// The TCP connection a record belongs to, seen from the client: `src` is the client, `dst` the
/// server. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack listener reports) are
/// normalised to IPv4 so both sides of the ring agree on the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Bytes of [`ConnKey::canonical_bytes`]: two 16-byte addresses and two ports.
pub const CONN_KEY_BYTES: usize = 36;

impl ConnKey {
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            src: SocketAddr::new(normalize_ip(src.ip()), src.port()),
            dst: SocketAddr::new(normalize_ip(dst.ip()), dst.port()),
        }
    }

    /// A fixed-size encoding (addresses as IPv6, IPv4 mapped; ports big-endian) that both the
    /// writer and the readers hash and compare.
    pub fn canonical_bytes(&self) -> [u8; CONN_KEY_BYTES] {
        let mut out = [0u8; CONN_KEY_BYTES];
        out[0..16].copy_from_slice(&as_v6_octets(self.src.ip()));
        out[16..18].copy_from_slice(&self.src.port().to_be_bytes());
        out[18..34].copy_from_slice(&as_v6_octets(self.dst.ip()));
        out[34..36].copy_from_slice(&self.dst.port().to_be_bytes());
        out
    }

    pub fn from_canonical_bytes(b: &[u8; CONN_KEY_BYTES]) -> Self {
        let ip = |s: &[u8]| {
            let mut o = [0u8; 16];
            o.copy_from_slice(s);
            normalize_ip(IpAddr::V6(Ipv6Addr::from(o)))
        };
        let port = |s: &[u8]| u16::from_be_bytes([s[0], s[1]]);
        Self {
            src: SocketAddr::new(ip(&b[0..16]), port(&b[16..18])),
            dst: SocketAddr::new(ip(&b[18..34]), port(&b[34..36])),
        }
    }

    /// 64-bit hash of the canonical bytes; the ring's index is addressed by it.
    pub fn hash64(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.canonical_bytes())
    }

    /// ja4sentinel's `conn_id`: `src_ip:src_port-dst_ip:dst_port` (IPv6 in brackets).
    pub fn conn_id(&self) -> String {
        format!("{}-{}", self.src, self.dst)
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; every other address unchanged.
pub fn normalize_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn as_v6_octets(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// IP-layer traits of the client's SYN (not of the ClientHello packet).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IpMeta {
    pub ttl: u8,
    pub total_length: u16,
    /// IPv4 identification; IPv6 has none (0).
    pub id: u16,
    /// IPv4 Don't Fragment; IPv6 never fragments in flight (false).
    pub df: bool,
}

/// TCP-layer traits of the client's SYN.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TcpMeta {
    pub window_size: u16,
    /// 0 when the SYN carried no MSS option (sentinel omits the field then).
    pub mss: u16,
    /// `None` when the SYN carried no window-scale option.
    pub window_scale: Option<u8>,
    /// Option kinds in wire order, named as sentinel prints them: `MSS,NOP,WScale,SACK,Timestamps,...`.
    pub options: String,
}

/// One TLS connection as the sensor saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsRecord {
    pub key: Option<ConnKey>,
    /// Capture time of the client's SYN, Unix ns; 0 when the SYN was not seen (capture started
    /// mid-connection, or an offline file without it).
    pub syn_time_ns: u64,
    /// Capture time of the (last segment of the) ClientHello, Unix ns.
    pub hello_time_ns: u64,
    /// Capture time of the client's FIN or RST, Unix ns; 0 while the connection is open. Lets a
    /// reader tell a previous connection on a reused client port from the current one.
    pub closed_time_ns: u64,
    /// IP/TCP traits; `None` when the SYN was not seen.
    pub ip: Option<IpMeta>,
    pub tcp: Option<TcpMeta>,
    /// Highest offered version as sentinel prints it: `1.3`, `1.2`, ...
    pub tls_version: String,
    pub tls_sni: String,
    /// First ALPN protocol offered, as text (lossy for non-UTF-8 bytes).
    pub tls_alpn: String,
    pub ja4: String,
    pub ja4_r: String,
    pub ja3: String,
    pub ja3_hash: String,
    pub sensor_id: String,
    /// The client's OS as its SYN suggests it (p0f signatures, [`crate::fingerprint::os`]):
    /// `Linux 3.11 and newer`; empty when no signature matched or without a SYN.
    pub tcp_os: String,
    /// Hops from the client, from the SYN's TTL; `None` without a SYN.
    pub tcp_os_distance: Option<u8>,
    /// Every TCP option kind of the SYN in wire order (JA4T's list,
    /// [`crate::fingerprint::syn::SynTraits::option_kinds`]); empty without a SYN. Not a JSON
    /// field: it travels in the ring so that a reader can compute JA4T.
    pub tcp_option_kinds: OptionKinds,
}

impl TlsRecord {
    /// ja4sentinel's `syn_to_clienthello_ms`, when the SYN was seen.
    pub fn syn_to_clienthello_ms(&self) -> Option<u64> {
        if self.syn_time_ns == 0 || self.hello_time_ns < self.syn_time_ns {
            return None;
        }
        Some((self.hello_time_ns - self.syn_time_ns) / 1_000_000)
    }

    /// Every sensor field as ja4sentinel's `LogRecord` names it, in its order. `timestamp` is
    /// the ClientHello time in Unix ns. The 4-tuple is included; the module, which has its own
    /// 4-tuple and `timestamp`, merges these with the collision rules of the join.
    pub fn json_fields(&self) -> Map<String, Value> {
        match serde_json::to_value(self.json()) {
            Ok(Value::Object(m)) => m,
            // A map serializer yields an object; no field can fail to serialize.
            _ => Map::new(),
        }
    }

    /// The same fields as [`TlsRecord::json_fields`], serialized straight to a writer (the
    /// sensor's JSON outputs) without building a map.
    pub fn json(&self) -> RecordJson<'_> {
        RecordJson(self)
    }

    /// Writes the fields of [`TlsRecord::json_fields`] into an open map, so that callers can
    /// add fields of their own to the same object.
    pub fn serialize_fields<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        if let Some(k) = &self.key {
            m.serialize_entry(fields::SRC_IP, &IpJson(k.src.ip()))?;
            m.serialize_entry(fields::SRC_PORT, &k.src.port())?;
            m.serialize_entry(fields::DST_IP, &IpJson(k.dst.ip()))?;
            m.serialize_entry(fields::DST_PORT, &k.dst.port())?;
        }
        if let Some(ip) = &self.ip {
            m.serialize_entry(fields::IP_META_TTL, &ip.ttl)?;
            m.serialize_entry(fields::IP_META_TOTAL_LENGTH, &ip.total_length)?;
            m.serialize_entry(fields::IP_META_ID, &ip.id)?;
            m.serialize_entry(fields::IP_META_DF, &ip.df)?;
        }
        if let Some(tcp) = &self.tcp {
            m.serialize_entry(fields::TCP_META_WINDOW_SIZE, &tcp.window_size)?;
            if tcp.mss != 0 {
                m.serialize_entry(fields::TCP_META_MSS, &tcp.mss)?;
            }
            if let Some(ws) = tcp.window_scale.filter(|ws| *ws != 0) {
                m.serialize_entry(fields::TCP_META_WINDOW_SCALE, &ws)?;
            }
            m.serialize_entry(fields::TCP_META_OPTIONS, &tcp.options)?;
        }
        if !self.tcp_os.is_empty() {
            m.serialize_entry(fields::TCP_OS, &self.tcp_os)?;
        }
        if let Some(distance) = self.tcp_os_distance {
            m.serialize_entry(fields::TCP_OS_DISTANCE, &distance)?;
        }
        if let Some(k) = &self.key {
            // `conn_id` as ConnKey::conn_id formats it.
            m.serialize_entry(fields::CONN_ID, &ConnIdJson(k))?;
        }
        m.serialize_entry(fields::SENSOR_ID, &self.sensor_id)?;
        m.serialize_entry(fields::TLS_VERSION, &self.tls_version)?;
        m.serialize_entry(fields::TLS_SNI, &self.tls_sni)?;
        m.serialize_entry(fields::TLS_ALPN, &self.tls_alpn)?;
        if let Some(ms) = self.syn_to_clienthello_ms() {
            m.serialize_entry(fields::SYN_TO_CLIENTHELLO_MS, &ms)?;
        }
        m.serialize_entry(fields::JA4, &self.ja4)?;
        m.serialize_entry(fields::JA4_R, &self.ja4_r)?;
        m.serialize_entry(fields::JA3, &self.ja3)?;
        m.serialize_entry(fields::JA3_HASH, &self.ja3_hash)?;
        m.serialize_entry(fields::TIMESTAMP, &self.hello_time_ns)?;
        Ok(())
    }

    /// Encodes into `out` (cleared first). Fails when a string exceeds its limit; the ring's slot
    /// size bounds the total separately.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.clear();
        out.push(CODEC_VERSION);
        let mut flags = 0u8;
        if self.key.is_some() {
            flags |= FLAG_KEY;
        }
        if self.ip.is_some() {
            flags |= FLAG_IP;
        }
        if let Some(tcp) = &self.tcp {
            flags |= FLAG_TCP;
            if tcp.window_scale.is_some() {
                flags |= FLAG_WSCALE;
            }
        }
        if self.tcp_os_distance.is_some() {
            flags |= FLAG_OS_DISTANCE;
        }
        out.push(flags);
        let key = self
            .key
            .map(|k| k.canonical_bytes())
            .unwrap_or([0; CONN_KEY_BYTES]);
        out.extend_from_slice(&key);
        out.extend_from_slice(&self.syn_time_ns.to_le_bytes());
        out.extend_from_slice(&self.hello_time_ns.to_le_bytes());
        out.extend_from_slice(&self.closed_time_ns.to_le_bytes());
        let ip = self.ip.unwrap_or_default();
        out.push(ip.ttl);
        out.extend_from_slice(&ip.total_length.to_le_bytes());
        out.extend_from_slice(&ip.id.to_le_bytes());
        out.push(u8::from(ip.df));
        let tcp = self.tcp.clone().unwrap_or_default();
        out.extend_from_slice(&tcp.window_size.to_le_bytes());
        out.extend_from_slice(&tcp.mss.to_le_bytes());
        out.push(tcp.window_scale.unwrap_or(0));
        out.push(self.tcp_os_distance.unwrap_or(0));
        let kinds = self.tcp_option_kinds.as_slice();
        // An `OptionKinds` holds at most MAX_TCP_OPTION_BYTES (40) kinds.
        out.push(kinds.len() as u8);
        let mut kind_bytes = [0u8; MAX_TCP_OPTION_BYTES];
        for (slot, kind) in kind_bytes.iter_mut().zip(kinds) {
            *slot = *kind;
        }
        out.extend_from_slice(&kind_bytes);
        let strings = [
            tcp.options.as_str(),
            &self.tls_version,
            &self.tls_sni,
            &self.tls_alpn,
            &self.ja4,
            &self.ja4_r,
            &self.ja3,
            &self.ja3_hash,
            &self.sensor_id,
            &self.tcp_os,
        ];
        // All the lengths, then all the strings back to back: a reader checks the strings for
        // UTF-8 in one pass (nine short checks cost a third of a ring hit).
        for (field, s) in StrField::ALL.into_iter().zip(strings) {
            let max = field.max_len();
            if s.len() > max {
                return Err(CodecError::StringTooLong {
                    field: field.name(),
                    len: s.len(),
                    max,
                });
            }
            // `max` ≤ u16::MAX for every field, checked just above.
            out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        }
        for s in strings {
            out.extend_from_slice(s.as_bytes());
        }
        Ok(())
    }

    /// Decodes what [`TlsRecord::encode`] wrote. Trailing bytes are allowed (a slot is
    /// fixed-size); everything else that does not fit is an error.
    pub fn decode(buf: &[u8]) -> Result<Self, CodecError> {
        RecordView::parse(buf).map(|v| v.to_record())
    }
}

/// The fixed-size start of an encoded record.
struct Head<'a> {
    flags: u8,
    key_bytes: &'a [u8; CONN_KEY_BYTES],
    syn_time_ns: u64,
    hello_time_ns: u64,
}

impl<'a> Head<'a> {
    fn read(r: &mut Cursor<'a>) -> Result<Self, CodecError> {
        let version = r.u8()?;
        if version != CODEC_VERSION {
            return Err(CodecError::Version(version));
        }
        Ok(Self {
            flags: r.u8()?,
            key_bytes: r.array_ref()?,
            syn_time_ns: u64::from_le_bytes(r.array()?),
            hello_time_ns: u64::from_le_bytes(r.array()?),
        })
    }
}

/// Sets `closed_time_ns` in an encoded record, in place: the one field the sensor changes after
/// publishing, at a fixed offset of the head. `Ok(false)`, `buf` untouched, when the record
/// belongs to another connection than the one whose [`ConnKey::canonical_bytes`] are given; an
/// error, `buf` untouched, when `buf` is not a record of this codec.
pub fn set_encoded_closed_time(
    buf: &mut [u8],
    canonical: &[u8; CONN_KEY_BYTES],
    closed_time_ns: u64,
) -> Result<bool, CodecError> {
    let head = Head::read(&mut Cursor { buf, pos: 0 })?;
    if head.flags & FLAG_KEY == 0 || head.key_bytes != canonical {
        return Ok(false);
    }
    let len = buf.len();
    let at = CLOSED_TIME_OFFSET;
    let field = buf.get_mut(at..at + 8).ok_or(CodecError::Truncated {
        offset: at,
        needed: 8,
        len,
    })?;
    field.copy_from_slice(&closed_time_ns.to_le_bytes());
    Ok(true)
}

/// Text of an IPv4 address or of an IPv4 `conn_id`, written without `core::fmt`: the JSON
/// outputs format two addresses and a `conn_id` per record, and `fmt`'s address formatting was a
/// tenth of `ja4sensor read`'s time. Same text as `Display` (`a.b.c.d`, `a.b.c.d:port`).
struct V4Text {
    /// `255.255.255.255:65535-255.255.255.255:65535` is 43 bytes.
    buf: [u8; 48],
    len: usize,
}

impl V4Text {
    fn new() -> Self {
        Self {
            buf: [0; 48],
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn push_decimal(&mut self, value: u16) {
        let mut digits = [0u8; 5];
        let mut start = digits.len();
        let mut n = value;
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[start..] {
            self.push(d);
        }
    }

    fn push_ip(&mut self, ip: Ipv4Addr) {
        for (i, octet) in ip.octets().into_iter().enumerate() {
            if i > 0 {
                self.push(b'.');
            }
            self.push_decimal(u16::from(octet));
        }
    }

    fn push_socket(&mut self, addr: &std::net::SocketAddrV4) {
        self.push_ip(*addr.ip());
        self.push(b':');
        self.push_decimal(addr.port());
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.buf.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

/// An address as its `Display` text in JSON.
struct IpJson(IpAddr);

impl Serialize for IpJson {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            IpAddr::V4(v4) => {
                let mut text = V4Text::new();
                text.push_ip(v4);
                serializer.serialize_str(text.as_str())
            }
            IpAddr::V6(_) => serializer.collect_str(&self.0),
        }
    }
}

/// [`ConnKey::conn_id`] in JSON, without building the `String`.
struct ConnIdJson<'a>(&'a ConnKey);

impl Serialize for ConnIdJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match (&self.0.src, &self.0.dst) {
            (SocketAddr::V4(src), SocketAddr::V4(dst)) => {
                let mut text = V4Text::new();
                text.push_socket(src);
                text.push(b'-');
                text.push_socket(dst);
                serializer.serialize_str(text.as_str())
            }
            (src, dst) => serializer.collect_str(&format_args!("{src}-{dst}")),
        }
    }
}

/// [`TlsRecord::json`]: the record's JSON object as a `Serialize` value.
pub struct RecordJson<'a>(&'a TlsRecord);

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        self.0.serialize_fields(&mut m)?;
        m.end()
    }
}

/// One accessor per string of a [`RecordView`], named as the [`TlsRecord`] field.
macro_rules! string_accessors {
    ($($name:ident => $field:ident),* $(,)?) => {
        $(
            pub fn $name(&self) -> &'a str {
                self.string(StrField::$field)
            }
        )*
    };
}

/// A decoded record that borrows its strings from the bytes it was decoded from: what a ring
/// lookup yields before anything is allocated. [`RecordView::to_record`] makes the owned form.
/// The strings are one validated run of text and their end offsets (a small value that moves
/// without a `memcpy` call); the accessors slice it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    key: Option<&'a [u8; CONN_KEY_BYTES]>,
    pub syn_time_ns: u64,
    pub hello_time_ns: u64,
    pub closed_time_ns: u64,
    pub ip: Option<IpMeta>,
    /// Window size, MSS and window scale of the SYN (see [`TcpMeta`]); `None` without a SYN.
    pub tcp: Option<(u16, u16, Option<u8>)>,
    pub tcp_os_distance: Option<u8>,
    pub tcp_option_kinds: OptionKinds,
    /// The strings back to back, in [`StrField::ALL`] order.
    text: &'a str,
    /// Where each string ends in `text`; each is a character boundary (checked by `parse`).
    ends: [u16; STRING_COUNT],
}

impl<'a> RecordView<'a> {
    /// Parses what [`TlsRecord::encode`] wrote, checking every length against the buffer and
    /// the field's limit, and every string for UTF-8. Trailing bytes are allowed.
    pub fn parse(buf: &'a [u8]) -> Result<Self, CodecError> {
        // Everything before the strings in one bounds check: the reads below stay inside a
        // block of constant size, so they need none of their own.
        let fixed: &'a [u8; FIXED_BYTES] = Cursor { buf, pos: 0 }.array_ref()?;
        let mut r = Cursor { buf: fixed, pos: 0 };
        let Head {
            flags,
            key_bytes,
            syn_time_ns,
            hello_time_ns,
        } = Head::read(&mut r)?;
        let closed_time_ns = u64::from_le_bytes(r.array()?);
        let ip = IpMeta {
            ttl: r.u8()?,
            total_length: u16::from_le_bytes(r.array()?),
            id: u16::from_le_bytes(r.array()?),
            df: r.u8()? != 0,
        };
        let window_size = u16::from_le_bytes(r.array()?);
        let mss = u16::from_le_bytes(r.array()?);
        let wscale = r.u8()?;
        let distance = r.u8()?;
        let kind_count = usize::from(r.u8()?);
        let kind_bytes: [u8; MAX_TCP_OPTION_BYTES] = r.array()?;
        if kind_count > MAX_TCP_OPTION_BYTES {
            return Err(CodecError::TooManyOptionKinds {
                count: kind_count,
                max: MAX_TCP_OPTION_BYTES,
            });
        }
        let tcp_option_kinds =
            OptionKinds::from_slice(kind_bytes.get(..kind_count).unwrap_or_default());
        let raw_lens: [u8; 2 * STRING_COUNT] = r.array()?;
        let mut lens = [0usize; STRING_COUNT];
        let mut total = 0;
        for (i, field) in StrField::ALL.into_iter().enumerate() {
            let len = usize::from(u16::from_le_bytes([raw_lens[2 * i], raw_lens[2 * i + 1]]));
            if len > field.max_len() {
                return Err(CodecError::StringTooLong {
                    field: field.name(),
                    len,
                    max: field.max_len(),
                });
            }
            lens[i] = len;
            total += len;
        }
        // One UTF-8 pass over the strings together; a string is valid on its own when the whole
        // is and both its ends are character boundaries.
        let bytes = Cursor {
            buf,
            pos: FIXED_BYTES,
        }
        .take(total)?;
        // simdutf8's fast check; only a failure pays for std's, which says where.
        let text = simdutf8::basic::from_utf8(bytes).map_err(|_| {
            let at = std::str::from_utf8(bytes).map_or_else(|e| e.valid_up_to(), |s| s.len());
            CodecError::Utf8(StrField::at(&lens, at).name())
        })?;
        let mut ends = [0u16; STRING_COUNT];
        let mut end = 0;
        for (i, field) in StrField::ALL.into_iter().enumerate() {
            end += lens[i];
            if !text.is_char_boundary(end) {
                return Err(CodecError::Utf8(field.name()));
            }
            // Cannot fail: every length is within its field's limit, and the limits add up to
            // less than 64 KiB (asserted below `MAX_RAW_FINGERPRINT_LEN`).
            ends[i] = u16::try_from(end).map_err(|_| CodecError::StringTooLong {
                field: field.name(),
                len: end,
                max: usize::from(u16::MAX),
            })?;
        }
        Ok(Self {
            key: (flags & FLAG_KEY != 0).then_some(key_bytes),
            syn_time_ns,
            hello_time_ns,
            closed_time_ns,
            ip: (flags & FLAG_IP != 0).then_some(ip),
            tcp: (flags & FLAG_TCP != 0).then_some((
                window_size,
                mss,
                (flags & FLAG_WSCALE != 0).then_some(wscale),
            )),
            tcp_os_distance: (flags & FLAG_OS_DISTANCE != 0).then_some(distance),
            tcp_option_kinds,
            text,
            ends,
        })
    }

    /// String `field` (its bounds were checked by `parse`).
    fn string(&self, field: StrField) -> &'a str {
        let i = field as usize;
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        self.text
            .get(usize::from(start)..usize::from(self.ends[i]))
            .unwrap_or_default()
    }

    string_accessors! {
        tcp_options => TcpOptions,
        tls_version => TlsVersion,
        tls_sni => TlsSni,
        tls_alpn => TlsAlpn,
        ja4 => Ja4,
        ja4_r => Ja4R,
        ja3 => Ja3,
        ja3_hash => Ja3Hash,
        sensor_id => SensorId,
        tcp_os => TcpOs,
    }

    /// The fixed-size head only: the connection key (as [`ConnKey::canonical_bytes`]) and the
    /// ClientHello time. What a reader needs to pick a candidate before paying for the strings.
    #[allow(clippy::type_complexity)]
    pub fn parse_head(
        buf: &'a [u8],
    ) -> Result<(Option<&'a [u8; CONN_KEY_BYTES]>, u64), CodecError> {
        let head = Head::read(&mut Cursor { buf, pos: 0 })?;
        Ok((
            (head.flags & FLAG_KEY != 0).then_some(head.key_bytes),
            head.hello_time_ns,
        ))
    }

    /// True when the record belongs to the connection whose [`ConnKey::canonical_bytes`] are
    /// given: a byte comparison, no address is built.
    pub fn has_key(&self, canonical: &[u8; CONN_KEY_BYTES]) -> bool {
        self.key == Some(canonical)
    }

    pub fn key(&self) -> Option<ConnKey> {
        self.key.map(ConnKey::from_canonical_bytes)
    }

    /// The owned record (allocates its strings).
    pub fn to_record(&self) -> TlsRecord {
        TlsRecord {
            key: self.key(),
            syn_time_ns: self.syn_time_ns,
            hello_time_ns: self.hello_time_ns,
            closed_time_ns: self.closed_time_ns,
            ip: self.ip,
            tcp: self.tcp.map(|(window_size, mss, window_scale)| TcpMeta {
                window_size,
                mss,
                window_scale,
                options: self.tcp_options().to_owned(),
            }),
            tls_version: self.tls_version().to_owned(),
            tls_sni: self.tls_sni().to_owned(),
            tls_alpn: self.tls_alpn().to_owned(),
            ja4: self.ja4().to_owned(),
            ja4_r: self.ja4_r().to_owned(),
            ja3: self.ja3().to_owned(),
            ja3_hash: self.ja3_hash().to_owned(),
            sensor_id: self.sensor_id().to_owned(),
            tcp_os: self.tcp_os().to_owned(),
            tcp_os_distance: self.tcp_os_distance,
            tcp_option_kinds: self.tcp_option_kinds,
        }
    }
}

/// Codec 3 (ring layout 4) added the OS guess (`tcp_os`, `tcp_os_distance`) and the SYN's
/// option kinds; codec 2 had nine strings and no kinds.
const CODEC_VERSION: u8 = 3;
/// Strings of a record, in [`StrField::ALL`] order.
const STRING_COUNT: usize = 10;
/// Bytes of an encoded record before its strings: version, flags, key, three times, the IP and
/// TCP traits, the OS distance, the option kinds (count and 40 bytes), and the string lengths.
const FIXED_BYTES: usize =
    2 + CONN_KEY_BYTES + 3 * 8 + 6 + 5 + 1 + 1 + MAX_TCP_OPTION_BYTES + 2 * STRING_COUNT;
/// Where `closed_time_ns` starts: after the version, the flags, the key and the two other times.
const CLOSED_TIME_OFFSET: usize = 2 + CONN_KEY_BYTES + 2 * 8;
const FLAG_KEY: u8 = 1;
const FLAG_IP: u8 = 2;
const FLAG_TCP: u8 = 4;
const FLAG_WSCALE: u8 = 8;
const FLAG_OS_DISTANCE: u8 = 16;

#[derive(Debug, Clone, Copy)]
enum StrField {
    TcpOptions,
    TlsVersion,
    TlsSni,
    TlsAlpn,
    Ja4,
    Ja4R,
    Ja3,
    Ja3Hash,
    SensorId,
    TcpOs,
}

impl StrField {
    /// The field whose bytes hold `offset` of the strings, given their lengths in order.
    fn at(lens: &[usize; STRING_COUNT], offset: usize) -> Self {
        let mut end = 0;
        for (field, len) in Self::ALL.into_iter().zip(lens) {
            end += len;
            if offset < end {
                return field;
            }
        }
        Self::TcpOs
    }

    const ALL: [StrField; STRING_COUNT] = [
        StrField::TcpOptions,
        StrField::TlsVersion,
        StrField::TlsSni,
        StrField::TlsAlpn,
        StrField::Ja4,
        StrField::Ja4R,
        StrField::Ja3,
        StrField::Ja3Hash,
        StrField::SensorId,
        StrField::TcpOs,
    ];

    fn name(self) -> &'static str {
        match self {
            StrField::TcpOptions => fields::TCP_META_OPTIONS,
            StrField::TlsVersion => fields::TLS_VERSION,
            StrField::TlsSni => fields::TLS_SNI,
            StrField::TlsAlpn => fields::TLS_ALPN,
            StrField::Ja4 => fields::JA4,
            StrField::Ja4R => fields::JA4_R,
            StrField::Ja3 => fields::JA3,
            StrField::Ja3Hash => fields::JA3_HASH,
            StrField::SensorId => fields::SENSOR_ID,
            StrField::TcpOs => fields::TCP_OS,
        }
    }

    const fn max_len(self) -> usize {
        match self {
            // 40 bytes of TCP options hold at most 40 kinds; the longest name is 10 chars + comma.
            StrField::TcpOptions => MAX_TCP_OPTIONS_LEN,
            StrField::TlsVersion => 8,
            // RFC 6066: a host_name is at most 2^16-1 bytes, DNS names at most 253.
            StrField::TlsSni => MAX_SNI_LEN,
            // RFC 7301: a protocol name is 1..=255 bytes.
            StrField::TlsAlpn => MAX_ALPN_LEN,
            StrField::Ja4 => 64,
            StrField::Ja4R | StrField::Ja3 => MAX_RAW_FINGERPRINT_LEN,
            StrField::Ja3Hash => 32,
            StrField::SensorId => MAX_SENSOR_ID_LEN,
            StrField::TcpOs => crate::fingerprint::os::MAX_OS_LABEL_LEN,
        }
    }
}

pub const MAX_TCP_OPTIONS_LEN: usize = 512;
pub const MAX_SNI_LEN: usize = 255;
pub const MAX_ALPN_LEN: usize = 255;
pub const MAX_SENSOR_ID_LEN: usize = 64;
/// `ja3` and `ja4_r` grow with the hello's lists; a real browser's are < 1 KB. Longer ones (a
/// hostile hello listing thousands of ciphers) do not fit a ring slot; the sensor shortens them.
pub const MAX_RAW_FINGERPRINT_LEN: usize = 8192;
// A record's strings together fit the u16 offsets of `RecordView`.
const _: () = {
    let mut total = 0;
    let mut i = 0;
    while i < StrField::ALL.len() {
        total += StrField::ALL[i].max_len();
        i += 1;
    }
    assert!(total < u16::MAX as usize);
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("record truncated: needed {needed} bytes at offset {offset}, buffer has {len}")]
    Truncated {
        offset: usize,
        needed: usize,
        len: usize,
    },
    #[error("unknown record codec version {0}")]
    Version(u8),
    #[error("field {field}: {len} bytes exceeds the limit of {max}")]
    StringTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("field {0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("{count} TCP option kinds exceed the limit of {max}")]
    TooManyOptionKinds { count: usize, max: usize },
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(CodecError::Truncated {
                offset: self.pos,
                needed: n,
                len: self.buf.len(),
            }),
        }
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        Ok(*self.array_ref()?)
    }

    fn array_ref<const N: usize>(&mut self) -> Result<&'a [u8; N], CodecError> {
        let bytes = self.take(N)?;
        // `take` returned exactly N bytes.
        bytes.try_into().map_err(|_| CodecError::Truncated {
            offset: self.pos,
            needed: N,
            len: self.buf.len(),
        })
    }
}

/// Shorthand for an IPv4 socket address literal (tests, examples).
pub fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TlsRecord {
        TlsRecord {
            key: Some(ConnKey::new(v4(127, 0, 0, 1, 50000), v4(127, 0, 0, 1, 443))),
            syn_time_ns: 1_700_000_000_000_000_000,
            hello_time_ns: 1_700_000_000_012_000_000,
            closed_time_ns: 0,
            ip: Some(IpMeta {
                ttl: 64,
                total_length: 60,
                id: 4242,
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
            tls_alpn: "h2".into(),
            ja4: "t13d3112h2_e8f1e7e78f70_6bebaf5329ac".into(),
            ja4_r: "t13d3112h2_002f,0035_000a,000d".into(),
            ja3: "771,4866-4867,0-23,29-23,0".into(),
            ja3_hash: "0123456789abcdef0123456789abcdef".into(),
            sensor_id: "lab".into(),
            tcp_os: "Linux 3.11 and newer".into(),
            tcp_os_distance: Some(0),
            tcp_option_kinds: OptionKinds::from_slice(&[2, 4, 8, 1, 3]),
        }
    }

    #[test]
    fn the_close_time_is_patched_in_place_only_for_its_own_connection() {
        let rec = sample();
        let mut buf = Vec::new();
        rec.encode(&mut buf).unwrap();
        let key = rec.key.unwrap().canonical_bytes();
        let other = ConnKey::new(v4(127, 0, 0, 1, 50001), v4(127, 0, 0, 1, 443));
        let before = buf.clone();
        assert!(!set_encoded_closed_time(&mut buf, &other.canonical_bytes(), 7).unwrap());
        assert_eq!(buf, before, "another connection's record is left alone");
        assert!(set_encoded_closed_time(&mut buf, &key, 1_700_000_000_500_000_000).unwrap());
        let want = TlsRecord {
            closed_time_ns: 1_700_000_000_500_000_000,
            ..rec.clone()
        };
        assert_eq!(TlsRecord::decode(&buf).unwrap(), want);
        let mut encoded = Vec::new();
        want.encode(&mut encoded).unwrap();
        assert_eq!(buf, encoded, "the same bytes the encoder writes");
        // Not a record: refused, untouched.
        let mut short = buf[..CLOSED_TIME_OFFSET].to_vec();
        assert!(set_encoded_closed_time(&mut short, &key, 7).is_err());
        let mut alien = buf.clone();
        alien[0] = CODEC_VERSION + 1;
        let untouched = alien.clone();
        assert!(set_encoded_closed_time(&mut alien, &key, 7).is_err());
        assert_eq!(alien, untouched);
    }

    #[test]
    fn record_round_trips_through_the_codec() {
        let rec = sample();
        let mut buf = Vec::new();
        rec.encode(&mut buf).unwrap();
        assert_eq!(TlsRecord::decode(&buf).unwrap(), rec);
        buf.extend_from_slice(&[0xAA; 100]);
        assert_eq!(
            TlsRecord::decode(&buf).unwrap(),
            rec,
            "slot padding is ignored"
        );
    }

    /// Offset of the nine string lengths in an encoding of `rec` (they precede the strings).
    fn lengths_offset(rec: &TlsRecord, buf: &[u8]) -> usize {
        let strings = rec.tcp.as_ref().map_or(0, |t| t.options.len())
            + [
                &rec.tls_version,
                &rec.tls_sni,
                &rec.tls_alpn,
                &rec.ja4,
                &rec.ja4_r,
                &rec.ja3,
                &rec.ja3_hash,
                &rec.sensor_id,
                &rec.tcp_os,
            ]
            .iter()
            .map(|s| s.len())
            .sum::<usize>();
        buf.len() - strings - 2 * STRING_COUNT
    }

    #[test]
    fn a_record_without_strings_is_the_fixed_block_alone() {
        let mut buf = Vec::new();
        TlsRecord::default().encode(&mut buf).unwrap();
        assert_eq!(buf.len(), FIXED_BYTES);
        assert_eq!(
            RecordView::parse(&buf).unwrap().to_record(),
            TlsRecord::default()
        );
        let rec = sample();
        rec.encode(&mut buf).unwrap();
        assert_eq!(lengths_offset(&rec, &buf) + 2 * STRING_COUNT, FIXED_BYTES);
    }

    #[test]
    fn a_string_that_is_not_utf8_is_named_in_the_error() {
        let rec = sample();
        let mut buf = Vec::new();
        rec.encode(&mut buf).unwrap();
        // The first byte of ja3 (the seventh string).
        let ja3_at =
            buf.len() - rec.tcp_os.len() - rec.sensor_id.len() - rec.ja3_hash.len() - rec.ja3.len();
        buf[ja3_at] = 0xff;
        assert_eq!(
            RecordView::parse(&buf).unwrap_err(),
            CodecError::Utf8(fields::JA3)
        );
    }

    #[test]
    fn a_character_split_between_two_strings_is_an_error() {
        // "é" is two bytes: with lengths 1 and 2 the strings together are still UTF-8, but
        // tls_sni would end inside the character.
        let rec = TlsRecord {
            tls_sni: "é".into(),
            tls_alpn: "x".into(),
            ..sample()
        };
        let mut buf = Vec::new();
        rec.encode(&mut buf).unwrap();
        let lens = lengths_offset(&rec, &buf);
        assert_eq!(
            buf[lens + 4..lens + 8],
            [2, 0, 1, 0],
            "sni and alpn lengths"
        );
        buf[lens + 4..lens + 8].copy_from_slice(&[1, 0, 2, 0]);
        assert_eq!(
            RecordView::parse(&buf).unwrap_err(),
            CodecError::Utf8(fields::TLS_SNI)
        );
    }

    #[test]
    fn every_truncation_of_an_encoded_record_is_an_error() {
        let mut buf = Vec::new();
        sample().encode(&mut buf).unwrap();
        for n in 0..buf.len() {
            assert!(
                TlsRecord::decode(&buf[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
    }

    #[test]
    fn mapped_ipv4_is_normalised_in_the_key() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:50000".parse().unwrap();
        let k1 = ConnKey::new(mapped, v4(127, 0, 0, 1, 443));
        let k2 = ConnKey::new(v4(127, 0, 0, 1, 50000), v4(127, 0, 0, 1, 443));
        assert_eq!(k1, k2);
        assert_eq!(k1.hash64(), k2.hash64());
        assert_eq!(k1.conn_id(), "127.0.0.1:50000-127.0.0.1:443");
    }

    #[test]
    fn addresses_in_json_are_their_display_text() {
        let keys = [
            ConnKey::new(v4(0, 0, 0, 0, 0), v4(255, 255, 255, 255, 65535)),
            ConnKey::new(v4(10, 20, 0, 9, 9), v4(100, 1, 199, 250, 10000)),
            ConnKey::new("[2001:db8::1]:443".parse().unwrap(), v4(192, 0, 2, 1, 80)),
            ConnKey::new("[fe80::1%7]:1".parse().unwrap(), "[::1]:2".parse().unwrap()),
        ];
        for k in keys {
            assert_eq!(
                serde_json::to_string(&ConnIdJson(&k)).unwrap(),
                serde_json::to_string(&k.conn_id()).unwrap()
            );
            for ip in [k.src.ip(), k.dst.ip()] {
                assert_eq!(
                    serde_json::to_string(&IpJson(ip)).unwrap(),
                    serde_json::to_string(&ip.to_string()).unwrap()
                );
            }
        }
    }

    #[test]
    fn json_fields_use_sentinel_names() {
        let m = sample().json_fields();
        assert_eq!(m["syn_to_clienthello_ms"], 12);
        assert_eq!(m["tcp_meta_window_scale"], 7);
        assert_eq!(m["conn_id"], "127.0.0.1:50000-127.0.0.1:443");
        assert_eq!(m["timestamp"], 1_700_000_000_012_000_000u64);
        assert_eq!(m["tcp_os"], "Linux 3.11 and newer");
        assert_eq!(m["tcp_os_distance"], 0);
        let bare = TlsRecord::default().json_fields();
        assert!(!bare.contains_key("tcp_os") && !bare.contains_key("tcp_os_distance"));
    }

    #[test]
    fn a_record_claiming_more_option_kinds_than_a_header_holds_is_refused() {
        let mut buf = Vec::new();
        sample().encode(&mut buf).unwrap();
        let count_at = FIXED_BYTES - 2 * STRING_COUNT - MAX_TCP_OPTION_BYTES - 1;
        assert_eq!(buf[count_at], 5);
        buf[count_at] = 41;
        assert_eq!(
            RecordView::parse(&buf).unwrap_err(),
            CodecError::TooManyOptionKinds { count: 41, max: 40 }
        );
    }

    proptest::proptest! {
        #[test]
        fn any_ipv4_conn_id_in_json_is_its_display_text(a: u32, b: u32, p: u16, q: u16) {
            let k = ConnKey::new(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), p),
                SocketAddr::new(IpAddr::V4(Ipv4Addr::from(b)), q),
            );
            proptest::prop_assert_eq!(
                serde_json::to_string(&ConnIdJson(&k)).unwrap(),
                serde_json::to_string(&k.conn_id()).unwrap()
            );
            proptest::prop_assert_eq!(
                serde_json::to_string(&IpJson(k.src.ip())).unwrap(),
                serde_json::to_string(&k.src.ip().to_string()).unwrap()
            );
        }

        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = TlsRecord::decode(&bytes);
        }
    }
}
