//! `ja4sensor query`: the lines (and events) that match every condition, as they are in the files
//! (JSON lines) or as a table for people.

use std::io::{self, Write};

use correlate_lib::fields;

use crate::filter::{Filter, Role};
use crate::object::Object;
use crate::scan::{self, Prefilter, ScanError, ScanStats, Source};
use crate::time;

/// How the matches are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The lines exactly as they are in the files, one per line.
    JsonLines,
    /// A fixed-width table; strings cut to fit and control characters escaped.
    Table,
}

/// Writes every line of `sources` that `filter` matches into `out`, in file order.
pub fn run(
    sources: &[Source],
    filter: &Filter,
    output: Output,
    threads: usize,
    out: &mut dyn Write,
) -> Result<ScanStats, ScanError> {
    let pre = Prefilter::all_of(filter.needles());
    // The JSON-lines output needs nothing but the exact test's fields; the table, every field.
    let keys = [Role::Log, Role::Events].map(|r| filter.keys(r));
    if output == Output::Table {
        out.write_all(table_header().as_bytes())
            .map_err(ScanError::Output)?;
    }
    scan::stream(
        sources,
        threads,
        |src, emit| {
            let keys = match src.role {
                Role::Log => &keys[0],
                Role::Events => &keys[1],
            };
            src.scan(&pre, &mut |line, stats| {
                let parsed = match output {
                    Output::JsonLines => stats.parse_keys(line, keys),
                    Output::Table => stats.parse(line),
                };
                let Some(o) = parsed else {
                    return true;
                };
                if !filter.matches(&o, src.role) {
                    return true;
                }
                stats.matched += 1;
                match output {
                    Output::JsonLines => emit(line) && emit(b"\n"),
                    Output::Table => emit(table_row(&o, src.role).as_bytes()),
                }
            })
        },
        out,
    )
}

const COLUMNS: [(&str, usize); 7] = [
    ("TIME", 27),
    ("SRC", 21),
    ("CONN_ID", 24),
    ("SEQ", 4),
    ("WHAT", 48),
    ("JA4", 36),
    ("DETAIL", 0),
];

fn table_header() -> String {
    row(&COLUMNS.map(|(name, _)| name.to_owned()))
}

fn row(cells: &[String; 7]) -> String {
    let mut s = String::new();
    for (i, (cell, (_, width))) in cells.iter().zip(COLUMNS).enumerate() {
        if i > 0 {
            s.push_str("  ");
        }
        let cell = fit(cell, width);
        s.push_str(&cell);
        if width > 0 && i + 1 < COLUMNS.len() {
            for _ in cell.chars().count()..width {
                s.push(' ');
            }
        }
    }
    s.truncate(s.trim_end().len());
    s.push('\n');
    s
}

/// `text` made safe for a terminal (a log holds what clients sent: escape sequences included)
/// and cut to `width` characters (0: no limit).
pub fn fit(text: &str, width: usize) -> String {
    let mut safe = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            safe.extend(c.escape_default());
        } else {
            safe.push(c);
        }
    }
    if width == 0 || safe.chars().count() <= width {
        return safe;
    }
    let mut cut: String = safe.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn table_row(o: &Object, role: Role) -> String {
    let s = |k: &str| o.text(k).map(|v| v.into_owned()).unwrap_or_default();
    match role {
        Role::Log => {
            let src = match (o.str(fields::SRC_IP), o.u64(fields::SRC_PORT)) {
                (Some(ip), Some(port)) if ip.contains(':') => format!("[{ip}]:{port}"),
                (Some(ip), Some(port)) => format!("{ip}:{port}"),
                (Some(ip), None) => ip.into_owned(),
                _ => String::new(),
            };
            let seq = o
                .u64(fields::SEQUENCE_NUMBER)
                .or_else(|| o.u64(fields::KEEPALIVES))
                .map(|n| n.to_string())
                .unwrap_or_default();
            let what = format!(
                "{} {}{} {}",
                s(fields::METHOD),
                s(fields::HOST),
                s(fields::PATH),
                s(fields::STATUS)
            );
            let mut detail = String::new();
            for (k, _) in o.entries() {
                if let Some(tag) = k.strip_prefix(fields::TAG_PREFIX) {
                    detail.push_str(&format!("{tag}={} ", s(k)));
                }
            }
            detail.push_str(&s(&format!("{}User-Agent", fields::HEADER_PREFIX)));
            row(&[
                s(fields::TIME),
                src,
                s(fields::CONN_ID),
                seq,
                what,
                s(fields::JA4),
                detail.trim().to_owned(),
            ])
        }
        Role::Events => {
            let when = time::event_time_ns(o)
                .map(time::format_ns)
                .unwrap_or_default();
            let what = format!(
                "event {} {} {}",
                s(fields::EVENT_SEVERITY),
                s(fields::EVENT_TYPE),
                s(fields::EVENT_RULE)
            );
            row(&[
                when,
                s(fields::SRC_IP),
                s(fields::ROOT_CORRELATION_ID),
                String::new(),
                what,
                s(fields::JA4),
                s(fields::EVENT_SUMMARY),
            ])
        }
    }
}

/// Prints the matches to stdout (the caller prints the summary).
pub fn to_stdout(
    sources: &[Source],
    filter: &Filter,
    output: Output,
    threads: usize,
) -> Result<ScanStats, ScanError> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(scan::OUTPUT_CHUNK_BYTES, stdout.lock());
    run(sources, filter, output, threads, &mut out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_are_cut_and_control_characters_escaped() {
        assert_eq!(fit("\x1b[31mred", 0), "\\u{1b}[31mred");
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
    }
}
