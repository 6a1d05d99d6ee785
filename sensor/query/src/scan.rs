//! Reading the logs: every file once, in constant memory whatever its size, the prefilter run on
//! the raw bytes of each read buffer (SIMD substring search, `memchr::memmem`) so that only the
//! lines holding a wanted value are cut out and parsed; several files in parallel.
//!
//! - A file is read through [`correlate_lib::follow::whole::open`] (plain or gzip, 1 MiB
//!   reads). Each buffer is searched as a whole: no per-line work for the lines that do not
//!   contain the needle, which is why a query runs at the speed of `grep -F`.
//! - A line is at most [`MAX_LINE_BYTES`]; a longer one is skipped and counted (`overlong`),
//!   so memory stays one read buffer plus one line per file being read.
//! - A last line without its `\n` is not read (`partial`): the writer may still be writing it.
//! - Lines that are not a JSON object are skipped and counted by reason; a file that cannot be
//!   opened or stops decompressing is reported and the others are still read.
//! - With more than one thread, a plain file of [`SPLIT_FROM_BYTES`] or more is read in parts
//!   of [`PART_BYTES`], several at once (a line belongs to the part it starts in); a gzip file is one
//!   part. Parts of all files are read by up to [`MAX_THREADS`] threads.
//! - [`stream`] writes what each part produced in order (oldest file first, lines in their
//!   order in the file): each reader hands its output over a bounded channel, and a reader may
//!   be at most [`PARTS_AHEAD_PER_THREAD`] parts per thread ahead of the writer, so memory stays
//!   bounded whatever the answer's size. A single part (one small file) is read on the calling
//!   thread and written straight out.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use aho_corasick::AhoCorasick;
use correlate_lib::follow::whole::{self, Encoding};
use memchr::memmem::Finder;

use crate::filter::Role;
use crate::object::{LineError, Object};

/// Longest line read (the shipper dead-letters longer ones too): a read buffer is never larger,
/// so a line inside one buffer cannot exceed it.
pub const MAX_LINE_BYTES: usize = whole::WHOLE_READ_BUFFER_BYTES;
/// Files read at once. Reading is mostly memory bandwidth and decompression; more threads than
/// cores only add contention, and each reader holds a 1 MiB buffer (or two, for gzip).
pub const MAX_THREADS: usize = 4;
/// Output handed to the writer at a time.
pub const OUTPUT_CHUNK_BYTES: usize = 64 * 1024;
/// Parts of a plain file read by different threads. Small enough that the output of a part ahead
/// of the writer can wait in memory (at most the part itself, when every line matches), large
/// enough that opening and seeking cost nothing next to reading.
pub const PART_BYTES: u64 = 2 * 1024 * 1024;
/// A file is split only from this size on: a reader goes through a smaller one in a few
/// milliseconds, less than the threads and the output waiting for its turn would cost (time and
/// memory).
pub const SPLIT_FROM_BYTES: u64 = 8 * PART_BYTES;
/// Output chunks a part may have waiting: a whole part's (a gzip file, one part, waits beyond).
const OUTPUT_CHUNKS_AHEAD: usize = (PART_BYTES as usize) / OUTPUT_CHUNK_BYTES + 2;
/// Parts read but not yet written, per reader thread: bounds the output waiting in memory to
/// about threads × 2 × [`PART_BYTES`].
pub const PARTS_AHEAD_PER_THREAD: usize = 2;
/// `--since`: a file last written this long before the window starts is not opened (its lines
/// were written before its modification time, and a line's time is when its request started).
/// The margin absorbs clock steps.
pub const MTIME_SLACK_NS: i64 = 600 * 1_000_000_000;

/// One file to read and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub role: Role,
}

/// What one reader reads at a time: a whole file, or a part of a plain file.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    pub source: &'a Source,
    pub role: Role,
    /// Lines starting at byte offsets in `[start, end)`; `end` `None`: to the end of the file.
    range: Option<(u64, Option<u64>)>,
}

