//! The detector's configuration: the `detect:` section of the sensor's YAML file (`ja4sensor
//! detect --config FILE`); every other section of the file is ignored here. Every key, its
//! default and its range is in the README's table ("ja4sensor detect: configuration"); this
//! file holds the same defaults and checks them. A bad value is an error naming the key
//! (`detect.listeners[1].timeout_ms = 0: expected 10..=600000`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use correlate_lib::config_file;
use serde::Deserialize;

use crate::event::{Kind, Severity};

pub const STATS_INTERVAL_S_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;
pub const POLL_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=60_000;
pub const BATCH_LINES_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
pub const UA_CACHE_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
pub const MAX_KEYS_RANGE: std::ops::RangeInclusive<usize> = 1..=10_000_000;
pub const COUNT_RANGE: std::ops::RangeInclusive<u32> = 1..=100_000;
pub const WINDOW_MS_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400_000;
pub const QUIET_MS_RANGE: std::ops::RangeInclusive<u64> = 0..=86_400_000;
pub const MAX_ENTRIES_RANGE: std::ops::RangeInclusive<usize> = 1..=10_000_000;
pub const SAVE_INTERVAL_S_RANGE: std::ops::RangeInclusive<u64> = 1..=86_400;
pub const CONCURRENCY_RANGE: std::ops::RangeInclusive<usize> = 1..=256;
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=600_000;
pub const QUEUE_RANGE: std::ops::RangeInclusive<usize> = 1..=1_000_000;
pub const TTL_S_RANGE: std::ops::RangeInclusive<u64> = 1..=31 * 86_400;
/// Rule names travel into the verdict table (32 bytes) and into CSV file names.
pub const MAX_RULE_NAME: usize = correlate_lib::verdict::layout::MAX_RULE_BYTES;
/// Event type names become CSV file names.
const MAX_TYPE_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not read, too large, not YAML of the section's shape.
    #[error(transparent)]
    File(#[from] config_file::FileError<serde_yaml::Error>),
    #[error("detect.{key} = {value}: {expected}")]
    Invalid {
        key: String,
        value: String,
        expected: String,
    },
}

