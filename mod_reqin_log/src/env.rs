//! The environment variables a request gets at `post_read_request` (REALLY_FIRST), so that
//! `Header set X-JA4 "%{JA4}e"`, `RewriteCond %{ENV:JA4}`, `Require expr "%{ENV:JA4} ..."`,
//! `SetEnvIf JA4 ...`, CGI scripts and `mod_proxy` backends can use the fingerprint while the
//! request is served. README.md ("Environment variables") documents the same table.

use std::ffi::CStr;

use correlate_lib::TlsRecord;

use crate::record::FragmentMeta;

/// Always set when the module is on for the server and `ReqinLogExportEnv` is On: `1` when the
/// request has a fingerprint (its connection was joined with a handshake, or a trusted proxy
/// sent one), else `0`.
pub const REQIN_CORRELATED: &CStr = c"REQIN_CORRELATED";

/// The request's id (`request_id` of its line), for `RequestHeader set X-Request-Id
/// "%{REQIN_REQUEST_ID}e"`, and its connection's (`conn_id`).
pub const REQIN_REQUEST_ID: &CStr = c"REQIN_REQUEST_ID";
pub const REQIN_CONN_ID: &CStr = c"REQIN_CONN_ID";
/// The client family the connection's JA4 belongs to (`ReqinLogClientMap`), `unknown` when the
/// map has no entry for it; set only when the connection has a JA4 and a map is loaded.
pub const REQIN_CLIENT: &CStr = c"REQIN_CLIENT";
/// The detector's verdict for this client (`ReqinLogVerdictTable`) and the rule behind it.
pub const REQIN_VERDICT: &CStr = c"REQIN_VERDICT";
pub const REQIN_VERDICT_RULE: &CStr = c"REQIN_VERDICT_RULE";

/// Where the fingerprint came from: `sensor`, `inline` or `upstream` (only when there is one).
pub const REQIN_FINGERPRINT_SOURCE: &CStr = c"REQIN_FINGERPRINT_SOURCE";

/// `ReqinLogJA4Plus On`: JA4T of the connection's SYN, JA4H of the request and its raw form
/// (cookie values redacted unless `ReqinLogRedactHeaders -Cookie`).
pub const JA4T: &CStr = c"JA4T";
pub const JA4H: &CStr = c"JA4H";
pub const JA4H_R: &CStr = c"JA4H_R";

pub const JA4: &CStr = c"JA4";
pub const JA4_R: &CStr = c"JA4_R";
pub const JA3: &CStr = c"JA3";
pub const JA3_HASH: &CStr = c"JA3_HASH";
pub const TLS_SNI: &CStr = c"TLS_SNI";
pub const TLS_ALPN: &CStr = c"TLS_ALPN";
pub const TLS_VERSION: &CStr = c"TLS_VERSION";
pub const TCP_TTL: &CStr = c"TCP_TTL";
pub const TCP_WINDOW: &CStr = c"TCP_WINDOW";
pub const TCP_MSS: &CStr = c"TCP_MSS";
pub const TCP_OPTIONS: &CStr = c"TCP_OPTIONS";
pub const TCP_OS: &CStr = c"TCP_OS";

/// Every variable set from a joined record, in the README's order: those of the ClientHello
/// alone ([`HELLO_VARS`]), then those of the SYN alone ([`SYN_VARS`]).
pub const FROM_RECORD: &[&CStr] = &[
    JA4,
    JA4_R,
    JA3,
    JA3_HASH,
    TLS_SNI,
    TLS_ALPN,
    TLS_VERSION,
    TCP_TTL,
    TCP_WINDOW,
    TCP_MSS,
    TCP_OPTIONS,
    TCP_OS,
];

/// How many of [`FROM_RECORD`] come from the ClientHello alone; the rest come from the SYN
/// (its shape: the IP id is not among them) and its OS guess.
const HELLO_VARS: usize = 7;

/// A variable's value: borrowed from the record, or a number formatted on the stack.
pub enum EnvValue<'a> {
    Text(&'a str),
    Number(itoa::Buffer, u16),
}

impl EnvValue<'_> {
    pub fn as_str(&mut self) -> &str {
        match self {
            EnvValue::Text(s) => s,
            EnvValue::Number(buf, n) => buf.format(*n),
        }
    }
}

/// The variables for a request; fingerprint variables only when joined (an absent variable is
/// what `%{JA4}e` and `SetEnvIf` already treat as "unknown"). Empty values are not set. The
/// names are static: httpd keeps the pointers, only the values are copied. Nothing is
/// allocated but the list.
pub fn env_vars<'a>(
    joined: Option<(&'a TlsRecord, &'a FragmentMeta)>,
) -> Vec<(&'static CStr, EnvValue<'a>)> {
    let mut v = Vec::with_capacity(FROM_RECORD.len() + 3);
    v.push((
        REQIN_CORRELATED,
        EnvValue::Text(if joined.is_some() { "1" } else { "0" }),
    ));
    let Some((rec, meta)) = joined else {
        return v;
    };
    v.extend(record_vars(rec));
    v.extend(meta_vars(meta));
    v
}