impl Unit<'_> {
    /// Reads the unit (see [`scan_file`]); the parts of a file count it once in `files`.
    pub fn scan(
        &self,
        pre: &Prefilter,
        on_line: &mut dyn FnMut(&[u8], &mut ScanStats) -> bool,
    ) -> ScanStats {
        match self.range {
            None => scan_file(&self.source.path, pre, on_line),
            Some((start, end)) => scan_part(&self.source.path, start, end, pre, on_line),
        }
    }
}

/// The units of `sources` for `threads` readers: plain files of [`SPLIT_FROM_BYTES`] or more in
/// parts of [`PART_BYTES`] when there is more than one reader.
pub fn units(sources: &[Source], threads: usize) -> Vec<Unit<'_>> {
    let mut out = Vec::with_capacity(sources.len());
    for source in sources {
        let whole = Unit {
            source,
            role: source.role,
            range: None,
        };
        let size = std::fs::metadata(&source.path).map_or(0, |m| m.len());
        let plain = matches!(whole::encoding(&source.path), Ok(Encoding::Plain));
        if threads <= 1 || !plain || size < SPLIT_FROM_BYTES {
            out.push(whole);
            continue;
        }
        let mut start = 0;
        while start < size {
            let end = start + PART_BYTES;
            // The last part reads to the end, lines appended since included.
            let end = (end < size).then_some(end);
            out.push(Unit {
                source,
                role: source.role,
                range: Some((start, end)),
            });
            start = end.unwrap_or(size);
        }
    }
    out
}

/// The log files (`logs`) and event files (`events`) that the paths and globs name, each once,
/// oldest first within each kind.
pub fn sources(logs: &[String], events: &[String]) -> Result<Vec<Source>, ScanError> {
    let mut out: Vec<Source> = Vec::new();
    for (patterns, role) in [(logs, Role::Log), (events, Role::Events)] {
        for path in whole::expand(patterns).map_err(ScanError::Files)? {
            if !out.iter().any(|s| s.path == path) {
                out.push(Source { path, role });
            }
        }
    }
    Ok(out)
}

/// Drops the files last modified before `since_ns` (less [`MTIME_SLACK_NS`]); returns how many.
pub fn drop_older_than(sources: &mut Vec<Source>, since_ns: i64) -> u64 {
    let before = sources.len();
    sources.retain(|s| {
        let Ok(mtime) = std::fs::metadata(&s.path).and_then(|m| m.modified()) else {
            return true; // let the reader report it
        };
        let mtime_ns = mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        mtime_ns >= since_ns.saturating_sub(MTIME_SLACK_NS)
    });
    (before - sources.len()) as u64
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{0}")]
    Files(correlate_lib::follow::FollowError),
    #[error("writing the output: {0}")]
    Output(io::Error),
}

/// Lines skipped, by reason.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SkipCounts {
    pub invalid_utf8: u64,
    pub truncated: u64,
    pub invalid_json: u64,
    pub not_object: u64,
    pub overlong: u64,
    pub partial: u64,
}

impl SkipCounts {
    pub fn total(&self) -> u64 {
        self.invalid_utf8
            + self.truncated
            + self.invalid_json
            + self.not_object
            + self.overlong
            + self.partial
    }

    fn merge(&mut self, o: &Self) {
        self.invalid_utf8 += o.invalid_utf8;
        self.truncated += o.truncated;
        self.invalid_json += o.invalid_json;
        self.not_object += o.not_object;
        self.overlong += o.overlong;
        self.partial += o.partial;
    }

    fn count(&mut self, e: LineError) {
        match e {
            LineError::InvalidUtf8 => self.invalid_utf8 += 1,
            LineError::Truncated => self.truncated += 1,
            LineError::InvalidJson => self.invalid_json += 1,
            LineError::NotAnObject => self.not_object += 1,
        }
    }
}

/// What reading some files did.
#[derive(Debug, Default, Clone)]
pub struct ScanStats {
    pub files: u64,
    pub gzip_files: u64,
    /// Files not opened because of `--since` (see [`MTIME_SLACK_NS`]).
    pub files_older_than_since: u64,
    /// Bytes of text read (after decompression).
    pub bytes: u64,
    /// Lines that reached the JSON parser (the prefilter passed over the others unread).
    pub parsed: u64,
    pub matched: u64,
    pub skipped: SkipCounts,
    /// `path: error` of each file that could not be read to its end.
    pub failed_files: Vec<String>,
}

