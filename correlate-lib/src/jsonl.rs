//! A JSON object writer for the lines we print (`ja4sensor read`, the sensor's JSON outputs,
//! mod_reqin_log's log line): the same bytes as `serde_json::to_writer`
//! for what [`crate::TlsRecord::serialize_fields`] writes (strings, integers, booleans,
//! options), without serde_json's byte-by-byte string escaping. Strings that need no escape
//! (every fingerprint, address and host name in practice) are copied whole; any other string,
//! and the rare scalar types, are handed to serde_json itself, so the output cannot differ.
//! Nested values (sequences, maps, structs, enum variants with data) are refused: no record
//! field has one, and the tests compare the output with serde_json's.

use serde::ser::{self, Impossible, Serialize, SerializeMap, Serializer};

type Error = serde_json::Error;

fn unsupported(what: &str) -> Error {
    ser::Error::custom(format_args!("the JSON line writer does not write {what}"))
}

/// True when serde_json would write `s` unchanged between its quotes: it escapes `"`, `\` and
/// the control characters below 0x20, nothing else.
fn needs_escape(s: &str) -> bool {
    // A fold without early exit: the compiler vectorises it.
    s.bytes().fold(false, |acc, b| {
        acc | (b < 0x20) | (b == b'"') | (b == b'\\')
    })
}

/// `s` as a JSON string, exactly as serde_json writes it; a string with nothing to escape is
/// copied whole.
pub fn write_str(out: &mut Vec<u8>, s: &str) -> Result<(), Error> {
    if needs_escape(s) {
        return serde_json::to_writer(out, s);
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
    Ok(())
}

fn write_integer<I: itoa::Integer>(out: &mut Vec<u8>, value: I) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// An open JSON object; `{` is written by [`MapWriter::new`], `}` by `end`.
pub struct MapWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> MapWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }
}

impl SerializeMap for MapWriter<'_> {
    type Ok = ();
    type Error = Error;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Error> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        key.serialize(KeyWriter {
            out: self.out,
            quoted: true,
        })
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.out.push(b':');
        value.serialize(ValueWriter(self.out))
    }

    fn end(self) -> Result<(), Error> {
        self.out.push(b'}');
        Ok(())
    }
}

/// A map key as [`MapWriter`] writes it (quoted): for writers that arrange the entries
/// themselves.
pub fn write_key<T: ?Sized + Serialize>(out: &mut Vec<u8>, key: &T) -> Result<(), Error> {
    key.serialize(KeyWriter { out, quoted: true })
}

/// A map key's text, as is (no quotes, no escaping), appended to `out`: for writers that
/// compare a key with known field names before they write it (the names of [`crate::fields`]
/// need no escaping; such a writer checks that the key it writes is one of them).
pub fn key_text<T: ?Sized + Serialize>(out: &mut Vec<u8>, key: &T) -> Result<(), Error> {
    key.serialize(KeyWriter { out, quoted: false })
}

/// A scalar value as [`MapWriter`] writes it; nested values are refused.
pub fn write_value<T: ?Sized + Serialize>(out: &mut Vec<u8>, value: &T) -> Result<(), Error> {
    value.serialize(ValueWriter(out))
}

/// Writes one scalar value.
struct ValueWriter<'a>(&'a mut Vec<u8>);

/// Through serde_json: exactly its bytes for the rare scalar types.
macro_rules! via_serde_json {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<(), Error> {
            serde_json::to_writer(self.0, &v)
        })*
    };
}

macro_rules! integers {
    ($($method:ident($ty:ty)),* $(,)?) => {
        $(fn $method(self, v: $ty) -> Result<(), Error> {
            write_integer(self.0, v);
            Ok(())
        })*
    };
}

impl<'a> Serializer for ValueWriter<'a> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    integers!(
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
    );
    via_serde_json!(
        serialize_i128(i128),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_bytes(&[u8]),
    );

    fn serialize_bool(self, v: bool) -> Result<(), Error> {
        self.0
            .extend_from_slice(if v { b"true" as &[u8] } else { b"false" });
        Ok(())
    }

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        write_str(self.0, v)
    }

    fn serialize_none(self) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Error> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        write_str(self.0, variant)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(unsupported("enum variants with data"))
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(unsupported("sequences"))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(unsupported("tuples"))
    }

    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(unsupported("tuple structs"))
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(unsupported("enum variants with data"))
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported("nested maps"))
    }

    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(unsupported("structs"))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(unsupported("enum variants with data"))
    }
}

