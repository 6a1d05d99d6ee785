//! Records and helpers shared by the ring tests; the stress tests' harness ([`stress`]).

#![allow(dead_code, clippy::unwrap_used)]

pub mod stress;

use std::os::unix::fs::FileExt;
use std::path::Path;

use correlate_lib::fingerprint::syn::OptionKinds;
use correlate_lib::record::v4;
use correlate_lib::ring::layout::{self, Geometry};
use correlate_lib::{ConnKey, IpMeta, TcpMeta, TlsRecord};

pub fn key(port: u16) -> ConnKey {
    ConnKey::new(v4(10, 1, 2, 3, port), v4(192, 0, 2, 1, 443))
}

/// A record whose every field is derived from `n` (its 4-tuple from `n % keys`), so a reader
/// can tell a consistent record from a mix of two writes. Lengths vary with `n`, so a mix of two
/// writes would also shift every later field.
pub fn record(n: u64, keys: u64) -> TlsRecord {
    let port = 20_000 + (n % keys) as u16;
    TlsRecord {
        key: Some(key(port)),
        syn_time_ns: n * 10,
        hello_time_ns: n * 10 + 7,
        closed_time_ns: 0,
        ip: Some(IpMeta {
            ttl: (n % 255) as u8,
            total_length: (n % 65_000) as u16,
            id: (n % 65_000) as u16,
            df: n.is_multiple_of(2),
        }),
        tcp: Some(TcpMeta {
            window_size: (n % 65_000) as u16,
            mss: 1460,
            window_scale: Some((n % 15) as u8),
            options: format!("MSS,NOP,WScale{}", n % 7),
        }),
        tls_version: "1.3".into(),
        tls_sni: format!("host-{n}.example"),
        tls_alpn: "h2".into(),
        ja4: format!("t13d{n:012}"),
        ja4_r: "x".repeat((n % 300) as usize),
        ja3: format!("771,{n},{n},{n},0"),
        ja3_hash: format!("{n:032x}"),
        sensor_id: "stress".into(),
        tcp_os: ["", "Linux 3.11 and newer", "Windows 7 or 8"][(n % 3) as usize].into(),
        tcp_os_distance: Some((n % 40) as u8),
        tcp_option_kinds: OptionKinds::from_slice(
            &[2, 1, 3, 1, 1, 8, 4, 0, 0][..(n % 10) as usize],
        ),
    }
}

/// True when `rec` is exactly `record(n, keys)` for the `n` its timestamp names.
pub fn consistent(rec: &TlsRecord, keys: u64) -> bool {
    rec.hello_time_ns >= 7
        && (rec.hello_time_ns - 7).is_multiple_of(10)
        && *rec == record((rec.hello_time_ns - 7) / 10, keys)
}

/// Byte offset of `slot` in the ring file.
pub fn slot_offset(g: &Geometry, slot: u32) -> u64 {
    g.slots_start() as u64 * 8 + u64::from(slot) * u64::from(g.slot_size)
}

/// Overwrites `slot` in the file (through a second, writable handle, while readers have it
/// mapped) with a slot the writer could have written: even sequence, length, crc, payload.
pub fn forge_slot(path: &Path, g: &Geometry, slot: u32, payload: &[u8]) {
    forge_slot_raw(
        path,
        g,
        slot,
        2,
        layout::pack(payload.len() as u32, crc32fast::hash(payload)),
        payload,
    );
}

pub fn forge_slot_raw(
    path: &Path,
    g: &Geometry,
    slot: u32,
    seq: u64,
    len_word: u64,
    payload: &[u8],
) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let off = slot_offset(g, slot);
    f.write_all_at(&seq.to_le_bytes(), off).unwrap();
    f.write_all_at(&len_word.to_le_bytes(), off + 8).unwrap();
    f.write_all_at(payload, off + 16).unwrap();
}

/// Writes `value` into header/index word `word` of the file.
pub fn poke_word(path: &Path, word: usize, value: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&value.to_le_bytes(), word as u64 * 8)
        .unwrap();
}

pub fn encode(rec: &TlsRecord) -> Vec<u8> {
    let mut buf = Vec::new();
    rec.encode(&mut buf).unwrap();
    buf
}