impl ScanStats {
    pub fn merge(&mut self, o: &Self) {
        self.files += o.files;
        self.gzip_files += o.gzip_files;
        self.files_older_than_since += o.files_older_than_since;
        self.bytes += o.bytes;
        self.parsed += o.parsed;
        self.matched += o.matched;
        self.skipped.merge(&o.skipped);
        self.failed_files.extend(o.failed_files.iter().cloned());
    }

    /// The line a command prints on stderr when it is done.
    pub fn summary(&self, what: &str) -> String {
        let mut s = format!(
            "{} files ({} gzip), {:.1} MB read, {} lines parsed, {} {what}",
            self.files,
            self.gzip_files,
            self.bytes as f64 / 1e6,
            self.parsed,
            self.matched
        );
        if self.files_older_than_since > 0 {
            let _ = write!(
                s,
                "; {} files older than --since not opened",
                self.files_older_than_since
            );
        }
        let k = &self.skipped;
        let _ = write!(s, "; skipped {} lines", k.total());
        let kinds = [
            (k.invalid_json, "invalid JSON".to_owned()),
            (k.invalid_utf8, "invalid UTF-8".to_owned()),
            (k.truncated, "truncated".to_owned()),
            (k.not_object, "not an object".to_owned()),
            (k.overlong, format!("over {MAX_LINE_BYTES} bytes")),
            (k.partial, "partial last line".to_owned()),
        ];
        let named: Vec<String> = kinds
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        if !named.is_empty() {
            let _ = write!(s, " ({})", named.join(", "));
        }
        for f in &self.failed_files {
            let _ = write!(s, "; unreadable: {f}");
        }
        s
    }

    /// `line` parsed, or counted as skipped.
    pub fn parse<'a>(&mut self, line: &'a [u8]) -> Option<Object<'a>> {
        self.parsed += 1;
        match Object::parse(line) {
            Ok(o) => Some(o),
            Err(e) => {
                self.skipped.count(e);
                None
            }
        }
    }

    /// `line` validated whole and parsed keeping the entries named in `keys`, or counted as
    /// skipped.
    pub fn parse_keys<'a, K: AsRef<str>>(
        &mut self,
        line: &'a [u8],
        keys: &[K],
    ) -> Option<Object<'a>> {
        self.parsed += 1;
        match Object::parse_keys(line, keys) {
            Ok(o) => Some(o),
            Err(e) => {
                self.skipped.count(e);
                None
            }
        }
    }
}

/// The prefilter: the lines worth parsing are those holding every one of `all` (the search runs
/// over whole read buffers for the first, then on the line for the others), or, built with
/// [`Prefilter::any_of`], one of a set (aho-corasick).
pub struct Prefilter {
    search: Search,
    rest: Vec<Finder<'static>>,
}

enum Search {
    Every,
    One(Box<Finder<'static>>),
    Any(AhoCorasick),
}

impl Prefilter {
    /// Lines containing every needle (none: every line).
    pub fn all_of(needles: Vec<Vec<u8>>) -> Self {
        let mut it = needles.into_iter();
        let search = match it.next() {
            Some(first) => Search::One(Box::new(Finder::new(&first).into_owned())),
            None => Search::Every,
        };
        Self {
            search,
            rest: it.map(|n| Finder::new(&n).into_owned()).collect(),
        }
    }

    /// Lines containing at least one of `needles` (and every one of `and_all`).
    pub fn any_of(
        needles: &[Vec<u8>],
        and_all: Vec<Vec<u8>>,
    ) -> Result<Self, aho_corasick::BuildError> {
        let search = match needles {
            [] => Search::Every,
            [one] => Search::One(Box::new(Finder::new(one).into_owned())),
            many => Search::Any(AhoCorasick::new(many)?),
        };
        Ok(Self {
            search,
            rest: and_all
                .iter()
                .map(|n| Finder::new(n).into_owned())
                .collect(),
        })
    }

