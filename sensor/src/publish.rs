//! Publish: where fingerprinted hellos go. Live capture writes them into the shared-memory ring
//! read by mod_reqin_log; `ja4sensor read` prints them as JSON lines.

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use correlate_lib::fingerprint::os::MAX_OS_LABEL_LEN;
use correlate_lib::record::{MAX_ALPN_LEN, MAX_RAW_FINGERPRINT_LEN, MAX_SNI_LEN};
use correlate_lib::ring::{RingConfig, RingError, RingWriter, SensorCounter};
use correlate_lib::{ConnKey, TlsRecord};
use serde_json::Value;

use crate::pipeline::HelloEvent;

/// Field names that exist only in the offline (checker) format of `ja4sensor read`: the JA4
/// corpus's expected files carry them; the ring record and sentinel's LogRecord do not.
pub const OFFLINE_TRANSPORT: &str = "transport";
pub const OFFLINE_SNI: &str = "sni";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The JSON object `ja4sensor read` prints for one hello: every sentinel `LogRecord` field plus
/// `transport` and `sni` (null when absent).
pub fn offline_json(event: &HelloEvent) -> serde_json::Map<String, Value> {
    match serde_json::to_value(OfflineJson(event)) {
        Ok(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// [`offline_json`] as a `Serialize` value, written without building a map.
struct OfflineJson<'a>(&'a HelloEvent);

impl serde::Serialize for OfflineJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = serializer.serialize_map(None)?;
        self.0.record.serialize_fields(&mut m)?;
        m.serialize_entry(OFFLINE_TRANSPORT, "tcp")?;
        m.serialize_entry(OFFLINE_SNI, &self.0.sni)?;
        m.end()
    }
}

/// Writes one JSON object per line: the bytes `serde_json::to_writer` would write for
/// [`offline_json`], through [`correlate_lib::jsonl`]'s faster writer.
pub struct JsonLinesSink<W: Write> {
    out: W,
    /// The line being written, reused.
    line: Vec<u8>,
}

impl<W: Write> JsonLinesSink<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            line: Vec::with_capacity(4096),
        }
    }

    pub fn publish(&mut self, event: &HelloEvent) -> Result<(), PublishError> {
        use serde::ser::SerializeMap;
        self.line.clear();
        let mut m = correlate_lib::jsonl::MapWriter::new(&mut self.line);
        event.record.serialize_fields(&mut m)?;
        m.serialize_entry(OFFLINE_TRANSPORT, "tcp")?;
        m.serialize_entry(OFFLINE_SNI, &event.sni)?;
        m.end()?;
        self.line.push(b'\n');
        self.out.write_all(&self.line)?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), PublishError> {
        Ok(self.out.flush()?)
    }
}

/// Counts of the ring sink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    pub writes: u64,
    /// Records that did not fit a slot even after shortening.
    pub too_large: u64,
    pub errors: u64,
    /// Records whose strings were shortened to the codec's limits.
    pub shortened: u64,
    /// Client FIN/RST stored as `closed_time_ns` in the connection's record.
    pub closed_marked: u64,
    /// Closes whose record was no longer in the ring (overwritten).
    pub closed_not_found: u64,
}

/// The sensor's ring writer plus its counters.
pub struct RingSink {
    writer: RingWriter,
    stats: RingStats,
}

impl RingSink {
    /// Creates (or replaces) the ring file: mode 0o640, group unchanged.
    pub fn create(
        path: &Path,
        config: RingConfig,
        mode: u32,
        gid: Option<u32>,
    ) -> Result<Self, RingError> {
        Ok(Self {
            writer: RingWriter::create(path, config, mode, gid)?,
            stats: RingStats::default(),
        })
    }

    pub fn stats(&self) -> RingStats {
        self.stats
    }

