//! The page: one HTML document, its style inline, its charts inline SVG, no script. Every string
//! from a log is escaped (a User-Agent is whatever a client sent).

use std::fmt::Write as _;

use super::aggregate::OTHER;
use super::{charts, Origin, ReportData, ReportError, MAX_TIMELINE_ROOTS};
use crate::time;
use crate::timeline::{self, Kind};

/// Rows of the top-N tables and bars of their charts.
pub const TOP_JA4: usize = 15;
pub const TOP_MISMATCHES: usize = 15;
pub const TOP_OS: usize = 12;
/// Timeline rows printed on the page (the chart shows every entry).
pub const MAX_TIMELINE_ROWS: usize = 2_000;

const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1040px;color:#222}\
h1{font-size:22px}h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ccc}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}\
td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}\
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}\
code{font-size:12px}figure{margin:8px 0}p.note{color:#666;font-size:13px}\
tr.event td{background:#fdecea}tr.start td{background:#eef3fb}";

/// `s` safe inside HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() && c != '\n' && c != '\t' => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn figure(out: &mut String, id: &str, svg: &str) {
    let _ = writeln!(
        out,
        "<figure class=\"chart\" id=\"chart-{id}\">{svg}</figure>"
    );
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "–".into()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

fn window_text(d: &ReportData) -> String {
    let f = |t: Option<i64>, none: &str| t.map_or_else(|| none.to_owned(), time::format_ns);
    format!(
        "{} → {}",
        f(d.since_ns, "the first line"),
        f(d.until_ns, "the last line")
    )
}

pub fn render(d: &ReportData) -> Result<String, ReportError> {
    let a = &d.agg;
    let mut o = String::with_capacity(256 * 1024);
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n");
    // Nothing may be fetched: the page is read on a SOC workstation, maybe offline.
    o.push_str("<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n");
    let _ = writeln!(
        o,
        "<title>ja4sensor report {}</title><style>{STYLE}</style></head><body>",
        escape(&window_text(d))
    );
    let _ = writeln!(
        o,
        "<h1>ja4sensor report</h1>\n<p>Window: {} · generated {} · from {}</p>",
        escape(&window_text(d)),
        escape(&time::format_ns(d.generated_ns)),
        escape(&origin_text(&d.origin)),
    );

    // Summary.
    o.push_str("<section id=\"summary\"><h2>Summary</h2><table>\n");
    let row = |o: &mut String, k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", escape(k), v);
    };
    let span = match (a.first_ns, a.last_ns) {
        (Some(f), Some(l)) => format!(
            "{} → {}",
            escape(&time::format_ns(f)),
            escape(&time::format_ns(l))
        ),
        _ => "–".into(),
    };
    row(&mut o, "requests", format!("{} ({span})", a.requests));
    row(
        &mut o,
        "correlated",
        format!("{} ({})", a.correlated, pct(a.correlated, a.requests)),
    );
    let reasons: Vec<String> = a
        .orphan_reasons
        .top(10)
        .iter()
        .map(|(r, n)| format!("{} {n}", escape(r)))
        .collect();
    row(
        &mut o,
        "orphans",
        format!(
            "{} ({}){}",
            a.orphans(),
            pct(a.orphans(), a.requests),
            if reasons.is_empty() {
                String::new()
            } else {
                format!(": {}", reasons.join(", "))
            }
        ),
    );
    let types: Vec<String> = a
        .event_types
        .top(10)
        .iter()
        .map(|(t, n)| format!("{} {n}", escape(t)))
        .collect();
    row(
        &mut o,
        "events",
        format!("{} {}", a.events, types.join(", ")),
    );
    let sev: Vec<String> = a
        .event_severities
        .top(5)
        .iter()
        .map(|(t, n)| format!("{} {n}", escape(t)))
        .collect();
    row(&mut o, "event severities", sev.join(", "));
    row(
        &mut o,
        "distinct JA4",
        if a.ja4.other > 0 {
            format!("more than {}", a.ja4.len())
        } else {
            a.ja4.len().to_string()
        },
    );
    row(
        &mut o,
        "lines read",
        escape(&d.stats.summary("in the window")),
    );
    if d.mapping_rows > 0 {
        row(
            &mut o,
            "client mapping",
            format!("{} JA4s (--clients)", d.mapping_rows),
        );
    }
    o.push_str("</table></section>\n");

    // Requests per minute.
    o.push_str("<section id=\"requests\"><h2>Requests over time: correlated and orphan</h2>\n");
    let (svg, _) = charts::requests(&a.per_minute)?;
    figure(&mut o, "requests", &svg);
    o.push_str("</section>\n");

    // Top JA4s.
    o.push_str("<section id=\"ja4\"><h2>Top JA4 fingerprints and their clients</h2>\n");
    let top = a.ja4.top(TOP_JA4);
    let client = |j: &str| {
        a.ja4_client.get(j).cloned().unwrap_or_else(|| {
            if j == OTHER {
                String::new()
            } else {
                "unknown".into()
            }
        })
    };
    let bars: Vec<(String, u64)> = top
        .iter()
        .map(|(j, n)| (format!("{j} · {}", client(j)), *n))
        .collect();
    figure(
        &mut o,
        "ja4",
        &charts::bars("ja4", "requests per JA4 (client)", &bars, 380, false)?,
    );
    o.push_str("<table><tr><th>JA4</th><th>client</th><th>requests</th><th>share</th></tr>\n");
    let with_ja4 = a.ja4.total();
    for (j, n) in &top {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td>{}</td><td class=\"n\">{n}</td><td class=\"n\">{}</td></tr>",
            escape(j),
            escape(&client(j)),
            pct(*n, with_ja4)
        );
    }
    o.push_str("</table></section>\n");

    // User-Agent vs JA4.
    o.push_str("<section id=\"mismatch\"><h2>User-Agent vs JA4 mismatches</h2>\n");
    let _ = writeln!(
        o,
        "<p class=\"note\">{} requests had both a User-Agent and a fingerprint of a known client family; {} of them claim another family than their fingerprint.</p>",
        a.ua_checked,
        a.mismatches.total()
    );
    let mm = a.mismatches.top(TOP_MISMATCHES);
    figure(
        &mut o,
        "mismatch",
        &charts::bars(
            "mismatch",
            "requests: User-Agent family → fingerprint family · JA4",
            &mm,
            420,
            true,
        )?,
    );
    o.push_str("<table><tr><th>User-Agent claims</th><th>fingerprint is</th><th>JA4</th><th>requests</th><th>example User-Agent</th></tr>\n");
    for (k, n) in &mm {
        if let Some((m, ua)) = a.mismatch_detail.get(k) {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{n}</td><td><code>{}</code></td></tr>",
                escape(&m.claimed),
                escape(&m.fingerprint),
                escape(&m.ja4),
                escape(ua)
            );
        }
    }
    o.push_str("</table></section>\n");

    // TTL / OS.
    o.push_str("<section id=\"ttl-os\"><h2>TTL and OS of the clients' SYNs</h2>\n");
    figure(&mut o, "ttl", &charts::ttl(&a.ttl)?);
    figure(
        &mut o,
        "os",
        &charts::bars(
            "os",
            "requests per OS (tcp_os)",
            &a.os.top(TOP_OS),
            260,
            false,
        )?,
    );
    o.push_str("</section>\n");

    // Events.
    o.push_str("<section id=\"events\"><h2>Events per rule over time</h2>\n");
    figure(&mut o, "events", &charts::events(&a.events_per_rule)?);
    o.push_str("</section>\n");

    if let Some(tl) = &d.timeline {
        render_timeline(&mut o, d, tl)?;
    }
    o.push_str("</body></html>\n");
    Ok(o)
}

