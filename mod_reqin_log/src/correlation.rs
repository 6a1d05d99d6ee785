//! One httpd child's view of the files other processes write for it — the sensor's ring, the
//! detector's verdict table: opened in `child_init`, looked up on the request path. The writer
//! may start after httpd, restart (a new file), or never run at all; none of that may block or
//! break a request:
//!
//! - a missing or unreadable ring is a miss; opening it again is tried at most once per
//!   [`RING_RECHECK`], by whichever request thread comes first, never by waiting;
//! - a ring the sensor replaced is noticed by a `stat` at most once per [`RING_RECHECK`] and
//!   swapped for the new one; the old mapping stays in use until the new one opens;
//! - a panic inside the ring reader (a bug) is caught here and counts as a miss: it must lose
//!   the join, not the log line.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use correlate_lib::ring::{Lookup, RingReader};
use correlate_lib::verdict::{Verdict, VerdictReader};
use correlate_lib::ConnKey;

/// How often a child retries a missing file or checks whether its writer replaced it: a `stat`
/// or an `open` per second per child is negligible, and a restarted sensor's records are joined
/// a second later at most.
pub const RING_RECHECK: Duration = Duration::from_secs(1);

/// A file another process writes and every child maps read-only: the sensor's ring, the
/// detector's verdict table. What [`Attached`] needs of its reader.
pub trait SharedFile: Sized + Send + Sync + 'static {
    /// What the file is, for the error log ("ring", "verdict table").
    const WHAT: &'static str;
    fn open(path: &Path) -> Result<Self, String>;
    /// The path no longer names the mapped file (a new one was renamed over it, or deleted).
    fn is_replaced(&self) -> bool;
    /// The mapped file itself was changed in place or cut short.
    fn damage(&self) -> Option<String>;
    fn inode(&self) -> u64;
    fn generation(&self) -> u64;
}

impl SharedFile for RingReader {
    const WHAT: &'static str = "ring";
    fn open(path: &Path) -> Result<Self, String> {
        RingReader::open(path).map_err(|e| e.to_string())
    }
    fn is_replaced(&self) -> bool {
        RingReader::is_replaced(self)
    }
    fn damage(&self) -> Option<String> {
        RingReader::damage(self).map(|e| e.to_string())
    }
    fn inode(&self) -> u64 {
        RingReader::inode(self)
    }
    fn generation(&self) -> u64 {
        RingReader::generation(self)
    }
}

impl SharedFile for VerdictReader {
    const WHAT: &'static str = "verdict table";
    fn open(path: &Path) -> Result<Self, String> {
        VerdictReader::open(path).map_err(|e| e.to_string())
    }
    fn is_replaced(&self) -> bool {
        VerdictReader::is_replaced(self)
    }
    fn damage(&self) -> Option<String> {
        VerdictReader::damage(self).map(|e| e.to_string())
    }
    fn inode(&self) -> u64 {
        VerdictReader::inode(self)
    }
    fn generation(&self) -> u64 {
        VerdictReader::generation(self)
    }
}

/// Something worth one line in the error log; the caller (which has a `server_rec`) logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    Attached {
        what: &'static str,
        path: PathBuf,
        generation: u64,
    },
    /// The file could not be opened. Reported once per distinct error, not once per retry.
    Unavailable {
        what: &'static str,
        path: PathBuf,
        error: String,
    },
    /// The writer replaced the file but the new one does not open (yet); the old one, which is
    /// still the writer's, stays in use.
    ReplacedButUnavailable {
        what: &'static str,
        path: PathBuf,
        error: String,
        /// Inode of the file still mapped.
        mapped_inode: u64,
    },
    /// The mapped file itself was written over in place or truncated (same inode): it is
    /// dropped until a valid one opens again.
    Damaged {
        what: &'static str,
        path: PathBuf,
        error: String,
        inode: u64,
    },
}

/// One child's mapping of a [`SharedFile`], opened in `child_init` and looked at on the request
/// path; never blocks, never trusts the file.
pub struct Attached<R: SharedFile> {
    path: PathBuf,
    reader: RwLock<Option<Arc<R>>>,
    /// Unix ns before which nobody re-opens or re-checks the file: the same clock as the
    /// verdicts' expiry, so a request reads the wall clock once, or not at all (its arrival
    /// time).
    next_check_ns: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The mapped file is no longer at the path, and none opens there: with a stalled writer,
    /// nothing will write the mapping again.
    file_gone: AtomicBool,
}

