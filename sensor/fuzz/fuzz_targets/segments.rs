//! The reassembly path: arbitrary bytes become a run of TCP segments of one or a few
//! connections (random sequence numbers, flags and payloads) fed to one pipeline, so that
//! out-of-order, overlapping and hostile segment patterns meet the flow table and the parser.
#![no_main]

use ja4sensor::capture::LinkType;
use ja4sensor::pipeline::Pipeline;
use libfuzzer_sys::fuzz_target;

/// A raw IPv4 + TCP frame (no options) from port `sport` to 443.
fn frame(sport: u8, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let total = 40 + payload.len();
    let mut f = vec![0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0x40, 0, 64, 6, 0, 0];
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(&[0x9c, sport, 0x01, 0xbb]);
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

fuzz_target!(|data: &[u8]| {
    let mut pipeline = Pipeline::new(LinkType::Raw, 8, 1_000_000_000, String::new());
    let mut rest = data;
    let mut t = 0u64;
    // Each segment: [port][seq offset hi][seq offset lo][flags][len] then `len` payload bytes.
    while let [port, hi, lo, flags, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (payload, next) = tail.split_at(len);
        let seq = 1000u32.wrapping_add(u32::from(u16::from_be_bytes([*hi, *lo])));
        t += 1_000_000;
        pipeline.process(t, &frame(port % 4, seq, *flags, payload), &mut |_| {});
        rest = next;
    }
});
