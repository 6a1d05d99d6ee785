//! ClientHello extraction: from the bytes a client sent on a TCP connection to a parsed
//! [`ClientHello`] holding exactly what JA4 and JA3 need.
//!
//! The input is hostile. Framing (TLS records → one handshake message) is checked here against
//! named limits before anything is allocated; the message body is parsed by `tls-parser`, whose
//! parsers return errors instead of panicking. Extensions are split with
//! [`tls_parser::parse_tls_extension_unknown`], which keeps every raw type id in wire order
//! (GREASE and unknown ones included), and only the few we read are parsed further.
//!
//! Two entry points, one parser:
//! - [`parse_client_hello_prefix`]: the client's TCP stream bytes from where a hello should start
//!   (TLS records, what the sensor reassembles); a hello that needs more bytes is reported as
//!   [`HelloError::Incomplete`] and the same function is called again once more segments arrived.
//! - [`parse_handshake_message`]: one whole handshake message without the record layer, what
//!   OpenSSL's `SSL_set_msg_callback` hands an httpd module (see its doc).

use std::borrow::Cow;

use tls_parser::{
    parse_tls_client_hello_extension, parse_tls_extension_unknown,
    parse_tls_handshake_client_hello, parse_tls_record_header, SNIType, TlsExtension,
    TlsExtensionType, TlsRecordType,
};

/// RFC 8446 §5.1: a plaintext record fragment is at most 2^14 bytes. Anything longer is not a
/// TLS record (or is hostile); refusing it keeps a garbage length from being trusted.
pub const MAX_RECORD_PAYLOAD: usize = 16 * 1024;

/// Largest ClientHello handshake body accepted. Real hellos are < 2 KiB, post-quantum key shares
/// and padding push them to ~8 KiB; 64 KiB leaves room for large PSK tickets while bounding what
/// a hostile 24-bit length can make us buffer.
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// ChangeCipherSpec records skipped before a ClientHello. In TLS 1.3 middlebox-compatibility
/// mode (RFC 8446 §D.4) a client sends one CCS right before its second ClientHello after a
/// HelloRetryRequest, often in the same segment.
const MAX_LEADING_CCS: usize = 1;

const RECORD_HEADER_LEN: usize = 5;
const HANDSHAKE_HEADER_LEN: usize = 4;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0x0000;
const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
const EXT_EC_POINT_FORMATS: u16 = 0x000b;
const EXT_SIGNATURE_ALGORITHMS: u16 = 0x000d;
const EXT_ALPN: u16 = 0x0010;
const EXT_SUPPORTED_VERSIONS: u16 = 0x002b;

/// The fields of a ClientHello that the fingerprints and the sensor record use. Lists keep wire
/// order and GREASE values; the fingerprint code decides what to drop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ClientHello {
    /// The body's `legacy_version` (not the record-layer version).
    pub legacy_version: u16,
    pub ciphers: Vec<u16>,
    /// Extension type ids in wire order.
    pub extensions: Vec<u16>,
    /// First `host_name` of the server_name extension, if the extension carried one.
    pub sni: Option<String>,
    /// ALPN protocol names in offered order; `None` when the extension is absent.
    pub alpn: Option<Vec<Vec<u8>>>,
    pub supported_versions: Vec<u16>,
    /// signature_algorithms (0x000d) in original order.
    pub signature_algorithms: Vec<u16>,
    pub supported_groups: Vec<u16>,
    pub ec_point_formats: Vec<u8>,
    /// Types of extensions whose content we read but could not parse. The type still counts in
    /// the fingerprints (it was offered); its content contributes nothing.
    pub malformed_extensions: Vec<u16>,
}

impl ClientHello {
    /// First ALPN value (`Some(empty)` for an empty list or empty first value).
    pub fn first_alpn(&self) -> Option<&[u8]> {
        self.alpn
            .as_ref()
            .map(|list| list.first().map(Vec::as_slice).unwrap_or_default())
    }
}

