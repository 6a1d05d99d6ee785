//! JA4H of one HTTP request: `a_b_c_d` (FoxIO `technical_details/JA4H.md` and `JA4H.png`).
//!
//! - a: method (its first two letters, lower case: `ge`, `po`, `pu`...), version (`10`, `11`,
//!   `20`, `30`), `c`/`n` for a Cookie header present/absent, `r`/`n` for a Referer header,
//!   the number of headers (without Cookie and Referer, two digits, at most 99), and the first
//!   four characters of the primary Accept-Language (lower case, `-` dropped, up to the first
//!   `,` or `;`, padded with `0`; `0000` without the header);
//! - b: first 12 hex characters of the sha256 of the header names in the order received,
//!   joined by `,` (without Cookie, Referer and HTTP/2 pseudo-headers);
//! - c: the same of the cookie names, sorted; d: of the cookies `name=value`, sorted by name;
//!   `000000000000` without cookies.
//!
//! `ja4h_r` is `a_<header names>_` followed, when there are cookies, by
//! `<sorted cookie names>_<sorted cookies>`: the strings that are hashed. It carries the cookie
//! VALUES: whoever logs it logs the cookies.
//!
//! Where FoxIO's Python (`python/ja4h.py`, whose golden output is in `python/test/testdata/`)
//! and Rust (`rust/ja4/src/http.rs`) implementations differ, this follows Python and
//! Wireshark's plugin: HTTP/2 pseudo-headers (`:method`, `:path`...) are not headers (Rust
//! counts them), the language stops at `;` too, any method gets its first two letters (Rust
//! knows nine), and `ja4h_r` without cookies ends after the header names' `_`. Header names
//! starting with `cookie` (case-insensitive) are left out, as Python does; the Cookie and
//! Referer flags need those exact names.

use sha2::{Digest as _, Sha256};

use crate::fingerprint::digits::{
    push_count, push_hex, EMPTY_HASH, HASH_CHARS, HEX_DIGITS, MAX_TWO_DIGIT_COUNT,
};

/// Headers of one request taken into account; Apache's `LimitRequestFields` is 100 by default.
/// Later ones are ignored, so a hostile request cannot make the fingerprint unbounded work.
pub const MAX_HEADERS: usize = 512;
/// Cookies of one request taken into account (all Cookie headers together).
pub const MAX_COOKIES: usize = 512;
/// Characters of the language part.
const LANGUAGE_CHARS: usize = 4;

/// The request's HTTP version, as JA4H writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersion {
    Http10,
    Http11,
    Http2,
    Http3,
    /// Any other `major.minor` (`HTTP/0.9` is `09`).
    Other {
        major: u8,
        minor: u8,
    },
}

impl HttpVersion {
    /// From httpd's `r->proto_num` (`major * 1000 + minor`: 1001 for HTTP/1.1, 2000 for HTTP/2).
    pub fn from_proto_num(proto_num: u32) -> Self {
        match proto_num {
            1000 => Self::Http10,
            1001 => Self::Http11,
            2000 => Self::Http2,
            3000 => Self::Http3,
            n => Self::Other {
                major: ((n / 1000) % 10) as u8,
                minor: ((n % 1000) % 10) as u8,
            },
        }
    }

