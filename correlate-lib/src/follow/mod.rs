//! The log follower every reader of mod_reqin_log's disk log shares (`ja4sensor ship`,
//! `ja4sensor detect`): finding the log files and reading complete lines from them, and the
//! [`checkpoint`] of how far a reader got. Nothing here decides what is done with a line; the
//! reader does, with the offsets of its checkpoint. [`whole`] reads finished files once, from
//! start to end, compressed rotations included (`detect --replay`, `query`).
//!
//! - The configured glob is expanded on every scan, so logrotate's renamed `reqin.log.1`,
//!   rotatelogs' `reqin.log.20261129` and a re-created `reqin.log` are all seen.
//! - A file is known by the fingerprint of its first line (see `checkpoint.rs`). Two files with
//!   one fingerprint are the original and the copy of a `copytruncate` in progress: the larger
//!   one holds everything the smaller one has.
//! - Only lines ending in `\n` are returned: the module may be in the middle of writing the last.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use xxhash_rust::xxh3::xxh3_64;

pub mod checkpoint;
pub mod whole;

/// Longest line shipped. The module bounds its lines far below this (headers are truncated to
/// `JsonSockLogMaxHeaderValueLen`); a longer one is not a line of ours and goes to the dead letters.
pub const MAX_LINE_BYTES: usize = 1024 * 1024;
/// Compressed rotations (logrotate's `compress`) are not text: never read them.
pub const COMPRESSED_SUFFIXES: [&str; 4] = [".gz", ".bz2", ".xz", ".zst"];
/// Read buffer; a typical line is ~1 KiB.
const READ_BUFFER_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("log file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("log file {path} was replaced while being opened (expected inode {expected}, found {found})")]
    Replaced {
        path: PathBuf,
        expected: u64,
        found: u64,
    },
}

/// One file matched by the glob, with a complete first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime: SystemTime,
    pub fingerprint: String,
}

/// Files matching `pattern` that have at least one complete line, one per fingerprint, oldest
/// first. Unreadable matches are logged and skipped: one bad file must not stop the others.
pub fn scan(pattern: &str) -> Vec<LogFile> {
    let paths = match glob::glob(pattern) {
        Ok(p) => p,
        Err(e) => {
            log::error!("input path {pattern:?}: {e}");
            return Vec::new();
        }
    };
    let mut files: Vec<LogFile> = Vec::new();
    for entry in paths {
        let path = match entry {
            Ok(p) => p,
            Err(e) => {
                log::warn!("input path {pattern:?}: {e}");
                continue;
            }
        };
        let name = path.to_string_lossy();
        if COMPRESSED_SUFFIXES.iter().any(|s| name.ends_with(s)) {
            continue;
        }
        match identify(&path) {
            Ok(Some(f)) => match files.iter_mut().find(|o| o.fingerprint == f.fingerprint) {
                Some(other) if other.size >= f.size => {}
                Some(other) => *other = f,
                None => files.push(f),
            },
            Ok(None) => {}
            // Rotated away between the glob and the open: the next scan sees it under its new name.
            Err(FollowError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("{e}"),
        }
    }
    files.sort_by(|a, b| a.mtime.cmp(&b.mtime).then_with(|| a.path.cmp(&b.path)));
    files
}

/// The file's identity, or `None` when it is not a regular file or has no complete first line.
pub fn identify(path: &Path) -> Result<Option<LogFile>, FollowError> {
    let io = |source| FollowError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // Identity from the open descriptor, not the path: a rename between stat and open is harmless.
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Ok(None);
    }
    let mut first = Vec::new();
    let mut reader = BufReader::new(file).take(MAX_LINE_BYTES as u64);
    reader.read_until(b'\n', &mut first).map_err(io)?;
    let complete = first.ends_with(b"\n") || first.len() >= MAX_LINE_BYTES;
    if !complete {
        return Ok(None);
    }
    Ok(Some(LogFile {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: meta.modified().map_err(io)?,
        fingerprint: fingerprint(&first),
    }))
}

