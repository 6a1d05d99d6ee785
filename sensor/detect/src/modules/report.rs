//! `report`: seed 003's Reportonly. Counts lines and bytes, correlated lines and orphans; with
//! `notice_every_line` it also dispatches a `LogRecord` notice per line, as the seed's did.

use correlate_lib::fields;

use super::{Module, Stats};
use crate::event::{Event, LineCtx, Severity};
use crate::line::{Line, Scalar};

pub struct Report {
    notice_every_line: bool,
    stats: Stats,
}

impl Report {
    pub fn new(notice_every_line: bool) -> Self {
        Self {
            notice_every_line,
            stats: Stats::default(),
        }
    }
}

impl Module for Report {
    fn name(&self) -> &'static str {
        "report"
    }

    fn on_line(&mut self, line: &Line, ctx: &LineCtx, out: &mut Vec<Event>) {
        let s = &mut self.stats;
        s.lines += 1;
        s.bytes += line.bytes;
        match line.get(fields::CORRELATED) {
            Some(Scalar::Bool(true)) => s.correlated += 1,
            _ => s.orphans += 1,
        }
        s.matched += 1;
        if self.notice_every_line {
            s.events += 1;
            out.push(Event::new(
                Severity::Notice,
                "LogRecord",
                "report",
                "",
                format!("{} bytes", line.bytes),
                vec![("bytes".into(), line.bytes.into())],
                ctx.context(line),
            ));
        }
    }

    fn stats(&self) -> Stats {
        self.stats
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts_lines_bytes_correlated_and_orphans() {
        let mut r = Report::new(false);
        let mut out = Vec::new();
        for raw in [
            &br#"{"correlated":true}"#[..],
            br#"{"correlated":false}"#,
            br#"{"a":1}"#,
        ] {
            let l = Line::parse(raw).unwrap();
            r.on_line(&l, &LineCtx::at(0), &mut out);
        }
        let s = r.stats();
        assert_eq!((s.lines, s.correlated, s.orphans), (3, 1, 2));
        assert_eq!(s.bytes, 19 + 1 + 20 + 1 + 7 + 1);
        assert!(out.is_empty());
        let mut r = Report::new(true);
        r.on_line(&Line::parse(b"{}").unwrap(), &LineCtx::at(0), &mut out);
        assert_eq!(out.len(), 1);
    }
}
