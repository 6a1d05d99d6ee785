//! Shared between `ja4sensor` (the only ring writer) and `mod_reqin_log` (every httpd child reads):
//! the TLS/TCP record the sensor publishes, the field names of every JSON line we print, the
//! shared-memory ring that carries records from the sensor into Apache, the one
//! implementation of the fingerprints both compute ([`fingerprint`]: ClientHello, JA4, JA3, SYN
//! traits, OS guess; JA4T/JA4H behind the `foxio` feature), the verdict table that carries the
//! detector's verdicts back into Apache ([`verdict`]) and the ja4→client mapping ([`clients`]).
//!
//! No Apache and no pcap code lives here. All `unsafe` for the mappings (ring and verdict table)
//! is confined to `ring::mapping`; everything else is safe code.

#![deny(unsafe_code)]

pub mod clients;
pub mod config_file;
pub mod fields;
pub mod fingerprint;
pub mod follow;
pub mod join;
pub mod jsonl;
pub mod jsonscan;
pub mod record;
pub mod ring;
pub mod verdict;

pub use record::{ConnKey, IpMeta, RecordView, TcpMeta, TlsRecord};

/// The wall clock as Unix nanoseconds, the unit of every timestamp in records and the ring (0
/// before 1970, saturating far in the future).
pub fn unix_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
