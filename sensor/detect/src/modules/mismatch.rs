//! `fingerprint_mismatch`: what the User-Agent claims against what the connection shows.
//!
//! - The claim: the UA's browser family and OS, parsed with uap-core's `regexes.yaml` (the
//!   ua-parser project's data, Apache-2.0, vendored as `data/uap-core-regexes.yaml`) by the
//!   `ua-parser` crate; results cached per distinct UA string (bounded LRU).
//! - (a) The client family the JA4 belongs to, from the ja4→client mapping
//!   (`correlate_lib::clients`). A JA4 the mapping does not know is not judged.
//! - (b) The OS the SYN suggests: the `tcp_os` field (p0f-style guess) when present, else the
//!   initial-TTL family of `ip_meta_ttl` (64: Linux, Android, macOS, iOS, BSD; 128: Windows).
//!
//! A request whose claim contradicts either side gets one warning event with both sides in its
//! data. The tables below map *names* uap-core produces to our family labels; no User-Agent
//! is matched by hand.

use std::num::NonZeroUsize;
use std::sync::Arc;

use correlate_lib::clients::ClientMap;
use correlate_lib::fields;
use lru::LruCache;
use serde_json::Value;

use super::{Metric, Module, Stats};
use crate::config::MismatchConfig;
use crate::event::{Event, LineCtx};
use crate::line::{Line, Scalar};

/// uap-core's `regexes.yaml` (ua-parser/uap-core, Apache-2.0; see data/LICENSE-uap-core).
const UAP_REGEXES: &str = include_str!("../../data/uap-core-regexes.yaml");

/// uap-core browser families → our client labels (those of the client mapping). Chromium's TLS
/// stack (BoringSSL) is shared by every Chromium-based browser, so they are one label; iOS
/// browsers are WebKit (Safari's stack) whatever their name.
const FAMILY_LABELS: &[(&str, &str)] = &[
    ("Chrome", "chromium"),
    ("Chromium", "chromium"),
    ("HeadlessChrome", "chromium"),
    ("Chrome Mobile", "chromium"),
    ("Chrome Mobile WebView", "chromium"),
    ("Edge", "chromium"),
    ("Edge Mobile", "chromium"),
    ("Opera", "chromium"),
    ("Brave", "chromium"),
    ("Vivaldi", "chromium"),
    ("Samsung Internet", "chromium"),
    ("Yandex Browser", "chromium"),
    ("Electron", "chromium"),
    ("Firefox", "firefox"),
    ("Firefox Mobile", "firefox"),
    ("Firefox Beta", "firefox"),
    ("Firefox Alpha", "firefox"),
    ("Safari", "safari"),
    ("Mobile Safari", "safari"),
    ("Mobile Safari UI/WKWebView", "safari"),
    ("Chrome Mobile iOS", "safari"),
    ("Firefox iOS", "safari"),
    ("Edge iOS", "safari"),
    ("curl", "curl"),
    ("Wget", "wget"),
    ("wget2", "wget"),
    ("Python Requests", "python-requests"),
    ("Python-urllib", "python-urllib"),
    ("Go-http-client", "go"),
    ("okhttp", "okhttp"),
];

/// An OS family, as far as a User-Agent and a SYN can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OsFamily {
    Windows,
    Linux,
    Android,
    MacOs,
    Ios,
    Bsd,
}

