//! The file listeners.
//!
//! - `jsonl`: every event as one JSON line, appended to a file, reopened on SIGHUP.
//! - `clickhouse`: the same file format, and the disk-first path into ClickHouse: `ja4sensor
//!   ship` follows these files into `reqin_events` exactly once, as it does the module's log
//!   into `http_logs`. Nothing is sent from here, so nothing is lost while the server is down:
//!   the file is the buffer.
//! - `csv`: audit events only, one file per audit event type (`<dir>/<Type>.csv`), a header row
//!   when the file is new, RFC 4180 quoting (the `csv` crate).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Dispatched, Listener, ListenerError};
use crate::config::ListenerType;
use crate::event::Kind;
use crate::modules::Metric;

const FILE_MODE: u32 = 0o640;
const BUFFER_BYTES: usize = 256 * 1024;

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

pub struct JsonlListener {
    kind: ListenerType,
    name: String,
    path: PathBuf,
    out: Option<BufWriter<File>>,
    written: u64,
    errors: u64,
}

impl JsonlListener {
    /// Opens (creates) the file now, so a bad path is a start-up error.
    pub fn open(kind: ListenerType, path: &Path) -> Result<Self, ListenerError> {
        let mut l = Self {
            kind,
            name: format!("{}:{}", kind.as_str(), path.display()),
            path: path.to_owned(),
            out: None,
            written: 0,
            errors: 0,
        };
        l.reopen()?;
        Ok(l)
    }

    fn io(&self, source: std::io::Error) -> ListenerError {
        ListenerError::Io {
            listener: self.kind.as_str(),
            path: self.path.display().to_string(),
            source,
        }
    }
}

impl Listener for JsonlListener {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ListenerType {
        self.kind
    }

    fn handle(&mut self, d: &Dispatched) -> Result<(), ListenerError> {
        if self.out.is_none() {
            // A failed reopen: try again rather than lose every later event.
            self.reopen()?;
        }
        let r = match self.out.as_mut() {
            Some(out) => out
                .write_all(d.json.as_bytes())
                .and_then(|()| out.write_all(b"\n")),
            None => Ok(()),
        };
        match r {
            Ok(()) => {
                self.written += 1;
                Ok(())
            }
            Err(e) => {
                self.errors += 1;
                Err(self.io(e))
            }
        }
    }

    fn flush(&mut self) -> Result<(), ListenerError> {
        let r = self.out.as_mut().map_or(Ok(()), Write::flush);
        r.map_err(|e| {
            self.errors += 1;
            self.io(e)
        })
    }

    fn reopen(&mut self) -> Result<(), ListenerError> {
        if let Some(mut old) = self.out.take() {
            let _ = old.flush();
        }
        let f = open_append(&self.path).map_err(|e| {
            self.errors += 1;
            self.io(e)
        })?;
        self.out = Some(BufWriter::with_capacity(BUFFER_BYTES, f));
        Ok(())
    }

    fn metrics(&self) -> Vec<Metric> {
        let label = format!("{{listener=\"{}\"}}", self.name);
        vec![
            Metric {
                name: format!("listener_events_written_total{label}"),
                help: "events written by the listener",
                kind: "counter",
                value: self.written,
            },
            Metric {
                name: format!("listener_write_errors_total{label}"),
                help: "failed writes or opens",
                kind: "counter",
                value: self.errors,
            },
        ]
    }
}

/// Columns every CSV file starts with; the audit type's declared fields follow.
pub const CSV_COMMON_COLUMNS: [&str; 9] = [
    "time",
    "event_id",
    "module",
    "rule",
    "src_ip",
    "ja4",
    "host",
    "parent_correlation_id",
    "root_correlation_id",
];

struct CsvFile {
    out: csv::Writer<BufWriter<File>>,
    fields: Vec<String>,
}

pub struct CsvListener {
    name: String,
    dir: PathBuf,
    files: HashMap<String, CsvFile>,
    written: u64,
    errors: u64,
    /// Audit events whose fields differ from their file's header (a changed declaration).
    mismatched: u64,
}

impl CsvListener {
    pub fn open(dir: &Path) -> Result<Self, ListenerError> {
        if !dir.is_dir() {
            return Err(ListenerError::Io {
                listener: "csv",
                path: dir.display().to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
            });
        }
        Ok(Self {
            name: format!("csv:{}", dir.display()),
            dir: dir.to_owned(),
            files: HashMap::new(),
            written: 0,
            errors: 0,
            mismatched: 0,
        })
    }

    /// `<dir>/<Type>.csv` (characters outside `[A-Za-z0-9_.-]` as `_`).
    pub fn file_for(dir: &Path, type_name: &str) -> PathBuf {
        let safe: String = type_name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        dir.join(format!("{safe}.csv"))
    }

