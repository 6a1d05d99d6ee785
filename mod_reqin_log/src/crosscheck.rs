//! `ReqinLogFingerprint both`: an inline record against the sensor's record of the same
//! connection. Pure: unit-tested without httpd.

use correlate_lib::record::{MAX_ALPN_LEN, MAX_SNI_LEN};
use correlate_lib::TlsRecord;

/// `both`: the inline record with what only the sensor knows taken from its record of the same
/// connection (`sensor_id`, its SYN and hello times, so `syn_to_clienthello_ms` and
/// `b_timestamp` are the sensor's), and the fields on which the two disagree.
pub fn merge_with_sensor(inline: &TlsRecord, sensor: &TlsRecord) -> (TlsRecord, Vec<&'static str>) {
    let merged = TlsRecord {
        sensor_id: sensor.sensor_id.clone(),
        syn_time_ns: sensor.syn_time_ns,
        hello_time_ns: sensor.hello_time_ns,
        closed_time_ns: sensor.closed_time_ns,
        ..inline.clone()
    };
    (merged, cross_check(inline, sensor))
}

/// The fingerprint fields on which an inline record and the sensor's disagree. A field the
/// sensor did not have (no SYN seen) is not compared; a string the sensor shortened to fit its
/// ring slot (`ja4_r`, `ja3`, a long SNI or ALPN) agrees when it is a prefix of the inline one.
pub fn cross_check(inline: &TlsRecord, sensor: &TlsRecord) -> Vec<&'static str> {
    use correlate_lib::fields as f;
    let mut differ = Vec::new();
    let cut = |i: &str, s: &str, max: usize| i == s || (i.len() > max && i.starts_with(s));
    let shortened = |i: &str, s: &str| i == s || (!s.is_empty() && i.starts_with(s));
    let strings: [(&'static str, bool); 7] = [
        (f::JA4, inline.ja4 == sensor.ja4),
        (f::JA3_HASH, inline.ja3_hash == sensor.ja3_hash),
        (f::JA4_R, shortened(&inline.ja4_r, &sensor.ja4_r)),
        (f::JA3, shortened(&inline.ja3, &sensor.ja3)),
        (f::TLS_VERSION, inline.tls_version == sensor.tls_version),
        (
            f::TLS_SNI,
            cut(&inline.tls_sni, &sensor.tls_sni, MAX_SNI_LEN),
        ),
        (
            f::TLS_ALPN,
            cut(&inline.tls_alpn, &sensor.tls_alpn, MAX_ALPN_LEN),
        ),
    ];
    differ.extend(strings.iter().filter(|(_, same)| !same).map(|(n, _)| *n));
    if let (Some(i), Some(s)) = (&inline.ip, &sensor.ip) {
        for (name, same) in [
            (f::IP_META_TTL, i.ttl == s.ttl),
            (f::IP_META_TOTAL_LENGTH, i.total_length == s.total_length),
            (f::IP_META_ID, i.id == s.id),
            (f::IP_META_DF, i.df == s.df),
        ] {
            if !same {
                differ.push(name);
            }
        }
    }
    if let (Some(i), Some(s)) = (&inline.tcp, &sensor.tcp) {
        for (name, same) in [
            (f::TCP_META_WINDOW_SIZE, i.window_size == s.window_size),
            (f::TCP_META_MSS, i.mss == s.mss),
            (f::TCP_META_WINDOW_SCALE, i.window_scale == s.window_scale),
            (f::TCP_META_OPTIONS, i.options == s.options),
        ] {
            if !same {
                differ.push(name);
            }
        }
        if inline.tcp_os != sensor.tcp_os {
            differ.push(f::TCP_OS);
        }
        if inline.tcp_os_distance != sensor.tcp_os_distance {
            differ.push(f::TCP_OS_DISTANCE);
        }
        if inline.tcp_option_kinds != sensor.tcp_option_kinds {
            differ.push(f::JA4T);
        }
    }
    differ
}

