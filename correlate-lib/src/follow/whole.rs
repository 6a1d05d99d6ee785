//! Finished log files read once, from the first byte to the last: what `ja4sensor detect
//! --replay` and `ja4sensor query` read. Unlike the follower above, which skips compressed
//! rotations (they are copies of lines it already shipped), these readers take them too:
//! logrotate's `compress` leaves yesterday's log as `reqin.log.2.gz`.
//!
//! - [`expand`] turns the paths and globs a person typed into files, each once, in log order
//!   (oldest modification first: rotated files before the live one).
//! - [`open`] gives a buffered reader of the file's text, decompressing a `.gz` file (one
//!   member or several, as `cat a.gz b.gz` makes) on the fly, with bounded memory.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::FollowError;

/// Read buffer of one file: large sequential reads, a few of them in flight for parallel readers.
pub const WHOLE_READ_BUFFER_BYTES: usize = 1024 * 1024;

/// How a file's bytes are stored, from its name and, for gzip, its magic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Plain,
    Gzip,
}

/// gzip's magic number (RFC 1952): a `.gz` rotation starts with it.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The files `patterns` name, each once, oldest first. A pattern with glob characters matches
/// any number of files (none is not an error); a plain path must exist. Directories are skipped.
pub fn expand<S: AsRef<str>>(patterns: &[S]) -> Result<Vec<PathBuf>, FollowError> {
    let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
    let mut add = |path: PathBuf| -> Result<(), FollowError> {
        let meta = std::fs::metadata(&path).map_err(|source| FollowError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_file() && !found.iter().any(|(_, p)| *p == path) {
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((mtime, path));
        }
        Ok(())
    };
    for pattern in patterns {
        let pattern = pattern.as_ref();
        if !pattern.contains(['*', '?', '[']) {
            add(PathBuf::from(pattern))?;
            continue;
        }
        let paths = glob::glob(pattern).map_err(|e| FollowError::Io {
            path: PathBuf::from(pattern),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        for path in paths.flatten() {
            add(path)?;
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// A file's encoding: gzip when it starts with gzip's magic number (whatever its name), else
/// plain text.
pub fn encoding(path: &Path) -> Result<Encoding, FollowError> {
    let mut magic = [0u8; 2];
    let mut f = File::open(path).map_err(|source| FollowError::Io {
        path: path.to_owned(),
        source,
    })?;
    let n = read_up_to(&mut f, &mut magic).map_err(|source| FollowError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(if n == 2 && magic == GZIP_MAGIC {
        Encoding::Gzip
    } else {
        Encoding::Plain
    })
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The file's text, decompressed when it is gzip. A corrupt or truncated `.gz` file reads as
/// far as it is intact and then returns the error (the caller counts it and moves on).
pub fn open(path: &Path) -> Result<Box<dyn BufRead + Send>, FollowError> {
    let io = |source| FollowError::Io {
        path: path.to_owned(),
        source,
    };
    let enc = encoding(path)?;
    let file = File::open(path).map_err(io)?;
    Ok(match enc {
        Encoding::Plain => Box::new(BufReader::with_capacity(WHOLE_READ_BUFFER_BYTES, file)),
        Encoding::Gzip => Box::new(BufReader::with_capacity(
            WHOLE_READ_BUFFER_BYTES,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
                WHOLE_READ_BUFFER_BYTES,
                file,
            )),
        )),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_rotations_read_as_text_and_plain_files_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("reqin.log");
        let rotated = dir.path().join("reqin.log.2.gz");
        std::fs::write(&plain, b"{\"a\":3}\n").unwrap();
        // Two members back to back, as `cat a.gz b.gz > c.gz` makes.
        let mut two = gz(b"{\"a\":1}\n");
        two.extend(gz(b"{\"a\":2}\n"));
        std::fs::write(&rotated, two).unwrap();
        let mut text = String::new();
        open(&rotated).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":2}\n");
        text.clear();
        open(&plain).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "{\"a\":3}\n");
        assert_eq!(encoding(&rotated).unwrap(), Encoding::Gzip);
    }

    #[test]
    fn a_truncated_gzip_file_reads_its_intact_part_then_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.gz");
        let body: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("{{\"i\":{i}}}\n").into_bytes())
            .collect();
        let full = gz(&body);
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        let mut out = Vec::new();
        let err = open(&path).unwrap().read_to_end(&mut out);
        assert!(
            err.is_err(),
            "a cut gzip stream is an error, not a silent end"
        );
        assert!(
            body.starts_with(&out),
            "what was read is a prefix of the text"
        );
    }

    #[test]
    fn globs_and_paths_expand_once_each_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("reqin.log.1");
        let new = dir.path().join("reqin.log");
        std::fs::write(&old, b"x\n").unwrap();
        let t = SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(t)
            .unwrap();
        std::fs::write(&new, b"y\n").unwrap();
        std::fs::create_dir(dir.path().join("reqin.log.d")).unwrap();
        let glob = format!("{}/reqin.log*", dir.path().display());
        let files = expand(&[glob.as_str(), new.to_str().unwrap()]).unwrap();
        assert_eq!(files, vec![old, new]);
        assert!(expand(&[dir.path().join("absent").to_str().unwrap()]).is_err());
        let none = format!("{}/nothing*", dir.path().display());
        assert!(expand(&[none.as_str()]).unwrap().is_empty());
    }
}
