//! `ReqinLogJA4Plus On` (cargo feature `foxio`; FoxIO License 1.1, see NOTICE): JA4H of a
//! request, computed by correlate-lib. Pure: unit-tested without httpd.
//!
//! `ja4h_r`, the raw form, holds every cookie as `name=value`: cookies are credentials, and the
//! module logs no credential unless configured to (`ReqinLogRedactHeaders -Cookie`). So while
//! Cookie is redacted, `ja4h_r` carries each cookie as `name=[REDACTED]` (its names and their
//! order stay, they say how the client is built), computed by the same function over the
//! request with its cookie values replaced. `ja4h` stays FoxIO's: its last part is the first 12
//! hex digits of the SHA-256 of the sorted `name=value` list, which identifies a set of cookies
//! (two requests with the same cookies have the same `ja4h`) but does not reveal or replay it.

use std::borrow::Cow;

use correlate_lib::fingerprint::foxio::{ja4h as foxio_ja4h, HttpVersion};

use crate::config::REDACTED_VALUE;

/// JA4H and `ja4h_r` of a request: its method, `r->proto_num` and headers in the order httpd
/// holds them; cookie values redacted in `ja4h_r` when `redact_cookies`.
pub fn ja4h<'a>(
    method: &[u8],
    proto_num: u32,
    headers: impl Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
    redact_cookies: bool,
) -> (String, String) {
    let version = HttpVersion::from_proto_num(proto_num);
    let full = foxio_ja4h(method, version, headers.clone());
    let has_cookie = headers
        .clone()
        .any(|(name, _)| name.eq_ignore_ascii_case(b"cookie"));
    if !redact_cookies || !has_cookie {
        return (full.ja4h, full.ja4h_r);
    }
    let redacted: Vec<(&[u8], Cow<'_, [u8]>)> = headers
        .map(|(name, value)| {
            if name.eq_ignore_ascii_case(b"cookie") {
                (name, Cow::Owned(redact_cookie_values(value)))
            } else {
                (name, Cow::Borrowed(value))
            }
        })
        .collect();
    let raw = foxio_ja4h(
        method,
        version,
        redacted.iter().map(|(n, v)| (*n, v.as_ref())),
    );
    (full.ja4h, raw.ja4h_r)
}

/// `a=1; b=2` → `a=[REDACTED]; b=[REDACTED]` (a cookie without `=` keeps its name only).
fn redact_cookie_values(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 16);
    for (i, pair) in value.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        let pair = pair.trim_ascii();
        match pair.iter().position(|&b| b == b'=') {
            Some(eq) => {
                out.extend_from_slice(&pair[..eq]);
                out.push(b'=');
                out.extend_from_slice(REDACTED_VALUE.as_bytes());
            }
            None => out.extend_from_slice(pair),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HEADERS: &[(&[u8], &[u8])] = &[
        (b"Host", b"example.com"),
        (b"User-Agent", b"curl/8"),
        (b"Cookie", b"session=s3cr3t; theme=dark"),
        (b"Accept-Language", b"en-US,en;q=0.9"),
    ];

    #[test]
    fn cookie_values_never_reach_the_raw_form_unless_allowed() {
        let (hash, raw) = ja4h(b"GET", 1001, HEADERS.iter().copied(), true);
        let (hash_plain, raw_plain) = ja4h(b"GET", 1001, HEADERS.iter().copied(), false);
        assert_eq!(hash, hash_plain, "ja4h is FoxIO's either way");
        assert!(hash.starts_with("ge11cn03enus_"), "{hash}");
        assert!(raw_plain.contains("session=s3cr3t"), "{raw_plain}");
        assert!(!raw.contains("s3cr3t") && !raw.contains("dark"), "{raw}");
        assert!(
            raw.ends_with("_session,theme_session=[REDACTED],theme=[REDACTED]"),
            "{raw}"
        );
        assert_eq!(
            raw.split('_').next(),
            raw_plain.split('_').next(),
            "the same request"
        );
    }

    #[test]
    fn a_request_without_cookies_is_computed_once() {
        let h: &[(&[u8], &[u8])] = &[(b"Host", b"x"), (b"Accept", b"*/*")];
        let (hash, raw) = ja4h(b"POST", 2000, h.iter().copied(), true);
        assert!(hash.starts_with("po20nn02"), "{hash}");
        assert!(raw.ends_with("_Host,Accept_"), "{raw}");
    }
}
