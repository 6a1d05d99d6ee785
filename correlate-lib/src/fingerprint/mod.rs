//! Fingerprints of a client from the bytes it sent, one implementation for every source: the
//! sensor (packets from libpcap), and httpd itself (the module's inline mode: the ClientHello from
//! OpenSSL's message callback, the SYN from `getsockopt(TCP_SAVED_SYN)`).
//!
//! - [`hello`]: a ClientHello, from TLS records ([`hello::parse_client_hello_prefix`]) or from
//!   one handshake message ([`hello::parse_handshake_message`]).
//! - [`ja4`], [`ja3`]: the TLS fingerprints of a parsed hello; [`TlsFingerprint`] gathers every
//!   TLS field of a record, [`fingerprint_client_hello`] is the module's one call.
//! - [`syn`]: the IP and TCP traits of a SYN, from its raw IP packet.
//! - [`os`]: the client's OS guessed from those traits with huginn-net's p0f database.
//! - `foxio` (cargo feature `foxio`, off by default): JA4T and JA4H, under the FoxIO License 1.1
//!   (see NOTICE).
//!
//! Everything here reads hostile bytes: no `unsafe`, no panics, no indexing without a bound,
//! every length checked against a named limit before it allocates; fuzzed from
//! `correlate-lib/fuzz/`.

#![forbid(unsafe_code)]

mod digits;
#[cfg(feature = "foxio")]
pub mod foxio;
pub mod hello;
pub mod ja3;
pub mod ja4;
pub mod os;
pub mod syn;

pub use hello::{ClientHello, HelloError};
pub use ja4::Transport;

use crate::{ConnKey, TlsRecord};

/// Every TLS field the record of a connection carries, computed from one [`ClientHello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFingerprint {
    pub ja4: String,
    pub ja4_r: String,
    pub ja3: String,
    pub ja3_hash: String,
    /// Highest offered version as ja4sentinel prints it: `1.3`, `1.2`, ...
    pub tls_version: String,
    /// The first `host_name` of the server_name extension, `None` without one.
    pub sni: Option<String>,
    /// The first ALPN protocol offered, as text (lossy for non-UTF-8 bytes); empty without ALPN.
    pub tls_alpn: String,
}

impl TlsFingerprint {
    pub fn of(hello: &ClientHello, transport: Transport) -> Self {
        let ja4 = ja4::ja4(hello, transport);
        let ja3 = ja3::ja3(hello);
        Self {
            ja4: ja4.ja4,
            ja4_r: ja4.ja4_r,
            ja3: ja3.ja3,
            ja3_hash: ja3.ja3_hash,
            tls_version: ja4::tls_version_label(ja4::offered_version(hello)),
            sni: hello.sni.clone(),
            tls_alpn: hello
                .first_alpn()
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .unwrap_or_default(),
        }
    }
}

/// The record of one TLS connection from its hello's fingerprint and, when its SYN was seen, the
/// SYN's time (Unix ns, 0 when unknown) and traits with the OS they suggest
/// ([`os::OsDatabase::guess`] of those traits; `None` without a database): what the sensor
/// publishes for a captured handshake and what the module's inline mode builds from
/// `TCP_SAVED_SYN` and OpenSSL's message callback, so both sources fill a record alike.
pub fn connection_record(
    key: ConnKey,
    hello_time_ns: u64,
    syn: Option<(u64, syn::SynTraits)>,
    tls: TlsFingerprint,
    guess: Option<os::OsGuess>,
    sensor_id: &str,
) -> TlsRecord {
    let guess = guess.filter(|_| syn.is_some());
    let (syn_time_ns, ip, tcp, tcp_option_kinds) = match syn {
        Some((time_ns, traits)) => (
            time_ns,
            Some(traits.ip),
            Some(traits.tcp),
            traits.option_kinds,
        ),
        None => (0, None, None, Default::default()),
    };
    let (tcp_os, tcp_os_distance) = match guess {
        Some(g) => (g.label.unwrap_or_default(), Some(g.distance)),
        None => (String::new(), None),
    };
    TlsRecord {
        key: Some(key),
        syn_time_ns,
        hello_time_ns,
        closed_time_ns: 0,
        ip,
        tcp,
        tls_version: tls.tls_version,
        tls_sni: tls.sni.unwrap_or_default(),
        tls_alpn: tls.tls_alpn,
        ja4: tls.ja4,
        ja4_r: tls.ja4_r,
        ja3: tls.ja3,
        ja3_hash: tls.ja3_hash,
        sensor_id: sensor_id.to_owned(),
        tcp_os,
        tcp_os_distance,
        tcp_option_kinds,
    }
}

/// The TLS fingerprint of a ClientHello handshake message exactly as OpenSSL's
/// `SSL_set_msg_callback` delivers it (handshake type 1, 24-bit length, body; no record header;
/// see [`hello::parse_handshake_message`] for which callbacks to pass).
pub fn fingerprint_client_hello(handshake_message: &[u8]) -> Result<TlsFingerprint, HelloError> {
    let hello = hello::parse_handshake_message(handshake_message)?;
    Ok(TlsFingerprint::of(&hello, Transport::Tcp))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use hello::testing::HelloBuilder;

    #[test]
    fn inline_and_sensor_hellos_get_the_same_fingerprint() {
        let builder = ja4::tests::spec_example();
        let inline = fingerprint_client_hello(&builder.message()).unwrap();
        let sensor = TlsFingerprint::of(
            &hello::parse_client_hello(&builder.bytes()).unwrap(),
            Transport::Tcp,
        );
        assert_eq!(inline, sensor);
        assert_eq!(inline.ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1");
        assert_eq!(inline.tls_version, "1.3");
        assert_eq!(inline.sni.as_deref(), Some("example.com"));
        assert_eq!(inline.tls_alpn, "h2");
        assert_eq!(
            fingerprint_client_hello(&HelloBuilder::default().bytes()),
            Err(HelloError::NotClientHello { msg_type: 22 })
        );
    }
}