    fn digits(self) -> [u8; 2] {
        match self {
            Self::Http10 => *b"10",
            Self::Http11 => *b"11",
            Self::Http2 => *b"20",
            Self::Http3 => *b"30",
            Self::Other { major, minor } => [b'0' + major % 10, b'0' + minor % 10],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ja4h {
    pub ja4h: String,
    /// The raw form: header names, cookie names and cookies `name=value` (see the module doc).
    pub ja4h_r: String,
}

fn eq_ignore_case(name: &[u8], lower: &[u8]) -> bool {
    name.eq_ignore_ascii_case(lower)
}

/// JA4H of a request: its method, version and headers (name, value) in the order received.
/// Several Cookie headers (HTTP/2 may split them) are one cookie list.
pub fn ja4h<'a, I>(method: &[u8], version: HttpVersion, headers: I) -> Ja4h
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut names: Vec<&[u8]> = Vec::new();
    let mut cookie = false;
    let mut referer = false;
    let mut language: Option<&[u8]> = None;
    // (name, whole `name=value`), in order received.
    let mut cookies: Vec<(&[u8], &[u8])> = Vec::new();
    for (name, value) in headers.into_iter().take(MAX_HEADERS) {
        if eq_ignore_case(name, b"cookie") {
            cookie = true;
            for pair in value.split(|&b| b == b';') {
                let pair = pair.trim_ascii();
                if pair.is_empty() || cookies.len() == MAX_COOKIES {
                    continue;
                }
                let name = pair
                    .split(|&b| b == b'=')
                    .next()
                    .unwrap_or_default()
                    .trim_ascii();
                cookies.push((name, pair));
            }
            continue;
        }
        if eq_ignore_case(name, b"referer") {
            referer = true;
            continue;
        }
        if language.is_none() && eq_ignore_case(name, b"accept-language") {
            language = Some(value);
        }
        let cookie_like = name.get(..6).is_some_and(|p| eq_ignore_case(p, b"cookie"));
        if name.is_empty() || name.first() == Some(&b':') || cookie_like {
            continue;
        }
        names.push(name);
    }
    // Stable: cookies of the same name keep their order (Python's `sorted`).
    cookies.sort_by(|a, b| a.0.cmp(b.0));

    let mut a = Vec::with_capacity(12);
    push_method(&mut a, method);
    a.extend_from_slice(&version.digits());
    a.push(if cookie { b'c' } else { b'n' });
    a.push(if referer { b'r' } else { b'n' });
    push_count(&mut a, names.len().min(MAX_TWO_DIGIT_COUNT));
    push_language(&mut a, language);

    let header_list = join(names.iter().copied());
    let cookie_names = join(cookies.iter().map(|c| c.0));
    let cookie_pairs = join(cookies.iter().map(|c| c.1));

    let mut ja4h = a.clone();
    ja4h.push(b'_');
    push_hash12(&mut ja4h, &header_list);
    ja4h.push(b'_');
    push_hash12(&mut ja4h, &cookie_names);
    ja4h.push(b'_');
    push_hash12(&mut ja4h, &cookie_pairs);

    let mut raw = a;
    raw.push(b'_');
    raw.extend_from_slice(&header_list);
    raw.push(b'_');
    if !cookies.is_empty() {
        raw.extend_from_slice(&cookie_names);
        raw.push(b'_');
        raw.extend_from_slice(&cookie_pairs);
    }
    Ja4h {
        ja4h: String::from_utf8_lossy(&ja4h).into_owned(),
        ja4h_r: String::from_utf8_lossy(&raw).into_owned(),
    }
}

fn join<'a>(items: impl Iterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out
}

/// The first 12 hex characters of the sha256 of `input`, `000000000000` when it is empty.
fn push_hash12(out: &mut Vec<u8>, input: &[u8]) {
    if input.is_empty() {
        out.extend_from_slice(EMPTY_HASH.as_bytes());
    } else {
        let digest = Sha256::digest(input);
        push_hex(out, digest.get(..HASH_CHARS / 2).unwrap_or(&digest));
    }
}

/// A character of the `a` part: printable ASCII lower-cased as is, anything else as `0`.
fn part_a_char(b: u8) -> u8 {
    if b.is_ascii_graphic() {
        b.to_ascii_lowercase()
    } else {
        b'0'
    }
}

fn push_method(out: &mut Vec<u8>, method: &[u8]) {
    for i in 0..2 {
        out.push(method.get(i).map_or(b'0', |&b| part_a_char(b)));
    }
}

/// The primary language (see the module doc); a byte that is not printable ASCII is written as
/// its two hex digits (Wireshark's rule), so the part stays ASCII.
fn push_language(out: &mut Vec<u8>, value: Option<&[u8]>) {
    let mut written = 0;
    for &b in value.unwrap_or_default() {
        if written >= LANGUAGE_CHARS || b == b',' || b == b';' {
            break;
        }
        if b == b'-' || b.is_ascii_whitespace() {
            continue;
        }
        if b.is_ascii_graphic() {
            out.push(b.to_ascii_lowercase());
            written += 1;
        } else {
            for d in [
                HEX_DIGITS[usize::from(b >> 4)],
                HEX_DIGITS[usize::from(b & 0xf)],
            ] {
                if written < LANGUAGE_CHARS {
                    out.push(d);
                    written += 1;
                }
            }
        }
    }
    out.extend(std::iter::repeat_n(b'0', LANGUAGE_CHARS - written));
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn headers<'a>(list: &'a [(&'a str, &'a str)]) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        list.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()))
    }

    /// FoxIO's Rust unit test (`rust/ja4/src/http.rs`, `test_http_stats_into_out`): a Chrome
    /// request to www.cnn.com with 20 cookies.
    #[test]
    fn foxio_cnn_example() {
        let cookie = "FastAB=0=6859,1=8174,2=4183,3=3319,4=3917,5=2557,6=4259,7=6070,8=0804,9=6453,10=1942,11=4435,12=4143,13=9445,14=6957,15=8682,16=1885,17=1825,18=3760,19=0929; sato=1; countryCode=US; stateCode=VA; geoData=purcellville|VA|20132|US|NA|-400|broadband|39.160|-77.700|511; usprivacy=1---; umto=1; _dd_s=logs=1&id=b5c2d770-eaba-4847-8202-390c4552ff9a&created=1686159462724&expire=1686160422726";
        let list = [
            ("Host", "www.cnn.com"),
            ("Cookie", cookie),
            ("Sec-Ch-Ua", ""),
            ("Sec-Ch-Ua-Mobile", "?0"),
            ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/114.0.5735.110 Safari/537.36"),
            ("Sec-Ch-Ua-Platform", "\"\""),
            ("Accept", "*/*"),
            ("Sec-Fetch-Site", "same-origin"),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Dest", "empty"),
            ("Sec-Fetch-Mode", "cors"),
            ("Sec-Fetch-Dest", "empty"),
            ("Referer", "https://www.cnn.com/"),
            ("Accept-Encoding", "gzip, deflate"),
            ("Accept-Language", "en-US,en;q=0.9"),
        ];
        let fp = ja4h(b"GET", HttpVersion::Http11, headers(&list));
        assert_eq!(
            fp.ja4h,
            "ge11cr13enus_88d2d584d47f_0f2659b474bf_161698816dab"
        );
        assert!(fp
            .ja4h_r
            .starts_with("ge11cr13enus_Host,Sec-Ch-Ua,Sec-Ch-Ua-Mobile,User-Agent,"));
        assert!(fp.ja4h_r.contains(
            "_FastAB,_dd_s,countryCode,geoData,sato,stateCode,umto,usprivacy_FastAB=0=6859,"
        ));
    }

    /// FoxIO's Python golden output for `http1.pcapng` (`python/test/testdata/http1.pcapng.json`,
    /// streams 0 and 4): no cookies, no language; a HEAD with Accept-Language.
    #[test]
    fn foxio_python_http1_vectors() {
        let post = [
            ("Host", "192.168.1.1:8080"),
            ("Accept", "*/*"),
            ("User-Agent", "x"),
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Content-Length", "10"),
        ];
        let fp = ja4h(b"POST", HttpVersion::Http11, headers(&post));
        assert_eq!(
            fp.ja4h,
            "po11nn050000_530ceba2075f_000000000000_000000000000"
        );
        assert_eq!(
            fp.ja4h_r,
            "po11nn050000_Host,Accept,User-Agent,Content-Type,Content-Length_"
        );
        let head = [
            ("Host", "www.google.com"),
            ("Connection", "keep-alive"),
            ("User-Agent", "x"),
            ("Accept-Encoding", "gzip"),
            ("Accept-Language", "en-US,*"),
        ];
        let fp = ja4h(b"HEAD", HttpVersion::Http11, headers(&head));
        assert_eq!(
            fp.ja4h,
            "he11nn05enus_6f8992deff94_000000000000_000000000000"
        );
        // `http-empty-useragent.pcap`: HTTP/1.0, one header.
        let fp = ja4h(b"GET", HttpVersion::Http10, headers(&[("User-Agent", "")]));
        assert_eq!(
            fp.ja4h,
            "ge10nn010000_b8bcd45ac095_000000000000_000000000000"
        );
    }

    /// FoxIO's Python golden output for `http2-with-cookies.pcapng` (stream 0, Chrome to
    /// youtube.com over HTTP/2): the request rebuilt from its published `JA4H_ro` (header names
    /// and cookies in the order sent), with the pseudo-headers HTTP/2 puts first.
    #[test]
    fn foxio_python_http2_vector() {
        let names = "sec-ch-ua,sec-ch-ua-mobile,sec-ch-ua-platform,upgrade-insecure-requests,user-agent,accept,sec-ch-ua-arch,sec-ch-ua-platform-version,sec-ch-ua-model,sec-ch-ua-bitness,sec-ch-ua-wow64,sec-ch-ua-full-version-list,x-client-data,sec-fetch-site,sec-fetch-mode,sec-fetch-user,sec-fetch-dest,accept-encoding,accept-language";
        let cookies = include_str!("testdata/http2-with-cookies.cookies");
        let mut list: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"GET"),
            (b":authority", b"www.youtube.com"),
            (b":scheme", b"https"),
            (b":path", b"/"),
        ];
        for name in names.split(',') {
            let value: &[u8] = if name == "accept-language" {
                b"en-US,en;q=0.9"
            } else {
                b"x"
            };
            list.push((name.as_bytes(), value));
        }
        // HTTP/2 clients send each cookie as its own header (RFC 9113 §8.2.3).
        for pair in cookies.trim().split(',') {
            list.push((b"cookie", pair.as_bytes()));
        }
        let fp = ja4h(b"GET", HttpVersion::Http2, list);
        assert_eq!(
            fp.ja4h,
            "ge20cn19enus_cb83bf27b7a9_c7713052b7e4_348cad68b6fb"
        );
    }

    #[test]
    fn language_rules() {
        let lang = |v: &str| {
            let mut out = Vec::new();
            push_language(&mut out, Some(v.as_bytes()));
            String::from_utf8(out).unwrap()
        };
        assert_eq!(lang("da, en-GB;q=0.8, en;q=0.7"), "da00");
        assert_eq!(lang("en-US,en;q=0.9"), "enus");
        assert_eq!(lang("fr;q=0.5"), "fr00");
        assert_eq!(lang("*"), "*000");
        assert_eq!(lang("zh-Hant-TW"), "zhha");
        assert_eq!(lang("\u{e9}"), "c3a9");
        let mut none = Vec::new();
        push_language(&mut none, None);
        assert_eq!(none, b"0000");
    }

    #[test]
    fn methods_versions_and_flags() {
        let fp = ja4h(
            b"PROPFIND",
            HttpVersion::from_proto_num(9),
            std::iter::empty(),
        );
        assert!(
            fp.ja4h.starts_with("pr09nn000000_000000000000_"),
            "{}",
            fp.ja4h
        );
        assert_eq!(fp.ja4h_r, "pr09nn000000__");
        let fp = ja4h(
            b"G",
            HttpVersion::from_proto_num(2000),
            headers(&[("referer", "x"), ("Cookie2", "y"), ("cookie", "")]),
        );
        assert!(fp.ja4h.starts_with("g020cr000000_"), "{}", fp.ja4h);
        assert_eq!(HttpVersion::from_proto_num(1001), HttpVersion::Http11);
    }

    proptest::proptest! {
        #[test]
        fn any_request_gives_an_ascii_ja4h_of_fixed_shape(
            method in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
            list in proptest::collection::vec(
                (proptest::collection::vec(proptest::num::u8::ANY, 0..12),
                 proptest::collection::vec(proptest::num::u8::ANY, 0..40)),
                0..40),
        ) {
            let fp = ja4h(&method, HttpVersion::Http11, list.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
            proptest::prop_assert_eq!(fp.ja4h.len(), 12 + 3 * 13);
            proptest::prop_assert!(fp.ja4h.is_ascii());
        }
    }
}
