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

/// Copies the body of a slot (`slot[1..]`) under the slot's sequence: the first body word (the
/// length word) is returned, and `body_bytes(first)` bytes of the words after it are copied into
/// `out` as little-endian bytes (clamped to the slot), so a reader copies only the bytes its
/// length word covers, once, straight into the buffer it decodes from. The copy means nothing
/// unless the result is [`ReadAttempt::Stable`].
pub fn read<W: Word>(
    slot: &[W],
    out: &mut Vec<u8>,
    body_bytes: impl FnOnce(u64) -> usize,
) -> (ReadAttempt, u64) {
    let Some((seq, body)) = slot.split_first() else {
        return (ReadAttempt::Raced, 0);
    };
    let s1 = seq.load_relaxed();
    // Pairs with the writer's Release store of the even sequence: the body stores of that write
    // happen-before the loads below.
    fence(Ordering::Acquire);
    if s1 & 1 == 1 {
        return (ReadAttempt::Raced, 0);
    }
    let Some((first, rest)) = body.split_first() else {
        return (ReadAttempt::Raced, 0);
    };
    // The first word was loaded here and decided the length: the caller gets this value, not a
    // reload.
    let first = first.load_relaxed();
    let n = body_bytes(first).min(rest.len().saturating_mul(8));
    // Not cleared first: only bytes beyond the previous copy's length are zeroed, and every
    // byte up to `n` is overwritten below.
    out.resize(n, 0);
    // Whole words four at a time (the loop overhead would otherwise cost more than the loads),
    // then the rest of them, then the bytes of a last partial word.
    let (src, src_tail) = rest.split_at(n / 8);
    let (dst, dst_tail) = out.split_at_mut(src.len() * 8);
    let mut quads = dst.chunks_exact_mut(32);
    let mut src_quads = src.chunks_exact(4);
    for (d, s) in (&mut quads).zip(&mut src_quads) {
        for (d, w) in d.chunks_exact_mut(8).zip(s) {
            d.copy_from_slice(&w.load_relaxed().to_le_bytes());
        }
    }
    for (d, w) in quads
        .into_remainder()
        .chunks_exact_mut(8)
        .zip(src_quads.remainder())
    {
        d.copy_from_slice(&w.load_relaxed().to_le_bytes());
    }
    if let (false, Some(w)) = (dst_tail.is_empty(), src_tail.first()) {
        let bytes = w.load_relaxed().to_le_bytes();
        dst_tail.copy_from_slice(&bytes[..dst_tail.len()]);
    }
    // Keeps the body loads above before the second sequence load (pairs with the writer's
    // fence(Release) after its odd store).
    fence(Ordering::Acquire);
    let s2 = seq.load_relaxed();
    if s1 == s2 {
        (ReadAttempt::Stable, first)
    } else {
        (ReadAttempt::Raced, first)
    }
}

/// Copies the `N` body words of a fixed-size slot (`slot[1..=N]`) under the slot's sequence,
/// into an array on the stack: the verdict table's slots are small and always read whole. The
/// copy means nothing unless the result is [`ReadAttempt::Stable`].
#[inline]
pub fn read_words<W: Word, const N: usize>(slot: &[W]) -> (ReadAttempt, [u64; N]) {
    let mut out = [0u64; N];
    let Some((seq, body)) = slot.split_first() else {
        return (ReadAttempt::Raced, out);
    };
    let s1 = seq.load_relaxed();
    // Pairs with the writer's Release store of the even sequence (see `read`).
    fence(Ordering::Acquire);
    if s1 & 1 == 1 || body.len() < N {
        return (ReadAttempt::Raced, out);
    }
    for (d, w) in out.iter_mut().zip(body) {
        *d = w.load_relaxed();
    }
    // Keeps the body loads before the second sequence load (pairs with the writer's fence).
    fence(Ordering::Acquire);
    if seq.load_relaxed() == s1 {
        (ReadAttempt::Stable, out)
    } else {
        (ReadAttempt::Raced, out)
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
        write(&s, [11, 10, 20, 30, 40]);
        let mut out = Vec::new();
        assert_eq!(
            read(&s, &mut out, |n| n as usize),
            (ReadAttempt::Stable, 11)
        );
        let mut want: Vec<u8> = [10u64, 20].iter().flat_map(|w| w.to_le_bytes()).collect();
        want.truncate(11);
        assert_eq!(out, want, "whole words, then the bytes of a partial one");
        assert_eq!(
            s[0].load(Ordering::Relaxed),
            2,
            "sequence even after a write"
        );
        // A hostile length word is clamped to the slot.
        write(&s, [u64::MAX]);
        assert_eq!(
            read(&s, &mut out, |n| n as usize),
            (ReadAttempt::Stable, u64::MAX)
        );
        assert_eq!(out.len(), 6 * 8);
    }

    #[test]
    fn a_slot_being_written_or_rewritten_during_the_copy_is_raced() {
        let s = slot(4);
        s[0].store(5, Ordering::Relaxed);
        let mut out = Vec::new();
        assert_eq!(read(&s, &mut out, |_| 16).0, ReadAttempt::Raced);
        s[0].store(6, Ordering::Relaxed);
        let raced = read(&s, &mut out, |_| {
            // The writer completes a whole write between the two sequence loads.
            s[0].store(8, Ordering::Relaxed);
            16
        });
        assert_eq!(raced.0, ReadAttempt::Raced);
        assert_eq!(
            read(&[] as &[AtomicU64], &mut out, |_| 8).0,
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
            match read(&s, &mut out, |_| (WORDS - 1) * 8) {
                (ReadAttempt::Stable, first) => {
                    stable += 1;
                    assert!(
                        out.chunks(8).all(|w| *w == first.to_le_bytes()),
                        "mixed copy {out:?}"
                    );
                }
                (ReadAttempt::Raced, _) => raced += 1,
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(stable > 0 && raced > 0, "stable={stable} raced={raced}");
    }
}
