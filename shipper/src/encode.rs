//! A batch's lines as the body of one INSERT: the good lines (JSON objects) in ClickHouse's
//! `RowBinary` format for the inbox's columns `(batch_id, raw_json, deadline)`, the rest as dead
//! letters.
//!
//! Why `RowBinary` and not `JSONEachRow` (the first versions): a line needs no escaping into a JSON
//! string here and no unescaping and parsing on the server; it is copied as it is, behind its
//! length. Profiled at 100 000-line batches, escaping and a full `serde_json::Map` per line
//! (validation) were half of the shipper's CPU (BENCHMARKS.md). Validation now builds nothing:
//! `correlate_lib::jsonscan` for lines without escapes, serde_json's `IgnoredAny` for the rest.
//!
//! The deadline is per attempt, the rest of the body is not: [`Body::set_deadline`] patches the
//! four bytes of every row in place, so a retry does not re-encode the batch.

use std::sync::Arc;

use bytes::Bytes;
use correlate_lib::jsonscan;
use serde::de::IgnoredAny;

use crate::follow::Block;

/// The body is sent as a stream of chunks of about this size, each its own compressed block:
/// the server decompresses and parses while the rest arrives, and no single block is huge.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// One batch's INSERT body. Shared, not copied, with the attempt that sends it (and the
/// compression of its chunks); patched in place between attempts, when nobody else holds it.
#[derive(Debug, Clone, Default)]
pub struct Body {
    data: Arc<Vec<u8>>,
    /// Where each row's `deadline` (UInt32, little-endian) is.
    deadline_at: Vec<usize>,
    /// Where each row's line starts in its file.
    offsets: Vec<u64>,
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

    /// The file offset of row `i`'s line.
    pub fn offset(&self, i: usize) -> Option<u64> {
        self.offsets.get(i).copied()
    }

    /// Rows `lo..hi` again, under `batch_id` (a part of a batch cut in two). The lines are read
    /// back from this body: a batch in flight holds its rows once, not its lines besides.
    pub fn sub(&self, lo: usize, hi: usize, batch_id: &str) -> Body {
        let mut data = Vec::new();
        let mut deadline_at = Vec::new();
        let mut offsets = Vec::new();
        let mut at = 0;
        for (i, &end) in self.deadline_at.iter().enumerate() {
            let row = self.data.get(at..end).unwrap_or_default();
            at = end + 4;
            if i < lo || i >= hi {
                continue;
            }
            let Some(line) = get_string(row)
                .and_then(|(_, rest)| get_string(rest))
                .map(|(l, _)| l)
            else {
                continue;
            };
            put_string(&mut data, batch_id.as_bytes());
            put_string(&mut data, line);
            deadline_at.push(data.len());
            data.extend_from_slice(&[0; 4]);
            offsets.push(self.offsets.get(i).copied().unwrap_or(0));
        }
        Body {
            data: Arc::new(data),
            deadline_at,
            offsets,
        }
    }

    pub fn set_deadline(&mut self, deadline: u32) {
        let bytes = deadline.to_le_bytes();
        // Copies only if an earlier attempt still holds the body (it has ended by now).
        let data = Arc::make_mut(&mut self.data);
        for &at in &self.deadline_at {
            if let Some(slot) = data.get_mut(at..at + 4) {
                slot.copy_from_slice(&bytes);
            }
        }
    }

    /// The body cut into chunks of about [`CHUNK_BYTES`] (at any byte: the server reads one
    /// stream), each sharing the body's buffer.
    pub fn chunks(&self) -> Vec<Bytes> {
        let all = Bytes::from_owner(SharedBody(self.data.clone()));
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

/// The body's buffer as the owner of [`Bytes`].
struct SharedBody(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The good lines of `block` as rows of `batch_id`, and the indexes of the dead letters.
pub fn encode(block: &Block, batch_id: &str) -> (Body, Vec<usize>) {
    let mut data = Vec::with_capacity(block.data.len() + block.len() * (batch_id.len() + 16));
    let mut deadline_at = Vec::with_capacity(block.len());
    let mut offsets = Vec::with_capacity(block.len());
    let mut dead = Vec::new();
    for i in 0..block.len() {
        let overlong = block.lines.get(i).is_some_and(|l| l.overlong);
        match json_object_line(block.line(i), overlong) {
            Some(text) => {
                put_string(&mut data, batch_id.as_bytes());
                put_string(&mut data, text);
                deadline_at.push(data.len());
                data.extend_from_slice(&[0; 4]);
                offsets.push(block.lines.get(i).map_or(0, |l| l.offset));
            }
            None => dead.push(i),
        }
    }
    (
        Body {
            data: Arc::new(data),
            deadline_at,
            offsets,
        },
        dead,
    )
}

/// The text of a good line (without a trailing `\r`); `None` for a dead letter: not UTF-8, not
/// a JSON object, or cut because it was overlong.
pub fn json_object_line(line: &[u8], overlong: bool) -> Option<&[u8]> {
    if overlong {
        return None;
    }
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    // serde_json skips string contents without decoding them: UTF-8 is checked apart (SIMD).
    let text = simdutf8::basic::from_utf8(line).ok()?;
    if line.trim_ascii_start().first() != Some(&b'{') {
        return None;
    }
    // A line without escapes (nearly all) is checked whole by the shared fast path; the rest,
    // and whatever it declines, by serde_json. Both check the whole syntax (and that nothing
    // follows the object) without building anything.
    if jsonscan::object_entries(text, |_, _| {}).is_some() {
        return Some(line);
    }
    serde_json::from_slice::<IgnoredAny>(line).ok()?;
    Some(line)
}

/// A RowBinary `String` at the start of `bytes`, and what follows it.
fn get_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let rest = bytes.get(i + 1..)?;
            let len = usize::try_from(len).ok()?;
            return Some((rest.get(..len)?, rest.get(len..)?));
        }
    }
    None
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
        assert_eq!((body.offset(0), body.offset(1)), (Some(0), Some(6)));
        let second = body.sub(1, 2, "x");
        let mut again = vec![1, b'x', 0xd0, 0x01];
        again.extend_from_slice(long.as_bytes());
        again.extend_from_slice(&[0; 4]);
        assert_eq!(second.bytes(), &again[..]);
        assert_eq!((second.rows(), second.offset(0)), (1, Some(6)));
    }
}
