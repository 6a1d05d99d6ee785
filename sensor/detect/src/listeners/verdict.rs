//! The `verdict` listener: the loop back into Apache. Each event it takes sets a verdict in the
//! shared-memory verdict table (`correlate_lib::verdict`) for the event's client IP (`key:
//! src_ip`) or JA4 (`key: ja4`): the configured word (`block`), the event's rule, and an expiry
//! `ttl_s` from now (wall clock: httpd compares it with the request time). mod_reqin_log looks
//! the table up at `post_read_request` and exports `REQIN_VERDICT`, so `Require expr
//! "%{ENV:REQIN_VERDICT} != 'block'"` refuses the client's next request.
//!
//! The table is created at start (readable by the Apache group, `group`), keeping the
//! unexpired verdicts of the previous run; expired verdicts are swept once a second.

use std::path::Path;

use correlate_lib::verdict::{SetOutcome, VerdictKey, VerdictWriter};

use super::{Dispatched, Listener, ListenerError};
use crate::config::{ListenerType, VerdictKeyField};
use crate::modules::Metric;

pub struct VerdictListener {
    name: String,
    writer: VerdictWriter,
    key: VerdictKeyField,
    word: String,
    ttl_ns: u64,
    set: u64,
    no_key: u64,
    errors: u64,
    last_sweep_ns: u64,
}

impl VerdictListener {
    pub fn open(
        path: &Path,
        slot_count: u32,
        mode: u32,
        gid: Option<u32>,
        key: VerdictKeyField,
        word: &str,
        ttl_s: u64,
    ) -> Result<Self, ListenerError> {
        let now = correlate_lib::unix_now_ns();
        let (writer, kept) = VerdictWriter::create_keeping(path, slot_count, mode, gid, now)
            .map_err(|e| ListenerError::Other {
                listener: "verdict",
                reason: e.to_string(),
            })?;
        log::info!(
            "verdict table {} ({} slots, generation {:x}): {kept} unexpired verdict(s) kept from the previous run",
            path.display(),
            slot_count,
            writer.generation()
        );
        Ok(Self {
            name: format!("verdict:{}", path.display()),
            writer,
            key,
            word: word.to_owned(),
            ttl_ns: ttl_s.saturating_mul(1_000_000_000),
            set: 0,
            no_key: 0,
            errors: 0,
            last_sweep_ns: now,
        })
    }
}

impl Listener for VerdictListener {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ListenerType {
        ListenerType::Verdict
    }

    fn handle(&mut self, d: &Dispatched) -> Result<(), ListenerError> {
        let c = &d.event.ctx;
        let ip;
        let key = match self.key {
            VerdictKeyField::SrcIp => match c.src_ip.as_deref().and_then(|s| s.parse().ok()) {
                Some(a) => {
                    ip = a;
                    VerdictKey::Ip(ip)
                }
                None => {
                    self.no_key += 1;
                    return Ok(());
                }
            },
            VerdictKeyField::Ja4 => match c.ja4.as_deref() {
                Some(j) => VerdictKey::Ja4(j),
                None => {
                    self.no_key += 1;
                    return Ok(());
                }
            },
        };
        let now = correlate_lib::unix_now_ns();
        let mut rule = d.event.rule.clone();
        if rule.is_empty() {
            rule = d.event.type_name.clone();
        }
        rule.truncate(correlate_lib::verdict::layout::MAX_RULE_BYTES);
        match self.writer.set(
            &key,
            &self.word,
            &rule,
            now.saturating_add(self.ttl_ns),
            now,
        ) {
            Ok(outcome) => {
                self.set += 1;
                if outcome == SetOutcome::Evicted {
                    log::warn!(
                        "verdict table full around {key:?}: the verdict expiring first was dropped"
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.errors += 1;
                Err(ListenerError::Other {
                    listener: "verdict",
                    reason: e.to_string(),
                })
            }
        }
    }

    fn tick(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < 1_000_000_000 {
            return;
        }
        self.last_sweep_ns = now_ns;
        if let Err(e) = self.writer.expire(now_ns) {
            self.errors += 1;
            log::error!("verdict table: {e}");
        }
    }

    fn metrics(&self) -> Vec<Metric> {
        let label = format!("{{listener=\"{}\"}}", self.name);
        let m = |what: &str, help, kind, value| Metric {
            name: format!("verdict_{what}{label}"),
            help,
            kind,
            value,
        };
        vec![
            m("set_total", "verdicts set", "counter", self.set),
            m(
                "no_key_total",
                "events without the key field (src_ip or ja4)",
                "counter",
                self.no_key,
            ),
            m(
                "errors_total",
                "verdicts that could not be set",
                "counter",
                self.errors,
            ),
            m(
                "live",
                "verdicts in the table",
                "gauge",
                self.writer.live() as u64,
            ),
            m(
                "evictions_total",
                "verdicts dropped from a full probe window",
                "counter",
                self.writer.evictions(),
            ),
        ]
    }
}