fn origin_text(origin: &Origin) -> String {
    match origin {
        Origin::Files(files) => {
            let names: Vec<String> = files
                .iter()
                .take(6)
                .map(|s| s.path.display().to_string())
                .collect();
            let more = files.len().saturating_sub(names.len());
            if more > 0 {
                format!("{} and {more} more files", names.join(", "))
            } else if names.is_empty() {
                "no files".into()
            } else {
                names.join(", ")
            }
        }
        Origin::ClickHouse { url, database } => format!("ClickHouse {url}, database {database}"),
    }
}

fn render_timeline(
    o: &mut String,
    d: &ReportData,
    tl: &timeline::Timeline,
) -> Result<(), ReportError> {
    let _ = writeln!(
        o,
        "<section id=\"timeline\"><h2>Timeline: {}</h2>",
        escape(d.selector_text.as_deref().unwrap_or(""))
    );
    if d.timeline_truncated {
        let _ = writeln!(
            o,
            "<p class=\"note\">More than {MAX_TIMELINE_ROOTS} connections match; the first {MAX_TIMELINE_ROOTS} (by id) are shown. Narrow the window or use <code>ja4sensor timeline</code>.</p>"
        );
    }
    figure(o, "timeline", &charts::timeline(tl, MAX_TIMELINE_ROOTS)?);
    o.push_str("<table><tr><th>time</th><th>entry</th><th>gap</th><th>what</th></tr>\n");
    let mut rows = 0;
    'roots: for root in &tl.roots {
        let _ = writeln!(
            o,
            "<tr><th colspan=\"4\">{}</th></tr>",
            escape(&timeline::heading(root))
        );
        for e in &root.entries {
            if rows >= MAX_TIMELINE_ROWS {
                let _ = writeln!(
                    o,
                    "<tr><td colspan=\"4\">… cut at {MAX_TIMELINE_ROWS} rows: <code>ja4sensor timeline</code> prints them all</td></tr>"
                );
                break 'roots;
            }
            rows += 1;
            let class = match e.kind {
                Kind::Event => " class=\"event\"",
                Kind::Handshake | Kind::Connection => " class=\"start\"",
                Kind::Request => "",
            };
            let label = match (e.kind, e.seq, e.stream_id) {
                (Kind::Request, Some(s), Some(st)) => format!("request #{s} (stream {st})"),
                (Kind::Request, Some(s), None) => format!("request #{s}"),
                (k, _, _) => k.as_str().to_owned(),
            };
            let gap = e
                .gap_ns
                .map(|g| format!("+{}", time::format_gap(g)))
                .unwrap_or_default();
            let _ = writeln!(
                o,
                "<tr{class}><td><code>{}</code></td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                escape(&time::format_ns(e.time_ns)),
                escape(&label),
                escape(&gap),
                escape(&timeline::describe(e))
            );
        }
    }
    o.push_str("</table></section>\n");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_from_the_log_cannot_open_a_tag() {
        assert_eq!(
            escape("<script>alert('x')</script>&\u{1b}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;\\u{1b}"
        );
    }
}