    fn open_file(&self, type_name: &str, fields: &[String]) -> std::io::Result<CsvFile> {
        let path = Self::file_for(&self.dir, type_name);
        let f = open_append(&path)?;
        let new = f.metadata()?.len() == 0;
        let mut out = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(BufWriter::with_capacity(BUFFER_BYTES, f));
        if new {
            let header: Vec<&str> = CSV_COMMON_COLUMNS
                .iter()
                .copied()
                .chain(fields.iter().map(String::as_str))
                .collect();
            out.write_record(&header)?;
        }
        Ok(CsvFile {
            out,
            fields: fields.to_vec(),
        })
    }
}

fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Listener for CsvListener {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ListenerType {
        ListenerType::Csv
    }

    fn handle(&mut self, d: &Dispatched) -> Result<(), ListenerError> {
        let e = d.event;
        if e.kind != Kind::Audit {
            return Ok(());
        }
        let fields: Vec<String> = e.data.iter().map(|(k, _)| k.to_string()).collect();
        if !self.files.contains_key(&e.type_name) {
            match self.open_file(&e.type_name, &fields) {
                Ok(f) => {
                    self.files.insert(e.type_name.clone(), f);
                }
                Err(source) => {
                    self.errors += 1;
                    return Err(ListenerError::Io {
                        listener: "csv",
                        path: Self::file_for(&self.dir, &e.type_name)
                            .display()
                            .to_string(),
                        source,
                    });
                }
            }
        }
        let Some(file) = self.files.get_mut(&e.type_name) else {
            return Ok(());
        };
        if file.fields != fields {
            self.mismatched += 1;
            return Err(ListenerError::Other {
                listener: "csv",
                reason: format!(
                    "{} event with fields {fields:?}, its file has {:?}",
                    e.type_name, file.fields
                ),
            });
        }
        let c = &e.ctx;
        let o = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut row: Vec<String> = vec![
            crate::line::format_rfc3339_us(c.time_ns),
            d.id.to_owned(),
            e.module.to_owned(),
            e.rule.clone(),
            o(&c.src_ip),
            o(&c.ja4),
            o(&c.host),
            o(&c.parent_correlation_id),
            o(&c.root_correlation_id),
        ];
        row.extend(e.data.iter().map(|(_, v)| cell(v)));
        match file.out.write_record(&row) {
            Ok(()) => {
                self.written += 1;
                Ok(())
            }
            Err(err) => {
                self.errors += 1;
                Err(ListenerError::Other {
                    listener: "csv",
                    reason: err.to_string(),
                })
            }
        }
    }

    fn flush(&mut self) -> Result<(), ListenerError> {
        let mut result = Ok(());
        for (t, f) in &mut self.files {
            if let Err(source) = f.out.flush() {
                self.errors += 1;
                result = Err(ListenerError::Io {
                    listener: "csv",
                    path: Self::file_for(&self.dir, t).display().to_string(),
                    source,
                });
            }
        }
        result
    }

    fn reopen(&mut self) -> Result<(), ListenerError> {
        let r = self.flush();
        // Reopened (with a header if logrotate left an empty file) at their next event.
        self.files.clear();
        r
    }

    fn metrics(&self) -> Vec<Metric> {
        let label = format!("{{listener=\"{}\"}}", self.name);
        vec![
            Metric {
                name: format!("listener_events_written_total{label}"),
                help: "events written by the listener",
                kind: "counter",
                value: self.written,
            },
            Metric {
                name: format!("listener_write_errors_total{label}"),
                help: "failed writes or opens",
                kind: "counter",
                value: self.errors,
            },
            Metric {
                name: format!("listener_csv_field_mismatches_total{label}"),
                help: "audit events whose fields differ from their file's header",
                kind: "counter",
                value: self.mismatched,
            },
        ]
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::event::{Context, Event, Severity};

    fn event() -> Event {
        Event::new(
            Severity::Warning,
            "T",
            "threshold",
            "r",
            "s".into(),
            vec![],
            &Context::default(),
        )
    }

    #[test]
    fn a_jsonl_file_moved_away_by_logrotate_is_reopened_on_sighup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut l = JsonlListener::open(ListenerType::Jsonl, &path).unwrap();
        let e = event();
        l.handle(&Dispatched {
            event: &e,
            id: "1",
            json: "{\"n\":1}",
        })
        .unwrap();
        l.flush().unwrap();
        std::fs::rename(&path, dir.path().join("events.jsonl.1")).unwrap();
        l.reopen().unwrap();
        l.handle(&Dispatched {
            event: &e,
            id: "2",
            json: "{\"n\":2}",
        })
        .unwrap();
        l.flush().unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("events.jsonl.1")).unwrap(),
            "{\"n\":1}\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"n\":2}\n");
    }

    #[test]
    fn csv_ignores_standard_events_and_needs_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = CsvListener::open(dir.path()).unwrap();
        let e = event();
        c.handle(&Dispatched {
            event: &e,
            id: "1",
            json: "{}",
        })
        .unwrap();
        c.flush().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(CsvListener::open(&dir.path().join("missing")).is_err());
    }
}
