//! One correlated log line as the modules see it: its top-level scalar fields, borrowed from
//! the line's text where JSON allows (no escapes), parsed once per line and shared by every
//! module. Objects and arrays (the module writes none) are kept as [`Scalar::Other`].

use std::borrow::Cow;
use std::fmt;

use correlate_lib::fields;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// A field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    Str(Cow<'a, str>),
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Null,
    /// An object or array.
    Other,
}

impl Scalar<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a number: JSON numbers, and strings that parse as one.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::U64(v) => Some(*v as f64),
            Scalar::I64(v) => Some(*v as f64),
            Scalar::F64(v) => Some(*v),
            Scalar::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Scalar::U64(v) => Some(*v),
            Scalar::I64(v) => u64::try_from(*v).ok(),
            Scalar::Str(s) => s.parse().ok(),
            _ => None,
        }
    }

    /// Appends the value's text (strings as they are, numbers and booleans as JSON prints
    /// them); false for null and objects.
    pub fn write_text(&self, out: &mut String) -> bool {
        use std::fmt::Write as _;
        match self {
            Scalar::Str(s) => out.push_str(s),
            Scalar::U64(v) => {
                let _ = write!(out, "{v}");
            }
            Scalar::I64(v) => {
                let _ = write!(out, "{v}");
            }
            Scalar::F64(v) => {
                let _ = write!(out, "{v}");
            }
            Scalar::Bool(v) => out.push_str(if *v { "true" } else { "false" }),
            Scalar::Null | Scalar::Other => return false,
        }
        true
    }

    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Scalar::Str(s) => serde_json::Value::String(s.to_string()),
            Scalar::U64(v) => (*v).into(),
            Scalar::I64(v) => (*v).into(),
            Scalar::F64(v) => serde_json::Number::from_f64(*v)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Scalar::Bool(v) => (*v).into(),
            Scalar::Null | Scalar::Other => serde_json::Value::Null,
        }
    }
}

/// A parsed line: its fields in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    fields: Vec<(Cow<'a, str>, Scalar<'a>)>,
    /// Bytes of the line in the file, its `\n` included.
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not a JSON object: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not UTF-8")]
    Utf8,
}

/// The fields vector of a finished line, kept to parse the next one without allocating (a
/// line's ~45 fields are a few KiB: above the allocator's small-chunk bins).
#[derive(Debug, Default)]
pub struct FieldBuf(Vec<(Cow<'static, str>, Scalar<'static>)>);

impl<'a> Line<'a> {
    /// Parses one line (without its `\n`; a trailing `\r` is tolerated).
    pub fn parse(text: &'a [u8]) -> Result<Self, LineError> {
        Self::parse_with(text, FieldBuf::default())
    }

    /// [`Line::parse`] into the storage of an earlier line ([`Line::into_buf`]).
    pub fn parse_with(text: &'a [u8], buf: FieldBuf) -> Result<Self, LineError> {
        let text = simdutf8::basic::from_utf8(text).map_err(|_| LineError::Utf8)?;
        let bytes = text.len() as u64 + 1;
        let text = text.strip_suffix('\r').unwrap_or(text);
        // An empty vector of 'static fields is one of 'a fields (covariance).
        let fields = match fast::parse(text, buf.0) {
            Ok(fields) => fields,
            Err(fields) => serde_parse(text, fields)?,
        };
        Ok(Self { fields, bytes })
    }

    /// [`Line::parse`] by serde_json alone (what the fast path must agree with).
    #[cfg(test)]
    fn parse_serde(text: &'a [u8]) -> Result<Self, LineError> {
        let text = simdutf8::basic::from_utf8(text).map_err(|_| LineError::Utf8)?;
        let bytes = text.len() as u64 + 1;
        let text = text.strip_suffix('\r').unwrap_or(text);
        let fields = serde_parse(text, Vec::new())?;
        Ok(Self { fields, bytes })
    }

