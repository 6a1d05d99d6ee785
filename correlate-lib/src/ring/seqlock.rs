//! The seqlock protocol of one slot, over atomic words of shared memory.
//!
//! Word 0 of a slot is its sequence: even when the slot is stable, odd while the (single)
//! writer rewrites it. A reader loads the sequence, copies the words, and loads the sequence
//! again; the copy is good only if both loads saw the same even value. The writer never waits
//! for readers and readers never write, so a reader in another process cannot slow the sensor.
//!
//! Every access is atomic (the words are shared with another process; a plain load racing with
//! a store would be undefined behaviour). Readers use only `Relaxed` loads plus
//! `fence(Acquire)`, the one combination that is sound on a read-only mapping (see
//! `mapping.rs`); the fences give the same ordering an `Acquire` load would:
//!
//! ```text
//! writer                                  reader
//! seq = odd            (Relaxed)          s1 = seq             (Relaxed)
//! fence(Release)                          fence(Acquire)       pairs with the writer's final
//! body[i] = w          (Relaxed)          body copy            (Relaxed)   even store
//! seq = even           (Release)          fence(Acquire)       pairs with fence(Release):
//!                                         s2 = seq             (Relaxed)   a new body word seen
//!                                                                          ⇒ s2 ≠ s1
//! ```

use std::sync::atomic::{fence, AtomicU64, Ordering};

use super::mapping::SharedWord;

/// A shared word a reader can load. Implemented for the writer's `AtomicU64` and the readers'
/// load-only [`SharedWord`], so one read path serves both (and the tests).
pub trait Word {
    fn load_relaxed(&self) -> u64;
}

impl Word for AtomicU64 {
    #[inline]
    fn load_relaxed(&self) -> u64 {
        self.load(Ordering::Relaxed)
    }
}

impl Word for SharedWord {
    #[inline]
    fn load_relaxed(&self) -> u64 {
        self.load()
    }
}

/// Outcome of one read attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAttempt {
    /// The copy is consistent.
    Stable,
    /// The writer was inside the slot (odd sequence) or finished a write during the copy.
    Raced,
}

/// Writes `words` into `slot[1..]` under the slot's sequence. Single writer only; words beyond
/// the iterator's end keep their old values (the slot's length word says how many count).
pub fn write(slot: &[AtomicU64], words: impl IntoIterator<Item = u64>) {
    let Some((seq, body)) = slot.split_first() else {
        return;
    };
    let odd = seq.load(Ordering::Relaxed).wrapping_add(1) | 1;
    // Odd: readers that load the sequence from here on know the slot is being rewritten.
    seq.store(odd, Ordering::Relaxed);
    // Orders the odd store before the body stores below: a reader that sees any new body word
    // and then re-reads the sequence (after its acquire fence) sees at least the odd value.
    fence(Ordering::Release);
    for (dst, w) in body.iter().zip(words) {
        dst.store(w, Ordering::Relaxed);
    }
    // Publishes the body: a reader that loads this even value (then fences) sees every store above.
    seq.store(odd.wrapping_add(1), Ordering::Release);
}

/// Copies the body of a slot (`slot[1..]`) into `out` under the slot's sequence. The first body
/// word is read first and `body_words(first)` says how many body words to copy in all (clamped
/// to `1..=body.len()`), so a reader copies only the words its length word covers. The copied
/// words mean nothing unless the result is [`ReadAttempt::Stable`].
pub fn read<W: Word>(
    slot: &[W],
    out: &mut Vec<u64>,
    body_words: impl FnOnce(u64) -> usize,
) -> ReadAttempt {
    out.clear();
    let Some((seq, body)) = slot.split_first() else {
        return ReadAttempt::Raced;
    };
    let s1 = seq.load_relaxed();
    // Pairs with the writer's Release store of the even sequence: the body stores of that write
    // happen-before the loads below.
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        return ReadAttempt::Raced;
    }
    let Some(first) = body.first().map(Word::load_relaxed) else {
        return ReadAttempt::Raced;
    };
    let n = body_words(first).clamp(1, body.len());
    out.resize(n, 0);
    // The first word was loaded above and decided the length: keep that value, not a reload.
    if let Some((head, rest)) = out.split_first_mut() {
        *head = first;
        for (dst, src) in rest.iter_mut().zip(body.iter().skip(1)) {
            *dst = src.load_relaxed();
        }
    }
    // Keeps the body loads above before the second sequence load (pairs with the writer's
    // fence(Release) after its odd store).
    fence(Ordering::Acquire);
    let s2 = seq.load_relaxed();
    if s1 == s2 {
        ReadAttempt::Stable
    } else {
        ReadAttempt::Raced
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    fn slot(words: usize) -> Vec<AtomicU64> {
        (0..words).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn a_written_slot_reads_back_stable_and_only_the_words_asked_for() {
        let s = slot(8);
        write(&s, [3, 10, 20, 30, 40]);
        let mut out = Vec::new();
        assert_eq!(read(&s, &mut out, |n| n as usize), ReadAttempt::Stable);
        assert_eq!(out, vec![3, 10, 20]);
        assert_eq!(
            s[0].load(Ordering::Relaxed),
            2,
            "sequence even after a write"
        );
        // A hostile length word is clamped to the slot.
        write(&s, [u64::MAX]);
        assert_eq!(read(&s, &mut out, |n| n as usize), ReadAttempt::Stable);
        assert_eq!(out.len(), 7);
    }

    #[test]
    fn a_slot_being_written_or_rewritten_during_the_copy_is_raced() {
        let s = slot(4);
        s[0].store(5, Ordering::Relaxed);
        let mut out = Vec::new();
        assert_eq!(read(&s, &mut out, |_| 3), ReadAttempt::Raced);
        s[0].store(6, Ordering::Relaxed);
        let raced = read(&s, &mut out, |_| {
            // The writer completes a whole write between the two sequence loads.
            s[0].store(8, Ordering::Relaxed);
            3
        });
        assert_eq!(raced, ReadAttempt::Raced);
        assert_eq!(
            read(&[] as &[AtomicU64], &mut out, |_| 1),
            ReadAttempt::Raced
        );
    }

    #[test]
    fn concurrent_reader_never_gets_a_mixed_copy() {
        const WORDS: usize = 64;
        let s: Arc<Vec<AtomicU64>> = Arc::new(slot(WORDS + 1));
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (s, stop) = (Arc::clone(&s), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    write(&s, std::iter::repeat_n(n, WORDS));
                }
            })
        };
        let (mut stable, mut raced) = (0u64, 0u64);
        let mut out = Vec::new();
        // Until both outcomes were seen (the copy overlapped a write), or a generous bound.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while (stable < 1000 || raced < 10) && std::time::Instant::now() < deadline {
            match read(&s, &mut out, |_| WORDS) {
                ReadAttempt::Stable => {
                    stable += 1;
                    assert!(out.iter().all(|w| *w == out[0]), "mixed copy {out:?}");
                }
                ReadAttempt::Raced => raced += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(stable > 0 && raced > 0, "stable={stable} raced={raced}");
    }
}