pub fn fingerprint(first_line: &[u8]) -> String {
    format!("{:016x}{:x}", xxh3_64(first_line), first_line.len())
}

/// One line read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// The line without its `\n` (cut at [`MAX_LINE_BYTES`] when `overlong`).
    pub bytes: Vec<u8>,
    pub overlong: bool,
}

/// How much one read may return: at most `max_lines` lines and, past the first line, at most
/// `max_bytes` bytes of them; never past `end` when given (a replay reads exactly the range it
/// recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    pub max_lines: usize,
    pub max_bytes: usize,
    pub end: Option<u64>,
}

impl ReadLimits {
    pub fn lines(max_lines: usize) -> Self {
        Self {
            max_lines,
            max_bytes: usize::MAX,
            end: None,
        }
    }
}

/// Where one line of a [`Block`] lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLine {
    /// Offset of its first byte in the file.
    pub offset: u64,
    /// Its bytes in [`Block::data`], without the `\n` (cut at [`MAX_LINE_BYTES`] when `overlong`).
    pub range: std::ops::Range<usize>,
    pub overlong: bool,
}

/// Complete lines read from one file in one buffer: a batch of a hundred thousand lines is one
/// allocation, not a hundred thousand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Block {
    pub data: Vec<u8>,
    pub lines: Vec<BlockLine>,
    /// The offset after the last line.
    pub end: u64,
}

