//! A fast path for reading the JSON lines we write, without serde's machinery: text without any
//! backslash or control character (what the module, the sensor and the detector write for
//! nearly every line: hostile bytes of a request are escaped, so a line holding them takes the
//! slow path), read by a cursor that finds each string's end with `memchr` and validates the
//! rest of the grammar as it goes (objects and arrays at any depth up to [`MAX_DEPTH`], numbers
//! to JSON's grammar, `true`/`false`/`null`).
//!
//! Everything here accepts a subset of what serde_json accepts and reads it the same way: when
//! the cursor answers `None`, the caller hands the text to serde_json, which decides (and words
//! the error). Used by `ja4sensor query` (keys and raw values, nested objects of events
//! included) and `ja4sensor detect` (flat lines into scalars).

/// Nesting the fast path follows; deeper text goes to serde_json (whose own limit is 128).
pub const MAX_DEPTH: usize = 64;

/// Whether `b` has no control character and no backslash, so that every `"` in it opens or
/// closes a string and every string is its own text. Branch-free, so that it vectorises.
#[inline]
pub fn plain(b: &[u8]) -> bool {
    !b.iter()
        .fold(false, |bad, &c| bad | (c < 0x20) | (c == b'\\'))
}

/// Strings up to this long (most keys and values) are searched 8 bytes at a time in registers;
/// the rest of a longer one by `memchr`, whose set-up costs more than such a short search.
const SHORT_STRING: usize = 32;