    /// Publishes a record. A record that cannot be written is counted and dropped: losing one
    /// fingerprint must not stop the capture.
    pub fn publish(&mut self, event: &HelloEvent) {
        let record = fit_for_ring(&event.record);
        let mut shortened = matches!(record, Cow::Owned(_));
        let mut result = self.writer.publish(&record);
        if let Err(RingError::RecordTooLarge { len, max }) = result {
            // A hello listing many ciphers and extensions makes long raw fingerprints. Their
            // tails go (`ja4_r` first, then `ja3`; `ja4` and `ja3_hash` stay whole) rather than
            // the whole record: the request still joins its handshake.
            let mut r = record.into_owned();
            let mut excess = len.saturating_sub(max);
            for s in [&mut r.ja4_r, &mut r.ja3] {
                let keep = s.len().saturating_sub(excess);
                excess = excess.saturating_sub(s.len() - keep);
                truncate_at_char(s, keep);
            }
            log::debug!("record of {len} bytes shortened to fit a {max}-byte slot");
            shortened = true;
            result = self.writer.publish(&r);
        }
        if shortened {
            self.stats.shortened += 1;
        }
        match result {
            Ok(()) => self.stats.writes += 1,
            Err(RingError::RecordTooLarge { len, max }) => {
                self.stats.too_large += 1;
                log::debug!("record of {len} bytes does not fit a {max}-byte slot");
            }
            Err(e) => {
                self.stats.errors += 1;
                log::warn!("ring publish failed: {e}");
            }
        }
    }

    /// Stores the client's FIN/RST time in the record of `key`, so a reader never joins a later
    /// connection on the same client port to this handshake.
    pub fn mark_closed(&mut self, key: &ConnKey, time_ns: u64) {
        if self.writer.mark_closed(key, time_ns) {
            self.stats.closed_marked += 1;
        } else {
            self.stats.closed_not_found += 1;
        }
    }

    pub fn set_counter(&self, counter: SensorCounter, value: u64) {
        self.writer.set_counter(counter, value);
    }

    /// Tells readers that every packet captured up to `ns` (Unix ns) has been processed.
    pub fn set_watermark(&self, ns: u64) {
        self.writer.set_watermark(ns);
    }
}

/// Shortens strings that exceed the record codec's limits (a hostile hello can carry a long SNI
/// or thousands of ciphers); everything else is borrowed unchanged.
pub fn fit_for_ring(record: &TlsRecord) -> Cow<'_, TlsRecord> {
    let over = record.tls_sni.len() > MAX_SNI_LEN
        || record.tls_alpn.len() > MAX_ALPN_LEN
        || record.ja4_r.len() > MAX_RAW_FINGERPRINT_LEN
        || record.ja3.len() > MAX_RAW_FINGERPRINT_LEN
        || record.tcp_os.len() > MAX_OS_LABEL_LEN;
    if !over {
        return Cow::Borrowed(record);
    }
    let mut r = record.clone();
    truncate_at_char(&mut r.tls_sni, MAX_SNI_LEN);
    truncate_at_char(&mut r.tls_alpn, MAX_ALPN_LEN);
    truncate_at_char(&mut r.ja4_r, MAX_RAW_FINGERPRINT_LEN);
    truncate_at_char(&mut r.ja3, MAX_RAW_FINGERPRINT_LEN);
    truncate_at_char(&mut r.tcp_os, MAX_OS_LABEL_LEN);
    Cow::Owned(r)
}

fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_shortened_on_char_boundaries() {
        let record = TlsRecord {
            tls_sni: "é".repeat(200),
            ja3: "1".repeat(MAX_RAW_FINGERPRINT_LEN + 5),
            ..TlsRecord::default()
        };
        let fitted = fit_for_ring(&record);
        assert!(fitted.tls_sni.len() <= MAX_SNI_LEN && fitted.tls_sni.chars().all(|c| c == 'é'));
        assert_eq!(fitted.ja3.len(), MAX_RAW_FINGERPRINT_LEN);
        let mut buf = Vec::new();
        fitted.encode(&mut buf).unwrap();
        assert!(matches!(
            fit_for_ring(&TlsRecord::default()),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_record_larger_than_a_slot_is_published_with_shorter_raw_strings() {
        use correlate_lib::ring::{Lookup, RingReader};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ring");
        let mut sink = RingSink::create(&path, RingConfig::default(), 0o600, None).unwrap();
        let key = correlate_lib::ConnKey::new(
            correlate_lib::record::v4(127, 0, 0, 1, 40000),
            correlate_lib::record::v4(127, 0, 0, 1, 443),
        );
        // A hello offering 600 ciphers: both raw strings alone exceed a 2 KiB slot.
        let record = TlsRecord {
            key: Some(key),
            hello_time_ns: 1,
            ja4: "t13d999900_aaaaaaaaaaaa_bbbbbbbbbbbb".into(),
            ja4_r: "0a0a,".repeat(600),
            ja3: "49195-".repeat(600),
            ja3_hash: "0123456789abcdef0123456789abcdef".into(),
            ..TlsRecord::default()
        };
        sink.publish(&HelloEvent {
            record: record.clone(),
            sni: None,
        });
        assert_eq!(
            (
                sink.stats().writes,
                sink.stats().shortened,
                sink.stats().too_large
            ),
            (1, 1, 0)
        );
        let Lookup::Hit(got) = RingReader::open(&path).unwrap().lookup(&key) else {
            panic!("the record is in the ring");
        };
        assert_eq!((got.ja4, got.ja3_hash), (record.ja4, record.ja3_hash));
        assert!(record.ja4_r.starts_with(&got.ja4_r) && got.ja4_r.len() < record.ja4_r.len());
        assert!(record.ja3.starts_with(&got.ja3));
    }

    #[test]
    fn json_lines_are_the_bytes_serde_json_writes() {
        use correlate_lib::{IpMeta, TcpMeta};
        let v4 = correlate_lib::ConnKey::new(
            correlate_lib::record::v4(10, 0, 0, 1, 40000),
            correlate_lib::record::v4(192, 0, 2, 1, 443),
        );
        let v6 = correlate_lib::ConnKey::new(
            "[2001:db8::1]:50000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
        );
        let full = TlsRecord {
            key: Some(v4),
            syn_time_ns: 1_000_000_000,
            hello_time_ns: 1_012_500_000,
            closed_time_ns: 0,
            ip: Some(IpMeta {
                ttl: 64,
                total_length: 60,
                id: 54321,
                df: true,
            }),
            tcp: Some(TcpMeta {
                window_size: 64240,
                mss: 1460,
                window_scale: Some(7),
                options: "MSS,SACK,Timestamps,NOP,WScale".into(),
            }),
            tls_version: "1.3".into(),
            tls_sni: "example.com".into(),
            tls_alpn: "h2".into(),
            ja4: "t13d1516h2_8daaf6152771_e5627efa2ab1".into(),
            ja4_r: "t13d1516h2_002f,0035_0005,000a".into(),
            ja3: "771,4865-4866,0-23,29-23,0".into(),
            ja3_hash: "0123456789abcdef0123456789abcdef".into(),
            sensor_id: "lab \"1\"".into(),
            tcp_os: "Linux 3.11 and newer".into(),
            tcp_os_distance: Some(0),
            tcp_option_kinds: Default::default(),
        };
        let events = [
            HelloEvent {
                record: TlsRecord::default(),
                sni: None,
            },
            HelloEvent {
                record: full.clone(),
                sni: Some("example.com".into()),
            },
            HelloEvent {
                record: TlsRecord {
                    key: Some(v6),
                    ip: None,
                    tcp: Some(TcpMeta {
                        mss: 0,
                        window_scale: Some(0),
                        ..TcpMeta::default()
                    }),
                    tls_sni: "b\u{fc}cher\n\u{1}.example".into(),
                    tls_alpn: "\\x00".into(),
                    ..full
                },
                sni: Some("b\u{fc}cher\n\u{1}.example".into()),
            },
        ];
        let mut sink = JsonLinesSink::new(Vec::new());
        let mut expected = Vec::new();
        for event in &events {
            sink.publish(event).unwrap();
            serde_json::to_writer(&mut expected, &OfflineJson(event)).unwrap();
            expected.push(b'\n');
        }
        assert_eq!(
            String::from_utf8(sink.out).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }

    #[test]
    fn offline_json_has_transport_and_null_sni() {
        let event = HelloEvent {
            record: TlsRecord::default(),
            sni: None,
        };
        let m = offline_json(&event);
        assert_eq!(m[OFFLINE_TRANSPORT], "tcp");
        assert!(m[OFFLINE_SNI].is_null());
        assert!(m.contains_key(correlate_lib::fields::JA4));
    }
}
