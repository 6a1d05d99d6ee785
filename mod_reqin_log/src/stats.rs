//! The module's counters and their Prometheus text, as the `reqin-log-status` handler serves
//! them. The values live in shared memory (one block for every child of every configuration
//! generation of one httpd parent, see `ffi::shm`), so a scrape of any child returns the sum over
//! all of them, and a graceful restart never sends a counter back to zero; this file only names
//! them and renders them. Pure: unit-tested without httpd.

use std::fmt::Write;

use crate::record::{OrphanReason, Source};

/// One counter. Values only grow (Prometheus `counter` type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    LinesWritten = 0,
    Correlated,
    Orphans,
    /// Orphans that waited in the flusher for the sensor (the rest were decided at once).
    OrphansDelayed,
    /// Requests joined late: by the flusher, after the log hook found nothing yet.
    CorrelatedLate,
    RingMisses,
    TornReads,
    /// A record was found but belongs to another connection (reused port, outside the window).
    ForeignRecords,
    ExcludedSource,
    ExcludedPort,
    WriteErrors,
    /// Lines lost: the socket would block or is down.
    Dropped,
    /// The flusher's queue was full: the line was written at once, uncorrelated.
    QueueFull,
    HeaderValuesTruncated,
    HeadersDropped,
    HeadersRedacted,
    Panics,
    // Appended, never inserted: a graceful restart into a newer module keeps counting in the
    // same shared block, by index.
    /// Path, query or host values cut to `ReqinLogMaxFieldLen`.
    FieldsTruncated,
    /// Path, query, host or header values that were not UTF-8 (logged with `<name>_raw`).
    FieldsNotUtf8,
    /// Lines left partial in a file by a write cut short (disk full) that could not be cut back.
    LinesDamaged,
    // Issue 18: where each fingerprint came from, why a line has none (one per `orphan_reason`,
    // in the order of `record::OrphanReason::ALL`), the `both` cross-check, upstream headers.
    SourceSensor,
    SourceInline,
    SourceUpstream,
    ReasonNoTls,
    ReasonExcluded,
    ReasonNotFirstRequest,
    ReasonRingMissing,
    ReasonSensorDown,
    ReasonNotInRing,
    ReasonHelloNotCaptured,
    ReasonHelloUnparsable,
    ReasonSynNotSaved,
    ReasonSynUnparsable,
    ReasonUpstreamUntrusted,
    ReasonUpstreamMissing,
    ReasonNoConnection,
    /// `both`: lines whose inline values the sensor's record confirmed, contradicted, or that
    /// had no sensor record to compare with.
    CrossCheckAgree,
    CrossCheckDisagree,
    CrossCheckUnchecked,
    /// Fingerprint headers removed from requests of peers that are not trusted proxies.
    UpstreamHeadersRemoved,
    /// Fingerprint headers of trusted proxies that were not a JA4 / JA3 hash (ignored).
    UpstreamHeadersInvalid,
}

impl Counter {
    pub const ALL: [Counter; 41] = [
        Counter::LinesWritten,
        Counter::Correlated,
        Counter::Orphans,
        Counter::OrphansDelayed,
        Counter::CorrelatedLate,
        Counter::RingMisses,
        Counter::TornReads,
        Counter::ForeignRecords,
        Counter::ExcludedSource,
        Counter::ExcludedPort,
        Counter::WriteErrors,
        Counter::Dropped,
        Counter::QueueFull,
        Counter::HeaderValuesTruncated,
        Counter::HeadersDropped,
        Counter::HeadersRedacted,
        Counter::Panics,
        Counter::FieldsTruncated,
        Counter::FieldsNotUtf8,
        Counter::LinesDamaged,
        Counter::SourceSensor,
        Counter::SourceInline,
        Counter::SourceUpstream,
        Counter::ReasonNoTls,
        Counter::ReasonExcluded,
        Counter::ReasonNotFirstRequest,
        Counter::ReasonRingMissing,
        Counter::ReasonSensorDown,
        Counter::ReasonNotInRing,
        Counter::ReasonHelloNotCaptured,
        Counter::ReasonHelloUnparsable,
        Counter::ReasonSynNotSaved,
        Counter::ReasonSynUnparsable,
        Counter::ReasonUpstreamUntrusted,
        Counter::ReasonUpstreamMissing,
        Counter::ReasonNoConnection,
        Counter::CrossCheckAgree,
        Counter::CrossCheckDisagree,
        Counter::CrossCheckUnchecked,
        Counter::UpstreamHeadersRemoved,
        Counter::UpstreamHeadersInvalid,
    ];