/// Why a byte buffer did not yield a ClientHello.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The bytes do not start with a TLS record header (HTTP, SSH, proxy handshakes...).
    #[error("not a TLS record: content type {content_type:#04x}, version {version:#06x}")]
    NotTls { content_type: u8, version: u16 },
    /// A TLS record, but not a handshake (application data, alert...).
    #[error("TLS record of content type {content_type} is not a handshake")]
    NotHandshake { content_type: u8 },
    /// A handshake message other than ClientHello (ServerHello, Finished...).
    #[error("handshake message type {msg_type} is not a ClientHello")]
    NotClientHello { msg_type: u8 },
    /// More bytes are needed: `have` bytes of handshake data, `need` when the length is known.
    #[error("ClientHello incomplete: {have} bytes buffered, {need:?} needed")]
    Incomplete { have: usize, need: Option<usize> },
    #[error("TLS record of {len} bytes exceeds the {max}-byte limit")]
    RecordTooLong { len: usize, max: usize },
    #[error("ClientHello of {len} bytes exceeds the {max}-byte limit")]
    HelloTooLong { len: usize, max: usize },
    #[error("record of content type {content_type} interleaved with the ClientHello")]
    Interleaved { content_type: u8 },
    #[error("malformed ClientHello body ({len} bytes)")]
    MalformedBody { len: usize },
    #[error("malformed extension list at offset {offset} of {len} bytes")]
    MalformedExtensions { offset: usize, len: usize },
    /// A handshake message whose 24-bit length says `declared` body bytes where the buffer holds
    /// `len` bytes after the 4-byte header (only [`parse_handshake_message`], which expects the
    /// message exactly).
    #[error("handshake message declares {declared} body bytes, buffer has {len}")]
    LengthMismatch { declared: usize, len: usize },
}

/// Reads one ClientHello from the start of `bytes`: optional ChangeCipherSpec record, then one or
/// more handshake records whose concatenated fragments hold the ClientHello message.
pub fn parse_client_hello(bytes: &[u8]) -> Result<ClientHello, HelloError> {
    parse_client_hello_prefix(bytes).map(|(hello, _)| hello)
}

/// Like [`parse_client_hello`], also returning how many bytes of `bytes` the hello's records
/// used (up to the end of the record holding its last byte, or of `bytes`), so that a second
/// ClientHello (after a HelloRetryRequest) is looked for after them.
pub fn parse_client_hello_prefix(bytes: &[u8]) -> Result<(ClientHello, usize), HelloError> {
    let (message, used) = handshake_message(bytes)?;
    Ok((parse_client_hello_message(&message)?, used))
}

/// Parses one ClientHello handshake message (`msg_type` 1, 24-bit length, body) without any TLS
/// record header: exactly what OpenSSL 1.1.1 and 3.x pass to the callback set with
/// `SSL_set_msg_callback` for a received handshake message (`write_p == 0`,
/// `content_type == SSL3_RT_HANDSHAKE` (22); `tls_get_message_body` in `ssl/statem/statem_lib.c`
/// calls it with `init_buf->data` and `init_num + SSL3_HM_HEADER_LENGTH` bytes). OpenSSL has
/// already joined a hello split over several records or segments. The same callback also sees
/// record headers (`content_type` 256, `SSL3_RT_HEADER`), TLS 1.3 inner content types (257) and
/// an SSLv2-compatible hello (`content_type` 0, `SSL2_VERSION`, whose first byte is also 1):
/// the caller passes only content type 22; anything else is refused here by its length.
///
/// The buffer must hold the message exactly: a body shorter than its declared length is
/// [`HelloError::Incomplete`] (a copy cut short by the caller's bound), a longer buffer is
/// [`HelloError::LengthMismatch`].
pub fn parse_handshake_message(message: &[u8]) -> Result<ClientHello, HelloError> {
    let Some(&msg_type) = message.first() else {
        return Err(HelloError::Incomplete {
            have: 0,
            need: None,
        });
    };
    if msg_type != HANDSHAKE_CLIENT_HELLO {
        return Err(HelloError::NotClientHello { msg_type });
    }
    let Some(need) = wanted_len(message) else {
        return Err(HelloError::Incomplete {
            have: message.len(),
            need: None,
        });
    };
    let declared = need - HANDSHAKE_HEADER_LEN;
    if declared > MAX_HELLO_BYTES {
        return Err(HelloError::HelloTooLong {
            len: declared,
            max: MAX_HELLO_BYTES,
        });
    }
    match message.len().cmp(&need) {
        std::cmp::Ordering::Less => Err(HelloError::Incomplete {
            have: message.len(),
            need: Some(need),
        }),
        std::cmp::Ordering::Greater => Err(HelloError::LengthMismatch {
            declared,
            len: message.len() - HANDSHAKE_HEADER_LEN,
        }),
        std::cmp::Ordering::Equal => parse_client_hello_message(message),
    }
}