/// Writes a map key: a string, as serde_json requires (it also quotes integer keys; no record
/// has one).
struct KeyWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Quoted and escaped as JSON, or the text as is ([`key_text`]).
    quoted: bool,
}

impl Serializer for KeyWriter<'_> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Impossible<(), Error>;
    type SerializeTuple = Impossible<(), Error>;
    type SerializeTupleStruct = Impossible<(), Error>;
    type SerializeTupleVariant = Impossible<(), Error>;
    type SerializeMap = Impossible<(), Error>;
    type SerializeStruct = Impossible<(), Error>;
    type SerializeStructVariant = Impossible<(), Error>;

    fn serialize_str(self, v: &str) -> Result<(), Error> {
        if self.quoted {
            write_str(self.out, v)
        } else {
            self.out.extend_from_slice(v.as_bytes());
            Ok(())
        }
    }

    fn serialize_bool(self, _v: bool) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_i8(self, _v: i8) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_i16(self, _v: i16) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_i32(self, _v: i32) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_i64(self, _v: i64) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_u8(self, _v: u8) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_u16(self, _v: u16) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_u32(self, _v: u32) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_u64(self, _v: u64) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_f32(self, _v: f32) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_f64(self, _v: f64) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_char(self, _v: char) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_none(self) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, _value: &T) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_unit(self) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Error> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Error> {
        Err(unsupported("non-string keys"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Error> {
        Err(unsupported("non-string keys"))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ours<T: Serialize>(entries: &[(&str, T)]) -> String {
        let mut out = Vec::new();
        let mut m = MapWriter::new(&mut out);
        for (k, v) in entries {
            m.serialize_entry(k, v).unwrap();
        }
        m.end().unwrap();
        String::from_utf8(out).unwrap()
    }

    fn theirs<T: Serialize>(entries: &[(&str, T)]) -> String {
        let mut out = Vec::new();
        let mut ser = serde_json::Serializer::new(&mut out);
        let mut m = ser.serialize_map(None).unwrap();
        for (k, v) in entries {
            m.serialize_entry(k, v).unwrap();
        }
        m.end().unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn scalars_are_written_as_serde_json_writes_them() {
        assert_eq!(ours::<u8>(&[]), theirs::<u8>(&[]));
        assert_eq!(
            ours(&[("a", u64::MAX), ("b", 0)]),
            theirs(&[("a", u64::MAX), ("b", 0)])
        );
        assert_eq!(
            ours(&[("n", i64::MIN), ("m", -1)]),
            theirs(&[("n", i64::MIN), ("m", -1)])
        );
        assert_eq!(
            ours(&[("t", true), ("f", false)]),
            theirs(&[("t", true), ("f", false)])
        );
        let opts = [("s", Some("x")), ("n", None)];
        assert_eq!(ours(&opts), theirs(&opts));
        let floats = [("x", 1.5f64), ("nan", f64::NAN), ("e", 1e300)];
        assert_eq!(ours(&floats), theirs(&floats));
        let chars = [("c", '"'), ("d", 'é')];
        assert_eq!(ours(&chars), theirs(&chars));
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let tricky = [
            ("plain", "t13d1516h2_8daaf6152771_e5627efa2ab1"),
            ("quote", "a\"b"),
            ("backslash", "a\\b"),
            ("controls", "\u{0}\u{1f}\n\t\r\u{7f}"),
            ("unicode", "bücher.例え.テスト"),
            ("empty", ""),
            ("key \"quoted\"", "v"),
        ];
        assert_eq!(ours(&tricky), theirs(&tricky));
    }

    #[test]
    fn nested_values_are_refused() {
        let mut out = Vec::new();
        let mut m = MapWriter::new(&mut out);
        assert!(m.serialize_entry("v", &vec![1u8]).is_err());
        assert!(m.serialize_entry(&1u8, "v").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_string_is_written_as_serde_json_writes_it(key in ".*", value in ".*") {
            let entries = [(key.as_str(), value.as_str())];
            proptest::prop_assert_eq!(ours(&entries), theirs(&entries));
        }
    }
}
