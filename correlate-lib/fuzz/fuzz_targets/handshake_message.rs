//! One handshake message as OpenSSL's message callback delivers it (the module's inline mode),
//! on arbitrary bytes, and the same bytes behind a valid header (so the body parser is reached);
//! and the module's memo key of it (`hello_key`), which must parse exactly like the message.
#![no_main]

use correlate_lib::fingerprint::{fingerprint_client_hello, hello};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fingerprint_client_hello(data);
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut message = vec![1, len[1], len[2], len[3]];
    message.extend_from_slice(data);
    let _ = fingerprint_client_hello(&message);
    if let Some(key) = hello::hello_key(&message) {
        assert_eq!(
            hello::parse_handshake_message(&key),
            hello::parse_handshake_message(&message)
        );
        assert_eq!(hello::hello_key(&key).as_deref(), Some(key.as_slice()));
    }
});