    fn find(&self, hay: &[u8]) -> Option<usize> {
        match &self.search {
            Search::Every => Some(0),
            Search::One(f) => f.find(hay),
            Search::Any(ac) => ac.find(hay).map(|m| m.start()),
        }
    }

    fn rest_in(&self, line: &[u8]) -> bool {
        self.rest.iter().all(|f| f.find(line).is_some())
    }

    /// Whether a whole line passes (used for lines that straddle two read buffers).
    fn line_passes(&self, line: &[u8]) -> bool {
        self.find(line).is_some() && self.rest_in(line)
    }

    /// Calls `on_line` with each line of `region` (complete lines, each ending with `\n`) that
    /// passes; stops when it returns false.
    fn scan_region(&self, region: &[u8], on_line: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        if let Search::Every = self.search {
            let mut start = 0;
            for end in memchr::memchr_iter(b'\n', region) {
                let line = &region[start..end];
                start = end + 1;
                if !line.is_empty() && self.rest_in(line) && !on_line(line) {
                    return false;
                }
            }
            return true;
        }
        let mut pos = 0;
        while pos < region.len() {
            let Some(h) = self.find(&region[pos..]) else {
                break;
            };
            let hit = pos + h;
            let start = memchr::memrchr(b'\n', &region[pos..hit]).map_or(pos, |i| pos + i + 1);
            let end = memchr::memchr(b'\n', &region[hit..]).map_or(region.len(), |i| hit + i);
            let line = &region[start..end];
            if self.rest_in(line) && !on_line(line) {
                return false;
            }
            pos = end + 1;
        }
        true
    }
}

/// Reads `reader` to its end, calling `on_line` with each complete line (without `\n`) that
/// passes the prefilter, until it returns false. Counts bytes, overlong and partial lines.
pub fn scan_reader(
    reader: &mut dyn BufRead,
    pre: &Prefilter,
    stats: &mut ScanStats,
    on_line: &mut dyn FnMut(&[u8], &mut ScanStats) -> bool,
) -> io::Result<()> {
    let mut carry: Vec<u8> = Vec::new();
    // True while the rest of an overlong line is being passed over.
    let mut overlong = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        stats.bytes += n as u64;
        let mut start = 0;
        if overlong || !carry.is_empty() {
            let Some(i) = memchr::memchr(b'\n', buf) else {
                if !overlong {
                    if carry.len() + n > MAX_LINE_BYTES {
                        overlong = true;
                        carry = Vec::new();
                    } else {
                        carry.extend_from_slice(buf);
                    }
                }
                reader.consume(n);
                continue;
            };
            if overlong {
                stats.skipped.overlong += 1;
                overlong = false;
            } else {
                carry.extend_from_slice(&buf[..i]);
                if carry.len() > MAX_LINE_BYTES {
                    stats.skipped.overlong += 1;
                } else if pre.line_passes(&carry) && !on_line(&carry, stats) {
                    return Ok(());
                }
                carry.clear();
            }
            start = i + 1;
        }
        let region = &buf[start..];
        let tail = match memchr::memrchr(b'\n', region) {
            Some(j) => {
                let go_on = pre.scan_region(&region[..=j], &mut |line| on_line(line, stats));
                if !go_on {
                    return Ok(());
                }
                &region[j + 1..]
            }
            None => region,
        };
        if tail.len() > MAX_LINE_BYTES {
            overlong = true;
        } else {
            carry.extend_from_slice(tail);
        }
        reader.consume(n);
    }
    if overlong {
        stats.skipped.overlong += 1;
    } else if !carry.is_empty() {
        stats.skipped.partial += 1;
    }
    Ok(())
}