fn invalid(
    key: impl Into<String>,
    value: impl ToString,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn check_range<T: PartialOrd + std::fmt::Debug + ToString>(
    key: impl Into<String>,
    v: T,
    r: &std::ops::RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if r.contains(&v) {
        Ok(())
    } else {
        Err(invalid(key, v, format!("expected {r:?}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartAt {
    /// A log present at the very first start is history: begin at its end (replay it with
    /// `--replay` if wanted). Files that appear later are read from their first line.
    #[default]
    End,
    Beginning,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    pub path: String,
    pub start_at: StartAt,
    pub poll_interval_ms: u64,
    pub batch_lines: usize,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            path: "/var/log/apache2/reqin.log*".into(),
            start_at: StartAt::End,
            poll_interval_ms: 200,
            batch_lines: 10_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub addr: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: "127.0.0.1:9466".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReportConfig {
    pub enabled: bool,
    /// Seed 003's Reportonly dispatched a notice event per record: off by default here.
    pub notice_every_line: bool,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            notice_every_line: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MismatchConfig {
    pub enabled: bool,
    pub check_client: bool,
    pub check_os: bool,
    pub severity: Severity,
    /// The logged header holding the User-Agent (`JsonSockLogHeaders User-Agent`).
    pub user_agent_field: String,
    pub ua_cache_entries: usize,
}

impl Default for MismatchConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            check_client: true,
            check_os: true,
            severity: Severity::Warning,
            user_agent_field: "header_User-Agent".into(),
            ua_cache_entries: 4096,
        }
    }
}

/// One field condition of a threshold rule: exactly one operator besides `field`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ConditionConfig {
    pub field: String,
    pub equals: Option<serde_yaml::Value>,
    pub not_equals: Option<serde_yaml::Value>,
    pub prefix: Option<String>,
    pub regex: Option<String>,
    pub gt: Option<f64>,
    pub ge: Option<f64>,
    pub lt: Option<f64>,
    pub le: Option<f64>,
    /// `2xx`, `3xx`, `4xx`, `5xx` (or `1xx`): the field (usually `status`) is in that hundred.
    pub status_class: Option<String>,
    pub exists: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Fields whose values together are the key (`[src_ip]`, `[ja4, host]`, `[header_X-Api-Key]`).
    pub key: Vec<String>,
    pub count: u32,
    pub window_ms: u64,
    pub quiet_ms: u64,
    pub severity: Severity,
    #[serde(rename = "type")]
    pub event_type: String,
    pub when: Vec<ConditionConfig>,
}

impl Default for RuleConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            key: vec!["src_ip".into()],
            count: 100,
            window_ms: 10_000,
            quiet_ms: 60_000,
            severity: Severity::Warning,
            event_type: "ThresholdExceeded".into(),
            when: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ThresholdConfig {
    pub enabled: bool,
    /// Keys tracked per rule; beyond it the least recently matched key is forgotten (counted).
    pub max_keys: usize,
    pub rules: Vec<RuleConfig>,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_keys: 100_000,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NewFingerprintConfig {
    pub enabled: bool,
    pub state_path: PathBuf,
    pub max_entries: usize,
    pub save_interval_s: u64,
}

impl Default for NewFingerprintConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            state_path: "/var/lib/ja4sensor/detect.fingerprints".into(),
            max_entries: 100_000,
            save_interval_s: 60,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ModulesConfig {
    pub report: ReportConfig,
    pub fingerprint_mismatch: MismatchConfig,
    pub threshold: ThresholdConfig,
    pub new_fingerprint: NewFingerprintConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerType {
    Log,
    Jsonl,
    Csv,
    Clickhouse,
    Exec,
    Verdict,
}

impl ListenerType {
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerType::Log => "log",
            ListenerType::Jsonl => "jsonl",
            ListenerType::Csv => "csv",
            ListenerType::Clickhouse => "clickhouse",
            ListenerType::Exec => "exec",
            ListenerType::Verdict => "verdict",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum VerdictKeyField {
    #[default]
    SrcIp,
    Ja4,
}

/// One listener. `type` decides which of the other keys apply (the rest must be absent).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    #[serde(rename = "type")]
    pub kind: ListenerType,
    #[serde(default = "yes")]
    pub enabled: bool,
    // Criteria (every listener).
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub modules: Vec<String>,
    #[serde(default)]
    pub min_severity: Severity,
    #[serde(default = "both_kinds")]
    pub kinds: Vec<Kind>,
    // jsonl, clickhouse: the file; csv: the directory.
    pub path: Option<PathBuf>,
    // exec
    pub command: Option<Vec<String>>,
    pub max_concurrency: Option<usize>,
    pub timeout_ms: Option<u64>,
    pub queue: Option<usize>,
    // verdict
    pub key: Option<VerdictKeyField>,
    pub verdict: Option<String>,
    pub ttl_s: Option<u64>,
    pub slot_count: Option<u32>,
    pub group: Option<String>,
    pub mode: Option<String>,
}

fn yes() -> bool {
    true
}

fn both_kinds() -> Vec<Kind> {
    vec![Kind::Event, Kind::Audit]
}

pub const DEFAULT_EXEC_CONCURRENCY: usize = 4;
pub const DEFAULT_EXEC_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_EXEC_QUEUE: usize = 1_000;
pub const DEFAULT_VERDICT_WORD: &str = "block";
pub const DEFAULT_VERDICT_TTL_S: u64 = 600;
pub const DEFAULT_VERDICT_MODE: &str = "0640";
pub const DEFAULT_JSONL_PATH: &str = "/var/log/ja4sensor/events.jsonl";
pub const DEFAULT_CLICKHOUSE_PATH: &str = "/var/log/ja4sensor/events.clickhouse.jsonl";
pub const DEFAULT_CSV_DIR: &str = "/var/log/ja4sensor/audit";

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    pub input: InputConfig,
    pub checkpoint_path: PathBuf,
    pub stats_interval_s: u64,
    pub clients: Vec<PathBuf>,
    pub metrics: MetricsConfig,
    pub log_level: String,
    pub modules: ModulesConfig,
    pub listeners: Vec<ListenerConfig>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            input: InputConfig::default(),
            checkpoint_path: "/var/lib/ja4sensor/detect.checkpoint".into(),
            stats_interval_s: 60,
            clients: vec![correlate_lib::clients::DEFAULT_CLIENTS_PATH.into()],
            metrics: MetricsConfig::default(),
            log_level: "info".into(),
            modules: ModulesConfig::default(),
            listeners: vec![ListenerConfig {
                kind: ListenerType::Log,
                enabled: true,
                types: Vec::new(),
                modules: Vec::new(),
                min_severity: Severity::Warning,
                kinds: vec![Kind::Event],
                path: None,
                command: None,
                max_concurrency: None,
                timeout_ms: None,
                queue: None,
                key: None,
                verdict: None,
                ttl_s: None,
                slot_count: None,
                group: None,
                mode: None,
            }],
        }
    }
}

/// The sensor's file: only `detect:` is ours.
#[derive(Debug, Default, Deserialize)]
struct SensorFile {
    #[serde(default)]
    detect: Option<DetectConfig>,
}

const LOG_LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// Whether `s` is a name fit for a rule or event type: `[A-Za-z0-9_.-]`, 1..=max bytes.
fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl DetectConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg = config_file::load(path, Self::parse)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `detect:` section of a YAML document; defaults when there is none.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let file: SensorFile = serde_yaml::from_str(text)?;
        Ok(file.detect.unwrap_or_default())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let i = &self.input;
        if let Err(e) = glob::Pattern::new(&i.path) {
            return Err(invalid("input.path", &i.path, e.to_string()));
        }
        check_range(
            "input.poll_interval_ms",
            i.poll_interval_ms,
            &POLL_INTERVAL_MS_RANGE,
        )?;
        check_range("input.batch_lines", i.batch_lines, &BATCH_LINES_RANGE)?;
        check_range(
            "stats_interval_s",
            self.stats_interval_s,
            &STATS_INTERVAL_S_RANGE,
        )?;
        if !LOG_LEVELS.contains(&self.log_level.as_str()) {
            return Err(invalid(
                "log_level",
                &self.log_level,
                format!("expected one of {LOG_LEVELS:?}"),
            ));
        }
        if self.metrics.enabled {
            self.metrics_addr()?;
        }
        let m = &self.modules;
        check_range(
            "modules.fingerprint_mismatch.ua_cache_entries",
            m.fingerprint_mismatch.ua_cache_entries,
            &UA_CACHE_RANGE,
        )?;
        if m.fingerprint_mismatch.user_agent_field.is_empty() {
            return Err(invalid(
                "modules.fingerprint_mismatch.user_agent_field",
                "\"\"",
                "expected a field name",
            ));
        }
        check_range(
            "modules.threshold.max_keys",
            m.threshold.max_keys,
            &MAX_KEYS_RANGE,
        )?;
        let mut names = std::collections::HashSet::new();
        for (n, r) in m.threshold.rules.iter().enumerate() {
            let k = |f: &str| format!("modules.threshold.rules[{n}].{f}");
            if !is_name(&r.name, MAX_RULE_NAME) {
                return Err(invalid(
                    k("name"),
                    format!("{:?}", r.name),
                    format!("expected 1..={MAX_RULE_NAME} bytes of [A-Za-z0-9_.-]"),
                ));
            }
            if !names.insert(r.name.clone()) {
                return Err(invalid(
                    k("name"),
                    &r.name,
                    "expected a name no other rule has",
                ));
            }
            if r.key.is_empty() || r.key.iter().any(String::is_empty) {
                return Err(invalid(
                    k("key"),
                    format!("{:?}", r.key),
                    "expected a list of field names, e.g. [src_ip] or [ja4, host]",
                ));
            }
            check_range(k("count"), r.count, &COUNT_RANGE)?;
            check_range(k("window_ms"), r.window_ms, &WINDOW_MS_RANGE)?;
            check_range(k("quiet_ms"), r.quiet_ms, &QUIET_MS_RANGE)?;
            if !is_name(&r.event_type, MAX_TYPE_NAME) {
                return Err(invalid(
                    k("type"),
                    &r.event_type,
                    format!("expected 1..={MAX_TYPE_NAME} bytes of [A-Za-z0-9_.-]"),
                ));
            }
            for (c, cond) in r.when.iter().enumerate() {
                crate::modules::threshold::Condition::from_config(cond).map_err(|expected| {
                    invalid(
                        format!("modules.threshold.rules[{n}].when[{c}]"),
                        format!("{cond:?}"),
                        expected,
                    )
                })?;
            }
        }
        let nf = &m.new_fingerprint;
        check_range(
            "modules.new_fingerprint.max_entries",
            nf.max_entries,
            &MAX_ENTRIES_RANGE,
        )?;
        check_range(
            "modules.new_fingerprint.save_interval_s",
            nf.save_interval_s,
            &SAVE_INTERVAL_S_RANGE,
        )?;
        for (n, l) in self.listeners.iter().enumerate() {
            self.validate_listener(n, l)?;
        }
        Ok(())
    }

    fn validate_listener(&self, n: usize, l: &ListenerConfig) -> Result<(), ConfigError> {
        let k = |f: &str| format!("listeners[{n}].{f}");
        use ListenerType as T;
        let allowed: &[&str] = match l.kind {
            T::Log => &[],
            T::Jsonl | T::Clickhouse | T::Csv => &["path"],
            T::Exec => &["command", "max_concurrency", "timeout_ms", "queue"],
            T::Verdict => &[
                "path",
                "key",
                "verdict",
                "ttl_s",
                "slot_count",
                "group",
                "mode",
            ],
        };
        let present = [
            ("path", l.path.is_some()),
            ("command", l.command.is_some()),
            ("max_concurrency", l.max_concurrency.is_some()),
            ("timeout_ms", l.timeout_ms.is_some()),
            ("queue", l.queue.is_some()),
            ("key", l.key.is_some()),
            ("verdict", l.verdict.is_some()),
            ("ttl_s", l.ttl_s.is_some()),
            ("slot_count", l.slot_count.is_some()),
            ("group", l.group.is_some()),
            ("mode", l.mode.is_some()),
        ];
        if let Some((name, _)) = present
            .iter()
            .find(|(name, p)| *p && !allowed.contains(name))
        {
            return Err(invalid(
                k(name),
                "(set)",
                format!("not a key of a {} listener", l.kind.as_str()),
            ));
        }
        if l.kinds.is_empty() {
            return Err(invalid(
                k("kinds"),
                "[]",
                "expected [event], [audit] or both",
            ));
        }
        for t in &l.types {
            if !is_name(t, MAX_TYPE_NAME) {
                return Err(invalid(k("types"), t, "expected event type names"));
            }
        }
        for m in &l.modules {
            if !crate::modules::MODULE_NAMES.contains(&m.as_str()) {
                return Err(invalid(
                    k("modules"),
                    m,
                    format!("expected one of {:?}", crate::modules::MODULE_NAMES),
                ));
            }
        }
        match l.kind {
            T::Exec => {
                let cmd = l.command.as_deref().unwrap_or_default();
                if cmd.first().is_none_or(|p| !Path::new(p).is_absolute()) {
                    return Err(invalid(k("command"), format!("{cmd:?}"), "expected [\"/absolute/program\", \"arg\", ...] (run directly, never through a shell)"));
                }
                check_range(
                    k("max_concurrency"),
                    l.max_concurrency.unwrap_or(DEFAULT_EXEC_CONCURRENCY),
                    &CONCURRENCY_RANGE,
                )?;
                check_range(
                    k("timeout_ms"),
                    l.timeout_ms.unwrap_or(DEFAULT_EXEC_TIMEOUT_MS),
                    &TIMEOUT_MS_RANGE,
                )?;
                check_range(
                    k("queue"),
                    l.queue.unwrap_or(DEFAULT_EXEC_QUEUE),
                    &QUEUE_RANGE,
                )?;
            }
            T::Verdict => {
                let w = l.verdict.as_deref().unwrap_or(DEFAULT_VERDICT_WORD);
                correlate_lib::verdict::check_word(w)
                    .map_err(|e| invalid(k("verdict"), w, e.to_string()))?;
                check_range(
                    k("ttl_s"),
                    l.ttl_s.unwrap_or(DEFAULT_VERDICT_TTL_S),
                    &TTL_S_RANGE,
                )?;
                let slots = l
                    .slot_count
                    .unwrap_or(correlate_lib::verdict::DEFAULT_SLOT_COUNT);
                if !correlate_lib::verdict::layout::valid_slot_count(slots) {
                    return Err(invalid(
                        k("slot_count"),
                        slots,
                        format!(
                            "expected a power of two in {}..={}",
                            correlate_lib::verdict::layout::MIN_SLOT_COUNT,
                            correlate_lib::verdict::layout::MAX_SLOT_COUNT
                        ),
                    ));
                }
                let mode = l.mode.as_deref().unwrap_or(DEFAULT_VERDICT_MODE);
                parse_mode(mode).ok_or_else(|| {
                    invalid(
                        k("mode"),
                        mode,
                        "expected an octal mode without group or other write bits, e.g. \"0640\"",
                    )
                })?;
            }
            T::Log | T::Jsonl | T::Clickhouse | T::Csv => {}
        }
        Ok(())
    }

    pub fn metrics_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.metrics
            .addr
            .parse()
            .map_err(|e: std::net::AddrParseError| {
                invalid("metrics.addr", &self.metrics.addr, e.to_string())
            })
    }
}