impl OsFamily {
    pub fn as_str(self) -> &'static str {
        match self {
            OsFamily::Windows => "windows",
            OsFamily::Linux => "linux",
            OsFamily::Android => "android",
            OsFamily::MacOs => "macos",
            OsFamily::Ios => "ios",
            OsFamily::Bsd => "bsd",
        }
    }

    /// The family of an OS *name* (uap-core's `os` values, or the sensor's `tcp_os` labels):
    /// by its leading word(s).
    pub fn of_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase();
        let starts = |p: &[&str]| p.iter().any(|p| n.starts_with(p));
        if starts(&["windows"]) {
            Some(OsFamily::Windows)
        } else if starts(&["android"]) {
            Some(OsFamily::Android)
        } else if starts(&["mac os", "macos", "os x"]) {
            Some(OsFamily::MacOs)
        } else if starts(&["ios", "ipados"]) {
            Some(OsFamily::Ios)
        } else if starts(&["freebsd", "openbsd", "netbsd", "dragonfly"]) {
            Some(OsFamily::Bsd)
        } else if starts(&[
            "linux",
            "ubuntu",
            "debian",
            "fedora",
            "red hat",
            "centos",
            "arch linux",
            "chrome os",
            "chromeos",
            "gentoo",
            "mint",
            "suse",
            "opensuse",
            "mandriva",
            "slackware",
            "kubuntu",
            "xubuntu",
        ]) {
            Some(OsFamily::Linux)
        } else {
            None
        }
    }

    /// Whether a SYN that looks like `observed` can come from an OS claiming to be `self`.
    fn agrees_with(self, observed: Observed) -> bool {
        use OsFamily::*;
        match observed {
            Observed::Precise(o) => {
                o == self
                    || matches!(
                        (self, o),
                        (Android, Linux) | (Linux, Android) | (Ios, MacOs) | (MacOs, Ios)
                    )
            }
            Observed::Ttl64 => matches!(self, Linux | Android | MacOs | Ios | Bsd),
            Observed::Ttl128 => self == Windows,
        }
    }
}

/// What the SYN says about the client's OS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    Precise(OsFamily),
    /// Initial TTL 64: a Unix-like stack.
    Ttl64,
    /// Initial TTL 128: Windows.
    Ttl128,
}

impl Observed {
    fn as_str(self) -> &'static str {
        match self {
            Observed::Precise(f) => f.as_str(),
            Observed::Ttl64 => "unix-like (initial TTL 64)",
            Observed::Ttl128 => "windows (initial TTL 128)",
        }
    }
}

/// The initial TTL a received TTL most likely started from (the usual defaults), or `None` for
/// 255 and out-of-range values (network gear, Solaris: nothing a browser claims).
pub fn initial_ttl(ttl: u64) -> Option<u64> {
    match ttl {
        33..=64 => Some(64),
        65..=128 => Some(128),
        _ => None,
    }
}

/// What a User-Agent claims, parsed once per distinct string.
#[derive(Debug, Clone)]
struct Claim {
    family: String,
    client: Option<&'static str>,
    os: String,
    os_family: Option<OsFamily>,
}

/// uap-core's browser and OS extractors (the device one is not needed).
pub struct UaParser {
    ua: ua_parser::user_agent::Extractor<'static>,
    os: ua_parser::os::Extractor<'static>,
}

#[derive(Debug, thiserror::Error)]
pub enum UaError {
    #[error("uap-core regexes: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("uap-core regexes do not compile: {0}")]
    Build(String),
}

impl UaParser {
    /// Compiles the vendored uap-core regexes (a few hundred milliseconds, once).
    pub fn new() -> Result<Self, UaError> {
        let r: ua_parser::Regexes<'static> = serde_yaml::from_str(UAP_REGEXES)?;
        let ua = r
            .user_agent_parsers
            .into_iter()
            .try_fold(ua_parser::user_agent::Builder::new(), |b, p| b.push(p))
            .map_err(|e| UaError::Build(format!("{e:?}")))?
            .build()
            .map_err(|e| UaError::Build(format!("{e:?}")))?;
        let os = r
            .os_parsers
            .into_iter()
            .try_fold(ua_parser::os::Builder::new(), |b, p| b.push(p))
            .map_err(|e| UaError::Build(format!("{e:?}")))?
            .build()
            .map_err(|e| UaError::Build(format!("{e:?}")))?;
        Ok(Self { ua, os })
    }

