//! Readers never trust the verdict table: random bytes anywhere in the file, random words in
//! the header, and slots forged with a valid checksum never panic a reader, never hang it, and
//! never give a key a verdict that was not written for it (style of `ring_hostile.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use correlate_lib::verdict::layout;
use correlate_lib::verdict::{VerdictKey, VerdictLookup, VerdictReader, VerdictWriter};

const NOW: u64 = 1_800_000_000_000_000_000;
/// 23 verdicts in 256 slots: no probe window is ever full (an eviction would make a key miss).
const SLOTS: u32 = 256;
const JA4S: [&str; 3] = [
    "t13d1516h2_8daaf6152771_02713d6af862",
    "t13d4907h2_0d8feac7bc37_7395dae3b2f3",
    "t13d3112h1_e8f1e7e78f70_6bebaf5329ac",
];

fn ip(i: u8) -> IpAddr {
    IpAddr::from([192, 0, 2, i])
}

/// A table with 20 IP verdicts and 3 JA4 verdicts; IP `i` has rule `r{i}`, word `block`.
fn table(dir: &Path) -> (PathBuf, VerdictWriter) {
    let p = dir.join("t.verdicts");
    let mut w = VerdictWriter::create(&p, SLOTS, 0o600, None).unwrap();
    for i in 0..20u8 {
        w.set(
            &VerdictKey::Ip(ip(i)),
            "block",
            &format!("r{i}"),
            NOW + 1000,
            NOW,
        )
        .unwrap();
    }
    for (i, j) in JA4S.iter().enumerate() {
        w.set(
            &VerdictKey::Ja4(j),
            "challenge",
            &format!("j{i}"),
            NOW + 1000,
            NOW,
        )
        .unwrap();
    }
    (p, w)
}

/// Every lookup either misses or returns exactly what was written for that key.
fn lookups_are_honest(p: &Path) {
    let Ok(r) = VerdictReader::open(p) else {
        return;
    };
    for i in 0..40u8 {
        match r.lookup(&VerdictKey::Ip(ip(i)), NOW) {
            VerdictLookup::Hit(v) => {
                assert!(i < 20, "verdict for a key never set: {v:?}");
                assert_eq!((v.word(), v.rule()), ("block", format!("r{i}").as_str()));
            }
            VerdictLookup::Miss | VerdictLookup::Torn => {}
        }
    }
    for (i, j) in JA4S.iter().enumerate() {
        if let VerdictLookup::Hit(v) = r.lookup(&VerdictKey::Ja4(j), NOW) {
            assert_eq!(
                (v.word(), v.rule()),
                ("challenge", format!("j{i}").as_str())
            );
        }
    }
    let _ = r.entries(NOW);
}

fn poke(p: &Path, word: usize, v: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    f.write_all_at(&v.to_le_bytes(), (word * 8) as u64).unwrap();
}

#[test]
fn an_intact_table_answers_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = table(dir.path());
    let r = VerdictReader::open(&p).unwrap();
    for i in 0..20u8 {
        assert!(matches!(
            r.lookup(&VerdictKey::Ip(ip(i)), NOW),
            VerdictLookup::Hit(_)
        ));
    }
    lookups_are_honest(&p);
}

#[test]
fn a_flipped_bit_in_a_slot_is_a_torn_read_not_a_wrong_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = table(dir.path());
    let r = VerdictReader::open(&p).unwrap();
    // Find the slot of ip(3) and flip a bit of its rule.
    let entries = r.entries(NOW);
    assert_eq!(entries.len(), 23);
    let mut damaged = 0;
    for s in 0..SLOTS as usize {
        let base = layout::HEADER_WORDS + s * layout::SLOT_WORDS;
        let bytes = std::fs::read(&p).unwrap();
        let off = (base + 1 + layout::B_RULE) * 8;
        if bytes[off] == b'r' && bytes[off + 1] == b'3' && bytes[off + 2] == 0 {
            let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
            f.write_all_at(b"r4", off as u64).unwrap();
            damaged += 1;
        }
    }
    assert_eq!(damaged, 1);
    assert_eq!(r.lookup(&VerdictKey::Ip(ip(3)), NOW), VerdictLookup::Torn);
    lookups_are_honest(&p);
}

