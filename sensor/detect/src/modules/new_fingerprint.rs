//! `new_fingerprint`: a JA4 never seen before on this host. Dispatches one `NewFingerprint`
//! audit event the first time a JA4 appears. What has been seen is kept across restarts in
//! `state_path` (one JSON object per line: `ja4`, `first_ns`, `last_ns`, `count`; replaced
//! atomically every `save_interval_s` and at exit) and bounded by `max_entries` (the JA4 seen
//! least recently is forgotten first, counted; seen again, it is new again).
//!
//! A replay (`--replay`) starts from nothing and saves nothing: it shows what would be new in
//! those files alone, and leaves the service's state alone.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};

use correlate_lib::clients::ClientMap;
use correlate_lib::fields;
use lru::LruCache;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Metric, Module, Stats};
use crate::event::{AuditType, Event, LineCtx};
use crate::line::Line;

/// The audit event and its declared fields.
pub const NEW_FINGERPRINT: AuditType<7> = AuditType {
    name: "NewFingerprint",
    fields: [
        "ja4",
        "ja4_client",
        "src_ip",
        "host",
        "user_agent",
        "tcp_os",
        "first_seen",
    ],
};

/// A state file line longer than this is not ours.
const MAX_STATE_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
struct Seen {
    first_ns: u64,
    last_ns: u64,
    count: u64,
}

#[derive(Serialize, Deserialize)]
struct StateLine {
    ja4: String,
    #[serde(flatten)]
    seen: Seen,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("new_fingerprint state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub struct NewFingerprint {
    seen: LruCache<Box<str>, Seen>,
    /// `None`: a replay, nothing saved.
    state_path: Option<PathBuf>,
    save_every_ns: u64,
    last_save_ns: u64,
    dirty: bool,
    clients: std::sync::Arc<ClientMap>,
    user_agent_field: String,
    lines: u64,
    with_ja4: u64,
    events: u64,
    evicted: u64,
    bad_state_lines: u64,
    save_errors: u64,
}

impl NewFingerprint {
    /// With `state_path`, loads what an earlier run saved (a missing file is an empty state; bad
    /// lines are skipped and counted, the rest kept).
    pub fn new(
        max_entries: usize,
        state_path: Option<&Path>,
        save_interval_s: u64,
        clients: std::sync::Arc<ClientMap>,
        user_agent_field: &str,
    ) -> Result<Self, StateError> {
        let cap = NonZeroUsize::new(max_entries).unwrap_or(NonZeroUsize::MIN);
        let mut m = Self {
            seen: LruCache::new(cap),
            state_path: state_path.map(Path::to_path_buf),
            save_every_ns: save_interval_s.saturating_mul(1_000_000_000),
            last_save_ns: correlate_lib::unix_now_ns(),
            dirty: false,
            clients,
            user_agent_field: user_agent_field.to_owned(),
            lines: 0,
            with_ja4: 0,
            events: 0,
            evicted: 0,
            bad_state_lines: 0,
            save_errors: 0,
        };
        if let Some(p) = state_path {
            m.load(p)?;
        }
        Ok(m)
    }

    fn load(&mut self, path: &Path) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: path.to_owned(),
            source,
        };
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        };
        let mut entries: Vec<StateLine> = Vec::new();
        let mut r = BufReader::new(f);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let n = (&mut r)
                .take(MAX_STATE_LINE as u64 + 1)
                .read_until(b'\n', &mut buf)
                .map_err(io)?;
            if n == 0 {
                break;
            }
            match serde_json::from_slice::<StateLine>(&buf) {
                Ok(l) if !l.ja4.is_empty() => entries.push(l),
                _ => self.bad_state_lines += 1,
            }
        }
        // Least recently seen first, so the LRU order is restored.
        entries.sort_by_key(|e| e.seen.last_ns);
        for e in entries {
            self.seen.push(e.ja4.into_boxed_str(), e.seen);
        }
        if self.bad_state_lines > 0 {
            log::warn!(
                "new_fingerprint state {}: {} bad line(s) skipped, {} JA4s kept",
                path.display(),
                self.bad_state_lines,
                self.seen.len()
            );
        }
        Ok(())
    }

    /// Writes the state (temp file, fsync, rename), oldest first.
    pub fn save(&mut self) -> Result<(), StateError> {
        let Some(path) = self.state_path.clone() else {
            return Ok(());
        };
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::io::BufWriter::new(
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&tmp)?,
            );
            for (ja4, seen) in self.seen.iter().rev() {
                let line = StateLine {
                    ja4: ja4.to_string(),
                    seen: *seen,
                };
                serde_json::to_writer(&mut f, &line)?;
                f.write_all(b"\n")?;
            }
            let f = f.into_inner().map_err(|e| e.into_error())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io(e)
        })?;
        self.dirty = false;
        Ok(())
    }
}

