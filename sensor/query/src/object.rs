//! One flat JSON object (a log line or an event) read in place: keys borrowed from the line,
//! values kept as the raw JSON text and decoded only when asked for. Parsing still validates the
//! whole line, so a line that is not a JSON object is refused as a whole, with the reason it was
//! refused: lines without escapes (nearly all) by [`correlate_lib::jsonscan`]'s cursor, anything
//! else (and anything that cursor declines) by serde_json's parser, which words the reason.

use std::borrow::Cow;
use std::fmt;

use correlate_lib::jsonscan;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::error::Category;
use serde_json::value::RawValue;

/// Entries a log line usually has (about 40 fields with a few headers): one allocation per line.
const TYPICAL_FIELDS: usize = 48;
/// Entries a nested object (an event's `correlation_tags`) usually has.
const NESTED_FIELDS: usize = 8;

/// Why a line was skipped. Each kind is counted separately (see [`crate::scan::SkipCounts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineError {
    /// Bytes that are not UTF-8: the module and the detector write only UTF-8 (raw bytes of a
    /// request go into `*_raw` fields as `\xNN`), so the line was damaged or forged.
    InvalidUtf8,
    /// The JSON text stops in the middle (a writer killed mid-line, a cut file).
    Truncated,
    /// Not JSON at all, or two lines run together.
    InvalidJson,
    /// Valid JSON that is not an object (`[1,2]`, `"text"`, `42`).
    NotAnObject,
}

/// A JSON object whose keys and raw values point into the line.
#[derive(Debug)]
pub struct Object<'a> {
    /// Keys and the JSON text of their values.
    entries: Vec<(Cow<'a, str>, &'a str)>,
}

impl<'a> Object<'a> {
    /// The object in `line` (without its `\n`).
    pub fn parse(line: &'a [u8]) -> Result<Self, LineError> {
        let text = simdutf8::basic::from_utf8(line).map_err(|_| LineError::InvalidUtf8)?;
        Self::parse_str(text)
    }

    pub fn parse_str(text: &'a str) -> Result<Self, LineError> {
        Self::parse_str_sized(text, TYPICAL_FIELDS)
    }

    /// [`Object::parse_str`] with room for `fields` entries before the first reallocation.
    fn parse_str_sized(text: &'a str, fields: usize) -> Result<Self, LineError> {
        let mut entries = Vec::with_capacity(fields);
        if jsonscan::object_entries(text, |k, v| entries.push((Cow::Borrowed(k), v))).is_some() {
            return Ok(Object { entries });
        }
        serde_json::from_str::<Object<'a>>(text).map_err(classify)
    }

    /// The object in `line` keeping only the entries named in `keys`: the whole line is still
    /// validated (the other values are skipped by the parser, not trusted), at a fraction of
    /// the cost of keeping every raw value. What a query's exact test reads.
    pub fn parse_keys<K: AsRef<str>>(line: &'a [u8], keys: &[K]) -> Result<Self, LineError> {
        let text = simdutf8::basic::from_utf8(line).map_err(|_| LineError::InvalidUtf8)?;
        let mut entries = Vec::with_capacity(keys.len());
        let fast = jsonscan::object_entries(text, |k, v| {
            if keys.iter().any(|w| w.as_ref() == k) {
                entries.push((Cow::Borrowed(k), v));
            }
        });
        if fast.is_some() {
            return Ok(Object { entries });
        }
        let mut de = serde_json::Deserializer::from_str(text);
        let o = Selected { keys }.deserialize(&mut de).map_err(classify)?;
        de.end().map_err(classify)?;
        Ok(o)
    }

    /// The JSON text of `key`'s value; the last one when a key repeats (as serde_json and Python
    /// read it).
    pub fn raw(&self, key: &str) -> Option<&'a str> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| *v)
    }

    /// The string value of `key`; `None` when absent or not a string.
    pub fn str(&self, key: &str) -> Option<Cow<'a, str>> {
        self.raw(key).and_then(decode_str)
    }

    /// The value of `key` as an unsigned integer (JSON integers only).
    pub fn u64(&self, key: &str) -> Option<u64> {
        self.raw(key).and_then(|v| v.parse().ok())
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.raw(key)? {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        }
    }

    /// A nested object (an event's `correlation_tags`, `data`).
    pub fn object(&self, key: &str) -> Option<Object<'a>> {
        let raw = self.raw(key)?;
        if !raw.starts_with('{') {
            return None;
        }
        Object::parse_str_sized(raw, NESTED_FIELDS).ok()
    }

    /// The string value of `inner` in the nested object `key` (an event's tag in
    /// `correlation_tags`), read without building that object's entries.
    pub fn nested_str(&self, key: &str, inner: &str) -> Option<Cow<'a, str>> {
        let mut found = None;
        if jsonscan::object_entries(self.raw(key)?, |k, v| {
            if k == inner {
                found = Some(v);
            }
        })
        .is_some()
        {
            return found.and_then(decode_str);
        }
        // Escapes or not an object: what [`Object::object`] reads.
        self.object(key)?.str(inner)
    }

    /// The string value of the key `prefix` + `key` (a line's `tag_<key>`), without building
    /// that key.
    pub fn str_prefixed(&self, prefix: &str, key: &str) -> Option<Cow<'a, str>> {
        self.entries
            .iter()
            .rev()
            .find(|(k, _)| k.strip_prefix(prefix) == Some(key))
            .and_then(|(_, v)| decode_str(v))
    }

    /// Every entry in the order of the line (a repeated key appears each time).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &'a str)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_ref(), *v))
    }

    /// A value as text for people: strings decoded, anything else as its JSON.
    pub fn text(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.raw(key)?;
        match decode_str(raw) {
            Some(s) => Some(s),
            None if raw == "null" => None,
            None => Some(Cow::Borrowed(raw)),
        }
    }
}

