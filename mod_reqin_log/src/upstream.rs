//! Fingerprints from a trusted proxy (a CDN or load balancer in front of httpd): like
//! mod_remoteip trusts `X-Forwarded-For` only from `RemoteIPTrustedProxy`, a request whose TCP
//! peer is a `ReqinLogTrustedProxy` has its `ja4`/`ja3_hash` from the headers the proxy sets
//! (`ReqinLogProxyHeader`, CloudFront's `CloudFront-Viewer-JA4-Fingerprint` and
//! `CloudFront-Viewer-JA3-Fingerprint` by default), with `fingerprint_source: "upstream"`; the
//! proxy's own handshake says nothing about the client and is not logged for it. From any
//! other peer those headers are forged: they are removed from the request at
//! `post_read_request` (REALLY_FIRST), before any other module (mod_setenvif, mod_rewrite,
//! mod_proxy passing them on, a CGI) sees them.

use std::ffi::CString;
use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Settings, UpstreamField};

/// Longest JA4 accepted from a header (a JA4 is 36 characters).
const MAX_JA4_LEN: usize = 64;
/// A JA3 hash: the MD5 of the JA3 string, in hex.
const JA3_HASH_LEN: usize = 32;

/// One server's trusted proxies and the headers they send (`None` in [`ServerState`] without
/// `ReqinLogTrustedProxy`).
///
/// [`ServerState`]: crate::hooks::ServerState
#[derive(Debug, Clone)]
pub struct Upstream {
    proxies: Vec<IpNet>,
    headers: Vec<(UpstreamField, CString)>,
}

/// What a trusted proxy said about its client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamValues {
    pub ja4: Option<String>,
    pub ja3_hash: Option<String>,
}

/// A request screened for fingerprint headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// No `ReqinLogTrustedProxy` for this server: headers are neither used nor removed.
    NotConfigured,
    /// From a trusted proxy, with at least one valid value.
    Trusted(UpstreamValues),
    /// From a trusted proxy, without a valid value (`invalid`: headers that were not one).
    TrustedWithout { invalid: u64 },
    /// From another peer; `removed`: fingerprint headers it sent, now gone from the request.
    Untrusted { removed: u64 },
}

impl Upstream {
    pub fn from_settings(settings: &Settings) -> Option<Self> {
        let (proxies, headers) = settings.upstream()?;
        Some(Self {
            proxies: proxies.to_vec(),
            headers: headers
                .into_iter()
                .filter_map(|(f, name)| Some((f, CString::new(name).ok()?)))
                .collect(),
        })
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        let peer = correlate_lib::record::normalize_ip(peer);
        self.proxies.iter().any(|net| net.contains(&peer))
    }

    /// Screens a request whose TCP peer is `peer`: `get` reads a header, `remove` deletes it.
    pub fn screen<'h>(
        &self,
        peer: Option<IpAddr>,
        get: impl Fn(&std::ffi::CStr) -> Option<&'h [u8]>,
        remove: impl Fn(&std::ffi::CStr),
    ) -> Screened {
        if peer.is_some_and(|p| self.trusts(p)) {
            let mut values = UpstreamValues::default();
            let mut invalid = 0;
            for (field, name) in &self.headers {
                let Some(raw) = get(name) else { continue };
                match (field, valid(*field, raw)) {
                    (_, None) => invalid += 1,
                    (UpstreamField::Ja4, Some(v)) => values.ja4 = Some(v),
                    (UpstreamField::Ja3Hash, Some(v)) => values.ja3_hash = Some(v),
                }
            }
            return if values == UpstreamValues::default() {
                Screened::TrustedWithout { invalid }
            } else {
                Screened::Trusted(values)
            };
        }
        let mut removed = 0;
        for (_, name) in &self.headers {
            if get(name).is_some() {
                remove(name);
                removed += 1;
            }
        }
        Screened::Untrusted { removed }
    }
}