    /// (browser family, OS name) of a User-Agent; `Other` when uap-core does not know it.
    pub fn parse(&self, ua: &str) -> (String, String) {
        let family = self
            .ua
            .extract(ua)
            .map_or_else(|| "Other".to_owned(), |v| v.family.into_owned());
        let os = self
            .os
            .extract(ua)
            .map_or_else(|| "Other".to_owned(), |v| v.os.into_owned());
        (family, os)
    }
}

/// Our label for a uap-core browser family.
pub fn family_label(family: &str) -> Option<&'static str> {
    FAMILY_LABELS
        .iter()
        .find(|(f, _)| *f == family)
        .map(|(_, l)| *l)
}

#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    lines: u64,
    checked: u64,
    no_user_agent: u64,
    unknown_ua: u64,
    unknown_ja4: u64,
    client_mismatches: u64,
    os_mismatches: u64,
    events: u64,
    ua_cache_misses: u64,
}

pub struct Mismatch {
    cfg: MismatchConfig,
    parser: Arc<UaParser>,
    clients: Arc<ClientMap>,
    cache: LruCache<Box<str>, Arc<Claim>>,
    n: Counters,
}

impl Mismatch {
    pub fn new(cfg: MismatchConfig, parser: Arc<UaParser>, clients: Arc<ClientMap>) -> Self {
        let cap = NonZeroUsize::new(cfg.ua_cache_entries).unwrap_or(NonZeroUsize::MIN);
        Self {
            cfg,
            parser,
            clients,
            cache: LruCache::new(cap),
            n: Counters::default(),
        }
    }

    fn claim(&mut self, ua: &str) -> Arc<Claim> {
        if let Some(c) = self.cache.get(ua) {
            return Arc::clone(c);
        }
        self.n.ua_cache_misses += 1;
        let (family, os) = self.parser.parse(ua);
        let c = Arc::new(Claim {
            client: family_label(&family),
            os_family: OsFamily::of_name(&os),
            family,
            os,
        });
        self.cache.push(ua.into(), Arc::clone(&c));
        c
    }
}

fn observed_os(line: &Line) -> Option<(Observed, &'static str)> {
    if let Some(f) = line.str(fields::TCP_OS).and_then(OsFamily::of_name) {
        return Some((Observed::Precise(f), "tcp_os"));
    }
    match line
        .get(fields::IP_META_TTL)
        .and_then(Scalar::as_u64)
        .and_then(initial_ttl)
    {
        Some(64) => Some((Observed::Ttl64, "ttl")),
        Some(128) => Some((Observed::Ttl128, "ttl")),
        _ => None,
    }
}