fn classify(e: serde_json::Error) -> LineError {
    match e.classify() {
        Category::Eof => LineError::Truncated,
        Category::Data => LineError::NotAnObject,
        Category::Syntax | Category::Io => LineError::InvalidJson,
    }
}

/// Keeps the entries whose key is one of `keys`, skips the others.
struct Selected<'k, K> {
    keys: &'k [K],
}

impl<'de, K: AsRef<str>> DeserializeSeed<'de> for Selected<'_, K> {
    type Value = Object<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Object<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, K: AsRef<str>> Visitor<'de> for Selected<'_, K> {
    type Value = Object<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
        let mut entries = Vec::with_capacity(self.keys.len());
        while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
            if self.keys.iter().any(|w| w.as_ref() == k.as_ref()) {
                let v: &'de RawValue = map.next_value()?;
                entries.push((k, v.get()));
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Object { entries })
    }
}

/// A JSON string value decoded; borrowed when it has no escape (nearly every value).
pub fn decode_str(text: &str) -> Option<Cow<'_, str>> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// A key borrowed from the line when it has no escape.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut entries = Vec::with_capacity(TYPICAL_FIELDS);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    entries.push((k, v.get()));
                }
                Ok(Object { entries })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_lazily_and_escaped_strings_are_unescaped() {
        let line =
            br#"{"a":"plain","b":"q\"uote \u00e9","n":42,"t":true,"o":{"k":"v"},"a":"last"}"#;
        let o = Object::parse(line).unwrap();
        assert_eq!(o.str("a").unwrap(), "last");
        assert_eq!(o.str("b").unwrap(), "q\"uote é");
        assert_eq!(o.u64("n"), Some(42));
        assert_eq!(o.bool("t"), Some(true));
        assert_eq!(o.object("o").unwrap().str("k").unwrap(), "v");
        assert_eq!(o.nested_str("o", "k").unwrap(), "v");
        assert_eq!(o.nested_str("o", "absent"), None);
        assert_eq!(o.nested_str("a", "k"), None);
        assert_eq!(o.str_prefixed("", "a").unwrap(), "last");
        assert_eq!(o.str_prefixed("n", "").as_deref(), None);
        let escaped = Object::parse(br#"{"o":{"k":"a\"b","k":"c\u00e9"},"tag_x":"y"}"#).unwrap();
        assert_eq!(escaped.nested_str("o", "k").unwrap(), "c\u{e9}");
        assert_eq!(escaped.str_prefixed("tag_", "x").unwrap(), "y");
        assert_eq!(o.str("n"), None);
        assert_eq!(o.text("n").unwrap(), "42");
        assert!(o.raw("absent").is_none());
    }

    #[test]
    fn hostile_lines_are_refused_with_their_reason() {
        assert_eq!(
            Object::parse(b"{\"a\":\"x\xff\"}").unwrap_err(),
            LineError::InvalidUtf8
        );
        assert_eq!(
            Object::parse(br#"{"a":"cut here"#).unwrap_err(),
            LineError::Truncated
        );
        assert_eq!(
            Object::parse(br#"{"a":1}{"b":2}"#).unwrap_err(),
            LineError::InvalidJson
        );
        assert_eq!(
            Object::parse(br#"{"a":nope}"#).unwrap_err(),
            LineError::InvalidJson
        );
        assert_eq!(Object::parse(b"[1,2]").unwrap_err(), LineError::NotAnObject);
        assert_eq!(Object::parse(b"").unwrap_err(), LineError::Truncated);
    }

    #[test]
    fn a_selective_parse_keeps_the_keys_asked_for_and_still_validates_everything() {
        let line = br#"{"a":"1","b":{"x":[1,2,{"y":"z"}]},"c":"3","a":"4"}"#;
        let o = Object::parse_keys(line, &["a", "c"]).unwrap();
        assert_eq!(o.str("a").unwrap(), "4");
        assert_eq!(o.str("c").unwrap(), "3");
        assert!(o.raw("b").is_none());
        for (bad, why) in [
            (&br#"{"a":"1","b":{"x":[1,}}"#[..], LineError::InvalidJson),
            (br#"{"a":"1","b":"cut"#, LineError::Truncated),
            (br#"{"a":"1"}{"a":"2"}"#, LineError::InvalidJson),
            (b"{\"a\":\"1\",\"b\":\"\xff\"}", LineError::InvalidUtf8),
            (br#"["a"]"#, LineError::NotAnObject),
            (br#"{"a":"1","b":"bad \q escape"}"#, LineError::InvalidJson),
        ] {
            assert_eq!(
                Object::parse_keys(bad, &["a"]).unwrap_err(),
                why,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