/// The bytes of a ClientHello handshake message ([`parse_handshake_message`]'s input) that the
/// [`ClientHello`] parsed from it depends on: the message with the random, the session id's
/// bytes and the content of every extension the parser does not read (all but server_name,
/// supported_groups, ec_point_formats, signature_algorithms, ALPN, supported_versions) set to
/// zero, every type and length kept. Two messages with the same key parse to the same
/// [`ClientHello`], or both fail: the parser reads nothing of the zeroed bytes but their
/// lengths. So a cache of fingerprints can be keyed by it, to skip the parse for a client that
/// sends the same hello again (only the random, its session id and its key share change from
/// one connection to the next). `None` when the framing does not hold (then parse it: it fails
/// or gives what it gives).
pub fn hello_key(message: &[u8]) -> Option<Vec<u8>> {
    let mut key = Vec::new();
    hello_key_into(message, &mut key)?;
    Some(key)
}

/// [`hello_key`] written into `key` (its old content replaced), so a caller that looks keys up
/// far more often than it keeps one can reuse a buffer. `None`, and `key` unspecified, when
/// the framing does not hold.
pub fn hello_key_into(message: &[u8], key: &mut Vec<u8>) -> Option<()> {
    if message.first() != Some(&HANDSHAKE_CLIENT_HELLO)
        || wanted_len(message) != Some(message.len())
        || message.len() - HANDSHAKE_HEADER_LEN > MAX_HELLO_BYTES
    {
        return None;
    }
    key.clear();
    key.extend_from_slice(message);
    let zero = |key: &mut [u8], at: usize, len: usize| -> Option<()> {
        key.get_mut(at..at.checked_add(len)?)?.fill(0);
        Some(())
    };
    let u8_at = |at: usize| message.get(at).copied().map(usize::from);
    let u16_at = |at: usize| {
        Some(usize::from(u16::from_be_bytes([
            *message.get(at)?,
            *message.get(at + 1)?,
        ])))
    };
    // Header (4), legacy_version (2), random (32).
    let mut at = HANDSHAKE_HEADER_LEN + 2;
    zero(key, at, 32)?;
    at += 32;
    let session_id = u8_at(at)?;
    zero(key, at + 1, session_id)?;
    at += 1 + session_id;
    at += 2 + u16_at(at)?; // cipher suites
    at += 1 + u8_at(at)?; // compression methods
    if at >= message.len() {
        return Some(());
    }
    let end = (at + 2).checked_add(u16_at(at)?)?.min(message.len());
    at += 2;
    while at + 4 <= end {
        let ext_type = u16_at(at)?;
        let len = u16_at(at + 2)?;
        let read = matches!(
            u16::try_from(ext_type).ok()?,
            EXT_SERVER_NAME
                | EXT_SUPPORTED_GROUPS
                | EXT_EC_POINT_FORMATS
                | EXT_SIGNATURE_ALGORITHMS
                | EXT_ALPN
                | EXT_SUPPORTED_VERSIONS
        );
        if !read && at + 4 + len <= end {
            zero(key, at + 4, len)?;
        }
        at += 4 + len;
    }
    Some(())
}