/// The first `"` in `h`.
#[inline(always)]
fn find_quote(h: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    let mut j = 0;
    while j < SHORT_STRING {
        let Some(word) = h.get(j..j + 8) else { break };
        let mut w = [0; 8];
        w.copy_from_slice(word);
        // A byte of x is zero where the word has a quote; the lowest high bit set in `zero` is
        // at the first such byte (a borrow can only mark bytes above a zero one).
        let x = u64::from_le_bytes(w) ^ QUOTES;
        let zero = x.wrapping_sub(ONES) & !x & HIGHS;
        if zero != 0 {
            return Some(j + (zero.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    memchr::memchr(b'"', &h[j..]).map(|k| j + k)
}

/// A position in a [`plain`] text.
pub struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    /// The next byte to read.
    pub i: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `text`, which the caller checked with [`plain`].
    pub fn new(text: &'a str) -> Self {
        Self {
            s: text,
            b: text.as_bytes(),
            i: 0,
        }
    }

    /// The next byte that is not a space (the only whitespace a plain text can hold), the cursor
    /// left on it; `None` at the end.
    #[inline(always)]
    pub fn peek(&mut self) -> Option<u8> {
        while *self.b.get(self.i)? == b' ' {
            self.i += 1;
        }
        Some(self.b[self.i])
    }

    /// Whether only spaces are left.
    #[inline]
    pub fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    /// Steps over `byte` (after spaces); `None` when something else is there.
    #[inline(always)]
    pub fn expect(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    /// The string whose opening quote is at the cursor (no escapes: it ends at the next quote),
    /// without its quotes.
    #[inline(always)]
    pub fn string(&mut self) -> Option<&'a str> {
        let start = self.i + 1;
        let end = start + find_quote(self.b.get(start..)?)?;
        self.i = end + 1;
        // Both ends are ASCII quotes: char boundaries.
        self.s.get(start..end)
    }

    /// Steps over `word` (`true`, `false`, `null`) at the cursor.
    #[inline(always)]
    pub fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// `0` or `[1-9][0-9]{0,18}` (below 2^64) at the cursor, not followed by a fraction or an
    /// exponent; `None` (cursor unmoved) for any other number.
    #[inline(always)]
    pub fn unsigned(&mut self) -> Option<u64> {
        let b = self.b;
        let start = self.i;
        let mut v: u64 = 0;
        let mut j = start;
        while let Some(&c) = b.get(j) {
            if !c.is_ascii_digit() {
                break;
            }
            if j - start == 19 {
                return None;
            }
            v = v * 10 + u64::from(c - b'0');
            j += 1;
        }
        if j == start || (j - start > 1 && b[start] == b'0') {
            return None;
        }
        if matches!(b.get(j), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        self.i = j;
        Some(v)
    }

    #[inline(always)]
    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }

    /// Any JSON number at the cursor: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    #[inline(always)]
    fn number(&mut self) -> Option<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits()?,
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.digits()?;
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.digits()?;
        }
        Some(())
    }

    /// Steps over the value at the cursor (after spaces), validating it, and returns its text.
    #[inline(always)]
    pub fn value(&mut self) -> Option<&'a str> {
        self.value_at(0)
    }

    /// [`Cursor::value`] for a value nested `depth` deep.
    #[inline(always)]
    fn value_at(&mut self, depth: usize) -> Option<&'a str> {
        let first = self.peek()?;
        let start = self.i;
        // Strings and numbers (nearly every value) without the call.
        match first {
            b'"' => {
                self.string()?;
            }
            b'-' | b'0'..=b'9' => self.number()?,
            _ => self.skip_value(first, depth)?,
        }
        self.s.get(start..self.i)
    }

    /// Steps over the value that starts with `first` at the cursor.
    fn skip_value(&mut self, first: u8, depth: usize) -> Option<()> {
        match first {
            b'"' => self.string().map(drop),
            b'{' => self.object(depth, |_, _| {}),
            b'[' => {
                if depth == MAX_DEPTH {
                    return None;
                }
                self.i += 1;
                if self.peek()? == b']' {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.value_at(depth + 1)?;
                    if self.next_item(b']')? {
                        return Some(());
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// The object whose `{` is at the cursor, `depth` deep: `entry(key, raw value text)` for
    /// each of its entries, in order.
    fn object(&mut self, depth: usize, mut entry: impl FnMut(&'a str, &'a str)) -> Option<()> {
        if depth == MAX_DEPTH {
            return None;
        }
        self.i += 1;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let k = self.string()?;
            self.expect(b':')?;
            entry(k, self.value_at(depth + 1)?);
            if self.next_item(b'}')? {
                return Some(());
            }
        }
    }

    /// After an item of a container closed by `close`: steps over a `,` (false: another item
    /// follows) or over `close` (true: the container ends).
    #[inline(always)]
    fn next_item(&mut self, close: u8) -> Option<bool> {
        let c = self.peek()?;
        self.i += 1;
        match c {
            b',' => Some(false),
            c if c == close => Some(true),
            _ => None,
        }
    }
}

/// Calls `entry(key, raw value text)` for each entry of the object that is the whole of `text`
/// (spaces around it allowed), in order, a repeated key each time; every value is validated,
/// nested ones included. `None` when `text` is not [`plain`] or not such an object (then
/// serde_json must decide; `entry` may have been called for the entries before the fault).
pub fn object_entries<'a>(text: &'a str, entry: impl FnMut(&'a str, &'a str)) -> Option<()> {
    if !plain(text.as_bytes()) {
        return None;
    }
    let mut c = Cursor::new(text);
    if c.peek()? != b'{' {
        return None;
    }
    c.object(0, entry)?;
    c.at_end().then_some(())
}

#[cfg(any(test, feature = "test-support"))]
pub fn mutations(line: &[u8], count: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let bytes = b"{}[]\",: \t\r\n\\/0123456789-+.eEtrufalsn\x00\x1f\x7f\xc3\xa9ax";
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count).map(move |_| {
        let mut m = line.to_vec();
        for _ in 0..=(next() % 3) {
            if m.is_empty() {
                m.push(b'{');
            }
            let at = (next() % m.len() as u64) as usize;
            let b = bytes[(next() % bytes.len() as u64) as usize];
            match next() % 3 {
                0 => m[at] = b,
                1 => m.insert(at, b),
                _ => {
                    m.remove(at);
                }
            }
        }
        m
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entries(text: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        object_entries(text, |k, v| out.push((k.to_owned(), v.to_owned())))?;
        Some(out)
    }

    /// What serde_json reads from `text` as an object of raw values, if it accepts it.
    fn serde_entries(text: &str) -> Option<Vec<(String, String)>> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        // A Map keeps neither order nor repeats: compare sorted, on texts without repeated keys.
        Some(
            map.into_iter()
                .map(|(k, v)| (k, serde_json::to_string(&v).unwrap()))
                .collect(),
        )
    }

    #[test]
    fn nested_values_are_validated_and_kept_as_their_text() {
        let text = r#" {"a":"x","n":-12.5e+3,"o":{"k":[1,true,null,{"z":[]}],"e":{}},"z":0 } "#;
        assert_eq!(
            entries(text).unwrap(),
            [
                ("a", r#""x""#),
                ("n", "-12.5e+3"),
                ("o", r#"{"k":[1,true,null,{"z":[]}],"e":{}}"#),
                ("z", "0"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(entries("{}").unwrap(), []);
        assert_eq!(entries(r#"{"a" : [ 1 , 2 ] }"#).unwrap()[0].1, "[ 1 , 2 ]");
    }

    #[test]
    fn the_fast_path_accepts_nothing_serde_json_refuses() {
        // Every one of these is refused by serde_json; the fast path must refuse them too.
        for bad in [
            "",
            "{",
            "{}{}",
            "[]",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":"x"]"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":["b":1]}"#,
            r#"{a:1}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":"cut"#,
            r#"{"a":1} x"#,
            "{\"a\":\"tab\there\"}",
        ] {
            assert!(serde_entries(bad).is_none(), "serde accepts {bad:?}");
            assert!(entries(bad).is_none(), "fast path accepts {bad:?}");
        }
        // Valid, but not plain: serde_json reads them.
        for escaped in [r#"{"a":"q\"uote"}"#, r#"{"a\u00e9":1}"#, "{\"a\":\n1}"] {
            assert!(serde_entries(escaped).is_some(), "{escaped:?}");
            assert!(entries(escaped).is_none(), "{escaped:?}");
        }
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(70), "]".repeat(70));
        assert!(
            entries(&deep).is_none(),
            "deeper than MAX_DEPTH goes to serde"
        );
    }

    #[test]
    fn what_it_accepts_serde_json_reads_the_same() {
        for good in [
            r#"{"a":"plain","n":42,"t":true,"f":false,"z":null}"#,
            r#"{"x":-0,"y":1E5,"w":2.50,"v":-1.5e-7,"big":123456789012345678901234567890}"#,
            r#"{"o":{"k":"v","l":[{"m":[]}]},"e":[]}"#,
            r#"{"é":"ünïcode ✓"}"#,
        ] {
            let mut fast = entries(good).unwrap();
            fast.sort();
            let slow = serde_entries(good).unwrap();
            assert_eq!(fast.len(), slow.len(), "{good}");
            for ((fk, fv), (sk, sv)) in fast.iter().zip(&slow) {
                assert_eq!(fk, sk);
                let reparsed: serde_json::Value = serde_json::from_str(fv).unwrap();
                assert_eq!(&serde_json::to_string(&reparsed).unwrap(), sv, "{good}");
            }
        }
    }

    #[test]
    fn mutated_lines_are_refused_or_read_as_serde_json_reads_them() {
        // An event shaped like the detector's (nested objects, an array, a negative and a
        // fractional number), then every cut and many one-to-three-byte changes of it.
        let line = br#"{"event_time":"2026-11-25T07:40:01.123456Z","event_type":"ua_mismatch","severity":"high","score":-1.25e2,"parent_correlation_id":"r-1","correlation_tags":{"investigation_id":"INC-12345","k":""},"data":{"ja4":"t13d1516h2_8daaf6152771_02713d6af862","ttl":[64,128],"ok":true,"none":null}}"#;
        let agree = |m: &[u8]| {
            let Ok(text) = std::str::from_utf8(m) else {
                return;
            };
            if let Some(fast) = entries(text) {
                // The last of a repeated key, in key order: as serde_json's Map keeps them.
                let fast: std::collections::BTreeMap<_, _> = fast.into_iter().collect();
                let slow = serde_entries(text);
                assert!(slow.is_some(), "fast path accepts {text:?}");
                let slow = slow.unwrap();
                assert_eq!(fast.len(), slow.len(), "{text:?}");
                for ((_, fv), (_, sv)) in fast.iter().zip(&slow) {
                    let v: serde_json::Value = serde_json::from_str(fv).unwrap();
                    assert_eq!(&serde_json::to_string(&v).unwrap(), sv, "{text:?}");
                }
            }
        };
        assert!(entries(std::str::from_utf8(line).unwrap()).is_some());
        for n in 0..line.len() {
            agree(&line[..n]);
        }
        for m in mutations(line, 20_000) {
            agree(&m);
        }
    }

    #[test]
    fn a_quote_is_found_wherever_it_is() {
        for len in 0..80 {
            for at in 0..len {
                let mut h = vec![b'x'; len];
                h[at] = b'"';
                if at + 1 < len {
                    h[len - 1] = b'"';
                }
                // Bytes next to the quote's value, to trip a borrow: '!' is '"' - 1, '#' is + 1.
                if at > 0 {
                    h[at - 1] = b'!';
                }
                assert_eq!(find_quote(&h), Some(at), "{len} {at}");
            }
            assert_eq!(find_quote(&vec![b'#'; len]), None);
        }
        assert_eq!(find_quote("é\"".as_bytes()), Some(2));
    }

    #[test]
    fn unsigned_reads_only_plain_u64() {
        for (text, want) in [
            ("0", Some(0)),
            ("42", Some(42)),
            ("1234567890123456789", Some(1_234_567_890_123_456_789)),
            ("12345678901234567890", None),
            ("01", None),
            ("1.5", None),
            ("1e3", None),
            ("-1", None),
            ("x", None),
        ] {
            assert_eq!(Cursor::new(text).unsigned(), want, "{text}");
        }
    }
}