    /// The counter of lines with this `fingerprint_source`.
    pub fn of_source(source: Source) -> Counter {
        match source {
            Source::Sensor => Counter::SourceSensor,
            Source::Inline => Counter::SourceInline,
            Source::Upstream => Counter::SourceUpstream,
        }
    }

    /// The counter of lines with this `orphan_reason`.
    pub fn of_reason(reason: OrphanReason) -> Counter {
        match reason {
            OrphanReason::NoTls => Counter::ReasonNoTls,
            OrphanReason::Excluded => Counter::ReasonExcluded,
            OrphanReason::NotFirstRequest => Counter::ReasonNotFirstRequest,
            OrphanReason::RingMissing => Counter::ReasonRingMissing,
            OrphanReason::SensorDown => Counter::ReasonSensorDown,
            OrphanReason::NotInRing => Counter::ReasonNotInRing,
            OrphanReason::HelloNotCaptured => Counter::ReasonHelloNotCaptured,
            OrphanReason::HelloUnparsable => Counter::ReasonHelloUnparsable,
            OrphanReason::SynNotSaved => Counter::ReasonSynNotSaved,
            OrphanReason::SynUnparsable => Counter::ReasonSynUnparsable,
            OrphanReason::UpstreamUntrusted => Counter::ReasonUpstreamUntrusted,
            OrphanReason::UpstreamMissing => Counter::ReasonUpstreamMissing,
            OrphanReason::NoConnection => Counter::ReasonNoConnection,
        }
    }

    /// Counters shown as one Prometheus metric with a label: (metric, label, value).
    fn family(self) -> Option<(&'static str, &'static str, &'static str)> {
        let source = |s: Source| Some(("fingerprinted_lines", "source", s.as_str()));
        let reason = |r: OrphanReason| Some(("orphan_reason_lines", "reason", r.as_str()));
        match self {
            Counter::SourceSensor => source(Source::Sensor),
            Counter::SourceInline => source(Source::Inline),
            Counter::SourceUpstream => source(Source::Upstream),
            Counter::ReasonNoTls => reason(OrphanReason::NoTls),
            Counter::ReasonExcluded => reason(OrphanReason::Excluded),
            Counter::ReasonNotFirstRequest => reason(OrphanReason::NotFirstRequest),
            Counter::ReasonRingMissing => reason(OrphanReason::RingMissing),
            Counter::ReasonSensorDown => reason(OrphanReason::SensorDown),
            Counter::ReasonNotInRing => reason(OrphanReason::NotInRing),
            Counter::ReasonHelloNotCaptured => reason(OrphanReason::HelloNotCaptured),
            Counter::ReasonHelloUnparsable => reason(OrphanReason::HelloUnparsable),
            Counter::ReasonSynNotSaved => reason(OrphanReason::SynNotSaved),
            Counter::ReasonSynUnparsable => reason(OrphanReason::SynUnparsable),
            Counter::ReasonUpstreamUntrusted => reason(OrphanReason::UpstreamUntrusted),
            Counter::ReasonUpstreamMissing => reason(OrphanReason::UpstreamMissing),
            Counter::ReasonNoConnection => reason(OrphanReason::NoConnection),
            Counter::CrossCheckAgree => Some(("crosscheck_lines", "result", "agree")),
            Counter::CrossCheckDisagree => Some(("crosscheck_lines", "result", "disagree")),
            Counter::CrossCheckUnchecked => Some(("crosscheck_lines", "result", "unchecked")),
            _ => None,
        }
    }