/// Reads one file (plain or gzip); a file that cannot be opened or read to its end is recorded
/// in the stats, what was read of it counts.
pub fn scan_file(
    path: &Path,
    pre: &Prefilter,
    on_line: &mut dyn FnMut(&[u8], &mut ScanStats) -> bool,
) -> ScanStats {
    let mut stats = ScanStats {
        files: 1,
        ..ScanStats::default()
    };
    if let Ok(Encoding::Gzip) = whole::encoding(path) {
        stats.gzip_files = 1;
    }
    let mut reader = match whole::open(path) {
        Ok(r) => r,
        Err(e) => {
            stats.failed_files.push(e.to_string());
            return stats;
        }
    };
    if let Err(e) = scan_reader(&mut reader, pre, &mut stats, on_line) {
        stats.failed_files.push(format!(
            "{}: {e} (after {} bytes)",
            path.display(),
            stats.bytes
        ));
    }
    stats
}

/// Reads the lines of `path` that start in `[start, end)`: the line running over `start` is the
/// previous part's, the one running over `end` is read to its end.
fn scan_part(
    path: &Path,
    start: u64,
    end: Option<u64>,
    pre: &Prefilter,
    on_line: &mut dyn FnMut(&[u8], &mut ScanStats) -> bool,
) -> ScanStats {
    let mut stats = ScanStats {
        files: u64::from(start == 0),
        ..ScanStats::default()
    };
    let fail = |stats: &mut ScanStats, e: io::Error| {
        stats
            .failed_files
            .push(format!("{}: {e} (part from byte {start})", path.display()));
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => {
            fail(&mut stats, e);
            return stats;
        }
    };
    let mut reader = BufReader::with_capacity(whole::WHOLE_READ_BUFFER_BYTES, file);
    // Position on the first line starting at `start` or later: read from the byte before it
    // through the first newline (which is that byte when a line starts exactly at `start`).
    let mut at = start;
    if start > 0 {
        if let Err(e) = reader.seek(SeekFrom::Start(start - 1)) {
            fail(&mut stats, e);
            return stats;
        }
        at = start - 1;
        loop {
            let buf = match reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    fail(&mut stats, e);
                    return stats;
                }
            };
            if buf.is_empty() {
                return stats;
            }
            match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    reader.consume(i + 1);
                    at += i as u64 + 1;
                    break;
                }
                None => {
                    let n = buf.len();
                    reader.consume(n);
                    at += n as u64;
                }
            }
        }
    }
    let mut limited = LineLimited {
        inner: reader,
        left: end.map_or(u64::MAX, |e| e.saturating_sub(at)),
        at_line_start: true,
        tail: false,
        done: false,
    };
    if let Err(e) = scan_reader(&mut limited, pre, &mut stats, on_line) {
        fail(&mut stats, e);
    }
    stats
}

/// A reader that ends after the line holding its `left`-th byte: the lines starting within
/// `left` bytes, each whole.
struct LineLimited<R> {
    inner: R,
    left: u64,
    /// The last byte handed out was a `\n` (or nothing was handed out yet).
    at_line_start: bool,
    /// `left` is used up in the middle of a line: hand out up to its `\n`.
    tail: bool,
    done: bool,
}

impl<R: BufRead> io::Read for LineLimited<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let buf = self.fill_buf()?;
        let n = buf.len().min(out.len());
        out[..n].copy_from_slice(&buf[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: BufRead> BufRead for LineLimited<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.done || (self.left == 0 && !self.tail && self.at_line_start) {
            self.done = true;
            return Ok(&[]);
        }
        if self.left == 0 {
            self.tail = true;
        }
        let tail = self.tail;
        let left = self.left;
        let buf = self.inner.fill_buf()?;
        if tail {
            return Ok(match memchr::memchr(b'\n', buf) {
                Some(i) => &buf[..=i],
                None => buf,
            });
        }
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        Ok(&buf[..n])
    }

    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        // The bytes being consumed are the front of what fill_buf returned.
        let last_is_newline = self
            .inner
            .fill_buf()
            .ok()
            .and_then(|b| b.get(n - 1).copied())
            == Some(b'\n');
        self.inner.consume(n);
        self.at_line_start = last_is_newline;
        if self.tail {
            if last_is_newline {
                self.done = true;
            }
        } else {
            self.left = self.left.saturating_sub(n as u64);
        }
    }
}

/// Reader threads for `files` files: `requested` (0: one per core), at most [`MAX_THREADS`].
pub fn thread_count(requested: usize, files: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want = if requested == 0 {
        cores.min(MAX_THREADS)
    } else {
        requested
    };
    want.min(files).max(1)
}

