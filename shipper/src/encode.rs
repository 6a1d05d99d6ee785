//! A batch's lines as the body of one INSERT: the good lines (JSON objects) in ClickHouse's
//! `RowBinary` format for the inbox's columns `(batch_id, raw_json, deadline)`, the rest as dead
//! letters.
//!
//! Why `RowBinary` and not `JSONEachRow` (the first versions): a line needs no escaping into a JSON
//! string here and no unescaping and parsing on the server; it is copied as it is, behind its
//! length. Profiled at 100 000-line batches, escaping and a full `serde_json::Map` per line
//! (validation) were half of the shipper's CPU (BENCHMARKS.md). Validation now parses without
//! building anything (`IgnoredAny`).
//!
//! The deadline is per attempt, the rest of the body is not: [`Body::set_deadline`] patches the
//! four bytes of every row in place, so a retry does not re-encode the batch.

use bytes::Bytes;
use serde::de::IgnoredAny;

use crate::follow::Block;

/// The body is sent as a stream of chunks of about this size, each its own compressed block:
/// the server decompresses and parses while the rest arrives, and no single block is huge.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// One batch's INSERT body.
#[derive(Debug, Clone, Default)]
pub struct Body {
    data: Vec<u8>,
    /// Where each row's `deadline` (UInt32, little-endian) is.
    deadline_at: Vec<usize>,
}

impl Body {
    pub fn rows(&self) -> usize {
        self.deadline_at.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn set_deadline(&mut self, deadline: u32) {
        let bytes = deadline.to_le_bytes();
        for &at in &self.deadline_at {
            if let Some(slot) = self.data.get_mut(at..at + 4) {
                slot.copy_from_slice(&bytes);
            }
        }
    }

    /// The body cut into chunks of about [`CHUNK_BYTES`] (at any byte: the server reads one
    /// stream), each shared, not copied.
    pub fn chunks(&self) -> Vec<Bytes> {
        let all = Bytes::copy_from_slice(&self.data);
        let mut out = Vec::with_capacity(all.len() / CHUNK_BYTES + 1);
        let mut at = 0;
        while at < all.len() {
            let end = (at + CHUNK_BYTES).min(all.len());
            out.push(all.slice(at..end));
            at = end;
        }
        out
    }

    #[cfg(test)]
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }
}

/// The good lines of `block` as rows of `batch_id`, and the indexes of the dead letters.
pub fn encode(block: &Block, batch_id: &str) -> (Body, Vec<usize>) {
    let mut body = Body {
        data: Vec::with_capacity(block.data.len() + block.len() * (batch_id.len() + 16)),
        deadline_at: Vec::with_capacity(block.len()),
    };
    let mut dead = Vec::new();
    for i in 0..block.len() {
        let overlong = block.lines.get(i).is_some_and(|l| l.overlong);
        match json_object_line(block.line(i), overlong) {
            Some(text) => {
                put_string(&mut body.data, batch_id.as_bytes());
                put_string(&mut body.data, text);
                body.deadline_at.push(body.data.len());
                body.data.extend_from_slice(&[0; 4]);
            }
            None => dead.push(i),
        }
    }
    (body, dead)
}

/// The text of a good line (without a trailing `\r`); `None` for a dead letter: not UTF-8, not
/// a JSON object, or cut because it was overlong.
pub fn json_object_line(line: &[u8], overlong: bool) -> Option<&[u8]> {
    if overlong {
        return None;
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let text = std::str::from_utf8(line).ok()?;
    if !text.trim_start().starts_with('{') {
        return None;
    }
    // Checks the whole syntax (and that nothing follows the object) without building it.
    serde_json::from_str::<IgnoredAny>(text).ok()?;
    Some(line)
}

/// RowBinary `String`: LEB128 length, then the bytes.
fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut n = s.len() as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::follow::BlockLine;

    fn block(lines: &[&[u8]]) -> Block {
        let mut b = Block::default();
        for l in lines {
            let from = b.data.len();
            b.data.extend_from_slice(l);
            b.lines.push(BlockLine {
                offset: from as u64,
                range: from..b.data.len(),
                overlong: false,
            });
        }
        b
    }

    #[test]
    fn only_json_objects_become_rows() {
        assert_eq!(
            json_object_line(b"{\"a\":\"x\\\"y\"}\r", false),
            Some(&b"{\"a\":\"x\\\"y\"}"[..])
        );
        assert!(json_object_line(b" {\"a\":1}", false).is_some());
        assert!(json_object_line(b"{\"a\":1}", true).is_none());
        assert!(json_object_line(b"[1,2]", false).is_none());
        assert!(json_object_line(b"not json", false).is_none());
        assert!(json_object_line(b"{\"a\":", false).is_none());
        assert!(json_object_line(b"{\"a\":1} {}", false).is_none());
        assert!(json_object_line(b"{\"a\":\"\xff\"}", false).is_none());
    }

    #[test]
    fn rows_are_rowbinary_with_the_deadline_patched_in_place() {
        let long = format!("{{\"k\":\"{}\"}}", "x".repeat(200));
        let b = block(&[b"{}", b"oops", long.as_bytes()]);
        let (mut body, dead) = encode(&b, "id");
        assert_eq!(dead, [1]);
        assert_eq!(body.rows(), 2);
        body.set_deadline(0x0102_0304);
        let mut expected = vec![2, b'i', b'd', 2, b'{', b'}', 4, 3, 2, 1];
        expected.extend_from_slice(&[2, b'i', b'd']);
        // 208 bytes: LEB128 0xd0 0x01.
        assert_eq!(long.len(), 208);
        expected.extend_from_slice(&[0xd0, 0x01]);
        expected.extend_from_slice(long.as_bytes());
        expected.extend_from_slice(&[4, 3, 2, 1]);
        assert_eq!(body.bytes(), &expected[..]);
        let chunks = body.chunks();
        assert_eq!(chunks.concat(), expected);
    }
}