    /// The metric's name as the status page prints it, without the `reqin_log_` prefix:
    /// `orphans_total`, `orphan_reason_lines_total{reason="no_tls"}`.
    pub fn metric(self) -> String {
        match self.family() {
            Some((family, label, value)) => format!("{family}_total{{{label}=\"{value}\"}}"),
            None => format!("{}_total", self.name()),
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Metric name without the `reqin_log_` prefix and `_total` suffix.
    pub fn name(self) -> &'static str {
        match self {
            Counter::LinesWritten => "lines_written",
            Counter::Correlated => "correlated",
            Counter::Orphans => "orphans",
            Counter::OrphansDelayed => "orphans_delayed",
            Counter::CorrelatedLate => "correlated_late",
            Counter::RingMisses => "ring_misses",
            Counter::TornReads => "torn_reads",
            Counter::ForeignRecords => "foreign_records",
            Counter::ExcludedSource => "excluded_source",
            Counter::ExcludedPort => "excluded_port",
            Counter::WriteErrors => "write_errors",
            Counter::Dropped => "dropped",
            Counter::QueueFull => "queue_full",
            Counter::HeaderValuesTruncated => "header_values_truncated",
            Counter::HeadersDropped => "headers_dropped",
            Counter::HeadersRedacted => "headers_redacted",
            Counter::Panics => "panics",
            Counter::FieldsTruncated => "request_fields_truncated",
            Counter::FieldsNotUtf8 => "fields_not_utf8",
            Counter::LinesDamaged => "lines_damaged",
            Counter::SourceSensor => "source_sensor",
            Counter::SourceInline => "source_inline",
            Counter::SourceUpstream => "source_upstream",
            Counter::ReasonNoTls => "reason_no_tls",
            Counter::ReasonExcluded => "reason_excluded",
            Counter::ReasonNotFirstRequest => "reason_not_first_request",
            Counter::ReasonRingMissing => "reason_ring_missing",
            Counter::ReasonSensorDown => "reason_sensor_down",
            Counter::ReasonNotInRing => "reason_not_in_ring",
            Counter::ReasonHelloNotCaptured => "reason_hello_not_captured",
            Counter::ReasonHelloUnparsable => "reason_hello_unparsable",
            Counter::ReasonSynNotSaved => "reason_syn_not_saved",
            Counter::ReasonSynUnparsable => "reason_syn_unparsable",
            Counter::ReasonUpstreamUntrusted => "reason_upstream_untrusted",
            Counter::ReasonUpstreamMissing => "reason_upstream_missing",
            Counter::ReasonNoConnection => "reason_no_connection",
            Counter::CrossCheckAgree => "crosscheck_agree",
            Counter::CrossCheckDisagree => "crosscheck_disagree",
            Counter::CrossCheckUnchecked => "crosscheck_unchecked",
            Counter::UpstreamHeadersRemoved => "upstream_headers_removed",
            Counter::UpstreamHeadersInvalid => "upstream_headers_invalid",
        }
    }

    fn help(self) -> &'static str {
        match self {
            Counter::LinesWritten => {
                "JSON lines written whole to ReqinLogFile (without one: sent to JsonSockLogSocket)"
            }
            Counter::Correlated => "lines joined with the sensor's handshake record",
            Counter::Orphans => "lines logged uncorrelated (orphan_side A)",
            Counter::OrphansDelayed => "orphans that waited for the sensor in the flusher",
            Counter::CorrelatedLate => "lines joined by the flusher after the log phase",
            Counter::RingMisses => "ring lookups that found no record",
            Counter::TornReads => "ring lookups that found only torn or corrupt slots",
            Counter::ForeignRecords => {
                "records found for the 4-tuple but of another connection (reused port)"
            }
            Counter::ExcludedSource => "requests not joined: client in ReqinLogExcludeSource",
            Counter::ExcludedPort => "requests not joined: port not in ReqinLogIncludePorts",
            Counter::WriteErrors => "lines lost by ReqinLogFile: failed writes, file not open",
            Counter::Dropped => "lines lost because a sink was unavailable",
            Counter::QueueFull => "lines written uncorrelated at once: orphan queue full",
            Counter::HeaderValuesTruncated => "header values cut to JsonSockLogMaxHeaderValueLen",
            Counter::HeadersDropped => "headers beyond JsonSockLogMaxHeaders",
            Counter::HeadersRedacted => "header values replaced by [REDACTED]",
            Counter::Panics => "panics caught at the FFI boundary",
            Counter::FieldsTruncated => "path, query or host values cut to ReqinLogMaxFieldLen",
            Counter::FieldsNotUtf8 => {
                "path, query, host or header values that were not UTF-8 (logged with <name>_raw)"
            }
            Counter::LinesDamaged => {
                "lines left partial by a write cut short (disk full) that could not be cut back"
            }
            Counter::SourceSensor | Counter::SourceInline | Counter::SourceUpstream => {
                "lines with a fingerprint, by fingerprint_source"
            }
            Counter::ReasonNoTls
            | Counter::ReasonExcluded
            | Counter::ReasonNotFirstRequest
            | Counter::ReasonRingMissing
            | Counter::ReasonSensorDown
            | Counter::ReasonNotInRing
            | Counter::ReasonHelloNotCaptured
            | Counter::ReasonHelloUnparsable
            | Counter::ReasonSynNotSaved
            | Counter::ReasonSynUnparsable
            | Counter::ReasonUpstreamUntrusted
            | Counter::ReasonUpstreamMissing
            | Counter::ReasonNoConnection => {
                "lines by orphan_reason: why a line has no fingerprint (syn_*: no SYN fields beside an inline one)"
            }
            Counter::CrossCheckAgree | Counter::CrossCheckDisagree | Counter::CrossCheckUnchecked => {
                "ReqinLogFingerprint both: lines whose inline values the sensor's record confirmed (agree), contradicted (disagree, the first ones are in the error log), or that had no sensor record (unchecked)"
            }
            Counter::UpstreamHeadersRemoved => {
                "fingerprint headers removed from requests of peers that are not a ReqinLogTrustedProxy"
            }
            Counter::UpstreamHeadersInvalid => {
                "fingerprint headers of trusted proxies ignored: not a JA4 or a JA3 hash"
            }
        }
    }
}