/// A header's value as the field takes it: a JA4 is ASCII letters, digits and `_`; a JA3 hash
/// 32 hex digits (written lower-case). Anything else is not used.
pub fn valid(field: UpstreamField, raw: &[u8]) -> Option<String> {
    let raw = raw.trim_ascii();
    let ok = match field {
        UpstreamField::Ja4 => {
            !raw.is_empty()
                && raw.len() <= MAX_JA4_LEN
                && raw.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        }
        UpstreamField::Ja3Hash => {
            raw.len() == JA3_HASH_LEN && raw.iter().all(u8::is_ascii_hexdigit)
        }
    };
    if !ok {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    Some(match field {
        UpstreamField::Ja4 => text.to_owned(),
        UpstreamField::Ja3Hash => text.to_ascii_lowercase(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    fn upstream() -> Upstream {
        let mut s = Settings::default();
        s.apply("ReqinLogTrustedProxy", &["10.0.0.0/8"], |_| None)
            .unwrap();
        s.apply("ReqinLogTrustedProxy", &["::1"], |_| None).unwrap();
        s.apply("ReqinLogProxyHeader", &["ja3_hash", "X-Edge-JA3"], |_| None)
            .unwrap();
        Upstream::from_settings(&s).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> RefCell<HashMap<String, Vec<u8>>> {
        RefCell::new(
            pairs
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    fn screen(u: &Upstream, peer: &str, h: &RefCell<HashMap<String, Vec<u8>>>) -> Screened {
        let snapshot = h.borrow().clone();
        let leaked: &'static HashMap<String, Vec<u8>> = Box::leak(Box::new(snapshot));
        u.screen(
            Some(peer.parse().unwrap()),
            |name| {
                leaked
                    .get(&name.to_str().unwrap().to_ascii_lowercase())
                    .map(Vec::as_slice)
            },
            |name| {
                h.borrow_mut()
                    .remove(&name.to_str().unwrap().to_ascii_lowercase());
            },
        )
    }

    const JA4: &str = "t13d1516h2_8daaf6152771_e5627efa2ab1";

    #[test]
    fn a_trusted_proxy_fills_the_fields_from_its_headers() {
        let u = upstream();
        let h = headers(&[
            ("CloudFront-Viewer-JA4-Fingerprint", JA4),
            ("X-Edge-JA3", "0123456789ABCDEF0123456789abcdef"),
        ]);
        assert_eq!(
            screen(&u, "10.1.2.3", &h),
            Screened::Trusted(UpstreamValues {
                ja4: Some(JA4.into()),
                ja3_hash: Some("0123456789abcdef0123456789abcdef".into()),
            })
        );
        assert_eq!(h.borrow().len(), 2, "a trusted proxy's headers stay");
        assert!(
            u.trusts("::ffff:10.0.0.1".parse().unwrap()),
            "dual-stack peer"
        );
    }

    #[test]
    fn anyone_else_has_the_headers_removed() {
        let u = upstream();
        let h = headers(&[("CloudFront-Viewer-JA4-Fingerprint", JA4), ("Host", "x")]);
        assert_eq!(
            screen(&u, "192.0.2.1", &h),
            Screened::Untrusted { removed: 1 }
        );
        assert_eq!(h.borrow().keys().collect::<Vec<_>>(), ["host"]);
    }

    #[test]
    fn garbage_from_a_trusted_proxy_is_not_a_fingerprint() {
        let u = upstream();
        let h = headers(&[("CloudFront-Viewer-JA4-Fingerprint", "t13d\"<script>")]);
        assert_eq!(
            screen(&u, "::1", &h),
            Screened::TrustedWithout { invalid: 1 }
        );
        assert_eq!(valid(UpstreamField::Ja3Hash, b"abc"), None);
        assert_eq!(
            valid(UpstreamField::Ja4, b" t13d_a_b "),
            Some("t13d_a_b".into())
        );
    }

    #[test]
    fn without_trusted_proxies_nothing_is_screened() {
        assert!(Upstream::from_settings(&Settings::default()).is_none());
    }
}