    /// Gives the storage back for the next line: emptied, and (being empty) of any lifetime.
    /// Collecting an emptied vector into one of the same layout reuses its allocation.
    pub fn into_buf(self) -> FieldBuf {
        let mut v = self.fields;
        v.clear();
        FieldBuf(
            v.into_iter()
                .filter(|_| false)
                .map(|_| (Cow::Borrowed(""), Scalar::Null))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Scalar<'a>> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(Scalar::as_str)
            .filter(|s| !s.is_empty())
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &Scalar<'a>)> {
        self.fields.iter().map(|(k, v)| (k.as_ref(), v))
    }

    /// `tag_<key>` fields, the prefix removed.
    pub fn tags(&self) -> impl Iterator<Item = (&str, &Scalar<'a>)> {
        self.fields()
            .filter_map(|(k, v)| Some((k.strip_prefix(fields::TAG_PREFIX)?, v)))
    }

    /// The request time in Unix ns: `time` (RFC 3339), else `timestamp`, else `a_timestamp`
    /// (Unix ns); `None` when the line has none of them.
    pub fn time_ns(&self) -> Option<u64> {
        for f in [fields::TIME, fields::TIMESTAMP] {
            if let Some(t) = self.str(f).and_then(parse_rfc3339_ns) {
                return Some(t);
            }
        }
        self.get("a_timestamp").and_then(Scalar::as_u64)
    }
}

/// RFC 3339 (`2026-11-25T07:40:01.123456Z`) to Unix ns.
pub fn parse_rfc3339_ns(s: &str) -> Option<u64> {
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(d.as_nanos()).ok()
}

/// Unix ns to RFC 3339 UTC with microseconds (the log line's format).
pub fn format_rfc3339_us(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_micros(t).to_string()
}

type Fields<'a> = Vec<(Cow<'a, str>, Scalar<'a>)>;

/// The whole line through serde_json: any JSON object, its errors as serde_json words them.
fn serde_parse<'a>(text: &'a str, buf: Fields<'a>) -> Result<Fields<'a>, LineError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let fields = de.deserialize_map(LineVisitor(buf))?;
    de.end()?;
    Ok(fields)
}

/// The lines mod_reqin_log writes, without serde's machinery ([`correlate_lib::jsonscan`]'s
/// cursor): one object of strings without escapes, unsigned integers of at most 19 digits,
/// booleans, nulls and nested values (kept as [`Scalar::Other`], as serde_json's path keeps
/// them), no control character anywhere (so no whitespace but spaces). Anything else (an
/// escape, a negative or fractional number, an error) gives the line back to serde_json whole,
/// so the fast path accepts a subset of what serde_json accepts and yields the same fields for
/// it.
mod fast {
    use super::{Fields, Scalar};
    use correlate_lib::jsonscan::{self, Cursor};
    use std::borrow::Cow;

    #[inline(always)]
    fn value<'a>(c: &mut Cursor<'a>, first: u8) -> Option<Scalar<'a>> {
        match first {
            b'"' => Some(Scalar::Str(Cow::Borrowed(c.string()?))),
            b't' => c.literal(b"true").map(|()| Scalar::Bool(true)),
            b'f' => c.literal(b"false").map(|()| Scalar::Bool(false)),
            b'n' => c.literal(b"null").map(|()| Scalar::Null),
            b'0'..=b'9' => c.unsigned().map(Scalar::U64),
            b'{' | b'[' => c.value().map(|_| Scalar::Other),
            _ => None,
        }
    }

    /// The fields of `text`, or the (emptied) vector back when serde_json must decide.
    pub(super) fn parse<'a>(text: &'a str, mut out: Fields<'a>) -> Result<Fields<'a>, Fields<'a>> {
        out.clear();
        if !jsonscan::plain(text.as_bytes()) {
            return Err(out);
        }
        out.reserve(48);
        if object(&mut Cursor::new(text), &mut out).is_some() {
            Ok(out)
        } else {
            out.clear();
            Err(out)
        }
    }

    #[inline(always)]
    fn object<'a>(c: &mut Cursor<'a>, out: &mut Fields<'a>) -> Option<()> {
        c.expect(b'{')?;
        let mut first = true;
        loop {
            match c.peek()? {
                b'}' if first => break,
                b'"' => {}
                _ => return None,
            }
            let k = c.string()?;
            c.expect(b':')?;
            let next = c.peek()?;
            let v = value(c, next)?;
            out.push((Cow::Borrowed(k), v));
            first = false;
            match c.peek()? {
                b',' => c.i += 1,
                b'}' => break,
                _ => return None,
            }
        }
        c.i += 1;
        c.at_end().then_some(())
    }
}