/// Prometheus text exposition format (version 0.0.4).
pub fn render(value: impl Fn(Counter) -> u64, ring: Option<&RingStatus>) -> String {
    let mut out = String::with_capacity(8192);
    let mut families_done: Vec<&str> = Vec::new();
    for c in Counter::ALL {
        match c.family() {
            None => {
                let name = c.name();
                let _ = writeln!(out, "# HELP reqin_log_{name}_total {}", c.help());
                let _ = writeln!(out, "# TYPE reqin_log_{name}_total counter");
                let _ = writeln!(out, "reqin_log_{name}_total {}", value(c));
            }
            Some((family, _, _)) if !families_done.contains(&family) => {
                // A family's lines together, after one HELP and TYPE.
                families_done.push(family);
                let _ = writeln!(out, "# HELP reqin_log_{family}_total {}", c.help());
                let _ = writeln!(out, "# TYPE reqin_log_{family}_total counter");
                for m in Counter::ALL
                    .into_iter()
                    .filter(|m| m.family().is_some_and(|f| f.0 == family))
                {
                    let _ = writeln!(out, "reqin_log_{} {}", m.metric(), value(m));
                }
            }
            Some(_) => {}
        }
    }
    let _ = writeln!(
        out,
        "# HELP reqin_log_ring_attached 1 when this child has the sensor's ring mapped"
    );
    let _ = writeln!(out, "# TYPE reqin_log_ring_attached gauge");
    let _ = writeln!(out, "reqin_log_ring_attached {}", u8::from(ring.is_some()));
    if let Some(ring) = ring {
        let _ = writeln!(out, "# TYPE ja4sensor_ring_generation gauge");
        let _ = writeln!(out, "ja4sensor_ring_generation {}", ring.generation);
        let _ = writeln!(out, "# TYPE ja4sensor_ring_published_total counter");
        let _ = writeln!(out, "ja4sensor_ring_published_total {}", ring.published);
        let _ = writeln!(
            out,
            "# HELP ja4sensor_watermark_seconds capture time up to which the sensor processed every packet"
        );
        let _ = writeln!(out, "# TYPE ja4sensor_watermark_seconds gauge");
        let _ = writeln!(
            out,
            "ja4sensor_watermark_seconds {:.6}",
            ring.watermark_ns as f64 / 1e9
        );
        for (name, v) in &ring.sensor_counters {
            let _ = writeln!(out, "# TYPE ja4sensor_{name}_total counter");
            let _ = writeln!(out, "ja4sensor_{name}_total {v}");
        }
    }
    out
}

