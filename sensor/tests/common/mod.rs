//! Helpers shared by the capture tests.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

/// A TLS 1.3-style ClientHello with SNI `ring.test`, ALPN `h2`, two ciphers and
/// supported_versions 1.3/1.2, in one record.
pub fn client_hello() -> Vec<u8> {
    let mut exts = Vec::new();
    let name = b"ring.test";
    let mut sni = vec![0u8];
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    let mut sni_ext = (sni.len() as u16).to_be_bytes().to_vec();
    sni_ext.extend(sni);
    for (t, d) in [
        (0x0000u16, sni_ext),
        (0x0010, vec![0, 3, 2, b'h', b'2']),
        (0x002b, vec![4, 3, 4, 3, 3]),
        (0x000d, vec![0, 2, 4, 3]),
    ] {
        exts.extend_from_slice(&t.to_be_bytes());
        exts.extend_from_slice(&(d.len() as u16).to_be_bytes());
        exts.extend(d);
    }
    let mut body = vec![3, 3];
    body.extend_from_slice(&[7; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02, 1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend(exts);
    let mut msg = vec![1];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    rec.extend(msg);
    rec
}

/// Polls `f` every 50 ms for up to 10 s.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