/// Collects the fragments of the first handshake message from a run of TLS records; returns it
/// with the number of input bytes its records span.
fn handshake_message(bytes: &[u8]) -> Result<(Cow<'_, [u8]>, usize), HelloError> {
    let mut message: Vec<u8> = Vec::new();
    let mut rest = bytes;
    let mut ccs_skipped = 0;
    loop {
        if rest.len() < RECORD_HEADER_LEN {
            return Err(match (message.is_empty(), rest.first()) {
                // Not even a record header: decide on the bytes we have.
                (true, Some(&b)) if b != TlsRecordType::Handshake.0 && b != 20 => {
                    HelloError::NotTls {
                        content_type: b,
                        version: 0,
                    }
                }
                _ => HelloError::Incomplete {
                    have: message.len(),
                    need: wanted_len(&message),
                },
            });
        }
        let (after_header, header) =
            parse_tls_record_header(rest).map_err(|_| HelloError::Incomplete {
                have: message.len(),
                need: wanted_len(&message),
            })?;
        let content_type = header.record_type.0;
        let version = header.version.0;
        // SSL 3.0 and every TLS version put 3 in the major byte of the record version.
        let known_type = matches!(content_type, 20..=23);
        if !known_type || version >> 8 != 3 {
            return Err(HelloError::NotTls {
                content_type,
                version,
            });
        }
        let len = usize::from(header.len);
        if len > MAX_RECORD_PAYLOAD {
            return Err(HelloError::RecordTooLong {
                len,
                max: MAX_RECORD_PAYLOAD,
            });
        }
        if content_type == TlsRecordType::ChangeCipherSpec.0
            && message.is_empty()
            && ccs_skipped < MAX_LEADING_CCS
        {
            ccs_skipped += 1;
            rest = after_header.get(len..).ok_or(HelloError::Incomplete {
                have: 0,
                need: None,
            })?;
            continue;
        }
        if content_type != TlsRecordType::Handshake.0 {
            return Err(if message.is_empty() {
                HelloError::NotHandshake { content_type }
            } else {
                HelloError::Interleaved { content_type }
            });
        }
        let available = after_header.len().min(len);
        let fragment = after_header.get(..available).unwrap_or_default();
        if message.is_empty() {
            if let Some(&msg_type) = fragment.first() {
                if msg_type != HANDSHAKE_CLIENT_HELLO {
                    return Err(HelloError::NotClientHello { msg_type });
                }
            }
        }
        if message.is_empty() {
            // The usual case, the whole message in its first record: read in place.
            if let Some(need) = wanted_len(fragment) {
                if need - HANDSHAKE_HEADER_LEN <= MAX_HELLO_BYTES {
                    if let Some(whole) = fragment.get(..need) {
                        let record_end = bytes.len() - after_header.len() + available;
                        return Ok((Cow::Borrowed(whole), record_end));
                    }
                }
            }
        }
        message.extend_from_slice(fragment);
        if let Some(need) = wanted_len(&message) {
            if need - HANDSHAKE_HEADER_LEN > MAX_HELLO_BYTES {
                return Err(HelloError::HelloTooLong {
                    len: need - HANDSHAKE_HEADER_LEN,
                    max: MAX_HELLO_BYTES,
                });
            }
            if message.len() >= need {
                message.truncate(need);
                let record_end = bytes.len() - after_header.len() + available;
                return Ok((Cow::Owned(message), record_end));
            }
        }
        if available < len {
            return Err(HelloError::Incomplete {
                have: message.len(),
                need: wanted_len(&message),
            });
        }
        rest = after_header.get(len..).unwrap_or_default();
    }
}

/// Total length (header included) of the handshake message whose first bytes are `message`.
fn wanted_len(message: &[u8]) -> Option<usize> {
    match message {
        [_, a, b, c, ..] => Some(
            HANDSHAKE_HEADER_LEN + (usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c)),
        ),
        _ => None,
    }
}

/// Parses a complete handshake message (4-byte header included) that is a ClientHello.
fn parse_client_hello_message(message: &[u8]) -> Result<ClientHello, HelloError> {
    let body = message.get(HANDSHAKE_HEADER_LEN..).unwrap_or_default();
    let malformed = || HelloError::MalformedBody { len: body.len() };
    let (rest, contents) = parse_tls_handshake_client_hello(body).map_err(|_| malformed())?;
    // tls-parser treats an extension block whose length overruns the message as "no
    // extensions"; bytes left over mean exactly that, and we refuse it.
    if contents.ext.is_none() && !rest.is_empty() {
        return Err(malformed());
    }
    let mut hello = ClientHello {
        legacy_version: contents.version.0,
        ciphers: contents.ciphers.iter().map(|c| c.0).collect(),
        ..ClientHello::default()
    };
    if let Some(ext_bytes) = contents.ext {
        read_extensions(ext_bytes, &mut hello)?;
    }
    Ok(hello)
}