#[test]
fn a_writer_stuck_inside_a_slot_never_hangs_a_reader() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = table(dir.path());
    // Every sequence odd: a writer that died in the middle of every slot.
    for s in 0..SLOTS as usize {
        poke(&p, layout::HEADER_WORDS + s * layout::SLOT_WORDS, 7);
    }
    let r = VerdictReader::open(&p).unwrap();
    for i in 0..20u8 {
        assert_eq!(r.lookup(&VerdictKey::Ip(ip(i)), NOW), VerdictLookup::Torn);
    }
    assert!(r.entries(NOW).is_empty());
}

#[test]
fn foreign_headers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _w) = table(dir.path());
    poke(
        &p,
        layout::W_SLOTS,
        layout::pack(100, layout::SLOT_WORDS as u32),
    );
    assert!(VerdictReader::open(&p).is_err());
    poke(
        &p,
        layout::W_SLOTS,
        layout::pack(1 << 19, layout::SLOT_WORDS as u32),
    );
    assert!(matches!(
        VerdictReader::open(&p),
        Err(correlate_lib::verdict::VerdictError::Truncated { .. })
    ));
    poke(&p, layout::W_SLOTS, layout::pack(SLOTS, 8));
    assert!(VerdictReader::open(&p).is_err());
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    #[test]
    fn random_bytes_anywhere_never_panic_or_lie(
        noise in proptest::collection::vec(proptest::num::u8::ANY, 1..2048),
        at in 0u64..20_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (p, _w) = table(dir.path());
        let len = std::fs::metadata(&p).unwrap().len();
        let room = len - layout::HEADER_BYTES as u64 - noise.len() as u64;
        let off = layout::HEADER_BYTES as u64 + at % room;
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.write_all_at(&noise, off).unwrap();
        lookups_are_honest(&p);
    }

    #[test]
    fn random_header_words_never_panic_open_or_lookup(
        words in proptest::collection::vec(proptest::num::u64::ANY, 1..10),
        small in 0u32..40,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (p, _w) = table(dir.path());
        for (i, w) in words.iter().enumerate() {
            let v = if i == 1 { layout::pack(1 << (small % 24), layout::SLOT_WORDS as u32) } else { *w };
            poke(&p, 1 + i % 9, v);
        }
        lookups_are_honest(&p);
    }

    /// The checksum is no defence against a hostile writer: a slot forged with random words
    /// under a correct crc and the live tag of a real key must still not give another key's
    /// verdict, nor a word or rule outside what the layout allows.
    #[test]
    fn forged_slots_with_a_valid_checksum_never_yield_a_foreign_or_invalid_verdict(
        body in proptest::collection::vec(proptest::num::u64::ANY, layout::BODY_WORDS),
        slot in 0usize..SLOTS as usize,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (p, _w) = table(dir.path());
        let mut b = [0u64; layout::BODY_WORDS];
        b.copy_from_slice(&body);
        // Copy a real live tag in, so the reader does consider the slot.
        let bytes = std::fs::read(&p).unwrap();
        let tag_word = |s: usize| {
            let o = (layout::HEADER_WORDS + s * layout::SLOT_WORDS + 1) * 8;
            u64::from_le_bytes(bytes[o..o + 8].try_into().unwrap())
        };
        b[layout::B_TAG] = tag_word(slot) | layout::TAG_LIVE;
        let (meta, _) = layout::unpack(b[layout::B_META]);
        b[layout::B_META] = u64::from(meta);
        b[layout::B_META] = layout::pack(meta, layout::body_check(&b));
        let base = layout::HEADER_WORDS + slot * layout::SLOT_WORDS;
        poke(&p, base, 2);
        for (i, w) in b.iter().enumerate() {
            poke(&p, base + 1 + i, *w);
        }
        lookups_are_honest(&p);
    }
}
