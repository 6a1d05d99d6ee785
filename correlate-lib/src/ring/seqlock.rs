//! The seqlock protocol of one slot, over atomic words of shared memory.
//!
//! Word 0 of a slot is its sequence: even when the slot is stable, odd while the (single)
//! writer rewrites it. A reader loads the sequence, copies the words, and loads the sequence
//! again; the copy is good only if both loads saw the same even value. The writer never waits
//! for readers and readers never write, so a reader in another process cannot slow the sensor.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Outcome of one read attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAttempt {
    /// The copy is consistent.
    Stable,
    /// The writer was inside the slot (odd sequence) or finished a write during the copy.
    Raced,
}

/// Writes `words` into `slot[1..]` under the slot's sequence. Single writer only.
pub fn write(slot: &[AtomicU64], words: impl IntoIterator<Item = u64>) {
    let Some((seq, body)) = slot.split_first() else {
        return;
    };
    let s = seq.load(Ordering::Relaxed);
    // Odd: readers that load the sequence from here on know the slot is being rewritten.
    seq.store(s.wrapping_add(1) | 1, Ordering::Relaxed);
    // Orders the odd store before the body stores below (a reader that sees any new body word
    // and then re-reads the sequence sees at least the odd value).
    fence(Ordering::Release);
    for (dst, w) in body.iter().zip(words) {
        dst.store(w, Ordering::Relaxed);
    }
    // Publishes the body: a reader that loads this even value (Acquire) sees every store above.
    seq.store((s.wrapping_add(1) | 1).wrapping_add(1), Ordering::Release);
}

/// Copies `slot[1..1 + out.len()]` into `out` under the slot's sequence.
pub fn read(slot: &[AtomicU64], out: &mut [u64]) -> ReadAttempt {
    let Some((seq, body)) = slot.split_first() else {
        return ReadAttempt::Raced;
    };
    let s1 = seq.load(Ordering::Acquire);
    if s1 & 1 == 1 {
        return ReadAttempt::Raced;
    }
    for (dst, src) in out.iter_mut().zip(body) {
        *dst = src.load(Ordering::Relaxed);
    }
    // Keeps the body loads above before the second sequence load.
    fence(Ordering::Acquire);
    let s2 = seq.load(Ordering::Relaxed);
    if s1 == s2 {
        ReadAttempt::Stable
    } else {
        ReadAttempt::Raced
    }
}