fn read_extensions(ext_bytes: &[u8], hello: &mut ClientHello) -> Result<(), HelloError> {
    // Each extension takes at least 4 bytes; real hellos have about 20.
    hello.extensions.reserve((ext_bytes.len() / 4).min(32));
    let mut rest = ext_bytes;
    while !rest.is_empty() {
        let offset = ext_bytes.len() - rest.len();
        let bad_list = || HelloError::MalformedExtensions {
            offset,
            len: ext_bytes.len(),
        };
        let (after, ext) = parse_tls_extension_unknown(rest).map_err(|_| bad_list())?;
        let TlsExtension::Unknown(TlsExtensionType(ext_type), _) = ext else {
            return Err(bad_list());
        };
        let raw = rest.get(..rest.len() - after.len()).ok_or_else(bad_list)?;
        rest = after;
        hello.extensions.push(ext_type);
        if !matches!(
            ext_type,
            EXT_SERVER_NAME
                | EXT_SUPPORTED_GROUPS
                | EXT_EC_POINT_FORMATS
                | EXT_SIGNATURE_ALGORITHMS
                | EXT_ALPN
                | EXT_SUPPORTED_VERSIONS
        ) {
            continue;
        }
        match parse_tls_client_hello_extension(raw) {
            Ok((_, parsed)) => apply_extension(ext_type, parsed, hello),
            Err(_) => hello.malformed_extensions.push(ext_type),
        }
    }
    Ok(())
}

fn apply_extension(ext_type: u16, parsed: TlsExtension<'_>, hello: &mut ClientHello) {
    match parsed {
        TlsExtension::SNI(names) => {
            if hello.sni.is_none() {
                hello.sni = names
                    .iter()
                    .find(|(kind, _)| *kind == SNIType::HostName)
                    .map(|(_, name)| String::from_utf8_lossy(name).into_owned());
            }
        }
        TlsExtension::ALPN(protocols) => {
            if hello.alpn.is_none() {
                hello.alpn = Some(protocols.iter().map(|p| p.to_vec()).collect());
            }
        }
        TlsExtension::EllipticCurves(groups) => {
            hello.supported_groups = groups.iter().map(|g| g.0).collect();
        }
        TlsExtension::EcPointFormats(formats) => hello.ec_point_formats = formats.to_vec(),
        TlsExtension::SignatureAlgorithms(algs) => hello.signature_algorithms = algs,
        TlsExtension::SupportedVersions(versions) => {
            hello.supported_versions = versions.iter().map(|v| v.0).collect();
        }
        // tls-parser returned another variant for a type we asked about: count it as unread.
        _ => hello.malformed_extensions.push(ext_type),
    }
}

