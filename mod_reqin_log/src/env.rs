//! The environment variables a request gets at `post_read_request` (REALLY_FIRST), so that
//! `Header set X-JA4 "%{JA4}e"`, `RewriteCond %{ENV:JA4}`, `Require expr "%{ENV:JA4} ..."`,
//! `SetEnvIf JA4 ...`, CGI scripts and `mod_proxy` backends can use the fingerprint while the
//! request is served. README.md ("Environment variables") documents the same table.

use std::borrow::Cow;

use correlate_lib::TlsRecord;

/// Always set when the module is on for the server and `ReqinLogExportEnv` is On: `1` when the
/// request's connection was joined with a handshake, else `0`.
pub const REQIN_CORRELATED: &str = "REQIN_CORRELATED";

/// The client family the connection's JA4 belongs to (`ReqinLogClientMap`), `unknown` when the
/// map has no entry for it; set only when the connection has a JA4 and a map is loaded.
pub const REQIN_CLIENT: &str = "REQIN_CLIENT";
/// The detector's verdict for this client (`ReqinLogVerdictTable`) and the rule behind it.
pub const REQIN_VERDICT: &std::ffi::CStr = c"REQIN_VERDICT";
pub const REQIN_VERDICT_RULE: &std::ffi::CStr = c"REQIN_VERDICT_RULE";

/// The request's id (`request_id` of its line), for `RequestHeader set X-Request-Id
/// "%{REQIN_REQUEST_ID}e"`, and its connection's (`conn_id`).
pub const REQIN_REQUEST_ID: &std::ffi::CStr = c"REQIN_REQUEST_ID";
pub const REQIN_CONN_ID: &std::ffi::CStr = c"REQIN_CONN_ID";

/// Every variable set from a joined record, in the README's order.
pub const FROM_RECORD: &[&str] = &[
    "JA4",
    "JA4_R",
    "JA3",
    "JA3_HASH",
    "TLS_SNI",
    "TLS_ALPN",
    "TLS_VERSION",
    "TCP_TTL",
    "TCP_WINDOW",
    "TCP_MSS",
    "TCP_OPTIONS",
    "TCP_OS",
];

/// The variables for a request; fingerprint variables only when joined (an absent variable is
/// what `%{JA4}e` and `SetEnvIf` already treat as "unknown"). Empty values are not set.
pub fn env_vars(rec: Option<&TlsRecord>) -> Vec<(&'static str, Cow<'_, str>)> {
    let mut v = vec![(
        REQIN_CORRELATED,
        Cow::Borrowed(if rec.is_some() { "1" } else { "0" }),
    )];
    let Some(rec) = rec else {
        return v;
    };
    let tcp = rec.tcp.as_ref();
    let number = |n: u16| Cow::Owned(itoa::Buffer::new().format(n).to_owned());
    let values: [(&'static str, Option<Cow<'_, str>>); 12] = [
        ("JA4", Some(Cow::Borrowed(&rec.ja4))),
        ("JA4_R", Some(Cow::Borrowed(&rec.ja4_r))),
        ("JA3", Some(Cow::Borrowed(&rec.ja3))),
        ("JA3_HASH", Some(Cow::Borrowed(&rec.ja3_hash))),
        ("TLS_SNI", Some(Cow::Borrowed(&rec.tls_sni))),
        ("TLS_ALPN", Some(Cow::Borrowed(&rec.tls_alpn))),
        ("TLS_VERSION", Some(Cow::Borrowed(&rec.tls_version))),
        ("TCP_TTL", rec.ip.map(|ip| number(u16::from(ip.ttl)))),
        ("TCP_WINDOW", tcp.map(|t| number(t.window_size))),
        ("TCP_MSS", tcp.filter(|t| t.mss != 0).map(|t| number(t.mss))),
        (
            "TCP_OPTIONS",
            tcp.map(|t| Cow::Borrowed(t.options.as_str())),
        ),
        ("TCP_OS", Some(Cow::Borrowed(&rec.tcp_os))),
    ];
    v.extend(
        values
            .into_iter()
            .filter_map(|(k, val)| val.filter(|s| !s.is_empty()).map(|s| (k, s))),
    );
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use correlate_lib::{IpMeta, TcpMeta};

    #[test]
    fn joined_request_gets_every_fingerprint_variable() {
        let rec = TlsRecord {
            ja4: "t13d".into(),
            ja4_r: "raw".into(),
            ja3: "771".into(),
            ja3_hash: "abc".into(),
            tls_sni: "localhost".into(),
            tls_alpn: "h2".into(),
            tls_version: "1.3".into(),
            ip: Some(IpMeta {
                ttl: 64,
                ..IpMeta::default()
            }),
            tcp: Some(TcpMeta {
                window_size: 65495,
                mss: 65495,
                window_scale: Some(7),
                options: "MSS,NOP".into(),
            }),
            tcp_os: "Linux 3.11 and newer".into(),
            ..TlsRecord::default()
        };
        let vars = env_vars(Some(&rec));
        let names: Vec<&str> = vars.iter().map(|(k, _)| *k).collect();
        assert_eq!(names[0], REQIN_CORRELATED);
        assert_eq!(&names[1..], FROM_RECORD);
        assert!(vars.contains(&("TCP_TTL", "64".into())));
    }

    #[test]
    fn orphan_gets_only_the_flag() {
        assert_eq!(env_vars(None), vec![(REQIN_CORRELATED, Cow::Borrowed("0"))]);
    }
}