/// An octal file mode with no bits beyond 0o777 and nobody but the owner writing (readers map
/// the table read-only; a writable table would let anyone forge verdicts).
pub fn parse_mode(s: &str) -> Option<u32> {
    let m = u32::from_str_radix(s.trim_start_matches("0o"), 8).ok()?;
    (m & !0o777 == 0 && m & 0o022 == 0).then_some(m)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_a_detect_section_gives_defaults() {
        let cfg =
            DetectConfig::parse("core:\n  interface: lo\nship:\n  log_level: info\n").unwrap();
        assert_eq!(cfg, DetectConfig::default());
        cfg.validate().unwrap();
    }

    #[test]
    fn rules_and_listeners_parse_and_bad_values_name_their_key() {
        let text = r#"
detect:
  modules:
    threshold:
      rules:
        - name: login-flood
          key: [src_ip]
          count: 5
          window_ms: 1000
          when:
            - {field: path, prefix: /login}
            - {field: status, status_class: 4xx}
  listeners:
    - {type: jsonl, path: /tmp/e.jsonl, min_severity: warning}
    - {type: exec, command: [/bin/cat], timeout_ms: 0}
"#;
        let cfg = DetectConfig::parse(text).unwrap();
        assert_eq!(cfg.modules.threshold.rules[0].count, 5);
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.starts_with("detect.listeners[1].timeout_ms = 0"), "{e}");

        let bad_cond = "detect:\n  modules:\n    threshold:\n      rules:\n        - {name: r, when: [{field: status, gt: 1, lt: 2}]}\n";
        let e = DetectConfig::parse(bad_cond)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("modules.threshold.rules[0].when[0]"), "{e}");
        let shell = "detect:\n  listeners:\n    - {type: exec, command: [\"sh -c 'x'\"]}\n";
        let e = DetectConfig::parse(shell)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("listeners[0].command"), "{e}");
        let stray = "detect:\n  listeners:\n    - {type: log, path: /x}\n";
        let e = DetectConfig::parse(stray)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("listeners[0].path"), "{e}");
        let word = "detect:\n  listeners:\n    - {type: verdict, verdict: Block}\n";
        let e = DetectConfig::parse(word)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("listeners[0].verdict = Block"), "{e}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(DetectConfig::parse("detect:\n  stats_intervall_s: 3\n").is_err());
        assert!(DetectConfig::parse("detect:\n  listeners:\n    - {type: syslog}\n").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Some(0o640));
        assert_eq!(parse_mode("0666"), None);
        assert_eq!(parse_mode("x"), None);
    }
}