/// ClientHello bytes for tests, benchmarks and fuzz seeds (other crates: feature `test-support`).
#[cfg(any(test, feature = "test-support"))]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub mod testing {
    use super::*;

    /// Builds ClientHello bytes (record + handshake) for tests. Extensions are `(type, data)`.
    #[derive(Debug, Clone)]
    pub struct HelloBuilder {
        pub record_version: u16,
        pub legacy_version: u16,
        pub ciphers: Vec<u16>,
        pub extensions: Vec<(u16, Vec<u8>)>,
    }

    impl Default for HelloBuilder {
        fn default() -> Self {
            Self {
                record_version: 0x0301,
                legacy_version: 0x0303,
                ciphers: vec![0x1301],
                extensions: Vec::new(),
            }
        }
    }

    fn u16_list(values: &[u16], len_bytes: usize) -> Vec<u8> {
        let body: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
        let mut out = Vec::new();
        if len_bytes == 1 {
            out.push(body.len() as u8);
        } else {
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        out.extend(body);
        out
    }

    impl HelloBuilder {
        pub fn ext(mut self, ext_type: u16, data: Vec<u8>) -> Self {
            self.extensions.push((ext_type, data));
            self
        }

        pub fn sni(self, name: &str) -> Self {
            let mut entry = vec![0u8];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name.as_bytes());
            let mut data = (entry.len() as u16).to_be_bytes().to_vec();
            data.extend(entry);
            self.ext(EXT_SERVER_NAME, data)
        }

        pub fn alpn(self, protocols: &[&[u8]]) -> Self {
            let mut list = Vec::new();
            for p in protocols {
                list.push(p.len() as u8);
                list.extend_from_slice(p);
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            self.ext(EXT_ALPN, data)
        }

        pub fn supported_versions(self, versions: &[u16]) -> Self {
            self.ext(EXT_SUPPORTED_VERSIONS, u16_list(versions, 1))
        }

        pub fn sigalgs(self, algs: &[u16]) -> Self {
            self.ext(EXT_SIGNATURE_ALGORITHMS, u16_list(algs, 2))
        }

        pub fn groups(self, groups: &[u16]) -> Self {
            self.ext(EXT_SUPPORTED_GROUPS, u16_list(groups, 2))
        }

        pub fn point_formats(self, formats: &[u8]) -> Self {
            let mut data = vec![formats.len() as u8];
            data.extend_from_slice(formats);
            self.ext(EXT_EC_POINT_FORMATS, data)
        }

        /// The handshake message (type, 24-bit length, body).
        pub fn message(&self) -> Vec<u8> {
            let mut body = Vec::new();
            body.extend_from_slice(&self.legacy_version.to_be_bytes());
            body.extend_from_slice(&[0x11; 32]);
            body.push(0);
            body.extend(u16_list(&self.ciphers, 2));
            body.extend_from_slice(&[1, 0]);
            let mut exts = Vec::new();
            for (t, d) in &self.extensions {
                exts.extend_from_slice(&t.to_be_bytes());
                exts.extend_from_slice(&(d.len() as u16).to_be_bytes());
                exts.extend_from_slice(d);
            }
            body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
            body.extend(exts);
            let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
            msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            msg.extend(body);
            msg
        }

        /// The message in one TLS record.
        pub fn bytes(&self) -> Vec<u8> {
            record(22, self.record_version, &self.message())
        }

        pub fn parse(&self) -> ClientHello {
            parse_client_hello(&self.bytes()).unwrap()
        }
    }

    pub fn record(content_type: u8, version: u16, fragment: &[u8]) -> Vec<u8> {
        let mut out = vec![content_type];
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&(fragment.len() as u16).to_be_bytes());
        out.extend_from_slice(fragment);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::testing::{record, HelloBuilder};
    use super::*;

    #[test]
    fn hellos_that_differ_only_in_unread_bytes_have_one_key_and_one_parse() {
        let builder = HelloBuilder {
            ciphers: vec![0x1301, 0x1302, 0xc02b],
            ..HelloBuilder::default()
        }
        .sni("example.com")
        .alpn(&[b"h2", b"http/1.1"])
        .groups(&[0x001d, 0x0017])
        .supported_versions(&[0x0304, 0x0303])
        .ext(0x0033, vec![0, 0x24, 0, 0x1d, 0, 0x20, 7, 7, 7, 7])
        .ext(0x0015, vec![0; 16]);
        let mut other = builder.message();
        // Another random, and another key share and padding content.
        other[10] ^= 0xff;
        let len = other.len();
        other[len - 22] ^= 0x5a;
        other[len - 1] ^= 0x01;
        let first = builder.message();
        assert_ne!(first, other);
        assert_eq!(hello_key(&first), hello_key(&other));
        assert_eq!(
            parse_handshake_message(&first),
            parse_handshake_message(&other)
        );
        // What the fingerprint reads changes the key: a cipher, the SNI.
        let mut cipher = first.clone();
        cipher[4 + 2 + 32 + 1 + 2 + 1] ^= 1;
        assert_ne!(hello_key(&first), hello_key(&cipher));
        let sni = builder.clone().sni("example.org");
        assert_ne!(hello_key(&first), hello_key(&sni.message()));
        assert_eq!(hello_key(&first[..first.len() - 1]), None);
    }

    #[test]
    fn a_reused_key_buffer_holds_only_the_last_key() {
        let long = HelloBuilder::default()
            .sni("a-much-longer-name.example.com")
            .message();
        let short = HelloBuilder::default().sni("a.b").message();
        let mut key = Vec::new();
        assert_eq!(hello_key_into(&long, &mut key), Some(()));
        assert_eq!(Some(key.clone()), hello_key(&long));
        assert_eq!(hello_key_into(&short, &mut key), Some(()));
        assert_eq!(Some(key), hello_key(&short));
    }

    proptest::proptest! {
        #[test]
        fn equal_keys_parse_alike(a in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                  flips in proptest::collection::vec((0usize..300, 1u8..=255), 0..8)) {
            let mut msg = HelloBuilder::default().sni("a.b").message();
            msg.extend_from_slice(&a);
            // Make the declared length fit whatever was appended.
            let body = (msg.len() - 4) as u32;
            msg[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
            let mut other = msg.clone();
            for (at, x) in flips {
                if let Some(b) = other.get_mut(at % msg.len()) {
                    *b ^= x;
                }
            }
            if let (Some(k1), Some(k2)) = (hello_key(&msg), hello_key(&other)) {
                if k1 == k2 {
                    proptest::prop_assert_eq!(parse_handshake_message(&msg), parse_handshake_message(&other));
                }
                // The key itself parses like its message (only unread bytes differ).
                proptest::prop_assert_eq!(parse_handshake_message(&k2), parse_handshake_message(&other));
                proptest::prop_assert_eq!(hello_key(&k2), Some(k2));
            }
        }
    }

    #[test]
    fn fields_are_read_in_wire_order() {
        let hello = HelloBuilder {
            ciphers: vec![0x0a0a, 0x1301, 0xc02b],
            ..Default::default()
        }
        .sni("example.com")
        .alpn(&[b"h2", b"http/1.1"])
        .supported_versions(&[0x3a3a, 0x0304, 0x0303])
        .sigalgs(&[0x0403, 0x0804])
        .groups(&[0x2a2a, 0x001d])
        .point_formats(&[0])
        .parse();
        assert_eq!(hello.ciphers, [0x0a0a, 0x1301, 0xc02b]);
        assert_eq!(
            hello.extensions,
            [0x0000, 0x0010, 0x002b, 0x000d, 0x000a, 0x000b]
        );
        assert_eq!(hello.sni.as_deref(), Some("example.com"));
        assert_eq!(hello.first_alpn(), Some(&b"h2"[..]));
        assert_eq!(hello.supported_versions, [0x3a3a, 0x0304, 0x0303]);
        assert_eq!(hello.signature_algorithms, [0x0403, 0x0804]);
        assert_eq!(hello.supported_groups, [0x2a2a, 0x001d]);
        assert_eq!(hello.ec_point_formats, [0]);
        assert!(hello.malformed_extensions.is_empty());
    }

    #[test]
    fn hello_split_over_two_records_is_joined() {
        let msg = HelloBuilder::default().sni("a.example").message();
        let (a, b) = msg.split_at(10);
        let mut bytes = record(22, 0x0301, a);
        bytes.extend(record(22, 0x0301, b));
        assert_eq!(
            parse_client_hello(&bytes).unwrap().sni.as_deref(),
            Some("a.example")
        );
    }

    #[test]
    fn change_cipher_spec_before_second_hello_is_skipped() {
        let mut bytes = record(20, 0x0303, &[1]);
        bytes.extend(HelloBuilder::default().bytes());
        assert!(parse_client_hello(&bytes).is_ok());
    }

    #[test]
    fn truncated_hello_is_incomplete_not_malformed() {
        let bytes = HelloBuilder::default().sni("example.com").bytes();
        for cut in RECORD_HEADER_LEN..bytes.len() {
            let err = parse_client_hello(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, HelloError::Incomplete { .. }),
                "cut at {cut}: {err:?}"
            );
        }
    }

    #[test]
    fn non_tls_bytes_are_not_a_hello() {
        for bytes in [
            &b"CONNECT example.com:443 HTTP/1.1\r\n"[..],
            b"SSH-2.0-OpenSSH",
            &[5, 1, 0],
        ] {
            let err = parse_client_hello(bytes).unwrap_err();
            assert!(matches!(err, HelloError::NotTls { .. }), "{err:?}");
        }
        let app_data = record(23, 0x0303, &[0; 20]);
        assert_eq!(
            parse_client_hello(&app_data),
            Err(HelloError::NotHandshake { content_type: 23 })
        );
        let server_hello = record(22, 0x0303, &[2, 0, 0, 0]);
        assert_eq!(
            parse_client_hello(&server_hello),
            Err(HelloError::NotClientHello { msg_type: 2 })
        );
    }

    #[test]
    fn oversized_lengths_are_refused_before_buffering() {
        let mut bytes = vec![22, 3, 1, 0xff, 0xff];
        bytes.extend_from_slice(&[1, 0, 0, 10]);
        assert_eq!(
            parse_client_hello(&bytes),
            Err(HelloError::RecordTooLong {
                len: 0xffff,
                max: MAX_RECORD_PAYLOAD
            })
        );
        let huge = record(22, 0x0301, &[1, 0xff, 0xff, 0xff, 3, 3]);
        assert_eq!(
            parse_client_hello(&huge),
            Err(HelloError::HelloTooLong {
                len: 0xff_ffff,
                max: MAX_HELLO_BYTES
            })
        );
    }

    #[test]
    fn malformed_extension_content_keeps_the_type() {
        let hello = HelloBuilder::default()
            .ext(EXT_SIGNATURE_ALGORITHMS, vec![0, 5, 1])
            .parse();
        assert_eq!(hello.extensions, [EXT_SIGNATURE_ALGORITHMS]);
        assert_eq!(hello.malformed_extensions, [EXT_SIGNATURE_ALGORITHMS]);
    }

    #[test]
    fn every_prefix_and_byte_flip_of_a_hello_is_handled_without_panic() {
        let bytes = HelloBuilder::default()
            .sni("example.com")
            .alpn(&[b"h2"])
            .supported_versions(&[0x0304])
            .sigalgs(&[0x0403])
            .bytes();
        for i in 0..bytes.len() {
            let _ = parse_client_hello(&bytes[..i]);
            for flip in [0x00, 0xff, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = parse_client_hello(&b);
            }
        }
    }

    #[test]
    fn the_message_openssl_delivers_parses_like_the_record_the_sensor_reads() {
        let builder = HelloBuilder::default()
            .sni("inline.example")
            .alpn(&[b"h2"])
            .supported_versions(&[0x0304, 0x0303]);
        let from_message = parse_handshake_message(&builder.message()).unwrap();
        assert_eq!(from_message, parse_client_hello(&builder.bytes()).unwrap());
        assert_eq!(from_message.sni.as_deref(), Some("inline.example"));
    }

    #[test]
    fn a_handshake_message_must_be_whole_and_exact() {
        let msg = HelloBuilder::default().sni("x.example").message();
        for cut in 0..msg.len() {
            assert!(
                matches!(
                    parse_handshake_message(&msg[..cut]),
                    Err(HelloError::Incomplete { .. })
                ),
                "cut at {cut}"
            );
        }
        let mut longer = msg.clone();
        longer.push(0);
        assert_eq!(
            parse_handshake_message(&longer),
            Err(HelloError::LengthMismatch {
                declared: msg.len() - 4,
                len: msg.len() - 3
            })
        );
        // A record (what the sensor sees) is not a handshake message.
        assert_eq!(
            parse_handshake_message(&HelloBuilder::default().bytes()),
            Err(HelloError::NotClientHello { msg_type: 22 })
        );
        assert_eq!(
            parse_handshake_message(&[1, 0xff, 0xff, 0xff]),
            Err(HelloError::HelloTooLong {
                len: 0xff_ffff,
                max: MAX_HELLO_BYTES
            })
        );
    }

    #[test]
    fn an_sslv2_compatible_hello_is_refused_not_misread() {
        // OpenSSL passes an SSLv2-format hello with content type 0: msg_type 1, then version
        // 3.1 and a cipher-spec length where a handshake message has its 24-bit length.
        let v2 = [1u8, 3, 1, 0, 3, 0, 0, 0, 16, 0, 0, 0x2f];
        assert!(parse_handshake_message(&v2).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = parse_client_hello(&bytes);
        }

        #[test]
        fn random_handshake_messages_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let _ = parse_handshake_message(&bytes);
            let mut message = vec![HANDSHAKE_CLIENT_HELLO];
            message.extend_from_slice(&(bytes.len() as u32).to_be_bytes()[1..]);
            message.extend(&bytes);
            let _ = parse_handshake_message(&message);
        }

        #[test]
        fn random_handshake_body_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..2048)) {
            let mut message = vec![HANDSHAKE_CLIENT_HELLO];
            message.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
            message.extend(body);
            let _ = parse_client_hello(&record(22, 0x0301, &message));
        }
    }
}
