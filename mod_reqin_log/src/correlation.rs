//! One httpd child's view of the sensor's ring: opened in `child_init`, looked up on the request
//! path. The sensor may start after httpd, restart (a new ring file), or never run at all; none
//! of that may block or break a request:
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
use std::time::{Duration, Instant};

use correlate_lib::ring::{Lookup, RingReader};
use correlate_lib::ConnKey;

/// How often a child retries a missing ring or checks whether the sensor replaced it: a `stat`
/// or an `open` per second per child is negligible, and a restarted sensor's records are joined
/// a second later at most.
pub const RING_RECHECK: Duration = Duration::from_secs(1);

/// Something worth one line in the error log; the caller (which has a `server_rec`) logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingEvent {
    Attached {
        path: PathBuf,
        generation: u64,
    },
    /// The ring could not be opened. Reported once per distinct error, not once per retry.
    Unavailable {
        path: PathBuf,
        error: String,
    },
    /// The sensor replaced the ring but the new one does not open (yet); the old one, which is
    /// still the sensor's, stays in use.
    ReplacedButUnavailable {
        path: PathBuf,
        error: String,
        /// Inode of the file still mapped.
        mapped_inode: u64,
    },
    /// The mapped file itself was written over in place or truncated (same inode): it is
    /// dropped, requests are uncorrelated until a ring opens again.
    Damaged {
        path: PathBuf,
        error: String,
        inode: u64,
    },
}

pub struct RingHandle {
    path: PathBuf,
    reader: RwLock<Option<Arc<RingReader>>>,
    /// Time base of `next_check_ms`.
    epoch: Instant,
    /// Milliseconds after `epoch` before which nobody re-opens or re-checks the ring.
    next_check_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// The mapped ring's file is no longer at the path, and none opens there.
    file_gone: AtomicBool,
}

impl RingHandle {
    pub fn new(path: PathBuf, now: Instant) -> Self {
        Self {
            path,
            reader: RwLock::new(None),
            epoch: now,
            next_check_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            file_gone: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first attempt (`child_init`); later ones happen lazily in [`RingHandle::lookup`].
    pub fn attach(&self, now: Instant) -> Option<RingEvent> {
        self.next_check_ms.store(
            self.millis(now).saturating_add(millis(RING_RECHECK)),
            Ordering::Relaxed,
        );
        self.refresh()
    }

    /// The record of `key`'s connection, if the sensor published one. Never blocks on the sensor;
    /// at most one caller per [`RING_RECHECK`] pays for a `stat` or an `open`.
    pub fn lookup(&self, key: &ConnKey, now: Instant) -> (Lookup, Option<RingEvent>) {
        let event = if self.check_due(now) {
            self.refresh()
        } else {
            None
        };
        let result = match self.current() {
            Some(reader) => {
                catch_unwind(AssertUnwindSafe(|| reader.lookup(key))).unwrap_or(Lookup::Torn)
            }
            None => Lookup::Miss,
        };
        (result, event)
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

    pub fn is_attached(&self) -> bool {
        self.current().is_some()
    }

    /// Whether the file of the mapped ring was removed or replaced by one that does not open
    /// (checked once per [`RING_RECHECK`]): with a stalled sensor, nothing will write the
    /// mapping again.
    pub fn file_gone(&self) -> bool {
        self.file_gone.load(Ordering::Relaxed)
    }

    fn current(&self) -> Option<Arc<RingReader>> {
        // Held for an Arc clone only. A poisoned lock still holds a valid Option.
        self.reader
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn millis(&self, now: Instant) -> u64 {
        millis(now.saturating_duration_since(self.epoch))
    }

    /// True for exactly one caller once the recheck interval has passed.
    fn check_due(&self, now: Instant) -> bool {
        let now_ms = self.millis(now);
        let next = self.next_check_ms.load(Ordering::Relaxed);
        now_ms >= next
            && self
                .next_check_ms
                .compare_exchange(
                    next,
                    now_ms.saturating_add(millis(RING_RECHECK)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    fn refresh(&self) -> Option<RingEvent> {
        let old = self.current();
        if let Some(reader) = &old {
            let replaced = catch_unwind(AssertUnwindSafe(|| reader.is_replaced())).unwrap_or(true);
            if !replaced {
                let damage =
                    catch_unwind(AssertUnwindSafe(|| reader.damage())).unwrap_or_else(|_| {
                        Some(correlate_lib::ring::RingError::Config(
                            "the ring reader panicked while checking it".into(),
                        ))
                    });
                let error = damage?;
                // Nothing of the sensor's is left in it: stop reading it (a truncated one
                // would fault), and open whatever is at the path from now on.
                *self.reader.write().unwrap_or_else(PoisonError::into_inner) = None;
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                return Some(RingEvent::Damaged {
                    path: self.path.clone(),
                    error: error.to_string(),
                    inode: reader.inode(),
                });
            }
        }
        let mapped_inode = old.as_ref().map(|r| r.inode());
        match self.open() {
            Ok(reader) => {
                let generation =
                    catch_unwind(AssertUnwindSafe(|| reader.generation())).unwrap_or(0);
                *self.reader.write().unwrap_or_else(PoisonError::into_inner) = Some(reader);
                self.file_gone.store(false, Ordering::Relaxed);
                *self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                Some(RingEvent::Attached {
                    path: self.path.clone(),
                    generation,
                })
            }
            Err(error) => {
                self.file_gone
                    .store(mapped_inode.is_some(), Ordering::Relaxed);
                let mut last = self
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if last.as_deref() == Some(error.as_str()) {
                    return None;
                }
                *last = Some(error.clone());
                let path = self.path.clone();
                Some(match mapped_inode {
                    Some(mapped_inode) => RingEvent::ReplacedButUnavailable {
                        path,
                        error,
                        mapped_inode,
                    },
                    None => RingEvent::Unavailable { path, error },
                })
            }
        }
    }

    fn open(&self) -> Result<Arc<RingReader>, String> {
        match catch_unwind(AssertUnwindSafe(|| RingReader::open(&self.path))) {
            Ok(Ok(reader)) => Ok(Arc::new(reader)),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!(
                "ring {}: the ring reader panicked while opening it",
                self.path.display()
            )),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        let t0 = Instant::now();
        let ring = RingHandle::new(dir.path().join("absent.ring"), t0);
        assert!(matches!(
            ring.attach(t0),
            Some(RingEvent::Unavailable { .. })
        ));
        assert!(!ring.is_attached());
        let (found, event) = ring.lookup(&key(), t0 + Duration::from_millis(10));
        assert_eq!(found, Lookup::Miss);
        assert_eq!(event, None, "no retry within the recheck interval");
        let (found, event) = ring.lookup(&key(), t0 + RING_RECHECK * 2);
        assert_eq!(found, Lookup::Miss);
        assert_eq!(event, None, "the same error again is not reported again");
    }

    #[test]
    fn only_one_caller_per_interval_rechecks() {
        let t0 = Instant::now();
        let ring = RingHandle::new("/nonexistent/x.ring".into(), t0);
        let later = t0 + RING_RECHECK;
        assert!(ring.check_due(later));
        assert!(
            !ring.check_due(later),
            "the second caller in the same interval skips"
        );
        assert!(ring.check_due(later + RING_RECHECK));
    }
}