/// Runs `work` on every unit of `sources` (see [`units`]), `threads` at a time; results in
/// unit order.
pub fn map_files<T: Send>(
    sources: &[Source],
    threads: usize,
    work: impl Fn(&Unit) -> T + Sync,
) -> Vec<T> {
    let threads = thread_count(threads, usize::MAX);
    let units = units(sources, threads);
    let next = AtomicUsize::new(0);
    let mut slots: Vec<Option<T>> = std::iter::repeat_with(|| None).take(units.len()).collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.min(units.len()).max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(unit) = units.get(i) else { break };
                        done.push((i, work(unit)));
                    }
                    done
                })
            })
            .collect();
        for h in handles {
            // A panicking reader is a bug; its units are then missing from the answer and
            // the panic message is already on stderr.
            if let Ok(done) = h.join() {
                for (i, r) in done {
                    if let Some(slot) = slots.get_mut(i) {
                        *slot = Some(r);
                    }
                }
            }
        }
    });
    slots.into_iter().flatten().collect()
}

enum Chunk {
    Bytes(Vec<u8>),
    Done(Box<ScanStats>),
}

/// Runs `work` on every unit of `sources`, `threads` at a time, and writes what each produced
/// into `out` in unit order. `work` gets an `emit` function taking output bytes; it returns false
/// once the output is closed (the reader should then stop).
pub fn stream(
    sources: &[Source],
    threads: usize,
    work: impl Fn(&Unit, &mut dyn FnMut(&[u8]) -> bool) -> ScanStats + Sync,
    out: &mut dyn Write,
) -> Result<ScanStats, ScanError> {
    let threads = thread_count(threads, usize::MAX);
    let units = units(sources, threads);
    if let [unit] = units.as_slice() {
        // One file read whole: on this thread, straight into `out` (no reader thread, no
        // parts, no hand-over: what a query of one small file is made of).
        let mut result = Ok(());
        let stats = work(unit, &mut |bytes: &[u8]| match out.write_all(bytes) {
            Ok(()) => true,
            Err(e) => {
                result = Err(e);
                false
            }
        });
        return finish(result.and_then(|()| out.flush()), stats);
    }
    let channels: Vec<_> = units
        .iter()
        .map(|_| crossbeam_channel::bounded::<Chunk>(OUTPUT_CHUNKS_AHEAD))
        .collect();
    let (senders, mut receivers): (Vec<_>, Vec<_>) = channels.into_iter().unzip();
    // One token per unit taken and not yet written.
    let (ahead_tx, ahead_rx) = crossbeam_channel::bounded::<()>(threads * PARTS_AHEAD_PER_THREAD);
    let next = AtomicUsize::new(0);
    let mut total = ScanStats::default();
    let mut result = Ok(());
    std::thread::scope(|s| {
        for _ in 0..threads.min(units.len()).max(1) {
            let ahead_tx = ahead_tx.clone();
            let (units, senders, next) = (&units, &senders, &next);
            let work = &work;
            s.spawn(move || loop {
                if ahead_tx.send(()).is_err() {
                    break; // the writer is gone
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (Some(unit), Some(tx)) = (units.get(i), senders.get(i)) else {
                    break;
                };
                let mut pending: Vec<u8> = Vec::new();
                let mut open = true;
                let mut emit = |bytes: &[u8]| {
                    pending.extend_from_slice(bytes);
                    if pending.len() >= OUTPUT_CHUNK_BYTES {
                        let full =
                            std::mem::replace(&mut pending, Vec::with_capacity(OUTPUT_CHUNK_BYTES));
                        open = tx.send(Chunk::Bytes(full)).is_ok();
                    }
                    open
                };
                let stats = work(unit, &mut emit);
                if !pending.is_empty() {
                    let _ = tx.send(Chunk::Bytes(pending));
                }
                let _ = tx.send(Chunk::Done(Box::new(stats)));
            });
        }
        drop(ahead_tx);
        'units: for rx in receivers.iter() {
            loop {
                match rx.recv() {
                    Ok(Chunk::Bytes(b)) => {
                        if let Err(e) = out.write_all(&b) {
                            result = Err(e);
                            break 'units;
                        }
                    }
                    Ok(Chunk::Done(stats)) => {
                        total.merge(&stats);
                        break;
                    }
                    // A reader thread died (a bug): its unit's output ends here.
                    Err(_) => break,
                }
            }
            // The unit is written: a reader may take one more.
            let _ = ahead_rx.recv();
        }
        // Closing the channels stops readers still working (after an output error).
        receivers.clear();
        drop(ahead_rx);
    });
    finish(result.and_then(|()| out.flush()), total)
}

