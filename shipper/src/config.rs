//! The shipper's configuration: the `ship:` section of the sensor's YAML file (`ja4sensor ship
//! --config FILE`); every other section of that file is ignored here. The ClickHouse keys mirror
//! logcorrelator's `outputs.clickhouse.*` (seed 000) where the meaning is the same.
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `ship.clickhouse.url` | `http://127.0.0.1:8123` | ClickHouse HTTP interface (the `clickhouse` crate speaks HTTP, not the native port 9000 of logcorrelator's `dsn`) |
//! | `ship.clickhouse.database` | `default` | database holding `http_logs_raw`, `http_logs` and the shipper's own tables |
//! | `ship.clickhouse.user` | `default` | user |
//! | `ship.clickhouse.password` | `""` | password (prefer a file readable only by the service user) |
//! | `ship.clickhouse.hosts` | `[]` (= `[url]`) | several ClickHouse HTTP URLs in fail-over order: each batch goes whole to the first that is up; `--init-schema` runs on every one |
//! | `ship.clickhouse.cluster` | `""` | name of the cluster in the servers' `remote_servers`: `--init-schema` then also creates the `*_all` Distributed tables |
//! | `ship.clickhouse.batch_size` | `500` | a batch of at least this many lines is sent at once (1–100 000) ... |
//! | `ship.clickhouse.flush_interval_ms` | `200` | ... a smaller one when its first line has waited this long (10–60 000) |
//! | `ship.clickhouse.max_batch_rows` | `100000` | when behind, a batch takes every complete line up to this many (`batch_size`–1 000 000) ... |
//! | `ship.clickhouse.max_batch_bytes` | `67108864` | ... and up to this many bytes of log (64 KiB–256 MiB) |
//! | `ship.clickhouse.max_in_flight` | `2` | batches inserted at once (1–16); the checkpoint only moves over a confirmed prefix |
//! | `ship.clickhouse.batch_retention_days` | `30` | `ship_batches` records older than this are deleted hourly, except the newest 16 of each file (0 = keep all) |
//! | `ship.clickhouse.timeout_ms` | `5000` | per request (insert or query); a timed-out insert is checked, never blindly re-sent (100–600 000) |
//! | `ship.clickhouse.compression` | `lz4` | `lz4` or `none` (request bodies; both work with 18.16) |
//! | `ship.clickhouse.validation` | `auto` | `auto` (on for ClickHouse ≥ 23, off below, where the crate's typed formats do not exist), `on`, `off` |
//! | `ship.retry.initial_ms` | `100` | first back-off after a failed insert, checkpoint or dead-letter write (seed 000: 100 ms base) |
//! | `ship.retry.max_ms` | `30000` | back-off ceiling; doubles from `initial_ms` up to this, then stays |
//! | `ship.events.path` | `""` | glob of the detector's jsonl event files, shipped into `reqin_events` the same way (`""` = none) |
//! | `ship.events.checkpoint_path` | `/var/lib/ja4sensor/ship-events.checkpoint` | shipped offsets of the event files |
//! | `ship.input.path` | `/var/log/apache2/reqin.log*` | glob of the log files to follow: the live file, its logrotate-renamed predecessors and rotatelogs' time-named files; `.gz`/`.bz2`/`.xz`/`.zst` matches are skipped |
//! | `ship.checkpoint_path` | `/var/lib/ja4sensor/ship.checkpoint` | where shipped offsets live (JSON; replaced atomically after every confirmed insert) |
//! | `ship.dead_letter_path` | `/var/lib/ja4sensor/ship.deadletter` | malformed lines are appended here, one JSON object each (`batch_id`, `file`, `offset`, `line`) |
//! | `ship.metrics.enabled` | `true` | serve `/metrics` (Prometheus text) and `/health` |
//! | `ship.metrics.addr` | `127.0.0.1:9465` | listen address of that endpoint; loopback by default, it is unauthenticated |
//! | `ship.metrics.log_interval_s` | `10` | a metrics summary is logged this often (0 = never) |
//! | `ship.log_level` | `info` | `error` … `trace` (`RUST_LOG` wins) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use correlate_lib::config_file;
use serde::Deserialize;

pub const BATCH_SIZE_RANGE: std::ops::RangeInclusive<usize> = 1..=100_000;
pub const FLUSH_INTERVAL_MS_RANGE: std::ops::RangeInclusive<u64> = 10..=60_000;
pub const TIMEOUT_MS_RANGE: std::ops::RangeInclusive<u64> = 100..=600_000;
/// Below ClickHouse's `max_insert_block_size` (1 048 576 rows): a batch is parsed as one block,
/// so the inbox's deadline check and its views see the whole batch at once.
pub const MAX_BATCH_ROWS_LIMIT: usize = 1_000_000;
pub const MAX_BATCH_BYTES_RANGE: std::ops::RangeInclusive<usize> = 64 * 1024..=256 * 1024 * 1024;
/// The most batches `max_in_flight` lets be inserted at once.
pub const MAX_IN_FLIGHT_LIMIT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not read, too large, not YAML of the section's shape.
    #[error(transparent)]
    File(#[from] config_file::FileError<serde_yaml::Error>),
    #[error("ship.{key} = {value}: {expected}")]
    Invalid {
        key: &'static str,
        value: String,
        expected: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSetting {
    #[default]
    Lz4,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ValidationSetting {
    #[default]
    Auto,
    On,
    Off,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClickHouseConfig {
    pub url: String,
    pub hosts: Vec<String>,
    pub cluster: String,
    pub database: String,
    pub user: String,
    pub password: String,
    pub batch_size: usize,
    pub flush_interval_ms: u64,
    pub max_batch_rows: usize,
    pub max_batch_bytes: usize,
    pub max_in_flight: usize,
    pub batch_retention_days: u32,
    pub timeout_ms: u64,
    pub compression: CompressionSetting,
    pub validation: ValidationSetting,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".into(),
            hosts: Vec::new(),
            cluster: String::new(),
            database: "default".into(),
            user: "default".into(),
            password: String::new(),
            batch_size: 500,
            flush_interval_ms: 200,
            max_batch_rows: 100_000,
            // 18.16 inserts 100 000-row batches twice as fast per row as 10 000-row ones
            // (BENCHMARKS.md); a batch in flight holds its rows once plus their compressed copy.
            max_batch_bytes: 64 * 1024 * 1024,
            max_in_flight: 2,
            batch_retention_days: 30,
            // Seed 000 uses 1 s; an insert of 500 lines into a server that is merging can take
            // longer, and each timeout costs a check round-trip, so we wait longer.
            timeout_ms: 5000,
            compression: CompressionSetting::Lz4,
            validation: ValidationSetting::Auto,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial_ms: 100,
            max_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InputConfig {
    pub path: String,
}

impl Default for InputConfig {
    fn default() -> Self {
        Self {
            path: "/var/log/apache2/reqin.log*".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    pub path: String,
    pub checkpoint_path: PathBuf,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            checkpoint_path: "/var/lib/ja4sensor/ship-events.checkpoint".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub enabled: bool,
    pub addr: String,
    pub log_interval_s: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            addr: "127.0.0.1:9465".into(),
            log_interval_s: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShipConfig {
    pub clickhouse: ClickHouseConfig,
    pub retry: RetryConfig,
    pub input: InputConfig,
    pub events: EventsConfig,
    pub checkpoint_path: PathBuf,
    pub dead_letter_path: PathBuf,
    pub metrics: MetricsConfig,
    pub log_level: String,
}

impl Default for ShipConfig {
    fn default() -> Self {
        Self {
            clickhouse: ClickHouseConfig::default(),
            retry: RetryConfig::default(),
            input: InputConfig::default(),
            events: EventsConfig::default(),
            checkpoint_path: "/var/lib/ja4sensor/ship.checkpoint".into(),
            dead_letter_path: "/var/lib/ja4sensor/ship.deadletter".into(),
            metrics: MetricsConfig::default(),
            log_level: "info".into(),
        }
    }
}

/// The sensor's file: only `ship:` is ours; the sensor's own sections are not parsed here.
#[derive(Debug, Default, Deserialize)]
struct SensorFile {
    #[serde(default)]
    ship: Option<ShipConfig>,
}

impl ShipConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg = config_file::load(path, Self::parse)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `ship:` section of a YAML document; defaults when there is none.
    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        let file: SensorFile = serde_yaml::from_str(text)?;
        Ok(file.ship.unwrap_or_default())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let ch = &self.clickhouse;
        let invalid = |key, value: String, expected: String| ConfigError::Invalid {
            key,
            value,
            expected,
        };
        if !BATCH_SIZE_RANGE.contains(&ch.batch_size) {
            return Err(invalid(
                "clickhouse.batch_size",
                ch.batch_size.to_string(),
                format!("expected {BATCH_SIZE_RANGE:?}"),
            ));
        }
        if !FLUSH_INTERVAL_MS_RANGE.contains(&ch.flush_interval_ms) {
            return Err(invalid(
                "clickhouse.flush_interval_ms",
                ch.flush_interval_ms.to_string(),
                format!("expected {FLUSH_INTERVAL_MS_RANGE:?}"),
            ));
        }
        if !TIMEOUT_MS_RANGE.contains(&ch.timeout_ms) {
            return Err(invalid(
                "clickhouse.timeout_ms",
                ch.timeout_ms.to_string(),
                format!("expected {TIMEOUT_MS_RANGE:?}"),
            ));
        }
        if !(ch.batch_size..=MAX_BATCH_ROWS_LIMIT).contains(&ch.max_batch_rows) {
            return Err(invalid(
                "clickhouse.max_batch_rows",
                ch.max_batch_rows.to_string(),
                format!(
                    "expected batch_size ({})..={MAX_BATCH_ROWS_LIMIT}",
                    ch.batch_size
                ),
            ));
        }
        if !MAX_BATCH_BYTES_RANGE.contains(&ch.max_batch_bytes) {
            return Err(invalid(
                "clickhouse.max_batch_bytes",
                ch.max_batch_bytes.to_string(),
                format!("expected {MAX_BATCH_BYTES_RANGE:?}"),
            ));
        }
        if !(1..=MAX_IN_FLIGHT_LIMIT).contains(&ch.max_in_flight) {
            return Err(invalid(
                "clickhouse.max_in_flight",
                ch.max_in_flight.to_string(),
                format!("expected 1..={MAX_IN_FLIGHT_LIMIT}"),
            ));
        }
        for (key, url) in std::iter::once(("clickhouse.url", &ch.url))
            .chain(ch.hosts.iter().map(|h| ("clickhouse.hosts", h)))
        {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(
                    key,
                    url.clone(),
                    "expected an http:// URL of ClickHouse's HTTP interface".into(),
                ));
            }
        }
        if !ch
            .cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(
                "clickhouse.cluster",
                ch.cluster.clone(),
                "expected a cluster name of remote_servers ([A-Za-z0-9_-])".into(),
            ));
        }
        if !ch
            .database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || ch.database.is_empty()
        {
            return Err(invalid(
                "clickhouse.database",
                ch.database.clone(),
                "expected a database name ([A-Za-z0-9_])".into(),
            ));
        }
        if self.retry.initial_ms == 0 || self.retry.max_ms < self.retry.initial_ms {
            return Err(invalid(
                "retry",
                format!("{}..{}", self.retry.initial_ms, self.retry.max_ms),
                "expected 0 < initial_ms <= max_ms".into(),
            ));
        }
        if let Err(e) = glob::Pattern::new(&self.input.path) {
            return Err(invalid(
                "input.path",
                self.input.path.clone(),
                e.to_string(),
            ));
        }
        if let Err(e) = glob::Pattern::new(&self.events.path) {
            return Err(invalid(
                "events.path",
                self.events.path.clone(),
                e.to_string(),
            ));
        }
        if !self.events.path.is_empty() && self.events.checkpoint_path == self.checkpoint_path {
            return Err(invalid(
                "events.checkpoint_path",
                self.events.checkpoint_path.display().to_string(),
                "expected a file other than checkpoint_path".into(),
            ));
        }
        if self.metrics.enabled {
            self.metrics_addr()?;
        }
        Ok(())
    }

    pub fn metrics_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.metrics
            .addr
            .parse()
            .map_err(|e: std::net::AddrParseError| ConfigError::Invalid {
                key: "metrics.addr",
                value: self.metrics.addr.clone(),
                expected: e.to_string(),
            })
    }

    pub fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.clickhouse.flush_interval_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.clickhouse.timeout_ms)
    }

    /// The ClickHouse servers in fail-over order: `hosts`, or `url` alone.
    pub fn host_urls(&self) -> Vec<String> {
        if self.clickhouse.hosts.is_empty() {
            vec![self.clickhouse.url.clone()]
        } else {
            self.clickhouse.hosts.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_file_without_ship_section_gives_defaults() {
        let cfg = ShipConfig::parse("core:\n  interface: lo\n").unwrap();
        assert_eq!(cfg, ShipConfig::default());
        assert_eq!(cfg.clickhouse.batch_size, 500);
        assert_eq!(cfg.clickhouse.flush_interval_ms, 200);
        cfg.validate().unwrap();
    }

    #[test]
    fn ship_section_overrides_and_is_validated() {
        let cfg = ShipConfig::parse(
            "ship:\n  clickhouse:\n    batch_size: 0\n  input:\n    path: /tmp/x.log*\n",
        )
        .unwrap();
        assert_eq!(cfg.input.path, "/tmp/x.log*");
        assert!(matches!(
            cfg.validate(),
            Err(ConfigError::Invalid {
                key: "clickhouse.batch_size",
                ..
            })
        ));
    }

    #[test]
    fn unknown_ship_key_is_an_error() {
        assert!(ShipConfig::parse("ship:\n  batchsize: 3\n").is_err());
    }
}
