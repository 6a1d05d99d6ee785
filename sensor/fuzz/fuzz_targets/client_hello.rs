//! ClientHello framing and parsing, then both fingerprints, on arbitrary bytes.
#![no_main]

use ja4sensor::fingerprint::{ja3, ja4, Transport};
use ja4sensor::hello::parse_client_hello;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(hello) = parse_client_hello(data) {
        let _ = ja4(&hello, Transport::Tcp);
        let _ = ja3(&hello);
    }
});
