//! What has been shipped, on disk. One small JSON document replaced atomically (write a temp file
//! in the same directory, fsync it, rename it over the old one, fsync the directory), so a crash or
//! a full disk leaves either the old or the new version, never a torn one.
//!
//! Files are known by a *fingerprint* of their first line (plus device and inode, kept to report
//! and to notice a truncation): a logrotate rename keeps the fingerprint and the inode, a
//! `copytruncate` copy keeps the fingerprint under a new inode (so we continue in the copy where
//! we were), and the truncated original starts again with a new first line.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const CHECKPOINT_VERSION: u32 = 1;
/// Rotated files are kept by logrotate for days; remembering more than this many files is a leak.
pub const MAX_TRACKED_FILES: usize = 4096;
/// A checkpoint lists at most [`MAX_TRACKED_FILES`] small entries; 8 MiB is far beyond that.
const MAX_CHECKPOINT_BYTES: u64 = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is {len} bytes, more than {max}")]
    TooLarge { path: PathBuf, len: u64, max: u64 },
    #[error("checkpoint {path} is not a version-{CHECKPOINT_VERSION} checkpoint: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// A shipped position in one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    /// xxh3-64 of the first line (with its length, against collisions of short lines).
    pub fingerprint: String,
    pub dev: u64,
    pub ino: u64,
    /// Bytes of this file shipped (or dead-lettered): the next line starts here.
    pub offset: u64,
    /// Last path seen, for people reading the checkpoint.
    pub path: PathBuf,
    /// Unix seconds when a scan last saw the file; the oldest are forgotten first.
    pub seen_unix: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub files: Vec<FileState>,
}

impl Checkpoint {
    pub fn new() -> Self {
        Self {
            version: CHECKPOINT_VERSION,
            ..Self::default()
        }
    }

    /// The saved checkpoint, or an empty one when there is none yet.
    pub fn load(path: &Path) -> Result<Self, CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        };
        let len = match fs::metadata(path) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::new()),
            Err(e) => return Err(io(e)),
        };
        if len > MAX_CHECKPOINT_BYTES {
            return Err(CheckpointError::TooLarge {
                path: path.to_owned(),
                len,
                max: MAX_CHECKPOINT_BYTES,
            });
        }
        let text = fs::read(path).map_err(io)?;
        let cp: Self = serde_json::from_slice(&text).map_err(|e| CheckpointError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if cp.version != CHECKPOINT_VERSION {
            return Err(CheckpointError::Corrupt {
                path: path.to_owned(),
                reason: format!("version {}", cp.version),
            });
        }
        Ok(cp)
    }

    /// Atomically replaces the file at `path`.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = dir.join(tmp_name);
        let bytes = serde_json::to_vec(self).map_err(|e| io(std::io::Error::other(e)))?;
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            // The rename is durable only once the directory entry is.
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            // Leave no half-written temp file behind on a full disk.
            let _ = fs::remove_file(&tmp);
            io(e)
        })
    }

    pub fn file(&self, fingerprint: &str) -> Option<&FileState> {
        self.files.iter().find(|f| f.fingerprint == fingerprint)
    }

    pub fn file_mut(&mut self, fingerprint: &str) -> Option<&mut FileState> {
        self.files.iter_mut().find(|f| f.fingerprint == fingerprint)
    }

    /// Forgets the least recently seen files beyond [`MAX_TRACKED_FILES`].
    pub fn prune(&mut self) {
        if self.files.len() > MAX_TRACKED_FILES {
            self.files.sort_by_key(|f| std::cmp::Reverse(f.seen_unix));
            self.files.truncate(MAX_TRACKED_FILES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        assert_eq!(Checkpoint::load(&path).unwrap(), Checkpoint::new());
        let mut cp = Checkpoint::new();
        cp.files.push(FileState {
            fingerprint: "f".into(),
            dev: 1,
            ino: 2,
            offset: 3,
            path: "/x".into(),
            seen_unix: 4,
        });
        cp.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), cp);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn garbage_checkpoint_is_an_error_not_a_restart_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            Checkpoint::load(&path),
            Err(CheckpointError::Corrupt { .. })
        ));
    }
}