impl Module for Mismatch {
    fn name(&self) -> &'static str {
        "fingerprint_mismatch"
    }

    fn on_line(&mut self, line: &Line, ctx: &LineCtx, out: &mut Vec<Event>) {
        self.n.lines += 1;
        let Some(ua) = line.str(&self.cfg.user_agent_field) else {
            self.n.no_user_agent += 1;
            return;
        };
        let ja4 = line.str(fields::JA4);
        if ja4.is_none() {
            // An orphan: nothing the connection shows to hold the claim against.
            return;
        }
        let claim = self.claim(ua);
        if claim.client.is_none() && claim.os_family.is_none() {
            self.n.unknown_ua += 1;
            return;
        }
        self.n.checked += 1;
        let info = ja4.and_then(|j| self.clients.lookup(j));
        let mut what: Vec<&str> = Vec::new();
        if self.cfg.check_client {
            match (claim.client, info) {
                (Some(c), Some(i)) if !i.has(c) => what.push("client"),
                (_, None) => self.n.unknown_ja4 += 1,
                _ => {}
            }
        }
        let observed = observed_os(line);
        if self.cfg.check_os {
            if let (Some(claimed), Some((obs, _))) = (claim.os_family, observed) {
                if !claimed.agrees_with(obs) {
                    what.push("os");
                }
            }
        }
        if what.is_empty() {
            return;
        }
        if what.contains(&"client") {
            self.n.client_mismatches += 1;
        }
        if what.contains(&"os") {
            self.n.os_mismatches += 1;
        }
        self.n.events += 1;
        let ja4_clients = info.map_or_else(|| "unknown".to_owned(), |i| i.clients.join("|"));
        let data: Vec<(std::borrow::Cow<'static, str>, Value)> = vec![
            ("mismatch".into(), what.join(",").into()),
            ("user_agent".into(), ua.into()),
            ("ua_family".into(), claim.family.clone().into()),
            ("ua_os".into(), claim.os.clone().into()),
            (
                "claimed_client".into(),
                claim.client.unwrap_or("unknown").into(),
            ),
            ("ja4_clients".into(), ja4_clients.clone().into()),
            (
                "claimed_os".into(),
                claim.os_family.map_or("unknown", OsFamily::as_str).into(),
            ),
            (
                "observed_os".into(),
                observed.map_or("unknown", |(o, _)| o.as_str()).into(),
            ),
            (
                "os_source".into(),
                observed.map_or("none", |(_, s)| s).into(),
            ),
            (
                "tcp_os".into(),
                line.str(fields::TCP_OS).unwrap_or("").into(),
            ),
            (
                "ip_meta_ttl".into(),
                line.get(fields::IP_META_TTL)
                    .map_or(Value::Null, Scalar::to_json),
            ),
        ];
        let summary = format!(
            "User-Agent claims {} on {}, the connection shows {} ({}) on {}",
            claim.family,
            claim.os,
            ja4_clients,
            ja4.unwrap_or(""),
            observed.map_or("an unknown OS", |(o, _)| o.as_str())
        );
        out.push(Event::new(
            self.cfg.severity,
            "FingerprintMismatch",
            "fingerprint_mismatch",
            "",
            summary,
            data,
            ctx.context(line),
        ));
    }

    fn stats(&self) -> Stats {
        Stats {
            lines: self.n.lines,
            matched: self.n.checked,
            events: self.n.events,
            tracked: self.cache.len() as u64,
            ..Stats::default()
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let n = &self.n;
        let c = |name: &str, help, value| Metric {
            name: format!("fingerprint_mismatch_{name}"),
            help,
            kind: "counter",
            value,
        };
        vec![
            c(
                "checked_total",
                "lines with a User-Agent and a JA4 whose claim could be checked",
                n.checked,
            ),
            c(
                "no_user_agent_total",
                "lines without the User-Agent field",
                n.no_user_agent,
            ),
            c(
                "unknown_user_agent_total",
                "User-Agents claiming no known client family or OS",
                n.unknown_ua,
            ),
            c(
                "unknown_ja4_total",
                "checked lines whose JA4 is not in the client mapping",
                n.unknown_ja4,
            ),
            c(
                "client_mismatches_total",
                "claimed client family not among the JA4's",
                n.client_mismatches,
            ),
            c(
                "os_mismatches_total",
                "claimed OS contradicted by the SYN",
                n.os_mismatches,
            ),
            c(
                "ua_cache_misses_total",
                "User-Agents parsed (not found in the cache)",
                n.ua_cache_misses,
            ),
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CHROME_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36";
    const CHROME_LINUX: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.224 Safari/537.36";
    const CURL_JA4: &str = "t13d3112h1_e8f1e7e78f70_6bebaf5329ac";
    const CHROME_JA4: &str = "t13d1516h2_8daaf6152771_02713d6af862";

    fn module() -> Mismatch {
        let mut m = ClientMap::new();
        m.add(CURL_JA4, "curl", None, None);
        m.add(CHROME_JA4, "chromium", None, None);
        Mismatch::new(
            MismatchConfig::default(),
            Arc::new(UaParser::new().unwrap()),
            Arc::new(m),
        )
    }

    fn run(m: &mut Mismatch, ua: &str, ja4: &str, extra: &str) -> Vec<Event> {
        let raw = format!(
            r#"{{"header_User-Agent":{},"ja4":"{ja4}"{extra}}}"#,
            serde_json::to_string(ua).unwrap()
        );
        let l = Line::parse(raw.as_bytes()).unwrap();
        let mut out = Vec::new();
        m.on_line(&l, &LineCtx::at(0), &mut out);
        out
    }

    #[test]
    fn uap_core_names_real_user_agents() {
        let p = UaParser::new().unwrap();
        assert_eq!(p.parse(CHROME_WIN), ("Chrome".into(), "Windows".into()));
        assert_eq!(p.parse(CHROME_LINUX).0, "HeadlessChrome");
        assert_eq!(p.parse("curl/7.88.1").0, "curl");
        assert_eq!(p.parse("Wget/1.21.3").0, "Wget");
        assert_eq!(p.parse("python-requests/2.31.0").0, "Python Requests");
        assert_eq!(p.parse("Go-http-client/1.1").0, "Go-http-client");
        assert_eq!(family_label("HeadlessChrome"), Some("chromium"));
    }

    #[test]
    fn a_chrome_user_agent_on_a_curl_handshake_is_a_mismatch_with_both_sides() {
        let mut m = module();
        let ev = run(&mut m, CHROME_WIN, CURL_JA4, r#","ip_meta_ttl":64"#);
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.type_name, "FingerprintMismatch");
        assert_eq!(e.data("mismatch").unwrap(), "client,os");
        assert_eq!(e.data("claimed_client").unwrap(), "chromium");
        assert_eq!(e.data("ja4_clients").unwrap(), "curl");
        assert_eq!(e.data("claimed_os").unwrap(), "windows");
        assert_eq!(e.data("os_source").unwrap(), "ttl");
    }

    #[test]
    fn an_honest_client_raises_nothing_and_unknown_sides_are_not_judged() {
        let mut m = module();
        assert!(run(&mut m, CHROME_LINUX, CHROME_JA4, r#","ip_meta_ttl":63"#).is_empty());
        assert!(run(
            &mut m,
            "curl/7.88.1",
            CURL_JA4,
            r#","tcp_os":"Linux 3.11 and newer""#
        )
        .is_empty());
        // A JA4 the mapping does not know: the client is not judged (the OS still is).
        assert!(run(
            &mut m,
            CHROME_LINUX,
            "t13d0000h2_000000000000_000000000000",
            ""
        )
        .is_empty());
        assert!(run(&mut m, "SomethingElse/1.0", CURL_JA4, "").is_empty());
        assert_eq!(m.n.unknown_ja4, 1);
        assert_eq!(m.n.unknown_ua, 1);
    }

    #[test]
    fn the_os_check_uses_tcp_os_first_then_the_initial_ttl() {
        let mut m = module();
        // Chrome on Windows claimed, a Linux SYN: OS mismatch only.
        let ev = run(
            &mut m,
            CHROME_WIN,
            CHROME_JA4,
            r#","tcp_os":"Linux 2.2.x-3.x","ip_meta_ttl":120"#,
        );
        assert_eq!(ev[0].data("mismatch").unwrap(), "os");
        assert_eq!(ev[0].data("os_source").unwrap(), "tcp_os");
        // Windows TTL for a Windows claim: fine; for a Linux claim: not.
        assert!(run(&mut m, CHROME_WIN, CHROME_JA4, r#","ip_meta_ttl":117"#).is_empty());
        assert_eq!(
            run(&mut m, CHROME_LINUX, CHROME_JA4, r#","ip_meta_ttl":117"#).len(),
            1
        );
        // Android claims agree with a Linux SYN.
        let android = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36";
        assert!(run(
            &mut m,
            android,
            CHROME_JA4,
            r#","tcp_os":"Linux 3.11 and newer""#
        )
        .is_empty());
        assert_eq!(initial_ttl(255), None);
    }
}