/// The variables of a record's fields, in [`FROM_RECORD`]'s order, without the empty ones.
fn record_vars(rec: &TlsRecord) -> impl Iterator<Item = (&'static CStr, EnvValue<'_>)> {
    let tcp = rec.tcp.as_ref();
    let number = |n: u16| EnvValue::Number(itoa::Buffer::new(), n);
    let values: [Option<EnvValue<'_>>; 12] = [
        Some(EnvValue::Text(&rec.ja4)),
        Some(EnvValue::Text(&rec.ja4_r)),
        Some(EnvValue::Text(&rec.ja3)),
        Some(EnvValue::Text(&rec.ja3_hash)),
        Some(EnvValue::Text(&rec.tls_sni)),
        Some(EnvValue::Text(&rec.tls_alpn)),
        Some(EnvValue::Text(&rec.tls_version)),
        rec.ip.map(|ip| number(u16::from(ip.ttl))),
        tcp.map(|t| number(t.window_size)),
        tcp.filter(|t| t.mss != 0).map(|t| number(t.mss)),
        tcp.map(|t| EnvValue::Text(t.options.as_str())),
        Some(EnvValue::Text(&rec.tcp_os)),
    ];
    FROM_RECORD.iter().zip(values).filter_map(|(k, val)| {
        val.filter(|s| !matches!(s, EnvValue::Text(t) if t.is_empty()))
            .map(|s| (*k, s))
    })
}

/// What [`env_vars`] sets for a joined record from its ClientHello alone: `REQIN_CORRELATED=1`
/// and the [`FROM_RECORD`] variables of the TLS fields. The same for every connection that
/// sends the same hello, so `inline` renders them once per hello ([`crate::ffi::EnvBlock`]).
pub fn hello_vars(rec: &TlsRecord) -> impl Iterator<Item = (&'static CStr, EnvValue<'_>)> {
    std::iter::once((REQIN_CORRELATED, EnvValue::Text("1")))
        .chain(record_vars(rec).filter(|(k, _)| FROM_RECORD[..HELLO_VARS].contains(k)))
}

/// The [`FROM_RECORD`] variables of a record's SYN fields and OS guess: the same for every
/// connection with the same SYN shape.
pub fn syn_vars(rec: &TlsRecord) -> impl Iterator<Item = (&'static CStr, EnvValue<'_>)> {
    record_vars(rec).filter(|(k, _)| FROM_RECORD[HELLO_VARS..].contains(k))
}

/// What [`env_vars`] sets after the record's variables, from what the connection's half of
/// the line says besides its record.
pub fn meta_vars(meta: &FragmentMeta) -> impl Iterator<Item = (&'static CStr, EnvValue<'_>)> {
    [
        Some((
            REQIN_FINGERPRINT_SOURCE,
            EnvValue::Text(meta.source.as_str()),
        )),
        meta.ja4t
            .as_ref()
            .map(|j| (JA4T, EnvValue::Text(j.as_str()))),
        meta.client
            .as_ref()
            .map(|c| (REQIN_CLIENT, EnvValue::Text(c.as_str()))),
    ]
    .into_iter()
    .flatten()
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
        let meta = FragmentMeta::of(crate::record::Source::Inline);
        let vars: Vec<(&CStr, String)> = env_vars(Some((&rec, &meta)))
            .into_iter()
            .map(|(k, mut v)| (k, v.as_str().to_owned()))
            .collect();
        let names: Vec<&CStr> = vars.iter().map(|(k, _)| *k).collect();
        assert_eq!(names[0], REQIN_CORRELATED);
        assert_eq!(&names[1..names.len() - 1], FROM_RECORD);
        assert!(vars.contains(&(c"TCP_TTL", "64".into())));
        assert_eq!(
            vars.last(),
            Some(&(REQIN_FINGERPRINT_SOURCE, "inline".to_owned()))
        );
    }

    #[test]
    fn hello_syn_and_meta_parts_are_the_whole_list() {
        let rec = TlsRecord {
            ja4: "t13d".into(),
            ja3: "771".into(),
            tls_version: "1.3".into(),
            ip: Some(IpMeta {
                ttl: 64,
                ..IpMeta::default()
            }),
            tcp: Some(TcpMeta {
                window_size: 65495,
                mss: 0,
                window_scale: None,
                options: "MSS,NOP".into(),
            }),
            tcp_os: "Linux".into(),
            ..TlsRecord::default()
        };
        let meta = FragmentMeta {
            ja4t: Some("65495_2_0_0".into()),
            client: Some("curl".into()),
            ..FragmentMeta::of(crate::record::Source::Inline)
        };
        let text = |v: Vec<(&'static CStr, EnvValue<'_>)>| -> Vec<(&'static CStr, String)> {
            v.into_iter()
                .map(|(k, mut v)| (k, v.as_str().to_owned()))
                .collect()
        };
        let whole = text(env_vars(Some((&rec, &meta))));
        let parts = text(
            hello_vars(&rec)
                .chain(syn_vars(&rec))
                .chain(meta_vars(&meta))
                .collect(),
        );
        assert_eq!(whole, parts);
        assert!(!whole.iter().any(|(k, _)| *k == TCP_MSS || *k == JA4_R));
    }

    #[test]
    fn orphan_gets_only_the_flag() {
        let vars: Vec<(&CStr, String)> = env_vars(None)
            .into_iter()
            .map(|(k, mut v)| (k, v.as_str().to_owned()))
            .collect();
        assert_eq!(vars, vec![(REQIN_CORRELATED, "0".to_owned())]);
    }
}