/// The sensor's ring, as a child sees it.
pub type RingHandle = Attached<RingReader>;
/// The detector's verdict table, as a child sees it.
pub type VerdictHandle = Attached<VerdictReader>;

impl<R: SharedFile> Attached<R> {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            reader: RwLock::new(None),
            next_check_ns: AtomicU64::new(0),
            last_error: Mutex::new(None),
            file_gone: AtomicBool::new(false),
        }
    }

    /// Whether the mapped file was removed or replaced by one that does not open (checked
    /// once per [`RING_RECHECK`]).
    pub fn file_gone(&self) -> bool {
        self.file_gone.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first attempt (`child_init`); later ones happen lazily in [`Attached::checked`].
    pub fn attach(&self, now_ns: u64) -> Option<FileEvent> {
        self.next_check_ns.store(
            now_ns.saturating_add(nanos(RING_RECHECK)),
            Ordering::Relaxed,
        );
        self.refresh()
    }

    /// `f` over the current reader (`None` without one), after at most one caller per
    /// [`RING_RECHECK`] paid for a `stat` or an `open` (the event it produced, if any, is for
    /// the caller to log). The reader is borrowed under the lock, not cloned: no reference
    /// count bounced between the worker threads on every request.
    pub fn with_reader<T>(
        &self,
        now_ns: u64,
        f: impl FnOnce(&R) -> T,
    ) -> (Option<T>, Option<FileEvent>) {
        let mut event = None;
        let found = self.read(now_ns, f, |e| event = Some(e));
        (found, event)
    }

    /// [`Attached::with_reader`] handing the event to `on_event` instead of returning it: on
    /// the request path of every request, nothing but `f`'s result is moved back (the event,
    /// a path and an error string, is for one request a second at most).
    #[inline]
    pub fn read<T>(
        &self,
        now_ns: u64,
        f: impl FnOnce(&R) -> T,
        on_event: impl FnOnce(FileEvent),
    ) -> Option<T> {
        if self.check_due(now_ns) {
            if let Some(event) = self.refresh() {
                on_event(event);
            }
        }
        let guard = self.reader.read().unwrap_or_else(PoisonError::into_inner);
        guard.as_deref().map(f)
    }

    pub fn is_attached(&self) -> bool {
        self.current().is_some()
    }

    fn current(&self) -> Option<Arc<R>> {
        // Held for an Arc clone only. A poisoned lock still holds a valid Option.
        self.reader
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True for exactly one caller once the recheck interval has passed.
    #[inline]
    fn check_due(&self, now_ns: u64) -> bool {
        let next = self.next_check_ns.load(Ordering::Relaxed);
        now_ns >= next
            && self
                .next_check_ns
                .compare_exchange(
                    next,
                    now_ns.saturating_add(nanos(RING_RECHECK)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn set_error(&self, error: &str) -> bool {
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.as_deref() == Some(error) {
            return false;
        }
        *last = Some(error.to_owned());
        true
    }

    #[cold]
    #[inline(never)]
    fn refresh(&self) -> Option<FileEvent> {
        let what = R::WHAT;
        let old = self.current();
        if let Some(reader) = &old {
            let replaced = catch_unwind(AssertUnwindSafe(|| reader.is_replaced())).unwrap_or(true);
            if !replaced {
                let damage =
                    catch_unwind(AssertUnwindSafe(|| reader.damage())).unwrap_or_else(|_| {
                        Some(format!("the {what} reader panicked while checking it"))
                    });
                let error = damage?;
                // Nothing of the writer's is left in it: stop reading it (a truncated one
                // would fault), and open whatever is at the path from now on.
                *self.reader.write().unwrap_or_else(PoisonError::into_inner) = None;
                self.set_error(&error);
                return Some(FileEvent::Damaged {
                    what,
                    path: self.path.clone(),
                    error,
                    inode: reader.inode(),
                });
            }
        }
        let mapped_inode = old.as_ref().map(|r| r.inode());
        match catch_unwind(AssertUnwindSafe(|| R::open(&self.path))) {
            Ok(Ok(reader)) => {
                let generation = reader.generation();
                *self.reader.write().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::new(reader));
                self.file_gone.store(false, Ordering::Relaxed);
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                Some(FileEvent::Attached {
                    what,
                    path: self.path.clone(),
                    generation,
                })
            }
            result => {
                let error = match result {
                    Ok(Err(e)) => e,
                    _ => format!("the {what} reader panicked while opening it"),
                };
                self.file_gone
                    .store(mapped_inode.is_some(), Ordering::Relaxed);
                if !self.set_error(&error) {
                    return None;
                }
                let path = self.path.clone();
                Some(match mapped_inode {
                    Some(mapped_inode) => FileEvent::ReplacedButUnavailable {
                        what,
                        path,
                        error,
                        mapped_inode,
                    },
                    None => FileEvent::Unavailable { what, path, error },
                })
            }
        }
    }
}

impl Attached<RingReader> {
    /// The record of `key`'s connection, if the sensor published one. Never blocks on the
    /// sensor. A panic inside the ring reader (a bug) is a torn read, not a lost line.
    pub fn lookup(&self, key: &ConnKey, now_ns: u64) -> (Lookup, Option<FileEvent>) {
        let (found, event) = self.with_reader(now_ns, |reader| {
            catch_unwind(AssertUnwindSafe(|| reader.lookup(key))).unwrap_or(Lookup::Torn)
        });
        (found.unwrap_or(Lookup::Miss), event)
    }

    /// Unix ns up to which the sensor has processed every packet (0: no ring, or never said).
    pub fn watermark(&self) -> u64 {
        self.current()
            .and_then(|r| catch_unwind(AssertUnwindSafe(|| r.watermark())).ok())
            .unwrap_or(0)
    }

    /// The sensor's statistics from the ring header, when a ring is mapped.
    pub fn status(&self) -> Option<crate::stats::RingStatus> {
        let reader = self.current()?;
        catch_unwind(AssertUnwindSafe(|| crate::stats::RingStatus {
            generation: reader.generation(),
            published: reader.published(),
            watermark_ns: reader.watermark(),
            sensor_counters: correlate_lib::ring::SensorCounter::ALL
                .iter()
                .map(|c| (c.name(), reader.counter(*c)))
                .collect(),
        }))
        .ok()
    }
}

impl Attached<VerdictReader> {
    /// The verdict for this client, by its address first, then by its JA4, if the detector
    /// reached one that has not expired. A missing, garbage or torn table is "no verdict".
    /// A miss moves nothing but the `None`: a hit is copied out of the table (72 bytes, no
    /// allocation), and its word and rule are read from the copy.
    #[inline]
    pub fn verdict(
        &self,
        ip: std::net::IpAddr,
        ja4: Option<&str>,
        now_ns: u64,
        on_event: impl FnOnce(FileEvent),
    ) -> Option<Verdict> {
        self.read(
            now_ns,
            |r| {
                catch_unwind(AssertUnwindSafe(|| {
                    r.lookup_ip(ip, now_ns)
                        .hit()
                        .or_else(|| ja4.and_then(|j| r.lookup_ja4(j, now_ns).hit()))
                }))
                .ok()
                .flatten()
            },
            on_event,
        )
        .flatten()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use correlate_lib::record::v4;

    fn key() -> ConnKey {
        ConnKey::new(v4(127, 0, 0, 1, 50000), v4(127, 0, 0, 1, 443))
    }

    #[test]
    fn missing_ring_is_a_miss_reported_once() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = correlate_lib::unix_now_ns();
        let ring = RingHandle::new(dir.path().join("absent.ring"));
        assert!(matches!(
            ring.attach(t0),
            Some(FileEvent::Unavailable { .. })
        ));
        assert!(!ring.is_attached());
        let (found, event) = ring.lookup(&key(), t0 + 10_000_000);
        assert_eq!(found, Lookup::Miss);
        assert_eq!(event, None, "no retry within the recheck interval");
        let (found, event) = ring.lookup(&key(), t0 + 2 * nanos(RING_RECHECK));
        assert_eq!(found, Lookup::Miss);
        assert_eq!(event, None, "the same error again is not reported again");
    }

    #[test]
    fn only_one_caller_per_interval_rechecks() {
        let t0 = correlate_lib::unix_now_ns();
        let ring = RingHandle::new("/nonexistent/x.ring".into());
        let later = t0 + nanos(RING_RECHECK);
        assert!(ring.check_due(later));
        assert!(
            !ring.check_due(later),
            "the second caller in the same interval skips"
        );
        assert!(ring.check_due(later + nanos(RING_RECHECK)));
    }
}
