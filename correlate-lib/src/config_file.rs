//! Reading a tool's config file (the detector's `detect:` and the shipper's `ship:` sections of
//! the sensor's YAML): a size limit checked before the file is read, then the tool's own parser.
//! The errors of that part are the same for every tool; each adds its own for the values.

use std::path::{Path, PathBuf};

/// A config file is a few KiB; anything this large is not one.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why a config file could not be read or parsed; `P` is the parser's error.
#[derive(Debug, thiserror::Error)]
pub enum FileError<P> {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is {len} bytes, more than the {max} a config file can be")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("config {path}: {source}")]
    Parse { path: PathBuf, source: P },
}

/// The file at `path` parsed by `parse`, refused unread when it is larger than
/// [`MAX_CONFIG_BYTES`].
pub fn load<T, P>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, P>,
) -> Result<T, FileError<P>> {
    let read = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let len = std::fs::metadata(path).map_err(read)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            len,
            max: MAX_CONFIG_BYTES,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    parse(&text).map_err(|source| FileError::Parse {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn parse_number(text: &str) -> Result<u64, std::num::ParseIntError> {
        text.trim().parse()
    }

    #[test]
    fn a_file_is_read_then_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        std::fs::write(&path, "42\n").unwrap();
        assert_eq!(load(&path, parse_number).unwrap(), 42);
    }

    #[test]
    fn a_missing_oversized_or_unparsable_file_says_which_and_where() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yml");
        let e = load(&path, parse_number).unwrap_err();
        assert!(matches!(e, FileError::Read { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read config {}: ", path.display())),
            "{e}"
        );

        std::fs::write(&path, "x").unwrap();
        let e = load(&path, parse_number).unwrap_err();
        assert!(matches!(e, FileError::Parse { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!("config {}: invalid digit found in string", path.display())
        );

        let big = MAX_CONFIG_BYTES + 1;
        std::fs::File::create(&path).unwrap().set_len(big).unwrap();
        let e = load(&path, |_| -> Result<u64, std::num::ParseIntError> {
            panic!("an oversized file is not parsed")
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config {} is {big} bytes, more than the {MAX_CONFIG_BYTES} a config file can be",
                path.display()
            )
        );
    }
}