impl Module for NewFingerprint {
    fn name(&self) -> &'static str {
        "new_fingerprint"
    }

    fn on_line(&mut self, line: &Line, ctx: &LineCtx, out: &mut Vec<Event>) {
        self.lines += 1;
        let Some(ja4) = line.str(fields::JA4) else {
            return;
        };
        self.with_ja4 += 1;
        let t = ctx.time_ns;
        if let Some(s) = self.seen.get_mut(ja4) {
            s.last_ns = s.last_ns.max(t);
            s.count += 1;
            self.dirty = true;
            return;
        }
        let seen = Seen {
            first_ns: t,
            last_ns: t,
            count: 1,
        };
        if let Some((old, _)) = self.seen.push(ja4.into(), seen) {
            if &*old != ja4 {
                self.evicted += 1;
            }
        }
        self.dirty = true;
        self.events += 1;
        let client = self.clients.client(ja4).to_owned();
        let s = |f: &str| Value::from(line.str(f).unwrap_or(""));
        let values = [
            ja4.into(),
            client.clone().into(),
            s(fields::SRC_IP),
            s(fields::HOST),
            s(&self.user_agent_field),
            s(fields::TCP_OS),
            crate::line::format_rfc3339_us(t).into(),
        ];
        out.push(NEW_FINGERPRINT.event(
            "new_fingerprint",
            "",
            format!("first time this host sees JA4 {ja4} ({client})"),
            values,
            ctx.context(line),
        ));
    }

    fn stats(&self) -> Stats {
        Stats {
            lines: self.lines,
            matched: self.with_ja4,
            events: self.events,
            tracked: self.seen.len() as u64,
            evicted: self.evicted,
            ..Stats::default()
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        vec![
            Metric {
                name: "new_fingerprint_state_save_errors_total".into(),
                help: "failed writes of the seen-JA4 state file",
                kind: "counter",
                value: self.save_errors,
            },
            Metric {
                name: "new_fingerprint_bad_state_lines_total".into(),
                help: "lines of the state file skipped at start-up",
                kind: "counter",
                value: self.bad_state_lines,
            },
        ]
    }

    fn tick(&mut self, now_ns: u64, last: bool) {
        let due = now_ns.saturating_sub(self.last_save_ns) >= self.save_every_ns;
        if self.dirty && (due || last) {
            self.last_save_ns = now_ns;
            if let Err(e) = self.save() {
                self.save_errors += 1;
                log::error!("{e}");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn feed(m: &mut NewFingerprint, ja4s: &[&str]) -> usize {
        let mut out = Vec::new();
        for (i, j) in ja4s.iter().enumerate() {
            let raw = format!(r#"{{"ja4":"{j}","src_ip":"10.0.0.1"}}"#);
            let l = Line::parse(raw.as_bytes()).unwrap();
            m.on_line(&l, &LineCtx::at(i as u64 + 1), &mut out);
        }
        out.len()
    }

    #[test]
    fn each_ja4_is_new_once_and_the_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fp");
        let clients = std::sync::Arc::new(ClientMap::new());
        let mut m =
            NewFingerprint::new(10, Some(&p), 60, clients.clone(), "header_User-Agent").unwrap();
        assert_eq!(feed(&mut m, &["a", "b", "a", "c", "b"]), 3);
        m.tick(0, true);
        let mut again =
            NewFingerprint::new(10, Some(&p), 60, clients, "header_User-Agent").unwrap();
        assert_eq!(
            feed(&mut again, &["a", "b", "c", "d"]),
            1,
            "only d is new after the restart"
        );
        assert_eq!(again.stats().tracked, 4);
    }

    #[test]
    fn the_state_is_bounded_and_bad_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fp");
        std::fs::write(
            &p,
            b"{\"ja4\":\"x\",\"first_ns\":1,\"last_ns\":1,\"count\":1}\nnot json\n",
        )
        .unwrap();
        let clients = std::sync::Arc::new(ClientMap::new());
        let mut m = NewFingerprint::new(2, Some(&p), 60, clients, "header_User-Agent").unwrap();
        assert_eq!(m.bad_state_lines, 1);
        // x known; y new; z new and pushes out x (least recent); x new again, pushes out y.
        assert_eq!(feed(&mut m, &["x", "y", "z", "x"]), 3);
        assert_eq!(m.stats().evicted, 2);
        let mut out = Vec::new();
        let l = Line::parse(br#"{"ja4":"y"}"#).unwrap();
        m.on_line(&l, &LineCtx::at(0), &mut out);
        assert_eq!(out.len(), 1, "y was forgotten to keep 2 entries: new again");
    }
}