/// The same counters as a small self-contained page for people (`?html`), like mod_status's:
/// one table of the module's counters with what each means, one of the sensor's. No script,
/// no external resource.
pub fn render_html(value: impl Fn(Counter) -> u64, ring: Option<&RingStatus>, now: &str) -> String {
    let mut out = String::with_capacity(8192);
    out.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        "<title>mod_reqin_log status</title><style>",
        "body{font-family:sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin-bottom:2em}",
        "td,th{border:1px solid #ccc;padding:.3em .7em;text-align:left}",
        "td.n{text-align:right;font-variant-numeric:tabular-nums}",
        "th{background:#eee}.bad{color:#a00;font-weight:bold}",
        "</style></head><body>\n<h1>mod_reqin_log status</h1>\n"
    ));
    let _ = writeln!(
        out,
        "<p>{now} &mdash; totals of every child since httpd started (the same numbers as the \
         Prometheus text without <code>?html</code>).</p>"
    );
    let correlated = value(Counter::Correlated);
    let decided = correlated + value(Counter::Orphans);
    if decided > 0 {
        let _ = writeln!(
            out,
            "<p>Correlated: <strong>{:.1}&nbsp;%</strong> of {decided} requests logged.</p>",
            correlated as f64 * 100.0 / decided as f64
        );
    }
    out.push_str("<table><tr><th>counter</th><th>value</th><th>meaning</th></tr>\n");
    for c in Counter::ALL {
        let v = value(c);
        let bad = v > 0
            && matches!(
                c,
                Counter::WriteErrors
                    | Counter::Dropped
                    | Counter::Panics
                    | Counter::LinesDamaged
                    | Counter::CrossCheckDisagree
            );
        let _ = writeln!(
            out,
            "<tr><td><code>reqin_log_{}</code></td><td class=\"n{}\">{v}</td><td>{}</td></tr>",
            html_escape(&c.metric()),
            if bad { " bad" } else { "" },
            html_escape(c.help())
        );
    }
    out.push_str("</table>\n<h2>ja4sensor</h2>\n");
    match ring {
        None => out.push_str(
            "<p class=\"bad\">This child has no sensor ring mapped: requests of <code>ReqinLogFingerprint sensor</code> and <code>both</code> servers have no sensor record (<code>inline</code> needs none).</p>\n",
        ),
        Some(ring) => {
            out.push_str("<table><tr><th>field</th><th>value</th></tr>\n");
            let _ = writeln!(
                out,
                "<tr><td>ring generation</td><td class=\"n\">{}</td></tr>\n\
                 <tr><td>records published</td><td class=\"n\">{}</td></tr>\n\
                 <tr><td>watermark (Unix s)</td><td class=\"n\">{:.3}</td></tr>",
                ring.generation,
                ring.published,
                ring.watermark_ns as f64 / 1e9
            );
            for (name, v) in &ring.sensor_counters {
                let _ = writeln!(
                    out,
                    "<tr><td><code>ja4sensor_{name}_total</code></td><td class=\"n\">{v}</td></tr>"
                );
            }
            out.push_str("</table>\n");
        }
    }
    out.push_str("</body></html>\n");
    out
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The sensor's statistics as its ring header publishes them.
#[derive(Debug, Clone, Default)]
pub struct RingStatus {
    pub generation: u64,
    pub published: u64,
    pub watermark_ns: u64,
    pub sensor_counters: Vec<(&'static str, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_dense_and_rendered_once_each() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let text = render(|c| c.index() as u64 * 10, None);
        assert!(text.contains("reqin_log_orphans_total 20\n"), "{text}");
        assert!(text.contains("reqin_log_ring_attached 0\n"));
        for c in Counter::ALL {
            let needle = format!("\nreqin_log_{} ", c.metric());
            assert_eq!(text.matches(&needle).count(), 1, "{needle}");
        }
        assert!(text.contains(
            "# TYPE reqin_log_orphan_reason_lines_total counter\nreqin_log_orphan_reason_lines_total{reason=\"no_tls\"} "
        ));
        for r in OrphanReason::ALL {
            assert_eq!(
                Counter::of_reason(r).family().map(|f| f.2),
                Some(r.as_str())
            );
        }
        for s in Source::ALL {
            assert_eq!(
                Counter::of_source(s).family().map(|f| f.2),
                Some(s.as_str())
            );
        }
        let ring = RingStatus {
            generation: 3,
            sensor_counters: vec![("packets_seen", 7)],
            ..RingStatus::default()
        };
        let text = render(|_| 0, Some(&ring));
        assert!(text.contains("ja4sensor_packets_seen_total 7\n"), "{text}");
    }

    #[test]
    fn the_html_page_has_every_counter_and_flags_losses() {
        let page = render_html(
            |c| match c {
                Counter::Correlated => 3,
                Counter::Orphans => 1,
                Counter::WriteErrors => 2,
                _ => 0,
            },
            None,
            "2026-12-03T10:00:00.000000Z",
        );
        assert!(page.starts_with("<!DOCTYPE html>"));
        for c in Counter::ALL {
            assert!(
                page.contains(&format!("reqin_log_{}", html_escape(&c.metric()))),
                "{c:?}"
            );
        }
        assert!(page.contains("75.0&nbsp;%"), "share correlated");
        assert!(
            page.contains("class=\"n bad\">2<"),
            "write errors stand out"
        );
        assert!(page.contains("no sensor ring mapped"));
        assert!(!page.contains("<script"), "self-contained, no script");
    }
}