struct LineVisitor<'de>(Vec<(Cow<'de, str>, Scalar<'de>)>);

impl<'de> Visitor<'de> for LineVisitor<'de> {
    type Value = Vec<(Cow<'de, str>, Scalar<'de>)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = self.0;
        out.clear();
        out.reserve(48);
        while let Some(Key(k)) = map.next_key()? {
            let v: Scalar = map.next_value()?;
            out.push((k, v));
        }
        Ok(out)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::U64(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::I64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Scalar::F64(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_borrowed_unless_escaped_and_nested_values_are_skipped() {
        let text = br#"{"time":"2026-11-25T07:40:01.123456Z","src_ip":"10.0.0.1","status":404,"path":"/a\"b","x":{"y":[1,2]},"ok":true,"n":null,"neg":-3,"f":1.5,"tag_case":"INC-1"}"#;
        let l = Line::parse(text).unwrap();
        assert!(matches!(
            l.get("src_ip"),
            Some(Scalar::Str(Cow::Borrowed("10.0.0.1")))
        ));
        assert_eq!(l.str("path"), Some("/a\"b"));
        assert_eq!(l.get("status").and_then(Scalar::as_f64), Some(404.0));
        assert_eq!(l.get("x"), Some(&Scalar::Other));
        assert_eq!(l.get("ok"), Some(&Scalar::Bool(true)));
        assert_eq!(l.get("neg"), Some(&Scalar::I64(-3)));
        assert_eq!(l.tags().map(|(k, _)| k).collect::<Vec<_>>(), ["case"]);
        assert_eq!(l.time_ns(), Some(1_795_592_401_123_456_000));
        assert_eq!(
            format_rfc3339_us(1_795_592_401_123_456_000),
            "2026-11-25T07:40:01.123456Z"
        );
        assert_eq!(l.bytes, text.len() as u64 + 1);
    }

    #[test]
    fn a_line_hands_its_storage_to_the_next() {
        let raw = br#"{"a":1,"b":"x","c":true}"#;
        let buf = Line::parse(raw).unwrap().into_buf();
        let (ptr, cap) = (buf.0.as_ptr(), buf.0.capacity());
        assert!(cap >= 3 && buf.0.is_empty());
        let next = Line::parse_with(br#"{"d":2}"#, buf).unwrap();
        assert_eq!(next.get("d"), Some(&Scalar::U64(2)));
        let again = next.into_buf();
        assert_eq!(
            (again.0.as_ptr(), again.0.capacity()),
            (ptr, cap),
            "same allocation"
        );
    }

    /// The fast path and serde_json agree: same fields, same values, same borrowing, and an
    /// error exactly when serde_json has one.
    fn agree(text: &[u8]) {
        let fast = Line::parse(text);
        let serde = Line::parse_serde(text);
        match (&fast, &serde) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a, b, "{:?}", String::from_utf8_lossy(text));
                for ((ka, va), (kb, vb)) in a.fields.iter().zip(&b.fields) {
                    let borrowed = |c: &Cow<str>| matches!(c, Cow::Borrowed(_));
                    assert_eq!(borrowed(ka), borrowed(kb));
                    if let (Scalar::Str(x), Scalar::Str(y)) = (va, vb) {
                        assert_eq!(borrowed(x), borrowed(y));
                    }
                    if let (Scalar::F64(x), Scalar::F64(y)) = (va, vb) {
                        assert_eq!(x.to_bits(), y.to_bits());
                    }
                }
            }
            (Err(_), Err(_)) => {}
            _ => panic!(
                "{:?}: fast {fast:?}, serde_json {serde:?}",
                String::from_utf8_lossy(text)
            ),
        }
    }

    #[test]
    fn the_fast_path_agrees_with_serde_json() {
        let cases: &[&[u8]] = &[
            b"{}",
            b" { } ",
            b"{ }\t\n",
            b"{\"a\":1}",
            b"{\"a\" : 1 , \"b\" :\"x\" }",
            b"{\"a\":1,}",
            b"{,}",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1 \"b\":2}",
            b"{\"a\":1}}",
            b"{\"a\":1} {}",
            b"{\"a\":1",
            b"{\"a\":\"x",
            b"{\"a",
            b"{",
            b"",
            b"   ",
            b"[]",
            b"\"x\"",
            b"1",
            b"{\"a\":0}",
            b"{\"a\":00}",
            b"{\"a\":01}",
            b"{\"a\":-0}",
            b"{\"a\":-1}",
            b"{\"a\":-}",
            b"{\"a\":1.5}",
            b"{\"a\":1.}",
            b"{\"a\":1e3}",
            b"{\"a\":1E+3}",
            b"{\"a\":0.0}",
            b"{\"a\":1x}",
            b"{\"a\":9999999999999999999}",
            b"{\"a\":18446744073709551615}",
            b"{\"a\":18446744073709551616}",
            b"{\"a\":99999999999999999999999}",
            b"{\"a\":true,\"b\":false,\"c\":null}",
            b"{\"a\":tru}",
            b"{\"a\":truex}",
            b"{\"a\":nul}",
            b"{\"a\":True}",
            b"{\"a\":\"\\\"q\"}",
            b"{\"a\\u0041\":\"\\u00e9\"}",
            b"{\"a\":\"\\x\"}",
            b"{\"a\":\"tab\there\"}",
            b"{\"a\":\"nl\nhere\"}",
            b"{\"a\":\"\x7f del\"}",
            "{\"é\":\"日本語 – ok\"}".as_bytes(),
            b"{\"a\":[1,{\"b\":2}],\"c\":{}}",
            b"{\"a\":1,\"a\":2}",
            b"{\"\":\"\"}",
            b"{\"a\":1}\r",
            b"{\"a\":1}\r\r",
            b"\xff",
            b"{\"a\":\"\xc3\"}",
            b"{'a':1}",
            b"{a:1}",
            b"{\"a\":+1}",
            b"{\"a\":.5}",
            b"{\"a\":0x10}",
            "{\"a\":1\u{a0}}".as_bytes(),
        ];
        for c in cases {
            agree(c);
        }
        // Long strings, across memchr's and the scan's vector widths.
        for n in [
            0, 1, 55, 56, 57, 63, 64, 65, 127, 128, 8170, 8180, 8200, 20_000,
        ] {
            let long = format!(r#"{{"k":"{}","n":1}}"#, "x".repeat(n));
            agree(long.as_bytes());
            let spaced = format!(r#" {{ "k" : "{}" , "n" : 1 }} "#, "y".repeat(n));
            agree(spaced.as_bytes());
        }
        // Every cut and many one-byte changes of a line shaped like the module's.
        let line = br#"{"time":"2026-11-25T07:40:01.123456Z","src_ip":"10.0.0.1","src_port":40000,"correlated":true,"status":404,"path":"/a/b?c=d","header_User-Agent":"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/120.0","ip_meta_ttl":52,"ja4":"t13d1516h2_8daaf6152771_02713d6af862","tls_alpn":null,"ip_meta_df":false,"tag_env":"prod"}"#;
        agree(line);
        let text = std::str::from_utf8(line).unwrap();
        assert!(
            fast::parse(text, Vec::new()).is_ok(),
            "the module's lines take the fast path"
        );
        for n in 0..line.len() {
            agree(&line[..n]);
        }
        for m in correlate_lib::jsonscan::mutations(line, 20_000) {
            agree(&m);
        }
    }

    #[test]
    fn not_an_object_is_an_error() {
        assert!(Line::parse(b"[1,2]").is_err());
        assert!(Line::parse(b"{\"a\":1} x").is_err());
        assert!(Line::parse(b"{\"a\":").is_err());
        assert!(Line::parse(b"\xff").is_err());
    }
}