impl Block {
    pub fn line(&self, i: usize) -> &[u8] {
        self.lines
            .get(i)
            .and_then(|l| self.data.get(l.range.clone()))
            .unwrap_or_default()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// Complete lines of `file` from `start`: at most `max_lines`, and never past `end` when given.
/// Returns the lines and the offset after the last.
pub fn read_lines(
    file: &LogFile,
    start: u64,
    max_lines: usize,
    end: Option<u64>,
) -> Result<(Vec<Line>, u64), FollowError> {
    let block = read_block(
        file,
        start,
        ReadLimits {
            end,
            ..ReadLimits::lines(max_lines)
        },
    )?;
    let lines = block
        .lines
        .iter()
        .map(|l| Line {
            offset: l.offset,
            bytes: block.data.get(l.range.clone()).unwrap_or_default().to_vec(),
            overlong: l.overlong,
        })
        .collect();
    Ok((lines, block.end))
}

/// Complete lines of `file` from `start` within `limits`, in one [`Block`].
pub fn read_block(file: &LogFile, start: u64, limits: ReadLimits) -> Result<Block, FollowError> {
    let io = |source| FollowError::Io {
        path: file.path.clone(),
        source,
    };
    let mut f = File::open(&file.path).map_err(io)?;
    let ino = f.metadata().map_err(io)?.ino();
    if ino != file.ino {
        return Err(FollowError::Replaced {
            path: file.path.clone(),
            expected: file.ino,
            found: ino,
        });
    }
    f.seek(SeekFrom::Start(start)).map_err(io)?;
    let limit = limits.end.map_or(u64::MAX, |e| e.saturating_sub(start));
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, f.take(limit));
    let mut block = Block {
        end: start,
        ..Block::default()
    };
    // One allocation for what there is to read (the file's size when scanned), not a doubling
    // series of copies.
    let expected = file.size.saturating_sub(start).min(limit);
    block.data.reserve(
        usize::try_from(expected)
            .unwrap_or(0)
            .min(limits.max_bytes.saturating_add(READ_BUFFER_BYTES)),
    );
    while block.lines.len() < limits.max_lines
        && (block.lines.is_empty() || block.data.len() < limits.max_bytes)
    {
        let from = block.data.len();
        let n = (&mut reader)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut block.data)
            .map_err(io)?;
        if n == 0 {
            break;
        }
        if block.data.ends_with(b"\n") {
            block.data.pop();
            block.lines.push(BlockLine {
                offset: block.end,
                range: from..block.data.len(),
                overlong: false,
            });
            block.end += n as u64;
            continue;
        }
        if n <= MAX_LINE_BYTES {
            // The last line is still being written: leave it for a later read.
            block.data.truncate(from);
            break;
        }
        // Overlong: skip to its end; if that end is not written yet, retry later from here.
        let mut skipped = n as u64;
        let mut found_end = false;
        let mut scratch = Vec::new();
        loop {
            scratch.clear();
            let m = (&mut reader)
                .take(READ_BUFFER_BYTES as u64)
                .read_until(b'\n', &mut scratch)
                .map_err(io)?;
            if m == 0 {
                break;
            }
            skipped += m as u64;
            if scratch.ends_with(b"\n") {
                found_end = true;
                break;
            }
        }
        if !found_end {
            block.data.truncate(from);
            break;
        }
        block.data.truncate(from + MAX_LINE_BYTES);
        block.lines.push(BlockLine {
            offset: block.end,
            range: from..block.data.len(),
            overlong: true,
        });
        block.end += skipped;
    }
    Ok(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn partial_last_line_is_held_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        std::fs::write(&path, b"{\"a\":1}\n{\"a\":2}\n{\"a\":").unwrap();
        let f = identify(&path).unwrap().unwrap();
        let (lines, end) = read_lines(&f, 0, 100, None).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(end, 16);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"3}\n").unwrap();
        let (lines, end2) = read_lines(&f, end, 100, None).unwrap();
        assert_eq!(lines[0].bytes, b"{\"a\":3}");
        assert_eq!(end2, 24);
    }

    #[test]
    fn file_without_a_complete_line_is_not_identified() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        std::fs::write(&path, b"{\"a\":").unwrap();
        assert_eq!(identify(&path).unwrap(), None);
    }

    #[test]
    fn copy_and_original_share_a_fingerprint_and_the_larger_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("reqin.log"), b"x\ny\nz\n").unwrap();
        std::fs::write(dir.path().join("reqin.log.1"), b"x\ny\n").unwrap();
        std::fs::write(dir.path().join("reqin.log.2.gz"), b"x\n").unwrap();
        let files = scan(&format!("{}/reqin.log*", dir.path().display()));
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].size, 6);
    }

    #[test]
    fn overlong_line_is_cut_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        let mut data = b"{}\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        data.extend(b"\n{}\n");
        std::fs::write(&path, &data).unwrap();
        let f = identify(&path).unwrap().unwrap();
        let (lines, end) = read_lines(&f, 0, 100, None).unwrap();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].overlong);
        assert_eq!(lines[1].bytes.len(), MAX_LINE_BYTES);
        assert_eq!(end, data.len() as u64);
    }

    #[test]
    fn block_stops_at_the_byte_cap_but_always_holds_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reqin.log");
        std::fs::write(&path, b"aaaa\nbbbb\ncccc\ndd").unwrap();
        let f = identify(&path).unwrap().unwrap();
        let limits = |max_bytes| ReadLimits {
            max_lines: 100,
            max_bytes,
            end: None,
        };
        let one = read_block(&f, 0, limits(1)).unwrap();
        assert_eq!((one.len(), one.end), (1, 5));
        assert_eq!(one.line(0), b"aaaa");
        let two = read_block(&f, 0, limits(5)).unwrap();
        assert_eq!((two.len(), two.end), (2, 10));
        assert_eq!(two.line(1), b"bbbb");
        let all = read_block(&f, 5, limits(usize::MAX)).unwrap();
        assert_eq!((all.len(), all.end, all.data.len()), (2, 15, 8));
        let bounded = read_block(
            &f,
            0,
            ReadLimits {
                end: Some(10),
                ..limits(usize::MAX)
            },
        )
        .unwrap();
        assert_eq!(bounded.end, 10);
    }
}