/// `ja4: inline "…", sensor "…"; ip_meta_ttl: inline 64, sensor 63` for the error log.
pub fn describe(inline: &TlsRecord, sensor: &TlsRecord, differ: &[&str]) -> String {
    let (a, b) = (inline.json_fields(), sensor.json_fields());
    let value = |m: &serde_json::Map<String, serde_json::Value>, name: &str, rec: &TlsRecord| {
        if name == correlate_lib::fields::JA4T {
            // JA4T's option kinds are not a JSON field of the record.
            return format!("{:?}", rec.tcp_option_kinds.as_slice());
        }
        m.get(name)
            .map_or_else(|| "(none)".to_owned(), |v| v.to_string())
    };
    differ
        .iter()
        .map(|name| {
            format!(
                "{name}: inline {}, sensor {}",
                value(&a, name, inline),
                value(&b, name, sensor)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use correlate_lib::record::v4;
    use correlate_lib::{ConnKey, IpMeta, TcpMeta};

    fn record() -> TlsRecord {
        TlsRecord {
            key: Some(ConnKey::new(v4(127, 0, 0, 1, 5000), v4(127, 0, 0, 1, 443))),
            ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1".into(),
            ja4_r: "t13d1516h2_002f,0035_0005,000a".into(),
            ja3: "771,4865-4866,0-11-10".into(),
            ja3_hash: "0123456789abcdef0123456789abcdef".into(),
            tls_version: "1.3".into(),
            tls_sni: "localhost".into(),
            tls_alpn: "h2".into(),
            ip: Some(IpMeta {
                ttl: 64,
                total_length: 60,
                id: 7,
                df: true,
            }),
            tcp: Some(TcpMeta {
                window_size: 65495,
                mss: 65495,
                window_scale: Some(7),
                options: "MSS,SAckOK,Timestamps,NOP,WScale".into(),
            }),
            tcp_os: "Linux 3.11 and newer".into(),
            tcp_os_distance: Some(0),
            ..TlsRecord::default()
        }
    }

    #[test]
    fn the_same_handshake_agrees_and_keeps_the_sensors_own_fields() {
        let inline = record();
        let sensor = TlsRecord {
            sensor_id: "lab".into(),
            syn_time_ns: 10,
            hello_time_ns: 20_000_010,
            ..record()
        };
        let (merged, differ) = merge_with_sensor(&inline, &sensor);
        assert!(differ.is_empty(), "{differ:?}");
        assert_eq!(merged.sensor_id, "lab");
        assert_eq!(merged.syn_to_clienthello_ms(), Some(20));
        assert_eq!(merged.ja4, inline.ja4);
    }

    #[test]
    fn every_differing_field_is_named() {
        let inline = record();
        let mut sensor = record();
        sensor.ja4 = "t12d1516h2_8daaf6152771_e5627efa2ab1".into();
        sensor.ip.as_mut().unwrap().ttl = 63;
        sensor.tcp.as_mut().unwrap().options = "MSS".into();
        let differ = cross_check(&inline, &sensor);
        assert_eq!(differ, ["ja4", "ip_meta_ttl", "tcp_meta_options"]);
        let text = describe(&inline, &sensor, &differ);
        assert!(
            text.starts_with("ja4: inline \"t13d1516h2_8daaf6152771_e5627efa2ab1\", sensor \"t12d"),
            "{text}"
        );
        assert!(text.contains("ip_meta_ttl: inline 64, sensor 63"), "{text}");
    }

    #[test]
    fn a_sensor_without_the_syn_or_with_shortened_strings_still_agrees() {
        let inline = record();
        let sensor = TlsRecord {
            ip: None,
            tcp: None,
            tcp_os: String::new(),
            tcp_os_distance: None,
            ja4_r: inline.ja4_r[..10].to_owned(),
            ..record()
        };
        assert!(cross_check(&inline, &sensor).is_empty());
        let empty = TlsRecord {
            ja3: String::new(),
            ..record()
        };
        assert_eq!(cross_check(&inline, &empty), ["ja3"]);
    }
}
