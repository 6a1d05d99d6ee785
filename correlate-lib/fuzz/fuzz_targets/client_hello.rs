//! ClientHello framing (TLS records) and parsing, then both fingerprints, on arbitrary bytes:
//! what the sensor reads from a reassembled TCP stream.
#![no_main]

use correlate_lib::fingerprint::hello::parse_client_hello;
use correlate_lib::fingerprint::{TlsFingerprint, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = parse_client_hello(data) {
        let _ = TlsFingerprint::of(&hello, Transport::Tcp);
    }
});