/// The answer of [`stream`] once the output is written (and flushed) or failed.
fn finish(written: io::Result<()>, stats: ScanStats) -> Result<ScanStats, ScanError> {
    match written {
        Ok(()) => Ok(stats),
        // `| head` closed the pipe: the reader asked for no more, not an error.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(stats),
        Err(e) => Err(ScanError::Output(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A reader that hands out `chunk` bytes per fill_buf, to put line ends anywhere.
    struct Chunky<'a> {
        data: &'a [u8],
        pos: usize,
        chunk: usize,
    }

    impl io::Read for Chunky<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let b = self.fill_buf()?;
            let n = b.len().min(buf.len());
            buf[..n].copy_from_slice(&b[..n]);
            self.consume(n);
            Ok(n)
        }
    }

    impl BufRead for Chunky<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            let end = (self.pos + self.chunk).min(self.data.len());
            Ok(&self.data[self.pos..end])
        }
        fn consume(&mut self, n: usize) {
            self.pos += n;
        }
    }

    fn lines_found(data: &[u8], chunk: usize, needles: &[&str]) -> (Vec<String>, ScanStats) {
        let pre = Prefilter::all_of(needles.iter().map(|n| n.as_bytes().to_vec()).collect());
        let mut stats = ScanStats::default();
        let mut found = Vec::new();
        let mut r = Chunky {
            data,
            pos: 0,
            chunk,
        };
        scan_reader(&mut r, &pre, &mut stats, &mut |l, _| {
            found.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        (found, stats)
    }

    #[test]
    fn lines_are_found_whatever_the_read_boundaries() {
        let data =
            b"{\"a\":\"x\"}\n{\"b\":\"needle\"}\n\n{\"c\":\"needle\",\"d\":\"y\"}\n{\"e\":1}\n";
        for chunk in 1..data.len() + 2 {
            let (found, stats) = lines_found(data, chunk, &["needle"]);
            assert_eq!(
                found,
                vec![r#"{"b":"needle"}"#, r#"{"c":"needle","d":"y"}"#],
                "chunk {chunk}"
            );
            assert_eq!(stats.skipped.total(), 0);
            let (found, _) = lines_found(data, chunk, &["needle", "\"y\""]);
            assert_eq!(found, vec![r#"{"c":"needle","d":"y"}"#]);
            let (found, _) = lines_found(data, chunk, &[]);
            assert_eq!(found.len(), 4, "every non-empty line, chunk {chunk}");
        }
    }

    #[test]
    fn a_partial_last_line_and_an_overlong_line_are_counted_not_read() {
        let mut data = b"{\"a\":\"n\"}\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', MAX_LINE_BYTES + 10));
        data.extend(b"n\n{\"b\":\"n\"}\n{\"c\":\"n\"");
        for chunk in [7, 4096, MAX_LINE_BYTES] {
            let (found, stats) = lines_found(&data, chunk, &["\"n\""]);
            assert_eq!(found, vec![r#"{"a":"n"}"#, r#"{"b":"n"}"#], "chunk {chunk}");
            assert_eq!(stats.skipped.overlong, 1);
            assert_eq!(stats.skipped.partial, 1);
            assert_eq!(stats.bytes, data.len() as u64);
        }
    }

    #[test]
    fn any_of_finds_lines_holding_one_of_a_set() {
        let pre = Prefilter::any_of(&[b"\"r1\"".to_vec(), b"\"r3\"".to_vec()], vec![]).unwrap();
        let data = b"{\"c\":\"r1\"}\n{\"c\":\"r2\"}\n{\"c\":\"r3\"}\n";
        let mut stats = ScanStats::default();
        let mut n = 0;
        scan_reader(&mut &data[..], &pre, &mut stats, &mut |_, _| {
            n += 1;
            true
        })
        .unwrap();
        assert_eq!(n, 2);
    }

    #[test]
    fn streamed_output_keeps_file_order_with_parallel_readers() {
        let dir = tempfile::tempdir().unwrap();
        let mut sources = Vec::new();
        for i in 0..9 {
            let p = dir.path().join(format!("f{i}"));
            let body: String = (0..5000)
                .map(|n| format!("{{\"f\":{i},\"n\":{n}}}\n"))
                .collect();
            std::fs::write(&p, body).unwrap();
            sources.push(Source {
                path: p,
                role: Role::Log,
            });
        }
        let pre = Prefilter::all_of(vec![]);
        let mut out = Vec::new();
        let stats = stream(
            &sources,
            4,
            |src, emit| src.scan(&pre, &mut |line, _| emit(line) && emit(b"\n")),
            &mut out,
        )
        .unwrap();
        let want: String = (0..9)
            .flat_map(|i| (0..5000).map(move |n| format!("{{\"f\":{i},\"n\":{n}}}\n")))
            .collect();
        assert_eq!(String::from_utf8(out).unwrap(), want);
        assert_eq!(stats.files, 9);
    }

    /// Every line of `sources` through `stream` with `threads` readers: (output, stats).
    fn read_all(sources: &[Source], threads: usize, needle: &[u8]) -> (Vec<u8>, ScanStats) {
        let pre = Prefilter::all_of(vec![needle.to_vec()]);
        let mut out = Vec::new();
        let stats = stream(
            sources,
            threads,
            |src, emit| {
                src.scan(&pre, &mut |line, st| {
                    st.matched += 1;
                    emit(line) && emit(b"\n")
                })
            },
            &mut out,
        )
        .unwrap();
        (out, stats)
    }

    #[test]
    fn parts_of_a_large_file_read_by_several_threads_give_the_whole_files_answer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.log");
        let mut body = Vec::new();
        let mut x: u64 = 7;
        let mut n = 0;
        while body.len() < SPLIT_FROM_BYTES as usize + 12_345 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let pad = (x % 3000) as usize;
            body.extend(
                format!("{{\"n\":{n},\"k\":\"v\",\"p\":\"{}\"}}\n", "x".repeat(pad)).into_bytes(),
            );
            n += 1;
            if n == 700 {
                // An overlong line across a part boundary.
                body.extend(std::iter::repeat_n(b'y', MAX_LINE_BYTES + 5));
                body.extend(b"\"k\":\"v\"\n");
            }
        }
        // Lines ending exactly at a part boundary, and one starting there.
        let at = 2 * PART_BYTES as usize;
        let nl = memchr::memrchr(b'\n', &body[..at]).unwrap();
        body.splice(
            nl + 1..nl + 1,
            std::iter::repeat_n(b'z', at - nl - 2).chain([b'\n']),
        );
        body.extend(b"{\"k\":\"v\",\"cut\":");
        std::fs::write(&path, &body).unwrap();
        let sources = vec![Source {
            path,
            role: Role::Log,
        }];
        assert!(units(&sources, 3).len() >= 4);
        let (one, s1) = read_all(&sources, 1, b"\"v\"");
        for threads in [2, 3, 4] {
            let (many, sn) = read_all(&sources, threads, b"\"v\"");
            assert!(one == many, "{threads} threads: output differs");
            assert_eq!(sn.matched, s1.matched);
            assert_eq!(sn.bytes, body.len() as u64);
            assert_eq!(sn.files, 1);
            assert_eq!(sn.skipped, s1.skipped);
        }
        assert_eq!(s1.skipped.overlong, 1);
        assert_eq!(s1.skipped.partial, 1);
        let (every, _) = read_all(&sources, 3, b"");
        let (every1, _) = read_all(&sources, 1, b"");
        assert!(every == every1);
    }
}
