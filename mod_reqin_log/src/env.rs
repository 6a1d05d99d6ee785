//! The environment variables a request gets at `post_read_request` (REALLY_FIRST), so that
//! `Header set X-JA4 "%{JA4}e"`, `RewriteCond %{ENV:JA4}`, `Require expr "%{ENV:JA4} ..."`,
//! `SetEnvIf JA4 ...`, CGI scripts and `mod_proxy` backends can use the fingerprint while the
//! request is served. README.md ("Environment variables") documents the same table.

use correlate_lib::TlsRecord;

/// Always set when the module is on for the server and `ReqinLogExportEnv` is On: `1` when the
/// request's connection was joined with a handshake, else `0`.
pub const REQIN_CORRELATED: &str = "REQIN_CORRELATED";

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
];

/// The variables for a request; fingerprint variables only when joined (an absent variable is
/// what `%{JA4}e` and `SetEnvIf` already treat as "unknown"). Empty values are not set.
pub fn env_vars(rec: Option<&TlsRecord>) -> Vec<(&'static str, String)> {
    let mut v = vec![(
        REQIN_CORRELATED,
        if rec.is_some() { "1" } else { "0" }.to_owned(),
    )];
    let Some(rec) = rec else {
        return v;
    };
    let tcp = rec.tcp.as_ref();
    let values: [(&'static str, Option<String>); 11] = [
        ("JA4", Some(rec.ja4.clone())),
        ("JA4_R", Some(rec.ja4_r.clone())),
        ("JA3", Some(rec.ja3.clone())),
        ("JA3_HASH", Some(rec.ja3_hash.clone())),
        ("TLS_SNI", Some(rec.tls_sni.clone())),
        ("TLS_ALPN", Some(rec.tls_alpn.clone())),
        ("TLS_VERSION", Some(rec.tls_version.clone())),
        ("TCP_TTL", rec.ip.map(|ip| ip.ttl.to_string())),
        ("TCP_WINDOW", tcp.map(|t| t.window_size.to_string())),
        (
            "TCP_MSS",
            tcp.filter(|t| t.mss != 0).map(|t| t.mss.to_string()),
        ),
        ("TCP_OPTIONS", tcp.map(|t| t.options.clone())),
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
        assert_eq!(env_vars(None), vec![(REQIN_CORRELATED, "0".to_owned())]);
    }
}
